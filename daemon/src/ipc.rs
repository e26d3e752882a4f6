//! The local API server: accepts same-user connections on the daemon's socket and answers JSON-RPC
//! requests, one per line, and forwards notifications to connections that subscribed.
//!
//! Each connection has a reader (this task) and a writer task fed by a bounded channel; answers and
//! notifications share it, so lines never interleave. A request line over 1 MiB is skipped without being
//! buffered and answered with `rpc.line_too_long`; anything unreadable gets a JSON-RPC error; neither
//! affects other connections. Parameters are never logged (they may hold passwords).

use crate::Daemon;
use crate::widget::Cmd;
use pinchat_ipc::api::*;
use pinchat_ipc::jsonrpc::{Call, Line, MAX_LINE, Response, RpcError, parse_call, read_line};
use pinchat_ipc::transport::Listener;
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
                        let result = dispatch(&daemon, call, &mut forwarding, &out).await;
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

async fn dispatch(
    daemon: &Daemon,
    call: Call,
    forwarding: &mut Option<tokio::task::JoinHandle<()>>,
    out: &mpsc::Sender<Vec<u8>>,
) -> Result<Value, RpcError> {
    let p = call.params;
    match call.method.as_str() {
        Status::NAME => {
            params::<Status>(p)?;
            ok(daemon.status().await)
        }
        ListWidgets::NAME => {
            params::<ListWidgets>(p)?;
            ok(daemon.list().await)
        }
        CreateWidget::NAME => ok(daemon.create(params::<CreateWidget>(p)?).await?),
        RemoveWidget::NAME => ok(daemon.remove(&params::<RemoveWidget>(p)?.widget).await?),
        RebindWidget::NAME => ok(daemon.rebind(params::<RebindWidget>(p)?).await?),
        Contacts::NAME => {
            let r = params::<Contacts>(p)?;
            ok(daemon.widget(&r.widget).await?.ask(Cmd::Contacts).await?)
        }
        Avatar::NAME => {
            let r = params::<Avatar>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::Avatar(r.hash, reply))
                .await?)
        }
        SetPins::NAME => {
            let r = params::<SetPins>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::SetPins(r.pins, reply))
                .await?)
        }
        Snapshot::NAME => ok(daemon
            .widget(&params::<Snapshot>(p)?.widget)
            .await?
            .view()
            .await?),
        Refresh::NAME => ok(daemon
            .widget(&params::<Refresh>(p)?.widget)
            .await?
            .ask(Cmd::Refresh)
            .await?),
        SetMode::NAME => {
            let r = params::<SetMode>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::SetMode(r.mode, r.interval_secs, reply))
                .await?)
        }
        Unread::NAME => {
            let r = params::<Unread>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::Unread(r.contact, r.before, r.limit, reply))
                .await?)
        }
        History::NAME => {
            let r = params::<History>(p)?;
            let limit = r.limit.unwrap_or(50);
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::History(r.contact, r.before, limit, reply))
                .await?)
        }
        SendMessage::NAME => {
            let r = params::<SendMessage>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::Send(r.contact, r.text, reply))
                .await?)
        }
        MarkRead::NAME => {
            let r = params::<MarkRead>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::MarkRead(r.contact, r.up_to, reply))
                .await?)
        }
        Reauth::NAME => {
            let r = params::<Reauth>(p)?;
            ok(daemon
                .widget(&r.widget)
                .await?
                .ask(|reply| Cmd::Reauth(r.password, reply))
                .await?)
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
    mut events: broadcast::Receiver<Notification>,
    filter: Option<HashSet<WidgetId>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    loop {
        match events.recv().await {
            Ok(n) => {
                if filter.as_ref().is_some_and(|f| !f.contains(n.widget())) {
                    continue;
                }
                let Ok(mut value) = serde_json::to_value(&n) else {
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
