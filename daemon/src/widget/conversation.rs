//! A widget's conversations: the unread messages behind a count, and history pages.

use super::Widget;
use crate::db::Change;
use crate::error::WidgetError;
use crate::events::{Delivery, History, Message};
use crate::model::Received;
use crate::remote::RemoteError;
use pinchat_proto::{AccountId, MessageId};
use std::collections::BTreeMap;

impl Widget {
    /// The messages behind a contact's unread count: exactly the unread ones, as many as the count
    /// says — from the cache when it holds every message after the server's read marker, otherwise from
    /// the server's history, page by page — then those before `before`, the newest `limit` of them,
    /// oldest first. Offline, the list is what the cache holds.
    pub(super) async fn unread(
        &mut self,
        contact: AccountId,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<Vec<Message>, WidgetError> {
        /// History pages fetched at most for one call (200 messages each).
        const MAX_PAGES: usize = 100;
        let unread = self.pinned(contact)?.unread as usize;
        if limit == Some(0) {
            return Err(WidgetError::Invalid("limit must be at least 1".into()));
        }
        // The cache's messages from the contact after `after`, the newest `unread` of them.
        let cached = |this: &Self, after: MessageId| -> BTreeMap<MessageId, Received> {
            this.received
                .range(MessageId(after.0.saturating_add(1))..)
                .rev()
                .filter(|(_, m)| m.from == contact)
                .take(unread)
                .map(|(id, m)| (*id, m.clone()))
                .collect()
        };
        // Offline, the cache is the best there is.
        let mut found = cached(self, MessageId(0));
        if unread > 0
            && let Ok(key) = self.key()
        {
            // Only the server knows which messages are unread (its read marker), and the cache may have
            // gaps (a long absence resumes with a full snapshot and a few hints): the first page says
            // where the marker is; if the cache holds every message after it, that is the list;
            // otherwise the pages go on until the count is reached.
            let mut fetched: BTreeMap<MessageId, Received> = BTreeMap::new();
            let mut page_before = None;
            let mut complete_in_cache = false;
            for page_number in 0..MAX_PAGES {
                let page = match self.remote.history(&key, contact, page_before, 200).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::info!(error = %e, "cannot fetch unread messages; showing the cached ones");
                        break;
                    }
                };
                if page_number == 0 {
                    let in_cache = cached(self, page.read_up_to);
                    if in_cache.len() == unread {
                        found = in_cache;
                        complete_in_cache = true;
                        break;
                    }
                }
                for m in page.messages.iter().filter(|m| m.from == contact) {
                    let r = Received {
                        id: m.id,
                        from: m.from,
                        ts: m.ts,
                        text: m.text.clone(),
                    };
                    fetched.insert(m.id, r);
                }
                let oldest = page.messages.last().map(|m| m.id);
                let reached_read = oldest.is_none_or(|o| o <= page.read_up_to);
                if fetched.len() >= unread || !page.more || reached_read {
                    break;
                }
                page_before = oldest;
            }
            if !complete_in_cache && !fetched.is_empty() {
                let keep: Vec<Received> = fetched
                    .values()
                    .rev()
                    .take(crate::db::KEEP_PER_CONTACT as usize)
                    .cloned()
                    .collect();
                let change = Change {
                    received: keep.clone(),
                    ..Change::default()
                };
                if self.persist(change).await.is_ok() {
                    for r in keep {
                        self.received.insert(r.id, r);
                    }
                    self.trim_cache(contact);
                }
                found = fetched;
                while found.len() > unread {
                    found.pop_first();
                }
            }
        }
        let before = before.unwrap_or(MessageId(u64::MAX));
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        let me = self.account.id;
        let mut list: Vec<Message> = found
            .range(..before)
            .rev()
            .take(limit)
            .map(|(_, r)| Message::received(r, me))
            .collect();
        list.reverse();
        Ok(list)
    }

    /// A page of the conversation, newest first, from the server; messages still in the outbox come
    /// first. When the server cannot be reached, what the cache holds.
    pub(super) async fn history(
        &mut self,
        contact: AccountId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<History, WidgetError> {
        let peer_read = self.pinned(contact)?.peer_read;
        let limit = limit.clamp(1, 200);
        let me = self.account.id;
        let mut messages: Vec<Message> = if before.is_none() {
            self.outbox
                .iter()
                .rev()
                .filter(|q| q.to == contact)
                .map(|q| Message {
                    id: MessageId(0),
                    from: me,
                    to: q.to,
                    ts: q.ts,
                    text: q.text.clone(),
                    state: Delivery::Queued,
                    client_id: Some(q.client_id.clone()),
                })
                .collect()
        } else {
            vec![]
        };
        let key = match self.key() {
            Ok(key) => key,
            Err(_) => return Ok(self.local_history(contact, before, limit, messages)),
        };
        match self.remote.history(&key, contact, before, limit).await {
            Ok(page) => {
                // A message the server has stored may still be queued here, its acknowledgement not yet
                // through the stream: the server's copy (which names the same client id) stands for it,
                // so that a chat opened at that moment does not show it twice.
                messages.retain(|q| {
                    !page
                        .messages
                        .iter()
                        .any(|m| m.client_id.is_some() && m.client_id == q.client_id)
                });
                messages.extend(page.messages.into_iter().map(|m| Message {
                    state: if m.from != me {
                        Delivery::Received
                    } else if m.id <= peer_read {
                        Delivery::Read
                    } else {
                        Delivery::Sent
                    },
                    id: m.id,
                    from: m.from,
                    to: m.to,
                    ts: m.ts,
                    text: m.text,
                    client_id: m.client_id,
                }));
                Ok(History {
                    messages,
                    more: page.more,
                })
            }
            Err(RemoteError::Unreachable(_)) => Ok(self.local_history(contact, before, limit, messages)),
            Err(e) => Err(self.remote_error(e)),
        }
    }

    /// History from the local cache (received messages only), for when the server cannot be reached.
    fn local_history(
        &self,
        contact: AccountId,
        before: Option<MessageId>,
        limit: u32,
        mut messages: Vec<Message>,
    ) -> History {
        let before = before.unwrap_or(MessageId(u64::MAX));
        let cached: Vec<&Received> = self
            .received
            .range(..before)
            .rev()
            .map(|(_, m)| m)
            .filter(|m| m.from == contact)
            .collect();
        let more = cached.len() > limit as usize;
        let me = self.account.id;
        messages.extend(
            cached
                .into_iter()
                .take(limit as usize)
                .map(|r| Message::received(r, me)),
        );
        History { messages, more }
    }
}
