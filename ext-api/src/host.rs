//! What the host lends a library: its log and a way to wake it.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::prefix_type::WithMetadata;
use abi_stable::std_types::RStr;
use abi_stable::StableAbi;

/// Log levels, in the order of the `log` host import (0 trace .. 4 error).
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

impl Level {
    /// The level of a raw `log` import argument; out-of-range values clamp to the ends.
    pub fn from_raw(raw: i32) -> Level {
        match raw {
            i32::MIN..=0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
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
}

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostVTableRef)))]
#[sabi(missing_field(panic))]
pub struct HostVTable {
    log:
        unsafe extern "C" fn(ctx: *const c_void, level: Level, target: RStr<'_>, message: RStr<'_>),
    max_level: unsafe extern "C" fn(ctx: *const c_void) -> Level,
    #[sabi(last_prefix_field)]
    wake: unsafe extern "C" fn(ctx: *const c_void),
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
}
