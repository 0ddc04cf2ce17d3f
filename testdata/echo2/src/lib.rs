//! A second HTTP cell, so tests can route to several cells on one listener.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::{export_cell, log, Cell, Config, Step};

struct Echo2;

impl Cell for Echo2 {
    fn init(_config: Config) -> Result<Self, String> {
        if let Err(code) = http::register("GET", "/two/:x") {
            log::error(&format!("register failed {}", code.raw()));
        }
        log::info("echo2 ready");
        Ok(Echo2)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let x = request.params.get("x").map_or("", String::as_str);
        let response = Response::new(request.id, 200)
            .header("content-type", "text/plain")
            .body(format!("two:{x}"));
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed {}", code.raw()));
        }
        0
    }
}

export_cell!(Echo2);
