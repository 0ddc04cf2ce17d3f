//! WebSocket endpoints (`transport.ws.inbound`).
//!
//! A registered path accepts upgrades; each connection then delivers
//! `ws.open`, any number of `ws.frame` and one `ws.close` event, decoded
//! into [`WsOpen`], [`WsFrame`] and [`WsClose`].

use std::borrow::Cow;

pub use pulp_wire::payload::{WsClose, WsFrame, WsOpen};
use pulp_wire::payload::{WsCloseRequest, WsSend};

use crate::{raw, Code};

const TEXT: u8 = 1;
const BINARY: u8 = 2;

/// Accepts WebSocket upgrades on `path`.
pub fn register(path: &str) -> Result<(), Code> {
    raw::call(raw::ws_register, path.as_bytes())
}

/// A data message, as sent or received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
}

impl Message {
    /// A received frame as a message; `None` for an opcode other than text
    /// or binary, or text that is not UTF-8.
    pub fn from_frame(frame: WsFrame<'_>) -> Option<Message> {
        let payload = frame.payload.into_owned().into_vec();
        match frame.opcode {
            TEXT => String::from_utf8(payload).ok().map(Message::Text),
            BINARY => Some(Message::Binary(payload)),
            _ => None,
        }
    }
}

/// Sends `message` on connection `conn_id`.
pub fn send(conn_id: u64, message: &Message) -> Result<(), Code> {
    let (opcode, payload) = match message {
        Message::Text(text) => (TEXT, text.as_bytes()),
        Message::Binary(bytes) => (BINARY, bytes.as_slice()),
    };
    raw::call_encoded(
        raw::ws_send,
        &WsSend {
            conn_id,
            opcode,
            payload: Cow::Borrowed(serde_bytes::Bytes::new(payload)),
        },
    )
}

/// Closes connection `conn_id` with a close frame carrying `code` and
/// `reason`.
pub fn close(conn_id: u64, code: u16, reason: &str) -> Result<(), Code> {
    raw::call_encoded(
        raw::ws_close,
        &WsCloseRequest {
            conn_id,
            code,
            reason: Cow::Borrowed(reason),
        },
    )
}
