//! `pinchat-daemon`: the widget engine behind the tray app and the local API.
//!
//! - [`Daemon`] owns the registry of widgets: it creates (log in, seal the key, create the widget's
//!   database), loads (every database under `<data dir>/widgets/` at start-up, served at once from
//!   disk and marked stale), rebinds and removes them, and routes requests to them.
//! - [`widget`]: one actor per widget — its state ([`model`]) in memory and in its own SQLite database
//!   ([`db`]), changed together; it answers with [`events::WidgetState`] and [`error::WidgetError`] and
//!   announces [`events::Event`]s.
//! - [`source`]: where a widget's data comes from: its own connection to its server ([`remote`] for
//!   HTTP), in push, poll or manual mode — or, in push mode, a running full client's connection,
//!   found by [`borrow`].
//! - [`vault`]: auth keys sealed with a key from the OS keyring.
//! - [`ipc`]: the local API server (JSON-RPC over the per-user socket of `pinchat-ipc`), and the one
//!   place where the daemon's model becomes the API's views, notifications and errors.
//!
//! The binary `pinchatd` is thin: it reads the configuration, binds the socket and calls [`run`].

#![forbid(unsafe_code)]

pub mod borrow;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod ipc;
pub mod model;
pub mod remote;
pub mod source;
pub mod vault;
pub mod widget;

use crate::config::DaemonConfig;
use crate::db::{Stored, WidgetDb};
use crate::error::WidgetError;
use crate::events::{Event, WidgetState};
use crate::model::{Account, UpdateMode};
use crate::remote::Remote;
use crate::vault::Vault;
use crate::widget::{Start, WidgetHandle};
use pinchat_ipc::api::{Login, Rebind};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Mutex, RwLock, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A widget just bound to an account, with the account's contacts to pick pins from.
#[derive(Clone, Debug)]
pub struct Created {
    /// The widget.
    pub widget: WidgetState,
    /// The account's full contact list.
    pub contacts: Vec<pinchat_proto::http::Identity>,
    /// The most contacts that can be pinned.
    pub max_pins: u16,
}

/// How long a stopping daemon waits for its widgets.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The widget engine. Cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    widgets_dir: PathBuf,
    vault: Vault,
    widgets: RwLock<HashMap<String, WidgetHandle>>,
    /// Serialises create, rebind and remove, which check and change the registry across awaits.
    lifecycle: Mutex<()>,
    events: broadcast::Sender<Event>,
    started: Instant,
    tracker: TaskTracker,
    /// Running full clients whose connection a widget may borrow.
    full: borrow::FullClients,
    /// Stops the full-client watcher.
    stop_watching: CancellationToken,
}

impl Daemon {
    /// Loads every widget found in the data directory and starts it.
    pub async fn start(config: &DaemonConfig, vault: Vault) -> anyhow::Result<Daemon> {
        let widgets_dir = config.data_dir.join("widgets");
        // Private to the user (and narrowed if an older version left it open). A directory that
        // cannot be written is reported, not fatal: widgets are served from what it holds, and
        // writing is retried.
        for dir in [&config.data_dir, &widgets_dir] {
            if let Err(e) = db::private_dir(dir) {
                tracing::error!(dir = %dir.display(), error = %e,
                    "the data directory cannot be created or written; widgets are read from what it holds and nothing new can be stored until it can");
            }
        }
        let (events, _) = broadcast::channel(1024);
        let stop_watching = CancellationToken::new();
        let full = if config.borrow {
            borrow::FullClients::watch(config.full_dir(), stop_watching.clone())
        } else {
            borrow::FullClients::none()
        };
        let daemon = Daemon {
            inner: Arc::new(Inner {
                widgets_dir: widgets_dir.clone(),
                vault,
                widgets: RwLock::new(HashMap::new()),
                lifecycle: Mutex::new(()),
                events,
                started: Instant::now(),
                tracker: TaskTracker::new(),
                full,
                stop_watching,
            }),
        };
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&widgets_dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "db"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => anyhow::bail!("cannot read {}: {e}", widgets_dir.display()),
        };
        paths.sort();
        for path in paths {
            match WidgetDb::open(&path).await {
                Ok((db, stored)) => {
                    let login = stored.account.login.to_lowercase();
                    let id = stored.id.clone();
                    let start = Start {
                        stored,
                        db,
                        login,
                        key: None,
                        vault: daemon.inner.vault.clone(),
                        events: daemon.inner.events.clone(),
                        full: daemon.inner.full.clone(),
                    };
                    match widget::spawn(start, &daemon.inner.tracker) {
                        Ok(handle) => {
                            tracing::info!(widget = %id, "loaded widget");
                            daemon.inner.widgets.write().await.insert(id, handle);
                        }
                        Err(e) => tracing::error!(widget = %id, error = %e, "cannot start widget"),
                    }
                }
                Err(e) => tracing::error!(error = %e, "skipping a widget database that cannot be read"),
            }
        }
        Ok(daemon)
    }

    /// Subscribes to every event of every widget.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Stops every widget (their databases are closed; nothing is deleted). A widget busy with a
    /// slow server call gets [`SHUTDOWN_GRACE`]; after that the daemon stops anyway — every change is
    /// already in the databases, so nothing is lost.
    pub async fn shutdown(&self) {
        self.inner.stop_watching.cancel();
        let widgets: Vec<WidgetHandle> = self.inner.widgets.write().await.drain().map(|(_, w)| w).collect();
        let stop = async {
            for w in widgets {
                let _ = w.close().await;
            }
            self.inner.tracker.close();
            self.inner.tracker.wait().await;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, stop).await.is_err() {
            tracing::warn!(
                "widgets did not stop within {} s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }

    async fn handle(&self, id: &str) -> Result<WidgetHandle, WidgetError> {
        self.inner
            .widgets
            .read()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| WidgetError::NotFound(format!("no widget {id:?}; widget.list shows the ids")))
    }

    /// How long the daemon has run.
    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Every widget, ordered by id.
    pub async fn list(&self) -> Vec<WidgetState> {
        let handles: Vec<WidgetHandle> = self.inner.widgets.read().await.values().cloned().collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            if let Ok(v) = h.view().await {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// A widget's request handle.
    pub async fn widget(&self, id: &str) -> Result<WidgetHandle, WidgetError> {
        self.handle(id).await
    }

    /// Logs in and creates a widget.
    pub async fn create(&self, login: Login) -> Result<Created, WidgetError> {
        let _guard = self.inner.lifecycle.lock().await;
        let id = new_widget_id();
        self.bind(id, login, None).await
    }

    /// Binds `id` to the account in `login`; with `replacing`, the widget that had that id is torn down
    /// once the new login succeeded.
    async fn bind(
        &self,
        id: String,
        login: Login,
        replacing: Option<WidgetHandle>,
    ) -> Result<Created, WidgetError> {
        let remote = Remote::new(&login.server).map_err(WidgetError::Invalid)?;
        let account = login.account.trim().to_lowercase();
        if account.is_empty() {
            return Err(WidgetError::Invalid("the account name is empty".into()));
        }
        {
            let widgets = self.inner.widgets.read().await;
            if let Some(other) = widgets
                .values()
                .find(|w| w.server == remote.base() && w.login == account && w.id != id)
            {
                return Err(WidgetError::Exists(format!(
                    "{account} on {} already has a widget ({}); use that one",
                    remote.base(),
                    other.id
                )));
            }
        }
        let logged_in = remote
            .login(&account, &login.password)
            .await
            .map_err(WidgetError::from_remote)?;
        let key = logged_in.key;
        let setup = async {
            let list = remote.contacts(&key).await.map_err(WidgetError::from_remote)?;
            let me = remote.me(&key).await.map_err(WidgetError::from_remote)?;
            Ok::<_, WidgetError>((list, me))
        };
        let (list, me) = match setup.await {
            Ok(x) => x,
            Err(e) => {
                let _ = remote.logout(&key).await;
                return Err(e);
            }
        };
        // The new account is in; now the old binding (if any) goes: its key revoked, its data removed.
        if let Some(old) = replacing {
            self.teardown(&old).await;
        }
        let sealed = match self.inner.vault.seal(&id, &key).await {
            Ok(s) => s,
            Err(e) => {
                let _ = remote.logout(&key).await;
                return Err(WidgetError::Keyring(format!(
                    "{e}; the key cannot be stored safely"
                )));
            }
        };
        let account_row = Account {
            id: me.identity.id,
            login: me.identity.login.clone(),
            name: me.identity.name.clone(),
            avatar: me.identity.avatar.clone(),
            signature: me.identity.signature.clone(),
            state: me.chosen_state,
            status: me.status.clone(),
        };
        let stored = Stored {
            id: id.clone(),
            server: remote.base().to_owned(),
            account: account_row,
            mode: UpdateMode::Push,
            poll_interval_secs: 60,
            max_pins: list.max_pins,
            sealed: Some(sealed),
            ..Stored::default()
        };
        let path = self.inner.widgets_dir.join(format!("{id}.db"));
        let created = match db::private_dir(&self.inner.widgets_dir) {
            Ok(()) => WidgetDb::create(&path, stored.clone()).await,
            Err(e) => Err(db::DbError::Sqlite {
                path: self.inner.widgets_dir.display().to_string(),
                problem: if e.kind() == std::io::ErrorKind::StorageFull {
                    db::Problem::Full
                } else {
                    db::Problem::ReadOnly
                },
                error: e.to_string(),
            }),
        };
        let db = match created {
            Ok(db) => db,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a widget database");
                let _ = remote.logout(&key).await;
                let _ = self.inner.vault.forget(&id).await;
                let _ = tokio::fs::remove_file(&path).await;
                return Err(WidgetError::storage(&e, "the widget could not be created"));
            }
        };
        let start = Start {
            stored,
            db,
            login: account,
            key: Some(key),
            vault: self.inner.vault.clone(),
            events: self.inner.events.clone(),
            full: self.inner.full.clone(),
        };
        let handle = widget::spawn(start, &self.inner.tracker).map_err(WidgetError::Internal)?;
        self.inner
            .widgets
            .write()
            .await
            .insert(id.clone(), handle.clone());
        let view = handle.view().await?;
        tracing::info!(widget = %id, server = %view.server, "widget bound");
        let _ = self
            .inner
            .events
            .send(Event::WidgetChanged(Box::new(view.clone())));
        Ok(Created {
            widget: view,
            contacts: list.contacts,
            max_pins: list.max_pins,
        })
    }

    /// Stops a widget, logs it out, deletes its database and its keyring entry.
    async fn teardown(&self, handle: &WidgetHandle) {
        self.inner.widgets.write().await.remove(&handle.id);
        if let Some((key, db)) = handle.close().await {
            if let (Some(key), Ok(remote)) = (key, Remote::new(&handle.server))
                && let Err(e) = remote.logout(&key).await
            {
                tracing::info!(widget = %handle.id, error = %e, "could not revoke the old key on the server");
            }
            if let Err(e) = db.destroy().await {
                tracing::warn!(widget = %handle.id, error = %e, "could not delete the widget database");
            }
        }
        if let Err(e) = self.inner.vault.forget(&handle.id).await {
            tracing::warn!(widget = %handle.id, error = %e, "could not delete the keyring entry");
        }
    }

    /// Removes a widget.
    pub async fn remove(&self, id: &str) -> Result<(), WidgetError> {
        let _guard = self.inner.lifecycle.lock().await;
        let handle = self.handle(id).await?;
        self.teardown(&handle).await;
        let _ = self.inner.events.send(Event::WidgetRemoved {
            widget: id.to_owned(),
        });
        Ok(())
    }

    /// Rebinds a widget to another account.
    pub async fn rebind(&self, rebind: Rebind) -> Result<Created, WidgetError> {
        let _guard = self.inner.lifecycle.lock().await;
        let old = self.handle(&rebind.widget).await?;
        self.bind(rebind.widget, rebind.login, Some(old)).await
    }
}

fn new_widget_id() -> String {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("the operating system's random number generator failed");
    format!("w{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Runs the daemon: loads widgets, serves the local API on `listener` until `shutdown`, then stops
/// every widget and returns (dropping the listener removes the socket file).
pub async fn run(
    config: DaemonConfig,
    listener: pinchat_ipc::transport::Listener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_vault(config, listener, shutdown, Vault::platform()).await
}

/// [`run`] with keys kept in `vault` (the demo keeps them in memory).
pub async fn run_with_vault(
    config: DaemonConfig,
    listener: pinchat_ipc::transport::Listener,
    shutdown: CancellationToken,
    vault: Vault,
) -> anyhow::Result<()> {
    let daemon = Daemon::start(&config, vault).await?;
    tracing::info!(socket = %listener.path().display(), data = %config.data_dir.display(), "daemon ready");
    ipc::serve(daemon.clone(), listener, shutdown).await;
    daemon.shutdown().await;
    tracing::info!("daemon stopped");
    Ok(())
}
