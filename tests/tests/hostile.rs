//! Hostile cells and a panicking extension: each fails alone, the host and the
//! other cells keep going.

use pulp_e2e::{Pulp, Scratch, cell, count, run};

#[test]
fn trap_in_init_with_restart_never_stops_only_that_cell() {
    let scratch = Scratch::new();
    let (bad, hb) = (cell("trap-init"), cell("heartbeat"));
    let pulp = Pulp::start(&scratch.args(&[bad, hb]));
    let crash = pulp.wait_for(&["cell crashed", "cell=\"trap-init\""]);
    assert!(crash.contains("trapped"), "{crash}");
    pulp.wait_for(&["cell stopped (restart = never)", "cell=\"trap-init\""]);
    // The panic message the cell printed reached the log.
    pulp.wait_for(&["trap-init: boom"]);
    // The other cell keeps stepping after the crash.
    let steps_then = count(&pulp.log(), "envelope=ok");
    pulp.wait_for_n(&["envelope=ok"], steps_then + 5);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert_eq!(count(&log, "restarting in"), 0, "{log}");
}

#[test]
fn trap_in_step_restarts_on_crash_with_backoff() {
    let scratch = Scratch::new();
    let bad = cell("trap-step");
    let pulp = Pulp::start(&scratch.args(&[bad]));
    pulp.wait_for_n(&["cell crashed", "cell=\"trap-step\""], 2);
    pulp.wait_for_n(&["restarting in", "cell=\"trap-step\""], 2);
    let log = pulp.log();
    assert!(count(&log, "trap-step init") >= 2, "not restarted:\n{log}");
    // Backoff doubles between restarts.
    let delays: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap())
        .collect();
    assert_eq!(&delays[..2], ["100", "200"], "{log}");
}

#[test]
fn a_runaway_step_is_interrupted_and_restarted_while_another_cell_steps() {
    let scratch = Scratch::new();
    let (spin, hb) = (cell("loop-step"), cell("heartbeat"));
    let pulp = Pulp::start(&scratch.args(&[spin, hb]));
    let crash = pulp.wait_for(&["cell crashed", "cell=\"loop-step\""]);
    assert!(crash.contains("call_timeout_ms = 300"), "{crash}");
    pulp.wait_for_n(&["loop-step init"], 2);
    let steps_then = count(&pulp.log(), "envelope=ok");
    pulp.wait_for_n(&["envelope=ok"], steps_then + 5);
    let (status, log) = pulp.stop("INT");
    assert!(status.success(), "{log}");
}

#[test]
fn a_runaway_init_is_interrupted() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("loop-step", "spin-init.toml", |t| {
        t.replace("spin_in = \"step\"", "spin_in = \"init\"")
            .replace("restart = \"on_crash\"", "restart = \"never\"")
    });
    let pulp = Pulp::start(&scratch.args(&[manifest]));
    let crash = pulp.wait_for(&["cell crashed", "cell=\"loop-step\""]);
    assert!(crash.contains("call_timeout_ms"), "{crash}");
    pulp.wait_for(&["cell stopped (restart = never)"]);
    let (status, _) = pulp.stop("TERM");
    assert!(status.success());
}

#[test]
fn memory_growth_stops_at_max_memory_pages() {
    let scratch = Scratch::new();
    let bomb = cell("memory-bomb");
    let pulp = Pulp::start(&scratch.args(&[bomb]));
    let line = pulp.wait_for(&["memory-bomb refused at pages="]);
    let pages: u64 = line
        .split("pages=")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pages, 64, "{line}");
    pulp.wait_for(&["cell started", "cell=\"memory-bomb\""]);
}

#[test]
fn an_import_nobody_provides_fails_start_up_naming_it() {
    let scratch = Scratch::new();
    let bad = cell("unknown-import");
    let (status, log) = run(&scratch.args(&[bad]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "cell unknown-import imports pulp.no_such_import, which no capability provides"
        ),
        "{log}"
    );
}

#[test]
fn a_panicking_extension_import_fails_the_call_not_the_host() {
    let scratch = Scratch::new();
    scratch.install("pulp-fixture-ext-panic", "libpanicky.so");
    scratch.write(
        "exts/extensions.toml",
        "[[extension]]\nname = \"panic\"\nlibrary = \"panicky\"\n",
    );
    let (panicky, hb) = (cell("panicky"), cell("heartbeat"));
    let pulp = Pulp::start(&scratch.args(&[panicky, hb]));
    pulp.wait_for(&["panic_now returned 5", "cell=\"panicky\""]);
    let logged = pulp.wait_for(&["host import panicked: panic_now was called"]);
    assert!(logged.contains("extension=\"panic\""), "{logged}");
    pulp.wait_for(&["panic_ok returned 0"]);
    pulp.wait_for(&["panicky step=3"]);
    pulp.wait_for(&["heartbeat call=3 envelope=ok"]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
}

/// A cell that leaves through WASI `proc_exit(code)` on its first step.
const EXITING_CELL: &str = r#"
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "pulp_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "pulp_init") (param i32 i32) (result i32) i32.const 0)
  (func (export "pulp_step") (param i32 i32) (result i32)
    i32.const EXIT_CODE
    call $exit
    i32.const 0))
"#;

fn exiting_cell(
    scratch: &Scratch,
    name: &str,
    exit_code: i32,
    restart: &str,
) -> std::path::PathBuf {
    scratch.write(
        &format!("{name}.wat"),
        EXITING_CELL.replace("EXIT_CODE", &exit_code.to_string()),
    );
    scratch.write(
        &format!("{name}.toml"),
        format!("name = \"{name}\"\nversion = \"0.1.0\"\nwasm = \"{name}.wat\"\ntick_ms = 20\nrestart = \"{restart}\"\n"),
    )
}

#[test]
fn restart_policies_tell_an_exit_from_a_crash() {
    let scratch = Scratch::new();
    let always = exiting_cell(&scratch, "clean-always", 0, "always");
    let on_crash = exiting_cell(&scratch, "clean-on-crash", 0, "on_crash");
    let failing = exiting_cell(&scratch, "failing-on-crash", 3, "on_crash");
    let pulp = Pulp::start(&scratch.args(&[always, on_crash, failing]));
    // `always` restarts after an orderly exit...
    pulp.wait_for_n(&["cell exited", "cell=\"clean-always\""], 2);
    pulp.wait_for(&["restarting in", "cell=\"clean-always\""]);
    // ...`on_crash` does not, but does restart after a non-zero exit.
    pulp.wait_for(&[
        "cell stopped (restart = on_crash)",
        "cell=\"clean-on-crash\"",
    ]);
    let crash = pulp.wait_for(&["cell crashed", "cell=\"failing-on-crash\""]);
    assert!(crash.contains("exited with code 3"), "{crash}");
    pulp.wait_for(&["restarting in", "cell=\"failing-on-crash\""]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("restarting in") && l.contains("clean-on-crash")),
        "{log}"
    );
}

#[test]
fn a_stopped_cell_is_torn_down_once_while_running() {
    let scratch = Scratch::new();
    scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    scratch.write(
        "exts/extensions.toml",
        "[[extension]]\nname = \"demo\"\nlibrary = \"pulp_ext_demo\"\n",
    );
    scratch.write("quitter.wat", EXITING_CELL.replace("EXIT_CODE", "1"));
    let quitter = scratch.write(
        "quitter.toml",
        "name = \"quitter\"\nversion = \"0.1.0\"\nwasm = \"quitter.wat\"\ntick_ms = 20\n\
         restart = \"never\"\ncapabilities = [\"demo.ticker\"]\n",
    );
    let pulp = Pulp::start(&scratch.args(&[quitter, cell("heartbeat")]));
    // teardown_cell runs when the cell stops, not at host shutdown...
    pulp.wait_for(&["ticker stopped for cell quitter"]);
    pulp.wait_for(&["heartbeat call=3 envelope=ok"]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    // ...and only once.
    assert_eq!(count(&log, "ticker stopped for cell quitter"), 1, "{log}");
    assert!(log.contains("demo teardown:"), "{log}");
}
