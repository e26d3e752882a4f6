//! Frames to bytes and back, in both stream encodings.
//!
//! Decoding never panics and never trusts lengths in the input beyond the bytes actually present. Errors
//! say which of three things went wrong, because the server answers each with its own stable code:
//! the bytes are not a frame ([`DecodeErrorKind::Malformed`]), they are a frame of a type this version
//! does not know ([`DecodeErrorKind::UnknownType`]), or a string in them is not UTF-8
//! ([`DecodeErrorKind::InvalidUtf8`]).

use crate::error::ErrorCode;
use crate::stream::{ClientFrame, ServerFrame};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// How a stream's frames are encoded. The client chooses by the kind of its first WebSocket frame: a
/// binary `hello` means [`Encoding::Binary`] in both directions, a text one [`Encoding::Json`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// postcard (varint integers, length-prefixed strings, enum variants by index) in binary frames.
    Binary,
    /// One JSON object per text frame; enum variants as externally tagged snake_case names.
    Json,
}

/// Why bytes could not be decoded into a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What kind of failure.
    pub kind: DecodeErrorKind,
    /// Details for a person.
    pub detail: String,
}

/// The kinds of [`DecodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Not a frame: bad JSON, truncated or trailing bytes, wrong field types.
    Malformed,
    /// A well-formed frame of an unknown type.
    UnknownType,
    /// A string that is not UTF-8.
    InvalidUtf8,
}

impl DecodeError {
    /// The protocol error code that reports this failure.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            DecodeErrorKind::Malformed => ErrorCode::Malformed,
            DecodeErrorKind::UnknownType => ErrorCode::UnknownType,
            DecodeErrorKind::InvalidUtf8 => ErrorCode::InvalidUtf8,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// The `snake_case` names of [`ClientFrame`]'s variants, in declaration (= binary index) order.
pub const CLIENT_FRAME_TYPES: [&str; 9] = [
    "hello",
    "subscribe",
    "unsubscribe",
    "send",
    "mark_read",
    "set_presence",
    "subscribe_roster",
    "call_invite",
    "call_signal",
];

/// The `snake_case` names of [`ServerFrame`]'s variants, in declaration (= binary index) order.
pub const SERVER_FRAME_TYPES: [&str; 7] = ["welcome", "snapshot", "delta", "message", "ack", "error", "call"];

/// Encodes any protocol value. Serialising these types cannot fail (no maps with non-string keys, no
/// unsized sequences), so this returns bytes directly.
pub fn encode<T: Serialize>(encoding: Encoding, value: &T) -> Vec<u8> {
    match encoding {
        Encoding::Binary => postcard::to_stdvec(value).expect("protocol types always serialise"),
        Encoding::Json => serde_json::to_vec(value).expect("protocol types always serialise"),
    }
}

/// Decodes a frame sent by a client.
pub fn decode_client(encoding: Encoding, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
    decode(encoding, bytes, &CLIENT_FRAME_TYPES)
}

/// Decodes a frame sent by the server.
pub fn decode_server(encoding: Encoding, bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
    decode(encoding, bytes, &SERVER_FRAME_TYPES)
}

/// Decodes a [`Snapshot`](crate::stream::Snapshot) body, as the polling endpoint sends it.
pub fn decode_snapshot(encoding: Encoding, bytes: &[u8]) -> Result<crate::stream::Snapshot, DecodeError> {
    match encoding {
        Encoding::Binary => match postcard::from_bytes(bytes) {
            Ok(s) => Ok(s),
            Err(postcard::Error::DeserializeBadUtf8) => {
                Err(err(DecodeErrorKind::InvalidUtf8, "invalid UTF-8 in a snapshot"))
            }
            Err(e) => Err(err(
                DecodeErrorKind::Malformed,
                format!("cannot decode the snapshot: {e}"),
            )),
        },
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            err(
                DecodeErrorKind::Malformed,
                format!("cannot decode the snapshot: {e}"),
            )
        }),
    }
}

fn decode<T: DeserializeOwned>(encoding: Encoding, bytes: &[u8], types: &[&str]) -> Result<T, DecodeError> {
    match encoding {
        Encoding::Binary => decode_binary(bytes, types.len()),
        Encoding::Json => decode_json(bytes, types),
    }
}

fn err(kind: DecodeErrorKind, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        kind,
        detail: detail.into(),
    }
}

fn decode_binary<T: DeserializeOwned>(bytes: &[u8], variants: usize) -> Result<T, DecodeError> {
    // The first varint is the frame type. Read it ourselves so that "a type from the future" is told
    // apart from garbage.
    match read_varint(bytes) {
        None => {
            return Err(err(
                DecodeErrorKind::Malformed,
                "empty or truncated frame: no frame type",
            ));
        }
        Some(tag) if tag >= variants as u64 => {
            return Err(err(
                DecodeErrorKind::UnknownType,
                format!(
                    "unknown frame type {tag}; this server knows types 0 to {}",
                    variants - 1
                ),
            ));
        }
        Some(_) => {}
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(err(
            DecodeErrorKind::Malformed,
            format!("{} unexpected bytes after the end of the frame", rest.len()),
        )),
        Err(postcard::Error::DeserializeBadUtf8) => Err(err(
            DecodeErrorKind::InvalidUtf8,
            "a text field of the frame is not valid UTF-8",
        )),
        Err(e) => Err(err(
            DecodeErrorKind::Malformed,
            format!("cannot decode the binary frame: {e}"),
        )),
    }
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8], types: &[&str]) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        err(
            DecodeErrorKind::InvalidUtf8,
            format!("the frame is not valid UTF-8: {e}"),
        )
    })?;
    match serde_json::from_str::<T>(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Failing frames are rare, so only then is the text parsed a second time to find out whether
            // its type is one we do not know.
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text)
                && map.len() == 1
                && let Some(name) = map.keys().next()
                && !types.contains(&name.as_str())
            {
                return Err(err(
                    DecodeErrorKind::UnknownType,
                    format!("unknown frame type {name:?}; known types: {}", types.join(", ")),
                ));
            }
            Err(err(
                DecodeErrorKind::Malformed,
                format!("cannot decode the JSON frame: {e}"),
            ))
        }
    }
}

/// Reads a LEB128 varint as postcard writes them, or `None` when the bytes end first.
fn read_varint(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::*;
    use crate::*;

    fn presence_delta() -> ServerFrame {
        ServerFrame::Delta {
            sub: 0,
            cursor: 1_234_567,
            contact: AccountId(4_321),
            fields: vec![Field::State(Presence::Busy)],
        }
    }

    /// The bytes documented in `docs/protocol.md` ("A presence change on the wire"); if this test fails,
    /// the document is wrong too.
    #[test]
    fn presence_delta_binary_layout_is_as_documented() {
        let bytes = encode(Encoding::Binary, &presence_delta());
        assert_eq!(
            bytes,
            [0x02, 0x00, 0x87, 0xad, 0x4b, 0xe1, 0x21, 0x01, 0x04, 0x02]
        );
        // Two bytes of WebSocket header (server frames are unmasked, payload < 126 bytes).
        assert!(bytes.len() + 2 <= 40);
        let json = String::from_utf8(encode(Encoding::Json, &presence_delta())).unwrap();
        assert_eq!(
            json,
            r#"{"delta":{"sub":0,"cursor":1234567,"contact":4321,"fields":[{"state":"busy"}]}}"#
        );
    }

    #[test]
    fn every_frame_type_name_matches_its_variant() {
        let client = [
            ClientFrame::Hello { version: 1 },
            ClientFrame::Subscribe {
                req: 1,
                sub: 0,
                pins: vec![],
                resume: None,
            },
            ClientFrame::Unsubscribe { req: 1, sub: 0 },
            ClientFrame::Send {
                req: 1,
                to: AccountId(1),
                client_id: "c".into(),
                text: "t".into(),
            },
            ClientFrame::MarkRead {
                req: 1,
                contact: AccountId(1),
                up_to: MessageId(1),
            },
            ClientFrame::SetPresence {
                req: 1,
                state: None,
                status: None,
            },
            ClientFrame::SubscribeRoster {
                req: 1,
                sub: 0,
                resume: None,
            },
        ];
        for (i, frame) in client.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&encode(Encoding::Json, frame)).unwrap();
            assert!(v.get(CLIENT_FRAME_TYPES[i]).is_some(), "{v}");
            assert_eq!(encode(Encoding::Binary, frame)[0] as usize, i);
            for enc in [Encoding::Binary, Encoding::Json] {
                assert_eq!(&decode_client(enc, &encode(enc, frame)).unwrap(), frame);
            }
        }
        let server = [
            ServerFrame::Welcome(Welcome {
                version: 1,
                epoch: 7,
                account: AccountId(1),
                me: vec![Field::Name("a".into())],
                limits: Limits {
                    max_pins: 20,
                    max_subscriptions: 4,
                    max_text_bytes: 4000,
                    max_frame_bytes: 65536,
                },
                keepalive_secs: 30,
            }),
            ServerFrame::Snapshot(Snapshot {
                sub: 0,
                cursor: 1,
                full: true,
                contacts: vec![],
                messages: vec![],
            }),
            presence_delta(),
            ServerFrame::Message {
                sub: 0,
                cursor: 2,
                message: Message {
                    id: MessageId(1),
                    from: AccountId(2),
                    ts: 3,
                    text: "hi".into(),
                },
            },
            ServerFrame::Ack {
                req: 1,
                result: Ack::Sent {
                    id: MessageId(1),
                    ts: 2,
                    duplicate: false,
                },
            },
            ServerFrame::Error {
                req: None,
                error: ErrorBody::new(ErrorCode::InvalidKey, "x"),
            },
        ];
        for (i, frame) in server.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&encode(Encoding::Json, frame)).unwrap();
            assert!(v.get(SERVER_FRAME_TYPES[i]).is_some(), "{v}");
            assert_eq!(encode(Encoding::Binary, frame)[0] as usize, i);
            for enc in [Encoding::Binary, Encoding::Json] {
                assert_eq!(&decode_server(enc, &encode(enc, frame)).unwrap(), frame);
            }
        }
    }

    #[test]
    fn bad_input_is_classified() {
        let kind = |enc, bytes: &[u8]| decode_client(enc, bytes).unwrap_err().kind;
        assert_eq!(kind(Encoding::Binary, &[]), DecodeErrorKind::Malformed);
        assert_eq!(kind(Encoding::Binary, &[0x80]), DecodeErrorKind::Malformed);
        assert_eq!(
            kind(Encoding::Binary, &[0x09, 0x00]),
            DecodeErrorKind::UnknownType
        );
        assert_eq!(
            kind(Encoding::Binary, &[0x00, 0x01, 0xff]),
            DecodeErrorKind::Malformed
        );
        // A `send` whose text is the single byte 0xff.
        let mut send = encode(
            Encoding::Binary,
            &ClientFrame::Send {
                req: 1,
                to: AccountId(1),
                client_id: "c".into(),
                text: "x".into(),
            },
        );
        *send.last_mut().unwrap() = 0xff;
        assert_eq!(kind(Encoding::Binary, &send), DecodeErrorKind::InvalidUtf8);
        // A vector claiming a billion elements must fail without allocating them.
        assert_eq!(
            kind(
                Encoding::Binary,
                &[0x01, 0x01, 0x00, 0x80, 0x94, 0xeb, 0xdc, 0x03]
            ),
            DecodeErrorKind::Malformed
        );

        assert_eq!(kind(Encoding::Json, b"{not json"), DecodeErrorKind::Malformed);
        assert_eq!(
            kind(Encoding::Json, br#"{"bogus":{}}"#),
            DecodeErrorKind::UnknownType
        );
        assert_eq!(
            kind(Encoding::Json, br#"{"hello":{"version":"one"}}"#),
            DecodeErrorKind::Malformed
        );
        assert_eq!(
            kind(Encoding::Json, b"{\"hello\":\xff}"),
            DecodeErrorKind::InvalidUtf8
        );
    }
}
