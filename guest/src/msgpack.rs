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
        let len = value_len(after_key)
            .ok_or_else(|| Error::new(format!("value of {key:?} is malformed or truncated")))?;
        let (value, after_value) = after_key.split_at(len);
        entries.push((key, value));
        rest = after_value;
    }
    if !rest.is_empty() {
        return Err(Error::new(format!("{} bytes after the map", rest.len())));
    }
    Ok(entries)
}

/// The length in bytes of the one MessagePack value `bytes` starts with;
/// `None` when it is malformed or truncated. Walks markers without decoding
/// or allocating, keeping a count of the values still to step over instead
/// of recursing into arrays and maps.
pub fn value_len(bytes: &[u8]) -> Option<usize> {
    use rmp::Marker;

    let be = |at: usize, n: usize| -> Option<usize> {
        let field = bytes.get(at..at.checked_add(n)?)?;
        Some(field.iter().fold(0, |acc, b| (acc << 8) | usize::from(*b)))
    };
    let mut at = 0;
    let mut values_left: usize = 1;
    while values_left > 0 {
        values_left -= 1;
        let marker = Marker::from_u8(*bytes.get(at)?);
        at += 1;
        // The bytes after the marker, and the values nested in this one.
        let (data, nested) = match marker {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (1 + be(at, 1)?, 0),
            Marker::Str16 | Marker::Bin16 => (2 + be(at, 2)?, 0),
            Marker::Str32 | Marker::Bin32 => (4 + be(at, 4)?, 0),
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (2, be(at, 2)?),
            Marker::Array32 => (4, be(at, 4)?),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (2, 2 * be(at, 2)?),
            Marker::Map32 => (4, 2 * be(at, 4)?),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (2 + be(at, 1)?, 0),
            Marker::Ext16 => (3 + be(at, 2)?, 0),
            Marker::Ext32 => (5 + be(at, 4)?, 0),
            Marker::Reserved => return None,
        };
        at = at.checked_add(data)?;
        // Every nested value takes at least a byte: a count past the input is forged.
        values_left = values_left.checked_add(nested)?;
        if at > bytes.len() || values_left > bytes.len() - at {
            return None;
        }
    }
    Some(at)
}
