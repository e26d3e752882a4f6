//! Where a widget's data comes from (claim 12's "information source").
//!
//! A source is a task that owns the network side of one widget and talks to the widget actor through
//! two channels: [`SourceCmd`] in, [`SourceEvent`] out. The widget never sees sockets; it applies events
//! and sends commands, so another kind of source — borrowing a running full client's connection
//! (claims 9 and 12) — can be added beside [`run_server_source`] without touching the widget.
//!
//! **Waiting goes one way.** The source awaits room in the bounded event channel to the widget (so a
//! busy widget slows the source, and through it the socket, instead of queueing without end); the
//! widget never waits for the source: its commands go through an unbounded channel whose volume is
//! bounded by what the widget itself does (one command per configuration change, refresh, or message
//! written to its outbox). A cycle of bounded waits between the two — the widget replaying its outbox
//! into a full command channel while the source waits for room in a full event channel — hung the
//! daemon for good before this rule (ARCHITECTURE.md, invariant 11).
//!
//! **The source owns sending.** It keeps every message it is given ([`SourceCmd::Send`]) until the
//! server acknowledges or refuses it, and sends it again on every new connection; the server's
//! idempotency (client ids) makes a repeat harmless. Sends are paced ([`Pacer`]: below the server's
//! frame rate limit) and windowed (at most [`WINDOW`] unacknowledged), so a thousand messages typed
//! offline drain steadily instead of getting the stream closed for flooding.
//!
//! The server source works in the widget's mode:
//! - **push**: one long-lived WebSocket, binary frames; subscribe with the stored cursor so that a
//!   reconnect resumes without gap or duplicate; a ping every `keepalive_secs` is the only periodic
//!   wake-up, and a ping left unanswered for [`PONG_TIMEOUT`] (or the keepalive, if shorter) ends the
//!   link — a half-open connection is noticed, not trusted; reconnects back off exponentially
//!   (1 s … 60 s) with jitter;
//! - **poll**: `GET /v1/changes` every interval (a `204` when nothing changed);
//! - **manual**: a poll only when asked to refresh.

use crate::model::{Link, Position, UpdateMode};
use crate::remote::{Remote, RemoteError};
use futures_util::{SinkExt, StreamExt};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::error::{CLOSE_TOO_MANY, close_needs_login};
use pinchat_proto::stream::{Ack, ClientFrame, ReqId, Resume, ServerFrame, Snapshot};
use pinchat_proto::{
    AccountId, Cursor, Epoch, ErrorBody, ErrorCode, Field, Message, MessageId, PROTOCOL_VERSION,
};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Most messages sent and not yet acknowledged at once.
pub const WINDOW: usize = 32;
/// Messages per second the source sends at most (the server's default limit is 50 frames per second
/// with bursts of 200; a source that is told off with close code 4429 halves its own rate).
pub const SEND_RATE: f64 = 40.0;
/// The longest a keepalive ping may wait for an answer before the link is declared dead.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one frame may take to leave; a socket that accepts nothing for this long is dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the source needs to know; sent again whenever any of it changes.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// The server.
    pub remote: Remote,
    /// The auth key.
    pub key: String,
    /// Pinned contacts.
    pub pins: Vec<AccountId>,
    /// Pins the widget holds nothing for yet.
    pub fresh: Vec<AccountId>,
    /// Where the widget's state is.
    pub position: Option<Position>,
    /// Update mode.
    pub mode: UpdateMode,
    /// Poll interval.
    pub interval: Duration,
}

/// A message to send, kept by the source until the server acknowledges or refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Idempotency id.
    pub client_id: String,
    /// Recipient.
    pub to: AccountId,
    /// Text.
    pub text: String,
}

/// Commands to a source.
#[derive(Debug)]
pub enum SourceCmd {
    /// New configuration (pins, mode, key…).
    Configure(Box<SourceConfig>),
    /// Send a message (written to the widget's outbox first). Answered by [`SourceEvent::Sent`] or
    /// [`SourceEvent::Rejected`]; a client id the source already holds is ignored.
    Send(Outgoing),
    /// Fetch the current state now; answer with [`SourceEvent::Refreshed`].
    Refresh,
    /// Fetch everything after this position again: the widget could not store what the source gave it
    /// since then (its disk was full or read-only).
    Resync(Option<Position>),
}

/// Events from a source, in the order they happened.
#[derive(Debug)]
pub enum SourceEvent {
    /// The link changed state.
    Connection(Link),
    /// The stream's greeting: the epoch, the account's own fields, the server's limits.
    Welcome {
        /// Database epoch.
        epoch: Epoch,
        /// The account's own fields.
        me: Vec<Field>,
        /// Pin limit.
        max_pins: u16,
        /// Longest text.
        max_text_bytes: u32,
    },
    /// A snapshot (full, or changes since the position).
    Snapshot {
        /// Its epoch.
        epoch: Epoch,
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// The server confirmed that nothing changed up to this position (a poll answered `204`).
    Synced {
        /// Where the server's state is.
        position: Position,
    },
    /// Fields of a pinned contact changed.
    Delta {
        /// Cursor.
        cursor: Cursor,
        /// Contact.
        contact: AccountId,
        /// Changed fields.
        fields: Vec<Field>,
    },
    /// A message from a pinned contact.
    Message {
        /// Cursor.
        cursor: Cursor,
        /// The message.
        message: Message,
    },
    /// The server stored an outgoing message.
    Sent {
        /// Its client id.
        client_id: String,
        /// Server id.
        id: MessageId,
        /// Server time.
        ts: i64,
    },
    /// The server refused an outgoing message for good.
    Rejected {
        /// Its client id.
        client_id: String,
        /// Why.
        error: ErrorBody,
    },
    /// A refresh finished (whatever it found was sent before this).
    Refreshed,
    /// The key was refused; the source waits for a new configuration.
    AuthRequired(String),
}

/// Runs the server source until the command channel closes.
pub async fn run_server_source(
    mut cmds: mpsc::UnboundedReceiver<SourceCmd>,
    events: mpsc::Sender<SourceEvent>,
) {
    let mut source = Source {
        events,
        epoch: None,
        backoff: Backoff::default(),
        refreshes: 0,
        outbox: Outbox::default(),
        pacer: Pacer::new(SEND_RATE),
    };
    // Messages may arrive before the first configuration (the widget hands over its outbox at start).
    let mut config = loop {
        match cmds.recv().await {
            Some(SourceCmd::Configure(c)) => break *c,
            Some(SourceCmd::Send(m)) => source.outbox.add(m),
            Some(SourceCmd::Refresh) => {
                source.refreshes += 1;
                source.refreshed().await;
            }
            Some(SourceCmd::Resync(_)) => {}
            None => return,
        }
    };
    source.epoch = config.position.map(|p| p.epoch);
    loop {
        let next = match config.mode {
            UpdateMode::Push => source.push(&config, &mut cmds).await,
            UpdateMode::Poll | UpdateMode::Manual => source.poll(&config, &mut cmds).await,
        };
        match next {
            Next::Stop => return,
            Next::Reconfigure(c) => config = *c,
            Next::WaitForKey => {
                config = loop {
                    match cmds.recv().await {
                        Some(SourceCmd::Configure(c)) => break *c,
                        Some(SourceCmd::Refresh) => {
                            source.refreshes += 1;
                            source.refreshed().await;
                        }
                        Some(SourceCmd::Send(m)) => source.outbox.add(m),
                        Some(SourceCmd::Resync(position)) => config.position = position,
                        None => return,
                    }
                }
            }
        }
    }
}

enum Next {
    Stop,
    Reconfigure(Box<SourceConfig>),
    WaitForKey,
}

struct Source {
    events: mpsc::Sender<SourceEvent>,
    epoch: Option<u64>,
    backoff: Backoff,
    /// Refreshes asked for and not yet answered: each gets a [`SourceEvent::Refreshed`] after the next
    /// sync, or when the next attempt to reach the server fails — never left waiting.
    refreshes: usize,
    outbox: Outbox,
    pacer: Pacer,
}

/// The messages the source holds until the server answers for them, in the order they were typed.
#[derive(Default)]
struct Outbox {
    entries: VecDeque<Entry>,
}

struct Entry {
    message: Outgoing,
    state: EntryState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryState {
    /// To be sent.
    Waiting,
    /// Sent on the current connection; the answer has not come yet.
    InFlight,
    /// The server could not take it just now; sent again on the next connection.
    Held,
}

impl Outbox {
    fn add(&mut self, message: Outgoing) {
        if !self
            .entries
            .iter()
            .any(|e| e.message.client_id == message.client_id)
        {
            self.entries.push_back(Entry {
                message,
                state: EntryState::Waiting,
            });
        }
    }

    fn waiting(&self) -> bool {
        self.entries.iter().any(|e| e.state == EntryState::Waiting)
    }

    fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == EntryState::InFlight)
            .count()
    }

    /// Marks the oldest waiting message in flight and returns it.
    fn next(&mut self) -> Option<Outgoing> {
        let entry = self.entries.iter_mut().find(|e| e.state == EntryState::Waiting)?;
        entry.state = EntryState::InFlight;
        Some(entry.message.clone())
    }

    fn remove(&mut self, client_id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.message.client_id != client_id);
        self.entries.len() != before
    }

    fn set(&mut self, client_id: &str, state: EntryState) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.message.client_id == client_id) {
            e.state = state;
        }
    }

    /// A new connection: everything unanswered goes again.
    fn reset(&mut self) {
        for e in &mut self.entries {
            e.state = EntryState::Waiting;
        }
    }
}

/// A token bucket for outgoing messages: `rate` per second, bursts of one second's worth.
struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
    }

    /// When the next message may go.
    fn ready_at(&mut self) -> Instant {
        self.refill();
        if self.tokens >= 1.0 {
            Instant::now()
        } else {
            Instant::now() + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }

    /// The server said "too fast": halve the rate (down to one per second).
    fn slow_down(&mut self) {
        self.rate = (self.rate / 2.0).max(1.0);
        self.tokens = self.tokens.min(self.rate);
        tracing::info!(rate = self.rate, "the server limited our rate; sending slower");
    }
}

/// Exponential back-off with jitter: 1, 2, 4 … 60 seconds, each ±25 %.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = 1000u64 << self.attempt.min(6);
        self.attempt += 1;
        let base = base.min(60_000);
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let jitter = (u64::from(u16::from_le_bytes(r)) * base / 2) / u64::from(u16::MAX);
        Duration::from_millis(base * 3 / 4 + jitter)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Source {
    async fn emit(&self, e: SourceEvent) -> bool {
        self.events.send(e).await.is_ok()
    }

    /// Answers every pending refresh.
    async fn refreshed(&mut self) {
        for _ in 0..std::mem::take(&mut self.refreshes) {
            let _ = self.events.send(SourceEvent::Refreshed).await;
        }
    }

    /// Waits out a back-off, unless a command changes the plan.
    async fn wait(
        &mut self,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
        current: &mut SourceConfig,
        delay: Duration,
    ) -> Option<Next> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return None,
                cmd = cmds.recv() => match cmd {
                    None => return Some(Next::Stop),
                    Some(SourceCmd::Configure(c)) => return Some(Next::Reconfigure(c)),
                    // Asking for a refresh while offline means "try now".
                    Some(SourceCmd::Refresh) => {
                        self.refreshes += 1;
                        self.backoff.reset();
                        return None;
                    }
                    Some(SourceCmd::Send(m)) => self.outbox.add(m),
                    Some(SourceCmd::Resync(position)) => current.position = position,
                },
            }
        }
    }

    async fn push(&mut self, config: &SourceConfig, cmds: &mut mpsc::UnboundedReceiver<SourceCmd>) -> Next {
        // What the stream changes as it goes (position, pins re-pinned on the same connection) must
        // survive a reconnect, so it lives here rather than in one stream's loop.
        let mut current = config.clone();
        loop {
            if !self.emit(SourceEvent::Connection(Link::Connecting)).await {
                return Next::Stop;
            }
            match self.connect(&current).await {
                Ok((ws, keepalive)) => {
                    self.backoff.reset();
                    match self.stream(&mut current, ws, keepalive, cmds).await {
                        Ended::Next(next) => return next,
                        Ended::Lost(why) => tracing::info!(reason = %why, "stream lost; reconnecting"),
                    }
                }
                Err(ConnectError::Auth(message)) => {
                    let _ = self.emit(SourceEvent::AuthRequired(message)).await;
                    return Next::WaitForKey;
                }
                Err(ConnectError::Other(why)) => tracing::info!(reason = %why, "cannot connect; will retry"),
            }
            // The server could not be reached: whoever asked for a refresh gets the state as it is.
            self.refreshed().await;
            if !self.emit(SourceEvent::Connection(Link::Offline)).await {
                return Next::Stop;
            }
            let delay = self.backoff.next();
            if let Some(next) = self.wait(cmds, &mut current, delay).await {
                return next;
            }
        }
    }

    async fn connect(&mut self, config: &SourceConfig) -> Result<(Ws, Duration), ConnectError> {
        let mut request = config
            .remote
            .stream_url()
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        let auth = format!("Bearer {}", config.key)
            .parse()
            .map_err(|_| ConnectError::Auth("the stored key is not valid".into()))?;
        request.headers_mut().insert("authorization", auth);
        let connector = if request.uri().scheme_str() == Some("wss") {
            crate::remote::stream_tls().map(tokio_tungstenite::Connector::Rustls)
        } else {
            Some(tokio_tungstenite::Connector::Plain)
        };
        let connect = tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
        let (mut ws, _) = match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Err(_) => return Err(ConnectError::Other("timed out".into())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r)))
                if r.status().as_u16() == 401 || r.status().as_u16() == 403 =>
            {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(ConnectError::Auth(body));
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Ok(Ok(x)) => x,
        };
        send(
            &mut ws,
            &ClientFrame::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .await
        .map_err(ConnectError::Other)?;
        let welcome = tokio::time::timeout(Duration::from_secs(15), next_frame(&mut ws))
            .await
            .map_err(|_| ConnectError::Other("no welcome within 15 s".into()))?;
        match welcome {
            Ok(Incoming::Frame(ServerFrame::Welcome(w))) => {
                self.epoch = Some(w.epoch);
                let keepalive = Duration::from_secs(u64::from(w.keepalive_secs.max(5)));
                let event = SourceEvent::Welcome {
                    epoch: w.epoch,
                    me: w.me,
                    max_pins: w.limits.max_pins,
                    max_text_bytes: w.limits.max_text_bytes,
                };
                if !self.emit(event).await {
                    return Err(ConnectError::Other("widget gone".into()));
                }
                Ok((ws, keepalive))
            }
            Ok(Incoming::Frame(ServerFrame::Error { error, .. })) if error.code.needs_login() => {
                Err(ConnectError::Auth(error.message))
            }
            Ok(Incoming::Frame(other)) => {
                Err(ConnectError::Other(format!("expected welcome, got {other:?}")))
            }
            Ok(Incoming::Pong) => Err(ConnectError::Other("expected welcome, got a pong".into())),
            Err(Closed::Auth(m)) => Err(ConnectError::Auth(m)),
            Err(Closed::RateLimited(m) | Closed::Other(m)) => Err(ConnectError::Other(m)),
        }
    }

    async fn stream(
        &mut self,
        current: &mut SourceConfig,
        mut ws: Ws,
        keepalive: Duration,
        cmds: &mut mpsc::UnboundedReceiver<SourceCmd>,
    ) -> Ended {
        let mut next_req: ReqId = 1;
        // Requests that sent a message, by request id → the message's client id.
        let mut sends: HashMap<ReqId, String> = HashMap::new();
        // Whatever this connection did not finish goes again on the next one.
        self.outbox.reset();

        let subscribe = |req: ReqId, current: &SourceConfig, epoch: Option<u64>| {
            let resume = current
                .position
                .filter(|p| Some(p.epoch) == epoch)
                .map(|p| Resume {
                    epoch: p.epoch,
                    cursor: p.cursor,
                    fresh: current.fresh.clone(),
                });
            ClientFrame::Subscribe {
                req,
                sub: 0,
                pins: current.pins.clone(),
                resume,
            }
        };
        let first = subscribe(next_req, current, self.epoch);
        next_req += 1;
        if let Err(e) = send(&mut ws, &first).await {
            return Ended::Lost(e);
        }
        let mut online = false;
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Armed by a ping, disarmed by anything the server sends.
        let mut answer_due: Option<Instant> = None;
        let pong_timeout = PONG_TIMEOUT.min(keepalive);
        loop {
            let send_at = (online && self.outbox.waiting() && self.outbox.in_flight() < WINDOW)
                .then(|| self.pacer.ready_at());
            tokio::select! {
                incoming = next_frame(&mut ws) => {
                    answer_due = None;
                    let frame = match incoming {
                        Ok(Incoming::Frame(f)) => f,
                        Ok(Incoming::Pong) => continue,
                        Err(Closed::Auth(m)) => {
                            let _ = self.emit(SourceEvent::AuthRequired(m)).await;
                            return Ended::Next(Next::WaitForKey);
                        }
                        Err(Closed::RateLimited(m)) => {
                            self.pacer.slow_down();
                            return Ended::Lost(m);
                        }
                        Err(Closed::Other(e)) => return Ended::Lost(e),
                    };
                    let epoch = self.epoch.unwrap_or(0);
                    let event = match frame {
                        ServerFrame::Snapshot(snapshot) => {
                            current.position = Some(Position { epoch, cursor: snapshot.cursor });
                            current.fresh.clear();
                            let ev = SourceEvent::Snapshot { epoch, snapshot };
                            if !self.emit(ev).await {
                                return Ended::Next(Next::Stop);
                            }
                            if !online {
                                online = true;
                                if !self.emit(SourceEvent::Connection(Link::Online)).await {
                                    return Ended::Next(Next::Stop);
                                }
                            }
                            self.refreshed().await;
                            continue;
                        }
                        ServerFrame::Delta { cursor, contact, fields, .. } => {
                            current.position = Some(Position { epoch, cursor });
                            SourceEvent::Delta { cursor, contact, fields }
                        }
                        ServerFrame::Message { cursor, message, .. } => {
                            current.position = Some(Position { epoch, cursor });
                            SourceEvent::Message { cursor, message }
                        }
                        ServerFrame::Ack { req, result: Ack::Sent { id, ts, .. } } => match sends.remove(&req) {
                            Some(client_id) => {
                                self.outbox.remove(&client_id);
                                SourceEvent::Sent { client_id, id, ts }
                            }
                            None => continue,
                        },
                        ServerFrame::Ack { .. } | ServerFrame::Welcome(_) => continue,
                        ServerFrame::Error { req: Some(req), error } => {
                            if let Some(client_id) = sends.remove(&req) {
                                if permanent(&error.code) {
                                    self.outbox.remove(&client_id);
                                    SourceEvent::Rejected { client_id, error }
                                } else {
                                    // Kept, and sent again on the next connection.
                                    tracing::info!(code = %error.code, "the server could not take a message now; it stays queued");
                                    self.outbox.set(&client_id, EntryState::Held);
                                    continue;
                                }
                            } else {
                                tracing::warn!(code = %error.code, message = %error.message, "the server refused a request");
                                continue;
                            }
                        }
                        ServerFrame::Error { req: None, error } => {
                            if error.code.needs_login() {
                                let _ = self.emit(SourceEvent::AuthRequired(error.message)).await;
                                return Ended::Next(Next::WaitForKey);
                            }
                            tracing::warn!(code = %error.code, message = %error.message, "stream error");
                            continue;
                        }
                    };
                    if !self.emit(event).await {
                        return Ended::Next(Next::Stop);
                    }
                }
                cmd = cmds.recv() => match cmd {
                    None => return Ended::Next(Next::Stop),
                    Some(SourceCmd::Configure(new)) => {
                        let same_link = new.key == current.key && new.mode == UpdateMode::Push && new.remote.base() == current.remote.base();
                        if !same_link {
                            let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
                            return Ended::Next(Next::Reconfigure(new));
                        }
                        // Re-pin on the same stream: resume for the pins we hold, full entries for new ones.
                        current.pins.clone_from(&new.pins);
                        current.fresh.clone_from(&new.fresh);
                        let frame = subscribe(next_req, current, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Send(m)) => self.outbox.add(m),
                    Some(SourceCmd::Refresh) => {
                        self.refreshes += 1;
                        let frame = subscribe(next_req, current, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Resync(position)) => {
                        current.position = position;
                        let frame = subscribe(next_req, current, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                },
                _ = until(send_at) => {
                    let Some(m) = self.outbox.next() else { continue };
                    self.pacer.take();
                    let req = next_req;
                    next_req += 1;
                    sends.insert(req, m.client_id.clone());
                    let frame = ClientFrame::Send { req, to: m.to, client_id: m.client_id, text: m.text };
                    if let Err(e) = send(&mut ws, &frame).await {
                        return Ended::Lost(e);
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Ping(Vec::new().into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Ended::Lost(e.to_string()),
                        Err(_) => return Ended::Lost("the connection accepts nothing (keepalive not sent)".into()),
                    }
                    answer_due.get_or_insert(Instant::now() + pong_timeout);
                }
                _ = until(answer_due) => {
                    return Ended::Lost(format!(
                        "no answer to a keepalive within {} s; the connection is dead",
                        pong_timeout.as_secs()
                    ));
                }
            }
        }
    }

    async fn poll(&mut self, config: &SourceConfig, cmds: &mut mpsc::UnboundedReceiver<SourceCmd>) -> Next {
        let mut position = config.position;
        let mut fresh = config.fresh.clone();
        let mut online = false;
        // Sending is allowed until a send cannot reach the server, and again after a back-off or a
        // successful poll.
        let mut can_send = true;
        let mut retry_send: Option<Instant> = None;
        self.outbox.reset();
        // The first round polls at once in poll mode, and in manual mode only when there is nothing to show.
        // A re-pin ([0049]) fetches the new pins at once in every mode.
        let mut due = config.mode == UpdateMode::Poll || position.is_none() || !config.fresh.is_empty();
        let mut next_poll: Option<Instant> = None;

        loop {
            if due {
                due = false;
                let since = position.filter(|p| p.epoch != 0);
                match config
                    .remote
                    .changes(&config.key, &config.pins, since, &fresh)
                    .await
                {
                    Ok((snapshot, epoch, cursor)) => {
                        self.epoch = Some(epoch);
                        if let Some(snapshot) = snapshot {
                            position = Some(Position {
                                epoch,
                                cursor: snapshot.cursor,
                            });
                            fresh.clear();
                            if !self.emit(SourceEvent::Snapshot { epoch, snapshot }).await {
                                return Next::Stop;
                            }
                        } else if position.is_some() {
                            let p = Position { epoch, cursor };
                            position = Some(p);
                            if !self.emit(SourceEvent::Synced { position: p }).await {
                                return Next::Stop;
                            }
                        }
                        self.backoff.reset();
                        can_send = true;
                        retry_send = None;
                        if !online {
                            online = true;
                            if !self.emit(SourceEvent::Connection(Link::Online)).await {
                                return Next::Stop;
                            }
                        }
                    }
                    Err(e) if e.is_auth() => {
                        let _ = self.emit(SourceEvent::AuthRequired(e.to_string())).await;
                        return Next::WaitForKey;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "poll failed");
                        if online || position.is_some() {
                            online = false;
                            if !self.emit(SourceEvent::Connection(Link::Offline)).await {
                                return Next::Stop;
                            }
                        }
                    }
                }
                self.refreshed().await;
                next_poll = match config.mode {
                    UpdateMode::Poll if online => Some(Instant::now() + config.interval),
                    UpdateMode::Poll => Some(Instant::now() + self.backoff.next().min(config.interval)),
                    // Manual: nothing happens until asked.
                    _ => None,
                };
            }
            let send_at = (can_send && self.outbox.waiting()).then(|| self.pacer.ready_at());
            tokio::select! {
                _ = until(next_poll) => due = true,
                _ = until(retry_send) => {
                    retry_send = None;
                    can_send = true;
                    self.outbox.reset();
                }
                cmd = cmds.recv() => match cmd {
                    None => return Next::Stop,
                    Some(SourceCmd::Configure(c)) => return Next::Reconfigure(c),
                    Some(SourceCmd::Refresh) => {
                        due = true;
                        self.refreshes += 1;
                    }
                    Some(SourceCmd::Send(m)) => self.outbox.add(m),
                    Some(SourceCmd::Resync(p)) => {
                        position = p;
                        due = true;
                    }
                },
                _ = until(send_at) => {
                    let Some(m) = self.outbox.next() else { continue };
                    self.pacer.take();
                    match config.remote.send_message(&config.key, m.to, &m.client_id, &m.text).await {
                        Ok(r) => {
                            self.outbox.remove(&m.client_id);
                            let sent = SourceEvent::Sent { client_id: m.client_id, id: r.id, ts: r.ts };
                            if !self.emit(sent).await {
                                return Next::Stop;
                            }
                        }
                        Err(e) if e.is_auth() => {
                            self.outbox.set(&m.client_id, EntryState::Waiting);
                            let _ = self.emit(SourceEvent::AuthRequired(e.to_string())).await;
                            return Next::WaitForKey;
                        }
                        Err(RemoteError::Server(error)) if permanent(&error.code) => {
                            self.outbox.remove(&m.client_id);
                            if !self.emit(SourceEvent::Rejected { client_id: m.client_id, error }).await {
                                return Next::Stop;
                            }
                        }
                        // Kept for the next time the server answers.
                        Err(e) => {
                            tracing::info!(error = %e, "send failed; will retry");
                            self.outbox.set(&m.client_id, EntryState::Held);
                            can_send = false;
                            retry_send = Some(Instant::now() + self.backoff.next());
                        }
                    }
                }
            }
        }
    }
}

enum Ended {
    Next(Next),
    Lost(String),
}

enum ConnectError {
    Auth(String),
    Other(String),
}

/// What arrived on the stream.
enum Incoming {
    Frame(ServerFrame),
    /// A keepalive answer (or any control frame): the link is alive.
    Pong,
}

/// Why the stream ended.
enum Closed {
    /// The key was refused: log in again.
    Auth(String),
    /// Too many frames or connections (close code 4429).
    RateLimited(String),
    /// Anything else: reconnect.
    Other(String),
}

/// Errors that retrying will not cure.
fn permanent(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::MessageNotContact | ErrorCode::TextTooLong | ErrorCode::InvalidRequest
    )
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<(), String> {
    let bytes = codec::encode(Encoding::Binary, frame);
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Binary(bytes.into()))).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the connection accepted nothing for {} s",
            WRITE_TIMEOUT.as_secs()
        )),
    }
}

/// The next frame. Cancel-safe: each step awaits one whole message.
async fn next_frame(ws: &mut Ws) -> Result<Incoming, Closed> {
    match ws.next().await {
        None => Err(Closed::Other("the server closed the stream".into())),
        Some(Err(e)) => Err(Closed::Other(e.to_string())),
        Some(Ok(WsMessage::Binary(b))) => codec::decode_server(Encoding::Binary, &b)
            .map(Incoming::Frame)
            .map_err(|e| Closed::Other(e.to_string())),
        Some(Ok(WsMessage::Close(frame))) => {
            let (code, reason) = frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            // 4429 also means "too many streams for this account" (after a dead link, the server may
            // still hold the old one for a while): only `limit.rate` is about our pace.
            Err(if close_needs_login(code) {
                Closed::Auth(reason)
            } else if code == CLOSE_TOO_MANY && reason.starts_with(ErrorCode::RateLimited.as_str()) {
                Closed::RateLimited(format!("closed by the server ({code} {reason})"))
            } else {
                Closed::Other(format!("closed by the server ({code} {reason})"))
            })
        }
        Some(Ok(_)) => Ok(Incoming::Pong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Outgoing {
        Outgoing {
            client_id: id.into(),
            to: AccountId(2),
            text: id.into(),
        }
    }

    #[test]
    fn the_outbox_keeps_order_ignores_repeats_and_resends_after_a_reset() {
        let mut o = Outbox::default();
        o.add(msg("a"));
        o.add(msg("b"));
        o.add(msg("a"));
        assert_eq!(o.next().unwrap().client_id, "a");
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.next().unwrap().client_id, "b");
        assert!(o.next().is_none());
        assert!(!o.waiting());
        o.set("b", EntryState::Held);
        assert!(o.remove("a"));
        assert!(!o.remove("a"));
        o.reset();
        assert_eq!(o.next().unwrap().client_id, "b");
    }

    #[tokio::test]
    async fn the_pacer_allows_a_burst_then_its_rate_and_slows_down_when_told() {
        let mut p = Pacer::new(10.0);
        for _ in 0..10 {
            assert!(p.ready_at() <= Instant::now() + Duration::from_millis(1));
            p.take();
        }
        let wait = p.ready_at().saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        p.slow_down();
        assert_eq!(p.rate, 5.0);
    }
}
