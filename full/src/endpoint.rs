//! The full client's local endpoint: same-user connections (`pinchat_ipc::transport`) that speak the
//! server's stream protocol over a WebSocket, carried by the full client's one server stream
//! ([`crate::upstream`]).
//!
//! Each connection is a *link*: it must open with `hello` of this protocol version, gets the server's
//! `welcome`, and from then on its frames go to the server and the server's frames for it come back.
//! Bad input is answered as the server answers it — an `error` frame with a stable code, then a
//! close — and affects no other link. When the full client leaves (exit, logout, lost server), every
//! link is closed with 1001 *going away*: the borrower takes its own connection back.

use crate::upstream::{LINK_QUEUE, LinkId, Up};
use futures_util::{SinkExt, StreamExt};
use pinchat_ipc::transport::{Listener, Stream};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest frame a link may send (the server's default limit).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How long a new connection has for its WebSocket handshake and its `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one frame may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts links until `stop`.
pub async fn serve(listener: Listener, up: mpsc::Sender<Up>, stop: CancellationToken, tracker: TaskTracker) {
    let mut next: LinkId = 1;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let id = next;
                    next += 1;
                    tracker.spawn(link(stream, id, up.clone(), stop.clone()));
                }
                // Another user's connection, or a transient failure: keep serving.
                Err(e) => tracing::warn!(error = %e, "refused a local connection"),
            },
        }
    }
}

type Ws = WebSocketStream<Stream>;

async fn link(stream: Stream, id: LinkId, up: mpsc::Sender<Up>, stop: CancellationToken) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let accept = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let mut ws = match tokio::time::timeout(HELLO_TIMEOUT, accept).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(link = id, error = %e, "a local connection is not a WebSocket");
            return;
        }
        Err(_) => return,
    };
    if let Err(error) = hello(&mut ws).await {
        end(&mut ws, Some(error)).await;
        return;
    }
    let (frames_tx, mut frames) = mpsc::channel(LINK_QUEUE);
    let (reply_tx, reply) = oneshot::channel();
    let attach = Up::Attach {
        link: id,
        frames: frames_tx,
        reply: reply_tx,
    };
    let welcome = match up.send(attach).await {
        Ok(()) => reply.await.ok().flatten(),
        Err(_) => None,
    };
    let Some(welcome) = welcome else {
        let error = ErrorBody::new(
            ErrorCode::ShuttingDown,
            "the full client is not connected to its server now; use your own connection",
        );
        end(&mut ws, Some(error)).await;
        return;
    };
    tracing::info!(link = id, "a local program borrows the connection");
    let ending = if send(&mut ws, &ServerFrame::Welcome(welcome)).await.is_err() {
        None
    } else {
        serve_link(&mut ws, id, &up, &mut frames, &stop).await
    };
    let _ = up.send(Up::Detach { link: id }).await;
    end(&mut ws, ending).await;
    tracing::info!(link = id, "a local program stopped borrowing the connection");
}

/// Carries one link's frames both ways until either side ends it. Gives the error to close with,
/// if any (`None`: going away).
async fn serve_link(
    ws: &mut Ws,
    id: LinkId,
    up: &mpsc::Sender<Up>,
    frames: &mut mpsc::Receiver<ServerFrame>,
    stop: &CancellationToken,
) -> Option<ErrorBody> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            frame = frames.recv() => match frame {
                Some(frame) => {
                    if send(ws, &frame).await.is_err() {
                        return None;
                    }
                }
                // The full client's stream ended, or this link fell behind.
                None => return None,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Binary(b))) => match codec::decode_client(Encoding::Binary, &b) {
                    Ok(ClientFrame::Hello { .. }) => {
                        return Some(ErrorBody::new(ErrorCode::Unexpected, "hello was already said on this link"));
                    }
                    Ok(frame) => {
                        if up.send(Up::Frame { link: id, frame }).await.is_err() {
                            return None;
                        }
                    }
                    Err(e) => return Some(ErrorBody::new(e.code(), e.detail)),
                },
                Some(Ok(WsMessage::Text(_))) => {
                    return Some(ErrorBody::new(ErrorCode::Malformed, "this endpoint takes binary frames only"));
                }
                Some(Ok(WsMessage::Close(_))) | None => return None,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(broken(&e)),
            },
        }
    }
}

/// Waits for `hello` of this protocol version.
async fn hello(ws: &mut Ws) -> Result<(), ErrorBody> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                other => return other,
            }
        }
    })
    .await
    .map_err(|_| {
        ErrorBody::new(
            ErrorCode::Unexpected,
            "no hello frame within 10 seconds of connecting",
        )
    })?;
    let bytes = match first {
        Some(Ok(WsMessage::Binary(b))) => b,
        Some(Ok(_)) => {
            return Err(ErrorBody::new(
                ErrorCode::Malformed,
                "this endpoint takes binary frames only",
            ));
        }
        Some(Err(e)) => return Err(broken(&e)),
        None => return Err(ErrorBody::new(ErrorCode::Unexpected, "closed before hello")),
    };
    match codec::decode_client(Encoding::Binary, &bytes) {
        Ok(ClientFrame::Hello { version }) if version == PROTOCOL_VERSION => Ok(()),
        Ok(ClientFrame::Hello { version }) => Err(ErrorBody::new(
            ErrorCode::VersionUnsupported,
            format!(
                "this full client speaks protocol version {PROTOCOL_VERSION}, the program version {version}; \
                 update one of them"
            ),
        )),
        Ok(_) => Err(ErrorBody::new(
            ErrorCode::Unexpected,
            "the first frame on a link must be hello",
        )),
        Err(e) => Err(ErrorBody::new(e.code(), e.detail)),
    }
}

/// What to tell a link whose WebSocket could not be read: too large a frame, or frames that break the
/// WebSocket protocol.
fn broken(e: &tokio_tungstenite::tungstenite::Error) -> ErrorBody {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(_) => ErrorBody::new(
            ErrorCode::FrameTooLarge,
            format!("frames are limited to {MAX_FRAME_BYTES} bytes: {e}"),
        ),
        _ => ErrorBody::new(ErrorCode::Malformed, format!("not a valid WebSocket frame: {e}")),
    }
}

async fn send(ws: &mut Ws, frame: &ServerFrame) -> Result<(), ()> {
    let bytes = codec::encode(Encoding::Binary, frame);
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Binary(bytes.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Ends a link: the error as a frame and in the close, or 1001 *going away*.
async fn end(ws: &mut Ws, error: Option<ErrorBody>) {
    let close = match error {
        Some(error) => {
            let _ = send(
                ws,
                &ServerFrame::Error {
                    req: None,
                    error: error.clone(),
                },
            )
            .await;
            let mut reason = format!("{}: {}", error.code, error.message);
            while reason.len() > 123 {
                reason.pop();
            }
            CloseFrame {
                code: CloseCode::from(error.code.close_code()),
                reason: reason.into(),
            }
        }
        None => CloseFrame {
            code: CloseCode::Away,
            reason: "going away: take your own connection".into(),
        },
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(close))).await;
}
