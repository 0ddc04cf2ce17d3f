//! HTTP: serving routes (`transport.http.inbound`) and calling out
//! (`transport.http.outbound`).
//!
//! A registered route delivers `http.request` events; decode them into a
//! [`Request`] and answer with [`respond`], during that step or a later one.
//! [`RequestView`] and [`reply`] do the same from borrowed bytes, allocating
//! nothing on the way in or out but the reply's one buffer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use pulp_wire::payload::HttpRoute;
use serde::{Deserialize, Serialize};

use crate::msgpack::Reader;
use crate::{raw, Code, Error, HostBuf};

/// Serves `method` requests for `path`, whose `:name` segments capture
/// parameters (`/users/:id`).
pub fn register(method: &str, path: &str) -> Result<(), Code> {
    let route = HttpRoute {
        method: Cow::Borrowed(method),
        path: Cow::Borrowed(path),
    };
    raw::call_encoded(raw::http_register, &route)
}

/// The payload of an `http.request` event, owned. [`RequestView`] reads the
/// same payload without copying it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Names the request in its [`Response`].
    pub id: u64,
    pub method: String,
    /// The request's path, without the query string.
    pub path: String,
    /// The values of the route's `:name` segments.
    pub params: BTreeMap<String, String>,
    pub query: BTreeMap<String, String>,
    /// Keyed by lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub remote_addr: String,
}

impl Request {
    /// The event kind that carries a request.
    pub const KIND: &'static str = "http.request";

    /// The request a step carries, if it carries one. A payload that does not
    /// decode is logged at level error and yields `None`, like a step without one.
    pub fn from_step(step: &crate::Step) -> Option<Request> {
        RequestView::from_step(step).map(|view| view.to_owned())
    }

    /// Decodes an `http.request` payload.
    pub fn decode(payload: &[u8]) -> Result<Request, Error> {
        RequestView::decode(payload).map(|view| view.to_owned())
    }
}

/// An `http.request` payload read in place: every field borrows the step's
/// buffer, so serving a request allocates nothing until the cell does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestView<'a> {
    pub id: u64,
    pub method: &'a str,
    pub path: &'a str,
    pub params: Fields<'a>,
    pub query: Fields<'a>,
    /// Keyed by lower-case names.
    pub headers: Fields<'a>,
    pub body: &'a [u8],
    pub remote_addr: &'a str,
}

impl<'a> RequestView<'a> {
    /// As [`Request::from_step`], without the copy.
    pub fn from_step(step: &crate::Step<'a>) -> Option<RequestView<'a>> {
        let event = step.event().filter(|e| e.kind() == Request::KIND)?;
        match RequestView::decode(event.payload()) {
            Ok(request) => Some(request),
            Err(err) => {
                crate::log::error(&err.to_string());
                None
            }
        }
    }

    /// Reads an `http.request` payload: `id`, `method` and `path` are
    /// required, the rest default to empty. One pass over the bytes.
    pub fn decode(payload: &'a [u8]) -> Result<RequestView<'a>, Error> {
        let bad = |field: &str| Error::new(format!("http.request payload: bad {field}"));
        let mut reader = Reader::new(payload);
        let (mut id, mut method, mut path) = (None, None, None);
        let mut request = RequestView::default();
        for _ in 0..reader.map_len().ok_or_else(|| bad("map"))? {
            // Keys are compared as bytes: only values need checking as UTF-8.
            let key = reader.str_bytes().ok_or_else(|| bad("key"))?;
            let read = match key {
                b"id" => reader.uint().map(|v| id = Some(v)),
                b"method" => reader.str().map(|v| method = Some(v)),
                b"path" => reader.str().map(|v| path = Some(v)),
                b"params" => Fields::read(&mut reader).map(|v| request.params = v),
                b"query" => Fields::read(&mut reader).map(|v| request.query = v),
                b"headers" => Fields::read(&mut reader).map(|v| request.headers = v),
                b"body" => reader.bytes().map(|v| request.body = v),
                b"remote_addr" => reader.str().map(|v| request.remote_addr = v),
                _ => reader.skip().map(drop),
            };
            read.ok_or_else(|| bad(&String::from_utf8_lossy(key)))?;
        }
        if !reader.is_done() {
            return Err(bad("map: bytes after it"));
        }
        let missing = |field: &str| Error::new(format!("http.request payload: no {field}"));
        request.id = id.ok_or_else(|| missing("id"))?;
        request.method = method.ok_or_else(|| missing("method"))?;
        request.path = path.ok_or_else(|| missing("path"))?;
        Ok(request)
    }

    /// Copies the request out of the step's buffer.
    pub fn to_owned(&self) -> Request {
        Request {
            id: self.id,
            method: self.method.to_owned(),
            path: self.path.to_owned(),
            params: self.params.to_map(),
            query: self.query.to_map(),
            headers: self.headers.to_map(),
            body: self.body.to_vec(),
            remote_addr: self.remote_addr.to_owned(),
        }
    }
}

/// A MessagePack map of strings to strings, read in place; checked when the
/// request is decoded, so reading it cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    raw: &'a [u8],
}

impl Default for Fields<'_> {
    fn default() -> Self {
        // 0x80: the empty fixmap.
        Fields { raw: &[0x80] }
    }
}

impl<'a> Fields<'a> {
    /// Reads a map of strings to strings, checking every string once.
    fn read(reader: &mut Reader<'a>) -> Option<Fields<'a>> {
        let start = reader.position();
        for _ in 0..reader.map_len()? {
            reader.str()?;
            reader.str()?;
        }
        Some(Fields {
            raw: reader.since(start),
        })
    }

    /// The value of the first entry named `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let mut reader = Reader::new(self.raw);
        for _ in 0..reader.map_len()? {
            if reader.str_bytes()? == name.as_bytes() {
                return reader.str();
            }
            reader.str_bytes()?;
        }
        None
    }

    /// The entries in the order the host sent them.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mut reader = Reader::new(self.raw);
        let len = reader.map_len().unwrap_or(0);
        (0..len).map_while(move |_| Some((reader.str()?, reader.str()?)))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }
}

/// The answer to a [`Request`], built with the methods below.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub id: u64,
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Full `Set-Cookie` values, one header each.
    pub cookies: Vec<String>,
}

impl Response {
    /// An empty response with `status` to request `id`.
    pub fn new(id: u64, status: u16) -> Response {
        Response {
            id,
            status,
            ..Response::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Adds a `Set-Cookie` value such as `"sid=1; Path=/; HttpOnly"`.
    pub fn cookie(mut self, cookie: &str) -> Response {
        self.cookies.push(cookie.to_owned());
        self
    }

    fn encode(&self) -> Vec<u8> {
        encode_response(
            self.id,
            self.status,
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.body,
            self.cookies.iter().map(String::as_str),
        )
    }
}

/// Sends `response`; refused (code 4) when its id is unknown or already
/// answered.
pub fn respond(response: &Response) -> Result<(), Code> {
    raw::call(raw::http_respond, &response.encode())
}

/// A response from borrowed parts, such as a [`RequestView`]'s fields, sent
/// with [`reply`] without copying them into a [`Response`] first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply<'a> {
    pub id: u64,
    pub status: u16,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Full `Set-Cookie` values, one header each.
    pub cookies: &'a [&'a str],
}

impl Reply<'_> {
    /// An empty reply with `status` to request `id`.
    pub fn new(id: u64, status: u16) -> Reply<'static> {
        Reply {
            id,
            status,
            ..Reply::default()
        }
    }

    fn encode(&self) -> Vec<u8> {
        encode_response(
            self.id,
            self.status,
            self.headers.iter().copied(),
            self.body,
            self.cookies.iter().copied(),
        )
    }
}

/// Sends `reply`, as [`respond`] does a [`Response`].
pub fn reply(reply: &Reply) -> Result<(), Code> {
    raw::call(raw::http_respond, &reply.encode())
}

/// `{id, status, headers, body, cookies?}`, written field by field into one
/// buffer sized for the body and a few headers.
fn encode_response<'s>(
    id: u64,
    status: u16,
    headers: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
    body: &[u8],
    cookies: impl ExactSizeIterator<Item = &'s str>,
) -> Vec<u8> {
    use rmp::encode::{write_array_len, write_bin, write_map_len, write_str, write_uint};
    fn len(n: usize) -> u32 {
        u32::try_from(n).expect("a wasm32 length fits in u32")
    }
    let mut out = Vec::with_capacity(64 + body.len());
    // Writing into a Vec cannot fail.
    let fields = if cookies.len() == 0 { 4 } else { 5 };
    write_map_len(&mut out, fields).unwrap();
    write_str(&mut out, "id").unwrap();
    write_uint(&mut out, id).unwrap();
    write_str(&mut out, "status").unwrap();
    write_uint(&mut out, u64::from(status)).unwrap();
    write_str(&mut out, "headers").unwrap();
    write_map_len(&mut out, len(headers.len())).unwrap();
    for (name, value) in headers {
        write_str(&mut out, name).unwrap();
        write_str(&mut out, value).unwrap();
    }
    write_str(&mut out, "body").unwrap();
    write_bin(&mut out, body).unwrap();
    if cookies.len() > 0 {
        write_str(&mut out, "cookies").unwrap();
        write_array_len(&mut out, len(cookies.len())).unwrap();
        for cookie in cookies {
            write_str(&mut out, cookie).unwrap();
        }
    }
    out
}

/// An outbound request for [`fetch`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FetchRequest {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The host's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ns: Option<u64>,
}

impl FetchRequest {
    pub fn new(method: &str, url: &str) -> FetchRequest {
        FetchRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            ..FetchRequest::default()
        }
    }

    pub fn get(url: &str) -> FetchRequest {
        FetchRequest::new("GET", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> FetchRequest {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> FetchRequest {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> FetchRequest {
        self.timeout_ns = Some(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        self
    }
}

/// What [`fetch`] got back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct FetchResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Performs `request` and waits for the response, within the step.
///
/// Any status the server answers is `Ok`; errors are the host's codes:
/// 4 when the egress policy refuses the host, 5 when the network fails,
/// 3 when the host's answer does not decode.
pub fn fetch(request: &FetchRequest) -> Result<FetchResponse, Code> {
    let encoded = raw::encode(request);
    let (req_ptr, req_len) = raw::ptr_len(&encoded);
    // SAFETY: `encoded` outlives the call, and http_fetch keeps the
    // out-pointer contract of docs/cell-abi.md.
    let response = unsafe {
        HostBuf::receive(|ptr_out, len_out| raw::http_fetch(req_ptr, req_len, ptr_out, len_out))
    }?;
    response.decode().map_err(|_| Code::DECODE)
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    fn text_map(pairs: &[(&str, &str)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), Value::from(*v)))
                .collect(),
        )
    }

    /// An `http.request` payload as the host writes it, with `extra` fields
    /// appended and the fields named in `without` left out.
    fn payload(extra: Vec<(&str, Value)>, without: &[&str]) -> Vec<u8> {
        let mut fields = vec![
            ("id", Value::from(42)),
            ("method", Value::from("POST")),
            ("path", Value::from("/items/7")),
            ("params", text_map(&[("id", "7")])),
            ("query", text_map(&[("z", "1"), ("a", "2")])),
            (
                "headers",
                text_map(&[("host", "h"), ("content-type", "text/plain")]),
            ),
            ("body", Value::Binary(vec![0, 1, 2])),
            ("remote_addr", Value::from("127.0.0.1:5000")),
        ];
        fields.retain(|(key, _)| !without.contains(key));
        fields.extend(extra);
        encode(&Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        ))
    }

    #[test]
    fn a_request_reads_in_place_and_copies_out() {
        let bytes = payload(vec![("later", Value::Array(vec![Value::Nil]))], &[]);
        let view = RequestView::decode(&bytes).unwrap();
        assert_eq!((view.id, view.method, view.path), (42, "POST", "/items/7"));
        assert_eq!(view.params.get("id"), Some("7"));
        assert_eq!(view.params.get("other"), None);
        assert_eq!(
            view.query.iter().collect::<Vec<_>>(),
            [("z", "1"), ("a", "2")]
        );
        assert_eq!(view.headers.get("content-type"), Some("text/plain"));
        assert_eq!(view.body, [0, 1, 2]);
        assert_eq!(view.remote_addr, "127.0.0.1:5000");

        let owned = Request::decode(&bytes).unwrap();
        assert_eq!(owned, view.to_owned());
        assert_eq!(owned.query.keys().collect::<Vec<_>>(), ["a", "z"]);

        // Only id, method and path are required; a str body is taken as bytes.
        let minimal = payload(
            vec![("body", Value::from("hi"))],
            &["params", "query", "headers", "body", "remote_addr"],
        );
        let view = RequestView::decode(&minimal).unwrap();
        assert!(view.params.is_empty() && view.query.is_empty() && view.headers.is_empty());
        assert_eq!(view.body, b"hi");
        assert_eq!(view.remote_addr, "");
    }

    #[test]
    fn a_malformed_request_is_an_error_naming_what_is_wrong() {
        let error = |bytes: &[u8]| RequestView::decode(bytes).unwrap_err().to_string();
        assert_eq!(
            error(&payload(vec![], &["id"])),
            "http.request payload: no id"
        );
        assert_eq!(
            error(&payload(vec![("method", Value::from(1))], &["method"])),
            "http.request payload: bad method"
        );
        assert_eq!(
            error(&payload(vec![("id", Value::from(-1))], &["id"])),
            "http.request payload: bad id"
        );
        let header_not_text = Value::Map(vec![(Value::from("x"), Value::from(1))]);
        assert_eq!(
            error(&payload(vec![("headers", header_not_text)], &["headers"])),
            "http.request payload: bad headers"
        );
        let mut trailing = payload(vec![], &[]);
        trailing.push(0xc0);
        assert_eq!(
            error(&trailing),
            "http.request payload: bad map: bytes after it"
        );
        assert_eq!(error(&[0x91, 0x01]), "http.request payload: bad map");
        let cut = payload(vec![], &[]);
        assert!(RequestView::decode(&cut[..cut.len() - 3]).is_err());
    }

    #[test]
    fn responses_and_replies_encode_alike() {
        let response = Response::new(9, 201)
            .header("content-type", "text/plain")
            .body("made")
            .cookie("a=1");
        let reply = Reply {
            headers: &[("content-type", "text/plain")],
            body: b"made",
            cookies: &["a=1"],
            ..Reply::new(9, 201)
        };
        let from_reply = reply.encode();
        assert_eq!(response.encode(), from_reply);
        let decoded = rmpv::decode::read_value(&mut &from_reply[..]).unwrap();
        let expected = Value::Map(vec![
            (Value::from("id"), Value::from(9)),
            (Value::from("status"), Value::from(201)),
            (
                Value::from("headers"),
                text_map(&[("content-type", "text/plain")]),
            ),
            (Value::from("body"), Value::Binary(b"made".to_vec())),
            (
                Value::from("cookies"),
                Value::Array(vec![Value::from("a=1")]),
            ),
        ]);
        assert_eq!(decoded, expected);

        // No cookies: the field is left out, as docs/capabilities.md allows.
        let plain = Response::new(1, 204).encode();
        let decoded = rmpv::decode::read_value(&mut &plain[..]).unwrap();
        let keys: Vec<_> = decoded
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, ["id", "status", "headers", "body"]);
    }
}
