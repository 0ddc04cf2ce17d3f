//! `transport.http.inbound`: routes registered by cells, requests delivered as
//! `http.request` events, replies through `http_respond`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pulp_ext_api::{Capability, Code, DeliverError, HostImport, SetupEnv, ValType};
use rmp::encode;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{CellHandles, Shared};
use crate::msgpack;

pub const NAME: &str = "transport.http.inbound";

/// Requests a cell may have waiting for a reply; past this the listener answers 503.
const MAX_PENDING_PER_CELL: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

struct Route {
    method: Method,
    segments: Vec<Segment>,
    pattern: String,
    cell: String,
}

fn parse_pattern(path: &str) -> Vec<Segment> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix(':') {
            Some(name) => Segment::Param(name.to_owned()),
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

type Params = Vec<(String, String)>;

/// The captured parameters and how many literal segments matched (more is better).
fn match_path(segments: &[Segment], path: &[&str]) -> Option<(Params, usize)> {
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
                params.push((name.clone(), value.into_owned()));
            }
        }
    }
    Some((params, literals))
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    cookies: Vec<String>,
    body: Vec<u8>,
}

struct Pending {
    cell: String,
    reply: oneshot::Sender<Option<Reply>>,
}

/// Requests waiting for a reply, and how many each cell owes.
#[derive(Default)]
struct PendingTable {
    by_id: HashMap<u64, Pending>,
    per_cell: HashMap<String, usize>,
}

impl PendingTable {
    fn insert(&mut self, id: u64, pending: Pending) {
        *self.per_cell.entry(pending.cell.clone()).or_default() += 1;
        self.by_id.insert(id, pending);
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let pending = self.by_id.remove(&id)?;
        if let Some(n) = self.per_cell.get_mut(&pending.cell) {
            *n -= 1;
        }
        Some(pending)
    }

    fn owed_by(&self, cell: &str) -> usize {
        self.per_cell.get(cell).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub struct Routes {
    routes: RwLock<Vec<Route>>,
    pending: Mutex<PendingTable>,
    next_id: AtomicU64,
    cells: CellHandles,
    conflicts: Mutex<Vec<String>>,
}

impl Routes {
    pub fn conflicts(&self) -> Vec<String> {
        self.conflicts.lock().unwrap().clone()
    }

    fn register(&self, cell: &str, method: &str, path: &str) -> Result<(), Code> {
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
            if other.cell == cell {
                return Ok(());
            }
            let message = format!(
                "route {method} {path} is registered by both cell {} ({method} {}) and cell {cell}; give each route to one cell",
                other.cell, other.pattern
            );
            tracing::error!(cell, "{message}");
            self.conflicts.lock().unwrap().push(message);
            return Err(Code::REFUSED);
        }
        routes.push(Route {
            method,
            segments,
            pattern: path.to_owned(),
            cell: cell.to_owned(),
        });
        Ok(())
    }

    /// Fails every reply a cell still owes: 502, since it will not come.
    fn fail_pending(&self, cell: &str) {
        let mut pending = self.pending.lock().unwrap();
        let ids: Vec<u64> = pending
            .by_id
            .iter()
            .filter(|(_, p)| p.cell == cell)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = pending.remove(id) {
                let _ = p.reply.send(None);
            }
        }
    }
}

#[derive(Deserialize)]
struct RegisterRequest {
    method: String,
    path: String,
}

#[derive(Deserialize)]
struct RespondRequest {
    id: u64,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default, with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(default)]
    cookies: Vec<String>,
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
        let register = HostImport::new(
            "http_register",
            &[ValType::I32, ValType::I32],
            move |guest, args| {
                let req: RegisterRequest = super::decode_arg(guest, args)?;
                shared.http.register(guest.cell(), &req.method, &req.path)
            },
        );
        let shared = Arc::clone(&self.0);
        let respond = HostImport::new(
            "http_respond",
            &[ValType::I32, ValType::I32],
            move |guest, args| {
                let resp: RespondRequest = super::decode_arg(guest, args)?;
                let mut pending = shared.http.pending.lock().unwrap();
                match pending.by_id.get(&resp.id) {
                    Some(p) if p.cell == guest.cell() => {}
                    _ => return Err(Code::REFUSED),
                }
                let p = pending.remove(resp.id).expect("checked above");
                drop(pending);
                // The listener may have given up (timeout, client gone): nothing to do.
                let _ = p.reply.send(Some(Reply {
                    status: resp.status,
                    headers: resp.headers,
                    cookies: resp.cookies,
                    body: resp.body,
                }));
                Ok(())
            },
        );
        vec![register, respond]
    }

    fn setup(&self, env: &SetupEnv) -> Result<(), String> {
        self.0.register_cell(env);
        self.0.http.cells.set(env);
        Ok(())
    }

    fn cell_failed(&self, cell: &str) {
        self.0.http.fail_pending(cell);
    }

    fn teardown_cell(&self, cell: &str) {
        self.0
            .http
            .routes
            .write()
            .unwrap()
            .retain(|r| r.cell != cell);
        self.0.http.fail_pending(cell);
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

/// The `http.request` payload (SPEC §4), encoded directly.
#[allow(clippy::too_many_arguments)]
fn encode_request(
    id: u64,
    method: &str,
    path: &str,
    params: &[(String, String)],
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
    msgpack::write_pairs(
        &mut out,
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
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
    encode::write_str(&mut out, &remote.to_string()).expect("vec write");
    out
}

pub async fn handle(shared: Arc<Shared>, remote: SocketAddr, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let parts_of_path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    let (cell, params) = {
        let routes = shared.http.routes.read().unwrap();
        let mut best: Option<(&Route, Params, usize)> = None;
        let mut path_known = false;
        for route in routes.iter() {
            if let Some((params, literals)) = match_path(&route.segments, &parts_of_path) {
                path_known = true;
                if route.method == parts.method
                    && best.as_ref().is_none_or(|(_, _, l)| literals > *l)
                {
                    best = Some((route, params, literals));
                }
            }
        }
        match best {
            Some((route, params, _)) => (route.cell.clone(), params),
            None if path_known => {
                return status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            }
            None => return status(StatusCode::NOT_FOUND, "no route\n"),
        }
    };
    let Some(limits) = shared.limits(&cell) else {
        return status(StatusCode::SERVICE_UNAVAILABLE, "cell not ready\n");
    };
    let limit = limits.max_message_bytes as usize;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_message_bytes) {
        return too_large();
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            return too_large();
        }
    };
    let query = super::parse_query(parts.uri.query());

    let Some(handle) = shared.http.cells.get(&cell) else {
        return status(StatusCode::SERVICE_UNAVAILABLE, "cell not ready\n");
    };
    let id = shared.http.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let payload = encode_request(
        id,
        parts.method.as_str(),
        &path,
        &params,
        &query,
        &parts.headers,
        &body,
        &remote,
    );
    // The whole event, headers and all, is bounded too (SPEC §3).
    if payload.len() as u64 > limits.max_message_bytes {
        return too_large();
    }
    let (tx, rx) = oneshot::channel();
    {
        let mut pending = shared.http.pending.lock().unwrap();
        if pending.owed_by(&cell) >= MAX_PENDING_PER_CELL {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "cell is busy: request queue full\n",
            );
        }
        pending.insert(
            id,
            Pending {
                cell: cell.clone(),
                reply: tx,
            },
        );
    }
    if let Err(e) = handle.deliver("http.request", &payload, id) {
        shared.http.pending.lock().unwrap().remove(id);
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
        Ok(Ok(Some(reply))) => build(reply),
        Ok(Ok(None)) | Ok(Err(_)) => {
            status(StatusCode::BAD_GATEWAY, "the cell failed before replying\n")
        }
        Err(_) => {
            shared.http.pending.lock().unwrap().remove(id);
            status(
                StatusCode::GATEWAY_TIMEOUT,
                "the cell did not reply within call_timeout_ms\n",
            )
        }
    }
}

fn build(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    for cookie in reply.cookies {
        if let Ok(value) = HeaderValue::try_from(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_and_capture() {
        let route = parse_pattern("/echo/:msg");
        let (params, literals) = match_path(&route, &["echo", "hi%20there"]).unwrap();
        assert_eq!(params, [("msg".to_owned(), "hi there".to_owned())]);
        assert_eq!(literals, 1);
        assert!(match_path(&route, &["echo"]).is_none());
        assert!(match_path(&route, &["other", "x"]).is_none());
        assert!(same_shape(&route, &parse_pattern("/echo/:other")));
        assert!(!same_shape(&route, &parse_pattern("/echo/fixed")));
    }
}
