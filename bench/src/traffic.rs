//! The pinchat half of the traffic benchmark: the real server (in this process, on its own runtime and
//! threads), 500 contact streams driven by the schedule, and one observer stream behind a byte-counting
//! TCP proxy — subscribed to 5 pins (configuration a) or to all 500 contacts (configuration b).

use crate::proxy::CountingProxy;
use crate::schedule::Schedule;
use futures_util::{SinkExt, StreamExt};
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_proto::{AccountId, Field, PROTOCOL_VERSION, Presence};
use pinchat_server::config::Config;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What one configuration measured, in the units BENCHMARKS.md reports.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Measured {
    /// Configuration name.
    pub name: String,
    /// Bytes from the server to the observer until its initial state was complete.
    pub initial_bytes: u64,
    /// Bytes from the server to the observer during the run (after the initial sync).
    pub run_bytes: u64,
    /// Length of the run in workload minutes.
    pub window_minutes: f64,
    /// Presence changes the observer received.
    pub presence_events: u64,
    /// Wire bytes of those presence changes (frame sizes, framing included).
    pub presence_bytes: u64,
    /// Messages the observer received.
    pub messages: u64,
    /// Message delivery delays, milliseconds (sender's send → observer's receipt).
    pub delays_ms: Vec<f64>,
}

impl Measured {
    /// Run bytes per workload minute.
    pub fn per_minute(&self) -> f64 {
        self.run_bytes as f64 / self.window_minutes
    }

    /// Median delivery delay.
    pub fn p50_ms(&self) -> f64 {
        percentile(&self.delays_ms, 0.5)
    }

    /// Bytes per presence change, framing included.
    pub fn bytes_per_presence(&self) -> f64 {
        if self.presence_events == 0 {
            0.0
        } else {
            self.presence_bytes as f64 / self.presence_events as f64
        }
    }
}

/// The p-th quantile of a sample (nearest rank).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// A server running on its own runtime and threads, stopped on drop.
pub struct InProcessServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accounts created for a run: the observer's key and id, and each contact's key and id.
pub struct World {
    /// Observer (key, id).
    pub observer: (String, AccountId),
    /// Contacts (key, id), by schedule index.
    pub contacts: Vec<(String, AccountId)>,
}

/// Creates `n` accounts ("c00000", …) with one key each, directly in the database at
/// `config.database`; returns the keys and ids. Concurrent writes are committed in groups, so this
/// takes a few hundred commits, not tens of thousands.
pub async fn seed_accounts(config: &Config, n: usize) -> anyhow::Result<Vec<(String, AccountId)>> {
    let (store, writer) = pinchat_server::open_store(config, None).await?;
    let hash = tokio::task::spawn_blocking(|| pinchat_server::auth::hash_password("bench-password")).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let far = now + 365 * 24 * 3600 * 1000;
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(2048) {
        let batch = futures_util::future::try_join_all(chunk.iter().map(|&i| {
            let (store, hash) = (store.clone(), hash.clone());
            async move {
                let id = store
                    .create_account(&format!("c{i:05}"), &hash, &format!("Contact {i}"))
                    .await?;
                let (key, key_hash) = pinchat_server::auth::generate_key();
                store.insert_key(id, key_hash, far).await?;
                anyhow::Ok((key, id))
            }
        }))
        .await?;
        out.extend(batch);
    }
    drop(store);
    tokio::task::spawn_blocking(move || writer.join()).await?;
    Ok(out)
}

/// Creates the accounts directly in a fresh database and starts the server on it.
pub async fn start_server(contacts: usize, mut config: Config) -> anyhow::Result<(InProcessServer, World)> {
    let dir = tempfile::tempdir()?;
    config.database = dir.path().join("bench.db");
    config.listen = "127.0.0.1:0".parse()?;
    let contacts = seed_accounts(&config, contacts).await?;
    let world = {
        let (store, writer) = pinchat_server::open_store(&config, None).await?;
        let hash =
            tokio::task::spawn_blocking(|| pinchat_server::auth::hash_password("bench-password")).await?;
        let observer = store.create_account("observer", &hash, "Observer").await?;
        futures_util::future::try_join_all(contacts.iter().map(|(_, id)| store.link(observer, *id))).await?;
        let (key, key_hash) = pinchat_server::auth::generate_key();
        let far = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64
            + 365 * 24 * 3600 * 1000;
        store.insert_key(observer, key_hash, far).await?;
        drop(store);
        tokio::task::spawn_blocking(move || writer.join()).await?;
        World {
            observer: (key, observer),
            contacts,
        }
    };
    let listener = std::net::TcpListener::bind(config.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let thread = std::thread::Builder::new()
        .name("bench-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                if let Err(e) =
                    pinchat_server::run(config, listener, token, pinchat_server::RunOptions::default()).await
                {
                    eprintln!("server failed: {e:#}");
                }
            });
        })?;
    Ok((
        InProcessServer {
            addr,
            stop,
            thread: Some(thread),
            _dir: dir,
        },
        world,
    ))
}

/// Opens a stream and says hello.
pub async fn connect(addr: SocketAddr, key: &str) -> anyhow::Result<Ws> {
    let mut request = format!("ws://{addr}/v1/stream").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    send(
        &mut ws,
        &ClientFrame::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await?;
    match next(&mut ws).await?.0 {
        ServerFrame::Welcome(_) => Ok(ws),
        other => anyhow::bail!("expected welcome, got {other:?}"),
    }
}

/// Sends a binary frame.
pub async fn send(ws: &mut Ws, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(WsMessage::Binary(codec::encode(Encoding::Binary, frame).into()))
        .await?;
    Ok(())
}

/// The next frame and its size on the wire.
pub async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> anyhow::Result<(ServerFrame, u64)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(b))) => {
                let len = b.len() as u64;
                let wire = len
                    + if len < 126 {
                        2
                    } else if len < 65536 {
                        4
                    } else {
                        10
                    };
                return Ok((codec::decode_server(Encoding::Binary, &b)?, wire));
            }
            Some(Ok(WsMessage::Close(c))) => anyhow::bail!("closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("stream ended"),
        }
    }
}

/// What the schedule asks of one contact.
pub enum ContactCmd {
    /// Change state.
    State(Presence),
    /// Send message `m<seq>` to the observer.
    Message(u32),
}

/// Runs configuration (a) (`all_pins == false`) or (b).
pub async fn run(schedule: &Schedule, all_pins: bool, scale: f64) -> anyhow::Result<Measured> {
    let mut config = Config::default();
    config.limits.max_pins = 1000;
    config.limits.max_connections = 100_000;
    config.limits.stream_frames_per_second = 10_000;
    config.limits.stream_queue = 4096;
    let (server, world) = start_server(schedule.contacts, config).await?;
    let addr = server.addr;

    // Every contact connects (and so comes online) before the observer does.
    let streams =
        futures_util::future::try_join_all(world.contacts.iter().map(|(key, _)| connect(addr, key))).await?;
    let sent_at: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let mut drivers = Vec::with_capacity(streams.len());
    let observer_id = world.observer.1;
    for (i, mut ws) in streams.into_iter().enumerate() {
        let (tx, mut rx) = mpsc::channel::<ContactCmd>(64);
        drivers.push(tx);
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let mut req = 0u32;
            loop {
                tokio::select! {
                    cmd = rx.recv() => {
                        req += 1;
                        let frame = match cmd {
                            None => return,
                            Some(ContactCmd::State(state)) => ClientFrame::SetPresence { req, state: Some(state), status: None },
                            Some(ContactCmd::Message(seq)) => {
                                sent_at.lock().unwrap().insert(seq, Instant::now());
                                ClientFrame::Send { req, to: observer_id, client_id: format!("{i}-{seq}"), text: format!("m{seq}") }
                            }
                        };
                        if send(&mut ws, &frame).await.is_err() {
                            return;
                        }
                    }
                    // Acknowledgements; and this keeps the socket read.
                    r = ws.next() => if r.is_none() { return },
                }
            }
        });
    }
    let pins: Vec<AccountId> = if all_pins {
        world.contacts.iter().map(|c| c.1).collect()
    } else {
        schedule.pins.iter().map(|&i| world.contacts[i].1).collect()
    };
    // Wait (on a stream outside the proxy) until the server shows every contact online.
    let all: Vec<AccountId> = world.contacts.iter().map(|c| c.1).collect();
    wait_all_online(addr, &world.observer.0, &all).await?;

    let (proxy, observe, stop) =
        observe(addr, &world.observer.0, pins, schedule, scale, sent_at.clone()).await?;
    let initial = proxy.initial;
    let proxy = proxy.proxy;

    let mut m = replay(schedule, scale, &drivers, stop, observe).await?;
    m.name = if all_pins {
        "(b) pinchat, all 500 contacts".into()
    } else {
        format!("(a) pinchat, {} pins", schedule.pins.len())
    };
    m.initial_bytes = initial;
    m.run_bytes = proxy.bytes_down() - initial;
    m.window_minutes = schedule.window_secs / 60.0;
    drop(drivers);
    drop(server);
    Ok(m)
}

/// Replays the schedule at the time scale through the contacts' drivers, then lets the last events
/// arrive (the observer stops by itself after the last message, or 10 s after the window) and returns
/// what the observer counted.
pub async fn replay(
    schedule: &Schedule,
    scale: f64,
    drivers: &[mpsc::Sender<ContactCmd>],
    stop: CancellationToken,
    observe: tokio::task::JoinHandle<Measured>,
) -> anyhow::Result<Measured> {
    let start = tokio::time::Instant::now();
    for e in &schedule.events {
        tokio::time::sleep_until(start + Duration::from_secs_f64(e.t / scale)).await;
        let cmd = match (&e.state, e.seq) {
            (Some(state), _) => ContactCmd::State(state.parse().map_err(|e: String| anyhow::anyhow!(e))?),
            (None, Some(seq)) => ContactCmd::Message(seq),
            _ => continue,
        };
        drivers[e.contact].send(cmd).await?;
    }
    tokio::time::sleep_until(start + Duration::from_secs_f64(schedule.window_secs / scale)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), stop.cancelled()).await;
    stop.cancel();
    Ok(observe.await?)
}

/// Waits until a subscription of `key` to `all` shows every one of them online.
pub async fn wait_all_online(addr: SocketAddr, key: &str, all: &[AccountId]) -> anyhow::Result<()> {
    let mut check = connect(addr, key).await?;
    send(
        &mut check,
        &ClientFrame::Subscribe {
            req: 1,
            sub: 0,
            pins: all.to_vec(),
            resume: None,
        },
    )
    .await?;
    let mut online = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while online.len() < all.len() {
        anyhow::ensure!(Instant::now() < deadline, "contacts did not all come online");
        let frame = tokio::time::timeout(Duration::from_secs(30), next(&mut check))
            .await??
            .0;
        let updates = match frame {
            ServerFrame::Snapshot(s) => s.contacts.into_iter().map(|c| (c.id, c.fields)).collect(),
            ServerFrame::Delta { contact, fields, .. } => vec![(contact, fields)],
            _ => vec![],
        };
        for (id, fields) in updates {
            if fields.contains(&Field::State(Presence::Online)) {
                online.insert(id);
            }
        }
    }
    Ok(())
}

/// The observer's proxy and the bytes it had carried when the initial snapshot was in.
pub struct Observed {
    /// The byte counter.
    pub proxy: CountingProxy,
    /// Bytes down once the snapshot arrived.
    pub initial: u64,
}

/// Subscribes the observer (`key`, behind a byte-counting proxy) to `pins` and counts what arrives in a
/// task — presence changes, messages (timed against `sent_at`, by the `m<seq>` text) — pinging as a
/// daemon would, until `stop` or the schedule's last message.
pub async fn observe(
    addr: SocketAddr,
    key: &str,
    pins: Vec<AccountId>,
    schedule: &Schedule,
    scale: f64,
    sent_at: Arc<Mutex<HashMap<u32, Instant>>>,
) -> anyhow::Result<(Observed, tokio::task::JoinHandle<Measured>, CancellationToken)> {
    let proxy = CountingProxy::start(addr).await?;
    let mut observer = connect(proxy.addr, key).await?;
    send(
        &mut observer,
        &ClientFrame::Subscribe {
            req: 1,
            sub: 0,
            pins,
            resume: None,
        },
    )
    .await?;
    match next(&mut observer).await?.0 {
        ServerFrame::Snapshot(_) => {}
        other => anyhow::bail!("expected a snapshot, got {other:?}"),
    }
    let initial = proxy.bytes_down();

    // The observer: count what arrives, time the messages, ping as a daemon would.
    let stop = CancellationToken::new();
    let total_messages = schedule.messages() as u64;
    let observe = {
        let stop = stop.clone();
        let ping_every = Duration::from_secs_f64(30.0 / scale);
        tokio::spawn(async move {
            let mut m = Measured::default();
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return m,
                    _ = ping.tick() => {
                        let _ = observer.send(WsMessage::Ping(Vec::new().into())).await;
                    }
                    frame = next(&mut observer) => match frame {
                        Ok((ServerFrame::Delta { fields, .. }, wire)) => {
                            if fields.iter().any(|f| matches!(f, Field::State(_))) {
                                m.presence_events += 1;
                                m.presence_bytes += wire;
                            }
                        }
                        Ok((ServerFrame::Message { message, .. }, _)) => {
                            let now = Instant::now();
                            if let Some(seq) = message.text.strip_prefix('m').and_then(|s| s.parse::<u32>().ok())
                                && let Some(t) = sent_at.lock().unwrap().get(&seq)
                            {
                                m.delays_ms.push(now.duration_since(*t).as_secs_f64() * 1000.0);
                            }
                            m.messages += 1;
                            if m.messages == total_messages {
                                stop.cancel();
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return m,
                    },
                }
            }
        })
    };

    Ok((Observed { proxy, initial }, observe, stop))
}
