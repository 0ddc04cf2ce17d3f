//! The command line (docs/cli.md).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pulp",
    version,
    about = "Runs WebAssembly cells with only the capabilities their manifests declare",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate manifests and check every import against the capabilities, without running.
    Check(RunArgs),
    /// Compile the manifests' modules into the module cache, so cells start without compiling.
    Compile(RunArgs),
    /// Show what each cell is granted against what its module uses.
    Audit {
        /// Exit 1 when a cell declares a capability it never imports.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Ask a running host to reload its manifests and extensions, through its
    /// admin listener, and print the outcome.
    Reload {
        /// The running host's --admin-addr.
        #[arg(long)]
        admin_addr: SocketAddr,
        /// Seconds to wait for the outcome: new modules may compile, and each
        /// cell may finish a step of up to its call_timeout_ms first.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_secs: u64,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Extension commands.
    Ext {
        #[command(subcommand)]
        command: ExtCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExtCommand {
    /// Print every capability, built-in and loaded, with its provider and imports.
    List(ExtArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// Log level: trace, debug, info, warn, error (RUST_LOG, when set, wins).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args, Clone)]
pub struct ExtArgs {
    /// Directory of extension libraries and extensions.toml.
    #[arg(long)]
    pub ext_dir: Option<PathBuf>,
    /// The extensions file [default: <ext-dir>/extensions.toml].
    #[arg(long)]
    pub ext_config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// A cell manifest; repeat, or separate with commas, for several cells.
    #[arg(long = "manifest", value_name = "PATH", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,
    #[command(flatten)]
    pub ext: ExtArgs,
    /// The shared HTTP listener's port on every IPv4 interface; 0 picks a free one.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// The shared HTTP listener's address (`127.0.0.1:8080`, `[::1]:0`); wins over --http-port.
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Serve /healthz and /readyz on this address (e.g. `127.0.0.1:9090`); off unless given.
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// PEM certificate; with --http-key, the listener speaks HTTPS.
    #[arg(long, requires = "http_key")]
    pub http_cert: Option<PathBuf>,
    /// PEM private key for --http-cert.
    #[arg(long, requires = "http_cert")]
    pub http_key: Option<PathBuf>,
    /// Per-cell storage root.
    #[arg(long, default_value = "./data")]
    pub storage_root: PathBuf,
    /// Directory of compiled modules [default: <storage-root>/.module-cache].
    #[arg(long, conflicts_with = "no_module_cache")]
    pub module_cache: Option<PathBuf>,
    /// Compile every module at start, keeping nothing on disk.
    #[arg(long)]
    pub no_module_cache: bool,
    /// Connections the shared listener holds open at once; past it new ones are
    /// closed (and logged). Lowered to fit the open-file limit when that is smaller.
    #[arg(long, default_value_t = 10_000)]
    pub http_max_connections: usize,
    /// Milliseconds a client has to send a request's head; also the most a
    /// keep-alive connection may sit idle between requests.
    #[arg(long, default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// Milliseconds a client has to send a request's body (408 after it).
    #[arg(long, default_value_t = 30_000)]
    pub http_body_timeout_ms: u64,
    /// WebSocket connections, or SSE subscribers, one path may have at once.
    #[arg(long, default_value_t = 1_000)]
    pub max_streams_per_path: usize,
    /// The tick_ms of cells whose manifest sets none: they are stepped without
    /// an event this often (0: only when an event arrives).
    #[arg(long, default_value_t = 0)]
    pub default_tick_ms: u64,
    /// Worker threads that run cells [default: the number of cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Worker threads at most: while every worker is held by a long host call
    /// or a runaway step, workers are added up to this many.
    #[arg(long, default_value_t = default_max_workers(), value_parser = clap::value_parser!(u16).range(1..))]
    pub max_workers: u16,
}

const fn default_max_workers() -> u16 {
    crate::runtime::DEFAULT_MAX_WORKERS as u16
}

impl RunArgs {
    /// How the cell runtime is set up.
    pub fn runtime_options(&self) -> crate::runtime::Options {
        let defaults = crate::runtime::Options::default();
        let workers = self.workers.map_or(defaults.workers, usize::from);
        crate::runtime::Options {
            module_cache: self.module_cache_dir(),
            workers,
            max_workers: usize::from(self.max_workers).max(workers),
        }
    }

    /// Where the shared listener binds.
    pub fn listen_addr(&self) -> SocketAddr {
        self.http_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.http_port)))
    }

    /// Where compiled modules are kept, unless `--no-module-cache`.
    pub fn module_cache_dir(&self) -> Option<PathBuf> {
        if self.no_module_cache {
            return None;
        }
        Some(
            self.module_cache
                .clone()
                .unwrap_or_else(|| self.storage_root.join(".module-cache")),
        )
    }
}

/// Every long flag of the command line, its subcommands' and clap's own
/// (`help`, `version`): each is also accepted with one dash (`-manifest
/// app.toml`), as the Go Pulp took them.
fn long_flags() -> &'static [String] {
    static FLAGS: OnceLock<Vec<String>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let mut command = Cli::command();
        command.build();
        let mut flags = Vec::new();
        collect_long_flags(&command, &mut flags);
        flags
    })
}

fn collect_long_flags(command: &clap::Command, flags: &mut Vec<String>) {
    for long in command.get_arguments().filter_map(clap::Arg::get_long) {
        if !flags.iter().any(|f| f == long) {
            flags.push(long.to_owned());
        }
    }
    for sub in command.get_subcommands() {
        collect_long_flags(sub, flags);
    }
}

/// Rewrites `-flag` and `-flag=value` to their `--` form for the known long flags.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            let Some(rest) = text.strip_prefix('-') else {
                return arg;
            };
            if rest.starts_with('-') {
                return arg;
            }
            let flag = rest.split('=').next().unwrap_or(rest);
            if long_flags().iter().any(|f| f == flag) {
                OsString::from(format!("-{text}"))
            } else {
                arg
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize_args(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn single_dash_long_flags() {
        let cli = parse(&[
            "pulp",
            "-manifest",
            "a.toml",
            "-http-port=9090",
            "--manifest",
            "b.toml,c.toml",
        ]);
        assert_eq!(
            cli.run.manifests,
            [
                PathBuf::from("a.toml"),
                PathBuf::from("b.toml"),
                PathBuf::from("c.toml")
            ]
        );
        assert_eq!(cli.run.http_port, 9090);
    }

    #[test]
    fn every_long_flag_takes_one_dash() {
        let flags = long_flags();
        for flag in [
            "manifest",
            "ext-dir",
            "max-streams-per-path",
            "log-format",
            "help",
            "version",
        ] {
            assert!(
                flags.iter().any(|f| f == flag),
                "{flag} missing from {flags:?}"
            );
        }
        let cli = parse(&[
            "pulp",
            "ext",
            "list",
            "-log-format",
            "json",
            "-ext-config=e.toml",
        ]);
        let Some(Command::Ext {
            command: ExtCommand::List(args),
        }) = cli.command
        else {
            panic!("not ext list")
        };
        assert!(matches!(args.log.log_format, LogFormat::Json));
        assert_eq!(args.ext_config, Some(PathBuf::from("e.toml")));
        // Short flags and values that only look like flags are left alone.
        let kept = normalize_args(["-x", "-", "--manifest", "-nope"].map(OsString::from));
        assert_eq!(kept, ["-x", "-", "--manifest", "-nope"].map(OsString::from));
    }

    #[test]
    fn subcommands_take_the_same_flags() {
        let cli = parse(&["pulp", "check", "-manifest", "a.toml", "-ext-dir", "exts"]);
        let Some(Command::Check(args)) = cli.command else {
            panic!("not check")
        };
        assert_eq!(args.ext.ext_dir, Some(PathBuf::from("exts")));
    }
}
