//! Durable state, in domain terms.
//!
//! [`Store`] is what the rest of the server needs from a database: accounts, keys, contacts, presence,
//! messages, the call history and the pinned-contact sync queries. [`sqlite::SqliteStore`] implements it on an embedded
//! SQLite file (one server); [`postgres::PgStore`] on PostgreSQL, shared by the nodes of a cluster.
//!
//! # The change feed
//! Every change a store commits is stamped with the next value of one global counter, the *cursor*, and
//! every mutable field remembers the cursor of its last change. Two things follow:
//! - "what changed for these pins after cursor `c`" is a query on the stored versions ([`Store::sync`]),
//!   which is how a client resumes, polls, or catches up after falling behind — with no gap and no
//!   duplicate, and no per-subscriber log to keep;
//! - after each commit the store reads back everything stamped since it last looked and publishes it, in
//!   cursor order, as a [`ChangeBatch`] on the feed. Writes by other processes on the same database (the
//!   admin commands) are picked up the same way, so a running server pushes them too.

pub mod postgres;
pub(crate) mod schema;
pub mod sqlite;

use async_trait::async_trait;
use pinchat_proto::http::{CallHistoryPage, HistoryPage, Identity, Me};
use pinchat_proto::stream::Snapshot;
use pinchat_proto::{AccountId, Cursor, Epoch, Field, Message, MessageId, Presence};

/// The id of a stored auth key (not the key itself, which is never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub i64);

/// What login needs to know about an account.
#[derive(Clone, Debug)]
pub struct AccountAuth {
    /// The account.
    pub id: AccountId,
    /// Its argon2id PHC hash.
    pub password_hash: String,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
}

/// A stored auth key, looked up by the hash of the key a client presented.
#[derive(Clone, Copy, Debug)]
pub struct KeyRecord {
    /// Which key.
    pub id: KeyId,
    /// Whose.
    pub account: AccountId,
    /// Expiry, ms since the Unix epoch.
    pub expires_at: i64,
    /// Revoked keys stay in the table (so their revocation can be published) but never authenticate.
    pub revoked: bool,
}

/// A call that rang and ended, for the call history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Who called.
    pub caller: AccountId,
    /// Who was called.
    pub callee: AccountId,
    /// A video call.
    pub video: bool,
    /// When it was placed, in milliseconds since the Unix epoch.
    pub placed_ms: i64,
    /// How long it was connected; `None` when nobody answered.
    pub duration_ms: Option<u64>,
    /// How it ended.
    pub reason: pinchat_proto::stream::CallEnd,
}

/// Changes to an account's profile; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct ProfileChange {
    /// Display name.
    pub name: Option<String>,
    /// Avatar hash (`Some(None)` removes the avatar).
    pub avatar: Option<Option<String>>,
    /// Signature.
    pub signature: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// The result of storing a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The message id.
    pub id: MessageId,
    /// Server timestamp, ms.
    pub ts: i64,
    /// The client id had been stored before: this is a retry and nothing new was stored.
    pub duplicate: bool,
}

/// How much a sync may send.
#[derive(Clone, Copy, Debug)]
pub struct SyncLimits {
    /// Latest unread messages included per contact as hints in a full entry.
    pub hints_per_contact: u32,
    /// A resume that would carry more messages than this becomes a full snapshot instead (the client then
    /// pages through history for the rest).
    pub resume_messages: u32,
}

/// What a client already holds when it asks for a sync.
#[derive(Clone, Debug)]
pub struct Since {
    /// The epoch of its cursor.
    pub epoch: Epoch,
    /// Its cursor.
    pub cursor: Cursor,
    /// Pins it holds nothing for.
    pub fresh: Vec<AccountId>,
}

/// One committed change, as the hub fans it out. Each carries the cursor it was stamped with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Identity or presence fields of `account` changed: for everybody who pinned it.
    Fields {
        /// Whose fields.
        account: AccountId,
        /// Stamp.
        cursor: Cursor,
        /// The new values of the changed fields.
        fields: Vec<Field>,
    },
    /// `owner`'s unread count from `contact` changed: for `owner`'s subscriptions pinning `contact`.
    Unread {
        /// Whose count.
        owner: AccountId,
        /// From whom.
        contact: AccountId,
        /// Stamp.
        cursor: Cursor,
        /// The new count.
        unread: u32,
    },
    /// `reader` read `peer`'s messages up to `up_to`: for `peer`'s subscriptions pinning `reader`.
    PeerRead {
        /// Who read.
        reader: AccountId,
        /// Whose messages.
        peer: AccountId,
        /// Stamp.
        cursor: Cursor,
        /// The newest message read.
        up_to: MessageId,
    },
    /// A message was stored: for `to`'s subscriptions pinning the sender.
    Message {
        /// Recipient.
        to: AccountId,
        /// Stamp.
        cursor: Cursor,
        /// The message.
        message: Message,
    },
    /// Auth keys were revoked (logout, admin revocation, account disabled): streams using them end.
    KeysRevoked {
        /// Whose keys.
        account: AccountId,
        /// Stamp.
        cursor: Cursor,
        /// Which keys.
        keys: Vec<KeyId>,
    },
}

impl Change {
    /// The cursor the change was stamped with.
    pub fn cursor(&self) -> Cursor {
        match self {
            Change::Fields { cursor, .. }
            | Change::Unread { cursor, .. }
            | Change::PeerRead { cursor, .. }
            | Change::Message { cursor, .. }
            | Change::KeysRevoked { cursor, .. } => *cursor,
        }
    }
}

/// Changes committed together, in cursor order; `head` is the highest cursor they cover.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    /// Everything stamped up to here has been published.
    pub head: Cursor,
    /// The changes.
    pub changes: Vec<Change>,
}

/// A pinchat account's link to an XMPP account, held by the gateway ([`crate::gateway`]).
#[derive(Clone, Debug)]
pub struct GatewayLink {
    /// The pinchat account.
    pub owner: AccountId,
    /// The XMPP account's bare JID.
    pub jid: String,
    /// `host:port` to connect to instead of looking the domain up in DNS.
    pub server: Option<String>,
    /// The XMPP password, sealed with the gateway's key ([`crate::gateway::seal`]); never in clear.
    pub sealed_password: Vec<u8>,
    /// Every message the owner sent to an XMPP contact up to this id has been accepted by the XMPP
    /// server (acknowledged through stream management); later ones are forwarded after a reconnect.
    pub sent_up_to: MessageId,
    /// The XMPP server's archive id (XEP-0313) of the newest message the gateway saw, if any.
    pub archive_after: Option<String>,
}

/// A contact of a linked XMPP roster, represented by a pinchat account only its owner sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayContact {
    /// The contact's bare JID.
    pub jid: String,
    /// The pinchat account standing for it.
    pub account: AccountId,
}

/// A message the owner of a link wrote to an XMPP contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The message (and its cursor: ids grow with time).
    pub id: MessageId,
    /// The contact's bare JID.
    pub jid: String,
    /// The text.
    pub text: String,
}

/// Store failures, in terms a caller can act on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The login name is taken.
    #[error("an account named {0:?} already exists")]
    AccountExists(String),
    /// Pins that are not contacts of the account.
    #[error("not contacts of this account: {0:?}")]
    PinNotContact(Vec<AccountId>),
    /// The recipient is not a contact.
    #[error("account {0} is not a contact")]
    MessageNotContact(AccountId),
    /// A value is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(String),
    /// Nothing can be written just now: the disk is full or read-only. Transient.
    #[error("the database cannot be written: {0}")]
    Unavailable(String),
    /// The store was shut down.
    #[error("the store is shut down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match storage_trouble(&e) {
            Some(why) => StoreError::Unavailable(why.into()),
            None => StoreError::Db(e.to_string()),
        }
    }
}

/// Whether a SQLite failure means "the disk cannot take writes now" (full or read-only), and in words.
pub fn storage_trouble(e: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode as C;
    use rusqlite::ffi;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DiskFull => Some("the server's disk is full"),
            C::ReadOnly => Some("the server's database is read-only (read-only file system?)"),
            // SQLite reports some writes that found no space (WAL growth, shared memory) as I/O errors.
            C::SystemIoFailure
                if [
                    ffi::SQLITE_IOERR_WRITE,
                    ffi::SQLITE_IOERR_SHMSIZE,
                    ffi::SQLITE_IOERR_TRUNCATE,
                    ffi::SQLITE_IOERR_FSYNC,
                ]
                .contains(&f.extended_code) =>
            {
                Some("the server's disk failed a write (full?)")
            }
            _ => None,
        },
        _ => None,
    }
}

/// The threads a store runs on, to be joined at shutdown.
pub struct StoreThreads(pub(crate) Vec<std::thread::JoinHandle<()>>);

impl StoreThreads {
    /// Waits until every queued write is committed and the threads have stopped, in the order they were
    /// started (the writer first). Blocking: call it from `spawn_blocking` or outside the runtime.
    pub fn join(self) {
        for thread in self.0 {
            let _ = thread.join();
        }
    }
}

/// A write queued for a store's writer thread, which runs it inside a savepoint of the batch's
/// transaction on its context `C` and answers it once the commit's fate is known.
pub(crate) trait Job<C: ?Sized>: Send {
    /// Runs the job inside its savepoint; `false` means it failed and its writes must be rolled back.
    fn run(&mut self, ctx: &mut C) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

/// A write: what to run, and where its result goes.
pub(crate) struct WriteJob<T, F> {
    pub(crate) f: Option<F>,
    pub(crate) result: Option<StoreResult<T>>,
    pub(crate) reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<C: ?Sized, T, F> Job<C> for WriteJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut C) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, ctx: &mut C) -> bool {
        let Some(f) = self.f.take() else { return false };
        // A panic in one job is a bug, but it must not take the writer (and every later write) with it.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(ctx))).unwrap_or_else(|_| {
            Err(StoreError::Db(
                "internal error while writing (see the server log)".into(),
            ))
        });
        if let Err(e) = &result {
            tracing::debug!(error = %e, "a write was refused or failed; it is rolled back");
        }
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = match commit {
            Ok(()) => self.result.unwrap_or(Err(StoreError::Closed)),
            Err(e) => Err(e),
        };
        let _ = self.reply.send(result);
    }
}

/// What a store without the gateway's tables answers.
fn gateway_unsupported() -> StoreError {
    StoreError::Invalid("the XMPP gateway runs only on a server with an embedded (SQLite) store".into())
}

/// The login of the account standing for XMPP contact `jid` of `owner`: the `xmpp:` prefix marks it
/// (native logins cannot contain `:`), the fragment keeps two owners' views of one JID apart.
pub fn gateway_login(owner: AccountId, jid: &str) -> String {
    format!("xmpp:{jid}#{}", owner.0)
}

/// The password hash of gateway contacts' accounts: not a PHC string, so no password matches it.
pub const NO_PASSWORD: &str = "!gateway";

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// The server's database, in domain terms. Every method may be called from async code: implementations
/// keep blocking work off the runtime's threads.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The database's epoch and the cursor of its last committed change.
    async fn head(&self) -> StoreResult<(Epoch, Cursor)>;

    /// Why writes fail just now (a full or read-only disk), if they do; `/healthz` reports it.
    fn storage_problem(&self) -> Option<String> {
        None
    }

    /// Creates an account; fails with [`StoreError::AccountExists`] when the login is taken.
    async fn create_account(&self, login: &str, password_hash: &str, name: &str) -> StoreResult<AccountId>;
    /// Finds an account by login name (case-insensitive).
    async fn account_auth(&self, login: &str) -> StoreResult<Option<AccountAuth>>;
    /// Resolves a login name to an id.
    async fn account_id(&self, login: &str) -> StoreResult<Option<AccountId>>;
    /// Replaces an account's password hash and revokes its keys.
    async fn set_password(&self, account: AccountId, password_hash: &str) -> StoreResult<()>;
    /// Disables (and revokes every key of) or re-enables an account.
    async fn set_disabled(&self, account: AccountId, disabled: bool) -> StoreResult<()>;
    /// The account's own identity and presence.
    async fn me(&self, account: AccountId) -> StoreResult<Me>;
    /// Applies profile changes; only fields whose value actually changes are stamped and pushed.
    async fn update_profile(&self, account: AccountId, change: ProfileChange) -> StoreResult<()>;
    /// Stores avatar image bytes under their content hash (idempotent).
    async fn put_avatar(&self, hash: &str, mime: &str, bytes: Vec<u8>) -> StoreResult<()>;
    /// Loads an avatar image: `(mime, bytes)`.
    async fn avatar(&self, hash: &str) -> StoreResult<Option<(String, Vec<u8>)>>;
    /// Sets the account's chosen state and/or status text.
    async fn set_presence(
        &self,
        account: AccountId,
        state: Option<Presence>,
        status: Option<String>,
    ) -> StoreResult<()>;
    /// Records which accounts have (or no longer have) a live stream; their visible state follows.
    async fn set_connected(&self, accounts: Vec<(AccountId, bool)>) -> StoreResult<()>;
    /// Accounts whose visible state is not offline (used at start-up: nobody is connected yet).
    async fn visible_accounts(&self) -> StoreResult<Vec<AccountId>>;

    /// Counts a login attempt under each of `buckets` (an account, an address) in a count shared by every
    /// node of a cluster, and returns each bucket's attempts in the last minute; `None` when the store
    /// serves one server, whose own limiter is then the whole truth.
    async fn count_login_attempt(&self, buckets: Vec<String>) -> StoreResult<Option<Vec<u32>>> {
        let _ = buckets;
        Ok(None)
    }

    /// Stores a new key hash.
    async fn insert_key(&self, account: AccountId, key_hash: [u8; 32], expires_at: i64)
    -> StoreResult<KeyId>;
    /// Looks up a key by its hash.
    async fn key(&self, key_hash: [u8; 32]) -> StoreResult<Option<KeyRecord>>;
    /// Pushes a key's expiry out.
    async fn touch_key(&self, key: KeyId, expires_at: i64) -> StoreResult<()>;
    /// Revokes one key.
    async fn revoke_key(&self, key: KeyId) -> StoreResult<()>;
    /// Revokes every key of an account; returns how many were live.
    async fn revoke_all_keys(&self, account: AccountId) -> StoreResult<usize>;

    /// Makes two accounts contacts of each other (idempotent).
    async fn link(&self, a: AccountId, b: AccountId) -> StoreResult<()>;
    /// The account's contacts with their identities, by display name.
    async fn contacts(&self, account: AccountId) -> StoreResult<Vec<Identity>>;

    /// Stores a message durably (the future resolves after the commit), idempotent per
    /// `(from, client_id)`.
    async fn send_message(
        &self,
        from: AccountId,
        to: AccountId,
        client_id: &str,
        text: &str,
        ts: i64,
    ) -> StoreResult<Sent>;
    /// Marks `contact`'s messages to `account` read up to `up_to`; returns the unread count afterwards.
    async fn mark_read(&self, account: AccountId, contact: AccountId, up_to: MessageId) -> StoreResult<u32>;
    /// A page of the conversation between `account` and `contact`, newest first, before `before`.
    async fn history(
        &self,
        account: AccountId,
        contact: AccountId,
        before: Option<MessageId>,
        limit: u32,
    ) -> StoreResult<HistoryPage>;

    /// Records calls that ended (the future resolves after the commit).
    async fn record_calls(&self, calls: Vec<Finished>) -> StoreResult<()>;
    /// A page of the calls between `account` and `contact`, newest first, before record `before`.
    async fn calls(
        &self,
        account: AccountId,
        contact: AccountId,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<CallHistoryPage>;

    /// Every XMPP link (the gateway starts a session for each).
    async fn gateway_links(&self) -> StoreResult<Vec<GatewayLink>> {
        Err(gateway_unsupported())
    }
    /// Creates or replaces `link.owner`'s link and returns its `sent_up_to`. `link.sent_up_to` is
    /// ignored: a new link starts after the newest message stored, so nothing written before it is
    /// forwarded.
    async fn put_gateway_link(&self, link: GatewayLink) -> StoreResult<MessageId> {
        let _ = link;
        Err(gateway_unsupported())
    }
    /// Deletes `owner`'s link and its roster rows (the contacts' accounts and history stay); `false`
    /// when there was none.
    async fn delete_gateway_link(&self, owner: AccountId) -> StoreResult<bool> {
        let _ = owner;
        Err(gateway_unsupported())
    }
    /// Records that `owner`'s messages to XMPP contacts up to `up_to` were accepted by the XMPP server.
    async fn set_gateway_sent(&self, owner: AccountId, up_to: MessageId) -> StoreResult<()> {
        let _ = (owner, up_to);
        Err(gateway_unsupported())
    }
    /// Records the archive id of the newest message of `owner`'s link the gateway has seen.
    async fn set_gateway_archive(&self, owner: AccountId, after: String) -> StoreResult<()> {
        let _ = (owner, after);
        Err(gateway_unsupported())
    }
    /// The XMPP contacts of `owner`'s link.
    async fn gateway_contacts(&self, owner: AccountId) -> StoreResult<Vec<GatewayContact>> {
        let _ = owner;
        Err(gateway_unsupported())
    }
    /// Makes `jid` a contact of `owner`: finds or creates the account standing for it (login
    /// `xmpp:<jid>#<owner>`, which cannot log in), links the two and updates its display name.
    async fn add_gateway_contact(&self, owner: AccountId, jid: &str, name: &str) -> StoreResult<AccountId> {
        let _ = (owner, jid, name);
        Err(gateway_unsupported())
    }
    /// Up to `limit` messages `owner` wrote to its XMPP contacts after `after`, oldest first — except
    /// those whose client id starts with `xmpp:`, which came from the XMPP network (carbons of what the
    /// owner's other XMPP clients sent).
    async fn gateway_outbox(
        &self,
        owner: AccountId,
        after: MessageId,
        limit: u32,
    ) -> StoreResult<Vec<Outgoing>> {
        let _ = (owner, after, limit);
        Err(gateway_unsupported())
    }

    /// The state of `pins` for `account`: full when `since` is `None` or unusable, otherwise what changed
    /// after `since.cursor`. Fails with [`StoreError::PinNotContact`] when a pin is not a contact.
    async fn sync(
        &self,
        account: AccountId,
        pins: &[AccountId],
        since: Option<Since>,
        limits: SyncLimits,
    ) -> StoreResult<Snapshot>;
}
