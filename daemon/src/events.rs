//! What widgets tell the rest of the daemon, in the daemon's own terms: a snapshot of a widget's state,
//! a message in a conversation, and the events that change them. `ipc.rs` turns them into the local
//! API's views and notifications in one place.

use crate::model::{Account, Link, Pin, Received, UpdateMode, Via};
use pinchat_proto::{AccountId, Field, MessageId};

/// Everything a widget shows, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WidgetState {
    /// Widget id.
    pub id: String,
    /// The server's base URL.
    pub server: String,
    /// The bound account.
    pub account: Account,
    /// The pinned contacts, in order.
    pub pins: Vec<Pin>,
    /// How it keeps current.
    pub mode: UpdateMode,
    /// Seconds between polls.
    pub poll_interval_secs: u32,
    /// The link to the server.
    pub link: Link,
    /// Whose connection carries it.
    pub via: Via,
    /// `true` until the server has confirmed the data (and whenever the link is not online).
    pub stale: bool,
    /// The server's pin limit.
    pub max_pins: u16,
    /// Why nothing can be stored, when that is so.
    pub storage: Option<String>,
    /// Incoming calls ringing: (call, caller, video).
    pub ringing: Vec<(u64, AccountId, bool)>,
}

impl WidgetState {
    /// Unread messages from all pins.
    pub fn total_unread(&self) -> u32 {
        self.pins.iter().map(|p| p.unread).sum()
    }
}

/// Where a message of a conversation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// From the contact.
    Received,
    /// Typed, in the outbox.
    Queued,
    /// Stored by the server.
    Sent,
    /// Read by the contact.
    Read,
    /// Refused by the server for good.
    Failed,
}

/// A message of a conversation, either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The server's id (0 while queued or when refused).
    pub id: MessageId,
    /// Sender.
    pub from: AccountId,
    /// Recipient.
    pub to: AccountId,
    /// Server time (typing time while queued), ms since the Unix epoch.
    pub ts: i64,
    /// The text.
    pub text: String,
    /// Where it stands.
    pub state: Delivery,
    /// The client id of an outgoing message.
    pub client_id: Option<String>,
}

impl Message {
    /// A received message as the widget's account sees it.
    pub fn received(r: &Received, me: AccountId) -> Message {
        Message {
            id: r.id,
            from: r.from,
            to: me,
            ts: r.ts,
            text: r.text.clone(),
            state: Delivery::Received,
            client_id: None,
        }
    }
}

/// A page of a conversation, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The messages.
    pub messages: Vec<Message>,
    /// Older ones exist.
    pub more: bool,
}

/// Something that happened to a widget.
#[derive(Clone, Debug)]
pub enum Event {
    /// Some fields of a pinned contact changed (only those).
    ContactChanged {
        /// The widget.
        widget: String,
        /// Whom.
        contact: AccountId,
        /// What changed.
        fields: Vec<Field>,
    },
    /// Pins, mode, the account or the storage state changed, or the widget was created or resynchronised.
    WidgetChanged(Box<WidgetState>),
    /// The widget was removed.
    WidgetRemoved {
        /// The widget.
        widget: String,
    },
    /// A pinned contact sent a message.
    MessageReceived {
        /// The widget.
        widget: String,
        /// The message.
        message: Message,
        /// It was already waiting when its contact was pinned: old news, not a new arrival.
        backlog: bool,
    },
    /// An outgoing message was queued, sent or refused.
    MessageDelivery {
        /// The widget.
        widget: String,
        /// The message.
        message: Message,
        /// Why it was refused.
        error: Option<String>,
    },
    /// A pinned contact's unread count changed.
    UnreadChanged {
        /// The widget.
        widget: String,
        /// Whose.
        contact: AccountId,
        /// Unread from that contact.
        unread: u32,
        /// Unread from all pins.
        total: u32,
    },
    /// The link changed, or the data turned stale or was confirmed.
    ConnectionChanged {
        /// The widget.
        widget: String,
        /// The link.
        link: Link,
        /// Whose connection it is.
        via: Via,
        /// Whether the data is unconfirmed.
        stale: bool,
    },
    /// The server refused the widget's key.
    AuthRequired {
        /// The widget.
        widget: String,
        /// The server's words.
        message: String,
    },
    /// Something happened to a call on the widget's stream.
    Call {
        /// The widget.
        widget: String,
        /// The call.
        call: pinchat_proto::stream::CallId,
        /// The peer.
        contact: AccountId,
        /// What happened.
        event: pinchat_proto::stream::CallEvent,
    },
}

impl Event {
    /// The widget it is about.
    pub fn widget(&self) -> &str {
        match self {
            Event::ContactChanged { widget, .. }
            | Event::WidgetRemoved { widget }
            | Event::MessageReceived { widget, .. }
            | Event::MessageDelivery { widget, .. }
            | Event::UnreadChanged { widget, .. }
            | Event::ConnectionChanged { widget, .. }
            | Event::AuthRequired { widget, .. }
            | Event::Call { widget, .. } => widget,
            Event::WidgetChanged(state) => &state.id,
        }
    }
}
