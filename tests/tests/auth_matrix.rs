//! The authorization matrix: every HTTP endpoint and every stream command, tried with no key, malformed
//! keys, another account's key, a revoked key and an expired key — each refused with the documented code
//! (docs/protocol.md, "Auth keys"), or, for another account's key, answered only with that account's
//! own data. One table, one loop: an endpoint added without a row fails the coverage check at the end.

use pinchat_proto::codec::Encoding;
use pinchat_proto::stream::{Ack, ClientFrame, ServerFrame};
use pinchat_proto::{AccountId, ErrorCode, MessageId, Presence};
use pinchat_tests::{Server, StatusCode, Stream};
use reqwest::Method;

/// The credentials tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cred {
    NoKey,
    /// `Authorization: Basic …`: not a bearer key at all.
    NotBearer,
    /// `Bearer` and something that is no key.
    Garbage,
    /// The right prefix, far too long.
    Oversized,
    /// A key of another account (one with no contacts).
    OtherAccount,
    /// Logged out.
    Revoked,
    /// Past its expiry.
    Expired,
}

const CREDS: [Cred; 7] = [
    Cred::NoKey,
    Cred::NotBearer,
    Cred::Garbage,
    Cred::Oversized,
    Cred::OtherAccount,
    Cred::Revoked,
    Cred::Expired,
];

/// What a bad credential must get.
fn refusal(cred: Cred) -> Option<ErrorCode> {
    match cred {
        Cred::NoKey | Cred::NotBearer => Some(ErrorCode::MissingKey),
        Cred::Garbage | Cred::Oversized | Cred::Revoked | Cred::Expired => Some(ErrorCode::InvalidKey),
        Cred::OtherAccount => None,
    }
}

/// What another account's key gets from an endpoint.
#[derive(Clone, Debug)]
enum Other {
    /// Refused: the target is not the other account's contact.
    Refused(StatusCode, ErrorCode),
    /// Served, as the other account: its own data only.
    Own,
}

struct Endpoint {
    method: Method,
    /// `{contact}` is a contact of the demo user (not of the other account), `{hash}` an avatar.
    path: &'static str,
    body: Option<Body>,
    other: Other,
}

enum Body {
    Json(&'static str),
    Png,
}

fn endpoints() -> Vec<Endpoint> {
    use Other::*;
    let forbidden = |code| Refused(StatusCode::FORBIDDEN, code);
    vec![
        Endpoint {
            method: Method::GET,
            path: "/v1/me",
            body: None,
            other: Own,
        },
        Endpoint {
            method: Method::PATCH,
            path: "/v1/me/profile",
            body: Some(Body::Json(r#"{"signature":"x"}"#)),
            other: Own,
        },
        Endpoint {
            method: Method::PUT,
            path: "/v1/me/presence",
            body: Some(Body::Json(r#"{"state":"busy"}"#)),
            other: Own,
        },
        Endpoint {
            method: Method::PUT,
            path: "/v1/me/avatar",
            body: Some(Body::Png),
            other: Own,
        },
        Endpoint {
            method: Method::DELETE,
            path: "/v1/me/avatar",
            body: None,
            other: Own,
        },
        Endpoint {
            method: Method::GET,
            path: "/v1/contacts",
            body: None,
            other: Own,
        },
        // Avatars are content-addressed pictures of identities, readable by any signed-in account.
        Endpoint {
            method: Method::GET,
            path: "/v1/avatars/{hash}",
            body: None,
            other: Own,
        },
        Endpoint {
            method: Method::POST,
            path: "/v1/messages",
            body: Some(Body::Json(r#"{"to":{contact},"client_id":"m1","text":"hi"}"#)),
            other: forbidden(ErrorCode::MessageNotContact),
        },
        Endpoint {
            method: Method::GET,
            path: "/v1/messages/{contact}",
            body: None,
            other: forbidden(ErrorCode::MessageNotContact),
        },
        Endpoint {
            method: Method::POST,
            path: "/v1/messages/{contact}/read",
            body: Some(Body::Json(r#"{"up_to":1000000}"#)),
            other: forbidden(ErrorCode::MessageNotContact),
        },
        Endpoint {
            method: Method::GET,
            path: "/v1/calls/{contact}",
            body: None,
            other: forbidden(ErrorCode::MessageNotContact),
        },
        Endpoint {
            method: Method::GET,
            path: "/v1/ice",
            body: None,
            other: Own,
        },
        Endpoint {
            method: Method::GET,
            path: "/v1/changes?pins={contact}",
            body: None,
            other: forbidden(ErrorCode::PinNotContact),
        },
        // Last: it revokes the key it is called with (the other account uses a key of its own for it).
        Endpoint {
            method: Method::POST,
            path: "/v1/logout",
            body: None,
            other: Own,
        },
    ]
}

struct World {
    s: Server,
    demo: String,
    other: String,
    other_id: AccountId,
    revoked: String,
    expired: String,
    contact: AccountId,
    hash: String,
    png: Vec<u8>,
}

async fn world() -> World {
    let s = Server::start().await;
    s.create_account("loner");
    s.create_account("lapsed");
    let demo = s.key("demo").await;
    let other = s.key("loner").await;
    let contact = s.id_of(&demo, "alice").await;
    let list: pinchat_proto::http::ContactList = s.get(&demo, "/v1/contacts").await.unwrap();
    let hash = list.contacts.iter().find_map(|c| c.avatar.clone()).unwrap();
    let png = s.avatar_bytes(&demo, &hash).await;
    let revoked = s.key("demo").await;
    let r = s
        .http
        .post(s.url("/v1/logout"))
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // An expired key: the server checks each key's expiry on every use, so setting it in the past is
    // what time would do.
    let expired = s.key("lapsed").await;
    let n = s.execute_sql(
        "UPDATE keys SET expires_at = 1 WHERE account = (SELECT id FROM accounts WHERE login = 'lapsed')",
    );
    assert_eq!(n, 1);
    let me: pinchat_proto::http::Me = s.get(&other, "/v1/me").await.unwrap();
    World {
        other_id: me.identity.id,
        s,
        demo,
        other,
        revoked,
        expired,
        contact,
        hash,
        png,
    }
}

impl World {
    fn header(&self, cred: Cred) -> Option<String> {
        Some(match cred {
            Cred::NoKey => return None,
            Cred::NotBearer => "Basic ZGVtbzpkZW1v".into(),
            Cred::Garbage => "Bearer this-is-no-key".into(),
            Cred::Oversized => format!("Bearer pck1_{}", "A".repeat(4000)),
            Cred::OtherAccount => format!("Bearer {}", self.other),
            Cred::Revoked => format!("Bearer {}", self.revoked),
            Cred::Expired => format!("Bearer {}", self.expired),
        })
    }

    fn fill(&self, text: &str) -> String {
        text.replace("{contact}", &self.contact.0.to_string())
            .replace("{hash}", &self.hash)
    }
}

#[tokio::test]
async fn every_endpoint_refuses_every_bad_credential_with_the_documented_code() {
    let w = world().await;
    let mut checked = 0;
    for e in endpoints() {
        for cred in CREDS {
            let header = if e.path == "/v1/logout" && cred == Cred::OtherAccount {
                // A key of its own to revoke, so the rest of the table keeps a valid one.
                Some(format!("Bearer {}", w.s.key("loner").await))
            } else {
                w.header(cred)
            };
            let mut r = w.s.http.request(e.method.clone(), w.s.url(&w.fill(e.path)));
            if let Some(h) = &header {
                r = r.header("authorization", h);
            }
            r = match &e.body {
                Some(Body::Json(j)) => r.header("content-type", "application/json").body(w.fill(j)),
                Some(Body::Png) => r.body(w.png.clone()),
                None => r,
            };
            let r = r.send().await.unwrap();
            let status = r.status();
            let bytes = r.bytes().await.unwrap();
            let what = format!("{} {} with {cred:?}", e.method, e.path);
            match (refusal(cred), &e.other) {
                (Some(code), _) => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                    let body: pinchat_proto::http::ErrorResponse = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|_| panic!("{what}: not an error body"));
                    assert_eq!(body.error.code, code, "{what}: {}", body.error.message);
                    assert!(!body.error.message.is_empty());
                }
                (None, Other::Refused(want_status, code)) => {
                    assert_eq!(status, *want_status, "{what}");
                    let body: pinchat_proto::http::ErrorResponse = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(&body.error.code, code, "{what}");
                }
                (None, Other::Own) => {
                    assert!(status.is_success(), "{what}: {status}");
                    // Whatever comes back is the other account's own, never the demo user's.
                    let text = String::from_utf8_lossy(&bytes);
                    assert!(
                        !text.contains("\"login\":\"demo\"") && !text.contains("alice"),
                        "{what}: {text}"
                    );
                }
            }
            checked += 1;
        }
    }
    // The stream's upgrade is an endpoint too: every bad credential is refused before any frame.
    for cred in CREDS {
        let header = w.header(cred);
        let key = header
            .as_deref()
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        match (refusal(cred), cred) {
            (None, _) => {
                Stream::connect(w.s.addr, key, Encoding::Binary)
                    .await
                    .expect("its own stream");
            }
            (Some(code), Cred::NoKey | Cred::NotBearer) => {
                // Sent with no usable Authorization header at all.
                let r = w.s.http.get(w.s.url("/v1/stream")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
                let body: pinchat_proto::http::ErrorResponse = r.json().await.unwrap();
                assert_eq!(body.error.code, code, "stream with {cred:?}");
            }
            (Some(code), _) => {
                let Err((status, body)) = Stream::connect(w.s.addr, key, Encoding::Binary).await else {
                    panic!("a stream opened with {cred:?}");
                };
                assert_eq!(status, 401, "stream with {cred:?}");
                assert!(body.contains(code.as_str()), "stream with {cred:?}: {body}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, (endpoints().len() + 1) * CREDS.len());
    assert_eq!(
        endpoints().len(),
        14,
        "every authenticated endpoint of docs/protocol.md has a row"
    );
}

#[tokio::test]
async fn every_stream_command_with_another_accounts_key_touches_only_that_account() {
    let w = world().await;
    let mut other = w.s.stream(&w.other, Encoding::Binary).await;
    let commands: Vec<(ClientFrame, Option<ErrorCode>)> = vec![
        (
            ClientFrame::Hello {
                version: pinchat_proto::PROTOCOL_VERSION,
            },
            Some(ErrorCode::Unexpected),
        ),
        (
            ClientFrame::Subscribe {
                req: 1,
                sub: 0,
                pins: vec![w.contact],
                resume: None,
            },
            Some(ErrorCode::PinNotContact),
        ),
        (
            ClientFrame::Send {
                req: 2,
                to: w.contact,
                client_id: "x".into(),
                text: "hi".into(),
            },
            Some(ErrorCode::MessageNotContact),
        ),
        (
            ClientFrame::MarkRead {
                req: 3,
                contact: w.contact,
                up_to: MessageId(1_000_000),
            },
            Some(ErrorCode::MessageNotContact),
        ),
        (ClientFrame::Unsubscribe { req: 4, sub: 0 }, None),
        (
            ClientFrame::SetPresence {
                req: 5,
                state: Some(Presence::Busy),
                status: None,
            },
            None,
        ),
    ];
    for (frame, refused) in &commands {
        other.send(frame).await;
        match (other.recv().await, refused) {
            (ServerFrame::Error { error, .. }, Some(code)) => assert_eq!(&error.code, code, "{frame:?}"),
            (
                ServerFrame::Ack {
                    result: Ack::Done, ..
                },
                None,
            ) => {}
            (answer, _) => panic!("{frame:?} got {answer:?}"),
        }
    }
    // The presence change was the other account's own.
    let me: pinchat_proto::http::Me = w.s.get(&w.other, "/v1/me").await.unwrap();
    assert_eq!((me.identity.id, me.chosen_state), (w.other_id, Presence::Busy));
    let demo: pinchat_proto::http::Me = w.s.get(&w.demo, "/v1/me").await.unwrap();
    assert_ne!(demo.chosen_state, Presence::Busy);
}

#[tokio::test]
async fn a_key_revoked_while_its_stream_is_open_ends_the_stream() {
    // (An open stream keeps its key in use, and a key in use does not expire; expired keys are refused
    // at the upgrade, above.)
    let w = world().await;
    let key = w.s.key("demo").await;
    let mut stream = w.s.stream(&key, Encoding::Binary).await;
    stream.subscribe(1, 0, &[w.contact], None).await;
    let r =
        w.s.http
            .post(w.s.url("/v1/logout"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (close, _) = stream.until_close().await;
    let close = close.expect("closed with a close frame");
    assert_eq!(u16::from(close.code), 4401, "{close:?}");
    assert!(close.reason.contains("auth.invalid_key"), "{close:?}");
    assert!(
        Stream::connect(w.s.addr, &key, Encoding::Binary).await.is_err(),
        "the key opens nothing"
    );
}
