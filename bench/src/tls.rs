//! TLS throughput: the server's own TLS stream (`pinchat_server::tls`, on rustls' unbuffered API) against
//! tokio-rustls' server stream, which it replaced, in one run on loopback with the same certificate and
//! the same rustls client.
//!
//! The server's stream saves memory on idle connections by allocating its buffers only while they hold
//! data; this measures what that costs while data flows:
//! - **bulk**: the client sends `bulk_mb` MB and the server echoes it back (full 16 KB records);
//! - **pushes**: the server writes `pushes` small frames of 120 bytes, each flushed on its own, as a
//!   stream's events are (one record, one allocation and one system call per frame);
//! - **ping-pong**: the client sends 120 bytes and waits for the server's echo, `pings` times (latency
//!   bound: two records and four system calls per round trip).
//!
//! The two implementations alternate over `rounds` rounds, and the best round of each is kept, so that a
//! burst of load from elsewhere on the machine counts against neither.

use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub bulk_mb: usize,
    pub pushes: usize,
    pub pings: usize,
    pub rounds: usize,
}

/// The best round of one implementation.
#[derive(Clone, Debug)]
pub struct Figures {
    pub name: &'static str,
    /// MB/s echoed (each byte crosses TLS twice).
    pub bulk_mb_per_s: f64,
    pub pushes_per_s: f64,
    pub pings_per_s: f64,
}

/// Which server-side stream to accept connections with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Pinchat,
    TokioRustls,
}

const FRAME: usize = 120;

/// Runs the plan for both implementations; pinchat's stream first in the result.
pub async fn run(plan: &Plan) -> anyhow::Result<[Figures; 2]> {
    let dir = tempfile::tempdir()?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    let server_config = pinchat_server::tls::load_config(&cert_path, &key_path)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let client_config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));

    let mut best = [
        Figures {
            name: "pinchat TlsStream (unbuffered)",
            bulk_mb_per_s: 0.0,
            pushes_per_s: 0.0,
            pings_per_s: 0.0,
        },
        Figures {
            name: "tokio-rustls",
            bulk_mb_per_s: 0.0,
            pushes_per_s: 0.0,
            pings_per_s: 0.0,
        },
    ];
    for _ in 0..plan.rounds {
        for (i, server) in [Server::Pinchat, Server::TokioRustls].into_iter().enumerate() {
            let f = round(plan, server, &server_config, &connector).await?;
            let b = &mut best[i];
            b.bulk_mb_per_s = b.bulk_mb_per_s.max(f.0);
            b.pushes_per_s = b.pushes_per_s.max(f.1);
            b.pings_per_s = b.pings_per_s.max(f.2);
        }
    }
    Ok(best)
}

/// One round of the three measurements on one connection: (bulk MB/s, pushes/s, pings/s).
async fn round(
    plan: &Plan,
    server: Server,
    config: &Arc<rustls::ServerConfig>,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<(f64, f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = config.clone();
    let plan_server = plan.clone();
    let serving = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        match server {
            Server::Pinchat => serve(pinchat_server::tls::accept(tcp, config).await?, &plan_server).await,
            Server::TokioRustls => {
                let s = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
                serve(s, &plan_server).await
            }
        }
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;

    // Bulk: send and receive at once (the server echoes as it reads).
    let bulk = plan.bulk_mb * 1024 * 1024;
    let data = vec![0x5a_u8; 64 * 1024];
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(&mut tls);
    let (sent, received) = tokio::join!(
        async {
            let mut left = bulk;
            while left > 0 {
                let n = left.min(data.len());
                wr.write_all(&data[..n]).await?;
                left -= n;
            }
            wr.flush().await
        },
        async {
            let mut buf = vec![0; 64 * 1024];
            let mut left = bulk;
            while left > 0 {
                let n = rd.read(&mut buf[..left.min(64 * 1024)]).await?;
                anyhow::ensure!(n > 0, "the server closed during the bulk echo");
                left -= n;
            }
            Ok(())
        }
    );
    sent?;
    received?;
    let bulk_rate = (plan.bulk_mb as f64) / secs(start.elapsed());

    // Pushes: the server writes, the client reads them all.
    let start = Instant::now();
    let mut buf = vec![0; 64 * 1024];
    let mut left = plan.pushes * FRAME;
    while left > 0 {
        let n = tls.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the server closed during the pushes");
        left -= n;
    }
    let push_rate = plan.pushes as f64 / secs(start.elapsed());

    // Ping-pong.
    let frame = [0x33_u8; FRAME];
    let mut echo = [0_u8; FRAME];
    let start = Instant::now();
    for _ in 0..plan.pings {
        tls.write_all(&frame).await?;
        tls.flush().await?;
        tls.read_exact(&mut echo).await?;
    }
    let ping_rate = plan.pings as f64 / secs(start.elapsed());

    tls.shutdown().await?;
    serving.await??;
    Ok((bulk_rate, push_rate, ping_rate))
}

/// The server's side of a round: echo the bulk, write the pushes, echo the pings, end cleanly.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, plan: &Plan) -> anyhow::Result<()> {
    let mut buf = vec![0; 64 * 1024];
    let mut left = plan.bulk_mb * 1024 * 1024;
    while left > 0 {
        let n = s.read(&mut buf[..left.min(64 * 1024)]).await?;
        anyhow::ensure!(n > 0, "the client closed during the bulk echo");
        s.write_all(&buf[..n]).await?;
        left -= n;
    }
    s.flush().await?;
    let frame = [0x44_u8; FRAME];
    for _ in 0..plan.pushes {
        s.write_all(&frame).await?;
        s.flush().await?;
    }
    let mut ping = [0_u8; FRAME];
    for _ in 0..plan.pings {
        s.read_exact(&mut ping).await?;
        s.write_all(&ping).await?;
        s.flush().await?;
    }
    // The client's close_notify, then ours.
    let n = s.read(&mut buf).await?;
    anyhow::ensure!(n == 0, "unexpected data after the pings");
    s.shutdown().await?;
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}
