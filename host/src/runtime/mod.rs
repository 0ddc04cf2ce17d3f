//! The cell runtime: one wasmtime engine, cells run as tasks on a worker pool,
//! event-driven stepping.

pub mod calls;
mod events;
mod instance;
pub mod modules;
mod output;
pub mod pool;
mod queue;
pub mod reload;
pub mod stop;
mod supervisor;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine};

pub use instance::{CellSpec, Instance, link_check};
pub use queue::Depth;
pub use supervisor::{Host, Phase, Readiness, load_module, prepare};

/// How often the engine's epoch advances while some cell is inside a wasm call;
/// a call's timeout is enforced to within this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advances the engine epoch only while wasm runs, so an idle host never wakes.
///
/// Entering and leaving a call are atomic counter updates; the clock thread is
/// signalled only when it has parked, so a busy host pays no syscall per call.
pub struct EpochTicker {
    active: AtomicUsize,
    parked: AtomicBool,
    /// Set when the runtime is dropped: the clock thread ends.
    closed: AtomicBool,
    lock: Mutex<()>,
    signal: Condvar,
}

/// Held for the length of one wasm call.
pub struct ActiveCall<'a>(&'a EpochTicker);

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    /// Starts the clock thread. It holds the engine weakly: it ends when the
    /// runtime closes it, or when the engine is gone.
    fn start(engine: &Engine) -> (Arc<EpochTicker>, JoinHandle<()>) {
        let ticker = Arc::new(EpochTicker {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            signal: Condvar::new(),
        });
        let this = Arc::clone(&ticker);
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("pulp-epoch".into())
            .spawn(move || {
                let idle = |t: &EpochTicker| {
                    t.active.load(Ordering::SeqCst) == 0 && !t.closed.load(Ordering::SeqCst)
                };
                loop {
                    if idle(&this) {
                        let guard = this.lock.lock().unwrap();
                        this.parked.store(true, Ordering::SeqCst);
                        let guard = this.signal.wait_while(guard, |_| idle(&this)).unwrap();
                        this.parked.store(false, Ordering::SeqCst);
                        drop(guard);
                    }
                    if this.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .expect("spawn the epoch thread");
        (ticker, thread)
    }

    fn close(&self) {
        let _guard = self.lock.lock().unwrap();
        self.closed.store(true, Ordering::SeqCst);
        self.signal.notify_one();
    }

    pub fn enter(&self) -> ActiveCall<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap();
            self.signal.notify_one();
        }
        ActiveCall(self)
    }
}

/// How a runtime is set up.
pub struct Options {
    /// Where compiled modules are kept on disk; in memory only when `None`.
    pub module_cache: Option<PathBuf>,
    /// Worker threads that run cells, always there.
    pub workers: usize,
    /// Worker threads at most, while cells hold workers in long calls.
    pub max_workers: usize,
}

impl Default for Options {
    fn default() -> Options {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options {
            module_cache: None,
            workers: cores,
            max_workers: DEFAULT_MAX_WORKERS.max(cores),
        }
    }
}

/// The default bound on worker threads: enough cells blocked in host calls
/// or runaway steps at once, before the rest wait.
pub const DEFAULT_MAX_WORKERS: usize = 64;

/// The engine every cell shares, the workers that run cells, and the clock
/// that interrupts runaway calls.
pub struct Runtime {
    pub engine: Engine,
    pub epoch: Arc<EpochTicker>,
    pub pool: pool::Pool,
    /// Every running cell as a party to cell-to-cell calls.
    pub calls: Arc<calls::Directory>,
    /// Each distinct module compiled once, and kept on disk when asked.
    pub modules: modules::Modules,
    clock: Option<JoinHandle<()>>,
}

impl Runtime {
    /// A runtime with the default options: compiled modules in memory only.
    pub fn new() -> wasmtime::Result<Runtime> {
        Runtime::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // One linear memory per cell, so `max_memory_pages` bounds all of it; a
        // module with several is refused when it is compiled.
        config.wasm_multi_memory(false);
        let engine = Engine::new(&config)?;
        let (epoch, clock) = EpochTicker::start(&engine);
        let pool = pool::Pool::new(options.workers, options.max_workers)?;
        Ok(Runtime {
            engine,
            epoch,
            pool,
            calls: Arc::default(),
            modules: modules::Modules::new(options.module_cache),
            clock: Some(clock),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.epoch.close();
        if let Some(clock) = self.clock.take() {
            let _ = clock.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Runtime;

    #[test]
    fn the_clock_thread_ends_with_the_runtime() {
        let runtime = Runtime::new().unwrap();
        let ticker = std::sync::Arc::clone(&runtime.epoch);
        // Busy, then idle: the thread is ticking or parked when the runtime goes.
        drop(ticker.enter());
        drop(runtime);
        // Drop joined the thread; only this test's reference is left.
        assert_eq!(std::sync::Arc::strong_count(&ticker), 1);
    }
}
