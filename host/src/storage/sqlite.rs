//! `storage.sqlite`: one SQLite database per cell at `{storage-root}/{cell}/data.db`.
//!
//! Each cell keeps one connection for its whole life, so a transaction begun in
//! one call is committed by a later one; statements are prepared once and cached.
//!
//! The connection reaches that one file: no URI filenames, no ATTACH (nor
//! VACUUM INTO, which attaches), no extension loading, defensive mode and
//! untrusted schemas, and an authorizer that refuses pragmas outside a list
//! of harmless ones. Every call runs under the cell's `call_timeout_ms` (a
//! progress handler), its values under `max_message_bytes`, and the database
//! under the cell's storage quota.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pulp_ext_api::{Capability, CellState, Code, Guest, HostImport, SetupEnv};
use rmp::encode;
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, Statement};

use super::quota::{CellQuota, Quotas};
use crate::msgpack::{Reader, Scalar};
use crate::runtime::stop;

pub const NAME: &str = "storage.sqlite";

/// How long a statement waits for a lock another connection holds (a second
/// host on the same storage root, an operator's sqlite3 shell).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_CACHE: usize = 64;
/// The page cache of one connection, in KiB: the bulk of what SQLite keeps
/// per cell, fixed so a cell cannot raise it.
const CACHE_KIB: i64 = 2048;
/// The write-ahead log is cut back to this after each checkpoint.
const WAL_KEEP_BYTES: i64 = 4 * 1024 * 1024;
/// SQLite's own memory, all cells together: a backstop under the per-cell
/// bounds above. Past it a statement fails with "out of memory" (code 5).
const HEAP_LIMIT: i64 = 1024 * 1024 * 1024;
/// Virtual machine instructions between two checks of the call's deadline.
const PROGRESS_EVERY: i32 = 1000;

/// Pragmas a cell may run: schema inspection and per-connection behaviour
/// that reaches nothing outside its own database. `database_list` (host
/// paths), the `*_directory` pragmas, cache, mmap, page and WAL sizing
/// (memory and quota) and `trusted_schema` are not among them.
const ALLOWED_PRAGMAS: &[&str] = &[
    "analysis_limit",
    "application_id",
    "automatic_index",
    "case_sensitive_like",
    "cell_size_check",
    "collation_list",
    "data_version",
    "defer_foreign_keys",
    "encoding",
    "foreign_key_check",
    "foreign_key_list",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "ignore_check_constraints",
    "incremental_vacuum",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "legacy_alter_table",
    "optimize",
    "page_count",
    "pragma_list",
    "query_only",
    "quick_check",
    "recursive_triggers",
    "reverse_unordered_selects",
    "schema_version",
    "synchronous",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
    "wal_checkpoint",
];
/// Pragmas a cell may read but not set.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "auto_vacuum",
    "busy_timeout",
    "cache_size",
    "journal_mode",
    "journal_size_limit",
    "max_page_count",
    "page_size",
];

fn authorize(ctx: AuthContext<'_>, host_statement: bool) -> Authorization {
    match ctx.action {
        // The host's own statements (the page limit) are not the cell's.
        _ if host_statement => Authorization::Allow,
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            let name = pragma_name.to_ascii_lowercase();
            let allowed = ALLOWED_PRAGMAS.contains(&name.as_str())
                || (READ_ONLY_PRAGMAS.contains(&name.as_str()) && pragma_value.is_none())
                // Cells written for WAL elsewhere ask for it; it is already on.
                || (name == "journal_mode"
                    && pragma_value.is_some_and(|v| v.eq_ignore_ascii_case("wal")));
            if allowed {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

/// Nanoseconds since the first call, for deadlines an atomic can hold.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

struct CellDb {
    conn: Mutex<Connection>,
    /// Set while the host runs a statement of its own on the connection.
    host_statement: Arc<AtomicBool>,
    /// The page limit last given to SQLite.
    max_pages: AtomicI64,
    /// When the running call must stop, in `now_ns` time.
    deadline: Arc<AtomicU64>,
    timeout: Duration,
    quota: Arc<CellQuota>,
    page_size: u64,
}

impl CellDb {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call leaves SQLite itself consistent; keep serving.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct Databases {
    quotas: Arc<Quotas>,
}

impl Databases {
    pub fn new(quotas: Arc<Quotas>) -> Databases {
        Databases { quotas }
    }
}

/// Opens and hardens a cell's database.
fn open(
    path: &std::path::Path,
    max_message_bytes: u64,
    host_statement: &Arc<AtomicBool>,
) -> rusqlite::Result<Connection> {
    // Created owner-only before SQLite opens it; its WAL and SHM files take
    // the same mode.
    create_private(path);
    // Not the default flags: those let a filename be a URI (`file:...?mode=`).
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    let value_limit = i32::try_from(max_message_bytes).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, value_limit)?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, value_limit)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit the cell was told of is on disk, power cut or not
    // (NORMAL would survive only the process dying).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let host_statement = Arc::clone(host_statement);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        authorize(ctx, host_statement.load(Ordering::Relaxed))
    }))?;
    Ok(conn)
}

#[cfg(unix)]
fn create_private(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // An existing file is left as it is; SQLite reports any real problem.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

#[cfg(not(unix))]
fn create_private(_path: &std::path::Path) {}

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
        let returning = |name, shape| {
            HostImport::inputs_output(name, move |guest, [sql, params]| {
                call(guest, sql, params, shape)
            })
        };
        vec![
            HostImport::inputs("sqlite_exec", |guest, [sql, params]| {
                call(guest, sql, params, Shape::Nothing).map(drop)
            }),
            returning("sqlite_exec_result", Shape::Changes),
            returning("sqlite_query", Shape::Rows),
            returning("sqlite_query_table", Shape::Table),
        ]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        static HEAP: OnceLock<()> = OnceLock::new();
        HEAP.get_or_init(|| {
            // SAFETY: a plain setter of SQLite's global allocator limit.
            unsafe { rusqlite::ffi::sqlite3_hard_heap_limit64(HEAP_LIMIT) };
        });
        let path = env.storage_dir.join("data.db");
        let quota = self.quotas.cell(&env.cell, &env.storage_dir)?;
        let host_statement = Arc::new(AtomicBool::new(false));
        let mut conn = open(&path, env.max_message_bytes, &host_statement)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "{}: SQLite kept journal_mode {mode} instead of WAL; is the storage root on a file system that supports shared memory?",
                path.display()
            ));
        }
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let watched = Arc::clone(&deadline);
        conn.progress_handler(
            PROGRESS_EVERY,
            Some(move || stop::stopping() || now_ns() >= watched.load(Ordering::Relaxed)),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(CellState::new(CellDb {
            conn: Mutex::new(conn),
            host_statement,
            max_pages: AtomicI64::new(-1),
            deadline,
            timeout: Duration::from_millis(env.call_timeout_ms),
            quota,
            page_size: page_size.max(512) as u64,
        }))
    }

    fn cell_failed(&self, cell: &str, state: &CellState) {
        // A crashed instance cannot finish its transaction; its restart must not
        // inherit it (nor its locks).
        if let Some(db) = state.get::<CellDb>() {
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
}

fn call(guest: &Guest<'_>, sql: &[u8], params: &[u8], shape: Shape) -> Result<Vec<u8>, Code> {
    let db = guest.state::<CellDb>()?;
    let sql = std::str::from_utf8(sql).map_err(|_| Code::DECODE)?;
    if sql.trim().is_empty() {
        return Err(Code::EMPTY);
    }
    let params = decode_params(params).ok_or(Code::DECODE)?;
    let limit = guest.max_message_bytes();
    let conn = db.lock();
    // The database may hold what the quota leaves after the cell's files.
    let room = db.quota.limit().saturating_sub(db.quota.files_bytes());
    let pages = (room / db.page_size).clamp(1, i64::MAX as u64) as i64;
    if db.max_pages.load(Ordering::Relaxed) != pages {
        db.host_statement.store(true, Ordering::Relaxed);
        let set = conn.pragma_update(None, "max_page_count", pages);
        db.host_statement.store(false, Ordering::Relaxed);
        if let Err(e) = set {
            tracing::warn!(
                cell = guest.cell(),
                "storage.sqlite: cannot set the page limit: {e}"
            );
            return Err(Code::FAILED);
        }
        db.max_pages.store(pages, Ordering::Relaxed);
    }
    db.deadline.store(
        now_ns().saturating_add(db.timeout.as_nanos() as u64),
        Ordering::Relaxed,
    );
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
    db.deadline.store(u64::MAX, Ordering::Relaxed);
    match result {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(code)) => Err(code),
        Err(e) => Err(failure_code(guest.cell(), &conn, db, e)),
    }
}

/// Maps a failed statement to the cell's code, with one log line saying why.
fn failure_code(cell: &str, conn: &Connection, db: &CellDb, e: rusqlite::Error) -> Code {
    let message = crate::logsafe::Escaped(&e.to_string()).to_string();
    let code = e.sqlite_error_code();
    match code {
        Some(ErrorCode::OperationInterrupted) if stop::stopping() => {
            tracing::warn!(cell, "storage.sqlite: interrupted by host shutdown");
            Code::FAILED
        }
        Some(ErrorCode::OperationInterrupted) => {
            tracing::warn!(
                cell,
                "storage.sqlite: statement interrupted: it ran past call_timeout_ms = {}",
                db.timeout.as_millis()
            );
            Code::FAILED
        }
        Some(ErrorCode::AuthorizationForStatementDenied) => {
            tracing::warn!(
                cell,
                "storage.sqlite: statement refused (ATTACH, DETACH, VACUUM INTO, extensions and pragmas that reach beyond the cell's database are not allowed): {message}"
            );
            Code::REFUSED
        }
        Some(ErrorCode::DiskFull) => {
            tracing::warn!(
                cell,
                "storage.sqlite: storage quota reached (max_storage_bytes = {}): {message}",
                db.quota.limit()
            );
            // What the refused statement left in the write-ahead log goes.
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::debug!(
                    cell,
                    "storage.sqlite: checkpoint after a full database: {e}"
                );
            }
            Code::TOO_LARGE
        }
        Some(ErrorCode::TooBig) => {
            tracing::warn!(
                cell,
                "storage.sqlite: value over max_message_bytes: {message}"
            );
            Code::TOO_LARGE
        }
        _ => {
            tracing::warn!(cell, "storage.sqlite: {message}");
            Code::FAILED
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
            if out.len() as u64 > limit {
                return Ok(Err(Code::TOO_LARGE));
            }
        }
        count += 1;
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

/// Decodes the MessagePack array of SQL parameters (empty input or nil = none),
/// borrowing strings and bytes from the cell's memory. Booleans bind as 0/1; arrays, maps,
/// extension types and integers over `i64::MAX` have no SQL value: `None`.
pub(crate) fn decode_params(bytes: &[u8]) -> Option<Vec<ValueRef<'_>>> {
    if bytes.is_empty() || bytes == [0xc0] {
        return Some(Vec::new());
    }
    let mut reader = Reader::new(bytes);
    let count = reader.array_len()?;
    let mut params = Vec::with_capacity(count.min(256));
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

#[cfg(test)]
mod tests {
    use crate::testenv;

    #[test]
    fn statements_run_and_rows_come_back() {
        let env = testenv::Env::new();
        let db = env.capability(super::NAME);
        let mut cell = env.cell(db, "alpha");
        let none = [0x90u8]; // an empty MessagePack array: no parameters

        let create = b"CREATE TABLE t (a INTEGER, b TEXT)";
        assert_eq!(
            cell.call(db, "sqlite_exec", &[create, &none], false),
            Ok(vec![])
        );
        let params = rmp_serde::to_vec(&(7, "seven")).unwrap();
        let insert = b"INSERT INTO t VALUES (?, ?)";
        assert_eq!(
            cell.call(db, "sqlite_exec", &[insert, &params], false),
            Ok(vec![])
        );
        let rows = cell
            .call(db, "sqlite_query", &[b"SELECT a, b FROM t", &none], true)
            .unwrap();
        let rows: Vec<(i64, String)> = rmp_serde::from_slice(&rows).unwrap();
        assert_eq!(rows, [(7, "seven".to_owned())]);
        // A nil parameter array, as Go sends a nil slice, is no parameters.
        let rows = cell
            .call(
                db,
                "sqlite_query",
                &[b"SELECT count(*) FROM t", b"\xc0"],
                true,
            )
            .unwrap();
        assert_eq!(rmp_serde::from_slice::<Vec<(i64,)>>(&rows).unwrap(), [(1,)]);

        // The rows are in the cell's own database file.
        let file = rusqlite::Connection::open(env.dir.path().join("alpha/data.db")).unwrap();
        let b: String = file.query_row("SELECT b FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(b, "seven");
    }

    #[test]
    fn bad_input_gets_its_code() {
        let env = testenv::Env::new();
        let db = env.capability(super::NAME);
        let mut cell = env.cell(db, "alpha");
        let none = [0x90u8]; // an empty MessagePack array: no parameters

        assert_eq!(cell.call(db, "sqlite_exec", &[b"  ", &none], false), Err(1));
        assert_eq!(
            cell.call(db, "sqlite_exec", &[b"\xff", &none], false),
            Err(3)
        );
        assert_eq!(
            cell.call(db, "sqlite_exec", &[b"SELECT 1", b"\xc1"], false),
            Err(3)
        );
        assert_eq!(
            cell.call(db, "sqlite_exec", &[b"NOT SQL", &none], false),
            Err(5)
        );
        let attach = format!(
            "ATTACH DATABASE '{}' AS other",
            env.dir.path().join("x.db").display()
        );
        assert_eq!(
            cell.call(db, "sqlite_exec", &[attach.as_bytes(), &none], false),
            Err(4)
        );
        assert!(!env.dir.path().join("x.db").exists());
    }
}
