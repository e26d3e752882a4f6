//! The tray app: the tao event loop (`ControlFlow::Wait`: it sleeps until something happens), the
//! tray icon and its menu, OS notifications, and the panels' processes.
//!
//! A panel is a window with a webview ([`crate::panel`]) in a process of its own, started when the
//! panel opens and ended when it closes: an idle app holds no webview, and closing a panel gives back
//! all the memory it took (WebKit's web and network processes included). One panel per widget (plus
//! one for adding an account). The tray talks to a panel over its standard input and output (see
//! [`crate::panel`]); closing the panel's standard input closes the panel.

use crate::backend::{Backend, ToUi};
use crate::badge;
use crate::i18n::Lang;
use crate::settings::Settings;
use pinchat_ipc::api::{Connection, Mode, WidgetSummary};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
#[cfg(not(target_os = "linux"))]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tao::dpi::PhysicalPosition;
use tao::event::{Event, StartCause};
use tao::event_loop::{ControlFlow, EventLoopProxy, EventLoopWindowTarget};
use tray_icon::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu};
use tray_icon::{TrayIcon, TrayIconBuilder, TrayIconEvent};

/// The tray's number for a panel's process.
type PanelId = u64;

/// Everything that wakes the event loop.
#[derive(Debug)]
pub enum UserEvent {
    /// The tray icon was clicked.
    Tray(TrayIconEvent),
    /// A tray menu entry was chosen.
    Menu(MenuEvent),
    /// The backend has something.
    Backend(ToUi),
    /// A panel's process wrote a line (`opened <widget>`).
    FromPanel(PanelId, crate::control::FromPanel),
    /// A panel's process ended.
    PanelClosed(PanelId),
    /// An OS notification was activated: open that chat.
    OpenChat(String, u64),
    /// "Mark as read" on an OS notification: that chat, read, without opening it.
    MarkRead(String, u64),
    /// A reply typed in an OS notification (Linux servers with inline reply): sent to that contact.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Reply(String, u64, String),
    /// An incoming call's notification: clicked (`None`: show the call), Accept (`Some(true)`) or
    /// Decline (`Some(false)`); the widget, the caller and the call.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    CallClicked(String, u64, u64, Option<bool>),
}

/// What a panel shows first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PanelKind {
    /// A widget's panel (widget view, details, chat, re-pick, re-authentication).
    Widget(String),
    /// Adding an account: login, then picking contacts.
    AddAccount,
}

/// A panel's process, as the tray knows it.
struct Panel {
    kind: PanelKind,
    /// The control channel; dropping it closes the panel.
    control: ChildStdin,
    /// The process while it runs; its reader thread takes it out to reap it once its output ends.
    process: Arc<Mutex<Option<Child>>>,
    /// The chat it shows, if any: no OS notification for its messages.
    viewing: Option<u64>,
    /// Its window has keyboard focus.
    focused: bool,
    /// A tray click asked it to come forward, and it has not taken the focus since: the next click
    /// closes it (a panel that cannot come forward, e.g. hung, is not stuck on screen).
    asked_forward: bool,
}

/// A tray click this soon after a panel lost focus is the click that took the focus away: the person
/// meant to close the popover (which closed itself, or is closed now), not to open it again.
const CLICK_TOOK_FOCUS: Duration = Duration::from_millis(500);

/// How long a closed panel has to end before it is killed.
const PANEL_GRACE: Duration = Duration::from_secs(5);

impl Drop for Panel {
    /// Closing the control channel (a field, dropped after this) asks the panel to close. A panel that
    /// has not ended after [`PANEL_GRACE`] (a hung web engine) is killed, so that a close always
    /// closes; its reader thread then reaps it.
    fn drop(&mut self) {
        let running = self.process.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if !running {
            return;
        }
        let process = self.process.clone();
        let _ = std::thread::Builder::new()
            .name("pinchat-panel-close".into())
            .spawn(move || {
                std::thread::sleep(PANEL_GRACE);
                if let Some(child) = process.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    tracing::warn!(pid = child.id(), "a closed panel did not end; killing it");
                    let _ = child.kill();
                }
            });
    }
}

struct App {
    lang: Lang,
    /// `pinchat demo`: starting at login is the real app's business, not the demo's.
    demo: bool,
    /// Taken (and stopped) when the loop ends.
    backend: Option<Backend>,
    /// The local API's socket, for the panels.
    socket: PathBuf,
    proxy: EventLoopProxy<UserEvent>,
    tray: Option<TrayIcon>,
    widgets: Vec<(WidgetSummary, crate::model::TrayDetails)>,
    settings: Settings,
    settings_path: Option<PathBuf>,
    /// What the tray shows now: (total unread, any online, menu labels); rebuilt only when it changes.
    shown: Option<(u32, bool, Vec<String>, Settings, bool)>,
    panels: HashMap<PanelId, Panel>,
    next_panel: PanelId,
    /// Where the tray icon is, to place panels near it.
    anchor: Option<Anchor>,
    /// When a panel last lost keyboard focus.
    last_blur: Option<std::time::Instant>,
    /// The tray icons of contacts pinned to the tray, by (widget, contact).
    contact_trays: BTreeMap<(String, u64), ContactTray>,
    /// Where pinned contacts' pictures are cached (the backend fetches them).
    avatars: Option<crate::avatars::Avatars>,
    /// The panel's size or place changed since the settings were saved.
    place_changed: bool,
    /// The incoming calls ringing now, by (widget, call): what a click on one's notification opens.
    ringing: HashMap<(String, u64), crate::control::Ring>,
    /// Listens for clicks on notifications (Linux), from the first notification on.
    #[cfg(target_os = "linux")]
    clicks: Option<crate::clicks::Clicks>,
}

/// A contact's own tray icon, and what it shows (redrawn only when that changes).
struct ContactTray {
    icon: TrayIcon,
    shown: ContactShown,
    /// Their picture as drawn, decoded once (a new count or state redraws the icon, not the file).
    face: Option<Vec<u8>>,
}

/// What a contact's tray icon shows.
#[derive(PartialEq)]
struct ContactShown {
    name: String,
    state: pinchat_proto::Presence,
    unread: u32,
    /// Their picture's file, once it is in the cache.
    picture: Option<PathBuf>,
    /// The language of its tooltip and menu.
    lang: Lang,
}

/// The id of a contact's tray icon (and the prefix of its menu entries' ids).
fn contact_tray_id(widget: &str, contact: u64) -> String {
    format!("contact:{widget}:{contact}")
}

/// What is known of the tray icon's place.
#[derive(Debug, Clone, Copy)]
enum Anchor {
    /// Its rectangle (Windows, macOS).
    Icon(tray_icon::Rect),
    /// Where it was clicked (Linux).
    Click(PhysicalPosition<f64>),
}

/// The top-left corner of a `w`×`h` panel next to the tray icon, on a `screen_w`×`screen_h` screen:
/// centred on the icon (or its top-right corner at the click), above it when the icon is in the lower
/// half of the screen (a bottom taskbar), below otherwise; always on screen.
fn place(anchor: Anchor, w: f64, h: f64, screen_w: f64, screen_h: f64) -> PhysicalPosition<f64> {
    let (x, top, bottom) = match anchor {
        Anchor::Icon(r) => {
            let (x, y) = (r.position.x, r.position.y);
            (
                x + r.size.width as f64 / 2.0 - w / 2.0,
                y,
                y + r.size.height as f64,
            )
        }
        Anchor::Click(p) => (p.x - w, p.y, p.y),
    };
    let y = if top > screen_h / 2.0 { top - h } else { bottom };
    PhysicalPosition::new(
        x.clamp(0.0, (screen_w - w).max(0.0)),
        y.clamp(0.0, (screen_h - h).max(0.0)),
    )
}

/// Connects to the daemon (or starts it) and runs the app until "Quit".
pub fn run(
    options: crate::backend::Options,
    lang: Lang,
    settings: (Settings, Option<PathBuf>),
    on_exit: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<std::convert::Infallible> {
    let (settings, settings_path) = settings;
    let demo = options.demo.is_some();
    // Said once at start too (and on the console, when started from one): the tray works without
    // WebView2, the panels do not.
    #[cfg(windows)]
    if let Err(e) = wry::webview_version() {
        tracing::warn!(error = %e, "the WebView2 runtime is missing: panels cannot open until it is installed");
        eprintln!("pinchat: {}", lang.words().webview_missing);
    }
    let (event_loop, backend) = crate::panel::event_loop_with_backend(options, UserEvent::Backend)?;
    let proxy = event_loop.create_proxy();
    let socket = backend.socket.clone();
    {
        let p = proxy.clone();
        TrayIconEvent::set_event_handler(Some(move |e| {
            let _ = p.send_event(UserEvent::Tray(e));
        }));
        let p = proxy.clone();
        MenuEvent::set_event_handler(Some(move |e| {
            let _ = p.send_event(UserEvent::Menu(e));
        }));
    }
    let mut app = App {
        lang,
        demo,
        backend: Some(backend),
        socket,
        proxy,
        tray: None,
        widgets: vec![],
        shown: None,
        settings,
        settings_path,
        panels: HashMap::new(),
        next_panel: 1,
        anchor: None,
        last_blur: None,
        contact_trays: BTreeMap::new(),
        avatars: crate::avatars::Avatars::in_cache(),
        place_changed: false,
        ringing: HashMap::new(),
        #[cfg(target_os = "linux")]
        clicks: None,
    };
    let mut on_exit = Some(on_exit);
    event_loop.run(move |event, target, control_flow| {
        let mut quit = false;
        match event {
            // The tray is created once the loop runs (macOS requires it).
            Event::NewEvents(StartCause::Init) => app.update_tray(),
            Event::NewEvents(StartCause::ResumeTimeReached { .. }) => app.quiet_time_over(),
            Event::UserEvent(e) => quit = app.user_event(e, target),
            Event::LoopDestroyed => {
                // Closing their control channels closes the panels.
                app.panels.clear();
                app.tray = None;
                if app.place_changed {
                    app.save_settings();
                }
                // An embedded daemon finishes its writes before the process ends.
                if let Some(b) = app.backend.take() {
                    b.stop();
                }
                if let Some(f) = on_exit.take() {
                    f();
                }
            }
            _ => {}
        }
        if quit || *control_flow == ControlFlow::Exit {
            *control_flow = ControlFlow::Exit;
            return;
        }
        // Asleep until something happens, or until the next "do not disturb" period ends.
        *control_flow = match app.settings.next_expiry() {
            Some(end) => ControlFlow::WaitUntil(
                std::time::Instant::now() + std::time::Duration::from_millis(end.saturating_sub(now_ms())),
            ),
            None => ControlFlow::Wait,
        };
    })
}

impl App {
    /// A "do not disturb" period is over: the menu shows it off again.
    fn quiet_time_over(&mut self) {
        if self.settings.expire(now_ms()) {
            self.save_settings();
            self.update_tray();
        }
    }

    /// Handles one event; `true` to quit.
    fn user_event(&mut self, event: UserEvent, target: &EventLoopWindowTarget<UserEvent>) -> bool {
        match event {
            UserEvent::Tray(TrayIconEvent::Click {
                id,
                position,
                rect,
                button: tray_icon::MouseButton::Left,
                button_state: tray_icon::MouseButtonState::Up,
                ..
            }) => {
                // Windows and macOS give the icon's rectangle; Linux only the click position.
                self.anchor = Some(if rect.size.width > 0 {
                    Anchor::Icon(rect)
                } else {
                    Anchor::Click(position)
                });
                // A contact's own icon opens the chat with them; the app's icon, the popover.
                match parse_contact(id.0.strip_prefix("contact:").unwrap_or_default()) {
                    Some((widget, contact)) => self.open(PanelKind::Widget(widget), Some(contact), target),
                    None => self.tray_clicked(target),
                }
            }
            UserEvent::Tray(_) => {}
            UserEvent::Menu(e) => {
                let id = e.id().0.clone();
                if id == "quit" {
                    return true;
                }
                self.menu_choice(&id, target);
            }
            UserEvent::Backend(ToUi::Show) => self.open_main(target),
            UserEvent::Backend(ToUi::Stop) => return true,
            UserEvent::FromPanel(panel, crate::control::FromPanel::Opened(w)) => {
                // An add-account panel that created a widget becomes that widget's panel.
                if let Some(p) = self.panels.get_mut(&panel) {
                    p.kind = PanelKind::Widget(w);
                }
            }
            UserEvent::FromPanel(panel, crate::control::FromPanel::Viewing(contact)) => {
                if let Some(p) = self.panels.get_mut(&panel) {
                    p.viewing = contact;
                }
            }
            UserEvent::FromPanel(panel, crate::control::FromPanel::Focus(focused)) => {
                if let Some(p) = self.panels.get_mut(&panel) {
                    p.focused = focused;
                    p.asked_forward &= !focused;
                }
                // Only the latest change counts: a panel that took the focus back was not closed by
                // a click on the tray.
                self.last_blur = (!focused).then(std::time::Instant::now);
            }
            UserEvent::FromPanel(panel, crate::control::FromPanel::Closing) => {
                // Gone for the person already: a tray click now opens a panel rather than closing
                // this one (its process is reaped when it ends).
                self.panels.remove(&panel);
            }
            UserEvent::FromPanel(_, crate::control::FromPanel::Size(w, h)) => {
                self.settings.panel.size = Some((w, h));
                self.place_changed = true;
            }
            UserEvent::FromPanel(_, crate::control::FromPanel::Moved(x, y)) => {
                self.settings.panel.position = Some((x, y));
                self.place_changed = true;
            }
            UserEvent::PanelClosed(panel) => {
                self.panels.remove(&panel);
                // Saved once the panel is closed, not at every step of a drag.
                if self.place_changed {
                    self.save_settings();
                    self.place_changed = false;
                }
            }
            // Panels get their answers and notifications on their own connections.
            UserEvent::Backend(ToUi::Reply { .. } | ToUi::Notification(_)) => {}
            UserEvent::Backend(ToUi::Widgets(list)) => {
                self.widgets = list;
                // A removed widget's panel goes with it.
                let ids: Vec<String> = self.widgets.iter().map(|(w, _)| w.id.clone()).collect();
                self.panels
                    .retain(|_, p| !matches!(&p.kind, PanelKind::Widget(w) if !ids.contains(w)));
                self.update_tray();
            }
            UserEvent::Backend(ToUi::Incoming {
                widget,
                contact,
                name,
                text,
                avatar,
            }) => {
                // None for the chat on screen: the user sees the message arrive.
                let on_screen = self
                    .panels
                    .values()
                    .any(|p| p.kind == PanelKind::Widget(widget.clone()) && p.viewing == Some(contact));
                // With several accounts, the title says which one the message is for.
                let account = (self.widgets.len() > 1)
                    .then(|| self.widgets.iter().find(|(w, _)| w.id == widget))
                    .flatten()
                    .map(|(w, _)| w.name.clone());
                let title = notification_title(self.lang, &name, account.as_deref());
                if on_screen {
                    tracing::debug!(widget, contact, "no notification: the chat is on screen");
                } else if !self.settings.notify_for(&widget, contact, now_ms()) {
                    tracing::debug!(widget, contact, "no notification: do not disturb");
                } else {
                    #[cfg(target_os = "linux")]
                    let clicked = self.clicks();
                    #[cfg(not(target_os = "linux"))]
                    let clicked = self.proxy.clone();
                    notify(clicked, self.lang, title, widget, contact, text, avatar);
                }
            }
            UserEvent::Backend(ToUi::Ringing {
                widget,
                ring,
                name,
                avatar,
            }) => {
                // The account's panel rings: brought forward when it is open (its page heard the call
                // itself), else opened on the call. The call rings as an OS notification too, with
                // Accept and Decline (on Linux taken away when it stops ringing).
                tracing::info!(widget, call = ring.call, "an incoming call: the panel rings");
                self.ringing.insert((widget.clone(), ring.call), ring);
                #[cfg(target_os = "linux")]
                {
                    let words = self.lang.words();
                    self.clicks().ring(crate::clicks::CallShow {
                        title: format!("{name} {}", words.is_calling),
                        body: (if ring.video {
                            words.video_call
                        } else {
                            words.voice_call
                        })
                        .to_owned(),
                        accept: words.accept.to_owned(),
                        decline: words.decline.to_owned(),
                        widget: widget.clone(),
                        call: ring.call,
                        contact: ring.contact,
                        image: avatar,
                    });
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let words = self.lang.words();
                    call_toast(
                        self.proxy.clone(),
                        CallToast {
                            title: format!("{name} {}", words.is_calling),
                            body: (if ring.video {
                                words.video_call
                            } else {
                                words.voice_call
                            })
                            .to_owned(),
                            accept: words.accept.to_owned(),
                            decline: words.decline.to_owned(),
                            avatar,
                            widget: widget.clone(),
                            contact: ring.contact,
                            call: ring.call,
                        },
                    );
                }
                self.ring(widget, ring, target);
            }
            UserEvent::Backend(ToUi::RingOver { widget, call }) => {
                self.ringing.remove(&(widget.clone(), call));
                #[cfg(target_os = "linux")]
                if let Some(clicks) = &self.clicks {
                    clicks.call_over(widget, call);
                }
                #[cfg(not(target_os = "linux"))]
                let _ = (widget, call);
            }
            UserEvent::CallClicked(widget, contact, call, answer) => {
                tracing::info!(
                    widget,
                    call,
                    ?answer,
                    "an incoming call's notification was acted on"
                );
                match answer {
                    // Declined from the notification: the panel that rings hears it is over, as every
                    // client of the widget does.
                    Some(false) => {
                        if let Some(backend) = &self.backend {
                            let params = serde_json::json!({ "widget": widget, "call": call });
                            let _ = backend.request(0, "call.decline".into(), params);
                        }
                    }
                    // Accepted, or clicked: the panel answers it, or shows it ringing.
                    Some(true) | None => {
                        let answer = answer.is_some();
                        let kind = PanelKind::Widget(widget.clone());
                        if answer && self.tell_panel(&kind, &crate::control::ToPanel::Answer(call)) {
                            return false;
                        }
                        let Some(ring) = self.ringing.get(&(widget.clone(), call)) else {
                            // It stopped ringing meanwhile: nothing to answer or show.
                            tracing::debug!(
                                widget,
                                call,
                                contact,
                                "a call's notification acted on after it stopped ringing"
                            );
                            return false;
                        };
                        let ring = crate::control::Ring { answer, ..*ring };
                        self.ring(widget, ring, target);
                    }
                }
            }
            UserEvent::OpenChat(widget, contact) => {
                self.open(PanelKind::Widget(widget), Some(contact), target);
            }
            UserEvent::Reply(widget, contact, text) => {
                if let Some(backend) = &self.backend {
                    // A reply typed in the notification: sent, and the chat is read. The sent message
                    // shows in the chat like any other; the replies themselves are not needed.
                    let send = serde_json::json!({ "widget": widget, "contact": contact, "text": text });
                    let _ = backend.request(0, "widget.send".into(), send);
                    let read = serde_json::json!({ "widget": widget, "contact": contact });
                    let _ = backend.request(0, "widget.mark_read".into(), read);
                }
            }
            UserEvent::MarkRead(widget, contact) => {
                if let Some(backend) = &self.backend {
                    // The new unread count comes back as a notification; the reply is not needed.
                    let params = serde_json::json!({ "widget": widget, "contact": contact });
                    let _ = backend.request(0, "widget.mark_read".into(), params);
                }
            }
            UserEvent::Backend(ToUi::AvatarStored(_)) => self.update_contact_trays(),
            UserEvent::Backend(ToUi::Lost(why)) => {
                tracing::error!(%why, "lost the daemon");
                eprintln!("pinchat: lost the connection to the daemon ({why}); quitting");
                return true;
            }
        }
        false
    }

    /// A tray menu entry (other than "quit").
    fn menu_choice(&mut self, id: &str, target: &EventLoopWindowTarget<UserEvent>) {
        if id == "add" {
            self.open(PanelKind::AddAccount, None, target);
        } else if let Some(widget) = id.strip_prefix("open:") {
            self.open(PanelKind::Widget(widget.to_owned()), None, target);
        } else if let Some(widget) = id.strip_prefix("dnd:") {
            if self.settings.quiet(widget, now_ms()) {
                self.settings.clear_quiet(widget);
            } else {
                self.settings.set_quiet(widget, None);
            }
            self.save_settings();
        } else if let Some(widget) = id.strip_prefix("dnd-hour:") {
            self.settings
                .set_quiet(widget, Some(now_ms() + crate::settings::HOUR_MS));
            self.save_settings();
        } else if let Some(widget) = id.strip_prefix("dnd-morning:") {
            self.settings.set_quiet(widget, Some(next_morning(now_ms())));
            self.save_settings();
        } else if let Some((widget, contact)) = id.strip_prefix("in-tray:").and_then(parse_contact) {
            self.settings.toggle_in_tray(&widget, contact);
            self.save_settings();
        } else if let Some((widget, contact)) = id.strip_prefix("chat:").and_then(parse_contact) {
            self.open(PanelKind::Widget(widget), Some(contact), target);
        } else if let Some((widget, contact)) = id.strip_prefix("through:").and_then(parse_contact) {
            self.settings.toggle_break_through(&widget, contact);
            self.save_settings();
        } else if let Some(rest) = id.strip_prefix("mode:") {
            let Some((widget, mode)) = rest.rsplit_once(':') else {
                return;
            };
            let params = serde_json::json!({ "widget": widget, "mode": mode });
            if let Some(backend) = &self.backend {
                // The widget list refresh that follows shows the new mode; the reply itself is not
                // needed.
                let _ = backend.request(0, "widget.set_mode".into(), params);
            }
        } else if let Some(code) = id.strip_prefix("lang:") {
            self.lang = if code == "zh" { Lang::Zh } else { Lang::En };
            self.settings.lang = Some(self.lang);
            self.save_settings();
            // Open panels switch at once.
            let line = crate::control::ToPanel::Lang(self.lang).line();
            for p in self.panels.values_mut() {
                let _ = p
                    .control
                    .write_all(line.as_bytes())
                    .and_then(|()| p.control.flush());
            }
        } else if id == "autostart"
            && let Err(e) = crate::autostart::enabled().and_then(|on| crate::autostart::set(!on))
        {
            tracing::error!(error = %e, "cannot change starting at login");
        }
        self.update_tray();
    }

    fn save_settings(&self) {
        if let Some(path) = &self.settings_path
            && let Err(e) = self.settings.save(path)
        {
            tracing::error!(path = %path.display(), error = %e, "cannot save the settings");
        }
    }

    /// A left click on the tray icon, like on a popover's button: it opens the panel, closes it when
    /// it is in front (or was until this click took the focus away), and brings forward a panel kept
    /// open behind other windows.
    fn tray_clicked(&mut self, target: &EventLoopWindowTarget<UserEvent>) {
        let click_took_focus = self.last_blur.is_some_and(|t| t.elapsed() < CLICK_TOOK_FOCUS);
        if self.panels.is_empty() {
            if click_took_focus {
                tracing::debug!("the click closed the popover; not opening it again");
            } else {
                self.open_main(target);
            }
        } else if click_took_focus || self.panels.values().any(|p| p.focused || p.asked_forward) {
            self.panels.clear();
        } else {
            let line = crate::control::ToPanel::Show.line();
            for p in self.panels.values_mut() {
                p.asked_forward = true;
                let _ = p
                    .control
                    .write_all(line.as_bytes())
                    .and_then(|()| p.control.flush());
            }
        }
    }

    /// Opens the panel a tray click opens: the account with unread messages first (the page lets the
    /// person switch to the others), or adding one when there is none.
    fn open_main(&mut self, target: &EventLoopWindowTarget<UserEvent>) {
        let first = self
            .widgets
            .iter()
            .find(|(w, _)| w.unread > 0)
            .or(self.widgets.first());
        match first {
            Some((w, _)) => self.open(PanelKind::Widget(w.id.clone()), None, target),
            None => self.open(PanelKind::AddAccount, None, target),
        }
    }

    /// Shows the panel of `kind` (on the chat with `chat`), starting its process when it has none.
    fn open(&mut self, kind: PanelKind, chat: Option<u64>, target: &EventLoopWindowTarget<UserEvent>) {
        let line = match chat {
            Some(c) => crate::control::ToPanel::Chat(c),
            None => crate::control::ToPanel::Show,
        };
        if self.tell_panel(&kind, &line) {
            return;
        }
        // Windows without WebView2 (it ships with Windows 11 and recent Windows 10, but can be missing):
        // a panel could not show anything, so the user is told what to install instead.
        #[cfg(windows)]
        if let Err(e) = wry::webview_version() {
            tracing::error!(error = %e, "the WebView2 runtime is missing: no panel can open");
            let words = self.lang.words();
            let _ = notify_rust::Notification::new()
                .summary("pinchat")
                .body(words.webview_missing)
                .show();
            return;
        }
        if let Err(e) = self.start_panel(kind, chat, None, target) {
            tracing::error!(error = %e, "cannot open a panel");
        }
    }

    /// The thread that shows OS notifications and hears their clicks, started on first use.
    #[cfg(target_os = "linux")]
    fn clicks(&mut self) -> crate::clicks::Clicks {
        let proxy = &self.proxy;
        self.clicks
            .get_or_insert_with(|| {
                let proxy = Mutex::new(proxy.clone());
                crate::clicks::Clicks::start(move |widget, contact, what| {
                    use crate::clicks::Clicked;
                    let event = match what {
                        Clicked::Open => UserEvent::OpenChat(widget, contact),
                        Clicked::MarkRead => UserEvent::MarkRead(widget, contact),
                        Clicked::Reply(text) => UserEvent::Reply(widget, contact, text),
                        Clicked::ShowCall(call) => UserEvent::CallClicked(widget, contact, call, None),
                        Clicked::Answer(call) => UserEvent::CallClicked(widget, contact, call, Some(true)),
                        Clicked::Decline(call) => UserEvent::CallClicked(widget, contact, call, Some(false)),
                    };
                    let _ = proxy.lock().unwrap_or_else(|e| e.into_inner()).send_event(event);
                })
            })
            .clone()
    }

    /// An incoming call for `widget`: its panel comes forward, or opens ringing.
    fn ring(
        &mut self,
        widget: String,
        ring: crate::control::Ring,
        target: &EventLoopWindowTarget<UserEvent>,
    ) {
        let kind = PanelKind::Widget(widget);
        if self.tell_panel(&kind, &crate::control::ToPanel::Show) {
            return;
        }
        if let Err(e) = self.start_panel(kind, None, Some(ring), target) {
            tracing::error!(error = %e, "cannot open a panel for an incoming call");
        }
    }

    /// Tells the open panel of `kind` `what`; `false` when none is open (a panel whose process is
    /// ending is forgotten, so that a new one starts).
    fn tell_panel(&mut self, kind: &PanelKind, what: &crate::control::ToPanel) -> bool {
        let Some((&id, p)) = self.panels.iter_mut().find(|(_, p)| &p.kind == kind) else {
            return false;
        };
        let line = what.line();
        if p.control
            .write_all(line.as_bytes())
            .and_then(|()| p.control.flush())
            .is_ok()
        {
            return true;
        }
        self.panels.remove(&id);
        false
    }

    /// Starts a panel's process: this program with `panel`, its control channel on standard input
    /// and output.
    fn start_panel(
        &mut self,
        kind: PanelKind,
        chat: Option<u64>,
        ring: Option<crate::control::Ring>,
        target: &EventLoopWindowTarget<UserEvent>,
    ) -> anyhow::Result<()> {
        let id = self.next_panel;
        self.next_panel += 1;
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--socket").arg(&self.socket).args([
            "--lang",
            self.lang.code(),
            "panel",
            "--managed",
            "--popover",
        ]);
        let title = match &kind {
            PanelKind::Widget(w) => {
                let name = self
                    .widgets
                    .iter()
                    .find(|(s, _)| &s.id == w)
                    .map_or("pinchat", |(s, _)| s.name.as_str());
                command.args(["--widget", w]);
                format!("pinchat — {name}")
            }
            PanelKind::AddAccount => "pinchat".to_owned(),
        };
        command.args(["--title", &title]);
        if let Some(c) = chat {
            command.args(["--chat", &c.to_string()]);
        }
        if let Some(r) = ring {
            command.args(["--ring", &r.to_string()]);
        }
        // The size the person last gave a panel, where they last moved it (kept on screen), else next
        // to the tray icon.
        let monitor = target.primary_monitor();
        let (mut w, mut h) = self
            .settings
            .panel
            .size
            .map_or((crate::panel::SIZE.width, crate::panel::SIZE.height), |(w, h)| {
                (f64::from(w), f64::from(h))
            });
        if let Some(m) = &monitor {
            // Never larger than the screen (a settings file from a bigger one, or edited by hand).
            let screen = m.size().to_logical::<f64>(m.scale_factor());
            w = w.min(screen.width);
            h = h.min(screen.height);
        }
        if self.settings.panel.size.is_some() {
            command.args([
                "--width",
                &(w as u32).to_string(),
                "--height",
                &(h as u32).to_string(),
            ]);
        }
        if let Some(monitor) = monitor {
            let scale = monitor.scale_factor();
            let screen = monitor.size();
            let (sw, sh) = (f64::from(screen.width), f64::from(screen.height));
            let at = match (self.settings.panel.position, self.anchor) {
                (Some((x, y)), _) => Some(PhysicalPosition::new(
                    f64::from(x).clamp(0.0, (sw - w * scale).max(0.0)),
                    f64::from(y).clamp(0.0, (sh - h * scale).max(0.0)),
                )),
                (None, Some(anchor)) => Some(place(anchor, w * scale, h * scale, sw, sh)),
                (None, None) => None,
            };
            if let Some(at) = at {
                command.args([
                    "--x",
                    &(at.x as i32).to_string(),
                    "--y",
                    &(at.y as i32).to_string(),
                ]);
            }
        }
        #[cfg(windows)]
        {
            // No console window for the panel's process.
            use std::os::windows::process::CommandExt;
            const CREATE_NO_WINDOW: u32 = 0x0800_0000;
            command.creation_flags(CREATE_NO_WINDOW);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(control), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("the panel's process has no control channel");
        };
        let proxy = self.proxy.clone();
        let process = Arc::new(Mutex::new(Some(child)));
        let reaped = process.clone();
        // The panel's lines, then its end (reaped here, so that no zombie is left).
        std::thread::Builder::new()
            .name("pinchat-panel".into())
            .spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    // Anything else a panel prints (a newer panel's messages) is not for this tray.
                    if let Some(msg) = crate::control::FromPanel::parse(&line) {
                        let _ = proxy.send_event(UserEvent::FromPanel(id, msg));
                    }
                }
                let child = reaped.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(mut child) = child {
                    // A panel that crashed (or was killed) says so in the log: its window is simply
                    // gone for the person.
                    match child.wait() {
                        Ok(status) if status.success() => {
                            tracing::debug!(pid = child.id(), "a panel ended");
                        }
                        Ok(status) => tracing::warn!(pid = child.id(), %status, "a panel ended"),
                        Err(e) => tracing::warn!(error = %e, "cannot reap a panel"),
                    }
                }
                let _ = proxy.send_event(UserEvent::PanelClosed(id));
            })?;
        self.panels.insert(
            id,
            Panel {
                kind,
                control,
                process,
                viewing: None,
                focused: false,
                asked_forward: false,
            },
        );
        Ok(())
    }

    fn update_tray(&mut self) {
        let words = self.lang.words();
        let total: u32 = self.widgets.iter().map(|(w, _)| w.unread).sum();
        let online = self.widgets.is_empty()
            || self
                .widgets
                .iter()
                .any(|(w, _)| w.connection == Connection::Online);
        let labels: Vec<String> = self
            .widgets
            .iter()
            .map(|(w, _)| {
                let state = match w.connection {
                    Connection::Online | Connection::Connecting => String::new(),
                    Connection::Offline => format!(" · {}", words.offline),
                    Connection::AuthRequired => format!(" · {}", words.needs_password),
                };
                format!("{} ({} {}){state}", w.name, w.unread, words.unread)
            })
            .collect();
        let autostart = crate::autostart::enabled().unwrap_or(false);
        self.update_contact_trays();
        // The modes and pinned contacts the submenus show (not their states or counts, which the
        // menus do not show).
        let modes: Vec<String> = self
            .widgets
            .iter()
            .map(|(_, d)| {
                let pins: Vec<(u64, &str)> = d.pins.iter().map(|p| (p.id, p.name.as_str())).collect();
                format!("{:?} {pins:?}", d.mode)
            })
            .collect();
        let now = (
            total,
            online,
            [labels.clone(), modes].concat(),
            self.settings.clone(),
            autostart,
        );
        if self.shown.as_ref() == Some(&now) && self.tray.is_some() {
            return;
        }
        self.shown = Some(now);
        let tooltip = if labels.is_empty() {
            words.no_accounts.to_owned()
        } else if cfg!(target_os = "linux") {
            // The StatusNotifierItem's tooltip has the title ("pinchat") above this text already.
            labels.join("\n")
        } else {
            format!("pinchat\n{}", labels.join("\n"))
        };
        let menu = Menu::new();
        let at = now_ms();
        for ((w, details), label) in self.widgets.iter().zip(&labels) {
            // One submenu per account: open its panel, how it keeps current, do not disturb.
            let sub = Submenu::new(label, true);
            let _ = sub.append(&MenuItem::with_id(
                format!("open:{}", w.id),
                words.open,
                true,
                None,
            ));
            let _ = sub.append(&PredefinedMenuItem::separator());
            for (m, word) in [
                (Mode::Push, words.mode_push),
                (Mode::Poll, words.mode_poll),
                (Mode::Manual, words.mode_manual),
            ] {
                let api = serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = sub.append(&CheckMenuItem::with_id(
                    format!("mode:{}:{api}", w.id),
                    word,
                    true,
                    details.mode == m,
                    None,
                ));
            }
            let _ = sub.append(&PredefinedMenuItem::separator());
            let dnd = self.settings.quiet(&w.id, at);
            let _ = sub.append(&CheckMenuItem::with_id(
                format!("dnd:{}", w.id),
                words.do_not_disturb,
                true,
                dnd,
                None,
            ));
            if let Some(end) = self.settings.quiet_until.get(&w.id).filter(|_| dnd) {
                let _ = sub.append(&MenuItem::new(
                    format!("{} {}", words.dnd_until, local_time(*end)),
                    false,
                    None,
                ));
            }
            let _ = sub.append(&MenuItem::with_id(
                format!("dnd-hour:{}", w.id),
                words.dnd_hour,
                true,
                None,
            ));
            let _ = sub.append(&MenuItem::with_id(
                format!("dnd-morning:{}", w.id),
                words.dnd_morning,
                true,
                None,
            ));
            let through = Submenu::new(words.let_through, !details.pins.is_empty());
            let allowed = self.settings.break_through.get(&w.id);
            for pin in &details.pins {
                let _ = through.append(&CheckMenuItem::with_id(
                    format!("through:{}:{}", w.id, pin.id),
                    &pin.name,
                    true,
                    allowed.is_some_and(|a| a.contains(&pin.id)),
                    None,
                ));
            }
            let _ = sub.append(&through);
            let in_tray = Submenu::new(words.in_tray, !details.pins.is_empty());
            for pin in &details.pins {
                let _ = in_tray.append(&CheckMenuItem::with_id(
                    format!("in-tray:{}:{}", w.id, pin.id),
                    &pin.name,
                    true,
                    self.settings.is_in_tray(&w.id, pin.id),
                    None,
                ));
            }
            let _ = sub.append(&in_tray);
            let _ = menu.append(&sub);
        }
        let _ = menu.append(&PredefinedMenuItem::separator());
        let _ = menu.append(&MenuItem::with_id("add", words.add_account, true, None));
        let language = Submenu::new(words.language, true);
        for (lang, name) in [(Lang::En, "English"), (Lang::Zh, "简体中文")] {
            let _ = language.append(&CheckMenuItem::with_id(
                format!("lang:{}", lang.code()),
                name,
                true,
                self.lang == lang,
                None,
            ));
        }
        let _ = menu.append(&language);
        let _ = menu.append(&CheckMenuItem::with_id(
            "autostart",
            words.start_at_login,
            !self.demo,
            autostart,
            None,
        ));
        let _ = menu.append(&PredefinedMenuItem::separator());
        let _ = menu.append(&MenuItem::with_id("quit", words.quit, true, None));
        let icon = match tray_icon::Icon::from_rgba(badge::render(total, online), badge::SIZE, badge::SIZE) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the tray icon");
                return;
            }
        };
        match &self.tray {
            Some(tray) => {
                let _ = tray.set_icon(Some(icon));
                let _ = tray.set_tooltip(Some(tooltip));
                tray.set_menu(Some(Box::new(menu)));
            }
            None => match TrayIconBuilder::new()
                .with_id("pinchat")
                .with_icon(icon)
                .with_tooltip(tooltip)
                .with_title("pinchat")
                .with_menu(Box::new(menu))
                .with_menu_on_left_click(false)
                .build()
            {
                Ok(tray) => {
                    self.tray = Some(tray);
                    // Scripts and tests read this line to know the tray item exists (written without
                    // `println!`, which would panic if nobody reads the output any more).
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "pinchat tray ready").and_then(|()| out.flush());
                }
                Err(e) => tracing::error!(error = %e, "cannot create the tray icon"),
            },
        }
    }
}

impl App {
    /// Gives each contact pinned to the tray an icon of their own — picture, presence, unread count —
    /// and takes away the icons of contacts no longer pinned there (or no longer pinned at all).
    fn update_contact_trays(&mut self) {
        let words = self.lang.words();
        let mut wanted = BTreeSet::new();
        for (w, details) in &self.widgets {
            for pin in details
                .pins
                .iter()
                .filter(|p| self.settings.is_in_tray(&w.id, p.id))
            {
                let key = (w.id.clone(), pin.id);
                wanted.insert(key.clone());
                let face_path = pin
                    .avatar
                    .as_deref()
                    .and_then(|h| self.avatars.as_ref()?.cached(h));
                let shown = ContactShown {
                    name: pin.name.clone(),
                    state: pin.state,
                    unread: pin.unread,
                    picture: face_path.clone(),
                    lang: self.lang,
                };
                let current = self.contact_trays.get_mut(&key);
                if current.as_ref().is_some_and(|t| t.shown == shown) {
                    continue;
                }
                let face = match current {
                    Some(t) if t.shown.picture == face_path => t.face.take(),
                    _ => face_path
                        .as_deref()
                        .and_then(|p| crate::avatars::face(p, badge::SIZE)),
                };
                let pixels =
                    badge::contact_icon(face.as_deref(), badge::name_hue(&pin.name), pin.state, pin.unread);
                let Ok(icon) = tray_icon::Icon::from_rgba(pixels, badge::SIZE, badge::SIZE) else {
                    continue;
                };
                let mut tooltip = format!("{} — {}", pin.name, words.state(pin.state.as_str()));
                if pin.unread > 0 {
                    tooltip.push_str(&format!(" ({} {})", pin.unread, words.unread));
                }
                if self.widgets.len() > 1 {
                    tooltip.push_str(&format!("\n{}", w.name));
                }
                let id = contact_tray_id(&w.id, pin.id);
                let menu = Menu::new();
                let _ = menu.append(&MenuItem::with_id(
                    format!("chat:{}:{}", w.id, pin.id),
                    words.open_chat,
                    true,
                    None,
                ));
                let _ = menu.append(&MenuItem::with_id(
                    format!("in-tray:{}:{}", w.id, pin.id),
                    words.remove_from_tray,
                    true,
                    None,
                ));
                match self.contact_trays.get_mut(&key) {
                    Some(t) => {
                        let _ = t.icon.set_icon(Some(icon));
                        let _ = t.icon.set_tooltip(Some(tooltip));
                        t.icon.set_menu(Some(Box::new(menu)));
                        t.shown = shown;
                        t.face = face;
                    }
                    None => match TrayIconBuilder::new()
                        .with_id(id)
                        .with_icon(icon)
                        .with_tooltip(tooltip)
                        .with_title(&pin.name)
                        .with_menu(Box::new(menu))
                        .with_menu_on_left_click(false)
                        .build()
                    {
                        Ok(icon) => {
                            self.contact_trays.insert(key, ContactTray { icon, shown, face });
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot create a contact's tray icon"),
                    },
                }
            }
        }
        // Dropping a tray icon takes it off the tray.
        self.contact_trays.retain(|k, _| wanted.contains(k));
    }
}

/// `<widget>:<contact>` from a menu entry's or icon's id.
fn parse_contact(s: &str) -> Option<(String, u64)> {
    let (widget, contact) = s.rsplit_once(':')?;
    Some((widget.to_owned(), contact.parse().ok()?))
}

/// Notifications whose click is being waited for (Windows, macOS).
#[cfg(not(target_os = "linux"))]
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// At most this many notifications wait for a click at once (Windows, macOS).
#[cfg(not(target_os = "linux"))]
const MAX_WAITING: usize = 32;

/// Where a click on a notification goes: on Linux the one listener for every notification; elsewhere
/// the event loop, told by a thread that waits for that notification.
#[cfg(target_os = "linux")]
type ClickTarget = crate::clicks::Clicks;
#[cfg(not(target_os = "linux"))]
type ClickTarget = EventLoopProxy<UserEvent>;

/// A message notification's title: the sender, and the account it came to when there are several.
fn notification_title(lang: Lang, sender: &str, account: Option<&str>) -> String {
    let from = lang.words().new_message_from;
    match account {
        Some(account) => format!("{from} {sender} ({account})"),
        None => format!("{from} {sender}"),
    }
}

/// Raises an OS notification for a new message; activating it opens the chat. On Linux the one
/// notification thread shows it, on the bus connection that hears its click (`clicks.rs`).
#[cfg(target_os = "linux")]
fn notify(
    clicked: ClickTarget,
    lang: Lang,
    title: String,
    widget: String,
    contact: u64,
    text: String,
    avatar: Option<PathBuf>,
) {
    clicked.show(crate::clicks::Show {
        title,
        mark_read: lang.words().mark_read.to_owned(),
        reply: lang.words().reply.to_owned(),
        body: text,
        widget,
        contact,
        image: avatar,
    });
}

/// Raises an OS notification for a new message; activating it opens the chat.
#[cfg(not(target_os = "linux"))]
fn notify(
    clicked: ClickTarget,
    _lang: Lang,
    title: String,
    widget: String,
    contact: u64,
    text: String,
    avatar: Option<PathBuf>,
) {
    toast(
        clicked,
        Toast {
            title,
            body: text,
            avatar,
            clicked: UserEvent::OpenChat(widget, contact),
            timeout_ms: 10_000,
        },
    );
}

/// An incoming call's notification on Windows and macOS: who calls, and its Accept and Decline.
#[cfg(not(target_os = "linux"))]
struct CallToast {
    title: String,
    body: String,
    accept: String,
    decline: String,
    avatar: Option<PathBuf>,
    widget: String,
    contact: u64,
    call: u64,
}

/// Shows an incoming call as a Windows toast with Accept and Decline (notify-rust has no buttons
/// there; this is the toast library it uses). A button or a click on the toast goes to the event loop
/// as `CallClicked`, as on Linux. It stays 25 s (Windows' long toast), about the ring time; a toast
/// cannot be taken away when the call stops ringing, so a late click finds the call over and is
/// ignored.
#[cfg(windows)]
fn call_toast(target: EventLoopProxy<UserEvent>, t: CallToast) {
    use tauri_winrt_notification::{Duration, IconCrop, Toast};
    let spawned = std::thread::Builder::new()
        .name("pinchat-call-toast".into())
        .spawn(move || {
            let CallToast {
                title,
                body,
                accept,
                decline,
                avatar,
                widget,
                contact,
                call,
            } = t;
            let mut toast = Toast::new(Toast::POWERSHELL_APP_ID)
                .title(&title)
                .text1(&body)
                .duration(Duration::Long)
                .add_button(&accept, "accept")
                .add_button(&decline, "decline")
                .on_activated(move |action| {
                    let answer = match action.as_deref() {
                        Some("accept") => Some(true),
                        Some("decline") => Some(false),
                        _ => None,
                    };
                    let _ = target.send_event(UserEvent::CallClicked(widget.clone(), contact, call, answer));
                    Ok(())
                });
            if let Some(path) = avatar.as_deref() {
                toast = toast.icon(path, IconCrop::Circular, "");
            }
            if let Err(e) = toast.show() {
                tracing::warn!(error = %e, "cannot show an incoming call's notification");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot show an incoming call's notification");
    }
}

/// Shows an incoming call as a macOS notification with Accept and Decline (notify-rust's actions,
/// which macOS shows in the notification's options menu and reports by their labels); a choice or a
/// click goes to the event loop as `CallClicked`, as on Linux. It expires with the ring time; it cannot
/// be taken away when the call stops ringing, so a late choice finds the call over and is ignored.
#[cfg(target_os = "macos")]
fn call_toast(target: EventLoopProxy<UserEvent>, t: CallToast) {
    let spawned = std::thread::Builder::new()
        .name("pinchat-call-toast".into())
        .spawn(move || {
            let CallToast {
                title,
                body,
                accept,
                decline,
                avatar,
                widget,
                contact,
                call,
            } = t;
            let mut n = notify_rust::Notification::new();
            n.appname("pinchat")
                .summary(&title)
                .body(&body)
                .action("accept", &accept)
                .action("decline", &decline)
                .timeout(notify_rust::Timeout::Milliseconds(30_000));
            if let Some(path) = avatar.as_deref().and_then(|p| p.to_str()) {
                n.image_path(path);
            }
            match n.show() {
                Ok(handle) => {
                    if WAITING.fetch_add(1, Ordering::SeqCst) < MAX_WAITING {
                        handle.wait_for_action(|action| {
                            let answer = if action == accept || action == "accept" {
                                Some(true)
                            } else if action == decline || action == "decline" {
                                Some(false)
                            } else if action == "default" {
                                None
                            } else {
                                // Closed, or expired.
                                return;
                            };
                            let _ = target.send_event(UserEvent::CallClicked(widget, contact, call, answer));
                        });
                    } else {
                        drop(handle);
                    }
                    WAITING.fetch_sub(1, Ordering::SeqCst);
                }
                Err(e) => tracing::warn!(error = %e, "cannot show an incoming call's notification"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot show an incoming call's notification");
    }
}

/// An OS notification on Windows and macOS, and what a click on it does.
#[cfg(not(target_os = "linux"))]
struct Toast {
    title: String,
    body: String,
    avatar: Option<PathBuf>,
    clicked: UserEvent,
    timeout_ms: u32,
}

/// Shows `toast`; a click on it sends its event to the event loop.
#[cfg(not(target_os = "linux"))]
fn toast(target: ClickTarget, toast: Toast) {
    let Toast {
        title,
        body: text,
        avatar,
        clicked: event,
        timeout_ms,
    } = toast;
    // Showing is a blocking call (the notification center on macOS — answered on the main thread,
    // which the event loop keeps running): off the event loop.
    let spawned = std::thread::Builder::new()
        .name("pinchat-notification".into())
        .spawn(move || {
            let mut n = notify_rust::Notification::new();
            n.appname("pinchat")
                .summary(&title)
                .body(&text)
                .timeout(notify_rust::Timeout::Milliseconds(timeout_ms));
            // The sender's avatar, where the system shows an image.
            if let Some(path) = avatar.as_deref().and_then(|p| p.to_str()) {
                n.image_path(path);
            }
            // The default action is a click on the notification. On macOS a click is reported as
            // "default" without it, and an action there would add a button.
            #[cfg(not(target_os = "macos"))]
            n.action("default", &title);
            match n.show() {
                Ok(handle) => {
                    // Each wait holds this thread until the notification is clicked or closed: only
                    // so many wait at once; beyond that, a notification is shown without acting on
                    // its click.
                    if WAITING.fetch_add(1, Ordering::SeqCst) < MAX_WAITING {
                        handle.wait_for_action(|action| {
                            if action == "default" {
                                let _ = target.send_event(event);
                            }
                        });
                    } else {
                        drop(handle);
                    }
                    WAITING.fetch_sub(1, Ordering::SeqCst);
                }
                Err(e) => tracing::warn!(error = %e, "cannot show a notification"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot show a notification");
    }
}

/// Now, in Unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The next 8:00 local time after `now` (Unix ms): when "until tomorrow morning" ends.
fn next_morning(now: u64) -> u64 {
    use chrono::{Local, NaiveTime, TimeZone};
    let fallback = now + 12 * crate::settings::HOUR_MS;
    let Some(local) = Local.timestamp_millis_opt(now as i64).single() else {
        return fallback;
    };
    let eight = NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default();
    let today = local.date_naive();
    [Some(today), today.succ_opt()]
        .into_iter()
        .flatten()
        .filter_map(|day| Local.from_local_datetime(&day.and_time(eight)).earliest())
        .map(|t| t.timestamp_millis() as u64)
        .find(|&t| t > now)
        .unwrap_or(fallback)
}

/// `at` (Unix ms) as a local time of day, `09:30`.
fn local_time(at: u64) -> String {
    use chrono::{Local, TimeZone};
    Local
        .timestamp_millis_opt(at as i64)
        .single()
        .map_or_else(String::new, |t| t.format("%H:%M").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_tomorrow_morning_ends_at_the_next_eight_o_clock() {
        use chrono::{Local, TimeZone, Timelike};
        let now = now_ms();
        let end = next_morning(now);
        assert!(end > now && end <= now + 25 * crate::settings::HOUR_MS);
        let local = Local.timestamp_millis_opt(end as i64).unwrap();
        assert_eq!((local.hour(), local.minute()), (8, 0));
        // From just after eight, the next day's.
        assert_eq!(next_morning(end), next_morning(end + 1));
        assert!(next_morning(end) > end + 20 * crate::settings::HOUR_MS);
        assert_eq!(local_time(end), "08:00");
    }

    #[test]
    fn a_notification_names_the_account_only_when_there_are_several() {
        assert_eq!(
            notification_title(Lang::En, "Alice", None),
            "New message from Alice"
        );
        assert_eq!(
            notification_title(Lang::En, "Alice", Some("Work")),
            "New message from Alice (Work)"
        );
    }

    fn icon(x: f64, y: f64) -> Anchor {
        Anchor::Icon(tray_icon::Rect {
            position: PhysicalPosition::new(x, y),
            size: tao::dpi::PhysicalSize::new(24, 24),
        })
    }

    #[test]
    fn panels_open_next_to_the_icon_and_stay_on_screen() {
        // Windows: taskbar at the bottom right; the panel sits above the icon.
        let p = place(icon(1800.0, 1050.0), 360.0, 560.0, 1920.0, 1080.0);
        assert_eq!((p.x, p.y), (1920.0 - 360.0, 1050.0 - 560.0));
        // macOS: menu bar at the top; the panel hangs below the icon, centred on it.
        let p = place(icon(1000.0, 0.0), 360.0, 560.0, 1920.0, 1080.0);
        assert_eq!((p.x, p.y), (1000.0 + 12.0 - 180.0, 24.0));
        // Linux: the click position only; the panel's top-right corner there.
        let p = place(
            Anchor::Click(PhysicalPosition::new(900.0, 10.0)),
            360.0,
            560.0,
            1024.0,
            768.0,
        );
        assert_eq!((p.x, p.y), (540.0, 10.0));
        // Never off screen.
        let p = place(
            Anchor::Click(PhysicalPosition::new(100.0, 10.0)),
            360.0,
            560.0,
            1024.0,
            768.0,
        );
        assert_eq!(p.x, 0.0);
    }
}
