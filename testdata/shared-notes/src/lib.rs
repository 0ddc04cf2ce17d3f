//! A notes service that several hosts can serve at once: notes in
//! `storage.sqlite`, attachments in `storage.s3`. Its SQL is what SQLite and
//! PostgreSQL both accept, so it runs unchanged on the built-in provider and
//! on pulp-ext-postgres.
//!
//! - `PUT /notes/:key` (body = text) → 201; `GET /notes/:key` → the text;
//!   `GET /notes` → the keys, one a line
//! - `PUT|GET /notes/:key/attachment` → the attachment, in S3
//! - `POST /batch` (`key=text` lines) → 201, in one transaction spread over
//!   several `sqlite_exec` calls; a line without `=` fails it, rolled back
//!
//! And for the tests: `POST /crash` begins a transaction, writes the note
//! `crash` and traps; `POST /begin` and `POST /commit` leave a transaction
//! open between requests; `POST /exec` runs its body with `exec`,
//! `POST /sql` with `exec_result`, `POST /query` with `query_table` (the `p1`,
//! `p2`... query parameters are its string parameters; the answer is a line
//! of column names, then one line per row, tab-separated); `GET /types`
//! round-trips every SQL type; `GET /repeat/:key?n=N` reads the note N
//! times (the benchmark's per-query cost). Import failures answer with the code in the
//! body (`code N`). `[config] instance = "..."` is sent back in `x-instance`.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::sqlite::{self, Value};
use pulp_guest::{export_cell, log, s3, Cell, Code, Config, Step};

const ROUTES: [(&str, &str); 14] = [
    ("PUT", "/notes/:key"),
    ("GET", "/notes/:key"),
    ("GET", "/notes"),
    ("PUT", "/notes/:key/attachment"),
    ("GET", "/notes/:key/attachment"),
    ("POST", "/batch"),
    ("POST", "/crash"),
    ("POST", "/begin"),
    ("POST", "/commit"),
    ("POST", "/exec"),
    ("POST", "/sql"),
    ("POST", "/query"),
    ("GET", "/types"),
    ("GET", "/repeat/:key"),
];

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS types (n TEXT, i BIGINT, f DOUBLE PRECISION, t TEXT, b BYTEA)",
];

const UPSERT: &str = "INSERT INTO notes (key, body) VALUES (?, ?) \
     ON CONFLICT (key) DO UPDATE SET body = excluded.body";

struct Notes {
    instance: String,
}

impl Cell for Notes {
    fn init(config: Config) -> Result<Self, String> {
        let instance = config
            .get("instance")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for statement in SCHEMA {
            // Hosts sharing one database may race to create the tables.
            let mut result = sqlite::exec(statement, &[]);
            for _ in 0..3 {
                if result.is_ok() {
                    break;
                }
                result = sqlite::exec(statement, &[]);
            }
            result.map_err(|code| format!("schema: {code}"))?;
        }
        for (method, path) in ROUTES {
            http::register(method, path).map_err(|code| format!("{method} {path}: {code}"))?;
        }
        log::info("shared-notes ready");
        Ok(Notes { instance })
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let response = answer(&request).unwrap_or_else(|code| failure(request.id, code));
        let response = response.header("x-instance", &self.instance);
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed: {code}"));
        }
        0
    }
}

/// The status an import's failure maps to, with the code in the body.
fn failure(id: u64, code: Code) -> Response {
    let status = match code {
        Code::EMPTY | Code::DECODE => 400,
        Code::REFUSED => 403,
        Code::NOT_FOUND => 404,
        Code::TOO_LARGE => 413,
        _ => 500,
    };
    Response::new(id, status).body(format!("code {}", code.raw()))
}

fn answer(request: &Request) -> Result<Response, Code> {
    let ok = Response::new(request.id, 200);
    let created = Response::new(request.id, 201);
    let key = request.params.get("key").map_or("", String::as_str);
    let body = String::from_utf8_lossy(&request.body);
    let segments: Vec<&str> = request.path.split('/').skip(1).collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("PUT", ["notes", _]) => {
            sqlite::exec(UPSERT, &[key.into(), body.as_ref().into()])?;
            Ok(created)
        }
        ("GET", ["notes", _]) => {
            let rows = sqlite::query("SELECT body FROM notes WHERE key = ?", &[key.into()])?;
            let text = rows
                .first()
                .and_then(|row| row[0].as_str())
                .ok_or(Code::NOT_FOUND)?;
            Ok(ok.body(text))
        }
        ("GET", ["notes"]) => {
            let rows = sqlite::query("SELECT key FROM notes ORDER BY key", &[])?;
            let keys: Vec<&str> = rows.iter().filter_map(|row| row[0].as_str()).collect();
            Ok(ok.body(keys.join("\n")))
        }
        ("PUT", ["notes", _, "attachment"]) => {
            s3::put(&format!("attachments/{key}"), &request.body)?;
            Ok(created)
        }
        ("GET", ["notes", _, "attachment"]) => {
            let object = s3::get(&format!("attachments/{key}"))?;
            Ok(ok.body(object.body))
        }
        ("POST", ["batch"]) => {
            add_batch(&body)?;
            Ok(created)
        }
        ("POST", ["crash"]) => {
            sqlite::exec("BEGIN", &[])?;
            sqlite::exec(UPSERT, &["crash".into(), "never committed".into()])?;
            panic!("shared-notes: crashing with a transaction open");
        }
        ("POST", ["begin"]) => {
            sqlite::exec("BEGIN", &[])?;
            sqlite::exec(UPSERT, &["pending".into(), body.as_ref().into()])?;
            Ok(ok)
        }
        ("POST", ["commit"]) => {
            sqlite::exec("COMMIT", &[])?;
            Ok(ok)
        }
        ("POST", ["exec"]) => {
            sqlite::exec(&body, &[])?;
            Ok(ok)
        }
        ("POST", ["sql"]) => {
            let changes = sqlite::exec_result(&body, &[])?;
            Ok(ok.body(format!(
                "rows_affected={} last_insert_id={}",
                changes.rows_affected, changes.last_insert_id
            )))
        }
        ("POST", ["query"]) => {
            let params: Vec<Value> = (1..)
                .map_while(|n| request.query.get(&format!("p{n}")))
                .map(|p| p.as_str().into())
                .collect();
            let table = sqlite::query_table(&body, &params)?;
            let mut lines = vec![table.columns.join("\t")];
            for row in &table.rows {
                let cells: Vec<String> = row.iter().map(show).collect();
                lines.push(cells.join("\t"));
            }
            Ok(ok.body(lines.join("\n")))
        }
        ("GET", ["types"]) => round_trip_types(request.id),
        ("GET", ["repeat", _]) => {
            let n: u32 = request
                .query
                .get("n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let mut found = 0;
            for _ in 0..n {
                found +=
                    sqlite::query("SELECT body FROM notes WHERE key = ?", &[key.into()])?.len();
            }
            Ok(ok.body(found.to_string()))
        }
        _ => Ok(Response::new(request.id, 404)),
    }
}

/// A value as the tests read it: `NULL`, `i:1`, `f:1.5`, `t:text`, `b:00ff`.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(i) => format!("i:{i}"),
        Value::Real(f) => format!("f:{f:?}"),
        Value::Text(t) => format!("t:{t}"),
        Value::Blob(b) => format!(
            "b:{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// All lines or none: the transaction spans one `sqlite_exec` per statement.
fn add_batch(body: &str) -> Result<(), Code> {
    sqlite::exec("BEGIN IMMEDIATE", &[])?;
    for line in body.lines() {
        let added = match line.split_once('=') {
            Some((key, text)) => sqlite::exec(UPSERT, &[key.into(), text.into()]),
            None => Err(Code::DECODE),
        };
        if let Err(code) = added {
            sqlite::exec("ROLLBACK", &[])?;
            return Err(code);
        }
    }
    sqlite::exec("COMMIT", &[])
}

/// Stores one value of each SQL type and reads the row back; answers `ok`
/// or what differed.
fn round_trip_types(id: u64) -> Result<Response, Code> {
    let row = vec![
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Real(-1.5),
        Value::Text("grüße".into()),
        Value::Blob(vec![0, 255, 7]),
    ];
    sqlite::exec("DELETE FROM types", &[])?;
    sqlite::exec(
        "INSERT INTO types (n, i, f, t, b) VALUES (?, ?, ?, ?, ?)",
        &row,
    )?;
    let table = sqlite::query_table("SELECT n, i, f, t, b FROM types", &[])?;
    let body = if table.columns != ["n", "i", "f", "t", "b"] {
        format!("columns {:?}", table.columns)
    } else if table.rows != [row.clone()] {
        format!("rows {:?}", table.rows)
    } else {
        "ok".to_owned()
    };
    Ok(Response::new(id, 200).body(body))
}

export_cell!(Notes);
