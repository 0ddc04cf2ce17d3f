//! Scale-out bench (release builds of `pulp` and the libraries): requests/s of the `shared-notes` service through HAProxy
//! with 1, 2 and 3 `pulp` hosts (storage.sqlite on pulp-ext-postgres), and
//! the cost of one query on the built-in SQLite provider against
//! pulp-ext-postgres, all in one run, on 127.0.0.1.
//!
//! ```sh
//! cargo run --release -p pulp-e2e --example scaleout            # 10 s per step, 16 connections
//! BENCH_SECS=5 BENCH_CONNS=32 cargo run --release -p pulp-e2e --example scaleout
//! ```
//!
//! The load is 90% `GET /notes/:key` and 10% `PUT /notes/:key` over
//! keep-alive connections. The per-query cost is `GET /repeat/:key?n=N`
//! (N reads of one note in one request) minus `n=0`, over N, on one host
//! reached directly. Needs PostgreSQL and HAProxy (see tests/src/postgres.rs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pulp_e2e::cluster::{Build, Haproxy, Host, haproxy_binary};
use pulp_e2e::http_client;
use pulp_e2e::postgres::{BUILT_IN, POSTGRES, PgServer};
use pulp_e2e::s3::S3Server;

const KEYS: usize = 100;
/// Reads per request for the per-query cost.
const REPEAT: u32 = 200;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
        .unwrap_or(default)
}

/// Requests/s `conns` connections get from `base` in `secs`; panics on an error.
fn load(base: &str, conns: u64, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let (base, done, errors) = (base.to_owned(), done.clone(), errors.clone());
            thread::spawn(move || {
                let client = http_client();
                let mut i = c as usize;
                while Instant::now() < until {
                    let url = format!("{base}/notes/bench-{}", i % KEYS);
                    let ok = if i.is_multiple_of(10) {
                        client.put(&url).body(format!("v{i}")).send()
                    } else {
                        client.get(&url).send()
                    }
                    .is_ok_and(|r| r.status().is_success());
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    i += conns as usize;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.load(Ordering::Relaxed);
    assert_eq!(errors, 0, "{errors} requests failed");
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Microseconds one `SELECT` costs on `host`.
fn per_query_micros(host: &Host) -> f64 {
    let client = http_client();
    let time = |n: u32, rounds: u32| {
        let url = format!("{}/repeat/bench-0?n={n}", host.url());
        let started = Instant::now();
        for _ in 0..rounds {
            let r = client.get(&url).send().unwrap();
            assert_eq!(r.status(), 200);
        }
        started.elapsed().as_secs_f64() / f64::from(rounds)
    };
    // Warm the statement caches and connections first.
    time(REPEAT, 3);
    let empty = time(0, 50);
    let full = time(REPEAT, 20);
    (full - empty) / f64::from(REPEAT) * 1e6
}

fn main() {
    let secs = env_or("BENCH_SECS", 10);
    let conns = env_or("BENCH_CONNS", 16);
    let (Some(pg), Some(haproxy)) = (PgServer::start(), haproxy_binary()) else {
        std::process::exit(1);
    };
    let s3 = S3Server::start(&[pulp_e2e::cluster::BUCKET]);
    let build = Build::release();
    let hosts: Vec<Host> = ["h1", "h2", "h3"]
        .iter()
        .map(|name| Host::start(name, POSTGRES, &pg, &s3, &build))
        .collect();
    let client = http_client();
    for i in 0..KEYS {
        let url = format!("{}/notes/bench-{i}", hosts[0].url());
        assert_eq!(client.put(url).body("v").send().unwrap().status(), 201);
    }
    println!("requests/s through HAProxy, {conns} connections, {secs} s each (90% GET, 10% PUT):");
    for n in 1..=hosts.len() {
        let balancer = Haproxy::start(&haproxy, &hosts[..n].iter().collect::<Vec<_>>());
        let rate = load(&balancer.url(), conns, secs);
        println!("  {n} host(s): {rate:.0} requests/s");
    }
    drop(hosts);

    let sqlite = Host::start("sqlite", BUILT_IN, &pg, &s3, &build);
    let url = format!("{}/notes/bench-0", sqlite.url());
    assert_eq!(client.put(url).body("v").send().unwrap().status(), 201);
    let on_sqlite = per_query_micros(&sqlite);
    drop(sqlite);
    let postgres = Host::start("postgres", POSTGRES, &pg, &s3, &build);
    let on_postgres = per_query_micros(&postgres);
    println!(
        "one SELECT by key: built-in SQLite {on_sqlite:.1} µs, pulp-ext-postgres {on_postgres:.1} µs ({:.1}x)",
        on_postgres / on_sqlite
    );
}
