//! Cells running under the real binary: the ABI, config, events from a real
//! extension library, stubs, bad pointers, several cells, idle CPU.

use pulp_e2e::{Pulp, Scratch, cell, count};

fn demo_exts(scratch: &Scratch, interval_ms: u64) {
    scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    scratch.write(
        "exts/extensions.toml",
        format!(
            "[[extension]]\nname = \"demo\"\nlibrary = \"pulp_ext_demo\"\n[extension.config]\nticker_interval_ms = {interval_ms}\n"
        ),
    );
}

#[test]
fn heartbeat_sees_envelope_config_and_ticks() {
    let scratch = Scratch::new();
    let pulp = Pulp::start(&scratch.args(&[cell("heartbeat")]));
    pulp.wait_for(&["heartbeat call=5 envelope=ok"]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "exit {status:?}\n{log}");

    // [config] arrives as MessagePack with 64-bit integer and float markers.
    assert!(
        log.contains("config greeting=hi count=3 ratio=0.5 enabled=true tags=a,b depth=2"),
        "{log}"
    );
    assert!(
        log.contains("config count-marker=d3 ratio-marker=cb"),
        "{log}"
    );
    // WASI stdout and stderr land in the host log, tagged with the cell.
    assert!(
        log.lines()
            .any(|l| l.contains("heartbeat stdout line") && l.contains("cell=\"heartbeat\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("heartbeat stderr line") && l.contains("stream=\"stderr\"")),
        "{log}"
    );
    // Every step saw call numbers counting from 1, a sane clock and a matching length.
    assert_eq!(count(&log, "envelope=bad"), 0, "{log}");
    assert!(log.contains("heartbeat call=1 envelope=ok"), "{log}");
    // pulp_shutdown ran on SIGTERM, after the steps.
    assert!(log.contains("heartbeat shutdown calls="), "{log}");
}

#[test]
fn an_empty_config_is_an_empty_map() {
    let scratch = Scratch::new();
    let manifest = scratch.manifest_variant("heartbeat", "hb.toml", |text| {
        text.split("[config]").next().unwrap().to_owned()
    });
    let pulp = Pulp::start(&scratch.args(&[manifest]));
    pulp.wait_for(&["config empty"]);
    pulp.wait_for(&["heartbeat call=1 envelope=ok"]);
}

#[test]
fn extension_greets_and_ticker_events_are_delivered_and_finalized() {
    let scratch = Scratch::new();
    demo_exts(&scratch, 50);
    let pulp = Pulp::start(&scratch.args(&[cell("greeter")]));
    // The dylib's tracing output reaches the host log, tagged with the extension.
    let greeting = pulp.wait_for(&["hello, pulp! (cell greeter)"]);
    assert!(greeting.contains("extension=\"demo\""), "{greeting}");
    pulp.wait_for(&["greet returned 0"]);
    pulp.wait_for(&["ticker seq=5", "cell=\"greeter\""]);
    pulp.wait_for(&["ticker finalized id=5"]);
    let (status, log) = pulp.stop("INT");
    assert!(status.success(), "{log}");

    // Teardown reports how often the host polled: a few times per wake, not a spin.
    let line = log
        .lines()
        .find(|l| l.contains("demo teardown:"))
        .expect(&log)
        .to_owned();
    let field = |name: &str| -> u64 {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (polls, emitted, finalized) = (field("polls"), field("emitted"), field("finalized"));
    assert!(emitted >= 5, "{line}");
    assert!(finalized >= 5 && finalized <= emitted, "{line}");
    assert!(polls <= 2 * emitted + 2, "polled in a loop: {line}");
    // Order of shutdown: the cell, then teardown_cell, then teardown.
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{log}"))
    };
    assert!(at("cell shut down") < at("ticker stopped for cell greeter"));
    assert!(at("ticker stopped for cell greeter") < at("demo teardown:"));
}

#[test]
fn undeclared_capability_imports_get_99() {
    let scratch = Scratch::new();
    demo_exts(&scratch, 1000);
    let pulp = Pulp::start(&scratch.args(&[cell("undeclared")]));
    pulp.wait_for(&["demo_greet returned 99", "cell=\"undeclared\""]);
    // The stub never reached the extension.
    assert_eq!(count(&pulp.log(), "hello, x!"), 0);
}

#[test]
fn out_of_bounds_pointers_get_code_2_and_the_cell_lives() {
    let scratch = Scratch::new();
    demo_exts(&scratch, 1000);
    let pulp = Pulp::start(&scratch.args(&[cell("bad-pointer")]));
    pulp.wait_for(&["bad-pointer alive"]);
    let log = pulp.log();
    assert!(log.contains("log oob returned 2"), "{log}");
    assert!(log.contains("greet oob returned 2"), "{log}");
    assert!(log.contains("greet neglen returned 2"), "{log}");
    assert!(log.contains("call oob returned 2"), "{log}");
    assert!(log.contains("call neglen returned 2"), "{log}");
    assert!(log.contains("call out oob returned 2"), "{log}");
    assert!(log.contains("call gigabyte returned 9"), "{log}");
}

#[test]
fn several_cells_run_side_by_side() {
    let scratch = Scratch::new();
    demo_exts(&scratch, 50);
    let pulp = Pulp::start(&scratch.args(&[cell("heartbeat"), cell("greeter"), cell("hello")]));
    pulp.wait_for(&["heartbeat call=3 envelope=ok", "cell=\"heartbeat\""]);
    pulp.wait_for(&["ticker seq=3", "cell=\"greeter\""]);
    pulp.wait_for(&["hello greet returned 0", "cell=\"hello\""]);
    // Ticker events went to the cell that declares demo.ticker only.
    assert_eq!(
        pulp.lines()
            .iter()
            .filter(|l| l.contains("ticker seq=") && !l.contains("cell=\"greeter\""))
            .count(),
        0
    );
    // Each cell got its own storage directory.
    for name in ["heartbeat", "greeter", "hello"] {
        assert!(scratch.path().join("data").join(name).is_dir(), "{name}");
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_host_uses_no_cpu() {
    let scratch = Scratch::new();
    demo_exts(&scratch, 1000);
    let pulp = Pulp::start(&scratch.args(&[cell("hello")]));
    pulp.wait_for(&["cell started", "cell=\"hello\""]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = cpu_ticks(pulp.pid());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = cpu_ticks(pulp.pid());
    // Clock ticks are 10 ms: a host that polled or spun would burn far more.
    assert!(
        after - before <= 2,
        "idle host used {} ticks of CPU",
        after - before
    );
}
