//! The traffic workload, generated once from a seed and shared (as JSON) with the XMPP driver, so that
//! pinchat and Prosody replay exactly the same events.
//!
//! Each contact changes state at random with exponentially distributed gaps (mean `mean_change_secs`);
//! one pinned contact (contact 0) sends the observer a message every `message_every_secs`. Times are in
//! workload seconds; drivers divide them by the time-scale factor.

use serde::{Deserialize, Serialize};

/// The states a contact moves between (all "connected" ones: nobody logs off during the run).
pub const STATES: [&str; 4] = ["online", "busy", "idle", "do_not_disturb"];

/// The whole workload.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Schedule {
    /// Number of contacts.
    pub contacts: usize,
    /// Indexes of the pinned contacts (the observer widget's pins in configuration (a)).
    pub pins: Vec<usize>,
    /// Length of the run, workload seconds.
    pub window_secs: f64,
    /// Events in time order.
    pub events: Vec<Event>,
}

/// One event.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Event {
    /// When, workload seconds from the start.
    pub t: f64,
    /// Who.
    pub contact: usize,
    /// A state change to this state, or (when absent) a message to the observer.
    pub state: Option<String>,
    /// For messages: a sequence number, put in the text so the receiver can time delivery.
    pub seq: Option<u32>,
}

/// splitmix64: a tiny, well-known generator, so that the same seed gives the same workload anywhere.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub(crate) fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

impl Schedule {
    /// Generates a workload.
    pub fn generate(
        contacts: usize,
        pins: usize,
        window_secs: f64,
        mean_change_secs: f64,
        message_every_secs: f64,
        seed: u64,
    ) -> Schedule {
        let mut rng = Rng(seed);
        let mut events = Vec::new();
        for contact in 0..contacts {
            let mut t = 0.0;
            let mut state = 0usize;
            loop {
                t += -rng.unit().ln() * mean_change_secs;
                if t >= window_secs {
                    break;
                }
                state = (state + 1 + (rng.next() % 3) as usize) % STATES.len();
                events.push(Event {
                    t,
                    contact,
                    state: Some(STATES[state].into()),
                    seq: None,
                });
            }
        }
        let mut seq = 0;
        let mut t = message_every_secs;
        while t < window_secs {
            events.push(Event {
                t,
                contact: 0,
                state: None,
                seq: Some(seq),
            });
            seq += 1;
            t += message_every_secs;
        }
        events.sort_by(|a, b| a.t.total_cmp(&b.t));
        Schedule {
            contacts,
            pins: (0..pins.min(contacts)).collect(),
            window_secs,
            events,
        }
    }

    /// State changes of pinned contacts.
    pub fn pinned_changes(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.state.is_some() && self.pins.contains(&e.contact))
            .count()
    }

    /// All state changes.
    pub fn changes(&self) -> usize {
        self.events.iter().filter(|e| e.state.is_some()).count()
    }

    /// Messages.
    pub fn messages(&self) -> usize {
        self.events.iter().filter(|e| e.seq.is_some()).count()
    }
}
