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
use crate::backend::{Backend, Options, ToUi};
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
    /// The window's title.
    pub title: String,
    /// Where the window goes (next to the tray icon), in physical pixels.
    pub position: Option<(i32, i32)>,
    /// Started by the tray: standard input and output are the control channel.
    pub managed: bool,
    /// Accept a WebDriver (WebKitWebDriver on Linux; the end-to-end tests).
    pub automation: bool,
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
    /// The tray closed the control channel (or went away).
    Close,
}

/// The panel's size in logical pixels (the tray places it from this).
pub const SIZE: LogicalSize<f64> = LogicalSize::new(360.0, 560.0);

/// The URL the panel loads, per platform (wry serves custom protocols at `http://<name>.localhost` on
/// Windows).
fn page_url(query: &str) -> String {
    if cfg!(windows) {
        format!("http://pinchat.localhost/index.html?{query}")
    } else {
        format!("pinchat://localhost/index.html?{query}")
    }
}

/// The page's query string for `args`.
fn page_query(args: &PanelArgs, lang: Lang) -> String {
    match &args.widget {
        Some(w) => {
            let chat = args.chat.map(|c| format!("&chat={c}")).unwrap_or_default();
            format!("lang={}&view=widget&widget={}{chat}", lang.code(), urlencode(w))
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
    let mut event_loop = EventLoopBuilder::<E>::with_user_event().build();
    #[cfg(target_os = "macos")]
    {
        use tao::platform::macos::{ActivationPolicy, EventLoopExtMacOS};
        event_loop.set_activation_policy(ActivationPolicy::Accessory);
    }
    #[cfg(not(target_os = "macos"))]
    let _ = &mut event_loop;
    // The proxy is Send but not Sync, and the sink is called from the backend's threads.
    let proxy = std::sync::Mutex::new(event_loop.create_proxy());
    let backend = Backend::start(options, move |news| {
        let _ = proxy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send_event(wrap(news));
    })?;
    Ok((event_loop, backend))
}

/// Runs one panel until it is closed (by the person, by the page, or by the tray).
pub fn run(options: Options, lang: Lang, args: PanelArgs) -> anyhow::Result<std::convert::Infallible> {
    let (event_loop, backend) = event_loop_with_backend(options, PanelEvent::Backend)?;
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
                        None => continue,
                    };
                    if p.send_event(event).is_err() {
                        return;
                    }
                }
                let _ = p.send_event(PanelEvent::Close);
            })?;
    }
    let mut window = WindowBuilder::new()
        .with_title(&args.title)
        .with_inner_size(SIZE)
        .with_min_inner_size(LogicalSize::new(300.0, 360.0));
    if let Some((x, y)) = args.position {
        window = window.with_position(PhysicalPosition::new(x, y));
    }
    let window = window.build(&event_loop)?;
    let mut context = WebContext::new(None);
    if args.automation {
        // Lets WebKitWebDriver drive the real panel in the end-to-end tests (Linux; a no-op elsewhere).
        context.set_allows_automation(true);
    }
    let webview = build_webview(&window, &mut context, &page_url(&page_query(&args, lang)), {
        move |body| {
            let _ = proxy.send_event(PanelEvent::FromPage(body));
        }
    })?;
    let mut panel = Some(Panel {
        webview,
        window,
        _context: context,
        backend: Some(backend),
        managed: args.managed,
    });
    event_loop.run(move |event, _, control_flow| {
        *control_flow = ControlFlow::Wait;
        let Some(p) = panel.as_mut() else { return };
        let close = match event {
            Event::UserEvent(e) => p.event(e),
            Event::WindowEvent {
                event: WindowEvent::CloseRequested,
                ..
            } => true,
            Event::LoopDestroyed => true,
            _ => false,
        };
        if close {
            *control_flow = ControlFlow::Exit;
            if let Some(mut p) = panel.take() {
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
    backend: Option<Backend>,
    managed: bool,
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
                self.script(&format!("window.pinchat&&window.pinchat.openChat({contact})"));
            }
            PanelEvent::Lang(lang) => {
                self.script(&format!(
                    "window.pinchat&&window.pinchat.setLang('{}')",
                    lang.code()
                ));
            }
            PanelEvent::Close => return true,
        }
        false
    }

    fn show(&self) {
        self.window.set_visible(true);
        self.window.set_focus();
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
            PageMessage::Opened { id, widget } => {
                // An add-account panel has created its widget: the tray now counts it as that
                // widget's panel.
                if let Some(w) = widget {
                    self.tell_tray(&FromPanel::Opened(w));
                }
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

    fn script(&self, js: &str) {
        let _ = self.webview.evaluate_script(js);
    }
}

/// The webview of a panel's window, on the embedded pages only.
fn build_webview(
    window: &Window,
    context: &mut WebContext,
    url: &str,
    on_message: impl Fn(String) + 'static,
) -> anyhow::Result<WebView> {
    let builder = WebViewBuilder::new_with_web_context(context)
        .with_custom_protocol("pinchat".into(), |_id, request| serve_asset(request.uri().path()))
        .with_ipc_handler(move |req| on_message(req.into_body()))
        // The panel never leaves its own pages.
        .with_navigation_handler(|url| {
            url.starts_with("pinchat://") || url.starts_with("http://pinchat.localhost/")
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
    }
}
