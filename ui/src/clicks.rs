//! Clicks on the app's notifications (Linux): one thread and one session-bus connection listen for
//! `ActionInvoked` and `NotificationClosed` from the notification server, for every notification the
//! app has shown, and turn a click into "open this chat".
//!
//! notify-rust's own way waits per notification, on a thread and a bus connection each, until that
//! notification is clicked or closed; some servers never report an expired one, and a burst of signals
//! can slip past its waiters. An app left running for months must not pile those up: here the cost is
//! one map entry per shown notification (at most [`REMEMBERED`], oldest forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// At most this many shown notifications are remembered for their clicks.
const REMEMBERED: usize = 256;

/// The notifications shown and not yet closed: id → (widget, contact), and their order.
#[derive(Default)]
struct Shown {
    targets: HashMap<u32, (String, u64)>,
    order: VecDeque<u32>,
}

/// The handle: remembers shown notifications for the listener.
#[derive(Clone)]
pub struct Clicks {
    shown: Arc<Mutex<Shown>>,
}

impl Clicks {
    /// Starts the listener; `open(widget, contact)` is called (on its thread) for each click.
    pub fn start(open: impl Fn(String, u64) + Send + 'static) -> Clicks {
        let shown = Arc::new(Mutex::new(Shown::default()));
        let heard = shown.clone();
        let started = std::thread::Builder::new()
            .name("pinchat-clicks".into())
            .spawn(move || {
                if let Err(e) = zbus_notify::block_on(listen(&heard, &open)) {
                    tracing::warn!(error = %e, "cannot listen for clicks on notifications");
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot listen for clicks on notifications");
        }
        Clicks { shown }
    }

    /// Remembers that notification `id` is about a message in `widget` from `contact`.
    pub fn shown(&self, id: u32, widget: String, contact: u64) {
        let mut s = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if s.targets.insert(id, (widget, contact)).is_none() {
            s.order.push_back(id);
        }
        while s.order.len() > REMEMBERED {
            if let Some(old) = s.order.pop_front() {
                s.targets.remove(&old);
            }
        }
    }
}

async fn listen(shown: &Mutex<Shown>, open: &impl Fn(String, u64)) -> zbus_notify::Result<()> {
    use futures_util::StreamExt;
    let connection = zbus_notify::Connection::session().await?;
    let rule = zbus_notify::MatchRule::builder()
        .msg_type(zbus_notify::message::Type::Signal)
        .interface("org.freedesktop.Notifications")
        .build()?;
    // One stream for the connection's life: no signal is missed between two waits.
    let mut signals = zbus_notify::MessageStream::for_match_rule(rule, &connection, None).await?;
    while let Some(message) = signals.next().await {
        let Ok(message) = message else { continue };
        let header = message.header();
        let member = header.member().map(|m| m.as_str().to_owned());
        let body = message.body();
        let (id, clicked) = match member.as_deref() {
            Some("ActionInvoked") => match body.deserialize::<(u32, String)>() {
                Ok((id, action)) => (id, action == "default"),
                Err(_) => continue,
            },
            Some("NotificationClosed") => match body.deserialize::<(u32, u32)>() {
                Ok((id, _reason)) => (id, false),
                Err(_) => continue,
            },
            _ => continue,
        };
        let target = {
            let mut s = shown.lock().unwrap_or_else(|e| e.into_inner());
            let target = s.targets.remove(&id);
            if target.is_some() {
                s.order.retain(|&o| o != id);
            }
            target
        };
        if let (true, Some((widget, contact))) = (clicked, target) {
            open(widget, contact);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_so_many_notifications_are_remembered_oldest_forgotten_first() {
        let clicks = Clicks {
            shown: Arc::new(Mutex::new(Shown::default())),
        };
        for id in 0..(REMEMBERED as u32 + 10) {
            clicks.shown(id, "w".into(), u64::from(id));
        }
        let s = clicks.shown.lock().unwrap();
        assert_eq!(s.targets.len(), REMEMBERED);
        assert_eq!(s.order.len(), REMEMBERED);
        assert!(!s.targets.contains_key(&9));
        assert_eq!(s.targets.get(&10), Some(&("w".to_owned(), 10)));
    }
}
