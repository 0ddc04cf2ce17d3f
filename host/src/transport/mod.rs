//! The transport capabilities (SPEC §4): HTTP in and out, WebSocket and SSE, all on
//! one listener. Each is a built-in `Capability` like any extension's; they share
//! the state the listener reads.

mod http_in;
mod http_out;
mod sse;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use pulp_ext_api::{Args, CapabilityHandle, Code, Guest, HostHandle, SetupEnv};

/// What the transports need to know of a cell that declares one of them.
#[derive(Clone, Debug)]
pub(crate) struct CellLimits {
    pub max_message_bytes: u64,
    pub call_timeout: Duration,
    pub allowed_outbound_hosts: Vec<String>,
}

/// Each transport's handle for each cell, through which it delivers events
/// straight into that cell's queue.
#[derive(Default)]
pub(crate) struct CellHandles(RwLock<HashMap<String, HostHandle>>);

impl CellHandles {
    pub fn set(&self, env: &SetupEnv) {
        self.0.write().unwrap().insert(env.cell.clone(), env.host);
    }

    pub fn get(&self, cell: &str) -> Option<HostHandle> {
        self.0.read().unwrap().get(cell).copied()
    }
}

pub(crate) struct Shared {
    runtime: tokio::runtime::Handle,
    cells: RwLock<HashMap<String, Arc<CellLimits>>>,
    http: http_in::Routes,
    ws: ws::Connections,
    sse: sse::Streams,
    fetch: http_out::Fetcher,
}

impl Shared {
    fn register_cell(&self, env: &SetupEnv) {
        self.cells.write().unwrap().insert(
            env.cell.clone(),
            Arc::new(CellLimits {
                max_message_bytes: env.max_message_bytes,
                call_timeout: Duration::from_millis(env.call_timeout_ms),
                allowed_outbound_hosts: env.allowed_outbound_hosts.clone(),
            }),
        );
    }

    fn limits(&self, cell: &str) -> Option<Arc<CellLimits>> {
        self.cells.read().unwrap().get(cell).cloned()
    }
}

/// The transports and the listener they share.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// The names of the capabilities that accept connections on the listener.
pub const LISTENING: &[&str] = &[http_in::NAME, ws::NAME, sse::NAME];

impl Transport {
    pub fn new(runtime: tokio::runtime::Handle) -> Result<Transport, String> {
        let fetch = http_out::Fetcher::new()?;
        Ok(Transport {
            shared: Arc::new(Shared {
                runtime,
                cells: RwLock::default(),
                http: http_in::Routes::default(),
                ws: ws::Connections::default(),
                sse: sse::Streams::default(),
                fetch,
            }),
        })
    }

    pub fn capabilities(&self) -> Vec<CapabilityHandle> {
        let shared = &self.shared;
        [
            CapabilityHandle::builtin(http_in::HttpInbound(Arc::clone(shared))),
            CapabilityHandle::builtin(http_out::HttpOutbound(Arc::clone(shared))),
            CapabilityHandle::builtin(ws::WsInbound(Arc::clone(shared))),
            CapabilityHandle::builtin(sse::ServerSentEvents(Arc::clone(shared))),
        ]
        .into_iter()
        .map(|c| c.expect("built-in capabilities describe themselves"))
        .collect()
    }

    /// Route conflicts between cells seen so far, one message each.
    pub fn conflicts(&self) -> Vec<String> {
        self.shared.http.conflicts()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .fallback(dispatch)
            .with_state(Arc::clone(&self.shared))
    }
}

/// WebSocket upgrades and SSE subscriptions first, then plain routes.
async fn dispatch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    if ws::is_upgrade(&request)
        && let Some(cell) = shared.ws.route(path)
    {
        return ws::upgrade(shared, cell, request).await;
    }
    if request.method() == axum::http::Method::GET
        && let Some(stream) = shared.sse.subscribe(path)
    {
        return stream;
    }
    http_in::handle(shared, remote, request).await
}

/// Decodes the MessagePack argument at `args[0]`, `args[1]`.
fn decode_arg<T: serde::de::DeserializeOwned>(
    guest: &Guest<'_>,
    args: Args<'_>,
) -> Result<T, Code> {
    let bytes = guest.read_arg(args, 0)?;
    if bytes.is_empty() {
        return Err(Code::EMPTY);
    }
    rmp_serde::from_slice(bytes).map_err(|_| Code::DECODE)
}

/// The raw path argument of `ws_register` and `sse_register`.
fn path_arg<'g>(guest: &'g Guest<'_>, args: Args<'_>) -> Result<&'g str, Code> {
    let path = guest.read_str_arg(args, 0)?;
    if path.is_empty() {
        return Err(Code::EMPTY);
    }
    if !path.starts_with('/') {
        return Err(Code::DECODE);
    }
    Ok(path)
}

/// A query string as name/value pairs; a repeated name keeps its last value, so
/// the map a cell receives has unique keys.
fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned() {
        match pairs.iter_mut().find(|(n, _)| *n == name) {
            Some(pair) => pair.1 = value,
            None => pairs.push((name, value)),
        }
    }
    pairs
}

/// PEM files for HTTPS.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Binds the shared listener and serves `router` until `stop` fires. Returns the
/// bound address once listening.
pub async fn serve(
    router: Router,
    port: u16,
    tls: Option<Tls>,
    stop: axum_server::Handle<SocketAddr>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let task = match tls {
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(|e| {
                    format!(
                        "cannot load TLS certificate {} / key {}: {e}; give PEM files",
                        tls.cert.display(),
                        tls.key.display()
                    )
                })?;
            let server = axum_server::bind_rustls(addr, config).handle(stop);
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!("listener failed: {e}");
                }
            })
        }
        None => {
            let server = axum_server::bind(addr).handle(stop);
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!("listener failed: {e}");
                }
            })
        }
    };
    Ok(task)
}
