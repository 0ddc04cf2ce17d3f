//! The host imports as declared, for code that must pass what the safe
//! wrappers never would (out-of-bounds pointers, negative lengths).
//!
//! Pointers and lengths are `i32` offsets into linear memory; every function
//! returns a [`Code`](crate::Code) as a raw `i32`. Calling them is `unsafe`
//! only because they are foreign functions: the host checks every pointer.

#[link(wasm_import_module = "pulp")]
extern "C" {
    /// Level 0 trace .. 4 error.
    pub fn log(level: i32, msg_ptr: i32, msg_len: i32) -> i32;
    /// `demo.greet`: the host logs `hello, <name>!` for the cell.
    pub fn demo_greet(name_ptr: i32, name_len: i32) -> i32;
    /// `demo.greet`: does nothing; measures the cost of an import call.
    pub fn demo_noop() -> i32;
}

/// A byte slice as the `(ptr, len)` pair the imports take.
pub(crate) fn ptr_len(bytes: &[u8]) -> (i32, i32) {
    // wasm32 addresses and lengths fit in 32 bits; the host reads them as u32.
    (bytes.as_ptr() as usize as i32, bytes.len() as i32)
}
