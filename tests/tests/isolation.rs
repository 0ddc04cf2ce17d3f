//! Isolation under attack: hostile cells and clients against the real binary.
//! Each test is one way a cell or a client tried to reach past its limits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pulp_e2e::{Pulp, Scratch, cell, count, http_client, run, start_http};
use reqwest::blocking::Client;

/// A copy of the `notes` cell named `name`, serving under `/<name>`, with
/// `extra` manifest lines.
fn notes(scratch: &Scratch, name: &str, extra: &str) -> PathBuf {
    scratch.manifest_variant("notes", &format!("{name}.toml"), |text| {
        let text = text.replace("name = \"notes\"", &format!("name = \"{name}\""));
        format!("{text}\n{extra}\n[config]\nprefix = \"/{name}\"\n")
    })
}

struct Http {
    client: Client,
    base: String,
}

impl Http {
    fn new(port: u16) -> Http {
        Http {
            client: http_client(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Status and body of a request with `body`.
    fn send(&self, method: &str, path: &str, body: impl Into<Vec<u8>>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body.into())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn sql_cannot_leave_the_cells_database() {
    let scratch = Scratch::new();
    let (a, b) = (notes(&scratch, "a", ""), notes(&scratch, "b", ""));
    let (pulp, port) = start_http(&scratch, &[a, b], &[]);
    let http = Http::new(port);
    assert_eq!(http.send("POST", "/b/notes", "b's secret").0, 201);

    let data = scratch.path().join("data");
    let other_db = data.join("b").join("data.db");
    let outside = scratch.path().join("outside.db");
    let attempts = [
        format!("ATTACH DATABASE '{}' AS other", other_db.display()),
        format!("ATTACH DATABASE '{}' AS x", outside.display()),
        format!("ATTACH 'file:{}?mode=rwc' AS x", outside.display()),
        format!("VACUUM INTO '{}'", outside.display()),
        "PRAGMA temp_store_directory = '/tmp'".to_owned(),
        "PRAGMA max_page_count = 1000000000".to_owned(),
        "PRAGMA cache_size = -10000000".to_owned(),
        "PRAGMA journal_mode = DELETE".to_owned(),
    ];
    for sql in &attempts {
        assert_eq!(
            http.send("POST", "/a/sql", sql.as_str()),
            (403, "code 4".to_owned()),
            "{sql}"
        );
    }
    for sql in [
        "SELECT file FROM pragma_database_list",
        "PRAGMA database_list",
    ] {
        assert_eq!(
            http.send("POST", "/a/query", sql),
            (403, "code 4".to_owned()),
            "{sql}"
        );
    }
    // Not loadable whichever way SQLite refuses it.
    let load = http.send(
        "POST",
        "/a/sql",
        "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libc.so.6')",
    );
    assert!(load.0 == 403 || load.0 == 500, "{load:?}");
    let refused = pulp.wait_for(&["storage.sqlite: statement refused", "cell=\"a\""]);
    assert!(refused.contains("WARN"), "{refused}");
    assert!(!outside.exists(), "a database was created outside the cell");
    assert!(
        !pulp.log().contains(&data.display().to_string()),
        "the host's storage path reached the log: {}",
        pulp.log()
    );
    // Harmless pragmas still work, and b's data is untouched.
    assert_eq!(
        http.send("POST", "/a/query", "PRAGMA table_info(notes)").0,
        200
    );
    assert_eq!(
        http.send("POST", "/a/sql", "PRAGMA journal_mode = WAL").0,
        200
    );
    assert_eq!(http.send("GET", "/b/notes", "").1, "1\tb's secret");
    assert_eq!(http.send("GET", "/a/notes", "").1, "");
}

const RUNAWAY_SQL: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[test]
fn a_runaway_statement_is_interrupted_at_call_timeout_ms() {
    let scratch = Scratch::new();
    let manifest = notes(&scratch, "a", "call_timeout_ms = 1000");
    let (pulp, port) = start_http(&scratch, &[manifest], &[]);
    let http = Http::new(port);
    // The listener gives up on the reply at the same timeout; what matters is
    // that the statement stops and the cell serves again.
    let (status, _) = http.send("POST", "/a/query", RUNAWAY_SQL);
    // 502 when the cell's own call ran out of time right after the statement.
    assert!([500, 502, 504].contains(&status), "{status}");
    let line = pulp.wait_for(&["storage.sqlite: statement interrupted", "cell=\"a\""]);
    assert!(line.contains("call_timeout_ms = 1000"), "{line}");
    // The step that ran the statement may itself run out of time just after
    // replying. A request queued meanwhile is not the crashed instance's: it
    // waits for the restarted one, is written once and answered 201, never a
    // 502 for a write that then happens.
    assert_eq!(http.send("POST", "/a/notes", "after").0, 201);
    assert_eq!(http.send("GET", "/a/notes", "").1, "1\tafter");
}

#[test]
fn shutdown_interrupts_a_statement_and_a_wasm_loop_that_are_still_running() {
    let scratch = Scratch::new();
    let sql_cell = notes(&scratch, "a", "call_timeout_ms = 600000");
    let spinner = scratch.manifest_variant("loop-step", "spin.toml", |t| {
        t.replace("call_timeout_ms = 300", "call_timeout_ms = 600000")
    });
    let (pulp, port) = start_http(&scratch, &[sql_cell, spinner], &[]);
    let base = format!("http://127.0.0.1:{port}/a/query");
    let request = std::thread::spawn(move || {
        // The reply never comes: the statement runs until shutdown.
        let _ = http_client().post(base).body(RUNAWAY_SQL).send();
    });
    // Both cells are busy: the statement, and the first step's loop.
    std::thread::sleep(Duration::from_millis(800));
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(log.contains("interrupting them"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("interrupted by host shutdown") && l.contains("cell=\"a\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("cell interrupted by shutdown") && l.contains("loop-step")),
        "{log}"
    );
    assert!(log.contains("shutdown complete"), "{log}");
    let _ = request.join();
}

#[test]
fn sqlite_values_and_results_stay_within_max_message_bytes() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(&scratch, &[notes(&scratch, "a", "")], &[]);
    let http = Http::new(port);
    for _ in 0..3 {
        for route in ["/a/query", "/a/sql"] {
            assert_eq!(
                http.send("POST", route, "SELECT randomblob(1000000000)"),
                (413, "code 9".to_owned()),
                "{route}"
            );
        }
    }
    // Rows each within the limit, all of them over it.
    assert_eq!(
        http.send(
            "POST",
            "/a/query",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 40) \
             SELECT randomblob(1000000) FROM c"
        ),
        (413, "code 9".to_owned())
    );
    let rss = rss_mib(pulp.pid());
    assert!(rss < 400, "host RSS {rss} MiB after gigabyte-sized values");
    assert_eq!(http.send("POST", "/a/notes", "still fine").0, 201);
}

/// A cell that registers the WebSocket path `/ws` and spends each step in
/// `STEP` (a busy loop or a trap); its allocator grows memory as asked.
const WS_CELL: &str = r#"
(module
  (import "pulp" "ws_register" (func $register (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "/ws")
  (func (export "pulp_alloc") (param $n i32) (result i32)
    (block $fits
      (loop $grow
        (br_if $fits (i32.le_u (i32.add (i32.const 65536) (local.get $n))
                               (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
          (then (return (i32.const 0))))
        (br $grow)))
    (i32.const 65536))
  (func (export "pulp_init") (param i32 i32) (result i32)
    (drop (call $register (i32.const 16) (i32.const 3)))
    (i32.const 0))
  (func (export "pulp_step") (param i32 i32) (result i32)
    (local $i i32)
    STEP
    (i32.const 0)))
"#;

const SPIN: &str = "(loop $spin (local.set $i (i32.add (local.get $i) (i32.const 1))) \
                    (br_if $spin (i32.lt_u (local.get $i) (i32.const 100000000))))";

fn ws_cell(scratch: &Scratch, name: &str, step: &str) -> PathBuf {
    scratch.write(&format!("{name}.wat"), WS_CELL.replace("STEP", step));
    scratch.write(
        &format!("{name}.toml"),
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\nwasm = \"{name}.wat\"\n\
             capabilities = [\"transport.ws.inbound\"]\nmax_message_bytes = 2097152\n\
             max_queue_bytes = 4194304\nrestart = \"on_crash\"\n"
        ),
    )
}

/// Sends 1 MB frames until the host closes the connection; its close code.
fn flood(port: u16) -> Option<u16> {
    use tungstenite::Message;
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream).unwrap();
    for _ in 0..60 {
        if ws.send(Message::binary(vec![7u8; 1_000_000])).is_err() {
            break;
        }
    }
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn a_slow_cells_queue_is_bounded_in_bytes() {
    let scratch = Scratch::new();
    let manifest = ws_cell(&scratch, "slow", SPIN);
    let (pulp, port) = start_http(&scratch, &[manifest], &[]);
    assert_eq!(flood(port), Some(1013));
    pulp.wait_for(&["ws.frame not delivered (Full)", "cell=\"slow\""]);
    let rss = rss_mib(pulp.pid());
    assert!(rss < 400, "host RSS {rss} MiB");
}

#[test]
fn events_for_a_cell_waiting_to_restart_obey_the_same_bound() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("silent", "small-queue.toml", |t| {
        format!("{t}\nmax_message_bytes = 2097152\nmax_queue_bytes = 4194304\n")
    });
    let (pulp, port) = start_http(&scratch, &[manifest], &[]);
    let http = Http::new(port);
    // Each crash doubles the backoff: after six the cell waits 6.4 s to restart.
    for n in 1..=6 {
        assert_eq!(http.send("GET", "/crash", "").0, 502);
        pulp.wait_for_n(&["silent ready"], n + 1);
    }
    assert_eq!(http.send("GET", "/crash", "").0, 502);
    pulp.wait_for(&["restarting in 6400 ms", "cell=\"silent\""]);
    // 1 MB requests while it waits: the queue takes four, the rest are 503.
    let statuses: Vec<u16> = (0..12)
        .map(|_| {
            let base = http.base.clone();
            std::thread::spawn(move || {
                http_client()
                    .get(format!("{base}/never"))
                    .body(vec![1u8; 1_000_000])
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 503).count() >= 6,
        "{statuses:?}"
    );
}

#[test]
fn multi_memory_modules_are_refused_and_tables_cannot_grow_without_bound() {
    let scratch = Scratch::new();
    scratch.write(
        "multi.wat",
        r#"(module
  (memory (export "memory") 1)
  (memory $second 1)
  (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
  (func (export "pulp_step") (param i32 i32) (result i32) i32.const 0))"#,
    );
    let multi = scratch.write(
        "multi.toml",
        "name = \"multi\"\nversion = \"0.1.0\"\nwasm = \"multi.wat\"\n",
    );
    let (status, log) = run(&scratch.args(&[multi]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cell multi") && log.contains("multiple memories"),
        "{log}"
    );

    // table.grow by 134M elements: refused (-1), the cell carries on.
    scratch.write(
        "tables.wat",
        r#"(module
  (import "pulp" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (data (i32.const 16) "table grow refused")
  (data (i32.const 48) "table grow allowed")
  (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "pulp_init") (param i32 i32) (result i32)
    (if (i32.eq (table.grow $t (ref.null func) (i32.const 134217728)) (i32.const -1))
      (then (drop (call $log (i32.const 2) (i32.const 16) (i32.const 18))))
      (else (drop (call $log (i32.const 2) (i32.const 48) (i32.const 18)))))
    i32.const 0)
  (func (export "pulp_step") (param i32 i32) (result i32) i32.const 0))"#,
    );
    let tables = scratch.write(
        "tables.toml",
        "name = \"tables\"\nversion = \"0.1.0\"\nwasm = \"tables.wat\"\nmax_memory_pages = 16\n",
    );
    let pulp = Pulp::start(&scratch.args(&[tables]));
    pulp.wait_for(&["table grow refused", "cell=\"tables\""]);
    pulp.wait_for(&["cell started", "cell=\"tables\""]);
    let rss = rss_mib(pulp.pid());
    assert!(rss < 400, "host RSS {rss} MiB");
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(!log.contains("table grow allowed"), "{log}");
}

#[test]
fn the_storage_quota_covers_files_and_database_and_loses_nothing() {
    let scratch = Scratch::new();
    let manifest = notes(&scratch, "a", "max_storage_bytes = 1048576");
    let (pulp, port) = start_http(&scratch, &[manifest], &[]);
    let http = Http::new(port);
    assert_eq!(http.send("POST", "/a/notes", "kept").0, 201);
    let chunk = vec![b'x'; 400_000];
    assert_eq!(http.send("PUT", "/a/raw?path=one", chunk.clone()).0, 201);
    assert_eq!(http.send("PUT", "/a/raw?path=two", chunk.clone()).0, 201);
    assert_eq!(
        http.send("PUT", "/a/raw?path=three", chunk.clone()),
        (413, "code 9".to_owned())
    );
    pulp.wait_for(&["past max_storage_bytes = 1048576", "cell=\"a\""]);
    // Replacing a file counts only the difference.
    assert_eq!(
        http.send("PUT", "/a/raw?path=one", vec![b'y'; 300_000]).0,
        201
    );
    assert_eq!(http.send("GET", "/a/raw?path=two", "").1.len(), 400_000);

    // The database gets what the files leave.
    assert_eq!(
        http.send("POST", "/a/sql", "CREATE TABLE big (b BLOB)").0,
        200
    );
    let fill = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) \
                INSERT INTO big SELECT randomblob(4000) FROM c";
    assert_eq!(
        http.send("POST", "/a/sql", fill),
        (413, "code 9".to_owned())
    );
    pulp.wait_for(&["storage quota reached", "cell=\"a\""]);
    assert_eq!(http.send("GET", "/a/notes", "").1, "1\tkept");
    assert_eq!(
        http.send("GET", "/a/raw?path=one", "").1,
        "y".repeat(300_000)
    );
    let dir = scratch.path().join("data").join("a");
    let on_disk: u64 = ["data.db", "data.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    assert!(
        on_disk < 2 * 1048576,
        "database and log hold {on_disk} bytes"
    );
    // Freeing room makes writes succeed again.
    assert_eq!(http.send("DELETE", "/a/raw?path=two", "").0, 204);
    assert_eq!(http.send("PUT", "/a/raw?path=three", chunk).0, 201);
}

/// Reads until the server closes the connection; what it sent.
fn read_until_closed(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => String::from_utf8_lossy(&got).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            String::from_utf8_lossy(&got).into_owned()
        }
        Err(e) => panic!("the connection stayed open: {e}"),
    }
}

#[test]
fn slow_and_silent_clients_are_cut_off() {
    let scratch = Scratch::new();
    let (_pulp, port) = start_http(
        &scratch,
        &[cell("echo")],
        &[
            "--http-header-timeout-ms",
            "500",
            "--http-body-timeout-ms",
            "500",
        ],
    );
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Connects and never speaks.
    let mut silent = connect();
    read_until_closed(&mut silent);
    // Half a request head.
    let mut half_head = connect();
    half_head
        .write_all(b"GET /echo/x HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    read_until_closed(&mut half_head);
    // Half a body.
    let mut half_body = connect();
    half_body
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        .unwrap();
    let answer = read_until_closed(&mut half_body);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Idle after one request on a keep-alive connection.
    let mut idle = connect();
    idle.write_all(b"GET /echo/once HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut idle);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("once"), "{answer}");
}

#[test]
fn connections_past_the_cap_are_refused_with_a_warning() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(&scratch, &[cell("echo")], &["--http-max-connections", "4"]);
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    let held: Vec<TcpStream> = (0..4).map(|_| connect()).collect();
    let mut refused = connect();
    assert_eq!(read_until_closed(&mut refused), "");
    let line = pulp.wait_for(&["connection refused: 4 connections are open"]);
    assert!(line.contains("WARN"), "{line}");
    drop(held);
    // Room again once they are gone.
    let http = Http::new(port);
    let served = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http.client
            .get(format!("{}/echo/back", http.base))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(served, "{}", pulp.log());
}

#[test]
fn websocket_and_sse_paths_take_a_bounded_number_of_streams() {
    let scratch = Scratch::new();
    let (pulp, port) = start_http(
        &scratch,
        &[cell("wsecho"), cell("ssecell")],
        &["--max-streams-per-path", "2"],
    );
    let connect = || TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Two WebSocket connections on one path, not three.
    // The handshake's answer: the upgrade (101) or the refusal's status.
    let ws = |n| {
        let stream = connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        match tungstenite::client(format!("ws://127.0.0.1:{port}/ws?n={n}"), stream) {
            Ok((socket, _)) => (101, Some(socket)),
            Err(tungstenite::handshake::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                (r.status().as_u16(), None)
            }
            Err(e) => panic!("handshake {n}: {e}"),
        }
    };
    let (first, _a) = ws(1);
    let (second, _b) = ws(2);
    let (third, _) = ws(3);
    assert_eq!((first, second, third), (101, 101, 503));
    pulp.wait_for(&["WebSocket connection refused: 2 are open on this path"]);

    // Two SSE subscribers on one path, not three.
    let subscribe = || {
        let mut s = connect();
        s.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        (String::from_utf8_lossy(&head[9..12]).into_owned(), s)
    };
    let (a, _a) = subscribe();
    let (b, _b) = subscribe();
    let (c, _c) = subscribe();
    assert_eq!((a.as_str(), b.as_str(), c.as_str()), ("200", "200", "503"));
}

#[test]
fn requests_abandoned_by_their_clients_give_their_reply_slots_back() {
    let scratch = Scratch::new();
    let patient = scratch.manifest_variant("silent", "patient.toml", |t| {
        t.replace("call_timeout_ms = 500", "call_timeout_ms = 2000")
    });
    let (pulp, port) = start_http(&scratch, &[patient], &[]);
    // More than the cell may owe at once, each abandoned before any reply.
    let mut streams = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /never HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        streams.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(streams);
    std::thread::sleep(Duration::from_millis(300));
    // A request now waits for its reply (504 after call_timeout_ms), not a 503.
    let http = Http::new(port);
    assert_eq!(http.send("GET", "/never", "").0, 504, "{}", pulp.log());
}

#[test]
fn a_cell_cannot_forge_host_log_lines() {
    let scratch = Scratch::new();
    let forged = "2026-01-01T00:00:00.000000Z  INFO pulp_host::runtime::supervisor: cell started cell=\"admin\"";
    scratch.write(
        "forger.wat",
        format!(
            r#"(module
  (import "pulp" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "forged-by-log\n{forged}\r\1b[2J")
  (data (i32.const 2048) "forged-by-stdout\n{forged}\n")
  (func (export "pulp_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "pulp_init") (param i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 1024) (i32.const {log_len})))
    (i32.store (i32.const 16) (i32.const 2048))
    (i32.store (i32.const 20) (i32.const {out_len}))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))
    i32.const 0)
  (func (export "pulp_step") (param i32 i32) (result i32) i32.const 0))"#,
            forged = forged.replace('"', "\\\""),
            log_len = "forged-by-log\n".len() + forged.len() + 1 + 4,
            out_len = "forged-by-stdout\n".len() + forged.len() + 1,
        ),
    );
    let manifest = scratch.write(
        "forger.toml",
        "name = \"forger\"\nversion = \"0.1.0\"\nwasm = \"forger.wat\"\n",
    );
    let pulp = Pulp::start(&scratch.args(&[manifest]));
    let by_log = pulp.wait_for(&["forged-by-log"]);
    assert!(by_log.contains("forged-by-log\\n2026-01-01"), "{by_log}");
    assert!(by_log.contains("\\r\\u{1b}[2J"), "{by_log}");
    pulp.wait_for(&["cell started", "cell=\"forger\""]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line reached the log:\n{log}"
    );
    // Through log and stdout alike, the forged text stays inside a line of
    // the cell's own.
    assert_eq!(count(&log, "cell started cell=\"admin\""), 2, "{log}");
    for line in log.lines().filter(|l| l.contains("cell=\"admin\"")) {
        assert!(line.contains("cell=\"forger\""), "{line}");
    }
}

#[test]
fn files_and_directories_are_owner_only() {
    let scratch = Scratch::new();
    let (_pulp, port) = start_http(&scratch, &[notes(&scratch, "a", "")], &[]);
    let http = Http::new(port);
    assert_eq!(http.send("PUT", "/a/raw?path=dir/f.txt", "x").0, 201);
    let cell_dir = scratch.path().join("data").join("a");
    assert_eq!(
        mode(&cell_dir.join("files").join("dir").join("f.txt")),
        0o600
    );
    assert_eq!(mode(&cell_dir.join("files").join("dir")), 0o700);
    assert_eq!(mode(&cell_dir.join("files")), 0o700);
    assert_eq!(mode(&cell_dir), 0o700);
    assert_eq!(mode(&cell_dir.join("data.db")), 0o600);
}

#[test]
fn a_listing_over_max_message_bytes_is_refused() {
    let scratch = Scratch::new();
    let manifest = notes(&scratch, "a", "max_message_bytes = 4096");
    let files = scratch.path().join("data").join("a").join("files");
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..400 {
        std::fs::write(files.join(format!("file-with-a-long-name-{i:04}")), "x").unwrap();
    }
    let (_pulp, port) = start_http(&scratch, &[manifest], &[]);
    let http = Http::new(port);
    assert_eq!(
        http.send("GET", "/a/raw-list?prefix=", ""),
        (413, "code 9".to_owned())
    );
    assert_eq!(
        http.send("GET", "/a/raw-list?prefix=file-with-a-long-name-000", "")
            .1
            .lines()
            .count(),
        10
    );
}

#[test]
fn a_pinned_library_is_loaded_from_the_bytes_that_were_hashed() {
    use sha2::{Digest, Sha256};
    let scratch = Scratch::new();
    let pinned = std::fs::read(pulp_e2e::library("pulp-ext-demo")).unwrap();
    let digest = hex::encode(Sha256::digest(&pinned));
    let swapped = std::fs::read(pulp_e2e::library("pulp-fixture-ext-greet-v2")).unwrap();
    let exts = scratch.ext_dir();
    std::fs::create_dir_all(&exts).unwrap();
    // A FIFO hands out the pinned bytes to the first reader and other bytes
    // to any second one: a loader that opens the file again gets the swap.
    let fifo = exts.join("libgreet.so");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let writer = fifo.clone();
    std::thread::spawn(move || {
        for bytes in [pinned, swapped] {
            let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&writer) else {
                return;
            };
            let _ = pipe.write_all(&bytes);
            drop(pipe);
            // Lets the first reader see the end before a second open can join it.
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    scratch.write(
        "exts/extensions.toml",
        format!("[[extension]]\nname = \"greet\"\nlibrary = \"greet\"\nsha256 = \"{digest}\"\n"),
    );
    let pulp = Pulp::start(&scratch.args(&[cell("hello")]));
    pulp.wait_for(&["hello greet returned 0"]);
    let log = pulp.log();
    assert!(log.contains("hello, pulp!"), "{log}");
    assert!(!log.contains("howdy"), "{log}");
}

#[test]
fn a_405_names_the_allowed_methods() {
    let scratch = Scratch::new();
    let (_pulp, port) = start_http(&scratch, &[cell("echo")], &[]);
    let r = http_client()
        .delete(format!("http://127.0.0.1:{port}/echo"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

#[test]
fn start_up_refuses_a_queue_smaller_than_one_event() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("echo", "tiny.toml", |t| {
        format!("{t}\nmax_message_bytes = 65536\nmax_queue_bytes = 1000\n")
    });
    let (status, log) = run(&scratch.args(&[manifest]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("max_queue_bytes = 1000 is below max_message_bytes = 65536"),
        "{log}"
    );
}
