//! `storage.sqlite`: one SQLite database per cell at `{storage-root}/{cell}/data.db`.
//!
//! Each cell keeps one connection for its whole life, so a transaction begun in
//! one call is committed by a later one; statements are prepared once and cached.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pulp_ext_api::{Args, Capability, Code, Guest, HostImport, SetupEnv, ValType};
use rmp::encode;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, Statement};

use super::PerCell;
use crate::msgpack::{Reader, Scalar};

pub const NAME: &str = "storage.sqlite";

/// How long a statement waits for a lock another connection holds (a second
/// host on the same storage root, an operator's sqlite3 shell).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_CACHE: usize = 64;

struct CellDb(Mutex<Connection>);

impl CellDb {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call leaves SQLite itself consistent; keep serving.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
pub struct Databases {
    cells: Arc<PerCell<CellDb>>,
}

/// What a call returns to the cell.
#[derive(Clone, Copy)]
enum Shape {
    /// `sqlite_exec`: nothing.
    Nothing,
    /// `sqlite_exec_result`: `{rows_affected, last_insert_id}`.
    Changes,
    /// `sqlite_query`: an array of rows.
    Rows,
    /// `sqlite_query_table`: `{columns, rows}`.
    Table,
}

impl Capability for Databases {
    fn name(&self) -> &str {
        NAME
    }

    fn provider(&self) -> &str {
        crate::builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        [
            ("sqlite_exec", Shape::Nothing),
            ("sqlite_exec_result", Shape::Changes),
            ("sqlite_query", Shape::Rows),
            ("sqlite_query_table", Shape::Table),
        ]
        .into_iter()
        .map(|(name, shape)| {
            let cells = Arc::clone(&self.cells);
            let arity = if matches!(shape, Shape::Nothing) {
                4
            } else {
                6
            };
            HostImport::new(name, &vec![ValType::I32; arity], move |guest, args| {
                let db = cells.get(guest.cell())?;
                let out = call(guest, args, &db, shape)?;
                match shape {
                    Shape::Nothing => Ok(()),
                    _ => guest.return_bytes(args, 4, &out),
                }
            })
        })
        .collect()
    }

    fn setup(&self, env: &SetupEnv) -> Result<(), String> {
        let path = env.storage_dir.join("data.db");
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(&path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // FULL: a commit the cell was told of is on disk, power cut or not
            // (NORMAL would survive only the process dying).
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            Ok(conn)
        };
        let conn = open().map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "{}: SQLite kept journal_mode {mode} instead of WAL; is the storage root on a file system that supports shared memory?",
                path.display()
            ));
        }
        self.cells.insert(&env.cell, CellDb(Mutex::new(conn)));
        Ok(())
    }

    fn cell_failed(&self, cell: &str) {
        // A crashed instance cannot finish its transaction; its restart must not
        // inherit it (nor its locks).
        if let Ok(db) = self.cells.get(cell) {
            let conn = db.lock();
            if !conn.is_autocommit() {
                tracing::warn!(
                    cell,
                    "storage.sqlite: rolling back the transaction the failed cell left open"
                );
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(cell, "storage.sqlite: rollback failed: {e}");
                }
            }
        }
    }

    fn teardown_cell(&self, cell: &str) {
        self.cells.remove(cell);
    }

    fn teardown(&self) {
        self.cells.clear();
    }
}

fn call(guest: &Guest<'_>, args: Args<'_>, db: &CellDb, shape: Shape) -> Result<Vec<u8>, Code> {
    let sql = guest.read_str_arg(args, 0)?;
    if sql.trim().is_empty() {
        return Err(Code::EMPTY);
    }
    let params = decode_params(guest.read_arg(args, 2)?).ok_or(Code::DECODE)?;
    let limit = guest.max_message_bytes();
    let conn = db.lock();
    let result = match shape {
        Shape::Nothing => exec(&conn, sql, &params).map(|_| Ok(Vec::new())),
        Shape::Changes => exec(&conn, sql, &params).map(|changes| {
            let mut out = Vec::with_capacity(40);
            encode::write_map_len(&mut out, 2).expect("vec write");
            encode::write_str(&mut out, "rows_affected").expect("vec write");
            encode::write_i64(&mut out, changes as i64).expect("vec write");
            encode::write_str(&mut out, "last_insert_id").expect("vec write");
            encode::write_i64(&mut out, conn.last_insert_rowid()).expect("vec write");
            Ok(out)
        }),
        Shape::Rows | Shape::Table => {
            query(&conn, sql, &params, limit, matches!(shape, Shape::Table))
        }
    };
    match result {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(code)) => Err(code),
        Err(e) => {
            tracing::warn!(cell = guest.cell(), "storage.sqlite: {e}");
            Err(Code::FAILED)
        }
    }
}

/// Runs a statement that returns no rows the cell wants; yields rows changed.
fn exec(conn: &Connection, sql: &str, params: &[ValueRef<'_>]) -> rusqlite::Result<u64> {
    let mut stmt = match conn.prepare_cached(sql) {
        Ok(stmt) => stmt,
        // Perhaps a script of several statements (which prepare refuses, or fails
        // on when a later one needs what an earlier one creates): run it whole.
        Err(_) if params.is_empty() => {
            conn.execute_batch(sql)?;
            return Ok(conn.changes());
        }
        Err(e) => return Err(e),
    };
    bind(&mut stmt, params)?;
    if stmt.column_count() == 0 {
        return Ok(stmt.raw_execute()? as u64);
    }
    // A statement that yields rows (a PRAGMA, RETURNING) still runs to the end.
    let mut rows = stmt.raw_query();
    while rows.next()?.is_some() {}
    Ok(0)
}

/// Runs a query and encodes its rows; `Ok(Err(TOO_LARGE))` once they outgrow `limit`.
fn query(
    conn: &Connection,
    sql: &str,
    params: &[ValueRef<'_>],
    limit: u64,
    with_columns: bool,
) -> rusqlite::Result<Result<Vec<u8>, Code>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind(&mut stmt, params)?;
    let columns = stmt.column_count();
    let mut out = Vec::with_capacity(64);
    if with_columns {
        encode::write_map_len(&mut out, 2).expect("vec write");
        encode::write_str(&mut out, "columns").expect("vec write");
        encode::write_array_len(&mut out, columns as u32).expect("vec write");
        for name in stmt.column_names() {
            encode::write_str(&mut out, name).expect("vec write");
        }
        encode::write_str(&mut out, "rows").expect("vec write");
    }
    // The row count comes first in MessagePack but is known last: reserve the
    // widest array header and patch it.
    let header_at = out.len();
    out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
    let mut count: u32 = 0;
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        encode::write_array_len(&mut out, columns as u32).expect("vec write");
        for index in 0..columns {
            match row.get_ref(index)? {
                ValueRef::Null => out.push(0xc0),
                ValueRef::Integer(i) => encode::write_i64(&mut out, i).expect("vec write"),
                ValueRef::Real(f) => encode::write_f64(&mut out, f).expect("vec write"),
                ValueRef::Text(text) => match std::str::from_utf8(text) {
                    Ok(text) => encode::write_str(&mut out, text).expect("vec write"),
                    // Text SQLite holds as invalid UTF-8 still reaches the cell, as bytes.
                    Err(_) => encode::write_bin(&mut out, text).expect("vec write"),
                },
                ValueRef::Blob(bytes) => encode::write_bin(&mut out, bytes).expect("vec write"),
            }
        }
        count += 1;
        if out.len() as u64 > limit {
            return Ok(Err(Code::TOO_LARGE));
        }
    }
    out[header_at + 1..header_at + 5].copy_from_slice(&count.to_be_bytes());
    Ok(Ok(out))
}

fn bind(stmt: &mut Statement<'_>, params: &[ValueRef<'_>]) -> rusqlite::Result<()> {
    let expected = stmt.parameter_count();
    if params.len() != expected {
        return Err(rusqlite::Error::InvalidParameterCount(
            params.len(),
            expected,
        ));
    }
    for (index, value) in params.iter().enumerate() {
        stmt.raw_bind_parameter(index + 1, ToSqlOutput::Borrowed(*value))?;
    }
    Ok(())
}

/// Decodes the MessagePack array of SQL parameters (empty input = none), borrowing
/// strings and bytes from the cell's memory. Booleans bind as 0/1; arrays, maps,
/// extension types and integers over `i64::MAX` have no SQL value: `None`.
fn decode_params(bytes: &[u8]) -> Option<Vec<ValueRef<'_>>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut reader = Reader::new(bytes);
    let count = reader.array_len()?;
    let mut params = Vec::with_capacity(count.min(256) as usize);
    for _ in 0..count {
        params.push(match reader.scalar()? {
            Scalar::Nil => ValueRef::Null,
            Scalar::Bool(b) => ValueRef::Integer(b.into()),
            Scalar::Int(i) => ValueRef::Integer(i),
            Scalar::Float(f) => ValueRef::Real(f),
            Scalar::Str(s) => ValueRef::Text(s.as_bytes()),
            Scalar::Bin(b) => ValueRef::Blob(b),
        });
    }
    reader.is_done().then_some(params)
}
