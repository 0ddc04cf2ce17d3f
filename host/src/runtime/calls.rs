//! Cell-to-cell calls (docs/cell-abi.md, `provides`/`consumes`): which cells
//! serve which functions, the request a caller queues for its target, and the
//! chain of callers a cell's thread is serving, so a cycle is refused at once
//! instead of deadlocking.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use pulp_wire::Code;
use pulp_wire::code::call::{CYCLE, DENIED};

use super::queue::QueueSender;
use super::stop;
use crate::error::HostError;
use crate::manifest::Manifest;

/// How often a waiting caller looks at the host's shutdown flag.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// One call, queued for the target cell's thread.
pub struct CallRequest {
    pub caller: Arc<str>,
    pub function: String,
    pub args: Vec<u8>,
    /// The cells waiting on this call, outermost first, the caller last.
    pub chain: Vec<Arc<str>>,
    pub reply: SyncSender<Result<Vec<u8>, Code>>,
}

struct Party {
    queue: QueueSender,
    provides: Vec<String>,
    consumes: Vec<String>,
    call_timeout: Duration,
}

/// Every cell of the host, as a caller and as a target.
#[derive(Default)]
pub struct Directory {
    cells: RwLock<HashMap<Arc<str>, Party>>,
}

thread_local! {
    /// The chain of the call this thread is serving; empty in a step.
    static SERVING: RefCell<Vec<Arc<str>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `serve` as the handling of `chain`'s call: calls it makes carry the
/// chain on.
pub(crate) fn serving<R>(chain: Vec<Arc<str>>, serve: impl FnOnce() -> R) -> R {
    SERVING.set(chain);
    let result = serve();
    SERVING.with_borrow_mut(Vec::clear);
    result
}

impl Directory {
    pub(crate) fn add(&self, name: &Arc<str>, manifest: &Manifest, queue: QueueSender) {
        self.cells.write().unwrap().insert(
            Arc::clone(name),
            Party {
                queue,
                provides: manifest.provides.clone(),
                consumes: manifest.consumes.clone(),
                call_timeout: Duration::from_millis(manifest.call_timeout_ms),
            },
        );
    }

    /// `caller` calls `function` of `target` and waits for the result: at
    /// most the target's `call_timeout_ms`, queueing included.
    pub fn call(
        &self,
        caller: &str,
        target: &str,
        function: &str,
        args: Vec<u8>,
    ) -> Result<Vec<u8>, Code> {
        let cells = self.cells.read().unwrap();
        let consumed = cells
            .get(caller)
            .is_some_and(|c| c.consumes.iter().any(|f| f == function));
        let Some(party) = cells
            .get(target)
            .filter(|t| consumed && t.provides.iter().any(|f| f == function))
        else {
            tracing::warn!(
                cell = caller,
                target,
                function,
                "pulp_call refused: the caller's consumes and the target's provides must both list the function"
            );
            return Err(DENIED);
        };
        let mut chain = SERVING.with_borrow(Clone::clone);
        if target == caller || chain.iter().any(|c| &**c == target) {
            tracing::warn!(
                cell = caller,
                target,
                function,
                "pulp_call refused: a cycle ({} -> {caller} -> {target})",
                chain.iter().map(|c| &**c).collect::<Vec<_>>().join(" -> ")
            );
            return Err(CYCLE);
        }
        chain.push(Arc::from(caller));
        let (reply, answer) = sync_channel(1);
        let request = CallRequest {
            caller: Arc::from(caller),
            function: function.to_owned(),
            args,
            chain,
            reply,
        };
        let deadline = Instant::now() + party.call_timeout;
        if party.queue.call(request).is_err() {
            tracing::warn!(
                cell = caller,
                target,
                function,
                "pulp_call failed: the target has stopped"
            );
            return Err(Code::FAILED);
        }
        drop(cells);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match answer.recv_timeout(left.min(WAIT_SLICE)) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Disconnected) => {
                    tracing::warn!(
                        cell = caller,
                        target,
                        function,
                        "pulp_call failed: the target stopped before answering"
                    );
                    return Err(Code::FAILED);
                }
                Err(RecvTimeoutError::Timeout) if left.is_zero() || stop::stopping() => {
                    tracing::warn!(
                        cell = caller,
                        target,
                        function,
                        "pulp_call failed: no answer within the target's call_timeout_ms"
                    );
                    return Err(Code::FAILED);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// Start-up check: every function a cell consumes is provided by exactly one
/// other cell.
pub fn check(manifests: &[Manifest]) -> Result<(), HostError> {
    for m in manifests {
        for function in &m.consumes {
            let providers: Vec<&str> = manifests
                .iter()
                .filter(|p| p.provides.contains(function))
                .map(|p| p.name.as_str())
                .collect();
            match providers.as_slice() {
                [_] => {}
                [] => {
                    return Err(HostError::Cells(format!(
                        "cell {} consumes {function:?}, which no cell provides; add the providing cell's -manifest or remove it from consumes",
                        m.name
                    )));
                }
                several => {
                    return Err(HostError::Cells(format!(
                        "cell {} consumes {function:?}, which cells {} all provide; let one cell provide it",
                        m.name,
                        several.join(", ")
                    )));
                }
            }
        }
    }
    Ok(())
}
