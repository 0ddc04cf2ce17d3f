//! Leaves `/never` unanswered, so the host must answer 504 after
//! `call_timeout_ms`, and traps on `/crash`, so the host must restart it.

use pulp_guest::http::{self, Request};
use pulp_guest::{export_cell, log, Cell, Config, Step};

struct Silent;

impl Cell for Silent {
    fn init(_config: Config) -> Result<Self, String> {
        for path in ["/never", "/crash"] {
            if let Err(code) = http::register("GET", path) {
                log::error(&format!("register failed {}", code.raw()));
            }
        }
        log::info("silent ready");
        Ok(Silent)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        if request.path == "/crash" {
            panic!("silent: crash requested");
        }
        log::info(&format!("silent got {}", request.id));
        0
    }
}

export_cell!(Silent);
