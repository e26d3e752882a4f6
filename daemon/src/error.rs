//! What can go wrong with a request to the daemon, in its own terms. `ipc.rs` turns it into the local
//! API's error (code and message) in one place.

use crate::db::{DbError, Problem};
use crate::remote::RemoteError;

/// A refused or failed request. The text is for people and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WidgetError {
    /// No such widget.
    #[error("{0}")]
    NotFound(String),
    /// The account already has a widget here.
    #[error("{0}")]
    Exists(String),
    /// Not a contact (for pins), or not pinned (for messages).
    #[error("{0}")]
    NotContact(String),
    /// More pins than the server allows.
    #[error("{0}")]
    TooManyPins(String),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
    /// Wrong account or password.
    #[error("{0}")]
    BadCredentials(String),
    /// The server refused the widget's key: log in again.
    #[error("{0}")]
    AuthRequired(String),
    /// The server cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The server said no for another reason.
    #[error("{0}")]
    Server(String),
    /// The OS keyring failed.
    #[error("{0}")]
    Keyring(String),
    /// The widget's database cannot be written: nothing was stored.
    #[error("{1}")]
    Storage(Problem, String),
    /// The server refused a call request; the code says why.
    #[error("{1}")]
    Call(pinchat_proto::ErrorCode, String),
    /// The daemon failed.
    #[error("{0}")]
    Internal(String),
}

impl WidgetError {
    /// The error for a write that failed: `what` says what was not done.
    pub fn storage(e: &DbError, what: &str) -> WidgetError {
        let problem = e.problem();
        let words = match problem {
            Problem::Full => {
                format!("{what}: the disk holding pinchat's data is full; free some space and try again")
            }
            Problem::ReadOnly => {
                format!("{what}: pinchat's data directory cannot be written (read-only file system?)")
            }
            Problem::Other => format!("{what}: {e}"),
        };
        WidgetError::Storage(problem, words)
    }

    /// A server failure during login or setup, where there is no widget to put in `auth_required`.
    pub fn from_remote(e: RemoteError) -> WidgetError {
        match e {
            RemoteError::Unreachable(why) => {
                WidgetError::Unreachable(format!("cannot reach the server: {why}"))
            }
            RemoteError::Server(e) if e.code == pinchat_proto::ErrorCode::BadCredentials => {
                WidgetError::BadCredentials(e.message)
            }
            RemoteError::Server(e) if e.code.needs_login() => WidgetError::AuthRequired(e.message),
            RemoteError::Server(e) => {
                WidgetError::Server(format!("the server said {}: {}", e.code, e.message))
            }
            RemoteError::Decode(why) => WidgetError::Server(why),
        }
    }
}
