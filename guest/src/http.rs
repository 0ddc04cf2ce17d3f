//! HTTP: serving routes (`transport.http.inbound`) and calling out
//! (`transport.http.outbound`).
//!
//! A registered route delivers `http.request` events; decode them into a
//! [`Request`] and answer with [`respond`], during that step or a later one.
//! [`RequestView`] and [`reply`] do the same from borrowed bytes, allocating
//! nothing on the way in or out but the reply's one buffer.

use std::borrow::Cow;
use std::collections::BTreeMap;

use pulp_wire::payload::HttpRoute;

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

pub use pulp_wire::http::{Fields, RequestView};

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
    pub const KIND: &'static str = pulp_wire::http::REQUEST_KIND;

    /// The request a step carries, if it carries one. A payload that does not
    /// decode is logged at level error and yields `None`, like a step without one.
    pub fn from_step(step: &crate::Step) -> Option<Request> {
        request_view(step).map(Request::from)
    }

    /// Decodes an `http.request` payload.
    pub fn decode(payload: &[u8]) -> Result<Request, Error> {
        Ok(RequestView::decode(payload)?.into())
    }
}

impl From<RequestView<'_>> for Request {
    fn from(view: RequestView<'_>) -> Request {
        let map = |fields: Fields<'_>| {
            fields
                .iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        };
        Request {
            id: view.id,
            method: view.method.to_owned(),
            path: view.path.to_owned(),
            params: map(view.params),
            query: map(view.query),
            headers: map(view.headers),
            body: view.body.to_vec(),
            remote_addr: view.remote_addr.to_owned(),
        }
    }
}

/// As [`Request::from_step`], without the copy: the view borrows the step's
/// buffer, so serving a request allocates nothing until the cell does.
pub fn request_view<'a>(step: &crate::Step<'a>) -> Option<RequestView<'a>> {
    let event = step.event().filter(|e| e.kind() == Request::KIND)?;
    match RequestView::decode(event.payload()) {
        Ok(request) => Some(request),
        Err(err) => {
            crate::log::error(&err.to_string());
            None
        }
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
        pulp_wire::http::write_reply(
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
        pulp_wire::http::write_reply(
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

pub use pulp_wire::payload::{FetchRequest, FetchResponse};

/// Performs `request` and waits for the response, within the step.
///
/// Any status the server answers is `Ok`; errors are the host's codes:
/// 4 when the egress policy refuses the host, 5 when the network fails,
/// 3 when the host's answer does not decode.
pub fn fetch(request: &FetchRequest<'_>) -> Result<FetchResponse, Code> {
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
    use pulp_wire::http::{write_request, ReplyView, RequestHead};

    use super::*;

    #[test]
    fn a_request_copies_out_of_its_view() {
        let mut bytes = Vec::new();
        let head = RequestHead {
            id: 42,
            method: "POST",
            path: "/items/7",
            remote_addr: "127.0.0.1:5000",
        };
        write_request(
            &mut bytes,
            head,
            [("id", "7")].into_iter(),
            [("z", "1"), ("a", "2")].into_iter(),
            [("content-type", "text/plain")].into_iter(),
            &[0, 1, 2],
        );
        let owned = Request::decode(&bytes).unwrap();
        assert_eq!(
            (owned.id, &*owned.method, &*owned.path),
            (42, "POST", "/items/7")
        );
        assert_eq!(owned.params["id"], "7");
        assert_eq!(owned.query.keys().collect::<Vec<_>>(), ["a", "z"]);
        assert_eq!(owned.headers["content-type"], "text/plain");
        assert_eq!(
            (&*owned.body, &*owned.remote_addr),
            (&[0, 1, 2][..], "127.0.0.1:5000")
        );
        assert_eq!(
            Request::decode(&bytes[..bytes.len() - 3])
                .unwrap_err()
                .to_string(),
            "http.request payload: bad remote_addr"
        );
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
        let encoded = reply.encode();
        assert_eq!(response.encode(), encoded);
        let read = ReplyView::decode(&encoded).unwrap();
        assert_eq!((read.id, read.status, read.body), (9, 201, &b"made"[..]));
        assert_eq!(read.headers.get("content-type"), Some("text/plain"));
        assert_eq!(read.cookies.iter().collect::<Vec<_>>(), ["a=1"]);
    }
}
