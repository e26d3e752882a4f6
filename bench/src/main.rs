//! `pinchat-bench`: benchmarks that print their figures side by side, as ratios measured in one run (the
//! machines are shared and noisy, so absolute times mean little). See BENCHMARKS.md for results and the
//! exact commands.
//!
//! - `traffic`: bytes on the wire to an observer under presence churn — pinchat with 5 pins (a) and
//!   with all 500 contacts (b), against Prosody (c) and Prosody after XEP-0352 `<inactive/>` (d), all
//!   replaying one seeded schedule. The XMPP half is `bench/xmpp/traffic.py` (slixmpp), run from here.

use clap::{Parser, Subcommand};
use pinchat_bench::schedule::Schedule;
use pinchat_bench::traffic::{self, Measured};
use pinchat_bench::xmpp;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pinchat-bench",
    about = "pinchat benchmarks: figures side by side, in one run."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calls: set-up time, signalling bytes, CPU and memory of two native engines; voice and video.
    Call {
        /// Calls of each kind.
        #[arg(long, default_value_t = 5)]
        calls: usize,
        /// Seconds each call is held (CPU and memory are measured then).
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    /// Traffic to an observer under presence churn: pinchat (5 pins, all contacts) vs Prosody.
    Traffic {
        /// Contacts of the observer.
        #[arg(long, default_value_t = 500)]
        contacts: usize,
        /// Pinned contacts in configuration (a).
        #[arg(long, default_value_t = 5)]
        pins: usize,
        /// Workload length, minutes.
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// Time compression: 10 replays 5 workload minutes in 30 seconds.
        #[arg(long, default_value_t = 10.0)]
        scale: f64,
        /// Mean seconds between two state changes of one contact.
        #[arg(long, default_value_t = 60.0)]
        mean_change: f64,
        /// Seconds between messages from the first pinned contact.
        #[arg(long, default_value_t = 10.0)]
        message_every: f64,
        /// Workload seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also run Prosody (needs `prosody` and Python's `slixmpp`; see bench/run).
        #[arg(long)]
        xmpp: bool,
        /// Also run pinchat through the XMPP gateway: the contacts on Prosody, the widget on pinchat
        /// (needs `prosody`; Linux).
        #[arg(long)]
        gateway: bool,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The server: idle streams held, memory per stream, connect rate, idle CPU.
    Scale {
        /// Streams to open (bounded by the open-file limit).
        #[arg(long, default_value_t = 100_000)]
        streams: usize,
        /// Seconds to watch the server's CPU while the streams idle.
        #[arg(long, default_value_t = 10)]
        idle: u64,
        /// Also measure the same over TLS (rustls), in the same run, side by side.
        #[arg(long)]
        tls: bool,
    },
    /// TLS throughput: the server's own TLS stream against tokio-rustls, side by side on loopback.
    Tls {
        /// Megabytes echoed in the bulk test.
        #[arg(long, default_value_t = 256)]
        bulk_mb: usize,
        /// Small frames the server pushes, each flushed on its own.
        #[arg(long, default_value_t = 200_000)]
        pushes: usize,
        /// Round trips of a small frame.
        #[arg(long, default_value_t = 20_000)]
        pings: usize,
        /// Rounds per implementation, alternating; the best of each is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// The server: message latency at fixed rates across many connections, presence fan-out rate.
    Latency {
        /// Connections to open (half send, half receive; all watch the changing accounts).
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Message rates to offer, per second.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        rates: Vec<u32>,
        /// Presence changes per second to drive (each reaches every connection).
        #[arg(long, value_delimiter = ',', default_value = "5,10,20,40")]
        changes: Vec<u32>,
        /// Seconds per step.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Directory for the server's database (default: the system's temporary directory). A tmpfs
        /// such as /dev/shm separates the server's own latency from the disk's fsync time.
        #[arg(long)]
        db_dir: Option<PathBuf>,
    },
    /// Reliability: the real server and daemon SIGKILLed, or their link broken, at random moments while
    /// messages flow both ways; then what was acknowledged is compared with what is stored.
    Reliability {
        /// What strikes; several runs one after another (`--chaos daemon-kills,server-kills,network-faults`).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "daemon-kills,server-kills,network-faults"
        )]
        chaos: Vec<pinchat_bench::reliability::Chaos>,
        /// Strikes per run.
        #[arg(long, default_value_t = 100)]
        cycles: usize,
        /// Seed of the random moments and faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// An offline burst every this many strikes.
        #[arg(long, default_value_t = 10)]
        offline_every: usize,
        /// Messages typed per offline burst.
        #[arg(long, default_value_t = 80)]
        offline_burst: usize,
        /// Longest pause between strikes, milliseconds.
        #[arg(long, default_value_t = 500)]
        max_gap_ms: u64,
        /// Longest network fault, milliseconds (above 10 s, stalls outlast the keepalive deadline).
        #[arg(long, default_value_t = 12_000)]
        max_fault_ms: u64,
        /// Write the reports as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The daemon: memory with widgets bound and idle, idle wake-ups, start-up to first snapshot.
    /// Borrowing: a widget and a full client of one account, independent vs borrowing.
    Borrow {
        /// Pinned contacts (all the account's contacts).
        #[arg(long, default_value_t = 5)]
        pins: usize,
        /// Rounds of every pinned contact coming online, writing and going offline.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Seconds of idle keepalives after the workload (the server's keepalive is 5 s here).
        #[arg(long, default_value_t = 30)]
        idle: u64,
    },
    /// Cluster mode: nodes on PostgreSQL against one server on SQLite — memory per idle stream on each
    /// node, and how long a change on the first node takes to reach watchers on the last.
    Cluster {
        /// Nodes of the cluster.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Idle streams per node (and on the single server), each held by a process of its own.
        #[arg(long, default_value_t = 19_500)]
        streams_per_node: usize,
        /// Watchers of the changing account, on the last node.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Presence changes per second to drive.
        #[arg(long, value_delimiter = ',', default_value = "10,100")]
        changes: Vec<u32>,
        /// Messages per second, first node → last node (one step per rate).
        #[arg(long, value_delimiter = ',', default_value = "200,1000")]
        messages: Vec<u32>,
        /// Seconds per step.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// (Used by `cluster`.) Holds idle streams to one server until standard input closes.
    #[command(hide = true)]
    Hold {
        /// The server.
        addr: std::net::SocketAddr,
        /// A file of auth keys, one per line.
        keys: PathBuf,
    },
    Footprint {
        /// Widgets to bind, one run each (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 3, 10])]
        widgets: Vec<usize>,
        /// Seconds to count idle wake-ups over.
        #[arg(long, default_value_t = 60)]
        idle: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Traffic {
            contacts,
            pins,
            minutes,
            scale,
            mean_change,
            message_every,
            seed,
            xmpp,
            gateway,
            json,
        } => {
            let schedule =
                Schedule::generate(contacts, pins, minutes * 60.0, mean_change, message_every, seed);
            println!(
                "workload: {} contacts, {} pinned, {:.1} workload minutes at {}x ({:.0} s real): {} state changes ({} of pinned contacts), {} messages",
                contacts,
                schedule.pins.len(),
                minutes,
                scale,
                minutes * 60.0 / scale,
                schedule.changes(),
                schedule.pinned_changes(),
                schedule.messages()
            );
            let mut results = vec![
                traffic::run(&schedule, false, scale).await?,
                traffic::run(&schedule, true, scale).await?,
            ];
            if xmpp {
                results.extend(xmpp::run(&schedule, scale)?);
            }
            if gateway {
                #[cfg(target_os = "linux")]
                results.push(
                    pinchat_bench::gateway::run(&pinchat_bench::scale::server_binary()?, &schedule, scale)
                        .await?,
                );
                #[cfg(not(target_os = "linux"))]
                anyhow::bail!("the gateway configuration runs on Linux (it starts Debian's Prosody)");
            }
            report(&schedule, &results);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
                println!("\nfigures written to {}", path.display());
            }
        }
        #[cfg(not(unix))]
        Command::Hold { .. } | Command::Cluster { .. } => {
            anyhow::bail!("the cluster benchmark runs on Linux: it starts PostgreSQL and reads /proc")
        }
        #[cfg(unix)]
        Command::Hold { addr, keys } => pinchat_bench::cluster::hold(addr, &keys).await?,
        #[cfg(unix)]
        Command::Cluster {
            nodes,
            streams_per_node,
            watchers,
            changes,
            messages,
            secs,
            json,
        } => {
            let bin = pinchat_bench::scale::server_binary()?;
            let plan = pinchat_bench::cluster::Plan {
                nodes: nodes.max(2),
                streams_per_node,
                watchers,
                change_rates: changes,
                message_rates: messages,
                step: Duration::from_secs(secs),
                warm_up: Duration::from_secs(3),
            };
            let me = std::env::current_exe()?;
            let r = pinchat_bench::cluster::run(&bin, Some(&me), &plan).await?;
            println!(
                "{} nodes on PostgreSQL against one server on SQLite; {} idle streams per node, each node's held by a process of its own",
                plan.nodes, streams_per_node
            );
            println!("memory per idle stream (server RSS growth ÷ streams):");
            for (i, m) in r.cluster.memory.iter().enumerate() {
                println!(
                    "  cluster node {}    {:>8.0} bytes  ({:.1} MB → {:.1} MB)",
                    i + 1,
                    m.bytes_per_stream,
                    m.baseline_kb as f64 / 1024.0,
                    m.rss_kb as f64 / 1024.0
                );
            }
            for m in &r.single.memory {
                println!(
                    "  single server     {:>8.0} bytes  ({:.1} MB → {:.1} MB)",
                    m.bytes_per_stream,
                    m.baseline_kb as f64 / 1024.0,
                    m.rss_kb as f64 / 1024.0
                );
            }
            println!(
                "change → watchers' streams; cluster: made on node 1, watched on node {}; single: one process",
                plan.nodes
            );
            println!(
                "  {:<9} {:>7} | {:>9} {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>8}",
                "",
                "rate/s",
                "arrivals",
                "p50 ms",
                "p99 ms",
                "max ms",
                "arrivals",
                "p50 ms",
                "p99 ms",
                "max ms"
            );
            for (c, s) in r.cluster.steps.iter().zip(&r.single.steps) {
                println!(
                    "  {:<9} {:>7} | {:>9} {:>8.2} {:>8.2} {:>8.1} | {:>9} {:>8.2} {:>8.2} {:>8.1}",
                    c.what,
                    c.rate,
                    c.arrivals,
                    c.p50_ms,
                    c.p99_ms,
                    c.max_ms,
                    s.arrivals,
                    s.p50_ms,
                    s.p99_ms,
                    s.max_ms
                );
            }
            println!(
                "  p99 ratio cluster ÷ single: {}",
                r.cluster
                    .steps
                    .iter()
                    .zip(&r.single.steps)
                    .map(|(c, s)| format!("{} {}/s {:.1}×", c.what, c.rate, c.p99_ms / s.p99_ms.max(0.001)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "  CPU during the steps, % of one core: cluster nodes {:.0}% (all together) + PostgreSQL {:.0}%; single server {:.0}%",
                r.cluster.server_cpu_percent,
                r.cluster.database_cpu_percent.unwrap_or(0.0),
                r.single.server_cpu_percent
            );
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
                println!("figures written to {}", path.display());
            }
        }
        Command::Scale { streams, idle, tls } => {
            let bin = pinchat_bench::scale::server_binary()?;
            let mut runs =
                vec![pinchat_bench::scale::run(&bin, streams, Duration::from_secs(idle), false).await?];
            if tls {
                runs.push(pinchat_bench::scale::run(&bin, streams, Duration::from_secs(idle), true).await?);
            }
            println!("server scale (idle authenticated streams, one account each):");
            for s in &runs {
                println!("{}:", if s.tls { "over TLS (rustls)" } else { "plain TCP" });
                if let Some(limit) = s.fd_limit {
                    println!(
                        "  bounded by the open-file limit: {limit} per process (asked for {})",
                        s.target
                    );
                }
                println!("  streams held        {:>10}", s.streams);
                println!(
                    "  server memory       {:>10.1} MB with them, {:.1} MB before",
                    s.rss_kb as f64 / 1024.0,
                    s.baseline_rss_kb as f64 / 1024.0
                );
                println!("  per stream          {:>10.0} bytes", s.bytes_per_stream);
                println!(
                    "  connect             {:>10.1} s ({:.0} streams/s, handshake + hello + welcome)",
                    s.connect_secs, s.connect_rate
                );
                println!("  idle CPU            {:>10.2} % of one core", s.idle_cpu_percent);
            }
            if let [plain, tls] = &runs[..] {
                println!(
                    "TLS ÷ plain, memory per stream: {:.2}× (+{:.0} bytes)",
                    tls.bytes_per_stream / plain.bytes_per_stream.max(1.0),
                    tls.bytes_per_stream - plain.bytes_per_stream
                );
            }
        }
        Command::Tls {
            bulk_mb,
            pushes,
            pings,
            rounds,
        } => {
            let plan = pinchat_bench::tls::Plan {
                bulk_mb,
                pushes,
                pings,
                rounds,
            };
            let [ours, theirs] = pinchat_bench::tls::run(&plan).await?;
            println!(
                "TLS server streams on loopback, best of {rounds} alternating rounds \
                 ({bulk_mb} MB echoed, {pushes} pushes of 120 B, {pings} round trips of 120 B):"
            );
            println!(
                "  {:<32} {:>12} {:>14} {:>14}",
                "", "bulk MB/s", "pushes/s", "round trips/s"
            );
            for f in [&ours, &theirs] {
                println!(
                    "  {:<32} {:>12.0} {:>14.0} {:>14.0}",
                    f.name, f.bulk_mb_per_s, f.pushes_per_s, f.pings_per_s
                );
            }
            println!(
                "  {:<32} {:>11.2}× {:>13.2}× {:>13.2}×",
                "pinchat ÷ tokio-rustls",
                ours.bulk_mb_per_s / theirs.bulk_mb_per_s.max(1e-9),
                ours.pushes_per_s / theirs.pushes_per_s.max(1e-9),
                ours.pings_per_s / theirs.pings_per_s.max(1e-9)
            );
        }
        Command::Latency {
            connections,
            rates,
            changes,
            secs,
            db_dir,
        } => {
            let bin = pinchat_bench::scale::server_binary()?;
            let plan = pinchat_bench::latency::Plan {
                connections,
                message_rates: rates,
                change_rates: changes,
                step: Duration::from_secs(secs),
                db_dir,
            };
            let l = pinchat_bench::latency::run(&bin, &plan).await?;
            if let Some(limit) = l.fd_limit {
                println!("bounded by the open-file limit: {limit} per process (asked for {connections})");
            }
            println!(
                "messages, send → recipient's stream, {} connections open, {secs} s per rate:",
                l.connections
            );
            println!(
                "  {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>11} {:>10}",
                "offered/s", "sent", "delivered", "p50 ms", "p99 ms", "max ms", "server CPU", "bench CPU"
            );
            for m in &l.messages {
                println!(
                    "  {:>9.0} {:>8} {:>9} {:>8.2} {:>8.2} {:>8.1} {:>10.0}% {:>9.0}%",
                    m.offered_per_sec,
                    m.sent,
                    m.delivered,
                    m.p50_ms,
                    m.p99_ms,
                    m.max_ms,
                    m.server_cpu_percent,
                    m.bench_cpu_percent
                );
            }
            println!("presence fan-out, every connection pins the 5 changing accounts:");
            println!(
                "  {:>9} {:>11} {:>11} {:>11} {:>8} {:>11} {:>10}",
                "changes/s", "offered ev/s", "relayed/s", "received/s", "resyncs", "server CPU", "bench CPU"
            );
            for f in &l.fanout {
                println!(
                    "  {:>9.0} {:>11.0} {:>11.0} {:>11.0} {:>8} {:>10.0}% {:>9.0}%",
                    f.changes_per_sec,
                    f.offered_events_per_sec,
                    f.relayed_events_per_sec,
                    f.received_events_per_sec,
                    f.resyncs,
                    f.server_cpu_percent,
                    f.bench_cpu_percent
                );
            }
        }
        Command::Reliability {
            chaos,
            cycles,
            seed,
            offline_every,
            offline_burst,
            max_gap_ms,
            max_fault_ms,
            json,
        } => {
            let bins = pinchat_bench::reliability::Bins {
                server: pinchat_bench::scale::server_binary()?,
                daemon: pinchat_bench::footprint::daemon_binary()?,
            };
            let mut reports = vec![];
            let mut clean = true;
            for c in chaos {
                let plan = pinchat_bench::reliability::Plan {
                    chaos: c,
                    cycles,
                    seed,
                    offline_every,
                    offline_burst,
                    max_gap_ms,
                    max_fault_ms,
                };
                let r = pinchat_bench::reliability::run(&bins, &plan).await?;
                println!(
                    "{:?}: {} strikes in {:.0} s (settled {:.1} s after the last)",
                    c, r.cycles, r.seconds, r.settle_seconds
                );
                println!(
                    "  out: {} queued by the daemon ({} offline): lost {}, duplicated {}, left in outbox {}",
                    r.queued_by_daemon,
                    r.queued_offline,
                    r.lost_outgoing,
                    r.duplicated_outgoing,
                    r.left_in_outbox
                );
                println!(
                    "  in:  {} stored by the server ({} acknowledged, {} of those lost); {} listed by the widget: lost {}, duplicated {}; {} of the newest {} held locally",
                    r.stored_by_server,
                    r.acknowledged_by_server,
                    r.lost_acknowledged,
                    r.listed_by_widget,
                    r.lost_incoming,
                    r.duplicated_incoming,
                    r.held_locally,
                    r.newest
                );
                println!(
                    "  widget vs server: {} unread and {} presence mismatches ({} presence changes)",
                    r.unread_mismatches, r.state_mismatches, r.presence_changes
                );
                println!(
                    "  daemon: {} streams lost and resumed, told to slow down {} times",
                    r.streams_lost, r.slowed_down
                );
                clean &= r.clean();
                reports.push(r);
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&reports)?)?;
                println!("reports written to {}", path.display());
            }
            anyhow::ensure!(
                clean,
                "something was lost, duplicated or left different (see above)"
            );
        }
        #[cfg(target_os = "linux")]
        Command::Call { calls, hold } => {
            let runs = pinchat_bench::call::run(calls, Duration::from_secs(hold)).await?;
            println!(
                "calls: {calls} of each kind between two native engines (GStreamer webrtcbin) in this process, \
                 through the server's signalling; each held {hold} s"
            );
            println!(
                "  {:<34} {:>13} {:>13} {:>18} {:>10} {:>16}",
                "configuration",
                "set-up p50 ms",
                "set-up max ms",
                "signalling B/call",
                "CPU/core",
                "RSS MiB (before)"
            );
            for r in &runs {
                let bytes = r.signalling_bytes.iter().sum::<u64>() / r.signalling_bytes.len().max(1) as u64;
                println!(
                    "  {:<34} {:>13.0} {:>13.0} {:>18} {:>9.0}% {:>8.1} ({:.1})",
                    r.name,
                    traffic::percentile(&r.setup_ms, 0.5),
                    r.setup_ms.iter().cloned().fold(0.0, f64::max),
                    bytes,
                    r.cpu_share * 100.0,
                    r.rss_mib,
                    r.rss_before_mib
                );
            }
            if let [voice, video] = runs.as_slice() {
                println!(
                    "  video / voice: set-up {:.2}×, CPU {:.1}×",
                    traffic::percentile(&video.setup_ms, 0.5)
                        / traffic::percentile(&voice.setup_ms, 0.5).max(1e-9),
                    video.cpu_share / voice.cpu_share.max(1e-9)
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        Command::Call { .. } => anyhow::bail!("the native call engine runs on Linux"),
        Command::Borrow { pins, rounds, idle } => {
            let (daemon, full) = (
                pinchat_bench::borrow::sibling("pinchatd")?,
                pinchat_bench::borrow::sibling("pinchat-full")?,
            );
            let runs =
                pinchat_bench::borrow::run(&daemon, &full, pins, rounds, Duration::from_secs(idle)).await?;
            println!(
                "borrowing: one account, a widget of {pins} pins and a full client; {rounds} rounds of every pin \
                 connecting, writing once and leaving, then {idle} s idle (keepalive 5 s)"
            );
            println!(
                "  {:<36} {:>8} {:>14} {:>16} {:>9}",
                "configuration", "streams", "set-up bytes", "workload bytes", "messages"
            );
            for r in &runs {
                println!(
                    "  {:<36} {:>8} {:>14} {:>16} {:>9}",
                    r.name, r.streams, r.setup_bytes, r.workload_bytes, r.messages
                );
            }
            if let [independent, borrowing] = runs.as_slice() {
                let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
                println!(
                    "  independent / borrowing: streams {:.1}×, set-up bytes {:.2}×, workload bytes {:.2}×",
                    ratio(independent.streams, borrowing.streams),
                    ratio(independent.setup_bytes, borrowing.setup_bytes),
                    ratio(independent.workload_bytes, borrowing.workload_bytes)
                );
            }
        }
        Command::Footprint { widgets, idle } => {
            let bin = pinchat_bench::footprint::daemon_binary()?;
            let mut runs = Vec::new();
            for n in widgets {
                let f = pinchat_bench::footprint::run(&bin, n, 12, idle).await?;
                println!("daemon footprint ({} widgets bound, push mode, idle):", f.widgets);
                println!(
                    "  resident memory   {:>8.1} MB (peak {:.1} MB), {} threads",
                    mb(f.rss_kb),
                    mb(f.peak_rss_kb),
                    f.threads
                );
                let b = f.breakdown;
                println!(
                    "    executable {:.1} MB, libraries {:.1} MB, heap {:.1} MB, other anonymous {:.1} MB, SQLite WAL index {:.1} MB, other {:.1} MB",
                    mb(b.executable),
                    mb(b.libraries),
                    mb(b.heap),
                    mb(b.anonymous),
                    mb(b.sqlite_shm),
                    mb(b.other)
                );
                println!(
                    "  idle wake-ups     {:>8.2} context switches/s over {idle} s",
                    f.idle_switches_per_sec
                );
                println!(
                    "  start → snapshot  {:>8.1} ms (served from the widget databases)",
                    f.start_to_snapshot_ms
                );
                runs.push(f);
            }
            if let (Some(first), Some(last)) = (runs.first(), runs.last())
                && last.widgets > first.widgets
            {
                let extra = (last.widgets - first.widgets) as f64;
                println!(
                    "per extra widget ({} → {}): {:.2} MB resident, {:.2} MB private (heap and anonymous)",
                    first.widgets,
                    last.widgets,
                    (mb(last.rss_kb) - mb(first.rss_kb)) / extra,
                    (mb(last.breakdown.heap + last.breakdown.anonymous)
                        - mb(first.breakdown.heap + first.breakdown.anonymous))
                        / extra
                );
            }
        }
    }
    Ok(())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn human(bytes: f64) -> String {
    if bytes >= 10_000.0 {
        format!("{:.1} KB", bytes / 1000.0)
    } else {
        format!("{bytes:.0} B")
    }
}

fn report(schedule: &Schedule, results: &[Measured]) {
    println!(
        "\n{:<34} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}",
        "configuration", "initial sync", "per minute", "presence", "B/change", "messages", "delay p50"
    );
    for m in results {
        println!(
            "{:<34} {:>12} {:>12} {:>10} {:>10.1} {:>9} {:>8.1}ms",
            m.name,
            human(m.initial_bytes as f64),
            human(m.per_minute()),
            m.presence_events,
            m.bytes_per_presence(),
            m.messages,
            m.p50_ms()
        );
    }
    let a = &results[0];
    let total = |m: &Measured| (m.initial_bytes + m.run_bytes) as f64;
    println!();
    for other in &results[1..] {
        println!(
            "{} / (a): {:.1}x the bytes during the run, {:.1}x including the initial sync",
            other.name,
            other.run_bytes as f64 / a.run_bytes.max(1) as f64,
            total(other) / total(a).max(1.0)
        );
    }
    // Through the gateway, the widget's bytes against the XMPP client connected directly.
    let named = |prefix: &str| results.iter().find(|m| m.name.starts_with(prefix));
    if let (Some(c), Some(e)) = (named("(c)"), named("(e)")) {
        println!(
            "(c) XMPP (Prosody) / (e) through the gateway: {:.1}x the bytes during the run, {:.1}x including the initial sync",
            c.run_bytes as f64 / e.run_bytes.max(1) as f64,
            total(c) / total(e).max(1.0)
        );
    }
    // The ideal for (a): the pinned contacts' share of what the full-roster subscription (b) received,
    // plus the messages, which only (a)'s pins send anyway.
    if let Some(b) = results.get(1) {
        let share = schedule.pins.len() as f64 / schedule.contacts as f64;
        let message_bytes = a.run_bytes.saturating_sub(a.presence_bytes) as f64;
        let ideal = b.presence_bytes as f64 * share + message_bytes;
        println!(
            "(a) against the ideal (pinned share of (b)'s presence bytes, plus messages and keepalive): {:.2}x",
            a.run_bytes as f64 / ideal.max(1.0)
        );
    }
}
