//! Live reload through the real binary: a cell's module and an extension
//! library swapped under continuous requests with none failing, by
//! `pulp reload` and by SIGHUP; and reloads that are refused change nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pulp_e2e::{
    Pulp, Scratch, WAIT, bound, cell, count, http_client, library, pulp_command, start_http,
};

/// The echo cell's module, patched to another build: same code, another
/// answer from `/build`.
fn echo_build(n: u8) -> Vec<u8> {
    let manifest = cell("echo");
    let wasm = manifest
        .parent()
        .unwrap()
        .join("../target/wasm32-wasip1/release/cell_echo.wasm");
    let mut bytes = std::fs::read(wasm).unwrap();
    let marker = b"echo build 1";
    let at: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| w == marker)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the build string appears once in the module");
    *bytes.get_mut(at[0] + marker.len() - 1).unwrap() = b'0' + n;
    bytes
}

/// Replaces `path` by rename, as an operator should: a library in use stays
/// mapped from the old file.
fn replace(path: &Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).unwrap();
    std::fs::rename(&next, path).unwrap();
}

struct Setup {
    scratch: Scratch,
    pulp: Pulp,
    port: u16,
    admin: String,
    echo_manifest: PathBuf,
    echo_wasm: PathBuf,
    greet_lib: PathBuf,
}

/// The echo cell's manifest with its module at `wasm`, followed by the
/// top-level lines `extra`.
fn echo_at(scratch: &Scratch, wasm: &Path, extra: &str) -> PathBuf {
    scratch.manifest_variant("echo", "echo.toml", |t| {
        t.lines()
            .map(|l| match l.starts_with("wasm = ") {
                true => format!("wasm = {:?}\n{extra}", wasm.display().to_string()),
                false => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A host serving `manifests` on an HTTP port and an admin listener, both
/// picked by the system: the host, the port and the admin address.
fn start_with_admin(scratch: &Scratch, manifests: &[PathBuf]) -> (Pulp, u16, String) {
    let (pulp, port) = start_http(scratch, manifests, &["--admin-addr", "127.0.0.1:0"]);
    let admin = bound(&pulp, "admin listening on http://");
    (pulp, port, admin)
}

fn start() -> Setup {
    let scratch = Scratch::new();
    let echo_wasm = scratch.write("echo.wasm", echo_build(1));
    let echo_manifest = echo_at(&scratch, &echo_wasm, "");
    let greet_lib = scratch.install("pulp-ext-demo", "libgreet.so");
    scratch.write(
        "exts/extensions.toml",
        "[[extension]]\nname = \"greet\"\nlibrary = \"greet\"\n",
    );
    let (pulp, port, admin) = start_with_admin(&scratch, &[echo_manifest.clone(), cell("hello")]);
    pulp.wait_for(&["hello, pulp! (cell hello)"]);
    Setup {
        scratch,
        pulp,
        port,
        admin,
        echo_manifest,
        echo_wasm,
        greet_lib,
    }
}

fn get(port: u16, path: &str) -> (u16, String) {
    let reply = http_client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .unwrap();
    (reply.status().as_u16(), reply.text().unwrap())
}

/// `pulp reload`: its exit status, stdout and stderr.
fn ask_reload(admin: &str) -> (bool, String, String) {
    let out = pulp_command(&["reload", "--admin-addr", admin])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Clients sending GET /echo/<n> until stopped, counting answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..4)
            .map(|t| {
                let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
                std::thread::spawn(move || {
                    let client = http_client();
                    let mut failures = Vec::new();
                    let end = Instant::now() + WAIT;
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < end && n < 50_000 {
                        n += 1;
                        let msg = format!("{t}-{n}");
                        let url = format!("http://127.0.0.1:{port}/echo/{msg}");
                        match client.get(url).send() {
                            Ok(r) if r.status() == 200 => match r.text() {
                                Ok(body) if body == msg => {
                                    ok.fetch_add(1, Ordering::SeqCst);
                                }
                                other => failures.push(format!("{msg}: body {other:?}")),
                            },
                            Ok(r) => failures.push(format!("{msg}: status {}", r.status())),
                            Err(e) => failures.push(format!("{msg}: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    /// Waits until `more` requests beyond now have been answered.
    fn answered(&self, more: usize) {
        let target = self.ok.load(Ordering::SeqCst) + more;
        let end = Instant::now() + WAIT;
        while self.ok.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < end, "the load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

#[test]
fn a_module_and_a_library_swapped_under_load_lose_no_request() {
    let s = start();
    assert_eq!(get(s.port, "/build"), (200, "echo build 1".into()));
    let load = Load::start(s.port);
    load.answered(200);

    replace(&s.echo_wasm, &echo_build(2));
    replace(
        &s.greet_lib,
        &std::fs::read(library("pulp-fixture-ext-greet-v2")).unwrap(),
    );
    let (ok, out, err) = ask_reload(&s.admin);
    assert!(ok, "{out}{err}\n{}", s.pulp.log());
    assert!(out.contains("cells switched: echo, hello"), "{out}");
    assert!(out.contains("extensions loaded: greet"), "{out}");
    load.answered(200);

    // The new module answers, the new library greets, the old instances
    // had their pulp_shutdown.
    assert_eq!(get(s.port, "/build"), (200, "echo build 2".into()));
    s.pulp.wait_for(&["howdy, pulp! (cell hello)"]);
    assert_eq!(
        count(&s.pulp.log(), "cell switched to its reloaded instance"),
        2
    );

    // SIGHUP does the same: back to the first build.
    replace(&s.echo_wasm, &echo_build(1));
    s.pulp.signal("HUP");
    s.pulp
        .wait_for(&["reload done: cells switched: echo; extensions loaded: none"]);
    load.answered(200);
    assert_eq!(get(s.port, "/build"), (200, "echo build 1".into()));

    let (answered, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {answered} failed: {failures:?}",
        failures.len()
    );
    let (status, log) = s.pulp.stop("TERM");
    assert!(status.success(), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// Breaks a file for one refused reload, or mends it after.
type Edit<'a> = Box<dyn Fn() + 'a>;

#[test]
fn a_refused_reload_changes_nothing_and_says_why() {
    let s = start();
    let manifest_text = std::fs::read_to_string(&s.echo_manifest).unwrap();
    let trap_init_wasm = cell("trap-init")
        .parent()
        .unwrap()
        .join("../target/wasm32-wasip1/release/cell_trap_init.wasm");
    let greet_bytes = std::fs::read(&s.greet_lib).unwrap();
    let cases: Vec<(&str, Edit, Edit)> = vec![
        (
            "echo.toml",
            Box::new(|| {
                std::fs::write(&s.echo_manifest, "name = ").unwrap();
            }),
            Box::new(|| std::fs::write(&s.echo_manifest, &manifest_text).unwrap()),
        ),
        (
            "changes capabilities, which a reload cannot change",
            Box::new(|| {
                let changed = manifest_text.replace(
                    "capabilities = [\"transport.http.inbound\"]",
                    "capabilities = [\"transport.http.inbound\", \"storage.fs\"]",
                );
                assert_ne!(changed, manifest_text);
                std::fs::write(&s.echo_manifest, changed).unwrap();
            }),
            Box::new(|| std::fs::write(&s.echo_manifest, &manifest_text).unwrap()),
        ),
        (
            "cell echo: the new instance failed to start",
            Box::new(|| replace(&s.echo_wasm, &std::fs::read(&trap_init_wasm).unwrap())),
            Box::new(|| replace(&s.echo_wasm, &echo_build(1))),
        ),
        (
            "extension \"greet\"",
            Box::new(|| replace(&s.greet_lib, b"not a library")),
            Box::new(|| replace(&s.greet_lib, &greet_bytes)),
        ),
    ];
    for (i, (why, break_it, mend)) in cases.iter().enumerate() {
        break_it();
        let (ok, out, err) = ask_reload(&s.admin);
        assert!(!ok, "{why}: {out}");
        assert!(
            err.contains("reload refused, nothing changed") && err.contains(why),
            "{why}: {err}"
        );
        s.pulp
            .wait_for_n(&["reload refused, nothing changed"], i + 1);
        assert_eq!(get(s.port, "/build"), (200, "echo build 1".into()), "{why}");
        assert_eq!(get(s.port, "/echo/still"), (200, "still".into()), "{why}");
        mend();
    }
    let log = s.pulp.log();
    assert_eq!(count(&log, "cell switched"), 0, "{log}");
    assert_eq!(
        count(&log, "ERROR"),
        cases.len(),
        "one ERROR line each:\n{log}"
    );
    // Mended, the same files reload as nothing changed.
    let (ok, out, _) = ask_reload(&s.admin);
    assert!(ok && out.contains("cells switched: none"), "{out}");
    drop(s.scratch);
}

#[test]
fn a_cell_started_after_its_dependency_is_reloaded_even_when_that_one_stopped() {
    let scratch = Scratch::new();
    let echo_wasm = scratch.write("echo.wasm", echo_build(1));
    // Started second (after trap-init), listed first: its readiness and its
    // place among the running cells differ.
    let echo = echo_at(&scratch, &echo_wasm, "depends_on = [\"trap-init\"]");
    let (pulp, port, admin) = start_with_admin(&scratch, &[echo, cell("trap-init")]);
    pulp.wait_for(&["cell stopped (restart = never)", "cell=\"trap-init\""]);
    replace(&echo_wasm, &echo_build(2));
    let (ok, out, err) = ask_reload(&admin);
    assert!(
        ok && out.contains("cells switched: echo"),
        "{out}{err}\n{}",
        pulp.log()
    );
    assert_eq!(get(port, "/build"), (200, "echo build 2".into()));
}

#[test]
fn pulp_reload_gives_up_on_a_listener_that_never_answers_and_names_a_dead_one() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    // Accepted by the kernel, read by no one.
    let out = pulp_command(&["reload", "--admin-addr", &addr, "--timeout-secs", "1"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("no answer from {addr} within 1 s")),
        "{err}"
    );
    drop(silent);

    let out = pulp_command(&["reload", "--admin-addr", &addr])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the admin listener"), "{err}");
}
