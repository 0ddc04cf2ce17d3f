use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use pulp_host::cli::{
    Cli, Command, ExtArgs, ExtCommand, LogArgs, LogFormat, RunArgs, normalize_args,
};
use pulp_host::manifest::Manifest;
use pulp_host::registry::{Registry, signature};
use pulp_host::runtime::{Host, Runtime};
use pulp_host::{builtin, extensions};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::try_parse_from(normalize_args(std::env::args_os())).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Check(args)) => check(args),
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

fn registry(args: &ExtArgs) -> Result<Registry, String> {
    let loaded = match extensions::config_path(args.ext_dir.as_deref(), args.ext_config.as_deref())
    {
        Some(file) => {
            extensions::load(&file, args.ext_dir.as_deref()).map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    Registry::new(builtin::all(), loaded)
}

fn manifests(args: &RunArgs) -> Result<Vec<Manifest>, String> {
    if args.manifests.is_empty() {
        return Err("no cell to run: give at least one -manifest PATH".into());
    }
    args.manifests
        .iter()
        .map(|path| Manifest::load(path).map_err(|e| e.to_string()))
        .collect()
}

fn run(args: RunArgs) -> Result<(), String> {
    init_logging(&args.ext.log);
    let manifests = manifests(&args)?;
    let registry = Arc::new(registry(&args.ext)?);
    let runtime = Arc::new(Runtime::new().map_err(|e| format!("cannot start wasmtime: {e}"))?);
    tracing::debug!(
        port = args.http_port,
        tls = args.http_cert.is_some(),
        "no transport capability is built in yet, so no listener is opened"
    );
    let host = Host::start(runtime, registry, manifests, &args.storage_root)?;

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal handler: {e}"))?;
    let signal = signals.block_on(wait_for_signal())?;
    tracing::info!("{signal}: shutting down");
    host.shutdown();
    Ok(())
}

async fn wait_for_signal() -> Result<&'static str, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

fn check(args: RunArgs) -> Result<(), String> {
    init_logging(&args.ext.log);
    let manifests = manifests(&args)?;
    let registry = registry(&args.ext)?;
    let runtime = Runtime::new().map_err(|e| format!("cannot start wasmtime: {e}"))?;
    for (i, manifest) in manifests.iter().enumerate() {
        let spec = pulp_host::runtime::prepare(&runtime, &registry, manifest, i as u64 + 1)?;
        let imports: Vec<String> = spec
            .module
            .imports()
            .filter(|i| i.module() == "pulp")
            .map(|i| i.name().to_owned())
            .collect();
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
            imports.join(", ")
        );
    }
    Ok(())
}

fn ext_list(args: ExtArgs) -> Result<(), String> {
    init_logging(&args.log);
    let registry = registry(&args)?;
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
