//! `http::RequestView` and `http::ReplyView`: arbitrary bytes never make
//! them panic or allocate; what `write_request`/`write_reply` write reads
//! back, and so does what any other encoder may send (fields in any order and
//! wire form, unknown ones, optional ones left out or nil).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;
use rmp::encode;

use super::forged;
use crate::http::{write_reply, write_request, Fields, ReplyView, RequestHead, RequestView};
use crate::msgpack::value_len;
use crate::testing::{allocations, allowance, bytes, config, encode_value, encoded, value, V};

/// Every field name either payload knows: unknown fields take other names.
const KNOWN: [&str; 10] = [
    "id",
    "method",
    "path",
    "params",
    "query",
    "headers",
    "body",
    "remote_addr",
    "status",
    "cookies",
];

/// Checks `fields` against the entries it was written from, in wire order:
/// `get` finds the first of a name.
fn check_fields(fields: Fields<'_>, expected: &[(&str, &str)]) -> Result<(), TestCaseError> {
    prop_assert_eq!(fields.iter().collect::<Vec<_>>(), expected);
    prop_assert_eq!(fields.is_empty(), expected.is_empty());
    for (name, _) in expected {
        let first = expected.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        prop_assert_eq!(fields.get(name), first);
    }
    Ok(())
}

/// Checks the fields of a view decoded from arbitrary bytes agree with
/// themselves.
fn check_any_fields(fields: Fields<'_>) -> Result<(), TestCaseError> {
    check_fields(fields, &fields.iter().collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------
// How a payload goes on the wire.

/// What any encoder may do with a payload's fields beyond writing them.
#[derive(Clone, Debug)]
struct Wire {
    /// Unknown fields, which decoders skip.
    extra: Vec<(String, V)>,
    /// A body sent as a str rather than bin (when it is UTF-8).
    body_as_str: bool,
    /// Picks the wire form of every length and integer.
    form: u8,
    order: Vec<Index>,
}

fn wire() -> impl Strategy<Value = Wire> {
    (
        proptest::collection::vec(("[a-z_]{1,11}", value()), 0..3),
        any::<bool>(),
        any::<u8>(),
        proptest::collection::vec(any::<Index>(), 10),
    )
        .prop_map(|(extra, body_as_str, form, order)| Wire {
            extra: extra
                .into_iter()
                .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
                .collect(),
            body_as_str,
            form,
            order,
        })
}

impl Wire {
    fn uint(&self, n: u64) -> V {
        i64::try_from(n).map_or(V::BigUint(n), |i| V::Int(i, self.form))
    }

    fn text(&self, s: &str) -> V {
        V::Str(s.to_owned(), self.form)
    }

    fn body(&self, body: &[u8]) -> V {
        match std::str::from_utf8(body) {
            Ok(text) if self.body_as_str => self.text(text),
            _ => V::Bin(body.to_vec(), self.form),
        }
    }

    fn text_map<'a>(&self, pairs: impl Iterator<Item = (&'a String, &'a String)>) -> V {
        let entries = pairs.map(|(k, v)| (self.text(k), self.text(v)));
        V::Map(entries.collect(), self.form)
    }

    /// The map of `fields` and the unknown ones, the fields `left_out` names
    /// left out, or sent as nil where it pairs them with `true`, in an order
    /// drawn from `order`.
    fn encode(&self, fields: Vec<(&str, V)>, left_out: &[(&str, bool)]) -> Vec<u8> {
        let mut entries: Vec<(String, V)> = Vec::new();
        for (name, value) in fields {
            match left_out.iter().find(|(n, _)| *n == name) {
                None => entries.push((name.to_owned(), value)),
                Some((_, true)) => entries.push((name.to_owned(), V::Nil)),
                Some((_, false)) => {}
            }
        }
        entries.extend(self.extra.iter().cloned());
        for (i, at) in self.order.iter().enumerate() {
            if entries.is_empty() {
                break;
            }
            let len = entries.len();
            entries.swap(i % len, at.index(len));
        }
        let entries = entries.into_iter().map(|(k, v)| (self.text(&k), v));
        encoded(&V::Map(entries.collect(), self.form))
    }
}

/// Optional fields to leave out, each paired with whether it is sent as nil.
fn left_out(optional: Vec<&'static str>) -> impl Strategy<Value = Vec<(&'static str, bool)>> {
    proptest::collection::vec((prop::sample::select(optional), any::<bool>()), 0..5)
}

// ---------------------------------------------------------------------------
// http.request.

/// What an `http.request` payload holds, to compare a decoded view with.
#[derive(Clone, Debug)]
struct Request {
    id: u64,
    method: String,
    path: String,
    params: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    remote_addr: String,
}

fn text_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,12}", 0..4)
}

fn request() -> impl Strategy<Value = Request> {
    (
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
        )
}

const REQUEST_OPTIONAL: [&str; 5] = ["params", "query", "headers", "body", "remote_addr"];

impl Request {
    fn fields(&self, wire: &Wire) -> Vec<(&'static str, V)> {
        vec![
            ("id", wire.uint(self.id)),
            ("method", wire.text(&self.method)),
            ("path", wire.text(&self.path)),
            ("params", wire.text_map(self.params.iter())),
            ("query", wire.text_map(self.query.iter())),
            ("headers", wire.text_map(self.headers.iter())),
            ("body", wire.body(&self.body)),
            ("remote_addr", wire.text(&self.remote_addr)),
        ]
    }

    fn write(&self) -> Vec<u8> {
        let head = RequestHead {
            id: self.id,
            method: &self.method,
            path: &self.path,
            remote_addr: &self.remote_addr,
        };
        let mut out = Vec::new();
        write_request(
            &mut out,
            head,
            self.params.iter(),
            self.query.iter(),
            self.headers.iter(),
            &self.body,
        );
        out
    }

    /// The request with the optional fields `left_out` names empty.
    fn without(mut self, left_out: &[(&str, bool)]) -> Request {
        for (field, _) in left_out {
            match *field {
                "params" => self.params.clear(),
                "query" => self.query.clear(),
                "headers" => self.headers.clear(),
                "body" => self.body.clear(),
                _ => self.remote_addr.clear(),
            }
        }
        self
    }

    /// Checks `view` field by field; maps are written in key order, which
    /// the view keeps.
    fn check(&self, view: &RequestView<'_>) -> Result<(), TestCaseError> {
        prop_assert_eq!(view.id, self.id);
        prop_assert_eq!(view.method, self.method.as_str());
        prop_assert_eq!(view.path, self.path.as_str());
        for (fields, map) in [
            (view.params, &self.params),
            (view.query, &self.query),
            (view.headers, &self.headers),
        ] {
            let expected: Vec<_> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            check_fields(fields, &expected)?;
        }
        prop_assert_eq!(view.body, self.body.as_slice());
        prop_assert_eq!(view.remote_addr, self.remote_addr.as_str());
        Ok(())
    }
}

/// Decodes `bytes` as `expected`, borrowing everything; no strict prefix
/// (the one `cut` picks) decodes.
fn check_request(bytes: &[u8], expected: &Request, cut: Index) -> Result<(), TestCaseError> {
    let (view, allocated) = allocations(|| RequestView::decode(bytes));
    prop_assert_eq!(allocated.total, 0, "a decoded view borrows everything");
    expected.check(&view.map_err(|e| TestCaseError::fail(e.to_string()))?)?;
    let cut = cut.index(bytes.len());
    prop_assert!(
        RequestView::decode(&bytes[..cut]).is_err(),
        "prefix of {} bytes",
        cut
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_from_arbitrary_bytes_never_panic(bytes in bytes()) {
        let (view, allocated) = allocations(|| RequestView::decode(&bytes));
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        match view {
            Ok(view) => {
                prop_assert_eq!(allocated.total, 0, "a decoded view borrows everything");
                prop_assert_eq!(value_len(&bytes), Some(bytes.len()));
                for fields in [view.params, view.query, view.headers] {
                    check_any_fields(fields)?;
                }
            }
            Err(e) => prop_assert!(e.to_string().starts_with("http.request payload: "), "{}", e),
        }
    }

    #[test]
    fn written_requests_read_back(request in request(), cut in any::<Index>()) {
        check_request(&request.write(), &request, cut)?;
    }

    #[test]
    fn requests_from_any_encoder_read_back(
        request in request(),
        wire in wire(),
        left_out in left_out(REQUEST_OPTIONAL.to_vec()),
        cut in any::<Index>(),
    ) {
        let bytes = wire.encode(request.fields(&wire), &left_out);
        check_request(&bytes, &request.without(&left_out), cut)?;
    }

    #[test]
    fn requests_without_a_required_field_are_refused(
        request in request(),
        wire in wire(),
        missing in prop::sample::select(vec!["id", "method", "path"]),
        as_nil in any::<bool>(),
    ) {
        let bytes = wire.encode(request.fields(&wire), &[(missing, as_nil)]);
        let err = RequestView::decode(&bytes).unwrap_err();
        prop_assert_eq!(err.to_string(), format!("http.request payload: no {missing}"));
    }
}

// ---------------------------------------------------------------------------
// http_respond replies.

/// What an `http_respond` reply holds, to compare a decoded view with.
#[derive(Clone, Debug)]
struct Reply {
    id: u64,
    status: u16,
    /// Names may repeat.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cookies: Vec<String>,
}

fn reply() -> impl Strategy<Value = Reply> {
    (
        any::<u64>(),
        any::<u16>(),
        proptest::collection::vec(("[a-c]{1,2}|\\PC{0,8}", "\\PC{0,12}"), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec("\\PC{0,24}", 0..4),
    )
        .prop_map(|(id, status, headers, body, cookies)| Reply {
            id,
            status,
            headers,
            body,
            cookies,
        })
}

const REPLY_OPTIONAL: [&str; 3] = ["headers", "body", "cookies"];

impl Reply {
    fn fields(&self, wire: &Wire) -> Vec<(&'static str, V)> {
        let cookies = self.cookies.iter().map(|c| wire.text(c)).collect();
        vec![
            ("id", wire.uint(self.id)),
            ("status", wire.uint(u64::from(self.status))),
            (
                "headers",
                wire.text_map(self.headers.iter().map(|(k, v)| (k, v))),
            ),
            ("body", wire.body(&self.body)),
            ("cookies", V::Array(cookies, wire.form)),
        ]
    }

    fn write(&self) -> Vec<u8> {
        write_reply(
            self.id,
            self.status,
            self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.body,
            self.cookies.iter().map(String::as_str),
        )
    }

    /// The reply with the optional fields `left_out` names empty.
    fn without(mut self, left_out: &[(&str, bool)]) -> Reply {
        for (field, _) in left_out {
            match *field {
                "headers" => self.headers.clear(),
                "body" => self.body.clear(),
                _ => self.cookies.clear(),
            }
        }
        self
    }

    fn check(&self, view: &ReplyView<'_>) -> Result<(), TestCaseError> {
        prop_assert_eq!(view.id, self.id);
        prop_assert_eq!(view.status, self.status);
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        check_fields(view.headers, &headers)?;
        prop_assert_eq!(view.body, self.body.as_slice());
        prop_assert_eq!(
            view.cookies.iter().collect::<Vec<_>>(),
            self.cookies.iter().map(String::as_str).collect::<Vec<_>>()
        );
        Ok(())
    }
}

/// Decodes `bytes` as `expected`, borrowing everything; no strict prefix
/// (the one `cut` picks) decodes.
fn check_reply(bytes: &[u8], expected: &Reply, cut: Index) -> Result<(), TestCaseError> {
    let (view, allocated) = allocations(|| ReplyView::decode(bytes));
    prop_assert_eq!(allocated.total, 0, "a decoded view borrows everything");
    expected.check(&view.map_err(|e| TestCaseError::fail(e.to_string()))?)?;
    let cut = cut.index(bytes.len());
    prop_assert!(
        ReplyView::decode(&bytes[..cut]).is_err(),
        "prefix of {} bytes",
        cut
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn replies_from_arbitrary_bytes_never_panic(bytes in bytes()) {
        let (reply, allocated) = allocations(|| ReplyView::decode(&bytes));
        prop_assert!(allocated.largest <= allowance(bytes.len()), "{:?}", allocated);
        match reply {
            Ok(reply) => {
                prop_assert_eq!(allocated.total, 0, "a decoded view borrows everything");
                prop_assert_eq!(value_len(&bytes), Some(bytes.len()));
                check_any_fields(reply.headers)?;
                prop_assert_eq!(reply.cookies.iter().count(), reply.cookies.iter().len());
            }
            Err(e) => prop_assert!(e.to_string().starts_with("http_respond request: "), "{}", e),
        }
    }

    #[test]
    fn written_replies_read_back(reply in reply(), cut in any::<Index>()) {
        check_reply(&reply.write(), &reply, cut)?;
    }

    #[test]
    fn replies_from_any_encoder_read_back(
        reply in reply(),
        wire in wire(),
        left_out in left_out(REPLY_OPTIONAL.to_vec()),
        cut in any::<Index>(),
    ) {
        let bytes = wire.encode(reply.fields(&wire), &left_out);
        check_reply(&bytes, &reply.without(&left_out), cut)?;
    }

    #[test]
    fn replies_without_a_required_field_are_refused(
        reply in reply(),
        wire in wire(),
        missing in prop::sample::select(vec!["id", "status"]),
        as_nil in any::<bool>(),
    ) {
        let bytes = wire.encode(reply.fields(&wire), &[(missing, as_nil)]);
        let err = ReplyView::decode(&bytes).unwrap_err();
        prop_assert_eq!(err.to_string(), format!("http_respond request: no {missing}"));
    }

    /// A forged count in a map or array field, over empty strings that every
    /// entry reads, is refused without reserving for it.
    #[test]
    fn forged_counts_in_a_field_are_refused_without_reserving(
        forged in forged(),
        request_field in prop::sample::select(vec!["params", "query", "headers"]),
        reply_field in prop::sample::select(vec!["headers", "cookies"]),
    ) {
        let field = forged.over_empty_strings();
        // The forged field goes last, so its entries run into the end.
        let with_forged = |fields: Vec<(&str, V)>, name: &str| {
            let mut out = Vec::new();
            encode::write_map_len(&mut out, fields.len() as u32 + 1).unwrap();
            for (key, value) in &fields {
                encode::write_str(&mut out, key).unwrap();
                encode_value(&mut out, value);
            }
            encode::write_str(&mut out, name).unwrap();
            out.extend_from_slice(&field);
            out
        };
        let text = |s: &str| V::Str(s.to_owned(), 0);

        let head = vec![("id", V::Int(1, 0)), ("method", text("GET")), ("path", text("/"))];
        let request = with_forged(head, request_field);
        let (decoded, allocated) = allocations(|| RequestView::decode(&request).is_ok());
        prop_assert!(!decoded, "{} with a forged count decoded", request_field);
        prop_assert!(allocated.largest <= allowance(request.len()), "{:?}", allocated);

        let reply = with_forged(vec![("id", V::Int(1, 0)), ("status", V::Int(200, 0))], reply_field);
        let (decoded, allocated) = allocations(|| ReplyView::decode(&reply).is_ok());
        prop_assert!(!decoded, "{} with a forged count decoded", reply_field);
        prop_assert!(allocated.largest <= allowance(reply.len()), "{:?}", allocated);
    }
}
