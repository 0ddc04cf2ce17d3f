//! Cell-to-cell calls: [`call`] a function another cell provides, and serve
//! the functions this cell provides with [`Cell::on_call`](crate::Cell::on_call).
//!
//! The caller's manifest lists the function in `consumes`, the target's in
//! `provides`. The target runs the call between its own steps, under its own
//! limits; the bytes in and out are the two cells' business (MessagePack is
//! the usual choice).

use crate::{raw, Code, HostBuf};

/// Code 11: the manifests do not allow the call, or there is no such cell.
pub const DENIED: Code = pulp_wire::code::call::DENIED;
/// Code 12: the target is already waiting on this call (A calls B calls A).
pub const CYCLE: Code = pulp_wire::code::call::CYCLE;

/// Calls `function` of cell `target` with `args` and waits for its result.
/// Code 5 when the target fails, times out, returns non-zero or has stopped.
pub fn call(target: &str, function: &str, args: &[u8]) -> Result<HostBuf, Code> {
    let (target_ptr, target_len) = raw::ptr_len(target.as_bytes());
    let (name_ptr, name_len) = raw::ptr_len(function.as_bytes());
    let (args_ptr, args_len) = raw::ptr_len(args);
    // SAFETY: the inputs outlive the call, and pulp_call keeps the
    // out-pointer contract of docs/cell-abi.md.
    unsafe {
        HostBuf::receive(|ptr_out, len_out| {
            raw::pulp_call(
                target_ptr, target_len, name_ptr, name_len, args_ptr, args_len, ptr_out, len_out,
            )
        })
    }
}
