//! The hub: one task that owns the registry of open streams and their subscriptions, and routes every
//! committed change to exactly the subscriptions that pinned the contact it concerns.
//!
//! It also derives presence: an account's first stream makes it visible, and when its last stream has
//! been gone for the grace period it goes offline. That needs one timer queue for the whole server
//! (entries exist only for accounts inside their grace period), not a timer per connection; likewise one
//! sweep every keepalive interval closes silent streams and keeps the keys of open streams alive.
//!
//! The hub never waits for a stream or for the database: it pushes each stream's events onto the stream's
//! own bounded queue ([`EventQueue`]) and, when that queue is full, drops the event and flags the stream as lagged; the stream then
//! resynchronises itself from the database (see [`crate::stream`]). Presence writes are handed to a
//! separate task through a coalescing map, so a reconnect storm costs a few batched writes.

use crate::calls::{Calls, Delivery};
use crate::metrics::Metrics;
use crate::store::{Change, ChangeBatch, KeyId, Store};
use crate::util::mono_ms;
use pinchat_proto::stream::{Ack, CallId, CallSignal, ServerFrame, SubId};
use pinchat_proto::{AccountId, Cursor, ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

/// A stream's id in the hub.
pub type ConnId = u64;

/// What the hub hands a stream.
#[derive(Debug)]
pub enum Outbound {
    /// One change for one subscription of the stream. The change is shared by every recipient.
    Change {
        /// The subscription it is for.
        sub: SubId,
        /// The change.
        change: Arc<Change>,
    },
    /// A frame about a call the stream takes part in (see [`crate::calls`]).
    Call(Box<ServerFrame>),
}

/// What a stream asks about calls.
#[derive(Debug)]
pub enum CallOp {
    /// Ring `to`.
    Invite {
        /// The callee, already checked to be a contact.
        to: AccountId,
        /// A video call.
        video: bool,
    },
    /// Take part in call `call`.
    Signal {
        /// Which call.
        call: CallId,
        /// What to do.
        signal: CallSignal,
    },
}

/// A stream's queue of routed events: bounded, one producer (the hub), one consumer (the stream).
///
/// Not a `tokio::sync::mpsc` channel: that allocates its first 32-slot block and a cache-line-aligned
/// channel header up front, close to a kilobyte per stream, while most streams sit idle with nothing
/// queued. Here an idle stream's queue costs a few words and grows only while events wait.
#[derive(Debug, Default)]
pub struct EventQueue {
    items: Mutex<std::collections::VecDeque<Outbound>>,
    ready: Notify,
}

impl EventQueue {
    /// Queues `event` unless `cap` events are already waiting; `false` when it was dropped.
    fn push(&self, event: Outbound, cap: usize) -> bool {
        {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            if items.len() >= cap {
                return false;
            }
            items.push_back(event);
        }
        // With no waiter, the permit is kept for the consumer's next wait: no wake-up is lost.
        self.ready.notify_one();
        true
    }

    /// Waits for the next event.
    pub async fn recv(&self) -> Outbound {
        loop {
            if let Some(event) = self.try_recv() {
                return event;
            }
            self.ready.notified().await;
        }
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let event = items.pop_front();
        // Give back what a burst made the queue grow to.
        if items.is_empty() && items.capacity() > 16 {
            items.shrink_to(4);
        }
        event
    }

    /// Drops everything waiting.
    pub fn clear(&self) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        *items = Default::default();
    }
}

/// What the hub and a stream share.
#[derive(Debug)]
pub struct ConnShared {
    /// Events routed to the stream.
    pub events: EventQueue,
    /// Set by the hub when an event had to be dropped because the stream's queue was full.
    pub lagged: AtomicBool,
    /// Cancelled when the stream must end (key revoked or expired, idle); `reason` says why.
    pub kill: CancellationToken,
    reason: OnceLock<ErrorBody>,
    /// When the client last sent anything, in [`mono_ms`].
    pub last_seen: AtomicU64,
}

impl ConnShared {
    fn kill(&self, reason: ErrorBody) {
        let _ = self.reason.set(reason);
        self.kill.cancel();
    }

    /// Why the stream was killed.
    pub fn reason(&self) -> Option<&ErrorBody> {
        self.reason.get()
    }

    /// Records that the client sent something.
    pub fn seen(&self) {
        self.last_seen.store(mono_ms(), Ordering::Relaxed);
    }
}

/// A registered stream, as the stream task holds it.
pub struct Conn {
    /// Its id.
    pub id: ConnId,
    /// Shared flags and the event queue.
    pub shared: Arc<ConnShared>,
}

/// Hub settings.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Most streams per account.
    pub max_per_account: u32,
    /// Most streams in total.
    pub max_total: usize,
    /// Per-stream event queue.
    pub queue: usize,
    /// Presence grace period.
    pub grace: Duration,
    /// Keepalive interval; streams silent for three of these are closed.
    pub keepalive: Duration,
    /// Lifetime of an unused key. An open stream is use: the sweep extends its key's expiry.
    pub key_ttl: Duration,
    /// How long an unanswered call rings.
    pub ring: Duration,
    /// How long a connected call waits for a party whose stream ended.
    pub rejoin: Duration,
}

enum Cmd {
    Connect {
        account: AccountId,
        key: KeyId,
        expires_at: i64,
        reply: oneshot::Sender<Result<Conn, ErrorBody>>,
    },
    Subscribe {
        conn: ConnId,
        sub: SubId,
        pins: Vec<AccountId>,
        reply: oneshot::Sender<Cursor>,
    },
    Unsubscribe {
        conn: ConnId,
        sub: SubId,
    },
    Disconnect {
        conn: ConnId,
    },
    Call {
        conn: ConnId,
        op: CallOp,
        reply: oneshot::Sender<Result<Ack, ErrorBody>>,
    },
}

/// A cheap, clonable handle to the hub task.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Cmd>,
}

impl HubHandle {
    /// Registers a stream for `account`, or refuses it when the account or the server is at its limit.
    pub async fn connect(&self, account: AccountId, key: KeyId, expires_at: i64) -> Result<Conn, ErrorBody> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Connect {
            account,
            key,
            expires_at,
            reply,
        })
        .await?;
        rx.await.map_err(|_| shutting_down())?
    }

    /// Sets subscription `sub`'s pins. Returns the cursor up to which the hub has routed changes: every
    /// change after it will reach the stream.
    pub async fn subscribe(
        &self,
        conn: ConnId,
        sub: SubId,
        pins: Vec<AccountId>,
    ) -> Result<Cursor, ErrorBody> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Subscribe {
            conn,
            sub,
            pins,
            reply,
        })
        .await?;
        rx.await.map_err(|_| shutting_down())
    }

    /// Ends subscription `sub`.
    pub async fn unsubscribe(&self, conn: ConnId, sub: SubId) {
        let _ = self.send(Cmd::Unsubscribe { conn, sub }).await;
    }

    /// Places a call or applies a call signal from stream `conn`.
    pub async fn call(&self, conn: ConnId, op: CallOp) -> Result<Ack, ErrorBody> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Call { conn, op, reply }).await?;
        rx.await.map_err(|_| shutting_down())?
    }

    /// Unregisters a stream. Also done by dropping its [`DisconnectGuard`].
    pub async fn disconnect(&self, conn: ConnId) {
        let _ = self.send(Cmd::Disconnect { conn }).await;
    }

    /// A guard that unregisters the stream when dropped, however the stream task ends.
    pub fn guard(&self, conn: ConnId) -> DisconnectGuard {
        DisconnectGuard {
            hub: self.clone(),
            conn,
        }
    }

    async fn send(&self, cmd: Cmd) -> Result<(), ErrorBody> {
        self.tx.send(cmd).await.map_err(|_| shutting_down())
    }
}

/// Unregisters a stream on drop.
pub struct DisconnectGuard {
    hub: HubHandle,
    conn: ConnId,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        let (hub, conn) = (self.hub.clone(), self.conn);
        // try_send first: in the common case the hub has room and no task is needed.
        if let Err(mpsc::error::TrySendError::Full(cmd)) = hub.tx.try_send(Cmd::Disconnect { conn }) {
            tokio::spawn(async move {
                let _ = hub.tx.send(cmd).await;
            });
        }
    }
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::ShuttingDown,
        "the server is shutting down; reconnect later",
    )
}

struct Entry {
    account: AccountId,
    key: KeyId,
    expires_at: i64,
    shared: Arc<ConnShared>,
    subs: Vec<(SubId, Vec<AccountId>)>,
}

struct Hub {
    config: HubConfig,
    metrics: Arc<Metrics>,
    conns: HashMap<ConnId, Entry>,
    next_id: ConnId,
    /// The streams of each account.
    by_account: HashMap<AccountId, Vec<ConnId>>,
    /// For each account, the (stream, subscription) pairs that pinned it.
    watchers: HashMap<AccountId, Vec<(ConnId, SubId)>>,
    /// Everything up to here has been routed.
    head: Cursor,
    grace: DelayQueue<AccountId>,
    grace_keys: HashMap<AccountId, delay_queue::Key>,
    presence: Arc<PresenceQueue>,
    store: Arc<dyn Store>,
    calls: Calls,
    /// Call deliveries that wait behind a history write, in order.
    call_chain: CallChain,
}

/// Call frames to queue, and the request that caused them to answer.
type CallFrames = (
    Vec<(Arc<ConnShared>, ServerFrame)>,
    Option<oneshot::Sender<Result<Ack, ErrorBody>>>,
    Result<Ack, ErrorBody>,
);

/// The task that records ended calls and then delivers the frames that go with them, one batch after
/// the other; `waiting` counts the batches handed to it and not yet delivered. While it is not zero,
/// every call delivery goes through it too, so that no frame overtakes an earlier one (a new call's
/// `incoming` must not reach a stream before the previous call's `ended`).
struct CallChain {
    tx: mpsc::UnboundedSender<(Vec<crate::store::Finished>, CallFrames)>,
    waiting: Arc<AtomicU64>,
}

fn push_call_frames((frames, reply, result): CallFrames) {
    for (shared, frame) in frames {
        shared.events.push(Outbound::Call(Box::new(frame)), usize::MAX);
    }
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

async fn record_and_deliver(
    mut jobs: mpsc::UnboundedReceiver<(Vec<crate::store::Finished>, CallFrames)>,
    store: Arc<dyn Store>,
    waiting: Arc<AtomicU64>,
) {
    while let Some((finished, frames)) = jobs.recv().await {
        if !finished.is_empty()
            && let Err(e) = store.record_calls(finished).await
        {
            tracing::error!(error = %e, "cannot record the calls that ended; the history will lack them");
        }
        push_call_frames(frames);
        waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the hub and its presence writer. The hub runs until `shutdown` is cancelled or the feed ends.
pub async fn spawn(
    store: Arc<dyn Store>,
    feed: mpsc::Receiver<ChangeBatch>,
    config: HubConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> anyhow::Result<HubHandle> {
    let (_, head) = store.head().await?;
    let presence = Arc::new(PresenceQueue::default());
    tracker.spawn(presence.clone().run(store.clone(), shutdown.clone()));
    let (chain_tx, chain_rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicU64::new(0));
    tracker.spawn(record_and_deliver(chain_rx, store.clone(), waiting.clone()));
    let mut hub = Hub {
        call_chain: CallChain {
            tx: chain_tx,
            waiting,
        },
        calls: Calls::new(config.ring, config.rejoin),
        config,
        metrics,
        conns: HashMap::new(),
        next_id: 1,
        by_account: HashMap::new(),
        watchers: HashMap::new(),
        head,
        grace: DelayQueue::new(),
        grace_keys: HashMap::new(),
        presence,
        store: store.clone(),
    };
    // Nobody is connected to a server that just started. Accounts that were visible get the grace
    // period to reconnect before their contacts see them go offline.
    for account in store.visible_accounts().await? {
        hub.start_grace(account);
    }
    let (tx, rx) = mpsc::channel(1024);
    tracker.spawn(hub.run(rx, feed, shutdown));
    Ok(HubHandle { tx })
}

impl Hub {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut feed: mpsc::Receiver<ChangeBatch>,
        stop: CancellationToken,
    ) {
        let mut calls_out = Vec::new();
        let mut sweep = tokio::time::interval(self.config.keepalive);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(batch) = feed.recv() => self.route(batch),
                Some(cmd) = cmds.recv() => self.command(cmd),
                Some(expired) = futures_util::StreamExt::next(&mut self.grace), if !self.grace.is_empty() => {
                    let account = expired.into_inner();
                    self.grace_keys.remove(&account);
                    if !self.by_account.contains_key(&account) {
                        self.presence.set(account, false);
                    }
                }
                _ = self.calls.expired(&mut calls_out), if self.calls.waiting() => {
                    self.deliver_calls(&mut calls_out, None, Ok(Ack::Done));
                }
                // The sweep only runs while there are streams to sweep.
                _ = sweep.tick(), if !self.conns.is_empty() => self.sweep(),
                else => break,
            }
        }
        // Let the presence writer record who is still connected: at the next start they get the grace
        // period to come back.
        for (_, entry) in self.conns.drain() {
            entry.shared.kill(shutting_down());
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connect {
                account,
                key,
                expires_at,
                reply,
            } => {
                let _ = reply.send(self.connect(account, key, expires_at));
            }
            Cmd::Subscribe {
                conn,
                sub,
                pins,
                reply,
            } => {
                self.set_pins(conn, sub, Some(pins));
                let _ = reply.send(self.head);
            }
            Cmd::Unsubscribe { conn, sub } => self.set_pins(conn, sub, None),
            Cmd::Disconnect { conn } => self.disconnect(conn),
            Cmd::Call { conn, op, reply } => self.call(conn, op, reply),
        }
    }

    /// Applies a stream's call request; the answer goes with the frames it caused (see
    /// [`Hub::deliver_calls`]).
    fn call(&mut self, conn: ConnId, op: CallOp, reply: oneshot::Sender<Result<Ack, ErrorBody>>) {
        let Some(account) = self.conns.get(&conn).map(|e| e.account) else {
            let _ = reply.send(Err(shutting_down()));
            return;
        };
        let mut out = Vec::new();
        let result = match op {
            CallOp::Invite { to, video } => {
                // Only the callee's streams that follow the caller ring (invariant 1).
                let follow = self
                    .by_account
                    .get(&to)
                    .into_iter()
                    .flatten()
                    .filter(|c| {
                        self.conns
                            .get(c)
                            .is_some_and(|e| e.subs.iter().any(|(_, pins)| pins.contains(&account)))
                    })
                    .copied()
                    .collect();
                self.calls
                    .invite(account, conn, to, video, follow, &mut out)
                    .map(|call| Ack::Call { call })
            }
            CallOp::Signal {
                call,
                signal: CallSignal::Rejoin,
            } => self
                .calls
                .rejoin(conn, account, call, &mut out)
                .map(|()| Ack::Done),
            CallOp::Signal { call, signal } => self
                .calls
                .signal(conn, account, call, signal, &mut out)
                .map(|()| Ack::Done),
        };
        self.deliver_calls(&mut out, Some(reply), result);
    }

    /// Queues call frames. Not bounded by the stream's queue: a call carries few frames
    /// ([`crate::calls::MAX_SIGNALS_PER_CALL`] at most), and a dropped one cannot be recovered from the
    /// database the way a change can.
    ///
    /// When calls ended, their records are written first, and the frames queued and the request that
    /// caused them (`reply`, given `result`) answered after the commit, on the call chain's task (the
    /// hub never waits on the store): a client that lists the call history on hearing `ended`, or on
    /// its hang-up being acknowledged, finds the call there. Later frames wait behind them on the same
    /// task, so that the order of call frames is the hub's. A record that cannot be written is
    /// logged; the parties are told all the same.
    fn deliver_calls(
        &mut self,
        out: &mut Vec<Delivery>,
        reply: Option<oneshot::Sender<Result<Ack, ErrorBody>>>,
        result: Result<Ack, ErrorBody>,
    ) {
        let frames: Vec<(Arc<ConnShared>, ServerFrame)> = out
            .drain(..)
            .filter_map(|(conn, frame)| Some((self.conns.get(&conn)?.shared.clone(), frame)))
            .collect();
        let finished = self.calls.take_finished();
        // Nothing to record and nothing waiting to be delivered before these: at once. (Only the hub
        // adds to `waiting`, so a zero here means every earlier batch has been delivered.)
        if finished.is_empty() && self.call_chain.waiting.load(Ordering::Acquire) == 0 {
            push_call_frames((frames, reply, result));
            return;
        }
        self.call_chain.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError((_, frames))) =
            self.call_chain.tx.send((finished, (frames, reply, result)))
        {
            // The chain's task is gone (the server is stopping): deliver unrecorded.
            self.call_chain.waiting.fetch_sub(1, Ordering::AcqRel);
            push_call_frames(frames);
        }
    }

    fn connect(&mut self, account: AccountId, key: KeyId, expires_at: i64) -> Result<Conn, ErrorBody> {
        if self.conns.len() >= self.config.max_total {
            return Err(ErrorBody::new(
                ErrorCode::TooManyConnections,
                "the server holds as many streams as it is configured for; try again later",
            ));
        }
        let held = self.by_account.get(&account).map_or(0, Vec::len);
        if held >= self.config.max_per_account as usize {
            // A stream silent for longer than one and a half keepalive intervals is most likely dead: its
            // client lost the link in a way the server could not see (a frozen NAT), gave up on it and is
            // reconnecting now. The new stream replaces the oldest such stream instead of being refused
            // until the idle sweep (three intervals) would have closed it.
            let now = mono_ms();
            let silent_ms = self.config.keepalive.as_millis() as u64 * 3 / 2;
            let dead = self.by_account[&account]
                .iter()
                .filter_map(|id| {
                    let seen = self.conns.get(id)?.shared.last_seen.load(Ordering::Relaxed);
                    (now.saturating_sub(seen) > silent_ms).then_some((seen, *id))
                })
                .min();
            let Some((_, dead)) = dead else {
                return Err(ErrorBody::new(
                    ErrorCode::TooManyConnections,
                    format!(
                        "this account already has {held} open streams, the most the server allows; close one first"
                    ),
                ));
            };
            if let Some(entry) = self.conns.get(&dead) {
                entry.shared.kill(ErrorBody::new(
                    ErrorCode::IdleTimeout,
                    "replaced by a newer stream of this account after a silence; send a ping every keepalive interval",
                ));
            }
            self.disconnect(dead);
        }
        let streams = self.by_account.entry(account).or_default();
        let id = self.next_id;
        self.next_id += 1;
        streams.push(id);
        if streams.len() == 1 {
            // A reconnect within the grace period is invisible to contacts.
            match self.grace_keys.remove(&account) {
                Some(key) => {
                    self.grace.remove(&key);
                }
                None => self.presence.set(account, true),
            }
        }
        let shared = Arc::new(ConnShared {
            events: EventQueue::default(),
            lagged: AtomicBool::new(false),
            kill: CancellationToken::new(),
            reason: OnceLock::new(),
            last_seen: AtomicU64::new(mono_ms()),
        });
        self.conns.insert(
            id,
            Entry {
                account,
                key,
                expires_at,
                shared: shared.clone(),
                subs: vec![],
            },
        );
        Ok(Conn { id, shared })
    }

    fn disconnect(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        for (sub, pins) in &entry.subs {
            self.unwatch(conn, *sub, pins);
        }
        let mut out = Vec::new();
        self.calls.conn_gone(conn, entry.account, &mut out);
        self.deliver_calls(&mut out, None, Ok(Ack::Done));
        if let Some(streams) = self.by_account.get_mut(&entry.account) {
            streams.retain(|c| *c != conn);
            if streams.is_empty() {
                self.by_account.remove(&entry.account);
                self.start_grace(entry.account);
            }
        }
    }

    fn start_grace(&mut self, account: AccountId) {
        if !self.grace_keys.contains_key(&account) {
            let key = self.grace.insert(account, self.config.grace);
            self.grace_keys.insert(account, key);
        }
    }

    fn set_pins(&mut self, conn: ConnId, sub: SubId, pins: Option<Vec<AccountId>>) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let old = entry
            .subs
            .iter()
            .position(|(s, _)| *s == sub)
            .map(|i| entry.subs.swap_remove(i).1);
        if let Some(old) = old {
            self.unwatch(conn, sub, &old);
        }
        if let Some(pins) = pins {
            for pin in &pins {
                self.watchers.entry(*pin).or_default().push((conn, sub));
            }
            if let Some(entry) = self.conns.get_mut(&conn) {
                entry.subs.push((sub, pins));
            }
        }
    }

    fn unwatch(&mut self, conn: ConnId, sub: SubId, pins: &[AccountId]) {
        for pin in pins {
            if let Some(list) = self.watchers.get_mut(pin) {
                list.retain(|w| *w != (conn, sub));
                if list.is_empty() {
                    self.watchers.remove(pin);
                }
            }
        }
    }

    fn route(&mut self, batch: ChangeBatch) {
        for change in batch.changes {
            let change = Arc::new(change);
            match &*change {
                Change::Fields { account, .. } => {
                    if let Some(list) = self.watchers.get(account) {
                        for &(conn, sub) in list {
                            deliver(&self.conns, &self.metrics, self.config.queue, conn, sub, &change);
                        }
                    }
                }
                Change::Unread { owner, contact, .. } => self.to_account(*owner, *contact, &change),
                Change::PeerRead { reader, peer, .. } => self.to_account(*peer, *reader, &change),
                Change::Message { to, message, .. } => self.to_account(*to, message.from, &change),
                Change::KeysRevoked { account, keys, .. } => {
                    for conn in self.by_account.get(account).into_iter().flatten() {
                        if let Some(entry) = self.conns.get(conn)
                            && keys.contains(&entry.key)
                        {
                            entry.shared.kill(ErrorBody::new(
                                ErrorCode::InvalidKey,
                                "the auth key of this stream was revoked; log in again",
                            ));
                        }
                    }
                }
            }
        }
        self.head = self.head.max(batch.head);
    }

    /// Routes a change meant for `account`'s subscriptions that pinned `about`.
    fn to_account(&self, account: AccountId, about: AccountId, change: &Arc<Change>) {
        for conn in self.by_account.get(&account).into_iter().flatten() {
            let Some(entry) = self.conns.get(conn) else {
                continue;
            };
            for (sub, pins) in &entry.subs {
                if pins.contains(&about) {
                    deliver(&self.conns, &self.metrics, self.config.queue, *conn, *sub, change);
                }
            }
        }
    }

    /// Closes silent streams, and keeps the keys of open streams from expiring: a widget may hold its
    /// stream for months, and that is use of its key.
    fn sweep(&mut self) {
        let now = mono_ms();
        let idle_ms = 3 * self.config.keepalive.as_millis() as u64;
        let wall = crate::util::now_ms();
        let ttl = self.config.key_ttl.as_millis() as i64;
        let mut touch = Vec::new();
        for entry in self.conns.values_mut() {
            let seen = entry.shared.last_seen.load(Ordering::Relaxed);
            if now.saturating_sub(seen) > idle_ms {
                entry.shared.kill(ErrorBody::new(
                    ErrorCode::IdleTimeout,
                    format!(
                        "nothing received for {} s; send a ping every keepalive interval",
                        idle_ms / 1000
                    ),
                ));
            } else if entry.expires_at - wall < ttl / 2 {
                entry.expires_at = wall + ttl;
                touch.push((entry.key, entry.expires_at));
            }
        }
        if !touch.is_empty() {
            let store = self.store.clone();
            tokio::spawn(async move {
                for (key, expires_at) in touch {
                    if let Err(e) = store.touch_key(key, expires_at).await {
                        tracing::warn!(error = %e, "cannot extend the key of an open stream");
                    }
                }
            });
        }
    }
}

fn deliver(
    conns: &HashMap<ConnId, Entry>,
    metrics: &Metrics,
    queue: usize,
    conn: ConnId,
    sub: SubId,
    change: &Arc<Change>,
) {
    let Some(entry) = conns.get(&conn) else { return };
    let event = Outbound::Change {
        sub,
        change: change.clone(),
    };
    if entry.shared.events.push(event, queue) {
        Metrics::inc(&metrics.events_relayed);
    } else {
        // The stream is behind: it will catch up from the database, which holds this change too. The
        // flag is set before the stream can see the queue drained, since the stream checks it after
        // each event it takes.
        entry.shared.lagged.store(true, Ordering::Release);
        entry.shared.events.ready.notify_one();
    }
}

/// Desired connection states waiting to be written; the latest wish per account wins.
#[derive(Default)]
struct PresenceQueue {
    pending: Mutex<HashMap<AccountId, bool>>,
    notify: Notify,
}

impl PresenceQueue {
    fn set(&self, account: AccountId, connected: bool) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account, connected);
        self.notify.notify_one();
    }

    async fn run(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.notify.notified() => {}
            }
            let batch: Vec<(AccountId, bool)> = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .collect();
            if batch.is_empty() {
                continue;
            }
            if let Err(e) = store.set_connected(batch.clone()).await {
                tracing::error!(error = %e, accounts = batch.len(), "cannot record presence; will retry");
                {
                    let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for (account, connected) in batch {
                        pending.entry(account).or_insert(connected);
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => self.notify.notify_one(),
                }
            }
        }
    }
}
