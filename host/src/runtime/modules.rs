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
    /// The digest of each module file already read, with what identified the
    /// file then: a thousand cells of one file read and hash it once.
    files: Mutex<HashMap<PathBuf, (FileId, [u8; DIGEST_LEN])>>,
}

/// Size, modification time and (on Unix) inode: a file rewritten or
/// replaced since it was read differs in one of them, unless it was rewritten
/// to the same size within the clock's granularity.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId(u64, Option<std::time::SystemTime>, u64);

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(FileId(meta.len(), meta.modified().ok(), inode))
}

/// Why a module file gives no module.
#[derive(Debug)]
pub enum LoadError {
    Read(std::io::Error),
    /// Its SHA-256 (hex) is not the pinned one.
    Pin {
        actual: String,
    },
    Compile(wasmtime::Error),
}

impl Modules {
    pub fn new(dir: Option<PathBuf>) -> Modules {
        Modules {
            dir,
            loaded: Mutex::default(),
            files: Mutex::default(),
        }
    }

    /// The compiled form of the module file at `path` (a `.wasm` binary or
    /// `.wat` text), refused before anything is compiled when `pinned` (a
    /// lower-case hex SHA-256) is given and does not match.
    pub fn load(
        &self,
        engine: &Engine,
        path: &Path,
        pinned: Option<&str>,
    ) -> Result<(Module, Source), LoadError> {
        let id = file_id(path).map_err(LoadError::Read)?;
        let known = self
            .files
            .lock()
            .unwrap()
            .get(path)
            .filter(|(seen, _)| *seen == id)
            .map(|(_, digest)| *digest);
        let (digest, bytes) = match known {
            Some(digest) => (digest, None),
            None => {
                let bytes = std::fs::read(path).map_err(LoadError::Read)?;
                (Sha256::digest(&bytes).into(), Some(bytes))
            }
        };
        if let Some(pinned) = pinned {
            let actual = hex::encode(digest);
            if actual != pinned {
                return Err(LoadError::Pin { actual });
            }
        }
        let found = match bytes {
            Some(bytes) => self.get(engine, digest, &bytes),
            None => match self.loaded.lock().unwrap().get(&digest) {
                Some(module) => Ok((module.clone(), Source::Shared)),
                None => {
                    let bytes = std::fs::read(path).map_err(LoadError::Read)?;
                    self.get(engine, Sha256::digest(&bytes).into(), &bytes)
                }
            },
        };
        let found = found.map_err(LoadError::Compile)?;
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), (id, digest));
        Ok(found)
    }

    /// The compiled form of `bytes`, whose SHA-256 is `digest`.
    fn get(
        &self,
        engine: &Engine,
        digest: [u8; DIGEST_LEN],
        bytes: &[u8],
    ) -> wasmtime::Result<(Module, Source)> {
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

    /// A cache in `dir/cache` and the module written to `dir/NAME.wat`.
    fn setup(dir: &Path, name: &str, wat: &str) -> (Modules, PathBuf) {
        let module = dir.join(format!("{name}.wat"));
        std::fs::write(&module, wat).unwrap();
        (Modules::new(Some(dir.join("cache"))), module)
    }

    fn source(modules: &Modules, engine: &Engine, path: &Path) -> Source {
        modules.load(engine, path, None).unwrap().1
    }

    #[test]
    fn a_module_compiles_once_then_comes_from_memory_then_from_disk() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let (modules, path) = setup(dir.path(), "a", WAT);
        assert_eq!(source(&modules, &engine, &path), Source::Compiled);
        assert_eq!(source(&modules, &engine, &path), Source::Shared);
        // The same bytes under another name are the same module.
        let twin = dir.path().join("twin.wat");
        std::fs::copy(&path, &twin).unwrap();
        assert_eq!(source(&modules, &engine, &twin), Source::Shared);
        // A file rewritten since it was read is read again (another length:
        // two writes may share a coarse modification time).
        std::fs::write(&path, WAT.replace("i32.const 7", "i32.const 70")).unwrap();
        assert_eq!(source(&modules, &engine, &path), Source::Compiled);
        assert_eq!(entries(&dir.path().join("cache")).len(), 2);

        // A new host with the same cache.
        let again = Modules::new(Some(dir.path().join("cache")));
        let (module, source) = again.load(&engine, &twin, None).unwrap();
        assert_eq!(source, Source::Disk);
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let f = instance.get_typed_func::<(), i32>(&mut store, "f").unwrap();
        assert_eq!(f.call(&mut store, ()).unwrap(), 7);
    }

    #[test]
    fn a_pinned_digest_is_checked_before_anything_is_compiled() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let (modules, path) = setup(dir.path(), "a", WAT);
        let digest = hex::encode(Sha256::digest(WAT));
        let wrong = "ab".repeat(32);
        match modules.load(&engine, &path, Some(&wrong)) {
            Err(LoadError::Pin { actual }) => assert_eq!(actual, digest),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("cache").exists(), "nothing compiled");
        assert!(modules.load(&engine, &path, Some(&digest)).is_ok());
        // Known by its path now, and still checked.
        assert!(matches!(
            modules.load(&engine, &path, Some(&wrong)),
            Err(LoadError::Pin { .. })
        ));
        let missing = modules.load(&engine, &dir.path().join("gone.wat"), None);
        assert!(matches!(missing, Err(LoadError::Read(_))));
        let (_, bad) = setup(dir.path(), "bad", "(module (func (result i32)))");
        assert!(matches!(
            modules.load(&engine, &bad, None),
            Err(LoadError::Compile(_))
        ));
    }

    #[test]
    fn a_damaged_entry_is_compiled_again_and_replaced() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let (modules, path) = setup(dir.path(), "a", WAT);
        source(&modules, &engine, &path);
        let cache = dir.path().join("cache");
        let entry = entries(&cache).pop().unwrap();
        let good = std::fs::read(&entry).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        for damaged in [&good[..good.len() / 2], &flipped[..], b"PULPCW01", b""] {
            std::fs::write(&entry, damaged).unwrap();
            let modules = Modules::new(Some(cache.clone()));
            assert_eq!(source(&modules, &engine, &path), Source::Compiled);
            assert_eq!(std::fs::read(&entry).unwrap(), good, "rewritten whole");
        }

        // An intact entry of another engine's code: refused by wasmtime, not run.
        let other = Engine::new(wasmtime::Config::new().consume_fuel(true)).unwrap();
        let foreign = other.precompile_module(WAT.as_bytes()).unwrap();
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&Sha256::digest(&foreign));
        forged.extend_from_slice(&foreign);
        std::fs::write(&entry, forged).unwrap();
        let modules = Modules::new(Some(cache));
        assert_eq!(source(&modules, &engine, &path), Source::Compiled);
    }
}
