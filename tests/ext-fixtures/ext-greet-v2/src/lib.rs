//! Test extension: another build of `demo.greet` with a different greeting, swapped in
//! for the demo library to show that behaviour changes with no host rebuild.

use pulp_ext_api::{Capability, HostImport, ValType};

struct Greet;

impl Capability for Greet {
    fn name(&self) -> &str {
        "demo.greet"
    }

    fn provider(&self) -> &str {
        "pulp-fixture-greet-v2"
    }

    fn imports(&self) -> Vec<HostImport> {
        vec![
            HostImport::new(
                "demo_greet",
                &[ValType::I32, ValType::I32],
                |guest, args| {
                    let name = guest.read_str_arg(args, 0)?;
                    tracing::info!("howdy, {name}! (cell {})", guest.cell());
                    Ok(())
                },
            ),
            HostImport::new("demo_noop", &[], |_, _| Ok(())),
        ]
    }
}

fn capabilities() -> Vec<Box<dyn Capability>> {
    vec![Box::new(Greet)]
}

pulp_ext_api::export_extension!(capabilities);
