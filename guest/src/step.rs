use serde::Deserialize;

use pulp_wire::envelope::Header;

use crate::msgpack::{self, MapEntries};
use crate::Error;

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
        let (header, payload) = Header::split(envelope).map_err(|e| Error::new(e.to_string()))?;
        let event = match payload {
            [] => None,
            _ => Some(Event::parse(payload)?),
        };
        Ok(Step {
            call: header.call,
            time_ns: header.time_ns,
            payload_len: header.payload_len,
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
        let in_event = |e: msgpack::Error| Error::new(format!("event: {e}"));
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
