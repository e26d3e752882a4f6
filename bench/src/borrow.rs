//! What borrowing buys (claims 9 and 12): a widget and a full client of the same account, measured
//! side by side in one run — **independent** (the daemon with `borrow = false`: two connections) and
//! **borrowing** (one connection, the full client's). Each configuration runs against a fresh
//! in-process server behind a byte-counting proxy, with the same workload: `rounds` times, every pinned
//! contact's client connects, subscribes (so the contact is online), writes the account one message
//! and leaves (the server shows a contact offline only after its 10 s presence grace, so the widget sees
//! each contact come online once and go offline once); then idle keepalives (the server's keepalive is
//! 5 s here). Reported: the server's open streams for the account, and bytes from the server — for the
//! set-up (login, the widget's first snapshot) and for the workload. The full client follows its
//! whole contact list (a roster subscription, received before the set-up is counted); the pinned
//! contacts' changes reach it on that subscription in both configurations, and in the borrowing one the
//! widget's subscription rides on the same stream. So the bytes compared are the widget's traffic, the
//! second stream's hand-shake and keepalives.

use crate::proxy::CountingProxy;
use crate::traffic::{self, start_server};
use pinchat_ipc::Client;
use pinchat_ipc::api::*;
use pinchat_proto::stream::ClientFrame;
use pinchat_server::config::Config;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One configuration's figures.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Borrowed {
    /// Configuration name.
    pub name: String,
    /// Streams the server held for the account at rest.
    pub streams: u64,
    /// Bytes from the server until the widget was online through its link.
    pub setup_bytes: u64,
    /// Bytes from the server during the workload and the idle time after it.
    pub workload_bytes: u64,
    /// Messages the widget received.
    pub messages: u64,
    /// How the widget was carried.
    pub via: String,
}

/// `pinchat-full` or `pinchatd` next to the running binary.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it (bench/run borrow does)",
        bin.display()
    );
    Ok(bin)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs both configurations with `pins` pinned contacts and `rounds` online/offline rounds, each
/// against a fresh server (so that ids and cursors, which grow, cost both the same bytes).
/// `daemon` and `full` are the `pinchatd` and `pinchat-full` programs (the latter named so: the daemon
/// borrows only from a program of that name).
pub async fn run(
    daemon: &Path,
    full: &Path,
    pins: usize,
    rounds: usize,
    idle: Duration,
) -> anyhow::Result<Vec<Borrowed>> {
    let mut out = Vec::new();
    for borrow in [false, true] {
        let mut config = Config::default();
        config.limits.login_per_address_per_minute = 10_000;
        config.keepalive_secs = 5;
        let (server, world) = start_server(pins, config).await?;
        out.push(configuration(&server.addr, &world, daemon, full, borrow, rounds, idle).await?);
    }
    Ok(out)
}

async fn configuration(
    server: &std::net::SocketAddr,
    world: &traffic::World,
    daemon_bin: &Path,
    full_bin: &Path,
    borrow: bool,
    rounds: usize,
    idle: Duration,
) -> anyhow::Result<Borrowed> {
    let proxy = CountingProxy::start(*server).await?;
    let url = format!("http://{}", proxy.addr);
    let dir = tempfile::tempdir()?;
    let (socket, config) = (
        dir.path().join("run").join("d.sock"),
        dir.path().join("pinchatd.toml"),
    );
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nsocket = {:?}\nborrow = {borrow}\n",
            dir.path().join("data"),
            socket
        ),
    )?;
    let _daemon = Killed(
        Command::new(daemon_bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let client = connect(&socket).await?;

    // The full client first, as a person who has it open all day would have it.
    let mut full = Command::new(full_bin)
        .args(["--headless", "--server", &url, "--account", "observer"])
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .env("PINCHAT_PASSWORD", "bench-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("full.log"))?)
        .spawn()?;
    // Read off the runtime: the proxy it logs in through runs on this runtime's tasks. It says it is
    // ready, then that it knows its contact list: its own roster snapshot is then in, and not counted
    // as the widget's set-up. (Killed, on any error too, so that a read waiting on it ends.)
    let stdout = full.stdout.take().expect("piped");
    let full_pid = full.id();
    let _full = Killed(full);
    let said = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<String>, _)> {
        let mut out = BufReader::new(stdout);
        let mut said = vec![];
        loop {
            let mut line = String::new();
            if out.read_line(&mut line)? == 0 {
                return Ok((said, out));
            }
            let known = line.starts_with("pinchat-full knows its");
            said.push(line);
            if known {
                // Kept for the run: its standard output stays connected.
                return Ok((said, out));
            }
        }
    });
    let (said, _stdout) = tokio::time::timeout(Duration::from_secs(30), said)
        .await
        .map_err(|_| anyhow::anyhow!("pinchat-full did not get its contact list within 30 s"))???;
    anyhow::ensure!(
        said.first().is_some_and(|l| l.starts_with("pinchat-full ready"))
            && said
                .last()
                .is_some_and(|l| l.starts_with("pinchat-full knows its")),
        "pinchat-full said {said:?}; its log:\n{}",
        std::fs::read_to_string(dir.path().join("full.log")).unwrap_or_default()
    );

    let start_bytes = proxy.bytes_down();
    let created = client
        .call::<CreateWidget>(Login {
            server: url.clone(),
            account: "observer".into(),
            password: "bench-password".into(),
        })
        .await?;
    let widget = created.widget.id.clone();
    client
        .call::<SetPins>(SetPinsParams {
            widget: widget.clone(),
            pins: world.contacts.iter().map(|(_, id)| id.0).collect(),
        })
        .await?;
    let expected = if borrow {
        Via::FullClient { pid: full_pid }
    } else {
        Via::Own
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = client
            .call::<Refresh>(WidgetRef {
                widget: widget.clone(),
            })
            .await?;
        if view.connection == Connection::Online && view.via == expected {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the widget never got {expected:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server notices a closed stream (the daemon's own, once it borrows) within moments.
    let want = if borrow { 1 } else { 2 };
    let settle = Instant::now() + Duration::from_secs(5);
    let mut streams = streams(server).await?;
    while streams != want && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
        streams = self::streams(server).await?;
    }
    let setup_bytes = proxy.bytes_down() - start_bytes;

    // The workload: every pinned contact comes online, writes, goes offline; `rounds` times.
    let mut notifications = {
        let mut c = Client::connect(&socket).await?;
        let rx = c.notifications().expect("first call");
        c.call::<Subscribe>(SubscribeParams::default()).await?;
        (c, rx)
    };
    let before = proxy.bytes_down();
    let mut sent = 0u64;
    for round in 0..rounds {
        for (i, (key, _)) in world.contacts.iter().enumerate() {
            // A contact's client subscribes (that is what makes it online to others), writes, leaves.
            let mut ws = traffic::connect(*server, key).await?;
            traffic::send(
                &mut ws,
                &ClientFrame::Subscribe {
                    req: 2,
                    sub: 0,
                    pins: vec![world.observer.1],
                    resume: None,
                },
            )
            .await?;
            traffic::next(&mut ws).await?;
            traffic::send(
                &mut ws,
                &ClientFrame::Send {
                    req: 1,
                    to: world.observer.1,
                    // Unique across configurations: the server stores a client id once.
                    client_id: format!("{borrow}-r{round}-{i}"),
                    text: format!("round {round} from {i}"),
                },
            )
            .await?;
            // The ack: the message is stored before the contact goes offline again.
            while !matches!(
                traffic::next(&mut ws).await?.0,
                pinchat_proto::stream::ServerFrame::Ack { req: 1, .. }
            ) {}
            sent += 1;
            drop(ws);
        }
    }
    let mut received = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received < sent {
        match tokio::time::timeout_at(deadline, notifications.1.recv()).await {
            Ok(Some(Notification::MessageReceived { .. })) => received += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => anyhow::bail!("{received} of {sent} messages reached the widget"),
        }
    }
    tokio::time::sleep(idle).await;
    let workload_bytes = proxy.bytes_down() - before;
    drop(notifications);
    Ok(Borrowed {
        name: if borrow {
            "widget + full client, borrowing".into()
        } else {
            "widget + full client, independent".into()
        },
        streams,
        setup_bytes,
        workload_bytes,
        messages: received,
        via: format!("{expected:?}"),
    })
}

async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The server's open streams (before any contact connects, all of them are the account's).
async fn streams(server: &std::net::SocketAddr) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("http://{server}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("pinchat_streams "))
        .ok_or_else(|| anyhow::anyhow!("no pinchat_streams metric"))?
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("pinchat_streams: {e}"))
}
