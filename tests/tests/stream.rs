//! The push stream of the real server: pinned-only delivery, changed fields only, resume without gap or
//! duplicate, re-pinning, revocation, bad input, crash durability and shutdown.

use futures_util::future::join_all;
use pinchat_proto::stream::{Ack, ClientFrame, Resume, ServerFrame};
use pinchat_proto::{AccountId, Encoding, ErrorCode, Field, MessageId, Presence};
use pinchat_tests::{CountingProxy, Server, Stream, delta, error_code, message, send};
use std::collections::BTreeSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

#[tokio::test]
async fn a_presence_change_reaches_only_the_widget_that_pinned_it_in_a_few_bytes() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let (alice, bob) = (s.id_of(&demo, "alice").await, s.id_of(&demo, "bob").await);
    // Two widgets of the same account with different pins; the first one behind a byte counter.
    let proxy = CountingProxy::start(s.addr).await.unwrap();
    let mut w1 = s.stream_at(proxy.addr, &demo, Encoding::Binary).await;
    let mut w2 = s.stream(&demo, Encoding::Binary).await;
    let snap1 = w1.subscribe(1, 0, &[alice], None).await;
    assert!(snap1.full);
    assert_eq!(
        snap1.contacts.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![alice]
    );
    w2.subscribe(1, 0, &[bob], None).await;

    // Alice comes online: her client opens a stream.
    let before = proxy.bytes_down();
    let mut alice_stream = s.stream(&s.key("alice").await, Encoding::Binary).await;
    let (_, fields) = delta(w1.recv().await, alice);
    assert_eq!(fields, vec![Field::State(Presence::Online)]);
    let wire = proxy.bytes_down() - before;
    println!("a presence change cost {wire} bytes on the wire, framing included");
    assert!(wire <= 40, "a presence delta cost {wire} bytes on the wire");

    // Bob comes online: widget 2 hears it, and it is the first thing it hears (so nothing about Alice
    // reached it).
    let _bob_stream = s.stream(&s.key("bob").await, Encoding::Binary).await;
    let (_, fields) = delta(w2.recv().await, bob);
    assert_eq!(fields, vec![Field::State(Presence::Idle)]);
    // And widget 1's next event is Alice going busy, not Bob.
    alice_stream
        .send(&ClientFrame::SetPresence {
            req: 7,
            state: Some(Presence::Busy),
            status: None,
        })
        .await;
    assert_eq!(
        alice_stream.recv().await,
        ServerFrame::Ack {
            req: 7,
            result: Ack::Done
        }
    );
    let (_, fields) = delta(w1.recv().await, alice);
    assert_eq!(fields, vec![Field::State(Presence::Busy)]);
}

#[tokio::test]
async fn the_snapshot_has_identity_state_unread_count_and_hints() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let (alice, wang) = (s.id_of(&demo, "alice").await, s.id_of(&demo, "wangwei").await);
    let demo_id = s.id_of(&alice_key, "demo").await;
    let mut sent = vec![];
    for i in 0..5 {
        sent.push(
            send(&s, &alice_key, demo_id, &format!("c{i}"), &format!("msg {i}"))
                .await
                .id,
        );
    }
    let mut w = s.stream(&demo, Encoding::Json).await;
    let snap = w.subscribe(1, 0, &[alice, wang], None).await;
    assert!(snap.full);
    let a = snap.contacts.iter().find(|c| c.id == alice).unwrap();
    assert!(a.fields.contains(&Field::Name("Alice Chen".into())));
    assert!(
        a.fields
            .contains(&Field::Signature("Coffee first, code second.".into()))
    );
    assert!(
        a.fields
            .contains(&Field::Description("Backend engineer in Shanghai.".into()))
    );
    assert!(a.fields.iter().any(|f| matches!(f, Field::Avatar(Some(_)))));
    assert!(a.fields.contains(&Field::State(Presence::Offline)));
    assert!(a.fields.contains(&Field::Unread(5)));
    let wf = &snap.contacts.iter().find(|c| c.id == wang).unwrap().fields;
    assert!(wf.contains(&Field::Name("王伟".into())) && wf.contains(&Field::Unread(0)));
    // Hints: the latest three unread messages, oldest first.
    let ids: Vec<MessageId> = snap.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, sent[2..].to_vec());
    assert!(snap.messages.iter().all(|m| m.from == alice));
    // Login sync for five pins stays small.
    let five: Vec<AccountId> = {
        let list: pinchat_proto::http::ContactList = s.get(&demo, "/v1/contacts").await.unwrap();
        list.contacts.iter().take(5).map(|c| c.id).collect()
    };
    let mut b = s.stream(&demo, Encoding::Binary).await;
    let start = b.bytes_received;
    b.subscribe(1, 0, &five, None).await;
    let sync = b.bytes_received - start;
    println!("login sync for 5 pins: {sync} bytes (plus the welcome)");
    assert!(sync <= 2048, "login sync for 5 pins cost {sync} bytes");
}

#[tokio::test]
async fn a_profile_change_sends_only_the_changed_fields() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice = s.id_of(&demo, "alice").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice], None).await;
    // Written by the admin command on the same database, while the server runs.
    s.admin_ok(&["account", "set-profile", "alice", "--signature", "On holiday 🌴"]);
    let (_, fields) = delta(w.recv().await, alice);
    assert_eq!(fields, vec![Field::Signature("On holiday 🌴".into())]);
    // Setting the same value again changes nothing; a name change through HTTP sends only the name.
    s.admin_ok(&["account", "set-profile", "alice", "--signature", "On holiday 🌴"]);
    let alice_key = s.key("alice").await;
    let _: pinchat_proto::http::Me = s
        .call(
            reqwest::Method::PATCH,
            &alice_key,
            "/v1/me/profile",
            &serde_json::json!({"name": "Alice C.", "description": "Backend engineer in Shanghai."}),
        )
        .await
        .unwrap();
    let (_, fields) = delta(w.recv().await, alice);
    assert_eq!(fields, vec![Field::Name("Alice C.".into())]);
}

#[tokio::test]
async fn messages_raise_unread_counts_and_mark_read_clears_them_for_every_widget() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let alice = s.id_of(&demo, "alice").await;
    let demo_id = s.id_of(&alice_key, "demo").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice], None).await;
    let mut alice_widget = s.stream(&alice_key, Encoding::Binary).await;
    let snap = alice_widget.subscribe(1, 0, &[demo_id], None).await;
    // Demo's own stream makes demo visible; whether that lands before or after Alice's snapshot is a
    // race, so the snapshot tells whether a delta must follow.
    if snap.contacts[0].fields.contains(&Field::State(Presence::Offline)) {
        assert_eq!(
            delta(alice_widget.recv().await, demo_id).1,
            vec![Field::State(Presence::Online)]
        );
    }
    // The demo widget sees Alice come online first.
    delta(w.recv().await, alice);

    let m1 = send(&s, &alice_key, demo_id, "a", "first").await;
    let (c1, msg) = message(w.recv().await);
    assert_eq!((msg.id, msg.from, msg.text.as_str()), (m1.id, alice, "first"));
    let (c2, fields) = delta(w.recv().await, alice);
    assert_eq!(fields, vec![Field::Unread(1)]);
    assert!(c2 > c1, "every event has its own, growing cursor");

    // Alice sends through her stream this time.
    alice_widget
        .send(&ClientFrame::Send {
            req: 2,
            to: demo_id,
            client_id: "b".into(),
            text: "second".into(),
        })
        .await;
    let m2 = match alice_widget.recv().await {
        ServerFrame::Ack {
            req: 2,
            result: Ack::Sent {
                id, duplicate: false, ..
            },
        } => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(message(w.recv().await).1.id, m2);
    assert_eq!(delta(w.recv().await, alice).1, vec![Field::Unread(2)]);

    // Reading on the stream: the reader's widgets see 0 unread, the sender's widget a read receipt.
    w.send(&ClientFrame::MarkRead {
        req: 3,
        contact: alice,
        up_to: m2,
    })
    .await;
    assert_eq!(
        w.recv().await,
        ServerFrame::Ack {
            req: 3,
            result: Ack::Read { unread: 0 }
        }
    );
    assert_eq!(delta(w.recv().await, alice).1, vec![Field::Unread(0)]);
    assert_eq!(
        delta(alice_widget.recv().await, demo_id).1,
        vec![Field::PeerRead(m2)]
    );

    // Retrying a send over the stream is idempotent.
    alice_widget
        .send(&ClientFrame::Send {
            req: 4,
            to: demo_id,
            client_id: "b".into(),
            text: "second".into(),
        })
        .await;
    assert!(matches!(
        alice_widget.recv().await,
        ServerFrame::Ack { req: 4, result: Ack::Sent { id, duplicate: true, .. } } if id == m2
    ));
    // A message to a stranger is refused on the stream too.
    s.create_account("stranger");
    let stranger = s.key("stranger").await;
    let mut st = s.stream(&stranger, Encoding::Binary).await;
    st.send(&ClientFrame::Send {
        req: 5,
        to: alice,
        client_id: "x".into(),
        text: "hi".into(),
    })
    .await;
    assert_eq!(error_code(st.recv().await), ErrorCode::MessageNotContact);
}

#[tokio::test]
async fn a_reconnect_with_its_cursor_gets_exactly_what_it_missed() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let (alice, bob) = (s.id_of(&demo, "alice").await, s.id_of(&demo, "bob").await);
    let demo_id = s.id_of(&alice_key, "demo").await;

    let mut w = s.stream(&demo, Encoding::Binary).await;
    let epoch = w.epoch();
    w.subscribe(1, 0, &[alice, bob], None).await;
    let seen = send(&s, &alice_key, demo_id, "seen", "seen live").await;
    let (_, live) = message(w.recv().await);
    assert_eq!(live.id, seen.id);
    let (cursor, _) = delta(w.recv().await, alice);
    drop(w);

    // While the widget is away: two messages from Alice, Bob's new signature, Alice's new name, and a
    // change to Carol, who is not pinned.
    let m2 = send(&s, &alice_key, demo_id, "m2", "missed one").await;
    let m3 = send(&s, &alice_key, demo_id, "m3", "missed two").await;
    s.admin_ok(&["account", "set-profile", "bob", "--signature", "new bob"]);
    s.admin_ok(&["account", "set-profile", "alice", "--name", "Alice Renamed"]);
    s.admin_ok(&["account", "set-profile", "carol", "--signature", "not pinned"]);

    let mut w = s.stream(&demo, Encoding::Binary).await;
    let snap = w
        .subscribe(
            1,
            0,
            &[alice, bob],
            Some(Resume {
                epoch,
                cursor,
                fresh: vec![],
            }),
        )
        .await;
    assert!(!snap.full, "a fresh cursor resumes");
    assert_eq!(
        snap.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m2.id, m3.id],
        "no gap, no duplicate"
    );
    let mut contacts = snap.contacts.clone();
    contacts.sort_by_key(|c| c.id);
    assert_eq!(contacts.len(), 2, "{contacts:?}");
    let a = contacts.iter().find(|c| c.id == alice).unwrap();
    let mut af = a.fields.clone();
    af.sort_by_key(Field::kind);
    assert_eq!(af, vec![Field::Name("Alice Renamed".into()), Field::Unread(3)]);
    let b = contacts.iter().find(|c| c.id == bob).unwrap();
    assert_eq!(b.fields, vec![Field::Signature("new bob".into())]);

    // Resuming again from the new cursor: nothing.
    drop(w);
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let again = w
        .subscribe(
            1,
            0,
            &[alice, bob],
            Some(Resume {
                epoch,
                cursor: snap.cursor,
                fresh: vec![],
            }),
        )
        .await;
    assert!(
        !again.full && again.contacts.is_empty() && again.messages.is_empty(),
        "{again:?}"
    );
    // A pin added while away is named in `fresh` and comes in full.
    let wang = s.id_of(&demo, "wangwei").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let grown = w
        .subscribe(
            1,
            0,
            &[alice, bob, wang],
            Some(Resume {
                epoch,
                cursor: snap.cursor,
                fresh: vec![wang],
            }),
        )
        .await;
    assert!(!grown.full);
    assert_eq!(grown.contacts.len(), 1);
    assert_eq!(grown.contacts[0].id, wang);
    assert!(
        grown.contacts[0].fields.len() >= 8,
        "a fresh pin gets every field"
    );
    // A cursor from another database gets a full snapshot.
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let foreign = w
        .subscribe(
            1,
            0,
            &[alice],
            Some(Resume {
                epoch: epoch ^ 1,
                cursor: 5,
                fresh: vec![],
            }),
        )
        .await;
    assert!(foreign.full);
}

#[tokio::test]
async fn a_resume_too_far_behind_gets_a_fresh_snapshot() {
    let s = Server::start_with("resume_max_messages = 3\n").await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let alice = s.id_of(&demo, "alice").await;
    let demo_id = s.id_of(&alice_key, "demo").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let epoch = w.epoch();
    let snap = w.subscribe(1, 0, &[alice], None).await;
    drop(w);
    for i in 0..5 {
        send(&s, &alice_key, demo_id, &format!("{i}"), "backlog").await;
    }
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let again = w
        .subscribe(
            1,
            0,
            &[alice],
            Some(Resume {
                epoch,
                cursor: snap.cursor,
                fresh: vec![],
            }),
        )
        .await;
    assert!(again.full, "too many missed messages: a fresh snapshot");
    assert!(again.contacts[0].fields.contains(&Field::Unread(5)));
    assert_eq!(again.messages.len(), 3, "with the latest unread as hints");
}

#[tokio::test]
async fn re_pinning_changes_the_subscription_at_once() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let (alice, bob) = (s.id_of(&demo, "alice").await, s.id_of(&demo, "bob").await);
    let mut w = s.stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice], None).await;
    let snap = w.subscribe(2, 0, &[bob], None).await;
    assert_eq!(snap.contacts.iter().map(|c| c.id).collect::<Vec<_>>(), vec![bob]);
    s.admin_ok(&["account", "set-profile", "alice", "--signature", "unpinned now"]);
    s.admin_ok(&["account", "set-profile", "bob", "--signature", "pinned now"]);
    // The first event is Bob's: nothing about Alice came through.
    let (_, fields) = delta(w.recv().await, bob);
    assert_eq!(fields, vec![Field::Signature("pinned now".into())]);

    // A failed re-pin (a stranger among the pins) leaves the working subscription alone.
    s.create_account("stranger");
    let stranger_id = {
        let k = s.key("stranger").await;
        s.get::<pinchat_proto::http::Me>(&k, "/v1/me")
            .await
            .unwrap()
            .identity
            .id
    };
    w.send(&ClientFrame::Subscribe {
        req: 3,
        sub: 0,
        pins: vec![alice, stranger_id],
        resume: None,
    })
    .await;
    match w.recv().await {
        ServerFrame::Error { req: Some(3), error } => {
            assert_eq!(error.code, ErrorCode::PinNotContact);
            assert!(
                error.message.contains(&stranger_id.to_string()),
                "{}",
                error.message
            );
        }
        other => panic!("{other:?}"),
    }
    s.admin_ok(&["account", "set-profile", "bob", "--signature", "still pinned"]);
    assert_eq!(
        delta(w.recv().await, bob).1,
        vec![Field::Signature("still pinned".into())]
    );

    // The pin limit: 21 of the demo's 30 contacts.
    let list: pinchat_proto::http::ContactList = s.get(&demo, "/v1/contacts").await.unwrap();
    let many: Vec<AccountId> = list.contacts.iter().take(21).map(|c| c.id).collect();
    w.send(&ClientFrame::Subscribe {
        req: 4,
        sub: 1,
        pins: many.clone(),
        resume: None,
    })
    .await;
    assert_eq!(error_code(w.recv().await), ErrorCode::TooManyPins);
    let twenty = w.subscribe(5, 1, &many[..20], None).await;
    assert_eq!(twenty.contacts.len(), 20);
    // Subscription numbers are limited too.
    w.send(&ClientFrame::Subscribe {
        req: 6,
        sub: 9,
        pins: vec![alice],
        resume: None,
    })
    .await;
    assert_eq!(error_code(w.recv().await), ErrorCode::TooManySubscriptions);
    // Unsubscribing stops the events.
    w.send(&ClientFrame::Unsubscribe { req: 7, sub: 0 }).await;
    assert_eq!(
        w.recv().await,
        ServerFrame::Ack {
            req: 7,
            result: Ack::Done
        }
    );
    s.admin_ok(&[
        "account",
        "set-profile",
        "bob",
        "--signature",
        "after unsubscribe",
    ]);
    // Bob is also among the twenty of subscription 1, which is the only one to hear it.
    match w.recv().await {
        ServerFrame::Delta { sub: 1, contact, .. } if contact == bob || many[..20].contains(&contact) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_revoked_key_ends_its_open_stream_with_invalid_key() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let mut other = s.stream(&alice_key, Encoding::Binary).await;
    s.admin_ok(&["account", "revoke-keys", "demo"]);
    let (close, frames) = w.until_close().await;
    assert!(
        frames.iter().any(
            |f| matches!(f, ServerFrame::Error { req: None, error } if error.code == ErrorCode::InvalidKey)
        ),
        "{frames:?}"
    );
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 4401);
    assert!(close.reason.starts_with("auth.invalid_key"), "{}", close.reason);
    // The revoked key cannot open a new stream; other accounts' streams are untouched.
    let (status, body) = Stream::connect(s.addr, &demo, Encoding::Binary)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("auth.invalid_key"), "{body}");
    other
        .send(&ClientFrame::SetPresence {
            req: 1,
            state: None,
            status: Some("still here".into()),
        })
        .await;
    assert_eq!(
        other.recv().await,
        ServerFrame::Ack {
            req: 1,
            result: Ack::Done
        }
    );
}

#[tokio::test]
async fn bad_frames_get_clear_errors_and_nothing_else_is_harmed() {
    let s = Server::start_with("[limits]\nmax_frame_bytes = 8192\nmax_text_bytes = 4000\n").await;
    let demo = s.key("demo").await;
    let alice = s.id_of(&demo, "alice").await;
    let mut bystander = s.stream(&demo, Encoding::Binary).await;
    bystander.subscribe(1, 0, &[alice], None).await;

    let mut j = s.stream(&demo, Encoding::Json).await;
    for (text, code) in [
        ("{not json", ErrorCode::Malformed),
        (r#"{"bogus":{"x":1}}"#, ErrorCode::UnknownType),
        (
            r#"{"subscribe":{"req":"one","sub":0,"pins":[],"resume":null}}"#,
            ErrorCode::Malformed,
        ),
        (r#"{"hello":{"version":1}}"#, ErrorCode::Unexpected),
    ] {
        j.send_raw(WsMessage::Text(text.into())).await;
        assert_eq!(error_code(j.recv().await), code, "for {text}");
    }
    j.send_raw(WsMessage::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(
        error_code(j.recv().await),
        ErrorCode::Malformed,
        "a binary frame on a JSON stream"
    );
    // The stream still works.
    let snap = j.subscribe(9, 0, &[alice], None).await;
    assert_eq!(snap.contacts.len(), 1);

    // Binary garbage on a binary stream.
    let mut b = s.stream(&demo, Encoding::Binary).await;
    b.send_raw(WsMessage::Binary(vec![0x7f, 0x00].into())).await;
    assert_eq!(error_code(b.recv().await), ErrorCode::UnknownType);
    b.send_raw(WsMessage::Binary(vec![0x03, 0x01].into())).await;
    assert_eq!(error_code(b.recv().await), ErrorCode::Malformed);

    // Invalid UTF-8 in a text frame ends that stream with 1007.
    let mut u = s.stream(&demo, Encoding::Json).await;
    u.send_raw(WsMessage::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    )))
    .await;
    let (close, _) = u.until_close().await;
    assert_eq!(u16::from(close.expect("close frame").code), 1007);

    // An oversized frame ends that stream with 1009.
    let mut o = s.stream(&demo, Encoding::Binary).await;
    o.send_raw(WsMessage::Binary(vec![0u8; 100_000].into())).await;
    let (close, _) = o.until_close().await;
    let close = close.expect("close frame");
    assert_eq!(u16::from(close.code), 1009);
    assert!(
        close.reason.starts_with("limit.frame_too_large"),
        "{}",
        close.reason
    );

    // A wrong protocol version is refused at hello.
    let mut v = Stream::connect(s.addr, &demo, Encoding::Json).await.unwrap();
    v.send(&ClientFrame::Hello { version: 99 }).await;
    let (close, frames) = v.until_close().await;
    assert!(
        matches!(&frames[..], [ServerFrame::Error { error, .. }] if error.code == ErrorCode::VersionUnsupported),
        "{frames:?}"
    );
    assert!(close.is_some());
    // Something other than hello first.
    let mut f = Stream::connect(s.addr, &demo, Encoding::Json).await.unwrap();
    f.send(&ClientFrame::Unsubscribe { req: 1, sub: 0 }).await;
    let (_, frames) = f.until_close().await;
    assert!(matches!(&frames[..], [ServerFrame::Error { error, .. }] if error.code == ErrorCode::Unexpected));

    // Through all of that, the bystander stream and the server are fine.
    s.admin_ok(&[
        "account",
        "set-profile",
        "alice",
        "--signature",
        "still delivered",
    ]);
    assert_eq!(
        delta(bystander.recv().await, alice).1,
        vec![Field::Signature("still delivered".into())]
    );
}

#[tokio::test]
async fn another_accounts_key_reaches_nothing_of_this_account() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice = s.id_of(&demo, "alice").await;
    s.create_account("mallory");
    let mallory = s.key("mallory").await;
    let mut m = s.stream(&mallory, Encoding::Binary).await;
    m.send(&ClientFrame::Subscribe {
        req: 1,
        sub: 0,
        pins: vec![alice],
        resume: None,
    })
    .await;
    assert_eq!(error_code(m.recv().await), ErrorCode::PinNotContact);
    m.send(&ClientFrame::MarkRead {
        req: 2,
        contact: alice,
        up_to: MessageId(1000),
    })
    .await;
    // A stranger's mark-read is refused, as history is: it reaches nothing of the account.
    assert_eq!(error_code(m.recv().await), ErrorCode::MessageNotContact);
    // Mallory's mark-read did not touch demo's unread count from Alice.
    let alice_key = s.key("alice").await;
    let demo_id = s.id_of(&alice_key, "demo").await;
    send(&s, &alice_key, demo_id, "x", "for demo only").await;
    let page: pinchat_proto::http::HistoryPage =
        s.get(&demo, &format!("/v1/messages/{alice}")).await.unwrap();
    assert_eq!(page.unread, 1);
}

#[tokio::test]
async fn acknowledged_messages_survive_a_sigkill() {
    let mut s = Server::start().await;
    let alice_key = s.key("alice").await;
    let demo = s.key("demo").await;
    let demo_id = s.id_of(&alice_key, "demo").await;
    let alice = s.id_of(&demo, "alice").await;
    let mut a = s.stream(&alice_key, Encoding::Binary).await;
    // Pipeline 200 sends, then kill the server the moment the last acknowledgement arrives.
    for i in 0..200u32 {
        a.send(&ClientFrame::Send {
            req: i,
            to: demo_id,
            client_id: format!("k{i}"),
            text: format!("durable {i}"),
        })
        .await;
    }
    let mut acked = BTreeSet::new();
    while acked.len() < 200 {
        match a.recv().await {
            ServerFrame::Ack {
                result: Ack::Sent { id, .. },
                ..
            } => {
                acked.insert(id);
            }
            other => panic!("{other:?}"),
        }
    }
    s.kill();
    s.restart();
    let demo = s.key("demo").await;
    let mut stored = BTreeSet::new();
    let mut before: Option<MessageId> = None;
    loop {
        let q = before.map(|b| format!("&before={b}")).unwrap_or_default();
        let page: pinchat_proto::http::HistoryPage = s
            .get(&demo, &format!("/v1/messages/{alice}?limit=200{q}"))
            .await
            .unwrap();
        stored.extend(page.messages.iter().map(|m| m.id));
        before = page.messages.last().map(|m| m.id);
        if !page.more {
            assert_eq!(page.unread, 200);
            break;
        }
    }
    assert_eq!(stored, acked, "every acknowledged message is stored, once");
}

#[tokio::test]
async fn sigterm_closes_streams_with_a_reason_and_exits_cleanly() {
    let mut s = Server::start().await;
    let demo = s.key("demo").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let (close, _) = w.until_close().await;
    let close = close.expect("close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert!(
        close.reason.starts_with("server.shutting_down"),
        "{}",
        close.reason
    );
}

#[tokio::test]
async fn presence_follows_connections_with_a_grace_period() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let (alice, bob) = (s.id_of(&demo, "alice").await, s.id_of(&demo, "bob").await);
    let mut w = s.stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice, bob], None).await;
    let (alice_key, bob_key) = (s.key("alice").await, s.key("bob").await);

    let a = s.stream(&alice_key, Encoding::Binary).await;
    assert_eq!(
        delta(w.recv().await, alice).1,
        vec![Field::State(Presence::Online)]
    );
    let b = s.stream(&bob_key, Encoding::Binary).await;
    assert_eq!(delta(w.recv().await, bob).1, vec![Field::State(Presence::Idle)]);

    // Alice's client reconnects at once: her contacts never see her go offline. Bob leaves for good
    // after Alice's reconnect, so his going offline (after the grace period) is a barrier later than
    // hers would have been.
    drop(a);
    let mut a2 = s.stream(&alice_key, Encoding::Binary).await;
    drop(b);
    assert_eq!(
        delta(w.recv().await, bob).1,
        vec![Field::State(Presence::Offline)]
    );
    a2.send(&ClientFrame::SetPresence {
        req: 1,
        state: None,
        status: Some("back".into()),
    })
    .await;
    assert_eq!(
        a2.recv().await,
        ServerFrame::Ack {
            req: 1,
            result: Ack::Done
        }
    );
    assert_eq!(delta(w.recv().await, alice).1, vec![Field::Status("back".into())]);

    // When Alice really leaves, she goes offline after the grace period.
    drop(a2);
    assert_eq!(
        delta(w.recv().await, alice).1,
        vec![Field::State(Presence::Offline)]
    );
}

#[tokio::test]
async fn connection_and_frame_rate_limits() {
    let s =
        Server::start_with("[limits]\nmax_connections_per_account = 2\nstream_frames_per_second = 5\n").await;
    let demo = s.key("demo").await;
    let _a = s.stream(&demo, Encoding::Binary).await;
    let mut b = s.stream(&demo, Encoding::Binary).await;
    let mut c = Stream::connect(s.addr, &demo, Encoding::Binary).await.unwrap();
    c.send(&ClientFrame::Hello { version: 1 }).await;
    let (close, frames) = c.until_close().await;
    assert!(
        matches!(&frames[..], [ServerFrame::Error { error, .. }] if error.code == ErrorCode::TooManyConnections),
        "{frames:?}"
    );
    assert_eq!(u16::from(close.unwrap().code), 4429);
    // A flood of frames ends the flooding stream only.
    for i in 0..40 {
        b.send(&ClientFrame::SetPresence {
            req: i,
            state: None,
            status: None,
        })
        .await;
    }
    let (close, _) = b.until_close().await;
    assert!(close.unwrap().reason.starts_with("limit.rate"));
    let mut again = s.stream(&demo, Encoding::Binary).await;
    again
        .send(&ClientFrame::SetPresence {
            req: 1,
            state: None,
            status: None,
        })
        .await;
    assert_eq!(
        again.recv().await,
        ServerFrame::Ack {
            req: 1,
            result: Ack::Done
        }
    );
}

#[tokio::test]
async fn a_burst_is_delivered_exactly_once_even_when_a_stream_falls_behind() {
    let s = Server::start_with("[limits]\nstream_queue = 4\n").await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let alice = s.id_of(&demo, "alice").await;
    let demo_id = s.id_of(&alice_key, "demo").await;
    let mut w = s.stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice], None).await;
    const N: usize = 150;
    // Concurrent sends are committed in groups, so one commit carries many events for this stream: more
    // than its queue of four holds.
    let ids: Vec<String> = (0..N).map(|i| format!("b{i}")).collect();
    let sent = join_all(ids.iter().map(|id| send(&s, &alice_key, demo_id, id, "burst"))).await;
    let sent: BTreeSet<MessageId> = sent.iter().map(|r| r.id).collect();
    let mut got = Vec::new();
    let mut unread = 0;
    while unread < N as u32 || got.len() < N {
        match w.recv().await {
            ServerFrame::Message { message, .. } => got.push(message.id),
            ServerFrame::Delta { fields, .. } => {
                for f in fields {
                    if let Field::Unread(n) = f {
                        unread = n;
                    }
                }
            }
            ServerFrame::Snapshot(snap) => {
                assert!(!snap.full);
                got.extend(snap.messages.iter().map(|m| m.id));
                for c in snap.contacts {
                    for f in c.fields {
                        if let Field::Unread(n) = f {
                            unread = n;
                        }
                    }
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let unique: BTreeSet<MessageId> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no message delivered twice");
    assert_eq!(unique, sent, "every message delivered");
    let metrics = s.metrics_text().await;
    let resyncs = metrics
        .lines()
        .find(|l| l.starts_with("pinchat_stream_resyncs_total"))
        .unwrap()
        .to_owned();
    println!("{resyncs}");
}

/// The scale benchmark (`bench/run scale`, and `--tls`) on a handful of streams, so that it never rots. No
/// figure is checked: only that the streams were held and measured — over TLS too, each a real login,
/// WebSocket upgrade, `hello` and `welcome` through the server's own TLS stream.
#[tokio::test]
async fn scale_benchmark_smoke() {
    let bin = pinchat_tests::server_binary();
    for tls in [false, true] {
        let s = pinchat_bench::scale::run(bin, 20, std::time::Duration::from_millis(200), tls)
            .await
            .unwrap();
        assert_eq!(s.streams, 20, "{s:?}");
        if cfg!(target_os = "linux") {
            assert!(s.rss_kb > 0, "{s:?}");
        }
        assert!(s.connect_rate > 0.0, "{s:?}");
    }
}

/// The TLS benchmark (`bench/run tls`) on a little data, so that it never rots: both implementations moved
/// every byte (each side checks the counts and the clean close).
#[tokio::test]
async fn tls_benchmark_smoke() {
    let plan = pinchat_bench::tls::Plan {
        bulk_mb: 1,
        pushes: 200,
        pings: 50,
        rounds: 1,
    };
    let figures = pinchat_bench::tls::run(&plan).await.unwrap();
    for f in &figures {
        assert!(
            f.bulk_mb_per_s > 0.0 && f.pushes_per_s > 0.0 && f.pings_per_s > 0.0,
            "{f:?}"
        );
    }
}

/// The latency benchmark (`bench/run latency`) on a handful of connections and a low rate, so that it
/// never rots. No timing is checked: only that every message sent was delivered and measured, and that
/// presence changes reached the watchers.
#[tokio::test]
async fn latency_benchmark_smoke() {
    let bin = pinchat_tests::server_binary();
    let plan = pinchat_bench::latency::Plan {
        connections: 10,
        message_rates: vec![50],
        change_rates: vec![10],
        step: std::time::Duration::from_millis(400),
        db_dir: None,
    };
    let l = pinchat_bench::latency::run(bin, &plan).await.unwrap();
    let m = &l.messages[0];
    assert!(m.sent > 0 && m.delivered == m.sent, "{l:?}");
    assert!(m.p50_ms <= m.p99_ms && m.p99_ms <= m.max_ms, "{l:?}");
    assert!(l.fanout[0].received_events_per_sec > 0.0, "{l:?}");
}

#[tokio::test]
async fn a_new_stream_replaces_an_account_stream_silent_for_longer_than_a_keepalive() {
    // A client whose link died where the server could not see it (a frozen NAT) reconnects at once; the
    // server still holds its old, silent streams. The newcomer is not refused for them.
    let s = Server::start_with("keepalive_secs = 5\n[limits]\nmax_connections_per_account = 2\n").await;
    let demo = s.key("demo").await;
    let mut old = s.stream(&demo, Encoding::Binary).await;
    let mut alive = s.stream(&demo, Encoding::Binary).await;
    // The limit holds while both streams are alive…
    let mut refused = Stream::connect(s.addr, &demo, Encoding::Binary).await.unwrap();
    refused.send(&ClientFrame::Hello { version: 1 }).await;
    let (close, _) = refused.until_close().await;
    assert_eq!(u16::from(close.unwrap().code), 4429);
    // …then one keeps pinging and the other falls silent for more than 1.5 keepalive intervals (the
    // behaviour under test is about time passing, so the test lets it pass).
    let silent_for = std::time::Duration::from_millis(8_000);
    let start = tokio::time::Instant::now();
    while start.elapsed() < silent_for {
        alive.ping().await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let mut newcomer = s.stream(&demo, Encoding::Binary).await;
    newcomer.subscribe(1, 0, &[], None).await;
    let (close, _) = old.until_close().await;
    let close = close.unwrap();
    assert_eq!(u16::from(close.code), 4408, "{close:?}");
    assert!(close.reason.contains("replaced"), "{close:?}");
    // The stream that kept pinging is untouched.
    alive.ping().await;
    alive.subscribe(2, 0, &[], None).await;
}

#[tokio::test]
async fn a_roster_subscription_follows_every_contact_beyond_the_pin_limit_and_resumes() {
    let s = Server::start().await;
    let demo = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let list: pinchat_proto::http::ContactList = s.get(&demo, "/v1/contacts").await.unwrap();
    let everyone: BTreeSet<AccountId> = list.contacts.iter().map(|c| c.id).collect();
    assert!(
        everyone.len() > usize::from(list.max_pins),
        "the demo account has more contacts ({}) than a widget may pin ({})",
        everyone.len(),
        list.max_pins
    );
    let (alice, carol) = (s.id_of(&demo, "alice").await, s.id_of(&demo, "carol").await);
    let demo_id = s.id_of(&alice_key, "demo").await;

    // The whole contact list, every field, in one snapshot (pins would be refused with limit.pins).
    let mut roster = s.stream(&demo, Encoding::Json).await;
    let epoch = roster.epoch();
    roster
        .send(&ClientFrame::SubscribeRoster {
            req: 1,
            sub: 0,
            resume: None,
        })
        .await;
    let ServerFrame::Snapshot(snap) = roster.recv().await else {
        panic!("expected a snapshot")
    };
    assert!(snap.full);
    assert_eq!(
        snap.contacts.iter().map(|c| c.id).collect::<BTreeSet<_>>(),
        everyone
    );
    assert!(
        snap.contacts.iter().all(|c| c.fields.len() == 8),
        "{:?}",
        snap.contacts[0]
    );

    // Any contact's change and message reach it: Carol's signature, a message from Alice.
    s.admin_ok(&["account", "set-profile", "carol", "--signature", "on the roster"]);
    let (_, fields) = delta(roster.recv().await, carol);
    assert_eq!(fields, vec![Field::Signature("on the roster".into())]);
    let live = send(&s, &alice_key, demo_id, "r1", "to the whole list").await;
    let (_, got) = message(roster.recv().await);
    assert_eq!(got.id, live.id);
    let (cursor, _) = delta(roster.recv().await, alice);
    drop(roster);

    // Away, then back with the cursor: exactly what was missed, for any contact.
    let missed = send(&s, &alice_key, demo_id, "r2", "while away").await;
    s.admin_ok(&[
        "account",
        "set-profile",
        "carol",
        "--signature",
        "changed while away",
    ]);
    let mut roster = s.stream(&demo, Encoding::Binary).await;
    roster
        .send(&ClientFrame::SubscribeRoster {
            req: 2,
            sub: 1,
            resume: Some(Resume {
                epoch,
                cursor,
                // A contact that is not (or no longer) on the list is left out, not refused.
                fresh: vec![AccountId(999_999)],
            }),
        })
        .await;
    let ServerFrame::Snapshot(snap) = roster.recv().await else {
        panic!("expected a snapshot")
    };
    assert!(!snap.full, "a fresh cursor resumes");
    assert_eq!(snap.sub, 1);
    assert_eq!(
        snap.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![missed.id]
    );
    let mut changed: Vec<AccountId> = snap.contacts.iter().map(|c| c.id).collect();
    changed.sort();
    let mut expected = vec![alice, carol];
    expected.sort();
    assert_eq!(
        changed, expected,
        "only the contacts that changed: {:?}",
        snap.contacts
    );

    // A roster subscription counts against the stream's subscriptions like any other.
    roster
        .send(&ClientFrame::SubscribeRoster {
            req: 3,
            sub: 200,
            resume: None,
        })
        .await;
    assert_eq!(error_code(roster.recv().await), ErrorCode::TooManySubscriptions);
}
