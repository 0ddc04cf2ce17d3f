//! The command line and manifests: bad input is one clear error and exit 1.

use pulp_e2e::{Pulp, Scratch, cell, run};

fn assert_fails(args: &[&str], needles: &[&str]) {
    let (status, log) = run(args);
    assert_eq!(status.code(), Some(1), "{log}");
    for needle in needles {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
}

#[test]
fn unknown_manifest_fields_are_errors() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("heartbeat", "typo.toml", |t| {
        t.replace("tick_ms", "tick_msec")
    });
    assert_fails(
        &["-manifest", manifest.to_str().unwrap()],
        &["typo.toml", "unknown field `tick_msec`"],
    );
}

#[test]
fn invalid_names_are_errors() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("heartbeat", "name.toml", |t| {
        t.replace("name = \"heartbeat\"", "name = \"Heart Beat\"")
    });
    assert_fails(
        &["-manifest", manifest.to_str().unwrap()],
        &["name.toml", "name \"Heart Beat\" is invalid"],
    );
}

#[test]
fn missing_wasm_is_an_error() {
    let scratch = Scratch::new();
    let manifest = scratch.write("m.toml", "name = \"ghost\"\nversion = \"0.1.0\"\n");
    assert_fails(
        &["-manifest", manifest.to_str().unwrap()],
        &[
            "m.toml",
            "wasm file",
            "cell.wasm",
            "not found",
            "build the cell or fix `wasm`",
        ],
    );
}

#[test]
fn a_file_that_is_not_wasm_is_an_error() {
    let scratch = Scratch::new();
    scratch.write("cell.wasm", "not wasm");
    let manifest = scratch.write("m.toml", "name = \"junk\"\nversion = \"0.1.0\"\n");
    assert_fails(
        &["-manifest", manifest.to_str().unwrap()],
        &["cell junk", "is not a valid wasm module"],
    );
}

#[test]
fn missing_manifest_file_and_no_manifest() {
    assert_fails(
        &["-manifest", "/nonexistent/app.toml"],
        &["/nonexistent/app.toml", "cannot read it"],
    );
    assert_fails(&[], &["give at least one -manifest PATH"]);
}

#[test]
fn duplicate_cell_names_are_an_error() {
    let scratch = Scratch::new();
    let copy = scratch.manifest_variant("heartbeat", "again.toml", |t| t);
    let original = cell("heartbeat");
    assert_fails(
        &[
            "-manifest",
            original.to_str().unwrap(),
            "-manifest",
            copy.to_str().unwrap(),
        ],
        &["two cells are named \"heartbeat\"", "again.toml"],
    );
}

#[test]
fn check_validates_without_running() {
    let scratch = Scratch::new();
    let hb = cell("heartbeat");
    let storage = scratch.path().join("data");
    let (status, out) = run(&[
        "check",
        "-manifest",
        hb.to_str().unwrap(),
        "-storage-root",
        storage.to_str().unwrap(),
    ]);
    assert!(status.success(), "{out}");
    assert!(out.contains("ok: cell heartbeat 0.1.0"), "{out}");
    assert!(out.contains("imports [log]"), "{out}");
    // Nothing ran: no steps, no storage.
    assert!(!out.contains("envelope=ok"), "{out}");
    assert!(!storage.exists());

    let unknown = cell("unknown-import");
    assert_fails(
        &["check", "-manifest", unknown.to_str().unwrap()],
        &["pulp.no_such_import"],
    );
}

#[test]
fn double_dash_flags_and_json_logs() {
    let scratch = Scratch::new();
    let hb = cell("heartbeat");
    let storage = scratch.path().join("data");
    let pulp = Pulp::start(&[
        "--manifest",
        hb.to_str().unwrap(),
        "--storage-root",
        storage.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let line = pulp.wait_for(&["heartbeat call=2 envelope=ok"]);
    assert!(
        line.starts_with('{') && line.contains("\"cell\":\"heartbeat\""),
        "{line}"
    );
}

#[test]
fn tls_flags_come_in_pairs() {
    let (status, log) = run(&["-manifest", "x.toml", "-http-cert", "cert.pem"]);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--http-key"), "{log}");
}
