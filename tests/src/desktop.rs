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
        need("xwininfo", "x11-utils");
        let socket = dir.join("run").join("daemon.sock");
        let log = dir.join("app.log");
        let mut child = App::command(display, dir, &socket)
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
            .env("RUST_LOG", "warn");
        c
    }

    /// Its process id (the tray item's bus name is `org.kde.StatusNotifierItem-<pid>-1`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tray item's D-Bus name.
    pub fn tray_name(&self) -> String {
        format!("org.kde.StatusNotifierItem-{}-1", self.pid())
    }

    /// A property of the tray item, as `busctl` prints it.
    pub fn tray_property(&self, name: &str) -> String {
        busctl(&[
            "--user",
            "get-property",
            &self.tray_name(),
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem",
            name,
        ])
        .unwrap_or_default()
    }

    /// Clicks the tray icon, as a tray host does.
    pub fn click_tray(&self) {
        busctl(&[
            "--user",
            "call",
            &self.tray_name(),
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem",
            "Activate",
            "ii",
            "900",
            "10",
        ])
        .expect("Activate the tray item");
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
    }
}
