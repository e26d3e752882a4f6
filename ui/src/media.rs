//! A call's media in a panel whose webview has no WebRTC (WebKitGTK, on Linux): the native engine
//! (`pinchat-media`) runs inside the panel's process.
//!
//! The page stays the one call view for both engines. It drives this one with `ui.media` requests
//! ([`MediaOp`]: start, the peer's signals, mute, camera, stop), hears from it through
//! `window.pinchat.media(event)` ([`event_json`]), and shows the peer's picture as images it fetches
//! from `…/call/frame` on the panel's own scheme ([`CallMedia::frame_bmp`]). Signals go between the
//! page and the daemon exactly as the web engine's do, so the daemon cannot tell the engines apart.
//!
//! Where the webview has `RTCPeerConnection` (WebView2, WKWebView) the page runs the call itself
//! (`assets/call.js`) and never asks for this one; there `ui.media` answers `ui.media_unavailable`.

use pinchat_proto::stream::CallSignal;
use serde_json::Value;

/// What the page asks of the native engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaOp {
    /// Start the engine for a call: with video or voice only; `offer` when this side placed the call
    /// (the callee accepted: make the offer now).
    Start {
        /// Send and receive video.
        video: bool,
        /// Make the offer.
        offer: bool,
        /// STUN and TURN servers (`call.ice`).
        ice_servers: Vec<pinchat_proto::http::IceServer>,
    },
    /// Make the offer now (the engine was started while the call rang; the callee accepted).
    Offer,
    /// Load the engine's libraries without opening any device (a call rings): the call starts
    /// faster once accepted.
    Warm,
    /// The peer's offer, answer or candidate.
    Remote(CallSignal),
    /// Mute (`true`) or unmute the microphone.
    Mute(bool),
    /// Turn the camera on (`true`) or off.
    Camera(bool),
    /// End the call's media.
    Stop,
}

impl MediaOp {
    /// Reads `ui.media`'s parameters; `Err` says what is wrong, for the page's error.
    pub fn parse(params: &Value) -> Result<MediaOp, String> {
        let flag = |name: &str| params.get(name).and_then(Value::as_bool);
        match params.get("op").and_then(Value::as_str) {
            Some("start") => Ok(MediaOp::Start {
                video: flag("video").unwrap_or(true),
                offer: flag("offer").unwrap_or(false),
                ice_servers: match params.get("ice_servers") {
                    None | Some(Value::Null) => vec![],
                    Some(v) => serde_json::from_value(v.clone())
                        .map_err(|e| format!("the ICE servers cannot be read: {e}"))?,
                },
            }),
            Some("remote") => serde_json::from_value(params.get("signal").cloned().unwrap_or(Value::Null))
                .map(MediaOp::Remote)
                .map_err(|e| format!("the signal cannot be read: {e}")),
            Some("mute") => flag("muted")
                .map(MediaOp::Mute)
                .ok_or("`muted` is missing".into()),
            Some("camera") => flag("on").map(MediaOp::Camera).ok_or("`on` is missing".into()),
            Some("stop") => Ok(MediaOp::Stop),
            Some("offer") => Ok(MediaOp::Offer),
            Some("warm") => Ok(MediaOp::Warm),
            Some(other) => Err(format!("no media operation {other:?}")),
            None => Err("`op` is missing".into()),
        }
    }
}

#[cfg(target_os = "linux")]
pub use native::{CallMedia, event_json};

#[cfg(target_os = "linux")]
mod native {
    use super::MediaOp;
    use pinchat_media::{Engine, EngineEvent, Frame, Options, Source};
    use serde_json::{Value, json};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// The panel's call engine, if a call runs: one at a time. Cloned into the handler of the page's
    /// scheme, which serves its frames.
    #[derive(Clone, Default)]
    pub struct CallMedia {
        engine: Arc<Mutex<Option<Engine>>>,
        /// Counts the engines started: a stopped engine's last events are dropped, not taken for
        /// the next call's.
        started: Arc<AtomicU64>,
    }

    impl CallMedia {
        /// Carries out `op`; `deliver` gets the engine's events (from another thread) until the
        /// engine stops or `deliver` answers `false`.
        pub fn apply(
            &self,
            op: MediaOp,
            deliver: impl Fn(EngineEvent) -> bool + Send + 'static,
        ) -> Result<(), (&'static str, String)> {
            let mut slot = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            match op {
                MediaOp::Start {
                    video,
                    offer,
                    ice_servers,
                } => {
                    // The old engine goes, and the lock with it: building the new one takes a
                    // while, and the page's frames and other requests must not wait on it.
                    let old = slot.take();
                    drop(slot);
                    drop(old);
                    let mine = self.started.fetch_add(1, Ordering::SeqCst) + 1;
                    let started = self.started.clone();
                    let options = Options {
                        video,
                        source: source(),
                        ice_servers,
                        ..Options::default()
                    };
                    let mut engine =
                        Engine::new(&options).map_err(|e| ("ui.media_unavailable", e.to_string()))?;
                    if let Some(mut events) = engine.events() {
                        // GStreamer's threads send; this one carries the events to the event loop
                        // and ends with the engine (its senders go with the pipeline).
                        let spawned = std::thread::Builder::new()
                            .name("pinchat-call-events".into())
                            .spawn(move || {
                                while let Some(event) = events.blocking_recv() {
                                    if started.load(Ordering::SeqCst) != mine || !deliver(event) {
                                        return;
                                    }
                                }
                            });
                        if let Err(e) = spawned {
                            return Err(("ui.media_unavailable", e.to_string()));
                        }
                    }
                    let mut slot = self.engine.lock().unwrap_or_else(|e| e.into_inner());
                    if self.started.load(Ordering::SeqCst) != mine {
                        // Stopped (or started again) while it was being built.
                        return Err(NOT_STARTED);
                    }
                    if offer {
                        engine.offer();
                    }
                    *slot = Some(engine);
                    Ok(())
                }
                MediaOp::Offer => {
                    slot.as_ref().ok_or(NOT_STARTED)?.offer();
                    Ok(())
                }
                MediaOp::Warm => {
                    drop(slot);
                    // On its own thread: loading the plugins takes a moment, and the window's
                    // event loop must not wait for it.
                    let spawned = std::thread::Builder::new()
                        .name("pinchat-call-warm".into())
                        .spawn(|| {
                            if let Err(e) = pinchat_media::warm_up() {
                                tracing::warn!(error = %e, "the call engine cannot load");
                            }
                        });
                    spawned
                        .map(|_| ())
                        .map_err(|e| ("ui.media_unavailable", e.to_string()))
                }
                MediaOp::Remote(signal) => {
                    let engine = slot.as_mut().ok_or(NOT_STARTED)?;
                    engine.remote(signal).map_err(|e| ("call.invalid", e.to_string()))
                }
                MediaOp::Mute(muted) => {
                    slot.as_ref().ok_or(NOT_STARTED)?.set_muted(muted);
                    Ok(())
                }
                MediaOp::Camera(on) => {
                    slot.as_ref().ok_or(NOT_STARTED)?.set_camera(on);
                    Ok(())
                }
                MediaOp::Stop => {
                    self.started.fetch_add(1, Ordering::SeqCst);
                    slot.take();
                    Ok(())
                }
            }
        }

        /// The peer's latest picture as a BMP image (what every web engine shows without a decoder
        /// of its own); `None` before the first frame or without a call.
        pub fn frame_bmp(&self) -> Option<Vec<u8>> {
            let frame = self
                .engine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()?
                .latest_frame()?;
            Some(bmp(&frame))
        }
    }

    const NOT_STARTED: (&str, String) = ("call.not_found", String::new());

    /// What the call sends: the camera and microphone, or — for tests and for trying calls on a
    /// machine without a camera — a solid colour and a tone (`PINCHAT_CALL_TEST_PATTERN=RRGGBB`).
    fn source() -> Source {
        std::env::var("PINCHAT_CALL_TEST_PATTERN")
            .ok()
            .and_then(|hex| u32::from_str_radix(hex.trim_start_matches('#'), 16).ok())
            .map_or(Source::Devices, |rgb| Source::TestPattern { rgb })
    }

    /// The event as the page's `window.pinchat.media` takes it.
    pub fn event_json(event: &EngineEvent) -> Value {
        match event {
            EngineEvent::Signal(s) => json!({ "signal": s }),
            EngineEvent::Ice(state) => json!({ "ice": state }),
            EngineEvent::Gathered => json!({ "gathered": true }),
            EngineEvent::FirstFrame => json!({ "first_frame": true }),
            EngineEvent::Missing { microphone, camera } => {
                json!({ "missing": { "microphone": microphone, "camera": camera } })
            }
            EngineEvent::Failed(why) => json!({ "failed": why }),
        }
    }

    /// A 24-bit bottom-up BMP of `frame`.
    fn bmp(frame: &Frame) -> Vec<u8> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let row = (w * 3).div_ceil(4) * 4;
        let size = 54 + row * h;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"BM");
        out.extend_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&54u32.to_le_bytes());
        out.extend_from_slice(&40u32.to_le_bytes());
        out.extend_from_slice(&(w as i32).to_le_bytes());
        out.extend_from_slice(&(h as i32).to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&24u16.to_le_bytes());
        out.extend_from_slice(&[0; 24]);
        for y in (0..h).rev() {
            let line = &frame.rgb[y * frame.stride..y * frame.stride + w * 3];
            for px in line.chunks_exact(3) {
                out.extend_from_slice(&[px[2], px[1], px[0]]);
            }
            out.resize(out.len() + row - w * 3, 0);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_frame_becomes_a_bottom_up_bgr_bitmap_with_padded_rows() {
            // 2×2: top row red, green; bottom row blue, white. Rows of 6 bytes pad to 8.
            let frame = Frame {
                width: 2,
                height: 2,
                stride: 6,
                rgb: vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255],
            };
            let b = bmp(&frame);
            assert_eq!(&b[..2], b"BM");
            assert_eq!(b.len(), 54 + 16);
            assert_eq!(u32::from_le_bytes(b[2..6].try_into().unwrap()), 70);
            // The bottom row first, in blue-green-red order.
            assert_eq!(&b[54..62], &[255, 0, 0, 255, 255, 255, 0, 0]);
            assert_eq!(&b[62..70], &[0, 0, 255, 0, 255, 0, 0, 0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_media_requests_are_read_or_refused_with_a_reason() {
        let op = |v: Value| MediaOp::parse(&v);
        assert_eq!(
            op(serde_json::json!({"op": "start", "video": false, "offer": true})),
            Ok(MediaOp::Start {
                video: false,
                offer: true,
                ice_servers: vec![]
            })
        );
        let Ok(MediaOp::Start { ice_servers, .. }) = op(serde_json::json!({"op": "start",
            "ice_servers": [{"urls": ["turn:t.example:3478"], "username": "1:2", "credential": "x"}]}))
        else {
            panic!("the ICE servers are read");
        };
        assert_eq!(ice_servers[0].username.as_deref(), Some("1:2"));
        assert!(op(serde_json::json!({"op": "start", "ice_servers": "stun:x"})).is_err());
        assert_eq!(
            op(serde_json::json!({"op": "remote", "signal": {"answer": {"sdp": "v=0"}}})),
            Ok(MediaOp::Remote(CallSignal::Answer { sdp: "v=0".into() }))
        );
        assert_eq!(
            op(serde_json::json!({"op": "mute", "muted": true})),
            Ok(MediaOp::Mute(true))
        );
        assert_eq!(op(serde_json::json!({"op": "stop"})), Ok(MediaOp::Stop));
        assert_eq!(op(serde_json::json!({"op": "offer"})), Ok(MediaOp::Offer));
        assert_eq!(op(serde_json::json!({"op": "warm"})), Ok(MediaOp::Warm));
        assert!(op(serde_json::json!({"op": "remote", "signal": {"offer": 3}})).is_err());
        assert!(op(serde_json::json!({"op": "mute"})).is_err());
        assert!(op(serde_json::json!({"op": "dance"})).is_err());
        assert!(op(serde_json::json!({})).is_err());
    }
}
