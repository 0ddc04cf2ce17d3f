//! Server-Sent Events streams (`transport.sse`).

use std::borrow::Cow;

use pulp_wire::payload::SseEmit;

use crate::{raw, Code};

/// Opens an event stream on `path`: every GET on it subscribes.
pub fn register(path: &str) -> Result<(), Code> {
    raw::call(raw::sse_register, path.as_bytes())
}

/// Sends one event to every subscriber of `path`. `data` may span lines;
/// `id` and `event` become the event's `id:` and `event:` fields.
pub fn emit(path: &str, id: Option<&str>, event: Option<&str>, data: &str) -> Result<(), Code> {
    raw::call_encoded(
        raw::sse_emit,
        &SseEmit {
            path: Cow::Borrowed(path),
            id: id.map(Cow::Borrowed),
            event: event.map(Cow::Borrowed),
            data: Cow::Borrowed(data),
        },
    )
}
