//! HTTP: serving routes (`transport.http.inbound`) and calling out
//! (`transport.http.outbound`).
//!
//! A registered route delivers `http.request` events; decode them into a
//! [`Request`] and answer with [`respond`], during that step or a later one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{raw, Code, HostBuf};

/// Serves `method` requests for `path`, whose `:name` segments capture
/// parameters (`/users/:id`).
pub fn register(method: &str, path: &str) -> Result<(), Code> {
    #[derive(Serialize)]
    struct Route<'a> {
        method: &'a str,
        path: &'a str,
    }
    raw::call_encoded(raw::http_register, &Route { method, path })
}

/// The payload of an `http.request` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Request {
    /// Names the request in its [`Response`].
    pub id: u64,
    pub method: String,
    /// The request's path, without the query string.
    pub path: String,
    /// The values of the route's `:name` segments.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Keyed by lower-case names.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, with = "serde_bytes")]
    pub body: Vec<u8>,
    #[serde(default)]
    pub remote_addr: String,
}

impl Request {
    /// The event kind that carries a request.
    pub const KIND: &'static str = "http.request";

    /// The request a step carries, if it carries one. A payload that does not
    /// decode is logged at level error and yields `None`, like a step without one.
    pub fn from_step(step: &crate::Step) -> Option<Request> {
        let event = step.event().filter(|e| e.kind() == Request::KIND)?;
        match event.decode() {
            Ok(request) => Some(request),
            Err(err) => {
                crate::log::error(&err.to_string());
                None
            }
        }
    }
}

/// The answer to a [`Request`], built with the methods below.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Response {
    pub id: u64,
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Full `Set-Cookie` values, one header each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
}

/// Sends `response`; refused (code 4) when its id is unknown or already
/// answered.
pub fn respond(response: &Response) -> Result<(), Code> {
    // Sized for the body and a few headers: one allocation on the hot path.
    let mut encoded = Vec::with_capacity(64 + response.body.len());
    rmp_serde::encode::write_named(&mut encoded, response).expect("responses always encode");
    raw::call(raw::http_respond, &encoded)
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
    // out-pointer contract of SPEC §2.
    let response = unsafe {
        HostBuf::receive(|ptr_out, len_out| raw::http_fetch(req_ptr, req_len, ptr_out, len_out))
    }?;
    response.decode().map_err(|_| Code::DECODE)
}
