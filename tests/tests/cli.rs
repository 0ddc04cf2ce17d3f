//! The command line and manifests: bad input is one clear error and exit 1.

use pulp_e2e::{Pulp, Scratch, cell, run};

fn assert_fails<S: AsRef<std::ffi::OsStr>>(args: &[S], needles: &[&str]) {
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
    assert_fails::<&str>(&[], &["give at least one -manifest PATH"]);
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

#[test]
fn out_of_range_limits_and_inconsistent_capabilities_are_errors() {
    let scratch = Scratch::new();
    for (file, edit, needle) in [
        (
            "pages.toml",
            "max_memory_pages = 0\n",
            "max_memory_pages = 0 is out of range",
        ),
        (
            "timeout.toml",
            "call_timeout_ms = 0\n",
            "call_timeout_ms must be at least 1",
        ),
        (
            "restart.toml",
            "restart = \"sometimes\"\n",
            "unknown variant `sometimes`",
        ),
        (
            "twice.toml",
            "capabilities = [\"demo.greet\", \"demo.greet\"]\n",
            "capability \"demo.greet\" is listed twice",
        ),
        (
            "pin.toml",
            "[providers]\n\"storage.s3\" = \"x\"\n",
            "[providers] pins \"storage.s3\", which is not in capabilities",
        ),
    ] {
        let manifest = scratch.write(
            file,
            format!("name = \"bad\"\nversion = \"0.1.0\"\nwasm = \"none.wat\"\n{edit}"),
        );
        assert_fails(&["-manifest", manifest.to_str().unwrap()], &[file, needle]);
    }
}

/// A minimal cell in WAT whose imports are `imports`.
fn wat_cell(
    scratch: &Scratch,
    name: &str,
    imports: &str,
    exports_step: bool,
) -> std::path::PathBuf {
    let step = if exports_step {
        r#"(func (export "pulp_step") (param i32 i32) (result i32) i32.const 0)"#
    } else {
        ""
    };
    scratch.write(
        &format!("{name}.wat"),
        format!(
            r#"(module {imports}
                (memory (export "memory") 1)
                (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
                (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
                {step})"#
        ),
    );
    scratch.write(
        &format!("{name}.toml"),
        format!("name = \"{name}\"\nversion = \"0.1.0\"\nwasm = \"{name}.wat\"\n"),
    )
}

#[test]
fn a_wrong_import_signature_or_a_missing_export_fails_start_up() {
    let scratch = Scratch::new();
    let wrong = wat_cell(
        &scratch,
        "wrong",
        r#"(import "pulp" "log" (func (param i32) (result i32)))"#,
        true,
    );
    assert_fails(
        &scratch.args(&[wrong]),
        &[
            "cell wrong imports pulp.log as (i32) -> (i32), but capability core.log provides it as (i32, i32, i32) -> i32",
        ],
    );
    let foreign = wat_cell(
        &scratch,
        "foreign",
        r#"(import "env" "thing" (func))"#,
        true,
    );
    assert_fails(
        &scratch.args(&[foreign]),
        &[
            "cell foreign imports env.thing: cells may import only from `pulp` and `wasi_snapshot_preview1`",
        ],
    );
    let stepless = wat_cell(&scratch, "stepless", "", false);
    assert_fails(
        &scratch.args(&[stepless]),
        &["cell stepless: the module does not export pulp_step(i32, i32) -> i32"],
    );
}
