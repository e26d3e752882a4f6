//! Stable error codes. Clients branch on the code; the message is for people and may change.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Every error the server can report, on HTTP and on the stream. The string form (`auth.invalid_key`, …)
/// is the stable identifier; new codes may be added in later versions, and a client that sees one it does
/// not know gets [`ErrorCode::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No auth key was presented.
    MissingKey,
    /// The auth key is unknown, expired or revoked. The client must log in again (re-authenticate).
    InvalidKey,
    /// Login failed: unknown account or wrong password (deliberately not told apart).
    BadCredentials,
    /// The account is disabled by an administrator.
    AccountDisabled,
    /// The client speaks a protocol version the server does not.
    VersionUnsupported,
    /// The request or frame could not be decoded (bad JSON, truncated binary, wrong types).
    Malformed,
    /// The frame is well formed but of a type this server does not know.
    UnknownType,
    /// A text frame or field was not valid UTF-8.
    InvalidUtf8,
    /// A frame arrived that is not allowed at this point (for example anything before `hello`).
    Unexpected,
    /// A field has a value outside what is allowed (empty text, bad login name, unknown state…).
    InvalidRequest,
    /// The thing asked for does not exist.
    NotFound,
    /// The account already exists.
    AccountExists,
    /// A pinned contact is not a contact of the account.
    PinNotContact,
    /// A message was addressed to an account that is not a contact.
    MessageNotContact,
    /// More pins than the server allows.
    TooManyPins,
    /// More subscriptions on one stream than the server allows.
    TooManySubscriptions,
    /// More simultaneous streams for one account than the server allows.
    TooManyConnections,
    /// An HTTP body larger than the server accepts.
    BodyTooLarge,
    /// A stream frame larger than the server accepts.
    FrameTooLarge,
    /// A message text longer than the server accepts.
    TextTooLong,
    /// Too many attempts; retry later (HTTP `Retry-After` says when).
    RateLimited,
    /// The stream was silent for longer than the idle timeout.
    IdleTimeout,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// The server failed; the request may be retried.
    Internal,
    /// The server cannot store anything just now (its disk is full or read-only); nothing was stored.
    /// Retry later: it recovers by itself.
    StorageUnavailable,
    /// A call was placed to an account that is not a contact.
    CallNotContact,
    /// The callee has no stream that follows the caller (offline, or no widget pins the caller).
    CallUnavailable,
    /// The caller or the callee is already in a call.
    CallBusy,
    /// The callee is calling the caller at this moment, and that call goes on: accept it.
    CallGlare,
    /// No live call of that number has this stream as a party.
    CallNotFound,
    /// This server runs no XMPP gateway (no gateway key configured, or cluster mode).
    XmppUnavailable,
    /// The XMPP server refused the JID and password.
    XmppAuthFailed,
    /// The XMPP server could not be reached (DNS, connection, TLS).
    XmppUnreachable,
    /// The account has no linked XMPP account.
    XmppNotLinked,
    /// A code this version of the protocol crate does not know.
    Other(String),
}

impl ErrorCode {
    /// Every known code, for documentation tests and exhaustive tables.
    pub const KNOWN: [ErrorCode; 34] = [
        ErrorCode::MissingKey,
        ErrorCode::InvalidKey,
        ErrorCode::BadCredentials,
        ErrorCode::AccountDisabled,
        ErrorCode::VersionUnsupported,
        ErrorCode::Malformed,
        ErrorCode::UnknownType,
        ErrorCode::InvalidUtf8,
        ErrorCode::Unexpected,
        ErrorCode::InvalidRequest,
        ErrorCode::NotFound,
        ErrorCode::AccountExists,
        ErrorCode::PinNotContact,
        ErrorCode::MessageNotContact,
        ErrorCode::TooManyPins,
        ErrorCode::TooManySubscriptions,
        ErrorCode::TooManyConnections,
        ErrorCode::BodyTooLarge,
        ErrorCode::FrameTooLarge,
        ErrorCode::TextTooLong,
        ErrorCode::RateLimited,
        ErrorCode::IdleTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::StorageUnavailable,
        ErrorCode::CallNotContact,
        ErrorCode::CallUnavailable,
        ErrorCode::CallBusy,
        ErrorCode::CallGlare,
        ErrorCode::CallNotFound,
        ErrorCode::XmppUnavailable,
        ErrorCode::XmppAuthFailed,
        ErrorCode::XmppUnreachable,
        ErrorCode::XmppNotLinked,
    ];

    /// The stable string form.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::MissingKey => "auth.missing_key",
            ErrorCode::InvalidKey => "auth.invalid_key",
            ErrorCode::BadCredentials => "auth.bad_credentials",
            ErrorCode::AccountDisabled => "auth.account_disabled",
            ErrorCode::VersionUnsupported => "proto.version_unsupported",
            ErrorCode::Malformed => "proto.malformed",
            ErrorCode::UnknownType => "proto.unknown_type",
            ErrorCode::InvalidUtf8 => "proto.invalid_utf8",
            ErrorCode::Unexpected => "proto.unexpected",
            ErrorCode::InvalidRequest => "req.invalid",
            ErrorCode::NotFound => "req.not_found",
            ErrorCode::AccountExists => "account.exists",
            ErrorCode::PinNotContact => "pin.not_contact",
            ErrorCode::MessageNotContact => "message.not_contact",
            ErrorCode::TooManyPins => "limit.pins",
            ErrorCode::TooManySubscriptions => "limit.subscriptions",
            ErrorCode::TooManyConnections => "limit.connections",
            ErrorCode::BodyTooLarge => "limit.body_too_large",
            ErrorCode::FrameTooLarge => "limit.frame_too_large",
            ErrorCode::TextTooLong => "limit.text_too_long",
            ErrorCode::RateLimited => "limit.rate",
            ErrorCode::IdleTimeout => "stream.idle_timeout",
            ErrorCode::ShuttingDown => "server.shutting_down",
            ErrorCode::Internal => "server.internal",
            ErrorCode::StorageUnavailable => "server.storage_unavailable",
            ErrorCode::CallNotContact => "call.not_contact",
            ErrorCode::CallUnavailable => "call.unavailable",
            ErrorCode::CallBusy => "call.busy",
            ErrorCode::CallGlare => "call.glare",
            ErrorCode::CallNotFound => "call.not_found",
            ErrorCode::XmppUnavailable => "xmpp.unavailable",
            ErrorCode::XmppAuthFailed => "xmpp.auth_failed",
            ErrorCode::XmppUnreachable => "xmpp.unreachable",
            ErrorCode::XmppNotLinked => "xmpp.not_linked",
            ErrorCode::Other(s) => s,
        }
    }

    /// Parses the string form; unknown strings become [`ErrorCode::Other`].
    pub fn parse(s: &str) -> ErrorCode {
        ErrorCode::KNOWN
            .iter()
            .find(|c| c.as_str() == s)
            .cloned()
            .unwrap_or_else(|| ErrorCode::Other(s.into()))
    }

    /// `true` for the codes that mean "this key will not work again: log in with the password"
    /// (missing, invalid, expired or revoked key, disabled account). Clients branch on this one test.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidKey | ErrorCode::MissingKey | ErrorCode::AccountDisabled
        )
    }

    /// The WebSocket close code the server uses when this error ends a stream.
    pub fn close_code(&self) -> u16 {
        match self {
            // 1007: invalid frame payload data; 1009: message too big; 1001: going away.
            ErrorCode::InvalidUtf8 => 1007,
            ErrorCode::FrameTooLarge => 1009,
            ErrorCode::ShuttingDown => 1001,
            ErrorCode::Internal | ErrorCode::StorageUnavailable => 1011,
            // 4000–4999 are for applications: 4401 mirrors HTTP 401 so a client can tell "log in again"
            // from any other close without parsing the reason.
            ErrorCode::InvalidKey | ErrorCode::MissingKey => CLOSE_INVALID_KEY,
            ErrorCode::AccountDisabled => CLOSE_ACCOUNT_DISABLED,
            ErrorCode::TooManyConnections | ErrorCode::RateLimited => CLOSE_TOO_MANY,
            ErrorCode::IdleTimeout => CLOSE_IDLE,
            _ => 1008,
        }
    }
}

/// Close code: the key was refused (mirrors HTTP 401).
pub const CLOSE_INVALID_KEY: u16 = 4401;
/// Close code: the account is disabled (mirrors HTTP 403).
pub const CLOSE_ACCOUNT_DISABLED: u16 = 4403;
/// Close code: the stream was silent too long.
pub const CLOSE_IDLE: u16 = 4408;
/// Close code: too many streams, or frames sent too fast (mirrors HTTP 429).
pub const CLOSE_TOO_MANY: u16 = 4429;

/// `true` when a stream closed with `code` cannot be reopened without logging in again.
pub fn close_needs_login(code: u16) -> bool {
    code == CLOSE_INVALID_KEY || code == CLOSE_ACCOUNT_DISABLED
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

/// An error as it appears on the wire: a stable code and a sentence for a person.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong and what to do about it, for people.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {

    /// `docs/protocol.md` lists every code clients may see.
    #[test]
    fn every_code_is_documented() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
        for c in ErrorCode::KNOWN {
            assert!(
                doc.contains(&format!("`{}`", c.as_str())),
                "docs/protocol.md does not document {c}"
            );
        }
    }

    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::KNOWN {
            assert!(seen.insert(code.as_str().to_owned()), "duplicate code {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), code);
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(
            ErrorCode::parse("future.thing"),
            ErrorCode::Other("future.thing".into())
        );
    }
}
