//! The extension's runtime, each cell's role, schema and connections, and how
//! one call runs.
//!
//! Isolation: every cell has a LOGIN role of its own (no attributes, member
//! of nothing, password derived from `role_secret`) that owns the cell's
//! schema, and the cell's connections log in as that role. There is no
//! higher role in the session to `RESET ROLE` or `SET ROLE` to, so no script
//! can lift its privileges; other cells' schemas grant it nothing.

use std::sync::OnceLock;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, QueueMode, RecyclingMethod, Runtime,
};
use futures_util::{pin_mut, TryStreamExt};
use pulp_ext_api::Code;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::config::Settings;
use crate::sql;
use crate::value::{encode_column, Param, Raw};

/// The runtime every Postgres call runs on, started with the first cell set
/// up. Import callbacks block on it from the cells' threads; no handle to it
/// leaves the library.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pulp-ext-postgres")
            .enable_all()
            .build()
            .expect("the Postgres runtime starts")
    })
}

/// What a call returns to the cell.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `sqlite_exec`: nothing.
    Nothing,
    /// `sqlite_exec_result`: `{rows_affected, last_insert_id}`.
    Changes,
    /// `sqlite_query`: an array of rows.
    Rows,
    /// `sqlite_query_table`: `{columns, rows}`.
    Table,
}

/// Serialises set-up across hosts sharing the database: roles are created
/// once even when every host starts at the same moment.
const SETUP_LOCK: i64 = 0x7075_6c70_7067; // "pulppg"
const ROLE_MARKER: &str = "pulp-ext-postgres cell role";
/// Reports the last sequence value this session drew, 0 before any; its
/// exception block keeps an open transaction usable when there is none.
const LAST_INSERT_ID: &str = "CREATE OR REPLACE FUNCTION pulp_ext.last_insert_id() RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN lastval();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RETURN 0;
END
$$";
const LAST_INSERT_ID_CALL: &str = "SELECT pulp_ext.last_insert_id()";
const IN_TRANSACTION: &str = "SELECT transaction_timestamp() <> statement_timestamp()";
/// How long past `call_timeout_ms` the library waits for the server to cancel
/// a statement itself before it cancels it from here.
const CANCEL_GRACE: Duration = Duration::from_millis(500);

/// One cell's connections.
pub struct CellDb {
    pool: Pool,
    /// The connection holding the cell's open transaction, which every call
    /// uses until the transaction ends.
    pinned: Mutex<Option<Object>>,
    timeout: Duration,
}

/// `"name"`, with quotes inside doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A password for `role` that every host sharing `secret` derives alike.
fn role_password(secret: &str, role: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"pulp-ext-postgres\0")
        .chain_update(secret.as_bytes())
        .chain_update(b"\0")
        .chain_update(role.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Control characters of server text escaped, so a message cannot forge log lines.
pub fn loggable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Creates (or checks) the cell's role and schema and opens its pool.
pub async fn setup(
    settings: &Settings,
    cell: &str,
    call_timeout: Duration,
) -> Result<CellDb, String> {
    let role = format!("{}{cell}", settings.role_prefix);
    let schema = cell;
    if role.len() > 63 || schema.len() > 63 {
        return Err(format!(
            "the role {role:?} or schema {schema:?} is longer than Postgres' 63 bytes; use a shorter cell name or role_prefix"
        ));
    }
    if schema.starts_with("pg_") || ["public", "information_schema", "pulp_ext"].contains(&schema) {
        return Err(format!(
            "a cell named {cell:?} would use a schema Postgres or the extension reserves; rename the cell"
        ));
    }
    let password = role_password(&settings.role_secret, &role);
    let (mut admin, connection) = settings.admin.connect(NoTls).await.map_err(|e| {
        format!(
            "cannot connect to PostgreSQL as {}: {}; check `url` in [extension.config] or PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE",
            settings.describe(),
            loggable(&error_text(&e))
        )
    })?;
    let driver = tokio::spawn(connection);
    let created = create_role_and_schema(&mut admin, &role, schema, &password)
        .await
        .map_err(|e| format!("setting up role {role} and schema {schema}: {e}"));
    drop(admin);
    let _ = driver.await;
    created?;

    let mut config = settings.admin.clone();
    config
        .user(&role)
        .password(password)
        .application_name(format!("pulp:{cell}"))
        // The server stops a statement at the cell's limit; the library
        // stops waiting shortly after, whatever the session says by then.
        .options(format!(
            "-c statement_timeout={}",
            call_timeout.as_millis().max(1)
        ));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size)
        // One cell calls one at a time: reuse the warm connection.
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| format!("connection pool: {e}"))?;
    // The cell's own login works now, or start-up says why.
    drop(
        pool.get()
            .await
            .map_err(|e| format!("cannot log in as the cell's role {role}: {e}"))?,
    );
    Ok(CellDb {
        pool,
        pinned: Mutex::new(None),
        timeout: call_timeout,
    })
}

async fn create_role_and_schema(
    admin: &mut Client,
    role: &str,
    schema: &str,
    password: &str,
) -> Result<(), String> {
    let tx = admin.transaction().await.map_err(|e| error_text(&e))?;
    let db = |e: tokio_postgres::Error| loggable(&error_text(&e));
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute("CREATE SCHEMA IF NOT EXISTS pulp_ext")
        .await
        .map_err(db)?;
    tx.batch_execute(LAST_INSERT_ID).await.map_err(db)?;
    let existing = tx
        .query_opt(
            "SELECT shobj_description(r.oid, 'pg_authid'),
                    EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid)
             FROM pg_roles r WHERE r.rolname = $1",
            &[&role],
        )
        .await
        .map_err(db)?;
    match existing {
        None => {
            tx.batch_execute(&format!(
                "CREATE ROLE {r} LOGIN; COMMENT ON ROLE {r} IS '{ROLE_MARKER}'",
                r = ident(role)
            ))
            .await
            .map_err(db)?;
        }
        Some(row) => {
            let comment: Option<String> = row.get(0);
            let member: bool = row.get(1);
            if comment.as_deref() != Some(ROLE_MARKER) {
                return Err(format!(
                    "the role {role} exists and was not created by pulp-ext-postgres; drop it or set another role_prefix"
                ));
            }
            if member {
                return Err(format!(
                    "the role {role} has been granted other roles; a cell's role must be a member of none (REVOKE them)"
                ));
            }
        }
    }
    // Re-applied on every start: whatever the cell did to its own role
    // (a new password, session defaults) does not outlive a restart.
    let superuser: bool = tx
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let r = ident(role);
    let s = ident(schema);
    let mut script = format!(
        "ALTER ROLE {r} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS PASSWORD '{password}';
         ALTER ROLE {r} RESET ALL;
         ALTER ROLE {r} SET search_path TO {s};"
    );
    if !superuser {
        // Creating a schema for another role takes membership in it.
        script.push_str(&format!("GRANT {r} TO CURRENT_USER;"));
    }
    tx.batch_execute(&script).await.map_err(db)?;
    let owner: Option<String> = tx
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(db)?
        .map(|row| row.get(0));
    match owner {
        None => tx
            .batch_execute(&format!("CREATE SCHEMA {s} AUTHORIZATION {r}"))
            .await
            .map_err(db)?,
        Some(owner) if owner == role => {}
        Some(owner) => {
            return Err(format!(
                "the schema {schema} exists and belongs to {owner}, not to {role}"
            ))
        }
    }
    tx.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA pulp_ext TO {r};
         GRANT EXECUTE ON FUNCTION pulp_ext.last_insert_id() TO {r};
         DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), {role_literal}); END $$;",
        role_literal = format_args!("'{}'", role.replace('\'', "''"))
    ))
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// The server's message when there is one, else the client's.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    }
}

/// A failed call: the code, and the log line saying why.
struct Failure {
    code: Code,
    message: Option<String>,
}

impl Failure {
    fn quiet(code: Code) -> Failure {
        Failure {
            code,
            message: None,
        }
    }
}

impl CellDb {
    pub async fn call(
        &self,
        cell: &str,
        sql: &str,
        params: &[Param<'_>],
        shape: Shape,
        limit: u64,
    ) -> Result<Vec<u8>, Code> {
        let prepared = sql::prepare(sql);
        let text = sql::sqlite_begin(&prepared.text);
        let deadline = Instant::now() + self.timeout + CANCEL_GRACE;
        let mut slot = self.pinned.lock().await;
        let (conn, mut slot) = match slot.take() {
            Some(conn) => (conn, Some(slot)),
            None => {
                drop(slot);
                match tokio::time::timeout_at(deadline, self.pool.get()).await {
                    Ok(Ok(conn)) => (conn, None),
                    Ok(Err(e)) => {
                        tracing::warn!(
                            cell,
                            "storage.sqlite: cannot reach PostgreSQL: {}",
                            loggable(&e.to_string())
                        );
                        return Err(Code::FAILED);
                    }
                    Err(_) => {
                        tracing::warn!(
                            cell,
                            "storage.sqlite: no connection to PostgreSQL within call_timeout_ms = {}",
                            self.timeout.as_millis()
                        );
                        return Err(Code::FAILED);
                    }
                }
            }
        };
        let was_pinned = slot.is_some();
        let run = run(
            &conn,
            text,
            &prepared.first,
            params,
            shape,
            limit,
            self.timeout,
        );
        let (result, check) = match tokio::time::timeout_at(deadline, run).await {
            Ok(result) => {
                let check = prepared.transaction_control || (was_pinned && result.is_err());
                (result, check)
            }
            Err(_) => {
                // The session may have lifted its statement_timeout: cancel here.
                let _ = conn.cancel_token().cancel_query(NoTls).await;
                (Err(timed_out(self.timeout)), true)
            }
        };
        let keep = if check {
            match in_transaction(&conn).await {
                Some(open) => open,
                None => {
                    // The connection is broken: it goes, and any transaction with it.
                    let _ = Object::take(conn);
                    return finish(cell, result);
                }
            }
        } else {
            was_pinned
        };
        if keep {
            let mut slot = match slot.take() {
                Some(slot) => slot,
                None => self.pinned.lock().await,
            };
            if slot.is_some() {
                // Two calls of one cell opened transactions at once; the
                // built-in has one connection and would have refused the second.
                tracing::warn!(
                    cell,
                    "storage.sqlite: a second transaction was opened while one is open; rolling it back"
                );
                let _ = conn.batch_execute("ROLLBACK").await;
                return finish(cell, Err(Failure::quiet(Code::FAILED)));
            }
            *slot = Some(conn);
        }
        finish(cell, result)
    }

    /// Rolls back what the cell left open, logged: `why` says when.
    pub async fn rollback_open(&self, cell: &str, why: &str) {
        let Some(conn) = self.pinned.lock().await.take() else {
            return;
        };
        tracing::warn!(
            cell,
            "storage.sqlite: rolling back the transaction the {why} cell left open"
        );
        if let Err(e) = conn.batch_execute("ROLLBACK").await {
            tracing::error!(
                cell,
                "storage.sqlite: rollback failed: {}",
                loggable(&error_text(&e))
            );
            let _ = Object::take(conn);
        }
    }

    pub fn close(&self) {
        self.pool.close();
    }
}

fn timed_out(timeout: Duration) -> Failure {
    Failure {
        code: Code::FAILED,
        message: Some(format!(
            "statement interrupted: it ran past call_timeout_ms = {}",
            timeout.as_millis()
        )),
    }
}

fn finish(cell: &str, result: Result<Vec<u8>, Failure>) -> Result<Vec<u8>, Code> {
    result.map_err(|failure| {
        if let Some(message) = failure.message {
            tracing::warn!(cell, "storage.sqlite: {message}");
        }
        failure.code
    })
}

/// Whether the connection is inside a transaction block; `None` when it is broken.
async fn in_transaction(conn: &Client) -> Option<bool> {
    match conn.simple_query(IN_TRANSACTION).await {
        Ok(messages) => messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0) == Some("t")),
            _ => None,
        }),
        // Only a failed transaction block refuses a plain SELECT.
        Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => Some(true),
        Err(_) => None,
    }
}

/// Maps a Postgres error to the cell's code, with the line saying why.
fn failure(conn: &Object, e: tokio_postgres::Error, timeout: Duration) -> Failure {
    let Some(db) = e.as_db_error() else {
        return Failure {
            code: Code::FAILED,
            message: Some(loggable(&e.to_string())),
        };
    };
    let message = loggable(db.message());
    let (code, message) = match *db.code() {
        SqlState::QUERY_CANCELED => (
            Code::FAILED,
            format!(
                "statement interrupted: it ran past call_timeout_ms = {}: {message}",
                timeout.as_millis()
            ),
        ),
        SqlState::INSUFFICIENT_PRIVILEGE => (
            Code::REFUSED,
            format!("statement refused (a cell reaches its own schema only): {message}"),
        ),
        // The cell changed a table under a prepared statement, or dropped
        // the prepared statements (`DEALLOCATE ALL`, `DISCARD ALL`): the
        // next call prepares afresh.
        SqlState::FEATURE_NOT_SUPPORTED if message.contains("cached plan") => {
            conn.statement_cache.clear();
            (Code::FAILED, message)
        }
        SqlState::INVALID_SQL_STATEMENT_NAME => {
            conn.statement_cache.clear();
            (Code::FAILED, message)
        }
        _ => (Code::FAILED, message),
    };
    Failure {
        code,
        message: Some(message),
    }
}

const WRITE: &str = "vec write";

async fn run(
    conn: &Object,
    text: &str,
    first: &str,
    params: &[Param<'_>],
    shape: Shape,
    limit: u64,
    timeout: Duration,
) -> Result<Vec<u8>, Failure> {
    let fail = |e| failure(conn, e, timeout);
    match shape {
        Shape::Nothing | Shape::Changes => {
            let changes = if params.is_empty() {
                // Perhaps a script of several statements: the simple protocol
                // runs it whole; rows it yields are read and dropped.
                let changes = script(conn, text).await.map_err(fail)?;
                if matches!(first, "CREATE" | "ALTER" | "DROP") {
                    // Statements prepared against the old tables would fail once.
                    conn.statement_cache.clear();
                }
                changes
            } else {
                let statement = conn.prepare_cached(text).await.map_err(fail)?;
                conn.execute_raw(&statement, params).await.map_err(fail)?
            };
            if shape == Shape::Nothing {
                return Ok(Vec::new());
            }
            // In a failed transaction block this fails too; the cell then
            // hears of the statement's own error, not of this.
            let last = match conn.prepare_cached(LAST_INSERT_ID_CALL).await {
                Ok(statement) => conn
                    .query_one(&statement, &[])
                    .await
                    .map_or(0, |row| row.get::<_, i64>(0)),
                Err(_) => 0,
            };
            let mut out = Vec::with_capacity(40);
            rmp::encode::write_map_len(&mut out, 2).expect(WRITE);
            rmp::encode::write_str(&mut out, "rows_affected").expect(WRITE);
            rmp::encode::write_i64(&mut out, changes as i64).expect(WRITE);
            rmp::encode::write_str(&mut out, "last_insert_id").expect(WRITE);
            rmp::encode::write_i64(&mut out, last).expect(WRITE);
            Ok(out)
        }
        Shape::Rows | Shape::Table => {
            let statement = conn.prepare_cached(text).await.map_err(fail)?;
            let columns = statement.columns();
            let mut out = Vec::with_capacity(64);
            if shape == Shape::Table {
                rmp::encode::write_map_len(&mut out, 2).expect(WRITE);
                rmp::encode::write_str(&mut out, "columns").expect(WRITE);
                rmp::encode::write_array_len(&mut out, columns.len() as u32).expect(WRITE);
                for column in columns {
                    rmp::encode::write_str(&mut out, column.name()).expect(WRITE);
                }
                rmp::encode::write_str(&mut out, "rows").expect(WRITE);
            }
            // The row count comes first in MessagePack but is known last:
            // reserve the widest array header and patch it.
            let header_at = out.len();
            out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
            let mut count: u32 = 0;
            let rows = conn.query_raw(&statement, params).await.map_err(fail)?;
            pin_mut!(rows);
            // Read row by row: past `limit` the rest is dropped unread.
            while let Some(row) = rows.try_next().await.map_err(fail)? {
                rmp::encode::write_array_len(&mut out, columns.len() as u32).expect(WRITE);
                for (index, column) in columns.iter().enumerate() {
                    let Raw(raw) = row.try_get(index).map_err(fail)?;
                    encode_column(&mut out, column.type_(), raw).map_err(|e| Failure {
                        code: Code::FAILED,
                        message: Some(format!(
                            "column {:?}: {}; cast it in the query (e.g. {}::text)",
                            column.name(),
                            e.0,
                            column.name()
                        )),
                    })?;
                    if out.len() as u64 > limit {
                        return Err(Failure::quiet(Code::TOO_LARGE));
                    }
                }
                count += 1;
            }
            out[header_at + 1..header_at + 5].copy_from_slice(&count.to_be_bytes());
            Ok(out)
        }
    }
}

/// Runs `text` with the simple protocol; the rows its last statement changed.
async fn script(conn: &Client, text: &str) -> Result<u64, tokio_postgres::Error> {
    let messages = conn.simple_query_raw(text).await?;
    pin_mut!(messages);
    let mut changes = 0;
    while let Some(message) = messages.try_next().await? {
        if let SimpleQueryMessage::CommandComplete(n) = message {
            changes = n;
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_passwords() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let one = role_password("s", "pulp_a");
        assert_eq!(one, role_password("s", "pulp_a"));
        assert_ne!(one, role_password("t", "pulp_a"));
        assert_eq!(one.len(), 64);
        assert_eq!(loggable("a\nb"), "a\\nb");
    }
}
