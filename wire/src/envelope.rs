//! The step envelope: what `pulp_step(ptr, len)` receives. A 20-byte
//! little-endian header — call number (u64, from 1), wall-clock time in Unix
//! nanoseconds (u64), payload length (u32) — then the payload: nothing for a
//! tick, or a MessagePack `StepEvent` map `{kind: str, payload: any}` with the
//! event's own payload embedded as it was sent.

use std::fmt;

pub const HEADER_LEN: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub call: u64,
    pub time_ns: u64,
    pub payload_len: u32,
}

/// Why a buffer is not an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Shorter than the header.
    Short(usize),
    /// The header's payload length and the bytes after it disagree.
    Length { declared: u32, found: usize },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Short(len) => write!(
                f,
                "envelope is {len} bytes, shorter than the {HEADER_LEN}-byte header"
            ),
            EnvelopeError::Length { declared, found } => write!(
                f,
                "header gives a {declared}-byte payload but {found} bytes follow"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[0..8].copy_from_slice(&self.call.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.time_ns.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.payload_len.to_le_bytes());
        bytes
    }

    /// The header and the payload after it, checked against each other.
    pub fn split(envelope: &[u8]) -> Result<(Header, &[u8]), EnvelopeError> {
        let Some((head, payload)) = envelope.split_first_chunk::<HEADER_LEN>() else {
            return Err(EnvelopeError::Short(envelope.len()));
        };
        let field = |at: usize, n: usize| {
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(&head[at..at + n]);
            u64::from_le_bytes(le)
        };
        let header = Header {
            call: field(0, 8),
            time_ns: field(8, 8),
            payload_len: field(16, 4) as u32,
        };
        if payload.len() != header.payload_len as usize {
            return Err(EnvelopeError::Length {
                declared: header.payload_len,
                found: payload.len(),
            });
        }
        Ok((header, payload))
    }
}

const KIND_KEY: &[u8] = b"\xa4kind";
const PAYLOAD_KEY: &[u8] = b"\xa7payload";

/// The size of the `StepEvent` map for an event of `kind` with `payload`.
pub fn event_len(kind: &str, payload: &[u8]) -> usize {
    let str_header = match kind.len() {
        0..=31 => 1,
        32..=255 => 2,
        256..=65_535 => 3,
        _ => 5,
    };
    1 + KIND_KEY.len() + str_header + kind.len() + PAYLOAD_KEY.len() + payload.len()
}

/// Writes the `StepEvent` map into `out`, which is exactly [`event_len`] long.
pub fn write_event(out: &mut [u8], kind: &str, payload: &[u8]) {
    let mut cursor = out;
    // A slice writer cannot run short: the caller sized it with `event_len`.
    rmp::encode::write_map_len(&mut cursor, 2).expect("sized buffer");
    std::io::Write::write_all(&mut cursor, KIND_KEY).expect("sized buffer");
    rmp::encode::write_str(&mut cursor, kind).expect("sized buffer");
    std::io::Write::write_all(&mut cursor, PAYLOAD_KEY).expect("sized buffer");
    std::io::Write::write_all(&mut cursor, payload).expect("sized buffer");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_are_checked() {
        let header = Header {
            call: 7,
            time_ns: u64::MAX - 1,
            payload_len: 3,
        };
        let mut envelope = header.to_bytes().to_vec();
        envelope.extend_from_slice(b"abc");
        assert_eq!(Header::split(&envelope), Ok((header, &b"abc"[..])));
        assert_eq!(
            Header::split(&envelope[..10]),
            Err(EnvelopeError::Short(10))
        );
        let err = Header::split(&envelope[..22]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header gives a 3-byte payload but 2 bytes follow"
        );
    }

    #[test]
    fn events_are_sized_exactly_for_every_kind_length() {
        for kind_len in [0, 31, 32, 255, 256, 65_535, 65_536] {
            let kind = "k".repeat(kind_len);
            let payload = [0x92, 0x01, 0xc0];
            let mut out = vec![0; event_len(&kind, &payload)];
            write_event(&mut out, &kind, &payload);
            let mut expected = Vec::new();
            rmp::encode::write_map_len(&mut expected, 2).unwrap();
            rmp::encode::write_str(&mut expected, "kind").unwrap();
            rmp::encode::write_str(&mut expected, &kind).unwrap();
            rmp::encode::write_str(&mut expected, "payload").unwrap();
            expected.extend_from_slice(&payload);
            assert_eq!(out, expected, "kind of {kind_len} bytes");
        }
    }
}
