//! Calls an extension import that panics inside the host callback: the call
//! must fail with a code (5) while the cell and the extension keep working.

use pulp_guest::{export_cell, log, Cell, Config, Step};

// Provided by the test extension's `test.panic` capability.
#[link(wasm_import_module = "pulp")]
extern "C" {
    fn panic_now() -> i32;
    fn panic_ok() -> i32;
}

struct Panicky;

impl Cell for Panicky {
    fn init(_config: Config) -> Result<Self, String> {
        // SAFETY: a plain host call without arguments.
        let code = unsafe { panic_now() };
        log::info(&format!("panic_now returned {code}"));
        // SAFETY: as above.
        let code = unsafe { panic_ok() };
        log::info(&format!("panic_ok returned {code}"));
        Ok(Panicky)
    }

    fn step(&mut self, step: &Step) -> i32 {
        log::info(&format!("panicky step={}", step.call()));
        0
    }
}

export_cell!(Panicky);
