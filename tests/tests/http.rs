//! The HTTP API of the real server: login, keys, contacts, avatars, messages, polling, bad input.

use pinchat_proto::http::*;
use pinchat_proto::stream::Snapshot;
use pinchat_proto::{CURSOR_HEADER, ErrorCode, Field, MessageId, Presence};
use pinchat_tests::{Server, StatusCode};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn login_gives_a_key_and_wrong_passwords_are_refused() {
    let s = Server::start().await;
    let ok = s.login("demo", "demo").await.unwrap();
    assert!(ok.key.starts_with("pck1_") && ok.key.len() >= 40, "{}", ok.key);
    assert!(ok.expires_at > 0);
    let me: Me = s.get(&ok.key, "/v1/me").await.unwrap();
    assert_eq!(me.identity.login, "demo");
    assert_eq!(me.identity.id, ok.account);

    let (status, e) = s.login("demo", "wrong").await.unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::BadCredentials)
    );
    // An unknown account looks exactly like a wrong password.
    let (status, e) = s.login("nobody", "demo").await.unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::BadCredentials)
    );
    // Login names are case-insensitive.
    assert!(s.login("DEMO", "demo").await.is_ok());

    // The key is stored hashed: the database does not contain it.
    let stored = s.stored_bytes();
    assert!(stored.len() > 1000, "the stored data was read");
    assert!(
        !stored.windows(ok.key.len()).any(|w| w == ok.key.as_bytes()),
        "key found in clear in the database"
    );
    assert!(!s.log().contains(&ok.key), "key found in the server log");
}

#[tokio::test]
async fn logins_are_rate_limited_per_account_and_other_accounts_still_work() {
    let s = Server::start_with(
        "[limits]\nlogin_per_account_per_minute = 3\nlogin_per_address_per_minute = 100\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            s.login("alice", "wrong").await.unwrap_err().1.code,
            ErrorCode::BadCredentials
        );
    }
    let (status, e) = s.login("alice", "demo").await.unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited)
    );
    assert!(e.message.contains("wait"), "{}", e.message);
    let r = s
        .http
        .post(s.url("/v1/login"))
        .json(&json!({"account":"alice","password":"demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("retry-after").unwrap(), "60");
    // Another account is not affected.
    assert!(s.login("bob", "demo").await.is_ok());
}

#[tokio::test]
async fn logins_are_rate_limited_per_address() {
    let s = Server::start_with(
        "[limits]\nlogin_per_account_per_minute = 100\nlogin_per_address_per_minute = 4\n",
    )
    .await;
    for who in ["alice", "bob", "carol", "david"] {
        assert!(s.login(who, "demo").await.is_ok());
    }
    assert_eq!(
        s.login("emma", "demo").await.unwrap_err().1.code,
        ErrorCode::RateLimited
    );
}

#[tokio::test]
async fn contact_list_has_identities_and_the_pin_limit() {
    let s = Server::start().await;
    let key = s.key("demo").await;
    let list: ContactList = s.get(&key, "/v1/contacts").await.unwrap();
    assert_eq!(list.contacts.len(), 30);
    assert_eq!(list.max_pins, 20);
    let wang = list.contacts.iter().find(|c| c.login == "wangwei").unwrap();
    assert_eq!(wang.name, "王伟");
    assert_eq!(wang.signature, "今天也要加油！");
    assert!(wang.avatar.is_some());
    // Sorted by display name, case-insensitively.
    let names: Vec<String> = list.contacts.iter().map(|c| c.name.to_lowercase()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    // A contact's own list contains the demo user.
    let alice = s.key("alice").await;
    let list: ContactList = s.get(&alice, "/v1/contacts").await.unwrap();
    assert!(list.contacts.iter().any(|c| c.login == "demo"));
}

#[tokio::test]
async fn avatars_are_served_with_an_etag_and_only_downloaded_when_changed() {
    let s = Server::start().await;
    let key = s.key("demo").await;
    let list: ContactList = s.get(&key, "/v1/contacts").await.unwrap();
    let hash = list.contacts[0].avatar.clone().unwrap();
    let r = s
        .http
        .get(s.url(&format!("/v1/avatars/{hash}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{hash}\""));
    let real_png = r.bytes().await.unwrap().to_vec();
    assert!(real_png.starts_with(b"\x89PNG"));
    let r = s
        .http
        .get(s.url(&format!("/v1/avatars/{hash}")))
        .bearer_auth(&key)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(r.bytes().await.unwrap().is_empty());
    // Unknown hash; and no key at all.
    let (status, e) = s
        .get::<serde_json::Value>(&key, "/v1/avatars/nope")
        .await
        .unwrap_err();
    assert_eq!((status, e.code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    let r = s
        .http
        .get(s.url(&format!("/v1/avatars/{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Uploading a new avatar changes the hash; a non-image is refused.
    let r = s
        .http
        .put(s.url("/v1/me/avatar"))
        .bearer_auth(&key)
        .body(real_png.clone())
        .send()
        .await
        .unwrap();
    let set: AvatarSet = pinchat_tests::decode(r).await.unwrap();
    let me: Me = s.get(&key, "/v1/me").await.unwrap();
    assert_eq!(me.identity.avatar.as_deref(), Some(set.hash.as_str()));
    let r = s
        .http
        .put(s.url("/v1/me/avatar"))
        .bearer_auth(&key)
        .body("<svg/>")
        .send()
        .await
        .unwrap();
    let (status, e) = pinchat_tests::decode::<AvatarSet>(r).await.unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest)
    );

    // Only whole images of a sensible size: the first bytes are not enough.
    let huge = png_declaring(65535, 65535);
    // Found by the fuzzer: a JPEG that trips an assertion inside the decoder.
    let decoder_crash = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/tests/fixtures/avatar-jpeg-decoder-panic.jpg"
    ));
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "a JPEG that crashes the decoder",
            decoder_crash.to_vec(),
            "cannot be decoded",
        ),
        (
            "PNG magic and nothing else",
            b"\x89PNG\r\n\x1a\nnot really an image".to_vec(),
            "cannot be read",
        ),
        (
            "a real PNG cut in half",
            real_png[..real_png.len() / 2].to_vec(),
            "not a complete",
        ),
        ("a PNG declaring 65535×65535 pixels", huge, "65535×65535"),
    ];
    for (what, body, words) in cases {
        let r = s
            .http
            .put(s.url("/v1/me/avatar"))
            .bearer_auth(&key)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, e) = pinchat_tests::decode::<AvatarSet>(r).await.unwrap_err();
        assert_eq!(
            (status, &e.code),
            (StatusCode::BAD_REQUEST, &ErrorCode::InvalidRequest),
            "{what}"
        );
        assert!(e.message.contains(words), "{what}: {}", e.message);
    }
    let me: Me = s.get(&key, "/v1/me").await.unwrap();
    assert_eq!(
        me.identity.avatar.as_deref(),
        Some(set.hash.as_str()),
        "the last good avatar stays"
    );
}

/// A PNG signature, a valid IHDR chunk declaring `w`×`h` pixels, a token of image data and an end
/// chunk: what a hostile upload that passes a first-bytes check looks like.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = vec![];
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // A tiny image-data chunk (an empty zlib stream): decoders read the header up to here.
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[tokio::test]
async fn messages_count_unread_page_history_and_retries_are_idempotent() {
    let s = Server::start().await;
    let (demo, alice) = (s.key("demo").await, s.key("alice").await);
    let alice_id = s.id_of(&demo, "alice").await;
    let demo_id = s.id_of(&alice, "demo").await;

    let mut ids = vec![];
    for i in 0..5 {
        let r: SendResponse = s
            .post(
                &alice,
                "/v1/messages",
                &SendRequest {
                    to: demo_id,
                    client_id: format!("m{i}"),
                    text: format!("hello {i}"),
                },
            )
            .await
            .unwrap();
        assert!(!r.duplicate);
        ids.push(r.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    // A retry with the same client id is stored once and answered with the same id.
    let retry: SendResponse = s
        .post(
            &alice,
            "/v1/messages",
            &SendRequest {
                to: demo_id,
                client_id: "m4".into(),
                text: "hello 4".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!((retry.id, retry.duplicate), (ids[4], true));
    // Reusing a client id for a different text is a client bug and is refused.
    let (_, e) = s
        .post::<_, SendResponse>(
            &alice,
            "/v1/messages",
            &SendRequest {
                to: demo_id,
                client_id: "m4".into(),
                text: "other".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);

    let page: HistoryPage = s
        .get(&demo, &format!("/v1/messages/{alice_id}?limit=2"))
        .await
        .unwrap();
    assert_eq!(page.unread, 5);
    assert!(page.more);
    assert_eq!(
        page.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    assert_eq!(page.messages[0].text, "hello 4");
    assert_eq!(page.messages[0].from, alice_id);
    let page2: HistoryPage = s
        .get(
            &demo,
            &format!("/v1/messages/{alice_id}?limit=2&before={}", ids[3]),
        )
        .await
        .unwrap();
    assert_eq!(
        page2.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let page3: HistoryPage = s
        .get(
            &demo,
            &format!("/v1/messages/{alice_id}?limit=2&before={}", ids[1]),
        )
        .await
        .unwrap();
    assert_eq!(page3.messages.len(), 1);
    assert!(!page3.more);

    // Mark read up to the third message: two left; the read marker only moves forward.
    let r: MarkReadResponse = s
        .post(
            &demo,
            &format!("/v1/messages/{alice_id}/read"),
            &MarkReadRequest { up_to: ids[2] },
        )
        .await
        .unwrap();
    assert_eq!(r.unread, 2);
    let r: MarkReadResponse = s
        .post(
            &demo,
            &format!("/v1/messages/{alice_id}/read"),
            &MarkReadRequest { up_to: ids[0] },
        )
        .await
        .unwrap();
    assert_eq!(r.unread, 2);
    let page: HistoryPage = s.get(&alice, &format!("/v1/messages/{demo_id}")).await.unwrap();
    assert_eq!(
        page.peer_read_up_to, ids[2],
        "the sender sees how far the recipient read"
    );
    let r: MarkReadResponse = s
        .post(
            &demo,
            &format!("/v1/messages/{alice_id}/read"),
            &MarkReadRequest {
                up_to: MessageId(u64::MAX >> 2),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.unread, 0);

    // Messages go to contacts only, and not to oneself.
    s.create_account("stranger");
    let stranger = s.key("stranger").await;
    let (status, e) = s
        .post::<_, SendResponse>(
            &stranger,
            "/v1/messages",
            &SendRequest {
                to: demo_id,
                client_id: "x".into(),
                text: "hi".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::FORBIDDEN, ErrorCode::MessageNotContact)
    );
    let (_, e) = s
        .post::<_, SendResponse>(
            &demo,
            "/v1/messages",
            &SendRequest {
                to: demo_id,
                client_id: "x".into(),
                text: "hi".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::MessageNotContact);
    // The stranger cannot read a conversation with Alice either: refused, not an empty page.
    let (status, e) = s
        .get::<HistoryPage>(&stranger, &format!("/v1/messages/{alice_id}"))
        .await
        .unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::FORBIDDEN, ErrorCode::MessageNotContact)
    );
    // Empty and oversized texts.
    let (_, e) = s
        .post::<_, SendResponse>(
            &alice,
            "/v1/messages",
            &SendRequest {
                to: demo_id,
                client_id: "e".into(),
                text: "  ".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    let (status, e) = s
        .post::<_, SendResponse>(
            &alice,
            "/v1/messages",
            &SendRequest {
                to: demo_id,
                client_id: "big".into(),
                text: "x".repeat(4001),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TextTooLong)
    );
    assert!(e.message.contains("4000"), "{}", e.message);
}

#[tokio::test]
async fn revoked_keys_are_refused_with_invalid_key() {
    let s = Server::start().await;
    let k1 = s.key("demo").await;
    let k2 = s.key("demo").await;
    let r = s
        .http
        .post(s.url("/v1/logout"))
        .bearer_auth(&k1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, e) = s.get::<Me>(&k1, "/v1/me").await.unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::UNAUTHORIZED, ErrorCode::InvalidKey)
    );
    assert!(e.message.contains("log in again"), "{}", e.message);
    // The other key still works until an administrator revokes every key.
    assert!(s.get::<Me>(&k2, "/v1/me").await.is_ok());
    assert!(
        s.admin_ok(&["account", "revoke-keys", "demo"])
            .contains("revoked 1 key")
    );
    assert_eq!(
        s.get::<Me>(&k2, "/v1/me").await.unwrap_err().1.code,
        ErrorCode::InvalidKey
    );
    // No key, a malformed header, a made-up key.
    let r = s.http.get(s.url("/v1/me")).send().await.unwrap();
    assert_eq!(
        pinchat_tests::decode::<Me>(r).await.unwrap_err().1.code,
        ErrorCode::MissingKey
    );
    let r = s
        .http
        .get(s.url("/v1/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pinchat_tests::decode::<Me>(r).await.unwrap_err().1.code,
        ErrorCode::MissingKey
    );
    assert_eq!(
        s.get::<Me>("pck1_madeup", "/v1/me").await.unwrap_err().1.code,
        ErrorCode::InvalidKey
    );
    // A disabled account cannot log in.
    s.admin_ok(&["account", "disable", "alice"]);
    assert_eq!(
        s.login("alice", "demo").await.unwrap_err().1.code,
        ErrorCode::AccountDisabled
    );
    s.admin_ok(&["account", "enable", "alice"]);
    assert!(s.login("alice", "demo").await.is_ok());
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let s = Server::start().await;
    let key = s.key("demo").await;
    let send = |body: Vec<u8>, ctype: &'static str| {
        s.http
            .post(s.url("/v1/messages"))
            .bearer_auth(&key)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let check = async |r: reqwest::Response, status: StatusCode, code: ErrorCode| {
        let (st, e) = pinchat_tests::decode::<serde_json::Value>(r).await.unwrap_err();
        assert_eq!((st, &e.code), (status, &code), "{}", e.message);
        assert!(!e.message.is_empty());
    };
    check(
        send(b"{not json".to_vec(), "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::Malformed,
    )
    .await;
    check(
        send(
            br#"{"to":"alice","client_id":1,"text":[]}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::Malformed,
    )
    .await;
    check(
        send(b"{\"to\":1,\"text\":\"\xff\"}".to_vec(), "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidUtf8,
    )
    .await;
    check(
        send(b"{}".to_vec(), "text/plain").await.unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::Malformed,
    )
    .await;
    let r = send(vec![b' '; 200_000], "application/json").await.unwrap();
    // The body was not read to its end: the connection is not reused for the next request.
    assert_eq!(
        r.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    check(r, StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge).await;
    let r = s
        .http
        .get(s.url("/v1/me"))
        .bearer_auth(&key)
        .header("pinchat-protocol", "99")
        .send()
        .await
        .unwrap();
    check(r, StatusCode::BAD_REQUEST, ErrorCode::VersionUnsupported).await;
    let r = s.http.get(s.url("/v1/nothing-here")).send().await.unwrap();
    check(r, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    let r = s
        .http
        .delete(s.url("/v1/contacts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    check(r, StatusCode::METHOD_NOT_ALLOWED, ErrorCode::InvalidRequest).await;
    let r = s
        .http
        .get(s.url("/v1/messages/notanumber"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    check(r, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest).await;
    let r = s
        .http
        .get(s.url("/v1/changes?pins=1,x"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    check(r, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest).await;
    let r = s
        .http
        .patch(s.url("/v1/me/profile"))
        .bearer_auth(&key)
        .json(&json!({"name": "x".repeat(65)}))
        .send()
        .await
        .unwrap();
    check(r, StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest).await;

    // Still serving, and nothing was stored by the bad requests.
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let alice = s.id_of(&key, "alice").await;
    let page: HistoryPage = s.get(&key, &format!("/v1/messages/{alice}")).await.unwrap();
    assert!(page.messages.is_empty());
}

#[tokio::test]
async fn profile_and_presence_updates_apply() {
    let s = Server::start().await;
    let key = s.key("demo").await;
    let me: Me = s
        .call(
            Method::PATCH,
            &key,
            "/v1/me/profile",
            &ProfileUpdate {
                signature: Some("新的签名".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(me.identity.signature, "新的签名");
    let me: Me = s
        .call(
            Method::PUT,
            &key,
            "/v1/me/presence",
            &PresenceUpdate {
                state: Some(Presence::Busy),
                status: Some("in a meeting".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(me.chosen_state, Presence::Busy);
    assert_eq!(me.status, "in a meeting");
    // Without a live stream the account is offline to others.
    assert_eq!(me.state, Presence::Offline);
}

#[tokio::test]
async fn polling_returns_only_changes_and_nothing_when_nothing_changed() {
    let s = Server::start().await;
    let key = s.key("demo").await;
    let (alice, bob) = (s.id_of(&key, "alice").await, s.id_of(&key, "bob").await);
    let full: Snapshot = s
        .get(&key, &format!("/v1/changes?pins={alice},{bob}"))
        .await
        .unwrap();
    assert!(full.full);
    assert_eq!(full.contacts.len(), 2);
    // The epoch comes from the stream's welcome; the poll API takes it back.
    let stream = s.stream(&key, pinchat_proto::Encoding::Json).await;
    let epoch = stream.epoch();
    let since = full.cursor;

    // Nothing changed for the pins: 204, no body, the cursor in a header.
    let r = s
        .http
        .get(s.url(&format!(
            "/v1/changes?pins={alice},{bob}&epoch={epoch}&since={since}"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers().contains_key(CURSOR_HEADER));
    assert_eq!(
        r.headers()[pinchat_proto::EPOCH_HEADER],
        epoch.to_string().as_str(),
        "pollers learn the epoch too"
    );
    assert!(r.bytes().await.unwrap().is_empty());

    // Bob changes his signature; a contact outside the pins changes too.
    s.admin_ok(&[
        "account",
        "set-profile",
        "bob",
        "--signature",
        "back from the hills",
    ]);
    s.admin_ok(&["account", "set-profile", "carol", "--signature", "not pinned"]);
    let changes: Snapshot = s
        .get(
            &key,
            &format!("/v1/changes?pins={alice},{bob}&epoch={epoch}&since={since}"),
        )
        .await
        .unwrap();
    assert!(!changes.full);
    assert_eq!(changes.contacts.len(), 1);
    assert_eq!(changes.contacts[0].id, bob);
    assert_eq!(
        changes.contacts[0].fields,
        vec![Field::Signature("back from the hills".into())]
    );

    // The same in the binary encoding.
    let r = s
        .http
        .get(s.url(&format!(
            "/v1/changes?pins={alice},{bob}&epoch={epoch}&since={since}"
        )))
        .bearer_auth(&key)
        .header("accept", pinchat_proto::BINARY_MEDIA_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], pinchat_proto::BINARY_MEDIA_TYPE);
    let bytes = r.bytes().await.unwrap();
    let binary = pinchat_proto::codec::decode_snapshot(pinchat_proto::Encoding::Binary, &bytes).unwrap();
    assert_eq!(binary, changes);
    assert!(bytes.len() < 40, "a one-field change costs {} bytes", bytes.len());

    // A cursor from another epoch gets a full snapshot.
    let other: Snapshot = s
        .get(
            &key,
            &format!("/v1/changes?pins={alice}&epoch={}&since={since}", epoch ^ 1),
        )
        .await
        .unwrap();
    assert!(other.full);
    // Pins must be contacts.
    s.create_account("stranger");
    let stranger = s.key("stranger").await;
    let (status, e) = s
        .get::<Snapshot>(&stranger, &format!("/v1/changes?pins={alice}"))
        .await
        .unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::FORBIDDEN, ErrorCode::PinNotContact)
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let s = Server::start().await;
    let h: Health = pinchat_tests::decode(s.http.get(s.url("/healthz")).send().await.unwrap())
        .await
        .unwrap();
    assert_eq!(h.status, "ok");
    s.key("demo").await;
    let text = s.metrics_text().await;
    assert!(text.contains("pinchat_logins_total 1"), "{text}");
    for name in [
        "pinchat_streams ",
        "pinchat_events_relayed_total",
        "pinchat_stream_bytes_sent_total",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
}

#[tokio::test]
async fn a_strangers_conversation_odd_page_sizes_and_bodies_that_are_not_objects_are_refused() {
    let s = Server::start().await;
    s.create_account("stranger");
    let key = s.key("demo").await;
    let stranger = s.key("stranger").await;
    let demo_id = s.id_of(&s.key("alice").await, "demo").await;
    let alice = s.id_of(&key, "alice").await;
    s.send_text(&key, alice, "hello", "hello Alice").await;

    // Somebody who is not a contact reads nothing and marks nothing: refused, not an empty 200.
    let (status, e) = s
        .get::<serde_json::Value>(&stranger, &format!("/v1/messages/{}", demo_id.0))
        .await
        .unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::FORBIDDEN, ErrorCode::MessageNotContact)
    );
    let (status, e) = s
        .post::<_, serde_json::Value>(
            &stranger,
            &format!("/v1/messages/{}/read", demo_id.0),
            &serde_json::json!({ "up_to": 1_000_000 }),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (status, e.code),
        (StatusCode::FORBIDDEN, ErrorCode::MessageNotContact)
    );

    // Page sizes outside 1–200 are refused as documented, not clamped.
    for limit in ["0", "201", "100000"] {
        let (status, e) = s
            .get::<serde_json::Value>(&key, &format!("/v1/messages/{}?limit={limit}", alice.0))
            .await
            .unwrap_err();
        assert_eq!(
            (status, e.code),
            (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            "{limit}"
        );
        assert!(e.message.contains("1 to 200"), "{}", e.message);
    }
    let page: pinchat_proto::http::HistoryPage = s
        .get(&key, &format!("/v1/messages/{}?limit=200", alice.0))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);

    // A body is an object: an array of the fields in order is not accepted.
    for (method, path, body) in [
        (reqwest::Method::PATCH, "/v1/me/profile", "[]"),
        (reqwest::Method::PUT, "/v1/me/presence", "[]"),
        (reqwest::Method::PUT, "/v1/me/presence", "[\"busy\", \"away\"]"),
        (reqwest::Method::POST, "/v1/login", "[\"demo\", \"demo\"]"),
    ] {
        let r = s
            .http
            .request(method.clone(), s.url(path))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, e) = pinchat_tests::decode::<serde_json::Value>(r).await.unwrap_err();
        assert_eq!(
            (status, e.code),
            (StatusCode::BAD_REQUEST, ErrorCode::Malformed),
            "{method} {path} {body}"
        );
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }
    let me: pinchat_proto::http::Me = s.get(&key, "/v1/me").await.unwrap();
    assert_eq!(
        me.chosen_state,
        pinchat_proto::Presence::Online,
        "nothing changed"
    );
}
