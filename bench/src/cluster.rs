//! Cluster mode: several `pinchat-server` nodes on one PostgreSQL, against one server on SQLite, in
//! one run. Measured: server memory per idle stream on each node, and how long a change made on the
//! first node takes to reach watchers on the last (presence and messages, at paced rates) — the same
//! measurement against the single server, where change and watchers share one process.
//!
//! Idle streams are held by load-generator processes (this binary's hidden `hold` command), one per
//! node, because one process may not have more than the open-file limit's sockets (20,000 on these
//! machines). The probe streams (the changing account, its watchers, message senders and recipients)
//! live in this process, so that send and receive times are read on one clock: a status change carries
//! its time of writing in its text, as a message does.

use crate::latency::{Usage, pace, send, settle, subscribe};
use crate::postgres::Postgres;
use crate::scale::{ServerProcess, Ws, open_stream, raise_fd_limit, rss_kb};
use futures_util::StreamExt;
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_proto::{AccountId, Field};
use pinchat_server::config::{Config, Secret};
use serde::Serialize;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes of the cluster.
    pub nodes: usize,
    /// Idle streams held on each node (and on the single server).
    pub streams_per_node: usize,
    /// Watchers of the changing account (on the last node).
    pub watchers: usize,
    /// Presence changes per second to drive.
    pub change_rates: Vec<u32>,
    /// Messages per second to offer (first node → last node), one step each.
    pub message_rates: Vec<u32>,
    /// How long each step runs.
    pub step: Duration,
    /// How long the unmeasured warm-up before the steps drives changes, and then messages.
    pub warm_up: Duration,
}

/// One node's memory.
#[derive(Serialize, Debug, Default, Clone)]
pub struct NodeMemory {
    /// Idle streams it holds.
    pub streams: usize,
    /// Resident memory before them, kB.
    pub baseline_kb: u64,
    /// With them, kB.
    pub rss_kb: u64,
    /// Memory per stream, bytes.
    pub bytes_per_stream: f64,
}

/// Latencies of one step.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Step {
    /// What was driven: "presence" or "message".
    pub what: String,
    /// Changes or messages per second offered.
    pub rate: u32,
    /// Arrivals measured (changes × watchers, or messages).
    pub arrivals: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
}

/// One configuration's figures.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Figures {
    /// "cluster" or "single".
    pub name: String,
    /// Per node (one entry for the single server).
    pub memory: Vec<NodeMemory>,
    /// Latency steps.
    pub steps: Vec<Step>,
    /// CPU of every server process together during the steps, percent of one core.
    pub server_cpu_percent: f64,
    /// CPU of PostgreSQL (all its processes) during the steps, percent of one core; none for SQLite.
    pub database_cpu_percent: Option<f64>,
}

/// What the benchmark measured: the cluster and the single server, side by side.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// PostgreSQL nodes.
    pub cluster: Figures,
    /// One server on SQLite.
    pub single: Figures,
}

/// Senders of messages (on the first node) and their recipients (on the last).
const PAIRS: usize = 20;

/// CPU of PostgreSQL's processes (the postmaster and its backends, found by name in `/proc`) over an
/// interval. A backend that exits during the interval takes its share with it; the nodes' connections
/// live as long as the run, so that is only the odd short-lived one.
struct DatabaseCpu {
    ticks: u64,
    at: Instant,
}

impl DatabaseCpu {
    fn start() -> DatabaseCpu {
        DatabaseCpu {
            ticks: postgres_ticks(),
            at: Instant::now(),
        }
    }

    /// Percent of one core.
    fn stop(self) -> f64 {
        let secs = self.at.elapsed().as_secs_f64();
        postgres_ticks().saturating_sub(self.ticks) as f64 / 100.0 / secs * 100.0
    }
}

/// User and system clock ticks of every process named `postgres`.
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .map(crate::scale::cpu_ticks)
        .sum()
}

/// Runs the benchmark with the server binary `bin`; `me` is this program, whose `hold` command holds
/// the idle streams (without it they are held in this process: for small runs, such as the suite's).
pub async fn run(bin: &Path, me: Option<&Path>, plan: &Plan) -> anyhow::Result<Report> {
    raise_fd_limit();
    let (pg, url) = tokio::task::spawn_blocking(|| {
        let pg = Postgres::start();
        let url = pg.new_database();
        (pg, url)
    })
    .await?;
    let cluster = measure(bin, me, plan, Some(&url), plan.nodes).await?;
    drop(pg);
    let single = measure(bin, me, plan, None, 1).await?;
    Ok(Report { cluster, single })
}

/// One configuration: `nodes` servers on PostgreSQL `url`, or one on SQLite.
async fn measure(
    bin: &Path,
    me: Option<&Path>,
    plan: &Plan,
    url: Option<&str>,
    nodes: usize,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        database: dir.path().join("single.db"),
        store: url.map(|u| Secret(u.to_owned())),
        ..Config::default()
    };
    config.limits.login_per_address_per_minute = 1_000_000;
    let idle = plan.streams_per_node * nodes;
    let probe_accounts = 1 + plan.watchers + 2 * PAIRS;
    let accounts = crate::traffic::seed_accounts(&config, idle + probe_accounts).await?;
    let (idle_keys, probes) = accounts.split_at(idle);
    let hot = &probes[0];
    let watchers = &probes[1..=plan.watchers];
    let (senders, recipients) = probes[1 + plan.watchers..].split_at(PAIRS);
    {
        let (store, threads) = pinchat_server::open_store(&config, None).await?;
        let mut links: Vec<(AccountId, AccountId)> = watchers.iter().map(|w| (w.1, hot.1)).collect();
        links.extend(senders.iter().zip(recipients).map(|(s, r)| (s.1, r.1)));
        futures_util::future::try_join_all(links.iter().map(|(a, b)| store.link(*a, *b))).await?;
        drop(store);
        tokio::task::spawn_blocking(move || threads.join()).await?;
    }

    let store_line = url.map_or(String::new(), |u| format!("store = {u:?}\n"));
    let mut servers = vec![];
    for i in 0..nodes {
        let node_dir = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir)?;
        servers.push(ServerProcess::spawn(
            bin,
            &node_dir,
            &format!(
                "database = {:?}\n{store_line}node_name = \"node{}\"\nkeepalive_secs = 3600\n\
                 [limits]\nmax_connections = {}\nstream_frames_per_second = 100000\n",
                config.database.display().to_string(),
                i + 1,
                plan.streams_per_node + probe_accounts + 1000
            ),
        )?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baselines: Vec<u64> = servers.iter().map(|s| rss_kb(s.pid)).collect();

    // The idle streams: one holder process per node (or this process).
    let mut holders = vec![];
    let mut held = vec![];
    for (server, keys) in servers.iter().zip(idle_keys.chunks(plan.streams_per_node.max(1))) {
        match me {
            // One node at a time: all at once, the two cores are so busy that some handshakes outlast
            // the server's ten seconds for a hello.
            Some(me) if plan.streams_per_node > 0 => {
                let mut holder = Holder::start(me, server, keys)?;
                holder.wait_held()?;
                holders.push(holder);
            }
            _ => {
                for (i, (key, _)) in keys.iter().enumerate() {
                    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8));
                    held.push(open_stream(server.addr, source, key).await?);
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory: Vec<NodeMemory> = servers
        .iter()
        .zip(&baselines)
        .map(|(s, &baseline_kb)| {
            let rss_kb = rss_kb(s.pid);
            NodeMemory {
                streams: plan.streams_per_node,
                baseline_kb,
                rss_kb,
                bytes_per_stream: (rss_kb.saturating_sub(baseline_kb) * 1024) as f64
                    / plan.streams_per_node.max(1) as f64,
            }
        })
        .collect();

    // The probes: the changing account and the senders on the first node, watchers and recipients on
    // the last.
    let (first, last) = (servers[0].addr, servers[nodes - 1].addr);
    let epoch = Instant::now();
    let presence = Arc::new(Mutex::new(Vec::<u32>::new()));
    let messages = Arc::new(Mutex::new(Vec::<u32>::new()));
    let mut tasks = vec![];
    // The watchers' and recipients' command channels: they are never told anything, but their tasks
    // end when these close.
    let mut quiet = vec![];
    let source = |i: usize| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8));
    for (i, (key, _)) in watchers.iter().enumerate() {
        let mut ws = open_stream(last, source(i), key).await?;
        subscribe(&mut ws, 1, vec![hot.1]).await?;
        let (tx, rx) = mpsc::channel(1);
        tasks.push(tokio::spawn(probe(
            ws,
            rx,
            presence.clone(),
            messages.clone(),
            epoch,
        )));
        quiet.push(tx);
    }
    for (i, ((key, _), sender)) in recipients.iter().zip(senders).enumerate() {
        let mut ws = open_stream(last, source(i), key).await?;
        subscribe(&mut ws, 1, vec![sender.1]).await?;
        let (tx, rx) = mpsc::channel(1);
        tasks.push(tokio::spawn(probe(
            ws,
            rx,
            presence.clone(),
            messages.clone(),
            epoch,
        )));
        quiet.push(tx);
    }
    let hot_ws = open_stream(first, source(0), &hot.0).await?;
    let (hot_tx, rx) = mpsc::channel(1024);
    tasks.push(tokio::spawn(probe(
        hot_ws,
        rx,
        presence.clone(),
        messages.clone(),
        epoch,
    )));
    let mut sender_txs = vec![];
    for (i, ((key, _), recipient)) in senders.iter().zip(recipients).enumerate() {
        let ws = open_stream(first, source(i), key).await?;
        let (tx, rx) = mpsc::channel(1024);
        tasks.push(tokio::spawn(probe(
            ws,
            rx,
            presence.clone(),
            messages.clone(),
            epoch,
        )));
        sender_txs.push((tx, recipient.1));
    }

    // The k-th message of a step goes from the sender k (of PAIRS, in turn) to its recipient.
    let offer_message = |k: usize| {
        let (tx, to) = &sender_txs[k % sender_txs.len()];
        tx.try_send(Cmd::Send(*to)).is_ok()
    };
    // A warm-up, not measured: right after the streams were opened the database is still busy with
    // their aftermath (autovacuum of the tables every connection touched), and the first change of a
    // step would otherwise measure that rather than the steady state a deployment runs in.
    pace(
        plan.change_rates.first().copied().unwrap_or(10),
        plan.warm_up,
        |_| hot_tx.try_send(Cmd::Status).is_ok(),
    )
    .await;
    pace(
        plan.message_rates.first().copied().unwrap_or(10),
        plan.warm_up,
        offer_message,
    )
    .await;
    settle(|| presence.lock().map(|l| l.len() as u64).unwrap_or(0)).await;
    settle(|| messages.lock().map(|l| l.len() as u64).unwrap_or(0)).await;

    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let usage: Vec<Usage> = pids.iter().map(|&p| Usage::start(p)).collect();
    let database = url.map(|_| DatabaseCpu::start());
    let mut steps = vec![];
    for &rate in &plan.change_rates {
        presence.lock().unwrap_or_else(|e| e.into_inner()).clear();
        pace(rate, plan.step, |_| hot_tx.try_send(Cmd::Status).is_ok()).await;
        settle(|| presence.lock().map(|l| l.len() as u64).unwrap_or(0)).await;
        steps.push(step("presence", rate, &presence));
    }
    for &rate in &plan.message_rates {
        messages.lock().unwrap_or_else(|e| e.into_inner()).clear();
        pace(rate, plan.step, offer_message).await;
        settle(|| messages.lock().map(|l| l.len() as u64).unwrap_or(0)).await;
        steps.push(step("message", rate, &messages));
    }
    let server_cpu: f64 = usage.into_iter().zip(&pids).map(|(u, &p)| u.stop(p).0).sum();
    let database_cpu = database.map(DatabaseCpu::stop);

    drop(quiet);
    for task in tasks {
        task.abort();
    }
    drop(held);
    drop(holders);
    drop(servers);
    Ok(Figures {
        name: if url.is_some() { "cluster" } else { "single" }.into(),
        memory,
        steps,
        server_cpu_percent: server_cpu,
        database_cpu_percent: database_cpu,
    })
}

/// Percentiles of what arrived.
fn step(what: &str, rate: u32, arrivals: &Mutex<Vec<u32>>) -> Step {
    let mut lat = std::mem::take(&mut *arrivals.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    Step {
        what: what.into(),
        rate,
        arrivals: lat.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().map_or(0.0, |&us| us as f64 / 1000.0),
    }
}

/// What a probe stream is told to do.
enum Cmd {
    /// Change this account's status text (to the time of writing).
    Status,
    /// Send a message (with the time of writing) to an account.
    Send(AccountId),
}

/// A probe stream: does what it is told, and records how long each timed change took to arrive.
async fn probe(
    mut ws: Ws,
    mut cmds: mpsc::Receiver<Cmd>,
    presence: Arc<Mutex<Vec<u32>>>,
    messages: Arc<Mutex<Vec<u32>>>,
    epoch: Instant,
) {
    let mut req = 100u32;
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                req += 1;
                let now = epoch.elapsed().as_micros().to_string();
                let frame = match cmd {
                    Cmd::Status => ClientFrame::SetPresence { req, state: None, status: Some(now) },
                    Cmd::Send(to) => ClientFrame::Send { req, to, client_id: format!("p{req}"), text: now },
                };
                if send(&mut ws, &frame).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => {
                let Some(Ok(WsMessage::Binary(b))) = msg else {
                    if matches!(msg, None | Some(Err(_))) { return }
                    continue;
                };
                let took = |sent: &str| {
                    sent.parse::<u64>().ok().map(|sent| {
                        (epoch.elapsed().as_micros() as u64).saturating_sub(sent).min(u32::MAX as u64) as u32
                    })
                };
                match codec::decode_server(Encoding::Binary, &b) {
                    Ok(ServerFrame::Message { message, .. }) => {
                        if let Some(us) = took(&message.text) {
                            messages.lock().unwrap_or_else(|e| e.into_inner()).push(us);
                        }
                    }
                    Ok(ServerFrame::Delta { fields, .. }) => {
                        for f in fields {
                            if let Field::Status(s) = f
                                && let Some(us) = took(&s)
                            {
                                presence.lock().unwrap_or_else(|e| e.into_inner()).push(us);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A load-generator process holding idle streams on one node; it lets them go when dropped.
struct Holder {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    _keys: tempfile::NamedTempFile,
}

impl Holder {
    fn start(me: &Path, server: &ServerProcess, keys: &[(String, AccountId)]) -> anyhow::Result<Holder> {
        let mut file = tempfile::NamedTempFile::new()?;
        for (key, _) in keys {
            writeln!(file, "{key}")?;
        }
        file.flush()?;
        let mut child = Command::new(me)
            .args(["hold", &server.addr.to_string()])
            .arg(file.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Ok(Holder {
            child,
            out,
            _keys: file,
        })
    }

    /// Waits until the holder says every stream is open.
    fn wait_held(&mut self) -> anyhow::Result<()> {
        let mut line = String::new();
        tokio::task::block_in_place(|| self.out.read_line(&mut line))?;
        anyhow::ensure!(line.starts_with("held "), "the stream holder failed: {line:?}");
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The `hold` command: opens a stream for each key in `keys` (one per line) to `addr`, prints
/// `held N`, and keeps them until its standard input closes.
pub async fn hold(addr: std::net::SocketAddr, keys: &Path) -> anyhow::Result<()> {
    raise_fd_limit();
    let keys = std::fs::read_to_string(keys)?;
    let keys: Vec<&str> = keys.lines().collect();
    let mut open = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(256) {
        let batch = futures_util::future::try_join_all(chunk.iter().enumerate().map(|(i, key)| {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8));
            open_stream(addr, source, key)
        }))
        .await?;
        open.extend(batch);
    }
    println!("held {}", open.len());
    std::io::stdout().flush()?;
    let mut line = String::new();
    tokio::task::spawn_blocking(move || std::io::stdin().lock().read_line(&mut line)).await??;
    drop(open);
    Ok(())
}
