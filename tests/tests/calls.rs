//! Call signalling through the real server (claim 4: text or video with a pinned contact): ringing only
//! where the caller is followed, accept / decline / cancel / ring-out, the first device wins, glare,
//! busy, a vanished party, and bad signals. Media is not the server's business: it only relays what
//! the parties say, and the tests check exactly what each stream hears.

use pinchat_ipc::api::{
    CallAccept, CallDecline, CallHangup, CallHangupParams, CallHistory, CallIce, CallRef, CallSignalMethod,
    CallSignalParams, CallStart, CallStartParams, CallState, Connection, CreateWidget, HistoryParams, Login,
    Notification, SetPins, SetPinsParams, Subscribe, SubscribeParams, WidgetRef,
};
use pinchat_proto::http::CallHistoryPage;
use pinchat_proto::stream::{
    Ack, CallEnd, CallEvent, CallId, CallSignal, ClientFrame, MAX_SDP_BYTES, ReqId, ServerFrame,
};
use pinchat_proto::{AccountId, Encoding, ErrorBody, ErrorCode, Presence};
use pinchat_tests::{DEMO_PASSWORD, Daemon, Fault, FaultProxy, Server, Stream, until};
use std::collections::VecDeque;

/// A party: a stream subscribed to `pins`, with the call frames that arrived while it waited for an
/// answer.
struct Party {
    stream: Stream,
    pending: VecDeque<(CallId, AccountId, CallEvent)>,
}

async fn party(s: &Server, key: &str, pins: &[AccountId], encoding: Encoding) -> Party {
    let mut stream = s.stream(key, encoding).await;
    stream.subscribe(1, 0, pins, None).await;
    Party {
        stream,
        pending: VecDeque::new(),
    }
}

/// The next call frame; presence and message traffic in between is skipped.
async fn call_frame(p: &mut Party) -> (CallId, AccountId, CallEvent) {
    if let Some(frame) = p.pending.pop_front() {
        return frame;
    }
    loop {
        match p.stream.recv().await {
            ServerFrame::Call { call, peer, event } => return (call, peer, event),
            ServerFrame::Delta { .. } | ServerFrame::Message { .. } => continue,
            other => panic!("expected a call frame, got {other:?}"),
        }
    }
}

/// Sends `frame` and returns the answer to its request `req`; call frames that arrive first are kept
/// for [`call_frame`].
async fn ask(p: &mut Party, req: ReqId, frame: ClientFrame) -> Result<Ack, ErrorBody> {
    p.stream.send(&frame).await;
    loop {
        match p.stream.recv().await {
            ServerFrame::Ack { req: r, result } if r == req => return Ok(result),
            ServerFrame::Error { req: Some(r), error } if r == req => return Err(error),
            ServerFrame::Error { req: None, error } => panic!("the server could not read a frame: {error}"),
            ServerFrame::Call { call, peer, event } => p.pending.push_back((call, peer, event)),
            ServerFrame::Delta { .. } | ServerFrame::Message { .. } => continue,
            other => panic!("expected the answer to request {req}, got {other:?}"),
        }
    }
}

async fn invite(p: &mut Party, req: ReqId, to: AccountId, video: bool) -> Result<CallId, ErrorBody> {
    ask(p, req, ClientFrame::CallInvite { req, to, video })
        .await
        .map(|ack| match ack {
            Ack::Call { call } => call,
            other => panic!("an invite answered {other:?}"),
        })
}

async fn signal(p: &mut Party, req: ReqId, call: CallId, signal: CallSignal) -> Result<(), ErrorBody> {
    ask(p, req, ClientFrame::CallSignal { req, call, signal })
        .await
        .map(|ack| assert_eq!(ack, Ack::Done))
}

fn code(result: Result<impl std::fmt::Debug, ErrorBody>) -> ErrorCode {
    result.expect_err("expected an error").code
}

/// Proves `p` heard nothing since the last frame read: a request's answer is the next frame.
async fn heard_nothing(p: &mut Party) {
    assert!(p.pending.is_empty(), "the stream heard {:?}", p.pending);
    p.stream
        .send(&ClientFrame::SetPresence {
            req: 900,
            state: None,
            status: None,
        })
        .await;
    match p.stream.recv().await {
        ServerFrame::Ack { req: 900, .. } => {}
        other => panic!("the stream heard {other:?}"),
    }
}

/// The demo user (pinning Alice and Carol), Alice and Carol (each pinning the demo user), each on a
/// stream of their own.
async fn three_parties(w: &World) -> (Party, Party, Party) {
    let demo = party(
        &w.s,
        &w.s.key("demo").await,
        &[w.alice, w.carol],
        Encoding::Binary,
    )
    .await;
    let alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;
    let carol = party(&w.s, &w.s.key("carol").await, &[w.demo], Encoding::Binary).await;
    (demo, alice, carol)
}

struct World {
    s: Server,
    demo: AccountId,
    alice: AccountId,
    bob: AccountId,
    carol: AccountId,
}

async fn world(extra: &str) -> World {
    let s = Server::start_with(extra).await;
    let key = s.key("demo").await;
    let alice = s.id_of(&key, "alice").await;
    let bob = s.id_of(&key, "bob").await;
    let carol = s.id_of(&key, "carol").await;
    let demo = s.id_of(&s.key("alice").await, "demo").await;
    World {
        s,
        demo,
        alice,
        bob,
        carol,
    }
}

#[tokio::test]
async fn a_video_call_rings_connects_relays_the_peers_signalling_and_hangs_up() {
    let w = world("").await;
    let mut demo = party(&w.s, &w.s.key("demo").await, &[w.alice], Encoding::Binary).await;
    // Alice's client speaks JSON: the two encodings carry calls alike.
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Json).await;

    let call = invite(&mut demo, 2, w.alice, true).await.unwrap();
    assert_eq!(call_frame(&mut demo).await, (call, w.alice, CallEvent::Ringing));
    assert_eq!(
        call_frame(&mut alice).await,
        (call, w.demo, CallEvent::Incoming { video: true })
    );
    // Signalling before the call is accepted does not fit.
    let offer = CallSignal::Offer {
        sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into(),
    };
    assert_eq!(
        code(signal(&mut demo, 3, call, offer.clone()).await),
        ErrorCode::Unexpected
    );
    signal(&mut alice, 2, call, CallSignal::Accept).await.unwrap();
    assert_eq!(call_frame(&mut demo).await, (call, w.alice, CallEvent::Accepted));

    signal(&mut demo, 4, call, offer).await.unwrap();
    assert_eq!(
        call_frame(&mut alice).await,
        (
            call,
            w.demo,
            CallEvent::Offer {
                sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into()
            }
        )
    );
    let answer = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\n".to_owned();
    signal(&mut alice, 3, call, CallSignal::Answer { sdp: answer.clone() })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut demo).await,
        (call, w.alice, CallEvent::Answer { sdp: answer })
    );
    let candidate = "candidate:1 1 UDP 2122252543 127.0.0.1 40000 typ host".to_owned();
    for (who, req) in [(&mut demo, 5), (&mut alice, 4)] {
        let ice = CallSignal::Ice {
            candidate: candidate.clone(),
            mline: 1,
            mid: Some("video0".into()),
        };
        signal(who, req, call, ice).await.unwrap();
    }
    for (who, peer) in [(&mut alice, w.demo), (&mut demo, w.alice)] {
        assert_eq!(
            call_frame(who).await,
            (
                call,
                peer,
                CallEvent::Ice {
                    candidate: candidate.clone(),
                    mline: 1,
                    mid: Some("video0".into())
                }
            )
        );
    }
    // An oversized description is refused; the call goes on.
    let huge = CallSignal::Offer {
        sdp: "a".repeat(MAX_SDP_BYTES + 1),
    };
    assert_eq!(
        code(signal(&mut demo, 6, call, huge).await),
        ErrorCode::InvalidRequest
    );
    // The caller cannot accept its own call.
    assert_eq!(
        code(signal(&mut demo, 7, call, CallSignal::Accept).await),
        ErrorCode::Unexpected
    );

    signal(&mut alice, 5, call, CallSignal::Hangup { failed: false })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut demo).await,
        (
            call,
            w.alice,
            CallEvent::Ended {
                reason: CallEnd::Hangup
            }
        )
    );
    heard_nothing(&mut alice).await;
    // On record by the time the caller heard it end: answered, with how long it was connected.
    let page: CallHistoryPage =
        w.s.get(&w.s.key("demo").await, &format!("/v1/calls/{}", w.alice))
            .await
            .unwrap();
    let record = &page.calls[..];
    assert_eq!(record.len(), 1, "{page:?}");
    assert_eq!(
        (
            record[0].caller,
            record[0].callee,
            record[0].video,
            record[0].reason
        ),
        (w.demo, w.alice, true, CallEnd::Hangup)
    );
    assert!(record[0].duration_ms.is_some(), "{page:?}");
    // The call is gone for both.
    let late = CallSignal::Hangup { failed: false };
    assert_eq!(
        code(signal(&mut demo, 8, call, late).await),
        ErrorCode::CallNotFound
    );
    // And the two can call again.
    let again = invite(&mut alice, 6, w.demo, false).await.unwrap();
    assert_ne!(again, call);
    assert_eq!(
        call_frame(&mut demo).await,
        (again, w.alice, CallEvent::Incoming { video: false })
    );
}

#[tokio::test]
async fn a_call_rings_only_where_the_caller_is_followed() {
    let w = world("").await;
    let mut demo = party(
        &w.s,
        &w.s.key("demo").await,
        &[w.alice, w.bob, w.carol],
        Encoding::Binary,
    )
    .await;
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;

    // Not contacts: Alice and Bob do not know each other.
    assert_eq!(
        code(invite(&mut alice, 2, w.bob, true).await),
        ErrorCode::CallNotContact
    );
    // Nobody can call themselves.
    assert_eq!(
        code(invite(&mut alice, 3, w.alice, true).await),
        ErrorCode::CallNotContact
    );
    // Bob is offline.
    assert_eq!(
        code(invite(&mut demo, 2, w.bob, true).await),
        ErrorCode::CallUnavailable
    );
    // Wang Wei comes online, but his only window pins another of his contacts, not the caller:
    // nothing rings, nothing is told.
    let wang_key = w.s.key("wangwei").await;
    let wang = w.s.id_of(&w.s.key("demo").await, "wangwei").await;
    let list: pinchat_proto::http::ContactList = w.s.get(&wang_key, "/v1/contacts").await.unwrap();
    let other = list
        .contacts
        .iter()
        .find(|c| c.id != w.demo)
        .expect("the demo world gives wangwei a contact besides demo")
        .id;
    let mut wang_stream = party(&w.s, &wang_key, &[other], Encoding::Binary).await;
    assert_eq!(
        code(invite(&mut demo, 3, wang, false).await),
        ErrorCode::CallUnavailable
    );
    heard_nothing(&mut wang_stream).await;
    // Once he pins the caller, it rings.
    wang_stream.stream.subscribe(2, 0, &[other, w.demo], None).await;
    let call = invite(&mut demo, 4, wang, false).await.unwrap();
    assert_eq!(
        call_frame(&mut wang_stream).await,
        (call, w.demo, CallEvent::Incoming { video: false })
    );
    // Alice, who follows Demo too, hears nothing of a call that is not hers.
    heard_nothing(&mut alice).await;
}

#[tokio::test]
async fn the_first_device_to_accept_wins_and_the_others_stop_ringing() {
    let w = world("").await;
    let mut demo = party(&w.s, &w.s.key("demo").await, &[w.alice], Encoding::Binary).await;
    let alice_key = w.s.key("alice").await;
    let mut phone = party(&w.s, &alice_key, &[w.demo], Encoding::Binary).await;
    let mut laptop = party(&w.s, &alice_key, &[w.demo], Encoding::Binary).await;

    let call = invite(&mut demo, 2, w.alice, true).await.unwrap();
    for device in [&mut phone, &mut laptop] {
        assert_eq!(
            call_frame(device).await,
            (call, w.demo, CallEvent::Incoming { video: true })
        );
    }
    signal(&mut laptop, 2, call, CallSignal::Accept).await.unwrap();
    assert_eq!(
        call_frame(&mut phone).await,
        (
            call,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::AnsweredElsewhere
            }
        )
    );
    assert_eq!(
        code(signal(&mut phone, 2, call, CallSignal::Accept).await),
        ErrorCode::CallNotFound
    );
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Accepted);
    // The call is between the caller and the laptop only.
    signal(&mut demo, 3, call, CallSignal::Offer { sdp: "v=0".into() })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut laptop).await.2,
        CallEvent::Offer { sdp: "v=0".into() }
    );
    heard_nothing(&mut phone).await;
}

#[tokio::test]
async fn decline_cancel_and_ring_out_end_the_call_for_everyone_it_rang_on() {
    let w = world("call_ring_secs = 1\n").await;
    let mut demo = party(&w.s, &w.s.key("demo").await, &[w.alice], Encoding::Binary).await;
    let alice_key = w.s.key("alice").await;
    let mut phone = party(&w.s, &alice_key, &[w.demo], Encoding::Binary).await;
    let mut laptop = party(&w.s, &alice_key, &[w.demo], Encoding::Binary).await;
    let ended = |reason| CallEvent::Ended { reason };

    // Declined on one device: over for the caller and the other device.
    let call = invite(&mut demo, 2, w.alice, true).await.unwrap();
    call_frame(&mut phone).await;
    call_frame(&mut laptop).await;
    signal(&mut phone, 2, call, CallSignal::Decline).await.unwrap();
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut demo).await.2, ended(CallEnd::Declined));
    assert_eq!(call_frame(&mut laptop).await.2, ended(CallEnd::Declined));

    // Cancelled by the caller before anybody answered.
    let call = invite(&mut demo, 3, w.alice, false).await.unwrap();
    call_frame(&mut phone).await;
    call_frame(&mut laptop).await;
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    signal(&mut demo, 4, call, CallSignal::Hangup { failed: false })
        .await
        .unwrap();
    for device in [&mut phone, &mut laptop] {
        assert_eq!(
            call_frame(device).await,
            (call, w.demo, ended(CallEnd::Cancelled))
        );
    }

    // Nobody answers: after the ring time it ends everywhere.
    let started = std::time::Instant::now();
    let call = invite(&mut demo, 5, w.alice, true).await.unwrap();
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    assert_eq!(
        call_frame(&mut demo).await,
        (call, w.alice, ended(CallEnd::NoAnswer))
    );
    let rang = started.elapsed();
    assert!(
        rang >= std::time::Duration::from_millis(900),
        "rang only {rang:?}"
    );
    for device in [&mut phone, &mut laptop] {
        assert_eq!(call_frame(device).await.2, CallEvent::Incoming { video: true });
        assert_eq!(call_frame(device).await, (call, w.demo, ended(CallEnd::NoAnswer)));
    }
    println!("an unanswered call rang for {rang:?} (ring time 1 s)");

    // Each call that rang is in both parties' history, newest first, with how it ended and no duration
    // (nobody answered). Alice's view: one declined, one she missed while it rang (cancelled), one
    // she missed outright.
    let expect = [
        (true, CallEnd::NoAnswer),
        (false, CallEnd::Cancelled),
        (true, CallEnd::Declined),
    ];
    for (key, contact) in [(w.s.key("demo").await, w.alice), (alice_key.clone(), w.demo)] {
        let page: CallHistoryPage = w.s.get(&key, &format!("/v1/calls/{contact}")).await.unwrap();
        let seen: Vec<(bool, CallEnd)> = page.calls.iter().map(|c| (c.video, c.reason)).collect();
        assert_eq!(seen, expect);
        assert!(!page.more);
        assert!(
            page.calls
                .iter()
                .all(|c| c.caller == w.demo && c.callee == w.alice && c.duration_ms.is_none())
        );
        assert!(
            page.calls
                .windows(2)
                .all(|p| p[0].id > p[1].id && p[0].ts >= p[1].ts)
        );
    }
    // Paged like the messages.
    let key = w.s.key("demo").await;
    let first: CallHistoryPage =
        w.s.get(&key, &format!("/v1/calls/{}?limit=2", w.alice))
            .await
            .unwrap();
    assert!(first.more);
    let rest: CallHistoryPage =
        w.s.get(
            &key,
            &format!("/v1/calls/{}?limit=2&before={}", w.alice, first.calls[1].id),
        )
        .await
        .unwrap();
    assert_eq!(
        (rest.calls.len(), rest.calls[0].reason, rest.more),
        (1, CallEnd::Declined, false)
    );
    // Only the parties' contacts may look, and only at pages of a sane size.
    w.s.create_account("eve");
    let eve = w.s.key("eve").await;
    let refused =
        w.s.get::<CallHistoryPage>(&eve, &format!("/v1/calls/{}", w.demo))
            .await
            .unwrap_err();
    assert_eq!(refused.1.code, ErrorCode::MessageNotContact);
    let refused =
        w.s.get::<CallHistoryPage>(&key, &format!("/v1/calls/{}?limit=0", w.alice))
            .await
            .unwrap_err();
    assert_eq!(refused.1.code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn glare_keeps_the_call_placed_by_the_lower_account_id() {
    let w = world("").await;
    assert!(w.demo.0 < w.alice.0, "the demo account is created first");
    let mut demo = party(&w.s, &w.s.key("demo").await, &[w.alice], Encoding::Binary).await;
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;

    // Demo (lower id) calls first; Alice's call at the same moment is refused, and hers to accept.
    let first = invite(&mut demo, 2, w.alice, true).await.unwrap();
    assert_eq!(
        code(invite(&mut alice, 2, w.demo, true).await),
        ErrorCode::CallGlare
    );
    assert_eq!(
        call_frame(&mut alice).await,
        (first, w.demo, CallEvent::Incoming { video: true })
    );
    signal(&mut alice, 3, first, CallSignal::Accept).await.unwrap();
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Accepted);
    signal(&mut alice, 4, first, CallSignal::Hangup { failed: false })
        .await
        .unwrap();
    call_frame(&mut demo).await;

    // Alice (higher id) calls first; Demo's call at the same moment wins and hers ends as glare.
    let second = invite(&mut alice, 5, w.demo, true).await.unwrap();
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Ringing);
    assert_eq!(
        call_frame(&mut demo).await,
        (second, w.alice, CallEvent::Incoming { video: true })
    );
    let third = invite(&mut demo, 3, w.alice, true).await.unwrap();
    let glare = CallEvent::Ended {
        reason: CallEnd::Glare,
    };
    assert_eq!(call_frame(&mut demo).await, (second, w.alice, glare.clone()));
    assert_eq!(call_frame(&mut demo).await, (third, w.alice, CallEvent::Ringing));
    assert_eq!(call_frame(&mut alice).await, (second, w.demo, glare));
    assert_eq!(
        call_frame(&mut alice).await,
        (third, w.demo, CallEvent::Incoming { video: true })
    );
}

#[tokio::test]
async fn a_party_in_a_call_is_busy_and_a_vanished_party_ends_it() {
    let w = world("call_rejoin_secs = 1\n").await;
    let (mut demo, mut alice, mut carol) = three_parties(&w).await;

    let call = invite(&mut demo, 2, w.alice, true).await.unwrap();
    call_frame(&mut alice).await;
    signal(&mut alice, 2, call, CallSignal::Accept).await.unwrap();
    // Both parties are busy for everybody else, either way round.
    assert_eq!(
        code(invite(&mut carol, 2, w.demo, true).await),
        ErrorCode::CallBusy
    );
    assert_eq!(
        code(invite(&mut demo, 3, w.carol, true).await),
        ErrorCode::CallBusy
    );

    // Alice's connection vanishes mid-call: Demo is told she is away, then, as she does not come back
    // within the rejoin time, that the call is over; he is free again.
    drop(alice);
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Accepted);
    assert_eq!(
        call_frame(&mut demo).await,
        (call, w.alice, CallEvent::Reconnecting { own: false })
    );
    assert_eq!(
        call_frame(&mut demo).await,
        (
            call,
            w.alice,
            CallEvent::Ended {
                reason: CallEnd::ConnectionLost
            }
        )
    );
    let next = invite(&mut demo, 4, w.carol, false).await.unwrap();
    assert_eq!(
        call_frame(&mut carol).await.2,
        CallEvent::Incoming { video: false }
    );
    // The caller vanishes while it rings: the callee stops ringing.
    drop(demo);
    assert_eq!(
        call_frame(&mut carol).await,
        (
            next,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::Cancelled
            }
        )
    );
    // Her stream goes on as before.
    carol
        .stream
        .send(&ClientFrame::SetPresence {
            req: 3,
            state: Some(Presence::Busy),
            status: None,
        })
        .await;
    assert!(matches!(
        carol.stream.recv().await,
        ServerFrame::Ack { req: 3, .. }
    ));
}

/// A connected call outlives a party's dropped link: the peer hears it is away, the party's next
/// stream claims the call back and signalling goes on there; only a party of the call can rejoin it,
/// and not after it ended.
#[tokio::test]
async fn a_party_whose_link_drops_rejoins_the_call_from_its_next_stream() {
    let w = world("").await;
    let demo_key = w.s.key("demo").await;
    let alice_key = w.s.key("alice").await;
    let mut demo = party(&w.s, &demo_key, &[w.alice, w.carol], Encoding::Binary).await;
    let mut alice = party(&w.s, &alice_key, &[w.demo], Encoding::Json).await;
    let call = invite(&mut demo, 2, w.alice, true).await.unwrap();
    call_frame(&mut alice).await;
    signal(&mut alice, 2, call, CallSignal::Accept).await.unwrap();
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut demo).await.2, CallEvent::Accepted);

    // Alice's link drops: Demo hears she is away, and the call waits for her.
    drop(alice);
    assert_eq!(
        call_frame(&mut demo).await,
        (call, w.alice, CallEvent::Reconnecting { own: false })
    );
    // A stranger to the call cannot take it over, nor can a party claim a call that does not exist.
    let mut carol = party(&w.s, &w.s.key("carol").await, &[w.demo], Encoding::Binary).await;
    assert_eq!(
        code(signal(&mut carol, 2, call, CallSignal::Rejoin).await),
        ErrorCode::CallNotFound
    );
    let mut alice = party(&w.s, &alice_key, &[w.demo], Encoding::Json).await;
    assert_eq!(
        code(signal(&mut alice, 2, call + 100, CallSignal::Rejoin).await),
        ErrorCode::CallNotFound
    );
    // Her next stream claims it back: Demo hears she is back, and the signalling goes on there.
    signal(&mut alice, 3, call, CallSignal::Rejoin).await.unwrap();
    assert_eq!(
        call_frame(&mut demo).await,
        (call, w.alice, CallEvent::Reconnected)
    );
    let sdp = "v=0 an ICE restart".to_owned();
    signal(&mut alice, 4, call, CallSignal::Offer { sdp: sdp.clone() })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut demo).await,
        (call, w.alice, CallEvent::Offer { sdp })
    );
    signal(
        &mut demo,
        3,
        call,
        CallSignal::Answer {
            sdp: "v=0 answer".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        call_frame(&mut alice).await,
        (
            call,
            w.demo,
            CallEvent::Answer {
                sdp: "v=0 answer".into()
            }
        )
    );
    // Demo's link drops too, and he comes back before the server noticed (his old stream still
    // open): the claim moves the call to the new stream, and Alice, who never heard him away, hears
    // nothing of it.
    let mut demo2 = party(&w.s, &demo_key, &[w.alice], Encoding::Json).await;
    signal(&mut demo2, 2, call, CallSignal::Rejoin).await.unwrap();
    drop(demo);
    heard_nothing(&mut alice).await;
    // He hangs up from there: the call ends for Alice, and is over for a late claim.
    signal(&mut demo2, 3, call, CallSignal::Hangup { failed: false })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut alice).await,
        (
            call,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::Hangup
            }
        )
    );
    assert_eq!(
        code(signal(&mut alice, 5, call, CallSignal::Rejoin).await),
        ErrorCode::CallNotFound
    );
    // The call is on record once, answered and hung up.
    let history: CallHistoryPage =
        w.s.get(&alice_key, &format!("/v1/calls/{}", w.demo))
            .await
            .unwrap();
    assert_eq!(history.calls.len(), 1, "{history:?}");
    assert_eq!(history.calls[0].reason, CallEnd::Hangup);
    assert!(history.calls[0].duration_ms.is_some());
}

/// A call's frames keep their order across its end: Alice hangs up and Carol calls the demo user at
/// once, from her own stream; the demo user hears Alice's call end before Carol's rings, although the
/// end waits for its history record to be written and Carol's ring does not.
#[tokio::test]
async fn a_call_placed_right_after_one_ended_rings_after_that_end() {
    let w = world("").await;
    let (mut demo, mut alice, mut carol) = three_parties(&w).await;
    let mut seen = 0;
    for round in 0..10 {
        let req = 10 * round + 2;
        let call = invite(&mut alice, req, w.demo, false).await.unwrap();
        assert_eq!(call_frame(&mut demo).await.0, call);
        signal(&mut demo, req, call, CallSignal::Accept).await.unwrap();
        assert_eq!(call_frame(&mut alice).await.2, CallEvent::Ringing);
        assert_eq!(call_frame(&mut alice).await.2, CallEvent::Accepted);
        // Both sent before either is answered.
        alice
            .stream
            .send(&ClientFrame::CallSignal {
                req: req + 1,
                call,
                signal: CallSignal::Hangup { failed: false },
            })
            .await;
        let placed = invite(&mut carol, req, w.demo, true).await;
        loop {
            match alice.stream.recv().await {
                ServerFrame::Ack { req: r, .. } if r == req + 1 => break,
                ServerFrame::Error { error, .. } => panic!("round {round}: {error}"),
                _ => {}
            }
        }
        assert_eq!(
            call_frame(&mut demo).await,
            (
                call,
                w.alice,
                CallEvent::Ended {
                    reason: CallEnd::Hangup
                }
            ),
            "round {round}: the first call's end comes first"
        );
        let next = match placed {
            Ok(next) => next,
            // Carol's invite reached the server before Alice's hang-up: nothing to compare.
            Err(e) if e.code == ErrorCode::CallBusy => continue,
            Err(e) => panic!("round {round}: {e}"),
        };
        seen += 1;
        assert_eq!(
            call_frame(&mut demo).await,
            (next, w.carol, CallEvent::Incoming { video: true }),
            "round {round}"
        );
        signal(&mut demo, req + 1, next, CallSignal::Decline)
            .await
            .unwrap();
        assert_eq!(call_frame(&mut carol).await.2, CallEvent::Ringing);
        assert!(matches!(call_frame(&mut carol).await.2, CallEvent::Ended { .. }));
    }
    eprintln!("{seen} of 10 rounds had Carol's call follow Alice's hang-up");
    assert!(seen > 0, "Carol's call never followed Alice's hang-up");
}

/// The next call notification of the local API.
async fn call_note(events: &mut tokio::sync::mpsc::Receiver<Notification>) -> Notification {
    until(events, |n| {
        matches!(
            n,
            Notification::CallIncoming { .. }
                | Notification::CallChanged { .. }
                | Notification::CallSignal { .. }
                | Notification::CallEnded { .. }
        )
        .then(|| n.clone())
    })
    .await
}

fn api_code(e: pinchat_ipc::ClientError) -> String {
    e.code()
        .unwrap_or_else(|| panic!("not an API error: {e}"))
        .to_owned()
}

/// A daemon with the demo user's widget, Alice pinned and its link up, and a gadget subscribed to
/// every notification.
async fn gadget(w: &World) -> (Daemon, pinchat_ipc::Client, Notifications, String) {
    gadget_at(w, &w.s.url("")).await
}

/// [`gadget`] with the daemon reaching the server at `server` (a proxy in front of it).
async fn gadget_at(w: &World, server: &str) -> (Daemon, pinchat_ipc::Client, Notifications, String) {
    let d = Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<Subscribe>(SubscribeParams::default())
        .await
        .unwrap();
    let widget = client
        .call::<CreateWidget>(Login {
            server: server.to_owned(),
            account: "demo".into(),
            password: DEMO_PASSWORD.into(),
        })
        .await
        .unwrap()
        .widget
        .id;
    client
        .call::<SetPins>(SetPinsParams {
            widget: widget.clone(),
            pins: vec![w.alice.0],
        })
        .await
        .unwrap();
    until(&mut events, |n| {
        matches!(
            n,
            Notification::ConnectionChanged {
                connection: Connection::Online,
                ..
            }
        )
        .then_some(())
    })
    .await;
    (d, client, events, widget)
}

type Notifications = tokio::sync::mpsc::Receiver<Notification>;

/// The daemon's link to the server drops mid-call (a network cut, both ends reset): the media goes
/// between the peers, so the call goes on — the gadget is told its link is away and the peer that
/// the widget is away; when the link is back, the widget claims the call back and signalling goes on.
/// A hang-up while the link is down ends the call at once for the gadget, and reaches the peer when
/// the link is back.
#[tokio::test]
async fn a_widget_whose_link_drops_mid_call_claims_it_back_when_the_link_returns() {
    let w = world("").await;
    let proxy = FaultProxy::start(w.s.addr).await.unwrap();
    let (_daemon, client, mut events, widget) = gadget_at(&w, &format!("http://{}", proxy.addr)).await;
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;
    let at = |call| CallRef {
        widget: widget.clone(),
        call,
    };
    let changed = |state: CallState, call: CallId| {
        move |n: &Notification| {
            matches!(n, Notification::CallChanged { state: s, call: c, .. } if *s == state && *c == call)
                .then_some(())
        }
    };

    // Alice calls, the gadget answers.
    let call = invite(&mut alice, 2, w.demo, true).await.unwrap();
    assert!(matches!(call_note(&mut events).await, Notification::CallIncoming { call: c, .. } if c == call));
    client.call::<CallAccept>(at(call)).await.unwrap();
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Accepted);

    // The link is cut: the gadget hears its link is away, Alice that the demo user is; the call goes
    // on. The link comes back by itself: the widget claims the call, both hear it is back.
    proxy.reset_all();
    until(&mut events, changed(CallState::Away, call)).await;
    assert_eq!(
        call_frame(&mut alice).await,
        (call, w.demo, CallEvent::Reconnecting { own: false })
    );
    until(&mut events, changed(CallState::Back, call)).await;
    assert_eq!(
        call_frame(&mut alice).await,
        (call, w.demo, CallEvent::Reconnected)
    );
    // Signalling goes on over the new link, both ways.
    client
        .call::<CallSignalMethod>(CallSignalParams {
            widget: widget.clone(),
            call,
            signal: CallSignal::Offer {
                sdp: "v=0 after the cut".into(),
            },
        })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut alice).await.2,
        CallEvent::Offer {
            sdp: "v=0 after the cut".into()
        }
    );
    signal(
        &mut alice,
        3,
        call,
        CallSignal::Answer {
            sdp: "v=0 answer".into(),
        },
    )
    .await
    .unwrap();
    until(&mut events, |n| {
        matches!(n, Notification::CallSignal { call: c, signal: CallSignal::Answer { .. }, .. } if *c == call)
            .then_some(())
    })
    .await;

    // Cut again, and kept down: a hang-up now ends the call for the gadget at once; Alice hears it
    // when the link is back.
    proxy.set(Fault::Refuse);
    proxy.reset_all();
    until(&mut events, changed(CallState::Away, call)).await;
    assert_eq!(
        call_frame(&mut alice).await,
        (call, w.demo, CallEvent::Reconnecting { own: false })
    );
    client
        .call::<CallHangup>(CallHangupParams {
            widget: widget.clone(),
            call,
            failed: false,
        })
        .await
        .unwrap();
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallEnded { reason: CallEnd::Hangup, call: c, .. } if c == call
    ));
    proxy.set(Fault::Pass);
    assert_eq!(
        call_frame(&mut alice).await,
        (
            call,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::Hangup
            }
        )
    );
    // One record: answered, hung up.
    let page: CallHistoryPage =
        w.s.get(&w.s.key("alice").await, &format!("/v1/calls/{}", w.demo))
            .await
            .unwrap();
    assert_eq!(page.calls.len(), 1, "{page:?}");
    assert_eq!(
        (page.calls[0].reason, page.calls[0].duration_ms.is_some()),
        (CallEnd::Hangup, true)
    );
}

#[tokio::test]
async fn a_gadget_places_answers_and_loses_calls_through_the_daemons_local_api() {
    let mut w = world("call_rejoin_secs = 1\n").await;
    let (_daemon, client, mut events, widget) = gadget(&w).await;
    let start = |contact: AccountId| CallStartParams {
        widget: widget.clone(),
        contact: contact.0,
        video: true,
    };
    let at = |call: u64| CallRef {
        widget: widget.clone(),
        call,
    };

    // Alice is offline: nothing can ring. Bob is not pinned on this widget.
    let e = client.call::<CallStart>(start(w.alice)).await.unwrap_err();
    assert_eq!(api_code(e), "call.unavailable");
    let e = client.call::<CallStart>(start(w.bob)).await.unwrap_err();
    assert_eq!(api_code(e), "widget.not_contact");

    // The gadget calls Alice; she accepts; offer, answer and candidates pass; her link dies.
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;
    let placed = client.call::<CallStart>(start(w.alice)).await.unwrap();
    assert_eq!((placed.contact, placed.video), (w.alice.0, true));
    let call = placed.call;
    assert_eq!(
        call_note(&mut events).await,
        Notification::CallChanged {
            widget: widget.clone(),
            call,
            contact: w.alice.0,
            state: CallState::Ringing
        }
    );
    assert_eq!(
        call_frame(&mut alice).await,
        (call, w.demo, CallEvent::Incoming { video: true })
    );
    signal(&mut alice, 2, call, CallSignal::Accept).await.unwrap();
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallChanged {
            state: CallState::Accepted,
            ..
        }
    ));
    let offer = CallSignal::Offer {
        sdp: "v=0 offer".into(),
    };
    client
        .call::<CallSignalMethod>(CallSignalParams {
            widget: widget.clone(),
            call,
            signal: offer,
        })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut alice).await.2,
        CallEvent::Offer {
            sdp: "v=0 offer".into()
        }
    );
    signal(
        &mut alice,
        3,
        call,
        CallSignal::Answer {
            sdp: "v=0 answer".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        call_note(&mut events).await,
        Notification::CallSignal {
            widget: widget.clone(),
            call,
            contact: w.alice.0,
            signal: CallSignal::Answer {
                sdp: "v=0 answer".into()
            }
        }
    );
    // Accepting through call.signal is refused: it has its own method.
    let e = client
        .call::<CallSignalMethod>(CallSignalParams {
            widget: widget.clone(),
            call,
            signal: CallSignal::Accept,
        })
        .await
        .unwrap_err();
    assert_eq!(api_code(e), "rpc.invalid_params");
    // Alice's link drops: the gadget hears she is away, then, as she does not come back within the
    // rejoin time, that the call is over.
    drop(alice);
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallChanged { state: CallState::PeerAway, call: c, .. } if c == call
    ));
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallEnded { reason: CallEnd::ConnectionLost, call: c, .. } if c == call
    ));
    let e = client
        .call::<CallHangup>(CallHangupParams {
            widget: widget.clone(),
            call,
            failed: false,
        })
        .await
        .unwrap_err();
    assert_eq!(api_code(e), "call.not_found");

    // Alice calls the widget; the gadget declines.
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;
    let incoming = invite(&mut alice, 2, w.demo, false).await.unwrap();
    assert_eq!(
        call_note(&mut events).await,
        Notification::CallIncoming {
            widget: widget.clone(),
            call: incoming,
            contact: w.alice.0,
            video: false
        }
    );
    client.call::<CallDecline>(at(incoming)).await.unwrap();
    // Every client of the widget hears it is over (another panel that still rang, too).
    assert_eq!(
        call_note(&mut events).await,
        Notification::CallEnded {
            widget: widget.clone(),
            call: incoming,
            contact: w.alice.0,
            reason: CallEnd::Declined
        }
    );
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Ringing);
    assert_eq!(
        call_frame(&mut alice).await,
        (
            incoming,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::Declined
            }
        )
    );
    // Both calls are in the history a gadget reads through the daemon, newest first: the one it
    // declined (Alice's, voice) and the one whose link died once answered (its own, video).
    let history = |contact: AccountId, limit: Option<u32>| HistoryParams {
        widget: widget.clone(),
        contact: contact.0,
        before: None,
        limit,
    };
    let page = client.call::<CallHistory>(history(w.alice, None)).await.unwrap();
    let seen: Vec<_> = page
        .calls
        .iter()
        .map(|c| (c.caller, c.video, c.reason, c.duration_ms.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            (w.alice, false, CallEnd::Declined, false),
            (w.demo, true, CallEnd::ConnectionLost, true)
        ]
    );
    let e = client
        .call::<CallHistory>(history(w.bob, None))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), "widget.not_contact");
    let e = client
        .call::<CallHistory>(history(w.alice, Some(500)))
        .await
        .unwrap_err();
    assert_eq!(api_code(e), "widget.invalid");

    // She calls again and the gadget accepts; then the server goes away: the widget's own link drops,
    // and the gadget is told the call waits for it; the server back (having lost its calls with its
    // process), the widget's claim of the call is refused, and the gadget is told the call is over.
    let again = invite(&mut alice, 3, w.demo, true).await.unwrap();
    assert!(matches!(call_note(&mut events).await, Notification::CallIncoming { call, .. } if call == again));
    client.call::<CallAccept>(at(again)).await.unwrap();
    // ... and that it was answered, so that it rings on none of them any more.
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallChanged { state: CallState::Accepted, call, .. } if call == again
    ));
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Accepted);
    w.s.kill();
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallChanged { state: CallState::Away, call, .. } if call == again
    ));
    w.s.restart();
    assert!(matches!(
        call_note(&mut events).await,
        Notification::CallEnded { reason: CallEnd::ConnectionLost, call, .. } if call == again
    ));
    let e = client.call::<CallAccept>(at(again)).await.unwrap_err();
    assert_eq!(api_code(e), "call.not_found");
}

#[tokio::test]
async fn a_gadget_that_goes_away_hangs_up_its_calls_and_gadgets_get_ice_servers_from_the_daemon() {
    let w = world(
        "[ice]\nstun = [\"stun:127.0.0.1:3478\"]\nturn = [\"turn:127.0.0.1:3478?transport=udp\"]\n\
         turn_secret = \"a-test-secret-of-some-length\"\n",
    )
    .await;
    let (d, client, mut events, widget) = gadget(&w).await;

    // The media engine's servers, with TURN credentials minted for the widget's account.
    let ice = client
        .call::<CallIce>(WidgetRef {
            widget: widget.clone(),
        })
        .await
        .unwrap();
    assert_eq!(ice.ice_servers[0].urls, vec!["stun:127.0.0.1:3478".to_owned()]);
    let username = ice.ice_servers[1].username.clone().expect("TURN credentials");
    assert!(username.ends_with(&format!(":{}", w.demo.0)), "{username}");
    let e = client
        .call::<CallIce>(WidgetRef {
            widget: "w-nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(api_code(e), "widget.not_found");

    // A gadget places a call, then goes away (closed or crashed) while it rings: the call is hung up
    // for Alice rather than left ringing for nobody.
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;
    let gadget = d.client().await;
    let call = gadget
        .call::<CallStart>(CallStartParams {
            widget: widget.clone(),
            contact: w.alice.0,
            video: true,
        })
        .await
        .unwrap()
        .call;
    assert_eq!(
        call_frame(&mut alice).await.2,
        CallEvent::Incoming { video: true }
    );
    drop(gadget);
    assert_eq!(
        call_frame(&mut alice).await,
        (
            call,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::Cancelled
            }
        )
    );

    // A gadget that accepted a call and goes away hangs it up too.
    let gadget = d.client().await;
    let incoming = invite(&mut alice, 5, w.demo, false).await.unwrap();
    until(&mut events, |n| {
        matches!(n, Notification::CallIncoming { call, .. } if *call == incoming).then_some(())
    })
    .await;
    gadget
        .call::<CallAccept>(CallRef {
            widget: widget.clone(),
            call: incoming,
        })
        .await
        .unwrap();
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Ringing);
    assert_eq!(call_frame(&mut alice).await.2, CallEvent::Accepted);
    drop(gadget);
    assert_eq!(
        call_frame(&mut alice).await,
        (
            incoming,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::Hangup
            }
        )
    );
    // The first connection, which took part in neither, is untouched.
    assert!(client.call::<CallIce>(WidgetRef { widget }).await.is_ok());
}

#[tokio::test]
async fn ice_servers_come_with_turn_credentials_minted_for_the_account() {
    let w = world(
        "[ice]\nstun = [\"stun:127.0.0.1:3478\"]\nturn = [\"turn:127.0.0.1:3478?transport=udp\"]\n\
         turn_secret = \"a-test-secret-of-some-length\"\nturn_ttl_secs = 600\n",
    )
    .await;
    let key = w.s.key("alice").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ice: pinchat_proto::http::IceConfig = w.s.get(&key, "/v1/ice").await.unwrap();
    assert_eq!(ice.ttl_secs, 600);
    assert_eq!(ice.ice_servers[0].urls, vec!["stun:127.0.0.1:3478".to_owned()]);
    assert_eq!(ice.ice_servers[0].credential, None);
    let turn = &ice.ice_servers[1];
    let username = turn.username.clone().unwrap();
    let (expiry, account) = username.split_once(':').unwrap();
    assert_eq!(account, w.alice.0.to_string());
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (before + 600..=before + 602).contains(&expiry),
        "expiry {expiry}, now {before}"
    );
    // What coturn computes from its static-auth-secret for that username.
    assert_eq!(
        turn.credential.as_deref(),
        Some(pinchat_server::ice::turn_password("a-test-secret-of-some-length", &username).as_str())
    );
    // Only for a logged-in account.
    let status = w.s.http.get(w.s.url("/v1/ice")).send().await.unwrap().status();
    assert_eq!(status, 401);
}

/// The peer's process is SIGKILLed mid-call (no shutdown code runs, its link just ends): the other
/// party is told the peer is away, then, as it does not come back within the rejoin time, that the
/// connection was lost, and the call is on record as answered and lost.
#[tokio::test]
async fn a_peer_sigkilled_mid_call_ends_it_as_connection_lost() {
    let w = world("call_rejoin_secs = 1\n").await;
    let (mut daemon, client, mut events, widget) = gadget(&w).await;
    let mut alice = party(&w.s, &w.s.key("alice").await, &[w.demo], Encoding::Binary).await;
    let placed = client
        .call::<CallStart>(CallStartParams {
            widget: widget.clone(),
            contact: w.alice.0,
            video: true,
        })
        .await
        .unwrap();
    assert_eq!(
        call_frame(&mut alice).await,
        (placed.call, w.demo, CallEvent::Incoming { video: true })
    );
    signal(&mut alice, 2, placed.call, CallSignal::Accept)
        .await
        .unwrap();
    assert!(matches!(
        until(&mut events, |n| matches!(
            n,
            Notification::CallChanged {
                state: CallState::Accepted,
                ..
            }
        )
        .then_some(n.clone()))
        .await,
        Notification::CallChanged { call, .. } if call == placed.call
    ));
    // The gadget stays connected: its connection closing would hang the call up (invariant 19d).
    daemon.kill();
    assert_eq!(
        call_frame(&mut alice).await,
        (placed.call, w.demo, CallEvent::Reconnecting { own: false })
    );
    assert_eq!(
        call_frame(&mut alice).await,
        (
            placed.call,
            w.demo,
            CallEvent::Ended {
                reason: CallEnd::ConnectionLost
            }
        )
    );
    let page: CallHistoryPage =
        w.s.get(&w.s.key("alice").await, &format!("/v1/calls/{}", w.demo))
            .await
            .unwrap();
    let record = &page.calls[0];
    assert_eq!(
        (record.caller, record.reason, record.duration_ms.is_some()),
        (w.demo, CallEnd::ConnectionLost, true)
    );
    // Alice is free to call again at once.
    let again = invite(&mut alice, 3, w.demo, false).await;
    assert_eq!(
        code(again),
        ErrorCode::CallUnavailable,
        "nothing of the demo user follows her now"
    );
}
