//! The capability registry: built-in and library capabilities side by side, and
//! which of them each cell gets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use pulp_ext_api::{CapabilityHandle, ValType};

use crate::builtin;
use crate::extensions::{Extension, HostLink};
use crate::manifest::Manifest;

/// A host import with more parameters than this is refused at registration, so the
/// call path can keep its arguments on the stack.
pub const MAX_IMPORT_PARAMS: usize = 16;

pub enum Origin {
    Builtin,
    Library { extension: String, path: PathBuf },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::Library { extension, path } => {
                write!(f, "extension {extension:?} ({})", path.display())
            }
        }
    }
}

pub struct Entry {
    pub handle: CapabilityHandle,
    pub origin: Origin,
    /// The `[extension.config]` of the library it came from (an empty map for built-ins).
    pub ext_config: Arc<Vec<u8>>,
    pub link: &'static HostLink,
}

impl Entry {
    pub fn name(&self) -> &str {
        self.handle.name()
    }

    pub fn provider(&self) -> &str {
        self.handle.provider()
    }
}

pub struct Registry {
    entries: Vec<Arc<Entry>>,
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
        builtins: Vec<CapabilityHandle>,
        extensions: Vec<Extension>,
    ) -> Result<Registry, String> {
        let empty = Arc::new(crate::msgpack::encode_table(&toml::Table::new()));
        let mut entries: Vec<Arc<Entry>> = builtins
            .into_iter()
            .map(|handle| {
                Arc::new(Entry {
                    link: HostLink::leak(handle.provider()),
                    handle,
                    origin: Origin::Builtin,
                    ext_config: Arc::clone(&empty),
                })
            })
            .collect();
        for ext in extensions {
            let config = Arc::new(ext.config);
            for (handle, link) in ext.capabilities {
                entries.push(Arc::new(Entry {
                    handle,
                    origin: Origin::Library {
                        extension: ext.name.clone(),
                        path: ext.path.clone(),
                    },
                    ext_config: Arc::clone(&config),
                    link,
                }));
            }
        }

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
                    return Err(format!(
                        "capability {} from {} declares import {} with {} parameters; at most {MAX_IMPORT_PARAMS} are supported",
                        entry.name(),
                        entry.origin,
                        import.name(),
                        import.params().len()
                    ));
                }
                if let Some(other) = owners.get(import.name())
                    && other.name() != entry.name()
                {
                    return Err(format!(
                        "import pulp.{} is provided by capability {} ({}) and by capability {} ({}); an import name may belong to one capability only",
                        import.name(),
                        other.name(),
                        other.origin,
                        entry.name(),
                        entry.origin
                    ));
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
    pub fn resolve(&self, manifest: &Manifest) -> Result<CellCapabilities, String> {
        let cell = &manifest.name;
        let mut declared = Vec::new();
        for name in builtin::ALWAYS_ON
            .iter()
            .copied()
            .chain(manifest.capabilities.iter().map(String::as_str))
        {
            let providers = self.providers_of(name);
            let chosen = match (providers.as_slice(), manifest.providers.get(name)) {
                ([], _) => {
                    return Err(format!(
                        "cell {cell}: capability {name:?} is declared but nothing provides it (available: {}); load the extension that provides it or remove it from `capabilities`",
                        self.names().join(", ")
                    ));
                }
                (_, Some(pin)) => match providers.iter().find(|e| e.provider() == pin) {
                    Some(entry) => entry,
                    None => {
                        return Err(format!(
                            "cell {cell}: [providers] pins {name:?} to {pin:?}, which does not provide it (providers: {}); fix the pin",
                            describe(&providers)
                        ));
                    }
                },
                ([only], None) => only,
                (many, None) => {
                    return Err(format!(
                        "cell {cell}: capability {name:?} has {} providers: {}; pin one in the manifest: [providers] {name:?} = {:?}",
                        many.len(),
                        describe(many),
                        many[0].provider()
                    ));
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
