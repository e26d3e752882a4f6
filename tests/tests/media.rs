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
                let signal = match event {
                    CallEvent::Offer { sdp } => CallSignal::Offer { sdp },
                    CallEvent::Answer { sdp } => CallSignal::Answer { sdp },
                    CallEvent::Ice {
                        candidate,
                        mline,
                        mid,
                    } => CallSignal::Ice {
                        candidate,
                        mline,
                        mid,
                    },
                    CallEvent::Ended { reason } => panic!("the call ended: {reason:?}"),
                    _ => return,
                };
                self.engine.remote(signal).expect("the peer's signal is usable");
            }
            ServerFrame::Ack { .. } | ServerFrame::Delta { .. } | ServerFrame::Message { .. } => {}
            other => panic!("the server said {other:?}"),
        }
    }
}

async fn side(s: &Server, proxy: &CountingProxy, login: &str, pins: &[AccountId], rgb: u32) -> Side {
    let mut stream = s
        .stream_at(proxy.addr, &s.key(login).await, Encoding::Binary)
        .await;
    stream.subscribe(1, 0, pins, None).await;
    let options = Options {
        source: Source::TestPattern { rgb },
        size: (160, 120),
        ..Options::default()
    };
    let mut engine =
        Engine::new(&options).expect("GStreamer with webrtcbin, vpx, opus and nice is installed");
    let events = engine.events().unwrap();
    Side {
        stream,
        engine,
        events,
        next_req: 10,
        call: 0,
    }
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
                EngineEvent::Signal(signal) => a.send(signal).await,
                EngineEvent::Failed(e) => panic!("demo's engine failed: {e}"),
                EngineEvent::Ice(state) => ice.push(format!("demo {state}")),
                EngineEvent::FirstFrame => {}
            },
            Some(event) = b.events.recv() => match event {
                EngineEvent::Signal(signal) => b.send(signal).await,
                EngineEvent::Failed(e) => panic!("alice's engine failed: {e}"),
                EngineEvent::Ice(state) => ice.push(format!("alice {state}")),
                EngineEvent::FirstFrame => {}
            },
            Ok(frame) = a.stream.next() => a.server_said(frame),
            Ok(frame) = b.stream.next() => b.server_said(frame),
        }
    }
    let setup = started.elapsed();
    let (sa, sb) = (a.engine.stats(), b.engine.stats());
    let (fa, fb) = (a.engine.latest_frame().unwrap(), b.engine.latest_frame().unwrap());
    println!(
        "call set up and 30 frames each way in {setup:?}; first remote frame after {:?} / {:?} ms; \
         demo decoded {} frames and {} audio buffers, alice {} and {}; ICE: {ice:?}",
        sa.first_frame_ms,
        sb.first_frame_ms,
        sa.video_frames,
        sa.audio_buffers,
        sb.video_frames,
        sb.audio_buffers
    );
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
