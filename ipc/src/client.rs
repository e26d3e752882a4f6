//! The typed async client of the local API, used by `pinchatctl`, the tray app and Rust gadgets.
//!
//! One task reads the connection: answers go to the call that waits for them, notifications to the
//! channel returned by [`Client::notifications`]. Calls may run concurrently on one client.

use crate::api::{Method, Notification};
use crate::jsonrpc::{JSONRPC, Line, Response, RpcError, read_line};
use crate::transport;
use interprocess::local_socket::tokio::Stream;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::{mpsc, oneshot};

/// The largest answer the client reads (history pages and contact lists stay far below).
const MAX_ANSWER: usize = 16 << 20;

/// What can go wrong when talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket: the daemon is not running.
    #[error("the pinchat daemon is not running (nothing listens on {0}); start it with `pinchatd`")]
    NotRunning(PathBuf),
    /// The daemon refused the connection (another user's daemon).
    #[error("the daemon at {0} refused the connection: {1}")]
    Refused(PathBuf, String),
    /// This client refused the socket: another user owns it or serves it. Nothing was sent.
    #[error("{0}")]
    Untrusted(String),
    /// The connection failed or was closed.
    #[error("lost the connection to the daemon: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The daemon's answer did not have the expected shape (a client/daemon version mismatch).
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
}

impl ClientError {
    /// The stable error code when the daemon answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Rpc(e) => Some(&e.data.code),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// A connection to the daemon.
pub struct Client {
    writer: tokio::sync::Mutex<WriteHalf<Stream>>,
    pending: Pending,
    next_id: AtomicU64,
    notifications: Option<mpsc::Receiver<Notification>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects to the daemon's default socket ([`transport::default_socket`]).
    pub async fn connect_default() -> Result<Client, ClientError> {
        Client::connect(&transport::default_socket()).await
    }

    /// Connects to the daemon at `path`.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = transport::connect(path).await.map_err(|e| match e.kind() {
            _ if e
                .get_ref()
                .is_some_and(|r| r.downcast_ref::<transport::Untrusted>().is_some()) =>
            {
                ClientError::Untrusted(e.to_string())
            }
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(path.to_owned())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Refused(path.to_owned(), e.to_string()),
            _ => ClientError::Io(e),
        })?;
        let (recv, send) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::channel(1024);
        let reader = tokio::spawn(read_loop(BufReader::new(recv), pending.clone(), tx));
        Ok(Client {
            writer: tokio::sync::Mutex::new(send),
            pending,
            next_id: AtomicU64::new(1),
            notifications: Some(rx),
            reader,
        })
    }

    /// Calls a method and waits for its answer.
    pub async fn call<M: Method>(&self, params: M::Params) -> Result<M::Result, ClientError> {
        let params = serde_json::to_value(params).map_err(|e| ClientError::Decode(e.to_string()))?;
        let result = self.call_raw(M::NAME, params).await?;
        serde_json::from_value(result).map_err(|e| ClientError::Decode(format!("{}: {e}", M::NAME)))
    }

    /// Calls a method by name with untyped parameters.
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let request = serde_json::json!({ "jsonrpc": JSONRPC, "id": id, "method": method, "params": params });
        let mut line = serde_json::to_vec(&request).map_err(|e| ClientError::Decode(e.to_string()))?;
        line.push(b'\n');
        {
            let mut writer = self.writer.lock().await;
            if let Err(e) = writer.write_all(&line).await {
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                return Err(ClientError::Io(e));
            }
        }
        let response = rx.await.map_err(|_| {
            ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ))
        })?;
        match (response.result, response.error) {
            (_, Some(error)) => Err(ClientError::Rpc(error)),
            (Some(result), None) => Ok(result),
            (None, None) => Ok(Value::Null),
        }
    }

    /// The notifications of this connection (after a `subscribe` call). Can be taken once.
    pub fn notifications(&mut self) -> Option<mpsc::Receiver<Notification>> {
        self.notifications.take()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    pending: Pending,
    notify: mpsc::Sender<Notification>,
) {
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf, MAX_ANSWER).await {
            Ok(Line::Line) => {}
            Ok(Line::TooLong) => {
                tracing::warn!("skipped an answer from the daemon longer than {MAX_ANSWER} bytes");
                continue;
            }
            Ok(Line::Eof) | Err(_) => break,
        }
        let Ok(value) = serde_json::from_slice::<Value>(&buf) else {
            tracing::warn!("the daemon sent a line that is not JSON");
            continue;
        };
        if value.get("method").is_some() {
            match serde_json::from_value::<Notification>(value) {
                // A client that does not read its notifications must not stall its calls.
                Ok(n) => {
                    let _ = notify.try_send(n);
                }
                Err(e) => tracing::debug!(error = %e, "ignored a notification this client does not know"),
            }
            continue;
        }
        match serde_json::from_value::<Response>(value) {
            Ok(response) => {
                let id = response.id.as_u64();
                let waiter = id.and_then(|id| pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response);
                }
            }
            Err(e) => tracing::warn!(error = %e, "the daemon sent an answer this client cannot read"),
        }
    }
    // Wake every waiting call: the connection is gone.
    pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
