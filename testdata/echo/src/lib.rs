//! Serves the routes the inbound HTTP tests call: echoes of a parameter and
//! of a body, a report of what the host delivered, cookies, any status, and
//! a response sent one step after its request.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::{export_cell, log, Cell, Config, Step};

const ROUTES: [(&str, &str); 6] = [
    ("GET", "/echo/:msg"),
    ("POST", "/echo"),
    ("GET", "/inspect"),
    ("GET", "/cookies"),
    ("GET", "/status/:code"),
    ("GET", "/later"),
];

struct Echo {
    /// `/later` requests, answered at the start of the next step.
    later: Vec<u64>,
}

impl Cell for Echo {
    fn init(_config: Config) -> Result<Self, String> {
        for (method, path) in ROUTES {
            if let Err(code) = http::register(method, path) {
                log::error(&format!("register failed {}", code.raw()));
            }
        }
        log::info("echo ready");
        Ok(Echo { later: Vec::new() })
    }

    fn step(&mut self, step: &Step) -> i32 {
        for id in std::mem::take(&mut self.later) {
            send(&Response::new(id, 200).body("later"));
        }
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        if request.method == "GET" && request.path == "/later" {
            self.later.push(request.id);
        } else {
            send(&answer(request));
        }
        0
    }
}

fn answer(request: Request) -> Response {
    let ok = Response::new(request.id, 200);
    // Routes are told apart by their first segment: `/echo/:msg` and
    // `/echo` differ in method.
    let route = request.path.split('/').nth(1).unwrap_or_default();
    match (request.method.as_str(), route) {
        ("GET", "echo") => ok
            .header("content-type", "text/plain")
            .body(param(&request, "msg")),
        ("POST", "echo") => {
            let ok = match request.headers.get("content-type") {
                Some(content_type) => ok.header("content-type", content_type),
                None => ok,
            };
            ok.body(request.body)
        }
        ("GET", "inspect") => {
            let query: Vec<String> = request
                .query
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            let body = format!(
                "method={} path={} query={} x-test={} remote={}",
                request.method,
                request.path,
                query.join("&"),
                request.headers.get("x-test").map_or("", String::as_str),
                request.remote_addr
            );
            ok.header("content-type", "text/plain").body(body)
        }
        ("GET", "cookies") => ok
            .header("x-cell", "echo")
            .cookie("a=1; Path=/")
            .cookie("b=2; HttpOnly"),
        ("GET", "status") => match param(&request, "code").parse() {
            Ok(status) => Response::new(request.id, status),
            Err(_) => Response::new(request.id, 400).body("bad status"),
        },
        _ => Response::new(request.id, 404),
    }
}

fn param<'a>(request: &'a Request, name: &str) -> &'a str {
    request.params.get(name).map_or("", String::as_str)
}

fn send(response: &Response) {
    if let Err(code) = http::respond(response) {
        log::warn(&format!("respond failed {}", code.raw()));
    }
}

export_cell!(Echo);
