//! OS notifications on Linux, shown and heard on **one** session-bus connection: `Notify` is sent from
//! the connection that listens for `ActionInvoked` and `NotificationClosed`, and a click becomes "open
//! this chat".
//!
//! Real notification servers (dunst, GNOME Shell, KDE Plasma) send `ActionInvoked` only to the bus
//! connection that sent `Notify`, not to everyone: a notification shown from one connection and
//! listened for on another is never heard clicked. notify-rust's own way waits per notification, on a
//! thread and a bus connection each, until that notification is clicked or closed; some servers never
//! report an expired one, and an app left running for months must not pile those up. Here one thread
//! owns the connection; the cost is one map entry per shown notification (at most [`REMEMBERED`],
//! oldest forgotten first).
//!
//! Where the server can take a reply in the notification itself (`inline-reply` in its capabilities,
//! as KDE Plasma's does), the notification has a reply field and the typed text is sent to the contact;
//! elsewhere a click opens the chat to reply there.
//!
//! Notifications are grouped per contact: a newer message from the same contact replaces the
//! notification still shown for the older one (`replaces_id`), instead of stacking up.
//!
//! An incoming call rings as a notification too, with Accept and Decline, critical and without a time
//! limit: it is taken away when the call stops ringing (answered here or elsewhere, declined, given
//! up by the caller).

use std::collections::{HashMap, VecDeque};
use tokio::sync::mpsc;

/// At most this many shown notifications are remembered for their clicks.
const REMEMBERED: usize = 256;

/// Notifications waiting to be shown; more are dropped (and logged) rather than queued without end.
const QUEUE: usize = 64;

/// How long a notification stays, in milliseconds (the server may choose otherwise).
const EXPIRE_MS: i32 = 10_000;

/// What the user did with a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clicked {
    /// Clicked it: open the chat.
    Open,
    /// Chose "Mark as read".
    MarkRead,
    /// Typed a reply in it (servers with `inline-reply`, such as KDE Plasma's).
    Reply(String),
    /// Clicked an incoming call's notification: show the call.
    ShowCall(u64),
    /// Chose "Accept" on an incoming call.
    Answer(u64),
    /// Chose "Decline" on an incoming call.
    Decline(u64),
}

/// The action keys of an incoming call's buttons.
const ACCEPT: &str = "accept";
const DECLINE: &str = "decline";

/// The action key of a reply typed in the notification (the specification's `inline-reply`).
const INLINE_REPLY: &str = "inline-reply";

/// The action key of "Mark as read".
const MARK_READ: &str = "mark-read";

/// A notification to show.
#[derive(Debug, Clone)]
pub struct Show {
    /// Its title.
    pub title: String,
    /// The label of its "Mark as read" action, in the app's language.
    pub mark_read: String,
    /// The label of its reply field, where the server has one.
    pub reply: String,
    /// Its text.
    pub body: String,
    /// The widget the message arrived in.
    pub widget: String,
    /// The sender.
    pub contact: u64,
    /// The sender's avatar as a file, shown as the notification's image.
    pub image: Option<std::path::PathBuf>,
}

/// An incoming call to ring as a notification, with Accept and Decline.
#[derive(Debug, Clone)]
pub struct CallShow {
    /// Its title (who calls).
    pub title: String,
    /// Its text (video or voice).
    pub body: String,
    /// The labels of its buttons, in the app's language.
    pub accept: String,
    /// See [`CallShow::accept`].
    pub decline: String,
    /// The widget called.
    pub widget: String,
    /// The call.
    pub call: u64,
    /// The caller.
    pub contact: u64,
    /// The caller's avatar as a file.
    pub image: Option<std::path::PathBuf>,
}

/// What the notification thread is asked to do.
enum Request {
    Message(Show),
    Call(CallShow),
    /// The call stopped ringing: its notification goes.
    CallOver {
        widget: String,
        call: u64,
    },
}

/// The notifications shown and not yet closed: id → (widget, contact), their order, and the newest
/// one per contact (which the next message from that contact replaces); ringing calls apart, by id
/// and by (widget, call).
#[derive(Default)]
struct Shown {
    targets: HashMap<u32, (String, u64)>,
    order: VecDeque<u32>,
    latest: HashMap<(String, u64), u32>,
    calls: HashMap<u32, (String, u64, u64)>,
    ringing: HashMap<(String, u64), u32>,
}

impl Shown {
    /// The notification a new one about `widget`/`contact` replaces (0: none).
    fn replaces(&self, widget: &str, contact: u64) -> u32 {
        self.latest
            .get(&(widget.to_owned(), contact))
            .copied()
            .unwrap_or(0)
    }

    fn remember(&mut self, id: u32, widget: String, contact: u64) {
        self.latest.insert((widget.clone(), contact), id);
        if self.targets.insert(id, (widget, contact)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.forget(old);
            }
        }
    }

    /// Notification `id` was clicked or closed: what it was about.
    fn closed(&mut self, id: u32) -> Option<(String, u64)> {
        let target = self.forget(id);
        if target.is_some() {
            self.order.retain(|&o| o != id);
        }
        target
    }

    fn ring(&mut self, id: u32, widget: String, call: u64, contact: u64) {
        self.ringing.insert((widget.clone(), call), id);
        self.calls.insert(id, (widget, call, contact));
        // Calls ring one at a time per account; a server that never reports a closed one leaves a few.
        if self.calls.len() > REMEMBERED {
            let oldest = self.calls.keys().min().copied();
            if let Some((w, c, _)) = oldest.and_then(|o| self.calls.remove(&o)) {
                self.ringing.remove(&(w, c));
            }
        }
    }

    /// Call notification `id` was acted on or closed: its widget, call and caller.
    fn call_closed(&mut self, id: u32) -> Option<(String, u64, u64)> {
        let (widget, call, contact) = self.calls.remove(&id)?;
        self.ringing.remove(&(widget.clone(), call));
        Some((widget, call, contact))
    }

    /// The notification of a call that stopped ringing, forgotten.
    fn call_over(&mut self, widget: &str, call: u64) -> Option<u32> {
        let id = self.ringing.remove(&(widget.to_owned(), call))?;
        self.calls.remove(&id);
        Some(id)
    }

    fn forget(&mut self, id: u32) -> Option<(String, u64)> {
        let target = self.targets.remove(&id)?;
        if self.latest.get(&target) == Some(&id) {
            self.latest.remove(&target);
        }
        Some(target)
    }
}

/// The handle: hands notifications to the thread that shows them and hears their clicks.
#[derive(Clone)]
pub struct Clicks {
    show: mpsc::Sender<Request>,
}

impl Clicks {
    /// Starts the thread; `clicked(widget, contact, what)` is called (on it) for each click or action.
    pub fn start(open: impl Fn(String, u64, Clicked) + Send + 'static) -> Clicks {
        let (show, requests) = mpsc::channel(QUEUE);
        let started = std::thread::Builder::new()
            // Short enough for the OS's 15-character thread names.
            .name("pinchat-notify".into())
            .spawn(move || {
                if let Err(e) = zbus_notify::block_on(serve(requests, &open)) {
                    tracing::warn!(error = %e, "cannot show notifications or hear their clicks");
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot show notifications or hear their clicks");
        }
        Clicks { show }
    }

    /// Shows a notification (never blocks: the thread shows it).
    pub fn show(&self, notification: Show) {
        self.ask(Request::Message(notification));
    }

    /// Rings an incoming call as a notification with Accept and Decline.
    pub fn ring(&self, call: CallShow) {
        self.ask(Request::Call(call));
    }

    /// Takes away the notification of a call that stopped ringing.
    pub fn call_over(&self, widget: String, call: u64) {
        self.ask(Request::CallOver { widget, call });
    }

    fn ask(&self, request: Request) {
        if self.show.try_send(request).is_err() {
            tracing::warn!("a notification was not shown or taken away: too many waiting");
        }
    }
}

async fn serve(
    mut requests: mpsc::Receiver<Request>,
    open: &impl Fn(String, u64, Clicked),
) -> zbus_notify::Result<()> {
    use futures_util::StreamExt;
    let connection = zbus_notify::Connection::session().await?;
    let rule = zbus_notify::MatchRule::builder()
        .msg_type(zbus_notify::message::Type::Signal)
        .interface("org.freedesktop.Notifications")
        .build()?;
    // One stream for the connection's life: no signal is missed between two waits, and signals sent
    // to this connection alone (as real servers send them) arrive here too.
    let mut signals = zbus_notify::MessageStream::for_match_rule(rule, &connection, None).await?;
    // Asked once: a server that types replies in the notification says so in its capabilities.
    let inline_reply = capabilities(&connection)
        .await
        .is_ok_and(|c| c.iter().any(|c| c == INLINE_REPLY));
    let mut shown = Shown::default();
    loop {
        tokio::select! {
            request = requests.recv() => {
                // The app is quitting.
                let Some(request) = request else { return Ok(()) };
                match request {
                    Request::Message(request) => {
                        let replaces = shown.replaces(&request.widget, request.contact);
                        match notify(&connection, &request, replaces, inline_reply).await {
                            Ok(id) => shown.remember(id, request.widget, request.contact),
                            Err(e) => tracing::warn!(error = %e, "cannot show a notification"),
                        }
                    }
                    Request::Call(call) => match notify_call(&connection, &call).await {
                        Ok(id) => shown.ring(id, call.widget, call.call, call.contact),
                        Err(e) => tracing::warn!(error = %e, "cannot show an incoming call's notification"),
                    },
                    Request::CallOver { widget, call } => {
                        if let Some(id) = shown.call_over(&widget, call) {
                            let _ = close(&connection, id).await;
                        }
                    }
                }
            }
            message = signals.next() => {
                let Some(message) = message else { return Ok(()) };
                let Ok(message) = message else { continue };
                let header = message.header();
                let member = header.member().map(|m| m.as_str().to_owned());
                let body = message.body();
                // An incoming call's notification: its buttons, or a click on it.
                if member.as_deref() == Some("ActionInvoked")
                    && let Ok((id, action)) = body.deserialize::<(u32, String)>()
                    && let Some((widget, call, contact)) = shown.call_closed(id)
                {
                    let what = match action.as_str() {
                        ACCEPT => Clicked::Answer(call),
                        DECLINE => Clicked::Decline(call),
                        _ => Clicked::ShowCall(call),
                    };
                    // Acted on, it goes (some servers leave that to the app).
                    let _ = close(&connection, id).await;
                    open(widget, contact, what);
                    continue;
                }
                let (id, clicked) = match member.as_deref() {
                    Some("ActionInvoked") => match body.deserialize::<(u32, String)>() {
                        Ok((id, action)) if action == "default" => (id, Some(Clicked::Open)),
                        Ok((id, action)) if action == MARK_READ => (id, Some(Clicked::MarkRead)),
                        Ok((id, _)) => (id, None),
                        Err(_) => continue,
                    },
                    Some("NotificationReplied") => match body.deserialize::<(u32, String)>() {
                        Ok((id, text)) if !text.trim().is_empty() => (id, Some(Clicked::Reply(text))),
                        Ok((id, _)) => (id, None),
                        Err(_) => continue,
                    },
                    Some("NotificationClosed") => match body.deserialize::<(u32, u32)>() {
                        Ok((id, _reason)) => {
                            // Dismissed while it rang: the call rings on in the panel.
                            shown.call_closed(id);
                            (id, None)
                        }
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                if let (Some(what), Some((widget, contact))) = (clicked, shown.closed(id)) {
                    if matches!(what, Clicked::MarkRead | Clicked::Reply(_)) {
                        // The server leaves it to the app to take the notification away.
                        let _ = close(&connection, id).await;
                    }
                    open(widget, contact, what);
                }
            }
        }
    }
}

/// `org.freedesktop.Notifications.Notify` on this connection: the server's id for the notification.
async fn notify(
    connection: &zbus_notify::Connection,
    n: &Show,
    replaces: u32,
    inline_reply: bool,
) -> zbus_notify::Result<u32> {
    use zbus_notify::Variant as Value;
    let mut hints: HashMap<&str, Value<'_>> = HashMap::new();
    hints.insert("category", Value::from("im.received"));
    hints.insert("desktop-entry", Value::from("pinchat"));
    // The sender's avatar (the specification's `image-path`: a file path or a file:// URI).
    if let Some(path) = n.image.as_deref().and_then(|p| p.to_str()) {
        hints.insert("image-path", Value::from(path));
    }
    // The default action is a click on the notification; "Mark as read" a button where the server
    // shows actions (servers that do not ignore it).
    let mut actions = vec!["default", n.title.as_str(), MARK_READ, n.mark_read.as_str()];
    if inline_reply {
        actions.extend([INLINE_REPLY, n.reply.as_str()]);
    }
    send_notify(
        connection, replaces, &n.title, &n.body, &actions, hints, EXPIRE_MS,
    )
    .await
}

/// `org.freedesktop.Notifications.Notify` itself: the server's id for the notification.
async fn send_notify(
    connection: &zbus_notify::Connection,
    replaces: u32,
    title: &str,
    body: &str,
    actions: &[&str],
    hints: HashMap<&str, zbus_notify::Variant<'_>>,
    expire_ms: i32,
) -> zbus_notify::Result<u32> {
    let reply = connection
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "Notify",
            &("pinchat", replaces, "", title, body, actions, hints, expire_ms),
        )
        .await?;
    reply.body().deserialize::<u32>()
}

/// Shows an incoming call: critical and without a time limit (it goes when the call stops ringing),
/// a click shows the call, and Accept and Decline answer it.
async fn notify_call(connection: &zbus_notify::Connection, n: &CallShow) -> zbus_notify::Result<u32> {
    use zbus_notify::Variant as Value;
    let mut hints: HashMap<&str, Value<'_>> = HashMap::new();
    hints.insert("category", Value::from("call.incoming"));
    hints.insert("desktop-entry", Value::from("pinchat"));
    hints.insert("urgency", Value::from(2u8));
    if let Some(path) = n.image.as_deref().and_then(|p| p.to_str()) {
        hints.insert("image-path", Value::from(path));
    }
    let actions = [
        "default",
        n.title.as_str(),
        ACCEPT,
        n.accept.as_str(),
        DECLINE,
        n.decline.as_str(),
    ];
    // No time limit (0): it goes when the call stops ringing.
    send_notify(connection, 0, &n.title, &n.body, &actions, hints, 0).await
}

/// `org.freedesktop.Notifications.GetCapabilities`.
async fn capabilities(connection: &zbus_notify::Connection) -> zbus_notify::Result<Vec<String>> {
    let reply = connection
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "GetCapabilities",
            &(),
        )
        .await?;
    reply.body().deserialize::<Vec<String>>()
}

/// `org.freedesktop.Notifications.CloseNotification`.
async fn close(connection: &zbus_notify::Connection, id: u32) -> zbus_notify::Result<()> {
    connection
        .call_method(
            Some("org.freedesktop.Notifications"),
            "/org/freedesktop/Notifications",
            Some("org.freedesktop.Notifications"),
            "CloseNotification",
            &(id,),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_so_many_notifications_are_remembered_oldest_forgotten_first() {
        let mut s = Shown::default();
        for id in 0..(REMEMBERED as u32 + 10) {
            s.remember(id, "w".into(), u64::from(id));
        }
        assert_eq!(s.targets.len(), REMEMBERED);
        assert_eq!(s.order.len(), REMEMBERED);
        assert_eq!(s.latest.len(), REMEMBERED);
        assert!(!s.targets.contains_key(&9));
        assert_eq!(s.targets.get(&10), Some(&("w".to_owned(), 10)));
    }

    #[test]
    fn a_newer_message_from_the_same_contact_replaces_the_shown_notification() {
        let mut s = Shown::default();
        assert_eq!(s.replaces("w", 2), 0);
        s.remember(7, "w".into(), 2);
        s.remember(8, "w".into(), 3);
        assert_eq!(s.replaces("w", 2), 7);
        assert_eq!(
            s.replaces("v", 2),
            0,
            "another account's contact is another group"
        );
        // The server keeps the id when it replaces.
        s.remember(7, "w".into(), 2);
        assert_eq!(s.order.len(), 2);
        // Once closed (clicked, dismissed, expired), the next one is new.
        assert_eq!(s.closed(7), Some(("w".to_owned(), 2)));
        assert_eq!(s.replaces("w", 2), 0);
        assert_eq!(s.closed(7), None);
    }
}
