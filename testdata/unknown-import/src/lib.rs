//! Imports a function no capability provides: loading must fail with an
//! error naming `no_such_import`.

use pulp_guest::{export_cell, log, Cell, Config};

#[link(wasm_import_module = "pulp")]
extern "C" {
    fn no_such_import(arg: i32) -> i32;
}

struct UnknownImport;

impl Cell for UnknownImport {
    fn init(_config: Config) -> Result<Self, String> {
        // Called so the import is kept in the module.
        // SAFETY: a plain host call; never reached, as the module cannot link.
        let code = unsafe { no_such_import(0) };
        log::info(&format!("no_such_import returned {code}"));
        Ok(UnknownImport)
    }
}

export_cell!(UnknownImport);
