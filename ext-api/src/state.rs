//! A capability's state for one cell. `setup` makes it; the host keeps it with
//! the cell, across restarts, lends it to every import call the cell makes and to
//! `cell_failed` and `teardown_cell`, and drops it after `teardown_cell`. A
//! capability needs no map of cells of its own.

use std::any::Any;
use std::ffi::c_void;
use std::ptr::null_mut;

use abi_stable::StableAbi;

/// Whatever a capability keeps for one cell; [`CellState::none`] when it keeps
/// nothing.
pub struct CellState(Option<Box<dyn Any + Send + Sync>>);

/// The state of cells that have none, and of calls a host made without one.
pub(crate) static NO_STATE: CellState = CellState(None);

impl CellState {
    pub fn new<T: Any + Send + Sync>(state: T) -> CellState {
        CellState(Some(Box::new(state)))
    }

    pub const fn none() -> CellState {
        CellState(None)
    }

    /// The state, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_ref()?.downcast_ref()
    }

    pub(crate) fn into_ffi(self) -> CellStateFfi {
        match self.0 {
            None => CellStateFfi::NONE,
            Some(_) => CellStateFfi {
                ptr: Box::into_raw(Box::new(self)) as *mut c_void,
                drop: drop_state,
            },
        }
    }

    /// # Safety
    /// `ptr` is null or came from [`CellState::into_ffi`] in this library and
    /// has not been dropped.
    pub(crate) unsafe fn from_ptr<'a>(ptr: *const c_void) -> &'a CellState {
        if ptr.is_null() {
            &NO_STATE
        } else {
            unsafe { &*(ptr as *const CellState) }
        }
    }
}

unsafe extern "C" fn drop_state(ptr: *mut c_void) {
    // A panicking Drop in the state must not unwind into the host.
    let _ = std::panic::catch_unwind(|| {
        drop(unsafe { Box::from_raw(ptr as *mut CellState) });
    });
}

unsafe extern "C" fn drop_nothing(_: *mut c_void) {}

/// A [`CellState`] as it crosses the boundary: opaque to the host, which only
/// lends the pointer back and calls `drop` once.
#[repr(C)]
#[derive(StableAbi)]
pub struct CellStateFfi {
    ptr: *mut c_void,
    drop: unsafe extern "C" fn(ptr: *mut c_void),
}

impl CellStateFfi {
    const NONE: CellStateFfi = CellStateFfi {
        ptr: null_mut(),
        drop: drop_nothing,
    };
}

/// A cell's state for one capability, as the host holds it.
pub struct CellStateHandle {
    ffi: CellStateFfi,
}

// The state inside is `Send + Sync` (see `CellState`), and the host only lends
// its pointer.
unsafe impl Send for CellStateHandle {}
unsafe impl Sync for CellStateHandle {}

impl CellStateHandle {
    /// No state: what a capability without any, or built for interface 1.0, has.
    pub const fn none() -> CellStateHandle {
        CellStateHandle {
            ffi: CellStateFfi::NONE,
        }
    }

    pub(crate) fn from_ffi(ffi: CellStateFfi) -> CellStateHandle {
        CellStateHandle { ffi }
    }

    pub(crate) fn as_ptr(&self) -> *const c_void {
        self.ffi.ptr
    }
}

impl Drop for CellStateHandle {
    fn drop(&mut self) {
        if !self.ffi.ptr.is_null() {
            unsafe { (self.ffi.drop)(self.ffi.ptr) }
        }
    }
}
