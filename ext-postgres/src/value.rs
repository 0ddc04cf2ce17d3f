//! Values between the cell's MessagePack and Postgres, matching what the
//! built-in provider gives: parameters bind to whatever type the server
//! infers for their placeholder, and column values come back as nil, int 64,
//! float 64, `str` or `bin`.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use pulp_wire::msgpack::{Reader, Scalar};
use rmp::encode;
use tokio_postgres::types::{to_sql_checked, Format, FromSql, IsNull, ToSql, Type};

type BoxError = Box<dyn Error + Sync + Send>;

/// One SQL parameter as the cell sent it, strings and bytes borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param<'a>(pub Scalar<'a>);

/// Decodes the MessagePack array of parameters exactly as the built-in does:
/// empty input or nil is none; arrays, maps, extension types and integers over
/// `i64::MAX` are `None` (code 3).
pub fn decode_params(bytes: &[u8]) -> Option<Vec<Param<'_>>> {
    if bytes.is_empty() || bytes == [0xc0] {
        return Some(Vec::new());
    }
    let mut reader = Reader::new(bytes);
    let count = reader.array_len()?;
    let mut params = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        params.push(Param(reader.scalar()?));
    }
    reader.is_done().then_some(params)
}

impl Param<'_> {
    /// Whether the value goes in Postgres' binary format for `ty`; otherwise
    /// it goes as text and the server parses it, as it would a literal.
    fn binary(&self, ty: &Type) -> bool {
        match self.0 {
            Scalar::Nil => true,
            Scalar::Bool(_) => matches!(*ty, Type::BOOL | Type::INT2 | Type::INT4 | Type::INT8),
            Scalar::Int(_) => matches!(
                *ty,
                Type::BOOL | Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8
            ),
            Scalar::Float(_) => matches!(*ty, Type::FLOAT4 | Type::FLOAT8),
            Scalar::Str(_) | Scalar::Bin(_) => *ty == Type::BYTEA,
        }
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if !self.binary(ty) {
            match self.0 {
                Scalar::Str(s) => out.put_slice(s.as_bytes()),
                Scalar::Bin(b) => match std::str::from_utf8(b) {
                    Ok(s) => out.put_slice(s.as_bytes()),
                    Err(_) => return Err(format!("binary value for a {ty} parameter").into()),
                },
                // SQLite binds booleans as 0 and 1.
                Scalar::Bool(b) => out.put_slice(if b { b"1" } else { b"0" }),
                Scalar::Int(i) => out.put_slice(i.to_string().as_bytes()),
                Scalar::Float(f) => out.put_slice(float_text(f).as_bytes()),
                Scalar::Nil => unreachable!("nil is always binary"),
            }
            return Ok(IsNull::No);
        }
        let int = match self.0 {
            Scalar::Nil => return Ok(IsNull::Yes),
            Scalar::Bool(b) => i64::from(b),
            Scalar::Int(i) => i,
            Scalar::Float(f) if *ty == Type::FLOAT4 => {
                out.put_f32(f as f32);
                return Ok(IsNull::No);
            }
            Scalar::Float(f) => {
                out.put_f64(f);
                return Ok(IsNull::No);
            }
            Scalar::Str(s) => {
                out.put_slice(s.as_bytes());
                return Ok(IsNull::No);
            }
            Scalar::Bin(b) => {
                out.put_slice(b);
                return Ok(IsNull::No);
            }
        };
        let range = || format!("{int} is out of range for a {ty} parameter");
        match *ty {
            Type::BOOL => out.put_u8(u8::from(int != 0)),
            Type::INT2 => out.put_i16(i16::try_from(int).map_err(|_| range())?),
            Type::INT4 => out.put_i32(i32::try_from(int).map_err(|_| range())?),
            Type::FLOAT4 => out.put_f32(int as f32),
            Type::FLOAT8 => out.put_f64(int as f64),
            _ => out.put_i64(int),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> Format {
        if self.binary(ty) {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}

/// A float as Postgres reads it.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        // Rust prints the shortest text that reads back as the same float.
        format!("{f:?}")
    }
}

/// A column value as the server sent it (binary format), any type.
pub struct Raw<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Why a column value could not be encoded.
#[derive(Debug)]
pub struct Unsupported(pub String);

/// Appends one column value of type `ty` as the built-in would send it.
pub fn encode_column(out: &mut Vec<u8>, ty: &Type, raw: Option<&[u8]>) -> Result<(), Unsupported> {
    let Some(raw) = raw else {
        out.push(0xc0);
        return Ok(());
    };
    let bad = || Unsupported(format!("a malformed {ty} value"));
    match *ty {
        Type::BOOL => write_i64(out, i64::from(raw.first().ok_or_else(bad)? != &0)),
        Type::INT2 => write_i64(out, i16::from_sql(ty, raw).map_err(|_| bad())?.into()),
        Type::INT4 => write_i64(out, i32::from_sql(ty, raw).map_err(|_| bad())?.into()),
        Type::INT8 => write_i64(out, i64::from_sql(ty, raw).map_err(|_| bad())?),
        Type::OID => write_i64(out, u32::from_sql(ty, raw).map_err(|_| bad())?.into()),
        Type::FLOAT4 => write_f64(out, f32::from_sql(ty, raw).map_err(|_| bad())?.into()),
        Type::FLOAT8 => write_f64(out, f64::from_sql(ty, raw).map_err(|_| bad())?),
        Type::NUMERIC => match numeric_text(raw).ok_or_else(bad)? {
            text if !text.contains('.') && text.parse::<i64>().is_ok() => {
                write_i64(out, text.parse().expect("checked"))
            }
            text => write_f64(out, text.parse().unwrap_or(f64::NAN)),
        },
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            write_text(out, raw)
        }
        Type::CHAR => write_text(out, raw),
        // Binary jsonb is a version byte, then the text.
        Type::JSONB => write_text(out, raw.get(1..).ok_or_else(bad)?),
        Type::BYTEA => encode::write_bin(out, raw).expect("vec write"),
        Type::UUID => {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if hex.len() != 32 {
                return Err(bad());
            }
            let text = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            encode::write_str(out, &text).expect("vec write");
        }
        Type::DATE => {
            let days = i32::from_sql(ty, raw).map_err(|_| bad())?;
            encode::write_str(out, &date_text(days.into())).expect("vec write");
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_sql(ty, raw).map_err(|_| bad())?;
            let mut text = timestamp_text(micros);
            if *ty == Type::TIMESTAMPTZ {
                text.push_str("+00");
            }
            encode::write_str(out, &text).expect("vec write");
        }
        _ => return Err(Unsupported(format!("type {ty} has no MessagePack value"))),
    }
    Ok(())
}

fn write_i64(out: &mut Vec<u8>, i: i64) {
    encode::write_i64(out, i).expect("vec write");
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    encode::write_f64(out, f).expect("vec write");
}

/// Text as `str`, or as `bin` when it is not UTF-8 (as the built-in does).
fn write_text(out: &mut Vec<u8>, raw: &[u8]) {
    match std::str::from_utf8(raw) {
        Ok(text) => encode::write_str(out, text).expect("vec write"),
        Err(_) => encode::write_bin(out, raw).expect("vec write"),
    }
}

/// A binary `numeric` as decimal text (`NaN` and infinities by name).
fn numeric_text(raw: &[u8]) -> Option<String> {
    let word =
        |i: usize| -> Option<i16> { Some(i16::from_be_bytes(raw.get(i..i + 2)?.try_into().ok()?)) };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)?);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("inf".into()),
        0xF000 => return Some("-inf".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits as usize)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    // Base-10000 digits: `weight` + 1 of them before the point.
    if weight < 0 {
        text.push('0');
    }
    for i in 0..=weight.max(-1) {
        let d = digits.get(i as usize).copied().unwrap_or(0);
        if i == 0 {
            text.push_str(&d.to_string());
        } else {
            text.push_str(&format!("{d:04}"));
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while (frac.len() as i16) < dscale {
            let d = if i < 0 {
                0
            } else {
                digits.get(i as usize).copied().unwrap_or(0)
            };
            frac.push_str(&format!("{d:04}"));
            i += 1;
        }
        frac.truncate(dscale as usize);
        text.push('.');
        text.push_str(&frac);
    }
    Some(text)
}

/// `YYYY-MM-DD` for days since 2000-01-01 (Postgres' epoch).
fn date_text(days: i64) -> String {
    // Days since 1970-01-01, then the civil date (Howard Hinnant's algorithm).
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` for microseconds since 2000-01-01.
fn timestamp_text(micros: i64) -> String {
    let day_micros = 86_400_000_000;
    let days = micros.div_euclid(day_micros);
    let rest = micros.rem_euclid(day_micros);
    let (secs, frac) = (rest / 1_000_000, rest % 1_000_000);
    let mut text = format!(
        "{} {:02}:{:02}:{:02}",
        date_text(days),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let digits = format!("{frac:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_as_the_built_in_reads_them() {
        assert_eq!(decode_params(b""), Some(vec![]));
        assert_eq!(decode_params(b"\xc0"), Some(vec![]));
        let params = decode_params(b"\x95\xc0\xc3\x07\xa1x\xc4\x01\xff").unwrap();
        assert_eq!(
            params.iter().map(|p| p.0).collect::<Vec<_>>(),
            [
                Scalar::Nil,
                Scalar::Bool(true),
                Scalar::Int(7),
                Scalar::Str("x"),
                Scalar::Bin(&[0xff])
            ]
        );
        // A nested array has no SQL value.
        assert_eq!(decode_params(b"\x91\x90"), None);
        assert_eq!(decode_params(b"\x91"), None);
    }

    #[test]
    fn params_bind_to_the_inferred_type() {
        let mut out = BytesMut::new();
        let int = Param(Scalar::Int(300));
        assert!(int.binary(&Type::INT4));
        int.to_sql(&Type::INT4, &mut out).unwrap();
        assert_eq!(&out[..], 300i32.to_be_bytes());
        assert!(Param(Scalar::Int(1 << 40))
            .to_sql(&Type::INT4, &mut BytesMut::new())
            .is_err());
        // Into a text column, a number goes as its text.
        out.clear();
        assert!(!int.binary(&Type::TEXT));
        int.to_sql(&Type::TEXT, &mut out).unwrap();
        assert_eq!(&out[..], b"300");
        // A string into a timestamp is parsed by the server.
        let s = Param(Scalar::Str("2024-01-02"));
        assert!(!s.binary(&Type::TIMESTAMP));
        assert!(s.binary(&Type::BYTEA));
        assert_eq!(float_text(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(float_text(0.1), "0.1");
    }

    #[test]
    fn columns_encode_like_the_built_in() {
        let mut out = Vec::new();
        encode_column(&mut out, &Type::INT4, Some(&5i32.to_be_bytes())).unwrap();
        assert_eq!(out, [0xd3, 0, 0, 0, 0, 0, 0, 0, 5]);
        out.clear();
        encode_column(&mut out, &Type::BOOL, Some(&[1])).unwrap();
        encode_column(&mut out, &Type::TEXT, None).unwrap();
        encode_column(&mut out, &Type::BYTEA, Some(&[9])).unwrap();
        assert_eq!(out, [0xd3, 0, 0, 0, 0, 0, 0, 0, 1, 0xc0, 0xc4, 1, 9]);
        assert!(encode_column(&mut out, &Type::POINT, Some(&[0; 16])).is_err());
    }

    #[test]
    fn numerics_dates_and_times_read_as_text() {
        // 12345.678: weight 1, digits 1 2345 6780, dscale 3.
        let raw = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c];
        assert_eq!(numeric_text(&raw).unwrap(), "12345.678");
        // -0.05: weight -1, digit 500, dscale 2.
        let raw = [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4];
        assert_eq!(numeric_text(&raw).unwrap(), "-0.05");
        assert_eq!(numeric_text(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), "0");
        assert_eq!(date_text(0), "2000-01-01");
        assert_eq!(date_text(-1), "1999-12-31");
        assert_eq!(date_text(8825), "2024-02-29");
        assert_eq!(timestamp_text(1_500_000), "2000-01-01 00:00:01.5");
        assert_eq!(timestamp_text(-1), "1999-12-31 23:59:59.999999");
    }
}
