//! Cluster mode: several real `pinchat-server` nodes on one real PostgreSQL database. What one node
//! causes reaches widgets on the others, a client resumes on any node, a killed node loses no
//! acknowledged message and its accounts go offline once, and nodes ride out a PostgreSQL restart.

#![cfg(unix)]

use pinchat_proto::http::SendRequest;
use pinchat_proto::stream::{Ack, ClientFrame, Resume, ServerFrame};
use pinchat_proto::{Encoding, ErrorCode, Field, MessageId, Presence};
use pinchat_tests::postgres::Postgres;
use pinchat_tests::{DEADLINE, Server, Stream, delta, eventually, message, send};
use std::collections::{BTreeMap, BTreeSet};

/// Settings for every node of these tests: a short lease so that a dead node is noticed quickly.
const NODE: &str = "node_lease_secs = 3\n";

/// `n` nodes on one fresh database (the first seeds the demo world), with `limits` in their `[limits]`.
async fn cluster(pg: &Postgres, n: usize, limits: &str) -> Vec<Server> {
    let url = pg.new_database();
    let mut nodes = vec![];
    for i in 0..n {
        let config = format!("{NODE}node_name = \"node{}\"\n[limits]\n{limits}", i + 1);
        nodes.push(Server::start_on_store(&url, &config).await);
    }
    nodes
}

/// Waits for the next frame that is not about unread counts or read markers (which follow every message).
async fn next_news(w: &mut Stream) -> ServerFrame {
    loop {
        match w.recv().await {
            ServerFrame::Delta { fields, .. }
                if fields
                    .iter()
                    .all(|f| matches!(f, Field::Unread(_) | Field::PeerRead(_))) => {}
            frame => return frame,
        }
    }
}

#[tokio::test]
async fn a_widget_on_one_node_sees_presence_and_messages_caused_through_another_and_resumes_on_a_third() {
    let pg = Postgres::shared();
    let nodes = cluster(pg, 3, "").await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let demo = n3.key("demo").await;
    let alice_key = n1.key("alice").await;
    let (alice, bob) = (n3.id_of(&demo, "alice").await, n3.id_of(&demo, "bob").await);
    let demo_id = n1.id_of(&alice_key, "demo").await;

    // The widget is on node 3; Alice connects to node 1.
    let mut w = n3.stream(&demo, Encoding::Binary).await;
    let epoch = w.epoch();
    w.subscribe(1, 0, &[alice, bob], None).await;
    let _a = n1.stream(&alice_key, Encoding::Binary).await;
    assert_eq!(
        delta(next_news(&mut w).await, alice).1,
        vec![Field::State(Presence::Online)]
    );

    // A message sent through node 1 reaches the widget on node 3.
    let first = send(n1, &alice_key, demo_id, "c1", "hello from node 1").await;
    let (_, m) = message(next_news(&mut w).await);
    assert_eq!((m.id, m.text.as_str()), (first.id, "hello from node 1"));
    let (cursor, fields) = delta(w.recv().await, alice);
    assert_eq!(fields, vec![Field::Unread(1)]);
    drop(w);

    // While the widget is away: two messages through node 2, a profile change through node 1's admin.
    let m2 = send(n2, &alice_key, demo_id, "c2", "missed one").await;
    let m3 = send(n2, &alice_key, demo_id, "c3", "missed two").await;
    n1.admin_ok(&["account", "set-profile", "bob", "--signature", "set on node 1"]);

    // It comes back on node 2 with its cursor: exactly what it missed.
    let mut w = n2.stream(&demo, Encoding::Binary).await;
    assert_eq!(w.epoch(), epoch, "one epoch for the whole cluster");
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
    assert!(!snap.full, "a cursor from node 3 resumes on node 2");
    assert_eq!(
        snap.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m2.id, m3.id],
        "no gap, no duplicate"
    );
    let bob_fields = &snap
        .contacts
        .iter()
        .find(|c| c.id == bob)
        .expect("bob changed")
        .fields;
    assert_eq!(bob_fields, &vec![Field::Signature("set on node 1".into())]);

    // A key revoked through node 2 ends its stream on node 1.
    let mut revoked = n1.stream(&alice_key, Encoding::Binary).await;
    let r = n2
        .http
        .post(n2.url("/v1/logout"))
        .bearer_auth(&alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (close, _) = revoked.until_close().await;
    assert!(
        close
            .expect("a close frame")
            .reason
            .starts_with("auth.invalid_key")
    );
}

#[tokio::test]
async fn an_account_moving_between_nodes_never_flickers_and_one_on_a_killed_node_goes_offline_once() {
    let pg = Postgres::shared();
    let mut nodes = cluster(pg, 3, "").await;
    let demo = nodes[2].key("demo").await;
    let (alice, bob) = (
        nodes[2].id_of(&demo, "alice").await,
        nodes[2].id_of(&demo, "bob").await,
    );
    let alice_key = nodes[0].key("alice").await;
    let bob_key = nodes[0].key("bob").await;
    let mut w = nodes[2].stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice, bob], None).await;

    // Alice and Bob on node 1.
    let _a = nodes[0].stream(&alice_key, Encoding::Binary).await;
    assert_eq!(
        delta(next_news(&mut w).await, alice).1,
        vec![Field::State(Presence::Online)]
    );
    let _b = nodes[0].stream(&bob_key, Encoding::Binary).await;
    assert_eq!(
        delta(next_news(&mut w).await, bob).1,
        vec![Field::State(Presence::Idle)]
    );

    // Alice moves to node 2 by herself; then node 1 is SIGKILLed with Bob on it.
    let mut a2 = nodes[1].stream(&alice_key, Encoding::Binary).await;
    nodes[0].kill();
    // Bob is offline once the dead node's lease and the grace period have passed — exactly once.
    assert_eq!(
        delta(next_news(&mut w).await, bob).1,
        vec![Field::State(Presence::Offline)]
    );
    // Alice never went offline: a change she makes now is the widget's next news, after Bob's.
    a2.send(&ClientFrame::SetPresence {
        req: 1,
        state: None,
        status: Some("on node 2".into()),
    })
    .await;
    assert_eq!(
        a2.recv().await,
        ServerFrame::Ack {
            req: 1,
            result: Ack::Done
        }
    );
    assert_eq!(
        delta(next_news(&mut w).await, alice).1,
        vec![Field::Status("on node 2".into())]
    );
    let expired = nodes[1..]
        .iter()
        .map(Server::log)
        .any(|l| l.contains("expired nodes whose lease ran out"));
    assert!(expired, "a surviving node expired the dead one");
}

#[tokio::test]
async fn a_node_killed_during_a_burst_loses_no_acknowledged_message_and_its_widget_resumes_elsewhere() {
    let pg = Postgres::shared();
    let mut nodes = cluster(pg, 3, "").await;
    let demo = nodes[0].key("demo").await;
    let alice = nodes[0].id_of(&demo, "alice").await;
    let bob = nodes[0].id_of(&demo, "bob").await;
    let carol = nodes[0].id_of(&demo, "carol").await;
    let senders = [
        nodes[1].key("alice").await,
        nodes[2].key("bob").await,
        nodes[0].key("carol").await,
    ];
    let demo_id = nodes[1].id_of(&senders[0], "demo").await;

    // The widget is on node 1, which is killed in the middle of the burst.
    let mut w = nodes[0].stream(&demo, Encoding::Binary).await;
    let epoch = w.epoch();
    let snap = w.subscribe(1, 0, &[alice, bob, carol], None).await;
    let mut cursor = snap.cursor;

    // Alice sends through node 2, Bob through node 3 and Carol through node 1, 150 each, concurrently
    // (the nodes' writers take turns on the cluster's cursor). Carol's client does what a client does
    // when its node dies: it sends the unacknowledged message again, same client id, to another node.
    let total = 150;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let burst = |key: String, urls: Vec<String>| {
        let http = http.clone();
        async move {
            let mut acked = BTreeSet::new();
            let mut node = 0;
            for i in 0..total {
                let request = SendRequest {
                    to: demo_id,
                    client_id: format!("burst-{i}"),
                    text: format!("burst {i}"),
                };
                let sent: pinchat_proto::http::SendResponse = loop {
                    let r = http
                        .post(format!("{}/v1/messages", urls[node]))
                        .bearer_auth(&key)
                        .json(&request)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => break r.json().await.unwrap(),
                        Ok(r) => panic!("{}: {}", r.status(), r.text().await.unwrap()),
                        Err(e) => {
                            assert!(node + 1 < urls.len(), "no node left: {e}");
                            node += 1;
                        }
                    }
                };
                acked.insert(sent.id);
            }
            acked
        }
    };
    let a = tokio::spawn(burst(senders[0].clone(), vec![nodes[1].url("")]));
    let b = tokio::spawn(burst(senders[1].clone(), vec![nodes[2].url("")]));
    let c = tokio::spawn(burst(
        senders[2].clone(),
        vec![nodes[0].url(""), nodes[2].url("")],
    ));

    // Take some live, then kill the widget's node.
    let mut seen: BTreeMap<MessageId, u32> = BTreeMap::new();
    while seen.len() < 40 {
        if let ServerFrame::Message {
            cursor: c, message, ..
        } = w.recv().await
        {
            assert!(c > cursor, "cursors increase");
            cursor = c;
            *seen.entry(message.id).or_default() += 1;
        }
    }
    nodes[0].kill();
    let mut acked = a.await.unwrap();
    acked.extend(b.await.unwrap());
    acked.extend(c.await.unwrap());
    assert_eq!(acked.len(), 3 * total as usize);

    // The widget resumes on node 3 from the last cursor it applied.
    let mut w = nodes[2].stream(&demo, Encoding::Binary).await;
    let resumed = w
        .subscribe(
            1,
            0,
            &[alice, bob, carol],
            Some(Resume {
                epoch,
                cursor,
                fresh: vec![],
            }),
        )
        .await;
    assert!(!resumed.full, "resumed, not refreshed");
    for m in &resumed.messages {
        *seen.entry(m.id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let seen: BTreeSet<MessageId> = seen.into_keys().collect();
    assert_eq!(
        seen, acked,
        "every acknowledged message reached the widget exactly once"
    );
}

#[tokio::test]
async fn concurrent_writers_on_three_nodes_reach_every_node_in_one_gap_free_order() {
    let pg = Postgres::shared();
    // Queues long enough that no widget falls behind (and is caught up with a snapshot) while the
    // test reads the others: each must receive every message as a message, live.
    let nodes = cluster(pg, 3, "stream_queue = 4096\n").await;
    let demo = nodes[0].key("demo").await;
    let logins = ["alice", "bob", "carol"];
    let mut pins = vec![];
    for login in logins {
        pins.push(nodes[0].id_of(&demo, login).await);
    }
    // One widget of Demo on each node.
    let mut widgets = vec![];
    for node in &nodes {
        let mut w = node.stream(&demo, Encoding::Binary).await;
        w.subscribe(1, 0, &pins, None).await;
        widgets.push(w);
    }
    // Three writers per node, each an account sending through "its" node at once.
    let per_writer = 60u32;
    let mut tasks = vec![];
    for (i, login) in logins.iter().enumerate() {
        for (n, node) in nodes.iter().enumerate() {
            let key = node.key(login).await;
            let demo_id = node.id_of(&key, "demo").await;
            let url = node.url("/v1/messages");
            let http = node.http.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..per_writer {
                    let r = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&SendRequest {
                            to: demo_id,
                            client_id: format!("w{i}-{n}-{k}"),
                            text: format!("{i}/{n}/{k}"),
                        })
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (logins.len() * nodes.len()) as u32 * per_writer;
    // Every node's widget receives every message once, in one increasing order: the order the
    // cluster committed them in.
    let mut orders = vec![];
    for w in &mut widgets {
        let mut ids = vec![];
        let mut last = 0;
        while ids.len() < total as usize {
            if let ServerFrame::Message { cursor, message, .. } = w.recv().await {
                assert!(cursor > last, "cursor {cursor} after {last}");
                last = cursor;
                ids.push(message.id);
            }
        }
        orders.push(ids);
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    let distinct: BTreeSet<_> = orders[0].iter().collect();
    assert_eq!(distinct.len(), total as usize);
}

#[tokio::test]
async fn nodes_refuse_writes_clearly_while_postgresql_is_down_and_recover_by_themselves() {
    // A PostgreSQL of this test's own: it is stopped and started again.
    let pg = Postgres::start();
    let nodes = cluster(&pg, 2, "").await;
    let demo = nodes[0].key("demo").await;
    let alice_key = nodes[1].key("alice").await;
    let alice = nodes[0].id_of(&demo, "alice").await;
    let demo_id = nodes[1].id_of(&alice_key, "demo").await;
    let mut w = nodes[0].stream(&demo, Encoding::Binary).await;
    w.subscribe(1, 0, &[alice], None).await;
    let before = send(&nodes[1], &alice_key, demo_id, "before", "before the outage").await;
    assert_eq!(message(next_news(&mut w).await).1.id, before.id);

    pg.crash();
    // A write is refused with a code a client acts on (retry later), and /healthz says why.
    let refused = nodes[1]
        .http
        .post(nodes[1].url("/v1/messages"))
        .bearer_auth(&alice_key)
        .json(&SendRequest {
            to: demo_id,
            client_id: "during".into(),
            text: "during the outage".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    let body: pinchat_proto::http::ErrorResponse = refused.json().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::StorageUnavailable);
    let health = nodes[1].http.get(nodes[1].url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    assert!(health.text().await.unwrap().contains("PostgreSQL"));

    pg.restart();
    // The nodes reconnect by themselves: /healthz is ok again, the retried message is stored once and
    // reaches the widget, whose stream stayed open through the outage.
    let url = nodes[1].url("/healthz");
    let http = nodes[1].http.clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = http.get(&url).send().await.unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the node did not recover");
        // The node probes the database once per poll interval; there is no event to wait for.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let during = send(&nodes[1], &alice_key, demo_id, "during", "during the outage").await;
    assert_eq!(message(next_news(&mut w).await).1.id, during.id);
    eventually("the node logs that it can write again", || {
        nodes[1].log().contains("PostgreSQL can be written again")
    })
    .await;
}

#[tokio::test]
async fn a_sqlite_server_moves_to_a_cluster_and_its_clients_carry_on() {
    // A single server on its SQLite file, with a conversation and a widget that knows its cursor.
    let mut single = Server::start_in_sqlite().await;
    let demo = single.key("demo").await;
    let alice_key = single.key("alice").await;
    let alice = single.id_of(&demo, "alice").await;
    let demo_id = single.id_of(&alice_key, "demo").await;
    let mut w = single.stream(&demo, Encoding::Binary).await;
    let epoch = w.epoch();
    w.subscribe(1, 0, &[alice], None).await;
    let mut old = vec![];
    for i in 0..2 {
        let sent = send(
            &single,
            &alice_key,
            demo_id,
            &format!("old{i}"),
            "before the move",
        )
        .await;
        assert_eq!(message(next_news(&mut w).await).1.id, sent.id);
        old.push(sent.id);
    }
    let (cursor, _) = delta(w.recv().await, alice);
    drop(w);
    assert!(single.terminate().success());

    // The operator copies the file into an empty PostgreSQL database.
    let pg = Postgres::shared();
    let url = pg.new_database();
    let import = |what: &str| {
        std::process::Command::new(pinchat_tests::server_binary())
            .args(["--store", &url, "import-sqlite"])
            .arg(single.database())
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    let out = import("import");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("2 messages"), "{said}");
    let continues: u64 = said
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cursor in {said:?}"));
    assert!(continues >= cursor, "{said}");
    // Twice would mix two worlds: refused, with what to do.
    let again = import("again");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("import into an empty database"));

    // A node on it: the old keys work, the widget resumes from its old cursor, and the conversation
    // goes on after the history it had.
    let node = Server::start_on_store(&url, NODE).await;
    let mut w = node.stream(&demo, Encoding::Binary).await;
    assert_eq!(w.epoch(), epoch, "the epoch moved with the data");
    let snap = w
        .subscribe(
            1,
            0,
            &[alice],
            Some(Resume {
                epoch,
                cursor,
                fresh: vec![],
            }),
        )
        .await;
    assert!(!snap.full && snap.messages.is_empty(), "{snap:?}");
    let new = send(&node, &alice_key, demo_id, "new", "after the move").await;
    let (c, m) = message(next_news(&mut w).await);
    assert!(c > cursor && m.id == new.id && new.id > old[1], "{c} {m:?}");
    let page: pinchat_proto::http::HistoryPage = node
        .get(&demo, &format!("/v1/messages/{alice}?limit=10"))
        .await
        .unwrap();
    let ids: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![new.id, old[1], old[0]]);
    assert_eq!(page.unread, 3);
}

#[tokio::test]
async fn login_rate_limits_hold_across_the_nodes() {
    let pg = Postgres::shared();
    let nodes = cluster(
        pg,
        3,
        "login_per_account_per_minute = 3\nlogin_per_address_per_minute = 100\n",
    )
    .await;
    // Three wrong passwords for Alice, one through each node: each node alone is within its limit.
    for node in &nodes {
        assert_eq!(
            node.login("alice", "wrong").await.unwrap_err().1.code,
            ErrorCode::BadCredentials
        );
    }
    // The fourth attempt, anywhere, is over the cluster's limit — even with the right password.
    let (status, e) = nodes[0].login("alice", "demo").await.unwrap_err();
    assert_eq!((status.as_u16(), e.code), (429, ErrorCode::RateLimited));
    assert_eq!(
        nodes[2].login("alice", "demo").await.unwrap_err().1.code,
        ErrorCode::RateLimited
    );
    // Other accounts are not affected.
    assert!(nodes[1].login("bob", "demo").await.is_ok());
}

/// The cluster benchmark (`bench/run cluster`) at a tiny scale, so that it never rots. Only that every
/// configuration was measured and every timed change arrived is checked, not how fast.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_benchmark_smoke() {
    let plan = pinchat_bench::cluster::Plan {
        nodes: 2,
        streams_per_node: 10,
        watchers: 3,
        change_rates: vec![20],
        message_rates: vec![20],
        step: std::time::Duration::from_millis(500),
        warm_up: std::time::Duration::from_millis(200),
    };
    let r = pinchat_bench::cluster::run(pinchat_tests::server_binary(), None, &plan)
        .await
        .unwrap();
    for figures in [&r.cluster, &r.single] {
        assert_eq!(figures.steps.len(), 2, "{r:?}");
        for step in &figures.steps {
            assert!(step.arrivals > 0 && step.p99_ms > 0.0, "{r:?}");
        }
        assert!(figures.memory.iter().all(|m| m.rss_kb > 0), "{r:?}");
    }
    assert_eq!(r.cluster.memory.len(), 2);
    assert!(r.cluster.database_cpu_percent.is_some() && r.single.database_cpu_percent.is_none());
    // Every message reached its recipient on the other node.
    assert_eq!(r.cluster.steps[1].arrivals, r.single.steps[1].arrivals, "{r:?}");
}

/// Runs `pinchat-server --config FILE seed-demo` with `config` (TOML): what it printed, and whether it
/// succeeded.
fn seed_with(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinchat.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(pinchat_tests::server_binary())
        .arg("--config")
        .arg(&path)
        .arg("seed-demo")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// With `sslmode=require` a node speaks TLS to PostgreSQL and verifies its certificate: trusting
/// `store_ca` it works (and PostgreSQL reports every one of its connections as encrypted); without
/// it, PostgreSQL's self-signed certificate is refused with an error that says why; `store_ca`
/// without `sslmode=require` is a configuration error rather than a silently unencrypted connection.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_reach_postgres_over_verified_tls() {
    let pg = Postgres::start_with_tls();
    let (port, cert) = pg.tls().unwrap();
    let socket_url = pg.new_database();
    let dbname = socket_url.rsplit("dbname=").next().unwrap().to_owned();
    let tls_url = format!("host=127.0.0.1 port={port} user=postgres dbname={dbname} sslmode=require");

    // Without the CA: refused, and nothing was written.
    let (ok, said) = seed_with(&format!("store = {tls_url:?}\n"));
    assert!(!ok, "{said}");
    assert!(said.contains("invalid peer certificate: UnknownIssuer"), "{said}");
    assert_eq!(
        pg.psql(
            &dbname,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'"
        )
        .trim(),
        "0"
    );
    // The CA without TLS asked for.
    let (ok, said) = seed_with(&format!("store = {socket_url:?}\nstore_ca = {cert:?}\n"));
    assert!(!ok && said.contains("sslmode=require"), "{said}");

    // With it: a working node, on encrypted connections only.
    let node = Server::start_on_store(&tls_url, &format!("{NODE}store_ca = {cert:?}\n")).await;
    assert!(node.login("alice", "demo").await.is_ok());
    let counts = pg.psql(
        &dbname,
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name LIKE 'pinchat-server%'",
    );
    let (encrypted, all) = counts.trim().split_once('|').unwrap();
    assert!(all.parse::<u32>().unwrap() >= 3, "{counts}");
    assert_eq!(encrypted, all, "{counts}");
}
