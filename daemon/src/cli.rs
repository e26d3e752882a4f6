//! The `pinchatd` command line: reads the configuration, binds the local API's socket and runs
//! [`crate::run`] until SIGINT/SIGTERM (Ctrl-C on Windows). It lives in the library so that the release
//! binary and the end-to-end tests' binary are the same one-line `main`.

use crate::config::DaemonConfig;
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "pinchatd",
    version,
    about = "The pinchat daemon: keeps your widgets current and serves the local API."
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "PINCHAT_DAEMON_CONFIG")]
    config: Option<PathBuf>,
    /// Where widget databases live.
    #[arg(long, env = "PINCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The local API's socket (a named pipe path on Windows).
    #[arg(long, env = "PINCHAT_SOCKET")]
    socket: Option<PathBuf>,
}

/// The command line's definition (its man page is made from it).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Runs the daemon with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    run_service(real_main(cli))
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), coloured only on a terminal. Shared by the
/// background programs (`pinchatd`, `pinchat-full`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a background program's `main` on a two-thread runtime; an error is printed, whole, as
/// `error: …` and the exit status is 1.
pub fn run_service(main: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<()> {
    let mut config = DaemonConfig::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    if let Some(s) = cli.socket {
        config.socket = s;
    }
    let listener = pinchat_ipc::transport::Listener::bind(&config.socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("{e}: the daemon is already running")
        } else {
            anyhow::anyhow!("cannot listen on {}: {e}", config.socket.display())
        }
    })?;
    // Scripts and tests read this line to know the daemon is ready.
    println!("pinchatd listening on {}", config.socket.display());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    crate::run(config, listener, shutdown).await
}

/// Resolves on SIGTERM or SIGINT (Unix), or Ctrl-C (Windows): the requests to stop that a program
/// should answer by finishing its work and exiting. Once called, these signals no longer end the
/// process by themselves.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
