//! Counters exported at `/metrics` in the Prometheus text format.
//!
//! A handful of relaxed atomics, written by whoever observes the event. No labels and no histograms yet,
//! so no metrics library either: the exposition format for plain counters and gauges is a few lines.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The server's counters.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Open streams (gauge).
    pub streams: AtomicI64,
    /// Streams ever opened.
    pub streams_opened: AtomicU64,
    /// Events handed to streams.
    pub events_relayed: AtomicU64,
    /// Times a slow stream was resynchronised from the database instead of being sent its backlog.
    pub stream_resyncs: AtomicU64,
    /// Bytes of WebSocket frames sent on streams (payload plus frame header).
    pub stream_bytes_sent: AtomicU64,
    /// Frames received on streams.
    pub stream_frames_received: AtomicU64,
    /// Messages stored (not counting idempotent retries).
    pub messages_stored: AtomicU64,
    /// Successful logins.
    pub logins: AtomicU64,
    /// Failed logins (bad credentials, disabled, rate-limited).
    pub logins_failed: AtomicU64,
    /// HTTP requests answered.
    pub http_requests: AtomicU64,
    /// Requests and frames rejected with an error code.
    pub errors: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        put(
            "pinchat_streams",
            "gauge",
            "Open push streams.",
            self.streams.load(Relaxed).to_string(),
        );
        put(
            "pinchat_streams_opened_total",
            "counter",
            "Push streams opened.",
            c(&self.streams_opened),
        );
        put(
            "pinchat_events_relayed_total",
            "counter",
            "Events handed to push streams.",
            c(&self.events_relayed),
        );
        put(
            "pinchat_stream_resyncs_total",
            "counter",
            "Slow streams resynchronised from the database.",
            c(&self.stream_resyncs),
        );
        put(
            "pinchat_stream_bytes_sent_total",
            "counter",
            "Bytes of WebSocket frames sent on push streams.",
            c(&self.stream_bytes_sent),
        );
        put(
            "pinchat_stream_frames_received_total",
            "counter",
            "Frames received on push streams.",
            c(&self.stream_frames_received),
        );
        put(
            "pinchat_messages_stored_total",
            "counter",
            "Messages stored.",
            c(&self.messages_stored),
        );
        put(
            "pinchat_logins_total",
            "counter",
            "Successful logins.",
            c(&self.logins),
        );
        put(
            "pinchat_logins_failed_total",
            "counter",
            "Failed login attempts.",
            c(&self.logins_failed),
        );
        put(
            "pinchat_http_requests_total",
            "counter",
            "HTTP requests answered.",
            c(&self.http_requests),
        );
        put(
            "pinchat_errors_total",
            "counter",
            "Requests and frames answered with an error.",
            c(&self.errors),
        );
        out
    }
}
