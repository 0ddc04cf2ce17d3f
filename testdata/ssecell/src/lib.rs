//! An SSE stream on `/events`, fed by `POST /emit?id=..&event=..` whose body
//! is the event's data.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::{export_cell, log, sse, Cell, Config, Step};

const STREAM: &str = "/events";

struct SseCell;

impl Cell for SseCell {
    fn init(_config: Config) -> Result<Self, String> {
        if let Err(code) = sse::register(STREAM) {
            log::error(&format!("register failed {}", code.raw()));
        }
        if let Err(code) = http::register("POST", "/emit") {
            log::error(&format!("register failed {}", code.raw()));
        }
        log::info("ssecell ready");
        Ok(SseCell)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let response = match std::str::from_utf8(&request.body) {
            Ok(data) => {
                let id = request.query.get("id").map(String::as_str);
                let name = request.query.get("event").map(String::as_str);
                if let Err(code) = sse::emit(STREAM, id, name, data) {
                    log::warn(&format!("sse_emit returned {}", code.raw()));
                }
                Response::new(request.id, 204)
            }
            Err(_) => Response::new(request.id, 400).body("data is not UTF-8"),
        };
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed {}", code.raw()));
        }
        0
    }
}

export_cell!(SseCell);
