//! `storage.s3` end to end: the real `pulp` binary loads the real `pulp-ext-s3`
//! library, the `s3cell` test cell drives it over HTTP, and a real S3 server
//! (in-process `s3s`, or SeaweedFS with `PULP_TEST_S3=seaweedfs`) holds the
//! objects, which the test reads and writes with its own client.

use std::path::PathBuf;

use pulp_e2e::s3::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY, WRITER_KEY_ID, WRITER_SECRET};
use pulp_e2e::{Pulp, Scratch, http_client, start_http};

const BUCKET: &str = "cells";

/// Installs the S3 library into `scratch`'s ext dir with `config` as its
/// `[extension.config]`.
fn install(scratch: &Scratch, config: &str) {
    scratch.install("pulp-ext-s3", "libpulp_ext_s3.so");
    scratch.write(
        "exts/extensions.toml",
        format!(
            "[[extension]]\nname = \"s3\"\nlibrary = \"pulp_ext_s3\"\n[extension.config]\n{config}"
        ),
    );
}

/// A copy of `s3cell` named `name`, serving its routes under `/<name>`.
fn s3cell(scratch: &Scratch, name: &str, extra: &str) -> PathBuf {
    scratch.manifest_variant("s3cell", &format!("{name}.toml"), |t| {
        let t = t.replace("name = \"s3cell\"", &format!("name = {name:?}"));
        format!("{t}\n{extra}\n[config]\nbase = \"/{name}\"\n")
    })
}

/// `pulp` running copies of `s3cell`, with the S3 library configured by `config`.
struct Host {
    pulp: Pulp,
    port: u16,
    // Dropped after `pulp`: it holds the library and the manifests.
    _scratch: Scratch,
}

impl Host {
    /// Runs one copy of the cell per name; `limits` goes into each manifest.
    fn start(config: &str, names: &[&str], limits: &str) -> Host {
        let scratch = Scratch::new();
        install(&scratch, config);
        let manifests: Vec<PathBuf> = names
            .iter()
            .map(|name| s3cell(&scratch, name, limits))
            .collect();
        let (pulp, port) = start_http(&scratch, &manifests, &[]);
        Host {
            pulp,
            port,
            _scratch: scratch,
        }
    }

    fn cell(&self, name: &str) -> Cell {
        Cell::new(self.port, name)
    }
}

/// The library's config for `bucket` on `server`, with keys that may do anything.
fn full_access(server: &S3Server, bucket: &str) -> String {
    server.extension_config(bucket, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
}

/// One copy of the cell, reached over HTTP.
struct Cell {
    http: reqwest::blocking::Client,
    base: String,
}

/// A status and the body as text.
type Answer = (u16, String);

impl Cell {
    fn new(port: u16, name: &str) -> Cell {
        Cell {
            http: http_client(),
            base: format!("http://127.0.0.1:{port}/{name}"),
        }
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    }

    fn put(&self, key: &str, body: &str) -> Answer {
        let url = format!("{}/object", self.base);
        self.send(
            self.http
                .put(url)
                .query(&[("key", key)])
                .body(body.to_owned()),
        )
    }

    fn get(&self, key: &str) -> Answer {
        let url = format!("{}/object", self.base);
        self.send(self.http.get(url).query(&[("key", key)]))
    }

    fn delete(&self, key: &str) -> Answer {
        let url = format!("{}/object", self.base);
        self.send(self.http.delete(url).query(&[("key", key)]))
    }

    fn head(&self, key: &str) -> Answer {
        let url = format!("{}/head", self.base);
        self.send(self.http.get(url).query(&[("key", key)]))
    }

    fn copy(&self, from: &str, to: &str) -> Answer {
        let url = format!("{}/copy", self.base);
        self.send(self.http.post(url).query(&[("from", from), ("to", to)]))
    }

    fn presign(&self, key: &str) -> Answer {
        let url = format!("{}/presign", self.base);
        self.send(self.http.get(url).query(&[("key", key), ("ttl", "600")]))
    }

    /// One page: the keys, and the next token when the listing was truncated.
    fn list(&self, prefix: &str, token: &str, max: u32) -> (Vec<String>, Option<String>) {
        let url = format!("{}/list", self.base);
        let response = self
            .http
            .get(url)
            .query(&[
                ("prefix", prefix),
                ("token", token),
                ("max", &max.to_string()),
            ])
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        let truncated = response.headers()["x-truncated"] == "true";
        let token = response.headers()["x-next-token"]
            .to_str()
            .unwrap()
            .to_owned();
        let keys = response
            .text()
            .unwrap()
            .lines()
            .map(|line| line.split(' ').next().unwrap().to_owned())
            .collect();
        (keys, truncated.then_some(token))
    }

    /// The whole listing's status, for the error cases.
    fn list_status(&self) -> Answer {
        self.send(self.http.get(format!("{}/list", self.base)))
    }

    fn keys(&self) -> Vec<String> {
        let (keys, next) = self.list("", "", 0);
        assert_eq!(next, None);
        keys
    }
}

fn ok() -> Answer {
    (204, String::new())
}

fn code(n: i32) -> Answer {
    let status = if n == 6 { 404 } else { 500 };
    (status, format!("code {n}"))
}

#[test]
fn objects_round_trip_between_the_cell_and_an_independent_client() {
    let server = S3Server::start(&[BUCKET]);
    let bucket = server.bucket(BUCKET);
    let host = Host::start(&full_access(&server, BUCKET), &["alpha"], "");
    let alpha = host.cell("alpha");

    // The cell writes; the test's client finds it under the cell's prefix.
    let r = alpha
        .http
        .put(format!("{}/object", alpha.base))
        .query(&[("key", "notes/a.txt")])
        .header("content-type", "text/plain")
        .body("hello from the cell")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        bucket.get("alpha/notes/a.txt").as_deref(),
        Some(&b"hello from the cell"[..])
    );
    assert_eq!(bucket.keys(), ["alpha/notes/a.txt"]);

    // The client writes; the cell reads it without knowing its prefix.
    bucket.put("alpha/k2", b"from outside");
    assert_eq!(alpha.get("k2"), (200, "from outside".to_owned()));
    let r = alpha
        .http
        .get(format!("{}/object", alpha.base))
        .query(&[("key", "notes/a.txt")])
        .send()
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-content-length"], "19");
    assert!(!r.headers()["x-etag"].is_empty());

    assert_eq!(alpha.get("missing"), code(6));
    assert_eq!(alpha.delete("notes/a.txt"), ok());
    assert_eq!(bucket.get("alpha/notes/a.txt"), None);
    assert_eq!(alpha.get("notes/a.txt"), code(6));
    assert_eq!(alpha.keys(), ["k2"]);
}

#[test]
fn two_cells_cannot_see_each_others_keys() {
    let server = S3Server::start(&[BUCKET]);
    let bucket = server.bucket(BUCKET);
    let host = Host::start(&full_access(&server, BUCKET), &["alpha", "beta"], "");
    let (alpha, beta) = (host.cell("alpha"), host.cell("beta"));

    assert_eq!(alpha.put("shared", "A"), ok());
    assert_eq!(beta.put("shared", "B"), ok());
    assert_eq!(alpha.put("secret", "only alpha"), ok());

    assert_eq!(alpha.get("shared"), (200, "A".to_owned()));
    assert_eq!(beta.get("shared"), (200, "B".to_owned()));
    assert_eq!(beta.get("secret"), code(6));
    assert_eq!(beta.head("secret"), code(6));
    assert_eq!(beta.copy("secret", "stolen"), code(6));
    // Climbing out of the prefix is refused, not resolved.
    assert_eq!(beta.get("../alpha/secret"), code(4));
    assert_eq!(alpha.keys(), ["secret", "shared"]);
    assert_eq!(beta.keys(), ["shared"]);
    // Deleting its own key leaves the other cell's alone.
    assert_eq!(beta.delete("shared"), ok());
    assert_eq!(alpha.get("shared"), (200, "A".to_owned()));
    assert_eq!(bucket.keys(), ["alpha/secret", "alpha/shared"]);
}

#[test]
fn escaping_keys_are_refused_and_nothing_is_written() {
    let server = S3Server::start(&[BUCKET]);
    let bucket = server.bucket(BUCKET);
    let config = full_access(&server, BUCKET);
    let host = Host::start(&config, &["alpha"], "max_message_bytes = 4096");
    let alpha = host.cell("alpha");

    let bad = [
        "..",
        "../beta/x",
        "a/../../x",
        "/etc/passwd",
        "/abs",
        "",
        "a//b",
        "nul\0byte",
    ];
    for key in bad {
        assert_eq!(alpha.put(key, "x"), code(4), "put {key:?}");
        assert_eq!(alpha.get(key), code(4), "get {key:?}");
        assert_eq!(alpha.delete(key), code(4), "delete {key:?}");
    }
    assert_eq!(alpha.copy("..", "fine"), code(4));
    assert_eq!(alpha.copy("fine", "../x"), code(4));
    assert_eq!(alpha.presign("/abs"), code(4));
    host.pulp
        .wait_for(&["s3_put refused: absolute key", "cell=alpha"]);
    assert_eq!(bucket.keys(), Vec::<String>::new());

    // An object larger than the cell's message limit is refused, not truncated.
    bucket.put("alpha/big", &[7u8; 10_000]);
    assert_eq!(alpha.get("big"), code(9));
}

#[test]
fn wrong_credentials_and_access_denied_are_codes_and_clear_log_lines() {
    let server = S3Server::start(&[BUCKET]);

    // A wrong secret: S3 answers SignatureDoesNotMatch, the cell gets 4.
    let config = server.extension_config(BUCKET, ACCESS_KEY_ID, "not-the-secret");
    let host = Host::start(&config, &["alpha"], "");
    let alpha = host.cell("alpha");
    assert_eq!(alpha.put("doc", "x"), code(4));
    let line = host
        .pulp
        .wait_for(&["s3_put failed", "SignatureDoesNotMatch"]);
    assert!(
        line.contains("cell=alpha") && line.contains("key=doc"),
        "{line}"
    );
    assert!(
        line.contains("ERROR") && line.contains("extension=\"s3\""),
        "{line}"
    );
    // The host and the cell keep serving.
    assert_eq!(alpha.list_status(), code(4));
    assert_eq!(alpha.get("doc"), code(4));
    drop(host);

    // An access key the server does not know: InvalidAccessKeyId, also 4.
    let config = server.extension_config(BUCKET, "nobody", SECRET_ACCESS_KEY);
    let host = Host::start(&config, &["alpha"], "");
    let alpha = host.cell("alpha");
    assert_eq!(alpha.get("doc"), code(4));
    let line = host.pulp.wait_for(&["s3_get failed", "InvalidAccessKeyId"]);
    assert!(
        line.contains("cell=alpha") && line.contains("key=doc"),
        "{line}"
    );
    drop(host);

    // Known keys without the permission: AccessDenied is 11.
    let config = server.extension_config(BUCKET, WRITER_KEY_ID, WRITER_SECRET);
    let host = Host::start(&config, &["alpha"], "");
    let alpha = host.cell("alpha");
    assert_eq!(alpha.put("doc", "written"), ok());
    assert_eq!(alpha.get("doc"), code(11));
    let line = host.pulp.wait_for(&["s3_get failed", "AccessDenied"]);
    assert!(
        line.contains("cell=alpha") && line.contains("key=doc"),
        "{line}"
    );
    assert_eq!(
        server.bucket(BUCKET).get("alpha/doc").as_deref(),
        Some(&b"written"[..])
    );
}

#[test]
fn no_bucket_configured_is_code_10() {
    assert!(
        std::env::var_os("S3_BUCKET").is_none(),
        "S3_BUCKET is set: this test checks a host without a bucket"
    );
    let server = S3Server::start(&[BUCKET]);
    let config = format!(
        "endpoint = {:?}\naccess_key_id = {ACCESS_KEY_ID:?}\nsecret_access_key = {SECRET_ACCESS_KEY:?}\n",
        server.endpoint()
    );
    let host = Host::start(&config, &["alpha"], "");
    host.pulp
        .wait_for(&["storage.s3 is not configured", "no bucket configured"]);
    let alpha = host.cell("alpha");
    assert_eq!(alpha.put("doc", "x"), code(10));
    assert_eq!(alpha.get("doc"), code(10));
    assert_eq!(alpha.list_status(), code(10));
    host.pulp
        .wait_for(&["s3_get refused: no bucket configured", "cell=alpha"]);
}

#[test]
fn a_new_config_for_the_same_library_changes_the_bucket_after_restart() {
    let server = S3Server::start(&[BUCKET, "archive"]);
    let (cells, archive) = (server.bucket(BUCKET), server.bucket("archive"));

    let first = Host::start(&full_access(&server, BUCKET), &["alpha"], "");
    assert_eq!(first.cell("alpha").put("before", "1"), ok());
    let (status, _) = first.pulp.stop("TERM");
    assert!(status.success());

    // The same file, copied into a new ext dir next to a different [extension.config].
    let second = Host::start(&full_access(&server, "archive"), &["alpha"], "");
    let alpha = second.cell("alpha");
    assert_eq!(alpha.put("after", "2"), ok());
    assert_eq!(alpha.get("before"), code(6));

    assert_eq!(cells.keys(), ["alpha/before"]);
    assert_eq!(archive.keys(), ["alpha/after"]);
    assert_eq!(archive.get("alpha/after").as_deref(), Some(&b"2"[..]));
}

#[test]
fn listing_pages_head_copy_and_presign() {
    let server = S3Server::start(&[BUCKET]);
    let bucket = server.bucket(BUCKET);
    let host = Host::start(&full_access(&server, BUCKET), &["alpha"], "");
    let alpha = host.cell("alpha");
    for key in [
        "page/01", "page/02", "page/03", "page/04", "page/05", "pages", "zzz",
    ] {
        assert_eq!(alpha.put(key, key), ok());
    }
    // A neighbouring cell's key sorts inside alpha's range of names: it stays out.
    bucket.put("alphabet/page/00", b"not alpha's");

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (keys, next) = alpha.list("page/", &token, 2);
        pages.push(keys);
        match next {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(
        pages,
        [
            vec!["page/01", "page/02"],
            vec!["page/03", "page/04"],
            vec!["page/05"]
        ]
    );
    // A prefix is a string prefix, not only a directory.
    assert_eq!(
        alpha.list("pa", "", 0).0,
        [
            "page/01", "page/02", "page/03", "page/04", "page/05", "pages"
        ]
    );
    assert_eq!(
        alpha.list("page/0", "page/03", 10).0,
        ["page/04", "page/05"]
    );
    assert_eq!(alpha.list("", "", 0).0.len(), 7);

    assert_eq!(alpha.head("page/01").0, 200);
    assert!(alpha.head("page/01").1.starts_with("size=7 modified="));
    assert_eq!(alpha.copy("page/01", "copied/01"), ok());
    assert_eq!(
        bucket.get("alpha/copied/01").as_deref(),
        Some(&b"page/01"[..])
    );

    let (status, url) = alpha.presign("page/02");
    assert_eq!(status, 200, "{url}");
    assert!(
        url.starts_with(&server.endpoint()) && url.contains("X-Amz-Signature="),
        "{url}"
    );
    let fetched = http_client().get(&url).send().unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.text().unwrap(), "page/02");
    // The signature covers the key: another key with it is refused.
    let forged = url.replace("page/02", "page/03");
    assert_eq!(http_client().get(&forged).send().unwrap().status(), 403);
}
