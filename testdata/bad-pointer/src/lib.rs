//! Passes pointers outside linear memory, negative lengths and a gigabyte
//! argument to imports: the host must answer 2 and keep the cell alive.

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
        let (ptr, len) = (name.as_ptr() as i32, name.len() as i32);
        let mut slots = [0u32; 2];
        let out = slots.as_mut_ptr() as i32;
        // SAFETY: as above; the out-slots are this cell's own.
        let (call_oob, call_neglen, call_out_oob, call_gigabyte) = unsafe {
            (
                raw::pulp_call(0x7fff_fff0, 1000, ptr, len, 0, 0, out, out + 4),
                raw::pulp_call(ptr, len, ptr, -1, 0, 0, out, out + 4),
                raw::pulp_call(ptr, len, ptr, len, 0, 0, 0x7fff_fff0, -4),
                raw::pulp_call(ptr, len, ptr, len, 0, 1 << 30, out, out + 4),
            )
        };
        log::info(&format!("call oob returned {call_oob}"));
        log::info(&format!("call neglen returned {call_neglen}"));
        log::info(&format!("call out oob returned {call_out_oob}"));
        log::info(&format!("call gigabyte returned {call_gigabyte}"));
        log::info(&format!("log oob returned {log_oob}"));
        log::info(&format!("greet oob returned {greet_oob}"));
        log::info(&format!("greet neglen returned {greet_neglen}"));
        log::info("bad-pointer alive");
        Ok(BadPointer)
    }
}

export_cell!(BadPointer);
