//! A real PostgreSQL server for the tests of pulp-ext-postgres: `initdb` and
//! `pg_ctl` on a temp dir, listening on a free loopback port only, with
//! password (SCRAM) authentication over TCP; and `psql` as the tests' own
//! client, a code path apart from the extension's.
//!
//! The programs come from `PULP_TEST_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package), else `PATH`.
//! When they are missing, [`PgServer::start`] prints a loud `SKIPPED` line and
//! returns `None`, unless `PULP_TEST_REQUIRE_SERVERS=1` (as `.ci/run` sets), which
//! makes that a failure. Postgres refuses to run as root: as root, the server
//! runs as the `postgres` system user through `runuser`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The administrative user and its password.
pub const ADMIN: &str = "postgres";
pub const ADMIN_PASSWORD: &str = "pulp-test-admin";

pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// When root runs the tests: the user the server runs as.
    run_as: Option<String>,
    dir: tempfile::TempDir,
}

/// Prints why a test does not run, where `cargo test` shows it.
pub fn skip(what: &str) {
    eprintln!("\n========\nSKIPPED: {what}\n========\n");
}

/// Whether missing programs fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("PULP_TEST_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PULP_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

impl PgServer {
    /// Starts a fresh server, or `None` (after a `SKIPPED` line) when the
    /// PostgreSQL programs are not installed.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            let what = "PostgreSQL (initdb, pg_ctl) not found; install Debian's `postgresql` or set PULP_TEST_PG_BIN";
            assert!(!required(), "{what}, and PULP_TEST_REQUIRE_SERVERS=1");
            skip(what);
            return None;
        };
        let run_as = is_root().then(|| ADMIN.to_owned());
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut server = PgServer {
            bin,
            data,
            port: 0,
            run_as,
            dir,
        };
        server.init();
        // Another process may take the chosen port before the server binds it.
        for attempt in 0.. {
            server.port = free_port();
            if server.try_start() {
                break;
            }
            assert!(attempt < 3, "postgres did not start:\n{}", server.log());
        }
        Some(server)
    }

    /// Runs one of the server's programs, as the server's user.
    fn program(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    fn init(&self) {
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
        if let Some(user) = &self.run_as {
            // The server's user must reach the temp dir and own what is in it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(self.dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let output = self
            .program("initdb")
            .arg("-D")
            .arg(&self.data)
            .args(["-U", ADMIN, "-E", "UTF8", "--no-sync", "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--pwfile"])
            .arg(&pwfile)
            .output()
            .expect("run initdb");
        assert!(output.status.success(), "initdb failed: {}", text(&output));
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let output = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl");
        output.status.success()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The administrative connection string.
    pub fn url(&self) -> String {
        format!(
            "postgresql://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The `[extension.config]` lines pointing pulp-ext-postgres here.
    pub fn extension_config(&self) -> String {
        format!("url = {:?}\npool_size = 2\n", self.url())
    }

    /// Runs `sql` with `psql` as `user` (password `password`); the unaligned,
    /// tuples-only output, or the error text.
    pub fn psql_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(text(&output))
        }
    }

    /// Runs `sql` as the administrator; panics on an error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as(ADMIN, ADMIN_PASSWORD, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// Waits until `sql` (as the administrator) answers `expected`.
    pub fn wait_for(&self, sql: &str, expected: &str) {
        let deadline = Instant::now() + crate::WAIT;
        loop {
            let got = self.psql(sql);
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql:?} answers {got:?}, not {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Installs pulp-ext-postgres (configured by `postgres_config`) and
/// pulp-ext-s3 (by `s3_config`, which may be empty: every s3 import then
/// answers 10) into `scratch`'s ext dir.
/// The libraries come from `lib_dir` (a cargo profile's directory).
pub fn install_extensions(
    scratch: &crate::Scratch,
    lib_dir: &std::path::Path,
    postgres_config: &str,
    s3_config: &str,
) {
    std::fs::create_dir_all(scratch.ext_dir()).unwrap();
    for file in ["libpulp_ext_postgres.so", "libpulp_ext_s3.so"] {
        std::fs::copy(lib_dir.join(file), scratch.ext_dir().join(file)).unwrap();
    }
    scratch.write(
        "exts/extensions.toml",
        format!(
            "[[extension]]\nname = \"postgres\"\nlibrary = \"pulp_ext_postgres\"\n[extension.config]\n{postgres_config}\n\
             [[extension]]\nname = \"s3\"\nlibrary = \"pulp_ext_s3\"\n[extension.config]\n{s3_config}\n"
        ),
    );
}

/// The provider names `storage.sqlite` may be pinned to.
pub const BUILT_IN: &str = "pulp";
pub const POSTGRES: &str = "pulp-ext-postgres";

/// A copy of the `shared-notes` cell named `name`, its `storage.sqlite`
/// pinned to `provider`, with `limits` (top-level manifest keys) and
/// `instance` sent back in `x-instance`.
pub fn shared_notes(
    scratch: &crate::Scratch,
    name: &str,
    provider: &str,
    limits: &str,
    instance: &str,
) -> PathBuf {
    scratch.manifest_variant("shared-notes", &format!("{name}.toml"), |t| {
        let t = t.replace("name = \"shared-notes\"", &format!("name = {name:?}"));
        format!(
            "{t}\n{limits}\n[providers]\n\"storage.sqlite\" = {provider:?}\n[config]\ninstance = {instance:?}\n"
        )
    })
}
