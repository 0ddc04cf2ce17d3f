//! Extension loading: the extensions file (docs/extensions.md) and the libraries it lists.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pulp_ext_api::{CapabilityHandle, HostHandle, HostServices, Level, LoadError};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a library (or the host itself, for built-ins) is lent: its log, tagged with
/// the extension's name, and — once the host has set it — the wake for one capability.
pub struct HostLink {
    extension: String,
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl HostLink {
    /// Leaked: libraries are never unloaded, and they may keep the handle.
    pub fn leak(extension: &str) -> &'static HostLink {
        Box::leak(Box::new(HostLink {
            extension: extension.to_owned(),
            waker: OnceLock::new(),
        }))
    }

    pub fn handle(&'static self) -> HostHandle {
        HostHandle::new(self)
    }

    /// Sets what `wake` does; the first call wins.
    pub fn set_waker(&self, waker: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(waker);
    }
}

impl HostServices for HostLink {
    fn log(&self, level: Level, target: &str, message: &str) {
        let ext = self.extension.as_str();
        match level {
            Level::Trace => {
                tracing::trace!(target: "ext", extension = ext, module = target, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "ext", extension = ext, module = target, "{message}")
            }
            Level::Info => tracing::info!(target: "ext", extension = ext, "{message}"),
            Level::Warn => tracing::warn!(target: "ext", extension = ext, "{message}"),
            Level::Error => tracing::error!(target: "ext", extension = ext, "{message}"),
        }
    }

    fn max_level(&self) -> Level {
        match tracing::level_filters::LevelFilter::current().into_level() {
            Some(tracing::Level::TRACE) => Level::Trace,
            Some(tracing::Level::DEBUG) => Level::Debug,
            Some(tracing::Level::INFO) => Level::Info,
            Some(tracing::Level::WARN) => Level::Warn,
            _ => Level::Error,
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.get() {
            waker();
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionsFile {
    #[serde(default)]
    extension: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    library: String,
    #[serde(default = "yes")]
    enabled: bool,
    sha256: Option<String>,
    #[serde(default)]
    config: toml::Table,
}

fn yes() -> bool {
    true
}

/// One loaded library and what it provides.
pub struct Extension {
    pub name: String,
    pub path: PathBuf,
    /// The SHA-256 of the library file as loaded, lower-case hex.
    pub digest: String,
    /// The entry's `[extension.config]`, as MessagePack.
    pub config: Vec<u8>,
    pub capabilities: Vec<(CapabilityHandle, &'static HostLink)>,
}

/// A load failure: one line naming the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExtensionError(String);

/// The extensions file to read: `--ext-config`, else `<ext-dir>/extensions.toml`.
pub fn config_path(ext_dir: Option<&Path>, ext_config: Option<&Path>) -> Option<PathBuf> {
    match (ext_config, ext_dir) {
        (Some(file), _) => Some(file.to_path_buf()),
        (None, Some(dir)) => Some(dir.join("extensions.toml")),
        (None, None) => None,
    }
}

/// A library already loaded, as a reload compares it with the file's entry.
pub struct Loaded<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub digest: &'a str,
    pub config: &'a [u8],
}

/// An entry of the extensions file on reload.
pub enum Listed {
    /// Its library, file and config are the ones loaded: the loaded one stays.
    Kept(String),
    /// New or changed: loaded now, beside any earlier copy.
    Fresh(Extension),
}

/// Loads every enabled library listed in `file`. Relative library paths resolve
/// against `ext_dir`, else the directory holding `file`.
pub fn load(file: &Path, ext_dir: Option<&Path>) -> Result<Vec<Extension>, ExtensionError> {
    Ok(list(file, ext_dir, None)?
        .into_iter()
        .filter_map(|listed| match listed {
            Listed::Fresh(ext) => Some(ext),
            Listed::Kept(_) => None,
        })
        .collect())
}

/// Reads `file` again: entries identical to one of `loaded` are kept, the
/// others loaded from private copies (the loader would hand back the library
/// it already has for a path).
pub fn reload(
    file: &Path,
    ext_dir: Option<&Path>,
    loaded: &[Loaded],
) -> Result<Vec<Listed>, ExtensionError> {
    list(file, ext_dir, Some(loaded))
}

fn list(
    file: &Path,
    ext_dir: Option<&Path>,
    reloading: Option<&[Loaded]>,
) -> Result<Vec<Listed>, ExtensionError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ExtensionError(format!(
            "extensions file {}: cannot read it: {e}; create it or point --ext-dir/--ext-config elsewhere",
            file.display()
        ))
    })?;
    let parsed: ExtensionsFile = toml::from_str(&text).map_err(|e| {
        ExtensionError(format!(
            "extensions file {}: {}",
            file.display(),
            e.to_string().trim_end().replace('\n', " ")
        ))
    })?;
    let base = ext_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| file.parent().unwrap_or(Path::new(".")).to_path_buf());

    let mut names: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    for entry in parsed.extension.into_iter().filter(|e| e.enabled) {
        if names.contains(&entry.name) {
            return Err(ExtensionError(format!(
                "extensions file {}: two entries are named {:?}; give each a unique name",
                file.display(),
                entry.name
            )));
        }
        names.push(entry.name.clone());
        listed.push(load_one(&entry, &base, file, reloading)?);
    }
    Ok(listed)
}

/// A library's verified bytes in a file only this process's user can reach
/// (a 0700 directory), removed with it once loaded: the loader keeps its own
/// mapping.
struct PrivateCopy {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl PrivateCopy {
    fn new(original: &Path, bytes: &[u8]) -> std::io::Result<PrivateCopy> {
        // TempDir is created 0700.
        let dir = tempfile::Builder::new().prefix("pulp-ext-").tempdir()?;
        let file = dir
            .path()
            .join(original.file_name().unwrap_or("library".as_ref()));
        std::fs::write(&file, bytes)?;
        Ok(PrivateCopy { _dir: dir, file })
    }

    fn path(&self) -> &Path {
        &self.file
    }
}

/// `lib<name>.so` / `lib<name>.dylib` / `<name>.dll` for a bare name, as cargo names
/// a cdylib, then `<name>.<suffix>`; a name with a path or suffix is taken as is.
fn candidates(library: &str, base: &Path) -> Vec<PathBuf> {
    let suffix = std::env::consts::DLL_SUFFIX;
    let bare = !library.contains('/') && !library.contains('\\') && !library.ends_with(suffix);
    if bare {
        vec![
            base.join(format!("{}{library}{suffix}", std::env::consts::DLL_PREFIX)),
            base.join(format!("{library}{suffix}")),
        ]
    } else {
        vec![base.join(library)]
    }
}

fn load_one(
    entry: &Entry,
    base: &Path,
    file: &Path,
    reloading: Option<&[Loaded]>,
) -> Result<Listed, ExtensionError> {
    let name = &entry.name;
    let candidates = candidates(&entry.library, base);
    // Any file that exists: what it is, the loader (or the pin) decides.
    let Some(path) = candidates.iter().find(|p| p.exists()).cloned() else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(ExtensionError(format!(
            "extension {name:?}: library file not found (library = {:?} in {}; looked for {}); build it or fix `library`",
            entry.library,
            file.display(),
            tried.join(", ")
        )));
    };
    let shown = path.display();
    let bytes = std::fs::read(&path)
        .map_err(|e| ExtensionError(format!("extension {name:?}: cannot read {shown}: {e}")))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if let Some(pin) = &entry.sha256
        && !digest.eq_ignore_ascii_case(pin.trim())
    {
        return Err(ExtensionError(format!(
            "extension {name:?}: {shown} has sha256 {digest}, but {} pins {}; replace the file with the pinned build or update `sha256`",
            file.display(),
            pin.trim()
        )));
    }
    let config = crate::msgpack::encode_table(&entry.config);
    let kept = reloading
        .unwrap_or_default()
        .iter()
        .any(|l| l.name == name && l.path == path && l.digest == digest && l.config == config);
    if kept {
        return Ok(Listed::Kept(name.clone()));
    }

    // With a pin, what is loaded is a private copy of the very bytes that were
    // hashed: the file at `path` could be swapped between the two. On reload,
    // a private copy is a path the loader has not seen.
    let verified = if entry.sha256.is_some() || reloading.is_some() {
        Some(PrivateCopy::new(&path, &bytes).map_err(|e| {
            ExtensionError(format!(
                "extension {name:?}: cannot copy {shown} to a private file to load it: {e}; check that the temp directory is writable"
            ))
        })?)
    } else {
        None
    };
    let load_from = verified.as_ref().map_or(path.as_path(), |copy| copy.path());

    let link = HostLink::leak(name);
    let began = std::time::Instant::now();
    let library = pulp_ext_api::load_library(load_from, link.handle()).map_err(|e| {
        let what_to_do = match &e {
            LoadError::NotLoadable(_) => {
                "check that it is a cdylib built for this platform".to_owned()
            }
            LoadError::NoRootModule => {
                "build it with pulp_ext_api::export_extension!, or remove it from the extensions file".to_owned()
            }
            LoadError::Incompatible { .. } | LoadError::Layout(_) => format!(
                "rebuild it against ext-api {}",
                pulp_ext_api::INTERFACE_VERSION
            ),
            LoadError::Init(_) => "see the extension's own log lines above".to_owned(),
        };
        ExtensionError(format!("extension {name:?}: {shown}: {e}; {what_to_do}"))
    })?;
    let capabilities = library
        .capabilities
        .into_iter()
        .map(|cap| {
            let link = HostLink::leak(name);
            (cap, link)
        })
        .collect();
    let metrics = crate::metrics::get();
    metrics
        .extension_load_seconds
        .get_or_create(&crate::metrics::ExtensionLabel {
            extension: name.clone(),
        })
        .set(began.elapsed().as_secs_f64());
    let interface = library.interface.to_string();
    metrics.extension_loaded(name, &interface);
    tracing::info!(extension = name.as_str(), path = %shown, interface, "loaded extension");
    Ok(Listed::Fresh(Extension {
        name: name.clone(),
        path,
        digest,
        config,
        capabilities,
    }))
}
