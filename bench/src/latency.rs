//! Latency and throughput: how long a message takes from the sender's stream to the recipient's, at
//! fixed offered rates across many open connections, and how many presence events per second the
//! server relays to the streams that pinned the changing contacts.
//!
//! The server is the real `pinchat-server` binary in its own process (see [`crate::scale`]); the load
//! generator runs here and shares the machine's cores with it, so the CPU of both processes is reported
//! beside every figure.
//!
//! Messages: half the connections send, half receive; receiver `i` has pinned sender `i`. A pacing task
//! hands out sends round-robin so that the offered rate is exact over the run; each message's text
//! carries the time it was written to the sender's socket, read back by the recipient's task from the
//! pushed `message` frame (both clocks are this process's monotonic clock).
//!
//! Presence fan-out: every connection also pins the same few "hot" accounts, whose streams change their
//! presence at a fixed rate; each change is one event per watcher. Counted at the server
//! (`pinchat_events_relayed_total`) and at the watchers, with the number of streams that fell behind and
//! had to resynchronise from the database (`pinchat_stream_resyncs_total`).

use crate::scale::{ServerProcess, Ws, cpu_ticks, open_stream, raise_fd_limit};
use futures_util::{SinkExt, StreamExt};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_proto::{AccountId, Presence};
use pinchat_server::config::Config;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// How many accounts change presence in the fan-out phase.
const HOT: usize = 5;

/// One message-rate step.
#[derive(Serialize, Debug, Default, Clone)]
pub struct MessageStep {
    /// Offered messages per second.
    pub offered_per_sec: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages that reached their recipient's stream.
    pub delivered: u64,
    /// Send-to-delivery latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Worst, milliseconds.
    pub max_ms: f64,
    /// Server CPU, percent of one core.
    pub server_cpu_percent: f64,
    /// Load generator CPU, percent of one core.
    pub bench_cpu_percent: f64,
}

/// One presence-rate step.
#[derive(Serialize, Debug, Default, Clone)]
pub struct FanoutStep {
    /// Presence changes per second driven.
    pub changes_per_sec: f64,
    /// Events per second the changes should produce (changes × watchers).
    pub offered_events_per_sec: f64,
    /// Events per second the server handed to streams.
    pub relayed_events_per_sec: f64,
    /// Events per second the watchers received.
    pub received_events_per_sec: f64,
    /// Streams that fell behind and resynchronised from the database.
    pub resyncs: u64,
    /// Server CPU, percent of one core.
    pub server_cpu_percent: f64,
    /// Load generator CPU, percent of one core.
    pub bench_cpu_percent: f64,
}

/// What the latency benchmark measured.
#[derive(Serialize, Debug, Default)]
pub struct Latency {
    /// Connections open during the run.
    pub connections: usize,
    /// The open-file limit, when it bounded the connections.
    pub fd_limit: Option<u64>,
    /// Per message rate.
    pub messages: Vec<MessageStep>,
    /// Per presence-change rate.
    pub fanout: Vec<FanoutStep>,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Connections to open (half send, half receive; all watch the hot accounts).
    pub connections: usize,
    /// Message rates to offer, per second.
    pub message_rates: Vec<u32>,
    /// Presence change rates to drive, per second.
    pub change_rates: Vec<u32>,
    /// How long each step runs.
    pub step: Duration,
    /// Where the server's database goes (a temporary directory inside it); the system's temporary
    /// directory when `None`. A tmpfs here (`/dev/shm`) takes the disk's fsync time out of the figures.
    pub db_dir: Option<std::path::PathBuf>,
}

/// What a connection's task is told to do.
enum Cmd {
    /// Send a message to `to`.
    Send { to: AccountId },
    /// Set this account's presence.
    Presence(Presence),
}

/// Counters shared by the connection tasks.
#[derive(Default)]
struct Tally {
    /// Latencies of delivered messages, microseconds.
    latencies: std::sync::Mutex<Vec<u32>>,
    /// Presence events received.
    presence_events: AtomicU64,
}

/// Runs the benchmark against the server binary `bin`.
pub async fn run(bin: &Path, plan: &Plan) -> anyhow::Result<Latency> {
    let limit = raise_fd_limit();
    let mut n = plan.connections.max(2);
    if let Some(l) = limit {
        n = n.min(l.saturating_sub(300) as usize - HOT);
    }
    n -= n % 2;
    let pairs = n / 2;
    let dir = match &plan.db_dir {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let config = Config {
        database: dir.path().join("latency.db"),
        ..Config::default()
    };
    let accounts = crate::traffic::seed_accounts(&config, n + HOT).await?;
    let (users, hot) = accounts.split_at(n);
    let hot_ids: Vec<AccountId> = hot.iter().map(|(_, id)| *id).collect();
    {
        let (store, writer) = pinchat_server::open_store(&config, None).await?;
        let mut links = Vec::with_capacity(pairs + n * HOT);
        for i in 0..pairs {
            links.push((users[i].1, users[pairs + i].1));
        }
        for (_, user) in users {
            for h in &hot_ids {
                links.push((*user, *h));
            }
        }
        for chunk in links.chunks(4096) {
            futures_util::future::try_join_all(chunk.iter().map(|(a, b)| store.link(*a, *b))).await?;
        }
        drop(store);
        tokio::task::spawn_blocking(move || writer.join()).await?;
    }
    let server = ServerProcess::spawn(
        bin,
        dir.path(),
        &format!(
            "database = {:?}\n[limits]\nmax_connections = {}\nstream_frames_per_second = 100000\n",
            config.database.display().to_string(),
            n + HOT + 1000
        ),
    )?;
    let addr = server.addr;

    // Open every connection, subscribe, and start its task.
    let tally = Arc::new(Tally::default());
    let epoch = Instant::now();
    let mut senders = Vec::with_capacity(pairs);
    let mut hot_senders = Vec::with_capacity(HOT);
    let mut tasks = Vec::with_capacity(n + HOT);
    let mut idle = Vec::with_capacity(pairs);
    let all: Vec<(usize, &(String, AccountId))> = users.iter().chain(hot).enumerate().collect();
    for chunk in all.chunks(256) {
        let opened = futures_util::future::try_join_all(chunk.iter().map(|(i, (key, _))| {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8));
            let pins = if *i >= n {
                vec![]
            } else if *i >= pairs {
                vec![users[i - pairs].1]
            } else {
                vec![]
            };
            let hot_ids = if *i >= n { vec![] } else { hot_ids.clone() };
            async move {
                let mut ws = open_stream(addr, source, key).await?;
                subscribe(&mut ws, 1, pins).await?;
                subscribe(&mut ws, 2, hot_ids).await?;
                anyhow::Ok(ws)
            }
        }))
        .await?;
        for ((i, _), ws) in chunk.iter().zip(opened) {
            let (tx, rx) = mpsc::channel(64);
            tasks.push(tokio::spawn(connection(ws, rx, tally.clone(), epoch)));
            if *i < pairs {
                senders.push((tx, users[pairs + i].1));
            } else if *i >= n {
                hot_senders.push(tx);
            } else {
                // Receivers are never told anything, but their task ends when its channel closes.
                idle.push(tx);
            }
        }
    }

    let mut result = Latency {
        connections: n + HOT,
        fd_limit: limit.filter(|_| n < plan.connections),
        ..Latency::default()
    };
    for &rate in &plan.message_rates {
        tally.latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let usage = Usage::start(server.pid);
        let sent = pace(rate, plan.step, |k| {
            let (tx, to) = &senders[k % senders.len()];
            tx.try_send(Cmd::Send { to: *to }).is_ok()
        })
        .await;
        // Let the last messages arrive: wait until the count stops growing.
        settle(|| tally.latencies.lock().map(|l| l.len() as u64).unwrap_or(0)).await;
        let (server_cpu, bench_cpu) = usage.stop(server.pid);
        let mut lat = std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |&us| us as f64 / 1000.0)
        };
        result.messages.push(MessageStep {
            offered_per_sec: rate as f64,
            sent,
            delivered: lat.len() as u64,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: lat.last().map_or(0.0, |&us| us as f64 / 1000.0),
            server_cpu_percent: server_cpu,
            bench_cpu_percent: bench_cpu,
        });
    }
    for &rate in &plan.change_rates {
        let relayed0 = server.metric("pinchat_events_relayed_total").await?;
        let resyncs0 = server.metric("pinchat_stream_resyncs_total").await?;
        let received0 = tally.presence_events.load(Ordering::Relaxed);
        let usage = Usage::start(server.pid);
        let started = Instant::now();
        let changes = pace(rate, plan.step, |k| {
            // Alternate busy and online, so that every change is a change.
            let state = if (k / HOT).is_multiple_of(2) {
                Presence::Busy
            } else {
                Presence::Online
            };
            hot_senders[k % HOT].try_send(Cmd::Presence(state)).is_ok()
        })
        .await;
        // Rates are over the time until the last event arrived: the step, plus any backlog.
        let last = settle(|| tally.presence_events.load(Ordering::Relaxed)).await;
        let secs = last
            .duration_since(started)
            .as_secs_f64()
            .max(plan.step.as_secs_f64());
        let (server_cpu, bench_cpu) = usage.stop(server.pid);
        let relayed = server.metric("pinchat_events_relayed_total").await? - relayed0;
        let resyncs = server.metric("pinchat_stream_resyncs_total").await? - resyncs0;
        let received = tally.presence_events.load(Ordering::Relaxed) - received0;
        let active = plan.step.as_secs_f64();
        result.fanout.push(FanoutStep {
            changes_per_sec: changes as f64 / active,
            offered_events_per_sec: changes as f64 * n as f64 / active,
            relayed_events_per_sec: relayed as f64 / secs,
            received_events_per_sec: received as f64 / secs,
            resyncs,
            server_cpu_percent: server_cpu,
            bench_cpu_percent: bench_cpu,
        });
    }
    drop((senders, hot_senders, idle));
    for task in tasks {
        task.abort();
    }
    drop(server);
    Ok(result)
}

pub(crate) async fn subscribe(ws: &mut Ws, sub: u8, pins: Vec<AccountId>) -> anyhow::Result<()> {
    send(
        ws,
        &ClientFrame::Subscribe {
            req: sub.into(),
            sub,
            pins,
            resume: None,
        },
    )
    .await?;
    loop {
        match crate::traffic::next(ws).await?.0 {
            ServerFrame::Snapshot(_) => return Ok(()),
            ServerFrame::Error { error, .. } => anyhow::bail!("subscribe refused: {error:?}"),
            _ => continue,
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(WsMessage::Binary(codec::encode(Encoding::Binary, frame).into()))
        .await?;
    Ok(())
}

/// One connection: sends what it is told, and records what arrives.
async fn connection(mut ws: Ws, mut cmds: mpsc::Receiver<Cmd>, tally: Arc<Tally>, epoch: Instant) {
    let mut req = 100u32;
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return };
                req += 1;
                let frame = match cmd {
                    Cmd::Send { to } => ClientFrame::Send {
                        req,
                        to,
                        client_id: format!("b{req}"),
                        // The time of writing travels in the text.
                        text: epoch.elapsed().as_micros().to_string(),
                    },
                    Cmd::Presence(state) => ClientFrame::SetPresence { req, state: Some(state), status: None },
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
                match codec::decode_server(Encoding::Binary, &b) {
                    Ok(ServerFrame::Message { message, .. }) => {
                        if let Ok(sent) = message.text.parse::<u64>() {
                            let us = (epoch.elapsed().as_micros() as u64).saturating_sub(sent);
                            tally.latencies.lock().unwrap_or_else(|e| e.into_inner()).push(us.min(u32::MAX as u64) as u32);
                        }
                    }
                    Ok(ServerFrame::Delta { sub: 2, .. }) => {
                        tally.presence_events.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Calls `offer` `rate` times per second for `step`, spread evenly (a tick per millisecond); returns how
/// many offers were taken.
pub(crate) async fn pace(rate: u32, step: Duration, mut offer: impl FnMut(usize) -> bool) -> u64 {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut offered, mut taken) = (0usize, 0u64);
    while started.elapsed() < step {
        ticker.tick().await;
        let due = (started.elapsed().as_secs_f64().min(step.as_secs_f64()) * rate as f64) as usize;
        while offered < due {
            if offer(offered) {
                taken += 1;
            }
            offered += 1;
        }
    }
    taken
}

/// Waits until `count` has not grown for half a second (at most 10 s): the end of a step's deliveries.
/// Returns when it last grew, to within 50 ms.
pub(crate) async fn settle(count: impl Fn() -> u64) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut grew) = (count(), Instant::now());
    while Instant::now() < deadline && grew.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now != last {
            (last, grew) = (now, Instant::now());
        }
    }
    grew
}

/// CPU of the server and of this process over an interval.
pub(crate) struct Usage {
    server: u64,
    bench: u64,
    at: Instant,
}

impl Usage {
    pub(crate) fn start(server: u32) -> Usage {
        Usage {
            server: cpu_ticks(server),
            bench: cpu_ticks(std::process::id()),
            at: Instant::now(),
        }
    }

    /// Percent of one core, server and bench.
    pub(crate) fn stop(self, server: u32) -> (f64, f64) {
        let secs = self.at.elapsed().as_secs_f64();
        let pct = |ticks: u64| ticks as f64 / 100.0 / secs * 100.0;
        (
            pct(cpu_ticks(server).saturating_sub(self.server)),
            pct(cpu_ticks(std::process::id()).saturating_sub(self.bench)),
        )
    }
}
