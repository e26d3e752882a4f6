//! JSON bodies of the HTTP endpoints (see `docs/protocol.md` for the endpoint table).
//!
//! Request bodies ignore unknown fields so that newer clients can talk to older servers; response bodies
//! leave out absent optional fields.

use crate::error::ErrorBody;
use crate::types::{AccountId, MessageId, Presence};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST /v1/login`.
#[derive(Serialize, Deserialize, Clone)]
pub struct LoginRequest {
    /// The account's login name.
    pub account: String,
    /// The password. Never logged: `Debug` prints a placeholder.
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("account", &self.account)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Answer to a successful login.
#[derive(Serialize, Deserialize, Clone)]
pub struct LoginResponse {
    /// The auth key: send it as `Authorization: Bearer <key>` on every request and stream. Shown once; the
    /// server keeps only a hash.
    pub key: String,
    /// The account's id.
    pub account: AccountId,
    /// When the key expires if unused, in ms since the Unix epoch. Each use pushes the expiry out.
    pub expires_at: i64,
}

impl fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("key", &"<redacted>")
            .field("account", &self.account)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An account's identity: what a contact list shows and what a widget shows for a pin.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The account's id.
    pub id: AccountId,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Avatar content hash, if the account has an avatar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Signature line.
    pub signature: String,
    /// Personal description.
    pub description: String,
}

/// `GET /v1/me`: the account's own identity and presence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Me {
    /// Identity.
    #[serde(flatten)]
    pub identity: Identity,
    /// The presence state others see now.
    pub state: Presence,
    /// The state the account chose (shown to others while it is connected).
    pub chosen_state: Presence,
    /// Status text.
    pub status: String,
}

/// `GET /v1/contacts`: the full contact list, identity only (for picking pins).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ContactList {
    /// Every contact, ordered by display name.
    pub contacts: Vec<Identity>,
    /// The most pins a subscription may have.
    pub max_pins: u16,
}

/// `PATCH /v1/me/profile`: fields to change; absent fields stay as they are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// New display name (1–64 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New signature (up to 140 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// New description (up to 1000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `PUT /v1/me/presence`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PresenceUpdate {
    /// New chosen state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Presence>,
    /// New status text (up to 140 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `PUT /v1/me/avatar` answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AvatarSet {
    /// The avatar's content hash.
    pub hash: String,
}

/// `POST /v1/messages`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// Recipient; must be a contact.
    pub to: AccountId,
    /// Client-chosen idempotency id, 1–64 bytes.
    pub client_id: String,
    /// The text.
    pub text: String,
}

/// Answer to a send: the message is stored durably.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SendResponse {
    /// The message id.
    pub id: MessageId,
    /// Server timestamp, ms since the Unix epoch.
    pub ts: i64,
    /// `true` when this `client_id` had already been stored (a retry).
    pub duplicate: bool,
}

/// One message in a conversation's history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HistoryMessage {
    /// Id.
    pub id: MessageId,
    /// Sender.
    pub from: AccountId,
    /// Recipient.
    pub to: AccountId,
    /// Server timestamp, ms since the Unix epoch.
    pub ts: i64,
    /// Text.
    pub text: String,
    /// The `client_id` the account itself sent this message with; absent on the contact's messages
    /// (a sender's ids are its own business) and from servers that predate the field. A client uses it
    /// to recognise a message it still holds as queued but that the server has already stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `GET /v1/messages/{contact}?before=&limit=`: a page of the conversation, newest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Messages, newest first.
    pub messages: Vec<HistoryMessage>,
    /// `true` when older messages exist (ask again with `before` = the last id here).
    pub more: bool,
    /// The newest message from the contact that the account has read.
    pub read_up_to: MessageId,
    /// The newest message from the account that the contact has read.
    pub peer_read_up_to: MessageId,
    /// Unread messages from the contact.
    pub unread: u32,
}

/// `POST /v1/messages/{contact}/read`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MarkReadRequest {
    /// The newest message read.
    pub up_to: MessageId,
}

/// Answer to mark-read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MarkReadResponse {
    /// Unread messages from the contact afterwards.
    pub unread: u32,
}

/// Every HTTP error body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// `GET /healthz`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// `"ok"`, or `"unavailable"` (HTTP 503) when the server cannot store anything (see `storage`).
    pub status: String,
    /// The protocol version.
    pub protocol: u16,
    /// Why writes fail (a full or read-only disk), when they do. Reads are still served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// `GET /v1/ice`: where a call's media may go — STUN servers to learn one's public address, and TURN
/// relays with credentials good for `ttl_secs`. Shaped like WebRTC's `RTCIceServer` list, so a web
/// client can hand `ice_servers` to `RTCPeerConnection` as it is (after renaming to camelCase).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IceConfig {
    /// The servers, in the order to try them. Empty when the server names none: calls then connect
    /// only where the peers reach each other directly.
    pub ice_servers: Vec<IceServer>,
    /// How long the TURN credentials stay valid, in seconds; ask again before a call after that.
    pub ttl_secs: u32,
}

/// One STUN or TURN server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:…`.
    pub urls: Vec<String>,
    /// The TURN username (`<expiry>:<account id>`, the TURN REST scheme); absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password (base64 HMAC-SHA1 of the username under the shared secret); absent for STUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `GET /v1/calls/{contact}?before=&limit=`: the calls between the account and a contact, newest first.
/// The server keeps one record per call that rang (a call refused before it rang — busy, unavailable,
/// glare — leaves none). No media and no session descriptions are ever stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CallHistoryPage {
    /// Calls, newest first.
    pub calls: Vec<CallRecord>,
    /// `true` when older calls exist (ask again with `before` = the last id here).
    pub more: bool,
}

/// One call as the server recorded it when it ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The record's id, increasing with time (not the live call's id, which a restart reuses).
    pub id: u64,
    /// Who called.
    pub caller: AccountId,
    /// Who was called.
    pub callee: AccountId,
    /// `true` for a video call.
    pub video: bool,
    /// When it was placed, in milliseconds since the Unix epoch.
    pub ts: i64,
    /// How long it was connected, in milliseconds; absent when nobody answered (declined, missed,
    /// cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// How it ended: `hangup`, `failed` or `connection_lost` once answered; `declined`, `no_answer`,
    /// `cancelled`, `unavailable` or `connection_lost` (the caller's link) before.
    pub reason: crate::stream::CallEnd,
}

/// `PUT /v1/xmpp`: link an existing XMPP account, whose roster then appears among the contacts (logins
/// `xmpp:<jid>#<owner>`). The server logs in once before answering, so a wrong password or an
/// unreachable server is an error here (`xmpp.auth_failed`, `xmpp.unreachable`), and nothing is stored.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct XmppLinkRequest {
    /// The XMPP account's bare JID (`alice@example.org`).
    pub jid: String,
    /// Its password: sealed at rest with the server's gateway key, never logged, never returned.
    pub password: String,
    /// `host:port` of the XMPP server when it is not found through the domain's DNS SRV records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl std::fmt::Debug for XmppLinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppLinkRequest")
            .field("jid", &self.jid)
            .field("password", &"…")
            .field("server", &self.server)
            .finish()
    }
}

/// Where the gateway's session with a linked XMPP account stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XmppState {
    /// Logging in or reconnecting; contacts show offline with a status saying so.
    Connecting,
    /// Logged in: roster, presence and messages flow.
    Online,
    /// The XMPP server cannot be reached just now; the gateway keeps trying (every 1 s to 30 s).
    Unreachable,
    /// The XMPP server refused the password (changed since linking): link again with the new one.
    AuthFailed,
}

/// `GET /v1/xmpp` and the answer to `PUT /v1/xmpp`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct XmppLinkStatus {
    /// The linked bare JID.
    pub jid: String,
    /// The session's state.
    pub state: XmppState,
    /// What went wrong last, for a person to read (`unreachable`, `auth_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many contacts the linked roster holds.
    pub contacts: u32,
}
