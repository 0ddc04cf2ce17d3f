//! What the host lends a library: its log and a way to wake it.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::prefix_type::WithMetadata;
use abi_stable::std_types::{RSlice, RStr};
use abi_stable::StableAbi;
use pulp_wire::Level as Wire;

/// Log levels as they cross the extension interface, with the values of
/// [`pulp_wire::Level`]; the type itself stays here, since its layout is part of
/// interface 1.0.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace = Wire::Trace as u8,
    Debug = Wire::Debug as u8,
    Info = Wire::Info as u8,
    Warn = Wire::Warn as u8,
    Error = Wire::Error as u8,
}

impl Level {
    /// The level of a raw `log` import argument; out-of-range values clamp to the ends.
    pub fn from_raw(raw: i32) -> Level {
        Level::from(Wire::from_raw(raw))
    }
}

impl From<Wire> for Level {
    fn from(level: Wire) -> Level {
        match level {
            Wire::Trace => Level::Trace,
            Wire::Debug => Level::Debug,
            Wire::Info => Level::Info,
            Wire::Warn => Level::Warn,
            Wire::Error => Level::Error,
        }
    }
}

/// The host side of a [`HostHandle`].
pub trait HostServices: Send + Sync + 'static {
    /// `target` is the module path of the log call inside the library.
    fn log(&self, level: Level, target: &str, message: &str);
    /// The most verbose level the host will show; the library skips the rest.
    fn max_level(&self) -> Level;
    /// Events are ready: the host polls the capability this handle was made for.
    fn wake(&self);
    /// Hands an event straight to the cell this handle was made for (the handle in
    /// a `SetupEnv`), to be finalized with `id` after its step.
    fn deliver(&self, _kind: &str, _payload: &[u8], _id: u64) -> Result<(), DeliverError> {
        Err(DeliverError::Unsupported)
    }
}

/// Why [`HostHandle::deliver`] did not take an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliverError {
    /// The cell's queue is full: refuse or retry the work, do not buffer it.
    Full,
    /// The cell has stopped.
    Gone,
    /// The payload is not one MessagePack value, or is over the cell's message limit.
    Invalid,
    /// This handle is not bound to a cell.
    Unsupported,
}

impl DeliverError {
    fn code(self) -> i32 {
        match self {
            DeliverError::Full => 1,
            DeliverError::Gone => 2,
            DeliverError::Invalid => 3,
            DeliverError::Unsupported => 4,
        }
    }

    fn from_code(code: i32) -> Result<(), DeliverError> {
        match code {
            0 => Ok(()),
            1 => Err(DeliverError::Full),
            2 => Err(DeliverError::Gone),
            3 => Err(DeliverError::Invalid),
            _ => Err(DeliverError::Unsupported),
        }
    }
}

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostVTableRef)))]
#[sabi(missing_field(panic))]
pub struct HostVTable {
    log:
        unsafe extern "C" fn(ctx: *const c_void, level: Level, target: RStr<'_>, message: RStr<'_>),
    max_level: unsafe extern "C" fn(ctx: *const c_void) -> Level,
    wake: unsafe extern "C" fn(ctx: *const c_void),
    #[sabi(last_prefix_field)]
    deliver: unsafe extern "C" fn(
        ctx: *const c_void,
        kind: RStr<'_>,
        payload: RSlice<'_, u8>,
        id: u64,
    ) -> i32,
}

/// A logger and waker from the host, usable from any thread for the life of the process.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostHandle {
    ctx: *const c_void,
    vtable: HostVTableRef,
}

// The host's services are `Send + Sync + 'static` (see `HostHandle::new`).
unsafe impl Send for HostHandle {}
unsafe impl Sync for HostHandle {}

struct VTableFor<S>(PhantomData<S>);

impl<S: HostServices> VTableFor<S> {
    const WITH_METADATA: &'static WithMetadata<HostVTable> = &WithMetadata::new(HostVTable {
        log: log::<S>,
        max_level: max_level::<S>,
        wake: wake::<S>,
        deliver: deliver::<S>,
    });
    const REF: HostVTableRef = HostVTableRef(Self::WITH_METADATA.static_as_prefix());
}

unsafe extern "C" fn log<S: HostServices>(
    ctx: *const c_void,
    level: Level,
    target: RStr<'_>,
    message: RStr<'_>,
) {
    let services = unsafe { &*(ctx as *const S) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        services.log(level, target.as_str(), message.as_str())
    }));
}

unsafe extern "C" fn max_level<S: HostServices>(ctx: *const c_void) -> Level {
    let services = unsafe { &*(ctx as *const S) };
    catch_unwind(AssertUnwindSafe(|| services.max_level())).unwrap_or(Level::Info)
}

unsafe extern "C" fn wake<S: HostServices>(ctx: *const c_void) {
    let services = unsafe { &*(ctx as *const S) };
    let _ = catch_unwind(AssertUnwindSafe(|| services.wake()));
}

unsafe extern "C" fn deliver<S: HostServices>(
    ctx: *const c_void,
    kind: RStr<'_>,
    payload: RSlice<'_, u8>,
    id: u64,
) -> i32 {
    let services = unsafe { &*(ctx as *const S) };
    match catch_unwind(AssertUnwindSafe(|| {
        services.deliver(kind.as_str(), payload.as_slice(), id)
    })) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.code(),
        Err(_) => DeliverError::Unsupported.code(),
    }
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostHandle")
    }
}

impl HostHandle {
    /// Libraries are never unloaded, so what they are lent lives as long as the process.
    pub fn new<S: HostServices>(services: &'static S) -> HostHandle {
        HostHandle {
            ctx: services as *const S as *const c_void,
            vtable: VTableFor::<S>::REF,
        }
    }

    pub fn log(&self, level: Level, target: &str, message: &str) {
        unsafe {
            (self.vtable.log())(
                self.ctx,
                level,
                RStr::from_str(target),
                RStr::from_str(message),
            )
        }
    }

    pub fn max_level(&self) -> Level {
        unsafe { (self.vtable.max_level())(self.ctx) }
    }

    /// Tells the host that `poll` has events; cheap, and safe to call from any thread.
    pub fn wake(&self) {
        unsafe { (self.vtable.wake())(self.ctx) }
    }

    /// Hands an event of kind `kind` (payload: one MessagePack value) straight to
    /// the cell this handle is bound to — the handle a capability gets in its
    /// `SetupEnv` — without a `poll` round trip. The host calls `finalize(id)` after
    /// the step that delivers it. Never blocks: a full queue is [`DeliverError::Full`].
    pub fn deliver(&self, kind: &str, payload: &[u8], id: u64) -> Result<(), DeliverError> {
        let code = unsafe {
            (self.vtable.deliver())(
                self.ctx,
                RStr::from_str(kind),
                RSlice::from_slice(payload),
                id,
            )
        };
        DeliverError::from_code(code)
    }
}
