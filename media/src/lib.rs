//! `pinchat-media`: the native media engine of a call, for webviews without `RTCPeerConnection`
//! (Debian's WebKitGTK has no WebRTC in any release; WebView2 and WKWebView run calls in the page).
//!
//! One [`Engine`] is one side of one call: a GStreamer pipeline around `webrtcbin` that sends the camera
//! and microphone (or, for tests and demos, a solid colour and a tone) as VP8 and Opus, and decodes what
//! the peer sends. It speaks the same signalling as the web engine — offers, answers and trickled ICE
//! candidates as [`CallSignal`]s — so the two interoperate, and the caller of this crate only carries
//! signals between the engine and the daemon. The engine owns no sockets to the pinchat server and no
//! UI: decoded video frames are handed out as RGB images ([`Engine::latest_frame`]), which the panel
//! shows in its page.
//!
//! GStreamer runs its own threads; the engine's events arrive through a channel the caller drains
//! ([`Engine::events`]), so it never blocks an async runtime.

#![cfg(target_os = "linux")]

mod engine;

pub use engine::{Engine, EngineEvent, Frame, MediaError, Options, Source, Stats, warm_up};
