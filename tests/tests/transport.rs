//! The transports through the real binary and real clients on real sockets:
//! HTTP in and out, WebSocket, SSE, HTTPS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use pulp_e2e::{
    Scratch, cell, count, http_client, http_client_builder, run, start_http as start, upstream,
};

#[test]
fn http_routes_params_query_headers_cookies_and_bodies() {
    let scratch = Scratch::new();
    let (_pulp, port) = start(&scratch, &[cell("echo"), cell("echo2")], &[]);
    let http = http_client();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let r = http.get(url("/echo/hello%20world")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().unwrap(), "hello world");

    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let r = http
        .post(url("/echo"))
        .header("content-type", "application/octet-stream")
        .body(binary.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().unwrap().to_vec(), binary);

    let r = http
        .get(url("/inspect?b=2&a=0&a=1"))
        .header("x-test", "yes")
        .send()
        .unwrap();
    let text = r.text().unwrap();
    assert!(
        text.starts_with("method=GET path=/inspect query=a=1&b=2 x-test=yes remote=127.0.0.1:"),
        "{text}"
    );

    let r = http.get(url("/cookies")).send().unwrap();
    assert_eq!(r.headers()["x-cell"], "echo");
    let cookies: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; HttpOnly"]);

    assert_eq!(http.get(url("/status/418")).send().unwrap().status(), 418);
    // A response in a later step than the request.
    assert_eq!(
        http.get(url("/later")).send().unwrap().text().unwrap(),
        "later"
    );
    // Several cells on one listener, each gets its own routes.
    assert_eq!(
        http.get(url("/two/x")).send().unwrap().text().unwrap(),
        "two:x"
    );
    assert_eq!(http.get(url("/nowhere")).send().unwrap().status(), 404);
    assert_eq!(http.post(url("/two/x")).send().unwrap().status(), 405);
}

#[test]
fn routing_answers_head_names_allowed_methods_and_cleans_paths() {
    let scratch = Scratch::new();
    let (_pulp, port) = start(&scratch, &[cell("echo"), cell("echo2")], &[]);
    let http = http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // HEAD is the GET route's response without its body.
    let r = http.head(url("/echo/hello")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "5");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.bytes().unwrap().len(), 0);

    // A path known under other methods: 405 naming them (RFC 9110).
    let r = http.post(url("/two/x")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    // Empty, `.` and `..` segments redirect to the clean path, query kept;
    // a trailing slash makes another path.
    let r = http.get(url("//echo//hi?x=1")).send().unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/echo/hi?x=1");
    // Sent raw: HTTP clients remove dot segments themselves.
    let mut raw = TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.write_all(b"GET /inspect/./../echo/hi HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(answer.contains("location: /echo/hi\r\n"), "{answer}");
    assert_eq!(http.get(url("/inspect/")).send().unwrap().status(), 404);
    assert_eq!(http.get(url("/echo/hi/")).send().unwrap().status(), 404);
}

#[test]
fn oversized_bodies_get_413() {
    let scratch = Scratch::new();
    let small = scratch.manifest_variant("echo", "echo.toml", |t| {
        format!("{t}\nmax_message_bytes = 1024\n")
    });
    let (_pulp, port) = start(&scratch, &[small], &[]);
    let http = http_client();
    let url = format!("http://127.0.0.1:{port}/echo");
    assert_eq!(
        http.post(&url)
            .body(vec![7u8; 500])
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(&url)
            .body(vec![7u8; 4000])
            .send()
            .unwrap()
            .status(),
        413
    );
}

#[test]
fn no_reply_is_504_a_crash_is_502_and_a_full_queue_is_503() {
    let scratch = Scratch::new();
    let (pulp, port) = start(&scratch, &[cell("silent")], &[]);
    let http = http_client();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(http.get(url("/never")).send().unwrap().status(), 504);

    assert_eq!(http.get(url("/crash")).send().unwrap().status(), 502);
    pulp.wait_for_n(&["silent ready"], 2);

    drop(pulp);

    // Far more requests than the cell may have waiting: the rest are refused at once.
    // A long call_timeout_ms keeps the first ones waiting while the rest arrive.
    let patient = scratch.manifest_variant("silent", "patient.toml", |t| {
        t.replace("call_timeout_ms = 500", "call_timeout_ms = 20000")
    });
    let scratch = Scratch::new();
    let (_pulp, port) = start(&scratch, &[patient], &[]);
    let mut streams = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /never HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        streams.push(s);
    }
    let mut statuses = Vec::new();
    for mut s in streams {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        statuses.push(String::from_utf8_lossy(&head[9..12]).into_owned());
    }
    assert!(statuses.iter().any(|s| s == "503"), "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "504"), "{statuses:?}");
}

#[test]
fn a_cell_cannot_answer_another_cells_request() {
    let scratch = Scratch::new();
    // Long enough for the other cell's attempt while the request is still owed.
    let patient = scratch.manifest_variant("silent", "patient.toml", |t| {
        t.replace("call_timeout_ms = 500", "call_timeout_ms = 5000")
    });
    let (pulp, port) = start(&scratch, &[patient, cell("echo2")], &[]);
    let url = move |path: &str| format!("http://127.0.0.1:{port}{path}");
    let never = std::thread::spawn(move || http_client().get(url("/never")).send().unwrap());
    let line = pulp.wait_for(&["silent got"]);
    let id = line
        .split("silent got ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();

    let r = http_client()
        .get(url(&format!("/steal/{id}")))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "steal code=4");
    // The request still belongs to the silent cell, which never answers.
    assert_eq!(never.join().unwrap().status(), 504);
}

#[test]
fn two_cells_on_one_route_fail_start_up() {
    let scratch = Scratch::new();
    let twin = scratch.manifest_variant("echo", "twin.toml", |t| {
        t.replace("name = \"echo\"", "name = \"twin\"")
    });
    let mut args = scratch.args(&[cell("echo"), twin]);
    args.extend(["--http-port".to_owned(), "0".to_owned()]);
    let (status, log) = run(&args);
    assert_eq!(status.code(), Some(1), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("is registered by both cell"))
        .expect(&log);
    assert!(
        line.contains("cell echo") && line.contains("cell twin"),
        "{line}"
    );
}

#[test]
fn outbound_fetch_follows_the_egress_policy() {
    let upstream_port = upstream("201 Created", "from upstream");
    let scratch = Scratch::new();
    let allowed = scratch.manifest_variant("fetcher", "allowed.toml", |t| {
        t.replace(
            "allowed_outbound_hosts = []",
            &format!("allowed_outbound_hosts = [\"http://127.0.0.1:{upstream_port}\"]"),
        )
    });
    let (pulp, port) = start(&scratch, &[allowed], &[]);
    let http = http_client();
    let target = format!("http://127.0.0.1:{upstream_port}/x");
    let r = http
        .get(format!("http://127.0.0.1:{port}/proxy"))
        .query(&[("url", &target)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-fetched-status"], "201");
    assert_eq!(r.text().unwrap(), "from upstream");

    // A host the allowlist does not name.
    let other = format!("http://localhost:{upstream_port}/x");
    let r = http
        .get(format!("http://127.0.0.1:{port}/proxy"))
        .query(&[("url", &other)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.text().unwrap(), "fetch failed code=4");
    pulp.wait_for(&[
        "fetch refused: host not in allowed_outbound_hosts",
        "cell=\"fetcher\"",
    ]);
    drop(pulp);

    // No allowlist: loopback, private and metadata addresses are refused, by name too.
    let scratch = Scratch::new();
    let (pulp, port) = start(&scratch, &[cell("fetcher")], &[]);
    for target in [
        format!("http://127.0.0.1:{upstream_port}/x"),
        format!("http://localhost:{upstream_port}/x"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://[::1]/".to_owned(),
        // IPv6 forms that carry an internal IPv4 address.
        format!("http://[::ffff:0:7f00:1]:{upstream_port}/x"),
        format!("http://[64:ff9b::7f00:1]:{upstream_port}/x"),
        format!("http://[2002:7f00:1::1]:{upstream_port}/x"),
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/".to_owned(),
    ] {
        let r = http
            .get(format!("http://127.0.0.1:{port}/proxy"))
            .query(&[("url", &target)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 502, "{target}");
        assert_eq!(r.text().unwrap(), "fetch failed code=4", "{target}");
    }
    pulp.wait_for(&["fetch refused: internal address", "cell=\"fetcher\""]);
}

fn ws_connect(port: u16) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (socket, _) =
        tungstenite::client(format!("ws://127.0.0.1:{port}/ws?room=a"), stream).unwrap();
    socket
}

#[test]
fn websocket_text_binary_broadcast_and_close_both_ways() {
    use tungstenite::Message;
    let scratch = Scratch::new();
    let (pulp, port) = start(&scratch, &[cell("wsecho")], &[]);
    let mut a = ws_connect(port);
    let mut b = ws_connect(port);
    pulp.wait_for_n(&["ws open", "path=/ws"], 2);

    a.send(Message::text("hi")).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("hi"));
    a.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(a.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));

    a.send(Message::text("all:news")).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("news"));
    assert_eq!(b.read().unwrap(), Message::text("news"));

    // The cell closes b with its own code and reason.
    b.send(Message::text("close-me")).unwrap();
    match b.read().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // The client closes a; the cell sees the code.
    a.close(None).unwrap();
    let _ = a.read();
    pulp.wait_for(&["ws close", "code=1005"]);
}

#[test]
fn sse_streams_ids_events_multiline_data_and_keep_alives() {
    let scratch = Scratch::new();
    let debug_sse = ["--log-level", "info,pulp_host::transport::sse=debug"];
    let (pulp, port) = start(&scratch, &[cell("ssecell")], &debug_sse);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /events HTTP/1.0\r\naccept: text/event-stream\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    // HTTP/1.0, so the stream is not chunked and reads as plain lines.
    assert!(line.starts_with("HTTP/1.0 200"), "{line}");

    // The subscription is live once its headers are out; emit through the cell.
    std::thread::sleep(Duration::from_millis(200));
    let r = http_client()
        .post(format!("http://127.0.0.1:{port}/emit?id=7&event=greet"))
        .body("line one\nline two")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);

    let mut seen = String::new();
    while !seen.contains("data: line two") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended: {seen}"
        );
        seen.push_str(&line);
    }
    assert!(seen.contains("id: 7"), "{seen}");
    assert!(seen.contains("event: greet"), "{seen}");
    assert!(
        seen.contains("data: line one\r\n") || seen.contains("data: line one\n"),
        "{seen}"
    );

    // Nothing more is emitted; within 15 s a keep-alive comment arrives.
    let mut waited = String::new();
    while !waited.contains(": keep-alive") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended: {waited}"
        );
        waited.push_str(&line);
    }

    // The host lets go of a subscriber whose client disconnected.
    pulp.wait_for(&["sse subscriber joined", "/events"]);
    assert_eq!(count(&pulp.log(), "sse subscriber left"), 0);
    drop(reader);
    pulp.wait_for(&["sse subscriber left", "/events"]);
}

#[test]
fn https_with_a_generated_certificate() {
    let scratch = Scratch::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = scratch.write("cert.pem", cert.cert.pem());
    let key_path = scratch.write("key.pem", cert.signing_key.serialize_pem());
    let (pulp, port) = start(
        &scratch,
        &[cell("echo")],
        &[
            "--http-cert",
            cert_path.to_str().unwrap(),
            "--http-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(
        count(&pulp.log(), "listening on https://") == 1,
        "{}",
        pulp.log()
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let r = http
        .get(format!("https://localhost:{port}/echo/secure"))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "secure");
    // Plain HTTP on the TLS port does not get through.
    assert!(
        http_client()
            .get(format!("http://127.0.0.1:{port}/echo/x"))
            .send()
            .is_err()
    );
}

#[test]
fn a_websocket_client_that_does_not_read_is_closed_not_buffered() {
    use tungstenite::Message;
    let scratch = Scratch::new();
    let (pulp, port) = start(&scratch, &[cell("wsecho")], &[]);
    let _slow = ws_connect(port);
    let mut fast = ws_connect(port);
    pulp.wait_for_n(&["ws open"], 2);

    // Broadcast until the host gives up on the client that never reads; the fast
    // client reads its own copy each time, so only the slow one falls behind.
    let chunk = "x".repeat(64 * 1024);
    let mut sent = 0;
    while !pulp.log().contains("WebSocket client too slow; closed") {
        assert!(sent < 5000, "the slow client was never closed");
        fast.send(Message::text(format!("all:{chunk}"))).unwrap();
        assert_eq!(fast.read().unwrap().len(), chunk.len());
        sent += 1;
    }
    // The host and the other connection carry on.
    fast.send(Message::text("still here")).unwrap();
    assert_eq!(fast.read().unwrap(), Message::text("still here"));
}
