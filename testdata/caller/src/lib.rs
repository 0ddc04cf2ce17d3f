//! Calls the functions other cells provide: `GET /call/:function` calls
//! `function` of the cell named by `?target=` (default `callee`) with
//! `?arg=` as its input, and answers `ok:<result>` or `code=<code>`. Serves
//! `ping` itself, so a call back into it makes a cycle.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::{call, export_cell, Cell, Config, Step};

struct Caller;

impl Cell for Caller {
    fn init(_config: Config) -> Result<Self, String> {
        http::register("GET", "/call/:function").map_err(|c| format!("register: {c}"))?;
        Ok(Caller)
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let function = request.params.get("function").map_or("", String::as_str);
        let target = request.query.get("target").map_or("callee", String::as_str);
        let arg = request.query.get("arg").map_or("", String::as_str);
        let body = match call::call(target, function, arg.as_bytes()) {
            Ok(result) => format!("ok:{}", String::from_utf8_lossy(&result)),
            Err(code) => format!("code={}", code.raw()),
        };
        let _ = http::respond(&Response::new(request.id, 200).body(body));
        0
    }

    fn on_call(&mut self, function: &str, _args: &[u8]) -> Result<Vec<u8>, i32> {
        match function {
            "ping" => Ok(b"pong".to_vec()),
            _ => Err(1),
        }
    }
}

export_cell!(Caller);
