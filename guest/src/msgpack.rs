//! Byte-level access to MessagePack maps, for when the exact encoding
//! matters: a nested value kept as it was sent, or the marker byte the host
//! chose for a number.

use crate::Error;

/// Splits `bytes`, which must hold exactly one map with string keys, into
/// its entries: each key with the raw bytes of its value, in wire order.
pub fn map_entries(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, Error> {
    let mut rest = bytes;
    let len = rmp::decode::read_map_len(&mut rest)
        .map_err(|e| Error::new(format!("not a MessagePack map: {e}")))?;
    // Capped so a forged length cannot make us reserve more than the input holds.
    let mut entries = Vec::with_capacity((len as usize).min(rest.len() / 2));
    for _ in 0..len {
        let (key, after_key) = rmp::decode::read_str_from_slice(rest)
            .map_err(|e| Error::new(format!("map key is not a string: {e}")))?;
        let mut after_value = after_key;
        rmpv::decode::read_value_ref(&mut after_value)
            .map_err(|e| Error::new(format!("value of {key:?} is malformed: {e}")))?;
        let value = &after_key[..after_key.len() - after_value.len()];
        entries.push((key, value));
        rest = after_value;
    }
    if !rest.is_empty() {
        return Err(Error::new(format!("{} bytes after the map", rest.len())));
    }
    Ok(entries)
}
