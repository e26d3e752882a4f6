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

use crate::model::{Link, Position, UpdateMode, Via};
mod outbox;
mod poll;
mod push;

use outbox::{Backoff, EntryState, Outbox, Pacer};

use crate::borrow::{FullClient, FullClients};
use crate::remote::{Remote, RemoteError, StreamRefused};
use futures_util::{SinkExt, StreamExt};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::error::{CLOSE_TOO_MANY, close_needs_login};
use pinchat_proto::stream::{
    Ack, CallEvent, CallId, CallSignal, ClientFrame, ReqId, Resume, ServerFrame, Snapshot, Welcome,
};
use pinchat_proto::{
    AccountId, Cursor, Epoch, ErrorBody, ErrorCode, Field, Message, MessageId, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

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
    /// The bound account's id, once the server has said it: a full client of this account on this
    /// server may carry the widget.
    pub account: Option<AccountId>,
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
    /// Place a call or signal in one. Only an open push stream carries calls; otherwise the reply is
    /// `call.unavailable` at once.
    Call(CallRequest),
}

/// A call request and where its answer goes.
#[derive(Debug)]
pub struct CallRequest {
    /// What to ask.
    pub op: CallOp,
    /// The server's answer: the call's number for an invite, `None` for a signal.
    pub reply: crate::widget::Reply<Option<CallId>>,
}

/// What a call request asks.
#[derive(Debug)]
pub enum CallOp {
    /// Ring a contact.
    Invite {
        /// The contact.
        to: AccountId,
        /// A video call.
        video: bool,
    },
    /// Take part in a call.
    Signal {
        /// Which call.
        call: CallId,
        /// What to do.
        signal: CallSignal,
    },
}

impl CallRequest {
    /// Answers that no stream is open to carry the call.
    pub fn unavailable(self) {
        let _ = self.reply.send(Err(crate::error::WidgetError::Call(
            ErrorCode::CallUnavailable,
            "this widget has no open push connection to the server (offline, or in poll or manual mode); \
             calls need one"
                .into(),
        )));
    }
}

/// Events from a source, in the order they happened.
#[derive(Debug)]
pub enum SourceEvent {
    /// The link changed state.
    Connection(Link),
    /// The link is now carried by this connection (the daemon's own, or a full client's).
    Carrier(Via),
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
    /// Something happened to a call this widget's stream takes part in.
    Call {
        /// Which call.
        call: CallId,
        /// The other party.
        peer: AccountId,
        /// What happened.
        event: CallEvent,
    },
    /// A refresh finished (whatever it found was sent before this).
    Refreshed,
    /// The key was refused; the source waits for a new configuration.
    AuthRequired(String),
}

/// Runs the server source until the command channel closes. In push mode it borrows the connection
/// of a full client in `full` that is logged in as the widget's account, when one runs.
pub async fn run_server_source(
    mut cmds: mpsc::UnboundedReceiver<SourceCmd>,
    events: mpsc::Sender<SourceEvent>,
    full: FullClients,
) {
    let mut source = Source {
        events,
        full,
        shunned: None,
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
            Some(SourceCmd::Call(c)) => c.unavailable(),
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
                        Some(SourceCmd::Call(c)) => c.unavailable(),
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
    /// Running full clients (borrowing).
    full: FullClients,
    /// A full client whose link just failed or left, and until when it is not tried again (the
    /// widget takes its own connection meanwhile; a change in the running full clients lifts it).
    shunned: Option<(u32, Instant)>,
    epoch: Option<u64>,
    backoff: Backoff,
    /// Refreshes asked for and not yet answered: each gets a [`SourceEvent::Refreshed`] after the next
    /// sync, or when the next attempt to reach the server fails — never left waiting.
    refreshes: usize,
    outbox: Outbox,
    pacer: Pacer,
}

/// The stream a source runs on: its own WebSocket to the server, or one to a full client's local
/// endpoint, which speaks the same frames (`pinchat_ipc::full`).
enum Ws {
    Server(Box<crate::remote::ServerStream>),
    Full(Box<tokio_tungstenite::WebSocketStream<pinchat_ipc::transport::Stream>>),
}

impl Ws {
    async fn send(&mut self, m: WsMessage) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        match self {
            Ws::Server(ws) => ws.send(m).await,
            Ws::Full(ws) => ws.send(m).await,
        }
    }

    /// Cancel-safe, as the streams it wraps.
    async fn next(&mut self) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
        match self {
            Ws::Server(ws) => ws.next().await,
            Ws::Full(ws) => ws.next().await,
        }
    }

    /// Closes normally, waiting at most [`WRITE_TIMEOUT`].
    async fn close(&mut self) {
        let close = async {
            match self {
                Ws::Server(ws) => ws.as_mut().close(None).await,
                Ws::Full(ws) => ws.as_mut().close(None).await,
            }
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, close).await;
    }
}

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
                    Some(SourceCmd::Call(c)) => c.unavailable(),
                },
            }
        }
    }
}

enum Ended {
    Next(Next),
    Lost(String),
    /// A full client of the account appeared: go on over its link (opened and greeted), closing the
    /// current one once the first snapshot has come through the new one.
    Borrow(Box<(Opened, Ws)>),
}

/// A connection opened and greeted (`hello` answered by `welcome`).
struct Opened {
    ws: Ws,
    keepalive: Duration,
    via: Via,
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
        None => Err(Closed::Other("the stream ended".into())),
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
            Err(if close_needs_login(code) && matches!(ws, Ws::Server(_)) {
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
