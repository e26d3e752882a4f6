//! `pinchat-full`: the full pinchat client — one connection to the server for the whole account —
//! and the lender of that connection to the daemon's widgets of the same account (the patent's
//! claims 9 and 12: a widget uses a running full client's data source instead of its own).
//!
//! - [`upstream`]: the one server stream, shared by every local link, numbers translated.
//! - [`endpoint`]: the local endpoint (same-user socket / pipe) that speaks the stream protocol.
//! - [`roster`]: the client's own view of every contact, over a roster subscription on that stream.
//! - this module: logging in, the registration (`pinchat_ipc::full`) that lets the daemon find the
//!   endpoint, reconnecting, logging out and leaving cleanly.
//!
//! This version runs **headless** (`--headless`): it holds the account's connection and lends it. The
//! desktop window (contact list, chats) is not built yet.

#![forbid(unsafe_code)]

pub mod endpoint;
pub mod roster;
pub mod upstream;

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use pinchat_daemon::remote::{Remote, ServerStream, StreamRefused};
use pinchat_ipc::full::{self, FULL_PROTOCOL, RegisteredAccount, Registration};
use pinchat_proto::PROTOCOL_VERSION;
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame, Welcome};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// The server, e.g. https://chat.example.com or http://127.0.0.1:7420.
    #[arg(long, env = "PINCHAT_SERVER")]
    pub server: String,
    /// The account to log in as.
    #[arg(long)]
    pub account: String,
    /// Where to register for the daemon to find (default: the daemon socket's directory; set
    /// PINCHAT_SOCKET to follow a daemon started with --socket).
    #[arg(long)]
    pub runtime_dir: Option<PathBuf>,
}

/// The environment variable that holds the password (otherwise it is read from standard input's
/// first line).
pub const PASSWORD_ENV: &str = "PINCHAT_PASSWORD";

/// Runs `pinchat-full` with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    pinchat_daemon::cli::init_logging();
    if !cli.headless {
        eprintln!(
            "error: this build of pinchat-full has no window yet; run it with --headless to hold the \
             account's connection and lend it to your widgets"
        );
        return std::process::ExitCode::from(2);
    }
    pinchat_daemon::cli::run_service(headless(cli))
}

/// What standard input can ask.
enum Command {
    Contacts,
    Logout,
    Quit,
}

async fn headless(cli: Cli) -> anyhow::Result<()> {
    let remote = Remote::new(&cli.server).map_err(anyhow::Error::msg)?;
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
        .login(&cli.account, &password)
        .await
        .with_context(|| format!("cannot log in as {} on {}", cli.account, remote.base()))?;
    drop(password);
    let key = login.key;

    let dir = cli.runtime_dir.clone().unwrap_or_else(full::default_dir);
    let pid = std::process::id();
    let socket = full::endpoint_path(&dir, pid);
    let listener = pinchat_ipc::transport::Listener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let mut registration = Registered::new(&dir, socket.clone())?;

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (up_tx, mut up) = mpsc::channel(256);
    tracker.spawn(endpoint::serve(
        listener,
        up_tx.clone(),
        stop.clone(),
        tracker.clone(),
    ));
    let (roster, mut first) = tokio::sync::watch::channel(roster::Roster::default());
    let mut generation = 0;
    // Said once, when the contact list is first known: what a script waits for instead of asking.
    tokio::spawn(async move {
        if let Ok(r) = first.wait_for(|r| r.synced).await {
            say(format_args!(
                "pinchat-full knows its {} contacts",
                r.contacts.len()
            ));
        }
    });

    let (commands_tx, mut commands) = mpsc::channel(4);
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
    let signal = stop.clone();
    tokio::spawn(async move {
        pinchat_daemon::cli::wait_for_signal().await;
        signal.cancel();
    });

    let mut delay = Duration::from_secs(1);
    let mut logged_in = true;
    let mut announced = false;
    while !stop.is_cancelled() {
        if !logged_in {
            // Logged out: lend nothing until asked to quit.
            tokio::select! {
                () = stop.cancelled() => break,
                asked = up.recv() => { if let Some(asked) = asked { upstream::refuse(asked) } }
                command = commands.recv() => match command {
                    Some(Command::Quit) | None => stop.cancel(),
                    Some(Command::Contacts) => print_contacts(&roster.borrow()),
                    Some(Command::Logout) => {}
                },
            }
            continue;
        }
        match connect(&remote, &key).await {
            Ok((ws, welcome)) => {
                delay = Duration::from_secs(1);
                registration.set(Some(RegisteredAccount {
                    server: remote.base().to_owned(),
                    account: welcome.account,
                    epoch: welcome.epoch,
                }))?;
                if !announced {
                    announced = true;
                    say(format_args!(
                        "pinchat-full ready: {} (account {}) on {}, lending its connection on {}",
                        cli.account,
                        welcome.account,
                        remote.base(),
                        socket.display()
                    ));
                }
                let logout = CancellationToken::new();
                generation += 1;
                tracker.spawn(roster::follow(up_tx.clone(), roster.clone(), generation));
                let carried = upstream::run(ws, &welcome, &mut up, &logout);
                tokio::pin!(carried);
                // Once leaving (quit, logout, a signal), only the stream's end is awaited.
                let ended = loop {
                    let leaving = logout.is_cancelled();
                    tokio::select! {
                        ended = &mut carried => break ended,
                        () = stop.cancelled(), if !leaving => {
                            // Off the list first, so that no widget borrows again while we leave.
                            registration.set(None)?;
                            logout.cancel();
                        }
                        command = commands.recv(), if !leaving => match command {
                            Some(Command::Contacts) => print_contacts(&roster.borrow()),
                            Some(Command::Logout) => {
                                registration.set(None)?;
                                logged_in = false;
                                logout.cancel();
                            }
                            Some(Command::Quit) | None => {
                                registration.set(None)?;
                                stop.cancel();
                                logout.cancel();
                            }
                        },
                    }
                };
                registration.set(None)?;
                match ended {
                    upstream::Ended::Stopped => {}
                    upstream::Ended::LoggedOut(why) => {
                        tracing::warn!(reason = %why, "the server logged this account out");
                        logged_in = false;
                    }
                    upstream::Ended::Lost(why) => tracing::info!(reason = %why, "stream lost; reconnecting"),
                }
                if !logged_in && !stop.is_cancelled() {
                    if let Err(e) = remote.logout(&key).await {
                        tracing::info!(error = %e, "the server could not be told about the logout");
                    }
                    say(format_args!("pinchat-full logged out"));
                }
            }
            Err(StreamRefused::Auth(why)) => {
                tracing::warn!(reason = %why, "the server refused the key; logged out");
                logged_in = false;
            }
            Err(StreamRefused::Other(why)) => {
                tracing::info!(reason = %why, retry_in_secs = delay.as_secs(), "cannot reach the server");
                let wait = tokio::time::sleep(delay);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        () = stop.cancelled() => break,
                        asked = up.recv() => { if let Some(asked) = asked { upstream::refuse(asked) } }
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    registration.set(None)?;
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    Ok(())
}

/// Writes a line on standard output; nobody reading it (a closed pipe) is not an error worth stopping
/// for, unlike in `println!`, which panics.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Prints the contact list for the `contacts` command: a line per contact (`contact ID STATE
/// unread=N NAME`), then `contacts: N` — or `contacts: not yet known` before the first snapshot.
fn print_contacts(roster: &roster::Roster) {
    let mut out = std::io::stdout().lock();
    if !roster.synced {
        let _ = writeln!(out, "contacts: not yet known");
    } else {
        for c in &roster.contacts {
            let _ = writeln!(
                out,
                "contact {} {} unread={} {}",
                c.contact,
                c.state.as_str(),
                c.unread,
                c.name
            );
        }
        let _ = writeln!(out, "contacts: {}", roster.contacts.len());
    }
    let _ = out.flush();
}

/// Opens the server stream and says `hello`.
async fn connect(remote: &Remote, key: &str) -> Result<(ServerStream, Welcome), StreamRefused> {
    let mut ws = remote.open_stream(key).await?;
    let hello = codec::encode(
        Encoding::Binary,
        &ClientFrame::Hello {
            version: PROTOCOL_VERSION,
        },
    );
    ws.send(WsMessage::Binary(hello.into()))
        .await
        .map_err(|e| StreamRefused::Other(e.to_string()))?;
    let answer = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .map_err(|_| StreamRefused::Other("no welcome within 15 s".into()))?;
    match answer {
        Some(Ok(WsMessage::Binary(b))) => match codec::decode_server(Encoding::Binary, &b) {
            Ok(ServerFrame::Welcome(w)) => Ok((ws, w)),
            Ok(ServerFrame::Error { error, .. }) if error.code.needs_login() => {
                Err(StreamRefused::Auth(error.message))
            }
            Ok(other) => Err(StreamRefused::Other(format!("expected welcome, got {other:?}"))),
            Err(e) => Err(StreamRefused::Other(e.to_string())),
        },
        Some(Ok(other)) => Err(StreamRefused::Other(format!("expected welcome, got {other:?}"))),
        Some(Err(e)) => Err(StreamRefused::Other(e.to_string())),
        None => Err(StreamRefused::Other("the server closed the stream".into())),
    }
}

/// This process's registration file: written when the account is connected, emptied when it is not,
/// removed when the process leaves (also on an error return).
struct Registered {
    dir: PathBuf,
    registration: Registration,
    path: PathBuf,
}

impl Registered {
    fn new(dir: &Path, socket: PathBuf) -> anyhow::Result<Registered> {
        let pid = std::process::id();
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let start_time = {
            use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate};
            let mut system = sysinfo::System::new();
            let me = Pid::from_u32(pid);
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[me]),
                true,
                ProcessRefreshKind::nothing(),
            );
            system
                .process(me)
                .map(sysinfo::Process::start_time)
                .context("cannot read this process's start time")?
        };
        Ok(Registered {
            dir: dir.to_owned(),
            path: full::registration_path(dir, pid),
            registration: Registration {
                protocol: FULL_PROTOCOL,
                pid,
                start_time,
                exe,
                socket,
                accounts: vec![],
            },
        })
    }

    /// Registers the account as lendable (`Some`) or not (`None`).
    fn set(&mut self, account: Option<RegisteredAccount>) -> anyhow::Result<()> {
        let accounts: Vec<RegisteredAccount> = account.into_iter().collect();
        if accounts == self.registration.accounts && (accounts.is_empty() || self.path.exists()) {
            return Ok(());
        }
        self.registration.accounts = accounts;
        full::write(&self.dir, &self.registration)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
