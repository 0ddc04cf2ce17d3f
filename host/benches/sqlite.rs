//! What `storage.sqlite` costs over SQLite itself: one row by primary key,
//! through the `sqlite_query` import from a cell vs with rusqlite directly,
//! on the same database in the same run.
//!
//! - `query/import`: one `pulp_step` whose cell calls `sqlite_query` 100 times
//!   (the row comes back as MessagePack in the cell's memory).
//! - `query/direct`: 100 cached-statement queries reading both columns out.
//!
//! Run: `cargo bench -p pulp-host --bench sqlite`

mod support;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use pulp_ext_api::{HostHandle, HostServices, Level, SetupEnv};
use pulp_host::builtin;
use pulp_host::registry::Registry;
use pulp_host::runtime::{Instance, prepare};

const QUERIES_PER_STEP: u32 = 100;
const SQL: &str = "SELECT id, body FROM items WHERE id = ?";
const ROWS: i64 = 1000;
const KEY: i64 = 500;

/// A cell whose every step runs the query QUERIES_PER_STEP times and traps on
/// any non-zero code. Its `pulp_alloc` hands out one scratch buffer: the bench
/// drops every result.
fn cell_wat() -> String {
    // [500] as a MessagePack array of one uint 16.
    let params = r"\91\cd\01\f4";
    format!(
        r#"(module
            (import "pulp" "sqlite_query" (func $query (param i32 i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "{SQL}")
            (data (i32.const 256) "{params}")
            (func (export "pulp_alloc") (param $size i32) (result i32)
              (select (i32.const 4096) (i32.const 0) (i32.le_u (local.get $size) (i32.const 60000))))
            (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
            (func (export "pulp_step") (param i32 i32) (result i32)
              (local $n i32) (local.set $n (i32.const {QUERIES_PER_STEP}))
              (loop $l
                (if (call $query (i32.const 0) (i32.const {len}) (i32.const 256) (i32.const 4)
                                 (i32.const 512) (i32.const 516))
                  (then unreachable))
                (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
              i32.const 0))"#,
        len = SQL.len(),
    )
}

struct Quiet;

impl HostServices for Quiet {
    fn log(&self, _level: Level, _target: &str, _message: &str) {}

    fn max_level(&self) -> Level {
        Level::Error
    }

    fn wake(&self) {}
}

static QUIET: Quiet = Quiet;

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let storage_dir = dir.path().join("bench");
    std::fs::create_dir_all(&storage_dir).unwrap();

    let direct = rusqlite::Connection::open(storage_dir.join("data.db")).unwrap();
    direct
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        )
        .unwrap();
    let mut insert = direct
        .prepare("INSERT INTO items (id, body) VALUES (?, ?)")
        .unwrap();
    for id in 1..=ROWS {
        insert
            .execute(rusqlite::params![id, format!("item number {id}")])
            .unwrap();
    }
    drop(insert);

    let manifest = support::cell(
        dir.path(),
        "bench",
        &cell_wat(),
        "capabilities = [\"storage.sqlite\"]",
    );
    let bench = support::Bench::new();
    let runtime = &bench.runtime;
    let registry = Registry::new(builtin::all(&bench.services), Vec::new()).unwrap();
    let mut spec = prepare(runtime, &registry, &manifest, 1).unwrap();
    let mut states = Vec::new();
    for entry in &spec.capabilities.declared {
        let env = SetupEnv {
            cell: manifest.name.clone(),
            cell_id: spec.id,
            storage_dir: storage_dir.clone(),
            cell_config: spec.config.clone(),
            ext_config: Vec::new(),
            max_message_bytes: manifest.max_message_bytes,
            call_timeout_ms: manifest.call_timeout_ms,
            allowed_outbound_hosts: Vec::new(),
            host: HostHandle::new(&QUIET),
        };
        states.push(Arc::new(entry.handle.setup(&env).unwrap()));
    }
    spec.states = Arc::new(states);
    let mut cell = Instance::start(runtime, &spec).unwrap();

    let mut group = c.benchmark_group("query");
    group.bench_function("import", |b| b.iter(|| cell.step(None).unwrap()));
    group.bench_function("direct", |b| {
        b.iter(|| {
            for _ in 0..QUERIES_PER_STEP {
                let mut stmt = direct.prepare_cached(SQL).unwrap();
                let row: (i64, String) = stmt
                    .query_row([KEY], |row| Ok((row.get(0)?, row.get(1)?)))
                    .unwrap();
                std::hint::black_box(row);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, sqlite);
criterion_main!(benches);
