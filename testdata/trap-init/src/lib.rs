//! Traps in `pulp_init`; with restart = "never" the host must not retry.

use pulp_guest::{export_cell, Cell, Config};

struct TrapInit;

impl Cell for TrapInit {
    fn init(_config: Config) -> Result<Self, String> {
        panic!("trap-init: boom");
    }
}

export_cell!(TrapInit);
