//! Calls (claim 4): two native media engines (GStreamer webrtcbin, the engine Linux panels run) call
//! each other through an in-process server behind a byte-counting proxy, voice-only and video calls
//! side by side in one run. Reported per configuration: call set-up time (the invite sent → both
//! sides decoding the other's media), the signalling bytes the server sent per call (media never
//! passes through it), and, over a held call, the CPU (share of one core) and resident memory of this
//! process, which holds both engines (and the small server).

use crate::proxy::CountingProxy;
use crate::traffic::{self, start_server};
use pinchat_media::{Engine, EngineEvent, Options, Source};
use pinchat_proto::stream::{Ack, CallEvent, CallSignal, ClientFrame, ServerFrame};
use pinchat_server::config::Config;
use std::time::{Duration, Instant};

/// One configuration's figures.
#[derive(Debug, Clone, Default)]
pub struct CallFigures {
    /// Configuration name.
    pub name: String,
    /// Set-up times, ms.
    pub setup_ms: Vec<f64>,
    /// Bytes from the server per call (both parties), from the invite to the hang-up.
    pub signalling_bytes: Vec<u64>,
    /// CPU time over the held call, as a share of one core (both engines).
    pub cpu_share: f64,
    /// Resident memory during the held call, MiB.
    pub rss_mib: f64,
    /// Resident memory before the engines started, MiB.
    pub rss_before_mib: f64,
}

/// Runs `calls` calls of each configuration (voice, video), holding each for `hold`.
pub async fn run(calls: usize, hold: Duration) -> anyhow::Result<Vec<CallFigures>> {
    let (server, world) = start_server(1, Config::default()).await?;
    let proxy = CountingProxy::start(server.addr).await?;
    let (caller_key, caller) = world.observer.clone();
    let (callee_key, callee) = world.contacts[0].clone();
    let mut out = vec![];
    for (name, video) in [
        ("voice call (Opus)", false),
        ("video call (VP8 320×240 + Opus)", true),
    ] {
        let mut figures = CallFigures {
            name: name.into(),
            rss_before_mib: rss_mib(),
            ..CallFigures::default()
        };
        let mut cpu = (Duration::ZERO, Duration::ZERO);
        for _ in 0..calls {
            let mut a = traffic::connect(proxy.addr, &caller_key).await?;
            let mut b = traffic::connect(proxy.addr, &callee_key).await?;
            for (ws, pin) in [(&mut a, callee), (&mut b, caller)] {
                traffic::send(
                    ws,
                    &ClientFrame::Subscribe {
                        req: 1,
                        sub: 0,
                        pins: vec![pin],
                        resume: None,
                    },
                )
                .await?;
                while !matches!(traffic::next(ws).await?.0, ServerFrame::Snapshot(_)) {}
            }
            let options = |rgb| Options {
                video,
                source: Source::TestPattern { rgb },
                ..Options::default()
            };
            let mut ea = Engine::new(&options(0xff00ff))?;
            let mut eb = Engine::new(&options(0x00ff00))?;
            let (mut ev_a, mut ev_b) = (ea.events().unwrap(), eb.events().unwrap());
            let before = proxy.bytes_down();
            let started = Instant::now();
            traffic::send(
                &mut a,
                &ClientFrame::CallInvite {
                    req: 2,
                    to: callee,
                    video,
                },
            )
            .await?;
            let call = loop {
                match traffic::next(&mut a).await?.0 {
                    ServerFrame::Ack {
                        result: Ack::Call { call },
                        ..
                    } => break call,
                    ServerFrame::Error { error, .. } => anyhow::bail!("the invite was refused: {error}"),
                    _ => {}
                }
            };
            while !matches!(
                traffic::next(&mut b).await?.0,
                ServerFrame::Call {
                    event: CallEvent::Incoming { .. },
                    ..
                }
            ) {}
            traffic::send(
                &mut b,
                &ClientFrame::CallSignal {
                    req: 2,
                    call,
                    signal: CallSignal::Accept,
                },
            )
            .await?;
            while !matches!(
                traffic::next(&mut a).await?.0,
                ServerFrame::Call {
                    event: CallEvent::Accepted,
                    ..
                }
            ) {}
            ea.offer();
            let media = |s: &pinchat_media::Stats| {
                if video {
                    s.video_frames > 0
                } else {
                    s.audio_buffers > 0
                }
            };
            let (mut wa, mut wb) = (ea.watch_stats(), eb.watch_stats());
            let both = async {
                wa.wait_for(media).await?;
                wb.wait_for(media).await?;
                anyhow::Ok(())
            };
            tokio::pin!(both);
            let mut req = 10;
            let deadline = tokio::time::sleep(Duration::from_secs(30));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    r = &mut both => { r?; break; }
                    () = &mut deadline => anyhow::bail!("no media within 30 s"),
                    Some(e) = ev_a.recv() => if let EngineEvent::Signal(signal) = e {
                        req += 1;
                        traffic::send(&mut a, &ClientFrame::CallSignal { req, call, signal }).await?;
                    },
                    Some(e) = ev_b.recv() => if let EngineEvent::Signal(signal) = e {
                        req += 1;
                        traffic::send(&mut b, &ClientFrame::CallSignal { req, call, signal }).await?;
                    },
                    f = traffic::next(&mut a) => relay(&mut ea, f?.0)?,
                    f = traffic::next(&mut b) => relay(&mut eb, f?.0)?,
                }
            }
            figures.setup_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            // Hold the call: what does it cost to keep it going?
            let (t0, c0) = (Instant::now(), cpu_time());
            tokio::time::sleep(hold).await;
            cpu.0 += cpu_time().saturating_sub(c0);
            cpu.1 += t0.elapsed();
            figures.rss_mib = figures.rss_mib.max(rss_mib());
            traffic::send(
                &mut a,
                &ClientFrame::CallSignal {
                    req: 99,
                    call,
                    signal: CallSignal::Hangup { failed: false },
                },
            )
            .await?;
            while !matches!(
                traffic::next(&mut b).await?.0,
                ServerFrame::Call {
                    event: CallEvent::Ended { .. },
                    ..
                }
            ) {}
            figures.signalling_bytes.push(proxy.bytes_down() - before);
            drop((ea, eb));
        }
        figures.cpu_share = cpu.0.as_secs_f64() / cpu.1.as_secs_f64().max(1e-9);
        out.push(figures);
    }
    drop(server);
    Ok(out)
}

/// Hands the server's call event to the engine.
fn relay(engine: &mut Engine, frame: ServerFrame) -> anyhow::Result<()> {
    if let ServerFrame::Call { event, .. } = frame {
        if let CallEvent::Ended { reason } = event {
            anyhow::bail!("the call ended: {reason:?}");
        }
        if let Some(signal) = event.into_signal() {
            engine.remote(signal)?;
        }
    }
    Ok(())
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces, hence the last ')'); utime and stime are
    // the 14th and 15th fields, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// This process's resident memory, MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
