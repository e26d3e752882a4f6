//! The HTTP request bodies, through the function the server's extractor runs, for every body type,
//! then the shared validation of text fields. Any bytes give a value or a protocol error with a code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinchat_proto::http::*;
use pinchat_server::http::parse_body;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.split_first() {
        Some((b, rest)) if b % 8 == 0 => (Some("text/plain"), rest),
        Some((b, rest)) if b % 8 == 1 => (None, rest),
        Some((_, rest)) => (Some("application/json; charset=utf-8"), rest),
        None => (Some("application/json"), data),
    };
    let _ = parse_body::<LoginRequest>(content_type, body);
    let _ = parse_body::<SendRequest>(content_type, body);
    let _ = parse_body::<MarkReadRequest>(content_type, body);
    let _ = parse_body::<PresenceUpdate>(content_type, body);
    if let Ok(p) = parse_body::<ProfileUpdate>(content_type, body) {
        use pinchat_server::api::check_chars;
        for v in [p.name, p.signature, p.description].into_iter().flatten() {
            let _ = check_chars("field", &v, 0, 140);
        }
    }
});
