use serde::Deserialize;

use crate::msgpack::map_entries;
use crate::Error;

/// The manifest's `[config]` table, as the MessagePack map the host sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    raw: Vec<u8>,
}

impl Config {
    /// Wraps MessagePack bytes; no bytes at all count as an empty map.
    pub fn new(raw: Vec<u8>) -> Config {
        if raw.is_empty() {
            // 0x80: the empty fixmap, so every accessor sees a map.
            return Config { raw: vec![0x80] };
        }
        Config { raw }
    }

    /// The MessagePack bytes exactly as the host encoded them.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// True when the manifest has no `[config]` or an empty one.
    pub fn is_empty(&self) -> bool {
        map_entries(&self.raw).is_ok_and(|entries| entries.is_empty())
    }

    /// Decodes the whole table, typically into a `#[derive(Deserialize)]`
    /// struct whose fields are the config keys.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        rmp_serde::from_slice(&self.raw).map_err(|e| Error::new(format!("config: {e}")))
    }

    /// One top-level value; `None` if the key is absent or the config is
    /// malformed.
    pub fn get(&self, key: &str) -> Option<rmpv::Value> {
        let entries = map_entries(&self.raw).ok()?;
        let (_, mut value) = entries.into_iter().find(|(k, _)| *k == key)?;
        rmpv::decode::read_value(&mut value).ok()
    }
}
