//! People's names and local times for what `pinchatctl` prints: a message shows who wrote it and
//! when, not account ids and milliseconds.

use chrono::{DateTime, Local, TimeZone};
use pinchat_ipc::api::{MessageView, WidgetView};
use std::collections::HashMap;

/// The names a widget knows: its own account's and its pinned contacts'.
#[derive(Debug, Default, Clone)]
pub struct Names {
    names: HashMap<u64, String>,
    me: u64,
}

impl Names {
    /// The names in a widget's view.
    pub fn of(view: &WidgetView) -> Names {
        let mut names: HashMap<u64, String> = view.pins.iter().map(|p| (p.id, p.name.clone())).collect();
        names.insert(view.account.id, view.account.name.clone());
        Names {
            names,
            me: view.account.id,
        }
    }

    /// The name of account `id`, or `#id` for one the widget does not show.
    pub fn name(&self, id: u64) -> String {
        self.names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }

    /// A message on one line: time, who to whom, its state when it is ours, the text.
    pub fn message(&self, m: &MessageView, now: DateTime<Local>) -> String {
        let state = if m.from == self.me {
            format!(" ({})", format!("{:?}", m.state).to_lowercase())
        } else {
            String::new()
        };
        format!(
            "{} {} → {}{state}: {}",
            when(m.ts, now),
            self.name(m.from),
            self.name(m.to),
            m.text
        )
    }
}

/// A message time in the local time zone: the time of day today, the date otherwise.
pub fn when(ts_ms: i64, now: DateTime<Local>) -> String {
    match Local.timestamp_millis_opt(ts_ms).single() {
        Some(t) if t.date_naive() == now.date_naive() => t.format("%H:%M").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M").to_string(),
        None => "--:--".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinchat_ipc::api::{AccountView, Connection, ContactView, Delivery, Mode, Via};

    fn view() -> WidgetView {
        WidgetView {
            id: "w1".into(),
            server: "http://127.0.0.1:1".into(),
            account: AccountView {
                id: 1,
                name: "Demo User".into(),
                ..AccountView::default()
            },
            pins: vec![ContactView {
                id: 2,
                name: "Alice Chen".into(),
                avatar: None,
                signature: String::new(),
                description: String::new(),
                state: pinchat_proto::Presence::Online,
                status: String::new(),
                unread: 0,
                peer_read: 0,
            }],
            mode: Mode::Push,
            poll_interval_secs: 30,
            connection: Connection::Online,
            via: Via::Own,
            stale: false,
            max_pins: 10,
            storage: None,
            ringing: vec![],
        }
    }

    #[test]
    fn messages_show_names_times_and_our_delivery_state() {
        let names = Names::of(&view());
        let now = Local::now();
        let ts = now.timestamp_millis();
        let m = MessageView {
            id: 7,
            from: 2,
            to: 1,
            ts,
            text: "hi".into(),
            state: Delivery::Received,
            client_id: None,
        };
        let line = names.message(&m, now);
        assert!(line.ends_with("Alice Chen → Demo User: hi"), "{line}");
        assert_eq!(line.len(), "00:00 Alice Chen → Demo User: hi".len(), "{line}");
        let ours = MessageView {
            from: 1,
            to: 2,
            state: Delivery::Read,
            ..m
        };
        assert!(
            names
                .message(&ours, now)
                .contains("Demo User → Alice Chen (read): hi")
        );
        assert_eq!(names.name(99), "#99");
        // Another day shows the date.
        assert!(when(ts - 3 * 86_400_000, now).contains('-'));
    }
}
