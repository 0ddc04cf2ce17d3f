//! `storage.sqlite`: the cell's own SQLite database, in WAL mode.
//!
//! One connection serves the cell for its whole life, so `BEGIN` in one
//! call and `COMMIT` in a later one form a transaction. SQL errors are code
//! 5; the host logs SQLite's message with the cell's name.
//!
//! ```no_run
//! use pulp_guest::sqlite::{self, Value};
//!
//! sqlite::exec("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)", &[])?;
//! let added = sqlite::exec_result("INSERT INTO notes (body) VALUES (?)", &["hello".into()])?;
//! let rows = sqlite::query("SELECT body FROM notes WHERE id = ?", &[added.last_insert_id.into()])?;
//! assert_eq!(rows[0][0].as_str(), Some("hello"));
//! # Ok::<(), pulp_guest::Code>(())
//! ```

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::{raw, Code, HostBuf};

/// An SQL value, as parameters and in result rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Real(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Blob bytes, or text as its UTF-8 bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(b) => Some(b),
            Value::Text(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Real(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Blob(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Blob(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Real(f) => serializer.serialize_f64(*f),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Blob(b) => serializer.serialize_bytes(b),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;

        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("nil, an integer, a float, a string or bytes")
            }

            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }

            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Integer(b.into()))
            }

            fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
                Ok(Value::Integer(i))
            }

            fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
                i64::try_from(u)
                    .map(Value::Integer)
                    .map_err(|_| E::custom("integer over i64::MAX"))
            }

            fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
                Ok(Value::Real(f))
            }

            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Text(s.to_owned()))
            }

            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::Text(s))
            }

            fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
                Ok(Value::Blob(b.to_vec()))
            }

            fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Value, E> {
                Ok(Value::Blob(b))
            }
        }

        deserializer.deserialize_any(ValueVisitor)
    }
}

/// What [`exec_result`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Changes {
    pub rows_affected: i64,
    /// The rowid of the connection's most recent successful INSERT.
    pub last_insert_id: i64,
}

/// What [`query_table`] returns.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

fn encode_params(params: &[Value]) -> Vec<u8> {
    if params.is_empty() {
        return Vec::new();
    }
    raw::encode(&params)
}

type ReturningImport = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32) -> i32;

fn call_returning(import: ReturningImport, sql: &str, params: &[Value]) -> Result<HostBuf, Code> {
    let params = encode_params(params);
    let (sql_ptr, sql_len) = raw::ptr_len(sql.as_bytes());
    let (params_ptr, params_len) = raw::ptr_len(&params);
    // SAFETY: `sql` and `params` outlive the call, and the storage.sqlite
    // imports keep the out-pointer contract of docs/cell-abi.md.
    unsafe {
        HostBuf::receive(|ptr_out, len_out| {
            import(sql_ptr, sql_len, params_ptr, params_len, ptr_out, len_out)
        })
    }
}

/// Runs a statement (or, without parameters, a script of several).
pub fn exec(sql: &str, params: &[Value]) -> Result<(), Code> {
    let params = encode_params(params);
    let (sql_ptr, sql_len) = raw::ptr_len(sql.as_bytes());
    let (params_ptr, params_len) = raw::ptr_len(&params);
    // SAFETY: a plain host call; both slices outlive it.
    Code::check(unsafe { raw::sqlite_exec(sql_ptr, sql_len, params_ptr, params_len) })
}

/// Like [`exec`], and reports the rows changed and the last inserted rowid.
pub fn exec_result(sql: &str, params: &[Value]) -> Result<Changes, Code> {
    call_returning(raw::sqlite_exec_result, sql, params)?
        .decode()
        .map_err(|_| Code::DECODE)
}

/// The rows of a query, each a vector of column values in select order.
pub fn query(sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, Code> {
    call_returning(raw::sqlite_query, sql, params)?
        .decode()
        .map_err(|_| Code::DECODE)
}

/// Like [`query`], with the column names.
pub fn query_table(sql: &str, params: &[Value]) -> Result<Table, Code> {
    call_returning(raw::sqlite_query_table, sql, params)?
        .decode()
        .map_err(|_| Code::DECODE)
}
