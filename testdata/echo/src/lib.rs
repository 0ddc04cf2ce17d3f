//! Serves the routes the inbound HTTP tests call: echoes of a parameter and
//! of a body, a report of what the host delivered, cookies, any status, and
//! a response sent one step after its request, and which build of the module
//! runs (the reload tests patch the build string into a second module).

use pulp_guest::http::{self, Reply, RequestView};
use pulp_guest::{export_cell, log, Cell, Config, Step};

const ROUTES: [(&str, &str); 7] = [
    ("GET", "/echo/:msg"),
    ("POST", "/echo"),
    ("GET", "/inspect"),
    ("GET", "/cookies"),
    ("GET", "/status/:code"),
    ("GET", "/later"),
    ("GET", "/build"),
];

/// Patched, byte for byte, into another module by the reload tests.
const BUILD: &[u8] = b"echo build 1";

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
            send(&Reply {
                body: b"later",
                ..Reply::new(id, 200)
            });
        }
        let Some(request) = http::request_view(step) else {
            return 0;
        };
        if request.method == "GET" && request.path == "/later" {
            self.later.push(request.id);
        } else {
            answer(&request);
        }
        0
    }
}

/// Answers from the request's own bytes: this cell is the HTTP benchmark's.
fn answer(request: &RequestView) {
    let ok = Reply::new(request.id, 200);
    let text_plain = [("content-type", "text/plain")];
    // Routes are told apart by their first segment: `/echo/:msg` and
    // `/echo` differ in method.
    let route = request.path.split('/').nth(1).unwrap_or_default();
    match (request.method, route) {
        ("GET", "echo") => send(&Reply {
            headers: &text_plain,
            body: request.params.get("msg").unwrap_or_default().as_bytes(),
            ..ok
        }),
        ("POST", "echo") => {
            let content_type = request.headers.get("content-type");
            let headers: &[_] = match &content_type {
                Some(value) => &[("content-type", *value)],
                None => &[],
            };
            send(&Reply {
                headers,
                body: request.body,
                ..ok
            })
        }
        ("GET", "inspect") => {
            // Sorted by name, so the report does not depend on wire order.
            let mut query: Vec<String> = request
                .query
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            query.sort();
            let body = format!(
                "method={} path={} query={} x-test={} remote={}",
                request.method,
                request.path,
                query.join("&"),
                request.headers.get("x-test").unwrap_or_default(),
                request.remote_addr
            );
            send(&Reply {
                headers: &text_plain,
                body: body.as_bytes(),
                ..ok
            })
        }
        ("GET", "build") => send(&Reply {
            body: BUILD,
            ..ok
        }),
        ("GET", "cookies") => send(&Reply {
            headers: &[("x-cell", "echo")],
            cookies: &["a=1; Path=/", "b=2; HttpOnly"],
            ..ok
        }),
        ("GET", "status") => match request.params.get("code").unwrap_or_default().parse() {
            Ok(status) => send(&Reply::new(request.id, status)),
            Err(_) => send(&Reply {
                body: b"bad status",
                ..Reply::new(request.id, 400)
            }),
        },
        _ => send(&Reply::new(request.id, 404)),
    }
}

fn send(reply: &Reply) {
    if let Err(code) = http::reply(reply) {
        log::warn(&format!("respond failed {}", code.raw()));
    }
}

export_cell!(Echo);
