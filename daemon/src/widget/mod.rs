//! One widget: an actor that owns the widget's state in memory, its database and its source.
//!
//! The actor is the only writer of both copies of the state, and it changes them together: each change
//! is written to the database first, then applied in memory, then announced. Requests from clients and
//! events from the source are handled one at a time, in arrival order. It never waits for its source
//! (see `source`); callers wait for it through a bounded mailbox.
//!
//! The state is the daemon's model ([`crate::model`]); what it announces are [`Event`]s and what it
//! answers are [`WidgetState`], [`Message`] and [`WidgetError`] — `ipc.rs` makes the local API of them.
//!
//! The work is split by job: `apply` (what the source delivers), `requests` (what clients ask),
//! `conversation` (unread details and history), `storage` (a disk that cannot be written).

mod apply;
mod calls;
mod conversation;
mod requests;
mod storage;

use crate::db::{Change, DbError, Stored, WidgetDb};
use crate::error::WidgetError;
use crate::events::{Event, History, Message, WidgetState};
use crate::model::{Account, Link, Pin, Position, Queued, Received, UpdateMode, Via};
use crate::remote::Remote;
use crate::source::{Outgoing, SourceCmd, SourceConfig, SourceEvent};
use crate::vault::{Sealed, Vault};
use pinchat_ipc::api::{
    AvatarParams, HistoryParams, MarkReadParams, ReauthParams, SendParams, SetModeParams, SetPinsParams,
    UnreadParams,
};
use pinchat_proto::{AccountId, MessageId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use storage::storage_words;

/// The answer to a request.
pub type Reply<T> = oneshot::Sender<Result<T, WidgetError>>;

/// Requests to a widget, each carrying the local API's parameters for it.
pub enum Cmd {
    /// The widget as shown.
    View(oneshot::Sender<WidgetState>),
    /// The account's contacts.
    Contacts(Reply<Vec<pinchat_proto::http::Identity>>),
    /// An avatar image by hash: its MIME type and bytes.
    Avatar(AvatarParams, Reply<(String, Vec<u8>)>),
    /// The STUN and TURN servers for a call's media.
    Ice(Reply<pinchat_proto::http::IceConfig>),
    /// Re-pin.
    SetPins(SetPinsParams, Reply<WidgetState>),
    /// Refresh now.
    Refresh(Reply<WidgetState>),
    /// Change the update mode.
    SetMode(SetModeParams, Reply<WidgetState>),
    /// Unread details for a contact.
    Unread(UnreadParams, Reply<Vec<Message>>),
    /// A history page.
    History(HistoryParams, Reply<History>),
    /// A page of the call history with a pinned contact.
    CallHistory(HistoryParams, Reply<pinchat_proto::http::CallHistoryPage>),
    /// Send a message.
    Send(SendParams, Reply<Message>),
    /// Mark read; answers the unread count left.
    MarkRead(MarkReadParams, Reply<u32>),
    /// Log in again.
    Reauth(ReauthParams, Reply<WidgetState>),
    /// Place a call or signal in one; answers the call's number for an invite.
    Call(
        crate::source::CallOp,
        Reply<Option<pinchat_proto::stream::CallId>>,
    ),
    /// Stop; answers with the key (so the caller can log out) and the database.
    Close(oneshot::Sender<(Option<String>, WidgetDb)>),
}

/// A handle to a widget actor.
#[derive(Clone)]
pub struct WidgetHandle {
    /// The widget id.
    pub id: String,
    /// The server's base URL.
    pub server: String,
    /// The account's login (lower case).
    pub login: String,
    tx: mpsc::Sender<Cmd>,
}

impl WidgetHandle {
    /// Sends a request and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, WidgetError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// The widget as shown.
    pub async fn view(&self) -> Result<WidgetState, WidgetError> {
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

fn gone() -> WidgetError {
    WidgetError::NotFound("the widget was removed".into())
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
    /// Where events go.
    pub events: broadcast::Sender<Event>,
    /// Running full clients, to borrow a connection from.
    pub full: crate::borrow::FullClients,
}

/// Starts a widget actor and its source.
pub fn spawn(start: Start, tracker: &tokio_util::task::TaskTracker) -> Result<WidgetHandle, String> {
    let remote = Remote::new(&start.stored.server)?;
    let (tx, rx) = mpsc::channel(64);
    // The widget never waits for its source (see `source`): commands go unbounded, events bounded.
    let (source_tx, source_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::channel(256);
    tracker.spawn(crate::source::run_server_source(
        source_rx,
        event_tx,
        start.full.clone(),
    ));
    let s = start.stored;
    let handle = WidgetHandle {
        id: s.id.clone(),
        server: remote.base().to_owned(),
        login: start.login.clone(),
        tx,
    };
    // The messages typed before the last stop go to the source at once; it sends them when it can.
    for q in &s.outbox {
        let _ = source_tx.send(SourceCmd::Send(Outgoing {
            client_id: q.client_id.clone(),
            to: q.to,
            text: q.text.clone(),
        }));
    }
    let read_only = start.db.opened_read_only();
    let mut widget = Widget {
        db: start.db,
        vault: start.vault,
        remote,
        id: s.id,
        login: start.login,
        account: s.account,
        pins: s.pins,
        mode: s.mode,
        poll_interval_secs: s.poll_interval_secs,
        max_pins: s.max_pins,
        link: Link::Connecting,
        via: Via::Own,
        stale: true,
        storage: None,
        key: start.key,
        sealed: s.sealed,
        position: s.position,
        received: s.received.into_iter().map(|r| (r.id, r)).collect(),
        outbox: s.outbox,
        max_text: 4000,
        source: source_tx,
        events: start.events,
        refreshes: vec![],
        trouble: None,
        unsaved_sent: vec![],
        configured: false,
        newly_pinned: HashSet::new(),
        calls: HashMap::new(),
        connected: HashSet::new(),
        owed: HashMap::new(),
        rejoins: tokio::task::JoinSet::new(),
        ringing: Default::default(),
    };
    if let Some(problem) = read_only {
        widget.start_in_trouble(problem);
    }
    tracker.spawn(widget.run(rx, event_rx));
    Ok(handle)
}

/// The actor's state.
struct Widget {
    db: WidgetDb,
    vault: Vault,
    remote: Remote,
    id: String,
    login: String,
    account: Account,
    pins: Vec<Pin>,
    mode: UpdateMode,
    poll_interval_secs: u32,
    max_pins: u16,
    link: Link,
    /// Whose connection carries the widget (its own, or a full client's).
    via: Via,
    stale: bool,
    /// Why nothing can be stored, in words, while that is so.
    storage: Option<String>,
    key: Option<String>,
    sealed: Option<Sealed>,
    position: Option<Position>,
    /// Received messages by id (the newest `db::KEEP_PER_CONTACT` per contact, as on disk).
    received: BTreeMap<MessageId, Received>,
    /// Typed, not yet acknowledged, in the order typed.
    outbox: Vec<Queued>,
    max_text: u32,
    source: mpsc::UnboundedSender<SourceCmd>,
    events: broadcast::Sender<Event>,
    refreshes: Vec<Reply<WidgetState>>,
    /// Set while the database cannot be written.
    trouble: Option<storage::Trouble>,
    /// Acknowledged messages whose removal from the outbox table could not be written yet.
    unsaved_sent: Vec<String>,
    /// Whether the source has been given a configuration (a widget whose database is read-only at
    /// start connects only once it can store what it receives).
    configured: bool,
    /// Contacts pinned whose first state has not arrived yet: the messages that come with it were
    /// waiting before the pin (`backlog` in `message.received`).
    newly_pinned: HashSet<AccountId>,
    /// Live calls on the widget's stream, with their peers.
    calls: HashMap<pinchat_proto::stream::CallId, AccountId>,
    /// The live calls that were answered: they outlive the widget's link dropping.
    connected: HashSet<pinchat_proto::stream::CallId>,
    /// Answered calls whose link dropped, with what the server is owed for each when the link is back.
    owed: HashMap<pinchat_proto::stream::CallId, calls::Owed>,
    /// Claims of calls back from the server after the link came back, with their answers.
    rejoins: tokio::task::JoinSet<calls::Rejoined>,
    /// Incoming calls ringing (not yet accepted by a client of the widget, declined or over), with
    /// their callers and whether they are video calls: a panel that opens meanwhile rings too.
    ringing: std::collections::BTreeMap<pinchat_proto::stream::CallId, (AccountId, bool)>,
}

/// Sleeps until `at`, or forever.
async fn until(at: Option<tokio::time::Instant>) {
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
                Some(sealed) => match self.vault.open(&self.id, sealed).await {
                    Ok(key) => self.key = Some(key),
                    Err(e) => {
                        tracing::warn!(widget = %self.id, error = %e, "cannot open the stored key");
                        self.auth_required(format!("{e}; log in again"));
                    }
                },
                None => self.auth_required("no stored key; log in again".into()),
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
                Some(done) = self.rejoins.join_next(), if !self.rejoins.is_empty() => {
                    if let Ok((call, result)) = done {
                        self.rejoined(call, result);
                    }
                }
                _ = until(retry_at) => self.retry_storage().await,
            }
        }
    }

    /// The widget as shown.
    fn state(&self) -> WidgetState {
        WidgetState {
            id: self.id.clone(),
            server: self.remote.base().to_owned(),
            account: self.account.clone(),
            pins: self.pins.clone(),
            mode: self.mode,
            poll_interval_secs: self.poll_interval_secs,
            link: self.link,
            via: self.via,
            stale: self.stale,
            max_pins: self.max_pins,
            storage: self.storage.clone(),
            ringing: self
                .ringing
                .iter()
                .map(|(&call, &(peer, video))| (call, peer, video))
                .collect(),
        }
    }

    fn notify(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn widget_changed(&self) {
        self.notify(Event::WidgetChanged(Box::new(self.state())));
    }

    fn notify_connection(&self) {
        self.notify(Event::ConnectionChanged {
            widget: self.id.clone(),
            link: self.link,
            via: self.via,
            stale: self.stale,
        });
    }

    /// A link that is not online can no longer vouch for the data: it turns stale until the next
    /// sync confirms it.
    fn set_link(&mut self, link: Link) {
        if link == Link::Online {
            self.claim_calls();
        } else {
            self.calls_lost(link == Link::AuthRequired);
        }
        let stale = self.stale || link != Link::Online;
        if self.link != link || self.stale != stale {
            self.link = link;
            self.stale = stale;
            self.notify_connection();
        }
    }

    fn auth_required(&mut self, message: String) {
        self.set_link(Link::AuthRequired);
        self.notify(Event::AuthRequired {
            widget: self.id.clone(),
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

    fn configure_source(&mut self, fresh: Vec<AccountId>) {
        let Some(key) = self.key.clone() else { return };
        self.configured = true;
        let config = SourceConfig {
            remote: self.remote.clone(),
            key,
            account: (self.account.id.0 != 0).then_some(self.account.id),
            pins: self.pins.iter().map(|p| p.contact).collect(),
            fresh,
            position: self.position,
            mode: self.mode,
            interval: Duration::from_secs(u64::from(self.poll_interval_secs)),
        };
        let _ = self.source.send(SourceCmd::Configure(Box::new(config)));
    }

    fn total_unread(&self) -> u32 {
        self.pins.iter().map(|p| p.unread).sum()
    }

    fn notify_unread(&self, contact: AccountId) {
        let unread = self
            .pins
            .iter()
            .find(|p| p.contact == contact)
            .map_or(0, |p| p.unread);
        self.notify(Event::UnreadChanged {
            widget: self.id.clone(),
            contact,
            unread,
            total: self.total_unread(),
        });
    }

    fn key(&self) -> Result<String, WidgetError> {
        match &self.key {
            Some(k) if self.link != Link::AuthRequired => Ok(k.clone()),
            _ => Err(WidgetError::AuthRequired(
                "the server refused this widget's key: call widget.reauth with the password".into(),
            )),
        }
    }

    fn pinned(&self, contact: AccountId) -> Result<&Pin, WidgetError> {
        self.pins.iter().find(|p| p.contact == contact).ok_or_else(|| {
            WidgetError::NotContact(format!(
                "contact {contact} is not pinned to this widget; pin it first"
            ))
        })
    }

    /// Keeps the newest `db::KEEP_PER_CONTACT` cached messages of a contact, as the database does.
    fn trim_cache(&mut self, contact: AccountId) {
        let ids: Vec<MessageId> = self
            .received
            .values()
            .rev()
            .filter(|m| m.from == contact)
            .skip(crate::db::KEEP_PER_CONTACT as usize)
            .map(|m| m.id)
            .collect();
        for id in ids {
            self.received.remove(&id);
        }
    }
}
