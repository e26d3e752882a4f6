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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_calls_from_and_to_the_panel_ring_show_the_peer_and_hang_up() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The panel sends green instead of a camera's picture (there is none under Xvfb).
    let wd = WebDriver::start_with(&x.display, dir.path(), &[("PINCHAT_CALL_TEST_PATTERN", "00ff00")]).await;
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

    // Alice follows the demo user on a stream of her own (a call rings only where the caller is
    // pinned), with a native engine sending magenta.
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    let mut stream = server.stream(&alice_key, Encoding::Json).await;
    stream.subscribe(1, 0, &[demo_id], None).await;
    let engine = Engine::new(&Options {
        source: Source::TestPattern { rgb: 0xff00ff },
        size: (160, 120),
        ..Options::default()
    })
    .expect("GStreamer with webrtcbin, vpx, opus and nice is installed");
    let answering = tokio::spawn(peer(stream, engine, None));

    // The widget: each pinned contact offers text or video (Fig. 6).
    wd.js(&format!(
        "location.search = '?lang=en&view=widget&widget={}'; return true;",
        created.widget.id
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
    let mut stream = server.stream(&alice_key, Encoding::Json).await;
    stream.subscribe(1, 0, &[demo_id], None).await;
    let engine = Engine::new(&Options {
        source: Source::TestPattern { rgb: 0xff00ff },
        size: (160, 120),
        ..Options::default()
    })
    .unwrap();
    let calling = tokio::spawn(peer(stream, engine, Some(demo_id)));
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
