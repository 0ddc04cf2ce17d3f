//! The seven imports: decode the request, confine the key, call S3, answer.

use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions};
use pulp_ext_api::Code;
use pulp_wire::payload::{nil_as_default, nil_as_empty_bytes};
use serde::{Deserialize, Serialize};

use crate::key::{self, Refused};
use crate::store::{self, CellStore, Failure};

/// The context one import call runs in.
pub struct Call<'a> {
    pub op: &'static str,
    pub cell: &'a str,
    pub store: &'a CellStore,
    /// The cell's `max_message_bytes`: no object larger is read.
    pub max_message_bytes: u64,
}

impl Call<'_> {
    fn client(&self) -> Result<&AmazonS3, Code> {
        self.store.client.as_deref().map_err(|reason| {
            tracing::error!(cell = self.cell, "s3_{} refused: {reason}", self.op);
            store::CONFIG_MISSING
        })
    }

    fn object(&self, key: &str) -> Result<Path, Code> {
        key::object(self.cell, key).map_err(|refused| self.refused(key, refused))
    }

    fn refused(&self, key: &str, Refused(why): Refused) -> Code {
        tracing::warn!(cell = self.cell, key, "s3_{} refused: {why}", self.op);
        Code::REFUSED
    }

    /// Runs one S3 operation; a failure is logged with the cell, the key and S3's
    /// error. Not found is an answer rather than a fault, so it stays at debug.
    fn run<T>(
        &self,
        key: &str,
        op: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, Code> {
        store::run(self.store.timeout, op).map_err(
            |Failure {
                 code,
                 s3_error,
                 detail,
             }| {
                if code == Code::NOT_FOUND {
                    tracing::debug!(
                        cell = self.cell,
                        key,
                        s3_error,
                        "s3_{} found nothing: {detail}",
                        self.op
                    );
                } else {
                    tracing::error!(
                        cell = self.cell,
                        key,
                        s3_error,
                        "s3_{} failed: {detail}",
                        self.op
                    );
                }
                code
            },
        )
    }
}

fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Code> {
    if bytes.is_empty() {
        return Err(Code::EMPTY);
    }
    rmp_serde::from_slice(bytes).map_err(|_| Code::DECODE)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("result structs always encode")
}

#[derive(Deserialize)]
struct KeyRequest<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct PutRequest<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    /// Required; nil is an empty body (Go's nil slice).
    #[serde(deserialize_with = "nil_as_empty_bytes")]
    body: Vec<u8>,
    #[serde(default, deserialize_with = "nil_as_default")]
    content_type: Option<String>,
}

pub fn put(call: &Call<'_>, input: &[u8]) -> Result<(), Code> {
    let request: PutRequest = decode(input)?;
    let location = call.object(&request.key)?;
    let client = call.client()?;
    let mut attributes = Attributes::new();
    if let Some(content_type) = request.content_type.filter(|c| !c.is_empty()) {
        attributes.insert(Attribute::ContentType, content_type.into());
    }
    let options = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    call.run(
        &request.key,
        client.put_opts(&location, request.body.into(), options),
    )?;
    Ok(())
}

#[derive(Serialize)]
struct GetResponse {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    content_type: String,
    content_length: u64,
    etag: String,
}

pub fn get(call: &Call<'_>, input: &[u8]) -> Result<Vec<u8>, Code> {
    let request: KeyRequest = decode(input)?;
    let location = call.object(&request.key)?;
    let client = call.client()?;
    let limit = call.max_message_bytes;
    let response = call.run(&request.key, async {
        let result = client.get(&location).await?;
        if result.meta.size > limit {
            return Ok(Err(result.meta.size));
        }
        let content_type = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string())
            .unwrap_or_default();
        let etag = result.meta.e_tag.clone().unwrap_or_default();
        let body = result.bytes().await?;
        Ok(Ok(GetResponse {
            content_length: body.len() as u64,
            body: body.into(),
            content_type,
            etag,
        }))
    })?;
    let response = response.map_err(|size| {
        tracing::warn!(
            cell = call.cell,
            key = &*request.key,
            "s3_get refused: the object has {size} bytes, over max_message_bytes {limit}"
        );
        Code::TOO_LARGE
    })?;
    Ok(encode(&response))
}

#[derive(Serialize)]
struct HeadResponse {
    size: u64,
    last_modified_unix: i64,
}

pub fn head(call: &Call<'_>, input: &[u8]) -> Result<Vec<u8>, Code> {
    let request: KeyRequest = decode(input)?;
    let location = call.object(&request.key)?;
    let client = call.client()?;
    let meta = call.run(&request.key, client.head(&location))?;
    let response = HeadResponse {
        size: meta.size,
        last_modified_unix: meta.last_modified.timestamp(),
    };
    Ok(encode(&response))
}

pub fn delete(call: &Call<'_>, input: &[u8]) -> Result<(), Code> {
    let request: KeyRequest = decode(input)?;
    let location = call.object(&request.key)?;
    let client = call.client()?;
    call.run(&request.key, client.delete(&location))
}

#[derive(Deserialize)]
struct CopyRequest<'a> {
    #[serde(borrow)]
    src_key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    dst_key: std::borrow::Cow<'a, str>,
}

pub fn copy(call: &Call<'_>, input: &[u8]) -> Result<(), Code> {
    let request: CopyRequest = decode(input)?;
    let from = call.object(&request.src_key)?;
    let to = call.object(&request.dst_key)?;
    let client = call.client()?;
    let keys = format!("{} -> {}", request.src_key, request.dst_key);
    call.run(&keys, client.copy(&from, &to))
}

/// The most keys one `s3_list` returns, as S3 itself.
const MAX_KEYS: usize = 1000;

#[derive(Deserialize)]
struct ListRequest {
    #[serde(default, deserialize_with = "nil_as_default")]
    prefix: String,
    #[serde(default, deserialize_with = "nil_as_default")]
    continuation_token: String,
    #[serde(default, deserialize_with = "nil_as_default")]
    max_keys: i64,
}

#[derive(Serialize)]
struct ListEntry {
    key: String,
    size: u64,
    last_modified_unix: i64,
}

#[derive(Serialize)]
struct ListResponse {
    entries: Vec<ListEntry>,
    next_continuation_token: String,
    is_truncated: bool,
}

/// Lists the cell's keys that start with `prefix`, in key order.
///
/// The continuation token is the last key of the previous page: the listing
/// resumes after it (S3's `start-after`), which needs no state in the extension
/// and keeps working across host restarts.
pub fn list(call: &Call<'_>, input: &[u8]) -> Result<Vec<u8>, Code> {
    let request: ListRequest = decode(input)?;
    key::check_prefix(&request.prefix).map_err(|r| call.refused(&request.prefix, r))?;
    let offset = match request.continuation_token.as_str() {
        "" => None,
        token => Some(call.object(token)?),
    };
    let client = call.client()?;
    let max_keys = match usize::try_from(request.max_keys) {
        Ok(0) | Err(_) => MAX_KEYS,
        Ok(n) => n.min(MAX_KEYS),
    };
    // The store lists whole directories; the prefix's last segment may be partial.
    let dir = match request.prefix.rfind('/') {
        Some(end) => format!("{}/{}", call.cell, &request.prefix[..end]),
        None => call.cell.to_owned(),
    };
    let dir =
        Path::parse(&dir).map_err(|_| call.refused(&request.prefix, Refused("bad prefix")))?;
    let wanted = format!("{}/{}", call.cell, request.prefix);
    let response = call.run(&request.prefix, async {
        let mut listing = match &offset {
            Some(offset) => client.list_with_offset(Some(&dir), offset),
            None => client.list(Some(&dir)),
        };
        let mut response = ListResponse {
            entries: Vec::new(),
            next_continuation_token: String::new(),
            is_truncated: false,
        };
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let location = meta.location.as_ref();
            if !location.starts_with(&wanted) {
                // Keys come in order: past the prefix, nothing more can match.
                if location > wanted.as_str() {
                    break;
                }
                continue;
            }
            let Some(key) = key::strip(call.cell, location) else {
                continue;
            };
            if response.entries.len() == max_keys {
                response.is_truncated = true;
                break;
            }
            response.entries.push(ListEntry {
                key: key.to_owned(),
                size: meta.size,
                last_modified_unix: meta.last_modified.timestamp(),
            });
        }
        if response.is_truncated {
            if let Some(last) = response.entries.last() {
                response.next_continuation_token = last.key.clone();
            }
        }
        Ok(response)
    })?;
    Ok(encode(&response))
}

/// Presigned URLs live at most a week, as S3 allows.
const MAX_TTL_SEC: u64 = 7 * 24 * 3600;
const DEFAULT_TTL_SEC: u64 = 900;

#[derive(Deserialize)]
struct PresignRequest<'a> {
    #[serde(borrow)]
    key: std::borrow::Cow<'a, str>,
    #[serde(default, deserialize_with = "nil_as_default")]
    ttl_sec: u64,
}

#[derive(Serialize)]
struct PresignResponse {
    url: String,
}

/// A GET URL for the object that anyone holding it may use until it expires.
pub fn presign(call: &Call<'_>, input: &[u8]) -> Result<Vec<u8>, Code> {
    let request: PresignRequest = decode(input)?;
    let location = call.object(&request.key)?;
    let client = call.client()?;
    let ttl = match request.ttl_sec {
        0 => DEFAULT_TTL_SEC,
        ttl if ttl > MAX_TTL_SEC => {
            return Err(call.refused(&request.key, Refused("ttl_sec over a week")));
        }
        ttl => ttl,
    };
    let url = call.run(
        &request.key,
        client.signed_url(reqwest::Method::GET, &location, Duration::from_secs(ttl)),
    )?;
    let response = PresignResponse { url: url.into() };
    Ok(encode(&response))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map of `pairs` with nil for every `None`, as a Go cell encodes it.
    fn go_map(pairs: &[(&str, Option<rmpv::Value>)]) -> Vec<u8> {
        let map = rmpv::Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), v.clone().unwrap_or(rmpv::Value::Nil)))
                .collect(),
        );
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        bytes
    }

    #[test]
    fn nil_optional_fields_read_as_left_out() {
        let bytes = go_map(&[
            ("key", Some("a".into())),
            ("body", None),
            ("content_type", None),
        ]);
        let put: PutRequest = decode(&bytes).unwrap();
        assert_eq!(
            (&*put.key, put.body.len(), put.content_type),
            ("a", 0, None)
        );

        let list: ListRequest = decode(&go_map(&[
            ("prefix", None),
            ("continuation_token", None),
            ("max_keys", None),
        ]))
        .unwrap();
        assert_eq!(
            (&*list.prefix, &*list.continuation_token, list.max_keys),
            ("", "", 0)
        );

        let bytes = go_map(&[("key", Some("a".into())), ("ttl_sec", None)]);
        let presign: PresignRequest = decode(&bytes).unwrap();
        assert_eq!(presign.ttl_sec, 0);
        // A required field stays required.
        assert_eq!(
            decode::<PutRequest>(&go_map(&[("key", None)])).err(),
            Some(Code::DECODE)
        );
    }
}
