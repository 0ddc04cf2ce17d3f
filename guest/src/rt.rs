//! What [`export_cell!`](crate::export_cell) expands to call. Not part of
//! the public API.

use std::alloc::Layout;
use std::cell::RefCell;
use std::thread::LocalKey;

use crate::{log, Cell, Config, Step};

/// Every buffer handed to the host is 8-aligned, so the host may put any
/// scalar at its start; `free` rebuilds the same layout from the size.
const ALIGN: usize = 8;

pub type Slot<C> = LocalKey<RefCell<Option<C>>>;

pub fn alloc(size: i32) -> i32 {
    let Ok(size) = usize::try_from(size) else {
        return 0;
    };
    if size == 0 {
        // Non-null and aligned but owning nothing, so an empty result is
        // not mistaken for a failure; `free` ignores it.
        return ALIGN as i32;
    }
    let Ok(layout) = Layout::from_size_align(size, ALIGN) else {
        return 0;
    };
    // SAFETY: the layout has a non-zero size. A failed allocation returns
    // null (0) rather than aborting, which is what the host must see.
    unsafe { std::alloc::alloc(layout) as usize as i32 }
}

/// # Safety
/// `ptr` must come from [`alloc`] with the same `size`, and not be freed yet.
pub unsafe fn free(ptr: i32, size: i32) {
    let Ok(size) = usize::try_from(size) else {
        return;
    };
    if ptr == 0 || size == 0 {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(size, ALIGN) {
        // SAFETY: the caller guarantees `ptr` came from `alloc(size)`.
        unsafe { std::alloc::dealloc(ptr as u32 as usize as *mut u8, layout) }
    }
}

/// # Safety
/// `ptr`/`len` must describe a buffer the host filled (from [`alloc`]).
pub unsafe fn init<C: Cell>(slot: &'static Slot<C>, ptr: i32, len: i32) -> i32 {
    // SAFETY: forwarded from the caller.
    let config = Config::new(unsafe { host_bytes(ptr, len) }.to_vec());
    match C::init(config) {
        Ok(cell) => {
            slot.with(|s| *s.borrow_mut() = Some(cell));
            0
        }
        Err(err) => {
            log::error(&format!("init failed: {err}"));
            1
        }
    }
}

/// # Safety
/// `ptr`/`len` must describe a buffer the host filled (from [`alloc`]) and
/// leaves alone until this returns.
pub unsafe fn step<C: Cell>(slot: &'static Slot<C>, ptr: i32, len: i32) -> i32 {
    // SAFETY: forwarded from the caller.
    let envelope = unsafe { host_bytes(ptr, len) };
    let step = match Step::parse(envelope) {
        Ok(step) => step,
        Err(err) => {
            log::error(&format!("step rejected: {err}"));
            return 1;
        }
    };
    slot.with(|s| match s.borrow_mut().as_mut() {
        Some(cell) => cell.step(&step),
        None => {
            log::error("step without a successful init");
            1
        }
    })
}

/// # Safety
/// `input` must be two `(ptr, len)` buffers the host filled (name, args);
/// `out` two 4-byte slots in linear memory.
pub unsafe fn on_call<C: Cell>(slot: &'static Slot<C>, input: [i32; 4], out: [i32; 2]) -> i32 {
    // SAFETY: forwarded from the caller.
    let (name, args) = unsafe {
        (
            host_bytes(input[0], input[1]),
            host_bytes(input[2], input[3]),
        )
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return 1;
    };
    let result = slot.with(|s| match s.borrow_mut().as_mut() {
        Some(cell) => cell.on_call(name, args),
        None => Err(1),
    });
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(code) => return code,
    };
    let Ok(len) = i32::try_from(bytes.len()) else {
        return 1;
    };
    let ptr = if bytes.is_empty() { 0 } else { alloc(len) };
    if !bytes.is_empty() {
        if ptr == 0 {
            return 1;
        }
        // SAFETY: `alloc(len)` returned a fresh buffer of `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                ptr as u32 as usize as *mut u8,
                bytes.len(),
            )
        };
    }
    // SAFETY: the host passes two writable, 4-byte slots; it takes the
    // buffer over and frees it with pulp_free.
    unsafe {
        (out[0] as u32 as usize as *mut u32).write_unaligned(ptr as u32);
        (out[1] as u32 as usize as *mut u32).write_unaligned(len as u32);
    }
    0
}

pub fn shutdown<C: Cell>(slot: &'static Slot<C>) -> i32 {
    match slot.with(|s| s.borrow_mut().take()) {
        Some(mut cell) => cell.shutdown(),
        None => {
            log::error("shutdown without a successful init");
            1
        }
    }
}

/// # Safety
/// As for [`step`].
unsafe fn host_bytes<'a>(ptr: i32, len: i32) -> &'a [u8] {
    match usize::try_from(len) {
        // A null pointer cannot back a slice, and `alloc` never returns it.
        Ok(len) if len > 0 && ptr != 0 => {
            // SAFETY: forwarded from the caller.
            unsafe { std::slice::from_raw_parts(ptr as u32 as usize as *const u8, len) }
        }
        _ => &[],
    }
}
