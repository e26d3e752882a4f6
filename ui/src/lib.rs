//! `pinchat`, the desktop app: a tray icon with the unread count, and per-account panels — adding an
//! account (login, then picking contacts), the pinned-contact widget, unread details and text chat.
//!
//! The app is a client of the daemon's local API, like any gadget ([`backend`]); it starts the daemon
//! in its own process when none is running. Without a display it falls back to a terminal view
//! ([`terminal`]). The binary is one line calling [`main`].

pub mod assets;
pub mod backend;
pub mod badge;
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
pub mod gui;
pub mod i18n;
pub mod terminal;

use backend::{AlreadyRunning, Backend, Options};
use clap::Parser;
use i18n::Lang;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pinchat",
    version,
    about = "pinchat: your pinned contacts in the tray. Starts the daemon when it is not running."
)]
struct Cli {
    /// The daemon's local API socket (a named pipe path on Windows).
    #[arg(long, env = "PINCHAT_SOCKET")]
    socket: Option<PathBuf>,
    /// Where the daemon keeps widget databases when this app starts it.
    #[arg(long, env = "PINCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Language of the user interface (default: the system's).
    #[arg(long, value_enum, env = "PINCHAT_LANG")]
    lang: Option<Lang>,
    /// Show the widgets in the terminal even when a display is available.
    #[arg(long)]
    terminal: bool,
    /// Accept a WebDriver (the end-to-end tests) and open a panel at once.
    #[arg(long, hide = true, env = "PINCHAT_AUTOMATION")]
    automation: bool,
}

/// Whether a graphical session is available.
fn has_display() -> bool {
    if cfg!(target_os = "linux") {
        ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    } else {
        true
    }
}

/// Runs the app with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let lang = cli.lang.unwrap_or_else(Lang::from_os);
    let gui = !cli.terminal && has_display();
    let options = Options {
        socket: cli.socket,
        data_dir: cli.data_dir,
        single_instance: gui,
    };
    if gui {
        #[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
        return match gui::run(options, lang, cli.automation) {
            Ok(never) => match never {},
            Err(e) if e.is::<AlreadyRunning>() => {
                println!("{e}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let backend = match Backend::start(options, move |e| {
        let _ = tx.send(e);
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    terminal::run(backend, rx, lang)
}
