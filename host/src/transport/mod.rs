//! The transport capabilities (docs/capabilities.md): HTTP in and out, WebSocket and SSE, all on
//! one listener. Each is a built-in `Capability` like any extension's; they share
//! the state the listener reads.

pub(crate) mod http_in;
pub(crate) mod http_out;
pub(crate) mod sse;
pub(crate) mod ws;

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use pulp_ext_api::{Code, HostHandle, SetupEnv};

/// What the transports need to know of a cell that declares one of them.
#[derive(Clone, Debug)]
pub(crate) struct CellLimits {
    pub max_message_bytes: u64,
    pub call_timeout: Duration,
    pub allowed_outbound_hosts: Vec<String>,
}

impl CellLimits {
    fn of(env: &SetupEnv) -> CellLimits {
        CellLimits {
            max_message_bytes: env.max_message_bytes,
            call_timeout: Duration::from_millis(env.call_timeout_ms),
            allowed_outbound_hosts: env.allowed_outbound_hosts.clone(),
        }
    }
}

/// A listening transport's state for one cell: the cell, its limits, and the
/// handle that delivers events straight into its queue. Routes hold it, so a
/// connection finds its cell without a lookup by name.
pub(crate) struct TransportCell {
    pub name: Arc<str>,
    pub limits: CellLimits,
    pub handle: HostHandle,
}

impl TransportCell {
    fn of(env: &SetupEnv) -> TransportCell {
        TransportCell {
            name: Arc::from(env.cell.as_str()),
            limits: CellLimits::of(env),
            handle: env.host,
        }
    }
}

/// What the listener allows each connection (docs/capabilities.md leaves these to the host).
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// Connections open at once, all kinds together; past it new ones are closed.
    pub max_connections: usize,
    /// Time to receive a request's head, and the most a keep-alive connection
    /// may sit idle waiting for its next request.
    pub header_timeout: Duration,
    /// Time to receive a request's body once its head is in.
    pub body_timeout: Duration,
    /// WebSocket connections, or SSE subscribers, on one path.
    pub max_streams_per_path: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_streams_per_path: 1_000,
        }
    }
}

pub(crate) struct Shared {
    runtime: tokio::runtime::Handle,
    listener: ListenerLimits,
    http: http_in::Routes,
    ws: ws::Connections,
    sse: sse::Streams,
    fetch: http_out::Fetcher,
}

/// The transports and the listener they share.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl Transport {
    pub fn new(
        runtime: tokio::runtime::Handle,
        listener: ListenerLimits,
    ) -> Result<Transport, String> {
        // One TLS crypto provider for the listener and outbound fetches; the
        // first installation wins, so a second transport changes nothing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fetch = http_out::Fetcher::new()?;
        Ok(Transport {
            shared: Arc::new(Shared {
                runtime,
                listener,
                http: http_in::Routes::default(),
                ws: ws::Connections::default(),
                sse: sse::Streams::default(),
                fetch,
            }),
        })
    }

    /// What the transport capabilities share with the listener.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
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
        && let Some((target, open)) = shared.ws.route(path)
    {
        return ws::upgrade(shared, target, open, request).await;
    }
    if request.method() == axum::http::Method::GET
        && let Some(stream) = shared
            .sse
            .subscribe(path, shared.listener.max_streams_per_path)
    {
        return stream;
    }
    http_in::handle(shared, remote, request).await
}

/// The raw path argument of `ws_register` and `sse_register`.
fn path_arg(path: &[u8]) -> Result<&str, Code> {
    let path = std::str::from_utf8(path).map_err(|_| Code::DECODE)?;
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
/// Each header name once, with its values joined by ", " as HTTP allows for
/// most headers; values that are not UTF-8 are read lossily.
fn joined_headers(headers: &HeaderMap) -> impl ExactSizeIterator<Item = (&str, Cow<'_, str>)> + '_ {
    let joined = headers.keys().map(|name| {
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| String::from_utf8_lossy(v.as_bytes()));
        let value = match values.next() {
            None => first.unwrap_or_default(),
            Some(second) => {
                let mut joined = first.map(Cow::into_owned).unwrap_or_default();
                for value in std::iter::once(second).chain(values) {
                    joined.push_str(", ");
                    joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
                Cow::Owned(joined)
            }
        };
        (name.as_str(), value)
    });
    ExactLen(joined, headers.keys_len())
}

/// An iterator whose length is known from elsewhere (a header map's key
/// count), for writers that need it up front.
struct ExactLen<I>(I, usize);

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

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

/// Closes connections past `max` at once, each refusal logged (at most once a
/// second, with how many were refused), so a flood of idle sockets can neither
/// use up the process's file descriptors nor go unnoticed.
#[derive(Clone)]
pub struct Limited<A> {
    inner: A,
    open: Arc<tokio::sync::Semaphore>,
    max: usize,
    first_byte_timeout: Duration,
    refused: Arc<AtomicU64>,
    last_warning: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl<A> Limited<A> {
    fn new(inner: A, max: usize, first_byte_timeout: Duration) -> Self {
        Limited {
            inner,
            open: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            first_byte_timeout,
            refused: Arc::default(),
            last_warning: Arc::default(),
        }
    }

    fn refuse(&self) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock().unwrap();
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            tracing::warn!(
                refused_so_far = refused,
                "connection refused: {} connections are open (--http-max-connections)",
                self.max
            );
        }
    }
}

/// A connection holding its place under the cap until it closes. Until its
/// first byte arrives it is on a timer too: the server reads that byte to tell
/// HTTP/1 from HTTP/2 before any request timeout of hyper's applies.
pub struct Counted<S> {
    stream: S,
    _place: tokio::sync::OwnedSemaphorePermit,
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let filled = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.first_byte.is_some() {
            if matches!(read, Poll::Ready(_)) && buf.filled().len() > filled {
                self.first_byte = None;
            } else if let Some(timer) = self.first_byte.as_mut()
                && read.is_pending()
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                )));
            }
        }
        read
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl<I, S, A> axum_server::accept::Accept<I, S> for Limited<A>
where
    A: axum_server::accept::Accept<I, S> + Clone + Send + 'static,
    A::Future: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Counted<A::Stream>;
    type Service = A::Service;
    type Future = Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let place = Arc::clone(&self.open).try_acquire_owned();
        let Ok(place) = place else {
            self.refuse();
            // Dropping the stream closes the connection.
            return Box::pin(async { Err(std::io::Error::other("connection limit reached")) });
        };
        let accepted = self.inner.accept(stream, service);
        let first_byte = Box::pin(tokio::time::sleep(self.first_byte_timeout));
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((
                Counted {
                    stream,
                    _place: place,
                    first_byte: Some(first_byte),
                },
                service,
            ))
        })
    }
}

/// Binds the shared listener and serves `router` until `stop` fires. Returns the
/// bound address once listening.
pub async fn serve(
    router: Router,
    addr: SocketAddr,
    tls: Option<Tls>,
    limits: &ListenerLimits,
    stop: axum_server::Handle<SocketAddr>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let limited = Limited::new(
        axum_server::accept::DefaultAcceptor::new(),
        limits.max_connections,
        limits.header_timeout,
    );
    let configure = |builder: &mut hyper_util::server::conn::auto::Builder<_>| {
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
    };
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
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(limits.header_timeout)
                .acceptor(limited);
            let mut server = axum_server::bind(addr).acceptor(acceptor).handle(stop);
            configure(server.http_builder());
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!("listener failed: {e}");
                }
            })
        }
        None => {
            let mut server = axum_server::bind(addr).acceptor(limited).handle(stop);
            configure(server.http_builder());
            tokio::spawn(async move {
                if let Err(e) = server.serve(service).await {
                    tracing::error!("listener failed: {e}");
                }
            })
        }
    };
    Ok(task)
}

/// Raises the soft limit on open files to the hard limit, so the connection
/// cap, not the descriptor table, is what bounds the listener. Returns the
/// soft limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}
