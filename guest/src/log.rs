//! The always-on `log` import: messages reach the host log tagged with the
//! cell's name.

use crate::raw;
use crate::Code;

pub use pulp_wire::Level;

/// Logs `message` at `level`, returning the host's code.
pub fn write(level: Level, message: &str) -> Result<(), Code> {
    let (ptr, len) = raw::ptr_len(message.as_bytes());
    // SAFETY: a plain host call; ptr/len describe `message`, which outlives it.
    Code::check(unsafe { raw::log(level as i32, ptr, len) })
}

// The shorthands drop the code: a log line that could not be written has
// nowhere else to be reported.

pub fn trace(message: &str) {
    let _ = write(Level::Trace, message);
}

pub fn debug(message: &str) {
    let _ = write(Level::Debug, message);
}

pub fn info(message: &str) {
    let _ = write(Level::Info, message);
}

pub fn warn(message: &str) {
    let _ = write(Level::Warn, message);
}

pub fn error(message: &str) {
    let _ = write(Level::Error, message);
}
