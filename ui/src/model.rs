//! The tray's own copy of the widgets, kept current from the daemon's notifications.
//!
//! The tray shows each account, its unread total, its link and its mode, and names the sender of a
//! new message. All of that is in the notifications the daemon already sends (`widget.changed` carries
//! the whole widget; `unread.changed` a contact's count and the widget's total; `connection.changed` the
//! link; `widget.contact_changed` the changed fields), so the tray loads the widgets once and then
//! applies each notification here, instead of asking for the list and a snapshot of every widget on
//! each change. A notification the daemon had to drop (a slow client loses notifications rather than
//! slowing the daemon down) shows up as a total that does not match the counts held here: that widget
//! is then fetched again ([`Applied::resync`]).

use pinchat_ipc::api::{Mode, Notification, WidgetSummary, WidgetView};
use std::collections::BTreeMap;

/// What the tray shows of a widget besides its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayDetails {
    /// How the widget keeps current.
    pub mode: Mode,
    /// The pinned contacts in the widget's order: those that can get through "do not disturb", and
    /// be pinned to the tray with an icon of their own.
    pub pins: Vec<PinSummary>,
}

/// A pinned contact as the tray shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSummary {
    /// The contact's id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Presence.
    pub state: pinchat_proto::Presence,
    /// Unread messages from them.
    pub unread: u32,
    /// Their picture's hash, if they have one.
    pub avatar: Option<String>,
}

/// The widgets as the tray knows them, in the daemon's order (by id).
#[derive(Debug, Default)]
pub struct TrayModel {
    widgets: BTreeMap<String, WidgetView>,
}

/// What applying a notification did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Something the tray shows changed: accounts, unread totals, links or modes.
    pub tray_changed: bool,
    /// A widget whose copy here may be wrong: fetch its snapshot and [`TrayModel::set`] it.
    pub resync: Option<String>,
}

impl TrayModel {
    /// The widgets, replacing whatever was held.
    pub fn replace(&mut self, views: Vec<WidgetView>) -> bool {
        let before = self.summaries();
        self.widgets = views.into_iter().map(|v| (v.id.clone(), v)).collect();
        before != self.summaries()
    }

    /// One widget, fetched again; `true` when the tray shows something different.
    pub fn set(&mut self, view: WidgetView) -> bool {
        let before = self.summaries();
        self.widgets.insert(view.id.clone(), view);
        before != self.summaries()
    }

    /// Forgets a widget the daemon no longer has; `true` when it was held.
    pub fn remove(&mut self, widget: &str) -> bool {
        self.widgets.remove(widget).is_some()
    }

    /// Applies one notification.
    pub fn apply(&mut self, n: &Notification) -> Applied {
        let before = self.summaries();
        let resync = match n {
            Notification::WidgetChanged { widget } => {
                self.widgets.insert(widget.id.clone(), (**widget).clone());
                None
            }
            Notification::WidgetRemoved { widget } => {
                self.widgets.remove(widget);
                None
            }
            Notification::ContactChanged {
                widget,
                contact,
                fields,
            } => match self
                .widgets
                .get_mut(widget)
                .and_then(|w| w.pins.iter_mut().find(|c| c.id == *contact))
            {
                Some(c) => {
                    fields.iter().for_each(|f| c.apply(f));
                    None
                }
                None => Some(widget.clone()),
            },
            Notification::UnreadChanged {
                widget,
                contact,
                unread,
                total,
            } => match self.widgets.get_mut(widget) {
                Some(w) => match w.pins.iter_mut().find(|c| c.id == *contact) {
                    Some(c) => {
                        c.unread = *unread;
                        // The total is the daemon's own sum: when it differs from ours, a
                        // notification was lost somewhere.
                        (total_unread(w) != *total).then(|| widget.clone())
                    }
                    None => Some(widget.clone()),
                },
                None => Some(widget.clone()),
            },
            Notification::ConnectionChanged {
                widget,
                connection,
                via,
                stale,
            } => match self.widgets.get_mut(widget) {
                Some(w) => {
                    w.connection = *connection;
                    w.via = *via;
                    w.stale = *stale;
                    None
                }
                None => Some(widget.clone()),
            },
            // Messages change the counts through `unread.changed`; a login request changes nothing
            // the tray holds (the link's state comes with `connection.changed`); calls are the
            // panels' business.
            Notification::MessageReceived { .. }
            | Notification::MessageDelivery { .. }
            | Notification::AuthRequired { .. }
            | Notification::CallIncoming { .. }
            | Notification::CallChanged { .. }
            | Notification::CallSignal { .. }
            | Notification::CallEnded { .. } => None,
        };
        Applied {
            tray_changed: before != self.summaries(),
            resync,
        }
    }

    /// The pinned contact's display name, for an OS notification.
    pub fn sender(&self, widget: &str, contact: u64) -> Option<&str> {
        let w = self.widgets.get(widget)?;
        w.pins.iter().find(|c| c.id == contact).map(|c| c.name.as_str())
    }

    /// The pinned contact's avatar hash.
    pub fn avatar(&self, widget: &str, contact: u64) -> Option<&str> {
        let w = self.widgets.get(widget)?;
        w.pins.iter().find(|c| c.id == contact)?.avatar.as_deref()
    }

    /// Every pinned contact's avatar hash, with its widget (whose server has the image).
    pub fn avatars(&self) -> Vec<(String, String)> {
        self.widgets
            .values()
            .flat_map(|w| {
                w.pins
                    .iter()
                    .filter_map(|c| Some((w.id.clone(), c.avatar.clone()?)))
            })
            .collect()
    }

    /// What the tray shows: each widget's summary and mode, in the daemon's order.
    pub fn summaries(&self) -> Vec<(WidgetSummary, TrayDetails)> {
        self.widgets
            .values()
            .map(|w| {
                let summary = WidgetSummary {
                    id: w.id.clone(),
                    server: w.server.clone(),
                    login: w.account.login.clone(),
                    name: w.account.name.clone(),
                    connection: w.connection,
                    via: w.via,
                    unread: total_unread(w),
                    pins: w.pins.len(),
                };
                let pins = w
                    .pins
                    .iter()
                    .map(|c| PinSummary {
                        id: c.id,
                        name: c.name.clone(),
                        state: c.state,
                        unread: c.unread,
                        avatar: c.avatar.clone(),
                    })
                    .collect();
                (summary, TrayDetails { mode: w.mode, pins })
            })
            .collect()
    }
}

fn total_unread(w: &WidgetView) -> u32 {
    w.pins.iter().map(|c| c.unread).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinchat_ipc::api::{AccountView, Connection, ContactView, Via};
    use pinchat_proto::{Field, Presence};

    fn contact(id: u64, name: &str, unread: u32) -> ContactView {
        ContactView {
            id,
            name: name.into(),
            avatar: None,
            signature: String::new(),
            description: String::new(),
            state: Presence::Online,
            status: String::new(),
            unread,
            peer_read: 0,
        }
    }

    fn widget(id: &str, pins: Vec<ContactView>) -> WidgetView {
        WidgetView {
            id: id.into(),
            server: "http://127.0.0.1:1".into(),
            account: AccountView {
                login: "demo".into(),
                name: "Demo".into(),
                ..AccountView::default()
            },
            pins,
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

    fn model() -> TrayModel {
        let mut m = TrayModel::default();
        assert!(m.replace(vec![widget(
            "w1",
            vec![contact(2, "Alice", 1), contact(3, "Bob", 0)]
        )]));
        m
    }

    #[test]
    fn unread_changes_update_the_total_and_a_mismatch_asks_for_a_resync() {
        let mut m = model();
        let a = m.apply(&Notification::UnreadChanged {
            widget: "w1".into(),
            contact: 3,
            unread: 2,
            total: 3,
        });
        assert_eq!(
            a,
            Applied {
                tray_changed: true,
                resync: None
            }
        );
        assert_eq!(m.summaries()[0].0.unread, 3);
        // A lost notification: the daemon's total counts a message we never heard of.
        let a = m.apply(&Notification::UnreadChanged {
            widget: "w1".into(),
            contact: 2,
            unread: 1,
            total: 5,
        });
        assert_eq!(a.resync.as_deref(), Some("w1"));
        assert!(!a.tray_changed);
    }

    #[test]
    fn presence_and_names_reach_the_tray_and_names_are_kept_for_notifications() {
        let mut m = model();
        // A contact pinned to the tray shows their presence on their own icon.
        let a = m.apply(&Notification::ContactChanged {
            widget: "w1".into(),
            contact: 2,
            fields: vec![Field::State(Presence::Busy)],
        });
        assert!(a.tray_changed && a.resync.is_none());
        assert_eq!(m.summaries()[0].1.pins[0].state, Presence::Busy);
        // A signature is not shown in the tray.
        let a = m.apply(&Notification::ContactChanged {
            widget: "w1".into(),
            contact: 2,
            fields: vec![Field::Signature("away".into())],
        });
        assert_eq!(a, Applied::default());
        // The tray menu lists pinned contacts by name (who gets through "do not disturb").
        let a = m.apply(&Notification::ContactChanged {
            widget: "w1".into(),
            contact: 2,
            fields: vec![Field::Name("Alice L.".into())],
        });
        assert!(a.tray_changed);
        let pin = &m.summaries()[0].1.pins[0];
        assert_eq!((pin.id, pin.name.as_str()), (2, "Alice L."));
        assert_eq!(m.sender("w1", 2), Some("Alice L."));
        assert_eq!(m.sender("w1", 9), None);
    }

    #[test]
    fn widgets_come_and_go_and_links_change_in_place() {
        let mut m = model();
        let a = m.apply(&Notification::WidgetChanged {
            widget: Box::new(widget("w0", vec![])),
        });
        assert!(a.tray_changed);
        let ids: Vec<String> = m.summaries().into_iter().map(|(s, _)| s.id).collect();
        assert_eq!(ids, ["w0", "w1"], "the daemon's order");
        let a = m.apply(&Notification::ConnectionChanged {
            widget: "w1".into(),
            connection: Connection::Offline,
            via: Via::Own,
            stale: true,
        });
        assert!(a.tray_changed);
        assert_eq!(m.summaries()[1].0.connection, Connection::Offline);
        assert!(
            m.apply(&Notification::WidgetRemoved { widget: "w0".into() })
                .tray_changed
        );
        assert_eq!(m.summaries().len(), 1);
    }

    #[test]
    fn news_of_an_unknown_widget_or_contact_asks_for_that_widget() {
        let mut m = model();
        for n in [
            Notification::ConnectionChanged {
                widget: "w9".into(),
                connection: Connection::Online,
                via: Via::Own,
                stale: false,
            },
            Notification::UnreadChanged {
                widget: "w1".into(),
                contact: 9,
                unread: 1,
                total: 2,
            },
        ] {
            assert!(m.apply(&n).resync.is_some(), "{n:?}");
        }
    }
}
