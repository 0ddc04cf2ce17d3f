//! Passes pointers outside linear memory and a negative length to imports:
//! the host must answer 2 and keep the cell alive.

use pulp_guest::{export_cell, log, raw, Cell, Config};

struct BadPointer;

impl Cell for BadPointer {
    fn init(_config: Config) -> Result<Self, String> {
        let name = "x";
        // SAFETY: the host checks every pointer/length pair it is given;
        // reporting bad ones is what is under test.
        let (log_oob, greet_oob, greet_neglen) = unsafe {
            (
                raw::log(2, 0x7fff_fff0, 1000),
                raw::demo_greet(u32::MAX as i32 - 10, 100),
                raw::demo_greet(name.as_ptr() as i32, -1),
            )
        };
        log::info(&format!("log oob returned {log_oob}"));
        log::info(&format!("greet oob returned {greet_oob}"));
        log::info(&format!("greet neglen returned {greet_neglen}"));
        log::info("bad-pointer alive");
        Ok(BadPointer)
    }
}

export_cell!(BadPointer);
