//! Set-up shared by the host's benches: a runtime with the built-in
//! capabilities' services, and cells written from WAT.

use std::path::Path;
use std::sync::Arc;

use pulp_host::builtin;
use pulp_host::manifest::Manifest;
use pulp_host::runtime::Runtime;

pub struct Bench {
    pub runtime: Arc<Runtime>,
    pub services: builtin::Services,
    /// Kept alive: the services hold its handle.
    _io: tokio::runtime::Runtime,
}

impl Bench {
    pub fn new() -> Bench {
        let io = tokio::runtime::Runtime::new().unwrap();
        let runtime = Arc::new(Runtime::new().unwrap());
        let services = builtin::Services::new(
            io.handle().clone(),
            Default::default(),
            Arc::clone(&runtime.calls),
        )
        .unwrap();
        Bench {
            runtime,
            services,
            _io: io,
        }
    }
}

/// Writes the cell `name` to `dir`, its module from `wat` and its manifest
/// with the TOML lines `extra` after name, version and wasm, and loads it.
pub fn cell(dir: &Path, name: &str, wat: &str, extra: &str) -> Manifest {
    std::fs::write(dir.join(format!("{name}.wat")), wat).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\nversion = \"0.1.0\"\nwasm = \"{name}.wat\"\n{extra}\n"),
    )
    .unwrap();
    Manifest::load(&path).unwrap()
}
