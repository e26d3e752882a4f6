//! Identifiers and values shared by the HTTP and stream halves of the protocol.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The numeric id of an account. Contacts are accounts, so a contact is named by its `AccountId` too.
/// Numeric rather than the login name so that it costs one to three bytes in a binary frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(transparent)]
pub struct AccountId(pub u64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of a stored message. Ids grow with time, so "up to message N" names a position in a
/// conversation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[serde(transparent)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A position in the server's change history. Every change the server stores is stamped with the next
/// cursor value; every pushed event carries the cursor of the change it reports. A client that has
/// applied everything up to cursor `c` for its pins can ask for "everything after `c`" and get exactly
/// what it missed. Cursors are only meaningful together with the server's [`Epoch`].
pub type Cursor = u64;

/// Identifies one server database. Cursors from another epoch (the database was replaced or restored)
/// are not comparable, and a resume with a foreign epoch gets a full snapshot instead.
pub type Epoch = u64;

/// The presence state of an account as other accounts see it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Not connected, or connected but appearing offline.
    #[default]
    Offline,
    /// Connected and available.
    Online,
    /// Connected, busy.
    Busy,
    /// Connected, away from the keyboard.
    Idle,
    /// Connected, refusing interruptions.
    DoNotDisturb,
}

impl Presence {
    /// Every state, in wire order.
    pub const ALL: [Presence; 5] = [
        Presence::Offline,
        Presence::Online,
        Presence::Busy,
        Presence::Idle,
        Presence::DoNotDisturb,
    ];

    /// The stable lower-case name used in JSON, config and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Offline => "offline",
            Presence::Online => "online",
            Presence::Busy => "busy",
            Presence::Idle => "idle",
            Presence::DoNotDisturb => "do_not_disturb",
        }
    }

    /// The small integer stored in databases; equal to the binary wire tag.
    pub fn to_index(self) -> u8 {
        match self {
            Presence::Offline => 0,
            Presence::Online => 1,
            Presence::Busy => 2,
            Presence::Idle => 3,
            Presence::DoNotDisturb => 4,
        }
    }

    /// The inverse of [`Presence::to_index`]; unknown values read as offline, the safe default.
    pub fn from_index(i: u8) -> Presence {
        Presence::ALL.get(usize::from(i)).copied().unwrap_or_default()
    }
}

impl std::str::FromStr for Presence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Presence::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            format!("unknown presence state {s:?}; expected one of offline, online, busy, idle, do_not_disturb")
        })
    }
}

/// One field of a contact as a widget sees it. A change on the stream carries only the fields that
/// changed, as a list of these; a full entry carries all of them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Display name.
    Name(String),
    /// Content hash of the avatar image (fetch it from `/v1/avatars/{hash}`), or none.
    Avatar(Option<String>),
    /// Signature: the short line under the name.
    Signature(String),
    /// Personal description.
    Description(String),
    /// Presence state.
    State(Presence),
    /// Free-text status chosen by the contact.
    Status(String),
    /// How many messages from this contact the account has not read.
    Unread(u32),
    /// The last message of ours that this contact has read (read receipts for the chat view).
    PeerRead(MessageId),
}

impl Field {
    /// The field's kind, for merging and for tests that look for one field.
    pub fn kind(&self) -> FieldKind {
        match self {
            Field::Name(_) => FieldKind::Name,
            Field::Avatar(_) => FieldKind::Avatar,
            Field::Signature(_) => FieldKind::Signature,
            Field::Description(_) => FieldKind::Description,
            Field::State(_) => FieldKind::State,
            Field::Status(_) => FieldKind::Status,
            Field::Unread(_) => FieldKind::Unread,
            Field::PeerRead(_) => FieldKind::PeerRead,
        }
    }
}

/// The kinds of [`Field`], without values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldKind {
    /// [`Field::Name`]
    Name,
    /// [`Field::Avatar`]
    Avatar,
    /// [`Field::Signature`]
    Signature,
    /// [`Field::Description`]
    Description,
    /// [`Field::State`]
    State,
    /// [`Field::Status`]
    Status,
    /// [`Field::Unread`]
    Unread,
    /// [`Field::PeerRead`]
    PeerRead,
}

/// A contact and some of its fields: all of them in a full snapshot, the changed ones otherwise.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ContactUpdate {
    /// Which contact.
    pub id: AccountId,
    /// Its fields, each at most once.
    pub fields: Vec<Field>,
}

/// A text message as delivered to its recipient.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Server-assigned id, increasing with time.
    pub id: MessageId,
    /// The sender.
    pub from: AccountId,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub ts: i64,
    /// The text.
    pub text: String,
}
