//! One widget: an actor that owns the widget's state in memory, its database and its source.
//!
//! The actor is the only writer of both copies of the state, and it changes them together: each change
//! is written to the database first, then applied in memory, then announced to IPC clients. Requests
//! from clients and events from the source are handled one at a time, in arrival order.
//!
//! When the database cannot be written (full or read-only disk), nothing is shown that was not
//! stored: the widget turns stale, says why in its view (`storage`), drops what the source delivers
//! and probes the disk with back-off (1 s … 30 s — only while in trouble). Once a write succeeds it
//! asks the source to fetch everything after its stored cursor again ([`SourceCmd::Resync`]), so the
//! gap is filled from the server and nothing is lost.

use crate::db::{Change, DbError, Problem, Stored, WidgetDb};
use crate::remote::{Remote, RemoteError};
use crate::source::{Outgoing, SourceCmd, SourceConfig, SourceEvent};
use crate::vault::Vault;
use pinchat_ipc::api::*;
use pinchat_ipc::jsonrpc::RpcError;
use pinchat_proto::stream::Snapshot;
use pinchat_proto::{ErrorCode as WireCode, Field};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// The answer to a request.
pub type Reply<T> = oneshot::Sender<Result<T, RpcError>>;

/// Requests to a widget.
pub enum Cmd {
    /// The widget as shown.
    View(oneshot::Sender<WidgetView>),
    /// The account's contacts.
    Contacts(Reply<Vec<ContactIdentity>>),
    /// An avatar image by hash.
    Avatar(String, Reply<AvatarView>),
    /// Re-pin.
    SetPins(Vec<u64>, Reply<WidgetView>),
    /// Refresh now.
    Refresh(Reply<WidgetView>),
    /// Change the update mode.
    SetMode(Mode, Option<u32>, Reply<WidgetView>),
    /// Unread details for a contact: (contact, before, limit).
    Unread(u64, Option<u64>, Option<u32>, Reply<Vec<MessageView>>),
    /// A history page.
    History(u64, Option<u64>, u32, Reply<HistoryView>),
    /// Send a message.
    Send(u64, String, Reply<MessageView>),
    /// Mark read.
    MarkRead(u64, Option<u64>, Reply<UnreadView>),
    /// Log in again.
    Reauth(String, Reply<WidgetView>),
    /// Stop; answers with the key (so the caller can log out) and the database.
    Close(oneshot::Sender<(Option<String>, WidgetDb)>),
}

/// A handle to a widget actor.
#[derive(Clone)]
pub struct WidgetHandle {
    /// The widget id.
    pub id: WidgetId,
    /// The server's base URL.
    pub server: String,
    /// The account's login (lower case).
    pub login: String,
    tx: mpsc::Sender<Cmd>,
}

impl WidgetHandle {
    /// Sends a request and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The widget as shown.
    pub async fn view(&self) -> Result<WidgetView, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::View(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Stops the actor.
    pub async fn close(&self) -> Option<(Option<String>, WidgetDb)> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Close(tx)).await.ok()?;
        rx.await.ok()
    }
}

fn gone() -> RpcError {
    RpcError::new(ErrorCode::WidgetNotFound, "the widget was removed")
}

fn err(code: ErrorCode, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

/// Everything needed to start a widget actor.
pub struct Start {
    /// What its database holds.
    pub stored: Stored,
    /// Its database.
    pub db: WidgetDb,
    /// The account's login.
    pub login: String,
    /// The decrypted key, when already known (new widgets); otherwise it is opened from `stored.sealed`.
    pub key: Option<String>,
    /// The keyring.
    pub vault: Vault,
    /// Where notifications go.
    pub events: broadcast::Sender<Notification>,
}

/// Starts a widget actor and its source.
pub fn spawn(start: Start, tracker: &tokio_util::task::TaskTracker) -> Result<WidgetHandle, String> {
    let remote = Remote::new(&start.stored.server)?;
    let (tx, rx) = mpsc::channel(64);
    // The widget never waits for its source (see `source`): commands go unbounded, events bounded.
    let (source_tx, source_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::channel(256);
    tracker.spawn(crate::source::run_server_source(source_rx, event_tx));
    let s = start.stored;
    let handle = WidgetHandle {
        id: s.id.clone(),
        server: remote.base().to_owned(),
        login: start.login.clone(),
        tx,
    };
    let view = WidgetView {
        id: s.id.clone(),
        server: remote.base().to_owned(),
        account: s.account,
        pins: s.pins,
        mode: s.mode,
        poll_interval_secs: s.poll_interval_secs,
        connection: Connection::Connecting,
        stale: true,
        max_pins: s.max_pins,
        storage: None,
    };
    // The messages typed before the last stop go to the source at once; it sends them when it can.
    for (client_id, to, _, text) in &s.outbox {
        let _ = source_tx.send(SourceCmd::Send(Outgoing {
            client_id: client_id.clone(),
            to: *to,
            text: text.clone(),
        }));
    }
    let read_only = start.db.opened_read_only();
    let mut widget = Widget {
        db: start.db,
        vault: start.vault,
        remote,
        view,
        login: start.login,
        key: start.key,
        sealed: s.sealed,
        position: s.position,
        messages: s
            .messages
            .into_iter()
            .map(|(id, from, ts, text)| (id, (from, ts, text)))
            .collect(),
        outbox: s.outbox,
        max_text: 4000,
        source: source_tx,
        events: start.events,
        refreshes: vec![],
        trouble: None,
        unsaved_sent: vec![],
        configured: false,
    };
    if let Some(problem) = read_only {
        widget.trouble = Some(Trouble::new(
            problem,
            "the database could only be opened for reading",
        ));
        let words = storage_words(problem, widget.db.path());
        tracing::error!(widget = %widget.view.id, "{words}");
        widget.view.storage = Some(words);
    }
    tracker.spawn(widget.run(rx, event_rx));
    Ok(handle)
}

struct Widget {
    db: WidgetDb,
    vault: Vault,
    remote: Remote,
    view: WidgetView,
    login: String,
    key: Option<String>,
    sealed: Option<crate::vault::Sealed>,
    position: Option<(u64, u64)>,
    /// Received messages by id: (sender, ts, text).
    messages: BTreeMap<u64, (u64, i64, String)>,
    /// Queued outgoing messages: (client_id, to, ts, text).
    outbox: Vec<(String, u64, i64, String)>,
    max_text: u32,
    source: mpsc::UnboundedSender<SourceCmd>,
    events: broadcast::Sender<Notification>,
    refreshes: Vec<Reply<WidgetView>>,
    /// Set while the database cannot be written.
    trouble: Option<Trouble>,
    /// Acknowledged messages whose removal from the outbox table could not be written yet.
    unsaved_sent: Vec<String>,
    /// Whether the source has been given a configuration (a widget whose database is read-only at
    /// start connects only once it can store what it receives).
    configured: bool,
}

/// A database that cannot be written, and when to try again.
struct Trouble {
    problem: Problem,
    attempt: u32,
    retry_at: Instant,
}

impl Trouble {
    fn new(problem: Problem, why: &str) -> Trouble {
        tracing::debug!(reason = why, "storage trouble");
        Trouble {
            problem,
            attempt: 0,
            retry_at: Instant::now() + Duration::from_secs(1),
        }
    }
}

/// What the user reads about a storage problem.
fn storage_words(problem: Problem, path: &std::path::Path) -> String {
    let dir = path.parent().unwrap_or(path).display();
    match problem {
        Problem::Full => format!(
            "the disk holding {dir} is full: new messages and changes cannot be stored; free some space (pinchat catches up by itself)"
        ),
        Problem::ReadOnly => format!(
            "{dir} cannot be written (read-only): new messages and changes cannot be stored; pinchat catches up once it can write again"
        ),
        Problem::Other => {
            format!("the widget database in {dir} cannot be written; pinchat keeps retrying (see its log)")
        }
    }
}

/// The local API's error for a failed write.
pub fn storage_error(e: &DbError, what: &str) -> RpcError {
    match e.problem() {
        Problem::Full => err(
            ErrorCode::StorageFull,
            format!("{what}: the disk holding pinchat's data is full; free some space and try again"),
        ),
        Problem::ReadOnly => err(
            ErrorCode::StorageReadOnly,
            format!("{what}: pinchat's data directory cannot be written (read-only file system?)"),
        ),
        Problem::Other => err(ErrorCode::StorageFailed, format!("{what}: {e}")),
    }
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Widget {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, mut events: mpsc::Receiver<SourceEvent>) {
        // Serve from the database at once; the key comes from the keyring, which may take a moment.
        if self.key.is_none() {
            match &self.sealed {
                Some(sealed) => match self.vault.open(&self.view.id, sealed).await {
                    Ok(key) => self.key = Some(key),
                    Err(e) => {
                        tracing::warn!(widget = %self.view.id, error = %e, "cannot open the stored key");
                        self.auth_required(format!("{e}; log in again")).await;
                    }
                },
                None => self.auth_required("no stored key; log in again".into()).await,
            }
        }
        if self.trouble.is_none() {
            self.configure_source(vec![]);
        }
        loop {
            let retry_at = self.trouble.as_ref().map(|t| t.retry_at);
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(Cmd::Close(reply)) => {
                        let _ = reply.send((self.key.take(), self.db.clone()));
                        break;
                    }
                    Some(cmd) => self.command(cmd).await,
                },
                Some(event) = events.recv() => self.event(event).await,
                _ = until(retry_at) => self.retry_storage().await,
            }
        }
    }

    /// A write failed: turn stale, say why, and retry with back-off until writing works again.
    fn storage_failed(&mut self, e: &DbError) {
        let problem = e.problem();
        if self.trouble.is_none() {
            tracing::error!(widget = %self.view.id, error = %e,
                "cannot write the widget database; the widget is stale until it can (retrying)");
            self.trouble = Some(Trouble::new(problem, &e.to_string()));
        } else if let Some(t) = &mut self.trouble {
            t.problem = problem;
        }
        let words = storage_words(problem, self.db.path());
        let was_stale = self.view.stale;
        self.view.stale = true;
        if self.view.storage.as_deref() != Some(words.as_str()) {
            self.view.storage = Some(words);
            self.widget_changed();
        } else if !was_stale {
            self.notify_connection();
        }
    }

    /// Tries the disk again; on success, fetches from the server what could not be stored.
    async fn retry_storage(&mut self) {
        match self.db.probe().await {
            Ok(reloaded) => {
                tracing::info!(widget = %self.view.id, "the widget database can be written again; catching up");
                self.trouble = None;
                self.view.storage = None;
                if let Some(stored) = reloaded {
                    self.reload(stored);
                }
                if !self.unsaved_sent.is_empty() && self.persist(Change::default()).await.is_err() {
                    return;
                }
                self.widget_changed();
                if self.configured {
                    let _ = self.source.send(SourceCmd::Resync(self.position));
                } else {
                    self.configure_source(vec![]);
                }
            }
            Err(e) => {
                let problem = e.problem();
                if let Some(t) = &mut self.trouble {
                    t.attempt += 1;
                    t.problem = problem;
                    t.retry_at = Instant::now()
                        + Duration::from_secs(1u64 << t.attempt.min(5)).min(Duration::from_secs(30));
                    tracing::debug!(widget = %self.view.id, error = %e, attempt = t.attempt, "the widget database still cannot be written");
                }
                let words = storage_words(problem, self.db.path());
                if self.view.storage.as_deref() != Some(words.as_str()) {
                    self.view.storage = Some(words);
                    self.widget_changed();
                }
            }
        }
    }

    /// Takes what a database opened read-only could not see (the newest changes were in its WAL).
    fn reload(&mut self, stored: Stored) {
        self.position = stored.position;
        self.view.pins = stored.pins;
        self.view.account = stored.account;
        self.view.mode = stored.mode;
        self.view.poll_interval_secs = stored.poll_interval_secs;
        self.messages = stored
            .messages
            .into_iter()
            .map(|(id, from, ts, text)| (id, (from, ts, text)))
            .collect();
        for (client_id, to, ts, text) in stored.outbox {
            if !self.outbox.iter().any(|o| o.0 == client_id) {
                let _ = self.source.send(SourceCmd::Send(Outgoing {
                    client_id: client_id.clone(),
                    to,
                    text: text.clone(),
                }));
                self.outbox.push((client_id, to, ts, text));
            }
        }
        if stored.sealed.is_some() && stored.sealed != self.sealed {
            self.sealed = stored.sealed;
            self.key = None;
        }
    }

    fn notify_connection(&self) {
        self.notify(Notification::ConnectionChanged {
            widget: self.view.id.clone(),
            connection: self.view.connection,
            stale: self.view.stale,
        });
    }

    fn notify(&self, n: Notification) {
        let _ = self.events.send(n);
    }

    fn widget_changed(&self) {
        self.notify(Notification::WidgetChanged {
            widget: Box::new(self.view.clone()),
        });
    }

    /// A link that is not online can no longer vouch for the data: it turns stale until the next
    /// sync confirms it.
    fn set_connection(&mut self, connection: Connection) {
        let stale = self.view.stale || connection != Connection::Online;
        if self.view.connection != connection || self.view.stale != stale {
            self.view.connection = connection;
            self.view.stale = stale;
            self.notify_connection();
        }
    }

    async fn auth_required(&mut self, message: String) {
        self.set_connection(Connection::AuthRequired);
        self.notify(Notification::AuthRequired {
            widget: self.view.id.clone(),
            message,
        });
    }

    /// Writes a change (with any outbox removals still owed); a failure puts the widget in storage
    /// trouble.
    async fn persist(&mut self, mut change: Change) -> Result<(), DbError> {
        let owed = std::mem::take(&mut self.unsaved_sent);
        change.sent.extend(owed.iter().cloned());
        match self.db.apply(change).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.unsaved_sent = owed;
                self.storage_failed(&e);
                Err(e)
            }
        }
    }

    fn configure_source(&mut self, fresh: Vec<u64>) {
        let Some(key) = self.key.clone() else { return };
        self.configured = true;
        let config = SourceConfig {
            remote: self.remote.clone(),
            key,
            pins: self.view.pins.iter().map(|p| p.id).collect(),
            fresh,
            position: self.position,
            mode: self.view.mode,
            interval: Duration::from_secs(u64::from(self.view.poll_interval_secs)),
        };
        let _ = self.source.send(SourceCmd::Configure(Box::new(config)));
    }

    fn total_unread(&self) -> u32 {
        self.view.pins.iter().map(|p| p.unread).sum()
    }

    fn message_view(&self, id: u64, from: u64, ts: i64, text: &str) -> MessageView {
        MessageView {
            id,
            from,
            to: self.view.account.id,
            ts,
            text: text.to_owned(),
            state: Delivery::Received,
            client_id: None,
        }
    }

    // ---- events from the source ----

    async fn event(&mut self, event: SourceEvent) {
        // What cannot be stored is not shown either; the source sends it again after a resync.
        if self.trouble.is_some()
            && matches!(
                event,
                SourceEvent::Welcome { .. }
                    | SourceEvent::Snapshot { .. }
                    | SourceEvent::Synced { .. }
                    | SourceEvent::Delta { .. }
                    | SourceEvent::Message { .. }
            )
        {
            return;
        }
        match event {
            SourceEvent::Connection(c) => self.set_connection(c),
            SourceEvent::Synced { epoch, cursor } => {
                let change = Change {
                    position: Some((epoch, cursor)),
                    ..Change::default()
                };
                if self.persist(change).await.is_err() {
                    return;
                }
                self.position = Some((epoch, cursor));
                if self.view.stale {
                    self.view.stale = false;
                    self.notify_connection();
                }
            }
            SourceEvent::Welcome {
                epoch: _,
                me,
                max_pins,
                max_text_bytes,
            } => {
                self.max_text = max_text_bytes;
                let mut account = self.view.account.clone();
                for f in &me {
                    match f {
                        Field::Name(v) => account.name.clone_from(v),
                        Field::Avatar(v) => account.avatar.clone_from(v),
                        Field::Signature(v) => account.signature.clone_from(v),
                        Field::State(v) => account.state = *v,
                        Field::Status(v) => account.status.clone_from(v),
                        _ => {}
                    }
                }
                if account != self.view.account || max_pins != self.view.max_pins {
                    let change = Change {
                        account: Some(account.clone()),
                        max_pins: Some(max_pins),
                        ..Change::default()
                    };
                    if self.persist(change).await.is_ok() {
                        self.view.account = account;
                        self.view.max_pins = max_pins;
                        self.widget_changed();
                    }
                }
            }
            SourceEvent::Snapshot { epoch, snapshot } => self.apply_snapshot(epoch, snapshot).await,
            SourceEvent::Delta {
                cursor,
                contact,
                fields,
            } => {
                let epoch = self.position.map_or(0, |p| p.0);
                let Some(i) = self.view.pins.iter().position(|p| p.id == contact) else {
                    return;
                };
                let mut pin = self.view.pins[i].clone();
                for f in &fields {
                    pin.apply(f);
                }
                let change = Change {
                    position: Some((epoch, cursor)),
                    update_pins: vec![pin.clone()],
                    ..Change::default()
                };
                if self.persist(change).await.is_err() {
                    return;
                }
                self.position = Some((epoch, cursor));
                let unread_changed = pin.unread != self.view.pins[i].unread;
                self.view.pins[i] = pin;
                self.notify(Notification::ContactChanged {
                    widget: self.view.id.clone(),
                    contact,
                    fields,
                });
                if unread_changed {
                    self.notify_unread(contact);
                }
            }
            SourceEvent::Message { cursor, message } => {
                let epoch = self.position.map_or(0, |p| p.0);
                let (id, from) = (message.id.0, message.from.0);
                let new = !self.messages.contains_key(&id);
                let change = Change {
                    position: Some((epoch, cursor)),
                    messages: vec![(id, from, message.ts, message.text.clone())],
                    ..Change::default()
                };
                if self.persist(change).await.is_err() {
                    return;
                }
                self.position = Some((epoch, cursor));
                if new {
                    self.messages.insert(id, (from, message.ts, message.text.clone()));
                    self.trim_cache(from);
                    let view = self.message_view(id, from, message.ts, &message.text);
                    self.notify(Notification::MessageReceived {
                        widget: self.view.id.clone(),
                        message: view,
                    });
                }
            }
            SourceEvent::Sent { client_id, id, ts } => {
                self.outbox_done(&client_id, Some((id, ts)), None).await;
            }
            SourceEvent::Rejected { client_id, error } => {
                self.outbox_done(
                    &client_id,
                    None,
                    Some(format!("{}: {}", error.code, error.message)),
                )
                .await;
            }
            SourceEvent::Refreshed => {
                for reply in self.refreshes.drain(..) {
                    let _ = reply.send(Ok(self.view.clone()));
                }
            }
            SourceEvent::AuthRequired(message) => {
                tracing::info!(widget = %self.view.id, "the server refused the key; re-authentication needed");
                self.auth_required(if message.is_empty() {
                    "the server refused the stored key".into()
                } else {
                    message
                })
                .await;
                for reply in self.refreshes.drain(..) {
                    let _ = reply.send(Err(err(
                        ErrorCode::AuthRequired,
                        "log in again with widget.reauth",
                    )));
                }
            }
        }
    }

    fn notify_unread(&self, contact: u64) {
        let unread = self
            .view
            .pins
            .iter()
            .find(|p| p.id == contact)
            .map_or(0, |p| p.unread);
        self.notify(Notification::UnreadChanged {
            widget: self.view.id.clone(),
            contact,
            unread,
            total: self.total_unread(),
        });
    }

    async fn apply_snapshot(&mut self, epoch: u64, snapshot: Snapshot) {
        let mut pins = self.view.pins.clone();
        for update in &snapshot.contacts {
            if let Some(pin) = pins.iter_mut().find(|p| p.id == update.id.0) {
                if snapshot.full {
                    *pin = ContactView {
                        id: update.id.0,
                        ..ContactView::default()
                    };
                }
                for f in &update.fields {
                    pin.apply(f);
                }
            }
        }
        let pinned: HashSet<u64> = pins.iter().map(|p| p.id).collect();
        let new_messages: Vec<_> = snapshot
            .messages
            .iter()
            .filter(|m| pinned.contains(&m.from.0))
            .map(|m| (m.id.0, m.from.0, m.ts, m.text.clone()))
            .collect();
        let change = Change {
            position: Some((epoch, snapshot.cursor)),
            replace_pins: Some(pins.clone()),
            messages: new_messages.clone(),
            ..Change::default()
        };
        if self.persist(change).await.is_err() {
            return;
        }
        self.position = Some((epoch, snapshot.cursor));
        let before = std::mem::replace(&mut self.view.pins, pins);
        let was_stale = self.view.stale;
        self.view.stale = false;
        if snapshot.full || was_stale {
            self.widget_changed();
        } else {
            for update in &snapshot.contacts {
                self.notify(Notification::ContactChanged {
                    widget: self.view.id.clone(),
                    contact: update.id.0,
                    fields: update.fields.clone(),
                });
            }
        }
        for pin in &self.view.pins {
            if before
                .iter()
                .find(|b| b.id == pin.id)
                .is_none_or(|b| b.unread != pin.unread)
            {
                self.notify_unread(pin.id);
            }
        }
        for (id, from, ts, text) in new_messages {
            if self.messages.insert(id, (from, ts, text.clone())).is_none() {
                let view = self.message_view(id, from, ts, &text);
                self.notify(Notification::MessageReceived {
                    widget: self.view.id.clone(),
                    message: view,
                });
            }
        }
        if was_stale {
            self.notify(Notification::ConnectionChanged {
                widget: self.view.id.clone(),
                connection: self.view.connection,
                stale: false,
            });
        }
    }

    async fn outbox_done(&mut self, client_id: &str, sent: Option<(u64, i64)>, error: Option<String>) {
        let Some(i) = self.outbox.iter().position(|o| o.0 == client_id) else {
            return;
        };
        // The server has it: that is the truth whether or not the outbox row can be deleted now. A
        // row left behind is sent again after a restart, and the server ignores the repeat.
        if self.trouble.is_some() {
            self.unsaved_sent.push(client_id.to_owned());
        } else {
            let _ = self
                .persist(Change {
                    sent: vec![client_id.to_owned()],
                    ..Change::default()
                })
                .await;
        }
        let (client_id, to, queued_ts, text) = self.outbox.remove(i);
        let (id, ts, state) = match sent {
            Some((id, ts)) => (id, ts, Delivery::Sent),
            None => (0, queued_ts, Delivery::Failed),
        };
        let message = MessageView {
            id,
            from: self.view.account.id,
            to,
            ts,
            text,
            state,
            client_id: Some(client_id),
        };
        self.notify(Notification::MessageDelivery {
            widget: self.view.id.clone(),
            message,
            error,
        });
    }

    // ---- requests from clients ----

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::View(reply) => {
                let _ = reply.send(self.view.clone());
            }
            Cmd::Contacts(reply) => {
                let result = self.contacts().await;
                let _ = reply.send(result);
            }
            Cmd::Avatar(hash, reply) => self.avatar(hash, reply),
            Cmd::SetPins(pins, reply) => {
                let result = self.set_pins(pins).await;
                let _ = reply.send(result);
            }
            Cmd::Refresh(reply) => {
                if self.key.is_none() || self.view.connection == Connection::AuthRequired {
                    let _ = reply.send(Err(err(
                        ErrorCode::AuthRequired,
                        "log in again with widget.reauth first",
                    )));
                } else if !self.configured {
                    // Not connected yet (the database cannot be written): the state is what it is.
                    let _ = reply.send(Ok(self.view.clone()));
                } else {
                    self.refreshes.push(reply);
                    let _ = self.source.send(SourceCmd::Refresh);
                }
            }
            Cmd::SetMode(mode, interval, reply) => {
                let result = self.set_mode(mode, interval).await;
                let _ = reply.send(result);
            }
            Cmd::Unread(contact, before, limit, reply) => {
                let result = self.unread(contact, before, limit).await;
                let _ = reply.send(result);
            }
            Cmd::History(contact, before, limit, reply) => {
                let result = self.history(contact, before, limit).await;
                let _ = reply.send(result);
            }
            Cmd::Send(contact, text, reply) => {
                let result = self.send(contact, text).await;
                let _ = reply.send(result);
            }
            Cmd::MarkRead(contact, up_to, reply) => {
                let result = self.mark_read(contact, up_to).await;
                let _ = reply.send(result);
            }
            Cmd::Reauth(password, reply) => {
                let result = self.reauth(password).await;
                let _ = reply.send(result);
            }
            Cmd::Close(_) => {}
        }
    }

    fn key(&self) -> Result<String, RpcError> {
        match &self.key {
            Some(k) if self.view.connection != Connection::AuthRequired => Ok(k.clone()),
            _ => Err(err(
                ErrorCode::AuthRequired,
                "the server refused this widget's key: call widget.reauth with the password",
            )),
        }
    }

    /// Maps a server failure to an API error; a refused key also puts the widget in `auth_required`.
    async fn remote_error(&mut self, e: RemoteError) -> RpcError {
        match e {
            RemoteError::Unreachable(why) => err(
                ErrorCode::ServerUnreachable,
                format!("cannot reach {}: {why}", self.remote.base()),
            ),
            RemoteError::Server(e) if e.code.needs_login() => {
                self.auth_required(e.message.clone()).await;
                err(
                    ErrorCode::AuthRequired,
                    format!("{}; call widget.reauth with the password", e.message),
                )
            }
            RemoteError::Server(e) => match e.code {
                WireCode::BadCredentials => err(ErrorCode::BadCredentials, e.message),
                WireCode::PinNotContact | WireCode::MessageNotContact => {
                    err(ErrorCode::NotContact, e.message)
                }
                WireCode::TooManyPins => err(ErrorCode::TooManyPins, e.message),
                _ => err(
                    ErrorCode::ServerError,
                    format!("the server said {}: {}", e.code, e.message),
                ),
            },
            RemoteError::Decode(why) => err(ErrorCode::ServerError, why),
        }
    }

    async fn contacts(&mut self) -> Result<Vec<ContactIdentity>, RpcError> {
        let key = self.key()?;
        match self.remote.contacts(&key).await {
            Ok(list) => Ok(list.contacts.into_iter().map(identity).collect()),
            Err(e) => Err(self.remote_error(e).await),
        }
    }

    /// Fetches an avatar on a task of its own: a panel asks for dozens at once, and the widget keeps
    /// answering meanwhile.
    fn avatar(&self, hash: String, reply: Reply<AvatarView>) {
        if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let _ = reply.send(Err(err(
                ErrorCode::Invalid,
                "an avatar hash is 1 to 128 letters and digits",
            )));
            return;
        }
        let key = match self.key() {
            Ok(k) => k,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let result = match remote.avatar(&key, &hash).await {
                Ok((mime, bytes)) if mime.starts_with("image/") => {
                    use base64::Engine;
                    Ok(AvatarView {
                        mime,
                        data: base64::engine::general_purpose::STANDARD.encode(bytes),
                    })
                }
                Ok((mime, _)) => Err(err(
                    ErrorCode::ServerError,
                    format!("the avatar is not an image ({mime})"),
                )),
                Err(RemoteError::Unreachable(why)) => Err(err(ErrorCode::ServerUnreachable, why)),
                Err(e) => Err(err(ErrorCode::ServerError, e.to_string())),
            };
            let _ = reply.send(result);
        });
    }

    async fn set_pins(&mut self, pins: Vec<u64>) -> Result<WidgetView, RpcError> {
        let mut seen = HashSet::new();
        if let Some(dup) = pins.iter().find(|p| !seen.insert(**p)) {
            return Err(err(ErrorCode::Invalid, format!("contact {dup} is listed twice")));
        }
        if pins.len() > usize::from(self.view.max_pins) {
            return Err(err(
                ErrorCode::TooManyPins,
                format!(
                    "{} contacts picked; the server allows at most {}",
                    pins.len(),
                    self.view.max_pins
                ),
            ));
        }
        let key = self.key()?;
        let contacts = match self.remote.contacts(&key).await {
            Ok(list) => list.contacts,
            Err(e) => return Err(self.remote_error(e).await),
        };
        let mut views = Vec::with_capacity(pins.len());
        let mut fresh = vec![];
        for id in &pins {
            match self.view.pins.iter().find(|p| p.id == *id) {
                Some(existing) => views.push(existing.clone()),
                None => {
                    let c = contacts.iter().find(|c| c.id.0 == *id).ok_or_else(|| {
                        err(
                            ErrorCode::NotContact,
                            format!("account {id} is not a contact of {}", self.login),
                        )
                    })?;
                    views.push(ContactView {
                        id: *id,
                        name: c.name.clone(),
                        avatar: c.avatar.clone(),
                        signature: c.signature.clone(),
                        description: c.description.clone(),
                        ..ContactView::default()
                    });
                    fresh.push(*id);
                }
            }
        }
        if let Err(e) = self
            .persist(Change {
                replace_pins: Some(views.clone()),
                ..Change::default()
            })
            .await
        {
            return Err(storage_error(&e, "the pins could not be saved"));
        }
        self.messages.retain(|_, (from, _, _)| pins.contains(from));
        self.view.pins = views;
        self.widget_changed();
        self.configure_source(fresh);
        Ok(self.view.clone())
    }

    async fn set_mode(&mut self, mode: Mode, interval: Option<u32>) -> Result<WidgetView, RpcError> {
        let interval = interval.unwrap_or(self.view.poll_interval_secs);
        if !(5..=86_400).contains(&interval) {
            return Err(err(
                ErrorCode::Invalid,
                "interval_secs must be between 5 and 86400",
            ));
        }
        if let Err(e) = self
            .persist(Change {
                mode: Some((mode, interval)),
                ..Change::default()
            })
            .await
        {
            return Err(storage_error(&e, "the mode could not be saved"));
        }
        self.view.mode = mode;
        self.view.poll_interval_secs = interval;
        self.widget_changed();
        self.configure_source(vec![]);
        Ok(self.view.clone())
    }

    fn pinned(&self, contact: u64) -> Result<&ContactView, RpcError> {
        self.view.pins.iter().find(|p| p.id == contact).ok_or_else(|| {
            err(
                ErrorCode::NotContact,
                format!("contact {contact} is not pinned to this widget; pin it first"),
            )
        })
    }

    /// The messages behind a contact's unread count: exactly the newest `unread` messages from the
    /// contact — from the cache when it holds them, otherwise completed from the server's history,
    /// page by page — then those before `before`, the newest `limit` of them, oldest first. So the list
    /// and the count agree (offline, the list is what the cache holds).
    async fn unread(
        &mut self,
        contact: u64,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<Vec<MessageView>, RpcError> {
        /// History pages fetched at most for one call (200 messages each).
        const MAX_PAGES: usize = 100;
        let unread = self.pinned(contact)?.unread as usize;
        if let Some(l) = limit
            && l == 0
        {
            return Err(err(ErrorCode::Invalid, "limit must be at least 1"));
        }
        // The cache's messages from the contact after `after`, the newest `unread` of them.
        let cached = |this: &Self, after: u64| -> BTreeMap<u64, (u64, i64, String)> {
            this.messages
                .range(after.saturating_add(1)..)
                .rev()
                .filter(|(_, m)| m.0 == contact)
                .take(unread)
                .map(|(id, m)| (*id, m.clone()))
                .collect()
        };
        // Offline, the cache is the best there is.
        let mut found = cached(self, 0);
        if unread > 0
            && let Ok(key) = self.key()
        {
            // Only the server knows which messages are unread (its read marker), and the cache may have
            // gaps (a long absence resumes with a full snapshot and a few hints): the first page says
            // where the marker is; if the cache holds every message after it, that is the list;
            // otherwise the pages go on until the count is reached.
            let mut fetched: BTreeMap<u64, (u64, i64, String)> = BTreeMap::new();
            let mut page_before = None;
            let mut complete_in_cache = false;
            for page_number in 0..MAX_PAGES {
                let page = match self.remote.history(&key, contact, page_before, 200).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::info!(error = %e, "cannot fetch unread messages; showing the cached ones");
                        break;
                    }
                };
                if page_number == 0 {
                    let in_cache = cached(self, page.read_up_to.0);
                    if in_cache.len() == unread {
                        found = in_cache;
                        complete_in_cache = true;
                        break;
                    }
                }
                for m in page.messages.iter().filter(|m| m.from.0 == contact) {
                    fetched.insert(m.id.0, (m.from.0, m.ts, m.text.clone()));
                }
                let oldest = page.messages.last().map(|m| m.id.0);
                let reached_read = oldest.is_none_or(|o| o <= page.read_up_to.0);
                if fetched.len() >= unread || !page.more || reached_read {
                    break;
                }
                page_before = oldest;
            }
            if !complete_in_cache && !fetched.is_empty() {
                let keep: Vec<(u64, u64, i64, String)> = fetched
                    .iter()
                    .rev()
                    .take(crate::db::KEEP_PER_CONTACT as usize)
                    .map(|(id, (from, ts, text))| (*id, *from, *ts, text.clone()))
                    .collect();
                let change = Change {
                    messages: keep.clone(),
                    ..Change::default()
                };
                if self.persist(change).await.is_ok() {
                    for (id, from, ts, text) in keep {
                        self.messages.insert(id, (from, ts, text));
                    }
                    self.trim_cache(contact);
                }
                found = fetched;
                while found.len() > unread {
                    found.pop_first();
                }
            }
        }
        let before = before.unwrap_or(u64::MAX);
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        let mut list: Vec<MessageView> = found
            .range(..before)
            .rev()
            .take(limit)
            .map(|(id, (from, ts, text))| self.message_view(*id, *from, *ts, text))
            .collect();
        list.reverse();
        Ok(list)
    }

    /// Keeps the newest `db::KEEP_PER_CONTACT` cached messages of a contact, as the database does.
    fn trim_cache(&mut self, contact: u64) {
        let ids: Vec<u64> = self
            .messages
            .iter()
            .rev()
            .filter(|(_, m)| m.0 == contact)
            .skip(crate::db::KEEP_PER_CONTACT as usize)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.messages.remove(&id);
        }
    }

    async fn history(
        &mut self,
        contact: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryView, RpcError> {
        let peer_read = self.pinned(contact)?.peer_read;
        let limit = limit.clamp(1, 200);
        let me = self.view.account.id;
        let mut messages: Vec<MessageView> = if before.is_none() {
            self.outbox
                .iter()
                .rev()
                .filter(|o| o.1 == contact)
                .map(|(client_id, to, ts, text)| MessageView {
                    id: 0,
                    from: me,
                    to: *to,
                    ts: *ts,
                    text: text.clone(),
                    state: Delivery::Queued,
                    client_id: Some(client_id.clone()),
                })
                .collect()
        } else {
            vec![]
        };
        let key = self.key();
        let fetched = match key {
            Ok(key) => self.remote.history(&key, contact, before, limit).await,
            Err(e) => return self.local_history(contact, before, limit, messages).ok_or(e),
        };
        match fetched {
            Ok(page) => {
                messages.extend(page.messages.into_iter().map(|m| MessageView {
                    id: m.id.0,
                    from: m.from.0,
                    to: m.to.0,
                    ts: m.ts,
                    text: m.text,
                    state: if m.from.0 != me {
                        Delivery::Received
                    } else if m.id.0 <= peer_read {
                        Delivery::Read
                    } else {
                        Delivery::Sent
                    },
                    client_id: None,
                }));
                Ok(HistoryView {
                    messages,
                    more: page.more,
                })
            }
            Err(RemoteError::Unreachable(_)) => Ok(self
                .local_history(contact, before, limit, messages)
                .unwrap_or(HistoryView {
                    messages: vec![],
                    more: false,
                })),
            Err(e) => Err(self.remote_error(e).await),
        }
    }

    /// History from the local cache (received messages only), for when the server cannot be reached.
    fn local_history(
        &self,
        contact: u64,
        before: Option<u64>,
        limit: u32,
        mut messages: Vec<MessageView>,
    ) -> Option<HistoryView> {
        let before = before.unwrap_or(u64::MAX);
        let cached: Vec<_> = self
            .messages
            .range(..before)
            .rev()
            .filter(|(_, m)| m.0 == contact)
            .collect();
        let more = cached.len() > limit as usize;
        messages.extend(
            cached
                .into_iter()
                .take(limit as usize)
                .map(|(id, (from, ts, text))| self.message_view(*id, *from, *ts, text)),
        );
        Some(HistoryView { messages, more })
    }

    async fn send(&mut self, contact: u64, text: String) -> Result<MessageView, RpcError> {
        self.pinned(contact)?;
        if text.trim().is_empty() {
            return Err(err(ErrorCode::Invalid, "the message is empty"));
        }
        if text.len() > self.max_text as usize {
            return Err(err(
                ErrorCode::Invalid,
                format!(
                    "the message is {} bytes long; the limit is {}",
                    text.len(),
                    self.max_text
                ),
            ));
        }
        let mut raw = [0u8; 12];
        getrandom::fill(&mut raw).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let client_id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let ts = crate::now_ms();
        if let Err(e) = self.db.queue(client_id.clone(), contact, ts, text.clone()).await {
            self.storage_failed(&e);
            return Err(storage_error(&e, "the message was not queued"));
        }
        self.outbox.push((client_id.clone(), contact, ts, text.clone()));
        let message = MessageView {
            id: 0,
            from: self.view.account.id,
            to: contact,
            ts,
            text: text.clone(),
            state: Delivery::Queued,
            client_id: Some(client_id.clone()),
        };
        self.notify(Notification::MessageDelivery {
            widget: self.view.id.clone(),
            message: message.clone(),
            error: None,
        });
        let _ = self.source.send(SourceCmd::Send(Outgoing {
            client_id,
            to: contact,
            text,
        }));
        Ok(message)
    }

    async fn mark_read(&mut self, contact: u64, up_to: Option<u64>) -> Result<UnreadView, RpcError> {
        self.pinned(contact)?;
        let key = self.key()?;
        let up_to = up_to.unwrap_or(u64::MAX);
        let unread = match self.remote.mark_read(&key, contact, up_to).await {
            Ok(r) => r.unread,
            Err(e) => return Err(self.remote_error(e).await),
        };
        if let Some(i) = self.view.pins.iter().position(|p| p.id == contact)
            && self.view.pins[i].unread != unread
        {
            let mut pin = self.view.pins[i].clone();
            pin.unread = unread;
            if self
                .persist(Change {
                    update_pins: vec![pin.clone()],
                    ..Change::default()
                })
                .await
                .is_ok()
            {
                self.view.pins[i] = pin;
                self.notify(Notification::ContactChanged {
                    widget: self.view.id.clone(),
                    contact,
                    fields: vec![Field::Unread(unread)],
                });
                self.notify_unread(contact);
            }
        }
        Ok(UnreadView { unread })
    }

    async fn reauth(&mut self, password: String) -> Result<WidgetView, RpcError> {
        let login = match self.remote.login(&self.login, &password).await {
            Ok(l) => l,
            Err(e) => return Err(self.remote_error(e).await),
        };
        if login.account.0 != self.view.account.id && self.view.account.id != 0 {
            return Err(err(ErrorCode::Invalid, "that password logged in another account"));
        }
        let sealed = self
            .vault
            .seal(&self.view.id, &login.key)
            .await
            .map_err(|e| err(ErrorCode::KeyringUnavailable, e.to_string()))?;
        if let Err(e) = self
            .persist(Change {
                sealed: Some(sealed.clone()),
                ..Change::default()
            })
            .await
        {
            // The new key works on the server but cannot be kept: revoke it rather than leave it
            // valid and unstored.
            let _ = self.remote.logout(&login.key).await;
            return Err(storage_error(&e, "the new key could not be saved"));
        }
        self.sealed = Some(sealed);
        self.key = Some(login.key);
        self.set_connection(Connection::Connecting);
        self.configure_source(vec![]);
        Ok(self.view.clone())
    }
}

/// A wire identity as the API shows it.
pub fn identity(c: pinchat_proto::http::Identity) -> ContactIdentity {
    ContactIdentity {
        id: c.id.0,
        login: c.login,
        name: c.name,
        avatar: c.avatar,
        signature: c.signature,
        description: c.description,
    }
}
