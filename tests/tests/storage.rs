//! storage.fs and storage.sqlite through the real binary: the `notes` cell over
//! HTTP, the real SQLite file read back with rusqlite, the real directory tree.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulp_e2e::{Scratch, cell, http_client, start_http};
use reqwest::blocking::{Client, Response};

struct Notes {
    http: Client,
    base: String,
}

impl Notes {
    fn new(port: u16, prefix: &str) -> Notes {
        Notes {
            http: http_client(),
            base: format!("http://127.0.0.1:{port}{prefix}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().unwrap()
    }

    fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.http.post(self.url(path)).body(body).send().unwrap()
    }

    fn put(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.http.put(self.url(path)).body(body).send().unwrap()
    }

    fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).send().unwrap()
    }

    fn add(&self, text: &str) -> i64 {
        let r = self.post("/notes", text.to_owned());
        assert_eq!(r.status(), 201);
        r.text().unwrap().parse().unwrap()
    }

    /// Status and body of a GET.
    fn fetch(&self, path: &str) -> (u16, String) {
        let r = self.get(path);
        (r.status().as_u16(), r.text().unwrap())
    }
}

fn files_dir(scratch: &Scratch, cell: &str) -> PathBuf {
    scratch.path().join("data").join(cell).join("files")
}

/// A notes cell named `name` serving under `prefix`.
fn notes_variant(scratch: &Scratch, name: &str, prefix: &str) -> PathBuf {
    scratch.manifest_variant("notes", &format!("{name}.toml"), |text| {
        let text = text.replace("name = \"notes\"", &format!("name = \"{name}\""));
        format!("{text}\n[config]\nprefix = \"{prefix}\"\n")
    })
}

fn query_db(path: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn notes_service_keeps_notes_and_attachments_across_restart() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let notes = Notes::new(port, "");

    let first = notes.add("buy milk");
    let second = notes.add("call home");
    assert_eq!(
        notes.fetch(&format!("/notes/{first}")),
        (200, "buy milk".into())
    );
    assert_eq!(
        notes.fetch("/notes"),
        (200, format!("{first}\tbuy milk\n{second}\tcall home"))
    );
    assert_eq!(notes.fetch("/notes/999").0, 404);

    let picture: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let r = notes.put(
        &format!("/notes/{first}/files/receipt.png"),
        picture.clone(),
    );
    assert_eq!(r.status(), 201);
    assert_eq!(notes.put("/notes/999/files/x", "x").status(), 404);
    assert_eq!(
        notes
            .put(&format!("/notes/{second}/files/a.txt"), "a")
            .status(),
        201
    );
    let r = notes.get(&format!("/notes/{first}/files/receipt.png"));
    assert_eq!(r.bytes().unwrap().to_vec(), picture);
    assert_eq!(
        notes.fetch(&format!("/notes/{first}/files")),
        (200, "receipt.png".into())
    );
    // The attachment is a plain file under the cell's own directory.
    let on_disk = files_dir(&scratch, "notes").join(format!("notes/{first}/receipt.png"));
    assert_eq!(std::fs::read(&on_disk).unwrap(), picture);

    assert_eq!(notes.delete(&format!("/notes/{second}")).status(), 204);
    assert_eq!(notes.delete(&format!("/notes/{second}")).status(), 404);
    assert_eq!(notes.fetch(&format!("/notes/{second}/files/a.txt")).0, 404);
    assert!(
        !files_dir(&scratch, "notes")
            .join(format!("notes/{second}/a.txt"))
            .exists()
    );

    let (status, _) = pulp.stop("TERM");
    assert!(status.success());

    // The database is a real SQLite file in WAL mode, readable by any client.
    let db = scratch.path().join("data/notes/data.db");
    assert_eq!(query_db(&db, "PRAGMA journal_mode"), ["wal"]);
    assert_eq!(query_db(&db, "SELECT text FROM notes"), ["buy milk"]);

    let (_pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let notes = Notes::new(port, "");
    assert_eq!(
        notes.fetch(&format!("/notes/{first}")),
        (200, "buy milk".into())
    );
    let r = notes.get(&format!("/notes/{first}/files/receipt.png"));
    assert_eq!(r.bytes().unwrap().to_vec(), picture);
    assert!(notes.add("after restart") > first);
}

#[test]
fn acknowledged_writes_survive_kill_9_mid_load() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let acked: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let notes = Notes::new(port, "");
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let text = format!("writer {writer} note {n}");
                    // Once the host is gone requests fail: only 201s count.
                    let Ok(r) = notes
                        .http
                        .post(notes.url("/notes"))
                        .body(text.clone())
                        .send()
                    else {
                        break;
                    };
                    if r.status() != 201 {
                        break;
                    }
                    let Ok(id) = r.text().map(|t| t.parse::<i64>().unwrap()) else {
                        break;
                    };
                    let url = notes.url(&format!("/notes/{id}/files/body"));
                    let file = notes.http.put(url).body(text.clone()).send();
                    let attached = file.is_ok_and(|r| r.status() == 201);
                    acked
                        .lock()
                        .unwrap()
                        .push((id, if attached { text } else { String::new() }));
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + pulp_e2e::WAIT;
    while acked.lock().unwrap().len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "no load: {}",
            pulp.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, _) = pulp.stop("KILL");
    assert!(!status.success(), "killed, not exited");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }

    let (_pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let notes = Notes::new(port, "");
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 200);
    for (id, text) in acked.iter() {
        let (status, stored) = notes.fetch(&format!("/notes/{id}"));
        assert_eq!(status, 200, "note {id} lost");
        if !text.is_empty() {
            assert_eq!(&stored, text);
            assert_eq!(
                notes.fetch(&format!("/notes/{id}/files/body")),
                (200, text.clone())
            );
        }
    }
}

#[test]
fn transactions_span_calls_and_a_crash_rolls_back_its_transaction() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let notes = Notes::new(port, "");

    let r = notes.post("/notes/batch", "one\ntwo\nthree");
    assert_eq!(r.status(), 201);
    let ids: Vec<i64> = r
        .text()
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        notes.fetch(&format!("/notes/{}", ids[2])),
        (200, "three".into())
    );

    // BEGIN and INSERT in separate calls, then a trap before COMMIT.
    assert_eq!(notes.post("/notes/crash", "").status(), 502);
    pulp.wait_for(&[
        "notes",
        "rolling back the transaction the failed cell left open",
    ]);
    pulp.wait_for_n(&["notes", "cell started"], 2);
    let after = notes.add("after the crash");
    let (_, listing) = notes.fetch("/notes");
    assert!(!listing.contains("never committed"), "{listing}");
    assert!(
        listing.ends_with(&format!("{after}\tafter the crash")),
        "{listing}"
    );
}

#[test]
fn sql_types_round_trip_and_sql_errors_are_code_5_with_the_message_logged() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let notes = Notes::new(port, "");

    assert_eq!(notes.fetch("/types"), (200, "ok".into()));

    let r = notes.post("/sql", "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
    assert_eq!(r.status(), 200, "a parameterless script runs whole");
    let r = notes.post("/sql", "UPDATE t SET x = x + 1");
    let text = r.text().unwrap();
    assert!(text.starts_with("rows_affected=2 "), "{text}");
    let r = notes.post("/sql", "INSERT INTO notes (text) VALUES ('via sql')");
    assert!(
        r.text()
            .unwrap()
            .starts_with("rows_affected=1 last_insert_id=")
    );

    let r = notes.post("/sql", "SELEKT nothing");
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().unwrap(), "code 5");
    let line = pulp.wait_for(&["storage.sqlite", "syntax error"]);
    assert!(line.contains("notes"), "tagged with the cell: {line}");

    assert_eq!(notes.post("/sql", "").text().unwrap(), "code 1");
    // The cell keeps serving after its errors.
    assert_eq!(notes.fetch("/types"), (200, "ok".into()));
}

#[test]
fn hostile_paths_are_refused_and_nothing_outside_the_root_is_touched() {
    let scratch = Scratch::new();
    let outside = scratch.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "outside").unwrap();
    let files = files_dir(&scratch, "notes");
    std::fs::create_dir_all(files.join("inner")).unwrap();
    std::fs::write(files.join("inner/real"), "inside").unwrap();
    // Symlinks planted in the cell's directory by someone else.
    std::os::unix::fs::symlink("/etc", files.join("etc")).unwrap();
    std::os::unix::fs::symlink(&outside, files.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), files.join("secret-link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", files.join("relative-out")).unwrap();
    std::os::unix::fs::symlink("inner/real", files.join("inside-link")).unwrap();

    let (pulp, port) = start_http(&scratch, &[cell("notes")], &[]);
    let notes = Notes::new(port, "");
    let refused = |method: &str, path: &str| {
        let url = notes.url(&format!("/raw?path={path}"));
        let r = match method {
            "GET" => notes.http.get(url),
            "PUT" => notes.http.put(url).body("pwned"),
            _ => notes.http.delete(url),
        }
        .send()
        .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.text().unwrap()),
            (403, "code 4".to_owned()),
            "{method} {path}"
        );
    };
    for path in [
        "/etc/passwd",
        "..%2Foutside%2Fsecret",
        "inner%2F..%2F..%2F..%2Foutside%2Fsecret",
        "a%00b",
        "etc%2Fpasswd",
        "out%2Fsecret",
        "secret-link",
        "relative-out%2Fsecret",
    ] {
        refused("GET", path);
        refused("DELETE", path);
    }
    for path in [
        "%2Ftmp%2Fpwned",
        "..%2Fpwned",
        "out%2Fnew",
        "etc%2Fpulp-pwned",
        "secret-link",
        "out%2Fsub%2Fnew",
    ] {
        refused("PUT", path);
    }
    pulp.wait_for(&["notes", "storage.fs", "refused"]);

    // Outside: unchanged, nothing added.
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "outside"
    );
    let entries: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert_eq!(entries.len(), 1);
    assert!(!Path::new("/etc/pulp-pwned").exists());
    assert!(!scratch.path().join("data/notes/pwned").exists());

    // Inside the sandbox, symlinks that stay inside work.
    assert_eq!(notes.fetch("/raw?path=inside-link"), (200, "inside".into()));
    assert_eq!(
        notes.fetch("/raw?path=inner%2Freal"),
        (200, "inside".into())
    );
    assert_eq!(notes.fetch("/raw?path=").1, "code 1");
    assert_eq!(notes.fetch("/raw?path=missing"), (404, "code 6".into()));
    assert_eq!(notes.put("/raw?path=new%2Fdeep%2Ffile", "x").status(), 201);
    // The listing walks real directories only, never through a link.
    assert_eq!(
        notes.fetch("/raw-list?prefix="),
        (200, "inner/real\nnew/deep/file".into())
    );
    assert_eq!(
        notes.fetch("/raw-list?prefix=new%2Fd"),
        (200, "new/deep/file".into())
    );
    assert_eq!(notes.fetch("/raw-list?prefix=..%2F").0, 403);
}

#[test]
fn two_cells_see_only_their_own_files_and_databases() {
    let scratch = Scratch::new();
    let a = notes_variant(&scratch, "notes-a", "/a");
    let b = notes_variant(&scratch, "notes-b", "/b");
    let (_pulp, port) = start_http(&scratch, &[a, b], &[]);
    let (notes_a, notes_b) = (Notes::new(port, "/a"), Notes::new(port, "/b"));

    let id = notes_a.add("only for a");
    assert_eq!(
        notes_a.put("/raw?path=secret.txt", "a's secret").status(),
        201
    );

    assert_eq!(notes_b.fetch("/notes"), (200, String::new()));
    assert_eq!(notes_b.fetch(&format!("/notes/{id}")).0, 404);
    assert_eq!(notes_b.fetch("/raw?path=secret.txt").0, 404);
    assert_eq!(
        notes_b.fetch("/raw?path=..%2F..%2Fnotes-a%2Ffiles%2Fsecret.txt"),
        (403, "code 4".into())
    );
    assert_eq!(notes_b.fetch("/raw-list?prefix="), (200, String::new()));
    assert_eq!(
        notes_a.fetch("/raw?path=secret.txt"),
        (200, "a's secret".into())
    );

    let data = scratch.path().join("data");
    assert_eq!(
        query_db(&data.join("notes-a/data.db"), "SELECT text FROM notes"),
        ["only for a"]
    );
    assert!(query_db(&data.join("notes-b/data.db"), "SELECT text FROM notes").is_empty());
}

#[test]
fn files_over_the_message_limit_are_refused_with_code_9() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("notes", "small.toml", |text| {
        format!("{text}\nmax_message_bytes = 65536\n")
    });
    let files = files_dir(&scratch, "notes");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("big"), vec![7u8; 100_000]).unwrap();

    let (_pulp, port) = start_http(&scratch, &[manifest], &[]);
    let notes = Notes::new(port, "");
    assert_eq!(notes.fetch("/raw?path=big"), (413, "code 9".into()));
    assert_eq!(notes.put("/raw?path=ok", vec![1u8; 60_000]).status(), 201);
    assert_eq!(std::fs::read(files.join("ok")).unwrap().len(), 60_000);
}
