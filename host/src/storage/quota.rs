//! The per-cell storage quota (`max_storage_bytes`): the cell's files and its
//! database together. storage.fs checks a write against it before writing;
//! storage.sqlite gives SQLite the room that is left as its page limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Bytes a cell may store when no manifest said otherwise (a cell set up
/// outside `Storage::set_quota`, as in the benches).
pub const DEFAULT_MAX_STORAGE_BYTES: u64 = 1024 * 1024 * 1024;

pub struct CellQuota {
    limit: u64,
    /// `{storage-root}/{cell}`.
    dir: PathBuf,
    /// Bytes of the regular files under `files/`, counted at set-up and kept
    /// current by storage.fs.
    files: AtomicU64,
}

impl CellQuota {
    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn files_bytes(&self) -> u64 {
        self.files.load(Ordering::SeqCst)
    }

    /// A file of `old` bytes became `new` bytes (0 = absent).
    pub fn files_changed(&self, old: u64, new: u64) {
        if new >= old {
            self.files.fetch_add(new - old, Ordering::SeqCst);
        } else {
            self.files.fetch_sub(old - new, Ordering::SeqCst);
        }
    }

    /// Bytes the database holds on disk now, with its write-ahead log.
    pub fn database_bytes(&self) -> u64 {
        ["data.db", "data.db-wal"]
            .iter()
            .filter_map(|name| std::fs::metadata(self.dir.join(name)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Whether the files may change by replacing `old` bytes with `new`.
    pub fn files_fit(&self, old: u64, new: u64) -> bool {
        let others = self.files_bytes().saturating_sub(old) + self.database_bytes();
        others.saturating_add(new) <= self.limit
    }
}

/// Every cell's quota, shared by the storage capabilities.
#[derive(Default)]
pub struct Quotas {
    limits: RwLock<HashMap<String, u64>>,
    cells: RwLock<HashMap<String, Arc<CellQuota>>>,
}

impl Quotas {
    pub fn set_limit(&self, cell: &str, bytes: u64) {
        self.limits.write().unwrap().insert(cell.to_owned(), bytes);
        self.cells.write().unwrap().remove(cell);
    }

    /// The cell's quota, its usage counted from disk the first time.
    pub fn cell(&self, cell: &str, dir: &Path) -> Result<Arc<CellQuota>, String> {
        if let Some(quota) = self.cells.read().unwrap().get(cell) {
            return Ok(Arc::clone(quota));
        }
        let files = dir.join("files");
        let used = match files.is_dir() {
            true => bytes_under(&files)
                .map_err(|e| format!("cannot measure {}: {e}", files.display()))?,
            false => 0,
        };
        let limit = self
            .limits
            .read()
            .unwrap()
            .get(cell)
            .copied()
            .unwrap_or(DEFAULT_MAX_STORAGE_BYTES);
        let quota = Arc::new(CellQuota {
            limit,
            dir: dir.to_path_buf(),
            files: AtomicU64::new(used),
        });
        let mut cells = self.cells.write().unwrap();
        Ok(Arc::clone(cells.entry(cell.to_owned()).or_insert(quota)))
    }
}

/// Bytes of the regular files below `dir`, not following links.
fn bytes_under(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += bytes_under(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
