//! `transport.http.inbound`: routes registered by cells, requests delivered as
//! `http.request` events, replies through `http_respond`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use pulp_ext_api::{Capability, CellState, Code, DeliverError, HostImport, SetupEnv};
use pulp_wire::http::{self, ReplyView, RequestHead};
use pulp_wire::payload::HttpRoute;
use tokio::sync::oneshot;

use super::{Shared, TransportCell};
use pulp_wire::msgpack;

pub const NAME: &str = "transport.http.inbound";

/// Requests a cell may have waiting for a reply; past this the listener answers 503.
const MAX_PENDING_PER_CELL: usize = 256;

/// What the listener needs of a cell that serves HTTP: the capability's state
/// for the cell, held by its routes so a request costs no lookup by name.
struct Target {
    cell: TransportCell,
    /// Requests waiting for this cell's reply.
    owed: AtomicUsize,
    /// Requests answered, by status class (2xx, 3xx, 4xx, 5xx).
    answered: [Counter; 4],
}

impl Target {
    fn count(&self, status: StatusCode) {
        let index = match status.as_u16() {
            300..=399 => 1,
            400..=499 => 2,
            500..=599 => 3,
            _ => 0,
        };
        self.answered[index].inc();
    }
}

/// One registered route: a method and a pattern, owned by one cell.
struct Route {
    /// As the cell registered it, for messages.
    pattern: String,
    /// The names of the pattern's `:name` segments, in order; the router
    /// knows them by position only, so routes differing in names alone
    /// have one shape.
    names: Vec<Arc<str>>,
    target: Arc<Target>,
}

/// The router's form of a pattern: each `:name` segment a positional
/// parameter, literal braces escaped.
fn shape(pattern: &str) -> (String, Vec<Arc<str>>) {
    let mut names = Vec::new();
    let segments: Vec<String> = pattern
        .split('/')
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) if !name.is_empty() => {
                names.push(Arc::from(name));
                format!("{{p{}}}", names.len() - 1)
            }
            _ => segment.replace('{', "{{").replace('}', "}}"),
        })
        .collect();
    (segments.join("/"), names)
}

/// Parameter names and their percent-decoded values, borrowed from the path
/// where nothing needed decoding.
type Params<'p> = Vec<(Arc<str>, Cow<'p, str>)>;

/// The route `method` `path` reaches, with its parameters.
fn find<'r, 'p>(
    table: &'r RouteTable,
    method: &Method,
    path: &'p str,
) -> Option<(&'r Route, Params<'p>)> {
    let found = table.by_method.get(method)?.at(path).ok()?;
    let route: &Route = found.value;
    let params = route
        .names
        .iter()
        .zip(found.params.iter())
        .map(|(name, (_, value))| {
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            (Arc::clone(name), value)
        })
        .collect();
    Some((route, params))
}

/// The clean form of a path with empty, `.` or `..` segments (as Go's
/// ServeMux cleans it); `None` when it is clean already. A trailing slash is
/// kept: `/a/` and `/a` are different paths.
fn clean_path(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let unclean = segments
        .iter()
        .enumerate()
        .any(|(i, s)| (s.is_empty() && i != last) || *s == "." || *s == "..");
    if !unclean {
        return None;
    }
    let mut clean: Vec<&str> = Vec::new();
    for segment in &segments {
        match *segment {
            "" | "." => {}
            ".." => {
                clean.pop();
            }
            segment => clean.push(segment),
        }
    }
    let trailing = path.ends_with('/') && !clean.is_empty();
    Some(format!(
        "/{}{}",
        clean.join("/"),
        if trailing { "/" } else { "" }
    ))
}

#[derive(Default)]
struct RouteTable {
    by_method: HashMap<Method, matchit::Router<Arc<Route>>>,
    /// Every route with its method and shape, to find conflicts and remove a
    /// cell's routes.
    all: Vec<(Method, String, Arc<Route>)>,
}

struct Pending {
    target: Arc<Target>,
    reply: oneshot::Sender<Option<Response>>,
    /// An instance has had the request: its step ran. Until then it waits in
    /// the cell's queue, and an instance that fails does not owe it.
    stepped: bool,
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
    routes: RwLock<RouteTable>,
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
        let (shape, names) = shape(path);
        let mut routes = self.routes.write().unwrap();
        if let Some((_, _, other)) = routes
            .all
            .iter()
            .find(|(m, s, _)| *m == method && *s == shape)
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
        let route = Arc::new(Route {
            pattern: path.to_owned(),
            names,
            target: Arc::clone(target),
        });
        let router = routes.by_method.entry(method.clone()).or_default();
        if let Err(e) = router.insert(shape.clone(), Arc::clone(&route)) {
            tracing::warn!(cell, "route {method} {path} refused: {e}");
            return Err(Code::REFUSED);
        }
        routes.all.push((method, shape, route));
        Ok(())
    }

    /// Drops every route of `target`.
    fn remove(&self, target: &Arc<Target>) {
        let mut routes = self.routes.write().unwrap();
        let RouteTable { by_method, all } = &mut *routes;
        all.retain(|(method, shape, route)| {
            let keep = !Arc::ptr_eq(&route.target, target);
            if !keep && let Some(router) = by_method.get_mut(method) {
                router.remove(shape.as_str());
            }
            keep
        });
    }

    /// Fails the replies a cell owes, all of them or only those of requests an
    /// instance had: 502, since they will not come. A request still queued
    /// is answered by the next instance; failing it here would tell the
    /// client it failed while its write then happens.
    fn fail_pending(&self, target: &Arc<Target>, only_stepped: bool) {
        let mut pending = self.pending.lock().unwrap();
        let ids: Vec<u64> = pending
            .by_id
            .iter()
            .filter(|(_, p)| Arc::ptr_eq(&p.target, target) && (p.stepped || !only_stepped))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(id) {
                let _ = p.reply.send(None);
            }
        }
    }
}

/// Decodes `http_respond`'s reply straight into the response the listener
/// sends, on the cell's thread. Header names and values HTTP cannot carry are
/// dropped; a status outside 100..=999 is 500.
pub(crate) fn decode_reply(bytes: &[u8]) -> Result<(u64, Response), msgpack::Error> {
    let reply = ReplyView::decode(bytes)?;
    let mut response = Response::new(Body::from(reply.body.to_vec()));
    let headers = response.headers_mut();
    let full = || msgpack::Error::new("http_respond request: too many headers");
    for (name, value) in reply.headers.iter() {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            // A header map has a fixed ceiling; a reply past it does not decode.
            headers.try_insert(name, value).map_err(|_| full())?;
        }
    }
    for cookie in reply.cookies.iter() {
        if let Ok(value) = HeaderValue::try_from(cookie) {
            headers
                .try_append(header::SET_COOKIE, value)
                .map_err(|_| full())?;
        }
    }
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok((reply.id, response))
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
            let (id, response) = decode_reply(bytes).map_err(|e| {
                tracing::warn!(cell = guest.cell(), "http_respond refused: {e}");
                Code::DECODE
            })?;
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
        let answered = ["2xx", "3xx", "4xx", "5xx"].map(|class| {
            crate::metrics::get()
                .http_requests
                .get_or_create_owned(&crate::metrics::HttpLabels {
                    cell: env.cell.clone(),
                    class,
                })
        });
        Ok(CellState::new(Arc::new(Target {
            cell: TransportCell::of(env),
            owed: AtomicUsize::new(0),
            answered,
        })))
    }

    fn cell_failed(&self, _cell: &str, state: &CellState) {
        if let Some(target) = state.get::<Arc<Target>>() {
            self.0.http.fail_pending(target, true);
        }
    }

    fn finalize(&self, id: u64) {
        if let Some(pending) = self.0.http.pending.lock().unwrap().by_id.get_mut(&id) {
            pending.stepped = true;
        }
    }

    fn teardown_cell(&self, _cell: &str, state: &CellState) {
        let Some(target) = state.get::<Arc<Target>>() else {
            return;
        };
        self.0.http.remove(target);
        self.0.http.fail_pending(target, false);
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

/// The `http.request` payload (docs/capabilities.md).
fn encode_request(
    head: RequestHead<'_>,
    params: &Params<'_>,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    http::write_request(
        &mut out,
        head,
        params.iter().map(|(k, v)| (&**k, &**v)),
        query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        super::joined_headers(headers),
        body,
    );
    out
}

/// A GET's response as the answer to a HEAD: the headers, with the length
/// the body would have had.
fn without_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    if let Some(len) = body.size_hint().exact() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Response::from_parts(parts, Body::empty())
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
    if let Some(clean) = clean_path(path) {
        let location = match parts.uri.query() {
            Some(query) => format!("{clean}?{query}"),
            None => clean,
        };
        let mut response = status(StatusCode::PERMANENT_REDIRECT, "path is not clean\n");
        if let Ok(value) = HeaderValue::try_from(location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return response;
    }
    // HEAD is served by the GET route unless one is registered for it.
    let head = parts.method == Method::HEAD;
    let (target, params, method) = {
        let routes = shared.http.routes.read().unwrap();
        let found = find(&routes, &parts.method, path)
            .map(|(route, params)| (route, params, parts.method.as_str()))
            .or_else(|| {
                head.then(|| find(&routes, &Method::GET, path))
                    .flatten()
                    .map(|(route, params)| (route, params, Method::GET.as_str()))
            });
        match found {
            Some((route, params, method)) => (Arc::clone(&route.target), params, method),
            None => {
                let mut allowed: Vec<&str> = routes
                    .by_method
                    .iter()
                    .filter(|(_, router)| router.at(path).is_ok())
                    .map(|(method, _)| method.as_str())
                    .collect();
                if allowed.is_empty() {
                    return status(StatusCode::NOT_FOUND, "no route\n");
                }
                if allowed.contains(&"GET") && !allowed.contains(&"HEAD") {
                    allowed.push("HEAD");
                }
                allowed.sort_unstable();
                let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                if let Ok(value) = HeaderValue::try_from(allowed.join(", ")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                return response;
            }
        }
    };
    let response = async {
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
        // The longest IPv6 socket address is 47 characters: no allocation needed.
        let mut remote_text = [0u8; 64];
        let mut cursor = &mut remote_text[..];
        write!(cursor, "{remote}").expect("a socket address fits");
        let written = 64 - cursor.len();
        let request_head = RequestHead {
            id,
            method,
            path,
            remote_addr: std::str::from_utf8(&remote_text[..written]).expect("formatted as UTF-8"),
        };
        let payload = encode_request(request_head, &params, &query, &parts.headers, &body);
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
                    stepped: false,
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
                if head {
                    without_body(response)
                } else {
                    response
                }
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
    .await;
    target.count(response.status());
    response
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
        assert!(decode_reply(&no_status).is_err());
    }

    #[test]
    fn routes_match_by_shape_and_capture_decoded() {
        let env = crate::testenv::Env::new();
        let http = env.capability(NAME);
        let mut alpha = env.cell(http, "alpha");
        let route = |method: &str, path: &str| {
            rmp_serde::to_vec_named(&HttpRoute {
                method: method.into(),
                path: path.into(),
            })
            .unwrap()
        };
        for (method, path) in [
            ("GET", "/echo/:msg"),
            ("GET", "/echo/fixed"),
            ("POST", "/echo/:other"),
            ("GET", "/tokens"),
            ("GET", "/a{b}"),
        ] {
            let registered = alpha.call(http, "http_register", &[&route(method, path)], false);
            assert_eq!(registered, Ok(vec![]), "{method} {path}");
        }
        let shared = env.services.transport.shared();
        let routes = shared.http.routes.read().unwrap();
        let found = |method: Method, path: &'static str| {
            find(&routes, &method, path).map(|(route, params)| {
                let params: Vec<(String, String)> = params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.into_owned()))
                    .collect();
                (route.pattern.clone(), params)
            })
        };
        let pair = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(
            found(Method::GET, "/echo/hi%20there"),
            Some(("/echo/:msg".into(), pair("msg", "hi there")))
        );
        // A literal segment wins over a parameter; names belong to their method.
        assert_eq!(
            found(Method::GET, "/echo/fixed"),
            Some(("/echo/fixed".into(), vec![]))
        );
        assert_eq!(
            found(Method::POST, "/echo/x"),
            Some(("/echo/:other".into(), pair("other", "x")))
        );
        assert_eq!(
            found(Method::GET, "/a{b}").map(|f| f.0),
            Some("/a{b}".into())
        );
        assert_eq!(found(Method::GET, "/echo"), None);
        assert_eq!(found(Method::GET, "/tokens/"), None);
        assert_eq!(found(Method::PUT, "/tokens"), None);
    }

    #[test]
    fn unclean_paths_have_one_clean_form() {
        assert_eq!(clean_path("/tokens"), None);
        assert_eq!(clean_path("/tokens/"), None);
        assert_eq!(clean_path("/"), None);
        assert_eq!(clean_path("//tokens").as_deref(), Some("/tokens"));
        assert_eq!(clean_path("/a//b/").as_deref(), Some("/a/b/"));
        assert_eq!(clean_path("/a/./b/../c").as_deref(), Some("/a/c"));
        assert_eq!(clean_path("/../..").as_deref(), Some("/"));
    }
}
