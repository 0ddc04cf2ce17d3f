//! Traps on its third step; with restart = "on_crash" the host must start a
//! fresh instance, which traps again three steps later.

use pulp_guest::{export_cell, log, Cell, Config, Step};

struct TrapStep {
    steps: u64,
}

impl Cell for TrapStep {
    fn init(_config: Config) -> Result<Self, String> {
        log::info("trap-step init");
        Ok(TrapStep { steps: 0 })
    }

    fn step(&mut self, _step: &Step) -> i32 {
        // Counted per instance, so every instance traps on its own third step
        // whatever call numbers the host uses after a restart.
        self.steps += 1;
        log::info(&format!("trap-step step={}", self.steps));
        if self.steps == 3 {
            panic!("trap-step: boom at step 3");
        }
        0
    }
}

export_cell!(TrapStep);
