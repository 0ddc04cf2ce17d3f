use serde::Deserialize;

use crate::msgpack::{self, MapEntries};
use crate::Error;

/// Call number (u64), wall-clock time (u64), payload length (u32).
const HEADER_LEN: usize = 20;

/// One step envelope, borrowed from the buffer the host wrote for this call:
/// the borrow ends with `pulp_step`, as the host may reuse the buffer.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    call: u64,
    time_ns: u64,
    payload_len: u32,
    payload: &'a [u8],
    event: Option<Event<'a>>,
}

impl<'a> Step<'a> {
    /// Checks the header against the buffer and decodes the event, if any.
    pub fn parse(envelope: &'a [u8]) -> Result<Step<'a>, Error> {
        let Some((header, payload)) = envelope.split_first_chunk::<HEADER_LEN>() else {
            return Err(Error::new(format!(
                "envelope is {} bytes, shorter than the {HEADER_LEN}-byte header",
                envelope.len()
            )));
        };
        let call = u64::from_le_bytes(field(header, 0));
        let time_ns = u64::from_le_bytes(field(header, 8));
        let payload_len = u32::from_le_bytes(field(header, 16));
        if payload.len() != payload_len as usize {
            return Err(Error::new(format!(
                "header gives a {payload_len}-byte payload but {} bytes follow",
                payload.len()
            )));
        }
        let event = match payload {
            [] => None,
            _ => Some(Event::parse(payload)?),
        };
        Ok(Step {
            call,
            time_ns,
            payload_len,
            payload,
            event,
        })
    }

    /// Counts from 1.
    pub fn call(&self) -> u64 {
        self.call
    }

    /// Wall-clock time of the step, Unix nanoseconds.
    pub fn time_ns(&self) -> u64 {
        self.time_ns
    }

    /// The payload length the header gives.
    pub fn payload_len(&self) -> u32 {
        self.payload_len
    }

    /// The MessagePack `StepEvent`, or nothing for a tick.
    pub fn raw_payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The event this step carries; `None` for a tick.
    pub fn event(&self) -> Option<Event<'a>> {
        self.event
    }
}

fn field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    let mut bytes = [0; N];
    bytes.copy_from_slice(&header[at..at + N]);
    bytes
}

/// A `StepEvent`: `{kind: str, payload: <any value>}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    kind: &'a str,
    payload: &'a [u8],
}

impl<'a> Event<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Event<'a>, Error> {
        let mut kind = None;
        let mut payload = None;
        let in_event = |e: Error| Error::new(format!("event: {e}"));
        for entry in MapEntries::new(bytes).map_err(in_event)? {
            let (key, value) = entry.map_err(in_event)?;
            let slot = match key {
                "kind" => &mut kind,
                "payload" => &mut payload,
                // Room for fields a later host may add.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Error::new(format!("event: duplicate key {key:?}")));
            }
        }
        let kind = kind.ok_or_else(|| Error::new("event: no kind"))?;
        let mut reader = msgpack::Reader::new(kind);
        let kind = reader
            .str()
            .filter(|_| reader.is_done())
            .ok_or_else(|| Error::new("event: kind is not a string"))?;
        let payload = payload.ok_or_else(|| Error::new(format!("event {kind}: no payload")))?;
        Ok(Event { kind, payload })
    }

    /// E.g. `http.request`, `demo.ticker`.
    pub fn kind(&self) -> &'a str {
        self.kind
    }

    /// The payload value's MessagePack bytes, exactly as embedded.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Decodes the payload, typically into a `#[derive(Deserialize)]` struct.
    pub fn decode<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        rmp_serde::from_slice(self.payload)
            .map_err(|e| Error::new(format!("event {} payload: {e}", self.kind)))
    }
}
