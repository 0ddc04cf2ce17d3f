//! The `demo.greet` capability of the example extension.

use crate::raw;
use crate::Code;

/// Asks the host to log `hello, <name>!` for this cell.
pub fn greet(name: &str) -> Result<(), Code> {
    let (ptr, len) = raw::ptr_len(name.as_bytes());
    // SAFETY: a plain host call; ptr/len describe `name`, which outlives it.
    Code::check(unsafe { raw::demo_greet(ptr, len) })
}

/// Calls an import that does nothing.
pub fn noop() -> Result<(), Code> {
    // SAFETY: a plain host call without arguments.
    Code::check(unsafe { raw::demo_noop() })
}
