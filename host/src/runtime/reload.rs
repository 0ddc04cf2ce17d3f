//! Live reload (README "Operating Pulp"): the manifests and the extensions
//! file are read again; each cell whose module, config, instance limits or
//! library changed gets a new instance, started and initialised beside the
//! old one, then switched to, and the old one shut down. Every new instance
//! is initialised before any cell switches, so a refused reload changes
//! nothing. The cell's queue, routes and connections stay: events queued
//! during the switch go to the new instance.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pulp_ext_api::CellStateHandle;
use wasmtime::Module;

use super::events::{Pump, Route};
use super::instance::{CellSpec, Instance};
use super::supervisor::{Host, Phase, Swap, prepare, setup};
use crate::error::HostError;
use crate::manifest::Manifest;
use crate::registry::{Entry, Registry};

/// How long a reload waits, past the cell's `call_timeout_ms`, for its task
/// to take the new instance.
const SWITCH_GRACE: Duration = Duration::from_secs(5);

/// The manifest fields a reload may not change: capabilities were set up, and
/// other cells, the listener and the storage quotas were arranged, with them.
fn fixed_change(old: &Manifest, new: &Manifest) -> Option<&'static str> {
    [
        ("capabilities", old.capabilities != new.capabilities),
        ("providers", old.providers != new.providers),
        (
            "call_timeout_ms",
            old.call_timeout_ms != new.call_timeout_ms,
        ),
        (
            "max_message_bytes",
            old.max_message_bytes != new.max_message_bytes,
        ),
        (
            "max_queue_bytes",
            old.max_queue_bytes != new.max_queue_bytes,
        ),
        (
            "max_storage_bytes",
            old.max_storage_bytes != new.max_storage_bytes,
        ),
        (
            "allowed_outbound_hosts",
            old.allowed_outbound_hosts != new.allowed_outbound_hosts,
        ),
        ("depends_on", old.depends_on != new.depends_on),
        ("provides", old.provides != new.provides),
        ("consumes", old.consumes != new.consumes),
    ]
    .into_iter()
    .find_map(|(field, changed)| changed.then_some(field))
}

/// One cell's part in a reload.
struct Plan {
    cell: usize,
    manifest: Manifest,
    spec: CellSpec,
    /// Declared capabilities whose state was set up anew.
    fresh: Vec<usize>,
    instance: Option<Instance>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub cells: Vec<String>,
    pub extensions: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| match names {
            [] => "none".to_owned(),
            names => names.join(", "),
        };
        write!(
            f,
            "cells switched: {}; extensions loaded: {}",
            list(&self.cells),
            list(&self.extensions)
        )
    }
}

impl Host {
    /// Applies `manifests` and `registry`, read again by the caller, or
    /// refuses them whole with the reason.
    pub fn reload(
        &mut self,
        manifests: Vec<Manifest>,
        registry: Registry,
    ) -> Result<Reloaded, HostError> {
        let fresh: Vec<Arc<Entry>> = registry
            .entries()
            .iter()
            .filter(|e| !self.registry.entries().iter().any(|o| Arc::ptr_eq(o, e)))
            .cloned()
            .collect();
        let mut plans = Vec::new();
        let prepared = self
            .same_cells(&manifests)
            .and_then(|()| self.plan(manifests, &registry, &mut plans))
            .and_then(|()| self.start_all(&mut plans));
        if let Err(e) = prepared {
            self.undo(plans);
            // Loaded for nothing: never unloaded, but told to let go.
            for entry in &fresh {
                if let Err(e) = entry.handle.teardown() {
                    tracing::error!(capability = entry.name(), origin = %entry.origin, "teardown failed: {e}");
                }
            }
            return Err(e);
        }
        let mut reloaded = Reloaded {
            cells: Vec::new(),
            extensions: fresh
                .iter()
                .filter_map(|e| e.extension().map(str::to_owned))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        for plan in plans {
            let name = self.cells[plan.cell].name.to_string();
            if self.switch(plan) {
                reloaded.cells.push(name);
            }
        }
        self.replace_registry(registry);
        Ok(reloaded)
    }

    fn same_cells(&self, manifests: &[Manifest]) -> Result<(), HostError> {
        let now: BTreeSet<&str> = self.cells.iter().map(|c| &*c.name).collect();
        let asked: BTreeSet<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
        if now == asked {
            return Ok(());
        }
        let added: Vec<&str> = asked.difference(&now).copied().collect();
        let removed: Vec<&str> = now.difference(&asked).copied().collect();
        Err(HostError::Cells(format!(
            "reload cannot add or remove cells (added: [{}], removed: [{}]); restart the host to change the set of cells",
            added.join(", "),
            removed.join(", ")
        )))
    }

    /// Prepares each changed cell: its module, and the state of each
    /// capability whose library changed (or all its libraries' when the
    /// cell's config did).
    fn plan(
        &self,
        manifests: Vec<Manifest>,
        registry: &Registry,
        plans: &mut Vec<Plan>,
    ) -> Result<(), HostError> {
        for manifest in manifests {
            let index = self
                .cells
                .iter()
                .position(|c| *c.name == manifest.name)
                .expect("the same cells");
            let cell = &self.cells[index];
            if let Some(field) = fixed_change(&cell.manifest, &manifest) {
                return Err(HostError::Cells(format!(
                    "cell {}: {} changes {field}, which a reload cannot change; restart the host to apply it",
                    manifest.name,
                    manifest.path.display()
                )));
            }
            let mut spec = prepare(&self.runtime, registry, &manifest, cell.id)?;
            let config_changed = cell.manifest.config != manifest.config;
            let entry_changed = |k: usize, entry: &Arc<Entry>| {
                cell.declared
                    .get(k)
                    .is_none_or(|old| !Arc::ptr_eq(old, entry))
                    || (config_changed && entry.extension().is_some())
            };
            let changed = !Module::same(&spec.module, &cell.module)
                || config_changed
                || cell.manifest.max_memory_pages != manifest.max_memory_pages
                || cell.manifest.tick_ms != manifest.tick_ms
                || cell.manifest.restart != manifest.restart
                || spec.capabilities.declared.len() != cell.declared.len()
                || (spec.capabilities.declared.iter().enumerate())
                    .any(|(k, e)| entry_changed(k, e));
            if !changed {
                continue;
            }
            if self.readiness.phase(cell.slot) == Phase::Stopped {
                tracing::warn!(
                    cell = &*cell.name,
                    "cell changed but is stopped for good; a reload does not start it again, a restart of the host does"
                );
                continue;
            }
            let storage_dir = self.storage_root.join(&manifest.name);
            let mut states: Vec<Arc<CellStateHandle>> = Vec::new();
            let mut fresh = Vec::new();
            for (k, entry) in spec.capabilities.declared.iter().enumerate() {
                if entry_changed(k, entry) {
                    match setup(entry, &manifest, &spec, &cell.queue, &storage_dir) {
                        Ok(state) => states.push(Arc::new(state)),
                        Err(e) => {
                            let declared = &spec.capabilities.declared;
                            tear_down(&manifest.name, declared, &states, &fresh);
                            return Err(e);
                        }
                    }
                    fresh.push(k);
                } else {
                    states.push(Arc::clone(&cell.states[k]));
                }
            }
            spec.states = Arc::new(states);
            plans.push(Plan {
                cell: index,
                manifest,
                spec,
                fresh,
                instance: None,
            });
        }
        Ok(())
    }

    /// Starts and initialises every planned instance, beside the running ones.
    fn start_all(&self, plans: &mut [Plan]) -> Result<(), HostError> {
        for plan in plans {
            let instance = Instance::start(&self.runtime, &plan.spec).map_err(|failure| {
                HostError::Setup(format!(
                    "cell {}: the new instance failed to start: {failure}",
                    plan.manifest.name
                ))
            })?;
            plan.instance = Some(instance);
        }
        Ok(())
    }

    /// A refused reload: new instances shut down, new states torn down.
    fn undo(&self, plans: Vec<Plan>) {
        for plan in plans {
            let cell = &*plan.spec.name;
            if let Some(mut instance) = plan.instance {
                let _ = instance.shutdown();
            }
            let declared = &plan.spec.capabilities.declared;
            tear_down(cell, declared, &plan.spec.states, &plan.fresh);
        }
    }

    /// Hands the new instance to the cell's task and waits for the switch;
    /// then the replaced states are torn down. False if the task did not
    /// take it in time (a step still running), which leaves the cell as it was.
    fn switch(&mut self, plan: Plan) -> bool {
        let Plan {
            cell: index,
            manifest,
            spec,
            fresh,
            instance,
        } = plan;
        let cell = &mut self.cells[index];
        let (switched_tx, switched) = std::sync::mpsc::channel();
        let declared = spec.capabilities.declared.clone();
        let states = Arc::clone(&spec.states);
        let module = spec.module.clone();
        *cell.swap.lock().unwrap() = Some(Swap {
            spec,
            instance: instance.expect("started"),
            policy: manifest.restart,
            tick: Duration::from_millis(manifest.tick_ms.unwrap_or(0)),
            switched: switched_tx,
        });
        cell.task.wake();
        let wait = Duration::from_millis(manifest.call_timeout_ms) + SWITCH_GRACE;
        if switched.recv_timeout(wait).is_err() {
            let name = &*cell.name;
            if let Some(mut swap) = cell.swap.lock().unwrap().take() {
                let _ = swap.instance.shutdown();
                tear_down(name, &declared, &states, &fresh);
            }
            tracing::error!(
                cell = name,
                "the cell did not take its new instance within {} ms; it keeps running as it was",
                wait.as_millis()
            );
            return false;
        }
        tear_down(&cell.name, &cell.declared, &cell.states, &fresh);
        cell.declared = declared;
        cell.states = states;
        cell.module = module;
        cell.manifest = manifest;
        true
    }

    /// Entries gone from the registry stop their pumps and are torn down;
    /// new ones that cells declare get pumps.
    fn replace_registry(&mut self, registry: Registry) {
        let registry = Arc::new(registry);
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pumps)
            .into_iter()
            .partition(|(entry, _)| registry.entries().iter().any(|e| Arc::ptr_eq(e, entry)));
        self.pumps = kept;
        for (_, pump) in gone {
            pump.stop();
        }
        for entry in registry.entries() {
            let routes: Vec<Route> = self
                .cells
                .iter()
                .filter(|c| c.declared.iter().any(|e| Arc::ptr_eq(e, entry)))
                .map(|c| Route {
                    cell: Arc::clone(&c.name),
                    max_message_bytes: c.manifest.max_message_bytes,
                    queue: c.queue.clone(),
                })
                .collect();
            let pumped = self.pumps.iter().any(|(e, _)| Arc::ptr_eq(e, entry));
            if !routes.is_empty() && !pumped {
                self.pumps
                    .push((Arc::clone(entry), Pump::start(Arc::clone(entry), routes)));
            }
        }
        for old in self.registry.entries() {
            if !registry.entries().iter().any(|e| Arc::ptr_eq(e, old))
                && let Err(e) = old.handle.teardown()
            {
                tracing::error!(capability = old.name(), origin = %old.origin, "teardown failed: {e}");
            }
        }
        self.registry = registry;
    }
}

/// Tears down the states at `fresh` of `declared`: those a refused reload
/// set up, or those a switch replaced.
fn tear_down(
    cell: &str,
    declared: &[Arc<Entry>],
    states: &[Arc<CellStateHandle>],
    fresh: &[usize],
) {
    for &k in fresh {
        if let (Some(entry), Some(state)) = (declared.get(k), states.get(k))
            && let Err(e) = entry.handle.teardown_cell(cell, state)
        {
            tracing::error!(cell, capability = entry.name(), "teardown_cell failed: {e}");
        }
    }
}
