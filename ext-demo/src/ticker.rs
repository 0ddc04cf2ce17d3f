//! `demo.ticker`: one timer thread per declaring cell, events handed over through
//! `poll` after a `wake`, never polled in a loop.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pulp_ext_api::{Capability, CellState, HostImport, SetupEnv, StepEvent};
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

/// A cell's timer thread: the capability's state for that cell.
struct Timer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Timer {
    /// Stops the thread and waits for it; true if it was running.
    fn stop(&self) -> bool {
        let (flag, signal) = &*self.stop;
        *flag.lock().unwrap() = true;
        signal.notify_all();
        let thread = self.thread.lock().unwrap().take();
        thread.map(|t| t.join()).is_some()
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.stop();
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
        Timer {
            stop,
            thread: Mutex::new(Some(thread)),
        }
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

    fn setup(&self, env: &SetupEnv) -> Result<CellState, String> {
        let config: Config = env.ext_config()?;
        if config.ticker_interval_ms == 0 {
            return Err("ticker_interval_ms must be at least 1".into());
        }
        let interval = Duration::from_millis(config.ticker_interval_ms);
        let timer = self.start(env, interval);
        tracing::info!(
            "ticker started for cell {} every {} ms",
            env.cell,
            config.ticker_interval_ms
        );
        Ok(CellState::new(timer))
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

    fn teardown_cell(&self, cell: &str, state: &CellState) {
        if state.get::<Timer>().is_some_and(Timer::stop) {
            tracing::info!("ticker stopped for cell {cell}");
        }
    }

    fn teardown(&self) {
        // Every cell's timer stopped in its teardown_cell, which comes first.
        tracing::info!(
            "demo teardown: polls={} emitted={} finalized={}",
            self.shared.polls.load(Ordering::Relaxed),
            self.shared.emitted.load(Ordering::Relaxed),
            self.shared.finalized.load(Ordering::Relaxed)
        );
    }
}
