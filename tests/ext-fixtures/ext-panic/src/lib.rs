//! Test extension: `test.panic`, whose `panic_now` import panics inside the callback.
//! The host must turn that into code 5 for the calling cell and keep running.

use pulp_ext_api::{Capability, HostImport};

struct Panicky;

impl Capability for Panicky {
    fn name(&self) -> &str {
        "test.panic"
    }

    fn provider(&self) -> &str {
        "pulp-fixture-panic"
    }

    fn imports(&self) -> Vec<HostImport> {
        vec![
            HostImport::new("panic_now", &[], |_, _| panic!("panic_now was called")),
            HostImport::new("panic_ok", &[], |_, _| Ok(())),
        ]
    }
}

fn capabilities() -> Vec<Box<dyn Capability>> {
    vec![Box::new(Panicky)]
}

pulp_ext_api::export_extension!(capabilities);
