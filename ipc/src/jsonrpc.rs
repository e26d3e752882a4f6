//! JSON-RPC 2.0 envelopes and the line framing: one JSON object per line, in both directions.
//!
//! Parsing is lenient where it costs nothing and strict where it matters: every failure becomes a
//! JSON-RPC error object with the stable code in `error.data.code`, and a line longer than the limit is
//! skipped without being buffered, so a hostile client cannot make the daemon allocate its 10 MB.

use crate::api::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The JSON-RPC version string.
pub const JSONRPC: &str = "2.0";

/// The longest request line the daemon reads, in bytes (1 MiB).
pub const MAX_LINE: usize = 1 << 20;

/// A request as it arrives, before its method is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `None` for a notification from the client (no answer is sent).
    pub id: Option<Value>,
    /// The method name.
    pub method: String,
    /// The parameters; `Value::Null` when absent.
    pub params: Value,
}

/// A JSON-RPC error object.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The JSON-RPC error class (−32700 … −32000).
    pub code: i32,
    /// What went wrong, for people.
    pub message: String,
    /// The stable code.
    pub data: ErrorData,
}

/// `error.data`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ErrorData {
    /// The stable code, e.g. `widget.not_found`.
    pub code: String,
}

impl RpcError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code: code.rpc_code(),
            message: message.into(),
            data: ErrorData {
                code: code.as_str().into(),
            },
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.data.code, self.message)
    }
}

impl std::error::Error for RpcError {}

/// A response line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id (`null` when the request could not be read far enough to know it).
    pub id: Value,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    /// A success.
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: JSONRPC.into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(id: Value, error: RpcError) -> Self {
        Response {
            jsonrpc: JSONRPC.into(),
            id,
            result: None,
            error: Some(error),
        }
    }

    /// The line to write, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("responses always serialise");
        line.push(b'\n');
        line
    }
}

/// Turns one request line into a call, or the error response to send back.
pub fn parse_call(line: &[u8]) -> Result<Call, Box<Response>> {
    let value: Value = match std::str::from_utf8(line) {
        Err(_) => {
            return Err(Box::new(Response::err(
                Value::Null,
                RpcError::new(ErrorCode::ParseError, "the line is not valid UTF-8"),
            )));
        }
        Ok(text) => serde_json::from_str(text).map_err(|e| {
            Box::new(Response::err(
                Value::Null,
                RpcError::new(ErrorCode::ParseError, format!("the line is not JSON: {e}")),
            ))
        })?,
    };
    let invalid = |id: Value, message: &str| {
        Box::new(Response::err(
            id,
            RpcError::new(ErrorCode::InvalidRequest, message),
        ))
    };
    let Value::Object(mut obj) = value else {
        let message = if value.is_array() {
            "batches are not supported: send one request object per line"
        } else {
            "a request must be a JSON object"
        };
        return Err(invalid(Value::Null, message));
    };
    let id = obj.remove("id");
    if let Some(id) = &id
        && !(id.is_number() || id.is_string() || id.is_null())
    {
        return Err(invalid(Value::Null, "\"id\" must be a number, a string or null"));
    }
    let reply_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some(JSONRPC) {
        return Err(invalid(reply_id, "\"jsonrpc\" must be \"2.0\""));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err(invalid(reply_id, "\"method\" must be a string"));
    };
    let params = match obj.remove("params").unwrap_or(Value::Null) {
        // `[]` is how some JSON-RPC libraries say "no parameters".
        Value::Array(a) if a.is_empty() => Value::Null,
        // Positional parameters would depend on the order of fields, which is not part of the API.
        Value::Array(_) => {
            return Err(Box::new(Response::err(
                reply_id,
                RpcError::new(
                    ErrorCode::InvalidParams,
                    "\"params\" must be an object of named parameters, like {\"widget\": \"w…\"}; positional (array) parameters are not supported",
                ),
            )));
        }
        p if p.is_object() || p.is_null() => p,
        _ => return Err(invalid(reply_id, "\"params\" must be an object")),
    };
    Ok(Call { id, method, params })
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line is in the buffer (without its newline).
    Line,
    /// The line was longer than the limit; it was read and thrown away.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

/// Reads one line into `buf` (cleared first), holding at most `max` bytes of it in memory.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Line
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(if too_long { Line::TooLong } else { Line::Line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: impl std::ops::Deref<Target = Response>) -> String {
        r.error.clone().unwrap().data.code
    }

    #[test]
    fn calls_parse_and_bad_lines_get_the_right_codes() {
        let c = parse_call(br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status"}"#).unwrap();
        assert_eq!(
            (c.id, c.method.as_str(), c.params),
            (Some(Value::from(1)), "daemon.status", Value::Null)
        );
        let n = parse_call(br#"{"jsonrpc":"2.0","method":"x","params":{}}"#).unwrap();
        assert_eq!(n.id, None);
        assert_eq!(code(parse_call(b"{oops").unwrap_err()), "rpc.parse_error");
        assert_eq!(code(parse_call(b"\xff\xfe").unwrap_err()), "rpc.parse_error");
        assert_eq!(code(parse_call(b"[1,2]").unwrap_err()), "rpc.invalid_request");
        assert_eq!(
            code(parse_call(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#).unwrap_err()),
            "rpc.invalid_request"
        );
        let r = parse_call(br#"{"jsonrpc":"2.0","id":"a","method":5}"#).unwrap_err();
        assert_eq!(r.id, Value::from("a"));
        assert_eq!(code(r), "rpc.invalid_request");
        assert_eq!(
            code(parse_call(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).unwrap_err()),
            "rpc.invalid_request"
        );
    }

    #[tokio::test]
    async fn long_lines_are_skipped_without_buffering_them() {
        let mut input = vec![b'a'; 5000];
        input.extend_from_slice(b"\nshort\r\nlast");
        let mut reader = tokio::io::BufReader::with_capacity(64, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 100).await.unwrap(),
            Line::TooLong
        );
        assert!(buf.capacity() <= 200, "the long line was not held in memory");
        assert_eq!(read_line(&mut reader, &mut buf, 100).await.unwrap(), Line::Line);
        assert_eq!(buf, b"short");
        assert_eq!(read_line(&mut reader, &mut buf, 100).await.unwrap(), Line::Line);
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut reader, &mut buf, 100).await.unwrap(), Line::Eof);
    }
}
