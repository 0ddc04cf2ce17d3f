//! The capability registry: built-in and library capabilities side by side, and
//! which of them each cell gets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use pulp_ext_api::{CapabilityHandle, ValType};

use crate::error::HostError;
use crate::extensions::{Extension, HostLink, Listed, Loaded};
use crate::manifest::Manifest;

/// A host import with more parameters than this is refused at registration, so the
/// call path can keep its arguments on the stack.
pub const MAX_IMPORT_PARAMS: usize = 16;

pub enum Origin {
    Builtin,
    Library {
        extension: String,
        path: PathBuf,
        /// The library file's SHA-256 as loaded.
        digest: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::Library {
                extension, path, ..
            } => {
                write!(f, "extension {extension:?} ({})", path.display())
            }
        }
    }
}

/// What the host must know of a capability before any cell runs. Extensions'
/// capabilities have neither property.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// Every cell gets it without declaring it.
    pub always_on: bool,
    /// A cell that declares it needs the HTTP listener.
    pub listens: bool,
}

pub struct Entry {
    pub handle: CapabilityHandle,
    pub properties: Properties,
    pub origin: Origin,
    /// The `[extension.config]` of the library it came from (an empty map for built-ins).
    pub ext_config: Arc<Vec<u8>>,
    pub link: &'static HostLink,
}

impl Entry {
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    /// The extension it came from; `None` for a built-in.
    pub fn extension(&self) -> Option<&str> {
        match &self.origin {
            Origin::Builtin => None,
            Origin::Library { extension, .. } => Some(extension),
        }
    }

    pub fn provider(&self) -> &str {
        self.handle.provider()
    }
}

pub struct Registry {
    entries: Vec<Arc<Entry>>,
}

fn library_entries(ext: Extension) -> impl Iterator<Item = Arc<Entry>> {
    let config = Arc::new(ext.config);
    ext.capabilities.into_iter().map(move |(handle, link)| {
        Arc::new(Entry {
            handle,
            properties: Properties::default(),
            origin: Origin::Library {
                extension: ext.name.clone(),
                path: ext.path.clone(),
                digest: ext.digest.clone(),
            },
            ext_config: Arc::clone(&config),
            link,
        })
    })
}

/// The capabilities one cell links against.
pub struct CellCapabilities {
    /// Declared (and always-on) capabilities: real imports, setup, events.
    pub declared: Vec<Arc<Entry>>,
    /// Known but not declared: stub imports.
    pub undeclared: Vec<Arc<Entry>>,
}

pub fn signature(params: &[ValType]) -> String {
    let params: Vec<&str> = params
        .iter()
        .map(|p| match p {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
        })
        .collect();
    format!("({}) -> i32", params.join(", "))
}

impl Registry {
    pub fn new(
        builtins: Vec<(CapabilityHandle, Properties)>,
        extensions: Vec<Extension>,
    ) -> Result<Registry, HostError> {
        let empty = Arc::new(crate::msgpack::encode_table(&toml::Table::new()));
        let mut entries: Vec<Arc<Entry>> = builtins
            .into_iter()
            .map(|(handle, properties)| {
                Arc::new(Entry {
                    link: HostLink::leak(handle.provider()),
                    handle,
                    properties,
                    origin: Origin::Builtin,
                    ext_config: Arc::clone(&empty),
                })
            })
            .collect();
        for ext in extensions {
            entries.extend(library_entries(ext));
        }
        Registry::checked(entries)
    }

    /// The registry after the extensions file was read again: built-ins and
    /// kept libraries as they are, fresh libraries beside them.
    pub fn reloaded(&self, listed: Vec<Listed>) -> Result<Registry, HostError> {
        let mut entries: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| matches!(e.origin, Origin::Builtin))
            .cloned()
            .collect();
        for item in listed {
            match item {
                Listed::Kept(name) => entries.extend(
                    self.entries
                        .iter()
                        .filter(|e| e.extension() == Some(name.as_str()))
                        .cloned(),
                ),
                Listed::Fresh(ext) => entries.extend(library_entries(ext)),
            }
        }
        Registry::checked(entries)
    }

    /// Every library loaded, once each.
    pub fn loaded(&self) -> Vec<Loaded<'_>> {
        let mut loaded: Vec<Loaded> = Vec::new();
        for entry in &self.entries {
            if let Origin::Library {
                extension,
                path,
                digest,
            } = &entry.origin
                && !loaded.iter().any(|l| l.name == extension)
            {
                loaded.push(Loaded {
                    name: extension,
                    path,
                    digest,
                    config: &entry.ext_config,
                });
            }
        }
        loaded
    }

    fn checked(entries: Vec<Arc<Entry>>) -> Result<Registry, HostError> {
        // Capabilities of different names must not claim the same import name.
        let mut owners: BTreeMap<&str, &Entry> = BTreeMap::new();
        for entry in &entries {
            for import in entry
                .handle
                .imports()
                .iter()
                .chain(entry.handle.stub_imports())
            {
                if import.params().len() > MAX_IMPORT_PARAMS {
                    return Err(HostError::Resolve(format!(
                        "capability {} from {} declares import {} with {} parameters; at most {MAX_IMPORT_PARAMS} are supported",
                        entry.name(),
                        entry.origin,
                        import.name(),
                        import.params().len()
                    )));
                }
                if let Some(other) = owners.get(import.name())
                    && other.name() != entry.name()
                {
                    return Err(HostError::Resolve(format!(
                        "import pulp.{} is provided by capability {} ({}) and by capability {} ({}); an import name may belong to one capability only",
                        import.name(),
                        other.name(),
                        other.origin,
                        entry.name(),
                        entry.origin
                    )));
                }
                owners.insert(import.name(), entry);
            }
        }
        Ok(Registry { entries })
    }

    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    fn providers_of(&self, name: &str) -> Vec<&Arc<Entry>> {
        self.entries.iter().filter(|e| e.name() == name).collect()
    }

    /// Picks, for every capability name, the entry this cell uses.
    pub fn resolve(&self, manifest: &Manifest) -> Result<CellCapabilities, HostError> {
        let cell = &manifest.name;
        let mut declared = Vec::new();
        let always_on = self
            .entries
            .iter()
            .filter(|e| e.properties.always_on)
            .map(|e| e.name());
        for name in always_on.chain(manifest.capabilities.iter().map(String::as_str)) {
            let providers = self.providers_of(name);
            let chosen = match (providers.as_slice(), manifest.providers.get(name)) {
                ([], _) => {
                    return Err(HostError::Resolve(format!(
                        "cell {cell}: capability {name:?} is declared but nothing provides it (available: {}); load the extension that provides it or remove it from `capabilities`",
                        self.names().join(", ")
                    )));
                }
                (_, Some(pin)) => match providers.iter().find(|e| e.provider() == pin) {
                    Some(entry) => entry,
                    None => {
                        return Err(HostError::Resolve(format!(
                            "cell {cell}: [providers] pins {name:?} to {pin:?}, which does not provide it (providers: {}); fix the pin",
                            describe(&providers)
                        )));
                    }
                },
                ([only], None) => only,
                (many, None) => {
                    return Err(HostError::Resolve(format!(
                        "cell {cell}: capability {name:?} has {} providers: {}; pin one in the manifest: [providers] {name:?} = {:?}",
                        many.len(),
                        describe(many),
                        many[0].provider()
                    )));
                }
            };
            declared.push(Arc::clone(chosen));
        }

        let mut undeclared: Vec<Arc<Entry>> = Vec::new();
        for entry in &self.entries {
            let known = declared
                .iter()
                .chain(undeclared.iter())
                .any(|e| e.name() == entry.name());
            if !known {
                undeclared.push(Arc::clone(entry));
            }
        }
        Ok(CellCapabilities {
            declared,
            undeclared,
        })
    }

    /// Whether a cell that declares capability `name` needs the HTTP listener.
    pub fn listens(&self, name: &str) -> bool {
        self.providers_of(name).iter().any(|e| e.properties.listens)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for entry in &self.entries {
            if !names.iter().any(|n| n == entry.name()) {
                names.push(entry.name().to_owned());
            }
        }
        names
    }
}

fn describe(entries: &[&Arc<Entry>]) -> String {
    entries
        .iter()
        .map(|e| format!("{:?} from {}", e.provider(), e.origin))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use pulp_ext_api::{Capability, CapabilityHandle, HostImport};

    use super::{HostError, Properties, Registry};
    use crate::manifest::Manifest;

    /// A capability named `name` from `provider`, with one import `import`.
    struct Fake {
        name: &'static str,
        provider: &'static str,
        import: &'static str,
    }

    impl Capability for Fake {
        fn name(&self) -> &str {
            self.name
        }

        fn provider(&self) -> &str {
            self.provider
        }

        fn imports(&self) -> Vec<HostImport> {
            vec![HostImport::new(self.import, &[], |_, _| Ok(()))]
        }
    }

    fn entry(fake: Fake, always_on: bool) -> (CapabilityHandle, Properties) {
        let properties = Properties {
            always_on,
            listens: false,
        };
        (CapabilityHandle::builtin(fake).unwrap(), properties)
    }

    fn fake(name: &'static str, provider: &'static str, import: &'static str) -> Fake {
        Fake {
            name,
            provider,
            import,
        }
    }

    fn manifest(dir: &tempfile::TempDir, body: &str) -> Manifest {
        std::fs::write(dir.path().join("cell.wasm"), b"").unwrap();
        let path = dir.path().join("cell.toml");
        std::fs::write(
            &path,
            format!("name = \"alpha\"\nversion = \"0.1.0\"\n{body}"),
        )
        .unwrap();
        Manifest::load(&path).unwrap()
    }

    /// The text of a resolve error, which it must be.
    fn resolve_error(err: HostError) -> String {
        assert!(matches!(err, HostError::Resolve(_)), "{err:?}");
        err.to_string()
    }

    fn names(entries: &[std::sync::Arc<super::Entry>]) -> Vec<(&str, &str)> {
        entries.iter().map(|e| (e.name(), e.provider())).collect()
    }

    #[test]
    fn a_cell_gets_what_it_declares_and_what_is_always_on() {
        let registry = Registry::new(
            vec![
                entry(fake("core.x", "pulp", "x"), true),
                entry(fake("a.cap", "pulp", "a"), false),
                entry(fake("b.cap", "pulp", "b"), false),
            ],
            Vec::new(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let caps = registry
            .resolve(&manifest(&dir, "capabilities = [\"b.cap\"]\n"))
            .unwrap();
        assert_eq!(
            names(&caps.declared),
            [("core.x", "pulp"), ("b.cap", "pulp")]
        );
        assert_eq!(names(&caps.undeclared), [("a.cap", "pulp")]);

        let err = registry
            .resolve(&manifest(&dir, "capabilities = [\"nope.cap\"]\n"))
            .err()
            .map(resolve_error)
            .unwrap();
        assert!(
            err.contains("\"nope.cap\" is declared but nothing provides it"),
            "{err}"
        );
        assert!(err.contains("available: core.x, a.cap, b.cap"), "{err}");
    }

    #[test]
    fn two_providers_need_a_pin_and_a_pin_picks_one() {
        let registry = Registry::new(
            vec![
                entry(fake("s.cap", "one", "s"), false),
                entry(fake("s.cap", "two", "s"), false),
            ],
            Vec::new(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = registry
            .resolve(&manifest(&dir, "capabilities = [\"s.cap\"]\n"))
            .err()
            .map(resolve_error)
            .unwrap();
        assert!(err.contains("has 2 providers"), "{err}");
        assert!(err.contains("[providers] \"s.cap\" = \"one\""), "{err}");

        let pinned = "capabilities = [\"s.cap\"]\n[providers]\n\"s.cap\" = \"two\"\n";
        let caps = registry.resolve(&manifest(&dir, pinned)).unwrap();
        assert_eq!(names(&caps.declared), [("s.cap", "two")]);

        let wrong = "capabilities = [\"s.cap\"]\n[providers]\n\"s.cap\" = \"three\"\n";
        let err = registry
            .resolve(&manifest(&dir, wrong))
            .err()
            .map(resolve_error)
            .unwrap();
        assert!(
            err.contains("pins \"s.cap\" to \"three\", which does not provide it"),
            "{err}"
        );
    }

    #[test]
    fn an_import_name_belongs_to_one_capability() {
        let err = Registry::new(
            vec![
                entry(fake("a.cap", "pulp", "shared"), false),
                entry(fake("b.cap", "pulp", "shared"), false),
            ],
            Vec::new(),
        )
        .err()
        .map(resolve_error)
        .unwrap();
        assert!(
            err.contains("import pulp.shared is provided by capability a.cap"),
            "{err}"
        );
    }

    #[test]
    fn listening_is_a_property_of_the_capability() {
        let env = crate::testenv::Env::new();
        let registry = Registry::new(crate::builtin::all(&env.services), Vec::new()).unwrap();
        assert!(registry.listens("transport.http.inbound"));
        assert!(registry.listens("transport.sse"));
        assert!(!registry.listens("transport.http.outbound"));
        assert!(!registry.listens("storage.sqlite"));
    }
}
