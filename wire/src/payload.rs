//! The MessagePack requests cells send to the built-in capabilities, one type
//! each for both sides: the guest SDK encodes them (borrowing, no copy), the
//! host decodes them (owned). Fields are `Cow` for that reason.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

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
    #[serde(default = "normal_close")]
    pub code: u16,
    #[serde(default)]
    pub reason: Cow<'a, str>,
}

/// The WebSocket code of an orderly close.
pub const NORMAL_CLOSE: u16 = 1000;

fn normal_close() -> u16 {
    NORMAL_CLOSE
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
}
