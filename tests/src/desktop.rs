//! The desktop app under test: a private X server (Xvfb), a StatusNotifierItem host on the session bus
//! (`status-notifier-watcher`), and the real `pinchat` binary (this crate's `pinchat-e2e`) with its own
//! socket and data directory, starting its daemon in-process. Linux only: that is where a headless
//! display and tray host exist.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the app binary: this crate's `pinchat-e2e`, the same one-line `main` as `pinchat`.
pub fn app_binary() -> PathBuf {
    crate::server_binary().with_file_name(format!("pinchat-e2e{}", std::env::consts::EXE_SUFFIX))
}

fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
    assert!(
        found,
        "the desktop tests need `{tool}`: sudo apt-get install {package} (or run .ci/run, which installs it)"
    );
}

/// Desktop tests share the session bus's one tray host: they run one at a time. Hold the guard for
/// the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A private X server on a free display.
pub struct Xvfb {
    child: Child,
    /// Its display, e.g. `:3`.
    pub display: String,
}

impl Xvfb {
    /// Starts one and waits until it accepts clients.
    pub fn start() -> Xvfb {
        need("Xvfb", "xvfb");
        // -displayfd: Xvfb picks a free display and writes its number once it is ready.
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the display number");
        let display = format!(":{}", line.trim());
        assert!(display.len() > 1, "Xvfb did not report a display");
        Xvfb { child, display }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes sure a StatusNotifierWatcher runs on the session bus (one per bus; a second one exits).
pub fn ensure_tray_host() -> Option<Child> {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "the desktop tests need a session bus: run them with `cargo xtask test`"
    );
    need("status-notifier-watcher", "haskell-status-notifier-item-utils");
    need("busctl", "systemd");
    if busctl(&["--user", "status", "org.kde.StatusNotifierWatcher"]).is_some() {
        return None;
    }
    let child = Command::new("status-notifier-watcher")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start status-notifier-watcher");
    eventually("the StatusNotifierWatcher to appear on the bus", || {
        busctl(&["--user", "status", "org.kde.StatusNotifierWatcher"]).map(|_| ())
    });
    Some(child)
}

/// Runs `busctl`; its output when it succeeded.
pub fn busctl(args: &[&str]) -> Option<String> {
    let out = Command::new("busctl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The tray items registered with the watcher.
pub fn registered_items() -> String {
    busctl(&[
        "--user",
        "get-property",
        "org.kde.StatusNotifierWatcher",
        "/StatusNotifierWatcher",
        "org.kde.StatusNotifierWatcher",
        "RegisteredStatusNotifierItems",
    ])
    .unwrap_or_default()
}

/// Polls `check` until it returns `Some`, failing the test after [`crate::DEADLINE`]. For state that
/// no event announces (X windows, D-Bus properties); each look is cheap.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + crate::DEADLINE;
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The titles of the top-level windows on `display`.
pub fn window_titles(display: &str) -> Vec<String> {
    let Ok(out) = Command::new("xwininfo")
        .args(["-root", "-tree", "-display", display])
        .output()
    else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let start = l.find('"')? + 1;
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_owned())
        })
        .collect()
}

/// Runs `xdotool` on `display`; its output when it succeeded.
///
/// A window that goes away while xdotool looks at it (a closing panel's) makes it fail with an X
/// error; it is asked again then, so that such a failure is not read as "no such window".
pub fn xdotool(display: &str, args: &[&str]) -> Option<String> {
    need("xdotool", "xdotool");
    for _ in 0..10 {
        let out = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", display)
            .output()
            .ok()?;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if !String::from_utf8_lossy(&out.stderr).contains("X Error") {
            return None;
        }
    }
    None
}

/// The mapped (visible) top-level window whose title starts with `title` (the demo user's name goes
/// on in Chinese), if there is one.
pub fn visible_window(display: &str, title: &str) -> Option<u64> {
    search_visible(display, &format!("^{}", regex_escape(title)))
}

/// The mapped top-level window titled exactly `title`, if there is one.
pub fn visible_window_titled(display: &str, title: &str) -> Option<u64> {
    search_visible(display, &format!("^{}$", regex_escape(title)))
}

fn search_visible(display: &str, pattern: &str) -> Option<u64> {
    xdotool(display, &["search", "--onlyvisible", "--name", pattern])?
        .lines()
        .find_map(|l| l.trim().parse().ok())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.^$|?*+()[]{}".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// The window with keyboard focus.
pub fn focused_window(display: &str) -> Option<u64> {
    xdotool(display, &["getwindowfocus"])?.trim().parse().ok()
}

/// The root window's id.
pub fn root_window(display: &str) -> u64 {
    let out = Command::new("xwininfo")
        .args(["-root", "-display", display])
        .output()
        .expect("run xwininfo");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let hex = l.split("Window id: 0x").nth(1)?.split_whitespace().next()?;
            u64::from_str_radix(hex, 16).ok()
        })
        .expect("the root window")
}

/// A window's place and size: (x, y, width, height), physical pixels.
pub fn window_geometry(display: &str, window: u64) -> (i32, i32, i32, i32) {
    let out = xdotool(display, &["getwindowgeometry", "--shell", &window.to_string()])
        .expect("the window's geometry");
    let field = |name: &str| -> i32 {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    (field("X"), field("Y"), field("WIDTH"), field("HEIGHT"))
}

/// Saves the whole screen of `display` as a PNG file at `path`.
pub fn screenshot_root(display: &str, path: &Path) {
    need("import", "imagemagick");
    let ok = Command::new("import")
        .args(["-display", display, "-window", "root"])
        .arg(path)
        .status()
        .expect("run import");
    assert!(ok.success(), "import could not take a screenshot");
}

/// The bounding box (x, y, width, height) of what differs between two screenshots of one size;
/// `None` when they are the same.
pub fn changed_area(before: &Path, after: &Path) -> Option<(i32, i32, u32, u32)> {
    let out = Command::new("convert")
        .arg(before)
        .arg(after)
        .args([
            "-compose",
            "difference",
            "-composite",
            "-threshold",
            "10%",
            "-trim",
            "-format",
            "%w %h %X %Y",
            "info:",
        ])
        .output()
        .expect("run convert");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<i64> = text
        .split_whitespace()
        .filter_map(|t| t.trim_start_matches('+').parse().ok())
        .collect();
    match v[..] {
        // An image with nothing left after trimming is reported as 1×1 at -1,-1.
        [w, h, x, y] if x >= 0 && y >= 0 => Some((x as i32, y as i32, w as u32, h as u32)),
        _ => None,
    }
}

/// Cuts `(x, y, w, h)` out of the PNG at `from`, scaled by `scale` (percent), into `to`.
pub fn crop(from: &Path, to: &Path, (x, y, w, h): (i32, i32, u32, u32), scale: u32) {
    let ok = Command::new("convert")
        .arg(from)
        .args([
            "-crop",
            &format!("{w}x{h}+{x}+{y}"),
            "+repage",
            "-scale",
            &format!("{scale}%"),
        ])
        .arg(to)
        .status()
        .expect("run convert");
    assert!(ok.success(), "convert could not crop {from:?}");
}

/// A window property as `xprop` prints it.
pub fn xprop(display: &str, window: u64, property: &str) -> String {
    need("xprop", "x11-utils");
    let out = Command::new("xprop")
        .args(["-display", display, "-id", &window.to_string(), property])
        .output()
        .expect("run xprop");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `pinchat` app.
pub struct App {
    child: Child,
    /// The daemon's socket (the app starts the daemon in-process).
    pub socket: PathBuf,
    log: PathBuf,
}

impl App {
    /// Starts the app on `display` with its daemon's socket and data under `dir`; returns once its
    /// tray item exists.
    pub fn start(display: &str, dir: &Path) -> App {
        App::start_with(display, dir, &[])
    }

    /// [`App::start`] with extra environment (language, GTK theme).
    pub fn start_with(display: &str, dir: &Path, env: &[(&str, &str)]) -> App {
        need("xwininfo", "x11-utils");
        let socket = dir.join("run").join("daemon.sock");
        let log = dir.join("app.log");
        let mut child = App::command(display, dir, &socket)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start pinchat");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("read the app's output");
            assert!(
                n > 0,
                "pinchat exited before its tray was ready: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            if line.trim() == "pinchat tray ready" {
                break;
            }
        }
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        App { child, socket, log }
    }

    /// The command line of the app for `display`, `dir` and `socket`.
    pub fn command(display: &str, dir: &Path, socket: &Path) -> Command {
        let mut c = Command::new(app_binary());
        c.env("DISPLAY", display)
            .env_remove("WAYLAND_DISPLAY")
            .env("GDK_BACKEND", "x11")
            // A blank webview under Xvfb is cured by these (PLATFORM.md).
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("PINCHAT_SOCKET", socket)
            .env("PINCHAT_DATA_DIR", dir.join("data"))
            .env("PINCHAT_LANG", "en")
            // The app's settings, any autostart entry and its cache stay in the test's directory.
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("RUST_LOG", "warn,pinchat_ui=debug");
        c
    }

    /// Its process id (the tray item's bus name is `org.kde.StatusNotifierItem-<pid>-1`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tray item's D-Bus name.
    pub fn tray_name(&self) -> String {
        self.item_name(1)
    }

    /// The D-Bus name of the app's `n`th tray item (1: the app's own icon; then contacts pinned to
    /// the tray, in the order their icons were made).
    pub fn item_name(&self, n: u32) -> String {
        format!("org.kde.StatusNotifierItem-{}-{n}", self.pid())
    }

    /// A property of the tray item, as `busctl` prints it in JSON (text in UTF-8, not escaped).
    pub fn tray_property(&self, name: &str) -> String {
        self.item_property(1, name)
    }

    /// A property of the `n`th tray item (see [`App::item_name`]).
    pub fn item_property(&self, n: u32, name: &str) -> String {
        busctl(&[
            "--user",
            "--json=short",
            "get-property",
            &self.item_name(n),
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem",
            name,
        ])
        .unwrap_or_default()
    }

    /// The tray menu's entries as (dbusmenu id, label, toggle state), depth first.
    pub fn menu(&self) -> Vec<(i64, String, i64)> {
        self.item_menu(1)
    }

    /// The menu of the `n`th tray item (see [`App::item_name`]), as [`App::menu`] lists it.
    pub fn item_menu(&self, n: u32) -> Vec<(i64, String, i64)> {
        let Some(out) = busctl(&[
            "--user",
            "--json=short",
            "call",
            &self.item_name(n),
            "/MenuBar",
            "com.canonical.dbusmenu",
            "GetLayout",
            "iias",
            "--",
            "0",
            "-1",
            "0",
        ]) else {
            return vec![];
        };
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        fn walk(node: &serde_json::Value, out: &mut Vec<(i64, String, i64)>) {
            // A node is [id, {property: {type, data}}, [{type, data: node}…]].
            let id = node[0].as_i64().unwrap_or(-1);
            let label = node[1]["label"]["data"].as_str().unwrap_or("").to_owned();
            let toggle = node[1]["toggle-state"]["data"].as_i64().unwrap_or(-1);
            out.push((id, label, toggle));
            for child in node[2].as_array().into_iter().flatten() {
                walk(&child["data"], out);
            }
        }
        let mut entries = vec![];
        walk(&v["data"][1], &mut entries);
        entries
    }

    /// Waits until the tray menu has the submenu of the account named `name…`.
    pub fn wait_for_account_menu(&self, name: &str) {
        eventually("the account's submenu", || {
            self.menu()
                .iter()
                .any(|(_, l, _)| l.starts_with(name))
                .then_some(())
        });
    }

    /// Clicks the tray menu entry labelled `label`, as a tray host does.
    pub fn click_menu(&self, label: &str) {
        self.click_menu_in("", label);
    }

    /// Clicks the first entry labelled `label` after the submenu labelled `submenu` (its own entry,
    /// as the layout lists a submenu's entries right after it; `""`: anywhere).
    pub fn click_menu_in(&self, submenu: &str, label: &str) {
        let entries = self.menu();
        let from = entries
            .iter()
            .position(|(_, l, _)| submenu.is_empty() || l == submenu)
            .unwrap_or_else(|| panic!("no submenu {submenu:?} in {entries:?}"));
        let (id, _, _) = entries[from..]
            .iter()
            .find(|(_, l, _)| l == label)
            .unwrap_or_else(|| panic!("no menu entry {label:?} in {entries:?}"));
        busctl(&[
            "--user",
            "call",
            &self.tray_name(),
            "/MenuBar",
            "com.canonical.dbusmenu",
            "Event",
            "isvu",
            "--",
            &id.to_string(),
            "clicked",
            "s",
            "",
            "0",
        ])
        .expect("click the menu entry");
    }

    /// Clicks the tray icon, as a tray host does.
    pub fn click_tray(&self) {
        self.click_item(1);
    }

    /// Clicks the `n`th tray item (see [`App::item_name`]).
    pub fn click_item(&self, n: u32) {
        busctl(&[
            "--user",
            "call",
            &self.item_name(n),
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem",
            "Activate",
            "ii",
            "900",
            "10",
        ])
        .expect("Activate the tray item");
    }

    /// Resident memory of the app and all its descendants (panel processes and their WebKit web and
    /// network processes), kB.
    pub fn rss_kb(&self) -> u64 {
        let rss = |pid: u32| -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))?
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        rss(self.pid()) + self.descendants().iter().map(|(pid, _)| rss(*pid)).sum::<u64>()
    }

    /// The app's descendant processes: (pid, command name).
    pub fn descendants(&self) -> Vec<(u32, String)> {
        // (pid, parent pid, command name) of every process.
        let all: Vec<(u32, u32, String)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // The command name is in parentheses and may contain spaces; the parent pid follows.
                let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
                let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
                Some((pid, ppid, name.to_owned()))
            })
            .collect();
        let mut found = vec![];
        let mut parents = vec![self.pid()];
        while let Some(parent) = parents.pop() {
            for (pid, ppid, name) in &all {
                if *ppid == parent {
                    found.push((*pid, name.clone()));
                    parents.push(*pid);
                }
            }
        }
        found
    }

    /// The app's panel processes: its own children started as `pinchat panel …` (not a fork that has
    /// not yet become another program, which bears the app's name for a moment).
    pub fn panels(&self) -> Vec<u32> {
        self.descendants()
            .into_iter()
            .filter(|(pid, _)| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                ppid == Some(self.pid()) && cmdline.split(|b| *b == 0).any(|a| a == b"panel")
            })
            .map(|(pid, _)| pid)
            .collect()
    }

    /// How many of the app's threads have a name starting with `prefix` (Linux truncates thread
    /// names to 15 bytes).
    pub fn threads_named(&self, prefix: &str) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
            .count()
    }

    /// What the app logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the app (and its panels) said last.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- the app's log, last lines ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A minimal W3C WebDriver client for WebKitWebDriver, driving a real panel's webview.
pub struct WebDriver {
    driver: Child,
    /// The tray app whose daemon the panel uses (none for the full client's window).
    pub app: Option<App>,
    display: String,
    http: reqwest::Client,
    base: String,
}

/// The key WebDriver sends for Enter.
pub const ENTER: &str = "\u{E007}";
/// The down arrow key, for [`WebDriver::press`].
pub const ARROW_DOWN: &str = "\u{E015}";
/// The up arrow key.
pub const ARROW_UP: &str = "\u{E013}";
/// The Escape key.
pub const ESCAPE: &str = "\u{E00C}";

impl WebDriver {
    /// Starts the tray app (and so its daemon), then WebKitWebDriver with the app's environment, and
    /// opens a session on a panel process (`pinchat --automation panel`, adding an account) on that
    /// daemon.
    pub async fn start(display: &str, dir: &Path) -> WebDriver {
        WebDriver::start_with(display, dir, &[]).await
    }

    /// [`WebDriver::start`] with extra environment for the app (language, GTK theme).
    pub async fn start_with(display: &str, dir: &Path, env: &[(&str, &str)]) -> WebDriver {
        WebDriver::start_panel(display, dir, env, &[]).await
    }

    /// [`WebDriver::start_with`] with extra arguments for the panel (e.g. `--popover`).
    pub async fn start_panel(display: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> WebDriver {
        let socket = dir.join("run").join("daemon.sock");
        let tray = App::start_with(display, dir, env);
        let mut app = App::command(display, dir, &socket);
        app.envs(env.iter().copied());
        let panel_args: Vec<&str> = ["--automation", "panel"].iter().chain(args).copied().collect();
        WebDriver::launch(display, dir, &app, &app_binary(), &panel_args, Some(tray)).await
    }

    /// The full client's window: `pinchat-full --automation <args>` (a copy named `pinchat-full`, as
    /// the daemon requires), with the app's environment for `dir` — no tray app.
    pub async fn start_full(display: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> WebDriver {
        let socket = dir.join("run").join("daemon.sock");
        let mut app = App::command(display, dir, &socket);
        app.envs(env.iter().copied());
        let program = crate::FullClient::program(dir);
        let full_args: Vec<&str> = ["--automation"].iter().chain(args).copied().collect();
        WebDriver::launch(display, dir, &app, &program, &full_args, None).await
    }

    /// Starts WebKitWebDriver with `app`'s environment and opens a session on `binary args`.
    async fn launch(
        display: &str,
        dir: &Path,
        app: &Command,
        binary: &Path,
        args: &[&str],
        tray: Option<App>,
    ) -> WebDriver {
        need("WebKitWebDriver", "webkit2gtk-driver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut driver = Command::new("WebKitWebDriver");
        driver.arg(format!("--port={port}"));
        for (k, v) in app.get_envs() {
            match v {
                Some(v) => driver.env(k, v),
                None => driver.env_remove(k),
            };
        }
        let driver = driver
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("webdriver.log")).expect("log"))
            .spawn()
            .expect("start WebKitWebDriver");
        let mut wd = WebDriver {
            driver,
            app: tray,
            display: display.to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        };
        // The driver listens a moment after it starts.
        let deadline = Instant::now() + crate::DEADLINE;
        while wd.http.get(format!("{}/status", wd.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "WebKitWebDriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"webkitgtk:browserOptions": {
            "binary": binary,
            "args": args
        }}}});
        let session = wd.raw("POST", "/session", Some(caps)).await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a session id: {session}"))
            .to_owned();
        wd.base = format!("{}/session/{id}", wd.base);
        wd
    }

    async fn raw(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(serde_json::json!({}))),
        };
        let v: serde_json::Value = req
            .send()
            .await
            .expect("WebDriver request")
            .json()
            .await
            .expect("JSON");
        v["value"].clone()
    }

    /// Runs `script` (a function body) in the page and returns its result.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.raw(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits until `script` returns something other than null/false, and returns it.
    /// A script that throws (an element not there yet) is not an answer either: it is asked again, and
    /// its error is in the failure's message.
    pub async fn until(&self, what: &str, script: &str) -> serde_json::Value {
        let deadline = Instant::now() + crate::DEADLINE;
        loop {
            let v = self.js(script).await;
            let thrown = v.get("error").is_some() && v.get("stacktrace").is_some();
            if !thrown && !v.is_null() && v != serde_json::Value::Bool(false) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (last answer: {v})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element matching `css`, once it exists.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + crate::DEADLINE;
        loop {
            let v = self
                .raw(
                    "POST",
                    "/element",
                    Some(serde_json::json!({"using": "css selector", "value": css})),
                )
                .await;
            // A found element is {"element-6066-…": id}; a miss is {"error": "no such element", …}.
            if let Some(id) = v
                .get("element-6066-11e4-a52e-4f735466cecf")
                .and_then(|v| v.as_str())
            {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.raw("POST", &format!("/element/{id}/click"), None).await;
    }

    /// Types `text` into the element matching `css` (after clearing it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.raw("POST", &format!("/element/{id}/clear"), None).await;
        self.raw(
            "POST",
            &format!("/element/{id}/value"),
            Some(serde_json::json!({"text": text})),
        )
        .await;
    }

    /// Presses keys on the element matching `css` (which takes the focus), as a user does.
    pub async fn press(&self, css: &str, keys: &str) {
        let id = self.find(css).await;
        self.raw(
            "POST",
            &format!("/element/{id}/value"),
            Some(serde_json::json!({"text": keys})),
        )
        .await;
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await;
        // The rendered text (`innerText`), read by script: WebKitWebDriver's element-text command
        // answers "" for a span with `overflow: hidden; text-overflow: ellipsis`, visible or not.
        let literal = serde_json::to_string(css).unwrap();
        self.js(&format!("return document.querySelector({literal}).innerText"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG screenshot of the app's panel window, taken from the X server (WebKitGTK's own WebDriver
    /// screenshot needs compositing, which is off under Xvfb).
    pub fn screenshot(&self) -> Vec<u8> {
        need("import", "imagemagick");
        let out = Command::new("xwininfo")
            .args(["-root", "-tree", "-display", &self.display])
            .output()
            .expect("xwininfo");
        // Lines look like: 0x200003 "pinchat — Demo User": ("pinchat" "Pinchat")  360x560+540+10  +540+10
        let window = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" \"pinchat"))
            .filter_map(|l| {
                let id = l.split_whitespace().next()?.to_owned();
                let geometry = l
                    .split_whitespace()
                    .find(|w| w.contains('x') && w.contains('+'))?;
                let (w, rest) = geometry.split_once('x')?;
                let h = rest.split('+').next()?;
                Some((w.parse::<u32>().ok()? * h.parse::<u32>().ok()?, id))
            })
            .max()
            .map(|(_, id)| id)
            .expect("the panel's window");
        let png = Command::new("import")
            .args(["-display", &self.display, "-window", &window, "png:-"])
            .output()
            .expect("import");
        assert!(png.status.success(), "{}", String::from_utf8_lossy(&png.stderr));
        png.stdout
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // Ending the session makes the driver close the app it started; a raw request, since drop
        // cannot await.
        if let Some((host, path)) = self.base.strip_prefix("http://").and_then(|r| r.split_once('/')) {
            use std::io::{Read, Write};
            if let Ok(mut tcp) = std::net::TcpStream::connect(host) {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = write!(
                    tcp,
                    "DELETE /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
                );
                let _ = tcp.read_to_end(&mut vec![]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A notification the stand-in notification server was asked to show.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The id the server gave it.
    pub id: u32,
    /// Its title.
    pub summary: String,
    /// Its text.
    pub body: String,
    /// Its actions, as (key, label) pairs flattened, as the protocol sends them.
    pub actions: Vec<String>,
    /// Its `image-path` hint: the image shown with it.
    pub image: Option<String>,
}

/// A stand-in for the desktop's notification server: owns `org.freedesktop.Notifications` on the
/// session bus (the test's private one), records what it is asked to show, and can "click" a
/// notification by emitting `ActionInvoked` — as real servers do, **only to the connection that sent
/// `Notify`** (a stand-in that broadcast it once hid that the app listened on another connection).
/// It runs on a thread of its own (with its own runtime), so that it answers while the test blocks.
/// [`Dunst`] is the real thing.
pub struct FakeNotifications {
    signals: tokio::sync::mpsc::UnboundedSender<(Signal, std::sync::mpsc::Sender<()>)>,
    shown: std::sync::Arc<std::sync::Mutex<Vec<Shown>>>,
}

/// What the stand-in notification server can report.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// A click on notification `id` (`ActionInvoked`, "default").
    Clicked(u32),
    /// The action with this key chosen on notification `id` (`ActionInvoked`).
    Invoked(u32, &'static str),
    /// Notification `id` expired (`NotificationClosed`, reason 1).
    Expired(u32),
    /// A reply typed in notification `id` (`NotificationReplied`).
    Replied(u32, &'static str),
}

struct NotificationServer {
    shown: std::sync::Arc<std::sync::Mutex<Vec<Shown>>>,
    /// Who sent each notification (its unique bus name): signals about it go there alone.
    senders: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, String>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl NotificationServer {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        _app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let image = hints
            .get("image-path")
            .and_then(|v| String::try_from(v.clone()).ok());
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        // A replacement keeps its id and takes the place of the one it replaces, as the
        // specification says.
        if let Some(old) = shown.iter_mut().find(|n| replaces_id != 0 && n.id == replaces_id) {
            old.summary = summary;
            old.body = body;
            old.actions = actions;
            old.image = image;
            return replaces_id;
        }
        let id = shown.len() as u32 + 1;
        if let Some(sender) = header.sender() {
            self.senders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, sender.to_string());
        }
        shown.push(Shown {
            id,
            summary,
            body,
            actions,
            image,
        });
        id
    }

    fn get_capabilities(&self) -> Vec<String> {
        // Like KDE Plasma's server, it takes replies in the notification.
        vec!["actions".into(), "body".into(), "inline-reply".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("pinchat-tests".into(), "pinchat".into(), "1".into(), "1.2".into())
    }

    fn close_notification(&self, _id: u32) {}
}

impl FakeNotifications {
    /// Takes `org.freedesktop.Notifications` on the session bus.
    pub fn start() -> FakeNotifications {
        let shown = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let (signals, mut requests) =
            tokio::sync::mpsc::unbounded_channel::<(Signal, std::sync::mpsc::Sender<()>)>();
        let (ready, started) = std::sync::mpsc::channel();
        let senders = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let server = NotificationServer {
            shown: shown.clone(),
            senders: senders.clone(),
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                // A real server a previous test ran (dunst) may still hold the name for a moment
                // after its process ended: retried until the deadline.
                let deadline = Instant::now() + Duration::from_secs(10);
                let connection = loop {
                    let server = NotificationServer {
                        shown: server.shown.clone(),
                        senders: server.senders.clone(),
                    };
                    match async {
                        zbus::connection::Builder::session()?
                            .serve_at("/org/freedesktop/Notifications", server)?
                            .name("org.freedesktop.Notifications")?
                            .build()
                            .await
                    }
                    .await
                    {
                        Ok(c) => break c,
                        Err(_) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return;
                        }
                    }
                };
                let _ = ready.send(Ok(()));
                // Until the test drops its handle.
                while let Some((signal, done)) = requests.recv().await {
                    let (path, interface) =
                        ("/org/freedesktop/Notifications", "org.freedesktop.Notifications");
                    let id = match signal {
                        Signal::Clicked(id)
                        | Signal::Expired(id)
                        | Signal::Invoked(id, _)
                        | Signal::Replied(id, _) => id,
                    };
                    let to = senders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&id)
                        .cloned();
                    match signal {
                        Signal::Clicked(id) => connection
                            .emit_signal(to.as_deref(), path, interface, "ActionInvoked", &(id, "default"))
                            .await
                            .expect("emit ActionInvoked"),
                        Signal::Invoked(id, action) => connection
                            .emit_signal(to.as_deref(), path, interface, "ActionInvoked", &(id, action))
                            .await
                            .expect("emit ActionInvoked"),
                        Signal::Replied(id, text) => connection
                            .emit_signal(to.as_deref(), path, interface, "NotificationReplied", &(id, text))
                            .await
                            .expect("emit NotificationReplied"),
                        // Reason 1: it expired.
                        Signal::Expired(id) => connection
                            .emit_signal(to.as_deref(), path, interface, "NotificationClosed", &(id, 1u32))
                            .await
                            .expect("emit NotificationClosed"),
                    }
                    let _ = done.send(());
                }
            });
        });
        started
            .recv()
            .expect("the notification server's thread")
            .expect("own org.freedesktop.Notifications on the session bus");
        FakeNotifications { signals, shown }
    }

    /// What it was asked to show so far.
    pub fn shown(&self) -> Vec<Shown> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Activates notification `id`, as a click on it does.
    pub fn activate(&self, id: u32) {
        self.signal(Signal::Clicked(id));
    }

    /// Chooses the action `key` of notification `id` (one of its buttons).
    pub fn invoke(&self, id: u32, key: &'static str) {
        self.signal(Signal::Invoked(id, key));
    }

    /// Types `text` in notification `id`'s reply field and sends it.
    pub fn reply(&self, id: u32, text: &'static str) {
        self.signal(Signal::Replied(id, text));
    }

    /// Says that notification `id` expired.
    pub fn expire(&self, id: u32) {
        self.signal(Signal::Expired(id));
    }

    fn signal(&self, signal: Signal) {
        let (done, emitted) = std::sync::mpsc::channel();
        self.signals
            .send((signal, done))
            .expect("the notification server runs");
        emitted.recv().expect("the signal emitted");
    }
}

/// The real notification server dunst (Debian's `dunst`), on the test's X display and session bus.
/// Like GNOME Shell and KDE Plasma, it sends `ActionInvoked` only to the connection that showed the
/// notification. `dunstctl` drives it as a user's click or shortcut would.
pub struct Dunst {
    child: std::process::Child,
}

impl Dunst {
    /// Starts dunst and waits until it serves `org.freedesktop.Notifications`.
    pub fn start(display: &str) -> Dunst {
        Dunst::start_with(display, &[])
    }

    /// [`Dunst::start`] whose context menu (the list of a notification's actions, which dunst hands to
    /// a menu program such as dmenu for the user to pick from) picks the entry named in `choice`:
    /// [`Dunst::choose`] writes it there and opens the menu. `dir` holds the menu program and dunstrc.
    pub fn start_with_menu(display: &str, dir: &Path) -> (Dunst, PathBuf) {
        let choice = dir.join("dunst-choice");
        let menu = dir.join("dunst-menu");
        std::fs::write(
            &menu,
            format!("#!/bin/sh\ngrep -m1 -F \"$(cat '{}')\"\n", choice.display()),
        )
        .unwrap();
        std::fs::set_permissions(&menu, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let config = dir.join("dunstrc");
        std::fs::write(&config, format!("[global]\ndmenu = {}\n", menu.display())).unwrap();
        let config = config.display().to_string();
        (Dunst::start_with(display, &["-config", &config]), choice)
    }

    /// Picks the action labelled `label` (as dunst lists it: `#Accept (<summary>) [<id>,<action>]`) of
    /// the notifications on screen, as a user does from dunst's context menu. `choice` is what
    /// [`Dunst::start_with_menu`] returned.
    pub fn choose(&self, choice: &Path, label: &str) {
        std::fs::write(choice, format!("#{label} (")).unwrap();
        Self::ctl(&["context"]).expect("dunstctl context");
    }

    fn start_with(display: &str, args: &[&str]) -> Dunst {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = std::process::Command::new("dunst")
                .args(args)
                .env("DISPLAY", display)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dunst (Debian's dunst package; ./run deps installs it)");
            // Up to a few seconds for it to take the name; it exits at once when the name is still
            // held by a previous test's server that is going away, and is started again.
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Self::ctl(&["is-paused"]).is_some() {
                    return Dunst { child };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "dunst did not start");
        }
    }

    fn ctl(args: &[&str]) -> Option<String> {
        let out = std::process::Command::new("dunstctl").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// How many notifications are on screen.
    pub fn displayed(&self) -> u32 {
        Self::ctl(&["count", "displayed"])
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The icon (image) path of the newest notification in dunst's history (the ones closed).
    pub fn newest_closed_icon(&self) -> Option<String> {
        let history: serde_json::Value = serde_json::from_str(&Self::ctl(&["history"])?).ok()?;
        history["data"][0][0]["icon_path"]["data"]
            .as_str()
            .map(str::to_owned)
    }

    /// The summary (title) of the newest notification in dunst's history (the ones closed).
    pub fn newest_closed_summary(&self) -> Option<String> {
        let history: serde_json::Value = serde_json::from_str(&Self::ctl(&["history"])?).ok()?;
        history["data"][0][0]["summary"]["data"]
            .as_str()
            .map(str::to_owned)
    }

    /// Invokes the default action of the newest notification on screen (what a click does when
    /// dunst is configured so, or its `do_action` shortcut).
    pub fn act_on_newest(&self) {
        Self::ctl(&["action", "0"]).expect("dunstctl action");
    }
}

impl Drop for Dunst {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
