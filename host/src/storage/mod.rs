//! The storage capabilities (docs/capabilities.md): a sandboxed directory and a SQLite
//! database for each cell, both under the cell's storage directory. Each is a
//! built-in `Capability` like any extension's.

mod fs;
mod quota;
pub(crate) mod sqlite;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use pulp_ext_api::{CapabilityHandle, Code};

pub use quota::DEFAULT_MAX_STORAGE_BYTES;
use quota::Quotas;

/// The storage capabilities and the quotas they share.
#[derive(Clone, Default)]
pub struct Storage {
    quotas: Arc<Quotas>,
}

impl Storage {
    /// The cell's `max_storage_bytes`; set before the cell is set up.
    pub fn set_quota(&self, cell: &str, bytes: u64) {
        self.quotas.set_limit(cell, bytes);
    }

    pub fn capabilities(&self) -> Vec<CapabilityHandle> {
        [
            CapabilityHandle::builtin(fs::Files::new(Arc::clone(&self.quotas))),
            CapabilityHandle::builtin(sqlite::Databases::new(Arc::clone(&self.quotas))),
        ]
        .into_iter()
        .map(|handle| handle.expect("built-in capabilities describe themselves"))
        .collect()
    }
}

/// Per-cell state, set up when a cell that declares the capability loads.
struct PerCell<T>(RwLock<HashMap<String, Arc<T>>>);

impl<T> Default for PerCell<T> {
    fn default() -> Self {
        PerCell(RwLock::default())
    }
}

impl<T> PerCell<T> {
    fn insert(&self, cell: &str, state: T) {
        self.0
            .write()
            .unwrap()
            .insert(cell.to_owned(), Arc::new(state));
    }

    /// The cell's state; a cell reaching an import it did not set up is a host bug,
    /// reported to the cell as a failed call.
    fn get(&self, cell: &str) -> Result<Arc<T>, Code> {
        self.0
            .read()
            .unwrap()
            .get(cell)
            .cloned()
            .ok_or(Code::FAILED)
    }

    fn remove(&self, cell: &str) -> Option<Arc<T>> {
        self.0.write().unwrap().remove(cell)
    }

    fn clear(&self) {
        self.0.write().unwrap().clear();
    }
}
