//! Where a widget's data comes from (claim 12's "information source").
//!
//! A source is a task that owns the network side of one widget and talks to the widget actor through
//! two channels: [`SourceCmd`] in, [`SourceEvent`] out. The widget never sees sockets; it applies events
//! and sends commands, so another kind of source — borrowing a running full client's connection
//! (claims 9 and 12) — can be added beside [`run_server_source`] without touching the widget.
//!
//! The server source works in the widget's mode:
//! - **push**: one long-lived WebSocket, binary frames; subscribe with the stored cursor so that a
//!   reconnect resumes without gap or duplicate; a ping every `keepalive_secs` is the only periodic
//!   wake-up; reconnects back off exponentially (1 s … 60 s) with jitter;
//! - **poll**: `GET /v1/changes` every interval (a `204` when nothing changed);
//! - **manual**: a poll only when asked to refresh.
//!
//! Sending goes over the stream in push mode and over HTTP otherwise; the widget's outbox is the durable
//! copy, replayed whenever the source reports `online`, and the server's idempotency (client ids) makes
//! replays harmless.

use crate::remote::{Remote, RemoteError};
use futures_util::{SinkExt, StreamExt};
use pinchat_ipc::api::{Connection, Mode};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{Ack, ClientFrame, ReqId, Resume, ServerFrame, Snapshot};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode, Field, Message, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What the source needs to know; sent again whenever any of it changes.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// The server.
    pub remote: Remote,
    /// The auth key.
    pub key: String,
    /// Pinned contacts.
    pub pins: Vec<u64>,
    /// Pins the widget holds nothing for yet.
    pub fresh: Vec<u64>,
    /// `(epoch, cursor)` the widget's state is at.
    pub position: Option<(u64, u64)>,
    /// Update mode.
    pub mode: Mode,
    /// Poll interval.
    pub interval: Duration,
}

/// Commands to a source.
#[derive(Debug)]
pub enum SourceCmd {
    /// New configuration (pins, mode, key…).
    Configure(Box<SourceConfig>),
    /// Send a message (the widget keeps it in its outbox until [`SourceEvent::Sent`]).
    Send {
        /// Idempotency id.
        client_id: String,
        /// Recipient.
        to: u64,
        /// Text.
        text: String,
    },
    /// Fetch the current state now; answer with [`SourceEvent::Refreshed`].
    Refresh,
}

/// Events from a source, in the order they happened.
#[derive(Debug)]
pub enum SourceEvent {
    /// The link changed state.
    Connection(Connection),
    /// The stream's greeting: the epoch, the account's own fields, the server's limits.
    Welcome {
        /// Database epoch.
        epoch: u64,
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
        epoch: u64,
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Fields of a pinned contact changed.
    Delta {
        /// Cursor.
        cursor: u64,
        /// Contact.
        contact: u64,
        /// Changed fields.
        fields: Vec<Field>,
    },
    /// A message from a pinned contact.
    Message {
        /// Cursor.
        cursor: u64,
        /// The message.
        message: Message,
    },
    /// The server stored an outgoing message.
    Sent {
        /// Its client id.
        client_id: String,
        /// Server id.
        id: u64,
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
pub async fn run_server_source(mut cmds: mpsc::Receiver<SourceCmd>, events: mpsc::Sender<SourceEvent>) {
    let mut config = loop {
        match cmds.recv().await {
            Some(SourceCmd::Configure(c)) => break *c,
            Some(_) => continue,
            None => return,
        }
    };
    let mut source = Source {
        events,
        epoch: config.position.map(|p| p.0),
        backoff: Backoff::default(),
        refreshes: 0,
    };
    loop {
        let next = match config.mode {
            Mode::Push => source.push(&config, &mut cmds).await,
            Mode::Poll | Mode::Manual => source.poll(&config, &mut cmds).await,
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
                        Some(SourceCmd::Send { .. }) => {}
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
    async fn wait(&mut self, cmds: &mut mpsc::Receiver<SourceCmd>, delay: Duration) -> Option<Next> {
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
                    // Queued in the widget's outbox; replayed once online.
                    Some(SourceCmd::Send { .. }) => {}
                },
            }
        }
    }

    async fn push(&mut self, config: &SourceConfig, cmds: &mut mpsc::Receiver<SourceCmd>) -> Next {
        // What the stream changes as it goes (position, pins re-pinned on the same connection) must
        // survive a reconnect, so it lives here rather than in one stream's loop.
        let mut current = config.clone();
        loop {
            if !self.emit(SourceEvent::Connection(Connection::Connecting)).await {
                return Next::Stop;
            }
            match self.connect(config).await {
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
            if !self.emit(SourceEvent::Connection(Connection::Offline)).await {
                return Next::Stop;
            }
            let delay = self.backoff.next();
            if let Some(next) = self.wait(cmds, delay).await {
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
        match next_frame(&mut ws).await {
            Ok(ServerFrame::Welcome(w)) => {
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
            Ok(ServerFrame::Error { error, .. }) if is_auth(&error.code) => {
                Err(ConnectError::Auth(error.message))
            }
            Ok(other) => Err(ConnectError::Other(format!("expected welcome, got {other:?}"))),
            Err(e) => Err(e),
        }
    }

    async fn stream(
        &mut self,
        current: &mut SourceConfig,
        mut ws: Ws,
        keepalive: Duration,
        cmds: &mut mpsc::Receiver<SourceCmd>,
    ) -> Ended {
        let mut next_req: ReqId = 1;
        let mut sends: HashMap<ReqId, String> = HashMap::new();

        let subscribe =
            |req: ReqId, pins: &[u64], position: Option<(u64, u64)>, fresh: &[u64], epoch: Option<u64>| {
                let resume = position.filter(|(e, _)| Some(*e) == epoch).map(|(e, c)| Resume {
                    epoch: e,
                    cursor: c,
                    fresh: fresh.iter().map(|f| AccountId(*f)).collect(),
                });
                ClientFrame::Subscribe {
                    req,
                    sub: 0,
                    pins: pins.iter().map(|p| AccountId(*p)).collect(),
                    resume,
                }
            };
        let first = subscribe(
            next_req,
            &current.pins,
            current.position,
            &current.fresh,
            self.epoch,
        );
        next_req += 1;
        if let Err(e) = send(&mut ws, &first).await {
            return Ended::Lost(e);
        }
        let mut online = false;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = next_frame(&mut ws) => {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(ConnectError::Auth(m)) => {
                            let _ = self.emit(SourceEvent::AuthRequired(m)).await;
                            return Ended::Next(Next::WaitForKey);
                        }
                        Err(ConnectError::Other(e)) => return Ended::Lost(e),
                    };
                    let epoch = self.epoch.unwrap_or(0);
                    let event = match frame {
                        ServerFrame::Snapshot(snapshot) => {
                            current.position = Some((epoch, snapshot.cursor));
                            current.fresh.clear();
                            let ev = SourceEvent::Snapshot { epoch, snapshot };
                            if !self.emit(ev).await {
                                return Ended::Next(Next::Stop);
                            }
                            if !online {
                                online = true;
                                if !self.emit(SourceEvent::Connection(Connection::Online)).await {
                                    return Ended::Next(Next::Stop);
                                }
                            }
                            self.refreshed().await;
                            continue;
                        }
                        ServerFrame::Delta { cursor, contact, fields, .. } => {
                            current.position = Some((epoch, cursor));
                            SourceEvent::Delta { cursor, contact: contact.0, fields }
                        }
                        ServerFrame::Message { cursor, message, .. } => {
                            current.position = Some((epoch, cursor));
                            SourceEvent::Message { cursor, message }
                        }
                        ServerFrame::Ack { req, result: Ack::Sent { id, ts, .. } } => match sends.remove(&req) {
                            Some(client_id) => SourceEvent::Sent { client_id, id: id.0, ts },
                            None => continue,
                        },
                        ServerFrame::Ack { .. } | ServerFrame::Welcome(_) => continue,
                        ServerFrame::Error { req: Some(req), error } => {
                            if let Some(client_id) = sends.remove(&req) {
                                if permanent(&error.code) {
                                    SourceEvent::Rejected { client_id, error }
                                } else {
                                    // Left in the outbox: replayed on the next connection.
                                    continue;
                                }
                            } else {
                                tracing::warn!(code = %error.code, message = %error.message, "the server refused a request");
                                continue;
                            }
                        }
                        ServerFrame::Error { req: None, error } => {
                            if is_auth(&error.code) {
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
                        let same_link = new.key == current.key && new.mode == Mode::Push && new.remote.base() == current.remote.base();
                        if !same_link {
                            let _ = ws.close(None).await;
                            return Ended::Next(Next::Reconfigure(new));
                        }
                        // Re-pin on the same stream: resume for the pins we hold, full entries for new ones.
                        current.pins.clone_from(&new.pins);
                        current.fresh.clone_from(&new.fresh);
                        let frame = subscribe(next_req, &current.pins, current.position, &current.fresh, self.epoch);
                        next_req += 1;
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Send { client_id, to, text }) => {
                        let req = next_req;
                        next_req += 1;
                        sends.insert(req, client_id);
                        let frame = ClientFrame::Send { req, to: AccountId(to), client_id: sends[&req].clone(), text };
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                    Some(SourceCmd::Refresh) => {
                        let req = next_req;
                        next_req += 1;
                        self.refreshes += 1;
                        let frame = subscribe(req, &current.pins, current.position, &current.fresh, self.epoch);
                        if let Err(e) = send(&mut ws, &frame).await {
                            return Ended::Lost(e);
                        }
                    }
                },
                _ = ping.tick() => {
                    if let Err(e) = ws.send(WsMessage::Ping(Vec::new().into())).await {
                        return Ended::Lost(e.to_string());
                    }
                }
            }
        }
    }

    async fn poll(&mut self, config: &SourceConfig, cmds: &mut mpsc::Receiver<SourceCmd>) -> Next {
        let mut position = config.position;
        let mut fresh = config.fresh.clone();
        let mut online = false;
        // The first round polls at once in poll mode, and in manual mode only when there is nothing to show.
        // A re-pin ([0049]) fetches the new pins at once in every mode.
        let mut due = config.mode == Mode::Poll || position.is_none() || !config.fresh.is_empty();

        loop {
            if due {
                let since = position.filter(|(e, _)| *e != 0);
                match config
                    .remote
                    .changes(&config.key, &config.pins, since, &fresh)
                    .await
                {
                    Ok((snapshot, epoch, cursor)) => {
                        self.epoch = Some(epoch);
                        if let Some(snapshot) = snapshot {
                            position = Some((epoch, snapshot.cursor));
                            fresh.clear();
                            if !self.emit(SourceEvent::Snapshot { epoch, snapshot }).await {
                                return Next::Stop;
                            }
                        } else if position.is_some() {
                            position = Some((epoch, cursor));
                        }
                        if !online {
                            online = true;
                            self.backoff.reset();
                            if !self.emit(SourceEvent::Connection(Connection::Online)).await {
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
                            if !self.emit(SourceEvent::Connection(Connection::Offline)).await {
                                return Next::Stop;
                            }
                        }
                    }
                }
                self.refreshed().await;
            }
            let wait = if config.mode == Mode::Poll {
                if online {
                    config.interval
                } else {
                    self.backoff.next().min(config.interval)
                }
            } else {
                // Manual: nothing happens until asked.
                Duration::from_secs(365 * 24 * 3600)
            };
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => {
                        due = true;
                        break;
                    }
                    cmd = cmds.recv() => match cmd {
                        None => return Next::Stop,
                        Some(SourceCmd::Configure(c)) => return Next::Reconfigure(c),
                        Some(SourceCmd::Refresh) => {
                            due = true;
                            self.refreshes += 1;
                            break;
                        }
                        Some(SourceCmd::Send { client_id, to, text }) => {
                            match config.remote.send_message(&config.key, to, &client_id, &text).await {
                                Ok(r) => {
                                    let _ = self.emit(SourceEvent::Sent { client_id, id: r.id.0, ts: r.ts }).await;
                                }
                                Err(e) if e.is_auth() => {
                                    let _ = self.emit(SourceEvent::AuthRequired(e.to_string())).await;
                                    return Next::WaitForKey;
                                }
                                Err(RemoteError::Server(error)) if permanent(&error.code) => {
                                    let _ = self.emit(SourceEvent::Rejected { client_id, error }).await;
                                }
                                // Stays in the outbox for the next time the server answers.
                                Err(e) => tracing::info!(error = %e, "send failed; will retry"),
                            }
                        }
                    },
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

fn is_auth(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidKey | ErrorCode::MissingKey | ErrorCode::AccountDisabled
    )
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
    ws.send(WsMessage::Binary(bytes.into()))
        .await
        .map_err(|e| e.to_string())
}

async fn next_frame(ws: &mut Ws) -> Result<ServerFrame, ConnectError> {
    loop {
        match ws.next().await {
            None => return Err(ConnectError::Other("the server closed the stream".into())),
            Some(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Some(Ok(WsMessage::Binary(b))) => {
                return codec::decode_server(Encoding::Binary, &b)
                    .map_err(|e| ConnectError::Other(e.to_string()));
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(if code == 4401 || code == 4403 {
                    ConnectError::Auth(reason)
                } else {
                    ConnectError::Other(format!("closed by the server ({code} {reason})"))
                });
            }
            Some(Ok(_)) => continue,
        }
    }
}
