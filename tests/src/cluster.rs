//! Several `pulp` hosts serving the same `shared-notes` cell, with its state
//! in one PostgreSQL (pulp-ext-postgres) and one S3 server (pulp-ext-s3), and
//! HAProxy in front health-checking each host's `/readyz`. Everything listens
//! on 127.0.0.1 only. Used by the multi-host test and the scale-out bench.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{PgServer, install_extensions, required, shared_notes, skip};
use crate::s3::S3Server;
use crate::{Pulp, Scratch, WAIT};

/// The bucket the hosts share.
pub const BUCKET: &str = "notes";

/// `haproxy`'s path, or `None` after a `SKIPPED` line when it is not installed.
pub fn haproxy_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("haproxy"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let what = "haproxy not found; install Debian's `haproxy`";
        assert!(!required(), "{what}, and PULP_TEST_REQUIRE_SERVERS=1");
        skip(what);
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// Which build of `pulp` and the extension libraries the hosts run.
#[derive(Clone, Debug)]
pub struct Build {
    pub pulp: PathBuf,
    pub lib_dir: PathBuf,
}

impl Build {
    /// What the tests run: the debug build [`crate::artifacts`] makes.
    pub fn debug() -> Build {
        let artifacts = crate::artifacts();
        Build {
            pulp: artifacts.pulp.clone(),
            lib_dir: artifacts.lib_dir.clone(),
        }
    }

    /// A release build of `pulp` and the two libraries, for benchmarks.
    pub fn release() -> Build {
        let artifacts = crate::artifacts();
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "pulp-host",
                "-p",
                "pulp-ext-postgres",
            ])
            .args(["-p", "pulp-ext-s3", "--bin", "pulp", "--lib"])
            .current_dir(&artifacts.root)
            .status()
            .expect("run cargo");
        assert!(status.success(), "the release build failed");
        let lib_dir = artifacts
            .lib_dir
            .parent()
            .expect("a profile directory sits in the target directory")
            .join("release");
        Build {
            pulp: lib_dir.join("pulp"),
            lib_dir,
        }
    }
}

/// One `pulp` host on fixed loopback ports, so it can be killed and come back
/// where the balancer expects it.
pub struct Host {
    pub name: String,
    pub http_port: u16,
    pub admin_port: u16,
    args: Vec<String>,
    binary: PathBuf,
    pulp: Option<Pulp>,
    // Dropped after `pulp`: it holds the libraries and the manifest.
    _scratch: Scratch,
}

impl Host {
    /// Starts a host of `build` running `shared-notes` with `storage.sqlite`
    /// on `provider`, and waits until it serves.
    pub fn start(name: &str, provider: &str, pg: &PgServer, s3: &S3Server, build: &Build) -> Host {
        let scratch = Scratch::new();
        install_extensions(
            &scratch,
            &build.lib_dir,
            &pg.extension_config(),
            &s3.extension_config(
                BUCKET,
                crate::s3::ACCESS_KEY_ID,
                crate::s3::SECRET_ACCESS_KEY,
            ),
        );
        let manifest = shared_notes(&scratch, "shared-notes", provider, "", name);
        let (http_port, admin_port) = (free_port(), free_port());
        let mut args = scratch.args(&[manifest]);
        args.extend([
            "--http-addr".to_owned(),
            format!("127.0.0.1:{http_port}"),
            "--admin-addr".to_owned(),
            format!("127.0.0.1:{admin_port}"),
        ]);
        let mut host = Host {
            name: name.to_owned(),
            http_port,
            admin_port,
            args,
            binary: build.pulp.clone(),
            pulp: None,
            _scratch: scratch,
        };
        host.restart();
        host
    }

    /// Starts the host again (after [`Host::kill`]) and waits until it serves.
    pub fn restart(&mut self) {
        let pulp = Pulp::start_binary(&self.binary, &self.args);
        pulp.wait_for(&["shared-notes ready"]);
        pulp.wait_for(&["admin listening on"]);
        self.pulp = Some(pulp);
    }

    /// SIGKILL: no shutdown, no goodbye to the balancer.
    pub fn kill(&mut self) {
        if let Some(pulp) = self.pulp.take() {
            pulp.signal("KILL");
            let _ = pulp.wait_exit();
        }
    }

    pub fn pulp(&self) -> &Pulp {
        self.pulp.as_ref().expect("the host runs")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// HAProxy in front of some hosts, with its stats page.
pub struct Haproxy {
    pub port: u16,
    pub stats_port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy balancing over `hosts`, checked (`haproxy -c`) first.
    pub fn start(binary: &Path, hosts: &[&Host]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, stats_port) = (free_port(), free_port());
        let servers: String = hosts
            .iter()
            .map(|h| {
                format!(
                    "    server {} 127.0.0.1:{} check port {}\n",
                    h.name, h.http_port, h.admin_port
                )
            })
            .collect();
        let config = format!(
            "global\n    maxconn 1024\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\
             \x20   retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response\n\
             frontend notes\n    bind 127.0.0.1:{port}\n    default_backend hosts\n\
             frontend stats\n    bind 127.0.0.1:{stats_port}\n    stats enable\n    stats uri /stats\n\
             backend hosts\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n\
             \x20   default-server inter 200ms fall 2 rise 2\n{servers}"
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let check = Command::new(binary)
            .args(["-c", "-q", "-f"])
            .arg(&file)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(binary)
            .args(["-db", "-f"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let haproxy = Haproxy {
            port,
            stats_port,
            child,
            _dir: dir,
        };
        for host in hosts {
            haproxy.wait_status(&host.name, "UP");
        }
        haproxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Each server's status (`UP`, `DOWN`...), from the stats page's CSV.
    pub fn statuses(&self) -> Vec<(String, String)> {
        let Ok(response) = crate::http_client()
            .get(format!("http://127.0.0.1:{}/stats;csv", self.stats_port))
            .timeout(Duration::from_secs(5))
            .send()
        else {
            return Vec::new();
        };
        let text = response.text().unwrap_or_default();
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let at = |name: &str| header.iter().position(|h| *h == name);
        let (Some(proxy), Some(server), Some(status)) = (at("pxname"), at("svname"), at("status"))
        else {
            return Vec::new();
        };
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.get(proxy) == Some(&"hosts"))
            .filter(|f| !matches!(f.get(server), Some(&"BACKEND") | Some(&"FRONTEND")))
            .map(|f| (f[server].to_owned(), f[status].to_owned()))
            .collect()
    }

    /// Waits until the stats page shows `server` with a status starting `status`.
    pub fn wait_status(&self, server: &str, status: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let statuses = self.statuses();
            if statuses
                .iter()
                .any(|(name, s)| name == server && s.starts_with(status))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy never showed {server} {status}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
