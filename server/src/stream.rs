//! One push stream: the task that serves a client's WebSocket after the upgrade.
//!
//! The task owns the socket. It `select!`s over the client's frames, the events the hub routes to it,
//! a kill signal (key revoked, idle) and server shutdown. Per subscription it remembers the pins, the
//! *floor* (the cursor of the snapshot it last sent; queued events at or below it are already included)
//! and the cursor of the last event it sent. It checks every event against the subscription's pins
//! before sending it: whatever races happen in between, nothing about an unpinned contact leaves.
//!
//! When the hub reports that this stream fell behind (its queue overflowed), the task discards what is
//! queued and sends each subscription a resume snapshot from the database since its last sent cursor:
//! the client ends up exactly where it would have been, with no gap and no duplicate.
//!
//! Every stream ends with an error frame (when the encoding is known) and a close frame whose code and
//! reason carry the error code. When the WebSocket parser gave up in the middle of the client's data (an
//! oversized frame, say), the socket is drained before it is dropped: closing a socket with unread data
//! makes the kernel send a reset, and the client would never read the close frame.

use crate::App;
use crate::auth::Authed;
use crate::hub::{CallOp, Conn, Outbound};
use crate::metrics::Metrics;
use crate::store::{Change, Since};
use crate::util::{mono_ms, truncate_utf8};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{Ack, ClientFrame, ReqId, Resume, ServerFrame, SubId, Welcome};
use pinchat_proto::{AccountId, Cursor, ErrorBody, ErrorCode, Field, PROTOCOL_VERSION};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

/// How long a client has to send `hello` after the upgrade.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for the client's answer to a close frame before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a desynchronised client must be silent before its connection is dropped.
const DRAIN_SILENCE: Duration = Duration::from_millis(200);

/// The socket under a stream: the upgraded HTTP connection, counting the bytes written to it.
pub type Socket = CountingIo<TokioIo<hyper::upgrade::Upgraded>>;
/// A stream's WebSocket. Boxed: async functions keep their arguments and the locals they move them
/// into side by side, and an unboxed WebSocket would be stored three times in every stream's task.
pub type WebSocket = Box<WebSocketStream<Socket>>;

/// An I/O object that adds every byte written to [`Metrics::stream_bytes_sent`]: the exact number of
/// bytes the server put on the wire for streams, WebSocket framing included (TLS overhead excepted).
pub struct CountingIo<T> {
    inner: T,
    metrics: Arc<Metrics>,
}

impl<T> CountingIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, metrics: Arc<Metrics>) -> Self {
        CountingIo { inner, metrics }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.metrics
                .stream_bytes_sent
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a stream ends.
struct Ending {
    error: ErrorBody,
    /// The stream's encoding, when the hello frame got far enough to tell.
    encoding: Option<Encoding>,
    /// The socket still carries unread bytes of data the parser gave up on.
    desync: bool,
}

/// Serves one stream until it ends.
pub async fn serve(mut ws: WebSocket, app: Arc<App>, authed: Authed) {
    app.api.metrics.streams.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&app.api.metrics.streams_opened);
    // Only the state of the idle loop lives in the task for the stream's whole life: the steps before
    // and after it are boxed, so that their (larger) state is allocated only while they run. An idle
    // stream's task is part of the per-connection memory measured in BENCHMARKS.md (server scale).
    let ending = match Box::pin(hello(&mut ws, &app)).await {
        Err(ending) => ending,
        Ok(encoding) => {
            match Box::pin(app.hub.connect(authed.account, authed.key, authed.expires_at)).await {
                Err(error) => Some(Ending {
                    error,
                    encoding: Some(encoding),
                    desync: false,
                }),
                Ok(conn) => {
                    let guard = app.hub.guard(conn.id);
                    let mut session = Session {
                        ws,
                        app: app.clone(),
                        account: authed.account,
                        encoding,
                        conn,
                        subs: vec![],
                        bucket: TokenBucket::new(app.api.config.limits.stream_frames_per_second),
                    };
                    let ending = session.run().await;
                    drop(guard);
                    ws = session.ws;
                    ending
                }
            }
        }
    };
    if let Some(ending) = ending {
        Metrics::inc(&app.api.metrics.errors);
        Box::pin(close(&mut ws, &ending)).await;
    }
    app.api.metrics.streams.fetch_sub(1, Ordering::Relaxed);
}

/// Waits for `hello` and checks its version. The frame kind chooses the encoding.
async fn hello(ws: &mut WebSocket, app: &App) -> Result<Encoding, Option<Ending>> {
    let msg = loop {
        match tokio::time::timeout(HELLO_TIMEOUT, ws.next()).await {
            Err(_) => {
                let error = ErrorBody::new(
                    ErrorCode::Unexpected,
                    "no hello frame within 10 seconds of connecting",
                );
                return Err(Some(Ending {
                    error,
                    encoding: None,
                    desync: false,
                }));
            }
            Ok(None) => return Err(None),
            Ok(Some(Err(e))) => {
                return Err(socket_error(&e).map(|error| Ending {
                    error,
                    encoding: None,
                    desync: true,
                }));
            }
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(msg))) => break msg,
        }
    };
    Metrics::inc(&app.api.metrics.stream_frames_received);
    let (encoding, bytes) = match &msg {
        WsMessage::Binary(b) => (Encoding::Binary, b.as_ref()),
        WsMessage::Text(t) => (Encoding::Json, t.as_bytes()),
        _ => return Err(None),
    };
    let error = match codec::decode_client(encoding, bytes) {
        Ok(ClientFrame::Hello { version }) if version == PROTOCOL_VERSION => return Ok(encoding),
        Ok(ClientFrame::Hello { version }) => ErrorBody::new(
            ErrorCode::VersionUnsupported,
            format!(
                "this server speaks protocol version {PROTOCOL_VERSION}, the client version {version}; \
                 update the client or the server"
            ),
        ),
        Ok(_) => ErrorBody::new(ErrorCode::Unexpected, "the first frame on a stream must be hello"),
        Err(e) => ErrorBody::new(e.code(), e.detail),
    };
    Err(Some(Ending {
        error,
        encoding: Some(encoding),
        desync: false,
    }))
}

/// Sends the error (when the encoding is known) and a close frame, then lets the client answer before
/// the connection is dropped.
async fn close(ws: &mut WebSocket, ending: &Ending) {
    let error = &ending.error;
    if let Some(encoding) = ending.encoding {
        let frame = ServerFrame::Error {
            req: None,
            error: error.clone(),
        };
        let _ = send_frame(ws, encoding, &frame).await;
    }
    let reason = format!("{}: {}", error.code, error.message);
    let reason = truncate_utf8(&reason, 123).to_owned();
    let frame = CloseFrame {
        code: error.code.close_code().into(),
        reason: reason.into(),
    };
    let _ = ws.send(WsMessage::Close(Some(frame))).await;
    if ending.desync {
        // Read and discard what is still coming (the rest of an oversized frame, then the client's
        // close) until the client falls silent.
        let socket = ws.get_mut();
        let mut buf = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_SILENCE, socket.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    } else {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

async fn send_frame(ws: &mut WebSocket, encoding: Encoding, frame: &ServerFrame) -> Result<(), ()> {
    let bytes = codec::encode(encoding, frame);
    let msg = match encoding {
        Encoding::Binary => WsMessage::Binary(bytes.into()),
        // The JSON encoder only produces UTF-8.
        Encoding::Json => WsMessage::Text(String::from_utf8(bytes).map_err(|_| ())?.into()),
    };
    ws.send(msg).await.map_err(|_| ())
}

/// Turns a socket error into the error to close with, or `None` when the connection is simply gone.
fn socket_error(e: &tungstenite::Error) -> Option<ErrorBody> {
    match e {
        tungstenite::Error::Capacity(c) => Some(ErrorBody::new(
            ErrorCode::FrameTooLarge,
            format!("frame too large ({c}); split the data or respect limits.max_frame_bytes"),
        )),
        tungstenite::Error::Utf8(_) => Some(ErrorBody::new(
            ErrorCode::InvalidUtf8,
            "a text frame was not valid UTF-8",
        )),
        tungstenite::Error::Protocol(p) => Some(ErrorBody::new(
            ErrorCode::Malformed,
            format!("WebSocket protocol violation: {p}"),
        )),
        _ => None,
    }
}

struct SubState {
    id: SubId,
    pins: Vec<AccountId>,
    /// A roster subscription: `pins` are every contact the account had when it subscribed.
    roster: bool,
    /// Queued events at or below this cursor are already in the last snapshot.
    floor: Cursor,
    /// The cursor of the last thing sent for this subscription.
    sent: Cursor,
}

struct Session {
    ws: WebSocket,
    app: Arc<App>,
    account: AccountId,
    encoding: Encoding,
    conn: Conn,
    subs: Vec<SubState>,
    bucket: TokenBucket,
}

impl Session {
    /// Runs the stream; returns why it ended, unless the client simply left.
    async fn run(&mut self) -> Option<Ending> {
        let encoding = Some(self.encoding);
        match self.session().await {
            Ok(()) => None,
            Err((error, desync)) => Some(Ending {
                error,
                encoding,
                desync,
            }),
        }
    }

    /// The stream's life; `Ok` when the client closed or vanished, otherwise the error to close with and
    /// whether the socket is desynchronised.
    async fn session(&mut self) -> Result<(), (ErrorBody, bool)> {
        if !Box::pin(self.welcome()).await? {
            return Ok(());
        }
        self.serve_frames().await
    }

    /// Sends the welcome frame; `Ok(false)` when the client is already gone.
    async fn welcome(&mut self) -> Result<bool, (ErrorBody, bool)> {
        let me = match self.app.api.store.me(self.account).await {
            Ok(me) => me,
            Err(e) => return Err((crate::api::store_error(e), false)),
        };
        let (epoch, _) = match self.app.api.store.head().await {
            Ok(h) => h,
            Err(e) => return Err((crate::api::store_error(e), false)),
        };
        let welcome = ServerFrame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            epoch,
            account: self.account,
            me: vec![
                Field::Name(me.identity.name),
                Field::Avatar(me.identity.avatar),
                Field::Signature(me.identity.signature),
                Field::Description(me.identity.description),
                Field::State(me.chosen_state),
                Field::Status(me.status),
            ],
            limits: self.app.api.limits(),
            keepalive_secs: self.app.api.config.keepalive_secs,
        });
        Ok(self.send(&welcome).await.is_ok())
    }

    /// The stream's idle loop: client frames, routed events, kill and shutdown.
    async fn serve_frames(&mut self) -> Result<(), (ErrorBody, bool)> {
        let shutdown = self.app.shutdown.clone();
        let kill = self.conn.shared.kill.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let error = ErrorBody::new(ErrorCode::ShuttingDown, "the server is shutting down; reconnect later");
                    return Err((error, false));
                }
                _ = kill.cancelled() => {
                    let error = self.conn.shared.reason().cloned().unwrap_or_else(|| {
                        ErrorBody::new(ErrorCode::Internal, "the stream was ended by the server")
                    });
                    return Err((error, false));
                }
                msg = self.ws.next() => match msg {
                    None | Some(Ok(WsMessage::Close(_))) => return Ok(()),
                    Some(Err(e)) => return socket_error(&e).map_or(Ok(()), |e| Err((e, true))),
                    Some(Ok(msg)) => {
                        self.conn.shared.seen();
                        // The handlers are boxed so that their state, large and short-lived, is not
                        // part of every idle stream's task (see BENCHMARKS.md, server scale).
                        if let Some(end) = Box::pin(self.inbound(msg)).await {
                            return Err((end, false));
                        }
                    }
                },
                out = self.conn.shared.events.recv() => {
                    if Box::pin(self.outbound(out)).await.is_err() {
                        return Ok(());
                    }
                    if self.conn.shared.lagged.swap(false, Ordering::AcqRel) && Box::pin(self.catch_up()).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), ()> {
        send_frame(&mut self.ws, self.encoding, frame).await
    }

    async fn reply(&mut self, req: Option<ReqId>, result: Result<Ack, ErrorBody>) -> Result<(), ()> {
        let frame = match (req, result) {
            (Some(req), Ok(result)) => ServerFrame::Ack { req, result },
            (None, Ok(_)) => return Ok(()),
            (req, Err(error)) => {
                Metrics::inc(&self.app.api.metrics.errors);
                ServerFrame::Error { req, error }
            }
        };
        self.send(&frame).await
    }

    /// Handles one client frame; returns an error when the stream must end.
    async fn inbound(&mut self, msg: WsMessage) -> Option<ErrorBody> {
        let bytes = match (&msg, self.encoding) {
            (WsMessage::Binary(b), Encoding::Binary) => b.as_ref(),
            (WsMessage::Text(t), Encoding::Json) => t.as_bytes(),
            (WsMessage::Ping(_) | WsMessage::Pong(_), _) => return None,
            (WsMessage::Binary(_) | WsMessage::Text(_), encoding) => {
                let kind = if encoding == Encoding::Binary {
                    "binary"
                } else {
                    "text (JSON)"
                };
                let error = ErrorBody::new(
                    ErrorCode::Malformed,
                    format!("this stream speaks {kind} frames, chosen by the hello frame; do not mix kinds"),
                );
                return self.reply(None, Err(error)).await.err().map(|()| gone());
            }
            _ => return None,
        };
        Metrics::inc(&self.app.api.metrics.stream_frames_received);
        if !self.bucket.take() {
            return Some(ErrorBody::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} frames per second on one stream; slow down",
                    self.app.api.config.limits.stream_frames_per_second
                ),
            ));
        }
        let frame = match codec::decode_client(self.encoding, bytes) {
            Ok(frame) => frame,
            Err(e) => {
                // A frame we cannot read is answered and skipped: the stream and its subscriptions stay.
                let error = ErrorBody::new(e.code(), e.detail);
                return self.reply(None, Err(error)).await.err().map(|()| gone());
            }
        };
        let account = self.account;
        let api = &self.app.api;
        let (req, result) = match frame {
            ClientFrame::Hello { .. } => (
                None,
                Err(ErrorBody::new(
                    ErrorCode::Unexpected,
                    "hello may only be sent once, first",
                )),
            ),
            ClientFrame::Subscribe {
                req,
                sub,
                pins,
                resume,
            } => {
                return self
                    .subscribe(req, sub, Some(pins), resume)
                    .await
                    .err()
                    .map(|()| gone());
            }
            ClientFrame::SubscribeRoster { req, sub, resume } => {
                return self
                    .subscribe(req, sub, None, resume)
                    .await
                    .err()
                    .map(|()| gone());
            }
            ClientFrame::Unsubscribe { req, sub } => {
                self.subs.retain(|s| s.id != sub);
                self.app.hub.unsubscribe(self.conn.id, sub).await;
                (Some(req), Ok(Ack::Done))
            }
            ClientFrame::Send {
                req,
                to,
                client_id,
                text,
            } => (
                Some(req),
                api.send(account, to, &client_id, &text).await.map(|s| Ack::Sent {
                    id: s.id,
                    ts: s.ts,
                    duplicate: s.duplicate,
                }),
            ),
            ClientFrame::MarkRead { req, contact, up_to } => (
                Some(req),
                api.mark_read(account, contact, up_to)
                    .await
                    .map(|unread| Ack::Read { unread }),
            ),
            ClientFrame::SetPresence { req, state, status } => (
                Some(req),
                api.set_presence(account, state, status).await.map(|()| Ack::Done),
            ),
            ClientFrame::CallInvite { req, to, video } => {
                let result = match api.roster(account).await {
                    Ok(contacts) if contacts.contains(&to) => {
                        self.app
                            .hub
                            .call(self.conn.id, CallOp::Invite { to, video })
                            .await
                    }
                    Ok(_) => Err(ErrorBody::new(
                        ErrorCode::CallNotContact,
                        format!("account {to} is not a contact of yours; only contacts can be called"),
                    )),
                    Err(e) => Err(e),
                };
                (Some(req), result)
            }
            ClientFrame::CallSignal { req, call, signal } => (
                Some(req),
                self.app
                    .hub
                    .call(self.conn.id, CallOp::Signal { call, signal })
                    .await,
            ),
        };
        self.reply(req, result).await.err().map(|()| gone())
    }

    /// Creates or replaces subscription `sub`: for `pins`, or with `None` for every contact of the
    /// account (a roster subscription).
    async fn subscribe(
        &mut self,
        req: ReqId,
        sub: SubId,
        pins: Option<Vec<AccountId>>,
        resume: Option<Resume>,
    ) -> Result<(), ()> {
        let max = self.app.api.config.limits.max_subscriptions_per_connection;
        if sub >= max {
            let error = ErrorBody::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "subscription numbers go from 0 to {}; this server allows {max} per stream",
                    max - 1
                ),
            );
            return self.reply(Some(req), Err(error)).await;
        }
        let roster = pins.is_none();
        let pins = match pins {
            Some(pins) => pins,
            None => match self.app.api.roster(self.account).await {
                Ok(contacts) => contacts,
                Err(e) => return self.reply(Some(req), Err(e)).await,
            },
        };
        // Register with the hub first, so that every change after the snapshot reaches us; the snapshot
        // is read afterwards and its cursor becomes the floor below which queued events are dropped.
        let previous = self
            .subs
            .iter()
            .position(|s| s.id == sub)
            .map(|i| self.subs.swap_remove(i));
        if let Err(e) = self.app.hub.subscribe(self.conn.id, sub, pins.clone()).await {
            return self.reply(Some(req), Err(e)).await;
        }
        let since = resume.map(|r| Since {
            epoch: r.epoch,
            cursor: r.cursor,
            fresh: r.fresh,
        });
        let synced = self
            .app
            .api
            .sync_subscription(self.account, &pins, since, roster)
            .await;
        match synced {
            Ok(mut snapshot) => {
                snapshot.sub = sub;
                self.subs.push(SubState {
                    id: sub,
                    pins,
                    roster,
                    floor: snapshot.cursor,
                    sent: snapshot.cursor,
                });
                self.send(&ServerFrame::Snapshot(snapshot)).await
            }
            Err(error) => {
                // Put the hub back the way it was; a failed re-pin leaves the old subscription working.
                match previous {
                    Some(prev) => {
                        let _ = self.app.hub.subscribe(self.conn.id, sub, prev.pins.clone()).await;
                        self.subs.push(prev);
                    }
                    None => self.app.hub.unsubscribe(self.conn.id, sub).await,
                }
                self.reply(Some(req), Err(error)).await
            }
        }
    }

    /// Sends one routed event, if it is for a live subscription, above its floor and about one of its
    /// pins; or a call frame (the hub decided who gets those).
    async fn outbound(&mut self, out: Outbound) -> Result<(), ()> {
        let me = self.account;
        let (sub, change) = match out {
            Outbound::Change { sub, change } => (sub, change),
            Outbound::Call(frame) => return self.send(&frame).await,
        };
        let Some(sub) = self.subs.iter_mut().find(|s| s.id == sub) else {
            return Ok(());
        };
        let cursor = change.cursor();
        if cursor <= sub.floor {
            return Ok(());
        }
        let pinned = |a: &AccountId| sub.pins.contains(a);
        let frame = match &*change {
            Change::Fields { account, fields, .. } if pinned(account) => ServerFrame::Delta {
                sub: sub.id,
                cursor,
                contact: *account,
                fields: fields.clone(),
            },
            Change::Unread {
                owner,
                contact,
                unread,
                ..
            } if *owner == me && pinned(contact) => ServerFrame::Delta {
                sub: sub.id,
                cursor,
                contact: *contact,
                fields: vec![Field::Unread(*unread)],
            },
            Change::PeerRead {
                reader, peer, up_to, ..
            } if *peer == me && pinned(reader) => ServerFrame::Delta {
                sub: sub.id,
                cursor,
                contact: *reader,
                fields: vec![Field::PeerRead(*up_to)],
            },
            Change::Message { to, message, .. } if *to == me && pinned(&message.from) => {
                ServerFrame::Message {
                    sub: sub.id,
                    cursor,
                    message: message.clone(),
                }
            }
            _ => return Ok(()),
        };
        sub.sent = cursor;
        self.send(&frame).await
    }

    /// Replaces a lost backlog with a resume snapshot per subscription.
    async fn catch_up(&mut self) -> Result<(), ()> {
        Metrics::inc(&self.app.api.metrics.stream_resyncs);
        self.conn.shared.events.clear();
        let (epoch, _) = self.app.api.store.head().await.map_err(|_| ())?;
        for i in 0..self.subs.len() {
            let s = &self.subs[i];
            let (id, pins, sent, roster) = (s.id, s.pins.clone(), s.sent, s.roster);
            let since = Some(Since {
                epoch,
                cursor: sent,
                fresh: vec![],
            });
            match self
                .app
                .api
                .sync_subscription(self.account, &pins, since, roster)
                .await
            {
                Ok(mut snapshot) => {
                    snapshot.sub = id;
                    self.subs[i].floor = snapshot.cursor;
                    self.subs[i].sent = snapshot.cursor;
                    self.send(&ServerFrame::Snapshot(snapshot)).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resynchronise a lagging stream; closing it");
                    return Err(());
                }
            }
        }
        Ok(())
    }
}

/// The "error" of a stream whose client vanished: nothing more can be sent.
fn gone() -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, "connection lost")
}

/// Allows `rate` frames per second on average and bursts of four times that.
struct TokenBucket {
    rate: u64,
    tokens_milli: u64,
    last: u64,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        let rate = u64::from(rate);
        TokenBucket {
            rate,
            tokens_milli: 4 * rate * 1000,
            last: mono_ms(),
        }
    }

    fn take(&mut self) -> bool {
        let now = mono_ms();
        let cap = 4 * self.rate * 1000;
        self.tokens_milli = (self.tokens_milli + (now - self.last) * self.rate).min(cap);
        self.last = now;
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}
