//! Scale-out end to end: three `pulp` hosts run the same `shared-notes` cell,
//! its rows in one real PostgreSQL (pulp-ext-postgres), its attachments in one
//! real S3 server (pulp-ext-s3), with HAProxy in front checking each host's
//! `/readyz`. Writes through the balancer are read back through every host;
//! a host killed with SIGKILL under load costs no acknowledged write, and it
//! rejoins when it comes back. All traffic stays on 127.0.0.1; every loop is
//! bounded in count and time. Without PostgreSQL or HAProxy the test prints
//! `SKIPPED` and passes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pulp_e2e::cluster::{BUCKET, Build, Haproxy, Host, haproxy_binary};
use pulp_e2e::http_client;
use pulp_e2e::postgres::{POSTGRES, PgServer};
use pulp_e2e::s3::S3Server;

/// Writers through the balancer while a host dies, and each one's bounds:
/// at least `WRITES_EACH`, and on until it has sent `WRITES_AFTER_DOWN` once
/// the balancer marked the host down, but never more than `MAX_WRITES_EACH`.
const WRITERS: usize = 3;
const WRITES_EACH: usize = 150;
const WRITES_AFTER_DOWN: usize = 20;
const MAX_WRITES_EACH: usize = 5000;
const LOAD_LIMIT: Duration = Duration::from_secs(60);

fn get(url: &str) -> (u16, String) {
    match http_client()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
    {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn put(client: &reqwest::blocking::Client, url: &str, body: &str) -> u16 {
    client
        .put(url)
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .map_or(0, |r| r.status().as_u16())
}

#[test]
fn three_hosts_behind_haproxy_share_state_and_survive_a_sigkill() {
    let Some(pg) = PgServer::start() else { return };
    let Some(haproxy_bin) = haproxy_binary() else {
        return;
    };
    let s3 = S3Server::start(&[BUCKET]);
    let build = Build::debug();
    // One after another: the first creates the tables the others find.
    let mut hosts: Vec<Host> = ["h1", "h2", "h3"]
        .iter()
        .map(|name| Host::start(name, POSTGRES, &pg, &s3, &build))
        .collect();
    let balancer = Haproxy::start(&haproxy_bin, &hosts.iter().collect::<Vec<_>>());
    let front = balancer.url();
    let client = http_client();

    // Writes through the balancer, rows and attachments, are seen by every host.
    let mut served_by = std::collections::BTreeSet::new();
    for i in 0..9 {
        let url = format!("{front}/notes/first-{i}");
        let r = client.put(&url).body(format!("note {i}")).send().unwrap();
        assert_eq!(r.status(), 201);
        served_by.insert(r.headers()["x-instance"].to_str().unwrap().to_owned());
        let r = client
            .put(format!("{url}/attachment"))
            .body(format!("attachment {i}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(served_by.len(), 3, "round robin reached {served_by:?}");
    for host in &hosts {
        for i in 0..9 {
            let url = format!("{}/notes/first-{i}", host.url());
            assert_eq!(get(&url), (200, format!("note {i}")), "{}", host.name);
            assert_eq!(
                get(&format!("{url}/attachment")),
                (200, format!("attachment {i}")),
                "{}",
                host.name
            );
        }
    }

    // Load through the balancer; one host dies a third of the way in.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(AtomicBool::new(false));
    let after_down = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (front, acknowledged, failed) =
                (front.clone(), acknowledged.clone(), failed.clone());
            let (down, after_down) = (down.clone(), after_down.clone());
            thread::spawn(move || {
                let client = http_client();
                let mut sent_after_down = 0;
                for i in 0..MAX_WRITES_EACH {
                    // Stopping as soon as the host was marked down let a fast
                    // load end with no write sent after it.
                    let enough = i >= WRITES_EACH && sent_after_down >= WRITES_AFTER_DOWN;
                    if enough || started.elapsed() > LOAD_LIMIT {
                        break;
                    }
                    let was_down = down.load(Ordering::Relaxed);
                    if was_down {
                        sent_after_down += 1;
                    }
                    let key = format!("load-{w}-{i}");
                    let status = put(&client, &format!("{front}/notes/{key}"), &key);
                    if status == 201 {
                        if was_down {
                            after_down.fetch_add(1, Ordering::Relaxed);
                        }
                        acknowledged.lock().unwrap().push(key);
                    } else {
                        failed.lock().unwrap().push((key, status));
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < WRITERS * WRITES_EACH / 3
        && started.elapsed() < LOAD_LIMIT
    {
        thread::sleep(Duration::from_millis(10));
    }
    hosts[1].kill();
    balancer.wait_status("h2", "DOWN");
    down.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    let after_down = after_down.load(Ordering::Relaxed);
    eprintln!(
        "{} writes acknowledged ({after_down} once h2 was marked down), {} not ({:?}) in {:?}",
        acknowledged.len(),
        failed.len(),
        &failed[..failed.len().min(5)],
        started.elapsed()
    );
    // The balancer retries a refused connection elsewhere: hardly any write
    // fails, and none that was acknowledged is lost.
    assert!(
        failed.len() <= WRITERS,
        "{} writes failed: {failed:?}",
        failed.len()
    );
    assert!(acknowledged.len() >= WRITERS * WRITES_EACH - WRITERS);
    assert!(
        after_down > 0,
        "no write went through after h2 was marked down"
    );

    // The host comes back on its ports and the balancer sends it work again.
    hosts[1].restart();
    balancer.wait_status("h2", "UP");
    let mut reached = false;
    for _ in 0..30 {
        let r = client.get(format!("{front}/notes/first-0")).send().unwrap();
        assert_eq!(r.status(), 200);
        if r.headers()["x-instance"] == "h2" {
            reached = true;
            break;
        }
    }
    assert!(reached, "no request through the balancer reached h2");

    // Every acknowledged write, read through every host directly, the
    // restarted one included.
    for host in &hosts {
        let (status, keys) = get(&format!("{}/notes", host.url()));
        assert_eq!(status, 200, "{}", host.name);
        let keys: std::collections::BTreeSet<&str> = keys.lines().collect();
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|k| !keys.contains(k.as_str()))
            .collect();
        assert!(missing.is_empty(), "{} lacks {missing:?}", host.name);
    }
    for key in acknowledged.iter().step_by(25) {
        for host in &hosts {
            assert_eq!(
                get(&format!("{}/notes/{key}", host.url())),
                (200, key.clone()),
                "{}",
                host.name
            );
        }
    }
}
