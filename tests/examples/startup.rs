//! Start-up and density of the real `pulp` binary (release build): the time
//! from spawning it to its `ready` line, and its RSS and thread count then.
//!
//! ```sh
//! cargo run --release -p pulp-e2e --example startup          # 1, 10 and 100 cells
//! STARTUP_CELLS=1,10,100,1000 cargo run --release -p pulp-e2e --example startup
//! ```
//!
//! For each count N: N idle cells of one small Rust module (`heartbeat`,
//! `tick_ms = 0`), started cold (empty module cache) and warm (the cache the
//! cold start filled). Then one cell of a large synthetic module, cold and
//! warm. Every figure is the median of three starts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pulp_e2e::{Pulp, Scratch, artifacts, cell};

const RUNS: usize = 3;
/// Functions in the large module: compiles in about the time a few-MB Go
/// module does.
const LARGE_FUNCTIONS: usize = 20_000;

fn release_pulp() -> PathBuf {
    let root = &artifacts().root;
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "pulp-host", "--bin", "pulp"])
        .current_dir(root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the release pulp failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/pulp")
}

/// `/proc/PID/status`'s value for `field` (e.g. `VmRSS:`), as a number.
fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Start {
    ready: Duration,
    rss_mb: f64,
    threads: u64,
}

fn start(pulp: &Path, storage: &Path, manifests: &[PathBuf]) -> Start {
    let mut args = vec![
        "--storage-root".to_owned(),
        storage.display().to_string(),
        "--log-level".to_owned(),
        "warn,pulp=info".to_owned(),
    ];
    let list: Vec<String> = manifests.iter().map(|m| m.display().to_string()).collect();
    args.extend(["-manifest".to_owned(), list.join(",")]);
    let began = Instant::now();
    let host = Pulp::start_binary(pulp, &args);
    host.wait_for(&["ready"]);
    let ready = began.elapsed();
    let pid = host.pid();
    let measured = Start {
        ready,
        rss_mb: status_field(pid, "VmRSS:") as f64 / 1024.0,
        threads: status_field(pid, "Threads:"),
    };
    let (status, log) = host.stop("TERM");
    assert!(status.success(), "{log}");
    measured
}

/// The median start of RUNS, each after `prepare`.
fn median(mut run: impl FnMut() -> Start) -> Start {
    let mut runs: Vec<Start> = (0..RUNS).map(|_| run()).collect();
    runs.sort_by_key(|s| s.ready);
    runs.swap_remove(RUNS / 2)
}

fn report(label: &str, s: &Start) {
    println!(
        "{label:<28} ready {:>8.1} ms   RSS {:>7.1} MB   threads {:>5}",
        s.ready.as_secs_f64() * 1000.0,
        s.rss_mb,
        s.threads
    );
}

fn idle_cells(scratch: &Scratch, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            scratch.manifest_variant("heartbeat", &format!("c{i}.toml"), |t| {
                t.replace("name = \"heartbeat\"", &format!("name = \"c{i}\""))
                    .replace("tick_ms = 50", "tick_ms = 0")
            })
        })
        .collect()
}

/// A module of LARGE_FUNCTIONS small functions, as a binary.
fn large_module(scratch: &Scratch) -> PathBuf {
    let mut wat = String::from(
        r#"(module (memory (export "memory") 1)
        (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
        (func (export "pulp_step") (param i32 i32) (result i32) i32.const 0)"#,
    );
    for i in 0..LARGE_FUNCTIONS {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param $x i32) (result i32)
               (local.get $x) (i32.const {i}) (i32.mul) (i32.const 7) (i32.add)
               (local.get $x) (i32.xor) (i32.const 3) (i32.shr_u))"
        ));
    }
    wat.push(')');
    let wasm = wat::parse_str(&wat).expect("valid WAT");
    let path = scratch.write("large.wasm", &wasm);
    println!(
        "large module: {LARGE_FUNCTIONS} functions, {:.1} MB",
        wasm.len() as f64 / 1e6
    );
    scratch.write(
        "large.toml",
        format!(
            "name = \"large\"\nversion = \"1\"\nwasm = {:?}\n",
            path.display().to_string()
        ),
    )
}

fn main() {
    let pulp = release_pulp();
    let counts: Vec<usize> = std::env::var("STARTUP_CELLS")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("STARTUP_CELLS: counts, comma-separated")
        })
        .collect();
    let _ = cell("heartbeat");

    for n in counts {
        let scratch = Scratch::new();
        let manifests = idle_cells(&scratch, n);
        let mut round = 0;
        let cold = median(|| {
            round += 1;
            let storage = scratch.path().join(format!("cold{round}"));
            start(&pulp, &storage, &manifests)
        });
        report(&format!("{n} cells, cold"), &cold);
        let warm_root = scratch.path().join("warm");
        start(&pulp, &warm_root, &manifests);
        let warm = median(|| start(&pulp, &warm_root, &manifests));
        report(&format!("{n} cells, warm"), &warm);
    }

    let scratch = Scratch::new();
    let large = [large_module(&scratch)];
    let mut round = 0;
    let cold = median(|| {
        round += 1;
        start(&pulp, &scratch.path().join(format!("cold{round}")), &large)
    });
    report("large module, cold", &cold);
    let warm_root = scratch.path().join("warm");
    start(&pulp, &warm_root, &large);
    report(
        "large module, warm",
        &median(|| start(&pulp, &warm_root, &large)),
    );
}
