//! A second HTTP cell, so tests can route to several cells on one listener.
//! `GET /two/:x` answers `two:<x>`; `GET /steal/:id` tries to answer request
//! `id` (another cell's) and answers its own with `steal code=<code>`.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::{export_cell, log, Cell, Config, Step};

struct Echo2;

impl Cell for Echo2 {
    fn init(_config: Config) -> Result<Self, String> {
        for path in ["/two/:x", "/steal/:id"] {
            if let Err(code) = http::register("GET", path) {
                log::error(&format!("register failed {}", code.raw()));
            }
        }
        log::info("echo2 ready");
        Ok(Echo2)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let param = |name: &str| request.params.get(name).map_or("", String::as_str);
        let body = if request.path.starts_with("/steal/") {
            let victim = param("id").parse().unwrap_or(0);
            let stolen = http::respond(&Response::new(victim, 200).body("stolen"));
            format!("steal code={}", stolen.err().map_or(0, |code| code.raw()))
        } else {
            format!("two:{}", param("x"))
        };
        let response = Response::new(request.id, 200)
            .header("content-type", "text/plain")
            .body(body);
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed {}", code.raw()));
        }
        0
    }
}

export_cell!(Echo2);
