//! What the source holds between typing and the server's answer, and how fast it lets it go: the
//! outbox, the pacer below the server's frame limit, and the reconnect back-off.

use super::Outgoing;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// The messages the source holds until the server answers for them, in the order they were typed.
#[derive(Default)]
pub(super) struct Outbox {
    entries: VecDeque<Entry>,
}

struct Entry {
    message: Outgoing,
    state: EntryState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryState {
    /// To be sent.
    Waiting,
    /// Sent on the current connection; the answer has not come yet.
    InFlight,
    /// The server could not take it just now; sent again on the next connection.
    Held,
}

impl Outbox {
    pub(super) fn add(&mut self, message: Outgoing) {
        if !self
            .entries
            .iter()
            .any(|e| e.message.client_id == message.client_id)
        {
            self.entries.push_back(Entry {
                message,
                state: EntryState::Waiting,
            });
        }
    }

    pub(super) fn waiting(&self) -> bool {
        self.entries.iter().any(|e| e.state == EntryState::Waiting)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == EntryState::InFlight)
            .count()
    }

    /// Marks the oldest waiting message in flight and returns it.
    pub(super) fn next(&mut self) -> Option<Outgoing> {
        let entry = self.entries.iter_mut().find(|e| e.state == EntryState::Waiting)?;
        entry.state = EntryState::InFlight;
        Some(entry.message.clone())
    }

    pub(super) fn remove(&mut self, client_id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.message.client_id != client_id);
        self.entries.len() != before
    }

    pub(super) fn set(&mut self, client_id: &str, state: EntryState) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.message.client_id == client_id) {
            e.state = state;
        }
    }

    /// A new connection: everything unanswered goes again.
    pub(super) fn reset(&mut self) {
        for e in &mut self.entries {
            e.state = EntryState::Waiting;
        }
    }
}

/// A token bucket for outgoing messages: `rate` per second, bursts of one second's worth.
pub(super) struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    pub(super) fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    pub(super) fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
    }

    /// When the next message may go.
    pub(super) fn ready_at(&mut self) -> Instant {
        self.refill();
        if self.tokens >= 1.0 {
            Instant::now()
        } else {
            Instant::now() + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    pub(super) fn take(&mut self) {
        self.refill();
        self.tokens -= 1.0;
    }

    /// The server said "too fast": halve the rate (down to one per second).
    pub(super) fn slow_down(&mut self) {
        self.rate = (self.rate / 2.0).max(1.0);
        self.tokens = self.tokens.min(self.rate);
        tracing::info!(rate = self.rate, "the server limited our rate; sending slower");
    }
}

/// Exponential back-off with jitter: 1, 2, 4 … 60 seconds, each ±25 %.
#[derive(Default)]
pub(super) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(super) fn next(&mut self) -> Duration {
        let base = 1000u64 << self.attempt.min(6);
        self.attempt += 1;
        let base = base.min(60_000);
        let mut r = [0u8; 2];
        let _ = getrandom::fill(&mut r);
        let jitter = (u64::from(u16::from_le_bytes(r)) * base / 2) / u64::from(u16::MAX);
        Duration::from_millis(base * 3 / 4 + jitter)
    }

    pub(super) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinchat_proto::AccountId;

    fn msg(id: &str) -> Outgoing {
        Outgoing {
            client_id: id.into(),
            to: AccountId(2),
            text: id.into(),
        }
    }

    #[test]
    fn the_outbox_keeps_order_ignores_repeats_and_resends_after_a_reset() {
        let mut o = Outbox::default();
        o.add(msg("a"));
        o.add(msg("b"));
        o.add(msg("a"));
        assert_eq!(o.next().unwrap().client_id, "a");
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.next().unwrap().client_id, "b");
        assert!(o.next().is_none());
        assert!(!o.waiting());
        o.set("b", EntryState::Held);
        assert!(o.remove("a"));
        assert!(!o.remove("a"));
        o.reset();
        assert_eq!(o.next().unwrap().client_id, "b");
    }

    #[tokio::test]
    async fn the_pacer_allows_a_burst_then_its_rate_and_slows_down_when_told() {
        let mut p = Pacer::new(10.0);
        for _ in 0..10 {
            assert!(p.ready_at() <= Instant::now() + Duration::from_millis(1));
            p.take();
        }
        let wait = p.ready_at().saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        p.slow_down();
        assert_eq!(p.rate, 5.0);
    }
}
