//! Soak: the real `pulp` binary under steady load on two healthy cells while a
//! third keeps crashing, watching for errors on the healthy ones and for the
//! host's memory growing.
//!
//! ```sh
//! cargo run --release -p pulp-e2e --example soak            # 60 s, 100 connections
//! SOAK_SECS=15 SOAK_CONNS=20 cargo run --release -p pulp-e2e --example soak
//! ```
//!
//! About 80% of the connections loop `GET /echo/<n>` on the `echo` cell over
//! keep-alive HTTP, the other 20% hold a WebSocket to `wsecho` and loop a text
//! frame out and its echo back; one more thread asks the `silent` cell for
//! `GET /crash` (a trap in `pulp_step`, `restart = "on_crash"`) every 3 s.
//! The host's VmRSS is read after a 5 s warm-up and at the end. Exits 1 when
//! the healthy cells saw any error.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pulp_e2e::{Scratch, cell, count, start_http};

const WARM_UP: Duration = Duration::from_secs(5);
const CRASH_EVERY: Duration = Duration::from_secs(3);
/// Per request or frame: far above any healthy latency, so a stall counts.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Error messages kept for the report, per kind.
const KEEP_ERRORS: usize = 10;

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Counters for one kind of traffic, and its first few error messages.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    err: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
    }

    fn err(&self, message: String) {
        self.err.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < KEEP_ERRORS {
            errors.push(message);
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.err.load(Ordering::Relaxed),
        )
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One keep-alive connection looping `GET /echo/<n>` and checking the echo.
fn http_worker(port: u16, worker: usize, stop: &AtomicBool, tally: &Tally) {
    let client = reqwest::blocking::Client::builder()
        .timeout(IO_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .expect("http client");
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let msg = format!("{worker}-{n}");
        let url = format!("http://127.0.0.1:{port}/echo/{msg}");
        match client.get(&url).send() {
            Ok(response) => {
                let status = response.status();
                match response.text() {
                    Ok(body) if status == 200 && body == msg => tally.ok(),
                    Ok(body) => tally.err(format!("GET {url}: {status} {body:?}")),
                    Err(e) => tally.err(format!("GET {url}: {status}, body: {e}")),
                }
            }
            Err(e) => {
                tally.err(format!("GET {url}: {e}"));
                // Do not spin on a refused connection.
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

type Socket = tungstenite::WebSocket<TcpStream>;

fn ws_connect(port: u16) -> Result<Socket, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(socket)
}

/// One WebSocket looping a text frame out and its echo back; reconnects
/// after an error.
fn ws_worker(port: u16, worker: usize, stop: &AtomicBool, tally: &Tally) {
    use tungstenite::Message;
    let mut socket: Option<Socket> = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        if socket.is_none() {
            match ws_connect(port) {
                Ok(ws) => socket = Some(ws),
                Err(e) => {
                    tally.err(format!("ws {worker}: {e}"));
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let ws = socket.as_mut().expect("connected above");
        n += 1;
        let text = format!("{worker}-{n}");
        let result = ws.send(Message::text(text.clone())).and_then(|()| {
            loop {
                // Pings and pongs may come between; the echo is the next data frame.
                match ws.read()? {
                    Message::Ping(_) | Message::Pong(_) => continue,
                    other => break Ok(other),
                }
            }
        });
        match result {
            Ok(Message::Text(got)) if got.as_str() == text => tally.ok(),
            Ok(other) => {
                tally.err(format!("ws {worker}: sent {text:?}, got {other:?}"));
                socket = None;
            }
            Err(e) => {
                tally.err(format!("ws {worker}: sent {text:?}: {e}"));
                socket = None;
            }
        }
    }
    if let Some(mut ws) = socket {
        let _ = ws.close(None);
        // Read until the close handshake completes or the socket errors.
        while ws.read().is_ok() {}
    }
}

/// Asks the crashing cell for `/crash` every few seconds; counts the answers
/// by status.
fn crasher(port: u16, stop: &AtomicBool, statuses: &Mutex<BTreeMap<String, u64>>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(IO_TIMEOUT)
        .build()
        .expect("http client");
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        next += CRASH_EVERY;
        let outcome = match client.get(format!("http://127.0.0.1:{port}/crash")).send() {
            Ok(response) => response.status().as_u16().to_string(),
            Err(e) => format!("error: {e}"),
        };
        *statuses.lock().unwrap().entry(outcome).or_insert(0) += 1;
    }
}

fn main() {
    let secs = env_or("SOAK_SECS", 60);
    let conns = env_or("SOAK_CONNS", 100) as usize;
    assert!(
        secs > 0 && conns > 0,
        "SOAK_SECS and SOAK_CONNS must be positive"
    );
    let duration = Duration::from_secs(secs);
    let ws_conns = if conns >= 2 { (conns + 2) / 5 } else { 0 };
    let http_conns = conns - ws_conns;

    // reqwest is built without a default TLS provider; the harness's choice.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let scratch = Scratch::new();
    let (pulp, port) = start_http(
        &scratch,
        &[cell("echo"), cell("wsecho"), cell("silent")],
        &[],
    );
    pulp.wait_for(&["echo ready"]);
    pulp.wait_for(&["wsecho ready"]);
    pulp.wait_for(&["silent ready"]);
    let pid = pulp.pid();
    let rss_idle = rss_kib(pid);
    eprintln!(
        "soak: pulp pid {pid} on port {port}; {http_conns} HTTP + {ws_conns} WebSocket connections for {secs} s"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let http = Arc::new(Tally::default());
    let ws = Arc::new(Tally::default());
    let crashes = Arc::new(Mutex::new(BTreeMap::new()));
    let mut workers = Vec::new();
    for worker in 0..http_conns {
        let (stop, http) = (Arc::clone(&stop), Arc::clone(&http));
        workers.push(thread::spawn(move || {
            http_worker(port, worker, &stop, &http)
        }));
    }
    for worker in 0..ws_conns {
        let (stop, ws) = (Arc::clone(&stop), Arc::clone(&ws));
        workers.push(thread::spawn(move || ws_worker(port, worker, &stop, &ws)));
    }
    {
        let (stop, crashes) = (Arc::clone(&stop), Arc::clone(&crashes));
        workers.push(thread::spawn(move || crasher(port, &stop, &crashes)));
    }

    let started = Instant::now();
    let mut rss_start = None;
    let mut rss_peak = 0;
    let mut last_report = started;
    while started.elapsed() < duration {
        thread::sleep(Duration::from_millis(250));
        if let Some(rss) = rss_kib(pid) {
            rss_peak = rss_peak.max(rss);
        }
        if rss_start.is_none() && started.elapsed() >= WARM_UP {
            rss_start = rss_kib(pid);
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let (h, he) = http.counts();
            let (w, we) = ws.counts();
            eprintln!(
                "soak: {:>4} s  http {h} ok {he} err  ws {w} ok {we} err  rss {:.1} MiB",
                started.elapsed().as_secs(),
                rss_kib(pid).map(mib).unwrap_or(f64::NAN)
            );
        }
    }
    let rss_end = rss_kib(pid);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker thread");
    }
    let elapsed_total = started.elapsed();

    let (http_ok, http_err) = http.counts();
    let (ws_ok, ws_err) = ws.counts();
    let crash_statuses = crashes.lock().unwrap().clone();
    let crashes_sent: u64 = crash_statuses.values().sum();
    let log = pulp.log();
    let restarts = count(&log, "silent ready").saturating_sub(1);
    let silent_lines = |needle: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(needle) && l.contains("silent"))
            .map(str::to_owned)
            .collect()
    };
    let traps = silent_lines("cell crashed").len();
    let last_backoff = silent_lines("restarting in")
        .last()
        .and_then(|l| {
            l.split("restarting in ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "-".to_owned());
    let alive = rss_kib(pid).is_some();
    let (status, log) = pulp.stop("TERM");

    let secs_f = elapsed.as_secs_f64();
    let fmt_rss = |kib: Option<u64>| kib.map_or("n/a".to_owned(), |k| format!("{:.1} MB", mib(k)));
    let growth = match (rss_start, rss_end) {
        (Some(a), Some(b)) if a > 0 => format!("{:+.1}%", (b as f64 - a as f64) * 100.0 / a as f64),
        _ => "n/a".to_owned(),
    };
    println!("=== pulp soak ===");
    println!(
        "duration          {:.1} s (workers joined after {:.1} s)",
        secs_f,
        elapsed_total.as_secs_f64()
    );
    println!(
        "connections       {conns} ({http_conns} HTTP keep-alive, {ws_conns} WebSocket) + 1 crasher"
    );
    println!(
        "HTTP /echo        {http_ok} ok, {http_err} err ({:.0} req/s)",
        http_ok as f64 / secs_f
    );
    println!(
        "WS frames         {ws_ok} ok, {ws_err} err ({:.0} round trips/s)",
        ws_ok as f64 / secs_f
    );
    println!(
        "crashes triggered {crashes_sent} GET /crash, answers {crash_statuses:?}; silent trapped {traps} times, came back {restarts} times, last backoff {last_backoff} ms"
    );
    println!(
        "RSS               idle {}, after {} s warm-up {}, end {}, peak {:.1} MB, growth {growth}",
        fmt_rss(rss_idle),
        WARM_UP.as_secs(),
        fmt_rss(rss_start),
        fmt_rss(rss_end),
        mib(rss_peak)
    );
    println!("host              alive at the end: {alive}; exit on SIGTERM: {status}");

    let healthy_errors = http_err + ws_err;
    if healthy_errors > 0 || !alive {
        println!("--- healthy-cell errors (first {KEEP_ERRORS} of each kind) ---");
        for e in http
            .errors
            .lock()
            .unwrap()
            .iter()
            .chain(ws.errors.lock().unwrap().iter())
        {
            println!("  {e}");
        }
        let noisy: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let (crashing, other): (Vec<&str>, Vec<&str>) =
            noisy.iter().partition(|l| l.contains("silent"));
        println!(
            "--- host log: {} warning/error lines, {} of them about the crashing cell; the others (first 50) ---",
            noisy.len(),
            crashing.len()
        );
        for line in other.iter().take(50) {
            println!("  {line}");
        }
        std::process::exit(1);
    }
}
