//! The host imports as declared, for code that must pass what the safe
//! wrappers never would (out-of-bounds pointers, negative lengths).
//!
//! Pointers and lengths are `i32` offsets into linear memory; every function
//! returns a [`Code`] as a raw `i32`. Calling them is `unsafe` only because
//! they are foreign functions: the host checks every pointer.

use serde::Serialize;

use crate::Code;

#[link(wasm_import_module = "pulp")]
extern "C" {
    /// Level 0 trace .. 4 error.
    pub fn log(level: i32, msg_ptr: i32, msg_len: i32) -> i32;
    /// Calls function `name` of cell `target` with `args`; the result comes
    /// back through the out-pointers.
    #[allow(clippy::too_many_arguments)]
    pub fn pulp_call(
        target_ptr: i32,
        target_len: i32,
        name_ptr: i32,
        name_len: i32,
        args_ptr: i32,
        args_len: i32,
        resp_ptr_out: i32,
        resp_len_out: i32,
    ) -> i32;
    /// `demo.greet`: the host logs `hello, <name>!` for the cell.
    pub fn demo_greet(name_ptr: i32, name_len: i32) -> i32;
    /// `demo.greet`: does nothing; measures the cost of an import call.
    pub fn demo_noop() -> i32;

    /// `storage.s3`: req = `{key, body, content_type?}`.
    pub fn s3_put(req_ptr: i32, req_len: i32) -> i32;
    /// `storage.s3`: req = `{key}`; returns `{body, content_type, content_length, etag}`.
    pub fn s3_get(req_ptr: i32, req_len: i32, out_ptr: i32, out_len: i32) -> i32;
    /// `storage.s3`: req = `{key}`; returns `{size, last_modified_unix}`.
    pub fn s3_head(req_ptr: i32, req_len: i32, out_ptr: i32, out_len: i32) -> i32;
    /// `storage.s3`: req = `{key}`.
    pub fn s3_delete(req_ptr: i32, req_len: i32) -> i32;
    /// `storage.s3`: req = `{src_key, dst_key}`.
    pub fn s3_copy(req_ptr: i32, req_len: i32) -> i32;
    /// `storage.s3`: req = `{prefix, continuation_token, max_keys}`; returns
    /// `{entries: [{key, size, last_modified_unix}], next_continuation_token, is_truncated}`.
    pub fn s3_list(req_ptr: i32, req_len: i32, out_ptr: i32, out_len: i32) -> i32;
    /// `storage.s3`: req = `{key, ttl_sec}`; returns `{url}`, a GET URL.
    pub fn s3_presign(req_ptr: i32, req_len: i32, out_ptr: i32, out_len: i32) -> i32;

    /// `transport.http.inbound`: req = `{method, path}`.
    pub fn http_register(req_ptr: i32, req_len: i32) -> i32;
    /// `transport.http.inbound`: resp = `{id, status, headers, body, cookies?}`.
    pub fn http_respond(resp_ptr: i32, resp_len: i32) -> i32;
    /// `transport.http.outbound`: req = `{method, url, headers, body,
    /// timeout_ns?}`; the response `{status, headers, body}` comes back
    /// through the out-pointers (see [`HostBuf`](crate::HostBuf)).
    pub fn http_fetch(req_ptr: i32, req_len: i32, resp_ptr_out: i32, resp_len_out: i32) -> i32;

    /// `transport.ws.inbound`: the raw path bytes.
    pub fn ws_register(path_ptr: i32, path_len: i32) -> i32;
    /// `transport.ws.inbound`: req = `{conn_id, opcode, payload}`.
    pub fn ws_send(req_ptr: i32, req_len: i32) -> i32;
    /// `transport.ws.inbound`: req = `{conn_id, code, reason}`.
    pub fn ws_close(req_ptr: i32, req_len: i32) -> i32;

    /// `transport.sse`: the raw path bytes.
    pub fn sse_register(path_ptr: i32, path_len: i32) -> i32;
    /// `transport.sse`: req = `{path, id?, event?, data}`.
    pub fn sse_emit(req_ptr: i32, req_len: i32) -> i32;

    /// `storage.fs`: the file's bytes come back through the out-pointers.
    pub fn fs_read(path_ptr: i32, path_len: i32, data_ptr_out: i32, data_len_out: i32) -> i32;
    /// `storage.fs`: replaces the file atomically, creating parent directories.
    pub fn fs_write(path_ptr: i32, path_len: i32, data_ptr: i32, data_len: i32) -> i32;
    /// `storage.fs`: a file, or an empty directory.
    pub fn fs_delete(path_ptr: i32, path_len: i32) -> i32;
    /// `storage.fs`: the paths starting with the prefix, as a MessagePack array.
    pub fn fs_list(prefix_ptr: i32, prefix_len: i32, list_ptr_out: i32, list_len_out: i32) -> i32;

    /// `storage.sqlite`: params = MessagePack array (empty = none).
    pub fn sqlite_exec(query_ptr: i32, query_len: i32, params_ptr: i32, params_len: i32) -> i32;
    /// `storage.sqlite`: like `sqlite_exec`; returns `{rows_affected, last_insert_id}`.
    pub fn sqlite_exec_result(
        query_ptr: i32,
        query_len: i32,
        params_ptr: i32,
        params_len: i32,
        result_ptr_out: i32,
        result_len_out: i32,
    ) -> i32;
    /// `storage.sqlite`: returns the rows, each an array of column values.
    pub fn sqlite_query(
        query_ptr: i32,
        query_len: i32,
        params_ptr: i32,
        params_len: i32,
        rows_ptr_out: i32,
        rows_len_out: i32,
    ) -> i32;
    /// `storage.sqlite`: returns `{columns, rows}`.
    pub fn sqlite_query_table(
        query_ptr: i32,
        query_len: i32,
        params_ptr: i32,
        params_len: i32,
        table_ptr_out: i32,
        table_len_out: i32,
    ) -> i32;
}

/// A byte slice as the `(ptr, len)` pair the imports take.
pub(crate) fn ptr_len(bytes: &[u8]) -> (i32, i32) {
    // wasm32 addresses and lengths fit in 32 bits; the host reads them as u32.
    (bytes.as_ptr() as usize as i32, bytes.len() as i32)
}

/// An import that takes one `(ptr, len)` input and returns a code.
pub(crate) type Import = unsafe extern "C" fn(i32, i32) -> i32;

/// Passes `bytes` to `import`.
pub(crate) fn call(import: Import, bytes: &[u8]) -> Result<(), Code> {
    let (ptr, len) = ptr_len(bytes);
    // SAFETY: a plain host call; ptr/len describe `bytes`, which outlives it.
    Code::check(unsafe { import(ptr, len) })
}

/// Passes `value` to `import` as a MessagePack map keyed by field names.
pub(crate) fn call_encoded<T: Serialize>(import: Import, value: &T) -> Result<(), Code> {
    call(import, &encode(value))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The SDK encodes only structs of strings, integers, maps and bytes,
    // which rmp-serde always writes into a Vec.
    rmp_serde::to_vec_named(value).expect("request structs always encode")
}
