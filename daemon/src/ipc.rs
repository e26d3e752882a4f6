//! The local API server: accepts same-user connections on the daemon's socket and answers JSON-RPC
//! requests, one per line, and forwards notifications to connections that subscribed.
//!
//! Each connection has a reader (this task) and a writer task fed by a bounded channel; answers and
//! notifications share it, so lines never interleave. This module is also the one place where the
//! daemon's model ([`WidgetState`], [`Message`], [`Event`], [`WidgetError`]) becomes the API's views,
//! notifications and errors. A request line over 1 MiB is skipped without being
//! buffered and answered with `rpc.line_too_long`; anything unreadable gets a JSON-RPC error; neither
//! affects other connections. Parameters are never logged (they may hold passwords).

use crate::Daemon;
use crate::db::Problem;
use crate::error::WidgetError;
use crate::events::{Delivery as EventDelivery, Event, Message, WidgetState};
use crate::model::{self, Link, Pin, UpdateMode};
use crate::source::CallOp;
use crate::widget::{Cmd, Reply};
use pinchat_ipc::api::*;
use pinchat_ipc::jsonrpc::{Call, Line, MAX_LINE, Response, RpcError, parse_call, read_line};
use pinchat_ipc::transport::Listener;
use pinchat_proto::ErrorCode as WireCode;
use pinchat_proto::stream::{CallEvent, CallSignal as WireSignal};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves connections until `shutdown`, then waits for them to end.
pub async fn serve(daemon: Daemon, listener: Listener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    tracker.spawn(connection(daemon.clone(), stream, shutdown.clone()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    tracing::warn!(error = %e, "refused a local connection");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    daemon: Daemon,
    stream: interprocess::local_socket::tokio::Stream,
    shutdown: CancellationToken,
) {
    let (read, mut write) = tokio::io::split(stream);
    let (out, mut lines) = mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            if write.write_all(&line).await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut forwarding: Option<tokio::task::JoinHandle<()>> = None;
    // The calls this connection placed or accepted: a gadget that goes away (closed, crashed) hangs
    // them up, rather than leaving the peer in a call nobody is on.
    let mut calls: HashSet<(WidgetId, u64)> = HashSet::new();
    loop {
        let line = tokio::select! {
            _ = shutdown.cancelled() => break,
            line = read_line(&mut reader, &mut buf, MAX_LINE) => line,
        };
        match line {
            Ok(Line::Eof) | Err(_) => break,
            Ok(Line::TooLong) => {
                let error = RpcError::new(
                    ErrorCode::LineTooLong,
                    format!("a request line is longer than {MAX_LINE} bytes; it was skipped"),
                );
                if out
                    .send(Response::err(Value::Null, error).to_line())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Line::Line) if buf.iter().all(u8::is_ascii_whitespace) => {}
            Ok(Line::Line) => {
                let response = match parse_call(&buf) {
                    Err(response) => Some(*response),
                    Ok(call) => {
                        let id = call.id.clone();
                        let result = dispatch(&daemon, call, &mut forwarding, &out, &mut calls).await;
                        id.map(|id| match result {
                            Ok(value) => Response::ok(id, value),
                            Err(error) => Response::err(id, error),
                        })
                    }
                };
                if let Some(response) = response
                    && out.send(response.to_line()).await.is_err()
                {
                    break;
                }
            }
        }
    }
    if let Some(f) = forwarding {
        f.abort();
    }
    for (widget, call) in calls {
        // Calls that ended meanwhile answer `call.not_found`: nothing to do for those.
        if call_signal(&daemon, &widget, call, WireSignal::Hangup { failed: false })
            .await
            .is_ok()
        {
            tracing::info!(
                widget,
                call,
                "a local program went away during a call; hung it up"
            );
        }
    }
    drop(out);
    let _ = writer.await;
}

fn params<M: Method>(value: Value) -> Result<M::Params, RpcError> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    serde_json::from_value(value).map_err(|e| {
        RpcError::new(
            ErrorCode::InvalidParams,
            format!("invalid params for {}: {e}", M::NAME),
        )
    })
}

fn ok<T: Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(|e| RpcError::new(ErrorCode::Internal, e.to_string()))
}

/// Sends a request to the widget the parameters name and waits for its answer.
async fn ask<T>(daemon: &Daemon, widget: &str, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, RpcError> {
    let handle = daemon.widget(widget).await.map_err(rpc)?;
    handle.ask(make).await.map_err(rpc)
}

/// Passes a signal for call `call` through the widget's stream.
async fn call_signal(
    daemon: &Daemon,
    widget: &str,
    call: u64,
    signal: WireSignal,
) -> Result<Value, RpcError> {
    ask(daemon, widget, |reply| {
        Cmd::Call(CallOp::Signal { call, signal }, reply)
    })
    .await?;
    ok(Done {})
}

async fn dispatch(
    daemon: &Daemon,
    call: Call,
    forwarding: &mut Option<tokio::task::JoinHandle<()>>,
    out: &mpsc::Sender<Vec<u8>>,
    calls: &mut HashSet<(WidgetId, u64)>,
) -> Result<Value, RpcError> {
    let p = call.params;
    match call.method.as_str() {
        Status::NAME => {
            params::<Status>(p)?;
            ok(DaemonStatus {
                version: env!("CARGO_PKG_VERSION").into(),
                api_version: pinchat_ipc::API_VERSION,
                uptime_secs: daemon.uptime().as_secs(),
                pid: std::process::id(),
                widgets: daemon.list().await.iter().map(summary).collect(),
            })
        }
        ListWidgets::NAME => {
            params::<ListWidgets>(p)?;
            ok(daemon.list().await.iter().map(summary).collect::<Vec<_>>())
        }
        CreateWidget::NAME => ok(created(
            daemon.create(params::<CreateWidget>(p)?).await.map_err(rpc)?,
        )),
        RemoveWidget::NAME => {
            daemon
                .remove(&params::<RemoveWidget>(p)?.widget)
                .await
                .map_err(rpc)?;
            ok(Done {})
        }
        RebindWidget::NAME => ok(created(
            daemon.rebind(params::<RebindWidget>(p)?).await.map_err(rpc)?,
        )),
        Contacts::NAME => {
            let r = params::<Contacts>(p)?;
            let list = ask(daemon, &r.widget, Cmd::Contacts).await?;
            ok(list.into_iter().map(identity).collect::<Vec<_>>())
        }
        Avatar::NAME => {
            use base64::Engine;
            let r = params::<Avatar>(p)?;
            let widget = r.widget.clone();
            let (mime, bytes) = ask(daemon, &widget, |reply| Cmd::Avatar(r, reply)).await?;
            ok(AvatarView {
                mime,
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
            })
        }
        SetPins::NAME => {
            let r = params::<SetPins>(p)?;
            let widget = r.widget.clone();
            ok(widget_view(
                &ask(daemon, &widget, |reply| Cmd::SetPins(r, reply)).await?,
            ))
        }
        Snapshot::NAME => {
            let r = params::<Snapshot>(p)?;
            let handle = daemon.widget(&r.widget).await.map_err(rpc)?;
            ok(widget_view(&handle.view().await.map_err(rpc)?))
        }
        Refresh::NAME => {
            let r = params::<Refresh>(p)?;
            ok(widget_view(&ask(daemon, &r.widget, Cmd::Refresh).await?))
        }
        SetMode::NAME => {
            let r = params::<SetMode>(p)?;
            let widget = r.widget.clone();
            ok(widget_view(
                &ask(daemon, &widget, |reply| Cmd::SetMode(r, reply)).await?,
            ))
        }
        Unread::NAME => {
            let r = params::<Unread>(p)?;
            let widget = r.widget.clone();
            let list = ask(daemon, &widget, |reply| Cmd::Unread(r, reply)).await?;
            ok(list.iter().map(message_view).collect::<Vec<_>>())
        }
        History::NAME => {
            let r = params::<History>(p)?;
            let widget = r.widget.clone();
            let page = ask(daemon, &widget, |reply| Cmd::History(r, reply)).await?;
            ok(HistoryView {
                messages: page.messages.iter().map(message_view).collect(),
                more: page.more,
            })
        }
        SendMessage::NAME => {
            let r = params::<SendMessage>(p)?;
            let widget = r.widget.clone();
            ok(message_view(
                &ask(daemon, &widget, |reply| Cmd::Send(r, reply)).await?,
            ))
        }
        MarkRead::NAME => {
            let r = params::<MarkRead>(p)?;
            let widget = r.widget.clone();
            let unread = ask(daemon, &widget, |reply| Cmd::MarkRead(r, reply)).await?;
            ok(UnreadView { unread })
        }
        Reauth::NAME => {
            let r = params::<Reauth>(p)?;
            let widget = r.widget.clone();
            ok(widget_view(
                &ask(daemon, &widget, |reply| Cmd::Reauth(r, reply)).await?,
            ))
        }
        CallStart::NAME => {
            let r = params::<CallStart>(p)?;
            let (contact, video) = (r.contact, r.video);
            let op = CallOp::Invite {
                to: pinchat_proto::AccountId(contact),
                video,
            };
            let call = ask(daemon, &r.widget, |reply| Cmd::Call(op, reply)).await?;
            calls.insert((r.widget.clone(), call.unwrap_or_default()));
            ok(CallView {
                call: call.unwrap_or_default(),
                contact,
                video,
            })
        }
        CallAccept::NAME => {
            let r = params::<CallAccept>(p)?;
            let accepted = call_signal(daemon, &r.widget, r.call, WireSignal::Accept).await?;
            calls.insert((r.widget, r.call));
            Ok(accepted)
        }
        CallDecline::NAME => {
            let r = params::<CallDecline>(p)?;
            calls.remove(&(r.widget.clone(), r.call));
            call_signal(daemon, &r.widget, r.call, WireSignal::Decline).await
        }
        CallSignalMethod::NAME => {
            let r = params::<CallSignalMethod>(p)?;
            match r.signal {
                signal @ (WireSignal::Offer { .. } | WireSignal::Answer { .. } | WireSignal::Ice { .. }) => {
                    call_signal(daemon, &r.widget, r.call, signal).await
                }
                _ => Err(RpcError::new(
                    ErrorCode::InvalidParams,
                    "call.signal carries an offer, an answer or an ICE candidate; accept, decline and \
                     hang up have methods of their own (call.accept, call.decline, call.hangup)",
                )),
            }
        }
        CallHangup::NAME => {
            let r = params::<CallHangup>(p)?;
            let signal = WireSignal::Hangup { failed: r.failed };
            calls.remove(&(r.widget.clone(), r.call));
            call_signal(daemon, &r.widget, r.call, signal).await
        }
        CallIce::NAME => {
            let r = params::<CallIce>(p)?;
            ok(ask(daemon, &r.widget, Cmd::Ice).await?)
        }
        CallHistory::NAME => {
            let r = params::<CallHistory>(p)?;
            let widget = r.widget.clone();
            ok(ask(daemon, &widget, |reply| Cmd::CallHistory(r, reply)).await?)
        }
        Subscribe::NAME => {
            let r = params::<Subscribe>(p)?;
            if let Some(f) = forwarding.take() {
                f.abort();
            }
            let filter: Option<HashSet<WidgetId>> = r.widgets.map(|w| w.into_iter().collect());
            *forwarding = Some(tokio::spawn(forward(daemon.events(), filter, out.clone())));
            ok(Done {})
        }
        Unsubscribe::NAME => {
            params::<Unsubscribe>(p)?;
            if let Some(f) = forwarding.take() {
                f.abort();
            }
            ok(Done {})
        }
        other => Err(RpcError::new(
            ErrorCode::MethodNotFound,
            format!("no method {other:?}; the methods are: {}", METHODS.join(", ")),
        )),
    }
}

/// Forwards notifications to one connection. A client that does not keep up loses notifications (and
/// is told so in the log) rather than slowing the daemon down; `widget.snapshot` brings it back in sync.
async fn forward(
    mut events: broadcast::Receiver<Event>,
    filter: Option<HashSet<WidgetId>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    loop {
        match events.recv().await {
            Ok(e) => {
                if filter.as_ref().is_some_and(|f| !f.contains(e.widget())) {
                    continue;
                }
                let Ok(mut value) = serde_json::to_value(notification(&e)) else {
                    continue;
                };
                if let Value::Object(map) = &mut value {
                    map.insert("jsonrpc".into(), Value::from("2.0"));
                }
                let mut line = serde_json::to_vec(&value).unwrap_or_default();
                line.push(b'\n');
                match out.try_send(line) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!("a local client is not reading its notifications; dropped one");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "notifications dropped for a slow local client");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

// ---- the daemon's model as the local API shows it: the only place views are built ----

/// The local API's error for a refused or failed request.
fn rpc(e: WidgetError) -> RpcError {
    let code = match &e {
        WidgetError::NotFound(_) => ErrorCode::WidgetNotFound,
        WidgetError::Exists(_) => ErrorCode::WidgetExists,
        WidgetError::NotContact(_) => ErrorCode::NotContact,
        WidgetError::TooManyPins(_) => ErrorCode::TooManyPins,
        WidgetError::Invalid(_) => ErrorCode::Invalid,
        WidgetError::BadCredentials(_) => ErrorCode::BadCredentials,
        WidgetError::AuthRequired(_) => ErrorCode::AuthRequired,
        WidgetError::Unreachable(_) => ErrorCode::ServerUnreachable,
        WidgetError::Server(_) => ErrorCode::ServerError,
        WidgetError::Keyring(_) => ErrorCode::KeyringUnavailable,
        WidgetError::Storage(Problem::Full, _) => ErrorCode::StorageFull,
        WidgetError::Storage(Problem::ReadOnly, _) => ErrorCode::StorageReadOnly,
        WidgetError::Storage(Problem::Other, _) => ErrorCode::StorageFailed,
        WidgetError::Call(code, _) => match code {
            WireCode::CallNotContact | WireCode::MessageNotContact => ErrorCode::NotContact,
            WireCode::CallUnavailable => ErrorCode::CallUnavailable,
            WireCode::CallBusy => ErrorCode::CallBusy,
            WireCode::CallGlare => ErrorCode::CallGlare,
            WireCode::CallNotFound => ErrorCode::CallNotFound,
            WireCode::Unexpected | WireCode::InvalidRequest => ErrorCode::CallInvalid,
            _ => ErrorCode::ServerError,
        },
        WidgetError::Internal(_) => ErrorCode::Internal,
    };
    RpcError::new(code, e.to_string())
}

fn mode(m: UpdateMode) -> Mode {
    match m {
        UpdateMode::Push => Mode::Push,
        UpdateMode::Poll => Mode::Poll,
        UpdateMode::Manual => Mode::Manual,
    }
}

fn link(l: Link) -> Connection {
    match l {
        Link::Connecting => Connection::Connecting,
        Link::Online => Connection::Online,
        Link::Offline => Connection::Offline,
        Link::AuthRequired => Connection::AuthRequired,
    }
}

fn via(v: model::Via) -> Via {
    match v {
        model::Via::Own => Via::Own,
        model::Via::FullClient(pid) => Via::FullClient { pid },
    }
}

/// A contact as the local API shows it (also the full client's window).
pub fn contact_view(p: &Pin) -> ContactView {
    ContactView {
        id: p.contact.0,
        name: p.name.clone(),
        avatar: p.avatar.clone(),
        signature: p.signature.clone(),
        description: p.description.clone(),
        state: p.state,
        status: p.status.clone(),
        unread: p.unread,
        peer_read: p.peer_read.0,
    }
}

fn widget_view(s: &WidgetState) -> WidgetView {
    WidgetView {
        id: s.id.clone(),
        server: s.server.clone(),
        account: AccountView {
            id: s.account.id.0,
            login: s.account.login.clone(),
            name: s.account.name.clone(),
            avatar: s.account.avatar.clone(),
            signature: s.account.signature.clone(),
            state: s.account.state,
            status: s.account.status.clone(),
        },
        pins: s.pins.iter().map(contact_view).collect(),
        mode: mode(s.mode),
        poll_interval_secs: s.poll_interval_secs,
        connection: link(s.link),
        via: via(s.via),
        stale: s.stale,
        max_pins: s.max_pins,
        storage: s.storage.clone(),
        ringing: s
            .ringing
            .iter()
            .map(|&(call, contact, video)| pinchat_ipc::api::RingingCall {
                call,
                contact: contact.0,
                video,
            })
            .collect(),
    }
}

fn summary(s: &WidgetState) -> WidgetSummary {
    WidgetSummary {
        id: s.id.clone(),
        server: s.server.clone(),
        login: s.account.login.clone(),
        name: s.account.name.clone(),
        connection: link(s.link),
        via: via(s.via),
        unread: s.total_unread(),
        pins: s.pins.len(),
    }
}

fn identity(c: pinchat_proto::http::Identity) -> ContactIdentity {
    ContactIdentity {
        id: c.id.0,
        login: c.login,
        name: c.name,
        avatar: c.avatar,
        signature: c.signature,
        description: c.description,
    }
}

fn created(c: crate::Created) -> Created {
    Created {
        widget: widget_view(&c.widget),
        contacts: c.contacts.into_iter().map(identity).collect(),
        max_pins: c.max_pins,
    }
}

fn message_view(m: &Message) -> MessageView {
    MessageView {
        id: m.id.0,
        from: m.from.0,
        to: m.to.0,
        ts: m.ts,
        text: m.text.clone(),
        state: match m.state {
            EventDelivery::Received => Delivery::Received,
            EventDelivery::Queued => Delivery::Queued,
            EventDelivery::Sent => Delivery::Sent,
            EventDelivery::Read => Delivery::Read,
            EventDelivery::Failed => Delivery::Failed,
        },
        client_id: m.client_id.clone(),
    }
}

/// A widget's event as the local API's notification.
fn notification(e: &Event) -> Notification {
    match e {
        Event::ContactChanged {
            widget,
            contact,
            fields,
        } => Notification::ContactChanged {
            widget: widget.clone(),
            contact: contact.0,
            fields: fields.clone(),
        },
        Event::WidgetChanged(state) => Notification::WidgetChanged {
            widget: Box::new(widget_view(state)),
        },
        Event::WidgetRemoved { widget } => Notification::WidgetRemoved {
            widget: widget.clone(),
        },
        Event::MessageReceived {
            widget,
            message,
            backlog,
        } => Notification::MessageReceived {
            widget: widget.clone(),
            message: message_view(message),
            backlog: *backlog,
        },
        Event::MessageDelivery {
            widget,
            message,
            error,
        } => Notification::MessageDelivery {
            widget: widget.clone(),
            message: message_view(message),
            error: error.clone(),
        },
        Event::UnreadChanged {
            widget,
            contact,
            unread,
            total,
        } => Notification::UnreadChanged {
            widget: widget.clone(),
            contact: contact.0,
            unread: *unread,
            total: *total,
        },
        Event::ConnectionChanged {
            widget,
            link,
            via,
            stale,
        } => Notification::ConnectionChanged {
            widget: widget.clone(),
            connection: self::link(*link),
            via: self::via(*via),
            stale: *stale,
        },
        Event::AuthRequired { widget, message } => Notification::AuthRequired {
            widget: widget.clone(),
            message: message.clone(),
        },
        Event::Call {
            widget,
            call,
            contact,
            event,
        } => call_notification(widget, *call, *contact, event.clone()),
    }
}

/// The local API's notification for a call event of `widget`'s call `call` with `contact` (also what
/// the full client's window tells its page, which speaks the local API).
pub fn call_notification(
    widget: &str,
    call: u64,
    contact: pinchat_proto::AccountId,
    event: CallEvent,
) -> Notification {
    let (widget, contact) = (widget.to_owned(), contact.0);
    let changed = |state| Notification::CallChanged {
        widget: widget.clone(),
        call,
        contact,
        state,
    };
    let signal = |signal| Notification::CallSignal {
        widget: widget.clone(),
        call,
        contact,
        signal,
    };
    match event {
        CallEvent::Incoming { video } => Notification::CallIncoming {
            widget,
            call,
            contact,
            video,
        },
        CallEvent::Ringing => changed(CallState::Ringing),
        CallEvent::Accepted => changed(CallState::Accepted),
        CallEvent::Reconnecting { own: false } => changed(CallState::PeerAway),
        CallEvent::Reconnecting { own: true } => changed(CallState::Away),
        CallEvent::Reconnected => changed(CallState::Back),
        e @ (CallEvent::Offer { .. } | CallEvent::Answer { .. } | CallEvent::Ice { .. }) => signal(
            e.into_signal()
                .expect("offers, answers and candidates are signals"),
        ),
        CallEvent::Ended { reason } => Notification::CallEnded {
            widget,
            call,
            contact,
            reason,
        },
    }
}
