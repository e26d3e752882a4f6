//! The HTTP side: routes, authentication, JSON bodies and error responses.
//!
//! Every error leaves as `{"error": {"code": "...", "message": "..."}}` with a fitting status, including
//! the ones axum would otherwise answer itself (unknown route, wrong method, bad JSON, body too large).

use crate::App;
use crate::api::store_error;
use crate::auth::Authed;
use crate::metrics::Metrics;
use crate::store::{ProfileChange, Since};
use crate::stream::CountingIo;
use axum::body::Bytes;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use hyper_util::rt::TokioIo;
use pinchat_proto::http::*;
use pinchat_proto::{
    AccountId, BINARY_MEDIA_TYPE, CURSOR_HEADER, EPOCH_HEADER, ErrorBody, ErrorCode, MessageId,
    PROTOCOL_VERSION, VERSION_HEADER,
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Most messages per history page.
pub const MAX_HISTORY_PAGE: u32 = 200;

/// Builds the router.
pub fn router(app: Arc<App>) -> Router {
    let limits = &app.api.config.limits;
    let v1 = Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/me/profile", axum::routing::patch(update_profile))
        .route(
            "/me/avatar",
            put(set_avatar)
                .delete(delete_avatar)
                .layer(DefaultBodyLimit::max(limits.max_avatar_bytes)),
        )
        .route("/me/presence", put(set_presence))
        .route("/contacts", get(contacts))
        .route("/avatars/{hash}", get(avatar))
        .route("/messages", post(send))
        .route("/messages/{contact}", get(history))
        .route("/messages/{contact}/read", post(mark_read))
        .route("/calls/{contact}", get(calls))
        .route("/changes", get(changes))
        .route("/stream", get(stream))
        .route("/ice", get(ice))
        .route("/xmpp", get(xmpp_status).put(xmpp_link).delete(xmpp_unlink))
        .layer(middleware::from_fn(check_version));
    let mut router = Router::new().route("/healthz", get(healthz)).nest("/v1", v1);
    if app.api.config.metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

/// The client's address, for both plain and TLS listeners.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// An error response.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        ApiError(e)
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError(ErrorBody::new(code, message))
}

/// The HTTP status for an error code.
pub fn status_of(code: &ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        MissingKey | InvalidKey | BadCredentials => StatusCode::UNAUTHORIZED,
        AccountDisabled | PinNotContact | MessageNotContact | CallNotContact => StatusCode::FORBIDDEN,
        NotFound | CallNotFound | XmppNotLinked => StatusCode::NOT_FOUND,
        XmppAuthFailed => StatusCode::UNPROCESSABLE_ENTITY,
        XmppUnreachable => StatusCode::BAD_GATEWAY,
        XmppUnavailable => StatusCode::NOT_IMPLEMENTED,
        AccountExists | CallBusy | CallGlare | CallUnavailable => StatusCode::CONFLICT,
        BodyTooLarge | FrameTooLarge | TextTooLong => StatusCode::PAYLOAD_TOO_LARGE,
        RateLimited | TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
        ShuttingDown | StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Internal | IdleTimeout | Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        VersionUnsupported | Malformed | UnknownType | InvalidUtf8 | Unexpected | InvalidRequest
        | TooManyPins | TooManySubscriptions => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0.code);
        let mut headers = HeaderMap::new();
        match self.0.code {
            ErrorCode::MissingKey | ErrorCode::InvalidKey => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            // The rest of an oversized body is never read, so the connection cannot carry another
            // request: say so, or a client reuses it and its next request fails with a broken pipe
            // (seen in CI).
            ErrorCode::BodyTooLarge => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        (status, headers, Json(ErrorResponse { error: self.0 })).into_response()
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

async fn count_requests(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    Metrics::inc(&app.api.metrics.http_requests);
    if response.status().is_client_error() || response.status().is_server_error() {
        Metrics::inc(&app.api.metrics.errors);
    }
    response
}

async fn check_version(req: Request, next: Next) -> Response {
    if let Some(v) = req.headers().get(VERSION_HEADER) {
        let ok = v.to_str().ok().and_then(|v| v.trim().parse::<u16>().ok()) == Some(PROTOCOL_VERSION);
        if !ok {
            return error(
                ErrorCode::VersionUnsupported,
                format!(
                    "this server speaks protocol version {PROTOCOL_VERSION}, the request asked for {:?}",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> ApiError {
    error(
        ErrorCode::NotFound,
        format!(
            "no such endpoint: {} {}; see docs/protocol.md",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    let mut r = error(
        ErrorCode::InvalidRequest,
        format!(
            "{} is not allowed on {}; see docs/protocol.md",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

impl FromRequestParts<Arc<App>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self> {
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            error(
                ErrorCode::MissingKey,
                "send the auth key from /v1/login as `Authorization: Bearer <key>`",
            )
        })?;
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                error(
                    ErrorCode::MissingKey,
                    "the Authorization header must be `Bearer <key>`",
                )
            })?;
        Ok(app.api.auth.check_key(key.trim()).await?)
    }
}

/// A JSON request body, with every failure mapped to a protocol error.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                error(
                    ErrorCode::BodyTooLarge,
                    "the request body is larger than the server accepts",
                )
            } else {
                error(ErrorCode::Malformed, format!("cannot read the request body: {e}"))
            }
        })?;
        parse_body(content_type.as_deref(), &bytes)
            .map(Body)
            .map_err(ApiError::from)
    }
}

/// Reads a JSON request body: the content type, UTF-8, an object, then the type's fields. Every
/// failure is a protocol error. (Pure, so that the fuzzer runs exactly what the server runs.)
pub fn parse_body<T: DeserializeOwned>(
    content_type: Option<&str>,
    bytes: &[u8],
) -> std::result::Result<T, ErrorBody> {
    let is_json = content_type.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(ErrorBody::new(
            ErrorCode::Malformed,
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ErrorBody::new(
            ErrorCode::InvalidUtf8,
            format!("the request body is not valid UTF-8: {e}"),
        ));
    }
    // Every body is an object. (serde would also read a struct from an array of its fields in
    // order, which no client means.)
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ErrorBody::new(
            ErrorCode::Malformed,
            "the request body must be a JSON object, like {\"field\": value}",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ErrorBody::new(ErrorCode::Malformed, format!("invalid JSON body: {e}")))
}

/// Liveness and readiness: 200 `ok`, or 503 `unavailable` with the reason while the database cannot be
/// written (a load balancer then sends writers elsewhere; reads still work here).
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let storage = app.api.store.storage_problem();
    let status = if storage.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let health = Health {
        status: if storage.is_some() { "unavailable" } else { "ok" }.into(),
        protocol: PROTOCOL_VERSION,
        storage,
    };
    (status, Json(health)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.api.metrics.render(),
    )
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(PeerAddr(peer)): ConnectInfo<PeerAddr>,
    Body(req): Body<LoginRequest>,
) -> Result<Json<LoginResponse>> {
    match app
        .api
        .auth
        .login(req.account.trim(), &req.password, peer.ip())
        .await
    {
        Ok((key, account, expires_at)) => {
            Metrics::inc(&app.api.metrics.logins);
            tracing::info!(account = %account, peer = %peer.ip(), "login");
            Ok(Json(LoginResponse {
                key,
                account,
                expires_at,
            }))
        }
        Err(e) => {
            Metrics::inc(&app.api.metrics.logins_failed);
            tracing::info!(login = %req.account, peer = %peer.ip(), code = %e.code, "login refused");
            Err(e.into())
        }
    }
}

async fn logout(State(app): State<Arc<App>>, authed: Authed) -> Result<StatusCode> {
    app.api.store.revoke_key(authed.key).await.map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(app): State<Arc<App>>, authed: Authed) -> Result<Json<Me>> {
    Ok(Json(app.api.store.me(authed.account).await.map_err(store_error)?))
}

async fn update_profile(
    State(app): State<Arc<App>>,
    authed: Authed,
    Body(req): Body<ProfileUpdate>,
) -> Result<Json<Me>> {
    let change = ProfileChange {
        name: req.name.map(|n| n.trim().to_owned()),
        avatar: None,
        signature: req.signature,
        description: req.description,
    };
    app.api.update_profile(authed.account, change).await?;
    me(State(app), authed).await
}

async fn set_presence(
    State(app): State<Arc<App>>,
    authed: Authed,
    Body(req): Body<PresenceUpdate>,
) -> Result<Json<Me>> {
    app.api
        .set_presence(authed.account, req.state, req.status)
        .await?;
    me(State(app), authed).await
}

/// The image types accepted as avatars, by their first bytes.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The content hash naming an avatar: 128 bits of SHA-256, URL-safe base64.
pub fn avatar_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

async fn set_avatar(State(app): State<Arc<App>>, authed: Authed, body: Bytes) -> Result<Json<AvatarSet>> {
    let hash = store_avatar(&app, &body).await?;
    let change = ProfileChange {
        avatar: Some(Some(hash.clone())),
        ..ProfileChange::default()
    };
    app.api.update_profile(authed.account, change).await?;
    Ok(Json(AvatarSet { hash }))
}

/// The largest avatar, in pixels each way.
pub const MAX_AVATAR_SIDE: u32 = 2048;

/// Decodes an avatar in full, within bounds: a truncated or damaged image, or one that declares more
/// than [`MAX_AVATAR_SIDE`] pixels a side, is refused before it is stored or served to anyone.
pub fn check_image(bytes: &[u8], mime: &str) -> std::result::Result<(), String> {
    let format = match mime {
        "image/png" => image::ImageFormat::Png,
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/gif" => image::ImageFormat::Gif,
        _ => image::ImageFormat::WebP,
    };
    // The header first, without limits (it allocates nothing), to say what is wrong in pixels.
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.no_limits();
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("the avatar cannot be read: {e}"))?;
    if w > MAX_AVATAR_SIDE || h > MAX_AVATAR_SIDE {
        return Err(format!(
            "the avatar is {w}×{h} pixels; at most {MAX_AVATAR_SIDE}×{MAX_AVATAR_SIDE} are accepted"
        ));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    reader.limits(avatar_limits());
    // Decoders have bugs that hostile files find (the fuzzer found an assertion in the JPEG decoder's
    // upsampler, a known class of zune-jpeg panics): such a file is refused like any undecodable one.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode())) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the avatar is not a complete {mime} image: {e}")),
        Err(_) => Err(format!("the avatar cannot be decoded as a {mime} image")),
    }
}

fn avatar_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_AVATAR_SIDE);
    limits.max_image_height = Some(MAX_AVATAR_SIDE);
    limits.max_alloc = Some(64 << 20);
    limits
}

/// Validates and stores avatar bytes; returns their hash.
pub async fn store_avatar(app: &App, bytes: &[u8]) -> Result<String> {
    let mime = sniff_image(bytes).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            "the avatar must be a PNG, JPEG, GIF or WebP image",
        )
    })?;
    let owned = bytes.to_vec();
    tokio::task::spawn_blocking(move || check_image(&owned, mime))
        .await
        .map_err(|e| error(ErrorCode::Internal, format!("cannot check the avatar: {e}")))?
        .map_err(|why| error(ErrorCode::InvalidRequest, why))?;
    let hash = avatar_hash(bytes);
    app.api
        .store
        .put_avatar(&hash, mime, bytes.to_vec())
        .await
        .map_err(store_error)?;
    Ok(hash)
}

async fn delete_avatar(State(app): State<Arc<App>>, authed: Authed) -> Result<StatusCode> {
    let change = ProfileChange {
        avatar: Some(None),
        ..ProfileChange::default()
    };
    app.api.update_profile(authed.account, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn avatar(
    State(app): State<Arc<App>>,
    _authed: Authed,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let etag = format!("\"{hash}\"");
    let cache = (header::CACHE_CONTROL, "private, max-age=31536000, immutable");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        && hash.len() <= 64
    {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (cache.0, cache.1.into())],
        )
            .into_response());
    }
    let (mime, bytes) = app
        .api
        .store
        .avatar(&hash)
        .await
        .map_err(store_error)?
        .ok_or_else(|| error(ErrorCode::NotFound, format!("no avatar with hash {hash}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::ETAG, etag),
            (cache.0, cache.1.into()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        ],
        bytes,
    )
        .into_response())
}

/// STUN and TURN servers for a call, with TURN credentials made for this account just now.
async fn ice(State(app): State<Arc<App>>, authed: Authed) -> Json<pinchat_proto::http::IceConfig> {
    Json(crate::ice::config(
        &app.api.config.ice,
        authed.account,
        crate::util::now_ms() / 1000,
    ))
}

async fn xmpp_link(
    State(app): State<Arc<App>>,
    authed: Authed,
    Body(req): Body<XmppLinkRequest>,
) -> Result<Json<XmppLinkStatus>> {
    Ok(Json(app.gateway.link(authed.account, req).await?))
}

async fn xmpp_status(State(app): State<Arc<App>>, authed: Authed) -> Result<Json<XmppLinkStatus>> {
    Ok(Json(app.gateway.status(authed.account)?))
}

async fn xmpp_unlink(State(app): State<Arc<App>>, authed: Authed) -> Result<StatusCode> {
    app.gateway.unlink(authed.account).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn contacts(State(app): State<Arc<App>>, authed: Authed) -> Result<Json<ContactList>> {
    let contacts = app
        .api
        .store
        .contacts(authed.account)
        .await
        .map_err(store_error)?;
    Ok(Json(ContactList {
        contacts,
        max_pins: app.api.config.limits.max_pins,
    }))
}

async fn send(
    State(app): State<Arc<App>>,
    authed: Authed,
    Body(req): Body<SendRequest>,
) -> Result<Json<SendResponse>> {
    let sent = app
        .api
        .send(authed.account, req.to, &req.client_id, &req.text)
        .await?;
    Ok(Json(SendResponse {
        id: sent.id,
        ts: sent.ts,
        duplicate: sent.duplicate,
    }))
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    error(
        ErrorCode::InvalidRequest,
        format!("invalid query string: {}", e.body_text()),
    )
}

fn path_error(e: axum::extract::rejection::PathRejection) -> ApiError {
    error(
        ErrorCode::InvalidRequest,
        format!("invalid path: {}", e.body_text()),
    )
}

async fn history(
    State(app): State<Arc<App>>,
    authed: Authed,
    contact: std::result::Result<Path<u64>, axum::extract::rejection::PathRejection>,
    query: std::result::Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryPage>> {
    let Path(contact) = contact.map_err(path_error)?;
    let Query(q) = query.map_err(query_error)?;
    let limit = page_limit(q.limit)?;
    let page = app
        .api
        .store
        .history(authed.account, AccountId(contact), q.before.map(MessageId), limit)
        .await
        .map_err(store_error)?;
    Ok(Json(page))
}

/// `GET /v1/calls/{contact}`: the call history with a contact, paged like the messages.
async fn calls(
    State(app): State<Arc<App>>,
    authed: Authed,
    contact: std::result::Result<Path<u64>, axum::extract::rejection::PathRejection>,
    query: std::result::Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<pinchat_proto::http::CallHistoryPage>> {
    let Path(contact) = contact.map_err(path_error)?;
    let Query(q) = query.map_err(query_error)?;
    let limit = page_limit(q.limit)?;
    let page = app
        .api
        .store
        .calls(authed.account, AccountId(contact), q.before, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(page))
}

/// A page size: 50 unless asked, at most [`MAX_HISTORY_PAGE`].
fn page_limit(asked: Option<u32>) -> Result<u32> {
    let limit = asked.unwrap_or(50);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("limit must be 1 to {MAX_HISTORY_PAGE} (got {limit}); page with before"),
        ));
    }
    Ok(limit)
}

async fn mark_read(
    State(app): State<Arc<App>>,
    authed: Authed,
    contact: std::result::Result<Path<u64>, axum::extract::rejection::PathRejection>,
    Body(req): Body<MarkReadRequest>,
) -> Result<Json<MarkReadResponse>> {
    let Path(contact) = contact.map_err(path_error)?;
    let unread = app
        .api
        .mark_read(authed.account, AccountId(contact), req.up_to)
        .await?;
    Ok(Json(MarkReadResponse { unread }))
}

#[derive(serde::Deserialize)]
struct ChangesQuery {
    /// Comma-separated account ids.
    #[serde(default)]
    pins: String,
    epoch: Option<u64>,
    since: Option<u64>,
    /// Comma-separated pins the client holds nothing for.
    #[serde(default)]
    fresh: String,
}

fn id_list(what: &str, s: &str) -> Result<Vec<AccountId>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse().map(AccountId).map_err(|_| {
                error(
                    ErrorCode::InvalidRequest,
                    format!("{what} must be comma-separated account ids; got {p:?}"),
                )
            })
        })
        .collect()
}

/// The poll endpoint (claim 5 A and B): what changed for a pin set since a cursor. Nothing changed means
/// `204 No Content` and an empty body; the new cursor is in the `Pinchat-Cursor` header either way.
async fn changes(
    State(app): State<Arc<App>>,
    authed: Authed,
    headers_in: HeaderMap,
    query: std::result::Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(q) = query.map_err(query_error)?;
    let pins = id_list("pins", &q.pins)?;
    let fresh = id_list("fresh", &q.fresh)?;
    let since = match (q.epoch, q.since) {
        (Some(epoch), Some(cursor)) => Some(Since { epoch, cursor, fresh }),
        (None, None) => None,
        _ => {
            return Err(error(
                ErrorCode::InvalidRequest,
                "give both epoch and since, or neither",
            ));
        }
    };
    let snapshot = app.api.sync(authed.account, &pins, since).await?;
    let (epoch, _) = app.api.store.head().await.map_err(store_error)?;
    let headers = [
        (
            HeaderName::from_static(CURSOR_HEADER),
            snapshot.cursor.to_string(),
        ),
        (HeaderName::from_static(EPOCH_HEADER), epoch.to_string()),
    ];
    if !snapshot.full && snapshot.contacts.is_empty() && snapshot.messages.is_empty() {
        return Ok((StatusCode::NO_CONTENT, headers).into_response());
    }
    let binary = headers_in
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(BINARY_MEDIA_TYPE));
    if binary {
        let bytes = pinchat_proto::codec::encode(pinchat_proto::Encoding::Binary, &snapshot);
        return Ok((headers, [(header::CONTENT_TYPE, BINARY_MEDIA_TYPE)], bytes).into_response());
    }
    Ok((headers, Json(snapshot)).into_response())
}

/// `GET /v1/stream`: the WebSocket upgrade, done here rather than by axum's wrapper so that the stream
/// owns the raw socket (exact byte counts, draining before close).
async fn stream(State(app): State<Arc<App>>, authed: Authed, mut req: Request) -> Result<Response> {
    let headers = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(error(
            ErrorCode::InvalidRequest,
            "/v1/stream is a WebSocket endpoint: send an upgrade request (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(error(
            ErrorCode::InvalidRequest,
            "only WebSocket version 13 is supported",
        ));
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            "the upgrade request has no Sec-WebSocket-Key",
        )
    })?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = &app.api.config.limits;
    // Small buffers: an idle stream should cost a few kilobytes, not tungstenite's default 128 KiB.
    // Client frames are small; a larger one is read in 512-byte steps into a buffer grown to fit it.
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_frame_bytes.max(1 << 20))
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes));
    let tracker = app.tracker.clone();
    let fut = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = CountingIo::new(TokioIo::new(upgraded), app.api.metrics.clone());
                let ws = Box::new(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await);
                crate::stream::serve(ws, app, authed).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    };
    tracker.spawn(fut);
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .expect("a static 101 response is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `avatar` fuzz target: this JPEG trips an assertion inside the decoder. It is refused
    /// like any undecodable image, and nothing panics out of `check_image`.
    #[test]
    fn an_image_that_crashes_the_decoder_is_refused() {
        let bytes = include_bytes!("../tests/fixtures/avatar-jpeg-decoder-panic.jpg");
        let mime = sniff_image(bytes).unwrap();
        assert_eq!(mime, "image/jpeg");
        let why = check_image(bytes, mime).unwrap_err();
        assert!(
            why.contains("cannot be decoded") || why.contains("not a complete"),
            "{why}"
        );
    }
}
