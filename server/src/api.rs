//! The operations clients perform, shared by the HTTP handlers and the stream.
//!
//! Validation of client-supplied values and the mapping of store failures to protocol errors live here,
//! once, so that the same request gets the same answer whichever way it arrives.

use crate::auth::Auth;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{ProfileChange, Since, Store, StoreError, SyncLimits};
use crate::util::now_ms;
use pinchat_proto::stream::{Limits, Snapshot};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode, MessageId, Presence};
use std::collections::HashSet;
use std::sync::Arc;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest signature or status text, in characters.
pub const MAX_SIGNATURE_CHARS: usize = 140;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

/// Shared state of the request-handling side of the server.
pub struct Api {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Login and key checks.
    pub auth: Auth,
    /// The configuration.
    pub config: Arc<Config>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The result of a successful send.
pub use crate::store::Sent;

impl Api {
    /// The limits announced to stream clients.
    pub fn limits(&self) -> Limits {
        let l = &self.config.limits;
        Limits {
            max_pins: l.max_pins,
            max_subscriptions: l.max_subscriptions_per_connection,
            max_text_bytes: l.max_text_bytes,
            max_frame_bytes: l.max_frame_bytes as u32,
        }
    }

    /// Stores a message from `from` to `to`.
    pub async fn send(
        &self,
        from: AccountId,
        to: AccountId,
        client_id: &str,
        text: &str,
    ) -> Result<Sent, ErrorBody> {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
            return Err(invalid(format!(
                "client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes long"
            )));
        }
        if text.trim().is_empty() {
            return Err(invalid("the message text is empty"));
        }
        let max = self.config.limits.max_text_bytes as usize;
        if text.len() > max {
            return Err(ErrorBody::new(
                ErrorCode::TextTooLong,
                format!(
                    "the message text is {} bytes long; the limit is {max} bytes",
                    text.len()
                ),
            ));
        }
        if from == to {
            return Err(ErrorBody::new(
                ErrorCode::MessageNotContact,
                "you cannot send a message to yourself",
            ));
        }
        let sent = self
            .store
            .send_message(from, to, client_id, text, now_ms())
            .await
            .map_err(store_error)?;
        if !sent.duplicate {
            Metrics::inc(&self.metrics.messages_stored);
        }
        Ok(sent)
    }

    /// Marks `contact`'s messages read up to `up_to`; returns the unread count afterwards.
    pub async fn mark_read(
        &self,
        account: AccountId,
        contact: AccountId,
        up_to: MessageId,
    ) -> Result<u32, ErrorBody> {
        self.store
            .mark_read(account, contact, up_to)
            .await
            .map_err(store_error)
    }

    /// Sets the chosen presence state and/or status text.
    pub async fn set_presence(
        &self,
        account: AccountId,
        state: Option<Presence>,
        status: Option<String>,
    ) -> Result<(), ErrorBody> {
        if let Some(s) = &status {
            check_chars("status", s, 0, MAX_SIGNATURE_CHARS)?;
        }
        self.store
            .set_presence(account, state, status)
            .await
            .map_err(store_error)
    }

    /// Changes profile fields.
    pub async fn update_profile(&self, account: AccountId, change: ProfileChange) -> Result<(), ErrorBody> {
        if let Some(v) = &change.name {
            check_chars("name", v.trim(), 1, MAX_NAME_CHARS)?;
        }
        if let Some(v) = &change.signature {
            check_chars("signature", v, 0, MAX_SIGNATURE_CHARS)?;
        }
        if let Some(v) = &change.description {
            check_chars("description", v, 0, MAX_DESCRIPTION_CHARS)?;
        }
        self.store
            .update_profile(account, change)
            .await
            .map_err(store_error)
    }

    /// The state of `pins`: full, or what changed since `since`.
    pub async fn sync(
        &self,
        account: AccountId,
        pins: &[AccountId],
        since: Option<Since>,
    ) -> Result<Snapshot, ErrorBody> {
        self.sync_subscription(account, pins, since, false).await
    }

    /// Every contact of `account`, for a roster subscription.
    pub async fn roster(&self, account: AccountId) -> Result<Vec<AccountId>, ErrorBody> {
        let contacts = self.store.contacts(account).await.map_err(store_error)?;
        Ok(contacts.into_iter().map(|c| c.id).collect())
    }

    /// [`Api::sync`] for a stream's subscription. A `roster` subscription's pins are the account's
    /// contacts (from [`Api::roster`]): they are not bounded by `max_pins`, and its `since.fresh` may
    /// name contacts that are gone.
    pub async fn sync_subscription(
        &self,
        account: AccountId,
        pins: &[AccountId],
        mut since: Option<Since>,
        roster: bool,
    ) -> Result<Snapshot, ErrorBody> {
        let max = usize::from(self.config.limits.max_pins);
        if !roster && pins.len() > max {
            return Err(ErrorBody::new(
                ErrorCode::TooManyPins,
                format!("{} contacts pinned; this server allows at most {max}", pins.len()),
            ));
        }
        let mut seen = HashSet::with_capacity(pins.len());
        if let Some(dup) = pins.iter().find(|p| !seen.insert(**p)) {
            return Err(invalid(format!("contact {dup} is pinned twice")));
        }
        if roster && let Some(s) = &mut since {
            // A roster client cannot know which contacts were removed since it last saw the list: its
            // fresh contacts that are no longer contacts are left out rather than refused.
            s.fresh.retain(|f| seen.contains(f));
        }
        if let Some(s) = &since
            && let Some(f) = s.fresh.iter().find(|f| !seen.contains(f))
        {
            return Err(invalid(format!(
                "resume.fresh names contact {f}, which is not among the pins"
            )));
        }
        let limits = SyncLimits {
            hints_per_contact: self.config.snapshot_hints,
            resume_messages: self.config.resume_max_messages,
        };
        self.store
            .sync(account, pins, since, limits)
            .await
            .map_err(store_error)
    }
}

fn invalid(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidRequest, message)
}

/// Checks a text field's length in characters and refuses control characters (newlines allowed).
pub fn check_chars(what: &str, value: &str, min: usize, max: usize) -> Result<(), ErrorBody> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(invalid(format!(
            "{what} must be {min} to {max} characters long (got {n})"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(format!("{what} must not contain control characters")));
    }
    Ok(())
}

/// The protocol error for a store failure. Database details go to the log, not to the client.
pub fn store_error(e: StoreError) -> ErrorBody {
    match e {
        StoreError::NotFound(what) => ErrorBody::new(ErrorCode::NotFound, format!("{what} not found")),
        StoreError::AccountExists(login) => ErrorBody::new(
            ErrorCode::AccountExists,
            format!("an account named {login:?} already exists"),
        ),
        StoreError::PinNotContact(ids) => {
            let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
            ErrorBody::new(
                ErrorCode::PinNotContact,
                format!(
                    "only contacts can be pinned, and {} {} not; pick pins from GET /v1/contacts",
                    list.join(", "),
                    if ids.len() == 1 { "is" } else { "are" }
                ),
            )
        }
        StoreError::MessageNotContact(id) => ErrorBody::new(
            ErrorCode::MessageNotContact,
            format!("account {id} is not one of your contacts; messages go only to and from contacts"),
        ),
        StoreError::Invalid(message) => invalid(message),
        StoreError::Db(detail) => {
            tracing::error!(error = %detail, "database failure");
            ErrorBody::new(
                ErrorCode::Internal,
                "the server's database failed; try again later",
            )
        }
        StoreError::Unavailable(why) => ErrorBody::new(
            ErrorCode::StorageUnavailable,
            format!(
                "the server cannot store anything just now ({why}); nothing was stored — try again later"
            ),
        ),
        StoreError::Closed => ErrorBody::new(ErrorCode::ShuttingDown, "the server is shutting down"),
    }
}
