//! Imports `demo_greet` without declaring `demo.greet`: the host must link
//! a stub that returns 99.

use pulp_guest::{demo, export_cell, log, Cell, Code, Config};

struct Undeclared;

impl Cell for Undeclared {
    fn init(_config: Config) -> Result<Self, String> {
        let code = demo::greet("x").err().map_or(0, Code::raw);
        log::info(&format!("demo_greet returned {code}"));
        Ok(Undeclared)
    }
}

export_cell!(Undeclared);
