//! The engine: pipeline construction, negotiation, candidates, decoding and statistics.

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_video as gst_video;
use gstreamer_webrtc as gst_webrtc;
use pinchat_proto::http::IceServer;
use pinchat_proto::stream::CallSignal;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// GStreamer or one of the plugins a call needs is missing.
    #[error(
        "the call engine cannot start: {0}. Install GStreamer's base, good and bad plugins and \
         gstreamer1.0-nice"
    )]
    Unavailable(String),
    /// The peer sent something the engine cannot use.
    #[error("the peer's {what} cannot be used: {why}")]
    BadSignal {
        /// Which signal.
        what: &'static str,
        /// Why.
        why: String,
    },
}

/// Where the engine's outgoing media comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The system's default camera and microphone.
    Devices,
    /// A solid colour (`0xRRGGBB`) and a tone: for tests and for machines without a camera.
    TestPattern {
        /// The colour.
        rgb: u32,
    },
}

/// How to set up a call's media.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send and receive video (otherwise voice only).
    pub video: bool,
    /// What to send.
    pub source: Source,
    /// STUN and TURN servers (`GET /v1/ice`).
    pub ice_servers: Vec<IceServer>,
    /// Use TURN relays only (no direct path): for networks that allow nothing else, and for tests.
    pub relay_only: bool,
    /// Width and height of the sent video.
    pub size: (u32, u32),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            video: true,
            source: Source::Devices,
            ice_servers: vec![],
            relay_only: false,
            size: (320, 240),
        }
    }
}

/// What the engine tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A signal to pass to the peer (offer, answer, candidate).
    Signal(CallSignal),
    /// The ICE connection state changed (`checking`, `connected`, `completed`, `failed`, …).
    Ice(String),
    /// Candidate gathering finished: every local candidate has been signalled.
    Gathered,
    /// The first frame of the peer's video was decoded.
    FirstFrame,
    /// The system has no microphone (`microphone`) or no camera (`camera`; video calls only): the
    /// call goes on, sending silence or a black picture in their place. Sent once, at the start.
    Missing {
        /// No microphone: the peer hears nothing.
        microphone: bool,
        /// No camera: the peer sees black.
        camera: bool,
    },
    /// The call's media failed; hang up with `failed: true`.
    Failed(String),
}

/// A decoded frame of the peer's video, in RGB, 3 bytes per pixel, rows `stride` bytes apart.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row.
    pub stride: usize,
    /// The pixels.
    pub rgb: Vec<u8>,
}

impl Frame {
    /// The colour of the pixel at the centre, as `[r, g, b]`.
    pub fn centre(&self) -> [u8; 3] {
        let (x, y) = (self.width as usize / 2, self.height as usize / 2);
        let i = y * self.stride + x * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// Counters of what the engine received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Video frames of the peer decoded.
    pub video_frames: u64,
    /// Audio buffers of the peer decoded.
    pub audio_buffers: u64,
    /// Milliseconds from the engine's start to the first decoded video frame.
    pub first_frame_ms: Option<u64>,
}

#[derive(Default)]
struct Shared {
    latest: Option<Frame>,
}

/// One side of one call.
pub struct Engine {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    shared: Arc<Mutex<Shared>>,
    stats: watch::Receiver<Stats>,
    events: Option<mpsc::UnboundedReceiver<EngineEvent>>,
    tx: mpsc::UnboundedSender<EngineEvent>,
    /// Candidates that arrived before the remote description, added once it is set.
    early: Vec<(u32, String)>,
    remote_set: bool,
    options: Options,
    inputs: Inputs,
    payloads: Payloads,
    sinks: Sinks,
}

/// Which of the system's devices the engine sends from (for [`Source::Devices`]); what is missing is
/// replaced by silence or black.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inputs {
    microphone: bool,
    camera: bool,
}

impl Inputs {
    /// Asks GStreamer's device monitor which sources the system has. `autoaudiosrc` on a machine
    /// without one does not fall back: it picks a source that fails as soon as it plays, which would
    /// end the call; `autovideosrc` falls back to a test picture the peer should not be shown.
    fn probe(options: &Options) -> Inputs {
        if options.source != Source::Devices {
            return Inputs {
                microphone: true,
                camera: true,
            };
        }
        let monitor = gst::DeviceMonitor::new();
        monitor.add_filter(Some("Audio/Source"), None);
        if options.video {
            monitor.add_filter(Some("Video/Source"), None);
        }
        let devices = match monitor.start() {
            Ok(()) => {
                let devices = monitor.devices();
                monitor.stop();
                devices
            }
            // No device provider at all: nothing to send from.
            Err(_) => Default::default(),
        };
        Inputs {
            microphone: devices.iter().any(|d| d.has_classes("Audio/Source")),
            camera: options.video && devices.iter().any(|d| d.has_classes("Video/Source")),
        }
    }
}

const VIDEO_PT: u32 = 96;
/// The message that ends a pipeline's bus thread.
const STOP: &str = "pinchat-stop";

/// The GStreamer plugins a call is made of.
const PLUGINS: [&str; 8] = [
    "webrtc",
    "nice",
    "vpx",
    "opus",
    "rtp",
    "rtpmanager",
    "srtp",
    "dtls",
];

/// Initialises GStreamer and checks that every plugin a call needs is there; with `load`, loads them
/// too.
fn plugins(load: bool) -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::Unavailable(e.to_string()))?;
    for name in PLUGINS {
        let Some(plugin) = gst::Registry::get().find_plugin(name) else {
            return Err(MediaError::Unavailable(format!(
                "the GStreamer plugin {name:?} is missing"
            )));
        };
        if load {
            plugin
                .load()
                .map_err(|e| MediaError::Unavailable(format!("the GStreamer plugin {name:?}: {e}")))?;
        }
    }
    Ok(())
}

/// Loads GStreamer and the plugins a call needs, without opening any device: a process that may soon
/// run a call (a call rings) calls this first, so that the call itself starts without the wait (the
/// first load takes about a second). Harmless to call again.
pub fn warm_up() -> Result<(), MediaError> {
    plugins(true)
}

/// Stops a pipeline and its bus thread.
fn stop(pipeline: &gst::Pipeline) {
    let _ = pipeline.post_message(gst::message::Application::new(gst::Structure::new_empty(STOP)));
    let _ = pipeline.set_state(gst::State::Null);
}
const AUDIO_PT: u32 = 97;

impl Engine {
    /// Builds and starts the pipeline. The caller (the party that placed the call) then calls
    /// [`Engine::offer`] once the call is accepted; the callee waits for the offer.
    pub fn new(options: &Options) -> Result<Engine, MediaError> {
        plugins(false)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stats_tx, stats) = watch::channel(Stats::default());
        let stats_tx = Arc::new(stats_tx);
        let sinks = Sinks {
            shared: shared.clone(),
            stats: stats_tx,
            events: tx.clone(),
            started: Instant::now(),
        };
        let payloads = Payloads::default();
        let inputs = Inputs::probe(options);
        let (pipeline, webrtc) = build(options, inputs, payloads, &sinks)?;
        let missing = (!inputs.microphone, options.video && !inputs.camera);
        if missing.0 || missing.1 {
            let _ = tx.send(EngineEvent::Missing {
                microphone: missing.0,
                camera: missing.1,
            });
        }
        Ok(Engine {
            pipeline,
            webrtc,
            shared,
            stats,
            events: Some(rx),
            tx,
            early: vec![],
            remote_set: false,
            options: options.clone(),
            inputs,
            payloads,
            sinks,
        })
    }

    /// The engine's events. Can be taken once; they come from GStreamer's threads.
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<EngineEvent>> {
        self.events.take()
    }

    /// Creates the offer (the caller, once the callee accepted); it arrives as an
    /// [`EngineEvent::Signal`].
    pub fn offer(&self) {
        let webrtc = self.webrtc.clone();
        let events = self.tx.clone();
        let promise = gst::Promise::with_change_func(move |reply| {
            let offer = match description_from(reply, "offer") {
                Ok(offer) => offer,
                Err(e) => {
                    let _ = events.send(EngineEvent::Failed(e));
                    return;
                }
            };
            webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
            match offer.sdp().as_text() {
                Ok(sdp) => {
                    let _ = events.send(EngineEvent::Signal(CallSignal::Offer { sdp }));
                }
                Err(e) => {
                    let _ = events.send(EngineEvent::Failed(format!("the offer cannot be written: {e}")));
                }
            }
        });
        self.webrtc
            .emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
    }

    /// Applies the peer's signal: an offer (answered through an [`EngineEvent::Signal`]), an answer,
    /// or a candidate. Other signals are not the engine's business and are ignored.
    pub fn remote(&mut self, signal: CallSignal) -> Result<(), MediaError> {
        match signal {
            CallSignal::Offer { sdp } => {
                let offer = parse(&sdp, gst_webrtc::WebRTCSDPType::Offer, "offer")?;
                let payloads = Payloads::of(&sdp);
                if payloads != self.payloads && !self.remote_set {
                    // Nothing was negotiated yet: start over, sending with the offer's numbers.
                    stop(&self.pipeline);
                    let (pipeline, webrtc) = build(&self.options, self.inputs, payloads, &self.sinks)?;
                    self.pipeline = pipeline;
                    self.webrtc = webrtc;
                    self.payloads = payloads;
                }
                let webrtc = self.webrtc.clone();
                let events = self.tx.clone();
                let promise = gst::Promise::with_change_func(move |_| {
                    let answered = events.clone();
                    let webrtc2 = webrtc.clone();
                    let promise = gst::Promise::with_change_func(move |reply| {
                        let answer = match description_from(reply, "answer") {
                            Ok(answer) => answer,
                            Err(e) => {
                                let _ = answered.send(EngineEvent::Failed(e));
                                return;
                            }
                        };
                        webrtc2
                            .emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
                        match answer.sdp().as_text() {
                            Ok(sdp) => {
                                let _ = answered.send(EngineEvent::Signal(CallSignal::Answer { sdp }));
                            }
                            Err(e) => {
                                let _ = answered
                                    .send(EngineEvent::Failed(format!("the answer cannot be written: {e}")));
                            }
                        }
                    });
                    webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
                });
                self.webrtc
                    .emit_by_name::<()>("set-remote-description", &[&offer, &promise]);
                self.remote_described();
            }
            CallSignal::Answer { sdp } => {
                let answer = parse(&sdp, gst_webrtc::WebRTCSDPType::Answer, "answer")?;
                self.webrtc
                    .emit_by_name::<()>("set-remote-description", &[&answer, &None::<gst::Promise>]);
                self.remote_described();
            }
            CallSignal::Ice { candidate, mline, .. } => {
                if candidate.is_empty() {
                    return Ok(());
                }
                if self.remote_set {
                    self.webrtc
                        .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
                } else {
                    self.early.push((mline, candidate));
                }
            }
            CallSignal::Accept | CallSignal::Decline | CallSignal::Rejoin | CallSignal::Hangup { .. } => {}
        }
        Ok(())
    }

    fn remote_described(&mut self) {
        self.remote_set = true;
        for (mline, candidate) in std::mem::take(&mut self.early) {
            self.webrtc
                .emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate]);
        }
    }

    /// What has been received so far.
    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    /// The counters as they change, to wait on.
    pub fn watch_stats(&self) -> watch::Receiver<Stats> {
        self.stats.clone()
    }

    /// The peer's latest decoded video frame.
    pub fn latest_frame(&self) -> Option<Frame> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latest
            .clone()
    }

    /// Mutes or unmutes the sent sound.
    pub fn set_muted(&self, muted: bool) {
        self.set_sending("audio", !muted);
    }

    /// Turns the sent video off (black frames keep the stream alive) or on.
    pub fn set_camera(&self, on: bool) {
        self.set_sending("video", on);
    }

    fn set_sending(&self, kind: &str, on: bool) {
        match kind {
            "audio" => {
                if let Some(mic) = self.pipeline.by_name("mic") {
                    mic.set_property("mute", !on);
                }
            }
            _ => {
                // Black frames rather than none: the peer's decoder and the stream's timing go on.
                if let Some(camera) = self.pipeline.by_name("camera") {
                    camera.set_property("brightness", if on { 0.0f64 } else { -1.0 });
                    camera.set_property("contrast", if on { 1.0f64 } else { 0.0 });
                    camera.set_property("saturation", if on { 1.0f64 } else { 0.0 });
                }
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        stop(&self.pipeline);
    }
}

/// The payload numbers the engine sends with: its own when it offers, the peer's when it answers (a
/// `webrtcbin` answering an offer only pairs the offer's media with a stream of the same payload
/// number, so an engine that answers is rebuilt with the offer's numbers first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Payloads {
    audio: u32,
    video: u32,
}

impl Default for Payloads {
    fn default() -> Self {
        Payloads {
            audio: AUDIO_PT,
            video: VIDEO_PT,
        }
    }
}

impl Payloads {
    /// The numbers an offer gives Opus and VP8, where it names them.
    fn of(sdp: &str) -> Payloads {
        let mut p = Payloads::default();
        let mut seen = (false, false);
        for line in sdp.lines() {
            let Some(map) = line.strip_prefix("a=rtpmap:") else {
                continue;
            };
            let Some((pt, codec)) = map.split_once(' ') else {
                continue;
            };
            let Ok(pt) = pt.trim().parse::<u32>() else {
                continue;
            };
            let codec = codec.to_ascii_lowercase();
            if codec.starts_with("opus/") && !seen.0 {
                p.audio = pt;
                seen.0 = true;
            } else if codec.starts_with("vp8/") && !seen.1 {
                p.video = pt;
                seen.1 = true;
            }
        }
        p
    }
}

/// Builds and starts the pipeline.
fn build(
    options: &Options,
    inputs: Inputs,
    payloads: Payloads,
    sinks: &Sinks,
) -> Result<(gst::Pipeline, gst::Element), MediaError> {
    let (audio_pt, video_pt) = (payloads.audio, payloads.video);
    let (w, h) = options.size;
    let video = match &options.source {
        Source::TestPattern { rgb } => format!(
            "videotestsrc is-live=true pattern=solid-color foreground-color={:#010x}",
            0xff00_0000u32 | (rgb & 0x00ff_ffff)
        ),
        Source::Devices if inputs.camera => "autovideosrc".to_owned(),
        Source::Devices => "videotestsrc is-live=true pattern=black".to_owned(),
    };
    let audio = match &options.source {
        Source::TestPattern { .. } => "audiotestsrc is-live=true wave=sine volume=0.1",
        Source::Devices if inputs.microphone => "autoaudiosrc",
        Source::Devices => "audiotestsrc is-live=true wave=silence",
    };
    let mut description = format!(
        "webrtcbin name=webrtc bundle-policy=max-bundle \
         {audio} ! volume name=mic ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt={audio_pt} ! \
         application/x-rtp,media=audio,encoding-name=OPUS,payload={audio_pt} ! webrtc. "
    );
    if options.video {
        description += &format!(
            "{video} ! videoconvert ! videobalance name=camera ! videoscale ! videorate ! \
             video/x-raw,width={w},height={h},framerate=15/1 ! queue ! \
             vp8enc deadline=1 keyframe-max-dist=30 target-bitrate=300000 ! rtpvp8pay pt={video_pt} ! \
             application/x-rtp,media=video,encoding-name=VP8,payload={video_pt} ! webrtc. "
        );
    }
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| MediaError::Unavailable(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Unavailable("not a pipeline".into()))?;
    let webrtc = pipeline
        .by_name("webrtc")
        .ok_or_else(|| MediaError::Unavailable("no webrtcbin".into()))?;
    configure_ice(&webrtc, options);

    let tx = sinks.events.clone();

    let events = tx.clone();
    webrtc.connect("on-ice-candidate", false, move |values| {
        let mline = values[1].get::<u32>().unwrap_or(0);
        let candidate = values[2].get::<String>().unwrap_or_default();
        let _ = events.send(EngineEvent::Signal(CallSignal::Ice {
            candidate,
            mline,
            mid: None,
        }));
        None
    });
    let events = tx.clone();
    webrtc.connect_notify(Some("ice-connection-state"), move |webrtc, _| {
        let state = webrtc.property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state");
        let name = match state {
            gst_webrtc::WebRTCICEConnectionState::New => "new",
            gst_webrtc::WebRTCICEConnectionState::Checking => "checking",
            gst_webrtc::WebRTCICEConnectionState::Connected => "connected",
            gst_webrtc::WebRTCICEConnectionState::Completed => "completed",
            gst_webrtc::WebRTCICEConnectionState::Failed => "failed",
            gst_webrtc::WebRTCICEConnectionState::Disconnected => "disconnected",
            gst_webrtc::WebRTCICEConnectionState::Closed => "closed",
            _ => "unknown",
        };
        let _ = events.send(EngineEvent::Ice(name.into()));
    });
    let events = tx.clone();
    webrtc.connect_notify(Some("ice-gathering-state"), move |webrtc, _| {
        let state = webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state");
        if state == gst_webrtc::WebRTCICEGatheringState::Complete {
            let _ = events.send(EngineEvent::Gathered);
        }
    });
    let decode = (pipeline.downgrade(), sinks.clone());
    webrtc.connect_pad_added(move |_, pad| {
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        let (pipeline, sinks) = &decode;
        let Some(pipeline) = pipeline.upgrade() else {
            return;
        };
        if let Err(e) = decode_incoming(&pipeline, pad, sinks.clone()) {
            let _ = sinks.events.send(EngineEvent::Failed(e));
        }
    });

    let bus = pipeline.bus().expect("a pipeline has a bus");
    let events = tx;
    std::thread::Builder::new()
        .name("pinchat-media-bus".into())
        .spawn(move || {
            for message in bus.iter_timed(gst::ClockTime::NONE) {
                match message.view() {
                    gst::MessageView::Error(e) => {
                        let _ = events.send(EngineEvent::Failed(format!(
                            "{} ({})",
                            e.error(),
                            e.debug().map(|d| d.to_string()).unwrap_or_default()
                        )));
                    }
                    gst::MessageView::Eos(_) => break,
                    gst::MessageView::Application(a) if a.structure().is_some_and(|s| s.name() == STOP) => {
                        break;
                    }
                    _ => {}
                }
            }
        })
        .map_err(|e| MediaError::Unavailable(e.to_string()))?;

    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| MediaError::Unavailable(format!("the pipeline does not start: {e}")))?;
    Ok((pipeline, webrtc))
}

/// STUN and TURN servers, and the transport policy.
fn configure_ice(webrtc: &gst::Element, options: &Options) {
    for server in &options.ice_servers {
        for url in &server.urls {
            if let Some(rest) = url.strip_prefix("stun:") {
                webrtc.set_property("stun-server", format!("stun://{rest}"));
            } else if let Some((scheme, rest)) = url.split_once(':')
                && (scheme == "turn" || scheme == "turns")
                && let (Some(user), Some(pass)) = (&server.username, &server.credential)
            {
                // The TURN REST username holds a colon: the URI's user part is percent-encoded.
                let rest = rest.split('?').next().unwrap_or(rest);
                let uri = format!("{scheme}://{}:{}@{rest}", escape(user), escape(pass));
                let _added = webrtc.emit_by_name::<bool>("add-turn-server", &[&uri]);
            }
        }
    }
    if options.relay_only {
        webrtc.set_property_from_str("ice-transport-policy", "relay");
    }
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse(
    sdp: &str,
    kind: gst_webrtc::WebRTCSDPType,
    what: &'static str,
) -> Result<gst_webrtc::WebRTCSessionDescription, MediaError> {
    let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes()).map_err(|e| MediaError::BadSignal {
        what,
        why: e.to_string(),
    })?;
    if message.medias_len() == 0 {
        return Err(MediaError::BadSignal {
            what,
            why: "it describes no media".into(),
        });
    }
    Ok(gst_webrtc::WebRTCSessionDescription::new(kind, message))
}

fn description_from(
    reply: Result<Option<&gst::StructureRef>, gst::PromiseError>,
    field: &str,
) -> Result<gst_webrtc::WebRTCSessionDescription, String> {
    let reply = match reply {
        Ok(Some(reply)) => reply,
        Ok(None) => return Err(format!("no {field} was created")),
        Err(e) => return Err(format!("creating the {field} failed: {e:?}")),
    };
    if let Ok(error) = reply.get::<gst::glib::Error>("error") {
        return Err(format!("creating the {field} failed: {error}"));
    }
    reply
        .get::<gst_webrtc::WebRTCSessionDescription>(field)
        .map_err(|e| format!("creating the {field} failed: {e}"))
}

/// Where decoded media goes.
#[derive(Clone)]
struct Sinks {
    shared: Arc<Mutex<Shared>>,
    stats: Arc<watch::Sender<Stats>>,
    events: mpsc::UnboundedSender<EngineEvent>,
    started: Instant,
}

/// Decodes one incoming RTP stream of `webrtcbin`: video into RGB frames for [`Engine::latest_frame`],
/// audio into the counters.
fn decode_incoming(pipeline: &gst::Pipeline, pad: &gst::Pad, sinks: Sinks) -> Result<(), String> {
    let decodebin = gst::ElementFactory::make("decodebin")
        .build()
        .map_err(|e| e.to_string())?;
    let weak = pipeline.downgrade();
    decodebin.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let name = caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let linked = if name.starts_with("video/") {
            sink_video(&pipeline, pad, sinks.clone())
        } else if name.starts_with("audio/") {
            sink_audio(&pipeline, pad, sinks.clone())
        } else {
            Ok(())
        };
        if let Err(e) = linked {
            let _ = sinks.events.send(EngineEvent::Failed(e));
        }
    });
    pipeline.add(&decodebin).map_err(|e| e.to_string())?;
    decodebin.sync_state_with_parent().map_err(|e| e.to_string())?;
    let sink = decodebin.static_pad("sink").ok_or("decodebin has no sink pad")?;
    pad.link(&sink).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn sink_video(pipeline: &gst::Pipeline, pad: &gst::Pad, sinks: Sinks) -> Result<(), String> {
    let convert = gst::ElementFactory::make("videoconvert")
        .build()
        .map_err(|e| e.to_string())?;
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgb)
        .build();
    let sink = gst_app::AppSink::builder().caps(&caps).sync(false).build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(info) = gst_video::VideoInfo::from_caps(caps) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let frame = Frame {
                    width: info.width(),
                    height: info.height(),
                    stride: info.stride()[0] as usize,
                    rgb: map.as_slice().to_vec(),
                };
                sinks.shared.lock().unwrap_or_else(|e| e.into_inner()).latest = Some(frame);
                let mut first = false;
                sinks.stats.send_modify(|s| {
                    s.video_frames += 1;
                    if s.first_frame_ms.is_none() {
                        s.first_frame_ms = Some(sinks.started.elapsed().as_millis() as u64);
                        first = true;
                    }
                });
                if first {
                    let _ = sinks.events.send(EngineEvent::FirstFrame);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let sink: gst::Element = sink.upcast();
    pipeline.add_many([&convert, &sink]).map_err(|e| e.to_string())?;
    gst::Element::link_many([&convert, &sink]).map_err(|e| e.to_string())?;
    for e in [&convert, &sink] {
        e.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    let input = convert.static_pad("sink").ok_or("videoconvert has no sink pad")?;
    pad.link(&input).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn sink_audio(pipeline: &gst::Pipeline, pad: &gst::Pad, sinks: Sinks) -> Result<(), String> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("signal-handoffs", true)
        .build()
        .map_err(|e| e.to_string())?;
    sink.connect("handoff", false, move |_| {
        sinks.stats.send_modify(|s| s.audio_buffers += 1);
        None
    });
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    let input = sink.static_pad("sink").ok_or("fakesink has no sink pad")?;
    pad.link(&input).map_err(|e| format!("{e:?}"))?;
    Ok(())
}
