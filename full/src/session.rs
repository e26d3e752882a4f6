//! One logged-in session of the full client: the account's one server stream (reconnected with
//! back-off), the local endpoint that lends it, the registration that lets the daemon find that
//! endpoint, and the [`Roster`] kept over it — whatever drives it (standard input with `--headless`,
//! the window otherwise) sends [`Command`]s and reads the roster.

use crate::roster::Roster;
use crate::{endpoint, upstream};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use pinchat_daemon::remote::{Remote, ServerStream, StreamRefused};
use pinchat_ipc::full::{self, FULL_PROTOCOL, RegisteredAccount, Registration};
use pinchat_proto::PROTOCOL_VERSION;
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame, Welcome};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What drives a session can ask.
#[derive(Debug)]
pub enum Command {
    /// Print the contact list on standard output (`--headless`).
    Contacts,
    /// Log out: close the stream, tell the server, lend nothing more (until [`Command::Quit`]).
    Logout,
    /// End the session.
    Quit,
}

/// A logged-in account, ready to connect.
pub struct Session {
    /// The server.
    pub remote: Remote,
    /// The account's key.
    pub key: String,
    /// The login, for the `ready` line.
    pub account: String,
    /// Where to register for the daemon to find.
    pub dir: PathBuf,
}

/// Runs the session until `stop` is cancelled or [`Command::Quit`] arrives (a closed command channel
/// counts as quit), keeping `roster` current and carrying the window's `calls`.
pub async fn run(
    session: Session,
    roster: watch::Sender<Roster>,
    calls: std::sync::Arc<crate::calls::CallRoute>,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Session {
        remote,
        key,
        account,
        dir,
    } = session;
    let pid = std::process::id();
    let socket = full::endpoint_path(&dir, pid);
    let listener = pinchat_ipc::transport::Listener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let mut registration = Registered::new(&dir, socket.clone())?;

    let tracker = TaskTracker::new();
    let (up_tx, mut up) = mpsc::channel(256);
    tracker.spawn(endpoint::serve(
        listener,
        up_tx.clone(),
        stop.clone(),
        tracker.clone(),
    ));
    let mut first = roster.subscribe();
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
                roster.send_modify(|r| r.online = true);
                registration.set(Some(RegisteredAccount {
                    server: remote.base().to_owned(),
                    account: welcome.account,
                    epoch: welcome.epoch,
                }))?;
                if !announced {
                    announced = true;
                    say(format_args!(
                        "pinchat-full ready: {} (account {}) on {}, lending its connection on {}",
                        account,
                        welcome.account,
                        remote.base(),
                        socket.display()
                    ));
                }
                let logout = CancellationToken::new();
                generation += 1;
                tracker.spawn(crate::roster::follow(
                    up_tx.clone(),
                    roster.clone(),
                    calls.clone(),
                    generation,
                ));
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
                roster.send_modify(|r| r.online = false);
                match ended {
                    upstream::Ended::Stopped => {}
                    upstream::Ended::LoggedOut(why) => {
                        tracing::warn!(reason = %why, "the server logged this account out");
                        roster.send_modify(|r| r.key_refused = true);
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
                roster.send_modify(|r| r.key_refused = true);
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
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Prints the contact list for the `contacts` command: a line per contact (`contact ID STATE
/// unread=N NAME`), then `contacts: N` — or `contacts: not yet known` before the first snapshot.
fn print_contacts(roster: &Roster) {
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
