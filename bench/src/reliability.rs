//! Reliability runs: the real `pinchat-server` and `pinchatd` processes under repeated SIGKILLs or
//! network faults while messages flow both ways and presence changes; afterwards what was acknowledged
//! is compared with what is stored. `bench/run reliability …` runs the long versions (the figures are in
//! RELIABILITY.md); the test suite runs short ones (`tests/tests/reliability.rs`).
//!
//! One world: a server (seeded demo world) in its own directory, a [`FaultProxy`] in front of it, a
//! daemon bound to the demo account through the proxy with Alice and Bob pinned. Flows, each its own task:
//! - **in**: Alice and Bob write to the demo user over HTTP (a retry keeps its client id, so a message
//!   the server stored but could not acknowledge is not stored twice);
//! - **out**: a gadget sends through the daemon (`widget.send`); what the daemon answered `queued` for
//!   is what it promised to deliver;
//! - **presence**: Alice and Bob change state;
//! - **offline bursts**: every few cycles the proxy refuses the server and a burst of messages (more than
//!   the 64 a channel once held) is typed offline, sometimes with a kill on top.
//!
//! The chaos — SIGKILL of the daemon, SIGKILL of the server, or network faults — strikes at random
//! moments from a seeded generator. Then everything is let through again and, once the widget has
//! caught up, the run compares: every message the daemon queued is on the server exactly once; the
//! widget's database holds every message the server stored for it (the newest 1,000 per contact, what
//! the database keeps) and none twice; unread counts and presence states equal the server's; the outbox
//! is empty.

use crate::fault::{Fault, FaultProxy};
use crate::schedule::Rng;
use pinchat_ipc::Client;
use pinchat_ipc::api::*;
use pinchat_proto::http::{HistoryMessage, HistoryPage, SendRequest};
use pinchat_proto::{AccountId, Field, Presence};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The binaries to run.
#[derive(Clone, Debug)]
pub struct Bins {
    /// `pinchat-server`.
    pub server: PathBuf,
    /// `pinchatd`.
    pub daemon: PathBuf,
}

/// What strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Chaos {
    /// SIGKILL the daemon and start it again.
    DaemonKills,
    /// SIGKILL the server and start it again on the same database and port.
    ServerKills,
    /// Stall, reset, close, slow down or refuse the link between daemon and server.
    NetworkFaults,
}

/// A run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// What strikes.
    pub chaos: Chaos,
    /// How many times.
    pub cycles: usize,
    /// Seed of the random moments and faults.
    pub seed: u64,
    /// An offline burst every this many cycles (0: none).
    pub offline_every: usize,
    /// Messages typed in one offline burst.
    pub offline_burst: usize,
    /// Longest pause between two strikes, milliseconds.
    pub max_gap_ms: u64,
    /// Longest network fault (stall, slow link, refused connections), milliseconds.
    pub max_fault_ms: u64,
}

/// What a run found. Every "lost" and "duplicated" must be 0.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Report {
    /// What struck.
    pub chaos: Option<Chaos>,
    /// How many times.
    pub cycles: usize,
    /// Seconds the run took, settling included.
    pub seconds: f64,
    /// Messages the daemon answered `queued` for (it promised to deliver them).
    pub queued_by_daemon: usize,
    /// Of those, typed while the server was unreachable.
    pub queued_offline: usize,
    /// Queued messages that never reached the server.
    pub lost_outgoing: usize,
    /// Queued messages stored more than once.
    pub duplicated_outgoing: usize,
    /// Messages to the widget's account the server stored.
    pub stored_by_server: usize,
    /// Of those, how many the server had acknowledged to their sender.
    pub acknowledged_by_server: usize,
    /// Acknowledged messages the server does not have.
    pub lost_acknowledged: usize,
    /// Unread messages the widget lists (`widget.unread`: nothing is marked read during a run, so every
    /// stored message should be there).
    pub listed_by_widget: usize,
    /// Messages the server stored that the widget does not list.
    pub lost_incoming: usize,
    /// Messages the widget lists, or holds in its database, twice or that the server does not have.
    pub duplicated_incoming: usize,
    /// Of the newest 1,000 per contact (what the widget's database keeps), how many it holds locally.
    /// The rest were skipped by a resume that would have carried more than the server's
    /// `resume_max_messages` (the server then sends a full snapshot with a few hints, by design) and
    /// are fetched from the server when listed.
    pub held_locally: usize,
    /// The newest 1,000 per contact: what `held_locally` is out of.
    pub newest: usize,
    /// Pinned contacts whose unread count differs from the server's.
    pub unread_mismatches: usize,
    /// Pinned contacts whose presence differs from the server's.
    pub state_mismatches: usize,
    /// Messages still in the outbox at the end.
    pub left_in_outbox: usize,
    /// Presence changes made during the run.
    pub presence_changes: usize,
    /// Seconds from the last strike until the widget agreed with the server.
    pub settle_seconds: f64,
    /// Streams the daemon lost and reconnected (from its log).
    pub streams_lost: usize,
    /// Times the daemon was told to send more slowly (from its log).
    pub slowed_down: usize,
}

impl Report {
    /// `true` when nothing was lost, duplicated or left different from the server.
    pub fn clean(&self) -> bool {
        self.lost_outgoing == 0
            && self.duplicated_outgoing == 0
            && self.lost_acknowledged == 0
            && self.lost_incoming == 0
            && self.duplicated_incoming == 0
            && self.unread_mismatches == 0
            && self.state_mismatches == 0
            && self.left_in_outbox == 0
    }
}

const PASSWORD: &str = "demo";

/// The server process, restartable on the same database and port.
struct ServerProc {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl ServerProc {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<ServerProc> {
        let config = dir.join("server.toml");
        let database = dir.join("pinchat.db");
        std::fs::write(
            &config,
            format!(
                "database = {:?}\nexternal_poll_ms = 50\npresence_grace_secs = 1\nkeepalive_secs = 5\n\
                 [limits]\nlogin_per_account_per_minute = 1000\nlogin_per_address_per_minute = 10000\n",
                database.display().to_string()
            ),
        )?;
        let seeded = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("seed-demo")
            .output()
            .await?;
        anyhow::ensure!(seeded.status.success(), "seed-demo failed");
        let mut s = ServerProc {
            bin: bin.to_owned(),
            config,
            log: dir.join("server.log"),
            addr: "127.0.0.1:0".parse()?,
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // The port a killed server held may take a moment to be free again.
        for attempt in 0.. {
            let mut child = Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .args(["serve", "--listen", &self.addr.to_string()])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(log.try_clone()?)
                .kill_on_drop(true)
                .spawn()?;
            let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            match lines.next_line().await? {
                Some(line) => {
                    let url = line
                        .trim()
                        .strip_prefix("pinchat-server listening on http://")
                        .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?;
                    self.addr = url.parse()?;
                    self.child = Some(child);
                    return Ok(());
                }
                None if attempt < 50 => tokio::time::sleep(Duration::from_millis(100)).await,
                None => anyhow::bail!("the server did not start; see {}", self.log.display()),
            }
        }
        unreachable!()
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The daemon process, restartable on the same data directory and socket.
struct DaemonProc {
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl DaemonProc {
    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--socket")
            .arg(&self.socket)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = lines.next_line().await?.unwrap_or_default();
        anyhow::ensure!(
            line.starts_with("pinchatd listening on"),
            "the daemon did not start ({line:?}); see {}",
            self.log.display()
        );
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, and wait for the exit.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            let _ = c.wait().await;
        }
    }
}

/// What the flows recorded.
#[derive(Default)]
struct Ledger {
    /// Texts the daemon answered `queued` for.
    queued: Vec<String>,
    queued_offline: usize,
    /// Ids the server acknowledged for messages to the widget's account.
    acknowledged: Vec<u64>,
    presence_changes: usize,
}

/// Runs a plan and reports. The daemon needs the session's Secret Service.
pub async fn run(bins: &Bins, plan: &Plan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut server = ServerProc::start(&bins.server, dir.path()).await?;
    let proxy = FaultProxy::start(server.addr).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let key = |login: &'static str| {
        let (http, url) = (http.clone(), server.url("/v1/login"));
        async move {
            let r: pinchat_proto::http::LoginResponse = http
                .post(url)
                .json(&serde_json::json!({"account": login, "password": PASSWORD}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(r.key)
        }
    };
    let (demo_key, alice_key, bob_key) = (key("demo").await?, key("alice").await?, key("bob").await?);

    let mut daemon = DaemonProc {
        bin: bins.daemon.clone(),
        data: dir.path().join("daemon-data"),
        socket: dir.path().join("run").join("daemon.sock"),
        log: dir.path().join("daemon.log"),
        child: None,
    };
    daemon.spawn().await?;
    let client = Client::connect(&daemon.socket).await?;
    let created = client
        .call::<CreateWidget>(Login {
            server: format!("http://{}", proxy.addr),
            account: "demo".into(),
            password: PASSWORD.into(),
        })
        .await?;
    let widget = created.widget.id.clone();
    let me = created.widget.account.id;
    let pins: Vec<u64> = ["alice", "bob"]
        .iter()
        .map(|l| created.contacts.iter().find(|c| c.login == *l).map(|c| c.id))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("the demo world lacks alice or bob"))?;
    client
        .call::<SetPins>(SetPinsParams {
            widget: widget.clone(),
            pins: pins.clone(),
        })
        .await?;
    drop(client);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = CancellationToken::new();
    let offline = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flows = tokio::task::JoinSet::new();
    flows.spawn(flow_in(
        http.clone(),
        server.url("/v1/messages"),
        vec![alice_key.clone(), bob_key.clone()],
        me,
        ledger.clone(),
        stop.clone(),
    ));
    flows.spawn(flow_out(
        daemon.socket.clone(),
        widget.clone(),
        pins.clone(),
        "out",
        None,
        ledger.clone(),
        offline.clone(),
        stop.clone(),
    ));
    flows.spawn(flow_presence(
        http.clone(),
        server.url("/v1/me/presence"),
        vec![alice_key.clone(), bob_key.clone()],
        ledger.clone(),
        stop.clone(),
    ));

    let mut rng = Rng(plan.seed);
    let gap = |rng: &mut Rng| Duration::from_millis(20 + (rng.unit() * plan.max_gap_ms as f64) as u64);
    for cycle in 0..plan.cycles {
        tokio::time::sleep(gap(&mut rng)).await;
        match plan.chaos {
            Chaos::DaemonKills => {
                daemon.kill().await;
                daemon.spawn().await?;
            }
            Chaos::ServerKills => {
                server.kill().await;
                tokio::time::sleep(Duration::from_millis((rng.unit() * 300.0) as u64)).await;
                server.spawn().await?;
            }
            Chaos::NetworkFaults => network_fault(&proxy, &mut rng, plan.max_fault_ms as f64).await,
        }
        if plan.offline_every > 0 && cycle % plan.offline_every == plan.offline_every - 1 {
            // The server is unreachable; more than a channel's worth of messages is typed meanwhile.
            proxy.set(Fault::Refuse);
            proxy.reset_all();
            offline.store(true, std::sync::atomic::Ordering::SeqCst);
            let tag = format!("offline{cycle}");
            let burst = flow_out(
                daemon.socket.clone(),
                widget.clone(),
                pins.clone(),
                &tag,
                Some(plan.offline_burst),
                ledger.clone(),
                offline.clone(),
                stop.clone(),
            );
            burst.await;
            if plan.chaos == Chaos::DaemonKills && rng.unit() < 0.5 {
                daemon.kill().await;
                daemon.spawn().await?;
            }
            offline.store(false, std::sync::atomic::Ordering::SeqCst);
            proxy.set(Fault::Pass);
        }
    }
    stop.cancel();
    while flows.join_next().await.is_some() {}
    proxy.set(Fault::Pass);
    let settle_started = Instant::now();
    let db = daemon.data.join("widgets").join(format!("{widget}.db"));
    let mut report = settle(&daemon.socket, &db, &http, &server, &demo_key, &widget, &pins).await?;
    report.settle_seconds = settle_started.elapsed().as_secs_f64();
    // What the user sees behind each unread count.
    let mut listed: HashMap<u64, Vec<u64>> = HashMap::new();
    let client = Client::connect(&daemon.socket).await?;
    for pin in &pins {
        let list = client
            .call::<Unread>(UnreadParams {
                widget: widget.clone(),
                contact: *pin,
                before: None,
                limit: None,
            })
            .await?;
        listed.insert(*pin, list.iter().map(|m| m.id).collect());
    }
    drop(client);
    daemon.stop().await;

    // The widget's database against the server's truth.
    let stored = widget_messages(&db)?;
    let (ledger_queued, ledger_offline, acknowledged, presence_changes) = {
        let l = ledger.lock().unwrap_or_else(|e| e.into_inner());
        (
            l.queued.clone(),
            l.queued_offline,
            l.acknowledged.clone(),
            l.presence_changes,
        )
    };
    let mut on_server_out: HashMap<String, usize> = HashMap::new();
    let mut to_me: Vec<HistoryMessage> = vec![];
    for pin in &pins {
        for m in history(&http, &server, &demo_key, *pin).await? {
            if m.from.0 == me {
                *on_server_out.entry(m.text.clone()).or_default() += 1;
            } else {
                to_me.push(m);
            }
        }
    }
    report.queued_by_daemon = ledger_queued.len();
    report.queued_offline = ledger_offline;
    report.lost_outgoing = ledger_queued
        .iter()
        .filter(|t| !on_server_out.contains_key(*t))
        .count();
    report.duplicated_outgoing = on_server_out.values().filter(|n| **n > 1).count();
    report.stored_by_server = to_me.len();
    let server_ids: HashSet<u64> = to_me.iter().map(|m| m.id.0).collect();
    report.acknowledged_by_server = acknowledged.len();
    report.lost_acknowledged = acknowledged.iter().filter(|id| !server_ids.contains(id)).count();
    for pin in &pins {
        let mut truth: Vec<u64> = to_me
            .iter()
            .filter(|m| m.from.0 == *pin)
            .map(|m| m.id.0)
            .collect();
        truth.sort_unstable();
        let shown: Vec<u64> = listed.get(pin).cloned().unwrap_or_default();
        let shown_set: HashSet<u64> = shown.iter().copied().collect();
        report.listed_by_widget += shown.len();
        report.lost_incoming += truth.iter().filter(|id| !shown_set.contains(id)).count();
        report.duplicated_incoming += shown.len() - shown_set.len();
        report.duplicated_incoming += shown_set.iter().filter(|id| !server_ids.contains(id)).count();
        let keep = truth.len().min(KEEP_PER_CONTACT);
        let newest: HashSet<u64> = truth[truth.len() - keep..].iter().copied().collect();
        let held: Vec<u64> = stored.get(pin).cloned().unwrap_or_default();
        let held_set: HashSet<u64> = held.iter().copied().collect();
        report.newest += newest.len();
        report.held_locally += newest.iter().filter(|id| held_set.contains(id)).count();
        report.duplicated_incoming += held.len() - held_set.len();
        report.duplicated_incoming += held_set.iter().filter(|id| !server_ids.contains(id)).count();
    }
    report.left_in_outbox = outbox_len(&db)?;
    let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    report.streams_lost = log.matches("stream lost").count();
    report.slowed_down = log.matches("limited our rate").count();
    report.presence_changes = presence_changes;
    report.chaos = Some(plan.chaos);
    report.cycles = plan.cycles;
    report.seconds = started.elapsed().as_secs_f64();
    server.kill().await;
    Ok(report)
}

/// What the widget's database keeps per contact (`pinchat_daemon::db::KEEP_PER_CONTACT`).
const KEEP_PER_CONTACT: usize = 1000;

async fn network_fault(proxy: &FaultProxy, rng: &mut Rng, max_ms: f64) {
    let ms = |rng: &mut Rng| Duration::from_millis(100 + (rng.unit() * max_ms) as u64);
    match rng.next() % 5 {
        // A black hole; with max_ms above 10 s, sometimes longer than the keepalive deadline.
        0 => {
            proxy.set(Fault::Stall);
            tokio::time::sleep(ms(rng)).await;
        }
        1 => proxy.reset_all(),
        2 => proxy.close_all(),
        3 => {
            proxy.set(Fault::Slow(Duration::from_millis(30)));
            tokio::time::sleep(ms(rng)).await;
        }
        _ => {
            proxy.set(Fault::Refuse);
            proxy.reset_all();
            tokio::time::sleep(ms(rng)).await;
        }
    }
    proxy.set(Fault::Pass);
}

async fn flow_in(
    http: reqwest::Client,
    url: String,
    keys: Vec<String>,
    me: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.is_cancelled() {
        tick.tick().await;
        let key = &keys[(n % keys.len() as u64) as usize];
        let body = SendRequest {
            to: AccountId(me),
            client_id: format!("in-{n}"),
            text: format!("in {n}"),
        };
        // Retried with the same client id until the server answers, so it is stored at most once.
        loop {
            let r = http.post(&url).bearer_auth(key).json(&body).send().await;
            if let Ok(r) = r
                && r.status().is_success()
                && let Ok(sent) = r.json::<pinchat_proto::http::SendResponse>().await
            {
                ledger
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .acknowledged
                    .push(sent.id.0);
                break;
            }
            if stop.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n += 1;
    }
}

/// Sends through the daemon: forever (until `stop`) at 20 a second, or `count` messages at once.
#[allow(clippy::too_many_arguments)]
async fn flow_out(
    socket: PathBuf,
    widget: String,
    pins: Vec<u64>,
    tag: &str,
    count: Option<usize>,
    ledger: Arc<Mutex<Ledger>>,
    offline: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) {
    let tag = tag.to_owned();
    let mut client: Option<Client> = None;
    let mut n = 0usize;
    let mut attempt = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(if count.is_some() { 1 } else { 50 }));
    while !stop.is_cancelled() && count.is_none_or(|c| n < c) {
        tick.tick().await;
        let c = match &client {
            Some(c) => c,
            None => match Client::connect(&socket).await {
                Ok(c) => client.insert(c),
                // The daemon is being restarted.
                Err(_) => continue,
            },
        };
        // Every attempt gets its own text: an attempt whose answer was lost (the daemon killed after
        // queueing it) may still be delivered, and must not be mistaken for a duplicate of the next.
        let text = format!("{tag} {n}-{attempt}");
        attempt += 1;
        let to = pins[n % pins.len()];
        match c
            .call::<SendMessage>(SendParams {
                widget: widget.clone(),
                contact: to,
                text: text.clone(),
            })
            .await
        {
            Ok(m) if m.state == Delivery::Queued => {
                let mut l = ledger.lock().unwrap_or_else(|e| e.into_inner());
                l.queued.push(text);
                if offline.load(std::sync::atomic::Ordering::SeqCst) {
                    l.queued_offline += 1;
                }
                n += 1;
            }
            // Not queued: not promised. (A lost connection is not an answer either way: the text is
            // not counted, and if the daemon queued it anyway, a duplicate would still show.)
            _ => client = None,
        }
    }
}

async fn flow_presence(
    http: reqwest::Client,
    url: String,
    keys: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) {
    let states = [
        Presence::Busy,
        Presence::Idle,
        Presence::Online,
        Presence::DoNotDisturb,
    ];
    let mut n = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !stop.is_cancelled() {
        tick.tick().await;
        let body = pinchat_proto::http::PresenceUpdate {
            state: Some(states[n % states.len()]),
            status: Some(format!("status {n}")),
        };
        let key = &keys[n % keys.len()];
        if let Ok(r) = http.put(&url).bearer_auth(key).json(&body).send().await
            && r.status().is_success()
        {
            ledger.lock().unwrap_or_else(|e| e.into_inner()).presence_changes += 1;
        }
        n += 1;
    }
}

/// Every message between the demo user and `contact`, oldest first.
async fn history(
    http: &reqwest::Client,
    server: &ServerProc,
    key: &str,
    contact: u64,
) -> anyhow::Result<Vec<HistoryMessage>> {
    let mut all = vec![];
    let mut before = String::new();
    loop {
        let page: HistoryPage = http
            .get(server.url(&format!("/v1/messages/{contact}?limit=200{before}")))
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let Some(last) = page.messages.last() {
            before = format!("&before={}", last.id.0);
        }
        let more = page.more;
        all.extend(page.messages);
        if !more {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

/// The server's truth for the pins: unread counts and presence states.
async fn truth(
    http: &reqwest::Client,
    server: &ServerProc,
    key: &str,
    pins: &[u64],
) -> anyhow::Result<BTreeMap<u64, (u32, Presence)>> {
    let list: Vec<String> = pins.iter().map(u64::to_string).collect();
    let snapshot: pinchat_proto::stream::Snapshot = http
        .get(server.url(&format!("/v1/changes?pins={}", list.join(","))))
        .bearer_auth(key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut out = BTreeMap::new();
    for c in snapshot.contacts {
        let mut unread = 0;
        let mut state = Presence::Offline;
        for f in c.fields {
            match f {
                Field::Unread(n) => unread = n,
                Field::State(s) => state = s,
                _ => {}
            }
        }
        out.insert(c.id.0, (unread, state));
    }
    Ok(out)
}

/// Waits (on the daemon's notifications) until the widget is online, confirmed, its outbox drained, and
/// its pins equal the server's truth; reports what still differs after ten minutes.
///
/// "Drained" is read from the widget's database (`db`), not from `widget.history`: the history shows a
/// message the server has stored once, as stored, even while its acknowledgement is still on the way and
/// its outbox row not yet deleted.
async fn settle(
    socket: &Path,
    db: &Path,
    http: &reqwest::Client,
    server: &ServerProc,
    key: &str,
    widget: &str,
    pins: &[u64],
) -> anyhow::Result<Report> {
    let client = Client::connect(socket).await?;
    let mut events = Client::connect(socket).await?;
    let mut rx = events.notifications().expect("notifications");
    events.call::<Subscribe>(SubscribeParams::default()).await?;
    // A widget waiting out a long back-off after the faults tries again now.
    let _ = client
        .call::<Refresh>(WidgetRef {
            widget: widget.into(),
        })
        .await;
    // A long run can leave a long outbox: it drains at the daemon's paced 40 messages a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let view = client
            .call::<Snapshot>(WidgetRef {
                widget: widget.into(),
            })
            .await?;
        let truth = truth(http, server, key, pins).await?;
        let queued = outbox_len(db)?;
        let mut report = Report::default();
        for p in &view.pins {
            if let Some((unread, state)) = truth.get(&p.id) {
                report.unread_mismatches += usize::from(p.unread != *unread);
                report.state_mismatches += usize::from(p.state != *state);
            }
        }
        let current = view.connection == Connection::Online && !view.stale && queued == 0;
        if current && report.unread_mismatches == 0 && report.state_mismatches == 0 {
            return Ok(report);
        }
        // Wait for the widget to change (or a second, for the server's side to move).
        match tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            rx.recv(),
        )
        .await
        {
            _ if tokio::time::Instant::now() >= deadline => return Ok(report),
            _ => {}
        }
    }
}

/// Received message ids per sender in a widget's database.
fn widget_messages(db: &Path) -> anyhow::Result<HashMap<u64, Vec<u64>>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT sender, id FROM messages")?;
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for row in stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })? {
        let (sender, id) = row?;
        out.entry(sender).or_default().push(id);
    }
    Ok(out)
}

fn outbox_len(db: &Path) -> anyhow::Result<usize> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))? as usize)
}
