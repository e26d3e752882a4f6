//! Borrowing a running full client's connection (the patent's claims 9 and 12), end to end: the real
//! server, the real `pinchatd`, real `pinchat-full --headless` processes registering in the daemon's
//! runtime directory, SIGKILL and SIGTERM, and registrations that must be refused.

use pinchat_ipc::Client;
use pinchat_ipc::api::*;
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_proto::{AccountId, Encoding, Field, MessageId, Presence};
use pinchat_tests::{Daemon, FullClient, Server, create_widget, eventually, until};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Receiver;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A daemon with a subscribed client and one widget of `demo` pinning alice and bob, online on its
/// own connection.
struct Setup {
    s: Server,
    d: Daemon,
    client: Client,
    events: Receiver<Notification>,
    widget: String,
    demo: AccountId,
    alice: AccountId,
    bob: AccountId,
}

async fn setup() -> Setup {
    let s = Server::start().await;
    let d = Daemon::start();
    let mut client = d.client().await;
    let events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let created = create_widget(&client, &s, "demo").await;
    let id = |login: &str| AccountId(created.contacts.iter().find(|c| c.login == login).unwrap().id);
    let (alice, bob) = (id("alice"), id("bob"));
    let widget = created.widget.id.clone();
    let view = client
        .call::<SetPins>(SetPinsParams {
            widget: widget.clone(),
            pins: vec![alice.0, bob.0],
        })
        .await
        .unwrap();
    let demo = AccountId(view.account.id);
    let view = client
        .call::<Refresh>(WidgetRef {
            widget: widget.clone(),
        })
        .await
        .unwrap();
    assert_eq!((view.connection, view.via), (Connection::Online, Via::Own));
    Setup {
        s,
        d,
        client,
        events,
        widget,
        demo,
        alice,
        bob,
    }
}

/// Waits for the widget to be online through `via`; gives how long that took.
async fn online_via(events: &mut Receiver<Notification>, via: Via) -> Duration {
    let start = Instant::now();
    until(events, |n| match n {
        Notification::ConnectionChanged {
            connection: Connection::Online,
            via: v,
            ..
        } if *v == via => Some(()),
        _ => None,
    })
    .await;
    start.elapsed()
}

/// Waits for a message from `from` with `text`.
async fn message(events: &mut Receiver<Notification>, from: AccountId, text: &str) -> MessageView {
    until(events, |n| match n {
        Notification::MessageReceived { message, .. } if message.from == from.0 && message.text == text => {
            Some(message.clone())
        }
        _ => None,
    })
    .await
}

async fn streams(s: &Server, expected: i64) {
    let deadline = Instant::now() + pinchat_tests::DEADLINE;
    loop {
        let now = s.metric("pinchat_streams").await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server holds {now} streams, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_widget_borrows_the_full_client_of_its_account_and_takes_its_connection_back() {
    let Setup {
        s,
        d,
        client,
        mut events,
        widget,
        demo,
        alice,
        ..
    } = setup().await;
    streams(&s, 1).await;

    // The full client of the same account starts: the widget borrows within 2 s, and the server holds
    // one stream for the account — the full client's — not two.
    let mut full = FullClient::start(&s, "demo", &d.socket);
    let took = online_via(&mut events, Via::FullClient { pid: full.pid }).await;
    assert!(took < Duration::from_secs(2), "borrowing took {took:?}");
    println!("borrowing took {took:?}");
    streams(&s, 1).await;
    let view = client
        .call::<Snapshot>(WidgetRef {
            widget: widget.clone(),
        })
        .await
        .unwrap();
    assert_eq!(view.via, Via::FullClient { pid: full.pid });
    let listed = client.call::<ListWidgets>(NoParams {}).await.unwrap();
    assert_eq!(listed[0].via, Via::FullClient { pid: full.pid });

    // Presence and messages still reach the widget, through the full client.
    let alice_key = s.key("alice").await;
    let mut alice_stream = s.stream(&alice_key, Encoding::Binary).await;
    alice_stream.subscribe(1, 0, &[demo], None).await;
    until(&mut events, |n| match n {
        Notification::ContactChanged { contact, fields, .. }
            if *contact == alice.0 && fields.contains(&Field::State(Presence::Online)) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    s.send_text(&alice_key, demo, "a-1", "hello through the full client")
        .await;
    message(&mut events, alice, "hello through the full client").await;

    // A send from the widget goes through the full client and reaches alice once.
    client
        .call::<SendMessage>(SendParams {
            widget: widget.clone(),
            contact: alice.0,
            text: "borrowed send".into(),
        })
        .await
        .unwrap();
    let got = loop {
        match alice_stream.recv().await {
            ServerFrame::Message { message, .. } => break message,
            _ => continue,
        }
    };
    assert_eq!((got.from, got.text.as_str()), (demo, "borrowed send"));
    let history: pinchat_proto::http::HistoryPage =
        s.get(&alice_key, &format!("/v1/messages/{demo}")).await.unwrap();
    let sent: Vec<_> = history
        .messages
        .iter()
        .filter(|m| m.text == "borrowed send")
        .collect();
    assert_eq!(sent.len(), 1, "stored once");
    streams(&s, 2).await;

    // The full client exits cleanly: the widget is back on its own connection within 2 s, and a
    // message sent meanwhile is not lost.
    assert!(full.terminate().success());
    let took = online_via(&mut events, Via::Own).await;
    assert!(took < Duration::from_secs(2), "handing back took {took:?}");
    println!("handing back took {took:?}");
    s.send_text(&alice_key, demo, "a-2", "after the hand-back").await;
    message(&mut events, alice, "after the hand-back").await;
    let _ = alice_stream
        .send(&ClientFrame::Unsubscribe { req: 9, sub: 0 })
        .await;
}

/// How the full client goes away in the burst test.
#[derive(Clone, Copy, Debug)]
enum Leave {
    Kill,
    Terminate,
    Logout,
}

#[tokio::test]
async fn a_full_client_killed_stopped_or_logged_out_during_a_burst_loses_and_repeats_nothing() {
    let Setup {
        s,
        d,
        client,
        mut events,
        widget,
        demo,
        bob,
        ..
    } = setup().await;
    let bob_key = s.key("bob").await;
    let mut received: Vec<MessageId> = Vec::new();
    for (round, leave) in [Leave::Kill, Leave::Terminate, Leave::Logout]
        .into_iter()
        .enumerate()
    {
        let mut full = FullClient::start(&s, "demo", &d.socket);
        online_via(&mut events, Via::FullClient { pid: full.pid }).await;
        let burst = s.flood(&bob_key, demo, 300, 2, &format!("r{round}-"));
        // A third of the way through, the full client goes.
        let mut this_round = 0;
        while this_round < 100 {
            if let Notification::MessageReceived { message, .. } = events.recv().await.unwrap() {
                received.push(MessageId(message.id));
                this_round += 1;
            }
        }
        let gone = Instant::now();
        match leave {
            Leave::Kill => full.kill(),
            Leave::Terminate => assert!(full.terminate().success()),
            Leave::Logout => full.command("logout"),
        }
        let mut back = None;
        while this_round < 300 || back.is_none() {
            let n = tokio::time::timeout(pinchat_tests::DEADLINE, events.recv())
                .await
                .unwrap_or_else(|_| panic!("{leave:?}: {this_round} of 300 messages, back: {back:?}"))
                .unwrap();
            match n {
                Notification::MessageReceived { message, .. } => {
                    received.push(MessageId(message.id));
                    this_round += 1;
                }
                Notification::ConnectionChanged {
                    connection: Connection::Online,
                    via: Via::Own,
                    ..
                } if back.is_none() => back = Some(gone.elapsed()),
                _ => {}
            }
        }
        burst.await.unwrap();
        let back = back.unwrap();
        println!("{leave:?}: own connection back after {back:?}");
        assert!(
            back < Duration::from_secs(2),
            "{leave:?}: back on its own after {back:?}"
        );
        drop(full);
    }
    // Every message exactly once, the same as the server's history, and the unread counts agree.
    let unique: BTreeSet<MessageId> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "a message arrived twice");
    let mut stored = BTreeSet::new();
    let mut before: Option<MessageId> = None;
    let demo_key = s.key("demo").await;
    loop {
        let path = match before {
            Some(b) => format!("/v1/messages/{bob}?limit=200&before={b}"),
            None => format!("/v1/messages/{bob}?limit=200"),
        };
        let page: pinchat_proto::http::HistoryPage = s.get(&demo_key, &path).await.unwrap();
        stored.extend(page.messages.iter().filter(|m| m.from == bob).map(|m| m.id));
        before = page.messages.last().map(|m| m.id);
        if !page.more {
            assert_eq!(page.unread, 900, "the server's unread count");
            break;
        }
    }
    assert_eq!(
        unique, stored,
        "the widget received exactly the server's messages"
    );
    let view = client.call::<Snapshot>(WidgetRef { widget }).await.unwrap();
    let pin = view.pins.iter().find(|p| p.id == bob.0).unwrap();
    assert_eq!(pin.unread, 900, "the widget's unread count equals the server's");
}

#[tokio::test]
async fn a_full_client_of_another_account_is_not_borrowed_and_one_started_first_is() {
    let s = Server::start().await;
    // Full clients of bob and of demo run before any widget exists.
    let d = Daemon::start();
    let bob_full = FullClient::start(&s, "bob", &d.socket);
    let demo_full = FullClient::start(&s, "demo", &d.socket);
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    // A widget of demo borrows from demo's full client at once; one of alice borrows from nobody.
    let created = create_widget(&client, &s, "demo").await;
    let demo_widget = created.widget.id.clone();
    until(&mut events, |n| match n {
        Notification::ConnectionChanged {
            widget,
            connection: Connection::Online,
            via: Via::FullClient { pid },
            ..
        } if *widget == demo_widget && *pid == demo_full.pid => Some(()),
        _ => None,
    })
    .await;
    // Pinned while borrowing: a message from the new pin comes through the full client.
    let alice_id = created.contacts.iter().find(|c| c.login == "alice").unwrap().id;
    client
        .call::<SetPins>(SetPinsParams {
            widget: demo_widget.clone(),
            pins: vec![alice_id],
        })
        .await
        .unwrap();
    let demo = AccountId(created.widget.account.id);
    s.send_text(&s.key("alice").await, demo, "x-1", "to a widget born borrowing")
        .await;
    message(&mut events, AccountId(alice_id), "to a widget born borrowing").await;
    let alice = create_widget(&client, &s, "alice").await;
    let view = client
        .call::<Refresh>(WidgetRef {
            widget: alice.widget.id.clone(),
        })
        .await
        .unwrap();
    assert_eq!((view.connection, view.via), (Connection::Online, Via::Own));
    // Bob's full client was seen and not used.
    eventually("the daemon saw bob's full client", || {
        d.log()
            .contains(&format!("a full client is running pid={}", bob_full.pid))
    })
    .await;
}

/// Linux: it runs `true`, `sleep` and `setpriv`, and reads `/proc`.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn registrations_that_cannot_be_trusted_are_refused_with_the_reason() {
    let Setup {
        s,
        d,
        client,
        widget,
        demo,
        ..
    } = setup().await;
    let run = d.socket.parent().unwrap().to_owned();
    let register = |pid: u32, start_time: u64, exe: &std::path::Path, protocol: u16| {
        let r = pinchat_ipc::full::Registration {
            protocol,
            pid,
            start_time,
            exe: exe.to_owned(),
            socket: pinchat_ipc::full::endpoint_path(&run, pid),
            accounts: vec![pinchat_ipc::full::RegisteredAccount {
                server: format!("http://{}", s.addr),
                account: demo,
                epoch: 0,
            }],
        };
        pinchat_ipc::full::write(&run, &r).unwrap();
    };
    let start_time = |pid: u32| {
        let mut system = sysinfo::System::new();
        let p = sysinfo::Pid::from_u32(pid);
        system.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[p]), true);
        system.process(p).unwrap().start_time()
    };

    // A stale file: the process is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    register(gone_pid, 1, std::path::Path::new("/usr/bin/pinchat-full"), 1);
    wait_log(&d, &format!("process {gone_pid} is not running")).await;

    // A live process that is not a full client (its start time right, its program `sleep`).
    let sleep = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let sleeping = sleep.id();
    register(
        sleeping,
        start_time(sleeping),
        std::path::Path::new("/usr/bin/pinchat-full"),
        1,
    );
    wait_log(&d, &format!("process {sleeping} runs")).await;
    wait_log(&d, "not pinchat-full").await;

    // The same process with a wrong start time: a reused pid.
    register(sleeping, 12345, std::path::Path::new("/usr/bin/sleep"), 1);
    wait_log(&d, "the pid was reused").await;

    // Another protocol version.
    let other = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    register(
        other.id(),
        start_time(other.id()),
        std::path::Path::new("/usr/bin/sleep"),
        2,
    );
    wait_log(&d, "written for protocol version 2").await;

    // A real full client program run by another OS user (root's tests run it as nobody).
    if running_as_root() {
        let shared = tempfile::Builder::new()
            .prefix("pinchat-nobody")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let program = FullClient::program(shared.path());
        let mut nobody = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&program)
            .args([
                "--headless",
                "--server",
                "http://127.0.0.1:9",
                "--account",
                "demo",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // It waits for its password on standard input: alive, and running the real program.
        let pid = nobody.id();
        eventually("the other user's process runs the program", || {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == program)
        })
        .await;
        register(pid, start_time(pid), &program, 1);
        wait_log(&d, &format!("process {pid} runs as")).await;
        nobody.kill().unwrap();
        nobody.wait().unwrap();
    }

    // Through all of it the widget kept its own connection.
    let view = client.call::<Refresh>(WidgetRef { widget }).await.unwrap();
    assert_eq!((view.connection, view.via), (Connection::Online, Via::Own));
    for mut p in [sleep, other] {
        p.kill().unwrap();
        p.wait().unwrap();
    }
}

#[cfg(target_os = "linux")]
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[cfg(target_os = "linux")]
async fn wait_log(d: &Daemon, text: &str) {
    eventually(&format!("the daemon logs {text:?}"), || d.log().contains(text)).await;
}

/// A link to a full client's endpoint, as a third-party program would open one.
async fn endpoint(
    d: &Daemon,
    full: &FullClient,
) -> tokio_tungstenite::WebSocketStream<pinchat_ipc::transport::Stream> {
    let path = pinchat_ipc::full::endpoint_path(d.socket.parent().unwrap(), full.pid);
    let stream = pinchat_ipc::transport::connect(&path).await.unwrap();
    tokio_tungstenite::client_async("ws://pinchat-full/v1/stream", stream)
        .await
        .unwrap()
        .0
}

/// Sends `message` and gives the error frame and close code the endpoint answers with.
async fn refused(
    ws: &mut tokio_tungstenite::WebSocketStream<pinchat_ipc::transport::Stream>,
    messages: Vec<WsMessage>,
) -> (Option<String>, Option<u16>) {
    use futures_util::{SinkExt, StreamExt};
    for m in messages {
        // The endpoint may close before a later message is written.
        let _ = ws.send(m).await;
    }
    let (mut code, mut close) = (None, None);
    while let Some(Ok(m)) = ws.next().await {
        match m {
            WsMessage::Binary(b) => {
                if let Ok(ServerFrame::Error { error, .. }) =
                    pinchat_proto::codec::decode_server(Encoding::Binary, &b)
                {
                    code = Some(error.code.as_str().to_owned());
                }
            }
            WsMessage::Close(f) => close = f.map(|f| u16::from(f.code)),
            _ => {}
        }
    }
    (code, close)
}

fn binary(frame: &ClientFrame) -> WsMessage {
    WsMessage::Binary(pinchat_proto::codec::encode(Encoding::Binary, frame).into())
}

#[tokio::test]
async fn the_full_clients_endpoint_refuses_bad_input_and_keeps_lending() {
    use futures_util::{SinkExt, StreamExt};
    let Setup {
        s,
        d,
        client: _client,
        mut events,
        demo,
        alice,
        ..
    } = setup().await;
    let full = FullClient::start(&s, "demo", &d.socket);
    online_via(&mut events, Via::FullClient { pid: full.pid }).await;
    let hello = |version| binary(&ClientFrame::Hello { version });

    // Not a WebSocket at all: dropped, nothing else disturbed.
    {
        use tokio::io::AsyncWriteExt;
        let path = pinchat_ipc::full::endpoint_path(d.socket.parent().unwrap(), full.pid);
        let mut raw = pinchat_ipc::transport::connect(&path).await.unwrap();
        raw.write_all(b"\x00\xffnot an HTTP request\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut rest).await;
    }
    let cases: Vec<(&str, Vec<WsMessage>, &str, u16)> = vec![
        (
            "text",
            vec![WsMessage::Text("{\"hello\":{\"version\":1}}".into())],
            "proto.malformed",
            1008,
        ),
        (
            "garbage",
            vec![WsMessage::Binary(vec![0xff, 0xff, 0xff, 0x01].into())],
            "proto.unknown_type",
            1008,
        ),
        (
            "another version",
            vec![hello(99)],
            "proto.version_unsupported",
            1008,
        ),
        (
            "subscribe before hello",
            vec![binary(&ClientFrame::Subscribe {
                req: 1,
                sub: 0,
                pins: vec![alice],
                resume: None,
            })],
            "proto.unexpected",
            1008,
        ),
        (
            "oversized",
            vec![WsMessage::Binary(vec![0u8; 200 * 1024].into())],
            "limit.frame_too_large",
            1009,
        ),
        ("hello twice", vec![hello(1), hello(1)], "proto.unexpected", 1008),
    ];
    for (what, messages, code, close) in cases {
        let mut ws = endpoint(&d, &full).await;
        let (got, closed) = refused(&mut ws, messages).await;
        assert_eq!(
            (got.as_deref(), closed),
            (Some(code), Some(close)),
            "{what}: error code and close code"
        );
    }

    // A well-behaved link still gets the welcome and its snapshot, in its own numbering.
    let mut ws = endpoint(&d, &full).await;
    ws.send(hello(1)).await.unwrap();
    let Some(Ok(WsMessage::Binary(b))) = ws.next().await else {
        panic!("no welcome")
    };
    let Ok(ServerFrame::Welcome(w)) = pinchat_proto::codec::decode_server(Encoding::Binary, &b) else {
        panic!("not a welcome")
    };
    assert_eq!(w.account, demo);
    ws.send(binary(&ClientFrame::Subscribe {
        req: 7,
        sub: 3,
        pins: vec![alice],
        resume: None,
    }))
    .await
    .unwrap();
    let Some(Ok(WsMessage::Binary(b))) = ws.next().await else {
        panic!("no snapshot")
    };
    let Ok(ServerFrame::Snapshot(snapshot)) = pinchat_proto::codec::decode_server(Encoding::Binary, &b)
    else {
        panic!("not a snapshot")
    };
    assert_eq!((snapshot.sub, snapshot.full), (3, true));

    // And the widget kept borrowing: a message reaches it through the full client.
    let alice_key = s.key("alice").await;
    s.send_text(&alice_key, demo, "a-9", "still lending").await;
    message(&mut events, alice, "still lending").await;
    assert!(full.log().contains("a local program borrows the connection"));
}

#[tokio::test]
async fn a_full_client_with_no_subscription_left_is_not_borrowed_from() {
    use futures_util::{SinkExt, StreamExt};
    // Two subscriptions per stream: the full client's own contact list takes one, a gadget talking to
    // the full client directly the other.
    let s = Server::start_with("[limits]\nmax_subscriptions_per_connection = 2\n").await;
    let d = Daemon::start();
    let full = FullClient::start(&s, "demo", &d.socket);
    let mut gadget = endpoint(&d, &full).await;
    gadget
        .send(binary(&ClientFrame::Hello { version: 1 }))
        .await
        .unwrap();
    gadget.next().await.unwrap().unwrap();
    let alice = s.id_of(&s.key("demo").await, "alice").await;
    gadget
        .send(binary(&ClientFrame::Subscribe {
            req: 1,
            sub: 0,
            pins: vec![alice],
            resume: None,
        }))
        .await
        .unwrap();
    gadget.next().await.unwrap().unwrap();

    // The widget tries, is refused (limit.subscriptions), and serves itself at once.
    let client = d.client().await;
    let created = create_widget(&client, &s, "demo").await;
    let view = client
        .call::<Refresh>(WidgetRef {
            widget: created.widget.id,
        })
        .await
        .unwrap();
    assert_eq!((view.connection, view.via), (Connection::Online, Via::Own));
    assert!(
        d.log().contains("the full client refused the subscription"),
        "the daemon says why it did not borrow:\n{}",
        d.log()
    );
}

#[tokio::test]
async fn after_a_server_restart_the_widget_borrows_again_and_nothing_is_lost() {
    let Setup {
        mut s,
        d,
        client: _client,
        mut events,
        demo,
        alice,
        ..
    } = setup().await;
    let full = FullClient::start(&s, "demo", &d.socket);
    online_via(&mut events, Via::FullClient { pid: full.pid }).await;

    // The server goes away: the full client sends its borrowers home (1001), then reconnects and
    // registers again; the widget borrows again once it is back.
    s.kill();
    until(&mut events, |n| match n {
        Notification::ConnectionChanged { connection, via, .. }
            if (*connection, *via) != (Connection::Online, Via::FullClient { pid: full.pid }) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    s.restart();
    online_via(&mut events, Via::FullClient { pid: full.pid }).await;
    let alice_key = s.key("alice").await;
    s.send_text(&alice_key, demo, "a-r", "after the restart").await;
    message(&mut events, alice, "after the restart").await;
}

/// The borrowing benchmark (`bench/run borrow`) on a small workload, so that it never rots. No figure is
/// checked beyond what the benchmark itself needs to be meaningful.
#[tokio::test]
async fn borrow_benchmark_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let full = FullClient::program(dir.path());
    let runs = pinchat_bench::borrow::run(&pinchat_tests::daemon_binary(), &full, 2, 1, Duration::ZERO)
        .await
        .unwrap();
    let streams: Vec<u64> = runs.iter().map(|r| r.streams).collect();
    assert_eq!(streams, [2, 1], "independent holds two streams, borrowing one");
    assert!(runs.iter().all(|r| r.messages == 2));
}

#[tokio::test]
async fn the_full_client_follows_its_whole_contact_list_across_a_server_restart() {
    let mut s = Server::start().await;
    let runtime = tempfile::tempdir().unwrap();
    let mut full = FullClient::start(&s, "demo", &runtime.path().join("api.sock"));
    let demo_key = s.key("demo").await;
    let list: pinchat_proto::http::ContactList = s.get(&demo_key, "/v1/contacts").await.unwrap();
    assert!(list.contacts.len() > usize::from(list.max_pins));
    let alice = s.id_of(&demo_key, "alice").await;
    let alice_key = s.key("alice").await;
    let demo = s.id_of(&alice_key, "demo").await;
    let line = |full: &mut FullClient| {
        full.contacts()
            .and_then(|l| {
                l.into_iter()
                    .find(|l| l.starts_with(&format!("contact {alice} ")))
            })
            .unwrap_or_default()
    };

    // Every contact, more than a widget may pin, with its state.
    assert_eq!(full.contacts_known(), list.contacts.len());
    let known = full.contacts().expect("known once it said so");
    assert_eq!(known.len(), list.contacts.len(), "{known:#?}");
    assert!(line(&mut full).contains(" offline unread=0 "), "{known:#?}");

    // Alice comes online and writes: her line follows.
    let _alice_stream = s.stream(&alice_key, Encoding::Binary).await;
    s.send_text(&alice_key, demo, "l-1", "to the full client").await;
    eventually("alice online with one unread message", || {
        line(&mut full).contains(" online unread=1 ")
    })
    .await;

    // The server restarts: the full client reconnects and resumes its list.
    s.kill();
    s.restart();
    let alice_key = s.key("alice").await;
    s.send_text(&alice_key, demo, "l-2", "after the restart").await;
    eventually("alice's second message counted after the restart", || {
        line(&mut full).contains(" unread=2 ")
    })
    .await;
    assert_eq!(full.contacts().unwrap().len(), list.contacts.len());
}
