//! The end-to-end harness: builds the real `pulp` binary, the extension libraries
//! and the test cells once, then runs `pulp` as a child process and reads its log.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod postgres;
pub mod s3;

/// Generous: a shared CI machine may be slow, and tests never assert on time.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Artifacts {
    pub root: PathBuf,
    pub pulp: PathBuf,
    pub lib_dir: PathBuf,
}

fn cargo(root: &Path, args: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo {args:?} failed");
}

/// Builds what the tests run, once per test binary; cargo makes it a no-op when
/// nothing changed and serialises concurrent builds.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace")
            .to_path_buf();
        cargo(&root, &["build", "--workspace"]);
        // Into testdata/target whatever CARGO_TARGET_DIR says: the cells'
        // manifests name their modules there.
        cargo(
            &root,
            &[
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--manifest-path",
                "testdata/Cargo.toml",
                "--target-dir",
                "testdata/target",
            ],
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        // The interface-compatibility fixtures (their own workspace), into the
        // same directory so they share the compiled dependencies.
        cargo(
            &root,
            &[
                "build",
                "--manifest-path",
                "tests/compat/Cargo.toml",
                "--target-dir",
                target.to_str().expect("a UTF-8 target directory"),
            ],
        );
        let lib_dir = target.join("debug");
        Artifacts {
            pulp: lib_dir.join("pulp"),
            lib_dir,
            root,
        }
    })
}

/// The manifest of a test cell in `testdata/`.
pub fn cell(name: &str) -> PathBuf {
    artifacts()
        .root
        .join("testdata")
        .join(name)
        .join("pulp.cell.toml")
}

/// The path of a cdylib built from this workspace, by crate name.
pub fn library(crate_name: &str) -> PathBuf {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    artifacts().lib_dir.join(file)
}

/// A scratch directory for one test: extensions, manifests, storage.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Copies a workspace library into `exts/` under `file_name`.
    pub fn install(&self, crate_name: &str, file_name: &str) -> PathBuf {
        let dest = self.path().join("exts").join(file_name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(library(crate_name), &dest).unwrap();
        dest
    }

    pub fn ext_dir(&self) -> PathBuf {
        self.path().join("exts")
    }

    /// The command line that runs `manifests` with storage in this directory, and
    /// with its `exts/` when one exists.
    pub fn args(&self, manifests: &[PathBuf]) -> Vec<String> {
        let mut args = vec![
            "--storage-root".to_owned(),
            self.path().join("data").display().to_string(),
        ];
        if self.ext_dir().is_dir() {
            args.extend(["--ext-dir".to_owned(), self.ext_dir().display().to_string()]);
        }
        for manifest in manifests {
            args.extend(["-manifest".to_owned(), manifest.display().to_string()]);
        }
        args
    }

    /// A copy of a testdata manifest with `extra` appended before its `[config]`
    /// (or at the end) and `wasm` made absolute, so it can live in the scratch dir.
    pub fn manifest_variant(
        &self,
        cell_name: &str,
        file: &str,
        edit: impl FnOnce(String) -> String,
    ) -> PathBuf {
        let original = cell(cell_name);
        let text = std::fs::read_to_string(&original).unwrap();
        let dir = original.parent().unwrap();
        let text: String = text
            .lines()
            .map(|line| match line.strip_prefix("wasm = \"") {
                Some(rest) => format!(
                    "wasm = {:?}",
                    dir.join(rest.trim_end_matches('"')).display().to_string()
                ),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.write(file, edit(text))
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// A running `pulp` with its stderr collected line by line.
pub struct Pulp {
    child: Child,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

pub fn pulp_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut command = Command::new(&artifacts().pulp);
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    command
}

impl Pulp {
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Pulp {
        Pulp::spawn(pulp_command(args))
    }

    /// As [`Pulp::start`], running another build of `pulp` (a release one).
    pub fn start_binary<S: AsRef<std::ffi::OsStr>>(binary: &Path, args: &[S]) -> Pulp {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Pulp::spawn(command)
    }

    fn spawn(mut command: Command) -> Pulp {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pulp");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (lines, signal) = &*log;
                    lines.lock().unwrap().push(line);
                    signal.notify_all();
                }
            });
        }
        Pulp { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until `count` log lines contain every one of `needles`; panics with the
    /// log if they do not appear.
    pub fn wait_for_n(&self, needles: &[&str], count: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let (lines, signal) = &*self.log;
        let mut guard = lines.lock().unwrap();
        loop {
            let found: Vec<String> = guard
                .iter()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(guard);
                panic!("no {count} log lines with {needles:?} in:\n{}", self.log());
            }
            guard = signal.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, needles: &[&str]) -> String {
        self.wait_for_n(needles, 1).remove(0)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop(mut self, signal: &str) -> (ExitStatus, String) {
        self.signal(signal);
        let status = wait_exit(&mut self.child);
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        (status, self.log())
    }

    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child);
        std::thread::sleep(Duration::from_millis(100));
        (status, self.log())
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pulp did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Pulp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `pulp` to completion (for commands and start-up failures).
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (ExitStatus, String) {
    Pulp::start(args).wait_exit()
}

/// A blocking HTTP client for the tests, with rustls on ring like the host.
pub fn http_client() -> reqwest::blocking::Client {
    http_client_builder().build().unwrap()
}

/// The builder of [`http_client`], for a test that needs another setting.
pub fn http_client_builder() -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60))
}

/// A server on a free loopback port answering up to 20 requests with
/// `status` (e.g. `"201 Created"`) and `body`; its port.
pub fn upstream(status: &'static str, body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

/// Starts pulp serving HTTP on a free port; returns it ready, with the port.
pub fn start_http(scratch: &Scratch, manifests: &[PathBuf], extra: &[&str]) -> (Pulp, u16) {
    let mut args = scratch.args(manifests);
    args.extend(["--http-port".to_owned(), "0".to_owned()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let pulp = Pulp::start(&args);
    let line = pulp.wait_for(&["listening on"]);
    let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    pulp.wait_for(&["ready"]);
    (pulp, port)
}

/// The address a listener bound, from its log line starting with `prefix`
/// (such as `"admin listening on http://"`).
pub fn bound(pulp: &Pulp, prefix: &str) -> String {
    let line = pulp.wait_for(&[prefix]);
    line.rsplit("://").next().unwrap().trim().to_owned()
}

/// Lines of `log` containing `needle`.
pub fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}
