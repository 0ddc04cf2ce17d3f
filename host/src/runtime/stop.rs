//! The host-wide stop signal: once shutdown gives up waiting for cells to finish
//! on their own, every call still running — wasm or a host call — is interrupted.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static STOPPING: AtomicBool = AtomicBool::new(false);
static STOPPED: Notify = Notify::const_new();

/// Interrupts every running and future call into a cell or a blocking host call.
pub fn interrupt_all() {
    STOPPING.store(true, Ordering::SeqCst);
    STOPPED.notify_waiters();
}

pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Completes once `interrupt_all` has been called: race a host call's future
/// against it.
pub async fn interrupted() {
    let notified = STOPPED.notified();
    if stopping() {
        return;
    }
    notified.await;
}
