//! A TCP proxy that injects network faults between a client and the server: the tool of the network
//! fault tests and of `bench/run reliability`.
//!
//! The fault applies to every connection through the proxy, existing and new, from the moment it is set:
//! - [`Fault::Pass`]: bytes flow both ways;
//! - [`Fault::Stall`]: a black hole — connections stay open but nothing flows either way (a frozen NAT
//!   or a half-open link: no FIN, no RST), and new connections are accepted and then starve;
//! - [`Fault::Slow`]: each chunk waits before it is forwarded (a congested link);
//! - [`Fault::Refuse`]: new connections are closed at once (the server looks down); existing ones flow.
//!
//! [`FaultProxy::reset_all`] and [`FaultProxy::close_all`] end the current connections with an RST or
//! a FIN respectively.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward.
    Pass,
    /// Forward nothing, close nothing.
    Stall,
    /// Delay every chunk by this much.
    Slow(Duration),
    /// Close new connections at once.
    Refuse,
}

/// How current connections are to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Reset,
    Close,
}

/// The proxy. Dropping it stops accepting; connections end when their peers close.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Bumped to end every current connection.
    generation: watch::Sender<(u64, Ending)>,
    connections: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `target`, passing traffic.
    pub async fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::Pass);
        let (generation, _) = watch::channel((0, Ending::Close));
        let connections = Arc::new(AtomicU64::new(0));
        let (f, g, count) = (fault.clone(), generation.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let mode = f.subscribe();
                let ends = g.subscribe();
                tokio::spawn(connection(client, target, mode, ends));
            }
        });
        Ok(FaultProxy {
            addr,
            fault,
            generation,
            connections,
            accept,
        })
    }

    /// Sets the fault for every connection from now on.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Ends every current connection with a TCP reset, on both sides.
    pub fn reset_all(&self) {
        self.generation.send_modify(|(n, e)| {
            *n += 1;
            *e = Ending::Reset;
        });
    }

    /// Ends every current connection with an orderly close (FIN), on both sides.
    pub fn close_all(&self) {
        self.generation.send_modify(|(n, e)| {
            *n += 1;
            *e = Ending::Close;
        });
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Fault>,
    mut ends: watch::Receiver<(u64, Ending)>,
) {
    let born = ends.borrow_and_update().0;
    if *mode.borrow_and_update() == Fault::Refuse {
        reset(&client);
        return;
    }
    // A stalled proxy does not even reach the server: the connection just hangs.
    while *mode.borrow() == Fault::Stall {
        tokio::select! {
            r = mode.changed() => if r.is_err() { return },
            _ = ends.changed() => if ends.borrow().0 != born { end(client, None, ends.borrow().1); return },
        }
    }
    let Ok(server) = TcpStream::connect(target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = pump(&mut cr, &mut sw, mode.clone());
    let down = pump(&mut sr, &mut cw, mode.clone());
    let ending = async {
        loop {
            if ends.changed().await.is_err() {
                return std::future::pending::<Ending>().await;
            }
            let (n, e) = *ends.borrow();
            if n != born {
                return e;
            }
        }
    };
    let how = tokio::select! {
        _ = up => None,
        _ = down => None,
        e = ending => Some(e),
    };
    let client = cr.reunite(cw).ok();
    let server = sr.reunite(sw).ok();
    if let (Some(client), Some(server)) = (client, server) {
        end(client, Some(server), how.unwrap_or(Ending::Close));
    }
}

/// Ends a connection: a reset drops the sockets with a zero linger (RST); a close shuts them down.
fn end(client: TcpStream, server: Option<TcpStream>, how: Ending) {
    for s in std::iter::once(client).chain(server) {
        match how {
            Ending::Reset => {
                reset(&s);
                drop(s);
            }
            Ending::Close => {
                let std = s.into_std();
                if let Ok(std) = std {
                    let _ = std.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
}

/// Makes closing the socket send an RST. (tokio deprecates `set_linger` because a non-zero linger blocks
/// the thread on drop; a zero linger never does.)
#[allow(deprecated)]
fn reset(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Copies one direction, obeying the fault.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
    mut mode: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Fault::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Fault::Slow(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Pass | Fault::Refuse => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn passes_stalls_resumes_and_resets() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = [0u8; 4];
        c.write_all(b"ping").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set(Fault::Stall);
        c.write_all(b"lost").await.unwrap();
        let starved = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
        assert!(
            starved.is_err(),
            "a stalled link passes nothing and closes nothing"
        );
        proxy.set(Fault::Pass);
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            &buf, b"lost",
            "held bytes flow once the stall ends, like TCP retransmissions"
        );

        proxy.reset_all();
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");

        proxy.set(Fault::Refuse);
        let mut d = TcpStream::connect(proxy.addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), d.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
}
