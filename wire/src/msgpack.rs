//! MessagePack read in place, for both sides: byte-level access where the exact
//! encoding matters (a nested value kept as it was sent, the marker byte the
//! host chose for a number) and reading without copying is worth it (a payload
//! borrowed from the cell's memory or the envelope). Nothing here allocates
//! but [`map_entries`]' result; a malformed or truncated value is `None`.

use std::fmt;

/// A map that is not what [`map_entries`] reads, saying what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Lets `?` forward an [`Error`] where errors are text (a cell's `init`).
impl From<Error> for String {
    fn from(error: Error) -> String {
        error.0
    }
}

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
                self.reader.remaining()
            )))
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// One scalar MessagePack value, strings and bytes borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar<'a> {
    Nil,
    Bool(bool),
    /// Every integer that fits `i64`.
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
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

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(taken)
    }

    /// An `n`-byte big-endian unsigned field.
    fn be(&mut self, n: usize) -> Option<u64> {
        let field = self.take(n)?;
        Some(field.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// An `n`-byte length field.
    fn len(&mut self, n: usize) -> Option<usize> {
        usize::try_from(self.be(n)?).ok()
    }

    fn marker(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// Steps over a nil if one is next: an optional field sent as nil reads
    /// as absent (Go encodes a nil slice or map that way).
    pub fn nil(&mut self) -> bool {
        let nil = self.bytes.get(self.at) == Some(&0xc0);
        self.at += usize::from(nil);
        nil
    }

    /// A map's entry count; its keys and values follow.
    pub fn map_len(&mut self) -> Option<usize> {
        match self.marker()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => self.len(2),
            0xdf => self.len(4),
            _ => None,
        }
    }

    /// A string's bytes, not checked to be UTF-8: enough to compare it
    /// with a known name.
    pub fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.marker()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
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
        let len = self.len(len)?;
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
        let value = self.be(n)?;
        // A signed integer counts only when it is not negative.
        let negative = signed && value >> (8 * n - 1) != 0;
        (!negative).then_some(value)
    }

    /// An array's element count; its elements follow.
    pub fn array_len(&mut self) -> Option<usize> {
        match self.marker()? {
            m @ 0x90..=0x9f => Some(usize::from(m & 0x0f)),
            0xdc => self.len(2),
            0xdd => self.len(4),
            _ => None,
        }
    }

    /// One scalar of any kind; `None` for arrays, maps, extension types and
    /// integers over `i64::MAX`.
    pub fn scalar(&mut self) -> Option<Scalar<'a>> {
        let marker = self.marker()?;
        let len = match marker {
            0x00..=0x7f => return Some(Scalar::Int(i64::from(marker))),
            0xe0..=0xff => return Some(Scalar::Int(i64::from(marker as i8))),
            0xc0 => return Some(Scalar::Nil),
            0xc2 => return Some(Scalar::Bool(false)),
            0xc3 => return Some(Scalar::Bool(true)),
            0xcc => return Some(Scalar::Int(self.be(1)? as i64)),
            0xcd => return Some(Scalar::Int(self.be(2)? as i64)),
            0xce => return Some(Scalar::Int(self.be(4)? as i64)),
            0xcf => return i64::try_from(self.be(8)?).ok().map(Scalar::Int),
            0xd0 => return Some(Scalar::Int(self.signed(1)?)),
            0xd1 => return Some(Scalar::Int(self.signed(2)?)),
            0xd2 => return Some(Scalar::Int(self.signed(4)?)),
            0xd3 => return Some(Scalar::Int(self.signed(8)?)),
            0xca => {
                let bits = self.be(4)? as u32;
                return Some(Scalar::Float(f64::from(f32::from_bits(bits))));
            }
            0xcb => return Some(Scalar::Float(f64::from_bits(self.be(8)?))),
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xc4 | 0xd9 => self.len(1)?,
            0xc5 | 0xda => self.len(2)?,
            0xc6 | 0xdb => self.len(4)?,
            _ => return None,
        };
        let data = self.take(len)?;
        if matches!(marker, 0xc4..=0xc6) {
            Some(Scalar::Bin(data))
        } else {
            std::str::from_utf8(data).ok().map(Scalar::Str)
        }
    }

    /// An `n`-byte big-endian two's-complement field.
    fn signed(&mut self, n: usize) -> Option<i64> {
        let shift = 64 - 8 * n as u32;
        Some(((self.be(n)? << shift) as i64) >> shift)
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

    let mut reader = Reader::new(bytes);
    let mut values_left: usize = 1;
    while values_left > 0 {
        values_left -= 1;
        // The bytes after the marker and any length field, and the values
        // nested in this one.
        let (data, nested) = match Marker::from_u8(reader.marker()?) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (reader.len(1)?, 0),
            Marker::Str16 | Marker::Bin16 => (reader.len(2)?, 0),
            Marker::Str32 | Marker::Bin32 => (reader.len(4)?, 0),
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (0, reader.len(2)?),
            Marker::Array32 => (0, reader.len(4)?),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * reader.len(2)?),
            Marker::Map32 => (0, reader.len(4)?.checked_mul(2)?),
            // Extensions: a type byte, then the data.
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (1 + reader.len(1)?, 0),
            Marker::Ext16 => (1 + reader.len(2)?, 0),
            Marker::Ext32 => (reader.len(4)?.checked_add(1)?, 0),
            Marker::Reserved => return None,
        };
        reader.take(data)?;
        // Every nested value takes at least a byte: a count past the input is forged.
        values_left = values_left.checked_add(nested)?;
        if values_left > reader.remaining() {
            return None;
        }
    }
    Some(reader.position())
}

/// Checks that `bytes` is exactly one well-formed MessagePack value, without
/// decoding or allocating: the host runs it for every event.
pub fn check_one_value(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty payload (expected one MessagePack value)".into());
    }
    let end = value_len(bytes).ok_or("not valid MessagePack: truncated or malformed")?;
    if end != bytes.len() {
        return Err(format!(
            "{} bytes after the first MessagePack value (expected exactly one)",
            bytes.len() - end
        ));
    }
    Ok(())
}

/// Writes string pairs as a MessagePack map.
pub fn write_pairs<K: AsRef<str>, V: AsRef<str>>(
    out: &mut Vec<u8>,
    pairs: impl ExactSizeIterator<Item = (K, V)>,
) {
    let len = u32::try_from(pairs.len()).expect("a MessagePack length fits in u32");
    // Writing into a Vec cannot fail.
    rmp::encode::write_map_len(out, len).expect("vec write");
    for (key, value) in pairs {
        rmp::encode::write_str(out, key.as_ref()).expect("vec write");
        rmp::encode::write_str(out, value.as_ref()).expect("vec write");
    }
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    #[test]
    fn value_len_walks_every_kind_and_refuses_what_is_cut_short() {
        let long = "x".repeat(300);
        let value = Value::Map(vec![
            (
                Value::from("ints"),
                Value::Array(vec![0.into(), (-5).into(), 70000.into(), u64::MAX.into()]),
            ),
            (
                Value::from("floats"),
                Value::Array(vec![Value::F32(0.5), Value::F64(1.5)]),
            ),
            (
                Value::from("text"),
                Value::Array(vec!["short".into(), long.as_str().into()]),
            ),
            (Value::from("bin"), Value::Binary(vec![7; 70000])),
            (
                Value::from("ext"),
                Value::Array(vec![Value::Ext(1, vec![1]), Value::Ext(2, vec![0; 20])]),
            ),
            (
                Value::from("misc"),
                Value::Array(vec![
                    Value::Nil,
                    true.into(),
                    Value::Array((0..20).map(Value::from).collect()),
                ]),
            ),
        ]);
        let bytes = encode(&value);
        assert_eq!(value_len(&bytes), Some(bytes.len()));
        let mut with_more = bytes.clone();
        with_more.push(0x01);
        assert_eq!(
            value_len(&with_more),
            Some(bytes.len()),
            "only the first value"
        );
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(value_len(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            None,
            "forged count"
        );
        assert_eq!(value_len(&[0xc1]), None, "reserved marker");
        assert_eq!(value_len(&[]), None);
    }

    #[test]
    fn map_entries_keep_wire_order_and_refuse_malformed_maps() {
        let map = Value::Map(vec![
            (Value::from("b"), Value::from(1)),
            (Value::from("a"), Value::Array(vec![Value::from("x")])),
        ]);
        let bytes = encode(&map);
        let entries = map_entries(&bytes).unwrap();
        assert_eq!(
            entries,
            [("b", &[0x01][..]), ("a", &[0x91, 0xa1, b'x'][..])]
        );

        let mut trailing = bytes.clone();
        trailing.push(0xc0);
        let err = map_entries(&trailing).unwrap_err();
        assert_eq!(err.to_string(), "1 bytes after the map");
        let int_key = encode(&Value::Map(vec![(Value::from(1), Value::from(2))]));
        assert!(map_entries(&int_key).is_err());
        assert!(map_entries(&encode(&Value::from("no map"))).is_err());
    }

    #[test]
    fn reader_reads_values_in_place() {
        let uint = |value: Value| Reader::new(&encode(&value)).uint();
        assert_eq!(uint(5.into()), Some(5));
        assert_eq!(uint(70000.into()), Some(70000));
        assert_eq!(uint(u64::MAX.into()), Some(u64::MAX));
        assert_eq!(
            Reader::new(&[0xd0, 0x05]).uint(),
            Some(5),
            "a positive int8"
        );
        assert_eq!(Reader::new(&[0xd0, 0xfb]).uint(), None, "a negative int8");
        assert_eq!(uint((-1).into()), None);
        assert_eq!(uint("5".into()), None);

        let bytes = encode(&Value::Array(vec![
            Value::Binary(vec![0, 1]),
            "hé".into(),
            "k".into(),
        ]));
        let mut reader = Reader::new(&bytes[1..]);
        assert_eq!(reader.bytes(), Some(&[0, 1][..]));
        assert_eq!(reader.bytes(), Some("hé".as_bytes()), "a string's bytes");
        let start = reader.position();
        assert_eq!(reader.str(), Some("k"));
        assert_eq!(reader.since(start), [0xa1, b'k']);
        assert!(reader.is_done());
        assert_eq!(
            Reader::new(&[0xa2, 0xff, 0xfe]).str(),
            None,
            "invalid UTF-8"
        );
        assert_eq!(Reader::new(&[0xa2, b'a']).str_bytes(), None, "truncated");
    }

    #[test]
    fn one_value_only() {
        assert!(check_one_value(&[0x01]).is_ok());
        assert!(check_one_value(&[0x01, 0x02]).is_err());
        assert!(check_one_value(&[0x92, 0x01]).is_err());
        assert!(check_one_value(&[]).is_err());
        assert!(check_one_value(&[0xc1]).is_err());
        assert!(check_one_value(&[0xa3, b'a', b'b']).is_err());
        assert!(check_one_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(check_one_value(&[0x91; 1000]).is_err());
    }

    #[test]
    fn reader_decodes_every_scalar_form() {
        let ints: Vec<i64> = vec![
            0,
            127,
            -1,
            -32,
            -33,
            200,
            -200,
            70_000,
            -70_000,
            1 << 40,
            i64::MIN,
            i64::MAX,
        ];
        let bytes = rmp_serde::to_vec(&ints).unwrap();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.array_len(), Some(ints.len()));
        for expected in &ints {
            assert_eq!(reader.scalar(), Some(Scalar::Int(*expected)));
        }
        assert!(reader.is_done());

        let mut bytes = Vec::new();
        rmp::encode::write_array_len(&mut bytes, 6).unwrap();
        rmp::encode::write_nil(&mut bytes).unwrap();
        rmp::encode::write_bool(&mut bytes, true).unwrap();
        rmp::encode::write_f32(&mut bytes, 0.5).unwrap();
        rmp::encode::write_f64(&mut bytes, -2.25).unwrap();
        rmp::encode::write_str(&mut bytes, &"s".repeat(300)).unwrap();
        rmp::encode::write_bin(&mut bytes, &[0, 1, 2]).unwrap();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.array_len(), Some(6));
        let long = "s".repeat(300);
        let expected = [
            Scalar::Nil,
            Scalar::Bool(true),
            Scalar::Float(0.5),
            Scalar::Float(-2.25),
            Scalar::Str(&long),
            Scalar::Bin(&[0, 1, 2]),
        ];
        for value in expected {
            assert_eq!(reader.scalar(), Some(value));
        }
        assert!(reader.is_done());
    }

    #[test]
    fn reader_refuses_what_has_no_scalar_value() {
        let too_big = rmp_serde::to_vec(&u64::MAX).unwrap();
        assert_eq!(Reader::new(&too_big).scalar(), None);
        let nested = rmp_serde::to_vec(&vec![1]).unwrap();
        assert_eq!(Reader::new(&nested).scalar(), None);
        assert_eq!(
            Reader::new(&[0xa5, b'a']).scalar(),
            None,
            "truncated string"
        );
        assert_eq!(Reader::new(&[0xa1, 0xff]).scalar(), None, "invalid UTF-8");
    }

    #[test]
    fn reader_reads_map_and_array_lengths_in_every_form() {
        let lens = |bytes: &[u8]| (Reader::new(bytes).map_len(), Reader::new(bytes).array_len());
        assert_eq!(lens(&[0x83]), (Some(3), None));
        assert_eq!(lens(&[0x9f]), (None, Some(15)));
        assert_eq!(lens(&[0xde, 0x01, 0x00]), (Some(256), None));
        assert_eq!(lens(&[0xdd, 0, 1, 0, 0]), (None, Some(65536)));
        assert_eq!(lens(&[0xdf, 0, 0]), (None, None), "truncated length");
        assert_eq!(lens(&[0xa3]), (None, None), "a string is neither");
    }
}
