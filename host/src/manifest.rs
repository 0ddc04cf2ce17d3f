//! Cell manifests (docs/manifest.md): parsing and validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    Never,
    OnCrash,
    Always,
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnCrash => "on_crash",
            RestartPolicy::Always => "always",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default = "default_wasm")]
    wasm: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    consumes: Vec<String>,
    #[serde(default)]
    shared_memory_groups: Vec<String>,
    #[serde(default)]
    dedicated_thread: bool,
    #[serde(default)]
    snapshotable: bool,
    #[serde(default = "default_max_memory_pages")]
    max_memory_pages: u32,
    #[serde(default = "default_call_timeout_ms")]
    call_timeout_ms: u64,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: u64,
    tick_ms: Option<u64>,
    max_queue_bytes: Option<u64>,
    #[serde(default = "default_max_storage_bytes")]
    max_storage_bytes: u64,
    #[serde(default = "default_restart")]
    restart: RestartPolicy,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    providers: BTreeMap<String, String>,
    #[serde(default)]
    config: toml::Table,
    wasm_sha256: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

fn default_wasm() -> String {
    "cell.wasm".into()
}
fn default_max_memory_pages() -> u32 {
    4096
}
fn default_call_timeout_ms() -> u64 {
    30_000
}
fn default_max_message_bytes() -> u64 {
    8 * 1024 * 1024
}
/// Bytes of events that may wait for one cell when the manifest does not say.
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 64 * 1024 * 1024;
fn default_max_storage_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_restart() -> RestartPolicy {
    RestartPolicy::OnCrash
}

/// A validated manifest. The reserved fields (`shared_memory_groups`,
/// `dedicated_thread`, `snapshotable`) are parsed and checked for type, then not
/// kept: nothing acts on them yet.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub wasm: PathBuf,
    pub capabilities: Vec<String>,
    pub max_memory_pages: u32,
    pub call_timeout_ms: u64,
    pub max_message_bytes: u64,
    /// Steps without an event every this many ms; `None` takes the host's
    /// `--default-tick-ms`.
    pub tick_ms: Option<u64>,
    /// Bytes of events waiting for the cell; at least `max_message_bytes`.
    pub max_queue_bytes: u64,
    /// Bytes of the cell's files and database together.
    pub max_storage_bytes: u64,
    pub restart: RestartPolicy,
    pub allowed_outbound_hosts: Vec<String>,
    pub providers: BTreeMap<String, String>,
    pub config: toml::Table,
    /// The module's SHA-256, lower-case hex, when the manifest pins it.
    pub wasm_sha256: Option<String>,
    /// Cells that finish `pulp_init` before this one starts.
    pub depends_on: Vec<String>,
    /// Functions this cell serves to others (`pulp_on_call`).
    pub provides: Vec<String>,
    /// Functions of other cells this cell calls (`pulp_call`).
    pub consumes: Vec<String>,
}

/// Every manifest error names the file; the text says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("manifest {}: {message}", path.display())]
pub struct ManifestError {
    pub path: PathBuf,
    pub message: String,
}

/// wasm pages are 64 KiB and a 32-bit memory has at most 65536 of them.
const MAX_PAGES: u32 = 65_536;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let err = |message: String| ManifestError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read it: {e}; check the -manifest path")))?;
        let raw: RawManifest =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;

        if !valid_name(&raw.name) {
            return Err(err(format!(
                "name {:?} is invalid: use lower-case letters, digits, '_' and '-', starting with a letter or digit",
                raw.name
            )));
        }
        if raw.version.trim().is_empty() {
            return Err(err("version is empty: set e.g. version = \"0.1.0\"".into()));
        }
        if raw.max_memory_pages == 0 || raw.max_memory_pages > MAX_PAGES {
            return Err(err(format!(
                "max_memory_pages = {} is out of range: use 1..={MAX_PAGES} (64 KiB pages)",
                raw.max_memory_pages
            )));
        }
        if raw.call_timeout_ms == 0 {
            return Err(err("call_timeout_ms must be at least 1".into()));
        }
        if raw.max_message_bytes == 0 || raw.max_message_bytes > u64::from(u32::MAX) {
            return Err(err(format!(
                "max_message_bytes = {} is out of range: use 1..={}",
                raw.max_message_bytes,
                u32::MAX
            )));
        }
        // One event of the largest size must always fit.
        let max_queue_bytes = match raw.max_queue_bytes {
            Some(bytes) if bytes < raw.max_message_bytes => {
                return Err(err(format!(
                    "max_queue_bytes = {bytes} is below max_message_bytes = {}: the queue must hold at least one whole event",
                    raw.max_message_bytes
                )));
            }
            Some(bytes) => bytes,
            None => DEFAULT_MAX_QUEUE_BYTES.max(raw.max_message_bytes),
        };
        if raw.max_storage_bytes == 0 {
            return Err(err(
                "max_storage_bytes must be at least 1 (bytes of files and database)".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for cap in &raw.capabilities {
            if !seen.insert(cap) {
                return Err(err(format!("capability {cap:?} is listed twice")));
            }
        }
        for pinned in raw.providers.keys() {
            if !raw.capabilities.contains(pinned) {
                return Err(err(format!(
                    "[providers] pins {pinned:?}, which is not in capabilities; declare it or remove the pin"
                )));
            }
        }

        let dir = path.parent().unwrap_or(Path::new("."));
        let wasm = dir.join(&raw.wasm);
        if !wasm.is_file() {
            return Err(err(format!(
                "wasm file {} not found (wasm = {:?}, relative to the manifest); build the cell or fix `wasm`",
                wasm.display(),
                raw.wasm
            )));
        }
        let wasm_sha256 = match raw.wasm_sha256 {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hex.to_ascii_lowercase())
            }
            Some(other) => {
                return Err(err(format!(
                    "wasm_sha256 = {other:?} is not a SHA-256: give 64 hex digits (sha256sum {})",
                    raw.wasm
                )));
            }
            None => None,
        };
        for (list, names) in [
            ("depends_on", &raw.depends_on),
            ("provides", &raw.provides),
            ("consumes", &raw.consumes),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = names.iter().find(|n| !seen.insert(*n)) {
                return Err(err(format!("{list} lists {twice:?} twice")));
            }
        }
        if raw.depends_on.contains(&raw.name) {
            return Err(err(format!(
                "depends_on lists the cell itself ({:?}); remove it",
                raw.name
            )));
        }
        let _reserved = (
            raw.shared_memory_groups,
            raw.dedicated_thread,
            raw.snapshotable,
        );

        Ok(Manifest {
            path: path.to_path_buf(),
            name: raw.name,
            version: raw.version,
            wasm,
            capabilities: raw.capabilities,
            max_memory_pages: raw.max_memory_pages,
            call_timeout_ms: raw.call_timeout_ms,
            max_message_bytes: raw.max_message_bytes,
            tick_ms: raw.tick_ms,
            max_queue_bytes,
            max_storage_bytes: raw.max_storage_bytes,
            restart: raw.restart,
            allowed_outbound_hosts: raw.allowed_outbound_hosts,
            providers: raw.providers,
            config: raw.config,
            wasm_sha256,
            depends_on: raw.depends_on,
            provides: raw.provides,
            consumes: raw.consumes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names() {
        for ok in ["echo", "a", "0cell", "my-cell_2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Echo", "-x", "_x", "a b", "a.b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
