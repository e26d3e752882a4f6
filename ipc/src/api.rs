//! The methods, their parameters and results, the notifications, and the error codes of the local API.
//!
//! Every type here is part of the API: changing one is an API change (bump [`crate::API_VERSION`] when
//! old clients could misunderstand, and update `docs/ipc.md`). Values reuse the wire protocol's
//! [`Presence`] and [`Field`] so that a widget change reads the same on both sides of the daemon.

use pinchat_proto::stream::{CallEnd, CallSignal};
use pinchat_proto::{Field, Presence};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A method of the API: its name, parameters and result.
pub trait Method {
    /// The JSON-RPC method name.
    const NAME: &'static str;
    /// Parameters (`params`).
    type Params: Serialize + DeserializeOwned + std::marker::Send + 'static;
    /// Result (`result`).
    type Result: Serialize + DeserializeOwned + std::marker::Send + 'static;
}

macro_rules! methods {
    ($($(#[$doc:meta])* $ty:ident = $name:literal ($params:ty) -> $result:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $ty;
            impl Method for $ty {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*
        /// Every method name, for `daemon.status` and the documentation test.
        pub const METHODS: &[&str] = &[$($name),*];
    };
}

methods! {
    /// The daemon's version, API version and widgets.
    Status = "daemon.status" (NoParams) -> DaemonStatus;
    /// Every widget, summarised.
    ListWidgets = "widget.list" (NoParams) -> Vec<WidgetSummary>;
    /// Logs in and creates a widget for the account; returns it with the full contact list to pick
    /// pins from.
    CreateWidget = "widget.create" (Login) -> Created;
    /// Removes a widget: logs out on the server, deletes its database and its keyring entry.
    RemoveWidget = "widget.remove" (WidgetRef) -> Done;
    /// Binds a widget to another account: the old key is revoked and the old data removed.
    RebindWidget = "widget.rebind" (Rebind) -> Created;
    /// The widget account's full contact list, for picking pins.
    Contacts = "widget.contacts" (WidgetRef) -> Vec<ContactIdentity>;
    /// A contact's avatar image (the `avatar` hash of an identity), for display without network
    /// access of one's own.
    Avatar = "widget.avatar" (AvatarParams) -> AvatarView;
    /// Sets the pinned contacts (at most the server's limit); the widget updates at once.
    SetPins = "widget.set_pins" (SetPinsParams) -> WidgetView;
    /// Everything a widget shows, from memory.
    Snapshot = "widget.snapshot" (WidgetRef) -> WidgetView;
    /// Fetches the pinned contacts' state from the server now (the refresh button).
    Refresh = "widget.refresh" (WidgetRef) -> WidgetView;
    /// Switches between push, poll and manual updates.
    SetMode = "widget.set_mode" (SetModeParams) -> WidgetView;
    /// The unread messages from one pinned contact (the details behind its count).
    Unread = "widget.unread" (UnreadParams) -> Vec<MessageView>;
    /// A page of the conversation with a contact, newest first.
    History = "widget.history" (HistoryParams) -> HistoryView;
    /// Sends a message; queued while offline and sent, once, when the connection is back.
    SendMessage = "widget.send" (SendParams) -> MessageView;
    /// Marks a contact's messages read (all of them, or up to a message).
    MarkRead = "widget.mark_read" (MarkReadParams) -> UnreadView;
    /// Logs in again with a password after `auth_required`; replaces the stored key.
    Reauth = "widget.reauth" (ReauthParams) -> WidgetView;
    /// Calls a pinned contact (claim 4: text or video). The call rings on the contact's devices that
    /// follow this account; `call.changed` (`ringing`, `accepted`), `call.signal` and `call.ended`
    /// notifications follow. Needs the widget's push connection.
    CallStart = "call.start" (CallStartParams) -> CallView;
    /// Accepts an incoming call (`call.incoming`); the caller then sends its offer.
    CallAccept = "call.accept" (CallRef) -> Done;
    /// Declines an incoming call; it ends for the caller and every device it rang on.
    CallDecline = "call.decline" (CallRef) -> Done;
    /// Passes a session description (offer, answer) or an ICE candidate to the peer of a connected
    /// call.
    CallSignalMethod = "call.signal" (CallSignalParams) -> Done;
    /// Ends a call (or cancels one that still rings).
    CallHangup = "call.hangup" (CallHangupParams) -> Done;
    /// The STUN and TURN servers a call's media engine should use, with short-lived TURN
    /// credentials (the server's `GET /v1/ice`); empty when the server names none.
    CallIce = "call.ice" (WidgetRef) -> pinchat_proto::http::IceConfig;
    /// A page of the calls with a pinned contact, newest first (the server's `GET /v1/calls`): placed,
    /// answered, declined, missed. A call that ended is on record by the time `call.ended` arrives.
    CallHistory = "call.history" (HistoryParams) -> pinchat_proto::http::CallHistoryPage;
    /// Starts notifications on this connection, for some widgets or all.
    Subscribe = "subscribe" (SubscribeParams) -> Done;
    /// Stops notifications on this connection.
    Unsubscribe = "unsubscribe" (NoParams) -> Done;
}

/// No parameters: `{}`, `[]` or absent.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct NoParams {}

/// A success with nothing to report.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {}

/// A widget's id: unique on this machine, stable for the widget's life.
pub type WidgetId = String;

/// The daemon, as `daemon.status` reports it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    /// The daemon's version.
    pub version: String,
    /// [`crate::API_VERSION`].
    pub api_version: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Process id.
    pub pid: u32,
    /// The widgets.
    pub widgets: Vec<WidgetSummary>,
}

/// How a widget keeps current (the patent's claim 5).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The server pushes changes over a long-lived connection (default).
    #[default]
    Push,
    /// The daemon asks the server every `poll_interval_secs`.
    Poll,
    /// Only on `widget.refresh`.
    Manual,
}

/// The state of a widget's link to its server.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// Connecting or reconnecting.
    #[default]
    Connecting,
    /// Connected (push), or the last poll succeeded (poll, manual).
    Online,
    /// The server cannot be reached; retrying with back-off.
    Offline,
    /// The server refused the key: `widget.reauth` with the password is needed.
    AuthRequired,
}

/// Whose connection a widget's data comes through (the patent's claims 9 and 12).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Via {
    /// The daemon's own connection to the server.
    #[default]
    Own,
    /// Borrowed: a running full client (`pinchat-full`) of the same account carries the widget's
    /// subscription and sends over its one server connection.
    FullClient {
        /// The full client's process id.
        pid: u32,
    },
}

/// A widget in lists.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WidgetSummary {
    /// Its id.
    pub id: WidgetId,
    /// The server's base URL.
    pub server: String,
    /// The bound account's login.
    pub login: String,
    /// The bound account's display name.
    pub name: String,
    /// Link state.
    pub connection: Connection,
    /// Whose connection carries it.
    #[serde(default)]
    pub via: Via,
    /// Unread messages from pinned contacts, in total.
    pub unread: u32,
    /// How many contacts are pinned.
    pub pins: usize,
}

/// `widget.create`: where and as whom to log in.
#[derive(Serialize, Deserialize, Clone)]
pub struct Login {
    /// Server base URL, e.g. `https://chat.example.com` or `http://127.0.0.1:7420`.
    pub server: String,
    /// Account login.
    pub account: String,
    /// Password: used once to log in, never stored, never logged.
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// `widget.rebind`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Rebind {
    /// Which widget.
    pub widget: WidgetId,
    /// The new account (and server).
    #[serde(flatten)]
    pub login: Login,
}

/// A created (or rebound) widget and its account's contacts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The widget.
    pub widget: WidgetView,
    /// The full contact list, to pick pins from.
    pub contacts: Vec<ContactIdentity>,
    /// The most contacts that can be pinned.
    pub max_pins: u16,
}

/// Names a widget.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WidgetRef {
    /// Its id.
    pub widget: WidgetId,
}

/// Names a contact of a widget.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    /// The widget.
    pub widget: WidgetId,
    /// The contact's account id.
    pub contact: u64,
}

/// `widget.unread`: a contact, and optionally a page of its unread messages.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UnreadParams {
    /// The widget.
    pub widget: WidgetId,
    /// The contact's account id.
    pub contact: u64,
    /// Only messages with a smaller id (the first id of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// At most this many (the newest); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl From<ContactRef> for UnreadParams {
    fn from(c: ContactRef) -> Self {
        UnreadParams {
            widget: c.widget,
            contact: c.contact,
            before: None,
            limit: None,
        }
    }
}

/// A contact's identity, for picking pins.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ContactIdentity {
    /// Account id.
    pub id: u64,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Avatar hash, if any.
    pub avatar: Option<String>,
    /// Signature.
    pub signature: String,
    /// Description.
    pub description: String,
}

/// `widget.set_pins`.
/// Parameters of `widget.avatar`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AvatarParams {
    /// The widget whose server has the image.
    pub widget: WidgetId,
    /// The image's hash, from an identity's `avatar`.
    pub hash: String,
}

/// An avatar image.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AvatarView {
    /// Its MIME type (`image/png`, …).
    pub mime: String,
    /// The image, base64.
    pub data: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SetPinsParams {
    /// The widget.
    pub widget: WidgetId,
    /// Contact account ids, in display order.
    pub pins: Vec<u64>,
}

/// `widget.set_mode`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SetModeParams {
    /// The widget.
    pub widget: WidgetId,
    /// The new mode.
    pub mode: Mode,
    /// For `poll`: seconds between polls (5–86400; default 60).
    #[serde(default)]
    pub interval_secs: Option<u32>,
}

/// A pinned contact as a widget shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactView {
    /// Account id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Avatar hash, if any (the image is at `{server}/v1/avatars/{hash}`).
    pub avatar: Option<String>,
    /// Signature.
    pub signature: String,
    /// Description.
    pub description: String,
    /// Presence state.
    pub state: Presence,
    /// Status text.
    pub status: String,
    /// Unread messages from this contact.
    pub unread: u32,
    /// The newest of our messages this contact has read.
    pub peer_read: u64,
}

impl ContactView {
    /// Applies one wire field.
    pub fn apply(&mut self, field: &Field) {
        match field {
            Field::Name(v) => self.name.clone_from(v),
            Field::Avatar(v) => self.avatar.clone_from(v),
            Field::Signature(v) => self.signature.clone_from(v),
            Field::Description(v) => self.description.clone_from(v),
            Field::State(v) => self.state = *v,
            Field::Status(v) => self.status.clone_from(v),
            Field::Unread(v) => self.unread = *v,
            Field::PeerRead(v) => self.peer_read = v.0,
        }
    }
}

/// Everything a widget shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WidgetView {
    /// Its id.
    pub id: WidgetId,
    /// The server's base URL.
    pub server: String,
    /// The bound account's own identity and state (the widget's header).
    pub account: AccountView,
    /// The pinned contacts, in pin order.
    pub pins: Vec<ContactView>,
    /// How it keeps current.
    pub mode: Mode,
    /// Seconds between polls in poll mode.
    pub poll_interval_secs: u32,
    /// Link state.
    pub connection: Connection,
    /// Whose connection carries it.
    #[serde(default)]
    pub via: Via,
    /// `true` while the data comes from the local database and the server has not confirmed it yet
    /// (after a start, before the first sync).
    pub stale: bool,
    /// The most contacts that can be pinned.
    pub max_pins: u16,
    /// Why the widget cannot store what it receives (a full or read-only disk), in words for the
    /// user; absent when all is well. The widget is stale meanwhile and catches up by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Incoming calls ringing now (not yet accepted, declined or over): what a client that starts
    /// while one rings shows. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ringing: Vec<RingingCall>,
}

/// An incoming call that rings, in [`WidgetView::ringing`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RingingCall {
    /// The call.
    pub call: u64,
    /// The caller (a pinned contact).
    pub contact: u64,
    /// A video call.
    pub video: bool,
}

/// The widget account's own identity.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountView {
    /// Account id.
    pub id: u64,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Avatar hash.
    pub avatar: Option<String>,
    /// Signature.
    pub signature: String,
    /// State the account chose.
    pub state: Presence,
    /// Status text.
    pub status: String,
}

/// A message as the daemon knows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    /// Server id; 0 while queued.
    pub id: u64,
    /// Sender's account id.
    pub from: u64,
    /// Recipient's account id.
    pub to: u64,
    /// Server timestamp (ms since the Unix epoch), or when it was queued.
    pub ts: i64,
    /// Text.
    pub text: String,
    /// Delivery state of an outgoing message; `received` for incoming ones.
    pub state: Delivery,
    /// The client id an outgoing message is sent with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Where a message is.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Incoming.
    Received,
    /// Outgoing, waiting for the connection.
    Queued,
    /// Outgoing, stored by the server.
    Sent,
    /// Outgoing, read by the recipient.
    Read,
    /// Outgoing, refused by the server for good (see the notification's error).
    Failed,
}

/// `widget.history`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryParams {
    /// The widget.
    pub widget: WidgetId,
    /// The contact.
    pub contact: u64,
    /// Only messages older than this id.
    #[serde(default)]
    pub before: Option<u64>,
    /// Page size (1–200, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A page of history, newest first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HistoryView {
    /// Messages, newest first (queued outgoing ones first of all).
    pub messages: Vec<MessageView>,
    /// Older messages exist.
    pub more: bool,
}

/// `widget.send`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SendParams {
    /// The widget.
    pub widget: WidgetId,
    /// The recipient: a contact.
    pub contact: u64,
    /// The text.
    pub text: String,
}

/// `widget.mark_read`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MarkReadParams {
    /// The widget.
    pub widget: WidgetId,
    /// The contact.
    pub contact: u64,
    /// Up to this message; all when absent.
    #[serde(default)]
    pub up_to: Option<u64>,
}

/// An unread count.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UnreadView {
    /// Unread from the contact.
    pub unread: u32,
}

/// `widget.reauth`.
#[derive(Serialize, Deserialize, Clone)]
pub struct ReauthParams {
    /// The widget.
    pub widget: WidgetId,
    /// The account's password: used once, never stored, never logged.
    pub password: String,
}

impl fmt::Debug for ReauthParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReauthParams")
            .field("widget", &self.widget)
            .finish_non_exhaustive()
    }
}

/// `call.start`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallStartParams {
    /// The widget.
    pub widget: WidgetId,
    /// Whom to call: a pinned contact.
    pub contact: u64,
    /// A video call (`false`: voice only).
    #[serde(default)]
    pub video: bool,
}

/// A call placed with `call.start`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    /// The call's number, for every later request and notification about it.
    pub call: u64,
    /// The contact called.
    pub contact: u64,
    /// A video call.
    pub video: bool,
}

/// `call.accept`, `call.decline`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    /// The widget.
    pub widget: WidgetId,
    /// The call.
    pub call: u64,
}

/// `call.signal`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallSignalParams {
    /// The widget.
    pub widget: WidgetId,
    /// The call.
    pub call: u64,
    /// `{"offer": {"sdp": …}}`, `{"answer": {"sdp": …}}` or `{"ice": {"candidate": …, "mline": 0,
    /// "mid": "0"}}`, as in the wire protocol.
    pub signal: CallSignal,
}

/// `call.hangup`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CallHangupParams {
    /// The widget.
    pub widget: WidgetId,
    /// The call.
    pub call: u64,
    /// The call ends because something failed here (no camera, media could not connect): the peer
    /// is told `failed` instead of `hangup`.
    #[serde(default)]
    pub failed: bool,
}

/// What `call.changed` reports.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// The callee's devices ring.
    Ringing,
    /// The callee accepted: the caller sends its offer now.
    Accepted,
    /// The peer's link to the server dropped during the call. The media between the peers may go on;
    /// the server waits for the peer to come back (`back` follows), or ends the call with
    /// `connection_lost`.
    PeerAway,
    /// This widget's own link to the server dropped during the call; the daemon claims the call back
    /// when it is up again (`back` follows, or `call.ended` with `connection_lost`). Hanging up
    /// meanwhile ends the call here at once.
    Away,
    /// The party whose link had dropped is back: signalling goes on.
    Back,
}

/// `subscribe`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeParams {
    /// Only these widgets; all (including ones created later) when absent.
    #[serde(default)]
    pub widgets: Option<Vec<WidgetId>>,
}

/// A notification: a JSON-RPC request without an id, sent by the daemon to subscribed clients.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "method", content = "params")]
pub enum Notification {
    /// Some fields of a pinned contact changed (only those fields).
    #[serde(rename = "widget.contact_changed")]
    ContactChanged {
        /// The widget.
        widget: WidgetId,
        /// The contact.
        contact: u64,
        /// The changed fields.
        fields: Vec<Field>,
    },
    /// The widget itself changed: pins, mode, the account's identity, created or rebound.
    #[serde(rename = "widget.changed")]
    WidgetChanged {
        /// The whole widget.
        widget: Box<WidgetView>,
    },
    /// A widget was removed.
    #[serde(rename = "widget.removed")]
    WidgetRemoved {
        /// The widget.
        widget: WidgetId,
    },
    /// A pinned contact sent a message.
    #[serde(rename = "message.received")]
    MessageReceived {
        /// The widget.
        widget: WidgetId,
        /// The message.
        message: MessageView,
        /// `true` when the message was already waiting when its contact was pinned (it came with the
        /// contact's first state): old news, for the list but not for an alert. Absent when `false`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        backlog: bool,
    },
    /// An outgoing message changed delivery state (queued → sent, or failed).
    #[serde(rename = "message.delivery")]
    MessageDelivery {
        /// The widget.
        widget: WidgetId,
        /// The message.
        message: MessageView,
        /// Why it failed, when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A pinned contact's unread count changed.
    #[serde(rename = "unread.changed")]
    UnreadChanged {
        /// The widget.
        widget: WidgetId,
        /// The contact.
        contact: u64,
        /// Unread from that contact.
        unread: u32,
        /// Unread from all pinned contacts of the widget.
        total: u32,
    },
    /// The widget's link to its server changed.
    #[serde(rename = "connection.changed")]
    ConnectionChanged {
        /// The widget.
        widget: WidgetId,
        /// The new state.
        connection: Connection,
        /// Whose connection carries it now.
        #[serde(default)]
        via: Via,
        /// Whether the data is still unconfirmed by the server.
        stale: bool,
    },
    /// The server refused the widget's key: ask the user for the password and call `widget.reauth`.
    #[serde(rename = "auth.required")]
    AuthRequired {
        /// The widget.
        widget: WidgetId,
        /// Why, for people.
        message: String,
    },
    /// A pinned contact calls: ring, then `call.accept` or `call.decline`.
    #[serde(rename = "call.incoming")]
    CallIncoming {
        /// The widget whose pinned contact calls.
        widget: WidgetId,
        /// The call.
        call: u64,
        /// The caller.
        contact: u64,
        /// A video call.
        video: bool,
    },
    /// A call this widget placed rings, or was accepted.
    #[serde(rename = "call.changed")]
    CallChanged {
        /// The widget.
        widget: WidgetId,
        /// The call.
        call: u64,
        /// The peer.
        contact: u64,
        /// The new state.
        state: CallState,
    },
    /// The peer's session description or ICE candidate: hand it to the media engine.
    #[serde(rename = "call.signal")]
    CallSignal {
        /// The widget.
        widget: WidgetId,
        /// The call.
        call: u64,
        /// The peer.
        contact: u64,
        /// `offer`, `answer` or `ice`, as in `call.signal`'s parameters.
        signal: CallSignal,
    },
    /// A call ended.
    #[serde(rename = "call.ended")]
    CallEnded {
        /// The widget.
        widget: WidgetId,
        /// The call.
        call: u64,
        /// The peer.
        contact: u64,
        /// Why (the wire protocol's reasons; `connection_lost` also when this widget's own link
        /// dropped).
        reason: CallEnd,
    },
}

impl Notification {
    /// The widget the notification is about.
    pub fn widget(&self) -> &str {
        match self {
            Notification::ContactChanged { widget, .. }
            | Notification::WidgetRemoved { widget }
            | Notification::MessageReceived { widget, .. }
            | Notification::MessageDelivery { widget, .. }
            | Notification::UnreadChanged { widget, .. }
            | Notification::ConnectionChanged { widget, .. }
            | Notification::AuthRequired { widget, .. }
            | Notification::CallIncoming { widget, .. }
            | Notification::CallChanged { widget, .. }
            | Notification::CallSignal { widget, .. }
            | Notification::CallEnded { widget, .. } => widget,
            Notification::WidgetChanged { widget } => &widget.id,
        }
    }
}

/// Stable error codes, in `error.data.code`. The JSON-RPC `error.code` number says the class.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON (JSON-RPC −32700).
    #[serde(rename = "rpc.parse_error")]
    ParseError,
    /// Not a JSON-RPC 2.0 request (−32600).
    #[serde(rename = "rpc.invalid_request")]
    InvalidRequest,
    /// No such method (−32601).
    #[serde(rename = "rpc.method_not_found")]
    MethodNotFound,
    /// Parameters of the wrong shape or types (−32602).
    #[serde(rename = "rpc.invalid_params")]
    InvalidParams,
    /// The daemon failed (−32603).
    #[serde(rename = "rpc.internal")]
    Internal,
    /// A request line longer than the daemon accepts; the connection is closed.
    #[serde(rename = "rpc.line_too_long")]
    LineTooLong,
    /// No widget with that id.
    #[serde(rename = "widget.not_found")]
    WidgetNotFound,
    /// This machine already has a widget for that account.
    #[serde(rename = "widget.exists")]
    WidgetExists,
    /// Not a contact of the widget's account.
    #[serde(rename = "widget.not_contact")]
    NotContact,
    /// More pins than the server allows.
    #[serde(rename = "widget.too_many_pins")]
    TooManyPins,
    /// A value out of range (empty text, bad interval, bad URL…).
    #[serde(rename = "widget.invalid")]
    Invalid,
    /// Wrong account or password.
    #[serde(rename = "auth.bad_credentials")]
    BadCredentials,
    /// The widget needs `widget.reauth` before it can talk to its server.
    #[serde(rename = "auth.required")]
    AuthRequired,
    /// The server cannot be reached (login, contacts and history need it).
    #[serde(rename = "server.unreachable")]
    ServerUnreachable,
    /// The server answered with an error; its code and message are in the message.
    #[serde(rename = "server.error")]
    ServerError,
    /// The OS keyring failed or is locked.
    #[serde(rename = "keyring.unavailable")]
    KeyringUnavailable,
    /// The daemon is shutting down.
    #[serde(rename = "daemon.shutting_down")]
    ShuttingDown,
    /// The disk holding the daemon's data is full: nothing was stored.
    #[serde(rename = "storage.full")]
    StorageFull,
    /// The daemon's data directory cannot be written: nothing was stored.
    #[serde(rename = "storage.read_only")]
    StorageReadOnly,
    /// Writing the widget's database failed otherwise: nothing was stored.
    #[serde(rename = "storage.failed")]
    StorageFailed,
    /// The contact has no device open that follows this account, or the widget has no push
    /// connection: the call cannot ring.
    #[serde(rename = "call.unavailable")]
    CallUnavailable,
    /// This account or the contact is in a call already.
    #[serde(rename = "call.busy")]
    CallBusy,
    /// The contact is calling this account at the same moment, and that call goes on: accept it.
    #[serde(rename = "call.glare")]
    CallGlare,
    /// No live call of that number on this widget.
    #[serde(rename = "call.not_found")]
    CallNotFound,
    /// The request does not fit the call's state (an offer before it was accepted, say) or is
    /// malformed (an oversized session description).
    #[serde(rename = "call.invalid")]
    CallInvalid,
}

impl ErrorCode {
    /// Every code, for the documentation test and exhaustive tables.
    pub const ALL: [ErrorCode; 25] = [
        ErrorCode::ParseError,
        ErrorCode::InvalidRequest,
        ErrorCode::MethodNotFound,
        ErrorCode::InvalidParams,
        ErrorCode::Internal,
        ErrorCode::LineTooLong,
        ErrorCode::WidgetNotFound,
        ErrorCode::WidgetExists,
        ErrorCode::NotContact,
        ErrorCode::TooManyPins,
        ErrorCode::Invalid,
        ErrorCode::BadCredentials,
        ErrorCode::AuthRequired,
        ErrorCode::ServerUnreachable,
        ErrorCode::ServerError,
        ErrorCode::KeyringUnavailable,
        ErrorCode::ShuttingDown,
        ErrorCode::StorageFull,
        ErrorCode::StorageReadOnly,
        ErrorCode::StorageFailed,
        ErrorCode::CallUnavailable,
        ErrorCode::CallBusy,
        ErrorCode::CallGlare,
        ErrorCode::CallNotFound,
        ErrorCode::CallInvalid,
    ];

    /// The JSON-RPC error number for this code.
    pub fn rpc_code(self) -> i32 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest | ErrorCode::LineTooLong => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            _ => -32000,
        }
    }

    /// The stable string form (what `error.data.code` holds).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ParseError => "rpc.parse_error",
            ErrorCode::InvalidRequest => "rpc.invalid_request",
            ErrorCode::MethodNotFound => "rpc.method_not_found",
            ErrorCode::InvalidParams => "rpc.invalid_params",
            ErrorCode::Internal => "rpc.internal",
            ErrorCode::LineTooLong => "rpc.line_too_long",
            ErrorCode::WidgetNotFound => "widget.not_found",
            ErrorCode::WidgetExists => "widget.exists",
            ErrorCode::NotContact => "widget.not_contact",
            ErrorCode::TooManyPins => "widget.too_many_pins",
            ErrorCode::Invalid => "widget.invalid",
            ErrorCode::BadCredentials => "auth.bad_credentials",
            ErrorCode::AuthRequired => "auth.required",
            ErrorCode::ServerUnreachable => "server.unreachable",
            ErrorCode::ServerError => "server.error",
            ErrorCode::KeyringUnavailable => "keyring.unavailable",
            ErrorCode::ShuttingDown => "daemon.shutting_down",
            ErrorCode::StorageFull => "storage.full",
            ErrorCode::StorageReadOnly => "storage.read_only",
            ErrorCode::StorageFailed => "storage.failed",
            ErrorCode::CallUnavailable => "call.unavailable",
            ErrorCode::CallBusy => "call.busy",
            ErrorCode::CallGlare => "call.glare",
            ErrorCode::CallNotFound => "call.not_found",
            ErrorCode::CallInvalid => "call.invalid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/ipc.md` is part of the API: every method and every error code is documented there.
    #[test]
    fn every_method_and_error_code_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ipc.md")).unwrap();
        for m in METHODS {
            assert!(
                doc.contains(&format!("`{m}`")),
                "docs/ipc.md does not document the method {m}"
            );
        }
        for c in ErrorCode::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert!(
                doc.contains(&format!("`{}`", c.as_str())),
                "docs/ipc.md does not document {}",
                c.as_str()
            );
        }
    }
}
