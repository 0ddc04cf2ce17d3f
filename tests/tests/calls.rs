//! Cell-to-cell calls through the real binary: a caller and a callee cell
//! (testdata/caller, testdata/callee), the caller driven over HTTP.

use pulp_e2e::{Scratch, cell, http_client, run, start_http as start};

fn call(port: u16, function: &str, query: &str) -> String {
    http_client()
        .get(format!("http://127.0.0.1:{port}/call/{function}?{query}"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn a_cell_calls_what_another_provides_and_survives_its_failures() {
    let scratch = Scratch::new();
    let (pulp, port) = start(&scratch, &[cell("caller"), cell("callee")], &[]);

    assert_eq!(call(port, "greet", "arg=bob"), "ok:hello, bob");
    // An empty result is pointer 0, length 0.
    assert_eq!(call(port, "empty", ""), "ok:");

    // Provided, but not consumed by the caller: refused, and logged naming both.
    assert_eq!(call(port, "hidden", ""), "code=11");
    pulp.wait_for(&["pulp_call refused", "cell=\"caller\"", "target=\"callee\""]);
    // A cell that does not exist is refused alike.
    assert_eq!(call(port, "greet", "target=nobody"), "code=11");
    // A cell calling itself, and a callee calling back its waiting caller:
    // cycles, refused at once instead of deadlocking.
    assert_eq!(call(port, "ping", "target=caller"), "code=12");
    assert_eq!(call(port, "back", ""), "ok:code=12");

    // A trap in the callee is the callee's crash: the caller gets code 5,
    // the callee restarts and serves again.
    assert_eq!(call(port, "boom", ""), "code=5");
    pulp.wait_for(&["cell crashed", "cell=\"callee\""]);
    pulp.wait_for_n(&["cell started", "cell=\"callee\""], 2);
    assert_eq!(call(port, "greet", "arg=again"), "ok:hello, again");

    // A callee that never returns is interrupted at its call_timeout_ms.
    assert_eq!(call(port, "spin", ""), "code=5");
    pulp.wait_for(&["call_timeout_ms = 500", "cell=\"callee\""]);
    pulp.wait_for_n(&["cell started", "cell=\"callee\""], 3);
    assert_eq!(call(port, "greet", "arg=later"), "ok:hello, later");
}

#[test]
fn consumes_must_name_exactly_one_provider() {
    let scratch = Scratch::new();
    let (status, log) = run(&scratch.args(&[cell("caller")]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cell caller consumes \"greet\", which no cell provides"),
        "{log}"
    );

    let twin = scratch.manifest_variant("callee", "twin.toml", |t| {
        t.replace("name = \"callee\"", "name = \"twin\"")
    });
    let (status, log) = run(&scratch.args(&[cell("caller"), cell("callee"), twin]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cell caller consumes \"greet\", which cells callee, twin all provide"),
        "{log}"
    );

    // A cell that provides must export pulp_on_call (the Go-style cell does not).
    let no_server = scratch.manifest_variant("gostyle", "provider.toml", |t| {
        format!("provides = [\"x\"]\n{t}")
    });
    let (status, log) = run(&scratch.args(&[no_server]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("provides [\"x\"] but the module does not export pulp_on_call"),
        "{log}"
    );
}
