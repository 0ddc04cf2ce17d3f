//! A small notes service: notes in SQLite, their attachments in storage.fs.
//!
//! - `POST /notes` (body = text) → 201 with the new id
//! - `POST /notes/batch` (one note per line) → 201 with the ids, in one
//!   transaction spread over several `sqlite_exec` calls
//! - `GET /notes` → `id<TAB>text` lines; `GET /notes/:id` → the text
//! - `DELETE /notes/:id` → 204, with its attachments
//! - `PUT|GET /notes/:id/files/:name`, `GET /notes/:id/files` → attachments
//!
//! And for the tests: `POST /notes/crash` begins a transaction, inserts and
//! traps before committing; `POST /sql` runs its body with `exec_result`,
//! `POST /query` with `query` (answering `rows=<count>`);
//! `GET /types` round-trips every SQL type; `GET|PUT|DELETE /raw?path=` and
//! `GET /raw-list?prefix=` reach storage.fs with any path. Import failures
//! answer with the code in the body (`code N`).
//!
//! `[config] prefix = "/b"` serves every route under that prefix, so two
//! copies of the cell can run on one host.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::sqlite::{self, Value};
use pulp_guest::{export_cell, fs, log, Cell, Code, Config, Step};

const ROUTES: [(&str, &str); 16] = [
    ("POST", "/notes"),
    ("POST", "/notes/batch"),
    ("POST", "/notes/crash"),
    ("GET", "/notes"),
    ("GET", "/notes/:id"),
    ("DELETE", "/notes/:id"),
    ("GET", "/notes/:id/files"),
    ("PUT", "/notes/:id/files/:name"),
    ("GET", "/notes/:id/files/:name"),
    ("POST", "/sql"),
    ("POST", "/query"),
    ("GET", "/types"),
    ("GET", "/raw"),
    ("PUT", "/raw"),
    ("DELETE", "/raw"),
    ("GET", "/raw-list"),
];

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS types (n, i, f, t, b);";

struct Notes {
    prefix: String,
}

impl Cell for Notes {
    fn init(config: Config) -> Result<Self, String> {
        let prefix = config
            .get("prefix")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        sqlite::exec(SCHEMA, &[]).map_err(|code| format!("schema: {code}"))?;
        for (method, path) in ROUTES {
            let path = format!("{prefix}{path}");
            http::register(method, &path).map_err(|code| format!("{method} {path}: {code}"))?;
        }
        log::info("notes ready");
        Ok(Notes { prefix })
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let id = request.id;
        let path = request
            .path
            .strip_prefix(self.prefix.as_str())
            .unwrap_or_default();
        let response = answer(&request, path).unwrap_or_else(|code| failure(id, code));
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed: {code}"));
        }
        0
    }
}

type Answer = Result<Response, Code>;

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

/// Answers `request`, whose path without the cell's prefix is `path`.
fn answer(request: &Request, path: &str) -> Answer {
    let ok = Response::new(request.id, 200);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let param = |name: &str| request.params.get(name).map_or("", String::as_str);
    let query = |name: &str| request.query.get(name).map_or("", String::as_str);
    match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["notes"]) => {
            let text = String::from_utf8_lossy(&request.body);
            let added = sqlite::exec_result(
                "INSERT INTO notes (text) VALUES (?)",
                &[text.as_ref().into()],
            )?;
            Ok(Response::new(request.id, 201).body(added.last_insert_id.to_string()))
        }
        ("POST", ["notes", "batch"]) => {
            let ids = add_batch(&String::from_utf8_lossy(&request.body))?;
            Ok(Response::new(request.id, 201).body(ids.join("\n")))
        }
        ("POST", ["notes", "crash"]) => {
            sqlite::exec("BEGIN", &[])?;
            sqlite::exec("INSERT INTO notes (text) VALUES ('never committed')", &[])?;
            panic!("notes: crashing with a transaction open");
        }
        ("GET", ["notes"]) => {
            let rows = sqlite::query("SELECT id, text FROM notes ORDER BY id", &[])?;
            let lines: Vec<String> = rows
                .iter()
                .map(|row| {
                    let id = row[0].as_i64().unwrap_or_default();
                    format!("{id}\t{}", row[1].as_str().unwrap_or_default())
                })
                .collect();
            Ok(ok.body(lines.join("\n")))
        }
        ("GET", ["notes", _]) => {
            let rows = sqlite::query(
                "SELECT text FROM notes WHERE id = ?",
                &[note_id(param("id"))?],
            )?;
            let text = rows
                .first()
                .and_then(|row| row[0].as_str())
                .ok_or(Code::NOT_FOUND)?;
            Ok(ok.body(text))
        }
        ("DELETE", ["notes", _]) => {
            let id = param("id");
            let deleted = sqlite::exec_result("DELETE FROM notes WHERE id = ?", &[note_id(id)?])?;
            if deleted.rows_affected == 0 {
                return Err(Code::NOT_FOUND);
            }
            for path in fs::list(&format!("notes/{id}/"))? {
                fs::delete(&path)?;
            }
            Ok(Response::new(request.id, 204))
        }
        ("GET", ["notes", _, "files"]) => {
            let id = param("id");
            exists(id)?;
            let dir = format!("notes/{id}/");
            let names: Vec<String> = fs::list(&dir)?
                .into_iter()
                .map(|path| path[dir.len()..].to_owned())
                .collect();
            Ok(ok.body(names.join("\n")))
        }
        ("PUT", ["notes", _, "files", _]) => {
            let id = param("id");
            exists(id)?;
            fs::write(&format!("notes/{id}/{}", param("name")), &request.body)?;
            Ok(Response::new(request.id, 201))
        }
        ("GET", ["notes", _, "files", _]) => {
            let data = fs::read(&format!("notes/{}/{}", param("id"), param("name")))?;
            Ok(ok.body(data.to_vec()))
        }
        ("POST", ["sql"]) => {
            let sql = String::from_utf8_lossy(&request.body);
            let changes = sqlite::exec_result(&sql, &[])?;
            Ok(ok.body(format!(
                "rows_affected={} last_insert_id={}",
                changes.rows_affected, changes.last_insert_id
            )))
        }
        ("POST", ["query"]) => {
            let sql = String::from_utf8_lossy(&request.body);
            let rows = sqlite::query(&sql, &[])?;
            Ok(ok.body(format!("rows={}", rows.len())))
        }
        ("GET", ["types"]) => round_trip_types(request.id),
        ("GET", ["raw"]) => Ok(ok.body(fs::read(query("path"))?.to_vec())),
        ("PUT", ["raw"]) => {
            fs::write(query("path"), &request.body)?;
            Ok(Response::new(request.id, 201))
        }
        ("DELETE", ["raw"]) => {
            fs::delete(query("path"))?;
            Ok(Response::new(request.id, 204))
        }
        ("GET", ["raw-list"]) => Ok(ok.body(fs::list(query("prefix"))?.join("\n"))),
        _ => Ok(Response::new(request.id, 404)),
    }
}

fn note_id(text: &str) -> Result<Value, Code> {
    text.parse::<i64>()
        .map(Value::from)
        .map_err(|_| Code::NOT_FOUND)
}

fn exists(id: &str) -> Result<(), Code> {
    let rows = sqlite::query("SELECT 1 FROM notes WHERE id = ?", &[note_id(id)?])?;
    if rows.is_empty() {
        return Err(Code::NOT_FOUND);
    }
    Ok(())
}

/// All lines or none: the transaction spans one `sqlite_exec` per statement.
fn add_batch(body: &str) -> Result<Vec<String>, Code> {
    sqlite::exec("BEGIN IMMEDIATE", &[])?;
    let mut ids = Vec::new();
    for line in body.lines() {
        let added = sqlite::exec_result("INSERT INTO notes (text) VALUES (?)", &[line.into()]);
        match added {
            Ok(added) => ids.push(added.last_insert_id.to_string()),
            Err(code) => {
                sqlite::exec("ROLLBACK", &[])?;
                return Err(code);
            }
        }
    }
    sqlite::exec("COMMIT", &[])?;
    Ok(ids)
}

/// Stores one value of each SQL type and reads the row back; answers `ok`
/// or what differed.
fn round_trip_types(id: u64) -> Answer {
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
    let expected_columns = ["n", "i", "f", "t", "b"];
    let body = if table.columns != expected_columns {
        format!("columns {:?}", table.columns)
    } else if table.rows != [row.clone()] {
        format!("rows {:?}", table.rows)
    } else {
        "ok".to_owned()
    };
    Ok(Response::new(id, 200).body(body))
}

export_cell!(Notes);
