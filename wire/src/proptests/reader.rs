//! `msgpack::Reader`, `value_len`, `check_one_value` and `map_entries`.

use proptest::prelude::*;
use rmpv::Value;

use super::forged;
use crate::msgpack::{check_one_value, map_entries, value_len, MapEntries, Reader, Scalar};
use crate::testing::{allocations, allowance, bytes, config, cuts, encoded, same_float, value, V};

/// The bytes rmpv reads as the first value of `bytes`, if any.
fn rmpv_len(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    rmpv::decode::read_value(&mut rest).ok()?;
    Some(bytes.len() - rest.len())
}

fn rmpv_encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

/// `check_one_value`, with what it allocated checked: nothing for a valid
/// value, only its short error message otherwise.
fn check(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let (checked, allocated) = allocations(|| check_one_value(bytes));
    match &checked {
        Ok(()) => prop_assert_eq!(allocated.total, 0, "a valid value allocates nothing"),
        Err(message) => prop_assert!(
            allocated.total <= 256 && message.len() <= 128,
            "{:?} for {:?}",
            allocated,
            message
        ),
    }
    Ok(checked.is_ok())
}

/// Whether `bytes` is one value, then the end, as `Reader::skip` sees it.
fn skips_whole(bytes: &[u8]) -> bool {
    let mut reader = Reader::new(bytes);
    reader.skip().is_some() && reader.is_done()
}

/// Reads `v` back with the `Reader`, guided by its shape: containers with
/// `map_len`/`array_len`, scalars with `scalar`, ext values with `skip`.
fn read_back(reader: &mut Reader<'_>, v: &V) -> Result<(), String> {
    match v {
        V::Array(items, _) => {
            let n = reader.array_len().ok_or("array_len None")?;
            if n != items.len() {
                return Err(format!("array_len {n}, expected {}", items.len()));
            }
            for item in items {
                read_back(reader, item)?;
            }
            Ok(())
        }
        V::Map(entries, _) => {
            let n = reader.map_len().ok_or("map_len None")?;
            if n != entries.len() {
                return Err(format!("map_len {n}, expected {}", entries.len()));
            }
            for (k, v) in entries {
                read_back(reader, k)?;
                read_back(reader, v)?;
            }
            Ok(())
        }
        V::Ext(..) => reader
            .skip()
            .map(drop)
            .ok_or_else(|| "skip over ext None".to_owned()),
        V::BigUint(_) => match reader.scalar() {
            None => Ok(()),
            other => Err(format!("u64 over i64::MAX read as {other:?}")),
        },
        expected => {
            let got = reader
                .scalar()
                .ok_or_else(|| format!("scalar None for {expected:?}"))?;
            let ok = match (expected, got) {
                (V::Nil, Scalar::Nil) => true,
                (V::Bool(a), Scalar::Bool(b)) => *a == b,
                (V::Int(a, _), Scalar::Int(b)) => *a == b,
                (V::F32(a), Scalar::Float(b)) => same_float(f64::from(*a), b),
                (V::F64(a), Scalar::Float(b)) => same_float(*a, b),
                (V::Str(a, _), Scalar::Str(b)) => a == b,
                (V::Bin(a, _), Scalar::Bin(b)) => a == b,
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("expected {expected:?}, read {got:?}"))
            }
        }
    }
}

/// One read of a `Reader`, with what it returned.
enum Read<'a> {
    MapLen(Option<usize>),
    ArrayLen(Option<usize>),
    StrBytes(Option<&'a [u8]>),
    Str(Option<&'a str>),
    Bytes(Option<&'a [u8]>),
    Uint(Option<u64>),
    Scalar(Option<Scalar<'a>>),
    Skip(Option<&'a [u8]>),
    Nil(bool),
}

/// Makes the read `op` names (mod the number of reads).
fn read<'a>(reader: &mut Reader<'a>, op: u8) -> Read<'a> {
    match op % 9 {
        0 => Read::MapLen(reader.map_len()),
        1 => Read::ArrayLen(reader.array_len()),
        2 => Read::StrBytes(reader.str_bytes()),
        3 => Read::Str(reader.str()),
        4 => Read::Bytes(reader.bytes()),
        5 => Read::Uint(reader.uint()),
        6 => Read::Scalar(reader.scalar()),
        7 => Read::Skip(reader.skip()),
        _ => Read::Nil(reader.nil()),
    }
}

/// A string's data as rmp reads it, not checked to be UTF-8.
fn str_data(rest: &[u8]) -> Option<&[u8]> {
    let mut r = rest;
    let len = rmp::decode::read_str_len(&mut r).ok()?;
    r.get(..len as usize)
}

/// Whether `got`, a `Reader::scalar`, is what rmpv read: the same scalar, or
/// none where rmpv read no value or one that has no `Scalar`.
fn scalar_agrees(got: Option<Scalar<'_>>, expected: Option<&Value>) -> bool {
    match (got, expected) {
        (None, None) => true,
        (None, Some(Value::Integer(i))) => i.as_i64().is_none(),
        (None, Some(Value::String(s))) => !s.is_str(),
        (None, Some(Value::Array(_) | Value::Map(_) | Value::Ext(..))) => true,
        (Some(Scalar::Nil), Some(Value::Nil)) => true,
        (Some(Scalar::Bool(a)), Some(Value::Boolean(b))) => a == *b,
        (Some(Scalar::Int(a)), Some(Value::Integer(b))) => b.as_i64() == Some(a),
        (Some(Scalar::Float(a)), Some(Value::F32(b))) => same_float(a, f64::from(*b)),
        (Some(Scalar::Float(a)), Some(Value::F64(b))) => same_float(a, *b),
        (Some(Scalar::Str(a)), Some(Value::String(b))) => b.as_str() == Some(a),
        (Some(Scalar::Bin(a)), Some(Value::Binary(b))) => a == b.as_slice(),
        _ => false,
    }
}

/// Drives a `Reader` over `bytes` with the reads `ops` names and checks each
/// against `rmp`/`rmpv` on the bytes the reader stood at; a read at the end
/// finds nothing and stays put.
fn walk(bytes: &[u8], ops: &[u8]) -> Result<(), TestCaseError> {
    let mut reader = Reader::new(bytes);
    for op in ops {
        let start = reader.position();
        let rest = &bytes[start..];
        let done = reader.is_done();
        prop_assert_eq!(done, rest.is_empty());
        match read(&mut reader, *op) {
            Read::MapLen(got) => {
                let expected = rmp::decode::read_map_len(&mut &rest[..]).ok();
                prop_assert_eq!(got, expected.map(|n| n as usize));
            }
            Read::ArrayLen(got) => {
                let expected = rmp::decode::read_array_len(&mut &rest[..]).ok();
                prop_assert_eq!(got, expected.map(|n| n as usize));
            }
            Read::StrBytes(got) => prop_assert_eq!(got, str_data(rest)),
            Read::Str(got) => {
                let expected = str_data(rest).and_then(|s| std::str::from_utf8(s).ok());
                prop_assert_eq!(got, expected);
            }
            Read::Bytes(got) => {
                let mut r = rest;
                let len = rmp::decode::read_bin_len(&mut r)
                    .or_else(|_| {
                        r = rest;
                        rmp::decode::read_str_len(&mut r)
                    })
                    .ok();
                let expected = len.and_then(|n| r.get(..n as usize));
                // A string's bytes count only as UTF-8 text.
                let is_str = matches!(rest.first(), Some(0xa0..=0xbf | 0xd9..=0xdb));
                let expected = expected.filter(|b| !is_str || std::str::from_utf8(b).is_ok());
                prop_assert_eq!(got, expected);
            }
            Read::Uint(got) => {
                let expected = rmp::decode::read_int::<u64, _>(&mut &rest[..]).ok();
                prop_assert_eq!(got, expected);
            }
            Read::Scalar(got) => {
                // rmpv reads the reserved marker 0xc1 as nil; it is no value.
                let expected = match rest.first() {
                    Some(0xc1) => None,
                    _ => rmpv::decode::read_value(&mut &rest[..]).ok(),
                };
                prop_assert!(
                    scalar_agrees(got, expected.as_ref()),
                    "read {:?}, rmpv read {:?}",
                    got,
                    expected
                );
                if got.is_some() {
                    prop_assert_eq!(Some(reader.position() - start), rmpv_len(rest));
                }
            }
            Read::Skip(got) => {
                let expected = value_len(rest).map(|n| &rest[..n]);
                prop_assert_eq!(got, expected);
                if let Some(value) = got {
                    prop_assert_eq!(rmpv_len(value), Some(value.len()));
                }
            }
            Read::Nil(got) => prop_assert_eq!(got, rest.first() == Some(&0xc0)),
        }
        let end = reader.position();
        prop_assert!(end >= start && end <= bytes.len());
        prop_assert_eq!(reader.since(start), &bytes[start..end]);
        if done {
            prop_assert_eq!(end, start, "a read at the end moved the reader");
        }
    }
    Ok(())
}

/// [`walk`], then the same reads again, counted apart from the reference
/// decoders: the reader allocates nothing.
fn walk_counted(bytes: &[u8], ops: &[u8]) -> Result<(), TestCaseError> {
    walk(bytes, ops)?;
    let (_, allocated) = allocations(|| {
        let mut reader = Reader::new(bytes);
        for op in ops {
            read(&mut reader, *op);
        }
    });
    prop_assert_eq!(allocated.total, 0, "the reader allocates nothing");
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn value_len_agrees_with_rmpv_and_allocates_nothing(bytes in bytes()) {
        let (len, allocated) = allocations(|| value_len(&bytes));
        prop_assert_eq!(allocated.total, 0);
        // rmpv reads the reserved marker 0xc1 as nil where value_len refuses
        // it: without one they agree exactly, with one rmpv is only laxer.
        if !bytes.contains(&0xc1) || len.is_some() {
            prop_assert_eq!(len, rmpv_len(&bytes));
        }
        if let Some(n) = len {
            prop_assert!(n >= 1 && n <= bytes.len());
            prop_assert_eq!(value_len(&bytes[..n]), Some(n));
        }
    }

    #[test]
    fn reads_of_arbitrary_bytes_agree_with_rmp_and_allocate_nothing(
        bytes in bytes(),
        ops in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        walk_counted(&bytes, &ops)?;
        let checked = check(&bytes)?;
        // check_one_value is exactly "one value, then the end".
        prop_assert_eq!(checked, skips_whole(&bytes));
        // Whatever reads as one whole scalar is one well-formed value.
        let mut reader = Reader::new(&bytes);
        if reader.scalar().is_some() && reader.is_done() {
            prop_assert!(checked);
        }
    }

    #[test]
    fn valid_encodings_read_back_and_are_prefix_free(v in value(), extra in any::<u8>()) {
        let bytes = encoded(&v);
        prop_assert_eq!(value_len(&bytes), Some(bytes.len()));
        prop_assert!(check_one_value(&bytes).is_ok());

        let mut reader = Reader::new(&bytes);
        read_back(&mut reader, &v).map_err(TestCaseError::fail)?;
        prop_assert!(reader.is_done());
        prop_assert!(skips_whole(&bytes));

        // Every strict prefix is truncated, not a shorter value.
        for cut in cuts(bytes.len()) {
            prop_assert_eq!(value_len(&bytes[..cut]), None, "prefix of {} bytes", cut);
            prop_assert!(check_one_value(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
        }
        // One more byte is one value too many.
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(value_len(&longer), Some(bytes.len()));
        let err = check_one_value(&longer).unwrap_err();
        prop_assert!(err.contains("1 bytes after"), "{}", err);
    }

    #[test]
    fn reads_of_valid_encodings_agree_with_rmp(
        v in value(),
        ops in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        walk_counted(&encoded(&v), &ops)?;
    }

    #[test]
    fn mutated_encodings_never_panic_or_allocate(
        v in value(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        ops in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = encoded(&v);
        for (at, byte) in &edits {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        walk_counted(bytes, &ops)?;
        prop_assert_eq!(check(bytes)?, skips_whole(bytes));
    }

    /// A container header whose count is larger than the bytes left is
    /// refused, and nothing built on the reader trusts the count for an
    /// allocation.
    #[test]
    fn forged_counts_are_refused_without_reserving(forged in forged()) {
        let bytes = forged.bytes();
        let (len, allocated) = allocations(|| value_len(&bytes));
        prop_assert_eq!(len, None);
        prop_assert_eq!(allocated.total, 0);
        prop_assert!(!check(&bytes)?);

        let map = forged.over_empty_strings();
        let (entries, allocated) = allocations(|| map_entries(&map).map(|e| e.len()));
        prop_assert!(entries.is_err());
        prop_assert!(allocated.largest <= allowance(map.len()), "{:?}", allocated);
    }
}

#[test]
fn the_largest_forged_array_over_five_bytes_is_refused_at_once() {
    let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff];
    let started = std::time::Instant::now();
    let (len, allocated) = allocations(|| value_len(&bytes));
    assert_eq!(len, None);
    assert_eq!(allocated.total, 0);
    assert!(!check(&bytes).unwrap());
    let mut reader = Reader::new(&bytes);
    assert_eq!(reader.array_len(), Some(u32::MAX as usize));
    assert!(reader.is_done());
    assert_eq!(reader.skip(), None);
    let forged_map = [0xdf, 0xff, 0xff, 0xff, 0xff];
    let (entries, allocated) = allocations(|| map_entries(&forged_map).map(|e| e.len()));
    assert!(entries.is_err());
    assert!(allocated.largest <= allowance(5), "{allocated:?}");
    // Generous: walking 2^32 entries would take far longer.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn map_entries_of_arbitrary_bytes_agree_with_rmpv(bytes in bytes()) {
        let (entries, allocated) = allocations(|| map_entries(&bytes));
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        let Ok(entries) = entries else {
            return Ok(());
        };
        prop_assert_eq!(value_len(&bytes), Some(bytes.len()));
        let decoded = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let map = decoded.as_map().expect("map_entries accepted a map");
        prop_assert_eq!(map.len(), entries.len());
        for ((key, raw), (k, v)) in entries.iter().zip(map) {
            prop_assert_eq!(Some(*key), k.as_str());
            prop_assert_eq!(rmpv_len(raw), Some(raw.len()));
            // Compared encoded: a NaN is not equal to itself.
            let raw_value = rmpv::decode::read_value(&mut &raw[..]).unwrap();
            prop_assert_eq!(rmpv_encode(&raw_value), rmpv_encode(v));
        }
        // The iterator gives the same, then stops.
        let mut iter = MapEntries::new(&bytes).unwrap();
        for expected in &entries {
            prop_assert_eq!(iter.next().map(Result::unwrap), Some(*expected));
        }
        prop_assert!(iter.next().is_none());
    }

    #[test]
    fn map_entries_keep_every_value_as_encoded(
        entries in proptest::collection::vec(("\\PC{0,12}", value()), 0..6),
        w in any::<u8>(),
        extra in any::<u8>(),
    ) {
        let map = V::Map(
            entries.iter().map(|(k, v)| (V::Str(k.clone(), w), v.clone())).collect(),
            w,
        );
        let bytes = encoded(&map);
        let got = map_entries(&bytes).unwrap();
        prop_assert_eq!(got.len(), entries.len());
        for ((key, raw), (k, v)) in got.iter().zip(&entries) {
            prop_assert_eq!(*key, k.as_str());
            prop_assert_eq!(raw.to_vec(), encoded(v));
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(map_entries(&longer).is_err());
        for cut in cuts(bytes.len()) {
            prop_assert!(map_entries(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
        }
        // Once an entry fails the iterator stops.
        let mut iter = MapEntries::new(&longer).unwrap();
        for _ in 0..entries.len() {
            prop_assert!(iter.next().unwrap().is_ok());
        }
        prop_assert!(iter.next().unwrap().is_err());
        prop_assert!(iter.next().is_none());
    }
}
