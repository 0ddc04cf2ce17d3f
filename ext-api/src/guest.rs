//! Access to the calling cell's linear memory from inside a host import.

use std::any::Any;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::prefix_type::WithMetadata;
use abi_stable::std_types::{RSlice, RStr};
use abi_stable::StableAbi;

use crate::code::{Args, Code};
use crate::state::{CellState, CellStateHandle};

/// What the host offers a host import about the cell that called it.
///
/// The host implements this over its wasm store; ext-api carries it across the
/// library boundary, and callbacks see it as a [`Guest`].
pub trait GuestMemory {
    fn cell_name(&self) -> &str;
    /// A number unique to this cell for the life of the host; cheaper to key on than the name.
    fn cell_id(&self) -> u64;
    fn max_message_bytes(&self) -> u64;
    fn read(&self, ptr: u32, len: u32) -> Result<&[u8], Code>;
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Code>;
    /// Runs the cell's `pulp_alloc`; may grow linear memory.
    fn alloc(&mut self, size: u32) -> Result<u32, Code>;
    /// The calling capability's state for this cell (interface 1.1).
    fn cell_state(&self) -> &CellStateHandle {
        &NO_HANDLE
    }
}

static NO_HANDLE: CellStateHandle = CellStateHandle::none();

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = GuestVTableRef)))]
#[sabi(missing_field(panic))]
pub struct GuestVTable {
    cell_name: unsafe extern "C" fn(ctx: *mut c_void) -> RStr<'static>,
    cell_id: unsafe extern "C" fn(ctx: *mut c_void) -> u64,
    max_message_bytes: unsafe extern "C" fn(ctx: *mut c_void) -> u64,
    read: unsafe extern "C" fn(
        ctx: *mut c_void,
        ptr: u32,
        len: u32,
        out: *mut RSlice<'static, u8>,
    ) -> i32,
    write: unsafe extern "C" fn(ctx: *mut c_void, ptr: u32, data: RSlice<'_, u8>) -> i32,
    #[sabi(last_prefix_field)]
    alloc: unsafe extern "C" fn(ctx: *mut c_void, size: u32, out: *mut u32) -> i32,
    /// Interface 1.1.
    #[sabi(missing_field(option))]
    cell_state: unsafe extern "C" fn(ctx: *mut c_void) -> *const c_void,
}

/// The calling cell, as it crosses the boundary: a pointer to the host's
/// [`GuestMemory`] and the functions that reach it.
#[repr(C)]
#[derive(StableAbi)]
pub struct GuestFfi<'a> {
    ctx: *mut c_void,
    vtable: GuestVTableRef,
    _borrow: PhantomData<&'a mut ()>,
}

struct VTableFor<G>(PhantomData<G>);

impl<G: GuestMemory> VTableFor<G> {
    const WITH_METADATA: &'static WithMetadata<GuestVTable> = &WithMetadata::new(GuestVTable {
        cell_name: cell_name::<G>,
        cell_id: cell_id::<G>,
        max_message_bytes: max_message_bytes::<G>,
        read: read::<G>,
        write: write::<G>,
        alloc: alloc::<G>,
        cell_state: cell_state::<G>,
    });
    const REF: GuestVTableRef = GuestVTableRef(Self::WITH_METADATA.static_as_prefix());
}

// The host's functions below never unwind into the extension: a panic there would
// abort at the `extern "C"` edge, so each one is caught and becomes a code.

unsafe extern "C" fn cell_name<G: GuestMemory>(ctx: *mut c_void) -> RStr<'static> {
    let guest = unsafe { &*(ctx as *const G) };
    // The 'static is confined to ext-api: `Guest::cell` ties it back to the call.
    let name: &'static str =
        unsafe { std::mem::transmute::<&str, &'static str>(guest.cell_name()) };
    RStr::from_str(name)
}

unsafe extern "C" fn cell_id<G: GuestMemory>(ctx: *mut c_void) -> u64 {
    unsafe { &*(ctx as *const G) }.cell_id()
}

unsafe extern "C" fn max_message_bytes<G: GuestMemory>(ctx: *mut c_void) -> u64 {
    unsafe { &*(ctx as *const G) }.max_message_bytes()
}

unsafe extern "C" fn read<G: GuestMemory>(
    ctx: *mut c_void,
    ptr: u32,
    len: u32,
    out: *mut RSlice<'static, u8>,
) -> i32 {
    let guest = unsafe { &*(ctx as *const G) };
    match catch_unwind(AssertUnwindSafe(|| guest.read(ptr, len))) {
        Ok(Ok(bytes)) => {
            let bytes: &'static [u8] =
                unsafe { std::mem::transmute::<&[u8], &'static [u8]>(bytes) };
            unsafe { out.write(RSlice::from_slice(bytes)) };
            0
        }
        Ok(Err(code)) => code.raw(),
        Err(_) => Code::FAILED.raw(),
    }
}

unsafe extern "C" fn write<G: GuestMemory>(
    ctx: *mut c_void,
    ptr: u32,
    data: RSlice<'_, u8>,
) -> i32 {
    let guest = unsafe { &mut *(ctx as *mut G) };
    match catch_unwind(AssertUnwindSafe(|| guest.write(ptr, data.as_slice()))) {
        Ok(Ok(())) => 0,
        Ok(Err(code)) => code.raw(),
        Err(_) => Code::WRITE.raw(),
    }
}

unsafe extern "C" fn alloc<G: GuestMemory>(ctx: *mut c_void, size: u32, out: *mut u32) -> i32 {
    let guest = unsafe { &mut *(ctx as *mut G) };
    match catch_unwind(AssertUnwindSafe(|| guest.alloc(size))) {
        Ok(Ok(ptr)) => {
            unsafe { out.write(ptr) };
            0
        }
        Ok(Err(code)) => code.raw(),
        Err(_) => Code::ALLOC.raw(),
    }
}

unsafe extern "C" fn cell_state<G: GuestMemory>(ctx: *mut c_void) -> *const c_void {
    unsafe { &*(ctx as *const G) }.cell_state().as_ptr()
}

impl<'a> GuestFfi<'a> {
    /// Lends `guest` to one import call.
    pub fn new<G: GuestMemory>(guest: &'a mut G) -> Self {
        GuestFfi {
            ctx: guest as *mut G as *mut c_void,
            vtable: VTableFor::<G>::REF,
            _borrow: PhantomData,
        }
    }
}

/// The cell that called a host import: its identity and its linear memory.
///
/// A slice from [`Guest::read`] borrows the guest, so it cannot outlive a later
/// [`Guest::alloc`], which may grow (and move) linear memory.
pub struct Guest<'a> {
    ffi: GuestFfi<'a>,
}

impl<'a> Guest<'a> {
    pub(crate) fn from_ffi(ffi: GuestFfi<'a>) -> Self {
        Guest { ffi }
    }

    pub fn cell(&self) -> &str {
        let name = unsafe { (self.ffi.vtable.cell_name())(self.ffi.ctx) };
        name.as_str()
    }

    pub fn cell_id(&self) -> u64 {
        unsafe { (self.ffi.vtable.cell_id())(self.ffi.ctx) }
    }

    /// The cell's `max_message_bytes`: the bound for any one argument or result.
    pub fn max_message_bytes(&self) -> u64 {
        unsafe { (self.ffi.vtable.max_message_bytes())(self.ffi.ctx) }
    }

    /// The calling capability's state for this cell, as its `setup` made it;
    /// [`Code::FAILED`] when that state is not a `T`. It lives as long as the
    /// cell, so it may be held across [`Guest::alloc`].
    pub fn state<T: Any>(&self) -> Result<&'a T, Code> {
        let ptr = match self.ffi.vtable.cell_state() {
            Some(cell_state) => unsafe { cell_state(self.ffi.ctx) },
            None => std::ptr::null(),
        };
        // SAFETY: the host lends back the pointer this library's `setup` made,
        // and keeps it alive for longer than the call ('a).
        let state: &'a CellState = unsafe { CellState::from_ptr(ptr) };
        state.get::<T>().ok_or(Code::FAILED)
    }

    pub fn read(&self, ptr: u32, len: u32) -> Result<&[u8], Code> {
        let mut out = RSlice::<u8>::EMPTY;
        let code = unsafe { (self.ffi.vtable.read())(self.ffi.ctx, ptr, len, &mut out) };
        if code != 0 {
            return Err(Code::new(code));
        }
        Ok(out.as_slice())
    }

    /// Reads the pointer/length pair at `args[index]`, `args[index + 1]`, refusing
    /// input over the cell's message limit.
    pub fn read_arg(&self, args: Args<'_>, index: usize) -> Result<&[u8], Code> {
        let (ptr, len) = args.ptr_len(index)?;
        if u64::from(len) > self.max_message_bytes() {
            return Err(Code::TOO_LARGE);
        }
        self.read(ptr, len)
    }

    /// Like [`Guest::read_arg`], for input that must be UTF-8.
    pub fn read_str_arg(&self, args: Args<'_>, index: usize) -> Result<&str, Code> {
        std::str::from_utf8(self.read_arg(args, index)?).map_err(|_| Code::DECODE)
    }

    pub fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Code> {
        let code =
            unsafe { (self.ffi.vtable.write())(self.ffi.ctx, ptr, RSlice::from_slice(data)) };
        if code != 0 {
            return Err(Code::new(code));
        }
        Ok(())
    }

    pub fn alloc(&mut self, size: u32) -> Result<u32, Code> {
        let mut out = 0u32;
        let code = unsafe { (self.ffi.vtable.alloc())(self.ffi.ctx, size, &mut out) };
        if code != 0 {
            return Err(Code::new(code));
        }
        Ok(out)
    }

    /// Returns `data` to the cell the way docs/cell-abi.md asks of imports that return data:
    /// allocates it with `pulp_alloc`, copies it in, and stores its pointer and length
    /// as little-endian u32 at the out-pointers found at `args[index]`, `args[index + 1]`.
    pub fn return_bytes(&mut self, args: Args<'_>, index: usize, data: &[u8]) -> Result<(), Code> {
        let (ptr_out, len_out) = (args.i32(index), args.i32(index + 1));
        if ptr_out < 0 || len_out < 0 {
            return Err(Code::OUT_OF_BOUNDS);
        }
        if data.len() as u64 > self.max_message_bytes() {
            return Err(Code::TOO_LARGE);
        }
        // Validate the out-pointers before running guest code in pulp_alloc.
        self.read(ptr_out as u32, 4)?;
        self.read(len_out as u32, 4)?;
        let len = u32::try_from(data.len()).map_err(|_| Code::TOO_LARGE)?;
        // An empty result is pointer 0, length 0: nothing to allocate, and
        // allocators may answer 0 to a request for 0 bytes.
        let ptr = if len == 0 { 0 } else { self.alloc(len)? };
        self.write(ptr, data).map_err(|_| Code::WRITE)?;
        self.write(ptr_out as u32, &ptr.to_le_bytes())
            .map_err(|_| Code::WRITE)?;
        self.write(len_out as u32, &len.to_le_bytes())
            .map_err(|_| Code::WRITE)?;
        Ok(())
    }
}
