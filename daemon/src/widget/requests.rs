//! What clients ask of a widget: the account's contacts and avatars, pins, mode, sending, marking read,
//! logging in again.

use super::{Cmd, Widget};
use crate::db::Change;
use crate::error::WidgetError;
use crate::events::{Delivery, Event, Message, WidgetState};
use crate::model::{Link, Pin, Queued, UpdateMode};
use crate::remote::RemoteError;
use crate::source::{Outgoing, SourceCmd};
use pinchat_ipc::api::{AvatarParams, HistoryParams, MarkReadParams, Mode, SetModeParams, SetPinsParams};
use pinchat_proto::{AccountId, ErrorCode as WireCode, MessageId};
use std::collections::HashSet;

impl Widget {
    pub(super) async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::View(reply) => {
                let _ = reply.send(self.state());
            }
            Cmd::Contacts(reply) => {
                let result = self.contacts().await;
                let _ = reply.send(result);
            }
            Cmd::Avatar(p, reply) => self.avatar(p, reply),
            Cmd::Ice(reply) => self.ice(reply),
            Cmd::CallHistory(p, reply) => self.call_history(p, reply),
            Cmd::Call(op, reply) => self.call(op, reply),
            Cmd::SetPins(p, reply) => {
                let result = self.set_pins(p).await;
                let _ = reply.send(result);
            }
            Cmd::Refresh(reply) => {
                if self.key.is_none() || self.link == Link::AuthRequired {
                    let _ = reply.send(Err(WidgetError::AuthRequired(
                        "log in again with widget.reauth first".into(),
                    )));
                } else if !self.configured {
                    // Not connected yet (the database cannot be written): the state is what it is.
                    let _ = reply.send(Ok(self.state()));
                } else {
                    self.refreshes.push(reply);
                    let _ = self.source.send(SourceCmd::Refresh);
                }
            }
            Cmd::SetMode(p, reply) => {
                let result = self.set_mode(p).await;
                let _ = reply.send(result);
            }
            Cmd::Unread(p, reply) => {
                let result = self
                    .unread(AccountId(p.contact), p.before.map(MessageId), p.limit)
                    .await;
                let _ = reply.send(result);
            }
            Cmd::History(p, reply) => {
                let limit = p.limit.unwrap_or(50);
                let result = self
                    .history(AccountId(p.contact), p.before.map(MessageId), limit)
                    .await;
                let _ = reply.send(result);
            }
            Cmd::Send(p, reply) => {
                let result = self.send(AccountId(p.contact), p.text).await;
                let _ = reply.send(result);
            }
            Cmd::MarkRead(p, reply) => {
                let result = self.mark_read(p).await;
                let _ = reply.send(result);
            }
            Cmd::Reauth(p, reply) => {
                let result = self.reauth(p.password).await;
                let _ = reply.send(result);
            }
            Cmd::Close(_) => {}
        }
    }

    /// Maps a server failure to an error; a refused key also puts the widget in `auth_required`.
    pub(super) fn remote_error(&mut self, e: RemoteError) -> WidgetError {
        match e {
            RemoteError::Unreachable(why) => {
                WidgetError::Unreachable(format!("cannot reach {}: {why}", self.remote.base()))
            }
            RemoteError::Server(e) if e.code.needs_login() => {
                self.auth_required(e.message.clone());
                WidgetError::AuthRequired(format!("{}; call widget.reauth with the password", e.message))
            }
            RemoteError::Server(e) => match e.code {
                WireCode::BadCredentials => WidgetError::BadCredentials(e.message),
                WireCode::PinNotContact | WireCode::MessageNotContact => WidgetError::NotContact(e.message),
                WireCode::TooManyPins => WidgetError::TooManyPins(e.message),
                _ => WidgetError::Server(format!("the server said {}: {}", e.code, e.message)),
            },
            RemoteError::Decode(why) => WidgetError::Server(why),
        }
    }

    async fn contacts(&mut self) -> Result<Vec<pinchat_proto::http::Identity>, WidgetError> {
        let key = self.key()?;
        match self.remote.contacts(&key).await {
            Ok(list) => Ok(list.contacts),
            Err(e) => Err(self.remote_error(e)),
        }
    }

    /// Fetches the call servers on a task of its own (a call is being set up; the widget keeps
    /// answering meanwhile).
    fn ice(&self, reply: super::Reply<pinchat_proto::http::IceConfig>) {
        let Some((key, reply)) = self.key_for(reply) else {
            return;
        };
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let _ = reply.send(remote.ice(&key).await.map_err(fetch_error));
        });
    }

    /// Fetches a page of the call history with a pinned contact on a task of its own: the server keeps
    /// it (the calls of every device of the account are there), the daemon only passes it on.
    fn call_history(&self, p: HistoryParams, reply: super::Reply<pinchat_proto::http::CallHistoryPage>) {
        let contact = AccountId(p.contact);
        if let Err(e) = self.pinned(contact) {
            let _ = reply.send(Err(e));
            return;
        }
        let limit = p.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            let _ = reply.send(Err(WidgetError::Invalid(format!(
                "limit must be 1 to 200 (got {limit})"
            ))));
            return;
        }
        let Some((key, reply)) = self.key_for(reply) else {
            return;
        };
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let page = remote.call_history(&key, contact, p.before, limit).await;
            let _ = reply.send(page.map_err(fetch_error));
        });
    }

    /// The auth key for a request answered on a task of its own, with its reply; `None` when there is
    /// no key (the reply has been sent the error).
    fn key_for<T>(&self, reply: super::Reply<T>) -> Option<(String, super::Reply<T>)> {
        match self.key() {
            Ok(key) => Some((key, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        }
    }

    /// Fetches an avatar on a task of its own: a panel asks for dozens at once, and the widget keeps
    /// answering meanwhile.
    fn avatar(&self, p: AvatarParams, reply: super::Reply<(String, Vec<u8>)>) {
        let hash = p.hash;
        if hash.is_empty() || hash.len() > 128 || !hash.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let _ = reply.send(Err(WidgetError::Invalid(
                "an avatar hash is 1 to 128 letters and digits".into(),
            )));
            return;
        }
        let Some((key, reply)) = self.key_for(reply) else {
            return;
        };
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let result = match remote.avatar(&key, &hash).await {
                Ok((mime, bytes)) if mime.starts_with("image/") => Ok((mime, bytes)),
                Ok((mime, _)) => Err(WidgetError::Server(format!(
                    "the avatar is not an image ({mime})"
                ))),
                Err(e) => Err(fetch_error(e)),
            };
            let _ = reply.send(result);
        });
    }

    async fn set_pins(&mut self, p: SetPinsParams) -> Result<WidgetState, WidgetError> {
        let pins: Vec<AccountId> = p.pins.into_iter().map(AccountId).collect();
        let mut seen = HashSet::new();
        if let Some(dup) = pins.iter().find(|p| !seen.insert(**p)) {
            return Err(WidgetError::Invalid(format!("contact {dup} is listed twice")));
        }
        if pins.len() > usize::from(self.max_pins) {
            return Err(WidgetError::TooManyPins(format!(
                "{} contacts picked; the server allows at most {}",
                pins.len(),
                self.max_pins
            )));
        }
        let key = self.key()?;
        let contacts = match self.remote.contacts(&key).await {
            Ok(list) => list.contacts,
            Err(e) => return Err(self.remote_error(e)),
        };
        let mut new_pins = Vec::with_capacity(pins.len());
        let mut fresh = vec![];
        for id in &pins {
            match self.pins.iter().find(|p| p.contact == *id) {
                Some(existing) => new_pins.push(existing.clone()),
                None => {
                    let c = contacts.iter().find(|c| c.id == *id).ok_or_else(|| {
                        WidgetError::NotContact(format!("account {id} is not a contact of {}", self.login))
                    })?;
                    new_pins.push(Pin {
                        name: c.name.clone(),
                        avatar: c.avatar.clone(),
                        signature: c.signature.clone(),
                        description: c.description.clone(),
                        ..Pin::new(*id)
                    });
                    fresh.push(*id);
                }
            }
        }
        if let Err(e) = self
            .persist(Change {
                replace_pins: Some(new_pins.clone()),
                ..Change::default()
            })
            .await
        {
            return Err(WidgetError::storage(&e, "the pins could not be saved"));
        }
        self.received.retain(|_, m| pins.contains(&m.from));
        self.newly_pinned.retain(|c| pins.contains(c));
        self.newly_pinned.extend(fresh.iter().copied());
        self.pins = new_pins;
        self.widget_changed();
        self.configure_source(fresh);
        Ok(self.state())
    }

    async fn set_mode(&mut self, p: SetModeParams) -> Result<WidgetState, WidgetError> {
        let interval = p.interval_secs.unwrap_or(self.poll_interval_secs);
        if !(5..=86_400).contains(&interval) {
            return Err(WidgetError::Invalid(
                "interval_secs must be between 5 and 86400".into(),
            ));
        }
        let mode = match p.mode {
            Mode::Push => UpdateMode::Push,
            Mode::Poll => UpdateMode::Poll,
            Mode::Manual => UpdateMode::Manual,
        };
        if let Err(e) = self
            .persist(Change {
                mode: Some((mode, interval)),
                ..Change::default()
            })
            .await
        {
            return Err(WidgetError::storage(&e, "the mode could not be saved"));
        }
        self.mode = mode;
        self.poll_interval_secs = interval;
        self.widget_changed();
        self.configure_source(vec![]);
        Ok(self.state())
    }

    async fn send(&mut self, contact: AccountId, text: String) -> Result<Message, WidgetError> {
        self.pinned(contact)?;
        if text.trim().is_empty() {
            return Err(WidgetError::Invalid("the message is empty".into()));
        }
        if text.len() > self.max_text as usize {
            return Err(WidgetError::Invalid(format!(
                "the message is {} bytes long; the limit is {}",
                text.len(),
                self.max_text
            )));
        }
        let client_id = crate::model::new_client_id().map_err(|e| WidgetError::Internal(e.to_string()))?;
        let queued = Queued {
            client_id,
            to: contact,
            ts: crate::model::now_ms(),
            text,
        };
        if let Err(e) = self.db.queue(queued.clone()).await {
            self.storage_failed(&e);
            return Err(WidgetError::storage(&e, "the message was not queued"));
        }
        self.outbox.push(queued.clone());
        let message = Message {
            id: MessageId(0),
            from: self.account.id,
            to: contact,
            ts: queued.ts,
            text: queued.text.clone(),
            state: Delivery::Queued,
            client_id: Some(queued.client_id.clone()),
        };
        self.notify(Event::MessageDelivery {
            widget: self.id.clone(),
            message: message.clone(),
            error: None,
        });
        let _ = self.source.send(SourceCmd::Send(Outgoing {
            client_id: queued.client_id,
            to: contact,
            text: queued.text,
        }));
        Ok(message)
    }

    async fn mark_read(&mut self, p: MarkReadParams) -> Result<u32, WidgetError> {
        let contact = AccountId(p.contact);
        self.pinned(contact)?;
        let key = self.key()?;
        let up_to = MessageId(p.up_to.unwrap_or(u64::MAX));
        let unread = match self.remote.mark_read(&key, contact, up_to).await {
            Ok(r) => r.unread,
            Err(e) => return Err(self.remote_error(e)),
        };
        if let Some(i) = self.pins.iter().position(|p| p.contact == contact)
            && self.pins[i].unread != unread
        {
            let mut pin = self.pins[i].clone();
            pin.unread = unread;
            if self
                .persist(Change {
                    update_pins: vec![pin.clone()],
                    ..Change::default()
                })
                .await
                .is_ok()
            {
                self.pins[i] = pin;
                self.notify(Event::ContactChanged {
                    widget: self.id.clone(),
                    contact,
                    fields: vec![pinchat_proto::Field::Unread(unread)],
                });
                self.notify_unread(contact);
            }
        }
        Ok(unread)
    }

    async fn reauth(&mut self, password: String) -> Result<WidgetState, WidgetError> {
        let login = match self.remote.login(&self.login, &password).await {
            Ok(l) => l,
            Err(e) => return Err(self.remote_error(e)),
        };
        if login.account != self.account.id && self.account.id != AccountId(0) {
            return Err(WidgetError::Invalid(
                "that password logged in another account".into(),
            ));
        }
        let sealed = self
            .vault
            .seal(&self.id, &login.key)
            .await
            .map_err(|e| WidgetError::Keyring(e.to_string()))?;
        if let Err(e) = self
            .persist(Change {
                sealed: Some(sealed.clone()),
                ..Change::default()
            })
            .await
        {
            // The new key works on the server but cannot be kept: revoke it rather than leave it
            // valid and unstored.
            let _ = self.remote.logout(&login.key).await;
            return Err(WidgetError::storage(&e, "the new key could not be saved"));
        }
        self.sealed = Some(sealed);
        self.key = Some(login.key);
        self.set_link(Link::Connecting);
        self.configure_source(vec![]);
        Ok(self.state())
    }
}

/// A failed fetch on a task of its own (no widget state to update, unlike [`Widget::remote_error`]):
/// unreachable, or what the server said.
fn fetch_error(e: RemoteError) -> WidgetError {
    match e {
        RemoteError::Unreachable(why) => WidgetError::Unreachable(why),
        e => WidgetError::Server(e.to_string()),
    }
}
