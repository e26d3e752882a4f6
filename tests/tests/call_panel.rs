//! A video call from the real panel (Linux): the tray app and its panel on a private X server, driven
//! by WebKitWebDriver, call a pinned contact whose side is a native engine on a real stream. WebKitGTK
//! has no WebRTC, so the panel's own process runs the call (pinchat-media) and the page shows its
//! pictures: the test checks the colour the page draws is the peer's, and the peer's is the panel's.
#![cfg(target_os = "linux")]

use pinchat_ipc::api::{CreateWidget, Login, SetPins, SetPinsParams};
use pinchat_media::{Engine, EngineEvent, Options, Source, Stats};
use pinchat_proto::AccountId;
use pinchat_proto::stream::{CallEnd, CallEvent, CallSignal, ClientFrame, ServerFrame};
use pinchat_tests::desktop::{Dunst, WebDriver, Xvfb, eventually, serial, visible_window};
use pinchat_tests::{Fault, FaultProxy, Server, Stream, pinchat_proto::codec::Encoding};

/// What the peer's side saw of the call.
struct PeerReport {
    stats: Stats,
    centre: Option<[u8; 3]>,
    ended: CallEnd,
}

/// The contact's side of a call: with `call_to`, places a video call to that account and makes the
/// offer once it is accepted; otherwise accepts the call that rings on `stream` and answers the
/// panel's offer. Carries candidates both ways, and reports once the call ends.
/// With `frames`, it hangs up itself once it has decoded that many frames of the other side's video.
async fn peer_until(
    mut stream: Stream,
    mut engine: Engine,
    call_to: Option<AccountId>,
    frames: Option<u64>,
    ring: std::time::Duration,
) -> PeerReport {
    let mut events = engine.events().unwrap();
    let mut stats = engine.watch_stats();
    let enough = async move {
        match frames {
            Some(n) => {
                let _ = stats.wait_for(|s| s.video_frames >= n).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(enough);
    let mut call = None;
    let mut req = 100;
    if let Some(to) = call_to {
        stream
            .send(&ClientFrame::CallInvite { req, to, video: true })
            .await;
    }
    loop {
        tokio::select! {
            () = &mut enough => {
                let call = call.expect("a call");
                stream.send(&ClientFrame::CallSignal { req: req + 1, call, signal: CallSignal::Hangup { failed: false } }).await;
                return PeerReport {
                    stats: engine.stats(),
                    centre: engine.latest_frame().map(|f| f.centre()),
                    ended: CallEnd::Hangup,
                };
            }
            frame = stream.next() => match frame.expect("the peer's stream stays open") {
                ServerFrame::Call { call: id, event, .. } => match event {
                    CallEvent::Incoming { video } => {
                        assert!(video, "the panel placed a video call");
                        call = Some(id);
                        req += 1;
                        // A person lets it ring a moment (a benchmark's choice; tests answer at once).
                        tokio::time::sleep(ring).await;
                        stream.send(&ClientFrame::CallSignal { req, call: id, signal: CallSignal::Accept }).await;
                    }
                    CallEvent::Ended { reason } => {
                        return PeerReport {
                            stats: engine.stats(),
                            centre: engine.latest_frame().map(|f| f.centre()),
                            ended: reason,
                        };
                    }
                    CallEvent::Ringing => call = Some(id),
                    CallEvent::Accepted => engine.offer(),
                    event => {
                        if let Some(signal) = event.into_signal() {
                            engine.remote(signal).expect("the panel's signals are usable");
                        }
                    }
                },
                ServerFrame::Ack { .. } | ServerFrame::Delta { .. } | ServerFrame::Message { .. } => {}
                other => panic!("the peer's stream got {other:?}"),
            },
            Some(event) = events.recv() => match event {
                EngineEvent::Signal(signal) => {
                    req += 1;
                    let call = call.expect("signals come after the call rang");
                    stream.send(&ClientFrame::CallSignal { req, call, signal }).await;
                }
                EngineEvent::Failed(e) => panic!("the peer's engine failed: {e}"),
                EngineEvent::Ice(_) | EngineEvent::Gathered | EngineEvent::FirstFrame | EngineEvent::Missing { .. } => {}
            },
        }
    }
}

/// The page's script: the centre pixel of the peer's picture as `[r, g, b]`, once it is magenta.
const MAGENTA_SHOWN: &str = "const i = document.getElementById('remote-video');
    if (!i || !i.complete || !i.naturalWidth) return null;
    const c = document.createElement('canvas');
    c.width = i.naturalWidth; c.height = i.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(i, 0, 0);
    const p = Array.from(g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3));
    return p[0] > 200 && p[1] < 60 && p[2] > 200 ? p : null;";

/// The real panel (and its tray app) with the demo user bound and Alice pinned, ready to call.
struct Calling {
    wd: WebDriver,
    widget: String,
    alice: pinchat_ipc::api::ContactIdentity,
    alice_key: String,
    demo_id: AccountId,
}

/// Starts the tray app and a panel on `x` with the app's data in `dir` (and `env`); the panel sends
/// green instead of a camera's picture (there is none under Xvfb), unless `env` says otherwise.
async fn calling(x: &Xvfb, server: &Server, dir: &std::path::Path, env: &[(&str, &str)]) -> Calling {
    calling_at(x, server, &server.url(""), dir, env).await
}

/// [`calling`] with the panel's daemon reaching the server at `url` (a proxy in front of it).
async fn calling_at(
    x: &Xvfb,
    server: &Server,
    url: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Calling {
    let mut env = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "PINCHAT_CALL_TEST_PATTERN") {
        env.push(("PINCHAT_CALL_TEST_PATTERN", "00ff00"));
    }
    let wd = WebDriver::start_with(&x.display, dir, &env).await;
    let client = pinchat_ipc::Client::connect(&wd.app.as_ref().expect("the tray app").socket)
        .await
        .unwrap();
    let created = client
        .call::<CreateWidget>(Login {
            server: url.to_owned(),
            account: "demo".into(),
            password: "demo".into(),
        })
        .await
        .unwrap();
    let alice = created
        .contacts
        .iter()
        .find(|c| c.login == "alice")
        .unwrap()
        .clone();
    client
        .call::<SetPins>(SetPinsParams {
            widget: created.widget.id.clone(),
            pins: vec![alice.id],
        })
        .await
        .unwrap();
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    Calling {
        wd,
        widget: created.widget.id,
        alice,
        alice_key,
        demo_id,
    }
}

/// Alice calls the demo user from a stream of her own (nothing answers on her side); returns the
/// stream and the call once it rings.
async fn alice_calls(server: &Server, key: &str, demo: AccountId, video: bool) -> (Stream, u64) {
    let mut stream = server.stream(key, Encoding::Json).await;
    stream.subscribe(1, 0, &[demo], None).await;
    stream
        .send(&ClientFrame::CallInvite {
            req: 2,
            to: demo,
            video,
        })
        .await;
    loop {
        if let ServerFrame::Call {
            call,
            event: CallEvent::Ringing,
            ..
        } = stream.recv().await
        {
            return (stream, call);
        }
    }
}

/// Alice gives up on her call before it is answered.
async fn alice_gives_up(stream: &mut Stream, call: u64) {
    stream
        .send(&ClientFrame::CallSignal {
            req: 3,
            call,
            signal: CallSignal::Hangup { failed: false },
        })
        .await;
}

/// Waits until the panel's call view rings.
async fn panel_rings(wd: &WebDriver) {
    wd.until(
        "the panel ringing",
        "return document.querySelector('#call-state')?.dataset.phase === 'incoming' || null",
    )
    .await;
}

/// Shows the widget in the panel, once its link is up (a call needs it).
async fn open_widget(wd: &WebDriver, widget: &str, lang: &str) {
    wd.js(&format!(
        "location.search = '?lang={lang}&view=widget&widget={widget}'; return true;"
    ))
    .await;
    wd.until(
        "the widget connected",
        "return document.querySelector('#connection.online') || null",
    )
    .await;
}

/// Alice's side: a stream that follows the demo user (a call rings only where the caller is pinned)
/// and a native engine sending magenta; with `call`, she calls the demo user.
async fn alice_side(
    server: &Server,
    key: &str,
    demo: AccountId,
    call: bool,
    ring: std::time::Duration,
) -> (
    tokio::task::JoinHandle<PeerReport>,
    tokio::sync::watch::Receiver<Stats>,
) {
    let mut stream = server.stream(key, Encoding::Json).await;
    stream.subscribe(1, 0, &[demo], None).await;
    let engine = Engine::new(&Options {
        source: Source::TestPattern { rgb: 0xff00ff },
        size: (160, 120),
        ..Options::default()
    })
    .expect("GStreamer with webrtcbin, vpx, opus and nice is installed");
    let stats = engine.watch_stats();
    // As the caller, she hangs up herself once she has seen 30 frames.
    let side = tokio::spawn(peer_until(
        stream,
        engine,
        call.then_some(demo),
        call.then_some(30),
        ring,
    ));
    (side, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_calls_from_and_to_the_panel_ring_show_the_peer_and_hang_up() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let Calling {
        wd,
        widget,
        alice,
        alice_key,
        demo_id,
    } = calling(&x, &server, dir.path(), &[]).await;
    let (answering, mut seen) =
        alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;

    // The widget: each pinned contact offers text or video (Fig. 6).
    open_widget(&wd, &widget, "en").await;
    wd.find(&format!("button[data-text='{}']", alice.id)).await;
    wd.click(&format!("button[data-video='{}']", alice.id)).await;
    wd.find("#call-state").await;

    // Alice accepts; the panel connects and draws her picture.
    wd.until(
        "the call connected",
        "return document.querySelector('#call-state')?.dataset.phase === 'connected' || null",
    )
    .await;
    let shown = wd.until("Alice's magenta in the panel", MAGENTA_SHOWN).await;
    assert_eq!(wd.text("#call-state").await, "connected");
    // The page keeps drawing new pictures, not one, and counts the call's time.
    wd.until(
        "30 pictures drawn",
        "return (activeCall && activeCall.frames >= 30) || null",
    )
    .await;
    wd.until(
        "the call's duration shown",
        "return /^\\d+:\\d\\d$/.test(document.querySelector('#call-duration').textContent) || null",
    )
    .await;

    // Alice sees the panel's video too (she decodes at her own pace).
    tokio::time::timeout(pinchat_tests::DEADLINE, seen.wait_for(|s| s.video_frames >= 30))
        .await
        .expect("Alice decodes 30 frames of the panel's video")
        .unwrap();
    // Mute and camera off are buttons that say what they do next.
    wd.click("#call-mute").await;
    assert_eq!(wd.text("#call-mute").await, "Unmute");
    wd.click("#call-hangup").await;
    wd.until(
        "the call shown ended",
        "return document.querySelector('#call-state')?.dataset.phase === 'ended' || null",
    )
    .await;
    assert_eq!(wd.text("#call-state").await, "The call has ended.");

    let report = answering.await.expect("the peer's side");
    assert_eq!(report.ended, CallEnd::Hangup);
    assert!(
        report.stats.video_frames >= 30,
        "the peer decoded {} frames of the panel's video",
        report.stats.video_frames
    );
    let centre = report.centre.expect("a picture");
    assert!(
        centre[0] < 60 && centre[1] > 200 && centre[2] < 60,
        "the peer sees the panel's green: {centre:?}"
    );
    eprintln!(
        "panel showed {shown}; the peer decoded {} frames (centre {centre:?}), first after {:?} ms",
        report.stats.video_frames, report.stats.first_frame_ms
    );
    // Back goes to the conversation, where the call is in the history with its length.
    wd.click("#call-close").await;
    let record = wd
        .until(
            "the call in the chat's history",
            "return document.querySelector('#messages .callrec')?.textContent || null",
        )
        .await;
    let record = record.as_str().unwrap();
    assert!(
        record.starts_with("🎥 Outgoing video call · 0:"),
        "the history shows {record:?}"
    );
    assert_eq!(
        wd.js("return document.querySelector('#messages .callrec').dataset.kind")
            .await,
        "answered"
    );

    // Now Alice calls: the panel rings with accept and decline; accepted, it answers her offer, shows
    // her picture, and she hears its hang-up.
    let (calling, _) = alice_side(&server, &alice_key, demo_id, true, std::time::Duration::ZERO).await;
    // No panel of the account was open in the tray: it opens one, ringing.
    tokio::task::block_in_place(|| {
        eventually("the tray's panel opened for the call", || {
            visible_window(&x.display, "pinchat — Demo User")
        })
    });
    panel_rings(&wd).await;
    assert_eq!(
        wd.text("#call-peer").await.lines().next(),
        Some(alice.name.as_str())
    );
    assert_eq!(wd.text("#call-state").await, "is calling you · video call");
    wd.find("#call-decline").await;
    wd.click("#call-accept").await;
    wd.until("Alice's magenta in the panel", MAGENTA_SHOWN).await;
    // Alice hangs up once she has seen 30 frames of the panel's green: the panel says so.
    let report = calling.await.expect("the calling side");
    assert_eq!(report.ended, CallEnd::Hangup);
    let centre = report.centre.expect("a picture");
    assert!(
        centre[0] < 60 && centre[1] > 200 && centre[2] < 60,
        "Alice sees the panel's green: {centre:?}"
    );
    wd.until(
        "the call shown ended by Alice",
        "return document.querySelector('#call-state')?.dataset.reason === 'hangup' || null",
    )
    .await;
    assert_eq!(wd.text("#call-state").await, "The call has ended.");

    // Alice calls again and gives up before the panel answers: a missed call, in the history too.
    wd.click("#call-close").await;
    wd.until(
        "both calls in the chat's history",
        "return document.querySelectorAll('#messages .callrec').length === 2 || null",
    )
    .await;
    let (mut stream, call) = alice_calls(&server, &alice_key, demo_id, false).await;
    panel_rings(&wd).await;
    alice_gives_up(&mut stream, call).await;
    wd.until(
        "the call shown cancelled",
        "return document.querySelector('#call-state')?.dataset.reason === 'cancelled' || null",
    )
    .await;
    assert_eq!(
        wd.text("#call-state").await,
        format!("{} hung up before you answered.", alice.name)
    );
    wd.click("#call-close").await;
    let kinds = wd
        .until(
            "the missed call in the chat's history",
            "const r = [...document.querySelectorAll('#messages .callrec')].map((e) => e.dataset.kind + ': ' + e.textContent);
             return r.length === 3 ? r.join('\\n') : null",
        )
        .await;
    let kinds: Vec<&str> = kinds.as_str().unwrap().lines().collect();
    assert!(
        kinds[0].starts_with("answered: 🎥 Outgoing video call · 0:"),
        "{kinds:?}"
    );
    assert!(
        kinds[1].starts_with("answered: 🎥 Incoming video call · 0:"),
        "{kinds:?}"
    );
    assert!(kinds[2].starts_with("missed: 📞 Missed voice call"), "{kinds:?}");
    // A call in the history calls back, the same kind of call.
    drop(stream);
    let (answering, _) = alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;
    wd.click("#messages .callrec[data-kind='answered']").await;
    wd.until(
        "the call back connected",
        "return document.querySelector('#call-state')?.dataset.phase === 'connected' || null",
    )
    .await;
    wd.click("#call-hangup").await;
    assert_eq!(answering.await.unwrap().ended, CallEnd::Hangup);
    assert!(!wd.app.as_ref().unwrap().log().contains("panicked"));
}

/// A computer without a camera or a microphone (this one: Xvfb, no /dev/video*, no /dev/snd) calls
/// all the same with the system's devices: the call view says what the contact will miss, and the
/// contact sees a black picture.
/// The panel's link to the server is cut mid-call and held down: the call view says it is
/// reconnecting and why, the peer's picture goes on meanwhile (the media go between the peers, not
/// through the server), and once the link is back the call is connected again and hangs up as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_through_a_cut_link_and_says_it_is_reconnecting() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let Calling {
        wd,
        widget,
        alice,
        alice_key,
        demo_id,
    } = calling_at(&x, &server, &format!("http://{}", proxy.addr), dir.path(), &[]).await;
    let (answering, _seen) = alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;
    open_widget(&wd, &widget, "en").await;
    wd.click(&format!("button[data-video='{}']", alice.id)).await;
    wd.until("Alice's magenta in the panel", MAGENTA_SHOWN).await;

    proxy.set(Fault::Refuse);
    proxy.reset_all();
    wd.until(
        "the call shown reconnecting",
        "return document.querySelector('#call-state')?.textContent === 'reconnecting…' || null",
    )
    .await;
    assert_eq!(
        wd.text("#call-away").await,
        "Your connection to the server dropped; the call goes on while it reconnects."
    );
    let frames = wd.js("return activeCall.frames").await.as_u64().unwrap();
    wd.until(
        "Alice's picture going on while the link is down",
        &format!("return activeCall.frames >= {} || null", frames + 15),
    )
    .await;
    assert_eq!(wd.text("#call-state").await, "reconnecting…");

    proxy.set(Fault::Pass);
    wd.until(
        "the call connected again",
        "return (document.querySelector('#call-state')?.textContent === 'connected' \
         && !document.querySelector('#call-away')) || null",
    )
    .await;
    wd.until("Alice's magenta after the link is back", MAGENTA_SHOWN)
        .await;
    wd.click("#call-hangup").await;
    wd.until(
        "the call shown ended",
        "return document.querySelector('#call-state')?.dataset.phase === 'ended' || null",
    )
    .await;
    let report = answering.await.expect("the peer's side");
    assert_eq!(report.ended, CallEnd::Hangup);
}

/// The full client's window takes and places calls of its own: Alice calls the demo user, whom no
/// widget pins, and the window rings; accepted there, it shows her picture and she sees its green; the
/// call is in the chat's history, and the window's own video call to her connects as well, and goes on
/// through the window's connection being cut (it says it is reconnecting, then connected again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_client_window_takes_and_places_video_calls() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let url = format!("http://{}", proxy.addr);
    let wd = WebDriver::start_full(
        &x.display,
        dir.path(),
        &[("PINCHAT_CALL_TEST_PATTERN", "00ff00")],
        &[
            "--server",
            &url,
            "--account",
            "demo",
            "--runtime-dir",
            run.to_str().unwrap(),
        ],
    )
    .await;
    wd.find("#login").await;
    wd.type_into("#password", "demo").await;
    wd.click("#login").await;
    wd.until(
        "connected",
        "return document.querySelector('#connection')?.textContent === 'connected' || null",
    )
    .await;
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    let alice = server.id_of(&server.key("demo").await, "alice").await;

    // Alice calls; the window rings and is answered there.
    let (calling, _) = alice_side(&server, &alice_key, demo_id, true, std::time::Duration::ZERO).await;
    panel_rings(&wd).await;
    wd.click("#call-accept").await;
    wd.until("Alice's magenta in the window", MAGENTA_SHOWN).await;
    // She hangs up once she has seen 30 of the window's frames: green.
    let report = calling.await.expect("Alice's side");
    assert_eq!(report.ended, CallEnd::Hangup);
    let centre = report.centre.expect("a picture");
    assert!(
        centre[0] < 60 && centre[1] > 200 && centre[2] < 60,
        "Alice sees the window's green: {centre:?}"
    );
    wd.until(
        "the call shown ended",
        "return document.querySelector('#call-state')?.dataset.phase === 'ended' || null",
    )
    .await;
    // Back in the chat, the call is in the history.
    wd.click("#call-close").await;
    wd.until(
        "the call in the chat's history",
        "return [...document.querySelectorAll('#messages .callrec')].some((c) => c.textContent.includes('Incoming video call')) || null",
    )
    .await;

    // The window calls her from the chat; she answers, and the window hangs up.
    let (answering, mut seen) =
        alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;
    wd.click("#chat-video").await;
    wd.until("Alice's magenta in the window", MAGENTA_SHOWN).await;
    tokio::time::timeout(pinchat_tests::DEADLINE, seen.wait_for(|s| s.video_frames >= 30))
        .await
        .expect("Alice decodes 30 frames of the window's video")
        .unwrap();
    // Cut and held down (the full client reconnects at once after a cut: a link that came straight
    // back could be back before the page is looked at).
    proxy.set(Fault::Refuse);
    proxy.reset_all();
    wd.until(
        "the window's call shown reconnecting",
        "return document.querySelector('#call-away')?.textContent === \
         'Your connection to the server dropped; the call goes on while it reconnects.' || null",
    )
    .await;
    proxy.set(Fault::Pass);
    wd.until(
        "the window's call connected again",
        "return (document.querySelector('#call-state')?.textContent === 'connected' \
         && !document.querySelector('#call-away')) || null",
    )
    .await;
    wd.click("#call-hangup").await;
    let report = answering.await.expect("Alice's side");
    assert_eq!(report.ended, CallEnd::Hangup);
    let page: pinchat_proto::http::CallHistoryPage = server
        .get(&alice_key, &format!("/v1/calls/{demo_id}"))
        .await
        .unwrap();
    let answered: Vec<_> = page
        .calls
        .iter()
        .map(|c| (c.caller, c.reason, c.duration_ms.is_some()))
        .collect();
    assert_eq!(
        answered,
        [(demo_id, CallEnd::Hangup, true), (alice, CallEnd::Hangup, true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panel_without_camera_or_microphone_calls_and_says_what_is_missing() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Not a colour: the panel's engine takes the system's devices.
    let env = [("PINCHAT_CALL_TEST_PATTERN", "devices")];
    let Calling {
        wd,
        widget,
        alice,
        alice_key,
        demo_id,
    } = calling(&x, &server, dir.path(), &env).await;
    let (answering, mut seen) =
        alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;
    open_widget(&wd, &widget, "en").await;
    wd.click(&format!("button[data-video='{}']", alice.id)).await;
    wd.until("Alice's magenta in the panel", MAGENTA_SHOWN).await;
    let no_camera = !std::fs::read_dir("/dev")
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("video"));
    let no_sound = !std::path::Path::new("/dev/snd").exists();
    let mut expected = vec![];
    if no_sound {
        expected.push(format!("No microphone found: {} cannot hear you.", alice.name));
    }
    if no_camera {
        expected.push(format!("No camera found: {} sees no picture of you.", alice.name));
    }
    if !expected.is_empty() {
        let note = wd
            .until(
                "the missing devices said",
                "return document.querySelector('#call-missing')?.textContent || null",
            )
            .await;
        assert_eq!(note, expected.join(" "));
    }
    tokio::time::timeout(pinchat_tests::DEADLINE, seen.wait_for(|s| s.video_frames >= 30))
        .await
        .expect("Alice decodes 30 frames of the panel's video")
        .unwrap();
    wd.click("#call-hangup").await;
    let report = answering.await.unwrap();
    assert_eq!(report.ended, CallEnd::Hangup);
    if no_camera {
        let centre = report.centre.expect("a picture");
        assert!(centre.iter().all(|c| *c < 48), "Alice sees {centre:?}, not black");
    }
}

/// An incoming call rings as an OS notification of the real server dunst too, with Accept and
/// Decline: Decline there ends it for the caller and the panel stops ringing; Accept there answers it
/// in the account's panel; a call the caller gives up on takes its notification away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_call_rings_as_a_notification_with_accept_and_decline() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let menus = tempfile::tempdir().unwrap();
    let (dunst, choice) = Dunst::start_with_menu(&x.display, menus.path());
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let Calling {
        wd,
        widget,
        alice,
        alice_key,
        demo_id,
    } = calling(&x, &server, dir.path(), &[]).await;
    open_widget(&wd, &widget, "en").await;
    let ringing = |what: &'static str| {
        eventually(what, || (dunst.displayed() == 1).then_some(()));
    };
    let gone = |what: &'static str| {
        eventually(what, || (dunst.displayed() == 0).then_some(()));
    };

    // Alice calls; Decline in the notification.
    let (mut stream, _) = alice_calls(&server, &alice_key, demo_id, true).await;
    tokio::task::block_in_place(|| ringing("the call's notification"));
    panel_rings(&wd).await;
    dunst.choose(&choice, "Decline");
    let ended = loop {
        if let ServerFrame::Call {
            event: CallEvent::Ended { reason },
            ..
        } = stream.recv().await
        {
            break reason;
        }
    };
    assert_eq!(ended, CallEnd::Declined);
    assert_eq!(
        dunst.newest_closed_summary().as_deref(),
        Some(format!("{} is calling you", alice.name).as_str())
    );
    // The panel stops ringing and shows the conversation, with the declined call in it.
    wd.until(
        "the declined call in the chat",
        "return document.querySelector('#messages .callrec[data-kind=declined]') || null",
    )
    .await;
    tokio::task::block_in_place(|| gone("the notification gone"));

    // Alice calls again; Accept in the notification answers it in the account's panel, which sends
    // its green to her.
    drop(stream);
    let (calling, _) = alice_side(&server, &alice_key, demo_id, true, std::time::Duration::ZERO).await;
    tokio::task::block_in_place(|| ringing("the second call's notification"));
    dunst.choose(&choice, "Accept");
    let report = calling.await.expect("the calling side");
    assert_eq!(report.ended, CallEnd::Hangup, "Alice saw 30 frames and hung up");
    let centre = report.centre.expect("a picture");
    assert!(
        centre[0] < 60 && centre[1] > 200 && centre[2] < 60,
        "Alice sees the panel's green: {centre:?}"
    );
    // The panel under test was not the one that answered: it says so.
    wd.until(
        "answered on another device",
        "return document.querySelector('#call-state')?.dataset.reason === 'answered_elsewhere' || null",
    )
    .await;
    tokio::task::block_in_place(|| gone("the accepted call's notification gone"));

    // Alice calls and gives up before anyone answers: the notification goes with the ringing.
    let (mut stream, call) = alice_calls(&server, &alice_key, demo_id, true).await;
    tokio::task::block_in_place(|| ringing("the third call's notification"));
    alice_gives_up(&mut stream, call).await;
    tokio::task::block_in_place(|| gone("the given-up call's notification gone"));
    assert!(!wd.app.as_ref().unwrap().log().contains("panicked"));
}

/// Regenerates the call view's screenshots in docs/screenshots (run by ui/screenshots.sh): a video
/// call connected (the peer's picture is a solid colour here: no camera under Xvfb) and an incoming
/// call ringing, light and dark, English and Chinese.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regenerates the README's screenshots; run ui/screenshots.sh"]
async fn call_screenshots() {
    let Some(out) = std::env::var_os("PINCHAT_SCREENSHOTS") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    let _serial = serial().await;
    let x = Xvfb::start();
    for (lang, theme) in [("en", "light"), ("en", "dark"), ("zh", "light"), ("zh", "dark")] {
        // A server each: the history shot shows this round's calls only.
        let server = Server::start().await;
        let dir = tempfile::tempdir().unwrap();
        let gtk_theme = if theme == "dark" {
            "Adwaita:dark"
        } else {
            "Adwaita"
        };
        let Calling {
            wd,
            widget,
            alice,
            alice_key,
            demo_id,
        } = calling(
            &x,
            &server,
            dir.path(),
            &[("PINCHAT_LANG", lang), ("GTK_THEME", gtk_theme)],
        )
        .await;
        let shot = |name: &str, png: Vec<u8>| {
            std::fs::write(out.join(format!("{name}-{lang}-{theme}.png")), png).unwrap();
        };
        let (answering, _) = alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;
        open_widget(&wd, &widget, lang).await;
        wd.click(&format!("button[data-video='{}']", alice.id)).await;
        wd.until("Alice's picture", MAGENTA_SHOWN).await;
        // A few seconds on the clock, as a call in progress shows.
        wd.until(
            "the clock at 0:02",
            "return document.querySelector('#call-duration').textContent === '0:02' || null",
        )
        .await;
        shot("call", wd.screenshot());
        wd.click("#call-hangup").await;
        answering.await.unwrap();
        wd.click("#call-close").await;
        let (calling, _) = alice_side(&server, &alice_key, demo_id, true, std::time::Duration::ZERO).await;
        panel_rings(&wd).await;
        shot("call-incoming", wd.screenshot());
        wd.click("#call-decline").await;
        let _ = calling.await;
        // A message, and a call Alice gave up on before it was answered: the conversation with its
        // calls, a missed one among them.
        server
            .send_text(&alice_key, demo_id, "shot-1", "Call me when you are back?")
            .await;
        let (mut stream, call) = alice_calls(&server, &alice_key, demo_id, false).await;
        panel_rings(&wd).await;
        alice_gives_up(&mut stream, call).await;
        wd.until(
            "the call given up",
            "return document.querySelector('#call-state')?.dataset.reason === 'cancelled' || null",
        )
        .await;
        wd.click("#call-close").await;
        wd.until(
            "three calls and a message in the chat",
            "return (document.querySelectorAll('#messages .callrec').length === 3
                && document.querySelectorAll('#messages .msg').length === 1) || null",
        )
        .await;
        shot("call-history", wd.screenshot());
    }
}

/// The processes under `root` (itself included), from /proc.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_owned()) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// CPU time (user + system, in clock ticks) and resident memory (KiB) of the processes `pids`.
fn usage(pids: &[u32]) -> (u64, u64) {
    let (mut ticks, mut rss) = (0, 0);
    for pid in pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            rss += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (ticks, rss)
}

/// The panel process WebKitWebDriver started (`… --automation panel`).
fn panel_pid() -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.contains(&&b"--automation"[..]) && args.contains(&&b"panel"[..])
            })
        })
        .expect("the panel's process")
}

/// How long the benchmark's callee lets a call ring before answering, as a person would: the panel's
/// engine gets ready meanwhile.
const RING: std::time::Duration = std::time::Duration::from_secs(2);

/// The figures of BENCHMARKS.md § 7 for the panel (run by `bench/run call-panel`): the time from the
/// click on *video* to the peer's first picture drawn in the page, and the panel's CPU and memory
/// (its process and the web engine's, which it started) while idle on the widget and during a held
/// video call, side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/run call-panel"]
async fn panel_call_figures() {
    let hold = std::time::Duration::from_secs(
        std::env::var("PINCHAT_HOLD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let Calling {
        wd,
        widget,
        alice,
        alice_key,
        demo_id,
    } = calling(&x, &server, dir.path(), &[]).await;
    open_widget(&wd, &widget, "en").await;
    wd.find(&format!("button[data-video='{}']", alice.id)).await;
    let panel = panel_pid();
    let tick = 100.0; // USER_HZ on Linux.
    let (idle_from, _) = usage(&process_tree(panel));
    tokio::time::sleep(hold).await;
    let (idle_to, idle_rss) = usage(&process_tree(panel));
    let idle_cpu = (idle_to - idle_from) as f64 / tick / hold.as_secs_f64();

    let (answering, _) = alice_side(&server, &alice_key, demo_id, false, RING).await;
    wd.js(&format!(
        "window.__clicked = performance.now(); document.querySelector(\"button[data-video='{}']\").click(); return true;",
        alice.id
    ))
    .await;
    let setup = wd
        .until(
            "the first picture",
            "return (activeCall && activeCall.firstFrameAt && activeCall.firstFrameAt - window.__clicked) || null",
        )
        .await
        .as_f64()
        .unwrap();
    let answered = wd
        .js("return activeCall.firstFrameAt - activeCall.acceptedAt")
        .await
        .as_f64()
        .unwrap();
    let (call_from, _) = usage(&process_tree(panel));
    let frames_from = wd.js("return activeCall.frames").await.as_u64().unwrap();
    tokio::time::sleep(hold).await;
    let (call_to, call_rss) = usage(&process_tree(panel));
    let frames_to = wd.js("return activeCall.frames").await.as_u64().unwrap();
    let call_cpu = (call_to - call_from) as f64 / tick / hold.as_secs_f64();
    wd.click("#call-hangup").await;
    let report = answering.await.unwrap();
    println!(
        "panel during a video call (VP8 320×240 at 15 fps + Opus; native engine in the panel), held {hold:?}:"
    );
    println!(
        "  click → first picture drawn: {setup:.0} ms (the peer lets it ring {RING:?}); accepted → first picture: \
         {answered:.0} ms; pictures drawn {:.1}/s; the peer decoded {} frames",
        (frames_to - frames_from) as f64 / hold.as_secs_f64(),
        report.stats.video_frames
    );
    println!(
        "  {:<28} {:>10} {:>10}",
        "panel (process + web engine)", "CPU/core", "RSS MiB"
    );
    println!(
        "  {:<28} {:>9.1}% {:>10.1}",
        "idle on the widget",
        idle_cpu * 100.0,
        idle_rss as f64 / 1024.0
    );
    println!(
        "  {:<28} {:>9.1}% {:>10.1}",
        "in a video call",
        call_cpu * 100.0,
        call_rss as f64 / 1024.0
    );
    println!(
        "  call / idle: CPU {:.0}×, memory {:.2}×",
        call_cpu / idle_cpu.max(0.001),
        call_rss as f64 / idle_rss.max(1) as f64
    );
}

/// The demo's Alice answers the demo user's calls (`pinchat demo`): a caller on the demo server rings
/// her, she answers after a moment, and her picture (a blue test colour) reaches the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_contact_answers_calls_with_her_picture() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = pinchat_ui::demo::DemoServer::start(dir.path(), 0, 0).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let answering = tokio::spawn(pinchat_ui::demo::answer_calls(demo.url.clone(), stop.clone()));
    let remote = pinchat_daemon::remote::Remote::new(&demo.url).unwrap();
    // The demo world is seeded as the server starts.
    let deadline = std::time::Instant::now() + pinchat_tests::DEADLINE;
    let key = loop {
        match remote.login("demo", "demo").await {
            Ok(l) => break l.key,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cannot log in to the demo: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    let alice = remote
        .contacts(&key)
        .await
        .unwrap()
        .contacts
        .into_iter()
        .find(|c| c.login == "alice")
        .unwrap()
        .id;
    let addr: std::net::SocketAddr = demo.url.trim_start_matches("http://").parse().unwrap();
    // Until Alice's stream follows the demo user, a call to her is refused as unavailable.
    let mut req = 0;
    let stream = loop {
        let mut stream = Stream::connect(addr, &key, Encoding::Json).await.unwrap();
        stream
            .send(&ClientFrame::Hello {
                version: pinchat_proto::PROTOCOL_VERSION,
            })
            .await;
        assert!(matches!(stream.recv().await, ServerFrame::Welcome(_)));
        req += 1;
        stream
            .send(&ClientFrame::CallInvite {
                req,
                to: alice,
                video: true,
            })
            .await;
        match stream.recv().await {
            ServerFrame::Ack { .. } => break stream,
            ServerFrame::Error { error, .. } if error.code == pinchat_proto::ErrorCode::CallUnavailable => {
                assert!(std::time::Instant::now() < deadline, "Alice never took calls");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => panic!("the invite got {other:?}"),
        }
    };
    let engine = Engine::new(&Options {
        source: Source::TestPattern { rgb: 0x00ff00 },
        size: (160, 120),
        ..Options::default()
    })
    .unwrap();
    // The invite is placed: the caller's side takes it from the ringing on.
    let report = peer_until(stream, engine, None, Some(30), std::time::Duration::ZERO).await;
    let centre = report.centre.expect("Alice's picture");
    assert!(
        centre[2] > 180 && centre[0] < 120,
        "Alice's blue test colour: {centre:?}"
    );
    stop.cancel();
    answering.await.unwrap();
    demo.stop();
}

/// A peer that answers with a session description that is not one: the panel's engine refuses it,
/// the call ends as failed for both sides with a message in the call view, and the panel goes on
/// (its next call connects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_ends_the_call_as_failed_and_the_panel_goes_on() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let Calling {
        wd,
        widget,
        alice,
        alice_key,
        demo_id,
    } = calling(&x, &server, dir.path(), &[]).await;
    let mut stream = server.stream(&alice_key, Encoding::Json).await;
    stream.subscribe(1, 0, &[demo_id], None).await;
    open_widget(&wd, &widget, "en").await;
    wd.click(&format!("button[data-video='{}']", alice.id)).await;
    let mut req = 10;
    let ended = loop {
        match stream.recv().await {
            ServerFrame::Call { call, event, .. } => match event {
                CallEvent::Incoming { .. } => {
                    req += 1;
                    stream
                        .send(&ClientFrame::CallSignal {
                            req,
                            call,
                            signal: CallSignal::Accept,
                        })
                        .await;
                }
                CallEvent::Offer { .. } => {
                    req += 1;
                    let signal = CallSignal::Answer {
                        sdp: "this is not a session description".into(),
                    };
                    stream.send(&ClientFrame::CallSignal { req, call, signal }).await;
                }
                CallEvent::Ended { reason } => break reason,
                _ => {}
            },
            ServerFrame::Error { error, .. } => panic!("the server refused Alice's signal: {error:?}"),
            _ => {}
        }
    };
    assert_eq!(ended, CallEnd::Failed, "the panel hangs up as failed");
    wd.until(
        "the call shown failed",
        "return document.querySelector('#call-state')?.dataset.reason === 'failed' || null",
    )
    .await;
    assert_eq!(wd.text("#call-state").await, "The call could not connect.");
    assert_eq!(wd.text("#call-error").await, "The call could not be set up.");

    // The panel is fine: back to the conversation, and the next call connects.
    wd.click("#call-close").await;
    drop(stream);
    let (answering, _) = alice_side(&server, &alice_key, demo_id, false, std::time::Duration::ZERO).await;
    wd.click("#chat-video").await;
    wd.until("Alice's magenta in the panel", MAGENTA_SHOWN).await;
    wd.click("#call-hangup").await;
    assert_eq!(answering.await.unwrap().ended, CallEnd::Hangup);
}
