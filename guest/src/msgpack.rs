//! Byte-level access to MessagePack, for when the exact encoding matters (a
//! nested value kept as it was sent, the marker byte the host chose for a
//! number) or reading in place is worth it (a payload borrowed, not copied).

use crate::Error;

/// Splits `bytes`, which must hold exactly one map with string keys, into
/// its entries: each key with the raw bytes of its value, in wire order.
pub fn map_entries(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, Error> {
    let entries = MapEntries::new(bytes)?;
    // Capped so a forged length cannot make us reserve more than the input holds.
    let mut all = Vec::with_capacity(entries.left.min(bytes.len() / 2));
    for entry in entries {
        all.push(entry?);
    }
    Ok(all)
}

/// The entries of one map with string keys, as [`map_entries`] gives them,
/// read one at a time without collecting them; after the last entry the
/// input must be used up.
#[derive(Clone, Debug)]
pub struct MapEntries<'a> {
    reader: Reader<'a>,
    left: usize,
    failed: bool,
}

impl<'a> MapEntries<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<MapEntries<'a>, Error> {
        let mut reader = Reader::new(bytes);
        let left = reader
            .map_len()
            .ok_or_else(|| Error::new("not a MessagePack map"))?;
        Ok(MapEntries {
            reader,
            left,
            failed: false,
        })
    }

    fn entry(&mut self) -> Result<(&'a str, &'a [u8]), Error> {
        let key = self
            .reader
            .str()
            .ok_or_else(|| Error::new("map key is not a string"))?;
        let value = self
            .reader
            .skip()
            .ok_or_else(|| Error::new(format!("value of {key:?} is malformed or truncated")))?;
        Ok((key, value))
    }
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = Result<(&'a str, &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = if self.left > 0 {
            self.left -= 1;
            self.entry()
        } else if self.reader.is_done() {
            return None;
        } else {
            Err(Error::new(format!(
                "{} bytes after the map",
                self.reader.bytes.len() - self.reader.at
            )))
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// A cursor over MessagePack bytes that reads one value at a time in place;
/// every read is `None` when the next value is not of the asked type or is
/// truncated.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// The bytes from `start`, an earlier [`position`](Self::position), to here.
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.bytes[start..self.at]
    }

    pub fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(taken)
    }

    fn be(&mut self, n: usize) -> Option<usize> {
        let field = self.take(n)?;
        Some(field.iter().fold(0, |acc, b| (acc << 8) | usize::from(*b)))
    }

    fn marker(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A map's entry count; its keys and values follow.
    pub fn map_len(&mut self) -> Option<usize> {
        match self.marker()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    /// A string's bytes, not checked to be UTF-8: enough to compare it
    /// with a known name.
    pub fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.marker()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    /// A binary value's bytes, or a string's.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.bytes.get(self.at)? {
            0xc4 => 1,
            0xc5 => 2,
            0xc6 => 4,
            _ => return self.str().map(str::as_bytes),
        };
        self.at += 1;
        let len = self.be(len)?;
        self.take(len)
    }

    /// A non-negative integer of any width.
    pub fn uint(&mut self) -> Option<u64> {
        let n = match self.marker()? {
            m @ 0x00..=0x7f => return Some(u64::from(m)),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            _ => return None,
        };
        let signed = self.bytes[self.at - 1] >= 0xd0;
        let field = self.take(n)?;
        let value = field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        // A signed integer counts only when it is not negative.
        let negative = signed && field[0] & 0x80 != 0;
        (!negative).then_some(value)
    }

    /// Steps over one value of any type, returning its bytes.
    pub fn skip(&mut self) -> Option<&'a [u8]> {
        let len = value_len(&self.bytes[self.at..])?;
        self.take(len)
    }
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
