//! The full client's own view of the account: every contact with its fields (name, state, status,
//! unread count, read marker…), kept current over the shared stream by a **roster subscription**
//! (`subscribe_roster`, docs/protocol.md) — the whole contact list, where a widget pins a few.
//!
//! One [`follow`] task per server connection owns the subscription: it attaches to the upstream as a
//! link of its own, subscribes (resuming from the roster's cursor after a reconnect, so a short outage
//! costs only what changed), and applies every snapshot, delta and message to the [`Roster`] published
//! on a `watch` channel, which the rest of the program reads.

use crate::calls::CallRoute;
use crate::upstream::{LINK_QUEUE, LinkId, Up};
use pinchat_daemon::model::Pin;
use pinchat_proto::stream::{ClientFrame, Resume, ServerFrame, Snapshot};
use pinchat_proto::{AccountId, Cursor, Epoch, Field, Message};
use std::collections::VecDeque;
use tokio::sync::{mpsc, oneshot, watch};

/// The first roster link's number: far above the endpoint's links (numbered from 1), and a new one per
/// connection, so that a late detach of an old connection's link can never end the new one's.
const FIRST_LINK: LinkId = 1 << 63;

/// Messages kept in [`Roster::recent`].
pub const RECENT: usize = 100;

/// The account's contacts as the full client knows them.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    /// Whether a snapshot has arrived on some connection (before that the list is empty, not known).
    pub synced: bool,
    /// The epoch of the server database the cursor belongs to.
    pub epoch: Epoch,
    /// The cursor of the last event applied.
    pub cursor: Cursor,
    /// Every contact, ordered by name (then id).
    pub contacts: Vec<Pin>,
    /// The newest messages received while running, oldest first (at most [`RECENT`]).
    pub recent: VecDeque<Message>,
    /// The stream is connected (set by the session, not by [`follow`]).
    pub online: bool,
    /// The server refused the account's key: a password is needed (set by the session).
    pub key_refused: bool,
}

impl Roster {
    /// A contact by id.
    pub fn contact(&self, id: AccountId) -> Option<&Pin> {
        self.contacts.iter().find(|c| c.contact == id)
    }

    fn apply_snapshot(&mut self, epoch: Epoch, snapshot: Snapshot) {
        if snapshot.full {
            // A full snapshot replaces what was held: contacts that are gone go with it.
            self.contacts.clear();
        }
        for update in snapshot.contacts {
            let i = match self.contacts.iter().position(|c| c.contact == update.id) {
                Some(i) => i,
                None => {
                    self.contacts.push(Pin::new(update.id));
                    self.contacts.len() - 1
                }
            };
            for field in &update.fields {
                self.contacts[i].apply(field);
            }
        }
        for message in snapshot.messages {
            self.remember(message);
        }
        self.sort();
        self.synced = true;
        self.epoch = epoch;
        self.cursor = snapshot.cursor;
    }

    fn remember(&mut self, message: Message) {
        if self.recent.iter().any(|m| m.id == message.id) {
            return;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(message);
    }

    fn sort(&mut self) {
        self.contacts.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.contact.cmp(&b.contact))
        });
    }
}

/// Keeps `roster` current over one server connection, reached through `up`; returns when the
/// connection ends (or when the upstream drops this link for not keeping up, which applying frames in
/// memory makes unlikely). `generation` numbers the connections, for the link's number. The link also
/// carries the window's calls (`calls`): it follows every contact, so the server rings it.
pub async fn follow(
    up: mpsc::Sender<Up>,
    roster: watch::Sender<Roster>,
    calls: std::sync::Arc<CallRoute>,
    generation: u64,
) {
    let link = FIRST_LINK + generation;
    let (frames, mut incoming) = mpsc::channel(LINK_QUEUE);
    let (reply, answer) = oneshot::channel();
    if up.send(Up::Attach { link, frames, reply }).await.is_err() {
        return;
    }
    let Ok(Some(welcome)) = answer.await else { return };
    calls.attached(link, up.clone());
    let resume = {
        let held = roster.borrow();
        (held.synced && held.epoch == welcome.epoch).then(|| Resume {
            epoch: held.epoch,
            cursor: held.cursor,
            fresh: vec![],
        })
    };
    let subscribe = ClientFrame::SubscribeRoster {
        req: 1,
        sub: 0,
        resume,
    };
    if up
        .send(Up::Frame {
            link,
            frame: subscribe,
        })
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = incoming.recv().await {
        match frame {
            ServerFrame::Snapshot(snapshot) => {
                roster.send_modify(|r| r.apply_snapshot(welcome.epoch, snapshot));
            }
            ServerFrame::Delta {
                cursor,
                contact,
                fields,
                ..
            } => {
                roster.send_if_modified(|r| {
                    if cursor <= r.cursor {
                        return false;
                    }
                    r.cursor = cursor;
                    let Some(pin) = r.contacts.iter_mut().find(|c| c.contact == contact) else {
                        return false;
                    };
                    let renamed = fields.iter().any(|f| matches!(f, Field::Name(_)));
                    for field in &fields {
                        pin.apply(field);
                    }
                    if renamed {
                        r.sort();
                    }
                    true
                });
            }
            ServerFrame::Message { cursor, message, .. } => {
                roster.send_if_modified(|r| {
                    if cursor <= r.cursor {
                        return false;
                    }
                    r.cursor = cursor;
                    r.remember(message);
                    true
                });
            }
            ServerFrame::Ack { req, result } => {
                calls.answered(req, Ok(result));
            }
            ServerFrame::Error {
                req: Some(req),
                error,
            } if calls.answered(req, Err(error.clone())) => {}
            ServerFrame::Call { call, peer, event } => calls.event(call, peer, event),
            ServerFrame::Error { error, .. } => {
                // The subscription was refused (e.g. an old server without roster subscriptions): the
                // lending goes on; only the contact list stays unknown.
                tracing::warn!(code = %error.code, message = %error.message, "the contact list cannot be followed");
            }
            ServerFrame::Welcome(_) => {}
        }
    }
    calls.detached(link);
    let _ = up.send(Up::Detach { link }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinchat_proto::{ContactUpdate, MessageId, Presence};

    fn update(id: u64, fields: Vec<Field>) -> ContactUpdate {
        ContactUpdate {
            id: AccountId(id),
            fields,
        }
    }

    #[test]
    fn a_full_snapshot_replaces_and_a_resume_snapshot_merges() {
        let mut r = Roster::default();
        r.apply_snapshot(
            7,
            Snapshot {
                sub: 0,
                cursor: 10,
                full: true,
                contacts: vec![
                    update(2, vec![Field::Name("zoe".into()), Field::State(Presence::Online)]),
                    update(3, vec![Field::Name("Adam".into())]),
                ],
                messages: vec![],
            },
        );
        let names: Vec<&str> = r.contacts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Adam", "zoe"]);
        r.apply_snapshot(
            7,
            Snapshot {
                sub: 0,
                cursor: 12,
                full: false,
                contacts: vec![update(2, vec![Field::Unread(1)])],
                messages: vec![Message {
                    id: MessageId(11),
                    from: AccountId(2),
                    ts: 1,
                    text: "hi".into(),
                }],
            },
        );
        let zoe = r.contact(AccountId(2)).unwrap();
        assert_eq!((zoe.unread, zoe.state), (1, Presence::Online));
        assert_eq!((r.cursor, r.recent.len(), r.contacts.len()), (12, 1, 2));
        r.apply_snapshot(
            8,
            Snapshot {
                sub: 0,
                cursor: 3,
                full: true,
                contacts: vec![update(3, vec![Field::Name("Adam".into())])],
                messages: vec![],
            },
        );
        assert_eq!((r.epoch, r.cursor, r.contacts.len()), (8, 3, 1));
    }
}
