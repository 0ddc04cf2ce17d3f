//! What an operator uses, through the real binary: the listener's bind
//! address and the admin listener's health and readiness.

use pulp_e2e::{Pulp, Scratch, cell, http_client, run};

/// The address in the line `prefix ...://ADDR` of a running host.
fn bound(pulp: &Pulp, prefix: &str) -> String {
    let line = pulp.wait_for(&[prefix]);
    line.rsplit("://").next().unwrap().trim().to_owned()
}

#[test]
fn the_listener_binds_the_address_given() {
    let scratch = Scratch::new();
    for (addr, expect) in [("127.0.0.1:0", "127.0.0.1:"), ("[::1]:0", "[::1]:")] {
        let mut args = scratch.args(&[cell("echo")]);
        args.extend(["--http-addr".into(), addr.into()]);
        let pulp = Pulp::start(&args);
        let bound = bound(&pulp, "listening on http://");
        assert!(bound.starts_with(expect), "{bound}");
        pulp.wait_for(&["ready"]);
        let body = http_client()
            .get(format!("http://{bound}/echo/here"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(body, "here");
    }

    let mut args = scratch.args(&[cell("echo")]);
    args.extend(["--http-addr".into(), "localhost:80".into()]);
    let (status, log) = run(&args);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--http-addr"), "{log}");
}

#[test]
fn readyz_names_the_cells_that_are_not_ready() {
    let scratch = Scratch::new();
    let mut args = scratch.args(&[cell("heartbeat"), cell("trap-init")]);
    args.extend(["--admin-addr".into(), "127.0.0.1:0".into()]);
    let pulp = Pulp::start(&args);
    let admin = bound(&pulp, "admin listening on http://");
    pulp.wait_for(&["cell stopped", "cell=\"trap-init\""]);
    let http = http_client();

    let health = http.get(format!("http://{admin}/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("http://{admin}/readyz")).send().unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().unwrap();
    assert!(body.contains(r#""ready":false"#), "{body}");
    assert!(body.contains(r#""not_ready":["trap-init"]"#), "{body}");
    assert!(
        body.contains(r#"{"name":"heartbeat","phase":"running"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"{"name":"trap-init","phase":"stopped"}"#),
        "{body}"
    );
    drop(pulp);

    let mut args = scratch.args(&[cell("heartbeat")]);
    args.extend(["--admin-addr".into(), "127.0.0.1:0".into()]);
    let pulp = Pulp::start(&args);
    let admin = bound(&pulp, "admin listening on http://");
    let ready = http.get(format!("http://{admin}/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().unwrap().contains(r#""ready":true"#));
}

#[test]
fn audit_flags_capabilities_declared_but_never_imported() {
    let scratch = Scratch::new();
    let greedy = scratch.manifest_variant("heartbeat", "greedy.toml", |t| {
        t.replace(
            "capabilities = []",
            "capabilities = [\"storage.fs\"]\nallowed_outbound_hosts = [\"api.example.com\"]",
        )
    });
    let mut audit = vec!["audit".to_owned()];
    audit.extend(scratch.args(&[cell("fetcher"), greedy.clone()]));
    let (status, out) = run(&audit);
    assert!(status.success(), "{out}");
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{out}"))
            .to_owned()
    };
    assert!(line("transport.http.outbound").contains("uses http_fetch"));
    assert!(line("storage.fs").contains("OVER-GRANTED"));
    assert!(
        out.lines()
            .any(|l| l.contains("outbound hosts") && l.contains("api.example.com")),
        "{out}"
    );
    assert!(line("audit: declared but never imported").contains("heartbeat: storage.fs"));

    audit.insert(1, "--strict".to_owned());
    let (status, out) = run(&audit);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("audit --strict: declared but never imported: heartbeat: storage.fs"));

    let mut clean = vec!["audit".to_owned(), "--strict".to_owned()];
    clean.extend(scratch.args(&[cell("fetcher")]));
    let (status, out) = run(&clean);
    assert!(status.success(), "{out}");
    assert!(
        out.contains("audit: no capability declared but unused"),
        "{out}"
    );
}

#[test]
fn sighup_is_logged_and_leaves_the_host_running() {
    let scratch = Scratch::new();
    let pulp = Pulp::start(&scratch.args(&[cell("heartbeat")]));
    pulp.wait_for(&["ready"]);
    pulp.signal("HUP");
    pulp.wait_for(&["SIGHUP: live reload is not available yet"]);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}
