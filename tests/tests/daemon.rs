//! The daemon, end to end: the real server, the real `pinchatd` process, the real local socket and the
//! session's real Secret Service, driven through the IPC client — the patent's whole flow, crashes,
//! outages, revocation, several widgets, modes, security and bad input.

use pinchat_ipc::ClientError;
use pinchat_ipc::api::*;
use pinchat_proto::http::SendRequest;
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_proto::{Encoding, Field, Presence};
use pinchat_tests::{Daemon, Server, create_widget as create, until};
use std::collections::BTreeSet;

/// The next change of `contact`'s fields, skipping the full entries (all eight fields) that a re-pin
/// delivers for a newly pinned contact.
async fn next_change(events: &mut tokio::sync::mpsc::Receiver<Notification>, contact: u64) -> Vec<Field> {
    until(events, |n| match n {
        Notification::ContactChanged {
            contact: c, fields, ..
        } if *c == contact && fields.len() < 8 => Some(fields.clone()),
        _ => None,
    })
    .await
}

fn code(e: ClientError) -> String {
    e.code()
        .unwrap_or_else(|| panic!("not an API error: {e}"))
        .to_owned()
}

/// Id of a contact by login in a contact list.
fn id_in(contacts: &[ContactIdentity], login: &str) -> u64 {
    contacts.iter().find(|c| c.login == login).unwrap().id
}

#[tokio::test]
async fn the_patent_flow_through_the_local_api() {
    let s = Server::start().await;
    let d = Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();

    // Login → the full contact list for selection.
    let created = create(&client, &s, "demo").await;
    assert_eq!(created.contacts.len(), 30);
    assert_eq!(created.max_pins, 20);
    let w = created.widget.id.clone();
    let (alice, bob) = (id_in(&created.contacts, "alice"), id_in(&created.contacts, "bob"));

    // Pin two contacts → the widget shows them, filled from the server.
    let view = client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![alice, bob],
        })
        .await
        .unwrap();
    assert_eq!(
        view.pins.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![alice, bob]
    );
    // A refresh round trip comes back after the re-pin's snapshot: the widget is in sync.
    let view = client
        .call::<Refresh>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    assert!(!view.stale);
    assert_eq!(view.pins[0].name, "Alice Chen");
    assert_eq!(view.pins[0].state, Presence::Offline);

    // Alice comes online (her own client connects): only the changed field arrives.
    let alice_key = s.key("alice").await;
    let mut alice_stream = s.stream(&alice_key, Encoding::Binary).await;
    let demo_id = view.account.id;
    alice_stream
        .subscribe(1, 0, &[pinchat_proto::AccountId(demo_id)], None)
        .await;
    let fields = next_change(&mut events, alice).await;
    assert_eq!(fields, vec![Field::State(Presence::Online)]);

    // Alice writes → a message notification and the unread count.
    alice_stream
        .send(&ClientFrame::Send {
            req: 2,
            to: pinchat_proto::AccountId(demo_id),
            client_id: "a1".into(),
            text: "你好, are you there?".into(),
        })
        .await;
    let msg = until(&mut events, |n| match n {
        Notification::MessageReceived { message, .. } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!((msg.from, msg.text.as_str()), (alice, "你好, are you there?"));
    let (unread, total) = until(&mut events, |n| match n {
        Notification::UnreadChanged {
            contact,
            unread,
            total,
            ..
        } if *contact == alice => Some((*unread, *total)),
        _ => None,
    })
    .await;
    assert_eq!((unread, total), (1, 1));

    // Unread details, then history.
    let details = client
        .call::<Unread>(UnreadParams::from(ContactRef {
            widget: w.clone(),
            contact: alice,
        }))
        .await
        .unwrap();
    assert_eq!(details.iter().map(|m| m.id).collect::<Vec<_>>(), vec![msg.id]);
    let history = client
        .call::<History>(HistoryParams {
            widget: w.clone(),
            contact: alice,
            before: None,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(history.messages[0].id, msg.id);

    // Reply: queued, then sent; Alice receives it.
    let sent = client
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: alice,
            text: "Yes! 在的".into(),
        })
        .await
        .unwrap();
    assert_eq!(sent.state, Delivery::Queued);
    let delivered = until(&mut events, |n| match n {
        Notification::MessageDelivery { message, .. }
            if message.client_id == sent.client_id && message.state == Delivery::Sent =>
        {
            Some(message.clone())
        }
        _ => None,
    })
    .await;
    loop {
        match alice_stream.recv().await {
            ServerFrame::Message { message, .. } => {
                assert_eq!((message.id.0, message.text.as_str()), (delivered.id, "Yes! 在的"));
                break;
            }
            _ => continue,
        }
    }

    // Mark read: the count drops to zero; Alice's widget gets the read receipt.
    let r = client
        .call::<MarkRead>(MarkReadParams {
            widget: w.clone(),
            contact: alice,
            up_to: None,
        })
        .await
        .unwrap();
    assert_eq!(r.unread, 0);
    let view = client
        .call::<Snapshot>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    assert_eq!(view.pins[0].unread, 0);
    loop {
        if let ServerFrame::Delta { fields, .. } = alice_stream.recv().await
            && fields
                .iter()
                .any(|f| matches!(f, Field::PeerRead(id) if id.0 == msg.id))
        {
            break;
        }
    }

    // The key is stored only encrypted: neither the database nor the log contains it.
    let db_path = d.data_dir().join("widgets").join(format!("{w}.db"));
    let mut disk = std::fs::read(&db_path).unwrap();
    disk.extend(std::fs::read(format!("{}-wal", db_path.display())).unwrap_or_default());
    assert!(
        !disk.windows(5).any(|x| x == b"pck1_"),
        "an auth key is on disk in clear"
    );
    assert!(!d.log().contains("pck1_"), "an auth key is in the daemon log");
    assert!(!d.log().contains("demo\""), "the password looks logged");
}

#[tokio::test]
async fn a_sigkill_during_a_burst_loses_and_duplicates_nothing() {
    let s = Server::start().await;
    let mut d = Daemon::start();
    let client = d.client().await;
    let created = create(&client, &s, "demo").await;
    let w = created.widget.id.clone();
    let alice = id_in(&created.contacts, "alice");
    client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![alice],
        })
        .await
        .unwrap();
    let alice_key = s.key("alice").await;
    let demo_id = created.widget.account.id;

    // A burst of 150 messages; the daemon is killed while they pour in.
    let burst = {
        let http = s.http.clone();
        let url = s.url("/v1/messages");
        let key = alice_key.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                let body = SendRequest {
                    to: pinchat_proto::AccountId(demo_id),
                    client_id: format!("burst{i}"),
                    text: format!("burst {i}"),
                };
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        })
    };
    let mut watcher = d.client().await;
    let mut events = watcher.notifications().unwrap();
    watcher
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    until(&mut events, |n| {
        matches!(n, Notification::MessageReceived { .. }).then_some(())
    })
    .await;
    drop(watcher);
    drop(client);
    d.kill();
    burst.await.unwrap();

    // On restart the widget is served at once from its database, marked stale…
    d.restart();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let first = client
        .call::<Snapshot>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    assert_eq!(first.pins.len(), 1);
    // …then resumes from its cursor and converges on the server's truth.
    let server_page: pinchat_proto::http::HistoryPage = s
        .get(&s.key("demo").await, &format!("/v1/messages/{alice}?limit=200"))
        .await
        .unwrap();
    assert_eq!(server_page.unread, 150);
    let mut view = client
        .call::<Snapshot>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    while view.stale || view.pins[0].unread != 150 {
        until(&mut events, |n| {
            matches!(
                n,
                Notification::UnreadChanged { .. }
                    | Notification::WidgetChanged { .. }
                    | Notification::ConnectionChanged { .. }
            )
            .then_some(())
        })
        .await;
        view = client
            .call::<Snapshot>(WidgetRef { widget: w.clone() })
            .await
            .unwrap();
    }
    let details = client
        .call::<Unread>(UnreadParams::from(ContactRef {
            widget: w.clone(),
            contact: alice,
        }))
        .await
        .unwrap();
    let ids: Vec<u64> = details.iter().map(|m| m.id).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no duplicates");
    let server_ids: BTreeSet<u64> = server_page.messages.iter().map(|m| m.id.0).collect();
    assert_eq!(unique, server_ids, "every message, as on the server");
}

#[tokio::test]
async fn server_restart_is_survived_and_the_offline_outbox_is_sent_once() {
    let mut s = Server::start().await;
    let d = Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let created = create(&client, &s, "demo").await;
    let w = created.widget.id.clone();
    let alice = id_in(&created.contacts, "alice");
    client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![alice],
        })
        .await
        .unwrap();
    until(&mut events, |n| {
        matches!(
            n,
            Notification::ConnectionChanged {
                connection: Connection::Online,
                ..
            }
        )
        .then_some(())
    })
    .await;
    // A refresh round trip comes back after the re-pin's snapshot: Alice's first state is in, so what
    // the resume brings later is news about her, not her first state.
    client
        .call::<Refresh>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();

    s.kill();
    until(&mut events, |n| {
        matches!(
            n,
            Notification::ConnectionChanged {
                connection: Connection::Offline,
                ..
            }
        )
        .then_some(())
    })
    .await;
    // Typed while the server is down: queued, durably.
    let queued = client
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: alice,
            text: "sent while offline".into(),
        })
        .await
        .unwrap();
    assert_eq!(queued.state, Delivery::Queued);
    let history = client
        .call::<History>(HistoryParams {
            widget: w.clone(),
            contact: alice,
            before: None,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(history.messages[0].state, Delivery::Queued);
    // Changed while the widget cannot see it (the data is stale): the resume after the restart brings
    // just that field, as a live change would have.
    s.admin_ok(&[
        "account",
        "set-profile",
        "alice",
        "--signature",
        "while the server was down",
    ]);

    s.restart();
    client.call::<Refresh>(WidgetRef { widget: w.clone() }).await.ok();
    // Both come, in either order: the resumed change and the queued message sent.
    let (mut changed, mut sent) = (None, false);
    while changed.is_none() || !sent {
        match until(&mut events, |n| match n {
            Notification::ContactChanged { contact, fields, .. } if *contact == alice => {
                Some(Some(fields.clone()))
            }
            Notification::MessageDelivery { message, .. }
                if message.client_id == queued.client_id && message.state == Delivery::Sent =>
            {
                Some(None)
            }
            _ => None,
        })
        .await
        {
            Some(fields) => changed = Some(fields),
            None => sent = true,
        }
    }
    assert_eq!(
        changed.unwrap(),
        vec![Field::Signature("while the server was down".into())]
    );
    // Exactly once on the server, and live changes flow again.
    let page: pinchat_proto::http::HistoryPage = s
        .get(
            &s.key("alice").await,
            &format!("/v1/messages/{}", created.widget.account.id),
        )
        .await
        .unwrap();
    assert_eq!(
        page.messages
            .iter()
            .filter(|m| m.text == "sent while offline")
            .count(),
        1
    );
    s.admin_ok(&[
        "account",
        "set-profile",
        "alice",
        "--signature",
        "after the restart",
    ]);
    let fields = next_change(&mut events, alice).await;
    assert_eq!(fields, vec![Field::Signature("after the restart".into())]);
}

#[tokio::test]
async fn a_revoked_key_puts_only_that_widget_in_auth_required_and_reauth_recovers_it() {
    let s = Server::start().await;
    let d = Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let demo = create(&client, &s, "demo").await;
    let alice_w = create(&client, &s, "alice").await;
    let (wd, wa) = (demo.widget.id.clone(), alice_w.widget.id.clone());
    let bob_for_demo = id_in(&demo.contacts, "bob");
    let demo_for_alice = id_in(&alice_w.contacts, "demo");
    client
        .call::<SetPins>(SetPinsParams {
            widget: wd.clone(),
            pins: vec![bob_for_demo],
        })
        .await
        .unwrap();
    client
        .call::<SetPins>(SetPinsParams {
            widget: wa.clone(),
            pins: vec![demo_for_alice],
        })
        .await
        .unwrap();
    // Different accounts, different databases.
    assert_ne!(wd, wa);
    assert!(d.data_dir().join("widgets").join(format!("{wd}.db")).exists());
    assert!(d.data_dir().join("widgets").join(format!("{wa}.db")).exists());

    s.admin_ok(&["account", "revoke-keys", "demo"]);
    let who = until(&mut events, |n| match n {
        Notification::AuthRequired { widget, .. } => Some(widget.clone()),
        _ => None,
    })
    .await;
    assert_eq!(who, wd);
    // The other widget is unaffected and keeps receiving: Bob's change reaches nobody (only demo pins
    // him), demo's signature reaches Alice's widget.
    s.admin_ok(&["account", "set-profile", "demo", "--signature", "still here"]);
    let (widget, fields) = until(&mut events, |n| match n {
        Notification::ContactChanged { widget, fields, .. } if fields.len() < 8 => {
            Some((widget.clone(), fields.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(
        (widget.as_str(), fields),
        (wa.as_str(), vec![Field::Signature("still here".into())])
    );
    // The stale widget keeps its data and says what to do.
    let view = client
        .call::<Snapshot>(WidgetRef { widget: wd.clone() })
        .await
        .unwrap();
    assert_eq!(view.connection, Connection::AuthRequired);
    assert_eq!(view.pins.len(), 1);
    let e = client
        .call::<Refresh>(WidgetRef { widget: wd.clone() })
        .await
        .unwrap_err();
    assert_eq!(code(e), "auth.required");
    // A wrong password is refused; the right one recovers.
    let e = client
        .call::<Reauth>(ReauthParams {
            widget: wd.clone(),
            password: "wrong".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "auth.bad_credentials");
    client
        .call::<Reauth>(ReauthParams {
            widget: wd.clone(),
            password: "demo".into(),
        })
        .await
        .unwrap();
    until(&mut events, |n| match n {
        Notification::ConnectionChanged {
            widget,
            connection: Connection::Online,
            ..
        } if *widget == wd => Some(()),
        _ => None,
    })
    .await;
    // A second widget for the same account is refused.
    let e = client
        .call::<CreateWidget>(Login {
            server: format!("http://{}", s.addr),
            account: "alice".into(),
            password: "demo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.exists");
}

#[tokio::test]
async fn rebind_moves_a_widget_to_another_account_and_remove_wipes_it() {
    let s = Server::start().await;
    let d = Daemon::start();
    let client = d.client().await;
    let created = create(&client, &s, "demo").await;
    let w = created.widget.id.clone();
    client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![id_in(&created.contacts, "alice")],
        })
        .await
        .unwrap();
    let server = format!("http://{}", s.addr);

    let rebound = client
        .call::<RebindWidget>(Rebind {
            widget: w.clone(),
            login: Login {
                server: server.clone(),
                account: "bob".into(),
                password: "demo".into(),
            },
        })
        .await
        .unwrap();
    assert_eq!(rebound.widget.id, w, "same widget");
    assert_eq!(rebound.widget.account.login, "bob");
    assert!(rebound.widget.pins.is_empty(), "the old account's data is gone");
    // The old key was revoked on the server: demo has no live key left to revoke.
    assert!(
        s.admin_ok(&["account", "revoke-keys", "demo"])
            .contains("revoked 0 key(s)")
    );
    let list = client.call::<ListWidgets>(NoParams {}).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].login, "bob");

    // The widget's keyring entry exists (the sealing key of its auth key)…
    let lookup = |w: &str| {
        std::process::Command::new("secret-tool")
            .args(["lookup", "service", "pinchat", "username", w])
            .output()
            .map(|o| o.stdout.len())
    };
    if let Ok(len) = lookup(&w) {
        // secret-tool prints the raw secret: a 256-bit key (non-UTF-8 bytes may be printed escaped).
        assert!(
            len >= 32,
            "the sealing key is in the Secret Service ({len} bytes printed)"
        );
    }
    client
        .call::<RemoveWidget>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    // …and is gone after removal.
    if let Ok(len) = lookup(&w) {
        assert_eq!(len, 0, "the keyring entry is deleted");
    }
    assert!(client.call::<ListWidgets>(NoParams {}).await.unwrap().is_empty());
    assert!(
        !d.data_dir().join("widgets").join(format!("{w}.db")).exists(),
        "its database is deleted"
    );
    let e = client
        .call::<Snapshot>(WidgetRef { widget: w })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.not_found");
}

#[tokio::test]
async fn poll_and_manual_modes() {
    let s = Server::start().await;
    let d = Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let created = create(&client, &s, "demo").await;
    let w = created.widget.id.clone();
    let alice = id_in(&created.contacts, "alice");
    client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![alice],
        })
        .await
        .unwrap();
    // A refresh round trip comes back after the re-pin's snapshot: the widget is in sync.
    client
        .call::<Refresh>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();

    // Poll every 5 s: a change arrives by polling.
    let view = client
        .call::<SetMode>(SetModeParams {
            widget: w.clone(),
            mode: Mode::Poll,
            interval_secs: Some(5),
        })
        .await
        .unwrap();
    assert_eq!((view.mode, view.poll_interval_secs), (Mode::Poll, 5));
    s.admin_ok(&[
        "account",
        "set-profile",
        "alice",
        "--signature",
        "seen by polling",
    ]);
    let fields = next_change(&mut events, alice).await;
    assert_eq!(fields, vec![Field::Signature("seen by polling".into())]);

    // Manual: nothing changes until refresh.
    client
        .call::<SetMode>(SetModeParams {
            widget: w.clone(),
            mode: Mode::Manual,
            interval_secs: None,
        })
        .await
        .unwrap();
    s.admin_ok(&[
        "account",
        "set-profile",
        "alice",
        "--signature",
        "seen on refresh",
    ]);
    // The admin change is committed when the command returns; without a refresh the widget cannot know.
    let before = client
        .call::<Snapshot>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    assert_eq!(before.pins[0].signature, "seen by polling");
    let after = client
        .call::<Refresh>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();
    assert_eq!(after.pins[0].signature, "seen on refresh");
    assert_eq!(
        next_change(&mut events, alice).await,
        vec![Field::Signature("seen on refresh".into())]
    );
    // Bad intervals are refused.
    let e = client
        .call::<SetMode>(SetModeParams {
            widget: w.clone(),
            mode: Mode::Poll,
            interval_secs: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.invalid");
    // Back to push.
    client
        .call::<SetMode>(SetModeParams {
            widget: w.clone(),
            mode: Mode::Push,
            interval_secs: None,
        })
        .await
        .unwrap();
    s.admin_ok(&["account", "set-profile", "alice", "--signature", "pushed again"]);
    let fields = next_change(&mut events, alice).await;
    assert_eq!(fields, vec![Field::Signature("pushed again".into())]);
}

#[tokio::test]
async fn bad_requests_get_json_rpc_errors_and_the_daemon_is_unharmed() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let s = Server::start().await;
    let d = Daemon::start();
    let client = d.client().await;
    let created = create(&client, &s, "demo").await;

    let stream = pinchat_ipc::transport::connect(&d.socket).await.unwrap();
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    let mut ask = async |line: &[u8]| -> serde_json::Value {
        write.write_all(line).await.unwrap();
        write.write_all(b"\n").await.unwrap();
        let answer = tokio::time::timeout(pinchat_tests::DEADLINE, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    let code_of = |v: &serde_json::Value| v["error"]["data"]["code"].as_str().unwrap().to_owned();
    let unreadable = ask(b"{this is not json").await;
    assert_eq!(code_of(&unreadable), "rpc.parse_error");
    assert!(
        unreadable["id"].is_null(),
        "an unreadable line has no id to answer with: null"
    );
    // Parameters are named; positional ones (an array) are refused, `[]` means none.
    let v = ask(br#"{"jsonrpc":"2.0","id":9,"method":"widget.snapshot","params":["nope"]}"#).await;
    assert_eq!(
        (code_of(&v), v["id"].as_i64()),
        ("rpc.invalid_params".into(), Some(9))
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("named"), "{v}");
    let v = ask(br#"{"jsonrpc":"2.0","id":10,"method":"daemon.status","params":[]}"#).await;
    assert!(v["result"]["version"].is_string(), "{v}");
    assert_eq!(
        code_of(&ask(br#"{"jsonrpc":"2.0","id":1,"method":"widget.explode"}"#).await),
        "rpc.method_not_found"
    );
    let v = ask(br#"{"jsonrpc":"2.0","id":2,"method":"widget.set_pins","params":{"widget":5,"pins":"all"}}"#)
        .await;
    assert_eq!(
        (code_of(&v), v["id"].as_i64(), v["error"]["code"].as_i64()),
        ("rpc.invalid_params".into(), Some(2), Some(-32602))
    );
    assert_eq!(
        code_of(
            &ask(br#"{"jsonrpc":"2.0","id":3,"method":"widget.snapshot","params":{"widget":"nope"}}"#).await
        ),
        "widget.not_found"
    );
    assert_eq!(
        code_of(&ask(br#"[{"jsonrpc":"2.0","id":4,"method":"daemon.status"}]"#).await),
        "rpc.invalid_request"
    );
    // A 10 MB line is skipped without being held in memory, and the connection goes on.
    let mut big = vec![b'x'; 10 << 20];
    big.insert(0, b'"');
    assert_eq!(code_of(&ask(&big).await), "rpc.line_too_long");
    let v = ask(br#"{"jsonrpc":"2.0","id":5,"method":"daemon.status"}"#).await;
    assert_eq!(v["result"]["widgets"][0]["id"], created.widget.id.as_str());
    // Pins that are not contacts, too many pins, a message to an unpinned contact.
    let w = created.widget.id.clone();
    let e = client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![999_999],
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.not_contact");
    let many: Vec<u64> = created.contacts.iter().take(21).map(|c| c.id).collect();
    let e = client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: many,
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.too_many_pins");
    let e = client
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: created.contacts[0].id,
            text: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.not_contact");
    // A wrong password and an unreachable server at creation.
    let e = client
        .call::<CreateWidget>(Login {
            server: format!("http://{}", s.addr),
            account: "bob".into(),
            password: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "auth.bad_credentials");
    let e = client
        .call::<CreateWidget>(Login {
            server: "http://127.0.0.1:9".into(),
            account: "bob".into(),
            password: "demo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "server.unreachable");
    let e = client
        .call::<CreateWidget>(Login {
            server: "ftp://x".into(),
            account: "bob".into(),
            password: "demo".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "widget.invalid");
    // Still fine.
    assert_eq!(client.call::<ListWidgets>(NoParams {}).await.unwrap().len(), 1);
}

#[cfg(unix)]
#[tokio::test]
async fn the_socket_is_private_to_its_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start();
    let dir = d.socket.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::metadata(&d.socket).unwrap().uid(), rustix_uid());

    // Another OS user cannot connect, even when the file permissions are opened up: the daemon checks
    // the peer's user id itself.
    if rustix_uid() != 0
        || std::process::Command::new("runuser")
            .arg("--help")
            .output()
            .is_err()
    {
        eprintln!("skipping the other-user check: needs root and runuser");
        return;
    }
    let user = "pinchat-e2e-other";
    let _ = std::process::Command::new("useradd")
        .args(["--system", "--no-create-home", user])
        .output();
    let try_connect = |socket: &std::path::Path| {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\nexcept OSError as e:\n print('refused', e.errno); sys.exit(0)\ntry:\n s.sendall(b'{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}}\\n')\n s.settimeout(10)\n d=s.recv(100)\nexcept OSError:\n d=b''\nprint('answered' if d else 'closed')\n",
            socket.display().to_string()
        );
        let out = std::process::Command::new("runuser")
            .args(["-u", user, "--", "python3", "-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(
        try_connect(&d.socket).starts_with("refused"),
        "the directory and socket modes keep others out"
    );
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(
        try_connect(&d.socket),
        "closed",
        "the peer check closes another user's connection"
    );
    // The listener closes the connection and then logs why: the client can see the close first.
    pinchat_tests::eventually("the daemon logs the refusal", || {
        d.log().contains("refused a local connection")
    })
    .await;
}

#[cfg(unix)]
fn rustix_uid() -> u32 {
    // Our own uid, from a file we just created.
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

#[tokio::test]
async fn the_python_gadget_shows_a_live_status_line() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let s = Server::start().await;
    let d = Daemon::start();
    let client = d.client().await;
    let created = create(&client, &s, "demo").await;
    let w = created.widget.id.clone();
    let alice = id_in(&created.contacts, "alice");
    client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![alice],
        })
        .await
        .unwrap();
    client
        .call::<Refresh>(WidgetRef { widget: w.clone() })
        .await
        .unwrap();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gadget.py");
    let mut gadget = tokio::process::Command::new("python3")
        .arg(script)
        .arg("demo")
        .arg("--socket")
        .arg(&d.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the gadget");
    let mut lines = BufReader::new(gadget.stdout.take().unwrap()).lines();
    let mut stderr = gadget.stderr.take().unwrap();
    let first = match tokio::time::timeout(pinchat_tests::DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        Some(line) => line,
        None => {
            let mut err = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err)
                .await
                .unwrap();
            panic!("the gadget exited: {err}");
        }
    };
    let mut next = async || {
        tokio::time::timeout(pinchat_tests::DEADLINE, lines.next_line())
            .await
            .expect("a line from the gadget")
            .unwrap()
            .expect("the gadget exited")
    };
    assert!(first.contains("○ Alice Chen"), "{first}");
    // Alice comes online and writes: the gadget's line follows.
    let alice_key = s.key("alice").await;
    let _alice = s.stream(&alice_key, Encoding::Binary).await;
    loop {
        if next().await.contains("● Alice Chen") {
            break;
        }
    }
    let body = SendRequest {
        to: pinchat_proto::AccountId(created.widget.account.id),
        client_id: "g1".into(),
        text: "hi".into(),
    };
    let _: pinchat_proto::http::SendResponse = s.post(&alice_key, "/v1/messages", &body).await.unwrap();
    loop {
        if next().await.contains("● Alice Chen 1✉") {
            break;
        }
    }
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_and_removes_its_socket() {
    let s = Server::start().await;
    let mut d = Daemon::start();
    let client = d.client().await;
    let created = create(&client, &s, "demo").await;
    drop(client);
    assert!(d.socket.exists());
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists(), "the socket file is removed on shutdown");
    // The widget is still there on the next start, served from its database.
    d.restart();
    let client = d.client().await;
    let view = client
        .call::<Snapshot>(WidgetRef {
            widget: created.widget.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(view.account.login, "demo");
}

#[tokio::test]
async fn pinchatctl_drives_a_widget() {
    let s = Server::start().await;
    let d = Daemon::start();
    let socket = d.socket.clone();
    let ctl = |args: &[&str], stdin: Option<&str>| {
        let bin = pinchat_tests::server_binary().with_file_name("pinchatctl-e2e");
        let mut child = std::process::Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let server = format!("http://{}", s.addr);
    let (ok, out, _) = ctl(&["list"], None);
    assert!(ok && out.contains("no widgets"), "{out}");
    // The password never comes from the command line: without a terminal, --password-stdin is required.
    let (ok, _, err) = ctl(&["add", "--server", &server, "--account", "demo"], None);
    assert!(!ok && err.contains("--password-stdin"), "{err}");
    let (ok, out, err) = ctl(
        &[
            "add",
            "--server",
            &server,
            "--account",
            "demo",
            "--password-stdin",
        ],
        Some("demo\n"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("added for demo") && out.contains("alice"), "{out}");
    let (ok, out, err) = ctl(&["pin", "demo", "alice", "wangwei"], None);
    assert!(ok, "{err}");
    assert!(out.contains("Alice Chen") && out.contains("王伟"), "{out}");
    let (ok, out, _) = ctl(&["refresh", "demo"], None);
    assert!(ok && out.contains("Coffee first, code second."), "{out}");
    let (ok, out, err) = ctl(&["send", "demo", "alice", "hello", "from", "ctl"], None);
    // People's names and a local time, not ids and milliseconds.
    assert!(
        ok && out.contains("→ Alice Chen (queued): hello from ctl"),
        "{out} {err}"
    );
    let time = out.split_whitespace().next().unwrap_or_default();
    assert!(
        time.len() == 5 && time.as_bytes()[2] == b':',
        "a time of day first: {out}"
    );
    let (ok, out, _) = ctl(&["--json", "mode", "demo", "poll", "--interval", "30"], None);
    assert!(ok && out.contains("\"mode\": \"poll\""), "{out}");
    let (ok, _, err) = ctl(&["pin", "demo", "nobody"], None);
    assert!(
        !ok && err.contains("neither a contact id nor a contact's login"),
        "{err}"
    );
    let (ok, _, err) = ctl(&["show", "ghost"], None);
    assert!(!ok && err.contains("no widget \"ghost\""), "{err}");
    let (ok, out, _) = ctl(&["remove", "demo"], None);
    assert!(ok && out.contains("removed widget"), "{out}");
    // No daemon at all: a hint, not a stack trace.
    drop(d);
    let (ok, _, err) = ctl(&["list"], None);
    assert!(!ok && err.contains("daemon is not running"), "{err}");
}

/// A tiny run of the footprint benchmark, so that it keeps working (figures checked for sense only).
#[tokio::test]
async fn footprint_benchmark_smoke() {
    let bin = pinchat_tests::daemon_binary();
    let f = pinchat_bench::footprint::run(&bin, 1, 0, 1).await.unwrap();
    assert_eq!(f.widgets, 1);
    if cfg!(target_os = "linux") {
        assert!(f.rss_kb > 0 && f.threads > 0, "{f:?}");
    }
    assert!(f.start_to_snapshot_ms > 0.0);
}

#[tokio::test]
async fn avatars_are_fetched_through_the_daemon_and_bad_hashes_refused() {
    let s = Server::start().await;
    let d = Daemon::start();
    let client = d.client().await;
    let created = create(&client, &s, "demo").await;
    let widget = created.widget.id.clone();
    let alice = created.contacts.iter().find(|c| c.login == "alice").unwrap();
    let hash = alice.avatar.clone().expect("the demo world has avatars");
    let image = client
        .call::<Avatar>(AvatarParams {
            widget: widget.clone(),
            hash,
        })
        .await
        .unwrap();
    assert!(image.mime.starts_with("image/"), "{image:?}");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&image.data)
        .unwrap();
    assert!(bytes.len() > 8, "an image has bytes");
    for bad in ["", "../../v1/contacts", "a/b", &"f".repeat(129)] {
        let e = client
            .call::<Avatar>(AvatarParams {
                widget: widget.clone(),
                hash: bad.to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(code(e), "widget.invalid", "{bad:?}");
    }
    let e = client
        .call::<Avatar>(AvatarParams {
            widget,
            hash: "0000000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(e), "server.error");
}

/// Messages that were waiting when their contact was pinned come as `message.received` with
/// `backlog: true` (listed, not announced: the tray raises no notification for them); a message that
/// arrives afterwards is news (`backlog` absent, false).
#[tokio::test]
async fn messages_waiting_when_a_contact_is_pinned_are_backlog_and_later_ones_are_news() {
    let s = Server::start().await;
    let d = Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let created = create(&client, &s, "demo").await;
    let w = created.widget.id.clone();
    let bob = id_in(&created.contacts, "bob");
    let bob_key = s.key("bob").await;
    let demo_id = s.id_of(&bob_key, "demo").await;
    s.send_text(&bob_key, demo_id, "old-1", "sent before the pin")
        .await;

    client
        .call::<SetPins>(SetPinsParams {
            widget: w.clone(),
            pins: vec![bob],
        })
        .await
        .unwrap();
    let (text, backlog) = until(&mut events, |n| match n {
        Notification::MessageReceived { message, backlog, .. } => Some((message.text.clone(), *backlog)),
        _ => None,
    })
    .await;
    assert_eq!((text.as_str(), backlog), ("sent before the pin", true));

    s.send_text(&bob_key, demo_id, "new-1", "sent after the pin")
        .await;
    let (text, backlog) = until(&mut events, |n| match n {
        Notification::MessageReceived { message, backlog, .. } => Some((message.text.clone(), *backlog)),
        _ => None,
    })
    .await;
    assert_eq!((text.as_str(), backlog), ("sent after the pin", false));
}

/// The daemon against a server that speaks only TLS (`https://` and `wss://`), as real deployments do: the
/// login, the pins and a message pushed over the long-lived wss stream all pass through the server's own
/// TLS streams (server/src/tls/stream.rs). The daemon trusts the server's certificate through
/// `SSL_CERT_FILE`, as it would a company's CA; a daemon that does not trust it gets a clear error.
#[tokio::test]
async fn a_widget_works_against_a_server_that_speaks_only_tls() {
    let tls = pinchat_tests::TlsFiles::generate();
    let s = Server::start_with(&tls.config()).await;
    let base = format!("https://localhost:{}", s.addr.port());
    let login = Login {
        server: base.clone(),
        account: "demo".into(),
        password: pinchat_tests::DEMO_PASSWORD.into(),
    };

    let stranger = Daemon::start();
    let e = stranger
        .client()
        .await
        .call::<CreateWidget>(login.clone())
        .await
        .unwrap_err();
    println!("a daemon that does not trust the certificate: {e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    let d = Daemon::start_with_env(&[("SSL_CERT_FILE", tls.cert_path.as_os_str())]);
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let created = client.call::<CreateWidget>(login).await.unwrap();
    let alice = id_in(&created.contacts, "alice");
    let view = client
        .call::<SetPins>(SetPinsParams {
            widget: created.widget.id.clone(),
            pins: vec![alice],
        })
        .await
        .unwrap();

    // Alice writes over HTTPS; the message reaches the widget over the daemon's wss stream.
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let alice_login: pinchat_proto::http::LoginResponse = https
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({ "account": "alice", "password": pinchat_tests::DEMO_PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    https
        .post(format!("{base}/v1/messages"))
        .bearer_auth(&alice_login.key)
        .json(&SendRequest {
            to: pinchat_proto::AccountId(view.account.id),
            client_id: "tls-1".into(),
            text: "over TLS all the way".into(),
        })
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let msg = until(&mut events, |n| match n {
        Notification::MessageReceived { message, .. } => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!((msg.from, msg.text.as_str()), (alice, "over TLS all the way"));
}
