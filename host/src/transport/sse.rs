//! `transport.sse`: event streams registered by cells; `sse_emit` goes to every
//! current subscriber of the path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use pulp_ext_api::{Capability, CellState, Code, HostImport, SetupEnv};
use pulp_wire::payload::SseEmit;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::{Shared, TransportCell};

pub const NAME: &str = "transport.sse";

/// Events buffered per path for subscribers that fall behind; past it they skip ahead.
const BUFFER: usize = 256;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
struct Emitted {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

struct Stream {
    cell: Arc<TransportCell>,
    sender: broadcast::Sender<Emitted>,
}

/// One client's subscription; its receiver leaves the path's broadcast when the
/// response stream holding both is dropped (the client disconnected).
struct Subscriber {
    cell: String,
    path: String,
    _open: crate::metrics::OpenStream,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        tracing::debug!(cell = self.cell, path = self.path, "sse subscriber left");
    }
}

#[derive(Default)]
pub struct Streams {
    paths: RwLock<HashMap<String, Stream>>,
}

impl Streams {
    /// An event stream for `path`, if some cell registered it; 503 when it
    /// already has `max` subscribers.
    pub fn subscribe(&self, path: &str, max: usize) -> Option<Response> {
        let (receiver, subscriber) = {
            let paths = self.paths.read().unwrap();
            let stream = paths.get(path)?;
            if stream.sender.receiver_count() >= max {
                tracing::warn!(
                    cell = &*stream.cell.name,
                    path,
                    "SSE subscriber refused: {max} are subscribed to this path (--max-streams-per-path)"
                );
                return Some(
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "too many subscribers on this path\n",
                    )
                        .into_response(),
                );
            }
            let subscriber = Subscriber {
                cell: stream.cell.name.to_string(),
                path: path.to_owned(),
                _open: crate::metrics::OpenStream::new(&stream.cell.name, "sse"),
            };
            (stream.sender.subscribe(), subscriber)
        };
        tracing::debug!(cell = subscriber.cell, path, "sse subscriber joined");
        // A subscriber that lagged skips what it missed; a closed path ends the stream.
        let events = BroadcastStream::new(receiver).filter_map(move |item| {
            // Owned by the stream: dropped, and logged, when the client goes away.
            let _subscriber = &subscriber;
            let emitted = item.ok()?;
            // Fields are written in the order they are set: id and name first.
            let mut event = Event::default();
            if let Some(id) = emitted.id {
                event = event.id(id);
            }
            if let Some(name) = emitted.event {
                event = event.event(name);
            }
            Some(Ok::<Event, Infallible>(event.data(emitted.data)))
        });
        Some(
            Sse::new(events)
                .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
                .into_response(),
        )
    }
}

pub struct ServerSentEvents(pub Arc<Shared>);

impl Capability for ServerSentEvents {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let shared = Arc::clone(&self.0);
        let register = HostImport::inputs("sse_register", move |guest, [path]| {
            let path = super::path_arg(path)?;
            let mut paths = shared.sse.paths.write().unwrap();
            let target = guest.state::<Arc<TransportCell>>()?;
            match paths.get(path) {
                Some(stream) if !Arc::ptr_eq(&stream.cell, target) => {
                    tracing::error!(
                        cell = guest.cell(),
                        "SSE path {path} is already registered by cell {}",
                        stream.cell.name
                    );
                    Err(Code::REFUSED)
                }
                Some(_) => Ok(()),
                None => {
                    let (sender, _) = broadcast::channel(BUFFER);
                    paths.insert(
                        path.to_owned(),
                        Stream {
                            cell: Arc::clone(target),
                            sender,
                        },
                    );
                    Ok(())
                }
            }
        });
        let shared = Arc::clone(&self.0);
        let emit = HostImport::request("sse_emit", move |guest, req: SseEmit<'static>| {
            // A line break would end the field early and forge others.
            let breaks =
                |s: &Option<Cow<'_, str>>| s.as_deref().is_some_and(|s| s.contains(['\n', '\r']));
            if breaks(&req.id) || breaks(&req.event) {
                return Err(Code::DECODE);
            }
            let target = guest.state::<Arc<TransportCell>>()?;
            let paths = shared.sse.paths.read().unwrap();
            let stream = match paths.get(&*req.path) {
                Some(s) if Arc::ptr_eq(&s.cell, target) => s,
                _ => return Err(Code::REFUSED),
            };
            // No subscriber right now is not an error.
            let _ = stream.sender.send(Emitted {
                id: req.id.map(Cow::into_owned),
                event: req.event.map(Cow::into_owned),
                data: req.data.into_owned(),
            });
            Ok(())
        });
        vec![register, emit]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        Ok(CellState::new(Arc::new(TransportCell::of(env))))
    }

    fn teardown_cell(&self, _cell: &str, state: &CellState) {
        let Some(target) = state.get::<Arc<TransportCell>>() else {
            return;
        };
        // Dropping the sender ends every subscriber's stream.
        self.0
            .sse
            .paths
            .write()
            .unwrap()
            .retain(|_, s| !Arc::ptr_eq(&s.cell, target));
    }
}
