//! The XMPP gateway against a real Prosody on loopback: linking (and its errors), an XMPP roster's
//! contacts pinned in a widget — presence and messages of the pinned ones only — messages both ways,
//! roster pushes, unlinking, and the XMPP server restarting mid-conversation with nothing lost or
//! duplicated.
#![cfg(target_os = "linux")]

use futures_util::StreamExt;
use pinchat_proto::http::{ContactList, HistoryPage, XmppLinkRequest, XmppLinkStatus, XmppState};
use pinchat_proto::stream::ServerFrame;
use pinchat_proto::{AccountId, Encoding, ErrorCode, Field, Presence};
use pinchat_tests::prosody::{Prosody, contact};
use pinchat_tests::{CountingProxy, DEADLINE, Server, StatusCode, delta};
use std::collections::HashMap;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence as XmppPresence, Show};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

/// The gateway key of the test servers (32 bytes, base64).
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A server with the gateway on, trusting `prosody`'s certificate (and nothing else of the system's).
async fn server(prosody: &Prosody) -> Server {
    Server::start_in_sqlite_with(
        &format!("gateway_key = {KEY:?}\n"),
        &[("SSL_CERT_FILE", prosody.certificate().as_os_str())],
    )
    .await
}

fn link_request(prosody: &Prosody, password: &str) -> XmppLinkRequest {
    XmppLinkRequest {
        jid: format!("owner@{}", Prosody::DOMAIN),
        password: password.into(),
        server: Some(prosody.address()),
    }
}

async fn link(s: &Server, key: &str, prosody: &Prosody) -> XmppLinkStatus {
    s.call(
        reqwest::Method::PUT,
        key,
        "/v1/xmpp",
        &link_request(prosody, Prosody::PASSWORD),
    )
    .await
    .unwrap_or_else(|e| panic!("linking failed: {e:?}\nserver log:\n{}", s.log()))
}

/// The XMPP contacts among `key`'s contacts, by JID.
async fn xmpp_contacts(s: &Server, key: &str) -> HashMap<String, AccountId> {
    let list: ContactList = s.get(key, "/v1/contacts").await.unwrap();
    list.contacts
        .into_iter()
        .filter_map(|c| {
            let jid = c.login.strip_prefix("xmpp:")?.split('#').next()?.to_owned();
            Some((jid, c.id))
        })
        .collect()
}

fn jid(user: &str) -> String {
    format!("{user}@{}", Prosody::DOMAIN)
}

/// An XMPP client standing for one of the contacts (plain TCP to the loopback Prosody), online.
async fn peer(prosody: &Prosody, user: &str) -> Client {
    let mut c = Client::new_plaintext(
        BareJid::new(&jid(user)).unwrap(),
        Prosody::PASSWORD,
        DnsConfig::addr(&prosody.address()),
        Timeouts::tight(),
    );
    loop {
        match tokio::time::timeout(DEADLINE, c.next()).await {
            Ok(Some(Event::Online { .. })) => return c,
            Ok(Some(_)) => {}
            other => panic!(
                "{user} did not come online: {other:?}\nprosody log:\n{}",
                prosody.log()
            ),
        }
    }
}

async fn announce(c: &mut Client, show: Option<Show>, status: &str) {
    let mut p = XmppPresence::available();
    p.show = show;
    if !status.is_empty() {
        p.set_status("", status);
    }
    c.send_stanza(p.into()).await.unwrap();
}

async fn say(c: &mut Client, to: &str, id: &str, text: &str) {
    let mut m = Message::new(Some(Jid::new(to).unwrap())).with_body(Lang::from(""), text.into());
    m.type_ = MessageType::Chat;
    m.id = Some(tokio_xmpp::parsers::message::Id(id.into()));
    c.send_stanza(m.into()).await.unwrap();
}

/// The next message body `c` receives.
async fn heard(c: &mut Client) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, c.next()).await {
            Ok(Some(Event::Stanza(Stanza::Message(m)))) => {
                if let Some(body) = m.bodies.values().next() {
                    return body.clone();
                }
            }
            Ok(Some(_)) => {}
            other => panic!("no message arrived: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_linked_roster_reaches_a_widget_only_through_its_pins() {
    let prosody = Prosody::start(200).unwrap();
    let s = server(&prosody).await;
    let demo = s.key("demo").await;
    let status = link(&s, &demo, &prosody).await;
    assert_eq!(status.state, XmppState::Online, "{status:?}");
    assert_eq!(status.contacts, 200);
    let got: XmppLinkStatus = s.get(&demo, "/v1/xmpp").await.unwrap();
    assert_eq!(got.jid, jid("owner"));

    // All 200 roster items are contacts, marked as XMPP ones, named as in the roster.
    let contacts = xmpp_contacts(&s, &demo).await;
    assert_eq!(contacts.len(), 200);
    let (c0, c1, c2, c150) = (
        contacts[&jid(&contact(0))],
        contacts[&jid(&contact(1))],
        contacts[&jid(&contact(2))],
        contacts[&jid(&contact(150))],
    );
    // Nobody else sees them: another account's contacts are unchanged.
    let alice = s.key("alice").await;
    assert!(xmpp_contacts(&s, &alice).await.is_empty());

    // A widget pins three of the 200, behind a byte counter; a second widget pins one unpinned contact
    // and witnesses when its changes have passed.
    let proxy = CountingProxy::start(s.addr).await.unwrap();
    let mut widget = s.stream_at(proxy.addr, &demo, Encoding::Binary).await;
    let snap = widget.subscribe(1, 0, &[c0, c1, c2], None).await;
    assert_eq!(snap.contacts.len(), 3);
    let mut witness = s.stream(&demo, Encoding::Binary).await;
    witness.subscribe(1, 0, &[c150], None).await;

    // A pinned contact comes online on XMPP: the widget hears it as a changed state.
    let mut p0 = peer(&prosody, &contact(0)).await;
    announce(&mut p0, None, "").await;
    let (_, fields) = delta(widget.recv().await, c0);
    assert!(fields.contains(&Field::State(Presence::Online)), "{fields:?}");

    // An unpinned one comes online and goes do-not-disturb: the witness hears it, the widget nothing.
    let before = proxy.bytes_down();
    let mut p150 = peer(&prosody, &contact(150)).await;
    announce(&mut p150, Some(Show::Dnd), "in a meeting").await;
    loop {
        let (_, fields) = delta(witness.recv().await, c150);
        if fields.contains(&Field::State(Presence::DoNotDisturb)) {
            break;
        }
    }
    // The widget's next frame is about the pinned contact's change, so nothing about contact 150
    // reached it in between.
    announce(&mut p0, Some(Show::Away), "back soon").await;
    let mut seen = vec![];
    while !(seen.contains(&Field::State(Presence::Idle)) && seen.contains(&Field::Status("back soon".into())))
    {
        // `delta` fails on a frame about anyone but contact 0.
        seen.extend(delta(widget.recv().await, c0).1);
    }
    let bytes = proxy.bytes_down() - before;
    println!("the widget received {bytes} bytes while an unpinned and a pinned contact changed state");
    assert!(
        bytes < 200,
        "{bytes} bytes reached the widget for one pinned change"
    );

    // An avatar (XEP-0153): a pinned contact publishes a vCard with a photo and advertises its hash in
    // its presence; the widget gets the avatar's hash, and the image is served like any avatar.
    let demo_contacts: ContactList = s.get(&demo, "/v1/contacts").await.unwrap();
    let hash = demo_contacts
        .contacts
        .iter()
        .find_map(|c| c.avatar.clone())
        .expect("a demo contact with an avatar");
    let png = s.avatar_bytes(&demo, &hash).await;
    let mut p1 = peer(&prosody, &contact(1)).await;
    let vcard = format!(
        "<iq xmlns='jabber:client' type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{}</BINVAL></PHOTO></vCard></iq>",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &png)
    );
    let element: tokio_xmpp::minidom::Element = vcard.parse().unwrap();
    p1.send_stanza(tokio_xmpp::parsers::iq::Iq::try_from(element).unwrap().into())
        .await
        .unwrap();
    let update: tokio_xmpp::minidom::Element =
        "<x xmlns='vcard-temp:x:update'><photo>0123456789abcdef0123456789abcdef01234567</photo></x>"
            .parse()
            .unwrap();
    p1.send_stanza(XmppPresence::available().with_payloads(vec![update]).into())
        .await
        .unwrap();
    changes_until(&mut widget, c1, &[Field::Avatar(Some(hash.clone()))]).await;

    // A message from a pinned XMPP contact reaches the widget.
    say(&mut p0, &jid("owner"), "m-in-1", "hello from XMPP").await;
    let m = next_message(&mut widget).await;
    assert_eq!((m.from, m.text.as_str()), (c0, "hello from XMPP"));
    // A reply from the widget's account reaches the XMPP contact.
    s.send_text(&demo, c0, "r1", "hello from pinchat").await;
    assert_eq!(heard(&mut p0).await, "hello from pinchat");

    // An unpinned contact's message: the witness is not pinning it either, so history shows it arrived
    // and the widget heard nothing of it before the pinned contact's next message.
    say(&mut p150, &jid("owner"), "m-150", "unpinned words").await;
    say(&mut p0, &jid("owner"), "m-in-2", "second from XMPP").await;
    let m = next_message(&mut widget).await;
    assert_eq!((m.from, m.text.as_str()), (c0, "second from XMPP"));
    let history: HistoryPage = s.get(&demo, &format!("/v1/messages/{}", c150.0)).await.unwrap();
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].text, "unpinned words");

    // The owner's other XMPP client removes a pinned contact from the roster: it stays a contact, and
    // the widget shows it offline, saying why.
    let mut other = peer(&prosody, "owner").await;
    let remove = format!(
        "<iq xmlns='jabber:client' type='set' id='rm1'><query xmlns='jabber:iq:roster'><item jid='{}' subscription='remove'/></query></iq>",
        jid(&contact(2))
    );
    let element: tokio_xmpp::minidom::Element = remove.parse().unwrap();
    other
        .send_stanza(tokio_xmpp::parsers::iq::Iq::try_from(element).unwrap().into())
        .await
        .unwrap();
    changes_until(
        &mut widget,
        c2,
        &[Field::Status("no longer in your XMPP roster".into())],
    )
    .await;

    // Carbons: what the account's other XMPP client exchanges with a pinned contact shows here too — a
    // message to that client's own resource, and one it sent (which is not forwarded a second time).
    announce(&mut other, None, "").await;
    let other_jid = other.bound_jid().unwrap().to_string();
    say(&mut p0, &other_jid, "to-other", "to your other client").await;
    let m = next_message(&mut widget).await;
    assert_eq!((m.from, m.text.as_str()), (c0, "to your other client"));
    say(&mut other, &jid(&contact(0)), "from-other", "from my phone").await;
    assert_eq!(heard(&mut p0).await, "from my phone");
    // Prosody queued the carbon to the gateway before the contact even heard the message, so once the
    // contact's answer reaches the widget the gateway (one task, in order) has stored the carbon.
    say(&mut p0, &jid("owner"), "got-it", "got it").await;
    assert_eq!(next_message(&mut widget).await.text, "got it");
    s.send_text(&demo, c0, "r2", "and from pinchat").await;
    assert_eq!(heard(&mut p0).await, "and from pinchat", "nothing was sent twice");
    let history: HistoryPage = s.get(&demo, &format!("/v1/messages/{}", c0.0)).await.unwrap();
    let mut mine: Vec<&str> = history
        .messages
        .iter()
        .filter(|m| m.to == c0)
        .map(|m| m.text.as_str())
        .collect();
    mine.sort();
    assert_eq!(mine, ["and from pinchat", "from my phone", "hello from pinchat"]);

    // Unlinking closes the session and deletes the credential; the contacts stay, offline, saying so.
    let r = s
        .http
        .delete(s.url("/v1/xmpp"))
        .bearer_auth(&demo)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    changes_until(&mut widget, c0, &[Field::State(Presence::Offline)]).await;
    let e = s.get::<XmppLinkStatus>(&demo, "/v1/xmpp").await.unwrap_err();
    assert_eq!(e.1.code, ErrorCode::XmppNotLinked);
    assert_eq!(
        xmpp_contacts(&s, &demo).await.len(),
        200,
        "the contacts and their history stay"
    );
    assert!(
        !String::from_utf8_lossy(&s.stored_bytes()).contains(Prosody::PASSWORD),
        "the XMPP password is not stored in clear"
    );
}

/// Reads a widget's changes until all of `want` were seen about `contact` (skipping its other pins').
async fn changes_until(widget: &mut pinchat_tests::Stream, contact: AccountId, want: &[Field]) {
    let mut seen = vec![];
    while !want.iter().all(|f| seen.contains(f)) {
        match widget.recv().await {
            ServerFrame::Delta {
                contact: c, fields, ..
            } if c == contact => seen.extend(fields),
            ServerFrame::Delta { .. } => {}
            other => panic!("expected changes of {contact}, got {other:?}"),
        }
    }
}

/// The next message a widget receives, skipping changed fields (unread counts, presence).
async fn next_message(widget: &mut pinchat_tests::Stream) -> pinchat_proto::Message {
    loop {
        match widget.recv().await {
            ServerFrame::Message { message, .. } => return message,
            ServerFrame::Delta { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A Prosody of `contacts` contacts, the demo account linked to its owner, a widget pinning contact 0,
/// and contact 0's XMPP client online.
struct Linked {
    prosody: Prosody,
    s: Server,
    demo: String,
    c0: AccountId,
    widget: pinchat_tests::Stream,
    p0: Client,
}

impl Linked {
    async fn start(contacts: usize) -> Linked {
        let prosody = Prosody::start(contacts).unwrap();
        let s = server(&prosody).await;
        let demo = s.key("demo").await;
        assert_eq!(link(&s, &demo, &prosody).await.state, XmppState::Online);
        let c0 = xmpp_contacts(&s, &demo).await[&jid(&contact(0))];
        let mut widget = s.stream(&demo, Encoding::Binary).await;
        widget.subscribe(1, 0, &[c0], None).await;
        let mut p0 = peer(&prosody, &contact(0)).await;
        announce(&mut p0, None, "").await;
        Linked {
            prosody,
            s,
            demo,
            c0,
            widget,
            p0,
        }
    }
}

#[tokio::test]
async fn the_xmpp_server_restarting_mid_conversation_loses_and_duplicates_nothing() {
    let Linked {
        mut prosody,
        s,
        demo,
        c0,
        mut widget,
        mut p0,
    } = Linked::start(3).await;

    // Before: one message each way.
    say(&mut p0, &jid("owner"), "in-1", "in 1").await;
    s.send_text(&demo, c0, "out-1", "out 1").await;
    assert_eq!(heard(&mut p0).await, "out 1");
    let mut inbound = vec![next_message(&mut widget).await.text];

    // The XMPP server goes down; the owner writes meanwhile (stored, waiting for the XMPP server).
    prosody.stop();
    // The widget shows the contact offline, saying why; the link says so too.
    changes_until(
        &mut widget,
        c0,
        &[
            Field::State(Presence::Offline),
            Field::Status(format!("XMPP: cannot reach {}, retrying", Prosody::DOMAIN)),
        ],
    )
    .await;
    let link: XmppLinkStatus = s.get(&demo, "/v1/xmpp").await.unwrap();
    assert_eq!(link.state, XmppState::Unreachable, "{link:?}");
    assert!(
        link.error
            .as_deref()
            .is_some_and(|e| e.contains("onnection refused")),
        "{link:?}"
    );
    s.send_text(&demo, c0, "out-2", "out 2").await;
    s.send_text(&demo, c0, "out-3", "out 3").await;
    prosody.start_again().unwrap();
    // The contact's client reconnects by itself and writes; the gateway reconnects and delivers both
    // ways.
    let mut p0 = peer(&prosody, &contact(0)).await;
    announce(&mut p0, None, "").await;
    say(&mut p0, &jid("owner"), "in-2", "in 2").await;
    let mut outbound = vec!["out 1".to_owned()];
    while outbound.len() < 3 {
        outbound.push(heard(&mut p0).await);
    }
    inbound.push(next_message(&mut widget).await.text);
    // A last message each way marks the end: anything sent twice would have arrived before it.
    say(&mut p0, &jid("owner"), "in-3", "in 3").await;
    s.send_text(&demo, c0, "out-4", "out 4").await;
    outbound.push(heard(&mut p0).await);
    inbound.push(next_message(&mut widget).await.text);
    assert_eq!(outbound, ["out 1", "out 2", "out 3", "out 4"]);
    assert_eq!(inbound, ["in 1", "in 2", "in 3"]);
    let history: HistoryPage = s.get(&demo, &format!("/v1/messages/{}", c0.0)).await.unwrap();
    let mut texts: Vec<String> = history.messages.iter().map(|m| m.text.clone()).collect();
    texts.sort();
    assert_eq!(
        texts,
        ["in 1", "in 2", "in 3", "out 1", "out 2", "out 3", "out 4"],
        "each message is stored once"
    );
}

#[tokio::test]
async fn what_another_client_received_while_the_gateway_was_away_comes_from_the_archive() {
    let Linked {
        prosody,
        mut s,
        demo,
        c0,
        mut widget,
        mut p0,
    } = Linked::start(2).await;
    say(&mut p0, &jid("owner"), "live-1", "live 1").await;
    assert_eq!(next_message(&mut widget).await.text, "live 1");
    // The account's other client comes online.
    let mut other = peer(&prosody, "owner").await;
    announce(&mut other, None, "").await;

    // The pinchat server stops. The contact writes; the other client gets it (so the XMPP server
    // stores nothing offline), and the archive keeps it.
    drop(widget);
    s.terminate();
    say(&mut p0, &jid("owner"), "away-1", "while away 1").await;
    say(&mut p0, &jid("owner"), "away-2", "while away 2").await;
    assert_eq!(heard(&mut other).await, "while away 1");
    assert_eq!(heard(&mut other).await, "while away 2");

    // Back: the gateway fetches them from the archive, and a widget gets them (as unread hints in its
    // snapshot, or pushed once stored).
    s.restart();
    let mut widget = s.stream(&demo, Encoding::Binary).await;
    let snap = widget.subscribe(1, 0, &[c0], None).await;
    let mut texts: Vec<String> = snap.messages.into_iter().map(|m| m.text).collect();
    while !(texts.iter().any(|t| t == "while away 1") && texts.iter().any(|t| t == "while away 2")) {
        texts.push(next_message(&mut widget).await.text);
    }
    let history: HistoryPage = s.get(&demo, &format!("/v1/messages/{}", c0.0)).await.unwrap();
    let mut stored: Vec<&str> = history.messages.iter().map(|m| m.text.as_str()).collect();
    stored.sort();
    assert_eq!(
        stored,
        ["live 1", "while away 1", "while away 2"],
        "each stored once"
    );
}

/// The demo account of `s` links the owner's XMPP account with the right password; the link must fail.
async fn refused_link(s: &Server, prosody: &Prosody) -> (StatusCode, pinchat_proto::ErrorBody) {
    let key = s.key("demo").await;
    s.call::<_, XmppLinkStatus>(
        reqwest::Method::PUT,
        &key,
        "/v1/xmpp",
        &link_request(prosody, Prosody::PASSWORD),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn linking_errors_are_clear_and_store_nothing() {
    let mut prosody = Prosody::start(1).unwrap();
    let s = server(&prosody).await;
    let demo = s.key("demo").await;
    let put = |req: XmppLinkRequest| {
        let (s, demo) = (&s, demo.clone());
        async move {
            s.call::<_, XmppLinkStatus>(reqwest::Method::PUT, &demo, "/v1/xmpp", &req)
                .await
                .unwrap_err()
        }
    };

    // A wrong password.
    let (status, e) = put(link_request(&prosody, "wrong password")).await;
    assert_eq!(
        (status, &e.code),
        (StatusCode::UNPROCESSABLE_ENTITY, &ErrorCode::XmppAuthFailed)
    );
    assert!(
        e.message.contains("refused the password of owner@localhost"),
        "{}",
        e.message
    );
    // Not a JID, an empty password, a server that is not host:port.
    let mut bad = link_request(&prosody, Prosody::PASSWORD);
    bad.jid = "not a jid".into();
    assert_eq!(put(bad).await.1.code, ErrorCode::InvalidRequest);
    assert_eq!(
        put(link_request(&prosody, "")).await.1.code,
        ErrorCode::InvalidRequest
    );
    let mut bad = link_request(&prosody, Prosody::PASSWORD);
    bad.server = Some("no-port".into());
    assert_eq!(put(bad).await.1.code, ErrorCode::InvalidRequest);
    // Nothing was linked by any of these.
    let e = s.get::<XmppLinkStatus>(&demo, "/v1/xmpp").await.unwrap_err();
    assert_eq!(e.1.code, ErrorCode::XmppNotLinked);

    // The XMPP server is down.
    prosody.stop();
    let (status, e) = put(link_request(&prosody, Prosody::PASSWORD)).await;
    assert_eq!(
        (status, &e.code),
        (StatusCode::BAD_GATEWAY, &ErrorCode::XmppUnreachable)
    );
    assert!(
        e.message
            .contains("cannot reach the XMPP server of owner@localhost"),
        "{}",
        e.message
    );

    // A server that does not trust the XMPP server's certificate says so.
    prosody.start_again().unwrap();
    let untrusting = Server::start_in_sqlite_with(&format!("gateway_key = {KEY:?}\n"), &[]).await;
    let (status, e) = refused_link(&untrusting, &prosody).await;
    assert_eq!(
        (status, &e.code),
        (StatusCode::BAD_GATEWAY, &ErrorCode::XmppUnreachable)
    );
    assert!(e.message.to_lowercase().contains("certificate"), "{}", e.message);

    // A server without a gateway key has no gateway.
    let plain = Server::start_in_sqlite().await;
    let (status, e) = refused_link(&plain, &prosody).await;
    assert_eq!(
        (status, &e.code),
        (StatusCode::NOT_IMPLEMENTED, &ErrorCode::XmppUnavailable)
    );

    // The password reached neither the logs nor the database in clear.
    for log in [s.log(), untrusting.log()] {
        assert!(!log.contains(Prosody::PASSWORD) && !log.contains("wrong password"));
    }
    assert!(!String::from_utf8_lossy(&s.stored_bytes()).contains(Prosody::PASSWORD));
}

/// The traffic benchmark's gateway configuration (`bench/run traffic --gateway`) on a small schedule, so
/// that it never rots: every message of the pinned contacts went from an XMPP client through Prosody
/// and the gateway to the widget, and the pinned contacts' state changes reached it.
#[tokio::test]
async fn gateway_traffic_benchmark_smoke() {
    let schedule = pinchat_bench::schedule::Schedule::generate(20, 3, 60.0, 10.0, 5.0, 1);
    let m = pinchat_bench::gateway::run(pinchat_tests::server_binary(), &schedule, 20.0)
        .await
        .unwrap();
    assert_eq!(m.messages, schedule.messages() as u64, "{m:?}");
    assert!(m.presence_events > 0 && m.run_bytes > 0, "{m:?}");
}
