//! `transport.http.inbound` on the wire: the `http.request` event the host
//! writes and cells read, and the `http_respond` reply cells write and the
//! host reads. Both are read in place in one pass and written field by field,
//! since they sit on the path of every HTTP request.
//!
//! An optional field sent as nil reads as absent, as Go encodes a nil slice
//! or map.

use rmp::encode::{write_array_len, write_bin, write_map_len, write_str, write_uint};

use crate::msgpack::{write_pairs, Error, Reader};

/// The event kind that carries a request.
pub const REQUEST_KIND: &str = "http.request";

/// An `http.request` payload read in place: every field borrows the bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestView<'a> {
    /// Names the request in its reply.
    pub id: u64,
    pub method: &'a str,
    /// The request's path, without the query string.
    pub path: &'a str,
    /// The values of the route's `:name` segments.
    pub params: Fields<'a>,
    pub query: Fields<'a>,
    /// Keyed by lower-case names.
    pub headers: Fields<'a>,
    pub body: &'a [u8],
    pub remote_addr: &'a str,
}

impl<'a> RequestView<'a> {
    /// Reads an `http.request` payload: `id`, `method` and `path` are
    /// required, the rest default to empty.
    pub fn decode(payload: &'a [u8]) -> Result<RequestView<'a>, Error> {
        let bad = |field: &str| Error::new(format!("http.request payload: bad {field}"));
        let mut reader = Reader::new(payload);
        let (mut id, mut method, mut path) = (None, None, None);
        let mut request = RequestView::default();
        for _ in 0..reader.map_len().ok_or_else(|| bad("map"))? {
            // Keys are compared as bytes: only values need checking as UTF-8.
            let key = reader.str_bytes().ok_or_else(|| bad("key"))?;
            if reader.nil() {
                continue;
            }
            let read = match key {
                b"id" => reader.uint().map(|v| id = Some(v)),
                b"method" => reader.str().map(|v| method = Some(v)),
                b"path" => reader.str().map(|v| path = Some(v)),
                b"params" => Fields::read(&mut reader).map(|v| request.params = v),
                b"query" => Fields::read(&mut reader).map(|v| request.query = v),
                b"headers" => Fields::read(&mut reader).map(|v| request.headers = v),
                b"body" => reader.bytes().map(|v| request.body = v),
                b"remote_addr" => reader.str().map(|v| request.remote_addr = v),
                _ => reader.skip().map(drop),
            };
            read.ok_or_else(|| bad(&String::from_utf8_lossy(key)))?;
        }
        if !reader.is_done() {
            return Err(bad("map: bytes after it"));
        }
        let missing = |field: &str| Error::new(format!("http.request payload: no {field}"));
        request.id = id.ok_or_else(|| missing("id"))?;
        request.method = method.ok_or_else(|| missing("method"))?;
        request.path = path.ok_or_else(|| missing("path"))?;
        Ok(request)
    }
}

/// The fixed part of a request, for [`write_request`].
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub id: u64,
    pub method: &'a str,
    pub path: &'a str,
    pub remote_addr: &'a str,
}

/// Writes an `http.request` payload into `out`.
pub fn write_request<K, V, H>(
    out: &mut Vec<u8>,
    head: RequestHead<'_>,
    params: impl ExactSizeIterator<Item = (K, V)>,
    query: impl ExactSizeIterator<Item = (K, V)>,
    headers: impl ExactSizeIterator<Item = (K, H)>,
    body: &[u8],
) where
    K: AsRef<str>,
    V: AsRef<str>,
    H: AsRef<str>,
{
    // Writing into a Vec cannot fail.
    write_map_len(out, 8).expect("vec write");
    write_str(out, "id").expect("vec write");
    write_uint(out, head.id).expect("vec write");
    write_str(out, "method").expect("vec write");
    write_str(out, head.method).expect("vec write");
    write_str(out, "path").expect("vec write");
    write_str(out, head.path).expect("vec write");
    write_str(out, "params").expect("vec write");
    write_pairs(out, params);
    write_str(out, "query").expect("vec write");
    write_pairs(out, query);
    write_str(out, "headers").expect("vec write");
    write_pairs(out, headers);
    write_str(out, "body").expect("vec write");
    write_bin(out, body).expect("vec write");
    write_str(out, "remote_addr").expect("vec write");
    write_str(out, head.remote_addr).expect("vec write");
}

fn wire_len(n: usize) -> u32 {
    u32::try_from(n).expect("a MessagePack length fits in u32")
}

/// An `http_respond` reply read in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyView<'a> {
    pub id: u64,
    pub status: u16,
    pub headers: Fields<'a>,
    pub body: &'a [u8],
    /// Full `Set-Cookie` values, one header each.
    pub cookies: Texts<'a>,
}

impl<'a> ReplyView<'a> {
    /// Reads `{id, status, headers?, body?, cookies?}`; a string body is
    /// taken as its bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<ReplyView<'a>, Error> {
        let bad = |field: &str| Error::new(format!("http_respond request: bad {field}"));
        let mut reader = Reader::new(bytes);
        let (mut id, mut status) = (None, None);
        let mut reply = ReplyView::default();
        for _ in 0..reader.map_len().ok_or_else(|| bad("map"))? {
            let key = reader.str_bytes().ok_or_else(|| bad("key"))?;
            if reader.nil() {
                continue;
            }
            let read = match key {
                b"id" => reader.uint().map(|v| id = Some(v)),
                b"status" => reader
                    .uint()
                    .and_then(|v| u16::try_from(v).ok())
                    .map(|v| status = Some(v)),
                b"headers" => Fields::read(&mut reader).map(|v| reply.headers = v),
                b"body" => reader.bytes().map(|v| reply.body = v),
                b"cookies" => Texts::read(&mut reader).map(|v| reply.cookies = v),
                _ => reader.skip().map(drop),
            };
            read.ok_or_else(|| bad(&String::from_utf8_lossy(key)))?;
        }
        if !reader.is_done() {
            return Err(bad("map: bytes after it"));
        }
        let missing = |field: &str| Error::new(format!("http_respond request: no {field}"));
        reply.id = id.ok_or_else(|| missing("id"))?;
        reply.status = status.ok_or_else(|| missing("status"))?;
        Ok(reply)
    }
}

/// Writes an `http_respond` reply, leaving `cookies` out when there are none.
pub fn write_reply<'s>(
    id: u64,
    status: u16,
    headers: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
    body: &[u8],
    cookies: impl ExactSizeIterator<Item = &'s str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + body.len());
    let fields = if cookies.len() == 0 { 4 } else { 5 };
    write_map_len(&mut out, fields).expect("vec write");
    write_str(&mut out, "id").expect("vec write");
    write_uint(&mut out, id).expect("vec write");
    write_str(&mut out, "status").expect("vec write");
    write_uint(&mut out, u64::from(status)).expect("vec write");
    write_str(&mut out, "headers").expect("vec write");
    write_pairs(&mut out, headers);
    write_str(&mut out, "body").expect("vec write");
    write_bin(&mut out, body).expect("vec write");
    if cookies.len() > 0 {
        write_str(&mut out, "cookies").expect("vec write");
        write_array_len(&mut out, wire_len(cookies.len())).expect("vec write");
        for cookie in cookies {
            write_str(&mut out, cookie).expect("vec write");
        }
    }
    out
}

/// A MessagePack map of strings to strings, read in place; checked when it
/// is read, so using it cannot fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields<'a> {
    raw: &'a [u8],
}

impl Default for Fields<'_> {
    fn default() -> Self {
        // 0x80: the empty fixmap.
        Fields { raw: &[0x80] }
    }
}

impl<'a> Fields<'a> {
    /// Reads a map of strings to strings, checking every string once.
    fn read(reader: &mut Reader<'a>) -> Option<Fields<'a>> {
        let start = reader.position();
        for _ in 0..reader.map_len()? {
            reader.str()?;
            reader.str()?;
        }
        Some(Fields {
            raw: reader.since(start),
        })
    }

    /// The value of the first entry named `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let mut reader = Reader::new(self.raw);
        for _ in 0..reader.map_len()? {
            if reader.str_bytes()? == name.as_bytes() {
                return reader.str();
            }
            reader.str_bytes()?;
        }
        None
    }

    /// The entries in the order they were sent.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> {
        let mut reader = Reader::new(self.raw);
        let len = reader.map_len().unwrap_or(0);
        (0..len).map(move |_| {
            let pair = (reader.str(), reader.str());
            pair.0.zip(pair.1).expect("checked when read")
        })
    }

    pub fn is_empty(&self) -> bool {
        self.iter().len() == 0
    }
}

/// A MessagePack array of strings, read in place and checked when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Texts<'a> {
    raw: &'a [u8],
}

impl Default for Texts<'_> {
    fn default() -> Self {
        // 0x90: the empty fixarray.
        Texts { raw: &[0x90] }
    }
}

impl<'a> Texts<'a> {
    fn read(reader: &mut Reader<'a>) -> Option<Texts<'a>> {
        let start = reader.position();
        for _ in 0..reader.array_len()? {
            reader.str()?;
        }
        Some(Texts {
            raw: reader.since(start),
        })
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> {
        let mut reader = Reader::new(self.raw);
        let len = reader.array_len().unwrap_or(0);
        (0..len).map(move |_| reader.str().expect("checked when read"))
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

    fn text_map(pairs: &[(&str, &str)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| (Value::from(*k), Value::from(*v)))
                .collect(),
        )
    }

    fn map(fields: Vec<(&str, Value)>) -> Vec<u8> {
        encode(&Value::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        ))
    }

    /// An `http.request` payload as the host writes it, with `extra` fields
    /// appended and the fields named in `without` left out.
    fn payload(extra: Vec<(&str, Value)>, without: &[&str]) -> Vec<u8> {
        let mut fields = vec![
            ("id", Value::from(42)),
            ("method", Value::from("POST")),
            ("path", Value::from("/items/7")),
            ("params", text_map(&[("id", "7")])),
            ("query", text_map(&[("z", "1"), ("a", "2")])),
            (
                "headers",
                text_map(&[("host", "h"), ("content-type", "text/plain")]),
            ),
            ("body", Value::Binary(vec![0, 1, 2])),
            ("remote_addr", Value::from("127.0.0.1:5000")),
        ];
        fields.retain(|(key, _)| !without.contains(key));
        fields.extend(extra);
        map(fields)
    }

    #[test]
    fn a_request_written_by_the_host_reads_back_in_place() {
        let mut bytes = Vec::new();
        let head = RequestHead {
            id: 42,
            method: "POST",
            path: "/items/7",
            remote_addr: "127.0.0.1:5000",
        };
        write_request(
            &mut bytes,
            head,
            [("id", "7")].into_iter(),
            [("z", "1"), ("a", "2")].into_iter(),
            [("host", "h"), ("content-type", "text/plain")].into_iter(),
            &[0, 1, 2],
        );
        assert_eq!(bytes, payload(vec![], &[]));

        let view = RequestView::decode(&bytes).unwrap();
        assert_eq!((view.id, view.method, view.path), (42, "POST", "/items/7"));
        assert_eq!(view.params.get("id"), Some("7"));
        assert_eq!(view.params.get("other"), None);
        assert_eq!(
            view.query.iter().collect::<Vec<_>>(),
            [("z", "1"), ("a", "2")]
        );
        assert_eq!(view.headers.get("content-type"), Some("text/plain"));
        assert_eq!(view.body, [0, 1, 2]);
        assert_eq!(view.remote_addr, "127.0.0.1:5000");
    }

    #[test]
    fn optional_request_fields_may_be_left_out_or_nil() {
        let later = vec![("later", Value::Array(vec![Value::Nil]))];
        assert!(RequestView::decode(&payload(later, &[])).is_ok());

        // A str body is taken as bytes.
        let minimal = payload(
            vec![("body", Value::from("hi"))],
            &["params", "query", "headers", "body", "remote_addr"],
        );
        let view = RequestView::decode(&minimal).unwrap();
        assert!(view.params.is_empty() && view.query.is_empty() && view.headers.is_empty());
        assert_eq!(view.body, b"hi");
        assert_eq!(view.remote_addr, "");

        let optional = ["params", "query", "headers", "body", "remote_addr"];
        let nils = optional.iter().map(|f| (*f, Value::Nil)).collect();
        let bytes = payload(nils, &optional);
        let view = RequestView::decode(&bytes).unwrap();
        assert_eq!((view.body, view.headers.get("host")), (&[][..], None));
    }

    #[test]
    fn a_malformed_request_is_an_error_naming_what_is_wrong() {
        let error = |bytes: &[u8]| RequestView::decode(bytes).unwrap_err().to_string();
        assert_eq!(
            error(&payload(vec![], &["id"])),
            "http.request payload: no id"
        );
        assert_eq!(
            error(&payload(vec![("id", Value::Nil)], &["id"])),
            "http.request payload: no id"
        );
        assert_eq!(
            error(&payload(vec![("method", Value::from(1))], &["method"])),
            "http.request payload: bad method"
        );
        assert_eq!(
            error(&payload(vec![("id", Value::from(-1))], &["id"])),
            "http.request payload: bad id"
        );
        let header_not_text = Value::Map(vec![(Value::from("x"), Value::from(1))]);
        assert_eq!(
            error(&payload(vec![("headers", header_not_text)], &["headers"])),
            "http.request payload: bad headers"
        );
        let mut trailing = payload(vec![], &[]);
        trailing.push(0xc0);
        assert_eq!(
            error(&trailing),
            "http.request payload: bad map: bytes after it"
        );
        assert_eq!(error(&[0x91, 0x01]), "http.request payload: bad map");
        let cut = payload(vec![], &[]);
        assert!(RequestView::decode(&cut[..cut.len() - 3]).is_err());
    }

    #[test]
    fn a_reply_round_trips_and_leaves_out_empty_cookies() {
        let bytes = write_reply(
            9,
            201,
            [("content-type", "text/plain")].into_iter(),
            b"made",
            ["a=1", "b=2"].into_iter(),
        );
        let reply = ReplyView::decode(&bytes).unwrap();
        assert_eq!((reply.id, reply.status, reply.body), (9, 201, &b"made"[..]));
        assert_eq!(reply.headers.get("content-type"), Some("text/plain"));
        assert_eq!(reply.cookies.iter().collect::<Vec<_>>(), ["a=1", "b=2"]);

        let plain = write_reply(1, 204, [].into_iter(), b"", [].into_iter());
        let decoded = rmpv::decode::read_value(&mut &plain[..]).unwrap();
        let keys: Vec<_> = decoded
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap())
            .collect();
        assert_eq!(keys, ["id", "status", "headers", "body"]);
    }

    #[test]
    fn a_reply_with_nil_fields_reads_as_empty_and_a_bad_one_fails() {
        let nils = map(vec![
            ("id", Value::from(3)),
            ("status", Value::from(200)),
            ("headers", Value::Nil),
            ("body", Value::Nil),
            ("cookies", Value::Nil),
        ]);
        let reply = ReplyView::decode(&nils).unwrap();
        assert_eq!((reply.id, reply.status, reply.body), (3, 200, &[][..]));
        assert!(reply.headers.is_empty() && reply.cookies.iter().len() == 0);

        let error = |fields| ReplyView::decode(&map(fields)).unwrap_err().to_string();
        assert_eq!(
            error(vec![("id", Value::from(1))]),
            "http_respond request: no status"
        );
        assert_eq!(
            error(vec![("id", Value::from(1)), ("status", Value::from(70000))]),
            "http_respond request: bad status"
        );
        assert_eq!(
            error(vec![
                ("id", Value::from(1)),
                ("status", Value::from(200)),
                ("cookies", Value::Array(vec![Value::from(1)]))
            ]),
            "http_respond request: bad cookies"
        );
    }
}
