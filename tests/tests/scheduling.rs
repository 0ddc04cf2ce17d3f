//! Cells run on a pool of worker threads: the thread count does not follow
//! the number of cells, and cells that hold workers do not starve the rest.

use std::path::PathBuf;

use pulp_e2e::{Pulp, Scratch, cell, http_client, start_http};

/// A copy of the loop-step cell named `name`: it spins in every step it gets.
fn spinner(scratch: &Scratch, name: &str, tick_ms: u64) -> PathBuf {
    scratch.manifest_variant("loop-step", &format!("{name}.toml"), |t| {
        t.replace("name = \"loop-step\"", &format!("name = {name:?}"))
            .replace("tick_ms = 20", &format!("tick_ms = {tick_ms}"))
            .replace("call_timeout_ms = 300", "call_timeout_ms = 600000")
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
    assert_eq!(reply.status(), 200);
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
