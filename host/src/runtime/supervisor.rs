//! Starting cells, each cell's life as a task on the worker pool (steps,
//! ticks, calls, restarts), and shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pulp_ext_api::{CellStateHandle, Code, SetupEnv};

use super::Runtime;
use super::calls::{self, CallRequest};
use super::events::{CellLink, Pump, Route};
use super::instance::{CallError, CellSpec, Failure, Instance, link_check};
use wasmtime::Module;

use super::modules::{LoadError, Source};
use super::pool::{Task, Turn};
use super::queue::{Next, QueueReceiver, QueueSender, queue};
use super::stop;
use crate::error::HostError;
use crate::manifest::{Manifest, RestartPolicy};
use crate::msgpack;
use crate::registry::{Entry, Registry};

/// Events waiting for one cell; a full queue pushes back on whoever produces them.
pub const QUEUE_CAPACITY: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// An instance that ran this long before failing restarts with the first backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long shutdown waits for cells to finish their work and `pulp_shutdown`
/// before it interrupts whatever still runs.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Calls, events and ticks a cell handles in one turn before the other cells
/// waiting for a worker get theirs.
const TURN_BUDGET: usize = 16;

pub(super) struct Cell {
    pub(super) name: Arc<str>,
    pub(super) queue: QueueSender,
    pub(super) task: Arc<Task>,
    /// Says once whether the cell already stopped for good (and had
    /// `teardown_cell`); closed unsaid if the host failed running it.
    done: Receiver<bool>,
    pub(super) declared: Vec<Arc<Entry>>,
    pub(super) states: Arc<Vec<Arc<CellStateHandle>>>,
    pub(super) id: u64,
    /// Its place in `Readiness`, which follows manifest order, not start order.
    pub(super) slot: usize,
    /// What the running instance was made from.
    pub(super) manifest: Manifest,
    pub(super) module: Module,
    /// A new instance for the cell's task to switch to.
    pub(super) swap: Arc<Mutex<Option<Swap>>>,
}

/// A reload's new instance, started and initialised, with what it was made from.
pub(super) struct Swap {
    pub(super) spec: CellSpec,
    pub(super) instance: Instance,
    pub(super) policy: RestartPolicy,
    pub(super) tick: Duration,
    /// Told once the old instance is shut down and the new one runs.
    pub(super) switched: Sender<()>,
}

/// Where a cell is in its life, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting = 0,
    Running = 1,
    /// Failed, waiting out its backoff before the next instance.
    Restarting = 2,
    /// Stopped for good (its restart policy says so).
    Stopped = 3,
}

/// Every cell's phase, updated by its thread.
pub struct Readiness {
    cells: Vec<(Arc<str>, AtomicU8)>,
}

impl Readiness {
    pub fn phases(&self) -> Vec<(&str, Phase)> {
        (0..self.cells.len())
            .map(|index| (&*self.cells[index].0, self.phase(index)))
            .collect()
    }

    /// The phase of the cell at `index`, in manifest order.
    pub(super) fn phase(&self, index: usize) -> Phase {
        match self.cells[index].1.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Running,
            2 => Phase::Restarting,
            _ => Phase::Stopped,
        }
    }

    fn set(&self, index: usize, phase: Phase) {
        self.cells[index].1.store(phase as u8, Ordering::Relaxed);
    }
}

/// The running host: every cell as a task on the worker pool, and the event pumps.
pub struct Host {
    pub(super) runtime: Arc<Runtime>,
    pub(super) registry: Arc<Registry>,
    pub(super) cells: Vec<Cell>,
    /// One per capability some cell declares.
    pub(super) pumps: Vec<(Arc<Entry>, Pump)>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) storage_root: PathBuf,
}

/// The compiled module of `manifest`'s cell, checked against its
/// `wasm_sha256` before anything is compiled.
pub fn load_module(runtime: &Runtime, manifest: &Manifest) -> Result<(Module, Source), HostError> {
    runtime
        .modules
        .load(
            &runtime.engine,
            &manifest.wasm,
            manifest.wasm_sha256.as_deref(),
        )
        .map_err(|e| {
            let (cell, wasm) = (&manifest.name, manifest.wasm.display());
            HostError::Link(match e {
                LoadError::Read(e) => format!("cell {cell}: cannot read {wasm}: {e}"),
                LoadError::Pin { actual } => format!(
                    "cell {cell}: {wasm} has sha256 {actual}, but {} pins wasm_sha256 = {}; deploy the pinned build or update wasm_sha256",
                    manifest.path.display(),
                    manifest.wasm_sha256.as_deref().unwrap_or_default()
                ),
                LoadError::Compile(e) => format!(
                    "cell {cell}: {wasm} is not a valid wasm module: {}",
                    e.root_cause()
                ),
            })
        })
}

/// Compiles and checks one manifest's cell: everything that can be known before it runs.
pub fn prepare(
    runtime: &Runtime,
    registry: &Registry,
    manifest: &Manifest,
    id: u64,
) -> Result<CellSpec, HostError> {
    let began = Instant::now();
    let (module, source) = load_module(runtime, manifest)?;
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    let cell = manifest.name.as_str();
    match source {
        Source::Compiled => tracing::info!(cell, "module compiled in {ms:.1} ms"),
        Source::Disk => tracing::info!(cell, "module loaded from the module cache in {ms:.1} ms"),
        Source::Shared => tracing::debug!(cell, "module shared with another cell"),
    }
    let capabilities = registry.resolve(manifest)?;
    link_check(&manifest.name, &module, &capabilities).map_err(HostError::Link)?;
    let serves = matches!(
        module.get_export("pulp_on_call"),
        Some(wasmtime::ExternType::Func(ty))
            if ty.params().len() == 6
                && ty.results().len() == 1
                && ty.params().chain(ty.results()).all(|t| t.is_i32())
    );
    if !manifest.provides.is_empty() && !serves {
        return Err(HostError::Link(format!(
            "cell {}: provides {:?} but the module does not export pulp_on_call(i32, i32, i32, i32, i32, i32) -> i32; see the cell ABI",
            manifest.name, manifest.provides
        )));
    }
    Ok(CellSpec {
        name: Arc::from(manifest.name.as_str()),
        id,
        module,
        config: msgpack::encode_table(&manifest.config),
        max_memory_pages: manifest.max_memory_pages,
        call_timeout_ms: manifest.call_timeout_ms,
        max_message_bytes: manifest.max_message_bytes,
        capabilities,
        states: Arc::default(),
    })
}

impl Host {
    /// Validates every cell, runs capability setup, then starts each cell and
    /// returns once every cell has been through its first `pulp_init`.
    pub fn start(
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        manifests: Vec<Manifest>,
        storage_root: &Path,
    ) -> Result<Host, HostError> {
        let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
        for m in &manifests {
            if let Some(other) = seen.insert(&m.name, &m.path) {
                return Err(HostError::Cells(format!(
                    "two cells are named {:?} ({} and {}); cell names must be unique",
                    m.name,
                    other.display(),
                    m.path.display()
                )));
            }
        }
        calls::check(&manifests)?;
        let mut specs = Vec::new();
        for (i, manifest) in manifests.iter().enumerate() {
            specs.push(prepare(&runtime, &registry, manifest, i as u64 + 1)?);
        }

        let queues: Vec<_> = manifests
            .iter()
            .map(|m| {
                let depth = crate::metrics::queue_depth(&m.name);
                queue(QUEUE_CAPACITY, m.max_queue_bytes, depth)
            })
            .collect();
        for ((spec, manifest), (queue, _)) in specs.iter_mut().zip(&manifests).zip(&queues) {
            runtime.calls.add(&spec.name, manifest, queue.clone());
            let storage_dir = storage_root.join(&manifest.name);
            private_dir(&storage_dir).map_err(|e| {
                HostError::Setup(format!(
                    "cell {}: cannot create its storage directory {}: {e}; check --storage-root",
                    manifest.name,
                    storage_dir.display()
                ))
            })?;
            let mut states = Vec::with_capacity(spec.capabilities.declared.len());
            for entry in &spec.capabilities.declared {
                states.push(Arc::new(setup(entry, manifest, spec, queue, &storage_dir)?));
            }
            spec.states = Arc::new(states);
        }

        let mut pumps = Vec::new();
        for entry in registry.entries() {
            let routes: Vec<Route> = specs
                .iter()
                .zip(&queues)
                .filter(|(spec, _)| {
                    spec.capabilities
                        .declared
                        .iter()
                        .any(|e| Arc::ptr_eq(e, entry))
                })
                .map(|(spec, (tx, _))| Route {
                    cell: Arc::clone(&spec.name),
                    max_message_bytes: spec.max_message_bytes,
                    queue: tx.clone(),
                })
                .collect();
            if !routes.is_empty() {
                pumps.push((Arc::clone(entry), Pump::start(Arc::clone(entry), routes)));
            }
        }

        let order = start_order(&manifests)?;
        let readiness = Arc::new(Readiness {
            cells: specs
                .iter()
                .map(|spec| (Arc::clone(&spec.name), AtomicU8::new(Phase::Starting as u8)))
                .collect(),
        });
        let mut slots: Vec<_> = specs.into_iter().zip(queues).map(Some).collect();
        let mut started: Vec<Option<Receiver<()>>> = manifests.iter().map(|_| None).collect();
        let mut cells = Vec::new();
        for i in order {
            let manifest = &manifests[i];
            // A dependency has reported once, or failed and closed its
            // sender: either way it has been through pulp_init.
            for dep in &manifest.depends_on {
                let d = manifests.iter().position(|m| &m.name == dep);
                if let Some(rx) = d.and_then(|d| started[d].as_ref()) {
                    let _ = rx.recv();
                }
            }
            let (spec, (tx, rx)) = slots[i].take().expect("each cell starts once");
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            started[i] = Some(started_rx);
            let (done_tx, done) = std::sync::mpsc::channel();
            let name = Arc::clone(&spec.name);
            let declared = spec.capabilities.declared.clone();
            let states = Arc::clone(&spec.states);
            let (id, module) = (spec.id, spec.module.clone());
            let swap = Arc::default();
            let mut life = CellLife {
                runtime: Arc::clone(&runtime),
                spec,
                policy: manifest.restart,
                tick: Duration::from_millis(manifest.tick_ms.unwrap_or(0)),
                queue: rx,
                started: Some(started_tx),
                readiness: Arc::clone(&readiness),
                index: i,
                ran: false,
                began: Instant::now(),
                backoff: FIRST_BACKOFF,
                done: Some(done_tx),
                swap: Arc::clone(&swap),
            };
            let mut stage = Stage::Start;
            let task = runtime
                .pool
                .task(Arc::clone(&name), move || life.turn(&mut stage));
            tx.wakes(&task);
            task.wake();
            cells.push(Cell {
                name,
                queue: tx,
                task,
                done,
                declared,
                states,
                id,
                slot: i,
                manifest: manifest.clone(),
                module,
                swap,
            });
        }
        // Each cell reports once; one the host failed running closes its sender instead.
        for rx in started.iter().flatten() {
            let _ = rx.recv();
        }
        Ok(Host {
            runtime,
            registry,
            cells,
            pumps,
            readiness,
            storage_root: storage_root.to_owned(),
        })
    }

    /// The capabilities cells link against now.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every cell's phase, kept current.
    pub fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(&self.readiness)
    }

    /// Orderly shutdown (docs/extensions.md): `pulp_shutdown` in every cell, then
    /// `teardown_cell`, then `teardown` of every capability.
    pub fn shutdown(self) {
        for cell in &self.cells {
            cell.queue.request_shutdown();
        }
        let grace = Instant::now() + SHUTDOWN_GRACE;
        let mut outcome: Vec<Option<bool>> = self
            .cells
            .iter()
            .map(|cell| {
                let left = grace.saturating_duration_since(Instant::now());
                match cell.done.recv_timeout(left) {
                    Ok(torn_down) => Some(torn_down),
                    Err(RecvTimeoutError::Disconnected) => Some(false),
                    Err(RecvTimeoutError::Timeout) => None,
                }
            })
            .collect();
        let busy: Vec<&str> = self
            .cells
            .iter()
            .zip(&outcome)
            .filter(|(_, done)| done.is_none())
            .map(|(c, _)| &*c.name)
            .collect();
        if !busy.is_empty() {
            tracing::warn!(
                "cells still busy {} ms after shutdown began, interrupting them: {}",
                SHUTDOWN_GRACE.as_millis(),
                busy.join(", ")
            );
            stop::interrupt_all();
        }
        let mut stopped = Vec::new();
        for (cell, done) in self.cells.into_iter().zip(outcome.iter_mut()) {
            let torn_down = done.unwrap_or_else(|| cell.done.recv().unwrap_or(false));
            if !torn_down {
                stopped.push((cell.name, cell.declared, cell.states));
            }
        }
        for (_, pump) in self.pumps {
            pump.stop();
        }
        for (name, declared, states) in &stopped {
            for (entry, state) in declared.iter().zip(states.iter()) {
                if let Err(e) = entry.handle.teardown_cell(name, state) {
                    tracing::error!(
                        cell = &**name,
                        capability = entry.name(),
                        "teardown_cell failed: {e}"
                    );
                }
            }
        }
        for entry in self.registry.entries() {
            if let Err(e) = entry.handle.teardown() {
                tracing::error!(capability = entry.name(), origin = %entry.origin, "teardown failed: {e}");
            }
        }
        tracing::info!("shutdown complete");
    }
}

/// `entry`'s setup for the cell of `manifest`, which `spec` was made from.
pub(super) fn setup(
    entry: &Arc<Entry>,
    manifest: &Manifest,
    spec: &CellSpec,
    queue: &QueueSender,
    storage_dir: &Path,
) -> Result<CellStateHandle, HostError> {
    let env = SetupEnv {
        cell: manifest.name.clone(),
        cell_id: spec.id,
        storage_dir: storage_dir.to_owned(),
        cell_config: spec.config.clone(),
        ext_config: entry.ext_config.as_ref().clone(),
        max_message_bytes: manifest.max_message_bytes,
        call_timeout_ms: manifest.call_timeout_ms,
        allowed_outbound_hosts: manifest.allowed_outbound_hosts.clone(),
        host: pulp_ext_api::HostHandle::new(CellLink::leak(
            Arc::clone(entry),
            Route {
                cell: Arc::clone(&spec.name),
                max_message_bytes: spec.max_message_bytes,
                queue: queue.clone(),
            },
        )),
    };
    entry.handle.setup(&env).map_err(|e| {
        HostError::Setup(format!(
            "cell {}: setup of capability {} from {} failed: {e}",
            manifest.name,
            entry.name(),
            entry.origin
        ))
    })
}

/// The order cells start in: manifest order, except that a cell comes after
/// every cell in its `depends_on`. A dependency on no given cell, or a cycle,
/// is an error naming the cells.
fn start_order(manifests: &[Manifest]) -> Result<Vec<usize>, HostError> {
    let index = |name: &str| manifests.iter().position(|m| m.name == name);
    for m in manifests {
        if let Some(missing) = m.depends_on.iter().find(|d| index(d).is_none()) {
            return Err(HostError::Cells(format!(
                "cell {} depends_on {missing:?}, which is not among the cells given ({}); add its -manifest or remove the dependency",
                m.name,
                m.path.display()
            )));
        }
    }
    let mut order = Vec::with_capacity(manifests.len());
    let mut placed = vec![false; manifests.len()];
    while order.len() < manifests.len() {
        let ready = (0..manifests.len()).find(|&i| {
            !placed[i]
                && manifests[i]
                    .depends_on
                    .iter()
                    .all(|d| index(d).is_some_and(|d| placed[d]))
        });
        match ready {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let waiting: Vec<&str> = (0..manifests.len())
                    .filter(|&i| !placed[i])
                    .map(|i| manifests[i].name.as_str())
                    .collect();
                return Err(HostError::Cells(format!(
                    "depends_on has a cycle among cells {}; no order starts them",
                    waiting.join(", ")
                )));
            }
        }
    }
    Ok(order)
}

/// Creates a cell's storage directory, owner-only: other users on the machine
/// read neither its files nor its database.
fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Where a cell's life is between turns.
enum Stage {
    Start,
    Running {
        instance: Box<Instance>,
        next_tick: Instant,
    },
    /// Failed; the next instance starts at `until`.
    Waiting {
        until: Instant,
    },
}

/// A cell's life on the worker pool: start, step, restart per policy, until
/// shutdown.
struct CellLife {
    runtime: Arc<Runtime>,
    spec: CellSpec,
    policy: RestartPolicy,
    tick: Duration,
    queue: QueueReceiver,
    /// Dropped once the first instance has been through `pulp_init`, or failed to.
    started: Option<Sender<()>>,
    readiness: Arc<Readiness>,
    index: usize,
    /// A cell that never initialised stays `Starting` through its restarts.
    ran: bool,
    /// When the current instance was started.
    began: Instant,
    backoff: Duration,
    done: Option<Sender<bool>>,
    swap: Arc<Mutex<Option<Swap>>>,
}

impl CellLife {
    /// Handles what is pending, up to `TURN_BUDGET` items, never waiting.
    fn turn(&mut self, stage: &mut Stage) -> Turn {
        let cell = Arc::clone(&self.spec.name);
        let cell = &*cell;
        let swap = self.swap.lock().unwrap().take();
        if let Some(swap) = swap {
            self.switch(cell, swap, stage);
        }
        for _ in 0..TURN_BUDGET {
            let result = match stage {
                Stage::Start => {
                    self.began = Instant::now();
                    let first = Instance::start(&self.runtime, &self.spec);
                    if first.is_ok() {
                        self.ran = true;
                        self.readiness.set(self.index, Phase::Running);
                    }
                    // Dropping the sender is the report.
                    self.started.take();
                    match first {
                        Ok(instance) => {
                            tracing::info!(cell, "cell started");
                            *stage = Stage::Running {
                                instance: Box::new(instance),
                                next_tick: Instant::now() + self.tick,
                            };
                            continue;
                        }
                        Err(failure) => Err(failure),
                    }
                }
                Stage::Waiting { until } => {
                    if self.queue.shutdown_asked() {
                        return self.finish(false);
                    }
                    if Instant::now() < *until {
                        return Turn::Sleep(*until);
                    }
                    crate::metrics::get()
                        .restarts
                        .get_or_create(&crate::metrics::cell(cell))
                        .inc();
                    *stage = Stage::Start;
                    continue;
                }
                Stage::Running {
                    instance,
                    next_tick,
                } => match self.queue.try_next() {
                    Some(Next::Shutdown) => {
                        match instance.shutdown() {
                            Ok(0) => {}
                            Ok(code) => tracing::warn!(cell, "pulp_shutdown returned {code}"),
                            Err(failure) => {
                                tracing::error!(cell, "pulp_shutdown failed: {failure}")
                            }
                        }
                        tracing::info!(cell, steps = instance.calls(), "cell shut down");
                        return self.finish(false);
                    }
                    Some(Next::Event(delivery)) => {
                        let result = instance.step(Some((&delivery.kind, &delivery.payload)));
                        if let Some((entry, id)) = &delivery.source
                            && let Err(e) = entry.handle.finalize(*id)
                        {
                            tracing::error!(
                                cell,
                                capability = entry.name(),
                                "finalize({id}) failed: {e}"
                            );
                        }
                        result
                    }
                    Some(Next::Call(call)) => serve(instance, cell, call),
                    None if self.tick.is_zero() => return Turn::Idle,
                    None => {
                        let now = Instant::now();
                        if now < *next_tick {
                            return Turn::Sleep(*next_tick);
                        }
                        *next_tick = (*next_tick + self.tick).max(now);
                        instance.step(None)
                    }
                },
            };
            match result {
                Ok(0) => {}
                Ok(code) => tracing::warn!(cell, "pulp_step returned {code}"),
                Err(failure) => {
                    if let Some(turn) = self.failed(cell, failure, stage) {
                        return turn;
                    }
                }
            }
        }
        Turn::Yield
    }

    /// After an instance failed: the restart per policy, as the next stage,
    /// or the end of the cell.
    fn failed(&mut self, cell: &str, failure: Failure, stage: &mut Stage) -> Option<Turn> {
        if stop::stopping() {
            tracing::warn!(cell, "cell interrupted by shutdown");
            return Some(self.finish(false));
        }
        let crashed = !matches!(failure, Failure::Exit(0));
        let kind = match failure {
            Failure::Trap(_) | Failure::Stopped => "trap",
            Failure::Timeout(_) => "timeout",
            Failure::Exit(_) => "exit",
            Failure::InitFailed(_) => "init_failed",
            Failure::Setup(_) => "setup",
        };
        crate::metrics::get()
            .failures
            .get_or_create(&crate::metrics::FailureLabels {
                cell: cell.to_owned(),
                kind,
            })
            .inc();
        let spec = &self.spec;
        for (entry, state) in spec.capabilities.declared.iter().zip(spec.states.iter()) {
            if let Err(e) = entry.handle.cell_failed(cell, state) {
                tracing::error!(cell, capability = entry.name(), "cell_failed failed: {e}");
            }
        }
        if crashed {
            tracing::error!(cell, "cell crashed: {failure}");
        } else {
            tracing::info!(cell, "cell exited");
        }
        let policy = self.policy;
        let restart = match policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnCrash => crashed,
            RestartPolicy::Always => true,
        };
        if !restart {
            self.readiness.set(self.index, Phase::Stopped);
            tracing::warn!(
                cell,
                "cell stopped (restart = {policy}); other cells keep running"
            );
            for (entry, state) in spec.capabilities.declared.iter().zip(spec.states.iter()) {
                if let Err(e) = entry.handle.teardown_cell(cell, state) {
                    tracing::error!(cell, capability = entry.name(), "teardown_cell failed: {e}");
                }
            }
            // Dropping the queue makes producers see the cell is gone.
            return Some(self.finish(true));
        }
        if self.ran {
            self.readiness.set(self.index, Phase::Restarting);
        }
        if self.began.elapsed() >= HEALTHY_RUN {
            self.backoff = FIRST_BACKOFF;
        }
        tracing::info!(
            cell,
            "restarting in {} ms (restart = {policy})",
            self.backoff.as_millis()
        );
        // Events that arrive meanwhile wait in the bounded queue for the next instance.
        *stage = Stage::Waiting {
            until: Instant::now() + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        None
    }

    /// A reload: the old instance (if running) shuts down, the new one takes
    /// the events queued meanwhile.
    fn switch(&mut self, cell: &str, swap: Swap, stage: &mut Stage) {
        if let Stage::Running { instance, .. } = stage {
            match instance.shutdown() {
                Ok(0) => {}
                Ok(code) => tracing::warn!(
                    cell,
                    "pulp_shutdown of the replaced instance returned {code}"
                ),
                Err(failure) => {
                    tracing::warn!(
                        cell,
                        "pulp_shutdown of the replaced instance failed: {failure}"
                    )
                }
            }
        }
        self.spec = swap.spec;
        self.policy = swap.policy;
        self.tick = swap.tick;
        self.ran = true;
        self.began = Instant::now();
        self.backoff = FIRST_BACKOFF;
        self.readiness.set(self.index, Phase::Running);
        *stage = Stage::Running {
            instance: Box::new(swap.instance),
            next_tick: Instant::now() + self.tick,
        };
        tracing::info!(cell, "cell switched to its reloaded instance");
        let _ = swap.switched.send(());
    }

    fn finish(&mut self, torn_down: bool) -> Turn {
        self.started.take();
        if let Some(done) = self.done.take() {
            let _ = done.send(torn_down);
        }
        Turn::Done
    }
}

/// Serves one call from another cell and answers the caller; a failure of
/// the instance is this cell's crash, the caller gets code 5.
fn serve(instance: &mut Instance, cell: &str, call: CallRequest) -> Result<i32, Failure> {
    let CallRequest {
        caller,
        function,
        args,
        chain,
        reply,
    } = call;
    let served = calls::serving(chain, || instance.serve_call(&function, &args));
    let (answer, outcome) = match served {
        Ok(Ok(result)) => (Ok(result), Ok(0)),
        Ok(Err(CallError::Returned(code))) => {
            tracing::warn!(
                cell,
                caller = &*caller,
                function,
                "pulp_on_call returned {code}"
            );
            (Err(Code::FAILED), Ok(0))
        }
        Ok(Err(CallError::BadResult(why))) => {
            tracing::warn!(cell, caller = &*caller, function, "pulp_on_call: {why}");
            (Err(Code::FAILED), Ok(0))
        }
        Err(failure) => (Err(Code::FAILED), Err(failure)),
    };
    // The caller may have given up waiting.
    let _ = reply.send(answer);
    outcome
}
