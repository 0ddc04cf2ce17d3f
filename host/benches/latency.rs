//! Event latency: how long an event delivered with `HostHandle::deliver` to
//! an idle cell takes to reach its `pulp_step`, in percentiles.
//!
//! A test capability keeps the cell's `HostHandle` from `setup` and provides
//! `bench_arrived`, which the cell calls from `pulp_step` and which notes the
//! time. Each round delivers one event after the cell has gone idle (parked on
//! its queue). Criterion reports means and medians; p99 needs every sample, so
//! this bench has its own loop.
//!
//! Run: `cargo bench -p pulp-host --bench latency` (LATENCY_EVENTS, default 2000)

mod support;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulp_ext_api::{Capability, CapabilityHandle, CellState, HostHandle, HostImport, SetupEnv};
use pulp_host::builtin;
use pulp_host::registry::{Properties, Registry};
use pulp_host::runtime::Host;

/// Long enough for the cell's thread to park between events.
const IDLE: Duration = Duration::from_millis(2);

struct Latency {
    handle: Arc<Mutex<Option<HostHandle>>>,
    arrived: Mutex<Sender<Instant>>,
}

impl Capability for Latency {
    fn name(&self) -> &str {
        "bench.latency"
    }

    fn provider(&self) -> &str {
        builtin::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        let arrived = self.arrived.lock().unwrap().clone();
        vec![HostImport::new("bench_arrived", &[], move |_, _| {
            let _ = arrived.send(Instant::now());
            Ok(())
        })]
    }

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        *self.handle.lock().unwrap() = Some(env.host);
        Ok(CellState::none())
    }
}

const CELL: &str = r#"(module
    (import "pulp" "bench_arrived" (func $arrived (result i32)))
    (memory (export "memory") 1)
    (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
    (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
    (func (export "pulp_step") (param i32 i32) (result i32)
      (drop (call $arrived))
      i32.const 0))"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let events: usize = std::env::var("LATENCY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let manifest = support::cell(
        dir.path(),
        "idle",
        CELL,
        "capabilities = [\"bench.latency\"]",
    );
    let bench = support::Bench::new();
    let handle = Arc::new(Mutex::new(None));
    let (arrived, arrivals): (Sender<Instant>, Receiver<Instant>) = channel();
    let mut capabilities = builtin::all(&bench.services);
    capabilities.push((
        CapabilityHandle::builtin(Latency {
            handle: Arc::clone(&handle),
            arrived: Mutex::new(arrived),
        })
        .unwrap(),
        Properties::default(),
    ));
    let registry = Arc::new(Registry::new(capabilities, Vec::new()).unwrap());
    let host = Host::start(
        Arc::clone(&bench.runtime),
        registry,
        vec![manifest],
        dir.path(),
    )
    .unwrap();
    let handle = handle.lock().unwrap().expect("setup ran");

    let payload = [0xc0]; // nil
    let mut samples = Vec::with_capacity(events);
    for _ in 0..events {
        std::thread::sleep(IDLE);
        let sent = Instant::now();
        handle.deliver("bench.event", &payload, 0).unwrap();
        let reached = arrivals.recv().unwrap();
        samples.push(reached - sent);
    }
    host.shutdown();

    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "event latency, idle cell, {events} events: p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  max {:.1} us",
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.9)),
        us(percentile(&samples, 0.99)),
        us(samples[samples.len() - 1]),
    );
}
