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
    /// Rings `to` for a call (claim 4: text or video with a pinned contact). Answered by
    /// [`Ack::Call`] with the call's number once at least one of the callee's streams that follows the
    /// caller has been told (each of them gets [`CallEvent::Incoming`]); the caller then gets
    /// [`CallEvent::Ringing`]. Errors: `call.not_contact`, `call.unavailable` (no stream of the callee
    /// follows the caller), `call.busy`, `call.glare`. Added in version 1.
    CallInvite {
        /// Request number.
        req: ReqId,
        /// The callee; must be a contact.
        to: AccountId,
        /// `true` for a video call, `false` for voice only.
        video: bool,
    },
    /// Takes part in call `call`: accept or decline it, exchange the session description and ICE
    /// candidates, or hang up. Answered by [`Ack::Done`]; `call.not_found` when this stream is not a
    /// party to a live call of that number, `proto.unexpected` when the signal does not fit the call's
    /// state. Added in version 1.
    CallSignal {
        /// Request number.
        req: ReqId,
        /// Which call.
        call: CallId,
        /// What to do.
        signal: CallSignal,
    },
}

/// A call's number, chosen by the server when the call is placed; unique for the server's life.
pub type CallId = u64;

/// What a party to a call sends ([`ClientFrame::CallSignal`]).
///
/// The server relays the session descriptions and candidates between the two streams of a connected
/// call and keeps none of them: media flows between the peers (or through a TURN relay, see
/// `GET /v1/ice`), never through the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallSignal {
    /// The callee answers; the first of its streams to accept wins, the others are told
    /// [`CallEnd::AnsweredElsewhere`].
    Accept,
    /// The callee refuses the call; it ends for everybody with [`CallEnd::Declined`].
    Decline,
    /// A WebRTC session description offer (SDP, at most [`MAX_SDP_BYTES`]). Connected calls only.
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// The answer to an offer (SDP, at most [`MAX_SDP_BYTES`]). Connected calls only.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// A trickled ICE candidate (at most [`MAX_CANDIDATE_BYTES`]); an empty `candidate` means "no more
    /// candidates". Connected calls only.
    Ice {
        /// The candidate line, as `RTCIceCandidate.candidate` gives it.
        candidate: String,
        /// The media line index it belongs to (`sdpMLineIndex`).
        mline: u32,
        /// The media line's `mid`, when known.
        mid: Option<String>,
    },
    /// Claims a connected call again from a new stream of the same account, after this party's link
    /// dropped ([`CallEvent::Reconnecting`] told the peer). Within the server's rejoin time
    /// (`call_rejoin_secs`) the call goes on on this stream and the peer is told
    /// [`CallEvent::Reconnected`]; later, `call.not_found` (the call ended with
    /// [`CallEnd::ConnectionLost`]). Added in version 1 (servers before it answer `proto.malformed`).
    Rejoin,
    /// Ends the call (or, while it rings, cancels or refuses it).
    Hangup {
        /// `true` when the call ends because something failed on this side (no camera, media could not
        /// connect): the peer is told [`CallEnd::Failed`] rather than [`CallEnd::Hangup`].
        failed: bool,
    },
}

/// The longest session description a party may send, in bytes.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// The longest ICE candidate line a party may send, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// What the server tells a party about a call ([`ServerFrame::Call`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CallEvent {
    /// The peer is calling: ring. Only streams with a subscription that follows the caller get it.
    Incoming {
        /// `true` for a video call.
        video: bool,
    },
    /// The callee's devices are ringing (to the caller).
    Ringing,
    /// The callee accepted (to the caller): send the offer.
    Accepted,
    /// The peer's session description offer.
    Offer {
        /// The SDP text.
        sdp: String,
    },
    /// The peer's answer.
    Answer {
        /// The SDP text.
        sdp: String,
    },
    /// One of the peer's ICE candidates.
    Ice {
        /// The candidate line; empty: the peer has no more.
        candidate: String,
        /// `sdpMLineIndex`.
        mline: u32,
        /// `sdpMid`, when known.
        mid: Option<String>,
    },
    /// A party's link to the server dropped during a connected call. The media, which flows between
    /// the peers, may well go on; the call waits for the party to come back ([`CallSignal::Rejoin`]),
    /// then [`CallEvent::Reconnected`] follows, or, after the rejoin time, [`CallEnd::ConnectionLost`].
    /// From the server it is always the peer's link (`own` is `false`); a daemon tells its own
    /// clients of its own link dropping with `own: true`. Added in version 1.
    Reconnecting {
        /// `true`: this side's own link dropped; `false`: the peer's.
        #[serde(default)]
        own: bool,
    },
    /// The party whose link dropped is back: signalling goes on. Added in version 1.
    Reconnected,
    /// The call is over for this stream.
    Ended {
        /// Why.
        reason: CallEnd,
    },
}

impl CallEvent {
    /// The peer's signal this event carries — an offer, an answer or a candidate — for the media
    /// engine; `None` for the call's other events.
    pub fn into_signal(self) -> Option<CallSignal> {
        match self {
            CallEvent::Offer { sdp } => Some(CallSignal::Offer { sdp }),
            CallEvent::Answer { sdp } => Some(CallSignal::Answer { sdp }),
            CallEvent::Ice {
                candidate,
                mline,
                mid,
            } => Some(CallSignal::Ice {
                candidate,
                mline,
                mid,
            }),
            CallEvent::Incoming { .. }
            | CallEvent::Ringing
            | CallEvent::Accepted
            | CallEvent::Reconnecting { .. }
            | CallEvent::Reconnected
            | CallEvent::Ended { .. } => None,
        }
    }
}

/// Why a call ended, as [`CallEvent::Ended`] tells it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// The peer hung up.
    Hangup,
    /// The callee declined (on this or another of its devices).
    Declined,
    /// Nobody answered within the ring time.
    NoAnswer,
    /// Another device of this account answered.
    AnsweredElsewhere,
    /// The caller hung up before anybody answered.
    Cancelled,
    /// The peer's stream ended (it lost its connection or quit) and, for a connected call, did not
    /// come back within the rejoin time.
    ConnectionLost,
    /// Both called each other at the same moment; the call placed by the account with the lower id goes
    /// on, this one ended.
    Glare,
    /// Every stream the call rang on went away before anybody answered.
    Unavailable,
    /// The peer ended the call because something failed on its side.
    Failed,
}

impl CallEnd {
    /// The stable string form (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            CallEnd::Hangup => "hangup",
            CallEnd::Declined => "declined",
            CallEnd::NoAnswer => "no_answer",
            CallEnd::AnsweredElsewhere => "answered_elsewhere",
            CallEnd::Cancelled => "cancelled",
            CallEnd::ConnectionLost => "connection_lost",
            CallEnd::Glare => "glare",
            CallEnd::Unavailable => "unavailable",
            CallEnd::Failed => "failed",
        }
    }

    /// The reason named by its [`CallEnd::as_str`] form.
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_CALL_ENDS.into_iter().find(|e| e.as_str() == name)
    }
}

const ALL_CALL_ENDS: [CallEnd; 9] = [
    CallEnd::Hangup,
    CallEnd::Declined,
    CallEnd::NoAnswer,
    CallEnd::AnsweredElsewhere,
    CallEnd::Cancelled,
    CallEnd::ConnectionLost,
    CallEnd::Glare,
    CallEnd::Unavailable,
    CallEnd::Failed,
];

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
    /// Something happened to a call this stream takes part in. Call frames carry no cursor: a call is
    /// live or nothing, and nothing about it is stored or replayed.
    Call {
        /// Which call.
        call: CallId,
        /// The other party.
        peer: AccountId,
        /// What happened.
        event: CallEvent,
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
    /// A call was placed and rings.
    Call {
        /// Its number, for every later signal.
        call: CallId,
    },
}
