//! `storage.sqlite` (provider `pulp-ext-postgres`): the built-in's imports,
//! formats and codes, backed by PostgreSQL. An operator moves cells onto it
//! with `[providers] "storage.sqlite" = "pulp-ext-postgres"` in their
//! manifests; the cells do not change where the two SQL dialects agree.
//!
//! | import | result |
//! |---|---|
//! | `sqlite_exec` | |
//! | `sqlite_exec_result` | `{rows_affected, last_insert_id}` |
//! | `sqlite_query` | `[[value]]` |
//! | `sqlite_query_table` | `{columns, rows}` |
//!
//! Each cell gets a schema named after it, owned by a LOGIN role of its own
//! (`<role_prefix><cell>`), created at set-up; the cell's connections log in as
//! that role, so its SQL reaches its own schema only. `?` placeholders become
//! `$n`; values map to the built-in's MessagePack (int 64, float 64, `str`,
//! `bin`, nil). Codes: 1, 3, 4 (a statement the cell's role may not run), 5 (a
//! Postgres error, logged with the server's message), 9 (a result over
//! `max_message_bytes`), as the built-in.
//!
//! Configuration: `[extension.config]` keys `url`, `pool_size`, `role_prefix`,
//! `role_secret`, `connect_timeout_ms`; what `url` leaves out comes from
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`. A server that
//! cannot be reached at set-up stops start-up with one error line.

mod config;
mod db;
pub mod sql;
pub mod value;

use std::time::Duration;

use pulp_ext_api::{Capability, CellState, Code, Guest, HostImport, SetupEnv};

use crate::config::ExtConfig;
use crate::db::{runtime, CellDb, Shape};

pub const PROVIDER: &str = "pulp-ext-postgres";

struct Postgres;

impl Capability for Postgres {
    fn name(&self) -> &str {
        "storage.sqlite"
    }

    fn provider(&self) -> &str {
        PROVIDER
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
        let config: ExtConfig = env.ext_config()?;
        let settings = config.resolve(|name| std::env::var(name).ok())?;
        let timeout = Duration::from_millis(env.call_timeout_ms.max(1));
        let db = runtime()
            .block_on(db::setup(&settings, &env.cell, timeout))
            .map_err(|e| format!("storage.sqlite ({PROVIDER}) for cell {}: {e}", env.cell))?;
        tracing::info!(
            cell = env.cell,
            "storage.sqlite for cell {} on PostgreSQL {}, schema {}",
            env.cell,
            settings.describe(),
            env.cell
        );
        Ok(CellState::new(db))
    }

    fn cell_failed(&self, cell: &str, state: &CellState) {
        // A crashed instance cannot finish its transaction; its restart must
        // not inherit it (nor its locks).
        if let Some(db) = state.get::<CellDb>() {
            runtime().block_on(db.rollback_open(cell, "failed"));
        }
    }

    fn teardown_cell(&self, cell: &str, state: &CellState) {
        if let Some(db) = state.get::<CellDb>() {
            runtime().block_on(db.rollback_open(cell, "stopped"));
            db.close();
        }
    }
}

fn call(guest: &Guest<'_>, sql: &[u8], params: &[u8], shape: Shape) -> Result<Vec<u8>, Code> {
    let db = guest.state::<CellDb>()?;
    let sql = std::str::from_utf8(sql).map_err(|_| Code::DECODE)?;
    if sql.trim().is_empty() {
        return Err(Code::EMPTY);
    }
    let params = value::decode_params(params).ok_or(Code::DECODE)?;
    let limit = guest.max_message_bytes();
    runtime().block_on(db.call(guest.cell(), sql, &params, shape, limit))
}

fn capabilities() -> Vec<Box<dyn Capability>> {
    vec![Box::new(Postgres)]
}

pulp_ext_api::export_extension!(capabilities);
