//! Stores and lists objects through `storage.s3` behind HTTP routes. Keys
//! travel in the query string, so tests can send any key (`..`, `/abs`, empty)
//! without an HTTP client normalising it.
//!
//! A failed import answers 404 for code 6 and 500 otherwise, with the body
//! `code <N>`, so tests can assert the exact code. `[config] base = "/alpha"`
//! serves the routes under `/alpha`, so several copies share one listener.

use pulp_guest::http::{self, Request, Response};
use pulp_guest::{export_cell, log, s3, Cell, Code, Config, Step};

const ROUTES: [(&str, &str); 7] = [
    ("PUT", "/object"),
    ("GET", "/object"),
    ("DELETE", "/object"),
    ("GET", "/head"),
    ("POST", "/copy"),
    ("GET", "/list"),
    ("GET", "/presign"),
];

struct S3Cell {
    base: String,
}

impl Cell for S3Cell {
    fn init(config: Config) -> Result<Self, String> {
        let base = config
            .get("base")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for (method, path) in ROUTES {
            if let Err(code) = http::register(method, &format!("{base}{path}")) {
                log::error(&format!("register failed {}", code.raw()));
            }
        }
        log::info("s3cell ready");
        Ok(S3Cell { base })
    }

    fn step(&mut self, step: &Step) -> i32 {
        let Some(request) = Request::from_step(step) else {
            return 0;
        };
        let id = request.id;
        let route = request.path.strip_prefix(&self.base).unwrap_or_default();
        let response = answer(&request, route).unwrap_or_else(|code| failed(id, code));
        if let Err(code) = http::respond(&response) {
            log::warn(&format!("respond failed {}", code.raw()));
        }
        0
    }
}

fn answer(request: &Request, route: &str) -> Result<Response, Code> {
    let id = request.id;
    let query = |name: &str| request.query.get(name).map_or("", String::as_str);
    let key = query("key");
    Ok(match (request.method.as_str(), route) {
        ("PUT", "/object") => {
            let content_type = request
                .headers
                .get("content-type")
                .map_or("", String::as_str);
            s3::put_typed(key, &request.body, content_type)?;
            Response::new(id, 204)
        }
        ("GET", "/object") => {
            let object = s3::get(key)?;
            let response = Response::new(id, 200)
                .header("x-etag", &object.etag)
                .header("x-content-length", &object.content_length.to_string());
            let response = match object.content_type.as_str() {
                "" => response,
                content_type => response.header("content-type", content_type),
            };
            response.body(object.body)
        }
        ("DELETE", "/object") => {
            s3::delete(key)?;
            Response::new(id, 204)
        }
        ("GET", "/head") => {
            let head = s3::head(key)?;
            Response::new(id, 200).body(format!(
                "size={} modified={}",
                head.size, head.last_modified_unix
            ))
        }
        ("POST", "/copy") => {
            s3::copy(query("from"), query("to"))?;
            Response::new(id, 204)
        }
        ("GET", "/list") => {
            let max_keys = query("max").parse().unwrap_or(0);
            let listing = s3::list(query("prefix"), query("token"), max_keys)?;
            let lines: Vec<String> = listing
                .entries
                .iter()
                .map(|entry| format!("{} {}\n", entry.key, entry.size))
                .collect();
            Response::new(id, 200)
                .header("x-truncated", &listing.is_truncated.to_string())
                .header("x-next-token", &listing.next_continuation_token)
                .body(lines.concat())
        }
        ("GET", "/presign") => {
            let ttl = query("ttl").parse().unwrap_or(0);
            Response::new(id, 200).body(s3::presign(key, ttl)?)
        }
        _ => Response::new(id, 404),
    })
}

fn failed(id: u64, code: Code) -> Response {
    let status = if code == Code::NOT_FOUND { 404 } else { 500 };
    Response::new(id, status).body(format!("code {}", code.raw()))
}

export_cell!(S3Cell);
