//! The daemon's HTTP client for one pinchat server: login, contacts, history, sending, polling.
//!
//! Errors are sorted into what the widget acts on: the server cannot be reached (retry later), the key
//! was refused (`auth.invalid_key`: ask for the password), or the server said no for another reason.

use crate::model::Position;
use pinchat_proto::http::*;
use pinchat_proto::stream::Snapshot;
use pinchat_proto::{AccountId, CURSOR_HEADER, Cursor, EPOCH_HEADER, Epoch, ErrorBody, MessageId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Remote failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// No answer: network down, server stopped, timeout.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorBody),
    /// The server's answer could not be read.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
}

impl RemoteError {
    /// The server refused the key.
    pub fn is_auth(&self) -> bool {
        matches!(self, RemoteError::Server(e) if e.code.needs_login())
    }
}

/// An open push stream to a server.
pub type ServerStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why the push stream could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamRefused {
    /// The key was refused: log in again.
    #[error("the server refused the key: {0}")]
    Auth(String),
    /// Anything else (unreachable, timed out, not a pinchat server): try again later.
    #[error("{0}")]
    Other(String),
}

/// A server's HTTP API.
#[derive(Clone, Debug)]
pub struct Remote {
    base: String,
    http: reqwest::Client,
}

impl Remote {
    /// Validates and normalises a server URL (`http://` or `https://`, no path).
    pub fn new(server: &str) -> Result<Remote, String> {
        let base = server.trim().trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| format!("the server address {server:?} must start with https:// or http://"))?;
        if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
            return Err(format!(
                "the server address {server:?} must be like https://chat.example.com or http://127.0.0.1:7420"
            ));
        }
        Ok(Remote {
            base,
            http: shared_client()?,
        })
    }

    /// The normalised base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The push stream's URL.
    pub fn stream_url(&self) -> String {
        match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}/v1/stream"),
            None => format!("ws://{}/v1/stream", self.base.trim_start_matches("http://")),
        }
    }

    /// Opens the push stream with `key` (the WebSocket handshake only; `hello` is the caller's).
    pub async fn open_stream(&self, key: &str) -> Result<ServerStream, StreamRefused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self
            .stream_url()
            .into_client_request()
            .map_err(|e| StreamRefused::Other(e.to_string()))?;
        let auth = format!("Bearer {key}")
            .parse()
            .map_err(|_| StreamRefused::Auth("the stored key is not valid".into()))?;
        request.headers_mut().insert("authorization", auth);
        let connector = if request.uri().scheme_str() == Some("wss") {
            stream_tls().map(tokio_tungstenite::Connector::Rustls)
        } else {
            Some(tokio_tungstenite::Connector::Plain)
        };
        // A small read buffer: tungstenite's default (128 KiB) is zeroed and so resident for every
        // widget's stream, although the server's frames are small; a larger frame grows the buffer.
        let ws_config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), false, connector);
        match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Err(_) => Err(StreamRefused::Other("timed out".into())),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r)))
                if r.status().as_u16() == 401 || r.status().as_u16() == 403 =>
            {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(StreamRefused::Auth(body))
            }
            Ok(Err(e)) => Err(StreamRefused::Other(with_causes(&e))),
            Ok(Ok((ws, _))) => Ok(ws),
        }
    }

    /// Logs in.
    pub async fn login(&self, account: &str, password: &str) -> Result<LoginResponse, RemoteError> {
        let body = LoginRequest {
            account: account.into(),
            password: password.into(),
        };
        self.send(self.http.post(self.url("/v1/login")).json(&body)).await
    }

    /// Revokes the key.
    pub async fn logout(&self, key: &str) -> Result<(), RemoteError> {
        let _: serde_json::Value = self
            .send(self.http.post(self.url("/v1/logout")).bearer_auth(key))
            .await?;
        Ok(())
    }

    /// The account's own identity.
    pub async fn me(&self, key: &str) -> Result<Me, RemoteError> {
        self.send(self.http.get(self.url("/v1/me")).bearer_auth(key))
            .await
    }

    /// The full contact list.
    pub async fn contacts(&self, key: &str) -> Result<ContactList, RemoteError> {
        self.send(self.http.get(self.url("/v1/contacts")).bearer_auth(key))
            .await
    }

    /// The STUN and TURN servers for calls, with TURN credentials for this account.
    pub async fn ice(&self, key: &str) -> Result<pinchat_proto::http::IceConfig, RemoteError> {
        self.send(self.http.get(self.url("/v1/ice")).bearer_auth(key))
            .await
    }

    /// An avatar image and its MIME type.
    pub async fn avatar(&self, key: &str, hash: &str) -> Result<(String, Vec<u8>), RemoteError> {
        let response = self
            .http
            .get(self.url(&format!("/v1/avatars/{hash}")))
            .bearer_auth(key)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(error_of(response).await);
        }
        let mime = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let bytes = response.bytes().await.map_err(unreachable)?;
        Ok((mime, bytes.to_vec()))
    }

    /// Sends a message.
    pub async fn send_message(
        &self,
        key: &str,
        to: AccountId,
        client_id: &str,
        text: &str,
    ) -> Result<SendResponse, RemoteError> {
        let body = SendRequest {
            to,
            client_id: client_id.into(),
            text: text.into(),
        };
        self.post(key, "/v1/messages", &body).await
    }

    /// A history page.
    pub async fn history(
        &self,
        key: &str,
        contact: AccountId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage, RemoteError> {
        let mut url = format!("{}/v1/messages/{contact}?limit={limit}", self.base);
        if let Some(b) = before {
            url.push_str(&format!("&before={}", b.0));
        }
        self.send(self.http.get(url).bearer_auth(key)).await
    }

    /// A page of the call history with a contact.
    pub async fn call_history(
        &self,
        key: &str,
        contact: AccountId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<pinchat_proto::http::CallHistoryPage, RemoteError> {
        let mut url = format!("{}/v1/calls/{contact}?limit={limit}", self.base);
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        self.send(self.http.get(url).bearer_auth(key)).await
    }

    /// Marks messages read.
    pub async fn mark_read(
        &self,
        key: &str,
        contact: AccountId,
        up_to: MessageId,
    ) -> Result<MarkReadResponse, RemoteError> {
        self.post(
            key,
            &format!("/v1/messages/{contact}/read"),
            &MarkReadRequest { up_to },
        )
        .await
    }

    /// Polls for changes. `Ok((None, epoch, cursor))` when nothing changed.
    pub async fn changes(
        &self,
        key: &str,
        pins: &[AccountId],
        since: Option<Position>,
        fresh: &[AccountId],
    ) -> Result<(Option<Snapshot>, Epoch, Cursor), RemoteError> {
        let list = |ids: &[AccountId]| ids.iter().map(AccountId::to_string).collect::<Vec<_>>().join(",");
        let mut url = format!("{}/v1/changes?pins={}", self.base, list(pins));
        if let Some(p) = since {
            url.push_str(&format!(
                "&epoch={}&since={}&fresh={}",
                p.epoch,
                p.cursor,
                list(fresh)
            ));
        }
        let response = self
            .http
            .get(url)
            .bearer_auth(key)
            .header(reqwest::header::ACCEPT, pinchat_proto::BINARY_MEDIA_TYPE)
            .send()
            .await
            .map_err(unreachable)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        let (epoch, cursor) = (
            header(EPOCH_HEADER).unwrap_or(0),
            header(CURSOR_HEADER).unwrap_or(0),
        );
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok((None, epoch, cursor));
        }
        if !response.status().is_success() {
            return Err(error_of(response).await);
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        let snapshot = pinchat_proto::codec::decode_snapshot(pinchat_proto::Encoding::Binary, &bytes)
            .map_err(|e| RemoteError::Decode(e.to_string()))?;
        Ok((Some(snapshot), epoch, cursor))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        key: &str,
        path: &str,
        body: &B,
    ) -> Result<T, RemoteError> {
        self.send(self.http.post(self.url(path)).bearer_auth(key).json(body))
            .await
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, RemoteError> {
        let response = request.send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(error_of(response).await);
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| RemoteError::Decode(e.to_string()))
    }
}

/// One HTTP client for the whole daemon: its connection pool and its copy of the system's root
/// certificates are shared by every widget instead of being built once per widget.
fn shared_client() -> Result<reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(60))
                .no_proxy()
                .build()
                .map_err(|e| format!("cannot create an HTTP client: {e}"))
        })
        .clone()
}

/// The TLS configuration for push streams (`wss://`), built once: the system's root certificates.
pub fn stream_tls() -> Option<std::sync::Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Option<std::sync::Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read a system root certificate");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::error!("no usable system root certificates: wss:// streams cannot be verified");
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(std::sync::Arc::new(config))
        })
        .clone()
}

fn unreachable(e: reqwest::Error) -> RemoteError {
    RemoteError::Unreachable(with_causes(&e))
}

/// An error with the causes it wraps, so that the reason a person can act on is not lost: reqwest's own
/// message is only "error sending request for url (…)", and why (refused, not resolved, a certificate this
/// computer does not trust) is in its sources. A certificate failure also says what fixes it.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their inner error in their own message.
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (the server's TLS certificate is not trusted here, or does not name this address: install the \
             certificate of the authority that signed it in the system's store, or point SSL_CERT_FILE at it)",
        );
    }
    text
}

async fn error_of(response: reqwest::Response) -> RemoteError {
    let status = response.status();
    match response.json::<ErrorResponse>().await {
        Ok(e) => RemoteError::Server(e.error),
        Err(_) if status.is_server_error() => {
            RemoteError::Unreachable(format!("the server answered {status}"))
        }
        Err(_) => RemoteError::Decode(format!("the server answered {status} without an error body")),
    }
}
