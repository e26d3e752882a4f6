//! The graphical app: the tao event loop (`ControlFlow::Wait`: it sleeps until something happens), the
//! tray icon and its menu, and the panels.
//!
//! A panel is a window with a wry webview showing the embedded single-page UI (`assets/`), served
//! through the `pinchat` custom protocol with a strict CSP: nothing is loaded from the network. One
//! panel per widget (plus one for adding an account); it is created when opened and **destroyed when
//! closed**, so an idle app holds no webview. The page talks to the daemon through the backend with
//! `window.ipc.postMessage({id, method, params})`; answers and notifications come back through
//! `evaluate_script` calls to `window.pinchat.reply` and `window.pinchat.event`.

use crate::backend::{Backend, PanelId, ToUi};
use crate::i18n::Lang;
use crate::settings::Settings;
use crate::{assets, badge};
use pinchat_ipc::api::{Connection, Mode, WidgetSummary};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use tao::dpi::{LogicalSize, PhysicalPosition};
use tao::event::{Event, StartCause, WindowEvent};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy, EventLoopWindowTarget};
use tao::window::{Window, WindowBuilder, WindowId};
use tray_icon::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu};
use tray_icon::{TrayIcon, TrayIconBuilder, TrayIconEvent};
use wry::{WebContext, WebView, WebViewBuilder};

/// Everything that wakes the event loop.
#[derive(Debug)]
pub enum UserEvent {
    /// The tray icon was clicked.
    Tray(TrayIconEvent),
    /// A tray menu entry was chosen.
    Menu(MenuEvent),
    /// The backend has something.
    Backend(ToUi),
    /// A panel's page posted a message.
    FromPanel(PanelId, String),
    /// An OS notification was activated: open that chat.
    OpenChat(String, u64),
}

/// What a panel shows first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PanelKind {
    /// A widget's panel (widget view, details, chat, re-pick, re-authentication).
    Widget(String),
    /// Adding an account: login, then picking contacts.
    AddAccount,
}

struct Panel {
    id: PanelId,
    kind: PanelKind,
    // Dropped in this order: the webview, its window, then its web context.
    webview: WebView,
    window: Window,
    _context: WebContext,
}

struct App {
    lang: Lang,
    /// Taken (and stopped) when the loop ends.
    backend: Option<Backend>,
    proxy: EventLoopProxy<UserEvent>,
    tray: Option<TrayIcon>,
    widgets: Vec<(WidgetSummary, Mode)>,
    settings: Settings,
    settings_path: Option<std::path::PathBuf>,
    /// What the tray shows now: (total unread, any online, menu labels); rebuilt only when it changes.
    shown: Option<(u32, bool, Vec<String>, Settings, bool)>,
    panels: HashMap<WindowId, Panel>,
    next_panel: PanelId,
    /// Under automation, the web context the WebDriver attaches to, for the first panel (WebKitGTK
    /// allows one automation context and hands the driver its first webview).
    automation_context: Option<WebContext>,
    /// Where the tray icon is, to place panels near it.
    anchor: Option<Anchor>,
    /// The chat the next widget panel opens on (an activated notification).
    chat_on_open: Option<u64>,
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

/// The URL the panels load, per platform (wry serves custom protocols at `http://<name>.localhost` on
/// Windows).
fn page_url(query: &str) -> String {
    if cfg!(windows) {
        format!("http://pinchat.localhost/index.html?{query}")
    } else {
        format!("pinchat://localhost/index.html?{query}")
    }
}

/// Connects to the daemon (or starts it) and runs the app until "Quit".
///
/// With `automation`, the webviews accept a WebDriver (WebKitWebDriver on Linux) and a panel opens at
/// once: WebKitGTK hands the driver the first webview of the context.
pub fn run(
    options: crate::backend::Options,
    lang: Lang,
    automation: bool,
    settings: (Settings, Option<std::path::PathBuf>),
    on_exit: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<std::convert::Infallible> {
    let (settings, settings_path) = settings;
    let event_loop = EventLoopBuilder::<UserEvent>::with_user_event().build();
    let proxy = event_loop.create_proxy();
    let backend = {
        let p = std::sync::Mutex::new(proxy.clone());
        Backend::start(options, move |e| {
            let _ = p
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send_event(UserEvent::Backend(e));
        })?
    };
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
    let automation_context = automation.then(|| {
        let mut context = WebContext::new(None);
        // Lets WebKitWebDriver drive the real panels in the end-to-end tests (Linux; a no-op elsewhere).
        context.set_allows_automation(true);
        context
    });
    let mut app = App {
        lang,
        backend: Some(backend),
        proxy,
        tray: None,
        widgets: vec![],
        shown: None,
        settings,
        settings_path,
        panels: HashMap::new(),
        next_panel: 1,
        automation_context,
        anchor: None,
        chat_on_open: None,
    };
    let mut on_exit = Some(on_exit);
    event_loop.run(move |event, target, control_flow| {
        *control_flow = ControlFlow::Wait;
        match event {
            // The tray is created once the loop runs (macOS requires it).
            Event::NewEvents(StartCause::Init) => {
                app.update_tray();
                if automation {
                    app.open_main(target);
                }
            }
            Event::UserEvent(e) => {
                let quit = app.user_event(e, target);
                *control_flow = if quit {
                    ControlFlow::Exit
                } else {
                    ControlFlow::Wait
                };
            }
            Event::WindowEvent {
                window_id,
                event: WindowEvent::CloseRequested,
                ..
            } => {
                app.panels.remove(&window_id);
            }
            Event::LoopDestroyed => {
                app.panels.clear();
                app.tray = None;
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
    })
}

impl App {
    /// Handles one event; `true` to quit.
    fn user_event(&mut self, event: UserEvent, target: &EventLoopWindowTarget<UserEvent>) -> bool {
        match event {
            UserEvent::Tray(TrayIconEvent::Click {
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
                // Like a popover: a click opens the panel, the next one closes it.
                if self.panels.is_empty() {
                    self.open_main(target);
                } else {
                    self.panels.clear();
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
            UserEvent::FromPanel(panel, body) => self.panel_message(panel, &body),
            UserEvent::Backend(ToUi::Reply { panel, id, result }) => {
                let (ok, value) = match result {
                    Ok(v) => (true, v),
                    Err(e) => (false, e),
                };
                self.script(
                    panel,
                    &format!("window.pinchat&&window.pinchat.reply({id},{ok},{value})"),
                );
            }
            UserEvent::Backend(ToUi::Notification(n)) => {
                let js = format!("window.pinchat&&window.pinchat.event({n})");
                for p in self.panels.values() {
                    let _ = p.webview.evaluate_script(&js);
                }
            }
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
            }) => {
                if !self.settings.do_not_disturb.contains(&widget) {
                    notify(self.proxy.clone(), self.lang, widget, contact, name, text);
                }
            }
            UserEvent::OpenChat(widget, contact) => self.open_chat(widget, contact, target),
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
            self.open(PanelKind::AddAccount, target);
        } else if let Some(widget) = id.strip_prefix("open:") {
            self.open(PanelKind::Widget(widget.to_owned()), target);
        } else if let Some(widget) = id.strip_prefix("dnd:") {
            if !self.settings.do_not_disturb.remove(widget) {
                self.settings.do_not_disturb.insert(widget.to_owned());
            }
            self.save_settings();
        } else if let Some(rest) = id.strip_prefix("mode:") {
            let Some((widget, mode)) = rest.rsplit_once(':') else {
                return;
            };
            let params = serde_json::json!({ "widget": widget, "mode": mode });
            if let Some(backend) = &self.backend {
                // The answer (and the widget list refresh that follows) comes back as usual; panel 0
                // is nobody's, so the reply is dropped.
                let _ = backend.request(0, 0, "widget.set_mode".into(), params);
            }
        } else if let Some(code) = id.strip_prefix("lang:") {
            self.lang = if code == "zh" { Lang::Zh } else { Lang::En };
            self.settings.lang = Some(self.lang);
            self.save_settings();
        } else if id == "autostart"
            && let Err(e) = toggle_autostart()
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

    /// Opens (or shows) a widget's panel on the chat with `contact`.
    fn open_chat(&mut self, widget: String, contact: u64, target: &EventLoopWindowTarget<UserEvent>) {
        let kind = PanelKind::Widget(widget);
        if let Some(p) = self.panels.values().find(|p| p.kind == kind) {
            p.window.set_visible(true);
            p.window.set_focus();
            let _ = p
                .webview
                .evaluate_script(&format!("window.pinchat&&window.pinchat.openChat({contact})"));
            return;
        }
        self.chat_on_open = Some(contact);
        self.open(kind, target);
    }

    /// The tray click: the first widget's panel, or adding an account when there is none.
    fn open_main(&mut self, target: &EventLoopWindowTarget<UserEvent>) {
        match self.widgets.first() {
            Some((w, _)) => self.open(PanelKind::Widget(w.id.clone()), target),
            None => self.open(PanelKind::AddAccount, target),
        }
    }

    fn open(&mut self, kind: PanelKind, target: &EventLoopWindowTarget<UserEvent>) {
        if let Some(p) = self.panels.values().find(|p| p.kind == kind) {
            p.window.set_visible(true);
            p.window.set_focus();
            return;
        }
        match self.build_panel(kind, target) {
            Ok(panel) => {
                self.panels.insert(panel.window.id(), panel);
            }
            Err(e) => tracing::error!(error = %e, "cannot open a panel"),
        }
    }

    fn build_panel(
        &mut self,
        kind: PanelKind,
        target: &EventLoopWindowTarget<UserEvent>,
    ) -> anyhow::Result<Panel> {
        let id = self.next_panel;
        self.next_panel += 1;
        let (title, query) = match &kind {
            PanelKind::Widget(w) => {
                let name = self
                    .widgets
                    .iter()
                    .find(|(s, _)| &s.id == w)
                    .map_or("pinchat", |(s, _)| s.name.as_str());
                let chat = self
                    .chat_on_open
                    .take()
                    .map(|c| format!("&chat={c}"))
                    .unwrap_or_default();
                (
                    format!("pinchat — {name}"),
                    format!(
                        "lang={}&view=widget&widget={}{chat}",
                        self.lang.code(),
                        urlencode(w)
                    ),
                )
            }
            PanelKind::AddAccount => (
                "pinchat".to_owned(),
                format!("lang={}&view=login", self.lang.code()),
            ),
        };
        let size = LogicalSize::new(360.0, 560.0);
        let mut builder = WindowBuilder::new()
            .with_title(title)
            .with_inner_size(size)
            .with_min_inner_size(LogicalSize::new(300.0, 360.0));
        if let (Some(anchor), Some(monitor)) = (self.anchor, target.primary_monitor()) {
            let scale = monitor.scale_factor();
            let screen = monitor.size();
            builder = builder.with_position(place(
                anchor,
                size.width * scale,
                size.height * scale,
                screen.width as f64,
                screen.height as f64,
            ));
        }
        let window = builder.build(target)?;
        let proxy = self.proxy.clone();
        // A web context per panel: on Linux a context registers the `pinchat` scheme once, and a second
        // webview on it would fail with "duplicate custom protocol".
        let mut context = self
            .automation_context
            .take()
            .unwrap_or_else(|| WebContext::new(None));
        let webview = WebViewBuilder::new_with_web_context(&mut context)
            .with_custom_protocol("pinchat".into(), |_id, request| serve_asset(request.uri().path()))
            .with_ipc_handler(move |req| {
                let _ = proxy.send_event(UserEvent::FromPanel(id, req.into_body()));
            })
            // The panel never leaves its own pages.
            .with_navigation_handler(|url| {
                url.starts_with("pinchat://") || url.starts_with("http://pinchat.localhost/")
            })
            .with_url(page_url(&query));
        #[cfg(target_os = "linux")]
        let webview = {
            use tao::platform::unix::WindowExtUnix;
            use wry::WebViewBuilderExtUnix;
            let vbox = window
                .default_vbox()
                .ok_or_else(|| anyhow::anyhow!("the window has no GTK container"))?;
            webview.build_gtk(vbox)?
        };
        #[cfg(not(target_os = "linux"))]
        let webview = webview.build(&window)?;
        Ok(Panel {
            id,
            kind,
            webview,
            window,
            _context: context,
        })
    }

    /// A message from a panel's page: `{id, method, params}`.
    fn panel_message(&mut self, panel: PanelId, body: &str) {
        let parsed: Result<Value, _> = serde_json::from_str(body);
        let Ok(msg) = parsed else {
            tracing::warn!("a panel sent a message that is not JSON");
            return;
        };
        let id = msg.get("id").and_then(Value::as_u64).unwrap_or(0);
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("").to_owned();
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        match method.as_str() {
            "ui.close" => {
                self.panels.retain(|_, p| p.id != panel);
            }
            "ui.opened" => {
                // A panel that created a widget becomes that widget's panel.
                if let Some(w) = params.get("widget").and_then(Value::as_str)
                    && let Some(p) = self.panels.values_mut().find(|p| p.id == panel)
                {
                    p.kind = PanelKind::Widget(w.to_owned());
                }
                self.script(
                    panel,
                    &format!("window.pinchat&&window.pinchat.reply({id},true,{{}})"),
                );
            }
            _ => {
                let Some(backend) = &self.backend else { return };
                if let Err(e) = backend.request(panel, id, method, params) {
                    self.script(
                        panel,
                        &format!("window.pinchat&&window.pinchat.reply({id},false,{e})"),
                    );
                }
            }
        }
    }

    fn script(&self, panel: PanelId, js: &str) {
        if let Some(p) = self.panels.values().find(|p| p.id == panel) {
            let _ = p.webview.evaluate_script(js);
        }
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
        let autostart = autostart_enabled();
        let modes: Vec<String> = self.widgets.iter().map(|(_, m)| format!("{m:?}")).collect();
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
        } else {
            format!("pinchat\n{}", labels.join("\n"))
        };
        let menu = Menu::new();
        for ((w, mode), label) in self.widgets.iter().zip(&labels) {
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
                    *mode == m,
                    None,
                ));
            }
            let _ = sub.append(&PredefinedMenuItem::separator());
            let dnd = self.settings.do_not_disturb.contains(&w.id);
            let _ = sub.append(&CheckMenuItem::with_id(
                format!("dnd:{}", w.id),
                words.do_not_disturb,
                true,
                dnd,
                None,
            ));
            let _ = menu.append(&sub);
        }
        let _ = menu.append(&PredefinedMenuItem::separator());
        let _ = menu.append(&MenuItem::with_id("add", words.add_account, true, None));
        let language = Submenu::new(words.language, true);
        let _ = language.append(&CheckMenuItem::with_id(
            "lang:en",
            "English",
            true,
            self.lang == Lang::En,
            None,
        ));
        let _ = language.append(&CheckMenuItem::with_id(
            "lang:zh",
            "简体中文",
            true,
            self.lang == Lang::Zh,
            None,
        ));
        let _ = menu.append(&language);
        let _ = menu.append(&CheckMenuItem::with_id(
            "autostart",
            words.start_at_login,
            true,
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
                    // Scripts and tests read this line to know the tray item exists.
                    println!("pinchat tray ready");
                }
                Err(e) => tracing::error!(error = %e, "cannot create the tray icon"),
            },
        }
    }
}

/// Raises an OS notification for a new message; activating it opens the chat (Linux and Windows; on
/// macOS the notification only informs).
fn notify(
    proxy: EventLoopProxy<UserEvent>,
    lang: Lang,
    widget: String,
    contact: u64,
    name: String,
    text: String,
) {
    let title = format!("{} {name}", lang.words().new_message_from);
    // Showing and waiting for the click are blocking calls (D-Bus on Linux): off the event loop.
    let spawned = std::thread::Builder::new()
        .name("pinchat-notification".into())
        .spawn(move || {
            let mut n = notify_rust::Notification::new();
            n.appname("pinchat")
                .summary(&title)
                .body(&text)
                .timeout(notify_rust::Timeout::Milliseconds(10_000));
            #[cfg(any(target_os = "linux", windows))]
            n.action("default", &title);
            match n.show() {
                #[cfg(any(target_os = "linux", windows))]
                Ok(handle) => handle.wait_for_action(|action| {
                    if action == "default" {
                        let _ = proxy.send_event(UserEvent::OpenChat(widget, contact));
                    }
                }),
                #[cfg(not(any(target_os = "linux", windows)))]
                Ok(_) => {
                    let _ = (proxy, widget, contact);
                }
                Err(e) => tracing::warn!(error = %e, "cannot show a notification"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot show a notification");
    }
}

fn autolaunch() -> Option<auto_launch::AutoLaunch> {
    let exe = std::env::current_exe().ok()?;
    auto_launch::AutoLaunchBuilder::new()
        .set_app_name("pinchat")
        .set_app_path(&exe.to_string_lossy())
        .build()
        .ok()
}

/// Whether the app starts at login (XDG autostart, a LaunchAgent, or the Run registry key).
fn autostart_enabled() -> bool {
    autolaunch().and_then(|a| a.is_enabled().ok()).unwrap_or(false)
}

fn toggle_autostart() -> anyhow::Result<()> {
    let a = autolaunch().ok_or_else(|| anyhow::anyhow!("cannot find this program's path"))?;
    if a.is_enabled()? {
        a.disable()?;
    } else {
        a.enable()?;
    }
    Ok(())
}

/// Serves an embedded file with a strict Content-Security-Policy.
fn serve_asset(path: &str) -> wry::http::Response<Cow<'static, [u8]>> {
    match assets::get(path) {
        Some((mime, body)) => wry::http::Response::builder()
            .header("Content-Type", mime)
            .header("Content-Security-Policy", assets::CSP)
            .body(Cow::Borrowed(body))
            .unwrap_or_else(|_| not_found()),
        None => not_found(),
    }
}

fn not_found() -> wry::http::Response<Cow<'static, [u8]>> {
    let mut r = wry::http::Response::new(Cow::Borrowed(&b"not found"[..]));
    *r.status_mut() = wry::http::StatusCode::NOT_FOUND;
    r
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
