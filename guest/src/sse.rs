//! Server-Sent Events streams (`transport.sse`).

use serde::Serialize;

use crate::{raw, Code};

/// Opens an event stream on `path`: every GET on it subscribes.
pub fn register(path: &str) -> Result<(), Code> {
    raw::call(raw::sse_register, path.as_bytes())
}

/// Sends one event to every subscriber of `path`. `data` may span lines;
/// `id` and `event` become the event's `id:` and `event:` fields.
pub fn emit(path: &str, id: Option<&str>, event: Option<&str>, data: &str) -> Result<(), Code> {
    #[derive(Serialize)]
    struct Emit<'a> {
        path: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        event: Option<&'a str>,
        data: &'a str,
    }
    raw::call_encoded(
        raw::sse_emit,
        &Emit {
            path,
            id,
            event,
            data,
        },
    )
}
