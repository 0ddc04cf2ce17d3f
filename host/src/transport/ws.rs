//! `transport.ws.inbound`: WebSocket paths registered by cells; frames in as
//! events, out through a bounded per-connection queue.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use pulp_ext_api::{Capability, CellState, Code, HostHandle, HostImport, SetupEnv};
use pulp_wire::payload::{TextMap, WsClose, WsCloseRequest, WsFrame, WsOpen, WsSend};
use serde_bytes::Bytes;
use tokio::sync::mpsc;

use super::{Shared, TransportCell};

pub const NAME: &str = "transport.ws.inbound";

/// Frames waiting to go out to one client; a client this far behind is closed.
const SEND_QUEUE: usize = 256;
/// How long a closing connection may take to send its last frames.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Close code for a client too slow to keep up (1008: policy violation).
const CLOSE_SLOW: u16 = 1008;
/// Close code when the cell behind the connection failed (1011: internal error).
const CLOSE_CELL_FAILED: u16 = 1011;

struct Conn {
    cell: Arc<TransportCell>,
    out: mpsc::Sender<Message>,
}

/// A registered path: its cell and how many connections it has open.
struct Path {
    cell: Arc<TransportCell>,
    open: Arc<AtomicUsize>,
}

/// One connection's place among its path's, given back when it closes.
pub struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub struct Connections {
    routes: RwLock<HashMap<String, Path>>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
}

impl Connections {
    /// The cell serving `path` and the count of its open connections.
    pub fn route(&self, path: &str) -> Option<(Arc<TransportCell>, Arc<AtomicUsize>)> {
        let routes = self.routes.read().unwrap();
        let path = routes.get(path)?;
        Some((Arc::clone(&path.cell), Arc::clone(&path.open)))
    }

    fn close_cell(&self, cell: &Arc<TransportCell>, code: u16, reason: &str) {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|_, c| {
            if Arc::ptr_eq(&c.cell, cell) {
                let _ = c.out.try_send(close_message(code, reason));
                false
            } else {
                true
            }
        });
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

pub fn is_upgrade(request: &Request) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub async fn upgrade(
    shared: Arc<Shared>,
    target: Arc<TransportCell>,
    open: Arc<AtomicUsize>,
    request: Request,
) -> Response {
    let max = shared.listener.max_streams_per_path;
    if open.fetch_add(1, Ordering::SeqCst) >= max {
        open.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(
            cell = &*target.name,
            path = request.uri().path(),
            "WebSocket connection refused: {max} are open on this path (--max-streams-per-path)"
        );
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many connections on this path\n",
        )
            .into_response();
    }
    let place = Place(open);
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let path = parts.uri.path().to_owned();
    let query = super::parse_query(parts.uri.query());
    let headers: Vec<(String, String)> = super::joined_headers(&parts.headers)
        .map(|(name, value)| (name.to_owned(), value.into_owned()))
        .collect();
    let limit = target.limits.max_message_bytes as usize;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            run(shared, target, socket, path, query, headers).await;
            drop(place);
        })
}

/// Close code when the cell cannot take more events (1013: try again later).
const CLOSE_CELL_BUSY: u16 = 1013;

/// Hands an event to the cell; false when its queue is full or it has stopped.
fn deliver(handle: &HostHandle, cell: &str, kind: &str, payload: &[u8], conn_id: u64) -> bool {
    match handle.deliver(kind, payload, conn_id) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                cell,
                conn_id,
                "{kind} not delivered ({e:?}); closing the connection"
            );
            false
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    target: Arc<TransportCell>,
    socket: WebSocket,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
) {
    let ws = &shared.ws;
    let (handle, cell) = (target.handle, &*target.name);
    let _open = crate::metrics::OpenStream::new(cell, "websocket");
    let conn_id = ws.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(SEND_QUEUE);
    ws.conns.lock().unwrap().insert(
        conn_id,
        Conn {
            cell: Arc::clone(&target),
            out: out_tx,
        },
    );

    let open = encode_event(&WsOpen {
        conn_id,
        path: Cow::Borrowed(&path),
        query: text_map(&query),
        headers: text_map(&headers),
    });
    let (mut sink, mut stream) = socket.split();
    if !deliver(&handle, cell, WsOpen::KIND, &open, conn_id) {
        ws.conns.lock().unwrap().remove(&conn_id);
        let _ = sink.send(close_message(CLOSE_CELL_BUSY, "cell busy")).await;
        return;
    }
    let mut writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let (mut code, mut reason) = (1006u16, String::new());
    while let Some(message) = stream.next().await {
        let (opcode, payload): (u8, &[u8]) = match &message {
            Ok(Message::Text(text)) => (1, text.as_bytes()),
            Ok(Message::Binary(bytes)) => (2, bytes),
            Ok(Message::Close(frame)) => {
                if let Some(frame) = frame {
                    code = frame.code;
                    reason = frame.reason.to_string();
                } else {
                    code = 1005;
                }
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        let frame = encode_event(&WsFrame {
            conn_id,
            opcode,
            payload: Cow::Borrowed(Bytes::new(payload)),
        });
        if !deliver(&handle, cell, WsFrame::KIND, &frame, conn_id) {
            if let Some(conn) = ws.conns.lock().unwrap().remove(&conn_id) {
                let _ = conn
                    .out
                    .try_send(close_message(CLOSE_CELL_BUSY, "cell busy"));
            }
            (code, reason) = (CLOSE_CELL_BUSY, "cell busy".to_owned());
            break;
        }
    }

    // Gone from the table first, so sends after this are refused, not queued.
    let was_open = ws.conns.lock().unwrap().remove(&conn_id).is_some();
    // The writer ends once it has sent what is queued (a close frame among
    // it); a client that does not read gets a moment, then is dropped.
    if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
    }
    if was_open || code != 1006 {
        let close = encode_event(&WsClose {
            conn_id,
            code,
            reason: Cow::Borrowed(&reason),
        });
        deliver(&handle, cell, WsClose::KIND, &close, conn_id);
    }
}

fn encode_event(event: &impl serde::Serialize) -> Vec<u8> {
    rmp_serde::to_vec_named(event).expect("an event of strings, bytes and integers encodes")
}

fn text_map(pairs: &[(String, String)]) -> TextMap<'_> {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
        .collect()
}

pub struct WsInbound(pub Arc<Shared>);

impl Capability for WsInbound {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let shared = Arc::clone(&self.0);
        let register = HostImport::inputs("ws_register", move |guest, [path]| {
            let target = guest.state::<Arc<TransportCell>>()?;
            let path = super::path_arg(path)?;
            let mut routes = shared.ws.routes.write().unwrap();
            match routes.get(path) {
                Some(owner) if !Arc::ptr_eq(&owner.cell, target) => {
                    tracing::error!(
                        cell = guest.cell(),
                        "WebSocket path {path} is already registered by cell {}",
                        owner.cell.name
                    );
                    Err(Code::REFUSED)
                }
                Some(_) => Ok(()),
                None => {
                    routes.insert(
                        path.to_owned(),
                        Path {
                            cell: Arc::clone(target),
                            open: Arc::default(),
                        },
                    );
                    Ok(())
                }
            }
        });
        let shared = Arc::clone(&self.0);
        let send = HostImport::request("ws_send", move |guest, req: WsSend<'static>| {
            let message = match req.opcode {
                1 => Message::Text(
                    String::from_utf8(req.payload.into_owned().into_vec())
                        .map_err(|_| Code::DECODE)?
                        .into(),
                ),
                2 => Message::Binary(req.payload.into_owned().into_vec().into()),
                _ => return Err(Code::DECODE),
            };
            let target = guest.state::<Arc<TransportCell>>()?;
            let mut conns = shared.ws.conns.lock().unwrap();
            let conn = match conns.get(&req.conn_id) {
                Some(c) if Arc::ptr_eq(&c.cell, target) => c,
                _ => return Err(Code::REFUSED),
            };
            if conn.out.try_send(message).is_err() {
                // The client is not reading: close it rather than buffer without bound.
                let conn = conns.remove(&req.conn_id).expect("present");
                let _ = conn
                    .out
                    .try_send(close_message(CLOSE_SLOW, "client too slow"));
                tracing::warn!(
                    cell = guest.cell(),
                    conn_id = req.conn_id,
                    "WebSocket client too slow; closed"
                );
                return Err(Code::FAILED);
            }
            Ok(())
        });
        let shared = Arc::clone(&self.0);
        let close = HostImport::request("ws_close", move |guest, req: WsCloseRequest<'static>| {
            let target = guest.state::<Arc<TransportCell>>()?;
            let mut conns = shared.ws.conns.lock().unwrap();
            match conns.get(&req.conn_id) {
                Some(c) if Arc::ptr_eq(&c.cell, target) => {}
                _ => return Err(Code::REFUSED),
            }
            let conn = conns.remove(&req.conn_id).expect("present");
            let _ = conn.out.try_send(close_message(req.code, &req.reason));
            Ok(())
        });
        vec![register, send, close]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        Ok(CellState::new(Arc::new(TransportCell::of(env))))
    }

    fn cell_failed(&self, _cell: &str, state: &CellState) {
        if let Some(target) = state.get::<Arc<TransportCell>>() {
            self.0
                .ws
                .close_cell(target, CLOSE_CELL_FAILED, "cell failed");
        }
    }

    fn teardown_cell(&self, _cell: &str, state: &CellState) {
        let Some(target) = state.get::<Arc<TransportCell>>() else {
            return;
        };
        self.0
            .ws
            .routes
            .write()
            .unwrap()
            .retain(|_, owner| !Arc::ptr_eq(&owner.cell, target));
        self.0.ws.close_cell(target, 1001, "cell stopped");
    }
}
