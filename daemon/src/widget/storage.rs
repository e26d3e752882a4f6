//! A widget whose database cannot be written (a full or read-only disk).
//!
//! Nothing is shown that was not stored: the widget turns stale, says why (`storage`), drops what the
//! source delivers and probes the disk with back-off (1 s … 10 s — only while in trouble). Once a write
//! succeeds it asks the source to fetch everything after its stored cursor again
//! ([`SourceCmd::Resync`]), so the gap is filled from the server and nothing is lost.

use super::Widget;
use crate::db::{Change, DbError, Problem, Stored};
use crate::source::{Outgoing, SourceCmd};
use std::time::Duration;
use tokio::time::Instant;

/// A database that cannot be written, and when to try again.
pub(super) struct Trouble {
    attempt: u32,
    pub(super) retry_at: Instant,
}

impl Trouble {
    fn new() -> Trouble {
        Trouble {
            attempt: 0,
            retry_at: Instant::now() + Duration::from_secs(1),
        }
    }
}

/// What the user reads about a storage problem.
pub fn storage_words(problem: Problem, path: &std::path::Path) -> String {
    let dir = path.parent().unwrap_or(path).display();
    match problem {
        Problem::Full => format!(
            "the disk holding {dir} is full: new messages and changes cannot be stored; free some space (pinchat catches up by itself)"
        ),
        Problem::ReadOnly => format!(
            "{dir} cannot be written (read-only): new messages and changes cannot be stored; pinchat catches up once it can write again"
        ),
        Problem::Other => {
            format!("the widget database in {dir} cannot be written; pinchat keeps retrying (see its log)")
        }
    }
}

impl Widget {
    /// The database could only be opened for reading: serve what it holds, connect once it can store.
    pub(super) fn start_in_trouble(&mut self, problem: Problem) {
        self.trouble = Some(Trouble::new());
        let words = storage_words(problem, self.db.path());
        tracing::error!(widget = %self.id, "{words}");
        self.storage = Some(words);
    }

    /// A write failed: turn stale, say why, and retry with back-off until writing works again.
    pub(super) fn storage_failed(&mut self, e: &DbError) {
        if self.trouble.is_none() {
            tracing::error!(widget = %self.id, error = %e,
                "cannot write the widget database; the widget is stale until it can (retrying)");
            self.trouble = Some(Trouble::new());
        }
        let words = storage_words(e.problem(), self.db.path());
        let was_stale = self.stale;
        self.stale = true;
        if self.storage.as_deref() != Some(words.as_str()) {
            self.storage = Some(words);
            self.widget_changed();
        } else if !was_stale {
            self.notify_connection();
        }
    }

    /// Tries the disk again; on success, fetches from the server what could not be stored.
    pub(super) async fn retry_storage(&mut self) {
        match self.db.probe().await {
            Ok(reloaded) => {
                tracing::info!(widget = %self.id, "the widget database can be written again; catching up");
                self.trouble = None;
                self.storage = None;
                if let Some(stored) = reloaded {
                    self.reload(stored);
                }
                if !self.unsaved_sent.is_empty() && self.persist(Change::default()).await.is_err() {
                    return;
                }
                self.widget_changed();
                if self.configured {
                    let _ = self.source.send(SourceCmd::Resync(self.position));
                } else {
                    self.configure_source(vec![]);
                }
            }
            Err(e) => {
                if let Some(t) = &mut self.trouble {
                    t.attempt += 1;
                    t.retry_at = Instant::now()
                        + Duration::from_secs(1u64 << t.attempt.min(5)).min(Duration::from_secs(10));
                    tracing::debug!(widget = %self.id, error = %e, attempt = t.attempt, "the widget database still cannot be written");
                }
                let words = storage_words(e.problem(), self.db.path());
                if self.storage.as_deref() != Some(words.as_str()) {
                    self.storage = Some(words);
                    self.widget_changed();
                }
            }
        }
    }

    /// Takes what a database opened read-only could not see (the newest changes were in its WAL).
    fn reload(&mut self, stored: Stored) {
        self.position = stored.position;
        self.pins = stored.pins;
        self.account = stored.account;
        self.mode = stored.mode;
        self.poll_interval_secs = stored.poll_interval_secs;
        self.received = stored.received.into_iter().map(|r| (r.id, r)).collect();
        for q in stored.outbox {
            if !self.outbox.iter().any(|o| o.client_id == q.client_id) {
                let _ = self.source.send(SourceCmd::Send(Outgoing {
                    client_id: q.client_id.clone(),
                    to: q.to,
                    text: q.text.clone(),
                }));
                self.outbox.push(q);
            }
        }
        if stored.sealed.is_some() && stored.sealed != self.sealed {
            self.sealed = stored.sealed;
            self.key = None;
        }
    }
}
