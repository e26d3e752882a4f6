//! A video call from the real panel (Linux): the tray app and its panel on a private X server, driven
//! by WebKitWebDriver, call a pinned contact whose side is a native engine on a real stream. WebKitGTK
//! has no WebRTC, so the panel's own process runs the call (pinchat-media) and the page shows its
//! pictures: the test checks the colour the page draws is the peer's, and the peer's is the panel's.
#![cfg(target_os = "linux")]

use pinchat_ipc::api::{CreateWidget, Login, SetPins, SetPinsParams};
use pinchat_media::{Engine, EngineEvent, Options, Source, Stats};
use pinchat_proto::AccountId;
use pinchat_proto::stream::{CallEnd, CallEvent, CallSignal, ClientFrame, ServerFrame};
use pinchat_tests::desktop::{WebDriver, Xvfb, eventually, serial, visible_window};
use pinchat_tests::{Server, Stream, pinchat_proto::codec::Encoding};

/// What the peer's side saw of the call.
struct PeerReport {
    stats: Stats,
    centre: Option<[u8; 3]>,
    ended: CallEnd,
}

/// The contact's side of a call: with `call_to`, places a video call to that account and makes the
/// offer once it is accepted; otherwise accepts the call that rings on `stream` and answers the
/// panel's offer. Carries candidates both ways, and reports once the call ends.
async fn peer(mut stream: Stream, mut engine: Engine, call_to: Option<AccountId>) -> PeerReport {
    let mut events = engine.events().unwrap();
    let mut call = None;
    let mut req = 100;
    if let Some(to) = call_to {
        stream
            .send(&ClientFrame::CallInvite { req, to, video: true })
            .await;
    }
    loop {
        tokio::select! {
            frame = stream.next() => match frame.expect("the peer's stream stays open") {
                ServerFrame::Call { call: id, event, .. } => match event {
                    CallEvent::Incoming { video } => {
                        assert!(video, "the panel placed a video call");
                        call = Some(id);
                        req += 1;
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
                EngineEvent::Ice(_) | EngineEvent::Gathered | EngineEvent::FirstFrame => {}
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
/// green instead of a camera's picture (there is none under Xvfb).
async fn calling(x: &Xvfb, server: &Server, dir: &std::path::Path, env: &[(&str, &str)]) -> Calling {
    let mut env = env.to_vec();
    env.push(("PINCHAT_CALL_TEST_PATTERN", "00ff00"));
    let wd = WebDriver::start_with(&x.display, dir, &env).await;
    let client = pinchat_ipc::Client::connect(&wd.app.as_ref().expect("the tray app").socket)
        .await
        .unwrap();
    let created = client
        .call::<CreateWidget>(Login {
            server: server.url(""),
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

/// Alice's side: a stream that follows the demo user (a call rings only where the caller is pinned)
/// and a native engine sending magenta; with `call`, she calls the demo user.
async fn alice_side(
    server: &Server,
    key: &str,
    demo: AccountId,
    call: bool,
) -> tokio::task::JoinHandle<PeerReport> {
    let mut stream = server.stream(key, Encoding::Json).await;
    stream.subscribe(1, 0, &[demo], None).await;
    let engine = Engine::new(&Options {
        source: Source::TestPattern { rgb: 0xff00ff },
        size: (160, 120),
        ..Options::default()
    })
    .expect("GStreamer with webrtcbin, vpx, opus and nice is installed");
    tokio::spawn(peer(stream, engine, call.then_some(demo)))
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
    let answering = alice_side(&server, &alice_key, demo_id, false).await;

    // The widget: each pinned contact offers text or video (Fig. 6).
    wd.js(&format!(
        "location.search = '?lang=en&view=widget&widget={widget}'; return true;"
    ))
    .await;
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
    wd.click("#call-close").await;
    wd.find(&format!("button[data-video='{}']", alice.id)).await;

    // Now Alice calls: the panel rings with accept and decline; accepted, it answers her offer, shows
    // her picture, and she hears its hang-up.
    let calling = alice_side(&server, &alice_key, demo_id, true).await;
    // No panel of the account was open in the tray: it opens one, ringing.
    tokio::task::block_in_place(|| {
        eventually("the tray's panel opened for the call", || {
            visible_window(&x.display, "pinchat — Demo User")
        })
    });
    wd.until(
        "the panel ringing",
        "return document.querySelector('#call-state')?.dataset.phase === 'incoming' || null",
    )
    .await;
    assert_eq!(
        wd.text("#call-peer").await.lines().next(),
        Some(alice.name.as_str())
    );
    assert_eq!(wd.text("#call-state").await, "is calling you · video call");
    wd.find("#call-decline").await;
    wd.click("#call-accept").await;
    wd.until("Alice's magenta in the panel", MAGENTA_SHOWN).await;
    wd.click("#call-hangup").await;
    let report = calling.await.expect("the calling side");
    assert_eq!(report.ended, CallEnd::Hangup);
    assert!(report.stats.video_frames > 0, "{:?}", report.stats);
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
    let server = Server::start().await;
    for (lang, theme) in [("en", "light"), ("en", "dark"), ("zh", "light"), ("zh", "dark")] {
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
        let answering = alice_side(&server, &alice_key, demo_id, false).await;
        wd.js(&format!(
            "location.search = '?lang={lang}&view=widget&widget={widget}'; return true;"
        ))
        .await;
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
        let calling = alice_side(&server, &alice_key, demo_id, true).await;
        wd.until(
            "the panel ringing",
            "return document.querySelector('#call-state')?.dataset.phase === 'incoming' || null",
        )
        .await;
        shot("call-incoming", wd.screenshot());
        wd.click("#call-decline").await;
        let _ = calling.await;
    }
}
