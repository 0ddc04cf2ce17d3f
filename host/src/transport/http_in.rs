//! `transport.http.inbound`: routes registered by cells, requests delivered as
//! `http.request` events, replies through `http_respond`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pulp_ext_api::{Capability, CellState, Code, DeliverError, HostImport, SetupEnv};
use pulp_wire::payload::HttpRoute;
use rmp::encode;
use tokio::sync::oneshot;

use super::{Shared, TransportCell};
use crate::msgpack::{self, Scalar};

pub const NAME: &str = "transport.http.inbound";

/// Requests a cell may have waiting for a reply; past this the listener answers 503.
const MAX_PENDING_PER_CELL: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(Arc<str>),
}

/// What the listener needs of a cell that serves HTTP: the capability's state
/// for the cell, held by its routes so a request costs no lookup by name.
struct Target {
    cell: TransportCell,
    /// Requests waiting for this cell's reply.
    owed: AtomicUsize,
}

struct Route {
    method: Method,
    segments: Vec<Segment>,
    pattern: String,
    target: Arc<Target>,
}

fn parse_pattern(path: &str) -> Vec<Segment> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix(':') {
            Some(name) => Segment::Param(Arc::from(name)),
            None => Segment::Literal(s.to_owned()),
        })
        .collect()
}

/// Same shape: the same literals with parameters in the same places.
fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Param(_), Segment::Param(_)) => true,
            _ => false,
        })
}

/// Parameter names and their percent-decoded values, borrowed from the path
/// where nothing needed decoding.
type Params<'p> = Vec<(Arc<str>, Cow<'p, str>)>;

/// The captured parameters and how many literal segments matched (more is better).
fn match_path<'p>(segments: &[Segment], path: &[&'p str]) -> Option<(Params<'p>, usize)> {
    if segments.len() != path.len() {
        return None;
    }
    let mut params = Vec::new();
    let mut literals = 0;
    for (segment, part) in segments.iter().zip(path) {
        match segment {
            Segment::Literal(l) if l == part => literals += 1,
            Segment::Literal(_) => return None,
            Segment::Param(name) => {
                let value = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
                params.push((Arc::clone(name), value));
            }
        }
    }
    Some((params, literals))
}

struct Pending {
    target: Arc<Target>,
    reply: oneshot::Sender<Option<Response>>,
}

/// Requests waiting for a reply; each target counts its own.
#[derive(Default)]
struct PendingTable {
    by_id: HashMap<u64, Pending>,
}

impl PendingTable {
    fn insert(&mut self, id: u64, pending: Pending) {
        pending.target.owed.fetch_add(1, Ordering::Relaxed);
        self.by_id.insert(id, pending);
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let pending = self.by_id.remove(&id)?;
        pending.target.owed.fetch_sub(1, Ordering::Relaxed);
        Some(pending)
    }
}

#[derive(Default)]
pub struct Routes {
    routes: RwLock<Vec<Route>>,
    pending: Mutex<PendingTable>,
    next_id: AtomicU64,
    conflicts: Mutex<Vec<String>>,
}

impl Routes {
    pub fn conflicts(&self) -> Vec<String> {
        self.conflicts.lock().unwrap().clone()
    }

    fn register(&self, target: &Arc<Target>, method: &str, path: &str) -> Result<(), Code> {
        let cell = &*target.cell.name;
        let method =
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| Code::DECODE)?;
        if !path.starts_with('/') {
            return Err(Code::DECODE);
        }
        let segments = parse_pattern(path);
        let mut routes = self.routes.write().unwrap();
        if let Some(other) = routes
            .iter()
            .find(|r| r.method == method && same_shape(&r.segments, &segments))
        {
            if Arc::ptr_eq(&other.target, target) {
                return Ok(());
            }
            let message = format!(
                "route {method} {path} is registered by both cell {} ({method} {}) and cell {cell}; give each route to one cell",
                other.target.cell.name, other.pattern
            );
            tracing::error!(cell, "{message}");
            self.conflicts.lock().unwrap().push(message);
            return Err(Code::REFUSED);
        }
        routes.push(Route {
            method,
            segments,
            pattern: path.to_owned(),
            target: Arc::clone(target),
        });
        Ok(())
    }

    /// Fails every reply a cell still owes: 502, since it will not come.
    fn fail_pending(&self, target: &Arc<Target>) {
        let mut pending = self.pending.lock().unwrap();
        let ids: Vec<u64> = pending
            .by_id
            .iter()
            .filter(|(_, p)| Arc::ptr_eq(&p.target, target))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(id) {
                let _ = p.reply.send(None);
            }
        }
    }
}

/// Decodes `http_respond`'s `{id, status, headers, body, cookies?}` straight into
/// the response the listener sends, on the cell's thread. Header names and
/// values HTTP cannot carry are dropped; a status outside 100..=999 is 500.
pub(crate) fn decode_reply(bytes: &[u8]) -> Option<(u64, Response)> {
    let mut reader = msgpack::Reader::new(bytes);
    let (mut id, mut status) = (None, None);
    let mut response = Response::new(Body::empty());
    for _ in 0..reader.map_len()? {
        let Scalar::Str(key) = reader.scalar()? else {
            return None;
        };
        match key {
            "id" => id = Some(u64::try_from(int(&mut reader)?).ok()?),
            "status" => status = Some(u16::try_from(int(&mut reader)?).ok()?),
            "headers" => {
                for _ in 0..reader.map_len()? {
                    let (name, value) = (text(&mut reader)?, text(&mut reader)?);
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::try_from(name), HeaderValue::try_from(value))
                    {
                        // A header map has a fixed ceiling; a reply past it does not decode.
                        response.headers_mut().try_insert(name, value).ok()?;
                    }
                }
            }
            "body" => {
                let body = match reader.scalar()? {
                    Scalar::Bin(bytes) => bytes,
                    Scalar::Str(text) => text.as_bytes(),
                    _ => return None,
                };
                *response.body_mut() = Body::from(body.to_vec());
            }
            "cookies" => {
                for _ in 0..reader.array_len()? {
                    if let Ok(value) = HeaderValue::try_from(text(&mut reader)?) {
                        response
                            .headers_mut()
                            .try_append(header::SET_COOKIE, value)
                            .ok()?;
                    }
                }
            }
            _ => {
                reader.skip()?;
            }
        }
    }
    if !reader.is_done() {
        return None;
    }
    *response.status_mut() =
        StatusCode::from_u16(status?).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some((id?, response))
}

fn int(reader: &mut msgpack::Reader<'_>) -> Option<i64> {
    match reader.scalar()? {
        Scalar::Int(i) => Some(i),
        _ => None,
    }
}

fn text<'a>(reader: &mut msgpack::Reader<'a>) -> Option<&'a str> {
    match reader.scalar()? {
        Scalar::Str(text) => Some(text),
        _ => None,
    }
}

pub struct HttpInbound(pub Arc<Shared>);

impl Capability for HttpInbound {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let shared = Arc::clone(&self.0);
        let register =
            HostImport::request("http_register", move |guest, req: HttpRoute<'static>| {
                let target = guest.state::<Arc<Target>>()?;
                shared.http.register(target, &req.method, &req.path)
            });
        let shared = Arc::clone(&self.0);
        let respond = HostImport::inputs("http_respond", move |guest, [bytes]| {
            if bytes.is_empty() {
                return Err(Code::EMPTY);
            }
            let (id, response) = decode_reply(bytes).ok_or(Code::DECODE)?;
            let mut pending = shared.http.pending.lock().unwrap();
            let target = guest.state::<Arc<Target>>()?;
            match pending.by_id.get(&id) {
                Some(p) if Arc::ptr_eq(&p.target, target) => {}
                _ => return Err(Code::REFUSED),
            }
            let p = pending.remove(id).expect("checked above");
            drop(pending);
            // The listener may have given up (timeout, client gone): nothing to do.
            let _ = p.reply.send(Some(response));
            Ok(())
        });
        vec![register, respond]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        Ok(CellState::new(Arc::new(Target {
            cell: TransportCell::of(env),
            owed: AtomicUsize::new(0),
        })))
    }

    fn cell_failed(&self, _cell: &str, state: &CellState) {
        if let Some(target) = state.get::<Arc<Target>>() {
            self.0.http.fail_pending(target);
        }
    }

    fn teardown_cell(&self, _cell: &str, state: &CellState) {
        let Some(target) = state.get::<Arc<Target>>() else {
            return;
        };
        self.0
            .http
            .routes
            .write()
            .unwrap()
            .retain(|r| !Arc::ptr_eq(&r.target, target));
        self.0.http.fail_pending(target);
    }
}

fn status(code: StatusCode, why: &str) -> Response {
    (code, why.to_owned()).into_response()
}

/// 413, closing the connection: the rest of the body is never read, so the
/// connection cannot carry another request.
fn too_large() -> Response {
    let mut response = status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body over max_message_bytes\n",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The `http.request` payload (docs/capabilities.md), encoded directly.
#[allow(clippy::too_many_arguments)]
fn encode_request(
    id: u64,
    method: &str,
    path: &str,
    params: &Params<'_>,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    remote: &SocketAddr,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    encode::write_map_len(&mut out, 8).expect("vec write");
    encode::write_str(&mut out, "id").expect("vec write");
    encode::write_u64(&mut out, id).expect("vec write");
    encode::write_str(&mut out, "method").expect("vec write");
    encode::write_str(&mut out, method).expect("vec write");
    encode::write_str(&mut out, "path").expect("vec write");
    encode::write_str(&mut out, path).expect("vec write");
    encode::write_str(&mut out, "params").expect("vec write");
    msgpack::write_pairs(&mut out, params.iter().map(|(k, v)| (&**k, &**v)));
    encode::write_str(&mut out, "query").expect("vec write");
    msgpack::write_pairs(
        &mut out,
        query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    encode::write_str(&mut out, "headers").expect("vec write");
    // Repeated headers are joined with ", ", as HTTP allows for most of them.
    encode::write_map_len(&mut out, headers.keys_len() as u32).expect("vec write");
    for name in headers.keys() {
        encode::write_str(&mut out, name.as_str()).expect("vec write");
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| String::from_utf8_lossy(v.as_bytes()));
        match values.next() {
            None => encode::write_str(&mut out, first.as_deref().unwrap_or("")).expect("vec write"),
            Some(second) => {
                let mut joined = first.map(|f| f.into_owned()).unwrap_or_default();
                for value in std::iter::once(second).chain(values) {
                    joined.push_str(", ");
                    joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
                encode::write_str(&mut out, &joined).expect("vec write");
            }
        }
    }
    encode::write_str(&mut out, "body").expect("vec write");
    encode::write_bin(&mut out, body).expect("vec write");
    encode::write_str(&mut out, "remote_addr").expect("vec write");
    // The longest IPv6 socket address is 47 characters: no allocation needed.
    let mut text = [0u8; 64];
    let mut cursor = &mut text[..];
    write!(cursor, "{remote}").expect("a socket address fits");
    let written = 64 - cursor.len();
    let remote = std::str::from_utf8(&text[..written]).expect("formatted as UTF-8");
    encode::write_str(&mut out, remote).expect("vec write");
    out
}

/// A request's claim on its cell's reply slots, given back when dropped.
struct Owed<'a> {
    routes: &'a Routes,
    id: u64,
    armed: bool,
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.routes.pending.lock().unwrap().remove(self.id);
        }
    }
}

pub async fn handle(shared: Arc<Shared>, remote: SocketAddr, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let parts_of_path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    let (target, params) = {
        let routes = shared.http.routes.read().unwrap();
        let mut best: Option<(&Route, Params<'_>, usize)> = None;
        let mut allowed: Vec<&str> = Vec::new();
        for route in routes.iter() {
            if let Some((params, literals)) = match_path(&route.segments, &parts_of_path) {
                if !allowed.contains(&route.method.as_str()) {
                    allowed.push(route.method.as_str());
                }
                if route.method == parts.method
                    && best.as_ref().is_none_or(|(_, _, l)| literals > *l)
                {
                    best = Some((route, params, literals));
                }
            }
        }
        match best {
            Some((route, params, _)) => (Arc::clone(&route.target), params),
            None if !allowed.is_empty() => {
                allowed.sort_unstable();
                let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                if let Ok(value) = HeaderValue::try_from(allowed.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                return response;
            }
            None => return status(StatusCode::NOT_FOUND, "no route\n"),
        }
    };
    let limits = &target.cell.limits;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_message_bytes) {
        return too_large();
    }
    let read = axum::body::to_bytes(body, limits.max_message_bytes as usize);
    let body = match tokio::time::timeout(shared.listener.body_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            tracing::warn!(
                remote = %remote,
                "request body not received within {} ms; closing the connection",
                shared.listener.body_timeout.as_millis()
            );
            let mut response = status(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let query = super::parse_query(parts.uri.query());

    let id = shared.http.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let payload = encode_request(
        id,
        parts.method.as_str(),
        path,
        &params,
        &query,
        &parts.headers,
        &body,
        &remote,
    );
    // The whole event, headers and all, is bounded too (docs/manifest.md).
    if payload.len() as u64 > limits.max_message_bytes {
        return too_large();
    }
    let (tx, rx) = oneshot::channel();
    {
        let mut pending = shared.http.pending.lock().unwrap();
        if target.owed.load(Ordering::Relaxed) >= MAX_PENDING_PER_CELL {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "cell is busy: request queue full\n",
            );
        }
        pending.insert(
            id,
            Pending {
                target: Arc::clone(&target),
                reply: tx,
            },
        );
    }
    // Frees the reply slot however this request ends, the client going away
    // (this future dropped) included.
    let mut owed = Owed {
        routes: &shared.http,
        id,
        armed: true,
    };
    if let Err(e) = target.cell.handle.deliver("http.request", &payload, id) {
        return match e {
            DeliverError::Full => status(
                StatusCode::SERVICE_UNAVAILABLE,
                "cell is busy: queue full\n",
            ),
            DeliverError::Gone => status(StatusCode::SERVICE_UNAVAILABLE, "cell stopped\n"),
            DeliverError::Invalid | DeliverError::Unsupported => status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "request could not be delivered\n",
            ),
        };
    }

    match tokio::time::timeout(limits.call_timeout, rx).await {
        // The slot went with the reply, or with the cell's failure.
        Ok(Ok(Some(response))) => {
            owed.armed = false;
            response
        }
        Ok(Ok(None)) | Ok(Err(_)) => {
            owed.armed = false;
            status(StatusCode::BAD_GATEWAY, "the cell failed before replying\n")
        }
        Err(_) => status(
            StatusCode::GATEWAY_TIMEOUT,
            "the cell did not reply within call_timeout_ms\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_belongs_to_one_cell_and_so_do_its_replies() {
        let env = crate::testenv::Env::new();
        let http = env.capability(NAME);
        let mut alpha = env.cell(http, "alpha");
        let mut beta = env.cell(http, "beta");
        let route = |method: &str, path: &str| {
            let mut map = std::collections::BTreeMap::new();
            map.insert("method", method);
            map.insert("path", path);
            rmp_serde::to_vec_named(&map).unwrap()
        };

        assert_eq!(
            alpha.call(http, "http_register", &[&route("GET", "/a/:id")], false),
            Ok(vec![])
        );
        // Again by the same cell: nothing changes.
        assert_eq!(
            alpha.call(http, "http_register", &[&route("get", "/a/:id")], false),
            Ok(vec![])
        );
        // The same shape by another cell: refused, and kept as a conflict.
        assert_eq!(
            beta.call(http, "http_register", &[&route("GET", "/a/:name")], false),
            Err(4)
        );
        assert_eq!(env.services.transport.conflicts().len(), 1);
        assert_eq!(
            beta.call(http, "http_register", &[&route("GET", "a")], false),
            Err(3)
        );
        assert_eq!(beta.call(http, "http_register", &[b""], false), Err(1));

        // A reply for a request the cell was not given is refused.
        let reply = rmp_serde::to_vec_named(&std::collections::BTreeMap::from([
            ("id", 1u64),
            ("status", 200),
        ]))
        .unwrap();
        assert_eq!(beta.call(http, "http_respond", &[&reply], false), Err(4));
    }

    #[test]
    fn replies_decode_into_responses() {
        #[derive(serde::Serialize)]
        struct Respond<'a> {
            id: u64,
            status: u16,
            headers: HashMap<&'a str, &'a str>,
            #[serde(with = "serde_bytes")]
            body: &'a [u8],
            cookies: Vec<&'a str>,
            later: (),
        }
        let reply = Respond {
            id: 7,
            status: 201,
            headers: [("content-type", "text/plain"), ("bad name", "x")].into(),
            body: b"\x00hi",
            cookies: vec!["a=1", "b=2"],
            later: (),
        };
        let (id, response) = decode_reply(&rmp_serde::to_vec_named(&reply).unwrap()).unwrap();
        assert_eq!(id, 7);
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(
            response.headers().len(),
            3,
            "two cookies, the bad name dropped"
        );

        // A str body is taken as bytes; a missing status does not decode.
        let text_body = [
            0x83, 0xa2, b'i', b'd', 1, 0xa6, b's', b't', b'a', b't', b'u', b's', 0xcc, 200, 0xa4,
            b'b', b'o', b'd', b'y', 0xa1, b'x',
        ];
        assert_eq!(decode_reply(&text_body).unwrap().1.status(), 200);
        let no_status = [0x81, 0xa2, b'i', b'd', 1];
        assert!(decode_reply(&no_status).is_none());
    }

    #[test]
    fn patterns_match_and_capture() {
        let route = parse_pattern("/echo/:msg");
        let (params, literals) = match_path(&route, &["echo", "hi%20there"]).unwrap();
        assert_eq!(params, [(Arc::from("msg"), Cow::from("hi there"))]);
        assert_eq!(literals, 1);
        assert!(match_path(&route, &["echo"]).is_none());
        assert!(match_path(&route, &["other", "x"]).is_none());
        assert!(same_shape(&route, &parse_pattern("/echo/:other")));
        assert!(!same_shape(&route, &parse_pattern("/echo/fixed")));
    }
}
