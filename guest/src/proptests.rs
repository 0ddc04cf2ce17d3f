//! Property tests: arbitrary bytes given to the SDK's MessagePack readers and
//! request decoders never panic and never allocate by a declared length;
//! valid encodings decode to what was encoded. `rmp`/`rmpv` serve as the
//! reference decoders.
//!
//! The test binary's allocator counts what the calling thread allocates while
//! [`allocations`] runs a closure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use rmpv::Value;

use crate::http::{Request, RequestView};
use crate::msgpack::{map_entries, value_len, MapEntries, Reader};

// ---------------------------------------------------------------------------
// Counting allocator (test binary only).

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            LARGEST.with(|l| l.set(l.get().max(size)));
            TOTAL.with(|t| t.set(t.get().saturating_add(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; `note` only touches
// const-initialised thread-locals without destructors, so it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Debug, Clone, Copy)]
struct Allocated {
    largest: usize,
    total: usize,
}

/// Runs `f`, counting what this thread allocates meanwhile.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, Allocated) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    TRACKING.with(|t| t.set(true));
    let result = f();
    TRACKING.with(|t| t.set(false));
    let allocated = Allocated {
        largest: LARGEST.with(Cell::get),
        total: TOTAL.with(Cell::get),
    };
    (result, allocated)
}

/// What a decoder may allocate for `input_len` bytes: a fixed allowance
/// plus a multiple of the input, far below what a forged count would ask.
fn allowance(input_len: usize) -> usize {
    4 * 1024 + 64 * input_len
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // No proptest-regressions/ files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies.

/// Arbitrary bytes, half of them biased towards MessagePack markers. At most
/// 300 bytes, so nesting stays within rmpv's depth limit.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let markery = prop_oneof![
        4 => 0xc0u8..=0xdf,
        2 => 0x80u8..=0xbf,
        2 => 0x00u8..=0x10,
        1 => Just(0xffu8),
        1 => any::<u8>(),
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(markery, 0..300),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-300i64..300).prop_map(Value::from),
        any::<f32>().prop_map(Value::F32),
        any::<f64>().prop_map(Value::F64),
        "\\PC{0,40}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Binary),
        // Past 255 bytes: the 16-bit length forms.
        proptest::collection::vec(any::<u8>(), 256..300).prop_map(Value::Binary),
        "[a-z]{256,300}".prop_map(Value::from),
        (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(t, b)| Value::Ext(t, b)),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

/// Lengths of strict prefixes to try: all of them for short inputs, about
/// 128 spread evenly for longer ones.
fn cuts(len: usize) -> impl Iterator<Item = usize> {
    (0..len).step_by((len / 128).max(1))
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

/// The bytes rmpv reads as the first value of `bytes`, if any.
fn rmpv_len(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    rmpv::decode::read_value(&mut rest).ok()?;
    Some(bytes.len() - rest.len())
}

// ---------------------------------------------------------------------------
// value_len and Reader.

/// Drives a `Reader` with the calls `ops` names and checks each read against
/// `rmp`, the reference decoder, on the bytes the reader stood at.
fn walk(bytes: &[u8], ops: &[u8]) -> Result<(), TestCaseError> {
    let mut reader = Reader::new(bytes);
    for op in ops {
        let start = reader.position();
        let rest = &bytes[start..];
        let done = reader.is_done();
        prop_assert_eq!(done, start == bytes.len());
        match op % 6 {
            0 => {
                let got = reader.map_len();
                let expected = rmp::decode::read_map_len(&mut &rest[..]).ok();
                prop_assert_eq!(got, expected.map(|n| n as usize));
            }
            1 => {
                let got = reader.str_bytes();
                let mut r = rest;
                let expected = rmp::decode::read_str_len(&mut r)
                    .ok()
                    .and_then(|n| r.get(..n as usize));
                prop_assert_eq!(got, expected);
            }
            2 => {
                let got = reader.str();
                let mut r = rest;
                let expected = rmp::decode::read_str_len(&mut r)
                    .ok()
                    .and_then(|n| r.get(..n as usize))
                    .and_then(|s| std::str::from_utf8(s).ok());
                prop_assert_eq!(got, expected);
            }
            3 => {
                let got = reader.bytes();
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
            4 => {
                let got = reader.uint();
                let expected = rmp::decode::read_int::<u64, _>(&mut &rest[..]).ok();
                prop_assert_eq!(got, expected);
            }
            _ => {
                let got = reader.skip();
                let expected = value_len(rest).map(|n| &rest[..n]);
                prop_assert_eq!(got, expected);
                if let Some(value) = got {
                    prop_assert_eq!(rmpv_len(value), Some(value.len()));
                }
            }
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
    fn valid_encodings_have_their_length_and_no_shorter_one(v in value(), extra in any::<u8>()) {
        let bytes = encode(&v);
        prop_assert_eq!(value_len(&bytes), Some(bytes.len()));
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(value_len(&longer), Some(bytes.len()));
        for cut in cuts(bytes.len()) {
            prop_assert_eq!(value_len(&bytes[..cut]), None, "prefix of {} bytes", cut);
        }
    }

    #[test]
    fn reader_reads_agree_with_rmp(
        bytes in bytes(),
        ops in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        walk(&bytes, &ops)?;
        // The same reads again, counted apart from the reference decoders.
        let (done, allocated) = allocations(|| {
            let mut reader = Reader::new(&bytes);
            for op in &ops {
                match op % 6 {
                    0 => drop(reader.map_len()),
                    1 => drop(reader.str_bytes()),
                    2 => drop(reader.str()),
                    3 => drop(reader.bytes()),
                    4 => drop(reader.uint()),
                    _ => drop(reader.skip()),
                }
            }
            reader.is_done()
        });
        prop_assert_eq!(allocated.total, 0, "the reader allocates nothing");
        prop_assert!(done || !bytes.is_empty());
    }

    #[test]
    fn reader_reads_agree_with_rmp_on_valid_encodings(
        v in value(),
        ops in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        walk(&encode(&v), &ops)?;
    }

    #[test]
    fn forged_counts_are_refused_without_reserving(
        marker in prop::sample::select(vec![0xdcu8, 0xddu8, 0xdeu8, 0xdfu8]),
        count in any::<u32>(),
        tail in proptest::collection::vec(prop_oneof![0u8..=0x7f, Just(0xa0u8)], 0..64),
    ) {
        let width = if marker & 1 == 0 { 2 } else { 4 };
        let count = if width == 2 { count & 0xffff } else { count };
        let per_entry = if marker >= 0xde { 2 } else { 1 };
        prop_assume!(u64::from(count) * per_entry > tail.len() as u64);
        let mut bytes = vec![marker];
        bytes.extend_from_slice(&count.to_be_bytes()[4 - width..]);
        bytes.extend_from_slice(&tail);

        let (len, allocated) = allocations(|| value_len(&bytes));
        prop_assert_eq!(len, None);
        prop_assert_eq!(allocated.total, 0);

        // A map of empty-string keys and values: every entry reads.
        let mut map = bytes[..1 + width].to_vec();
        map.extend(std::iter::repeat_n(0xa0u8, tail.len()));
        let (entries, allocated) = allocations(|| map_entries(&map).map(|e| e.len()));
        prop_assert!(entries.is_err());
        prop_assert!(allocated.largest <= allowance(map.len()), "{:?}", allocated);
        let (request, allocated) = allocations(|| RequestView::decode(&map).is_ok());
        prop_assert!(!request);
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
    let forged_map = [0xdf, 0xff, 0xff, 0xff, 0xff];
    let (entries, allocated) = allocations(|| map_entries(&forged_map).map(|e| e.len()));
    assert!(entries.is_err());
    assert!(allocated.largest <= allowance(5), "{allocated:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

// ---------------------------------------------------------------------------
// map_entries.

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
            prop_assert_eq!(encode(&rmpv::decode::read_value(&mut &raw[..]).unwrap()), encode(v));
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
        extra in any::<u8>(),
    ) {
        let map = Value::Map(entries.iter().map(|(k, v)| (Value::from(k.as_str()), v.clone())).collect());
        let bytes = encode(&map);
        let got = map_entries(&bytes).unwrap();
        prop_assert_eq!(got.len(), entries.len());
        for ((key, raw), (k, v)) in got.iter().zip(&entries) {
            prop_assert_eq!(*key, k.as_str());
            prop_assert_eq!(raw.to_vec(), encode(v));
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

// ---------------------------------------------------------------------------
// http.request payloads.

#[derive(Clone, Debug)]
struct Payload {
    request: Request,
    /// Unknown fields, which decoders skip.
    extra: Vec<(String, Value)>,
    /// A body sent as a str rather than bin (when it is UTF-8).
    body_as_str: bool,
    order: Vec<prop::sample::Index>,
}

fn text_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,12}", 0..4)
}

fn payload() -> impl Strategy<Value = Payload> {
    let request = (
        any::<u64>(),
        "[A-Z]{1,7}",
        "/\\PC{0,20}",
        text_map(),
        text_map(),
        text_map(),
        proptest::collection::vec(any::<u8>(), 0..64),
        "[0-9.:\\[\\]]{0,21}",
    )
        .prop_map(
            |(id, method, path, params, query, headers, body, remote_addr)| Request {
                id,
                method,
                path,
                params,
                query,
                headers,
                body,
                remote_addr,
            },
        );
    (
        request,
        proptest::collection::vec(("[a-z_]{1,10}", value()), 0..3),
        any::<bool>(),
        proptest::collection::vec(any::<prop::sample::Index>(), 10),
    )
        .prop_map(|(request, extra, body_as_str, order)| {
            let known = [
                "id",
                "method",
                "path",
                "params",
                "query",
                "headers",
                "body",
                "remote_addr",
            ];
            let extra = extra
                .into_iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .collect();
            Payload {
                request,
                extra,
                body_as_str,
                order,
            }
        })
}

fn fields(map: &BTreeMap<String, String>) -> Value {
    Value::Map(
        map.iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect(),
    )
}

impl Payload {
    /// The fields as the host sends them, minus those named in `without`,
    /// in an order drawn from `order`.
    fn encode(&self, without: &[&str]) -> Vec<u8> {
        let r = &self.request;
        let body = match std::str::from_utf8(&r.body) {
            Ok(text) if self.body_as_str => Value::from(text),
            _ => Value::Binary(r.body.clone()),
        };
        let mut entries: Vec<(String, Value)> = vec![
            ("id".into(), Value::from(r.id)),
            ("method".into(), Value::from(r.method.as_str())),
            ("path".into(), Value::from(r.path.as_str())),
            ("params".into(), fields(&r.params)),
            ("query".into(), fields(&r.query)),
            ("headers".into(), fields(&r.headers)),
            ("body".into(), body),
            ("remote_addr".into(), Value::from(r.remote_addr.as_str())),
        ];
        entries.extend(self.extra.iter().cloned());
        entries.retain(|(k, _)| !without.contains(&k.as_str()));
        for (i, at) in self.order.iter().enumerate() {
            if entries.is_empty() {
                break;
            }
            let i = i % entries.len();
            let j = at.index(entries.len());
            entries.swap(i, j);
        }
        encode(&Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        ))
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_from_arbitrary_bytes_never_panic(bytes in bytes()) {
        let (view, allocated) = allocations(|| RequestView::decode(&bytes));
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        let owned = Request::decode(&bytes);
        match view {
            Ok(view) => {
                prop_assert_eq!(allocated.total, 0, "a decoded view borrows everything");
                prop_assert_eq!(value_len(&bytes), Some(bytes.len()));
                prop_assert_eq!(owned, Ok(view.to_owned()));
                for fields in [view.params, view.query, view.headers] {
                    prop_assert_eq!(fields.is_empty(), fields.iter().next().is_none());
                    for (k, _) in fields.iter() {
                        let first = fields.iter().find(|(name, _)| *name == k).map(|(_, v)| v);
                        prop_assert_eq!(fields.get(k), first);
                    }
                }
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with("http.request payload: "), "{}", e);
                prop_assert_eq!(owned, Err(e));
            }
        }
    }

    #[test]
    fn valid_requests_decode(payload in payload(), cut in any::<prop::sample::Index>()) {
        let bytes = payload.encode(&[]);
        let (view, allocated) = allocations(|| RequestView::decode(&bytes).map(|v| v.to_owned()));
        prop_assert_eq!(view, Ok(payload.request.clone()));
        // Only the copy out allocates: no more than the payload holds, plus
        // the three maps' nodes.
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        prop_assert_eq!(Request::decode(&bytes), Ok(payload.request.clone()));

        let view = RequestView::decode(&bytes).unwrap();
        for (k, v) in &payload.request.headers {
            prop_assert_eq!(view.headers.get(k), Some(v.as_str()));
        }
        prop_assert_eq!(
            view.query.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Vec<_>>(),
            payload.request.query.clone().into_iter().collect::<Vec<_>>()
        );

        let cut = cut.index(bytes.len());
        prop_assert!(RequestView::decode(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
    }

    #[test]
    fn requests_without_a_required_field_are_refused(
        payload in payload(),
        missing in prop::sample::select(vec!["id", "method", "path"]),
    ) {
        let bytes = payload.encode(&[missing]);
        let err = RequestView::decode(&bytes).unwrap_err();
        prop_assert_eq!(err.to_string(), format!("http.request payload: no {missing}"));
    }

    #[test]
    fn optional_fields_default_to_empty(
        payload in payload(),
        left_out in proptest::collection::vec(
            prop::sample::select(vec!["params", "query", "headers", "body", "remote_addr"]),
            0..5,
        ),
    ) {
        let bytes = payload.encode(&left_out);
        let got = Request::decode(&bytes).unwrap();
        let mut expected = payload.request.clone();
        for field in &left_out {
            match *field {
                "params" => expected.params.clear(),
                "query" => expected.query.clear(),
                "headers" => expected.headers.clear(),
                "body" => expected.body.clear(),
                _ => expected.remote_addr.clear(),
            }
        }
        prop_assert_eq!(got, expected);
    }
}
