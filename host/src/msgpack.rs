//! The MessagePack the host produces and checks (SPEC §2 conventions).

use rmp::encode;
use serde::Deserialize;
use serde::de::IgnoredAny;

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

/// Checks that `bytes` is exactly one well-formed MessagePack value.
pub fn check_one_value(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty payload (expected one MessagePack value)".into());
    }
    let mut reader = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut reader);
    IgnoredAny::deserialize(&mut de).map_err(|e| format!("not valid MessagePack: {e}"))?;
    if !reader.is_empty() {
        return Err(format!(
            "{} bytes after the first MessagePack value (expected exactly one)",
            reader.len()
        ));
    }
    Ok(())
}

const KIND_KEY: &[u8] = b"\xa4kind";
const PAYLOAD_KEY: &[u8] = b"\xa7payload";

/// The size of the StepEvent map `{kind, payload}` with `payload` embedded inline.
pub fn step_event_len(kind: &str, payload: &[u8]) -> usize {
    1 + KIND_KEY.len() + str_header_len(kind.len()) + kind.len() + PAYLOAD_KEY.len() + payload.len()
}

fn str_header_len(len: usize) -> usize {
    match len {
        0..=31 => 1,
        32..=255 => 2,
        256..=65_535 => 3,
        _ => 5,
    }
}

/// Writes the StepEvent map into `out`, which is exactly `step_event_len` long.
pub fn write_step_event(out: &mut [u8], kind: &str, payload: &[u8]) {
    let mut cursor = out;
    // A slice writer cannot run short: the caller sized it with `step_event_len`.
    encode::write_map_len(&mut cursor, 2).expect("sized buffer");
    std::io::Write::write_all(&mut cursor, KIND_KEY).expect("sized buffer");
    encode::write_str(&mut cursor, kind).expect("sized buffer");
    std::io::Write::write_all(&mut cursor, PAYLOAD_KEY).expect("sized buffer");
    std::io::Write::write_all(&mut cursor, payload).expect("sized buffer");
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
    }

    #[test]
    fn step_event_embeds_payload_inline() {
        let payload = [0x81, 0xa1, b'a', 0x01];
        let mut buf = vec![0; step_event_len("demo.ticker", &payload)];
        write_step_event(&mut buf, "demo.ticker", &payload);
        let value: rmpv_like::Event = rmp_serde::from_slice(&buf).unwrap();
        assert_eq!(value.kind, "demo.ticker");
        assert_eq!(value.payload.a, 1);
    }

    mod rmpv_like {
        #[derive(serde::Deserialize)]
        pub struct Payload {
            pub a: i64,
        }
        #[derive(serde::Deserialize)]
        pub struct Event {
            pub kind: String,
            pub payload: Payload,
        }
    }
}
