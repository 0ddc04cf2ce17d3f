//! What an operator uses, through the real binary: the listener's bind
//! address and the admin listener's health and readiness.

use pulp_e2e::{Pulp, Scratch, bound, cell, count, http_client, run};

/// The address in the line `prefix ...://ADDR` of a running host.
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
fn sighup_with_nothing_changed_reloads_nothing_and_the_host_runs_on() {
    let scratch = Scratch::new();
    let pulp = Pulp::start(&scratch.args(&[cell("heartbeat")]));
    pulp.wait_for(&["ready"]);
    pulp.signal("HUP");
    pulp.wait_for(&["reload done: cells switched: none; extensions loaded: none"]);
    let steps = count(&pulp.log(), "envelope=ok");
    pulp.wait_for_n(&["envelope=ok"], steps + 3);
    let (status, log) = pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn metrics_count_steps_requests_imports_and_failures() {
    let scratch = Scratch::new();
    scratch.install("pulp-ext-demo", "libpulp_ext_demo.so");
    scratch.write(
        "exts/extensions.toml",
        "[[extension]]\nname = \"demo\"\nlibrary = \"pulp_ext_demo\"\n",
    );
    let cells = [cell("echo"), cell("silent"), cell("wsecho"), cell("hello")];
    let mut args = scratch.args(&cells);
    args.extend([
        "--admin-addr".into(),
        "127.0.0.1:0".into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
    ]);
    let pulp = Pulp::start(&args);
    let listener = bound(&pulp, "listening on http://");
    let admin = bound(&pulp, "admin listening on http://");
    let http = http_client();
    for _ in 0..3 {
        let r = http
            .get(format!("http://{listener}/echo/x"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        http.get(format!("http://{listener}/status/404"))
            .send()
            .unwrap()
            .status(),
        404
    );
    // One WebSocket connection held open while the metrics are read.
    let stream = std::net::TcpStream::connect(&listener).unwrap();
    let (_socket, _) = tungstenite::client(format!("ws://{listener}/ws"), stream).unwrap();
    pulp.wait_for(&["ws open"]);
    // The silent cell traps on /crash: a failure and a restart.
    let _ = http.get(format!("http://{listener}/crash")).send();
    pulp.wait_for(&["restarting in", "cell=\"silent\""]);
    pulp.wait_for_n(&["cell started", "cell=\"silent\""], 2);

    let r = http.get(format!("http://{admin}/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(
        value(r#"pulp_http_requests_total{cell="echo",class="2xx"}"#),
        3.0
    );
    assert_eq!(
        value(r#"pulp_http_requests_total{cell="echo",class="4xx"}"#),
        1.0
    );
    assert!(value(r#"pulp_cell_steps_total{cell="echo"}"#) >= 4.0);
    assert!(value(r#"pulp_cell_step_duration_seconds_count{cell="echo"}"#) >= 4.0);
    assert!(
        value(
            r#"pulp_import_calls_total{capability="transport.http.inbound",import="http_respond"}"#
        ) >= 4.0
    );
    assert_eq!(
        value(r#"pulp_cell_failures_total{cell="silent",kind="trap"}"#),
        1.0
    );
    assert_eq!(value(r#"pulp_cell_restarts_total{cell="silent"}"#), 1.0);
    assert_eq!(
        value(r#"pulp_open_streams{cell="wsecho",kind="websocket"}"#),
        1.0
    );
    assert!(value(r#"pulp_cell_memory_pages{cell="echo"}"#) >= 1.0);
    // Every event taken: nothing counted twice or lost in the queue's gauges.
    assert_eq!(value(r#"pulp_cell_queue_events{cell="echo"}"#), 0.0);
    assert_eq!(value(r#"pulp_cell_queue_bytes{cell="echo"}"#), 0.0);
    assert_eq!(
        value(r#"pulp_extension_info{extension="demo",interface="1.1"}"#),
        1.0
    );
    assert!(value(r#"pulp_extension_load_seconds{extension="demo"}"#) > 0.0);
    assert!(text.ends_with("# EOF\n"), "{text}");
}
