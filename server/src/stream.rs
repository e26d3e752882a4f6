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

use crate::App;
use crate::auth::Authed;
use crate::hub::{Conn, Outbound};
use crate::metrics::Metrics;
use crate::store::{Change, Since};
use crate::util::{mono_ms, truncate_utf8};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{Ack, ClientFrame, ReqId, Resume, ServerFrame, SubId, Welcome};
use pinchat_proto::{AccountId, Cursor, ErrorBody, ErrorCode, Field, PROTOCOL_VERSION};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_tungstenite::tungstenite;

/// How long a client has to send `hello` after the upgrade.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for the client's answer to a close frame before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one stream until it ends.
pub async fn serve(mut ws: WebSocket, app: Arc<App>, authed: Authed) {
    app.api.metrics.streams.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&app.api.metrics.streams_opened);
    let ending = match hello(&mut ws, &app).await {
        Ok(encoding) => match app
            .hub
            .connect(authed.account, authed.key, authed.expires_at)
            .await
        {
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
                ending.map(|e| (e, Some(encoding)))
            }
            Err(e) => Some((e, Some(encoding))),
        },
        Err(ending) => ending,
    };
    if let Some((error, encoding)) = ending {
        Metrics::inc(&app.api.metrics.errors);
        close(&mut ws, &app.api.metrics, &error, encoding).await;
    }
    app.api.metrics.streams.fetch_sub(1, Ordering::Relaxed);
}

/// Waits for `hello` and checks its version. The frame kind chooses the encoding.
async fn hello(ws: &mut WebSocket, app: &App) -> Result<Encoding, Option<(ErrorBody, Option<Encoding>)>> {
    let msg = loop {
        match tokio::time::timeout(HELLO_TIMEOUT, ws.recv()).await {
            Err(_) => {
                return Err(Some((
                    ErrorBody::new(
                        ErrorCode::Unexpected,
                        "no hello frame within 10 seconds of connecting",
                    ),
                    None,
                )));
            }
            Ok(None) => return Err(None),
            Ok(Some(Err(e))) => return Err(socket_error(&e).map(|e| (e, None))),
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(Some(Ok(msg))) => break msg,
        }
    };
    Metrics::inc(&app.api.metrics.stream_frames_received);
    let (encoding, bytes) = match &msg {
        WsMessage::Binary(b) => (Encoding::Binary, b.as_ref()),
        WsMessage::Text(t) => (Encoding::Json, t.as_str().as_bytes()),
        _ => return Err(None),
    };
    match codec::decode_client(encoding, bytes) {
        Ok(ClientFrame::Hello { version }) if version == PROTOCOL_VERSION => Ok(encoding),
        Ok(ClientFrame::Hello { version }) => Err(Some((
            ErrorBody::new(
                ErrorCode::VersionUnsupported,
                format!(
                    "this server speaks protocol version {PROTOCOL_VERSION}, the client version {version}; \
                     update the client or the server"
                ),
            ),
            Some(encoding),
        ))),
        Ok(_) => Err(Some((
            ErrorBody::new(ErrorCode::Unexpected, "the first frame on a stream must be hello"),
            Some(encoding),
        ))),
        Err(e) => Err(Some((ErrorBody::new(e.code(), e.detail), Some(encoding)))),
    }
}

/// Sends the error (when the encoding is known) and a close frame, then waits briefly for the client's
/// close so that the close frame is not lost to a connection reset.
async fn close(ws: &mut WebSocket, metrics: &Metrics, error: &ErrorBody, encoding: Option<Encoding>) {
    if let Some(encoding) = encoding {
        let frame = ServerFrame::Error {
            req: None,
            error: error.clone(),
        };
        let _ = send_frame(ws, metrics, encoding, &frame).await;
    }
    let reason = format!("{}: {}", error.code, error.message);
    let reason = truncate_utf8(&reason, 123).to_owned();
    let _ = ws
        .send(WsMessage::Close(Some(CloseFrame {
            code: error.code.close_code(),
            reason: reason.into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}

async fn send_frame(
    ws: &mut WebSocket,
    metrics: &Metrics,
    encoding: Encoding,
    frame: &ServerFrame,
) -> Result<(), ()> {
    let bytes = codec::encode(encoding, frame);
    let len = bytes.len();
    let msg = match encoding {
        Encoding::Binary => WsMessage::Binary(Bytes::from(bytes)),
        // The JSON encoder only produces UTF-8.
        Encoding::Json => WsMessage::Text(String::from_utf8(bytes).map_err(|_| ())?.into()),
    };
    ws.send(msg).await.map_err(|_| ())?;
    let header = if len < 126 {
        2
    } else if len < 65536 {
        4
    } else {
        10
    };
    metrics
        .stream_bytes_sent
        .fetch_add((len + header) as u64, Ordering::Relaxed);
    Ok(())
}

/// Turns a socket error into the error to close with, or `None` when the connection is simply gone.
fn socket_error(e: &axum::Error) -> Option<ErrorBody> {
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<tungstenite::Error>());
    match inner {
        Some(tungstenite::Error::Capacity(c)) => Some(ErrorBody::new(
            ErrorCode::FrameTooLarge,
            format!("frame too large ({c}); split the data or respect limits.max_frame_bytes"),
        )),
        Some(tungstenite::Error::Utf8(_)) => Some(ErrorBody::new(
            ErrorCode::InvalidUtf8,
            "a text frame was not valid UTF-8",
        )),
        Some(tungstenite::Error::Protocol(p)) => Some(ErrorBody::new(
            ErrorCode::Malformed,
            format!("WebSocket protocol violation: {p}"),
        )),
        _ => None,
    }
}

struct SubState {
    id: SubId,
    pins: Vec<AccountId>,
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
    /// Runs the stream; returns the error to close with, if any.
    async fn run(&mut self) -> Option<ErrorBody> {
        let me = match self.app.api.store.me(self.account).await {
            Ok(me) => me,
            Err(e) => return Some(crate::api::store_error(e)),
        };
        let (epoch, _) = match self.app.api.store.head().await {
            Ok(h) => h,
            Err(e) => return Some(crate::api::store_error(e)),
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
        self.send(&welcome).await.ok()?;
        let shutdown = self.app.shutdown.clone();
        let kill = self.conn.shared.kill.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return Some(ErrorBody::new(ErrorCode::ShuttingDown, "the server is shutting down; reconnect later"));
                }
                _ = kill.cancelled() => {
                    return Some(self.conn.shared.reason().cloned().unwrap_or_else(|| {
                        ErrorBody::new(ErrorCode::Internal, "the stream was ended by the server")
                    }));
                }
                msg = self.ws.recv() => match msg {
                    None | Some(Ok(WsMessage::Close(_))) => return None,
                    Some(Err(e)) => return socket_error(&e),
                    Some(Ok(msg)) => {
                        self.conn.shared.seen();
                        if let Some(end) = self.inbound(msg).await {
                            return Some(end);
                        }
                    }
                },
                Some(out) = self.conn.events.recv() => {
                    self.outbound(out).await.ok()?;
                    if self.conn.shared.lagged.swap(false, Ordering::AcqRel) {
                        self.catch_up().await.ok()?;
                    }
                }
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), ()> {
        send_frame(&mut self.ws, &self.app.api.metrics, self.encoding, frame).await
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
            (WsMessage::Text(t), Encoding::Json) => t.as_str().as_bytes(),
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
                    .subscribe(req, sub, pins, resume)
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
        };
        self.reply(req, result).await.err().map(|()| gone())
    }

    async fn subscribe(
        &mut self,
        req: ReqId,
        sub: SubId,
        pins: Vec<AccountId>,
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
        match self.app.api.sync(self.account, &pins, since).await {
            Ok(mut snapshot) => {
                snapshot.sub = sub;
                self.subs.push(SubState {
                    id: sub,
                    pins,
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

    /// Sends one routed event, if it is for a live subscription, above its floor and about one of its pins.
    async fn outbound(&mut self, out: Outbound) -> Result<(), ()> {
        let me = self.account;
        let Some(sub) = self.subs.iter_mut().find(|s| s.id == out.sub) else {
            return Ok(());
        };
        let cursor = out.change.cursor();
        if cursor <= sub.floor {
            return Ok(());
        }
        let pinned = |a: &AccountId| sub.pins.contains(a);
        let frame = match &*out.change {
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
        while self.conn.events.try_recv().is_ok() {}
        let (epoch, _) = self.app.api.store.head().await.map_err(|_| ())?;
        for i in 0..self.subs.len() {
            let (id, pins, sent) = (self.subs[i].id, self.subs[i].pins.clone(), self.subs[i].sent);
            let since = Since {
                epoch,
                cursor: sent,
                fresh: vec![],
            };
            match self.app.api.sync(self.account, &pins, Some(since)).await {
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
