//! The daemon's own model of a widget: what the actor holds in memory and what the widget's database
//! stores, in the protocol's id types. The local API's views are built from it in one place
//! (`ipc.rs`), so an API field can change without touching what is on disk, and the disk format
//! changes only through a migration (`db.rs`).

use pinchat_proto::{AccountId, Cursor, Epoch, Field, MessageId, Presence};

/// Where a widget's state is in its server's history of changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The server database's epoch: cursors of another epoch do not compare.
    pub epoch: Epoch,
    /// The last change applied.
    pub cursor: Cursor,
}

/// How a widget keeps current (the patent's claim 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpdateMode {
    /// The server pushes changes over a long-lived stream.
    #[default]
    Push,
    /// The daemon asks every interval.
    Poll,
    /// Only when asked to refresh.
    Manual,
}

impl UpdateMode {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateMode::Push => "push",
            UpdateMode::Poll => "poll",
            UpdateMode::Manual => "manual",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<UpdateMode> {
        [UpdateMode::Push, UpdateMode::Poll, UpdateMode::Manual]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The state of a widget's link to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Link {
    /// Connecting or reconnecting.
    #[default]
    Connecting,
    /// Connected (push), or the last poll succeeded.
    Online,
    /// The server cannot be reached; retrying.
    Offline,
    /// The server refused the key: a password is needed.
    AuthRequired,
}

/// Whose connection carries a widget (claims 9 and 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Via {
    /// The daemon's own connection to the server.
    #[default]
    Own,
    /// A running full client's, borrowed; its process id.
    FullClient(u32),
}

/// The widget account's own identity and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Its id (0 until the server has said).
    pub id: AccountId,
    /// Login name.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Avatar hash.
    pub avatar: Option<String>,
    /// Signature.
    pub signature: String,
    /// Chosen presence.
    pub state: Presence,
    /// Status text.
    pub status: String,
}

impl Default for Account {
    fn default() -> Self {
        Account {
            id: AccountId(0),
            login: String::new(),
            name: String::new(),
            avatar: None,
            signature: String::new(),
            state: Presence::Offline,
            status: String::new(),
        }
    }
}

impl Account {
    /// Applies one of the fields the server sends about the account itself.
    pub fn apply(&mut self, field: &Field) {
        match field {
            Field::Name(v) => self.name.clone_from(v),
            Field::Avatar(v) => self.avatar.clone_from(v),
            Field::Signature(v) => self.signature.clone_from(v),
            Field::State(v) => self.state = *v,
            Field::Status(v) => self.status.clone_from(v),
            Field::Description(_) | Field::Unread(_) | Field::PeerRead(_) => {}
        }
    }
}

/// A pinned contact as the widget holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// Whom.
    pub contact: AccountId,
    /// Display name.
    pub name: String,
    /// Avatar hash.
    pub avatar: Option<String>,
    /// Signature.
    pub signature: String,
    /// Description.
    pub description: String,
    /// Presence.
    pub state: Presence,
    /// Status text.
    pub status: String,
    /// Unread messages from this contact.
    pub unread: u32,
    /// The newest of our messages this contact has read.
    pub peer_read: MessageId,
}

impl Pin {
    /// A contact the widget knows nothing about yet.
    pub fn new(contact: AccountId) -> Pin {
        Pin {
            contact,
            name: String::new(),
            avatar: None,
            signature: String::new(),
            description: String::new(),
            state: Presence::Offline,
            status: String::new(),
            unread: 0,
            peer_read: MessageId(0),
        }
    }

    /// Applies one field from the server.
    pub fn apply(&mut self, field: &Field) {
        match field {
            Field::Name(v) => self.name.clone_from(v),
            Field::Avatar(v) => self.avatar.clone_from(v),
            Field::Signature(v) => self.signature.clone_from(v),
            Field::Description(v) => self.description.clone_from(v),
            Field::State(v) => self.state = *v,
            Field::Status(v) => self.status.clone_from(v),
            Field::Unread(v) => self.unread = *v,
            Field::PeerRead(v) => self.peer_read = *v,
        }
    }
}

/// A message received from a pinned contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The server's id (also its cursor).
    pub id: MessageId,
    /// The sender.
    pub from: AccountId,
    /// When the server stored it, ms since the Unix epoch.
    pub ts: i64,
    /// The text.
    pub text: String,
}

/// A message typed and not yet acknowledged by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The idempotency id the server deduplicates by.
    pub client_id: String,
    /// The recipient.
    pub to: AccountId,
    /// When it was typed, ms since the Unix epoch.
    pub ts: i64,
    /// The text.
    pub text: String,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A fresh client id for a message (96 random bits, hex): what makes its sending idempotent — the
/// server stores a message once per sender and client id, however often it is sent again.
pub fn new_client_id() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_by_name_and_pins_apply_every_field() {
        for m in [UpdateMode::Push, UpdateMode::Poll, UpdateMode::Manual] {
            assert_eq!(UpdateMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(UpdateMode::parse("sometimes"), None);
        let mut p = Pin::new(AccountId(7));
        for f in [
            Field::Name("Ann".into()),
            Field::Avatar(Some("h".into())),
            Field::Signature("sig".into()),
            Field::Description("desc".into()),
            Field::State(Presence::Busy),
            Field::Status("st".into()),
            Field::Unread(3),
            Field::PeerRead(MessageId(9)),
        ] {
            p.apply(&f);
        }
        assert_eq!(
            (p.name.as_str(), p.state, p.unread, p.peer_read),
            ("Ann", Presence::Busy, 3, MessageId(9))
        );
    }
}
