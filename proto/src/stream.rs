//! Frames of the push stream (`GET /v1/stream`, a WebSocket).
//!
//! The client opens the stream with its auth key in the `Authorization` header, then sends
//! [`ClientFrame::Hello`]. The server answers [`ServerFrame::Welcome`] (or an error and a close). From then
//! on the client manages subscriptions — one per widget — and may send messages, mark them read and set
//! its presence; the server pushes [`ServerFrame::Snapshot`], [`ServerFrame::Delta`] and
//! [`ServerFrame::Message`] for the pinned contacts of each subscription and nothing about anybody else.
//!
//! Variant order is part of the binary encoding (postcard writes the variant index): new variants go at
//! the end, and existing ones never move.

use crate::error::ErrorBody;
use crate::types::{AccountId, ContactUpdate, Cursor, Epoch, Field, Message, MessageId, Presence};
use serde::{Deserialize, Serialize};

/// A subscription's number on its stream, chosen by the client (0, 1, … below the server's limit).
pub type SubId = u8;

/// A request number chosen by the client; the server's [`ServerFrame::Ack`] or [`ServerFrame::Error`]
/// echoes it.
pub type ReqId = u32;

/// A frame from the client to the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientFrame {
    /// Must be the first frame. Announces the protocol version.
    Hello {
        /// The client's [`crate::PROTOCOL_VERSION`].
        version: u16,
    },
    /// Creates subscription `sub`, or replaces its pins if it exists (re-pinning takes effect at once).
    /// Answered by a [`ServerFrame::Snapshot`] for `sub`, or an [`ServerFrame::Error`] echoing `req`.
    Subscribe {
        /// Request number for errors.
        req: ReqId,
        /// Which subscription.
        sub: SubId,
        /// The pinned contacts: distinct contacts of the account, at most the server's `max_pins`.
        pins: Vec<AccountId>,
        /// Present when the client already holds state for these pins and wants only what changed.
        resume: Option<Resume>,
    },
    /// Ends subscription `sub`. Answered by an [`Ack::Done`].
    Unsubscribe {
        /// Request number.
        req: ReqId,
        /// Which subscription.
        sub: SubId,
    },
    /// Sends a text message to a contact. Answered by [`Ack::Sent`] once the message is stored durably.
    Send {
        /// Request number.
        req: ReqId,
        /// The recipient; must be a contact.
        to: AccountId,
        /// A client-chosen id (1–64 bytes) that makes retries idempotent: the same `client_id` from the
        /// same account is stored once and acknowledged with the same message id every time.
        client_id: String,
        /// The text, 1 to `max_text_bytes` bytes.
        text: String,
    },
    /// Marks every message from `contact` up to and including `up_to` as read. Answered by
    /// [`Ack::Read`].
    MarkRead {
        /// Request number.
        req: ReqId,
        /// Whose messages.
        contact: AccountId,
        /// The newest message read.
        up_to: MessageId,
    },
    /// Sets the account's chosen presence state and/or status text. Answered by [`Ack::Done`].
    SetPresence {
        /// Request number.
        req: ReqId,
        /// New state, if changing. `offline` means "appear offline".
        state: Option<Presence>,
        /// New status text, if changing.
        status: Option<String>,
    },
    /// Creates subscription `sub` for **every contact** of the account, or turns `sub` into one: what a
    /// full client's contact list needs (a widget pins a few with [`ClientFrame::Subscribe`]). Not
    /// bounded by `max_pins`; contacts added later are not included until the client subscribes again.
    /// Answered like [`ClientFrame::Subscribe`]; `resume.fresh` names contacts the client holds no state
    /// for. Added in version 1 (a server that predates it answers `proto.unknown_type`).
    SubscribeRoster {
        /// Request number for errors.
        req: ReqId,
        /// Which subscription.
        sub: SubId,
        /// Present when the client already holds state for the contacts and wants only what changed.
        resume: Option<Resume>,
    },
}

/// What a client that already holds state tells the server when (re)subscribing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The epoch the client's cursor belongs to ([`Welcome::epoch`] when it got it).
    pub epoch: Epoch,
    /// The cursor of the last event the client applied for this subscription.
    pub cursor: Cursor,
    /// Pins the client holds no state for (newly added): these get full entries.
    pub fresh: Vec<AccountId>,
}

/// A frame from the server to the client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to `hello`.
    Welcome(Welcome),
    /// The state of a subscription's pins: a full snapshot, or (on resume) what changed.
    Snapshot(Snapshot),
    /// Some fields of one pinned contact changed.
    Delta {
        /// Which subscription.
        sub: SubId,
        /// The change's cursor.
        cursor: Cursor,
        /// Which contact.
        contact: AccountId,
        /// Only the fields that changed.
        fields: Vec<Field>,
    },
    /// A pinned contact sent the account a message.
    Message {
        /// Which subscription.
        sub: SubId,
        /// The message's cursor.
        cursor: Cursor,
        /// The message.
        message: Message,
    },
    /// A request succeeded.
    Ack {
        /// The request's number.
        req: ReqId,
        /// What it produced.
        result: Ack,
    },
    /// A request failed, or (with no `req`) the stream is about to be closed for this reason.
    Error {
        /// The request's number, when the error answers one.
        req: Option<ReqId>,
        /// The error.
        error: ErrorBody,
    },
}

/// The server's greeting.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The protocol version the server speaks (equal to the client's).
    pub version: u16,
    /// The database's epoch: store it with cursors.
    pub epoch: Epoch,
    /// The account this stream is authenticated as.
    pub account: AccountId,
    /// The account's own identity and presence (the widget's header).
    pub me: Vec<Field>,
    /// What the server allows.
    pub limits: Limits,
    /// How often the client should send a WebSocket ping when otherwise silent, in seconds. The server
    /// closes a stream silent for three times this long.
    pub keepalive_secs: u16,
}

/// Server limits a client needs to respect.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most pins in one subscription.
    pub max_pins: u16,
    /// Most subscriptions on one stream.
    pub max_subscriptions: u8,
    /// Longest message text, in bytes.
    pub max_text_bytes: u32,
    /// Largest frame the server accepts, in bytes.
    pub max_frame_bytes: u32,
}

/// The state of a subscription's pins.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Which subscription. (Always 0 in a poll answer.)
    pub sub: SubId,
    /// Everything up to this cursor is included; events after it follow on the stream.
    pub cursor: Cursor,
    /// `true`: this replaces whatever the client held (every pin has a full entry, `messages` holds each
    /// pin's latest unread messages as hints). `false`: apply it on top (only changed fields, and every
    /// message that arrived after the resume cursor).
    pub full: bool,
    /// Per contact, all fields (full) or the changed ones; contacts without changes are left out.
    pub contacts: Vec<ContactUpdate>,
    /// Messages from pinned contacts, oldest first.
    pub messages: Vec<Message>,
}

/// The result of a successful request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// The request needed no answer beyond success.
    Done,
    /// The message is stored.
    Sent {
        /// Its id.
        id: MessageId,
        /// When the server stored it, ms since the Unix epoch.
        ts: i64,
        /// `true` when this `client_id` had been stored before (a retry).
        duplicate: bool,
    },
    /// Messages were marked read.
    Read {
        /// Unread messages from that contact afterwards.
        unread: u32,
    },
}
