//! Real calls with the native media engine (GStreamer's webrtcbin): two engines, each sending a solid
//! colour and a tone, call each other through the real server's signalling. Each must decode the other's
//! colour, frame after frame, while the server carries only a few kilobytes of signalling.

#![cfg(target_os = "linux")]

use pinchat_media::{Engine, EngineEvent, Options, Source};
use pinchat_proto::stream::{CallEvent, CallSignal, ClientFrame, ServerFrame};
use pinchat_proto::{AccountId, Encoding};
use pinchat_tests::{CountingProxy, DEADLINE, Server, Stream};

const MAGENTA: u32 = 0xff00ff;
const GREEN: u32 = 0x00ff00;

fn close_to(pixel: [u8; 3], rgb: u32) -> bool {
    let want = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8];
    pixel.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 48)
}

/// One party: its stream (behind a byte counter) and its engine.
struct Side {
    stream: Stream,
    engine: Engine,
    events: tokio::sync::mpsc::UnboundedReceiver<EngineEvent>,
    next_req: u32,
    call: u64,
    /// The candidates its engine signalled.
    candidates: Vec<String>,
    /// What its engine said is missing (`microphone`, `camera`).
    missing: Option<(bool, bool)>,
}

impl Side {
    async fn send(&mut self, signal: CallSignal) {
        let req = self.next_req;
        self.next_req += 1;
        let frame = ClientFrame::CallSignal {
            req,
            call: self.call,
            signal,
        };
        self.stream.send(&frame).await;
    }

    /// Applies what the server says about the call; acknowledgements are fine, errors are not.
    fn server_said(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Call { event, .. } => {
                if let CallEvent::Ended { reason } = event {
                    panic!("the call ended: {reason:?}");
                }
                let Some(signal) = event.into_signal() else { return };
                self.engine.remote(signal).expect("the peer's signal is usable");
            }
            ServerFrame::Ack { .. } | ServerFrame::Delta { .. } | ServerFrame::Message { .. } => {}
            other => panic!("the server said {other:?}"),
        }
    }
}

async fn side(s: &Server, proxy: &CountingProxy, login: &str, pins: &[AccountId], rgb: u32) -> Side {
    let options = Options {
        source: Source::TestPattern { rgb },
        size: (160, 120),
        ..Options::default()
    };
    side_with(s, proxy, login, pins, options).await
}

async fn side_with(
    s: &Server,
    proxy: &CountingProxy,
    login: &str,
    pins: &[AccountId],
    options: Options,
) -> Side {
    let mut stream = s
        .stream_at(proxy.addr, &s.key(login).await, Encoding::Binary)
        .await;
    stream.subscribe(1, 0, pins, None).await;
    let mut engine =
        Engine::new(&options).expect("GStreamer with webrtcbin, vpx, opus and nice is installed");
    let events = engine.events().unwrap();
    Side {
        stream,
        engine,
        events,
        next_req: 10,
        call: 0,
        candidates: vec![],
        missing: None,
    }
}

/// Rings `to` from `a`, accepts on `b`, and carries signals until each side decoded 30 frames of the
/// other's video. Returns the proxy's count before the call and a report.
async fn connect(a: &mut Side, b: &mut Side, to: AccountId, proxy: &CountingProxy) -> (u64, String) {
    let alice = to;
    let before = proxy.bytes_down();
    let started = std::time::Instant::now();

    // Ring, accept, and let the caller's engine make the offer.
    a.stream
        .send(&ClientFrame::CallInvite {
            req: 1,
            to: alice,
            video: true,
        })
        .await;
    let call = loop {
        match a.stream.recv().await {
            ServerFrame::Ack {
                result: pinchat_proto::stream::Ack::Call { call },
                ..
            } => break call,
            ServerFrame::Delta { .. } => continue,
            other => panic!("the invite got {other:?}"),
        }
    };
    a.call = call;
    b.call = call;
    loop {
        match b.stream.recv().await {
            ServerFrame::Call {
                event: CallEvent::Incoming { video: true },
                ..
            } => break,
            ServerFrame::Delta { .. } => continue,
            other => panic!("expected the call to ring, got {other:?}"),
        }
    }
    b.send(CallSignal::Accept).await;
    loop {
        match a.stream.recv().await {
            ServerFrame::Call {
                event: CallEvent::Accepted,
                ..
            } => break,
            _ => continue,
        }
    }
    a.engine.offer();

    // Carry signals both ways until each side has decoded 30 frames of the other's video.
    let mut a_stats = a.engine.watch_stats();
    let mut b_stats = b.engine.watch_stats();
    let enough = async {
        a_stats
            .wait_for(|s| s.video_frames >= 30 && s.audio_buffers > 0)
            .await
            .unwrap();
        b_stats
            .wait_for(|s| s.video_frames >= 30 && s.audio_buffers > 0)
            .await
            .unwrap();
    };
    tokio::pin!(enough);
    let deadline = tokio::time::sleep(DEADLINE * 2);
    tokio::pin!(deadline);
    let mut ice = vec![];
    loop {
        tokio::select! {
            () = &mut enough => break,
            () = &mut deadline => panic!(
                "no call within {:?}: demo {:?}, alice {:?}, ICE states {ice:?}",
                DEADLINE * 2, a.engine.stats(), b.engine.stats()
            ),
            Some(event) = a.events.recv() => match event {
                EngineEvent::Signal(signal) => {
                    if let CallSignal::Ice { candidate, .. } = &signal {
                        a.candidates.push(candidate.clone());
                    }
                    a.send(signal).await;
                }
                EngineEvent::Failed(e) => panic!("demo's engine failed: {e}"),
                EngineEvent::Ice(state) => ice.push(format!("demo {state}")),
                EngineEvent::Missing { microphone, camera } => a.missing = Some((microphone, camera)),
                EngineEvent::FirstFrame | EngineEvent::Gathered => {}
            },
            Some(event) = b.events.recv() => match event {
                EngineEvent::Signal(signal) => {
                    if let CallSignal::Ice { candidate, .. } = &signal {
                        b.candidates.push(candidate.clone());
                    }
                    b.send(signal).await;
                }
                EngineEvent::Failed(e) => panic!("alice's engine failed: {e}"),
                EngineEvent::Ice(state) => ice.push(format!("alice {state}")),
                EngineEvent::Missing { microphone, camera } => b.missing = Some((microphone, camera)),
                EngineEvent::FirstFrame | EngineEvent::Gathered => {}
            },
            Ok(frame) = a.stream.next() => a.server_said(frame),
            Ok(frame) = b.stream.next() => b.server_said(frame),
        }
    }
    let setup = started.elapsed();
    let (sa, sb) = (a.engine.stats(), b.engine.stats());
    let report = format!(
        "call set up and 30 frames each way in {setup:?}; first remote frame after {:?} / {:?} ms; \
         caller decoded {} frames and {} audio buffers, callee {} and {}; ICE: {ice:?}",
        sa.first_frame_ms,
        sb.first_frame_ms,
        sa.video_frames,
        sa.audio_buffers,
        sb.video_frames,
        sb.audio_buffers
    );
    (before, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_engines_see_each_others_video_through_the_real_servers_signalling() {
    let s = Server::start().await;
    let demo_key = s.key("demo").await;
    let alice = s.id_of(&demo_key, "alice").await;
    let demo = s.id_of(&s.key("alice").await, "demo").await;
    let proxy = CountingProxy::start(s.addr).await.unwrap();
    let mut a = side(&s, &proxy, "demo", &[alice], MAGENTA).await;
    let mut b = side(&s, &proxy, "alice", &[demo], GREEN).await;
    let (before, report) = connect(&mut a, &mut b, alice, &proxy).await;
    println!("{report}");
    let (fa, fb) = (a.engine.latest_frame().unwrap(), b.engine.latest_frame().unwrap());
    assert_eq!((fa.width, fa.height), (160, 120));
    assert!(
        close_to(fa.centre(), GREEN),
        "demo sees {:?}, not Alice's green",
        fa.centre()
    );
    assert!(
        close_to(fb.centre(), MAGENTA),
        "alice sees {:?}, not Demo's magenta",
        fb.centre()
    );

    // The media did not pass through the server: it carried a few kilobytes of signalling.
    let through_server = proxy.bytes_down() - before;
    println!("the server sent {through_server} bytes to the two parties during the call");
    assert!(
        through_server < 20_000,
        "{through_server} bytes through the server"
    );

    // Demo turns the camera off: Alice's picture goes black (the stream itself goes on).
    a.engine.set_camera(false);
    let seen = b.engine.stats().video_frames;
    let mut b_watch = b.engine.watch_stats();
    tokio::time::timeout(DEADLINE, b_watch.wait_for(|s| s.video_frames >= seen + 20))
        .await
        .expect("frames keep coming with the camera off")
        .unwrap();
    let dark = b.engine.latest_frame().unwrap().centre();
    assert!(
        close_to(dark, 0x000000),
        "with demo's camera off alice sees {dark:?}"
    );

    // Hang up: the peer is told.
    a.send(CallSignal::Hangup { failed: false }).await;
    loop {
        match b.stream.recv().await {
            ServerFrame::Call {
                event: CallEvent::Ended { reason },
                ..
            } => {
                assert_eq!(reason, pinchat_proto::stream::CallEnd::Hangup);
                break;
            }
            _ => continue,
        }
    }
}

/// A private coturn on loopback with the TURN REST secret, stopped when dropped.
struct Coturn {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Coturn {
    const SECRET: &str = "pinchat-test-turn-secret";

    async fn start() -> Coturn {
        let dir = tempfile::tempdir().unwrap();
        // A free UDP port for the listener.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--fingerprint",
                "--use-auth-secret",
            ])
            .arg(format!("--static-auth-secret={}", Coturn::SECRET))
            .args(["--realm", "pinchat.test", "-L", "127.0.0.1", "-E", "127.0.0.1"])
            .args([
                "--allow-loopback-peers",
                "--min-port",
                "49152",
                "--max-port",
                "49400",
            ])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--log-file={}", dir.path().join("turn.log").display()))
            .args(["--simple-log", "--no-stdout-log"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("turnserver (Debian package coturn) is installed");
        let turn = Coturn {
            child,
            port,
            _dir: dir,
        };
        turn.wait_ready().await;
        turn
    }

    /// Waits until the server answers a STUN binding request (retransmitted, as STUN clients do).
    async fn wait_ready(&self) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(b"pinchat-test");
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut buf = [0u8; 512];
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "coturn did not answer STUN"
            );
            socket.send_to(&request, ("127.0.0.1", self.port)).await.unwrap();
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(std::time::Duration::from_millis(200), socket.recv_from(&mut buf)).await
                && n >= 20
                && buf[..2] == [0x01, 0x01]
            {
                return;
            }
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A computer without a camera or a microphone (as this test machine: no /dev/video*, no /dev/snd)
/// still calls: its engine says what is missing and sends a black picture and silence instead, and
/// the call goes on both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_without_camera_or_microphone_calls_with_black_and_silence() {
    let s = Server::start().await;
    let demo_key = s.key("demo").await;
    let alice = s.id_of(&demo_key, "alice").await;
    let demo = s.id_of(&s.key("alice").await, "demo").await;
    let proxy = CountingProxy::start(s.addr).await.unwrap();
    let devices = Options {
        source: Source::Devices,
        size: (160, 120),
        ..Options::default()
    };
    let mut a = side_with(&s, &proxy, "demo", &[alice], devices).await;
    let mut b = side(&s, &proxy, "alice", &[demo], GREEN).await;
    let (_, report) = connect(&mut a, &mut b, alice, &proxy).await;
    println!("without devices: {report}; missing {:?}", a.missing);
    let no_camera = !std::fs::read_dir("/dev")
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("video"));
    let no_sound = !std::path::Path::new("/dev/snd").exists();
    let (microphone, camera) = a.missing.unwrap_or_default();
    if no_camera {
        assert!(camera, "no camera here, and the engine did not say so");
        let seen = b.engine.latest_frame().unwrap().centre();
        assert!(close_to(seen, 0x000000), "alice sees {seen:?}, not black");
    }
    if no_sound {
        assert!(microphone, "no sound device here, and the engine did not say so");
    }
    // Silence is still sound: Alice decoded audio, and the demo user sees her green.
    assert!(b.engine.stats().audio_buffers > 0);
    let seen = a.engine.latest_frame().unwrap().centre();
    assert!(close_to(seen, GREEN), "demo sees {seen:?}");
    assert_eq!(b.missing, None, "a test pattern misses nothing");
}

fn relay_options(rgb: u32, ice: &pinchat_proto::http::IceConfig) -> Options {
    Options {
        source: Source::TestPattern { rgb },
        size: (160, 120),
        ice_servers: ice.ice_servers.clone(),
        relay_only: true,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_relayed_through_turn_only_with_credentials_from_the_server() {
    let turn = Coturn::start().await;
    let s = Server::start_with(&format!(
        "[ice]\nturn = [\"turn:127.0.0.1:{}?transport=udp\"]\nturn_secret = \"{}\"\n",
        turn.port,
        Coturn::SECRET
    ))
    .await;
    let demo_key = s.key("demo").await;
    let alice_key = s.key("alice").await;
    let alice = s.id_of(&demo_key, "alice").await;
    let demo = s.id_of(&alice_key, "demo").await;
    // Each party asks the server where media may go, as the app does before a call.
    let ice_a: pinchat_proto::http::IceConfig = s.get(&demo_key, "/v1/ice").await.unwrap();
    let ice_b: pinchat_proto::http::IceConfig = s.get(&alice_key, "/v1/ice").await.unwrap();
    let proxy = CountingProxy::start(s.addr).await.unwrap();
    let mut a = side_with(&s, &proxy, "demo", &[alice], relay_options(MAGENTA, &ice_a)).await;
    let mut b = side_with(&s, &proxy, "alice", &[demo], relay_options(GREEN, &ice_b)).await;
    let (_, report) = connect(&mut a, &mut b, alice, &proxy).await;
    println!("through TURN: {report}");
    let (fa, fb) = (a.engine.latest_frame().unwrap(), b.engine.latest_frame().unwrap());
    assert!(close_to(fa.centre(), GREEN), "demo sees {:?}", fa.centre());
    assert!(close_to(fb.centre(), MAGENTA), "alice sees {:?}", fb.centre());
    // Only relayed candidates were offered: the media went through coturn.
    for c in a.candidates.iter().chain(&b.candidates).filter(|c| !c.is_empty()) {
        assert!(c.contains("typ relay"), "a candidate that is not relayed: {c}");
    }
    assert!(!a.candidates.is_empty() && !b.candidates.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_turn_credentials_get_no_relay() {
    let turn = Coturn::start().await;
    let url = format!("turn:127.0.0.1:{}?transport=udp", turn.port);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let gather = async |expiry: u64| {
        let username = format!("{expiry}:7");
        let ice = pinchat_proto::http::IceConfig {
            ice_servers: vec![pinchat_proto::http::IceServer {
                urls: vec![url.clone()],
                credential: Some(pinchat_server::ice::turn_password(Coturn::SECRET, &username)),
                username: Some(username),
            }],
            ttl_secs: 600,
        };
        let mut engine = Engine::new(&relay_options(GREEN, &ice)).unwrap();
        let mut events = engine.events().unwrap();
        engine.offer();
        let mut relayed = 0;
        loop {
            match tokio::time::timeout(DEADLINE, events.recv())
                .await
                .expect("gathering ends")
            {
                Some(EngineEvent::Gathered) => return relayed,
                Some(EngineEvent::Signal(CallSignal::Ice { candidate, .. }))
                    if candidate.contains("typ relay") =>
                {
                    relayed += 1;
                }
                Some(EngineEvent::Failed(e)) => panic!("{e}"),
                Some(_) => {}
                None => panic!("the engine stopped"),
            }
        }
    };
    // Valid for ten more minutes: a relay is allocated.
    assert!(gather(now + 600).await > 0, "fresh credentials got no relay");
    // Expired a minute ago: coturn refuses the allocation.
    assert_eq!(gather(now - 60).await, 0, "expired credentials got a relay");
}

/// Headless Chromium running the panel's call engine (`ui/assets/call.js`) in a test page, with the
/// page's signals carried over a WebSocket to the test.
struct Browser {
    child: std::process::Child,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let files: Vec<(&str, std::path::PathBuf)> = vec![
            ("/index.html", root.join("fixtures/call/index.html")),
            ("/page.js", root.join("fixtures/call/page.js")),
            ("/call.js", root.join("../ui/assets/call.js")),
        ];
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = http.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = http.accept().await {
                let files = files.clone();
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let line = String::from_utf8_lossy(&request[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let path = line
                        .split(' ')
                        .nth(1)
                        .unwrap_or("/")
                        .split('?')
                        .next()
                        .unwrap_or("/")
                        .to_owned();
                    let response = match files.iter().find(|(p, _)| *p == path) {
                        Some((p, file)) => {
                            let body = std::fs::read(file).unwrap();
                            let mime = if p.ends_with(".html") {
                                "text/html"
                            } else {
                                "text/javascript"
                            };
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: {mime}; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend(body);
                            r
                        }
                        None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec(),
                    };
                    let _ = socket.write_all(&response).await;
                });
            }
        });
        let bridge = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_port = bridge.local_addr().unwrap().port();
        let profile = tempfile::tempdir().unwrap();
        // Headless Chromium needs no display and no session bus: kept off both, it cannot start a
        // notification server or an accessibility bus that later tests would meet.
        let child = std::process::Command::new("chromium")
            .env_remove("DISPLAY")
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/pinchat-test-bus",
            )
            .env("NO_AT_BRIDGE", "1")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("http://127.0.0.1:{http_port}/index.html?ws={ws_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium (Debian package chromium) is installed");
        let (socket, _) = tokio::time::timeout(DEADLINE, bridge.accept())
            .await
            .expect("the page connects to the test")
            .unwrap();
        let ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        Browser {
            child,
            ws,
            _profile: profile,
        }
    }

    async fn send(&mut self, value: serde_json::Value) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                value.to_string().into(),
            ))
            .await
            .unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page reported last.
#[derive(Default, Debug)]
struct PageState {
    frames: u64,
    audio: u64,
    centre: Option<[u8; 3]>,
}

/// The native engine (demo, magenta) calls Chromium running the panel's JavaScript (alice, green), or
/// the other way round; both must decode the other's colour.
/// A call between the native engine and the page's engine in Chromium; `page_audio: false` is a
/// computer without a microphone on the page's side.
async fn native_and_chromium(native_offers: bool, page_audio: bool) {
    use futures_util::StreamExt;
    let s = Server::start().await;
    let demo_key = s.key("demo").await;
    let alice = s.id_of(&demo_key, "alice").await;
    let demo = s.id_of(&s.key("alice").await, "demo").await;
    let proxy = CountingProxy::start(s.addr).await.unwrap();
    let mut a = side(&s, &proxy, "demo", &[alice], MAGENTA).await;
    let mut b = s
        .stream_at(proxy.addr, &s.key("alice").await, Encoding::Binary)
        .await;
    b.subscribe(1, 0, &[demo], None).await;
    let mut page = Browser::start().await;

    a.stream
        .send(&ClientFrame::CallInvite {
            req: 1,
            to: alice,
            video: true,
        })
        .await;
    let call = loop {
        if let ServerFrame::Call {
            call,
            event: CallEvent::Incoming { .. },
            ..
        } = b.recv().await
        {
            break call;
        }
    };
    a.call = call;
    b.send(&ClientFrame::CallSignal {
        req: 2,
        call,
        signal: CallSignal::Accept,
    })
    .await;
    loop {
        if let ServerFrame::Call {
            event: CallEvent::Accepted,
            ..
        } = a.stream.recv().await
        {
            break;
        }
    }
    page.send(serde_json::json!({"start": {"rgb": GREEN, "offer": !native_offers, "iceServers": [], "relayOnly": false, "noAudio": !page_audio}}))
        .await;
    if native_offers {
        a.engine.offer();
    }

    let mut a_stats = a.engine.watch_stats();
    let native_done = a_stats.wait_for(|s| s.video_frames >= 30);
    tokio::pin!(native_done);
    let mut native_ok = false;
    let mut seen = PageState::default();
    let mut b_req = 10;
    let deadline = tokio::time::sleep(DEADLINE * 2);
    tokio::pin!(deadline);
    while !(native_ok && seen.frames >= 30 && seen.centre.is_some()) {
        tokio::select! {
            r = &mut native_done, if !native_ok => { r.unwrap(); native_ok = true; }
            () = &mut deadline => panic!("no call within {:?}: native {:?}, page {seen:?}", DEADLINE * 2, a.engine.stats()),
            Some(event) = a.events.recv() => match event {
                EngineEvent::Signal(signal) => a.send(signal).await,
                EngineEvent::Failed(e) => panic!("the native engine failed: {e}"),
                _ => {}
            },
            Ok(frame) = a.stream.next() => a.server_said(frame),
            Ok(frame) = b.next() => match frame {
                ServerFrame::Call { event, .. } => {
                    // The page takes the protocol's JSON form of a signal as it is.
                    let signal = event.clone().into_signal().unwrap_or_else(|| panic!("alice was told {event:?}"));
                    page.send(serde_json::json!({"signal": signal})).await;
                }
                ServerFrame::Ack { .. } | ServerFrame::Delta { .. } => {}
                other => panic!("alice's stream said {other:?}"),
            },
            Some(Ok(message)) = page.ws.next() => {
                let text = message.into_text().unwrap();
                let m: serde_json::Value = serde_json::from_str(&text).unwrap();
                if let Some(signal) = m.get("signal") {
                    let signal: CallSignal = serde_json::from_value(signal.clone()).expect("the page's signal is a protocol signal");
                    b_req += 1;
                    b.send(&ClientFrame::CallSignal { req: b_req, call, signal }).await;
                } else if let Some(stats) = m.get("stats") {
                    seen.frames = stats["videoFrames"].as_u64().unwrap_or(0);
                    seen.audio = stats["audioPackets"].as_u64().unwrap_or(0);
                    seen.centre = m["centre"].as_array().map(|c| {
                        [c[0].as_u64().unwrap() as u8, c[1].as_u64().unwrap() as u8, c[2].as_u64().unwrap() as u8]
                    });
                } else if let Some(e) = m.get("failed") {
                    panic!("the page's engine failed: {e}");
                }
            }
        }
    }
    let native = a.engine.latest_frame().unwrap().centre();
    println!(
        "native {} chromium: native decoded {:?}, centre {native:?}; chromium decoded {seen:?}",
        if native_offers { "→" } else { "←" },
        a.engine.stats()
    );
    assert!(
        close_to(native, GREEN),
        "the native engine sees {native:?}, not the page's green"
    );
    let centre = seen.centre.unwrap();
    assert!(
        close_to(centre, MAGENTA),
        "chromium sees {centre:?}, not the native magenta"
    );
    assert!(seen.audio > 0, "chromium received no audio");
    // Whether the page sent sound is what the native engine heard.
    assert_eq!(
        a.engine.stats().audio_buffers > 0,
        page_audio,
        "{:?}",
        a.engine.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_engine_calls_chromium_running_the_panels_javascript() {
    native_and_chromium(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_running_the_panels_javascript_calls_the_native_engine() {
    native_and_chromium(false, true).await;
}

/// The page has no microphone and places the call: its offer still asks for sound, to receive, so
/// it hears the native side while sending a picture only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_without_a_microphone_calls_and_still_hears_the_native_engine() {
    native_and_chromium(false, false).await;
}
