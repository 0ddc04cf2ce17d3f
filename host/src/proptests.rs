//! Property tests: arbitrary bytes and text given to the host's decoders and
//! loaders never panic, never allocate by a declared length instead of the
//! input's, and valid encodings decode to what was encoded. The MessagePack
//! reader they are built on, and the `http.request` and `http_respond`
//! payloads, are tested where they live, in `pulp_wire`.
//!
//! The test binary's allocator, [`Counting`], counts what the calling thread
//! allocates while [`allocations`] runs a closure, so the "allocates in
//! proportion to the input" properties are measured, not assumed.

use std::path::Path;

use axum::http::StatusCode;
use proptest::prelude::*;
use pulp_wire::testing::{
    self, Counting, V, allocations, bytes, config, cuts, encode_value, encoded, same_float, value,
};
use rmp::encode;
use rusqlite::types::ValueRef;

use crate::extensions;
use crate::manifest::Manifest;
use crate::msgpack;
use crate::storage::sqlite::decode_params;
use crate::transport::http_in::decode_reply;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a host decoder may allocate for `input_len` bytes: what a wire decoder
/// may, plus the 256 SQL parameters `decode_params` reserves whatever the count.
fn allowance(input_len: usize) -> usize {
    testing::allowance(input_len) + 256 * size_of::<ValueRef<'_>>()
}

// ---------------------------------------------------------------------------
// Forged container counts in the host's decoders.

proptest! {
    #![proptest_config(config())]

    /// A container header whose count is larger than the bytes left: the
    /// decoders built on the reader neither trust the count for an
    /// allocation nor accept the input.
    #[test]
    fn forged_container_counts_are_refused(
        marker in prop::sample::select(vec![0xdcu8, 0xddu8, 0xdeu8, 0xdfu8]),
        count in any::<u32>(),
        tail in proptest::collection::vec(prop_oneof![0u8..=0x7f, Just(0xa0u8)], 0..64),
    ) {
        let width = if marker & 1 == 0 { 2 } else { 4 };
        let count = if width == 2 { count & 0xffff } else { count };
        let per_entry = if marker >= 0xde { 2 } else { 1 };
        // Each fixint or empty fixstr in the tail is one whole value: forged when the count
        // needs more values than that.
        prop_assume!(u64::from(count) * per_entry > tail.len() as u64);
        let mut bytes = vec![marker];
        bytes.extend_from_slice(&count.to_be_bytes()[4 - width..]);
        bytes.extend_from_slice(&tail);

        let (params, allocated) = allocations(|| decode_params(&bytes).map(|p| p.len()));
        prop_assert_eq!(params, None);
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);

        // The same forged count inside an otherwise valid reply, over empty
        // strings, which headers and cookies can read.
        let mut bytes = bytes[..1 + width].to_vec();
        bytes.extend(std::iter::repeat_n(0xa0u8, tail.len()));
        for key in ["headers", "cookies"] {
            let mut reply = Vec::new();
            encode::write_map_len(&mut reply, 3).unwrap();
            encode::write_str(&mut reply, "id").unwrap();
            encode::write_uint(&mut reply, 1).unwrap();
            encode::write_str(&mut reply, "status").unwrap();
            encode::write_uint(&mut reply, 200).unwrap();
            encode::write_str(&mut reply, key).unwrap();
            reply.extend_from_slice(&bytes);
            let (decoded, allocated) = allocations(|| decode_reply(&reply).is_ok());
            prop_assert!(!decoded, "{} with a forged count decoded", key);
            prop_assert!(allocated.largest <= allowance(reply.len()), "{:?}", allocated);
        }
    }
}

#[test]
fn sql_params_in_the_largest_forged_array_over_five_bytes_are_refused_at_once() {
    let bytes = [0xdd, 0xff, 0xff, 0xff, 0xff];
    let started = std::time::Instant::now();
    let (params, allocated) = allocations(|| decode_params(&bytes).is_some());
    assert!(!params);
    assert!(allocated.largest <= allowance(bytes.len()), "{allocated:?}");
    // Generous: walking 2^32 entries would take far longer.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

// ---------------------------------------------------------------------------
// storage.sqlite parameters.

#[derive(Clone, Debug)]
enum Param {
    Nil,
    Bool(bool),
    Int(i64, u8),
    F32(f32),
    F64(f64),
    Str(String, u8),
    Bin(Vec<u8>, u8),
}

fn param() -> impl Strategy<Value = Param> {
    prop_oneof![
        Just(Param::Nil),
        any::<bool>().prop_map(Param::Bool),
        (any::<i64>(), any::<u8>()).prop_map(|(i, w)| Param::Int(i, w)),
        any::<f32>().prop_map(Param::F32),
        any::<f64>().prop_map(Param::F64),
        ("\\PC{0,40}", any::<u8>()).prop_map(|(s, w)| Param::Str(s, w)),
        (proptest::collection::vec(any::<u8>(), 0..40), any::<u8>())
            .prop_map(|(b, w)| Param::Bin(b, w)),
    ]
}

impl Param {
    fn as_value(&self) -> V {
        match self {
            Param::Nil => V::Nil,
            Param::Bool(b) => V::Bool(*b),
            Param::Int(i, w) => V::Int(*i, *w),
            Param::F32(f) => V::F32(*f),
            Param::F64(f) => V::F64(*f),
            Param::Str(s, w) => V::Str(s.clone(), *w),
            Param::Bin(b, w) => V::Bin(b.clone(), *w),
        }
    }

    fn matches(&self, got: &ValueRef<'_>) -> bool {
        match (self, got) {
            (Param::Nil, ValueRef::Null) => true,
            (Param::Bool(b), ValueRef::Integer(i)) => i64::from(*b) == *i,
            (Param::Int(a, _), ValueRef::Integer(b)) => a == b,
            (Param::F32(a), ValueRef::Real(b)) => same_float(f64::from(*a), *b),
            (Param::F64(a), ValueRef::Real(b)) => same_float(*a, *b),
            (Param::Str(a, _), ValueRef::Text(b)) => a.as_bytes() == *b,
            (Param::Bin(a, _), ValueRef::Blob(b)) => a.as_slice() == *b,
            _ => false,
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sql_params_from_arbitrary_bytes_never_panic(bytes in bytes()) {
        let (params, allocated) = allocations(|| decode_params(&bytes).map(|p| p.len()));
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        if let Some(n) = params {
            // Accepted input is empty or exactly one array.
            prop_assert!(bytes.is_empty() || msgpack::check_one_value(&bytes).is_ok());
            prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn sql_params_round_trip(
        params in proptest::collection::vec(param(), 0..20),
        w in any::<u8>(),
        extra in any::<u8>(),
    ) {
        let array = V::Array(params.iter().map(Param::as_value).collect(), w);
        let bytes = encoded(&array);
        let decoded = decode_params(&bytes).expect("a valid array of parameters decodes");
        prop_assert_eq!(decoded.len(), params.len());
        for (expected, got) in params.iter().zip(&decoded) {
            prop_assert!(expected.matches(got), "{:?} decoded as {:?}", expected, got);
        }
        // Truncated or followed by more bytes, it does not decode.
        for cut in cuts(bytes.len()).skip(1) {
            prop_assert!(decode_params(&bytes[..cut]).is_none(), "prefix of {} bytes", cut);
        }
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(decode_params(&longer).is_none());
    }

    #[test]
    fn sql_params_without_an_sql_value_are_refused(
        before in proptest::collection::vec(param(), 0..5),
        bad in prop_oneof![
            ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(V::BigUint),
            Just(V::Array(vec![], 0)),
            Just(V::Map(vec![], 0)),
            (any::<i8>(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(t, b)| V::Ext(t, b)),
        ],
    ) {
        let mut items: Vec<V> = before.iter().map(Param::as_value).collect();
        items.push(bad);
        let bytes = encoded(&V::Array(items, 0));
        prop_assert!(decode_params(&bytes).is_none());
    }
}

#[test]
fn no_sql_params_is_an_empty_input() {
    assert_eq!(decode_params(&[]).map(|p| p.len()), Some(0));
    assert_eq!(decode_params(&[0x90]).map(|p| p.len()), Some(0));
}

// ---------------------------------------------------------------------------
// transport.http.inbound replies.

#[derive(Clone, Debug)]
struct Reply {
    id: u64,
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<(Vec<u8>, bool)>,
    cookies: Option<Vec<String>>,
    unknown: Vec<(String, V)>,
    order: Vec<prop::sample::Index>,
}

fn reply() -> impl Strategy<Value = Reply> {
    (
        // The host reads ids as msgpack ints (i64); see the report on ids
        // past i64::MAX.
        0..=i64::MAX as u64,
        any::<u16>(),
        proptest::collection::vec(("x-[a-z0-9-]{1,12}", "[ -~]{0,24}"), 0..8),
        proptest::option::of((proptest::collection::vec(any::<u8>(), 0..64), any::<bool>())),
        proptest::option::of(proptest::collection::vec("[!#-~]{1,24}", 0..4)),
        proptest::collection::vec(("[a-z]{1,8}", value()), 0..3),
        proptest::collection::vec(any::<prop::sample::Index>(), 8),
    )
        .prop_map(|(id, status, headers, body, cookies, unknown, order)| {
            let unknown = unknown
                .into_iter()
                .filter(|(k, _)| {
                    !["id", "status", "headers", "body", "cookies"].contains(&k.as_str())
                })
                .collect();
            Reply {
                id,
                status,
                headers,
                body,
                cookies,
                unknown,
                order,
            }
        })
}

impl Reply {
    /// Encodes the reply as a map, its fields in an order drawn from `order`.
    fn encode(&self) -> Vec<u8> {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        let mut field = |key: &str, write: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            encode::write_str(&mut out, key).unwrap();
            write(&mut out);
            fields.push(out);
        };
        field("id", &|o| {
            encode::write_uint(o, self.id).unwrap();
        });
        field("status", &|o| {
            encode::write_uint(o, u64::from(self.status)).unwrap();
        });
        field("headers", &|o| {
            encode::write_map_len(o, self.headers.len() as u32).unwrap();
            for (k, v) in &self.headers {
                encode::write_str(o, k).unwrap();
                encode::write_str(o, v).unwrap();
            }
        });
        if let Some((body, as_str)) = &self.body {
            match std::str::from_utf8(body) {
                Ok(text) if *as_str => field("body", &|o| encode::write_str(o, text).unwrap()),
                _ => field("body", &|o| encode::write_bin(o, body).unwrap()),
            }
        }
        if let Some(cookies) = &self.cookies {
            field("cookies", &|o| {
                encode::write_array_len(o, cookies.len() as u32).unwrap();
                for c in cookies {
                    encode::write_str(o, c).unwrap();
                }
            });
        }
        for (k, v) in &self.unknown {
            field(k, &|o| encode_value(o, v));
        }
        for (i, at) in self.order.iter().enumerate() {
            let j = at.index(fields.len());
            let i = i % fields.len();
            fields.swap(i, j);
        }
        let mut out = Vec::new();
        encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for f in fields {
            out.extend_from_slice(&f);
        }
        out
    }
}

fn body_bytes(body: axum::body::Body) -> Vec<u8> {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
    }
    RUNTIME.with(|rt| {
        rt.block_on(axum::body::to_bytes(body, usize::MAX))
            .unwrap()
            .to_vec()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replies_from_arbitrary_bytes_never_panic(bytes in bytes()) {
        let (decoded, allocated) = allocations(|| decode_reply(&bytes).map(|(id, _)| id));
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        if decoded.is_ok() {
            prop_assert!(msgpack::check_one_value(&bytes).is_ok());
        }
    }

    #[test]
    fn valid_replies_round_trip(reply in reply(), cut in any::<prop::sample::Index>()) {
        let bytes = reply.encode();
        let (id, response) = decode_reply(&bytes).expect("a valid reply decodes");
        prop_assert_eq!(id, reply.id);
        let expected_status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        prop_assert_eq!(response.status(), expected_status);
        // Insert semantics: the last value of a repeated name wins.
        for (name, _) in &reply.headers {
            let last = reply.headers.iter().rev().find(|(n, _)| n == name).unwrap();
            prop_assert_eq!(response.headers()[name.as_str()].as_bytes(), last.1.as_bytes());
        }
        let cookies: Vec<&[u8]> = response
            .headers()
            .get_all(axum::http::header::SET_COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let expected: Vec<&[u8]> = reply.cookies.iter().flatten().map(|c| c.as_bytes()).collect();
        prop_assert_eq!(cookies, expected);
        let body = body_bytes(response.into_body());
        let expected_body = reply.body.as_ref().map(|(b, _)| b.clone()).unwrap_or_default();
        prop_assert_eq!(body, expected_body);

        // Any strict prefix is refused.
        let cut = cut.index(bytes.len());
        prop_assert!(decode_reply(&bytes[..cut]).is_err(), "prefix of {} bytes", cut);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..config() })]

    /// A reply may name as many distinct headers as fit in its message, but
    /// an `http::HeaderMap` holds at most 2^15 entries and its `insert`
    /// panics ("size overflows MAX_SIZE") past that: the decoder must refuse
    /// such a reply or keep every header, never panic.
    #[test]
    fn replies_with_very_many_headers_never_panic(count in 24_000usize..40_000) {
        let mut bytes = Vec::new();
        encode::write_map_len(&mut bytes, 3).unwrap();
        encode::write_str(&mut bytes, "id").unwrap();
        encode::write_uint(&mut bytes, 1).unwrap();
        encode::write_str(&mut bytes, "status").unwrap();
        encode::write_uint(&mut bytes, 200).unwrap();
        encode::write_str(&mut bytes, "headers").unwrap();
        encode::write_map_len(&mut bytes, count as u32).unwrap();
        for i in 0..count {
            encode::write_str(&mut bytes, &format!("h{i}")).unwrap();
            encode::write_str(&mut bytes, "").unwrap();
        }
        let outcome = std::panic::catch_unwind(|| decode_reply(&bytes).map(|(_, r)| r.headers().len()));
        prop_assert!(outcome.is_ok(), "decode_reply panicked on a reply with {} distinct headers ({} bytes)", count, bytes.len());
        let kept = outcome.unwrap();
        prop_assert!(kept.is_err() || kept == Ok(count), "kept {:?} of {} headers", kept, count);
    }
}

#[test]
fn replies_outside_the_integer_ranges_are_refused() {
    let reply = |id: Vec<u8>, status: Vec<u8>| {
        let mut out = Vec::new();
        encode::write_map_len(&mut out, 2).unwrap();
        encode::write_str(&mut out, "id").unwrap();
        out.extend_from_slice(&id);
        encode::write_str(&mut out, "status").unwrap();
        out.extend_from_slice(&status);
        decode_reply(&out)
            .ok()
            .map(|(id, r)| (id, r.status().as_u16()))
    };
    let uint = |v: u64| {
        let mut out = Vec::new();
        encode::write_uint(&mut out, v).unwrap();
        out
    };
    let neg = {
        let mut out = Vec::new();
        encode::write_sint(&mut out, -1).unwrap();
        out
    };
    assert_eq!(reply(uint(5), uint(200)), Some((5, 200)));
    assert_eq!(reply(neg, uint(200)), None, "negative id");
    assert_eq!(reply(uint(5), uint(70_000)), None, "status over u16");
    assert_eq!(
        reply(uint(5), uint(42)),
        Some((5, 500)),
        "status outside 100..=999"
    );
}

// ---------------------------------------------------------------------------
// Manifests and the extensions file.

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Text that looks a little like TOML, to reach past the first token.
fn tomlish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_=\\[\\]\"' 0-9.\n{},#-]{0,200}",
        proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "name",
                    "version",
                    "wasm",
                    "capabilities",
                    "restart",
                    "tick_ms",
                    "max_memory_pages",
                    "[config]",
                    "[providers]",
                    "[[extension]]",
                    "library",
                    "enabled",
                    "sha256",
                    "[extension.config]",
                ]),
                "[ =\"'\\[\\]0-9a-z.,-]{0,16}",
            ),
            0..10,
        )
        .prop_map(|lines| {
            lines
                .into_iter()
                .map(|(k, v)| format!("{k}{v}\n"))
                .collect::<String>()
        }),
    ]
}

/// A TOML value that suits the key, now and then one of any type.
fn toml_value(plausible: BoxedStrategy<toml::Value>) -> impl Strategy<Value = toml::Value> {
    let any_value = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (-5i64..70_000).prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        (-1e9f64..1e9).prop_map(toml::Value::Float),
        "\\PC{0,12}".prop_map(toml::Value::String),
        proptest::collection::vec("[a-z.]{0,8}".prop_map(toml::Value::String), 0..3)
            .prop_map(toml::Value::Array),
        proptest::collection::btree_map(
            "[a-z]{1,6}",
            any::<i64>().prop_map(toml::Value::Integer),
            0..3
        )
        .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
    ];
    prop_oneof![24 => plausible, 1 => any_value]
}

fn strings(re: &'static str, max: usize) -> BoxedStrategy<toml::Value> {
    proptest::collection::vec(re.prop_map(toml::Value::String), 0..max)
        .prop_map(toml::Value::Array)
        .boxed()
}

/// Mostly `good`, sometimes `edge`: a manifest of many keys still loads now
/// and then, so both outcomes are exercised.
fn mostly(
    good: BoxedStrategy<toml::Value>,
    edge: BoxedStrategy<toml::Value>,
) -> BoxedStrategy<toml::Value> {
    prop_oneof![12 => good, 1 => edge].boxed()
}

fn manifest_table() -> impl Strategy<Value = toml::Table> {
    let int = |lo: i64, hi: i64| (lo..hi).prop_map(toml::Value::Integer).boxed();
    let s = |re: &'static str| re.prop_map(toml::Value::String).boxed();
    let caps = "(core\\.log|demo\\.greet|transport\\.ws\\.inbound|x\\.[a-z]{1,3})";
    let edge_int = || {
        prop::sample::select(vec![-1i64, 0, 1, 65_536, 65_537, 1 << 32, i64::MAX])
            .prop_map(toml::Value::Integer)
            .boxed()
    };
    // (key, how often present, its values)
    let fields: Vec<(&'static str, f64, BoxedStrategy<toml::Value>)> = vec![
        (
            "name",
            0.95,
            mostly(s("[a-z0-9][a-z0-9_-]{0,8}"), s("[a-zA-Z0-9_ .-]{0,12}")),
        ),
        (
            "version",
            0.95,
            mostly(s("[0-9]\\.[0-9]\\.[0-9]"), s("[ 0-9.a-z]{0,4}")),
        ),
        (
            "wasm",
            0.3,
            mostly(s("cell\\.wasm"), s("(missing\\.wasm|\\.|sub/x\\.wasm|)")),
        ),
        ("capabilities", 0.4, strings(caps, 4)),
        ("max_memory_pages", 0.3, mostly(int(1, 65_537), edge_int())),
        ("call_timeout_ms", 0.3, mostly(int(1, 100_000), edge_int())),
        (
            "max_message_bytes",
            0.3,
            mostly(int(1, 1 << 20), edge_int()),
        ),
        (
            "max_queue_bytes",
            0.2,
            mostly(int(1 << 26, 1 << 30), edge_int()),
        ),
        (
            "max_storage_bytes",
            0.2,
            mostly(int(1, 1 << 30), edge_int()),
        ),
        ("tick_ms", 0.3, mostly(int(0, 1_000), edge_int())),
        (
            "restart",
            0.3,
            mostly(s("(never|on_crash|always)"), s("(sometimes|Never|)")),
        ),
        ("allowed_outbound_hosts", 0.2, strings("[a-z.*]{0,10}", 3)),
        ("provides", 0.1, strings("[a-z]{0,4}", 2)),
        ("consumes", 0.1, strings("[a-z]{0,4}", 2)),
        ("shared_memory_groups", 0.1, strings("[a-z]{0,4}", 2)),
        (
            "dedicated_thread",
            0.1,
            any::<bool>().prop_map(toml::Value::Boolean).boxed(),
        ),
        (
            "snapshotable",
            0.1,
            any::<bool>().prop_map(toml::Value::Boolean).boxed(),
        ),
        (
            "providers",
            0.2,
            proptest::collection::btree_map(
                caps,
                "[a-z-]{1,8}".prop_map(toml::Value::String),
                0..3,
            )
            .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
            .boxed(),
        ),
        (
            "config",
            0.3,
            proptest::collection::btree_map(
                "[a-z]{1,6}",
                "\\PC{0,8}".prop_map(toml::Value::String),
                0..3,
            )
            .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
            .boxed(),
        ),
        ("bogus_key", 0.03, int(0, 2)),
    ];
    let per_field: Vec<_> = fields
        .into_iter()
        .map(|(key, presence, plausible)| {
            proptest::option::weighted(presence, toml_value(plausible)).prop_map(move |v| (key, v))
        })
        .collect();
    per_field.prop_map(|fields| {
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn manifests_from_arbitrary_text_never_panic(text in tomlish()) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "pulp.cell.toml", &text);
        if let Err(e) = Manifest::load(&path) {
            let message = e.to_string();
            prop_assert!(message.contains(&path.display().to_string()), "{}", message);
        }
    }

    #[test]
    fn manifests_load_or_name_the_file(table in manifest_table()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cell.wasm"), b"\0asm\x01\0\0\0").unwrap();
        let text = toml::to_string(&table).unwrap();
        let path = write(dir.path(), "pulp.cell.toml", &text);
        match Manifest::load(&path) {
            Ok(m) => {
                prop_assert_eq!(&m.path, &path);
                prop_assert!(!m.name.is_empty() && !m.version.trim().is_empty());
                prop_assert!((1..=65_536).contains(&m.max_memory_pages));
                prop_assert!(m.call_timeout_ms >= 1);
                prop_assert!((1..=u64::from(u32::MAX)).contains(&m.max_message_bytes));
                prop_assert!(m.wasm.is_file());
                let unique: std::collections::BTreeSet<_> = m.capabilities.iter().collect();
                prop_assert_eq!(unique.len(), m.capabilities.len());
                for pinned in m.providers.keys() {
                    prop_assert!(m.capabilities.contains(pinned));
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(&path.display().to_string()), "{}", message);
            }
        }
    }
}

#[test]
fn a_minimal_manifest_loads() {
    // Keeps the property above honest: its Ok branch is reachable.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cell.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let path = write(
        dir.path(),
        "pulp.cell.toml",
        "name = \"a\"\nversion = \"1\"\n",
    );
    let m = Manifest::load(&path).unwrap();
    assert_eq!(m.name, "a");
}

/// The names of the `[[extension]]` entries `text` holds, if it parses.
fn entry_names(text: &str) -> Vec<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(toml::Value::Array(entries)) = table.get("extension") else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .collect()
}

fn check_extensions_file(dir: &Path, text: &str) -> Result<usize, TestCaseError> {
    let file = write(dir, "extensions.toml", text);
    match extensions::load(&file, None) {
        Ok(loaded) => Ok(loaded.len()),
        Err(e) => {
            let message = e.to_string();
            let names_file = message.contains(&file.display().to_string());
            let names_extension = entry_names(text)
                .iter()
                .any(|n| message.contains(&format!("extension {n:?}")));
            prop_assert!(names_file || names_extension, "{}", message);
            Ok(0)
        }
    }
}

fn extension_entry() -> impl Strategy<Value = toml::Table> {
    let fields: Vec<(&'static str, BoxedStrategy<toml::Value>)> = vec![
        ("name", "[a-z-]{0,6}".prop_map(toml::Value::String).boxed()),
        (
            "library",
            "(nolib|garbage|garbage\\.so|/nonexistent/libx\\.so|sub/lib[a-z]{1,3})"
                .prop_map(toml::Value::String)
                .boxed(),
        ),
        (
            "enabled",
            any::<bool>().prop_map(toml::Value::Boolean).boxed(),
        ),
        (
            "sha256",
            "[0-9a-f]{0,64}".prop_map(toml::Value::String).boxed(),
        ),
        (
            "config",
            proptest::collection::btree_map(
                "[a-z]{1,6}",
                any::<i64>().prop_map(toml::Value::Integer),
                0..3,
            )
            .prop_map(|m| toml::Value::Table(m.into_iter().collect()))
            .boxed(),
        ),
        ("bogus", Just(toml::Value::Integer(1)).boxed()),
    ];
    let per_field: Vec<_> = fields
        .into_iter()
        .map(|(key, plausible)| {
            let weight = match key {
                "name" | "library" => 0.9,
                "bogus" => 0.05,
                _ => 0.4,
            };
            proptest::option::weighted(weight, toml_value(plausible)).prop_map(move |v| (key, v))
        })
        .collect();
    per_field.prop_map(|fields| {
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn extensions_files_from_arbitrary_text_never_panic(text in tomlish()) {
        let dir = tempfile::tempdir().unwrap();
        check_extensions_file(dir.path(), &text)?;
    }

    #[test]
    fn extensions_files_load_or_name_the_file_or_extension(
        entries in proptest::collection::vec(extension_entry(), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Present but not a library: loading it must fail, naming the entry.
        write(dir.path(), "garbage", "not an ELF file");
        write(dir.path(), "libgarbage.so", "not an ELF file");
        write(dir.path(), "garbage.so", "not an ELF file");
        let mut file = toml::Table::new();
        file.insert(
            "extension".into(),
            toml::Value::Array(entries.into_iter().map(toml::Value::Table).collect()),
        );
        let text = toml::to_string(&file).unwrap();
        let loaded = check_extensions_file(dir.path(), &text)?;
        // No entry names a real library.
        prop_assert_eq!(loaded, 0);
    }
}
