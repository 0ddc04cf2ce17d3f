use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pulp_host::cli::{
    Cli, Command, ExtArgs, ExtCommand, LogArgs, LogFormat, RunArgs, normalize_args,
};
use pulp_host::error::HostError;
use pulp_host::manifest::Manifest;
use pulp_host::registry::{Registry, signature};
use pulp_host::runtime::modules::Source;
use pulp_host::runtime::{CellSpec, Host, Runtime};
use pulp_host::transport;
use pulp_host::{admin, builtin, extensions};
use tracing_subscriber::EnvFilter;

// Request buffers are allocated on listener threads and freed on cell threads
// (and back); glibc's arenas serialise on such frees, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::try_parse_from(normalize_args(std::env::args_os())).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Check(args)) => check(args),
        Some(Command::Compile(args)) => compile(args),
        Some(Command::Audit { strict, run }) => audit(run, strict),
        Some(Command::Reload {
            admin_addr,
            timeout_secs,
            log,
        }) => {
            init_logging(&log);
            ask_reload(admin_addr, std::time::Duration::from_secs(timeout_secs))
        }
        Some(Command::Ext {
            command: ExtCommand::List(args),
        }) => ext_list(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc asks for transparent huge pages for the memory it commits to each
/// thread; with a thread per cell that made every cell cost 2 MB of RSS for
/// the few KB it uses.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only how
    // this process's later page faults are served.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn init_logging(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The async runtime for the listener and outbound fetches; cells run on threads
/// of their own.
fn async_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pulp-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn registry(args: &ExtArgs, services: &builtin::Services) -> Result<Registry, HostError> {
    let loaded = match extensions::config_path(args.ext_dir.as_deref(), args.ext_config.as_deref())
    {
        Some(file) => extensions::load(&file, args.ext_dir.as_deref())?,
        None => Vec::new(),
    };
    Registry::new(builtin::all(services), loaded)
}

fn manifests(args: &RunArgs) -> Result<Vec<Manifest>, String> {
    if args.manifests.is_empty() {
        return Err("no cell to run: give at least one -manifest PATH".into());
    }
    args.manifests
        .iter()
        .map(|path| {
            let mut manifest = Manifest::load(path).map_err(|e| e.to_string())?;
            manifest.tick_ms = manifest.tick_ms.or(Some(args.default_tick_ms));
            Ok(manifest)
        })
        .collect()
}

fn run(args: RunArgs) -> Result<(), String> {
    init_logging(&args.ext.log);
    let manifests = manifests(&args)?;
    let io = async_runtime()?;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let mut signals = Signals::install(&io, reload_rx)?;
    let limits = listener_limits(&args)?;
    let runtime = Arc::new(
        Runtime::with_options(args.runtime_options())
            .map_err(|e| format!("cannot start wasmtime: {e}"))?,
    );
    let services = builtin::Services::new(
        io.handle().clone(),
        limits.clone(),
        Arc::clone(&runtime.calls),
    )?;
    for manifest in &manifests {
        services
            .storage
            .set_quota(&manifest.name, manifest.max_storage_bytes);
    }
    let registry = Arc::new(registry(&args.ext, &services)?);
    let listening = manifests
        .iter()
        .any(|m| m.capabilities.iter().any(|c| registry.listens(c)));
    let transport = services.transport;

    let mut host = Host::start(runtime, registry, manifests, &args.storage_root)?;
    let conflicts = transport.conflicts();
    if !conflicts.is_empty() {
        host.shutdown();
        return Err(conflicts.join("; "));
    }

    let stop = axum_server::Handle::new();
    if listening {
        let tls = match (&args.http_cert, &args.http_key) {
            (Some(cert), Some(key)) => Some(transport::Tls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bound = io.block_on(async {
            transport::serve(
                transport.router(),
                args.listen_addr(),
                tls,
                &limits,
                stop.clone(),
            )
            .await?;
            stop.listening().await.ok_or_else(|| {
                format!(
                    "cannot listen on {}; is it in use, or not an address of this machine? pick another with --http-addr or --http-port",
                    args.listen_addr()
                )
            })
        });
        let addr = match bound {
            Ok(addr) => addr,
            Err(e) => {
                host.shutdown();
                return Err(e);
            }
        };
        tracing::info!("listening on {scheme}://{addr}");
    }
    let admin_stop = axum_server::Handle::new();
    if let Some(addr) = args.admin_addr {
        let bound = io.block_on(async {
            transport::serve(
                admin::router(host.readiness(), reload_tx),
                addr,
                None,
                &limits,
                admin_stop.clone(),
            )
            .await?;
            admin_stop.listening().await.ok_or_else(|| {
                format!("cannot listen on {addr} for --admin-addr; is it in use? pick another")
            })
        });
        match bound {
            Ok(addr) => tracing::info!("admin listening on http://{addr}"),
            Err(e) => {
                host.shutdown();
                return Err(e);
            }
        }
    }
    tracing::info!("ready");

    let signal = loop {
        match io.block_on(signals.next()) {
            Event::Stop(signal) => break signal,
            Event::Reload(asked_by, reply) => {
                tracing::info!("{asked_by}: reloading manifests and extensions");
                let outcome = reload(&args, &mut host);
                match &outcome {
                    Ok(summary) => tracing::info!("reload done: {summary}"),
                    Err(e) => tracing::error!(
                        "reload refused, nothing changed, the host keeps serving: {e}"
                    ),
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
        }
    };
    tracing::info!("{signal}: shutting down");
    admin_stop.graceful_shutdown(Some(std::time::Duration::from_secs(1)));
    stop.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    host.shutdown();
    Ok(())
}

/// The listener's limits from the flags; the connection cap kept under the
/// open-file limit (raised first as far as it goes), with room for the host's
/// own files.
fn listener_limits(args: &RunArgs) -> Result<transport::ListenerLimits, String> {
    /// Descriptors kept for databases, files, libraries and outbound sockets.
    const RESERVED_FDS: u64 = 256;
    let ms = |name: &str, value: u64| {
        if value == 0 {
            Err(format!("--{name} must be at least 1"))
        } else {
            Ok(std::time::Duration::from_millis(value))
        }
    };
    if args.http_max_connections == 0 || args.max_streams_per_path == 0 {
        return Err("--http-max-connections and --max-streams-per-path must be at least 1".into());
    }
    let mut max_connections = args.http_max_connections;
    if let Some(fds) = transport::raise_fd_limit() {
        let room = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
        if room < max_connections {
            tracing::warn!(
                "--http-max-connections {max_connections} lowered to {room}: the open-file limit is {fds}; raise it (ulimit -n) to allow more"
            );
            max_connections = room;
        }
    }
    Ok(transport::ListenerLimits {
        max_connections,
        header_timeout: ms("http-header-timeout-ms", args.http_header_timeout_ms)?,
        body_timeout: ms("http-body-timeout-ms", args.http_body_timeout_ms)?,
        max_streams_per_path: args.max_streams_per_path,
    })
}

/// SIGTERM and SIGINT, caught from the moment this returns: a signal that comes
/// while cells are still starting waits for them, then shuts down in order.
/// SIGHUP, and `POST /reload` on the admin listener, ask for a reload.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    reloads: tokio::sync::mpsc::Receiver<admin::ReloadRequest>,
}

enum Event {
    Stop(&'static str),
    /// What asked, and where the outcome goes when someone waits for it.
    Reload(&'static str, Option<admin::ReloadRequest>),
}

impl Signals {
    fn install(
        io: &tokio::runtime::Runtime,
        reloads: tokio::sync::mpsc::Receiver<admin::ReloadRequest>,
    ) -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let _context = io.enter();
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            int: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
            hup: signal(SignalKind::hangup()).map_err(|e| e.to_string())?,
            reloads,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop("SIGTERM"),
            _ = self.int.recv() => Event::Stop("SIGINT"),
            _ = self.hup.recv() => Event::Reload("SIGHUP", None),
            Some(request) = self.reloads.recv() => Event::Reload("POST /reload", Some(request)),
        }
    }
}

/// `pulp reload`: POST /reload to a running host's admin listener.
fn ask_reload(addr: std::net::SocketAddr, timeout: std::time::Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let unreachable = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "no answer from {addr} within {} s; the reload may still finish: see the host's log, or raise --timeout-secs",
            timeout.as_secs()
        ),
        _ => format!(
            "cannot reach the admin listener at {addr}: {e}; is the host running with --admin-addr {addr}?"
        ),
    };
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    write!(
        stream,
        "POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(unreachable)?;
    let status = answer.split(' ').nth(1).unwrap_or_default();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .trim();
    if status == "200" {
        println!("{body}");
        Ok(())
    } else {
        Err(body.to_owned())
    }
}

/// Reads the manifests and the extensions file again and applies them.
fn reload(args: &RunArgs, host: &mut Host) -> Result<String, String> {
    let manifests = manifests(args)?;
    let registry = match extensions::config_path(
        args.ext.ext_dir.as_deref(),
        args.ext.ext_config.as_deref(),
    ) {
        Some(file) => {
            let listed = extensions::reload(
                &file,
                args.ext.ext_dir.as_deref(),
                &host.registry().loaded(),
            )
            .map_err(|e| e.to_string())?;
            host.registry().reloaded(listed)
        }
        None => host.registry().reloaded(Vec::new()),
    }
    .map_err(|e| e.to_string())?;
    let reloaded = host
        .reload(manifests, registry)
        .map_err(|e| e.to_string())?;
    Ok(reloaded.to_string())
}

/// Loads `args`' manifests, extensions and modules as a run would, without
/// running anything, and hands each prepared cell to `each`.
fn each_prepared(args: &RunArgs, mut each: impl FnMut(&Manifest, &CellSpec)) -> Result<(), String> {
    init_logging(&args.ext.log);
    let manifests = manifests(args)?;
    let io = async_runtime()?;
    let runtime = Runtime::new().map_err(|e| format!("cannot start wasmtime: {e}"))?;
    let services = builtin::Services::new(
        io.handle().clone(),
        Default::default(),
        Arc::clone(&runtime.calls),
    )?;
    let registry = registry(&args.ext, &services)?;
    for (i, manifest) in manifests.iter().enumerate() {
        each(
            manifest,
            &pulp_host::runtime::prepare(&runtime, &registry, manifest, i as u64 + 1)?,
        );
    }
    Ok(())
}

/// The names of the module's `pulp` imports.
fn pulp_imports(spec: &CellSpec) -> Vec<String> {
    spec.module
        .imports()
        .filter(|i| i.module() == "pulp")
        .map(|i| i.name().to_owned())
        .collect()
}

fn check(args: RunArgs) -> Result<(), String> {
    each_prepared(&args, |manifest, spec| {
        let declared: Vec<&str> = spec
            .capabilities
            .declared
            .iter()
            .map(|e| e.name())
            .collect();
        println!(
            "ok: cell {} {} ({}): capabilities [{}], imports [{}]",
            manifest.name,
            manifest.version,
            manifest.path.display(),
            declared.join(", "),
            pulp_imports(spec).join(", ")
        );
    })
}

/// Per cell: each capability it gets and the imports of it the module uses;
/// a declared capability none of whose imports the module uses is
/// over-granted. Event-only capabilities (no imports) cannot be judged so.
fn audit(args: RunArgs, strict: bool) -> Result<(), String> {
    let mut over_granted = Vec::new();
    each_prepared(&args, |manifest, spec| {
        let used = pulp_imports(spec);
        println!(
            "cell {} {} ({})",
            manifest.name,
            manifest.version,
            manifest.path.display()
        );
        for entry in &spec.capabilities.declared {
            let imports: Vec<String> = entry
                .handle
                .imports()
                .iter()
                .map(|i| i.name().to_owned())
                .collect();
            let using: Vec<&str> = imports
                .iter()
                .filter(|i| used.contains(i))
                .map(String::as_str)
                .collect();
            let verdict = if imports.is_empty() {
                "events only: not judged by imports".to_owned()
            } else if !using.is_empty() {
                format!("uses {}", using.join(", "))
            } else if entry.properties.always_on {
                "always on, unused".to_owned()
            } else {
                over_granted.push(format!("{}: {}", manifest.name, entry.name()));
                format!(
                    "OVER-GRANTED: declared, none of {} imported",
                    imports.join(", ")
                )
            };
            println!("  {:<26} {verdict}", entry.name());
        }
        let hosts = if manifest.allowed_outbound_hosts.is_empty() {
            "public addresses only (no allowlist)".to_owned()
        } else {
            manifest.allowed_outbound_hosts.join(", ")
        };
        println!("  outbound hosts             {hosts}");
        println!(
            "  storage                    max_storage_bytes = {}",
            manifest.max_storage_bytes
        );
        if !manifest.consumes.is_empty() || !manifest.provides.is_empty() {
            println!(
                "  calls                      consumes [{}], provides [{}]",
                manifest.consumes.join(", "),
                manifest.provides.join(", ")
            );
        }
    })?;
    match (over_granted.is_empty(), strict) {
        (true, _) => println!("audit: no capability declared but unused"),
        (false, false) => println!(
            "audit: declared but never imported: {}",
            over_granted.join("; ")
        ),
        (false, true) => {
            return Err(format!(
                "audit --strict: declared but never imported: {}; remove them from capabilities",
                over_granted.join("; ")
            ));
        }
    }
    Ok(())
}

fn compile(args: RunArgs) -> Result<(), String> {
    init_logging(&args.ext.log);
    let manifests = manifests(&args)?;
    let Some(cache) = args.module_cache_dir() else {
        return Err("pulp compile fills the module cache: drop --no-module-cache".into());
    };
    let runtime = Runtime::with_options(pulp_host::runtime::Options {
        module_cache: Some(cache.clone()),
        ..Default::default()
    })
    .map_err(|e| format!("cannot start wasmtime: {e}"))?;
    for manifest in &manifests {
        let (_, source) = pulp_host::runtime::load_module(&runtime, manifest)?;
        let how = match source {
            Source::Compiled => "compiled",
            Source::Disk => "already in the cache",
            Source::Shared => "same module as a cell above",
        };
        println!(
            "ok: cell {} ({}): {how}",
            manifest.name,
            manifest.wasm.display()
        );
    }
    println!("module cache: {}", cache.display());
    Ok(())
}

fn ext_list(args: ExtArgs) -> Result<(), String> {
    init_logging(&args.log);
    let io = async_runtime()?;
    let services = builtin::Services::new(io.handle().clone(), Default::default(), Arc::default())?;
    let registry = registry(&args, &services)?;
    for entry in registry.entries() {
        println!(
            "{}  provider={}  from {}",
            entry.name(),
            entry.provider(),
            entry.origin
        );
        for import in entry.handle.imports() {
            println!("    {}{}", import.name(), signature(import.params()));
        }
    }
    Ok(())
}
