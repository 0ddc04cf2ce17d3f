//! `GET /proxy?url=..` fetches `url` through `transport.http.outbound`, so
//! tests can check the egress policy and the response round trip.

use std::time::Duration;

use pulp_guest::http::{self, FetchRequest, Request, Response};
use pulp_guest::{export_cell, log, Cell, Config, Step};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Fetcher;

impl Cell for Fetcher {
    fn init(_config: Config) -> Result<Self, String> {
        if let Err(code) = http::register("GET", "/proxy") {
            log::error(&format!("register failed {}", code.raw()));
        }
        log::info("fetcher ready");
        Ok(Fetcher)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let response = match request.query.get("url") {
            Some(url) => proxy(request.id, url),
            None => Response::new(request.id, 400).body("missing url"),
        };
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed {}", code.raw()));
        }
        0
    }
}

fn proxy(id: u64, url: &str) -> Response {
    match http::fetch(&FetchRequest::get(url).timeout(FETCH_TIMEOUT)) {
        Ok(fetched) => {
            log::info(&format!("fetch {url} status={}", fetched.status));
            Response::new(id, fetched.status)
                .header("x-fetched-status", &fetched.status.to_string())
                .body(fetched.body)
        }
        Err(code) => {
            log::info(&format!("fetch {url} failed code={}", code.raw()));
            Response::new(id, 502).body(format!("fetch failed code={}", code.raw()))
        }
    }
}

export_cell!(Fetcher);
