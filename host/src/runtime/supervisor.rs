//! Starting cells, the step loop on each cell's thread, restarts, and shutdown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pulp_ext_api::{CellStateHandle, Code, SetupEnv};

use super::Runtime;
use super::calls::{self, CallRequest};
use super::events::{CellLink, Delivery, Pump, Route};
use super::instance::{CallError, CellSpec, Failure, Instance, link_check};
use wasmtime::Module;

use super::modules::{LoadError, Source};
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

struct Cell {
    name: Arc<str>,
    queue: QueueSender,
    /// Yields whether the cell already stopped for good (and had `teardown_cell`).
    thread: JoinHandle<bool>,
    declared: Vec<Arc<Entry>>,
    states: Arc<Vec<CellStateHandle>>,
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
        self.cells
            .iter()
            .map(|(name, phase)| {
                let phase = match phase.load(Ordering::Relaxed) {
                    0 => Phase::Starting,
                    1 => Phase::Running,
                    2 => Phase::Restarting,
                    _ => Phase::Stopped,
                };
                (&**name, phase)
            })
            .collect()
    }

    fn set(&self, index: usize, phase: Phase) {
        self.cells[index].1.store(phase as u8, Ordering::Relaxed);
    }
}

/// The running host: every cell on its own thread, and the event pumps.
pub struct Host {
    registry: Arc<Registry>,
    cells: Vec<Cell>,
    pumps: Vec<Pump>,
    readiness: Arc<Readiness>,
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
    /// Validates every cell, runs capability setup, then starts each cell's thread and
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
            .map(|m| queue(QUEUE_CAPACITY, m.max_queue_bytes))
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
                let env = SetupEnv {
                    cell: manifest.name.clone(),
                    cell_id: spec.id,
                    storage_dir: storage_dir.clone(),
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
                states.push(entry.handle.setup(&env).map_err(|e| {
                    HostError::Setup(format!(
                        "cell {}: setup of capability {} from {} failed: {e}",
                        manifest.name,
                        entry.name(),
                        entry.origin
                    ))
                })?);
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
                pumps.push(Pump::start(Arc::clone(entry), routes));
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
        let mut started: Vec<Option<std::sync::mpsc::Receiver<()>>> =
            manifests.iter().map(|_| None).collect();
        let mut cells = Vec::new();
        for i in order {
            let manifest = &manifests[i];
            // A dependency has reported once, or its thread died early and
            // closed its sender: either way it has been through pulp_init.
            for dep in &manifest.depends_on {
                let d = manifests.iter().position(|m| &m.name == dep);
                if let Some(rx) = d.and_then(|d| started[d].as_ref()) {
                    let _ = rx.recv();
                }
            }
            let (spec, (tx, rx)) = slots[i].take().expect("each cell starts once");
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            started[i] = Some(started_rx);
            let declared = spec.capabilities.declared.clone();
            let states = Arc::clone(&spec.states);
            let runtime = Arc::clone(&runtime);
            let policy = manifest.restart;
            let tick = Duration::from_millis(manifest.tick_ms.unwrap_or(0));
            let name = Arc::clone(&spec.name);
            let phase = (Arc::clone(&readiness), i);
            let thread = std::thread::Builder::new()
                .name(format!("cell-{}", spec.name))
                .spawn(move || supervise(&runtime, &spec, policy, tick, &rx, started_tx, phase))
                .map_err(|e| {
                    HostError::Setup(format!(
                        "cell {}: cannot start its thread: {e}",
                        manifest.name
                    ))
                })?;
            cells.push(Cell {
                name,
                queue: tx,
                thread,
                declared,
                states,
            });
        }
        // Each cell reports once; a thread that died early closes its sender instead.
        for rx in started.iter().flatten() {
            let _ = rx.recv();
        }
        Ok(Host {
            registry,
            cells,
            pumps,
            readiness,
        })
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
        while Instant::now() < grace && self.cells.iter().any(|c| !c.thread.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let busy: Vec<&str> = self
            .cells
            .iter()
            .filter(|c| !c.thread.is_finished())
            .map(|c| &*c.name)
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
        for cell in self.cells {
            let torn_down = cell.thread.join().unwrap_or(false);
            if !torn_down {
                stopped.push((cell.name, cell.declared, cell.states));
            }
        }
        for pump in self.pumps {
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

enum Outcome {
    Shutdown,
    Failed(Failure),
}

/// A cell's thread: start, step, restart per policy, until shutdown. Returns true
/// when the cell stopped for good before shutdown and was already torn down.
fn supervise(
    runtime: &Arc<Runtime>,
    spec: &CellSpec,
    policy: RestartPolicy,
    tick: Duration,
    queue: &QueueReceiver,
    started: std::sync::mpsc::Sender<()>,
    (readiness, index): (Arc<Readiness>, usize),
) -> bool {
    let mut started = Some(started);
    // A cell that never initialised stays `Starting` through its restarts.
    let mut ran = false;
    let cell = &*spec.name;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let began = Instant::now();
        let first = Instance::start(runtime, spec);
        if first.is_ok() {
            ran = true;
            readiness.set(index, Phase::Running);
        }
        // Dropping the sender is the report.
        started.take();
        let outcome = match first {
            Ok(mut instance) => {
                tracing::info!(cell, "cell started");
                run(&mut instance, cell, tick, queue)
            }
            Err(failure) => Outcome::Failed(failure),
        };
        let failure = match outcome {
            Outcome::Shutdown => return false,
            Outcome::Failed(_) if stop::stopping() => {
                tracing::warn!(cell, "cell interrupted by shutdown");
                return false;
            }
            Outcome::Failed(failure) => failure,
        };
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
        let restart = match policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnCrash => crashed,
            RestartPolicy::Always => true,
        };
        if !restart {
            readiness.set(index, Phase::Stopped);
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
            return true;
        }
        if ran {
            readiness.set(index, Phase::Restarting);
        }
        if began.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::info!(
            cell,
            "restarting in {} ms (restart = {policy})",
            backoff.as_millis()
        );
        // Events that arrive meanwhile wait in the bounded queue for the next instance.
        if queue.shutdown_before(Instant::now() + backoff) {
            return false;
        }
        crate::metrics::get()
            .restarts
            .get_or_create(&crate::metrics::cell(cell))
            .inc();
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Work {
    Call(CallRequest),
    Event(Delivery),
    Tick,
    Shutdown,
}

fn next_work(queue: &QueueReceiver, tick: Duration, next_tick: Instant) -> Work {
    match queue.recv_until((!tick.is_zero()).then_some(next_tick)) {
        Ok(Next::Call(call)) => Work::Call(call),
        Ok(Next::Event(d)) => Work::Event(d),
        Ok(Next::Shutdown) | Err(RecvTimeoutError::Disconnected) => Work::Shutdown,
        Err(RecvTimeoutError::Timeout) => Work::Tick,
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

/// The step loop: blocks until an event or the next tick, never spins.
fn run(instance: &mut Instance, cell: &str, tick: Duration, queue: &QueueReceiver) -> Outcome {
    let mut next_tick = Instant::now() + tick;
    loop {
        let result = match next_work(queue, tick, next_tick) {
            Work::Shutdown => {
                match instance.shutdown() {
                    Ok(0) => {}
                    Ok(code) => tracing::warn!(cell, "pulp_shutdown returned {code}"),
                    Err(failure) => tracing::error!(cell, "pulp_shutdown failed: {failure}"),
                }
                tracing::info!(cell, steps = instance.calls(), "cell shut down");
                return Outcome::Shutdown;
            }
            Work::Event(delivery) => {
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
            Work::Call(call) => serve(instance, cell, call),
            Work::Tick => {
                let now = Instant::now();
                next_tick = (next_tick + tick).max(now);
                instance.step(None)
            }
        };
        match result {
            Ok(0) => {}
            Ok(code) => tracing::warn!(cell, "pulp_step returned {code}"),
            Err(failure) => return Outcome::Failed(failure),
        }
    }
}
