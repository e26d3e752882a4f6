//! Finding a running full client (`pinchat-full`) whose server connection a widget can borrow (the
//! patent's claims 9 and 12).
//!
//! One task owns the search: it watches the registration directory (`pinchat_ipc::full`) with
//! `notify` — so a full client that starts or exits is noticed at once, without any periodic
//! wake-up — and rescans when a widget asks: before a send ([`FullClients::recheck`]) and, only where
//! the directory cannot be watched, on the widget's keepalive tick ([`FullClients::tick`]) — the
//! moments the patent names. (With the watcher on, a scan at every tick would only cost a thread
//! wake-up every keepalive; `bench/run footprint` showed it.) Every registration found is **verified** before it
//! is published: the process it names is alive, started when the file says (a reused pid is not
//! it), runs the `pinchat-full` program the file names, and belongs to this OS user. A file that fails
//! any of these is ignored and logged once, with the reason. The borrower checks again when it
//! connects: the endpoint must be served by that very process (peer credentials), and the `welcome`
//! must name the widget's account.
//!
//! These checks keep a stale file, a reused pid or another build from being trusted by accident; they
//! do not stop a determined program of the *same* user, which could read the user's keys anyway.

use pinchat_ipc::full::{self, Registration};
use pinchat_proto::AccountId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A verified, running full client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullClient {
    /// Its process id.
    pub pid: u32,
    /// Its endpoint.
    pub socket: PathBuf,
    /// What it is connected as: (server base URL, account id).
    pub accounts: Vec<(String, AccountId)>,
}

/// The running full clients, kept current by the watcher task. Cheap to clone; each widget's source
/// holds one.
#[derive(Clone, Debug)]
pub struct FullClients {
    current: watch::Receiver<Arc<Vec<FullClient>>>,
    recheck: Option<mpsc::Sender<()>>,
    /// Whether the directory is watched (then a keepalive tick needs no rescan).
    watched: Arc<std::sync::atomic::AtomicBool>,
}

impl FullClients {
    /// No full clients, ever (borrowing off).
    pub fn none() -> FullClients {
        // The receiver stays usable after the sender is gone (`changed` then never resolves).
        let (_, rx) = watch::channel(Arc::new(Vec::new()));
        FullClients {
            current: rx,
            recheck: None,
            watched: Arc::default(),
        }
    }

    /// Starts watching `dir` until `shutdown`.
    pub fn watch(dir: PathBuf, shutdown: CancellationToken) -> FullClients {
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        // One pending recheck is enough: several asks before a scan are answered by that scan.
        let (recheck_tx, recheck_rx) = mpsc::channel(1);
        let watched = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(watcher(
            dir,
            tx,
            recheck_tx.clone(),
            recheck_rx,
            watched.clone(),
            shutdown,
        ));
        FullClients {
            current: rx,
            recheck: Some(recheck_tx),
            watched,
        }
    }

    /// The full client connected as `account` on `server`, if one runs.
    pub fn find(&self, server: &str, account: AccountId) -> Option<FullClient> {
        self.current
            .borrow()
            .iter()
            .find(|c| c.accounts.iter().any(|(s, a)| s == server && *a == account))
            .cloned()
    }

    /// Asks for a rescan (coalesced; never waits).
    pub fn recheck(&self) {
        if let Some(tx) = &self.recheck {
            let _ = tx.try_send(());
        }
    }

    /// A keepalive tick: a rescan only when the directory cannot be watched.
    pub fn tick(&self) {
        if !self.watched.load(std::sync::atomic::Ordering::Relaxed) {
            self.recheck();
        }
    }

    /// Resolves when the set of running full clients changed. Cancel-safe.
    pub async fn changed(&mut self) {
        if self.current.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn watcher(
    dir: PathBuf,
    publish: watch::Sender<Arc<Vec<FullClient>>>,
    poke: mpsc::Sender<()>,
    mut rechecks: mpsc::Receiver<()>,
    watched: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the directory where full clients register; borrowing is off");
        return;
    }
    // notify calls back on its own thread; a full channel means a scan is already due.
    let events = poke.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = event.is_ok_and(|e| e.paths.iter().any(|p| full::is_registration(p)));
        if relevant {
            let _ = events.try_send(());
        }
    })
    .and_then(|mut w| notify::Watcher::watch(&mut w, &dir, notify::RecursiveMode::NonRecursive).map(|()| w));
    // Without the watcher, full clients are still found on every recheck (keepalive tick, send).
    let _watcher = match watcher {
        Ok(w) => {
            watched.store(true, std::sync::atomic::Ordering::Relaxed);
            Some(w)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for full clients; looking only on keepalive ticks and sends");
            None
        }
    };
    let mut refused: HashMap<PathBuf, String> = HashMap::new();
    let _ = poke.try_send(());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            asked = rechecks.recv() => if asked.is_none() { return },
        }
        let scan_dir = dir.clone();
        let Ok(found) = tokio::task::spawn_blocking(move || scan(&scan_dir)).await else {
            continue;
        };
        let mut clients = Vec::new();
        let mut now_refused = HashMap::new();
        for (path, outcome) in found {
            match outcome {
                Ok(client) => clients.push(client),
                Err(why) => {
                    if refused.get(&path) != Some(&why) {
                        tracing::info!(file = %path.display(), reason = %why, "not borrowing from this full client registration");
                    }
                    now_refused.insert(path, why);
                }
            }
        }
        refused = now_refused;
        publish.send_if_modified(|current| {
            if **current == clients {
                return false;
            }
            for c in &clients {
                if !current.contains(c) {
                    tracing::info!(
                        pid = c.pid,
                        accounts = c.accounts.len(),
                        "a full client is running"
                    );
                }
            }
            *current = Arc::new(std::mem::take(&mut clients));
            true
        });
    }
}

/// Reads and verifies every registration in `dir` (blocking: files and the process table).
fn scan(dir: &Path) -> Vec<(PathBuf, Result<FullClient, String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let registrations: Vec<(PathBuf, Result<Registration, String>)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| full::is_registration(p))
        .map(|p| {
            let r = full::read(&p);
            (p, r)
        })
        .collect();
    if registrations.is_empty() {
        return Vec::new();
    }
    let processes = Processes::of(
        registrations
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.pid)),
    );
    registrations
        .into_iter()
        .map(|(path, r)| {
            let verified = r.and_then(|r| {
                processes.verify(&r)?;
                Ok(FullClient {
                    pid: r.pid,
                    socket: r.socket,
                    accounts: r.accounts.into_iter().map(|a| (a.server, a.account)).collect(),
                })
            });
            (path, verified)
        })
        .collect()
}

/// What `sysinfo` says about the processes registrations name, and about this one.
struct Processes {
    system: sysinfo::System,
}

impl Processes {
    fn of(pids: impl Iterator<Item = u32>) -> Processes {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, UpdateKind};
        let mut pids: Vec<Pid> = pids.map(Pid::from_u32).collect();
        pids.push(Pid::from_u32(std::process::id()));
        let mut system = sysinfo::System::new();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing()
                .with_exe(UpdateKind::Always)
                .with_user(UpdateKind::Always),
        );
        Processes { system }
    }

    /// Why `r` cannot be trusted, if it cannot.
    fn verify(&self, r: &Registration) -> Result<(), String> {
        use sysinfo::Pid;
        let p = self
            .system
            .process(Pid::from_u32(r.pid))
            .ok_or_else(|| format!("process {} is not running (a stale registration)", r.pid))?;
        if p.start_time() != r.start_time {
            return Err(format!(
                "process {} started at {}, not at {} as registered: the pid was reused",
                r.pid,
                p.start_time(),
                r.start_time
            ));
        }
        let exe = p
            .exe()
            .ok_or_else(|| format!("the program of process {} cannot be read", r.pid))?;
        let program = exe.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
        if program != full::PROGRAM {
            return Err(format!(
                "process {} runs {}, not {}",
                r.pid,
                exe.display(),
                full::PROGRAM
            ));
        }
        if exe != r.exe {
            return Err(format!(
                "process {} runs {}, not {} as registered",
                r.pid,
                exe.display(),
                r.exe.display()
            ));
        }
        let me = self
            .system
            .process(Pid::from_u32(std::process::id()))
            .and_then(|p| p.user_id());
        match (p.user_id(), me) {
            (Some(theirs), Some(mine)) if theirs == mine => Ok(()),
            (theirs, _) => Err(format!(
                "process {} runs as {}, not as this user",
                r.pid,
                theirs.map_or_else(|| "an unknown user".to_owned(), |u| format!("{u:?}"))
            )),
        }
    }
}
