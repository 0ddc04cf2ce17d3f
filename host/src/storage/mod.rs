//! The storage capabilities (docs/capabilities.md): a sandboxed directory and a SQLite
//! database for each cell, both under the cell's storage directory. Each is a
//! built-in `Capability` like any extension's.

pub(crate) mod fs;
mod quota;
pub(crate) mod sqlite;

use std::sync::Arc;

pub use quota::DEFAULT_MAX_STORAGE_BYTES;
use quota::Quotas;

/// What the storage capabilities share: each cell's quota.
#[derive(Clone, Default)]
pub struct Storage {
    quotas: Arc<Quotas>,
}

impl Storage {
    /// The cell's `max_storage_bytes`; set before the cell is set up.
    pub fn set_quota(&self, cell: &str, bytes: u64) {
        self.quotas.set_limit(cell, bytes);
    }

    /// The quotas, for the storage capabilities.
    pub(crate) fn quotas(&self) -> Arc<Quotas> {
        Arc::clone(&self.quotas)
    }
}
