//! The daemon's footprint: resident memory with widgets bound and idle in push mode, wake-ups while
//! idle (context switches, from `/proc`), and the time from process start to the first snapshot served
//! from its databases. Runs the real `pinchatd` (built next to this binary) against an in-process server,
//! in the session's Secret Service (`bench/run footprint` provides one).

use crate::traffic::start_server;
use pinchat_ipc::Client;
use pinchat_ipc::api::*;
use pinchat_server::config::Config;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the footprint benchmark measured.
#[derive(Serialize, Debug, Default)]
pub struct Footprint {
    /// Widgets bound.
    pub widgets: usize,
    /// Resident set size with the widgets bound and idle, kB.
    pub rss_kb: u64,
    /// Peak resident set size, kB.
    pub peak_rss_kb: u64,
    /// Threads of the daemon.
    pub threads: u64,
    /// Context switches per second while idle in push mode.
    pub idle_switches_per_sec: f64,
    /// Milliseconds from process start to the first snapshot answered from the databases.
    pub start_to_snapshot_ms: f64,
    /// Where the resident memory is, kB by kind of mapping.
    pub breakdown: Breakdown,
}

/// Resident memory by kind of mapping (`/proc/PID/smaps`), kB.
#[derive(Serialize, Debug, Default, Clone, Copy)]
pub struct Breakdown {
    /// The daemon's own executable (code and read-only data, shared with other copies).
    pub executable: u64,
    /// Shared libraries (libc, libm, …).
    pub libraries: u64,
    /// The main heap (`[heap]`, malloc's main arena).
    pub heap: u64,
    /// Other anonymous memory: malloc's per-thread arenas, thread stacks, large allocations.
    pub anonymous: u64,
    /// Files mapped by SQLite (the WAL index, `*.db-shm`).
    pub sqlite_shm: u64,
    /// Everything else (stack of the main thread, vdso, …).
    pub other: u64,
}

/// `pinchatd` next to the running binary.
pub fn daemon_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(format!("pinchatd{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p pinchat-daemon`",
        bin.display()
    );
    Ok(bin)
}

fn spawn_daemon(bin: &Path, data: &Path, socket: &Path) -> anyhow::Result<Child> {
    Ok(Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            // Not a busy loop: on two cores it would steal the CPU from the daemon being timed.
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs the benchmark with the daemon binary `bin` and `widgets` widgets (each an account of the
/// in-process server, pinning its contacts); `settle_secs` lets start-up work finish before measuring.
pub async fn run(bin: &Path, widgets: usize, settle_secs: u64, idle_secs: u64) -> anyhow::Result<Footprint> {
    let mut config = Config::default();
    config.limits.login_per_address_per_minute = 10_000;
    let (server, _world) = start_server(widgets + 5, config).await?;
    let dir = tempfile::tempdir()?;
    let (data, socket) = (dir.path().join("data"), dir.path().join("run").join("d.sock"));
    let mut daemon = spawn_daemon(bin, &data, &socket)?;
    let client = connect(&socket).await?;
    for i in 0..widgets {
        let created = client
            .call::<CreateWidget>(Login {
                server: format!("http://{}", server.addr),
                account: format!("c{i:05}"),
                password: "bench-password".into(),
            })
            .await?;
        let pins: Vec<u64> = created.contacts.iter().take(5).map(|c| c.id).collect();
        client
            .call::<SetPins>(SetPinsParams {
                widget: created.widget.id.clone(),
                pins,
            })
            .await?;
        client
            .call::<Refresh>(WidgetRef {
                widget: created.widget.id,
            })
            .await?;
    }
    drop(client);
    let pid = daemon.id();
    let mut f = Footprint {
        widgets,
        ..Footprint::default()
    };
    // Let start-up garbage (blocking-pool threads, login buffers) go before measuring.
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let before = switches(pid);
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let after = switches(pid);
    f.idle_switches_per_sec = after.saturating_sub(before) as f64 / idle_secs.max(1) as f64;
    (f.rss_kb, f.peak_rss_kb, f.threads) = memory(pid);
    f.breakdown = breakdown(pid, bin);
    stop(&mut daemon)?;

    // Start again: how soon is a widget served from its database?
    let started = Instant::now();
    let mut daemon = spawn_daemon(bin, &data, &socket)?;
    let client = connect(&socket).await?;
    let list = client.call::<ListWidgets>(NoParams {}).await?;
    let first = list
        .first()
        .ok_or_else(|| anyhow::anyhow!("no widgets after a restart"))?;
    client
        .call::<Snapshot>(WidgetRef {
            widget: first.id.clone(),
        })
        .await?;
    f.start_to_snapshot_ms = started.elapsed().as_secs_f64() * 1000.0;
    drop(client);
    stop(&mut daemon)?;
    drop(server);
    Ok(f)
}

fn stop(daemon: &mut Child) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status();
    }
    #[cfg(not(unix))]
    {
        let _ = daemon.kill();
    }
    daemon.wait()?;
    Ok(())
}

/// Voluntary and involuntary context switches of every thread of `pid` (Linux).
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// (VmRSS, VmHWM, Threads) of `pid` (Linux).
fn memory(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

/// Resident memory of `pid` by kind of mapping, from `/proc/PID/smaps` (Linux).
fn breakdown(pid: u32, bin: &Path) -> Breakdown {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    let mut b = Breakdown::default();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: address perms offset dev inode [path].
            current = Some(words.nth(4).unwrap_or("").to_owned());
            continue;
        }
        if first != "Rss:" {
            continue;
        }
        let kb: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let path = current.as_deref().unwrap_or("");
        let slot = if path.is_empty() {
            &mut b.anonymous
        } else if path == "[heap]" {
            &mut b.heap
        } else if Path::new(path) == exe {
            &mut b.executable
        } else if path.ends_with("-shm") {
            &mut b.sqlite_shm
        } else if path.contains(".so") {
            &mut b.libraries
        } else {
            &mut b.other
        };
        *slot += kb;
    }
    b
}
