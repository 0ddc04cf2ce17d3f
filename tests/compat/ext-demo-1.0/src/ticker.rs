//! `demo.ticker`: one timer thread per declaring cell, events handed over through
//! `poll` after a `wake`, never polled in a loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pulp_ext_api::{Capability, HostImport, SetupEnv, StepEvent};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_interval")]
    ticker_interval_ms: u64,
}

fn default_interval() -> u64 {
    1000
}

#[derive(Serialize)]
struct Tick<'a> {
    seq: u64,
    cell: &'a str,
}

#[derive(Default)]
pub struct Ticker {
    shared: Arc<Shared>,
    timers: Mutex<HashMap<String, Timer>>,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<StepEvent>>,
    /// Delivered but not yet finalized.
    in_flight: Mutex<HashSet<u64>>,
    next_id: AtomicU64,
    polls: AtomicU64,
    emitted: AtomicU64,
    finalized: AtomicU64,
}

struct Timer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Timer {
    fn stop(self) {
        let (flag, signal) = &*self.stop;
        *flag.lock().unwrap() = true;
        signal.notify_all();
        let _ = self.thread.join();
    }
}

impl Ticker {
    fn start(&self, env: &SetupEnv, interval: Duration) -> Timer {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = Arc::clone(&self.shared);
        let cell = env.cell.clone();
        let host = env.host;
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (flag, signal) = &*stop_flag;
            let mut seq = 0u64;
            let mut stopped = flag.lock().unwrap();
            loop {
                stopped = signal.wait_timeout(stopped, interval).unwrap().0;
                if *stopped {
                    return;
                }
                seq += 1;
                let payload = rmp_serde::to_vec_named(&Tick { seq, cell: &cell })
                    .expect("a map of an integer and a string encodes");
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                shared.queue.lock().unwrap().push_back(StepEvent {
                    kind: "demo.ticker".into(),
                    payload,
                    id,
                    cell: cell.clone(),
                });
                shared.emitted.fetch_add(1, Ordering::Relaxed);
                host.wake();
            }
        });
        Timer { stop, thread }
    }
}

impl Capability for Ticker {
    fn name(&self) -> &str {
        "demo.ticker"
    }

    fn provider(&self) -> &str {
        crate::PROVIDER
    }

    fn imports(&self) -> Vec<HostImport> {
        Vec::new()
    }

    fn setup(&self, env: &SetupEnv) -> Result<(), String> {
        let config: Config = env.ext_config()?;
        if config.ticker_interval_ms == 0 {
            return Err("ticker_interval_ms must be at least 1".into());
        }
        let interval = Duration::from_millis(config.ticker_interval_ms);
        let timer = self.start(env, interval);
        if let Some(old) = self.timers.lock().unwrap().insert(env.cell.clone(), timer) {
            old.stop();
        }
        tracing::info!(
            "ticker started for cell {} every {} ms",
            env.cell,
            config.ticker_interval_ms
        );
        Ok(())
    }

    fn poll(&self) -> Option<StepEvent> {
        self.shared.polls.fetch_add(1, Ordering::Relaxed);
        let event = self.shared.queue.lock().unwrap().pop_front()?;
        self.shared.in_flight.lock().unwrap().insert(event.id);
        Some(event)
    }

    fn finalize(&self, id: u64) {
        if self.shared.in_flight.lock().unwrap().remove(&id) {
            self.shared.finalized.fetch_add(1, Ordering::Relaxed);
            tracing::info!("ticker finalized id={id}");
        }
    }

    fn teardown_cell(&self, cell: &str) {
        let timer = self.timers.lock().unwrap().remove(cell);
        if let Some(timer) = timer {
            timer.stop();
            tracing::info!("ticker stopped for cell {cell}");
        }
    }

    fn teardown(&self) {
        let timers: Vec<Timer> = self
            .timers
            .lock()
            .unwrap()
            .drain()
            .map(|(_, t)| t)
            .collect();
        for timer in timers {
            timer.stop();
        }
        tracing::info!(
            "demo teardown: polls={} emitted={} finalized={}",
            self.shared.polls.load(Ordering::Relaxed),
            self.shared.emitted.load(Ordering::Relaxed),
            self.shared.finalized.load(Ordering::Relaxed)
        );
    }
}
