//! `pinchat-full`: the full pinchat client — one connection to the server for the whole account —
//! and the lender of that connection to the daemon's widgets of the same account (the patent's
//! claims 9 and 12: a widget uses a running full client's data source instead of its own).
//!
//! - [`upstream`]: the one server stream, shared by every local link, numbers translated.
//! - [`endpoint`]: the local endpoint (same-user socket / pipe) that speaks the stream protocol.
//! - [`roster`]: the client's own view of every contact, over a roster subscription on that stream.
//! - [`calls`]: the window's own calls, on the roster's link.
//! - [`session`]: one logged-in session: the stream, reconnecting, the endpoint and registration.
//! - [`window`]: the desktop window — the app's panel page in its full-client mode (every contact,
//!   searchable; chats with history, unread counts, sending, read state), answered in-process from the
//!   session's roster and the server's HTTP API.
//! - this module: the command line, and the headless mode's login and standard-input commands.
//!
//! `--headless` runs the session without a window, driven from standard input (tests, servers).

#![forbid(unsafe_code)]

pub mod calls;
pub mod endpoint;
pub mod roster;
pub mod session;
pub mod upstream;
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
pub mod window;

use anyhow::Context;
use clap::Parser;
use pinchat_daemon::remote::Remote;
use session::{Command, Session};
use std::path::PathBuf;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `pinchat-full`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "pinchat-full",
    version,
    about = "The full pinchat client: one connection for the whole account, lent to the widgets of the same account"
)]
pub struct Cli {
    /// Run without a window: hold the account's connection and lend it to widgets. Says `pinchat-full
    /// ready: …` when connected and `pinchat-full knows its N contacts` once it has the contact list;
    /// reads commands on standard input: `contacts` (prints the contact list), `logout`, `quit`.
    #[arg(long)]
    pub headless: bool,
    /// The server, e.g. https://chat.example.com or http://127.0.0.1:7420 (needed with --headless;
    /// the window's login form starts with it).
    #[arg(long, env = "PINCHAT_SERVER")]
    pub server: Option<String>,
    /// The account to log in as (needed with --headless).
    #[arg(long)]
    pub account: Option<String>,
    /// The window's language: en or zh (default: the system's).
    #[arg(long, env = "PINCHAT_LANG")]
    pub lang: Option<String>,
    /// Accept a WebDriver in the window (WebKitWebDriver on Linux; the end-to-end tests).
    #[arg(long, hide = true)]
    pub automation: bool,
    /// Where to register for the daemon to find (default: the daemon socket's directory; set
    /// PINCHAT_SOCKET to follow a daemon started with --socket).
    #[arg(long)]
    pub runtime_dir: Option<PathBuf>,
}

/// `pinchat-full`'s command line, for its man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The environment variable that holds the password (otherwise it is read from standard input's
/// first line).
pub const PASSWORD_ENV: &str = "PINCHAT_PASSWORD";

/// Runs `pinchat-full` with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pinchat_daemon::cli::init_logging();
    if cli.headless {
        return pinchat_daemon::cli::run_service(headless(cli));
    }
    #[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
    return window::run(cli);
    #[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "macos")))]
    {
        eprintln!("error: pinchat-full has no window on this system; run it with --headless");
        std::process::ExitCode::from(2)
    }
}

async fn headless(cli: Cli) -> anyhow::Result<()> {
    let (Some(server), Some(account)) = (cli.server, cli.account) else {
        anyhow::bail!("--headless needs --server and --account");
    };
    let remote = Remote::new(&server).map_err(anyhow::Error::msg)?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) => p,
        Err(_) => lines
            .next_line()
            .await
            .context("cannot read the password from standard input")?
            .context("no password: set PINCHAT_PASSWORD or write it on standard input")?,
    };
    let login = remote
        .login(&account, &password)
        .await
        .with_context(|| format!("cannot log in as {account} on {}", remote.base()))?;
    drop(password);
    let dir = cli.runtime_dir.unwrap_or_else(pinchat_ipc::full::default_dir);
    let session = Session {
        remote,
        key: login.key,
        account,
        dir,
    };

    let (commands_tx, commands) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let command = match line.trim() {
                "contacts" => Command::Contacts,
                "logout" => Command::Logout,
                "quit" => Command::Quit,
                "" => continue,
                other => {
                    eprintln!("unknown command {other:?}: the commands are contacts, logout and quit");
                    continue;
                }
            };
            if commands_tx.send(command).await.is_err() {
                return;
            }
        }
        // Standard input closed (started by a launcher, or with /dev/null): commands stop coming and
        // the program goes on until a signal — an end of input is not a request to quit. (This task,
        // and with it the channel's sender, stays.)
        std::future::pending::<()>().await;
    });
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        pinchat_daemon::cli::wait_for_signal().await;
        signal.cancel();
    });
    let (roster, _) = tokio::sync::watch::channel(roster::Roster::default());
    let calls = std::sync::Arc::new(calls::CallRoute::new(None));
    session::run(session, roster, calls, commands, stop).await
}
