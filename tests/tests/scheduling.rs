//! Cells run on a pool of worker threads: the thread count does not follow
//! the number of cells, and cells that hold workers do not starve the rest.
//! HTTP steps never run on the listener's threads, so cells spinning in
//! them stall neither the listener nor each other.

use std::path::PathBuf;
use std::time::Duration;

use pulp_e2e::{Pulp, Scratch, cell, http_client, start_http};

/// A copy of the loop-step cell named `name`: it spins in every step it gets.
fn spinner(scratch: &Scratch, name: &str, tick_ms: u64) -> PathBuf {
    scratch.manifest_variant("loop-step", &format!("{name}.toml"), |t| {
        t.replace("name = \"loop-step\"", &format!("name = {name:?}"))
            .replace("tick_ms = 20", &format!("tick_ms = {tick_ms}"))
            .replace("call_timeout_ms = 300", "call_timeout_ms = 600000")
    })
}

/// A copy of the loop-step cell that spins in the step of each GET `route`,
/// until its five-second call_timeout_ms.
fn http_spinner(scratch: &Scratch, name: &str, route: &str) -> PathBuf {
    scratch.manifest_variant("loop-step", &format!("{name}.toml"), |t| {
        t.replace("name = \"loop-step\"", &format!("name = {name:?}"))
            .replace("tick_ms = 20", "tick_ms = 0")
            .replace(
                "capabilities = []",
                "capabilities = [\"transport.http.inbound\"]",
            )
            .replace("call_timeout_ms = 300", "call_timeout_ms = 5000")
            .replace(
                "spin_in = \"step\"",
                &format!("spin_in = \"step\"\nhttp_route = {route:?}"),
            )
    })
}

/// GET `path` on another thread; its status once the host answers.
fn get_later(port: u16, path: &str) -> std::thread::JoinHandle<u16> {
    let url = format!("http://127.0.0.1:{port}{path}");
    std::thread::spawn(move || {
        http_client()
            .get(url)
            .timeout(Duration::from_secs(60))
            .send()
            .unwrap()
            .status()
            .as_u16()
    })
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn two_hundred_idle_cells_share_a_few_threads() {
    let scratch = Scratch::new();
    // With no tick and no capability, nothing ever steps them: they stay idle.
    let cells: Vec<PathBuf> = (0..200)
        .map(|i| spinner(&scratch, &format!("idle-{i}"), 0))
        .collect();
    let mut args = scratch.args(&cells);
    args.extend(["--workers".into(), "2".into()]);
    let pulp = Pulp::start(&args);
    pulp.wait_for(&["ready"]);
    let count = threads(pulp.pid());
    // A thread per cell would be over 200; the rest is the listener's
    // runtime, the pool, its scheduler and the epoch clock.
    assert!(count < 40, "{count} threads for 200 idle cells");
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert_eq!(
        pulp_e2e::count(&log, "cell shut down"),
        200,
        "every cell had its pulp_shutdown:\n{log}"
    );
}

#[test]
fn cells_spinning_on_every_worker_do_not_starve_an_http_cell() {
    let scratch = Scratch::new();
    let mut cells: Vec<PathBuf> = (0..3)
        .map(|i| spinner(&scratch, &format!("spin-{i}"), 20))
        .collect();
    cells.push(cell("echo"));
    let (pulp, port) = start_http(&scratch, &cells, &["--workers", "1", "--max-workers", "8"]);
    // Each spins until shutdown: their timeout is ten minutes.
    pulp.wait_for_n(&["loop-step spinning"], 3);
    let reply = http_client()
        .get(format!("http://127.0.0.1:{port}/echo/still-served"))
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", pulp.log());
    assert_eq!(reply.text().unwrap(), "still-served");
    assert!(
        !pulp.log().contains("cell crashed"),
        "a spinning cell was stopped, so nothing was proven:\n{}",
        pulp.log()
    );
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert_eq!(
        pulp_e2e::count(&log, "cell interrupted by shutdown"),
        3,
        "{log}"
    );
}

#[test]
fn cells_spinning_in_http_steps_do_not_stall_the_listener() {
    let scratch = Scratch::new();
    let cells = [
        http_spinner(&scratch, "spin-a", "/spin-a"),
        http_spinner(&scratch, "spin-b", "/spin-b"),
        cell("echo"),
    ];
    let (pulp, port) = start_http(&scratch, &cells, &[]);
    let spins = [get_later(port, "/spin-a"), get_later(port, "/spin-b")];
    pulp.wait_for_n(&["loop-step spinning"], 2);
    for i in 0..20 {
        let reply = http_client()
            .get(format!("http://127.0.0.1:{port}/echo/served-{i}"))
            .send()
            .unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.text().unwrap(), format!("served-{i}"));
    }
    assert!(
        spins.iter().all(|spin| !spin.is_finished()),
        "a spinning step ended before the echo requests were served, so nothing was proven:\n{}",
        pulp.log()
    );
    for spin in spins {
        let status = spin.join().unwrap();
        assert!(matches!(status, 502 | 504), "spinning request: {status}");
    }
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
}
