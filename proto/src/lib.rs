//! The pinchat wire protocol between a client (the daemon, a full client, a test) and `pinchat-server`.
//!
//! This crate owns every type that crosses the network and nothing else: no I/O, no async. Anything with
//! `Serialize` here is part of the protocol, and changing it is a protocol change: bump [`PROTOCOL_VERSION`]
//! and describe the change in `docs/protocol.md`.
//!
//! The protocol has two halves:
//! - [`http`]: JSON request and response bodies for the request/response endpoints (login, contacts,
//!   history, sending, polling, …).
//! - [`stream`]: the frames of the long-lived WebSocket stream that pushes pinned-contact changes. A stream
//!   speaks either compact binary frames ([`Encoding::Binary`], postcard) or JSON text frames
//!   ([`Encoding::Json`]); the client picks by the kind of its first frame. The binary form is what keeps a
//!   presence change under 40 bytes on the wire; the JSON form exists for people and debugging tools.
//!
//! [`codec`] turns frames into bytes and back for both encodings, with decode errors that distinguish
//! "not a frame at all" from "a frame of a type this version does not know".

#![forbid(unsafe_code)]

pub mod codec;
pub mod error;
pub mod http;
pub mod stream;
mod types;

pub use codec::{DecodeError, DecodeErrorKind, Encoding};
pub use error::{ErrorBody, ErrorCode};
pub use types::*;

/// The protocol version this crate speaks. A client announces it in [`stream::ClientFrame::Hello`] and in
/// the `Pinchat-Protocol` HTTP header; the server refuses any other with
/// [`ErrorCode::VersionUnsupported`].
pub const PROTOCOL_VERSION: u16 = 1;

/// The HTTP header that carries the client's protocol version on every request. Optional on HTTP (absent
/// means [`PROTOCOL_VERSION`]); when present and different the server answers `proto.version_unsupported`.
pub const VERSION_HEADER: &str = "pinchat-protocol";

/// Media type of a binary (postcard) frame in an HTTP body, used by the polling endpoint on request.
pub const BINARY_MEDIA_TYPE: &str = "application/vnd.pinchat.frame";

/// HTTP response header of the polling endpoint carrying the cursor to poll from next time.
pub const CURSOR_HEADER: &str = "pinchat-cursor";

/// HTTP response header of the polling endpoint carrying the database's epoch (what a stream client
/// learns from `welcome`), so that a client that only polls can resume too.
pub const EPOCH_HEADER: &str = "pinchat-epoch";
