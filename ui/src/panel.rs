//! A panel in its own process: one window with a wry webview showing the embedded single-page UI
//! (`assets/`), served through the `pinchat` custom protocol with a strict CSP — nothing is loaded from
//! the network.
//!
//! The tray app starts `pinchat panel …` when a panel opens and ends it when the panel closes, so that
//! closing a panel gives back everything the webview took: the WebKit web and network processes and
//! the heap the UI process grew for them end with this process (WebKitGTK keeps its network process for
//! the life of the process that started it). A crash of the web engine takes one panel with it, never
//! the tray or an embedded daemon.
//!
//! The panel reaches the daemon on its own local-API connection, through the same [`Backend`] as the
//! tray (attach only: a panel never starts a daemon). The page talks to it with
//! `window.ipc.postMessage({id, method, params})`; answers and notifications come back through
//! `evaluate_script` calls to `window.pinchat.reply` and `window.pinchat.event`.
//!
//! With `--managed` (how the tray starts it), standard input and output are a line-oriented control
//! channel with the tray, private to this binary (both ends are the same executable, so the two sides
//! cannot disagree on it): the tray writes `show` or `chat <contact id>`, and end of input means
//! "close"; the panel writes `opened <widget id>` when an add-account panel has created its widget.

use crate::assets;
use crate::backend::{Backend, Options, PageBackend, Sink, ToUi};
use crate::i18n::Lang;
use std::borrow::Cow;
use std::io::BufRead;
use tao::dpi::{LogicalSize, PhysicalPosition};
use tao::event::{Event, WindowEvent};
use tao::event_loop::{ControlFlow, EventLoop, EventLoopBuilder};
use tao::window::{Window, WindowBuilder};
use wry::{WebContext, WebView, WebViewBuilder};

/// What the panel shows and how it was started.
#[derive(Debug, Clone, Default)]
pub struct PanelArgs {
    /// The widget whose panel this is; `None` for adding an account (login, then picking contacts).
    pub widget: Option<String>,
    /// Open on the chat with this contact (an activated notification).
    pub chat: Option<u64>,
    /// Open ringing with this incoming call.
    pub ring: Option<crate::control::Ring>,
    /// The window's title.
    pub title: String,
    /// Where the window goes (next to the tray icon, or where the person last moved it), in physical
    /// pixels.
    pub position: Option<(i32, i32)>,
    /// The window's inner size in logical pixels (the size the person last gave it); [`SIZE`] if `None`.
    pub size: Option<(u32, u32)>,
    /// Started by the tray: standard input and output are the control channel.
    pub managed: bool,
    /// A popover: no taskbar entry, closed when it loses focus (unless the page keeps it open).
    pub popover: bool,
    /// Accept a WebDriver (WebKitWebDriver on Linux; the end-to-end tests).
    pub automation: bool,
    /// The full client's window (`pinchat-full`): an application window of its own (a Dock icon on
    /// macOS), larger, with the page in its full-client mode — every contact, searchable.
    pub full: bool,
    /// The full client's login form starts with this server…
    pub server: Option<String>,
    /// …and this account name.
    pub account: Option<String>,
}

/// What wakes the panel's event loop.
#[derive(Debug)]
enum PanelEvent {
    /// The backend has something.
    Backend(ToUi),
    /// The page posted a message.
    FromPage(String),
    /// The tray asked to show the window.
    Show,
    /// The tray asked to show the chat with this contact.
    Chat(u64),
    /// The tray's language changed.
    Lang(Lang),
    /// The tray asked to answer this incoming call (accepted in its OS notification).
    Answer(u64),
    /// The tray closed the control channel (or went away).
    Close,
    /// The page has loaded (its scripts have run).
    Loaded,
    /// The native call engine has news for the page (`window.pinchat.media`).
    #[cfg(target_os = "linux")]
    Media(serde_json::Value),
    /// The answer to a `ui.media` request carried out on another thread.
    #[cfg(target_os = "linux")]
    MediaDone(u64, Result<(), (&'static str, String)>),
}

/// How long after its page has loaded a window is shown even if the page never said it had drawn
/// (a page that failed): a window that never appears would be worse than one blank frame.
const SHOW_ANYWAY: std::time::Duration = std::time::Duration::from_secs(1);

/// How far (physical pixels) the window must move from where it was shown to count as moved by the
/// person rather than adjusted by the window manager (frames, panels).
const MOVED_BY_HAND: i32 = 48;

/// The panel's size in logical pixels (the tray places it from this).
pub const SIZE: LogicalSize<f64> = LogicalSize::new(360.0, 560.0);

/// The URL the panel loads, per platform. On Windows wry serves custom protocols at
/// `https://<name>.localhost` (asked for with `with_https_scheme`): WebView2 gives the camera and the
/// microphone (`getUserMedia`, for calls) to secure origins only.
fn page_url(query: &str) -> String {
    if cfg!(windows) {
        format!("https://pinchat.localhost/index.html?{query}")
    } else {
        format!("pinchat://localhost/index.html?{query}")
    }
}

/// The full client's window size in logical pixels.
pub const FULL_SIZE: LogicalSize<f64> = LogicalSize::new(720.0, 640.0);

/// The page's query string for `args`.
fn page_query(args: &PanelArgs, lang: Lang) -> String {
    if args.full {
        let mut q = format!("lang={}&mode=full&view=login", lang.code());
        for (name, value) in [("server", &args.server), ("account", &args.account)] {
            if let Some(v) = value {
                q.push_str(&format!("&{name}={}", urlencode(v)));
            }
        }
        return q;
    }
    match &args.widget {
        Some(w) => {
            let chat = args.chat.map(|c| format!("&chat={c}")).unwrap_or_default();
            let ring = args.ring.map(|r| format!("&ring={r}")).unwrap_or_default();
            format!(
                "lang={}&view=widget&widget={}{chat}{ring}",
                lang.code(),
                urlencode(w)
            )
        }
        None => format!("lang={}&view=login", lang.code()),
    }
}

/// An event loop for a process of the tray app (no Dock icon on macOS: the app lives in the menu bar)
/// and a [`Backend`] whose news arrives in it as `wrap(news)`.
pub(crate) fn event_loop_with_backend<E: std::fmt::Debug + Send + 'static>(
    options: Options,
    wrap: fn(ToUi) -> E,
) -> anyhow::Result<(EventLoop<E>, Backend)> {
    let event_loop = event_loop(true);
    let backend = Backend::start(options, sink(&event_loop, wrap))?;
    Ok((event_loop, backend))
}

/// An event loop; an `accessory` process has no Dock icon on macOS (the tray app lives in the menu
/// bar; the full client is an application of its own).
fn event_loop<E: std::fmt::Debug + Send + 'static>(accessory: bool) -> EventLoop<E> {
    let mut event_loop = EventLoopBuilder::<E>::with_user_event().build();
    #[cfg(target_os = "macos")]
    if accessory {
        use tao::platform::macos::{ActivationPolicy, EventLoopExtMacOS};
        event_loop.set_activation_policy(ActivationPolicy::Accessory);
    }
    #[cfg(not(target_os = "macos"))]
    let _ = (&mut event_loop, accessory);
    event_loop
}

/// A sink that wakes `event_loop` with `wrap(news)`.
fn sink<E: std::fmt::Debug + Send + 'static>(event_loop: &EventLoop<E>, wrap: fn(ToUi) -> E) -> Sink {
    // The proxy is Send but not Sync, and the sink is called from the backend's threads.
    let proxy = std::sync::Mutex::new(event_loop.create_proxy());
    Box::new(move |news| {
        let _ = proxy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send_event(wrap(news));
    })
}

/// Runs one panel until it is closed (by the person, by the page, or by the tray).
pub fn run(options: Options, lang: Lang, args: PanelArgs) -> anyhow::Result<std::convert::Infallible> {
    run_page(lang, args, move |sink| {
        Ok(Box::new(Backend::start(options, sink)?) as Box<dyn PageBackend>)
    })
}

/// Runs one window of the panel page until it is closed, its requests answered by the backend `start`
/// makes (given the sink for its answers and news).
pub fn run_page(
    lang: Lang,
    args: PanelArgs,
    start: impl FnOnce(Sink) -> anyhow::Result<Box<dyn PageBackend>>,
) -> anyhow::Result<std::convert::Infallible> {
    let event_loop = event_loop(!args.full);
    let backend = start(sink(&event_loop, PanelEvent::Backend))?;
    let proxy = event_loop.create_proxy();
    if args.managed {
        let p = proxy.clone();
        // Blocking reads of standard input: on their own thread. End of input (the tray closed the
        // panel, quit or died) closes the panel.
        std::thread::Builder::new()
            .name("pinchat-panel-control".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    let event = match crate::control::ToPanel::parse(&line) {
                        Some(crate::control::ToPanel::Chat(c)) => PanelEvent::Chat(c),
                        Some(crate::control::ToPanel::Show) => PanelEvent::Show,
                        Some(crate::control::ToPanel::Lang(l)) => PanelEvent::Lang(l),
                        Some(crate::control::ToPanel::Answer(c)) => PanelEvent::Answer(c),
                        None => continue,
                    };
                    if p.send_event(event).is_err() {
                        return;
                    }
                }
                let _ = p.send_event(PanelEvent::Close);
            })?;
    }
    let size = args
        .size
        .map_or(if args.full { FULL_SIZE } else { SIZE }, |(w, h)| {
            LogicalSize::new(f64::from(w), f64::from(h))
        });
    // Hidden until the page has drawn: no blank or black frame while the web engine starts.
    let mut window = WindowBuilder::new()
        .with_title(&args.title)
        .with_inner_size(size)
        .with_min_inner_size(LogicalSize::new(300.0, 360.0))
        .with_visible(false);
    if let Some((x, y)) = args.position {
        window = window.with_position(PhysicalPosition::new(x, y));
    }
    // A tray popover has no taskbar entry: the tray icon is how it is reached (macOS: the app is an
    // accessory, with no Dock icon). A panel started by hand keeps its entry, or it could be lost.
    #[cfg(target_os = "linux")]
    {
        use tao::platform::unix::WindowBuilderExtUnix;
        window = window.with_skip_taskbar(args.popover);
    }
    #[cfg(windows)]
    {
        use tao::platform::windows::WindowBuilderExtWindows;
        window = window.with_skip_taskbar(args.popover);
    }
    let window = window.build(&event_loop)?;
    let mut context = WebContext::new(None);
    if args.automation {
        // Lets WebKitWebDriver drive the real panel in the end-to-end tests (Linux; a no-op elsewhere).
        context.set_allows_automation(true);
    }
    let loaded = proxy.clone();
    #[cfg(target_os = "linux")]
    let media = crate::media::CallMedia::default();
    #[cfg(target_os = "linux")]
    let frames = media.clone();
    #[cfg(target_os = "linux")]
    let media_events = proxy.clone();
    let webview = build_webview(
        &window,
        &mut context,
        &page_url(&page_query(&args, lang)),
        #[cfg(target_os = "linux")]
        move || frames.frame_bmp(),
        move |body| {
            let _ = proxy.send_event(PanelEvent::FromPage(body));
        },
        move || {
            let _ = loaded.send_event(PanelEvent::Loaded);
        },
    )?;
    let mut panel = Some(Panel {
        webview,
        window,
        _context: context,
        backend: Some(backend),
        managed: args.managed,
        popover: args.popover,
        painted: false,
        loaded: false,
        queued: Vec::new(),
        show_by: None,
        // Until the page says otherwise (it does as soon as it runs), a panel stays open.
        keep_open: true,
        had_focus: false,
        shown_at: None,
        size: None,
        #[cfg(target_os = "linux")]
        media,
        #[cfg(target_os = "linux")]
        media_events,
    });
    event_loop.run(move |event, _, control_flow| {
        let Some(p) = panel.as_mut() else { return };
        let close = match event {
            Event::UserEvent(e) => p.event(e),
            Event::NewEvents(tao::event::StartCause::ResumeTimeReached { .. }) => {
                p.show_anyway();
                false
            }
            Event::WindowEvent { event, .. } => p.window_event(event),
            Event::LoopDestroyed => true,
            _ => false,
        };
        *control_flow = match p.show_by {
            Some(at) => ControlFlow::WaitUntil(at),
            None => ControlFlow::Wait,
        };
        if close {
            *control_flow = ControlFlow::Exit;
            if let Some(mut p) = panel.take() {
                p.tell_tray(&crate::control::FromPanel::Closing);
                // The webview and its window go first; then the local-API connection.
                if let Some(b) = p.backend.take() {
                    drop(p);
                    b.stop();
                }
            }
        }
    })
}

struct Panel {
    // Dropped in this order: the webview, its window, then its web context.
    webview: WebView,
    window: Window,
    _context: WebContext,
    backend: Option<Box<dyn PageBackend>>,
    managed: bool,
    popover: bool,
    /// The page has drawn its first view (or was given up on): the window may be visible.
    painted: bool,
    /// The page has loaded (its scripts have run): what the tray asks can be run in it.
    loaded: bool,
    /// What the tray asked before the page had loaded (open a chat, answer a call), run once it has.
    queued: Vec<String>,
    /// When to show the window even though the page has not said it drew.
    show_by: Option<std::time::Instant>,
    /// Stay open when focus goes elsewhere (the page decides: logging in, picking, pinned open).
    keep_open: bool,
    /// The window has had keyboard focus since it was shown: only then does losing it mean anything.
    had_focus: bool,
    /// Where the window was when it was shown (physical pixels), to tell a move by the person.
    shown_at: Option<(i32, i32)>,
    /// The inner size last reported to the tray (logical pixels).
    size: Option<(u32, u32)>,
    /// The native engine of a call the page runs through it (WebKitGTK has no WebRTC).
    #[cfg(target_os = "linux")]
    media: crate::media::CallMedia,
    /// Where the engine's events go: this panel's event loop.
    #[cfg(target_os = "linux")]
    media_events: tao::event_loop::EventLoopProxy<PanelEvent>,
}

impl Panel {
    /// Handles one event; `true` to close the panel.
    fn event(&mut self, event: PanelEvent) -> bool {
        match event {
            PanelEvent::Backend(ToUi::Reply { id, result, .. }) => {
                let (ok, value) = match result {
                    Ok(v) => (true, v),
                    Err(e) => (false, e),
                };
                self.reply(id, ok, &value.to_string());
            }
            PanelEvent::Backend(ToUi::Notification(n)) => {
                self.script(&format!("window.pinchat&&window.pinchat.event({n})"));
            }
            PanelEvent::Backend(ToUi::Lost(why)) => {
                tracing::error!(%why, "the panel lost the daemon");
                return true;
            }
            PanelEvent::Backend(ToUi::Stop) => return true,
            PanelEvent::Backend(_) => {}
            PanelEvent::FromPage(body) => return self.page_message(&body),
            PanelEvent::Show => self.show(),
            PanelEvent::Chat(contact) => {
                self.show();
                self.tray_script(format!("window.pinchat&&window.pinchat.openChat({contact})"));
            }
            PanelEvent::Answer(call) => {
                self.show();
                self.tray_script(format!("window.pinchat&&window.pinchat.answer({call})"));
            }
            PanelEvent::Lang(lang) => {
                self.script(&format!(
                    "window.pinchat&&window.pinchat.setLang('{}')",
                    lang.code()
                ));
            }
            PanelEvent::Close => return true,
            PanelEvent::Loaded => {
                self.loaded = true;
                for js in std::mem::take(&mut self.queued) {
                    self.script(&js);
                }
                if !self.painted {
                    self.show_by = Some(std::time::Instant::now() + SHOW_ANYWAY);
                }
            }
            #[cfg(target_os = "linux")]
            PanelEvent::Media(event) => {
                self.script(&format!("window.pinchat&&window.pinchat.media({event})"));
            }
            #[cfg(target_os = "linux")]
            PanelEvent::MediaDone(id, result) => self.media_done(id, result),
        }
        false
    }

    /// A request to the native call engine.
    #[cfg(target_os = "linux")]
    fn media(&mut self, id: u64, op: crate::media::MediaOp) {
        let events = self.media_events.clone();
        let deliver = move |event: pinchat_media::EngineEvent| {
            events
                .send_event(PanelEvent::Media(crate::media::event_json(&event)))
                .is_ok()
        };
        if matches!(op, crate::media::MediaOp::Start { .. }) {
            // Starting an engine opens the camera and microphone and, the first time, loads
            // GStreamer's plugins (about a second): on a thread of its own, never on the window's
            // event loop. The answer comes back as an event.
            let (media, done) = (self.media.clone(), self.media_events.clone());
            let spawned = std::thread::Builder::new()
                .name("pinchat-call-start".into())
                .spawn(move || {
                    let result = media.apply(op, deliver);
                    let _ = done.send_event(PanelEvent::MediaDone(id, result));
                });
            if let Err(e) = spawned {
                self.media_done(id, Err(("ui.media_unavailable", e.to_string())));
            }
            return;
        }
        let result = self.media.apply(op, deliver);
        self.media_done(id, result);
    }

    /// Answers a `ui.media` request.
    #[cfg(target_os = "linux")]
    fn media_done(&self, id: u64, result: Result<(), (&'static str, String)>) {
        match result {
            Ok(()) => self.reply(id, true, "{}"),
            Err((code, message)) => {
                tracing::warn!(code, %message, "the call engine refused a request");
                let error = crate::backend::error_value(code, &message);
                self.reply(id, false, &error.to_string());
            }
        }
    }

    /// Without a native engine (the webview runs calls itself), a request for one is refused.
    #[cfg(not(target_os = "linux"))]
    fn media(&mut self, id: u64, _op: crate::media::MediaOp) {
        let error =
            crate::backend::error_value("ui.media_unavailable", "this panel runs calls in its web engine");
        self.reply(id, false, &error.to_string());
    }

    /// Handles one event of the window; `true` to close the panel.
    fn window_event(&mut self, event: WindowEvent<'_>) -> bool {
        match event {
            WindowEvent::CloseRequested => return true,
            WindowEvent::Focused(focused) => {
                self.tell_tray(&crate::control::FromPanel::Focus(focused));
                if focused {
                    self.had_focus = true;
                } else if self.popover && self.had_focus && !self.keep_open {
                    // A popover: gone when the person turns to something else.
                    tracing::debug!("the panel lost focus; closing it");
                    return true;
                }
            }
            WindowEvent::Resized(size) if self.painted => {
                let size = self.logical(size);
                if self.size.is_some_and(|s| s != size) {
                    self.tell_tray(&crate::control::FromPanel::Size(size.0, size.1));
                }
                self.size = Some(size);
            }
            WindowEvent::Moved(at) if self.painted => {
                if let Some((x, y)) = self.shown_at
                    && ((at.x - x).abs() > MOVED_BY_HAND || (at.y - y).abs() > MOVED_BY_HAND)
                {
                    self.shown_at = Some((at.x, at.y));
                    self.tell_tray(&crate::control::FromPanel::Moved(at.x, at.y));
                }
            }
            _ => {}
        }
        false
    }

    /// A size on screen in the logical pixels the tray remembers.
    fn logical(&self, size: tao::dpi::PhysicalSize<u32>) -> (u32, u32) {
        let size = size.to_logical::<f64>(self.window.scale_factor());
        (size.width.round() as u32, size.height.round() as u32)
    }

    /// Brings the window forward with keyboard focus, once its page has drawn.
    fn show(&mut self) {
        if !self.painted {
            // The page's first view shows it.
            return;
        }
        if !self.window.is_visible() {
            self.window.set_visible(true);
            self.shown_at = self.window.outer_position().ok().map(|p| (p.x, p.y));
            self.size = Some(self.logical(self.window.inner_size()));
        }
        self.window.set_focus();
    }

    /// The page has not said it drew within [`SHOW_ANYWAY`] of loading: shows the window regardless.
    fn show_anyway(&mut self) {
        if self.show_by.take().is_some() && !self.painted {
            tracing::warn!("the panel's page did not say it had drawn; showing the window anyway");
            self.painted = true;
            self.show();
        }
    }

    /// A line to the tray that started this panel (none when the panel runs on its own).
    fn tell_tray(&self, msg: &crate::control::FromPanel) {
        if let Some(line) = msg.line()
            && self.managed
        {
            // Not `println!`, which panics when the tray has gone (a closed pipe).
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        }
    }

    /// A message from the page: `{id, method, params}`; `true` to close the panel.
    fn page_message(&mut self, body: &str) -> bool {
        use crate::control::{FromPanel, PageMessage};
        let Some(msg) = PageMessage::parse(body) else {
            tracing::warn!("the panel's page sent a message that is not JSON");
            return false;
        };
        match msg {
            PageMessage::Close { .. } => return true,
            PageMessage::Opened { id, widget, name } => {
                // An add-account panel has created its widget, or the person chose another account:
                // the tray now counts it as that widget's panel.
                if let Some(w) = widget {
                    self.tell_tray(&FromPanel::Opened(w));
                }
                if let Some(name) = name {
                    self.window.set_title(&format!("pinchat — {name}"));
                }
                self.reply(id, true, "{}");
            }
            PageMessage::Painted { id, lang } => {
                tracing::debug!(
                    lang = lang.as_deref().unwrap_or("?"),
                    "the panel's page has drawn"
                );
                self.reply(id, true, "{}");
                if !self.painted {
                    self.painted = true;
                    self.show_by = None;
                    self.show();
                }
            }
            PageMessage::KeepOpen { id, keep } => {
                self.keep_open = keep;
                self.reply(id, true, "{}");
            }
            PageMessage::OpenUrl { id, url } => {
                if !crate::control::openable(&url) {
                    tracing::warn!("the page asked to open a link that is not a web address; refused");
                    self.reply(
                        id,
                        false,
                        r#"{"code":"ui.invalid_link","message":"only web links (http or https) are opened"}"#,
                    );
                } else if let Err(e) = open::that_detached(&url) {
                    tracing::warn!(error = %e, "cannot open a link in the browser");
                    self.reply(
                        id,
                        false,
                        r#"{"code":"ui.cannot_open","message":"no web browser could open the link; copy it into your browser instead"}"#,
                    );
                } else {
                    self.reply(id, true, "{}");
                }
            }
            PageMessage::Viewing { id, contact } => {
                // The tray shows no notification for the chat on screen.
                self.tell_tray(&FromPanel::Viewing(contact));
                self.reply(id, true, "{}");
            }
            PageMessage::Media { id, op } => match op {
                Ok(op) => self.media(id, op),
                Err(why) => {
                    let error = crate::backend::error_value("ui.invalid", &why);
                    self.reply(id, false, &error.to_string());
                }
            },
            PageMessage::Call { id, method, params } => {
                let Some(backend) = &self.backend else {
                    return false;
                };
                if let Err(e) = backend.request(id, method, params) {
                    self.reply(id, false, &e.to_string());
                }
            }
        }
        false
    }

    fn reply(&self, id: u64, ok: bool, value: &str) {
        self.script(&format!(
            "window.pinchat&&window.pinchat.reply({id},{ok},{value})"
        ));
    }

    /// Runs what the tray asked in the page, or once the page has loaded (a panel just started by
    /// the tray is asked at once, before its page can hear it).
    fn tray_script(&mut self, js: String) {
        if self.loaded {
            self.script(&js);
        } else {
            self.queued.push(js);
        }
    }

    fn script(&self, js: &str) {
        let _ = self.webview.evaluate_script(js);
    }
}

/// The webview of a panel's window, on the embedded pages only.
fn build_webview(
    window: &Window,
    context: &mut WebContext,
    url: &str,
    #[cfg(target_os = "linux")] frame: impl Fn() -> Option<Vec<u8>> + Send + Sync + 'static,
    on_message: impl Fn(String) + 'static,
    on_loaded: impl Fn() + 'static,
) -> anyhow::Result<WebView> {
    let builder = WebViewBuilder::new_with_web_context(context)
        .with_custom_protocol("pinchat".into(), move |_id, request| {
            let path = request.uri().path();
            // The peer's picture in a call run by the native engine, fetched by the page as it draws.
            #[cfg(target_os = "linux")]
            if path == "/call/frame" {
                return serve_frame(frame());
            }
            serve_asset(path)
        })
        .with_ipc_handler(move |req| on_message(req.into_body()))
        .with_on_page_load_handler(move |event, _| {
            if matches!(event, wry::PageLoadEvent::Finished) {
                on_loaded();
            }
        })
        // The panel never leaves its own pages.
        .with_navigation_handler(|url| {
            url.starts_with("pinchat://") || url.starts_with("https://pinchat.localhost/")
        })
        // Only the embedded pages run here, and they ask for the camera and the microphone only to
        // make a call the user started or accepted; nothing else is granted.
        .with_permission_handler(|kind| match kind {
            wry::PermissionKind::Camera | wry::PermissionKind::Microphone => wry::PermissionResponse::Allow,
            _ => wry::PermissionResponse::Deny,
        })
        .with_url(url)
        // The web inspector is for developers' builds only.
        .with_devtools(cfg!(debug_assertions));
    #[cfg(target_os = "linux")]
    {
        use tao::platform::unix::WindowExtUnix;
        use wry::WebViewBuilderExtUnix;
        let vbox = window
            .default_vbox()
            .ok_or_else(|| anyhow::anyhow!("the window has no GTK container"))?;
        Ok(builder.build_gtk(vbox)?)
    }
    #[cfg(windows)]
    let builder = {
        use wry::WebViewBuilderExtWindows;
        builder.with_https_scheme(true)
    };
    #[cfg(not(target_os = "linux"))]
    Ok(builder.build(window)?)
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

/// The call's latest picture, never cached; 404 until there is one.
#[cfg(target_os = "linux")]
fn serve_frame(bmp: Option<Vec<u8>>) -> wry::http::Response<Cow<'static, [u8]>> {
    match bmp {
        Some(body) => wry::http::Response::builder()
            .header("Content-Type", "image/bmp")
            .header("Cache-Control", "no-store")
            .body(Cow::Owned(body))
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

    #[test]
    fn the_page_query_names_the_view_widget_and_chat() {
        let args = PanelArgs {
            widget: Some("w 1/é".into()),
            chat: Some(7),
            ..PanelArgs::default()
        };
        assert_eq!(
            page_query(&args, Lang::Zh),
            "lang=zh&view=widget&widget=w%201%2F%C3%A9&chat=7"
        );
        assert_eq!(page_query(&PanelArgs::default(), Lang::En), "lang=en&view=login");
        let ringing = PanelArgs {
            widget: Some("w1".into()),
            ring: Some(crate::control::Ring {
                call: 3,
                contact: 9,
                video: false,
                answer: false,
            }),
            ..PanelArgs::default()
        };
        assert_eq!(
            page_query(&ringing, Lang::En),
            "lang=en&view=widget&widget=w1&ring=3:9:voice"
        );
    }
}
