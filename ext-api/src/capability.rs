//! The `Capability` interface, and the ABI-stable object both kinds of capability
//! become so that the host's registry holds one type.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use abi_stable::prefix_type::WithMetadata;
use abi_stable::std_types::{RNone, ROption, RResult, RSlice, RSome, RStr, RString, RVec};
use abi_stable::StableAbi;
use serde::de::DeserializeOwned;

use crate::code::{Args, Code, ImportResult};
use crate::guest::{Guest, GuestFfi, GuestMemory};
use crate::host::HostHandle;
use crate::state::{CellState, CellStateFfi, CellStateHandle};

/// A wasm value type, for the parameters of a host import.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValType {
    I32,
    I64,
    F32,
    F64,
}

/// A capability: a named bundle of host imports plus optional lifecycle hooks.
///
/// Built-in capabilities and those in extension libraries implement this same trait;
/// the host sees both through [`CapabilityHandle`]. Every method may be called from
/// any thread, several at once. A panic inside any of them fails that call only.
pub trait Capability: Send + Sync + 'static {
    /// The name cells declare, e.g. `storage.s3`.
    fn name(&self) -> &str;
    /// Who provides it, e.g. `pulp-ext-s3`; manifests pin a provider by this name.
    fn provider(&self) -> &str;
    /// The host imports (module `pulp`) bound for cells that declare the capability.
    fn imports(&self) -> Vec<HostImport>;
    /// Imports bound for cells that do not declare it; any import missing here
    /// returns [`Code::NOT_DECLARED`].
    fn stub_imports(&self) -> Vec<HostImport> {
        Vec::new()
    }
    /// A cell that declares the capability is about to load. What it returns is
    /// the capability's state for that cell: see [`CellState`].
    fn setup(&self, _env: &SetupEnv) -> Result<CellState, String> {
        Ok(CellState::none())
    }
    /// One cell stopped while others keep running; its state is dropped next.
    fn teardown_cell(&self, _cell: &str, _state: &CellState) {}
    /// An instance of the cell trapped, timed out or exited; it may be restarted,
    /// and keeps its state. Work the capability holds for that instance (a pending
    /// reply, an open connection) will not be answered by it.
    fn cell_failed(&self, _cell: &str, _state: &CellState) {}
    /// The host is shutting down.
    fn teardown(&self) {}
    /// The next pending event, if any. Called after [`HostHandle::wake`], until `None`.
    fn poll(&self) -> Option<StepEvent> {
        None
    }
    /// The step that delivered event `id` has run. Must be idempotent.
    fn finalize(&self, _id: u64) {}
}

type ImportCallback = dyn Fn(&mut Guest<'_>, Args<'_>) -> ImportResult + Send + Sync;

/// One host import: its name in module `pulp`, its parameter types (it always
/// returns one `i32`, the [`Code`]) and the callback that runs it.
pub struct HostImport {
    ffi: HostImportFfi,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct HostImportFfi {
    name: RString,
    params: RVec<ValType>,
    data: *const c_void,
    call: unsafe extern "C" fn(
        data: *const c_void,
        guest: GuestFfi<'_>,
        args: RSlice<'_, u64>,
    ) -> i32,
    drop: unsafe extern "C" fn(data: *const c_void),
}

// `data` is a `Box<ImportCallback>`, which is `Send + Sync`.
unsafe impl Send for HostImportFfi {}
unsafe impl Sync for HostImportFfi {}

impl Drop for HostImportFfi {
    fn drop(&mut self) {
        unsafe { (self.drop)(self.data) }
    }
}

unsafe extern "C" fn call_import(
    data: *const c_void,
    guest: GuestFfi<'_>,
    args: RSlice<'_, u64>,
) -> i32 {
    let callback = unsafe { &*(data as *const Box<ImportCallback>) };
    let mut guest = Guest::from_ffi(guest);
    match catch_unwind(AssertUnwindSafe(|| {
        callback(&mut guest, Args::new(args.as_slice()))
    })) {
        Ok(Ok(())) => 0,
        Ok(Err(code)) => code.raw(),
        Err(panic) => {
            tracing::error!(
                cell = guest.cell(),
                "host import panicked: {}",
                panic_message(&panic)
            );
            Code::FAILED.raw()
        }
    }
}

unsafe extern "C" fn drop_import(data: *const c_void) {
    drop(unsafe { Box::from_raw(data as *mut Box<ImportCallback>) });
}

impl HostImport {
    pub fn new<F>(name: &str, params: &[ValType], callback: F) -> HostImport
    where
        F: Fn(&mut Guest<'_>, Args<'_>) -> ImportResult + Send + Sync + 'static,
    {
        let boxed: Box<Box<ImportCallback>> = Box::new(Box::new(callback));
        HostImport {
            ffi: HostImportFfi {
                name: name.into(),
                params: params.iter().copied().collect(),
                data: Box::into_raw(boxed) as *const c_void,
                call: call_import,
                drop: drop_import,
            },
        }
    }
}

/// The typed shapes most imports take; each is a [`HostImport::new`] with its
/// arguments read for the callback. Input is bounded by the cell's
/// `max_message_bytes` (code 9) and must lie in linear memory (code 2); output is
/// handed back through two out-pointers after the inputs, as
/// [`Guest::return_bytes`] does.
impl HostImport {
    /// `name(in1_ptr, in1_len, …, inN_ptr, inN_len) -> code`: `N` byte inputs.
    pub fn inputs<const N: usize, F>(name: &str, callback: F) -> HostImport
    where
        F: Fn(&Guest<'_>, [&[u8]; N]) -> ImportResult + Send + Sync + 'static,
    {
        HostImport::new(name, &vec![ValType::I32; 2 * N], move |guest, args| {
            callback(guest, read_inputs(guest, args)?)
        })
    }

    /// `name(in1_ptr, in1_len, …, out_ptr_ptr, out_len_ptr) -> code`: `N` byte
    /// inputs, and the bytes the callback returns handed back to the cell.
    pub fn inputs_output<const N: usize, F>(name: &str, callback: F) -> HostImport
    where
        F: Fn(&Guest<'_>, [&[u8]; N]) -> Result<Vec<u8>, Code> + Send + Sync + 'static,
    {
        HostImport::new(name, &vec![ValType::I32; 2 * N + 2], move |guest, args| {
            let output = callback(guest, read_inputs(guest, args)?)?;
            guest.return_bytes(args, 2 * N, &output)
        })
    }

    /// `name(req_ptr, req_len) -> code`: one MessagePack value decoded into `R`;
    /// code 1 when it is empty, 3 when it does not decode.
    pub fn request<R, F>(name: &str, callback: F) -> HostImport
    where
        R: DeserializeOwned,
        F: Fn(&Guest<'_>, R) -> ImportResult + Send + Sync + 'static,
    {
        HostImport::inputs(name, move |guest, [bytes]| callback(guest, decode(bytes)?))
    }

    /// `name(req_ptr, req_len, out_ptr_ptr, out_len_ptr) -> code`: a
    /// [`HostImport::request`] whose callback returns bytes for the cell.
    pub fn request_output<R, F>(name: &str, callback: F) -> HostImport
    where
        R: DeserializeOwned,
        F: Fn(&Guest<'_>, R) -> Result<Vec<u8>, Code> + Send + Sync + 'static,
    {
        HostImport::inputs_output(name, move |guest, [bytes]| callback(guest, decode(bytes)?))
    }
}

fn read_inputs<'g, const N: usize>(
    guest: &'g Guest<'_>,
    args: Args<'_>,
) -> Result<[&'g [u8]; N], Code> {
    let mut inputs: [&[u8]; N] = [&[]; N];
    for (i, input) in inputs.iter_mut().enumerate() {
        *input = guest.read_arg(args, 2 * i)?;
    }
    Ok(inputs)
}

fn decode<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, Code> {
    if bytes.is_empty() {
        return Err(Code::EMPTY);
    }
    rmp_serde::from_slice(bytes).map_err(|_| Code::DECODE)
}

/// A host import as the host holds it, whichever side of the boundary it lives on.
pub struct ImportHandle {
    ffi: HostImportFfi,
}

impl ImportHandle {
    pub fn name(&self) -> &str {
        self.ffi.name.as_str()
    }

    pub fn params(&self) -> &[ValType] {
        self.ffi.params.as_slice()
    }

    /// Runs the import for the cell behind `guest`; returns the code for the cell.
    #[inline]
    pub fn call<G: GuestMemory>(&self, guest: &mut G, args: &[u64]) -> i32 {
        unsafe {
            (self.ffi.call)(
                self.ffi.data,
                GuestFfi::new(guest),
                RSlice::from_slice(args),
            )
        }
    }
}

/// An event for a cell, as a capability's `poll` returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepEvent {
    /// E.g. `demo.ticker`; the cell sees it as the StepEvent's `kind`.
    pub kind: String,
    /// Exactly one MessagePack value; the host embeds it inline in the envelope.
    pub payload: Vec<u8>,
    /// Passed back to `finalize` after the step that delivered it.
    pub id: u64,
    /// The cell to deliver to; empty means the (first) cell that declares the capability.
    pub cell: String,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct StepEventFfi {
    kind: RString,
    payload: RVec<u8>,
    id: u64,
    cell: RString,
}

/// What a capability gets when a cell that declares it is about to load.
#[derive(Clone, Debug)]
pub struct SetupEnv {
    pub cell: String,
    pub cell_id: u64,
    /// `{storage-root}/{cell}`, created by the host.
    pub storage_dir: PathBuf,
    /// The cell's `[config]` table, as MessagePack.
    pub cell_config: Vec<u8>,
    /// This library's `[extension.config]` table (empty map for built-ins), as MessagePack.
    pub ext_config: Vec<u8>,
    pub max_message_bytes: u64,
    /// The cell's `call_timeout_ms`: how long one call into it may run.
    pub call_timeout_ms: u64,
    /// The cell's `allowed_outbound_hosts`.
    pub allowed_outbound_hosts: Vec<String>,
    /// Logs to the host (tagged with the extension) and wakes it to poll this capability.
    pub host: HostHandle,
}

impl SetupEnv {
    /// Decodes this extension's `[extension.config]` into `T`.
    pub fn ext_config<T: DeserializeOwned>(&self) -> Result<T, String> {
        rmp_serde::from_slice(&self.ext_config).map_err(|e| format!("extension config: {e}"))
    }

    /// Decodes the cell's `[config]` into `T`.
    pub fn cell_config<T: DeserializeOwned>(&self) -> Result<T, String> {
        rmp_serde::from_slice(&self.cell_config).map_err(|e| format!("cell config: {e}"))
    }
}

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SetupEnvFfiRef)))]
#[sabi(missing_field(panic))]
pub struct SetupEnvFfi {
    cell: RStr<'static>,
    cell_id: u64,
    storage_dir: RStr<'static>,
    cell_config: RSlice<'static, u8>,
    ext_config: RSlice<'static, u8>,
    max_message_bytes: u64,
    call_timeout_ms: u64,
    allowed_outbound_hosts: RSlice<'static, RString>,
    #[sabi(last_prefix_field)]
    host: HostHandle,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct CapabilityInfoFfi {
    name: RString,
    provider: RString,
    imports: RVec<HostImportFfi>,
    stub_imports: RVec<HostImportFfi>,
}

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = CapabilityVTableRef)))]
#[sabi(missing_field(panic))]
pub struct CapabilityVTable {
    drop: unsafe extern "C" fn(this: *const c_void),
    describe: unsafe extern "C" fn(this: *const c_void) -> RResult<CapabilityInfoFfi, RString>,
    setup: unsafe extern "C" fn(this: *const c_void, env: SetupEnvFfiRef) -> RResult<(), RString>,
    teardown_cell:
        unsafe extern "C" fn(this: *const c_void, cell: RStr<'_>) -> RResult<(), RString>,
    cell_failed: unsafe extern "C" fn(this: *const c_void, cell: RStr<'_>) -> RResult<(), RString>,
    teardown: unsafe extern "C" fn(this: *const c_void) -> RResult<(), RString>,
    poll: unsafe extern "C" fn(this: *const c_void) -> RResult<ROption<StepEventFfi>, RString>,
    #[sabi(last_prefix_field)]
    finalize: unsafe extern "C" fn(this: *const c_void, id: u64) -> RResult<(), RString>,
    // Interface 1.1: per-cell state. A 1.1 host calls these instead of `setup`,
    // `teardown_cell` and `cell_failed` whenever the library has them.
    #[sabi(missing_field(option))]
    setup_state: unsafe extern "C" fn(
        this: *const c_void,
        env: SetupEnvFfiRef,
    ) -> RResult<CellStateFfi, RString>,
    #[sabi(missing_field(option))]
    teardown_cell_state: unsafe extern "C" fn(
        this: *const c_void,
        cell: RStr<'_>,
        state: *const c_void,
    ) -> RResult<(), RString>,
    #[sabi(missing_field(option))]
    cell_failed_state: unsafe extern "C" fn(
        this: *const c_void,
        cell: RStr<'_>,
        state: *const c_void,
    ) -> RResult<(), RString>,
}

/// A capability as it crosses the boundary: an erased `Box<dyn Capability>` and the
/// functions that reach it.
#[repr(C)]
#[derive(StableAbi)]
pub struct CapabilityFfi {
    this: *const c_void,
    vtable: CapabilityVTableRef,
}

// `this` is a `Box<dyn Capability>`, which is `Send + Sync`.
unsafe impl Send for CapabilityFfi {}
unsafe impl Sync for CapabilityFfi {}

impl Drop for CapabilityFfi {
    fn drop(&mut self) {
        unsafe { (self.vtable.drop())(self.this) }
    }
}

const CAPABILITY_VTABLE: &WithMetadata<CapabilityVTable> = &WithMetadata::new(CapabilityVTable {
    drop: cap_drop,
    describe: cap_describe,
    setup: cap_setup_1_0,
    teardown_cell: cap_cell_1_0,
    cell_failed: cap_cell_1_0,
    teardown: cap_teardown,
    poll: cap_poll,
    finalize: cap_finalize,
    setup_state: cap_setup,
    teardown_cell_state: cap_teardown_cell,
    cell_failed_state: cap_cell_failed,
});

// The interface 1.0 entry points: only a 1.0 host would call them, and a 1.0
// host refuses a 1.1 library before it gets that far.
const NEEDS_1_1: &str = "this library needs a host with ext-api interface 1.1";

unsafe extern "C" fn cap_setup_1_0(_: *const c_void, _: SetupEnvFfiRef) -> RResult<(), RString> {
    RResult::RErr(NEEDS_1_1.into())
}

unsafe extern "C" fn cap_cell_1_0(_: *const c_void, _: RStr<'_>) -> RResult<(), RString> {
    RResult::RErr(NEEDS_1_1.into())
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs one capability method, turning a panic into an error for the host.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e.into()),
        Err(panic) => RResult::RErr(format!("{what} panicked: {}", panic_message(&panic)).into()),
    }
}

unsafe fn extend<T: ?Sized>(value: &T) -> &'static T {
    unsafe { &*(value as *const T) }
}

unsafe fn this<'a>(ptr: *const c_void) -> &'a dyn Capability {
    unsafe { &**(ptr as *const Box<dyn Capability>) }
}

unsafe extern "C" fn cap_drop(ptr: *const c_void) {
    let _ = catch_unwind(|| drop(unsafe { Box::from_raw(ptr as *mut Box<dyn Capability>) }));
}

unsafe extern "C" fn cap_describe(ptr: *const c_void) -> RResult<CapabilityInfoFfi, RString> {
    let cap = unsafe { this(ptr) };
    guarded("describe", || {
        Ok(CapabilityInfoFfi {
            name: cap.name().into(),
            provider: cap.provider().into(),
            imports: cap.imports().into_iter().map(|i| i.ffi).collect(),
            stub_imports: cap.stub_imports().into_iter().map(|i| i.ffi).collect(),
        })
    })
}

unsafe extern "C" fn cap_setup(
    ptr: *const c_void,
    env: SetupEnvFfiRef,
) -> RResult<CellStateFfi, RString> {
    let cap = unsafe { this(ptr) };
    guarded("setup", || {
        // Copied out: the host's borrowed strings only live for this call.
        let env = SetupEnv {
            cell: env.cell().as_str().to_owned(),
            cell_id: env.cell_id(),
            storage_dir: PathBuf::from(env.storage_dir().as_str()),
            cell_config: env.cell_config().to_vec(),
            ext_config: env.ext_config().to_vec(),
            max_message_bytes: env.max_message_bytes(),
            call_timeout_ms: env.call_timeout_ms(),
            allowed_outbound_hosts: env
                .allowed_outbound_hosts()
                .iter()
                .map(|h| h.as_str().to_owned())
                .collect(),
            host: env.host(),
        };
        cap.setup(&env).map(CellState::into_ffi)
    })
}

unsafe extern "C" fn cap_teardown_cell(
    ptr: *const c_void,
    cell: RStr<'_>,
    state: *const c_void,
) -> RResult<(), RString> {
    let cap = unsafe { this(ptr) };
    // SAFETY: the host lends back what `cap_setup` returned for this cell.
    let state = unsafe { CellState::from_ptr(state) };
    guarded("teardown_cell", || {
        cap.teardown_cell(cell.as_str(), state);
        Ok(())
    })
}

unsafe extern "C" fn cap_cell_failed(
    ptr: *const c_void,
    cell: RStr<'_>,
    state: *const c_void,
) -> RResult<(), RString> {
    let cap = unsafe { this(ptr) };
    // SAFETY: as in `cap_teardown_cell`.
    let state = unsafe { CellState::from_ptr(state) };
    guarded("cell_failed", || {
        cap.cell_failed(cell.as_str(), state);
        Ok(())
    })
}

unsafe extern "C" fn cap_teardown(ptr: *const c_void) -> RResult<(), RString> {
    let cap = unsafe { this(ptr) };
    guarded("teardown", || {
        cap.teardown();
        Ok(())
    })
}

unsafe extern "C" fn cap_poll(ptr: *const c_void) -> RResult<ROption<StepEventFfi>, RString> {
    let cap = unsafe { this(ptr) };
    guarded("poll", || {
        Ok(match cap.poll() {
            Some(ev) => RSome(StepEventFfi {
                kind: ev.kind.into(),
                payload: ev.payload.into(),
                id: ev.id,
                cell: ev.cell.into(),
            }),
            None => RNone,
        })
    })
}

unsafe extern "C" fn cap_finalize(ptr: *const c_void, id: u64) -> RResult<(), RString> {
    let cap = unsafe { this(ptr) };
    guarded("finalize", || {
        cap.finalize(id);
        Ok(())
    })
}

impl CapabilityFfi {
    pub fn new<C: Capability>(capability: C) -> CapabilityFfi {
        CapabilityFfi::from_box(Box::new(capability))
    }

    pub fn from_box(capability: Box<dyn Capability>) -> CapabilityFfi {
        let boxed: Box<Box<dyn Capability>> = Box::new(capability);
        CapabilityFfi {
            this: Box::into_raw(boxed) as *const c_void,
            vtable: CapabilityVTableRef(CAPABILITY_VTABLE.static_as_prefix()),
        }
    }
}

/// A capability as the host's registry holds it: built-in or from a library, the
/// host cannot tell and does not need to.
pub struct CapabilityHandle {
    ffi: CapabilityFfi,
    name: String,
    provider: String,
    imports: Vec<ImportHandle>,
    stub_imports: Vec<ImportHandle>,
}

impl CapabilityHandle {
    /// Wraps a capability compiled into the host, through the same boundary object a
    /// library's capability comes in.
    pub fn builtin<C: Capability>(capability: C) -> Result<CapabilityHandle, String> {
        CapabilityHandle::from_ffi(CapabilityFfi::new(capability))
    }

    /// [`CapabilityHandle::builtin`] for a capability already boxed.
    pub fn builtin_boxed(capability: Box<dyn Capability>) -> Result<CapabilityHandle, String> {
        CapabilityHandle::from_ffi(CapabilityFfi::from_box(capability))
    }

    pub(crate) fn from_ffi(ffi: CapabilityFfi) -> Result<CapabilityHandle, String> {
        let info = unsafe { (ffi.vtable.describe())(ffi.this) }.into_result()?;
        let handles =
            |list: RVec<HostImportFfi>| list.into_iter().map(|ffi| ImportHandle { ffi }).collect();
        Ok(CapabilityHandle {
            name: info.name.into_string(),
            provider: info.provider.into_string(),
            imports: handles(info.imports),
            stub_imports: handles(info.stub_imports),
            ffi,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }

    pub fn imports(&self) -> &[ImportHandle] {
        &self.imports
    }

    pub fn stub_imports(&self) -> &[ImportHandle] {
        &self.stub_imports
    }

    /// Runs `setup` for one cell; the state it returns goes with the cell.
    pub fn setup(&self, env: &SetupEnv) -> Result<CellStateHandle, String> {
        let storage_dir = env.storage_dir.to_string_lossy();
        let hosts: Vec<RString> = env
            .allowed_outbound_hosts
            .iter()
            .map(|h| RString::from(h.as_str()))
            .collect();
        // The 'static in SetupEnvFfi is a lie kept inside this call: the callee copies
        // everything out (see `cap_setup`) before it returns.
        let fields = unsafe {
            SetupEnvFfi {
                cell: RStr::from_str(extend(env.cell.as_str())),
                cell_id: env.cell_id,
                storage_dir: RStr::from_str(extend(&*storage_dir)),
                cell_config: RSlice::from_slice(extend(env.cell_config.as_slice())),
                ext_config: RSlice::from_slice(extend(env.ext_config.as_slice())),
                max_message_bytes: env.max_message_bytes,
                call_timeout_ms: env.call_timeout_ms,
                allowed_outbound_hosts: RSlice::from_slice(extend(hosts.as_slice())),
                host: env.host,
            }
        };
        let with_metadata = WithMetadata::new(fields);
        let env_ref = SetupEnvFfiRef(unsafe { with_metadata.as_prefix() });
        let vtable = self.ffi.vtable;
        let state = match vtable.setup_state() {
            Some(setup) => {
                CellStateHandle::from_ffi(unsafe { setup(self.ffi.this, env_ref) }.into_result()?)
            }
            // Interface 1.0: the library keeps its own per-cell state.
            None => {
                unsafe { (vtable.setup())(self.ffi.this, env_ref) }.into_result()?;
                CellStateHandle::none()
            }
        };
        Ok(state)
    }

    pub fn teardown_cell(&self, cell: &str, state: &CellStateHandle) -> Result<(), String> {
        let (this, cell) = (self.ffi.this, RStr::from_str(cell));
        unsafe {
            match self.ffi.vtable.teardown_cell_state() {
                Some(teardown) => teardown(this, cell, state.as_ptr()),
                None => (self.ffi.vtable.teardown_cell())(this, cell),
            }
        }
        .into_result()
        .map_err(RString::into_string)
    }

    pub fn cell_failed(&self, cell: &str, state: &CellStateHandle) -> Result<(), String> {
        let (this, cell) = (self.ffi.this, RStr::from_str(cell));
        unsafe {
            match self.ffi.vtable.cell_failed_state() {
                Some(failed) => failed(this, cell, state.as_ptr()),
                None => (self.ffi.vtable.cell_failed())(this, cell),
            }
        }
        .into_result()
        .map_err(RString::into_string)
    }

    pub fn teardown(&self) -> Result<(), String> {
        unsafe { (self.ffi.vtable.teardown())(self.ffi.this) }
            .into_result()
            .map_err(RString::into_string)
    }

    pub fn poll(&self) -> Result<Option<StepEvent>, String> {
        let polled = unsafe { (self.ffi.vtable.poll())(self.ffi.this) }
            .into_result()
            .map_err(RString::into_string)?;
        Ok(polled.into_option().map(|ev| StepEvent {
            kind: ev.kind.into_string(),
            payload: ev.payload.into_vec(),
            id: ev.id,
            cell: ev.cell.into_string(),
        }))
    }

    pub fn finalize(&self, id: u64) -> Result<(), String> {
        unsafe { (self.ffi.vtable.finalize())(self.ffi.this, id) }
            .into_result()
            .map_err(RString::into_string)
    }
}
