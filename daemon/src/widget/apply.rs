//! What the source delivers, applied: database first, then memory, then the event.

use super::Widget;
use crate::db::Change;
use crate::error::WidgetError;
use crate::events::{Delivery, Event, Message};
use crate::model::{Pin, Position, Received};
use crate::source::SourceEvent;
use pinchat_proto::stream::Snapshot;
use pinchat_proto::{AccountId, Epoch, MessageId};
use std::collections::HashSet;

impl Widget {
    pub(super) async fn event(&mut self, event: SourceEvent) {
        // What cannot be stored is not shown either; the source sends it again after a resync.
        if self.trouble.is_some()
            && matches!(
                event,
                SourceEvent::Welcome { .. }
                    | SourceEvent::Snapshot { .. }
                    | SourceEvent::Synced { .. }
                    | SourceEvent::Delta { .. }
                    | SourceEvent::Message { .. }
            )
        {
            return;
        }
        match event {
            SourceEvent::Connection(link) => self.set_link(link),
            SourceEvent::Call { call, peer, event } => self.call_event(call, peer, event),
            SourceEvent::Carrier(via) => {
                if self.via != via {
                    self.via = via;
                    self.notify_connection();
                }
            }
            SourceEvent::Synced { position } => {
                let change = Change {
                    position: Some(position),
                    ..Change::default()
                };
                if self.persist(change).await.is_err() {
                    return;
                }
                self.position = Some(position);
                if self.stale {
                    self.stale = false;
                    self.notify_connection();
                }
            }
            SourceEvent::Welcome {
                epoch: _,
                me,
                max_pins,
                max_text_bytes,
            } => {
                self.max_text = max_text_bytes;
                let mut account = self.account.clone();
                for f in &me {
                    account.apply(f);
                }
                if account != self.account || max_pins != self.max_pins {
                    let change = Change {
                        account: Some(account.clone()),
                        max_pins: Some(max_pins),
                        ..Change::default()
                    };
                    if self.persist(change).await.is_ok() {
                        self.account = account;
                        self.max_pins = max_pins;
                        self.widget_changed();
                    }
                }
            }
            SourceEvent::Snapshot { epoch, snapshot } => self.apply_snapshot(epoch, snapshot).await,
            SourceEvent::Delta {
                cursor,
                contact,
                fields,
            } => {
                let epoch = self.position.map_or(0, |p| p.epoch);
                let Some(i) = self.pins.iter().position(|p| p.contact == contact) else {
                    return;
                };
                let mut pin = self.pins[i].clone();
                for f in &fields {
                    pin.apply(f);
                }
                let position = Position { epoch, cursor };
                let change = Change {
                    position: Some(position),
                    update_pins: vec![pin.clone()],
                    ..Change::default()
                };
                if self.persist(change).await.is_err() {
                    return;
                }
                self.position = Some(position);
                let unread_changed = pin.unread != self.pins[i].unread;
                self.pins[i] = pin;
                self.notify(Event::ContactChanged {
                    widget: self.id.clone(),
                    contact,
                    fields,
                });
                if unread_changed {
                    self.notify_unread(contact);
                }
            }
            SourceEvent::Message { cursor, message } => {
                let epoch = self.position.map_or(0, |p| p.epoch);
                let received = Received {
                    id: message.id,
                    from: message.from,
                    ts: message.ts,
                    text: message.text,
                };
                let new = !self.received.contains_key(&received.id);
                let position = Position { epoch, cursor };
                let change = Change {
                    position: Some(position),
                    received: vec![received.clone()],
                    ..Change::default()
                };
                if self.persist(change).await.is_err() {
                    return;
                }
                self.position = Some(position);
                if new {
                    let message = Message::received(&received, self.account.id);
                    let from = received.from;
                    self.received.insert(received.id, received);
                    self.trim_cache(from);
                    self.notify(Event::MessageReceived {
                        widget: self.id.clone(),
                        message,
                        backlog: false,
                    });
                }
            }
            SourceEvent::Sent { client_id, id, ts } => {
                self.outbox_done(&client_id, Some((id, ts)), None).await;
            }
            SourceEvent::Rejected { client_id, error } => {
                let why = format!("{}: {}", error.code, error.message);
                self.outbox_done(&client_id, None, Some(why)).await;
            }
            SourceEvent::Refreshed => {
                let state = self.state();
                for reply in self.refreshes.drain(..) {
                    let _ = reply.send(Ok(state.clone()));
                }
            }
            SourceEvent::AuthRequired(message) => {
                tracing::info!(widget = %self.id, "the server refused the key; re-authentication needed");
                self.auth_required(if message.is_empty() {
                    "the server refused the stored key".into()
                } else {
                    message
                });
                for reply in self.refreshes.drain(..) {
                    let _ = reply.send(Err(WidgetError::AuthRequired(
                        "log in again with widget.reauth".into(),
                    )));
                }
            }
        }
    }

    async fn apply_snapshot(&mut self, epoch: Epoch, snapshot: Snapshot) {
        let mut pins = self.pins.clone();
        for update in &snapshot.contacts {
            if let Some(pin) = pins.iter_mut().find(|p| p.contact == update.id) {
                if snapshot.full {
                    *pin = Pin::new(update.id);
                }
                for f in &update.fields {
                    pin.apply(f);
                }
            }
        }
        let pinned: HashSet<AccountId> = pins.iter().map(|p| p.contact).collect();
        let new_messages: Vec<Received> = snapshot
            .messages
            .iter()
            .filter(|m| pinned.contains(&m.from))
            .map(|m| Received {
                id: m.id,
                from: m.from,
                ts: m.ts,
                text: m.text.clone(),
            })
            .collect();
        let position = Position {
            epoch,
            cursor: snapshot.cursor,
        };
        let change = Change {
            position: Some(position),
            replace_pins: Some(pins.clone()),
            received: new_messages.clone(),
            ..Change::default()
        };
        if self.persist(change).await.is_err() {
            return;
        }
        self.position = Some(position);
        let before = std::mem::replace(&mut self.pins, pins);
        let was_stale = self.stale;
        self.stale = false;
        // A resume brings only what changed since the widget's position, even after the link was lost:
        // clients hear those fields, as they would have live. Only a full snapshot replaces everything.
        if snapshot.full {
            self.widget_changed();
        } else {
            for update in &snapshot.contacts {
                self.notify(Event::ContactChanged {
                    widget: self.id.clone(),
                    contact: update.id,
                    fields: update.fields.clone(),
                });
            }
        }
        for pin in &self.pins {
            if before
                .iter()
                .find(|b| b.contact == pin.contact)
                .is_none_or(|b| b.unread != pin.unread)
            {
                self.notify_unread(pin.contact);
            }
        }
        for r in new_messages {
            if !self.received.contains_key(&r.id) {
                let message = Message::received(&r, self.account.id);
                let from = r.from;
                self.received.insert(r.id, r);
                self.trim_cache(from);
                self.notify(Event::MessageReceived {
                    widget: self.id.clone(),
                    message,
                    backlog: self.newly_pinned.contains(&from),
                });
            }
        }
        // A pin's first state has come: what follows about it is news.
        for update in &snapshot.contacts {
            self.newly_pinned.remove(&update.id);
        }
        if was_stale {
            self.notify_connection();
        }
    }

    async fn outbox_done(&mut self, client_id: &str, sent: Option<(MessageId, i64)>, error: Option<String>) {
        let Some(i) = self.outbox.iter().position(|o| o.client_id == client_id) else {
            return;
        };
        // The server has it: that is the truth whether or not the outbox row can be deleted now. A
        // row left behind is sent again after a restart, and the server ignores the repeat.
        if self.trouble.is_some() {
            self.unsaved_sent.push(client_id.to_owned());
        } else {
            let _ = self
                .persist(Change {
                    sent: vec![client_id.to_owned()],
                    ..Change::default()
                })
                .await;
        }
        let q = self.outbox.remove(i);
        let (id, ts, state) = match sent {
            Some((id, ts)) => (id, ts, Delivery::Sent),
            None => (MessageId(0), q.ts, Delivery::Failed),
        };
        let message = Message {
            id,
            from: self.account.id,
            to: q.to,
            ts,
            text: q.text,
            state,
            client_id: Some(q.client_id),
        };
        self.notify(Event::MessageDelivery {
            widget: self.id.clone(),
            message,
            error,
        });
    }
}
