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

pub use pulp_wire::msgpack::{Reader, Scalar, check_one_value};

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
}
