//! The MessagePack requests cells send to the built-in capabilities and the
//! events those capabilities deliver, one type each for both sides: the
//! sender encodes borrowing, the receiver decodes owned. Fields are `Cow` for
//! that reason. (`http.request` and `http_respond`, on every request's path,
//! are read in place by [`crate::http`] instead.)
//!
//! An optional field sent as nil reads as left out: Go encodes a nil slice or
//! map that way.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_bytes::{ByteBuf, Bytes};

/// Text keyed by text, as headers and query strings travel.
pub type TextMap<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// For `#[serde(default, deserialize_with = "nil_as_default")]`: an optional
/// field sent as nil takes its default, as if left out.
pub fn nil_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `http_register`: route `method` `path` (`:name` segments capture) to the cell.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute<'a> {
    pub method: Cow<'a, str>,
    pub path: Cow<'a, str>,
}

/// `ws_send`: one data frame, text (1) or binary (2), on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsSend<'a> {
    pub conn_id: u64,
    pub opcode: u8,
    /// MessagePack bin; a string is taken too.
    pub payload: Cow<'a, Bytes>,
}

/// `ws_close`: a close frame; code 1000 and no reason when left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsCloseRequest<'a> {
    pub conn_id: u64,
    #[serde(default = "normal_close", deserialize_with = "nil_as_normal_close")]
    pub code: u16,
    #[serde(default, deserialize_with = "nil_as_default")]
    pub reason: Cow<'a, str>,
}

/// The WebSocket code of an orderly close.
pub const NORMAL_CLOSE: u16 = 1000;

fn normal_close() -> u16 {
    NORMAL_CLOSE
}

fn nil_as_normal_close<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    Option::<u16>::deserialize(deserializer).map(|code| code.unwrap_or(NORMAL_CLOSE))
}

/// `sse_emit`: one event to every subscriber of `path`; nil is the same as
/// leaving `id` or `event` out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseEmit<'a> {
    pub path: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Cow<'a, str>>,
    pub data: Cow<'a, str>,
}

/// `ws.open`: a client connected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsOpen<'a> {
    pub conn_id: u64,
    /// The registered path the client connected to.
    pub path: Cow<'a, str>,
    #[serde(default, deserialize_with = "nil_as_default")]
    pub query: TextMap<'a>,
    /// Keyed by lower-case names.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub headers: TextMap<'a>,
}

impl WsOpen<'_> {
    pub const KIND: &'static str = "ws.open";
}

/// `ws.frame`: a message from the client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsFrame<'a> {
    pub conn_id: u64,
    /// 1 text, 2 binary.
    pub opcode: u8,
    pub payload: Cow<'a, Bytes>,
}

impl WsFrame<'_> {
    pub const KIND: &'static str = "ws.frame";
}

/// `ws.close`: the connection is gone, with the client's close code (1005
/// when it sent none, 1006 when it vanished).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsClose<'a> {
    pub conn_id: u64,
    pub code: u16,
    #[serde(default, deserialize_with = "nil_as_default")]
    pub reason: Cow<'a, str>,
}

impl WsClose<'_> {
    pub const KIND: &'static str = "ws.close";
}

/// `http_fetch`: an outbound request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest<'a> {
    /// GET when empty, left out or nil.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub method: Cow<'a, str>,
    pub url: Cow<'a, str>,
    #[serde(default, deserialize_with = "nil_as_default")]
    pub headers: TextMap<'a>,
    #[serde(default, deserialize_with = "nil_as_default")]
    pub body: Cow<'a, Bytes>,
    /// The host's default (the cell's `call_timeout_ms`) when absent; never
    /// more than that.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ns: Option<u64>,
}

impl<'a> FetchRequest<'a> {
    pub fn new(method: impl Into<Cow<'a, str>>, url: impl Into<Cow<'a, str>>) -> Self {
        FetchRequest {
            method: method.into(),
            url: url.into(),
            ..FetchRequest::default()
        }
    }

    pub fn get(url: impl Into<Cow<'a, str>>) -> Self {
        FetchRequest::new("GET", url)
    }

    pub fn header(mut self, name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Cow::Owned(ByteBuf::from(body.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ns = Some(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        self
    }
}

/// What `http_fetch` got back: any status the server answered. Built by the
/// host and read by the cell, so it owns its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    pub status: u16,
    /// Keyed by lower-case names; repeated headers joined with ", ".
    #[serde(default, deserialize_with = "nil_as_default")]
    pub headers: BTreeMap<String, String>,
    #[serde(
        default,
        serialize_with = "serde_bytes::serialize",
        deserialize_with = "nil_as_empty_bytes"
    )]
    pub body: Vec<u8>,
}

/// For a bytes field (bin or str) where nil means empty, as Go sends a nil
/// slice.
pub fn nil_as_empty_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    Option::<ByteBuf>::deserialize(deserializer)
        .map(|bytes| bytes.map(ByteBuf::into_vec).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        rmp_serde::from_slice(&rmp_serde::to_vec_named(value).unwrap()).unwrap()
    }

    #[test]
    fn requests_round_trip_as_named_maps() {
        let send = WsSend {
            conn_id: 7,
            opcode: 2,
            payload: Cow::Borrowed(Bytes::new(&[0, 1, 2])),
        };
        assert_eq!(round_trip(&send), send);
        let emit = SseEmit {
            path: "/events".into(),
            id: None,
            event: Some("tick".into()),
            data: "a\nb".into(),
        };
        assert_eq!(round_trip(&emit), emit);
        let route = HttpRoute {
            method: "GET".into(),
            path: "/a/:id".into(),
        };
        assert_eq!(round_trip(&route), route);
    }

    #[test]
    fn left_out_fields_take_their_defaults_and_bad_ones_fail() {
        let bare =
            rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("conn_id", 3)])).unwrap();
        let close: WsCloseRequest<'static> = rmp_serde::from_slice(&bare).unwrap();
        assert_eq!((close.code, &*close.reason), (NORMAL_CLOSE, ""));

        // A nil id is the same as none; a payload that is not bytes or a
        // missing field does not decode.
        let nil_id = [
            0x83, 0xa4, b'p', b'a', b't', b'h', 0xa1, b'/', 0xa2, b'i', b'd', 0xc0, 0xa4, b'd',
            b'a', b't', b'a', 0xa0,
        ];
        let emit: SseEmit<'static> = rmp_serde::from_slice(&nil_id).unwrap();
        assert_eq!(emit.id, None);
        assert!(rmp_serde::from_slice::<WsSend<'static>>(&bare).is_err());
    }

    fn named(pairs: &[(&str, rmpv::Value)]) -> Vec<u8> {
        let map = rmpv::Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (rmpv::Value::from(*k), v.clone()))
                .collect(),
        );
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        bytes
    }

    #[test]
    fn nil_in_an_optional_field_reads_as_left_out() {
        use rmpv::Value;

        let fetch: FetchRequest<'static> = rmp_serde::from_slice(&named(&[
            ("method", Value::Nil),
            ("url", Value::from("http://a/")),
            ("headers", Value::Nil),
            ("body", Value::Nil),
            ("timeout_ns", Value::Nil),
        ]))
        .unwrap();
        assert_eq!(fetch, FetchRequest::new("", "http://a/"));

        let response: FetchResponse = rmp_serde::from_slice(&named(&[
            ("status", Value::from(204)),
            ("headers", Value::Nil),
            ("body", Value::Nil),
        ]))
        .unwrap();
        assert_eq!((response.status, response.body.len()), (204, 0));

        let close: WsCloseRequest<'static> = rmp_serde::from_slice(&named(&[
            ("conn_id", Value::from(1)),
            ("code", Value::Nil),
            ("reason", Value::Nil),
        ]))
        .unwrap();
        assert_eq!((close.code, &*close.reason), (NORMAL_CLOSE, ""));

        let open: WsOpen<'static> = rmp_serde::from_slice(&named(&[
            ("conn_id", Value::from(1)),
            ("path", Value::from("/ws")),
            ("query", Value::Nil),
            ("headers", Value::Nil),
        ]))
        .unwrap();
        assert!(open.query.is_empty() && open.headers.is_empty());

        // Required fields stay required, nil or not.
        let no_url = named(&[("url", Value::Nil)]);
        assert!(rmp_serde::from_slice::<FetchRequest<'static>>(&no_url).is_err());
    }

    #[test]
    fn events_and_fetches_round_trip() {
        let fetch = FetchRequest::new("POST", "https://x.test/a")
            .header("content-type", "text/plain")
            .body("hi")
            .timeout(Duration::from_millis(5));
        assert_eq!(round_trip(&fetch), fetch);
        let frame = WsFrame {
            conn_id: 2,
            opcode: 1,
            payload: Cow::Borrowed(Bytes::new(b"hello")),
        };
        assert_eq!(round_trip(&frame), frame);
        let close = WsClose {
            conn_id: 2,
            code: 1001,
            reason: "away".into(),
        };
        assert_eq!(round_trip(&close), close);
    }
}
