//! `pinchat-ipc`: the local API of the pinchat daemon — what the tray app, `pinchatctl` and third-party
//! gadgets use to read and drive widgets.
//!
//! JSON-RPC 2.0, one JSON object per line, over a local socket that only the same OS user can open (a
//! Unix socket in a private directory, a named pipe with a private DACL on Windows). `docs/ipc.md`
//! describes every method, error and notification.
//!
//! - [`api`]: methods (as types implementing [`api::Method`]), their parameters and results,
//!   notifications and error codes. Every serializable type here is part of the API.
//! - [`jsonrpc`]: envelopes and line framing, shared by the daemon and the client.
//! - [`transport`]: where the socket is and who may connect.
//! - [`client`]: the typed async client.
//! - [`full`]: how a running full client offers its server connection to the daemon.

#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod full;
pub mod jsonrpc;
pub mod transport;

pub use client::{Client, ClientError};

/// The version of the local API. `daemon.status` reports it; it changes when a change could make an
/// older client misunderstand an answer.
pub const API_VERSION: u32 = 1;
