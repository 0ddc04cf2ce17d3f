//! Never returns from its first step (or, with `spin_in = "init"`, from
//! `pulp_init`): the host must interrupt it after `call_timeout_ms`. With
//! `http_route` set (and `transport.http.inbound` declared) it registers that
//! GET route, so a request is the step it spins in.

use core::hint::black_box;

use pulp_guest::{export_cell, http, log, Cell, Config, Step};

struct LoopStep;

impl Cell for LoopStep {
    fn init(config: Config) -> Result<Self, String> {
        log::info("loop-step init");
        if let Some(route) = config.get("http_route") {
            let route = route.as_str().unwrap_or_default();
            http::register("GET", route)
                .map_err(|code| format!("register GET {route} failed: {}", code.raw()))?;
        }
        let Some(spin_in) = config.get("spin_in") else {
            return Ok(LoopStep);
        };
        match spin_in.as_str() {
            Some("step") => Ok(LoopStep),
            Some("init") => spin(),
            _ => Err(format!(
                "spin_in must be \"init\" or \"step\", not {spin_in}"
            )),
        }
    }

    fn step(&mut self, _step: &Step) -> i32 {
        spin()
    }
}

fn spin() -> ! {
    log::info("loop-step spinning");
    let mut turns = 0u64;
    loop {
        // black_box keeps the optimizer from proving the loop useless.
        turns = black_box(turns.wrapping_add(1));
    }
}

export_cell!(LoopStep);
