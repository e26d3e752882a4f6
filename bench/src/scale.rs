//! Server scale: how many idle authenticated streams one server process holds, what each costs in
//! server memory, how fast they connect, and how much CPU the server spends while they idle.
//!
//! The server is the real `pinchat-server` binary (built next to this one) in its own process, so that
//! its memory is its own. Each stream is a separate account with its own key, as in real life. The
//! number of streams is bounded by the open-file limit of the two processes: the benchmark raises its
//! soft limit to the hard one, and reports the bound when it is below the target.

use crate::traffic::next;
use futures_util::SinkExt;
use pinchat_proto::PROTOCOL_VERSION;
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{ClientFrame, ServerFrame};
use pinchat_server::config::Config;
use serde::Serialize;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What the scale benchmark measured.
#[derive(Serialize, Debug, Default)]
pub struct Scale {
    /// Over TLS.
    pub tls: bool,
    /// Streams asked for.
    pub target: usize,
    /// Streams held.
    pub streams: usize,
    /// The open-file limit that bounded the run, if it did.
    pub fd_limit: Option<u64>,
    /// Server RSS before any stream, kB.
    pub baseline_rss_kb: u64,
    /// Server RSS with every stream open and idle, kB.
    pub rss_kb: u64,
    /// Server memory per stream, bytes.
    pub bytes_per_stream: f64,
    /// Seconds to open them all.
    pub connect_secs: f64,
    /// Streams opened per second.
    pub connect_rate: f64,
    /// Server CPU while every stream idles, percent of one core.
    pub idle_cpu_percent: f64,
}

/// `pinchat-server` next to the running binary.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    let bin =
        std::env::current_exe()?.with_file_name(format!("pinchat-server{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p pinchat-server`",
        bin.display()
    );
    Ok(bin)
}

/// A `pinchat-server` process; killed when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `bin` with the configuration file `config` (TOML), written into `dir`, on an ephemeral
    /// loopback port, and waits until it listens.
    pub fn spawn(bin: &Path, dir: &Path, config: &str) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn_with(bin, dir, config, &[])
    }

    /// [`ServerProcess::spawn`] with extra environment variables.
    pub fn spawn_with(
        bin: &Path,
        dir: &Path,
        config: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<ServerProcess> {
        let config_path = dir.join("server.toml");
        std::fs::write(&config_path, config)?;
        // A profiler may wrap the server (`PINCHAT_BENCH_WRAP=heaptrack`, see BENCHMARKS.md).
        let mut command = match std::env::var_os("PINCHAT_BENCH_WRAP") {
            Some(wrapper) => {
                let mut c = Command::new(wrapper);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let addr: SocketAddr = loop {
            let mut line = String::new();
            anyhow::ensure!(
                out.read_line(&mut line)? > 0,
                "the server exited before listening"
            );
            let line = line.trim();
            if let Some(addr) = line
                .strip_prefix("pinchat-server listening on http://")
                .or_else(|| line.strip_prefix("pinchat-server listening on https://"))
            {
                break addr.parse()?;
            }
        };
        Ok(ServerProcess {
            pid: child.id(),
            child,
            addr,
        })
    }

    /// A counter from the server's `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        tcp.read_to_string(&mut body).await?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Runs the benchmark with the server binary `bin`, asking for `target` streams (over TLS with `tls`),
/// and watches the server's CPU for `idle` once they are all open.
pub async fn run(bin: &Path, target: usize, idle: Duration, tls: bool) -> anyhow::Result<Scale> {
    let limit = raise_fd_limit();
    // Each stream takes one descriptor here and one in the server; keep some for everything else.
    let streams = match limit {
        Some(l) => target.min(l.saturating_sub(300) as usize),
        None => target,
    };
    let dir = tempfile::tempdir()?;
    // Idle means idle: no keepalive is due during the measurement.
    let mut config = Config {
        database: dir.path().join("scale.db"),
        keepalive_secs: 3600,
        ..Config::default()
    };
    config.limits.max_connections = target + 1000;
    config.limits.login_per_address_per_minute = 1_000_000;
    let keys = crate::traffic::seed_accounts(&config, streams).await?;
    // With TLS: a self-signed certificate for the loopback address, which the load generator trusts.
    let (tls_table, client) = if tls {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])?;
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem())?;
        std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone())?;
        let client =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        (
            format!(
                "[tls]\ncert = {:?}\nkey = {:?}\n",
                cert_path.display().to_string(),
                key_path.display().to_string()
            ),
            Some(Arc::new(client)),
        )
    } else {
        (String::new(), None)
    };
    let server = ServerProcess::spawn(
        bin,
        dir.path(),
        &format!(
            "database = {:?}\nkeepalive_secs = 3600\n{tls_table}[limits]\nmax_connections = {}\n",
            config.database.display().to_string(),
            target + 1000
        ),
    )?;
    let addr = server.addr;
    let pid = server.pid;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kb(pid);

    // Open the streams, a few hundred at a time, from several loopback addresses so that no single
    // source address runs out of ports.
    let started = Instant::now();
    let mut open = Vec::with_capacity(streams);
    for chunk in keys.chunks(256) {
        let batch = futures_util::future::try_join_all(chunk.iter().enumerate().map(|(i, (key, _))| {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8));
            open_stream_with(addr, source, key, client.as_ref())
        }))
        .await?;
        open.extend(batch);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kb(pid);
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    tokio::time::sleep(idle).await;
    let idle_cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    drop(open);
    drop(server);
    Ok(Scale {
        tls,
        target,
        streams,
        fd_limit: limit.filter(|_| streams < target),
        baseline_rss_kb: baseline,
        rss_kb: rss,
        bytes_per_stream: (rss.saturating_sub(baseline) * 1024) as f64 / streams.max(1) as f64,
        connect_secs,
        connect_rate: streams as f64 / connect_secs,
        idle_cpu_percent: idle_cpu,
    })
}

/// A load-generator stream.
pub type Ws = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a stream from the loopback address `source` with small client buffers and says hello.
pub async fn open_stream(addr: SocketAddr, source: IpAddr, key: &str) -> anyhow::Result<Ws> {
    open_stream_with(addr, source, key, None).await
}

/// Like [`open_stream`], over TLS when `tls` is given (a client configuration trusting the server).
pub async fn open_stream_with(
    addr: SocketAddr,
    source: IpAddr,
    key: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr).await?;
    let (tcp, scheme) = match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await?;
            (MaybeTlsStream::Rustls(tls), "wss")
        }
        None => (MaybeTlsStream::Plain(tcp), "ws"),
    };
    let mut request = format!("{scheme}://{addr}/v1/stream").into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    // The load generator's own buffers stay small too: it shares the machine with the server.
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
    ws.send(WsMessage::Binary(
        codec::encode(
            Encoding::Binary,
            &ClientFrame::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .into(),
    ))
    .await?;
    match next_frame(&mut ws).await? {
        ServerFrame::Welcome(_) => Ok(ws),
        other => anyhow::bail!("expected welcome, got {other:?}"),
    }
}

async fn next_frame(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    next(ws).await.map(|(f, _)| f)
}

/// Resident memory of `pid`, kB (Linux).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU of `pid`, in clock ticks (Linux, 100 per second).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after the last ')'.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}
