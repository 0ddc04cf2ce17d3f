//! WebSocket endpoints (`transport.ws.inbound`).
//!
//! A registered path accepts upgrades; each connection then delivers
//! `ws.open`, any number of `ws.frame` and one `ws.close` event, decoded
//! into [`WsOpen`], [`WsFrame`] and [`WsClose`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use pulp_wire::payload::{WsCloseRequest, WsSend};
use serde::Deserialize;

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

/// The payload of a `ws.open` event: a client connected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct WsOpen {
    pub conn_id: u64,
    /// The registered path the client connected to.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Keyed by lower-case names.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl WsOpen {
    pub const KIND: &'static str = "ws.open";
}

/// The payload of a `ws.frame` event: a message from the client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct WsFrame {
    pub conn_id: u64,
    /// 1 text, 2 binary.
    pub opcode: u8,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl WsFrame {
    pub const KIND: &'static str = "ws.frame";

    /// The frame as a [`Message`]; `None` for an opcode other than text or
    /// binary, or text that is not UTF-8.
    pub fn into_message(self) -> Option<Message> {
        match self.opcode {
            TEXT => String::from_utf8(self.payload).ok().map(Message::Text),
            BINARY => Some(Message::Binary(self.payload)),
            _ => None,
        }
    }
}

/// The payload of a `ws.close` event: the connection is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct WsClose {
    pub conn_id: u64,
    pub code: u16,
    #[serde(default)]
    pub reason: String,
}

impl WsClose {
    pub const KIND: &'static str = "ws.close";
}
