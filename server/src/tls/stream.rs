//! A server-side TLS stream on rustls' unbuffered API, whose buffers exist only while they hold data.
//!
//! rustls' buffered `ServerConnection` (which tokio-rustls wraps) keeps a 4 KB receive buffer for the whole
//! life of a connection, and most of pinchat's connections are streams that sit idle for hours: with it an idle
//! TLS stream cost 11 KB against 4 KB over plain TCP (BENCHMARKS.md §3). Here the three buffers a TLS
//! connection needs — ciphertext received and not yet processed, plaintext decrypted and not yet read, and
//! ciphertext encrypted and not yet sent — are plain `Vec`s owned by the stream, and each is released as soon
//! as it is empty, so an idle connection holds nothing but rustls' session state and keys.
//!
//! Ordering is the invariant that keeps this simple: everything rustls asks to send (handshake flights, session
//! tickets, key updates, alerts) and every application record are appended to one outgoing queue and sent from
//! it front to back, so rustls can be told that its data went out (`TransmitTlsData::done`) as soon as it is
//! queued — nothing can overtake it.

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much room to make for each read from the socket (rustls' own buffered API reads this much too).
const READ_SIZE: usize = 4096;

/// The most ciphertext held before it forms a complete message: the largest handshake message (which may span
/// several records and is joined in place) plus one record of the largest size.
const MAX_INCOMING: usize = 0xffff + 16_384 + 2_048 + 5;

/// The most plaintext encrypted by one `poll_write`, so that one large write does not queue unbounded
/// ciphertext: four records of the largest size.
const MAX_WRITE: usize = 4 * 16_384;

/// A TLS connection accepted by the server, readable and writable like the TCP stream under it.
pub struct TlsStream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet consumed by rustls (a partial record at most, between reads).
    incoming: Vec<u8>,
    /// Plaintext decrypted and not yet read, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Ciphertext to send, from `outgoing_sent` on, in the order rustls produced it.
    outgoing: Vec<u8>,
    outgoing_sent: usize,
    /// The peer sent close_notify or closed its side of the socket: no more data will be read.
    read_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls failed (and its state is an error): it is not driven again, since its error path would
    /// report the same failure again with a second alert.
    failed: bool,
}

/// What to do when rustls allows application data to be sent.
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where driving rustls stopped.
#[derive(Debug, PartialEq, Eq)]
enum Driven {
    /// The handshake needs more data from the peer.
    Blocked,
    /// Application data may be sent (and the action was done).
    Traffic,
    /// Both sides have sent close_notify.
    Closed,
}

/// Accepts a TLS connection on `io`: runs the handshake to its end and sends everything the server has to say
/// after it (TLS 1.3 session tickets), so the stream returned is ready for application data.
pub async fn accept(io: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut s = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        plaintext_read: 0,
        outgoing: Vec::new(),
        outgoing_sent: 0,
        read_closed: false,
        close_queued: false,
        failed: false,
    };
    loop {
        let driven = s.drive(Action::Nothing, None);
        if driven.is_err() {
            s.queue_alert();
        }
        poll_fn(|cx| s.poll_send(cx)).await?;
        driven?;
        if !s.conn.is_handshaking() {
            return Ok(s);
        }
        if s.read_closed || poll_fn(|cx| s.poll_receive(cx)).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection during the TLS handshake",
            ));
        }
    }
}

impl TlsStream {
    /// Lets rustls process the ciphertext received so far, queueing what it wants sent and what it decrypts
    /// (into `reader`'s buffer while that has room and nothing else waits to be read, saving a copy), until
    /// it needs more data or application data may be sent; then does `action`.
    fn drive(&mut self, mut action: Action<'_>, mut reader: Option<&mut ReadBuf<'_>>) -> io::Result<Driven> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the TLS connection failed",
            ));
        }
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(&mut self.incoming);
            let driven = match state {
                Err(e) => {
                    self.incoming.drain(..discard);
                    self.failed = true;
                    return Err(tls_error(e));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|e| {
                            self.failed = true;
                            tls_error(e)
                        })?;
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Some(buf) = reader.as_deref_mut().filter(|_| self.plaintext.is_empty()) {
                            let n = payload.len().min(buf.remaining());
                            buf.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        self.plaintext.extend_from_slice(payload);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append(&mut self.outgoing, READ_SIZE, |out| {
                        data.encode(out).map_err(encode_room)
                    })?;
                    None
                }
                // The queue is sent in order (see the module's documentation), so queued counts as sent.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Driven::Blocked),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    match std::mem::replace(&mut action, Action::Nothing) {
                        Action::Nothing => {}
                        Action::Encrypt(data) => append(&mut self.outgoing, sealed_len(data.len()), |out| {
                            traffic.encrypt(data, out).map_err(encrypt_room)
                        })?,
                        Action::CloseNotify => append(&mut self.outgoing, 64, |out| {
                            traffic.queue_close_notify(out).map_err(encrypt_room)
                        })?,
                    }
                    Some(Driven::Traffic)
                }
                // Reported once; the next round goes on to the states that are still possible.
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Some(Driven::Closed)
                }
                // Early data is never enabled (`max_early_data_size` stays 0), and any state a later rustls
                // adds is not understood here.
                Ok(other) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected TLS connection state {other:?}"),
                    ));
                }
            };
            self.incoming.drain(..discard);
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            if let Some(driven) = driven {
                return Ok(driven);
            }
        }
    }

    /// Queues the alert rustls prepared when it failed, so the client learns why. One round only: rustls
    /// hands over what it has to send before it looks at the input again, and looking again at the offending
    /// bytes would fail (and prepare an alert) a second time. The input is the same buffer as before, since
    /// rustls keeps positions in it (a handshake message it was joining).
    fn queue_alert(&mut self) {
        let status = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state {
            let encoded = append(&mut self.outgoing, 64, |out| {
                data.encode(out).map_err(encode_room)
            });
            // Sending the alert is a courtesy; the connection fails with the original error either way.
            drop(encoded);
        }
    }

    /// Sends the outgoing queue, releasing it once it is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.outgoing_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_sent += n;
        }
        self.outgoing = Vec::new();
        self.outgoing_sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads more ciphertext from the socket; 0 at its end. Room for it is made only once the socket has
    /// something to read, so a connection waiting for data holds no buffer.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            if self.incoming.len() >= MAX_INCOMING {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message larger than any a client may send",
                )));
            }
            // Room for the rest of the record under way, if its header is in, so that a large record is read
            // in one go rather than grown into 4 KB at a time.
            let record_rest = match self.incoming.get(..5) {
                Some(header) => (5 + usize::from(u16::from_be_bytes([header[3], header[4]])))
                    .saturating_sub(self.incoming.len()),
                None => 0,
            };
            self.incoming.reserve(READ_SIZE.max(record_rest));
            match self.io.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Capacity of the stream's own buffers, in bytes (what an idle connection holds beyond rustls' state).
    #[cfg(test)]
    fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plaintext_read < this.plaintext.len() {
                let available = &this.plaintext[this.plaintext_read..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.plaintext_read += n;
                if this.plaintext_read == this.plaintext.len() {
                    this.plaintext = Vec::new();
                    this.plaintext_read = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let filled = buf.filled().len();
            this.drive(Action::Nothing, Some(buf))?;
            if buf.filled().len() > filled {
                return Poll::Ready(Ok(()));
            }
            if this.plaintext_read < this.plaintext.len() || this.read_closed {
                continue;
            }
            // What rustls queued while reading (a key update's answer, say) must go out even if the
            // application never writes; a socket that is not writable yet is retried on the next read.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_receive(cx))? == 0 {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed in the middle of a TLS record",
                    )));
                }
                // Closed without close_notify: many clients do so, and pinchat's HTTP and WebSocket framing
                // tells a truncated message from a complete one, so this reads as an ordinary end.
                this.read_closed = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // At most one write's ciphertext waits in the queue: a slow reader slows the writer down.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_queued {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS stream is shut down",
            )));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        match this.drive(Action::Encrypt(data), None)? {
            Driven::Traffic => {}
            Driven::Blocked => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the TLS handshake is not finished",
                )));
            }
            Driven::Closed => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the TLS connection is closed",
                )));
            }
        }
        // Start sending now; what the socket does not take yet goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            this.close_queued = true;
            if this.drive(Action::CloseNotify, None)? != Driven::Traffic {
                // No close_notify can be sent (the handshake never finished, or both sides already closed).
                tracing::trace!("TLS shutdown without close_notify");
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Appends what `write` puts into a buffer to `out`: room for `guess` bytes first, then as much as `write`
/// asks for (`Err(Some(n))`) if that was too little. (A close guess saves zeroing room that is not used.)
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match write(&mut out[start..]) {
        Ok(n) => Ok(n),
        Err(Some(required)) => {
            out.resize(start + required, 0);
            write(&mut out[start..])
        }
        Err(None) => Err(None),
    };
    match written {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(io::Error::other("rustls could not encode a TLS record"))
        }
    }
}

/// The room an encoding asked for, for [`append`]; `None` for any other failure.
fn encode_room(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        EncodeError::AlreadyEncoded => None,
    }
}

/// The room an encryption asked for, for [`append`]; `None` for any other failure.
fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// Room for `len` bytes of application data once encrypted: each record of at most 16 KB gains a header, a
/// tag and (TLS 1.3) its content type or (TLS 1.2) an explicit nonce, under 64 bytes in all.
fn sealed_len(len: usize) -> usize {
    len + (len / 16_384 + 1) * 64
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server configuration from a fresh self-signed certificate (through the server's own loader), and a
    /// client configuration trusting it with the given protocol versions.
    fn configs(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (tempfile::TempDir, Arc<ServerConfig>, tokio_rustls::TlsConnector) {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let server = super::super::load_config(&cert_path, &key_path).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let client =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        (dir, server, tokio_rustls::TlsConnector::from(Arc::new(client)))
    }

    async fn pair() -> (TcpListener, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (listener, client)
    }

    /// A finished handshake: the server's stream and the client's.
    async fn connected(
        config: Arc<ServerConfig>,
        connector: &tokio_rustls::TlsConnector,
    ) -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let (listener, tcp) = pair().await;
        tokio::join!(
            async { accept(listener.accept().await.unwrap().0, config).await.unwrap() },
            async {
                connector
                    .connect("localhost".try_into().unwrap(), tcp)
                    .await
                    .unwrap()
            }
        )
    }

    /// Bytes that differ from one position to the next, so a reordering or a lost piece shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn round_trip(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let (_dir, config, connector) = configs(versions);
        let (mut server, mut client) = connected(config, &connector).await;
        assert_eq!(
            server.buffered_capacity(),
            0,
            "a connection that just finished its handshake holds buffers"
        );

        // 300 KB each way: many full records, reads and writes of every size.
        let up = pattern(300_000);
        let down: Vec<u8> = up.iter().rev().copied().collect();
        let (received, echoed) = tokio::join!(
            async {
                let mut got = vec![0; up.len()];
                server.read_exact(&mut got).await.unwrap();
                server.write_all(&down).await.unwrap();
                server.flush().await.unwrap();
                got
            },
            async {
                client.write_all(&up).await.unwrap();
                client.flush().await.unwrap();
                let mut got = vec![0; down.len()];
                client.read_exact(&mut got).await.unwrap();
                got
            }
        );
        assert!(
            received == up,
            "the server read something else than the client wrote"
        );
        assert!(
            echoed == down,
            "the client read something else than the server wrote"
        );
        assert_eq!(server.buffered_capacity(), 0, "an idle connection holds buffers");

        // The client renews its keys (TLS 1.3): the server answers in step and data still flows both ways.
        if client.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            client.get_mut().1.refresh_traffic_keys().unwrap();
        }
        client.write_all(b"after the key update").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 20];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"after the key update");
        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");

        // A clean close both ways: each side reads its end (the client would fail on a missing close_notify).
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.shutdown().await.unwrap();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert_eq!(server.buffered_capacity(), 0);
    }

    #[tokio::test]
    async fn carries_data_both_ways_over_tls13_and_holds_no_buffers_when_idle() {
        round_trip(&[&rustls::version::TLS13]).await;
    }

    #[tokio::test]
    async fn carries_data_both_ways_over_tls12() {
        round_trip(&[&rustls::version::TLS12]).await;
    }

    #[tokio::test]
    async fn refuses_plain_http_and_clients_that_reject_the_certificate() {
        let (_dir, config, _) = configs(&[&rustls::version::TLS13]);
        let (listener, mut tcp) = pair().await;
        let (server, _) = tokio::join!(
            async { accept(listener.accept().await.unwrap().0, config.clone()).await },
            async {
                tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .await
                    .unwrap();
            }
        );
        let e = server.err().expect("plain HTTP was accepted as TLS");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // The client is told (an alert), not left waiting.
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        assert_eq!(
            answer.first(),
            Some(&21),
            "expected a TLS alert record, got {answer:?}"
        );

        // A client that does not trust this certificate (its own, unrelated one) aborts the handshake.
        let (_other, _, stranger) = configs(&[&rustls::version::TLS13]);
        let (listener, tcp) = pair().await;
        let (server, client) = tokio::join!(
            async { accept(listener.accept().await.unwrap().0, config).await },
            stranger.connect("localhost".try_into().unwrap(), tcp)
        );
        assert!(client.is_err());
        let e = server
            .err()
            .expect("the handshake succeeded with a client that rejected the certificate");
        // (Its own certificate has the same subject, so it reports a bad signature: DecryptError.)
        assert!(e.to_string().contains("received fatal alert"), "{e}");
    }

    #[tokio::test]
    async fn refuses_a_handshake_message_larger_than_any_client_sends() {
        let (_dir, config, _) = configs(&[&rustls::version::TLS13]);
        let (listener, mut tcp) = pair().await;
        // A handshake record whose ClientHello claims 16 MB: refused at once, not buffered up to that.
        tcp.write_all(&[22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let e = accept(listener.accept().await.unwrap().0, config)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("HandshakePayloadTooLarge"), "{e}");
        // rustls sends no alert for this one; the client sees the connection close.
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
    }

    #[tokio::test]
    async fn a_forged_record_after_the_handshake_fails_the_stream_for_good() {
        let (_dir, config, connector) = configs(&[&rustls::version::TLS13]);
        let (mut server, mut client) = connected(config, &connector).await;
        // An application-data record that no key encrypted, written under the client's TLS layer.
        client.get_mut().0.write_all(&[23, 3, 3, 0, 20]).await.unwrap();
        client.get_mut().0.write_all(&[0x5a; 20]).await.unwrap();
        let mut buf = [0; 16];
        let e = server.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("cannot decrypt"), "{e}");
        // Read or written again, it stays failed (and rustls is not asked to report it twice).
        assert!(server.read(&mut buf).await.is_err());
        assert!(server.write_all(b"late").await.is_err());
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_handshake_is_an_error_not_a_hang() {
        let (_dir, config, _) = configs(&[&rustls::version::TLS13]);
        let (listener, mut tcp) = pair().await;
        // Half of a TLS record header, then the end.
        tcp.write_all(&[22, 3]).await.unwrap();
        drop(tcp);
        let e = accept(listener.accept().await.unwrap().0, config)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
