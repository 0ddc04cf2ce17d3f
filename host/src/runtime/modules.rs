//! Compiled modules: each distinct module is compiled once per host (keyed by
//! the SHA-256 of its bytes), and its machine code is kept on disk so the next
//! start skips cranelift.
//!
//! A disk entry is named by the module's digest and the engine's compatibility
//! hash (wasmtime version, settings, target), so another engine never reads
//! it. Its content carries the SHA-256 of the serialized code: an entry that
//! is truncated, corrupt or refused by wasmtime is logged, compiled again and
//! rewritten, never loaded. Entries are written to a temporary file and
//! renamed into place, so a reader never sees half of one.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// The first bytes of every entry: the format, should it ever change.
const MAGIC: &[u8; 8] = b"PULPCW01";
const DIGEST_LEN: usize = 32;

/// How a module was obtained, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Another cell of this host has the same module.
    Shared,
    /// Read from the disk cache.
    Disk,
    Compiled,
}

#[derive(Default)]
pub struct Modules {
    /// Where compiled code is kept; `None` keeps it in memory only.
    dir: Option<PathBuf>,
    loaded: Mutex<HashMap<[u8; DIGEST_LEN], Module>>,
}

impl Modules {
    pub fn new(dir: Option<PathBuf>) -> Modules {
        Modules {
            dir,
            loaded: Mutex::default(),
        }
    }

    /// The compiled form of `bytes` (a `.wasm` binary or `.wat` text).
    pub fn get(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Module, Source)> {
        let digest: [u8; DIGEST_LEN] = Sha256::digest(bytes).into();
        // Held while compiling, so cells sharing a module compile it once.
        let mut loaded = self.loaded.lock().unwrap();
        if let Some(module) = loaded.get(&digest) {
            return Ok((module.clone(), Source::Shared));
        }
        let entry = self
            .dir
            .as_ref()
            .map(|dir| entry_path(dir, engine, &digest));
        if let Some(module) = entry.as_deref().and_then(|path| read_entry(engine, path)) {
            loaded.insert(digest, module.clone());
            return Ok((module, Source::Disk));
        }
        let module = Module::new(engine, bytes)?;
        if let Some(path) = &entry
            && let Err(e) = write_entry(path, &module)
        {
            tracing::warn!(
                path = %path.display(),
                "cannot write the module cache entry: {e}; the next start compiles again"
            );
        }
        loaded.insert(digest, module.clone());
        Ok((module, Source::Compiled))
    }
}

fn entry_path(dir: &Path, engine: &Engine, digest: &[u8]) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!(
        "{}-{:016x}.cwasm",
        hex::encode(digest),
        hasher.finish()
    ))
}

/// The module in the entry at `path`, if there is a sound one.
fn read_entry(engine: &Engine, path: &Path) -> Option<Module> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the module cache entry: {e}; compiling again");
            return None;
        }
    };
    let sound = bytes
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.split_first_chunk::<DIGEST_LEN>())
        .filter(|(digest, code)| Sha256::digest(code).as_slice() == digest.as_slice());
    let Some((_, code)) = sound else {
        tracing::warn!(
            path = %path.display(),
            "module cache entry is truncated or corrupt (its digest does not match); compiling again"
        );
        return None;
    };
    // SAFETY: the bytes are what `Module::serialize` wrote for this engine
    // configuration (the file name says so, the digest proves them intact),
    // in a directory only this user can write.
    match unsafe { Module::deserialize(engine, code) } {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::warn!(path = %path.display(), "module cache entry refused by wasmtime: {e}; compiling again");
            None
        }
    }
}

fn write_entry(path: &Path, module: &Module) -> wasmtime::Result<()> {
    let code = module.serialize()?;
    let dir = path.parent().expect("entries live in the cache directory");
    private_dir(dir)?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + DIGEST_LEN + code.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&Sha256::digest(&code));
    bytes.extend_from_slice(&code);
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, &bytes)?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

/// Creates the cache directory, owner-only: compiled code is loaded as is, so
/// nobody else may write there.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(module (func (export "f") (result i32) i32.const 7))"#;

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn a_module_compiles_once_then_comes_from_memory_then_from_disk() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let modules = Modules::new(Some(dir.path().to_owned()));
        assert_eq!(
            modules.get(&engine, WAT.as_bytes()).unwrap().1,
            Source::Compiled
        );
        assert_eq!(
            modules.get(&engine, WAT.as_bytes()).unwrap().1,
            Source::Shared
        );
        assert_eq!(entries(dir.path()).len(), 1);

        // A new host with the same cache.
        let again = Modules::new(Some(dir.path().to_owned()));
        let (module, source) = again.get(&engine, WAT.as_bytes()).unwrap();
        assert_eq!(source, Source::Disk);
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let f = instance.get_typed_func::<(), i32>(&mut store, "f").unwrap();
        assert_eq!(f.call(&mut store, ()).unwrap(), 7);
    }

    #[test]
    fn a_damaged_entry_is_compiled_again_and_replaced() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        Modules::new(Some(dir.path().to_owned()))
            .get(&engine, WAT.as_bytes())
            .unwrap();
        let entry = entries(dir.path()).pop().unwrap();
        let good = std::fs::read(&entry).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        for damaged in [&good[..good.len() / 2], &flipped[..], b"PULPCW01", b""] {
            std::fs::write(&entry, damaged).unwrap();
            let modules = Modules::new(Some(dir.path().to_owned()));
            assert_eq!(
                modules.get(&engine, WAT.as_bytes()).unwrap().1,
                Source::Compiled
            );
            assert_eq!(std::fs::read(&entry).unwrap(), good, "rewritten whole");
        }

        // An intact entry of another engine's code: refused by wasmtime, not run.
        let other = Engine::new(wasmtime::Config::new().consume_fuel(true)).unwrap();
        let foreign = other.precompile_module(WAT.as_bytes()).unwrap();
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&Sha256::digest(&foreign));
        forged.extend_from_slice(&foreign);
        std::fs::write(&entry, forged).unwrap();
        let modules = Modules::new(Some(dir.path().to_owned()));
        assert_eq!(
            modules.get(&engine, WAT.as_bytes()).unwrap().1,
            Source::Compiled
        );
    }
}
