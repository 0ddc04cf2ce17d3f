//! Objects in S3 (`storage.s3`, from the `pulp-ext-s3` extension).
//!
//! Keys are the cell's own: the extension stores them under a prefix the cell
//! never sees, so two cells may use the same key without meeting. Besides the
//! codes every import shares, these return 4 for an S3 error (network,
//! credentials) or a refused key (`..`, absolute, empty), 6 for a missing
//! object, [`CONFIG_MISSING`] when the extension has no bucket configured and
//! [`ACCESS_DENIED`] when the server says `AccessDenied`.

use serde::{Deserialize, Serialize};

use crate::{raw, Code, HostBuf};

/// The extension has no usable configuration (no bucket).
pub const CONFIG_MISSING: Code = pulp_wire::code::s3::CONFIG_MISSING;
/// The server refused the operation with `AccessDenied`.
pub const ACCESS_DENIED: Code = pulp_wire::code::s3::ACCESS_DENIED;

#[derive(Serialize)]
struct KeyRequest<'a> {
    key: &'a str,
}

/// Calls an import that takes one request and returns data through out-pointers.
fn fetch<T: Serialize>(
    import: unsafe extern "C" fn(i32, i32, i32, i32) -> i32,
    request: &T,
) -> Result<HostBuf, Code> {
    let encoded = raw::encode(request);
    let (req_ptr, req_len) = raw::ptr_len(&encoded);
    // SAFETY: `encoded` outlives the call, and the storage.s3 imports keep the
    // out-pointer contract of docs/cell-abi.md.
    unsafe { HostBuf::receive(|ptr_out, len_out| import(req_ptr, req_len, ptr_out, len_out)) }
}

/// Stores `body` under `key`, replacing what was there.
pub fn put(key: &str, body: &[u8]) -> Result<(), Code> {
    put_typed(key, body, "")
}

/// Like [`put`], with the object's `Content-Type` (empty: none).
pub fn put_typed(key: &str, body: &[u8], content_type: &str) -> Result<(), Code> {
    #[derive(Serialize)]
    struct Put<'a> {
        key: &'a str,
        #[serde(with = "serde_bytes")]
        body: &'a [u8],
        #[serde(skip_serializing_if = "str::is_empty")]
        content_type: &'a str,
    }
    raw::call_encoded(
        raw::s3_put,
        &Put {
            key,
            body,
            content_type,
        },
    )
}

/// An object [`get`] fetched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Object {
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Empty when the object has none.
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub content_length: u64,
    #[serde(default)]
    pub etag: String,
}

/// Fetches the object at `key`; [`Code::NOT_FOUND`] when there is none.
pub fn get(key: &str) -> Result<Object, Code> {
    fetch(raw::s3_get, &KeyRequest { key })?
        .decode()
        .map_err(|_| Code::DECODE)
}

/// What [`head`] tells about an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Head {
    pub size: u64,
    pub last_modified_unix: i64,
}

/// The size and modification time of the object at `key`.
pub fn head(key: &str) -> Result<Head, Code> {
    fetch(raw::s3_head, &KeyRequest { key })?
        .decode()
        .map_err(|_| Code::DECODE)
}

/// Deletes the object at `key`; deleting a missing object is not an error.
pub fn delete(key: &str) -> Result<(), Code> {
    raw::call_encoded(raw::s3_delete, &KeyRequest { key })
}

/// Copies the object at `src_key` to `dst_key`, both the cell's own.
pub fn copy(src_key: &str, dst_key: &str) -> Result<(), Code> {
    #[derive(Serialize)]
    struct Copy<'a> {
        src_key: &'a str,
        dst_key: &'a str,
    }
    raw::call_encoded(raw::s3_copy, &Copy { src_key, dst_key })
}

/// One object in a [`Listing`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Entry {
    pub key: String,
    pub size: u64,
    pub last_modified_unix: i64,
}

/// One page of [`list`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Pass to the next [`list`] call when `is_truncated`.
    #[serde(default)]
    pub next_continuation_token: String,
    #[serde(default)]
    pub is_truncated: bool,
}

/// Lists the keys starting with `prefix`, in key order, at most `max_keys`
/// (0: the extension's maximum, 1000) after `continuation_token` (empty: from
/// the start).
pub fn list(prefix: &str, continuation_token: &str, max_keys: u32) -> Result<Listing, Code> {
    #[derive(Serialize)]
    struct List<'a> {
        prefix: &'a str,
        continuation_token: &'a str,
        max_keys: u32,
    }
    let request = List {
        prefix,
        continuation_token,
        max_keys,
    };
    fetch(raw::s3_list, &request)?
        .decode()
        .map_err(|_| Code::DECODE)
}

/// A URL that fetches the object at `key` with a plain GET for `ttl_sec`
/// seconds (0: the extension's default, 15 minutes; at most a week).
pub fn presign(key: &str, ttl_sec: u64) -> Result<String, Code> {
    #[derive(Serialize)]
    struct Presign<'a> {
        key: &'a str,
        ttl_sec: u64,
    }
    #[derive(Deserialize)]
    struct Url {
        url: String,
    }
    let url: Url = fetch(raw::s3_presign, &Presign { key, ttl_sec })?
        .decode()
        .map_err(|_| Code::DECODE)?;
    Ok(url.url)
}
