//! Defects found from outside, each pinned by a test that failed before its fix: the widget and its
//! source deadlocking on a large outbox, data files readable by other users, clients handing a password
//! to whoever serves the socket, a silently dead link trusted as online, unread details cut short after a
//! restart, and a full or read-only disk under the daemon.
//!
//! Everything is real: the server and daemon processes, the local socket, the Secret Service, a TCP
//! proxy that stalls the link, another OS user, and a tmpfs filled to the last byte or remounted
//! read-only (these need root, as CI runs; elsewhere they say so and return).

use pinchat_ipc::Client;
#[cfg(unix)]
use pinchat_ipc::ClientError;
use pinchat_ipc::api::*;
use pinchat_proto::AccountId;
use pinchat_proto::http::HistoryPage;
use pinchat_tests::{Daemon, Fault, FaultProxy, Server, until};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Creates a widget for `account` on `server` (a URL) and pins `pins` (logins); returns the widget id,
/// the account id and the pinned ids.
async fn bind(client: &Client, server: &str, account: &str, pins: &[&str]) -> (String, u64, Vec<u64>) {
    let created = client
        .call::<CreateWidget>(Login {
            server: server.into(),
            account: account.into(),
            password: "demo".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("create a widget for {account}: {e}"));
    let ids: Vec<u64> = pins
        .iter()
        .map(|p| created.contacts.iter().find(|c| c.login == *p).unwrap().id)
        .collect();
    client
        .call::<SetPins>(SetPinsParams {
            widget: created.widget.id.clone(),
            pins: ids.clone(),
        })
        .await
        .unwrap();
    (created.widget.id, created.widget.account.id, ids)
}

/// A client subscribed to every notification.
async fn watcher(d: &Daemon) -> (Client, tokio::sync::mpsc::Receiver<Notification>) {
    let mut c = d.client().await;
    let rx = c.notifications().unwrap();
    c.call::<Subscribe>(SubscribeParams::default()).await.unwrap();
    (c, rx)
}

async fn snapshot(c: &Client, w: &str) -> WidgetView {
    c.call::<Snapshot>(WidgetRef { widget: w.into() }).await.unwrap()
}

/// Waits until the widget is online, confirmed by the server, and storing normally.
async fn until_current(
    c: &Client,
    rx: &mut tokio::sync::mpsc::Receiver<Notification>,
    w: &str,
) -> WidgetView {
    loop {
        let v = snapshot(c, w).await;
        if v.connection == Connection::Online && !v.stale && v.storage.is_none() {
            return v;
        }
        until(rx, |n| (n.widget() == w).then_some(())).await;
    }
}

/// Every message of a conversation, as `key`'s account sees it on the server, oldest first.
async fn server_history(s: &Server, key: &str, contact: u64) -> Vec<pinchat_proto::http::HistoryMessage> {
    let mut all = vec![];
    let mut before = String::new();
    loop {
        let page: HistoryPage = s
            .get(key, &format!("/v1/messages/{contact}?limit=200{before}"))
            .await
            .unwrap();
        let more = page.more;
        if let Some(last) = page.messages.last() {
            before = format!("&before={}", last.id.0);
        }
        all.extend(page.messages);
        if !more {
            break;
        }
    }
    all.reverse();
    all
}

/// Asks the daemon for its status and fails if the answer takes longer than a person would wait.
async fn responsive(d: &Daemon) {
    let started = Instant::now();
    let c = d.client().await;
    tokio::time::timeout(Duration::from_secs(3), c.call::<Status>(NoParams {}))
        .await
        .expect("daemon.status did not answer within 3 s: the daemon is stuck")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Queues `n` messages per typer from `typers` parallel connections; returns the texts by typer.
async fn type_messages(d: &Daemon, w: &str, to: u64, typers: usize, n: usize, tag: &str) -> Vec<Vec<String>> {
    let mut tasks = vec![];
    for t in 0..typers {
        let c = d.client().await;
        let (w, tag) = (w.to_owned(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut texts = vec![];
            for i in 0..n {
                let text = format!("{tag} {t}-{i:04}");
                let m = c
                    .call::<SendMessage>(SendParams {
                        widget: w.clone(),
                        contact: to,
                        text: text.clone(),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("widget.send {text}: {e}"));
                assert_eq!(m.state, Delivery::Queued);
                texts.push(text);
            }
            texts
        }));
    }
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Reads notifications as they come (so that none is dropped for a slow reader) until `n` messages
/// were reported sent; returns their client ids.
fn collect_sent(
    mut rx: tokio::sync::mpsc::Receiver<Notification>,
    n: usize,
) -> tokio::task::JoinHandle<BTreeSet<String>> {
    tokio::spawn(async move {
        let mut sent = BTreeSet::new();
        while sent.len() < n {
            let id = until(&mut rx, |n| match n {
                Notification::MessageDelivery { message, .. } if message.state == Delivery::Sent => {
                    message.client_id.clone()
                }
                _ => None,
            })
            .await;
            sent.insert(id);
        }
        sent
    })
}

/// Checks that the server holds each typed text exactly once and, per typer, in the order typed.
fn assert_sent_once_in_order(history: &[pinchat_proto::http::HistoryMessage], typed: &[Vec<String>]) {
    let mut position: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for m in history {
        position.entry(m.text.as_str()).or_default().push(m.id.0);
    }
    for texts in typed {
        let mut last = 0;
        for text in texts {
            let ids = position.get(text.as_str()).map_or(&[][..], Vec::as_slice);
            assert_eq!(ids.len(), 1, "{text:?} is on the server {} times", ids.len());
            assert!(ids[0] > last, "{text:?} arrived out of the order it was typed in");
            last = ids[0];
        }
    }
}

#[tokio::test]
async fn a_thousand_messages_typed_offline_in_poll_mode_are_sent_once_in_order_even_after_a_kill() {
    let mut s = Server::start().await;
    let mut d = Daemon::start();
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice"]).await;
    let alice = pins[0];
    client
        .call::<SetMode>(SetModeParams {
            widget: w.clone(),
            mode: Mode::Poll,
            interval_secs: Some(5),
        })
        .await
        .unwrap();

    // The server goes away; 1,000 messages are typed from 8 connections at once.
    s.kill();
    let typed = type_messages(&d, &w, alice, 8, 125, "offline").await;
    responsive(&d).await;
    // The daemon dies with its outbox full; the server comes back; so does the daemon.
    d.kill();
    s.restart();
    d.restart();
    let (c, rx) = watcher(&d).await;
    let mut sent = collect_sent(rx, 1000);
    // Still answering, every second, while it drains the outbox.
    let mut probe = tokio::time::interval(Duration::from_secs(1));
    let sent = loop {
        tokio::select! {
            done = &mut sent => break done.unwrap(),
            _ = probe.tick() => {
                responsive(&d).await;
                snapshot(&c, &w).await;
            }
        }
    };
    assert_eq!(sent.len(), 1000);
    let history = server_history(&s, &s.key("alice").await, me).await;
    assert_eq!(history.len(), 1000, "exactly the typed messages, none twice");
    assert_sent_once_in_order(&history, &typed);
    let queued = c
        .call::<History>(HistoryParams {
            widget: w.clone(),
            contact: alice,
            before: None,
            limit: Some(10),
        })
        .await
        .unwrap();
    assert!(
        queued.messages.iter().all(|m| m.state != Delivery::Queued),
        "the outbox is empty"
    );
}

#[tokio::test]
async fn eight_hundred_sends_in_push_mode_during_a_busy_stream_all_arrive_once_without_being_throttled() {
    let s = Server::start().await;
    let d = Daemon::start();
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice", "bob"]).await;
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;
    let (_sent_watcher, sent_rx) = watcher(&d).await;
    let sent = collect_sent(sent_rx, 800);

    // The stream is busy: Alice writes 400 messages while 8 gadgets send.
    let alice_key = s.key("alice").await;
    let busy = s.flood(&alice_key, AccountId(me), 400, 1, "busy");
    let typed = type_messages(&d, &w, pins[0], 8, 100, "push").await;
    busy.await.unwrap();
    responsive(&d).await;
    assert_eq!(sent.await.unwrap().len(), 800);
    let history = server_history(&s, &alice_key, me).await;
    let ours: Vec<_> = history.into_iter().filter(|m| m.from.0 == me).collect();
    assert_eq!(ours.len(), 800);
    assert_sent_once_in_order(&ours, &typed);
    // Paced below the server's limit: never closed for flooding (4429), never lost the stream.
    let log = d.log();
    assert!(
        !log.contains("4429") && !log.contains("limited our rate"),
        "{log}"
    );
    assert!(!log.contains("stream lost"), "{log}");
    // And the widget took in everything Alice sent meanwhile.
    let view = until_current(&c, &mut rx, &w).await;
    assert_eq!(view.pins[0].unread, 400);
}

#[tokio::test]
async fn a_silently_dead_link_is_noticed_marked_stale_and_resumed_without_loss() {
    // The server asks for a ping every 5 s; the daemon gives an unanswered one at most 5 s more.
    let s = Server::start_with("keepalive_secs = 5\n").await;
    let proxy = FaultProxy::start(s.addr).await.unwrap();
    let d = Daemon::start();
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", proxy.addr), "demo", &["alice"]).await;
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;

    // The link freezes: no FIN, no RST, nothing passes (a frozen NAT, a half-open connection).
    proxy.set(Fault::Stall);
    let frozen = Instant::now();
    let alice_key = s.key("alice").await;
    let lost = s
        .send_text(
            &alice_key,
            AccountId(me),
            "frozen-1",
            "sent while the link was dead",
        )
        .await;
    let stale = until(&mut rx, |n| match n {
        Notification::ConnectionChanged {
            connection: Connection::Offline,
            stale,
            ..
        } => Some(*stale),
        _ => None,
    })
    .await;
    let noticed = frozen.elapsed();
    assert!(stale, "a widget that lost its link is stale");
    assert!(noticed <= Duration::from_secs(12), "noticed after {noticed:?}");
    assert!(d.log().contains("no answer to a keepalive"), "{}", d.log());

    // The link comes back: the daemon reconnects, resumes from its cursor and gets the message.
    proxy.set(Fault::Pass);
    let got = until(&mut rx, |n| match n {
        Notification::MessageReceived { message, .. } if message.id == lost.id.0 => Some(message.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got.text, "sent while the link was dead");
    let view = until_current(&c, &mut rx, &w).await;
    assert_eq!(view.pins[0].unread, 1);
    let unread = c
        .call::<Unread>(UnreadParams::from(ContactRef {
            widget: w.clone(),
            contact: pins[0],
        }))
        .await
        .unwrap();
    assert_eq!(unread.len(), 1, "once, not twice");
}

#[tokio::test]
async fn a_chat_opened_before_a_send_is_acknowledged_shows_the_message_once() {
    // Found by the desktop test: a reply sent from the unread details opens the chat at once; when the
    // server has stored the reply but its acknowledgement is still on the way, the page held it twice
    // (queued, and stored). A slow link holds the acknowledgement back for 400 ms.
    let s = Server::start().await;
    let proxy = FaultProxy::start(s.addr).await.unwrap();
    let d = Daemon::start();
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", proxy.addr), "demo", &["alice"]).await;
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;
    let alice_key = s.key("alice").await;
    let mut alice = s.stream(&alice_key, pinchat_proto::Encoding::Json).await;
    alice.subscribe(1, 0, &[AccountId(me)], None).await;

    proxy.set(Fault::Slow(Duration::from_millis(400)));
    let queued = c
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: pins[0],
            text: "sent just now".into(),
        })
        .await
        .unwrap();
    assert_eq!(queued.state, Delivery::Queued);
    // Alice has it: the server stored it. The daemon hears so only 400 ms later.
    let stored = loop {
        if let pinchat_proto::stream::ServerFrame::Message { message, .. } = alice.recv().await {
            break message;
        }
    };
    assert_eq!(stored.text, "sent just now");
    let page = c
        .call::<History>(HistoryParams {
            widget: w.clone(),
            contact: pins[0],
            before: None,
            limit: None,
        })
        .await
        .unwrap();
    let copies: Vec<&MessageView> = page
        .messages
        .iter()
        .filter(|m| m.text == "sent just now")
        .collect();
    assert_eq!(
        copies.len(),
        1,
        "the message is on the page once: {:?}",
        page.messages
    );
    assert_eq!(
        copies[0].id, stored.id.0,
        "the server's copy stands for the queued one"
    );
    assert_eq!(
        copies[0].client_id, queued.client_id,
        "and names the client id the app knows it by"
    );
    assert_eq!(copies[0].state, Delivery::Sent);
    // The recipient's history does not carry the sender's client ids.
    let theirs = server_history(&s, &alice_key, me).await;
    let at_alice = theirs.iter().find(|m| m.id == stored.id).unwrap();
    assert_eq!(at_alice.client_id, None);
}

#[tokio::test]
async fn unread_details_agree_with_the_count_after_a_restart_and_can_be_paged() {
    let s = Server::start().await;
    let mut d = Daemon::start();
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice"]).await;
    let alice = pins[0];
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;

    // 2,500 unread messages: more than the widget's database keeps per contact (1,000).
    let alice_key = s.key("alice").await;
    s.flood(&alice_key, AccountId(me), 2500, 10, "unread")
        .await
        .unwrap();
    loop {
        let v = snapshot(&c, &w).await;
        if v.pins[0].unread == 2500 {
            break;
        }
        until(&mut rx, |n| {
            matches!(n, Notification::UnreadChanged { .. }).then_some(())
        })
        .await;
    }
    drop(c);
    drop(client);
    d.terminate();
    d.restart();
    let c = d.client().await;
    let all = c
        .call::<Unread>(UnreadParams::from(ContactRef {
            widget: w.clone(),
            contact: alice,
        }))
        .await
        .unwrap();
    let truth: Vec<u64> = server_history(&s, &s.key("demo").await, alice)
        .await
        .iter()
        .filter(|m| m.from.0 == alice)
        .map(|m| m.id.0)
        .collect();
    assert_eq!(truth.len(), 2500);
    let listed: Vec<u64> = all.iter().map(|m| m.id).collect();
    assert_eq!(
        listed.len(),
        2500,
        "the list has as many messages as the count says"
    );
    assert_eq!(listed, truth, "exactly the unread messages, oldest first");

    // Paged: the newest 100, then the 100 before them.
    let page = |before: Option<u64>| {
        let c = &c;
        let w = w.clone();
        async move {
            c.call::<Unread>(UnreadParams {
                widget: w,
                contact: alice,
                before,
                limit: Some(100),
            })
            .await
            .unwrap()
        }
    };
    let newest = page(None).await;
    assert_eq!(newest.iter().map(|m| m.id).collect::<Vec<_>>(), truth[2400..]);
    let older = page(Some(newest[0].id)).await;
    assert_eq!(older.iter().map(|m| m.id).collect::<Vec<_>>(), truth[2300..2400]);
    let zero = c
        .call::<Unread>(UnreadParams {
            widget: w.clone(),
            contact: alice,
            before: None,
            limit: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Some("widget.invalid"));
}

#[cfg(unix)]
fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
#[tokio::test]
async fn widget_data_is_private_to_its_user_and_old_installs_are_narrowed() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start().await;
    let mut d = Daemon::start();
    let client = d.client().await;
    let (w, me, _) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice"]).await;
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;
    s.send_text(&s.key("alice").await, AccountId(me), "p1", "private")
        .await;
    until(&mut rx, |n| {
        matches!(n, Notification::MessageReceived { .. }).then_some(())
    })
    .await;

    let data = d.data_dir();
    let widgets = data.join("widgets");
    let db = widgets.join(format!("{w}.db"));
    let files = |db: &std::path::Path| {
        ["", "-wal", "-shm"]
            .iter()
            .map(|sfx| std::path::PathBuf::from(format!("{}{sfx}", db.display())))
            .filter(|p| p.exists())
            .collect::<Vec<_>>()
    };
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(mode_of(&widgets), 0o700);
    let present = files(&db);
    assert!(present.len() >= 2, "the database and its WAL: {present:?}");
    for f in &present {
        assert_eq!(mode_of(f), 0o600, "{}", f.display());
    }

    // An install written by an older version, open to everyone, is narrowed at the next start.
    drop(c);
    drop(client);
    d.terminate();
    for dir in [&data, &widgets] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in files(&db) {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    d.restart();
    let c = d.client().await;
    snapshot(&c, &w).await;
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(mode_of(&widgets), 0o700);
    for f in files(&db) {
        assert_eq!(mode_of(&f), 0o600, "{}", f.display());
    }
}

/// Another OS user for the tests that need one (root only); `None` otherwise.
#[cfg(unix)]
fn other_user() -> Option<&'static str> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("skipping: another OS user is needed, and only root can become one");
        return None;
    }
    let user = "pinchat-e2e-other";
    let _ = std::process::Command::new("useradd")
        .args(["--system", "--no-create-home", user])
        .output();
    Some(user)
}

/// A socket served by another user that records what it receives; returns the process (which prints
/// `ready`, then the number of bytes it got) and its stdout.
#[cfg(unix)]
fn hostile_listener(user: &str, socket: &std::path::Path) -> std::process::Child {
    let script = format!(
        "import socket,sys,os\ns=socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\nos.chmod({sock:?},0o777)\n\
         s.listen(1)\nprint('ready',flush=True)\nc,_=s.accept()\nc.settimeout(3)\ngot=b''\n\
         try:\n while True:\n  d=c.recv(4096)\n  if not d: break\n  got+=d\nexcept OSError:\n pass\n\
         print('got',len(got),flush=True)\n",
        sock = socket.display().to_string()
    );
    let mut child = std::process::Command::new("runuser")
        .args(["-u", user, "--", "python3", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[cfg(unix)]
#[tokio::test]
async fn clients_refuse_a_socket_served_by_another_user_and_send_it_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let Some(user) = other_user() else { return };
    let ctl = pinchat_tests::server_binary().with_file_name("pinchatctl-e2e");
    let add = |socket: &std::path::Path| {
        let mut child = std::process::Command::new(&ctl)
            .arg("--socket")
            .arg(socket)
            .args([
                "add",
                "--server",
                "http://127.0.0.1:9",
                "--account",
                "demo",
                "--password-stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // pinchatctl may check the socket's owner and exit before it reads the password —
        // the better order — so a broken pipe here is one of the outcomes being tested for.
        if let Err(e) = std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"secret-password\n") {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let received = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };

    // 1. A squatted directory: another user made it (as they could make /tmp/pinchat-<uid>).
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let squatted = base.path().join("pinchat-squatted");
    std::fs::create_dir(&squatted).unwrap();
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let status = std::process::Command::new("chown")
        .arg(user)
        .arg(&squatted)
        .status()
        .unwrap();
    assert!(status.success());
    let socket = squatted.join("daemon.sock");
    let listener = hostile_listener(user, &socket);
    let (ok, err) = add(&socket);
    assert!(!ok);
    assert!(
        err.contains("belongs to uid") && err.contains("nothing was sent"),
        "{err}"
    );
    // The listener never even got a connection: nudge it awake.
    let _ = std::os::unix::net::UnixStream::connect(&socket);
    assert_eq!(received(listener), "got 0");

    // 2. A sticky shared directory (like /tmp) passes the directory check; the peer check refuses.
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let socket = shared.join("evil.sock");
    let listener = hostile_listener(user, &socket);
    let (ok, err) = add(&socket);
    assert!(!ok);
    assert!(
        err.contains("served by uid") && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(
        received(listener),
        "got 0",
        "not one byte, let alone the password"
    );

    // The typed client refuses the same way.
    let listener = hostile_listener(user, &shared.join("evil2.sock"));
    match Client::connect(&shared.join("evil2.sock")).await {
        Err(ClientError::Untrusted(m)) => assert!(m.contains("served by uid"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected to another user's socket"),
    }
    assert_eq!(received(listener), "got 0");

    // The Python gadget of the examples does the same check.
    let listener = hostile_listener(user, &shared.join("evil3.sock"));
    let gadget = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gadget.py");
    let out = std::process::Command::new("python3")
        .arg(gadget)
        .arg("--socket")
        .arg(shared.join("evil3.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was sent"), "{err}");
    assert_eq!(received(listener), "got 0");

    // 3. A directory others may write to, not sticky: refused before connecting.
    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, err) = add(&open.join("daemon.sock"));
    assert!(!ok);
    assert!(err.contains("can be written by other users"), "{err}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_disk_marks_the_widget_stale_refuses_sends_clearly_and_catches_up_when_space_returns() {
    let Some(disk) = pinchat_tests::Tmpfs::mount("16m") else {
        return;
    };
    let s = Server::start().await;
    let mut d = Daemon::start_in(&disk.path().join("data"));
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice"]).await;
    let alice = pins[0];
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;
    let alice_key = s.key("alice").await;

    disk.fill();
    // Messages keep arriving; the widget cannot store them, so it does not pretend to show them.
    let mut i = 0;
    let view = loop {
        i += 1;
        s.send_text(
            &alice_key,
            AccountId(me),
            &format!("full{i}"),
            &format!("while full {i}"),
        )
        .await;
        let v = snapshot(&c, &w).await;
        if v.storage.is_some() {
            break v;
        }
        assert!(i < 200, "the widget never noticed that the disk is full");
        until(&mut rx, |n| (n.widget() == w).then_some(())).await;
    };
    assert!(view.stale, "a widget that cannot store what arrives is stale");
    assert!(
        view.storage.as_deref().unwrap().contains("full"),
        "{:?}",
        view.storage
    );
    let refused = c
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: alice,
            text: "not stored, so not accepted".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("storage.full"), "{refused}");
    responsive(&d).await;

    // Space returns: the widget catches up from its cursor by itself.
    disk.free();
    let view = until_current(&c, &mut rx, &w).await;
    assert_eq!(
        view.pins[0].unread as usize, i,
        "every message sent while the disk was full"
    );
    let sent = c
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: alice,
            text: "space again".into(),
        })
        .await
        .unwrap();
    assert_eq!(sent.state, Delivery::Queued);

    // A start on a full disk: served from the database, stale, and current once space returns.
    drop(c);
    drop(client);
    d.terminate();
    disk.fill();
    d.restart();
    let (c, mut rx) = watcher(&d).await;
    s.send_text(
        &alice_key,
        AccountId(me),
        "after",
        "sent to a daemon on a full disk",
    )
    .await;
    let v = snapshot(&c, &w).await;
    assert!(v.stale);
    let mut waited = 0;
    while snapshot(&c, &w).await.storage.is_none() {
        waited += 1;
        assert!(waited < 100, "the widget did not notice the full disk at start");
        until(&mut rx, |n| (n.widget() == w).then_some(())).await;
    }
    disk.free();
    let view = until_current(&c, &mut rx, &w).await;
    assert_eq!(view.pins[0].unread as usize, i + 1);
    assert!(!view.stale, "current after catching up, not stale");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_read_only_data_directory_is_reported_at_start_and_recovered_from_without_a_restart() {
    let Some(disk) = pinchat_tests::Tmpfs::mount("16m") else {
        return;
    };
    let s = Server::start().await;
    let mut d = Daemon::start_in(&disk.path().join("data"));
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice"]).await;
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;
    drop(c);
    drop(client);
    d.terminate();

    disk.read_only(true);
    d.restart();
    let (c, mut rx) = watcher(&d).await;
    let view = snapshot(&c, &w).await;
    assert_eq!(
        view.pins.len(),
        1,
        "the widget is served from what the disk holds"
    );
    assert!(view.stale);
    assert!(
        view.storage.as_deref().unwrap_or("").contains("read-only"),
        "{:?}",
        view.storage
    );
    assert!(
        d.log().contains("read-only"),
        "the daemon says so at start:\n{}",
        d.log()
    );
    let refused = c
        .call::<SendMessage>(SendParams {
            widget: w.clone(),
            contact: pins[0],
            text: "nowhere to keep it".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("storage.read_only"), "{refused}");
    s.send_text(&s.key("alice").await, AccountId(me), "ro1", "while read-only")
        .await;

    disk.read_only(false);
    let view = until_current(&c, &mut rx, &w).await;
    assert_eq!(view.pins[0].unread, 1, "caught up without a restart");
    c.call::<SendMessage>(SendParams {
        widget: w.clone(),
        contact: pins[0],
        text: "writable again".into(),
    })
    .await
    .unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_on_a_read_only_disk_starts_says_so_refuses_writes_clearly_and_recovers_by_itself() {
    let Some(disk) = pinchat_tests::Tmpfs::mount("32m") else {
        return;
    };
    let mut s = Server::start_at(Some(disk.path()), "").await;
    let key = s.key("demo").await;
    s.terminate();
    disk.read_only(true);
    s.restart();
    let health = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert!(
        s.log().contains("read-only"),
        "the server says so at start:\n{}",
        s.log()
    );
    assert_eq!(health.status(), 503);
    let health: pinchat_proto::http::Health = health.json().await.unwrap();
    assert_eq!(health.status, "unavailable");
    assert!(
        health.storage.as_deref().unwrap_or("").contains("read-only"),
        "{health:?}"
    );
    // Reads are served; writes are refused with a code that says "later", and nothing is stored.
    let contacts: pinchat_proto::http::ContactList = s.get(&key, "/v1/contacts").await.unwrap();
    assert_eq!(contacts.contacts.len(), 30);
    let (status, error) = s.login("demo", "demo").await.unwrap_err();
    assert_eq!(status, 503);
    assert_eq!(error.code.as_str(), "server.storage_unavailable", "{error:?}");
    let alice = s.id_of(&key, "alice").await;
    let refused = s
        .post::<_, serde_json::Value>(
            &key,
            "/v1/messages",
            &pinchat_proto::http::SendRequest {
                to: alice,
                client_id: "ro".into(),
                text: "on a read-only disk".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.1.code.as_str(), "server.storage_unavailable");

    // Writable again: no restart needed.
    disk.read_only(false);
    s.login("demo", "demo").await.expect("login works again");
    s.send_text(&key, alice, "ro", "after the disk came back").await;
    let health: pinchat_proto::http::Health = s
        .http
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health.status, "ok", "{health:?}");
    let page: HistoryPage = s.get(&key, &format!("/v1/messages/{}", alice.0)).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].text, "after the disk came back");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_server_on_a_full_disk_acknowledges_only_what_it_stored_and_resumes_when_space_returns() {
    let Some(disk) = pinchat_tests::Tmpfs::mount("32m") else {
        return;
    };
    let s = Server::start_at(Some(disk.path()), "").await;
    let key = s.key("demo").await;
    let alice = s.id_of(&key, "alice").await;
    disk.fill();
    let mut acknowledged = vec![];
    let refusal = loop {
        let i = acknowledged.len();
        let r = s
            .post::<_, pinchat_proto::http::SendResponse>(
                &key,
                "/v1/messages",
                &pinchat_proto::http::SendRequest {
                    to: alice,
                    client_id: format!("full{i}"),
                    text: format!("message {i} ").repeat(50),
                },
            )
            .await;
        match r {
            Ok(sent) => acknowledged.push(sent.id.0),
            Err(e) => break e,
        }
        assert!(i < 5000, "the disk never filled up");
    };
    assert_eq!(refusal.0, 503);
    assert_eq!(
        refusal.1.code.as_str(),
        "server.storage_unavailable",
        "{refusal:?}"
    );
    assert!(refusal.1.message.contains("nothing was stored"), "{refusal:?}");
    let health = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);

    disk.free();
    let last = s.send_text(&key, alice, "after", "space again").await;
    acknowledged.push(last.id.0);
    let health: pinchat_proto::http::Health = s
        .http
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health.status, "ok", "{health:?}");
    let stored: Vec<u64> = server_history(&s, &key, alice.0)
        .await
        .iter()
        .map(|m| m.id.0)
        .collect();
    assert_eq!(
        stored, acknowledged,
        "every acknowledged message, once, and nothing else"
    );
}

#[tokio::test]
async fn unread_details_skip_read_messages_when_the_cache_has_a_gap() {
    // A resume that would carry more than 5 messages gets a full snapshot with a few hints instead, so
    // the widget's cache can hold read messages and then a gap.
    let s = Server::start_with("resume_max_messages = 5\n").await;
    let mut d = Daemon::start();
    let client = d.client().await;
    let (w, me, pins) = bind(&client, &format!("http://{}", s.addr), "demo", &["alice"]).await;
    let alice = pins[0];
    let (c, mut rx) = watcher(&d).await;
    until_current(&c, &mut rx, &w).await;
    let alice_key = s.key("alice").await;
    s.flood(&alice_key, AccountId(me), 20, 1, "early").await.unwrap();
    while snapshot(&c, &w).await.pins[0].unread < 20 {
        until(&mut rx, |n| {
            matches!(n, Notification::UnreadChanged { .. }).then_some(())
        })
        .await;
    }
    c.call::<MarkRead>(MarkReadParams {
        widget: w.clone(),
        contact: alice,
        up_to: None,
    })
    .await
    .unwrap();
    drop((c, rx, client));
    d.kill();
    s.flood(&alice_key, AccountId(me), 10, 1, "late").await.unwrap();
    d.restart();
    let (c, mut rx) = watcher(&d).await;
    let view = until_current(&c, &mut rx, &w).await;
    assert_eq!(view.pins[0].unread, 10);
    let listed = c
        .call::<Unread>(UnreadParams::from(ContactRef {
            widget: w.clone(),
            contact: alice,
        }))
        .await
        .unwrap();
    let texts: Vec<&str> = listed.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts.len(), 10, "{texts:?}");
    assert!(
        texts.iter().all(|t| t.starts_with("late")),
        "read messages are not unread: {texts:?}"
    );
}
