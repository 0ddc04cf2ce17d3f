//! The storage capabilities (docs/capabilities.md): a sandboxed directory and a SQLite
//! database for each cell, both under the cell's storage directory. Each is a
//! built-in `Capability` like any extension's.

mod fs;
mod quota;
pub(crate) mod sqlite;

use std::sync::Arc;

use pulp_ext_api::CapabilityHandle;

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
