//! The MessagePack the host produces and checks (docs/cell-abi.md conventions).

use rmp::encode;

/// Encodes a TOML table as a MessagePack map. Integers are always int 64 (`0xd3`)
/// and floats float 64 (`0xcb`), so decoders that keep wire types see `int64` and
/// `float64` whatever the value; datetimes become their TOML text.
pub fn encode_table(table: &toml::Table) -> Vec<u8> {
    let mut out = Vec::new();
    write_table(&mut out, table);
    out
}

fn write_table(out: &mut Vec<u8>, table: &toml::Table) {
    // Writing into a Vec cannot fail.
    encode::write_map_len(out, table.len() as u32).expect("vec write");
    for (key, value) in table {
        encode::write_str(out, key).expect("vec write");
        write_value(out, value);
    }
}

fn write_value(out: &mut Vec<u8>, value: &toml::Value) {
    match value {
        toml::Value::String(s) => encode::write_str(out, s).expect("vec write"),
        toml::Value::Integer(i) => encode::write_i64(out, *i).expect("vec write"),
        toml::Value::Float(f) => encode::write_f64(out, *f).expect("vec write"),
        toml::Value::Boolean(b) => encode::write_bool(out, *b).expect("vec write"),
        toml::Value::Datetime(d) => encode::write_str(out, &d.to_string()).expect("vec write"),
        toml::Value::Array(items) => {
            encode::write_array_len(out, items.len() as u32).expect("vec write");
            for item in items {
                write_value(out, item);
            }
        }
        toml::Value::Table(t) => write_table(out, t),
    }
}

/// Writes string pairs as a MessagePack map.
pub fn write_pairs<'a>(
    out: &mut Vec<u8>,
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) {
    encode::write_map_len(out, pairs.len() as u32).expect("vec write");
    for (k, v) in pairs {
        encode::write_str(out, k).expect("vec write");
        encode::write_str(out, v).expect("vec write");
    }
}

/// Checks that `bytes` is exactly one well-formed MessagePack value. Walks the
/// markers without decoding or allocating: it runs for every event.
pub fn check_one_value(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty payload (expected one MessagePack value)".into());
    }
    let end = skip_value(bytes, 0, 0).ok_or("not valid MessagePack: truncated or malformed")?;
    if end != bytes.len() {
        return Err(format!(
            "{} bytes after the first MessagePack value (expected exactly one)",
            bytes.len() - end
        ));
    }
    Ok(())
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 128;

fn be(bytes: &[u8], at: usize, n: usize) -> Option<usize> {
    let field = bytes.get(at..at.checked_add(n)?)?;
    Some(
        field
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
    )
}

/// The offset just past the value that starts at `at`.
fn skip_value(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let marker = *bytes.get(at)?;
    let next = at + 1;
    // Where the marker and its fixed part end, and how many nested values follow.
    let (end, children) = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (next, 0),
        0x80..=0x8f => (next, 2 * usize::from(marker & 0x0f)),
        0x90..=0x9f => (next, usize::from(marker & 0x0f)),
        0xa0..=0xbf => (next + usize::from(marker & 0x1f), 0),
        0xc4 | 0xd9 => (next + 1 + be(bytes, next, 1)?, 0),
        0xc5 | 0xda => (next + 2 + be(bytes, next, 2)?, 0),
        0xc6 | 0xdb => (next + 4 + be(bytes, next, 4)?, 0),
        0xc7 => (next + 2 + be(bytes, next, 1)?, 0),
        0xc8 => (next + 3 + be(bytes, next, 2)?, 0),
        0xc9 => (next + 5 + be(bytes, next, 4)?, 0),
        0xca => (next + 4, 0),
        0xcb => (next + 8, 0),
        0xcc | 0xd0 => (next + 1, 0),
        0xcd | 0xd1 => (next + 2, 0),
        0xce | 0xd2 => (next + 4, 0),
        0xcf | 0xd3 => (next + 8, 0),
        0xd4 => (next + 2, 0),
        0xd5 => (next + 3, 0),
        0xd6 => (next + 5, 0),
        0xd7 => (next + 9, 0),
        0xd8 => (next + 17, 0),
        0xdc => (next + 2, be(bytes, next, 2)?),
        0xdd => (next + 4, be(bytes, next, 4)?),
        0xde => (next + 2, 2 * be(bytes, next, 2)?),
        0xdf => (next + 4, 2 * be(bytes, next, 4)?),
        0xc1 => return None,
    };
    if end > bytes.len() {
        return None;
    }
    let mut at = end;
    for _ in 0..children {
        at = skip_value(bytes, at, depth + 1)?;
    }
    Some(at)
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

/// Reads MessagePack from a slice without allocating; `None` means malformed or
/// not what was asked for.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let field = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(field)
    }

    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn int(&mut self, n: usize) -> Option<i64> {
        // Sign-extend the big-endian n-byte field.
        let shift = 64 - 8 * n as u32;
        Some(((self.uint(n)? << shift) as i64) >> shift)
    }

    pub fn map_len(&mut self) -> Option<u32> {
        self.container_len(0x80, 0xde)
    }

    /// Steps over one value of any kind.
    pub fn skip(&mut self) -> Option<()> {
        self.at = skip_value(self.bytes, self.at, 0)?;
        Some(())
    }

    pub fn array_len(&mut self) -> Option<u32> {
        self.container_len(0x90, 0xdc)
    }

    /// The entry count after a map or array marker: `fix` is its fix form's
    /// first marker (length in the low 4 bits), `sized` its 16-bit form's (the
    /// 32-bit form's is the next).
    fn container_len(&mut self, fix: u8, sized: u8) -> Option<u32> {
        let marker = *self.take(1)?.first()?;
        match marker {
            m if m & 0xf0 == fix => Some(u32::from(m & 0x0f)),
            m if m == sized => Some(self.uint(2)? as u32),
            m if m == sized + 1 => Some(self.uint(4)? as u32),
            _ => None,
        }
    }

    pub fn scalar(&mut self) -> Option<Scalar<'a>> {
        let marker = *self.take(1)?.first()?;
        let len = match marker {
            0x00..=0x7f => return Some(Scalar::Int(i64::from(marker))),
            0xe0..=0xff => return Some(Scalar::Int(i64::from(marker as i8))),
            0xc0 => return Some(Scalar::Nil),
            0xc2 => return Some(Scalar::Bool(false)),
            0xc3 => return Some(Scalar::Bool(true)),
            0xcc => return Some(Scalar::Int(self.uint(1)? as i64)),
            0xcd => return Some(Scalar::Int(self.uint(2)? as i64)),
            0xce => return Some(Scalar::Int(self.uint(4)? as i64)),
            0xcf => return i64::try_from(self.uint(8)?).ok().map(Scalar::Int),
            0xd0 => return Some(Scalar::Int(self.int(1)?)),
            0xd1 => return Some(Scalar::Int(self.int(2)?)),
            0xd2 => return Some(Scalar::Int(self.int(4)?)),
            0xd3 => return Some(Scalar::Int(self.int(8)?)),
            0xca => {
                let bits = self.uint(4)? as u32;
                return Some(Scalar::Float(f64::from(f32::from_bits(bits))));
            }
            0xcb => return Some(Scalar::Float(f64::from_bits(self.uint(8)?))),
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xc4 | 0xd9 => self.uint(1)? as usize,
            0xc5 | 0xda => self.uint(2)? as usize,
            0xc6 | 0xdb => self.uint(4)? as usize,
            _ => return None,
        };
        let data = self.take(len)?;
        if matches!(marker, 0xc4..=0xc6) {
            Some(Scalar::Bin(data))
        } else {
            std::str::from_utf8(data).ok().map(Scalar::Str)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_numbers_use_64_bit_markers() {
        let table: toml::Table = toml::from_str("n = 3\nf = 0.5\ns = 'x'").unwrap();
        let bytes = encode_table(&table);
        assert!(
            bytes
                .windows(9)
                .any(|w| w == [0xd3, 0, 0, 0, 0, 0, 0, 0, 3])
        );
        assert!(bytes.contains(&0xcb));
        check_one_value(&bytes).unwrap();
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
    fn every_kind_of_value_is_walked() {
        #[derive(serde::Serialize)]
        struct All {
            n: i64,
            big: u64,
            f: f64,
            s: String,
            long: String,
            #[serde(with = "serde_bytes")]
            b: Vec<u8>,
            list: Vec<Option<bool>>,
            map: std::collections::BTreeMap<String, i8>,
        }
        let value = All {
            n: -5_000_000_000,
            big: u64::MAX,
            f: 1.5,
            s: "x".into(),
            long: "y".repeat(70_000),
            b: vec![1; 300],
            list: vec![Some(true), None, Some(false)],
            map: [("k".to_owned(), -3)].into(),
        };
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        check_one_value(&bytes).unwrap();
        assert!(check_one_value(&bytes[..bytes.len() - 1]).is_err());
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
        assert_eq!(reader.array_len(), Some(ints.len() as u32));
        for expected in &ints {
            assert_eq!(reader.scalar(), Some(Scalar::Int(*expected)));
        }
        assert!(reader.is_done());

        let mut bytes = Vec::new();
        encode::write_array_len(&mut bytes, 6).unwrap();
        encode::write_nil(&mut bytes).unwrap();
        encode::write_bool(&mut bytes, true).unwrap();
        encode::write_f32(&mut bytes, 0.5).unwrap();
        encode::write_f64(&mut bytes, -2.25).unwrap();
        encode::write_str(&mut bytes, &"s".repeat(300)).unwrap();
        encode::write_bin(&mut bytes, &[0, 1, 2]).unwrap();
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
