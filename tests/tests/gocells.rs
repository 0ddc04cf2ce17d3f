//! Cells written the way Go builds them, through the real binary: nil for
//! absent fields, `pulp_alloc(0)` answering 0, polling from `pulp_step`; and
//! the manifest keys and command-line forms Go Pulp users bring.

use std::time::{Duration, Instant};

use pulp_e2e::{Scratch, cell, http_client, run, start_http as start, upstream};
use sha2::{Digest, Sha256};

#[test]
fn nil_fields_and_empty_results_work_as_on_go_pulp() {
    let upstream_port = upstream("200 OK", "upstream");
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("gostyle", "gostyle.toml", |t| {
        t.replace(
            "allowed_outbound_hosts = []",
            &format!("allowed_outbound_hosts = [\"http://127.0.0.1:{upstream_port}\"]"),
        )
    });
    let (_pulp, port) = start(&scratch, &[manifest], &[]);
    let http = http_client();
    let get = |path: &str| {
        let r = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };

    // An empty file (written from pointer 0, length 0) reads back as pointer
    // 0, length 0, without pulp_alloc(0).
    assert_eq!(get("/empty"), (200, "code=0 len=0".to_owned()));
    // A GET with method, headers, body and timeout nil.
    let url = format!("http://127.0.0.1:{upstream_port}/x");
    let (status, text) = get(&format!("/fetch?url={url}"));
    assert_eq!(
        (status, text.as_str()),
        (200, "code=0 status=200 body=upstream")
    );
    // A reply with headers, body and cookies nil: 200, empty.
    assert_eq!(get("/bare"), (200, String::new()));
}

fn ticks(port: u16) -> u64 {
    http_client()
        .get(format!("http://127.0.0.1:{port}/ticks"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_cell_without_tick_ms_polls_at_the_host_default() {
    let scratch = Scratch::new();
    let manifest = cell("gostyle");

    // By default a cell without tick_ms is stepped only for events.
    let (idle, port) = start(&scratch, std::slice::from_ref(&manifest), &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks(port), 0);
    drop(idle);

    let (_pulp, port) = start(&scratch, &[manifest], &["-default-tick-ms", "10"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ticks(port) < 3 {
        assert!(
            Instant::now() < deadline,
            "no ticks at --default-tick-ms 10"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The manifest `text` with `wasm_sha256` set, before any table.
fn pin(text: &str, digest: &str) -> String {
    text.replacen(
        "capabilities = ",
        &format!("wasm_sha256 = \"{digest}\"\ncapabilities = "),
        1,
    )
}

#[test]
fn wasm_sha256_pins_the_module() {
    let scratch = Scratch::new();
    let wasm = std::fs::read_to_string(cell("heartbeat")).unwrap();
    let wasm = wasm
        .lines()
        .find_map(|l| l.strip_prefix("wasm = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let module = cell("heartbeat").parent().unwrap().join(wasm);
    let digest = hex::encode(Sha256::digest(std::fs::read(&module).unwrap()));
    let wrong = "ab".repeat(32);

    let pinned = scratch.manifest_variant("heartbeat", "pinned.toml", |t| {
        pin(&t, &digest.to_uppercase())
    });
    let (status, log) = run(&[
        "check".to_owned(),
        "-manifest".to_owned(),
        pinned.display().to_string(),
    ]);
    assert!(status.success(), "{log}");

    let mismatched = scratch.manifest_variant("heartbeat", "mismatched.toml", |t| pin(&t, &wrong));
    let (status, log) = run(&scratch.args(&[mismatched]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("has sha256 {digest}, but"))
            && log.contains(&format!("pins wasm_sha256 = {wrong}")),
        "{log}"
    );

    let short = scratch.manifest_variant("heartbeat", "short.toml", |t| pin(&t, "abc"));
    let (status, log) = run(&scratch.args(&[short]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("wasm_sha256 = \"abc\" is not a SHA-256"),
        "{log}"
    );
}

#[test]
fn depends_on_orders_start_up_and_refuses_cycles_and_strangers() {
    let scratch = Scratch::new();
    // Named `a` and `b`, b listed first but depending on a.
    let variant = |file: &str, name: &str, deps: &str| {
        scratch.manifest_variant("heartbeat", file, |t| {
            t.replace(
                "name = \"heartbeat\"",
                &format!("name = \"{name}\"\ndepends_on = [{deps}]"),
            )
        })
    };
    let b = variant("b.toml", "b", "\"a\"");
    let a = variant("a.toml", "a", "");
    let manifests = format!("{},{}", b.display(), a.display());
    let mut args = scratch.args(&[]);
    args.extend(["-manifest".to_owned(), manifests]);
    let pulp = pulp_e2e::Pulp::start(&args);
    pulp.wait_for_n(&["cell started"], 2);
    let (_, log) = pulp.stop("TERM");
    let started: Vec<&str> = log.lines().filter(|l| l.contains("cell started")).collect();
    assert!(
        started[0].contains("cell=\"a\"") && started[1].contains("cell=\"b\""),
        "{log}"
    );

    let cyclic = variant("c.toml", "a", "\"b\"");
    let (status, log) = run(&scratch.args(&[b.clone(), cyclic]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("depends_on has a cycle among cells b, a"),
        "{log}"
    );

    let (status, log) = run(&scratch.args(&[b]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cell b depends_on \"a\", which is not among the cells given"),
        "{log}"
    );
}
