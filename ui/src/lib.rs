//! `pinchat`, the desktop app: a tray icon with the unread count, and per-account panels — adding an
//! account (login, then picking contacts), the pinned-contact widget, unread details and text chat.
//!
//! The app is a client of the daemon's local API, like any gadget ([`backend`]); it starts the daemon
//! in its own process when none is running. Without a display it falls back to a terminal view
//! ([`terminal`]). The binary is one line calling [`main`].

pub mod assets;
pub mod autostart;
pub mod avatars;
pub mod backend;
pub mod badge;
#[cfg(target_os = "linux")]
pub mod clicks;
pub mod control;
pub mod demo;
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
pub mod gui;
pub mod i18n;
pub mod media;
pub mod model;
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
pub mod panel;
pub mod settings;
pub mod terminal;

use backend::{AlreadyRunning, Backend, Options};
use clap::{Parser, Subcommand};
use i18n::Lang;
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
use panel::PanelArgs;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pinchat",
    version,
    about = "pinchat: your pinned contacts in the tray. Starts the daemon when it is not running."
)]
struct Cli {
    /// The daemon's local API socket (a named pipe path on Windows).
    #[arg(long, env = "PINCHAT_SOCKET")]
    socket: Option<PathBuf>,
    /// Where the daemon keeps widget databases when this app starts it.
    #[arg(long, env = "PINCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Language of the user interface (default: the system's), before or after a command.
    #[arg(long, value_enum, env = "PINCHAT_LANG", global = true)]
    lang: Option<Lang>,
    /// Show the widgets in the terminal even when a display is available.
    #[arg(long, global = true)]
    terminal: bool,
    /// Let a WebDriver drive a panel (the end-to-end tests; with `panel`).
    #[arg(long, hide = true, env = "PINCHAT_AUTOMATION")]
    automation: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Try pinchat: a demo server with a demo world in this process, the daemon, and the tray app
    /// logged in as the demo user with five contacts pinned. Touches none of your real data or keys.
    // Hidden where the demo server is not built in (installed packages): it would only explain that.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo {
        /// Port of the demo server on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 7420)]
        port: u16,
        /// Seconds between demo events (a contact changes state or writes); 0 for none.
        #[arg(long, default_value_t = 4)]
        every: u64,
    },
    /// Whether pinchat starts when you log in (for you only): `on`, `off`, or nothing to print it.
    /// The tray menu's "Start at login" is the same setting.
    Autostart {
        #[arg(value_enum)]
        state: Option<Switch>,
    },
    /// One panel in a process of its own (the tray app starts these; it needs a running daemon).
    #[command(hide = true)]
    Panel {
        /// The widget whose panel this is; without it, adding an account.
        #[arg(long)]
        widget: Option<String>,
        /// Open on the chat with this contact id.
        #[arg(long)]
        chat: Option<u64>,
        /// Open ringing with this incoming call: `<call>:<contact>:<video|voice>`.
        #[arg(long)]
        ring: Option<control::Ring>,
        /// The window's title.
        #[arg(long, default_value = "pinchat")]
        title: String,
        /// Where the window goes, in physical pixels (with --y).
        #[arg(long, requires = "y", allow_negative_numbers = true)]
        x: Option<i32>,
        /// Where the window goes, in physical pixels (with --x).
        #[arg(long, requires = "x", allow_negative_numbers = true)]
        y: Option<i32>,
        /// The window's inner width in logical pixels (with --height).
        #[arg(long, requires = "height")]
        width: Option<u32>,
        /// The window's inner height in logical pixels (with --width).
        #[arg(long, requires = "width")]
        height: Option<u32>,
        /// Started by the tray app: standard input and output are its control channel.
        #[arg(long)]
        managed: bool,
        /// Behave as the tray's popover: no taskbar entry, closed when it loses focus (unless the page
        /// keeps it open).
        #[arg(long)]
        popover: bool,
    },
}

/// The command line's definition (its man page is made from it).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// A setting's new state on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// `pinchat autostart [on|off]`.
fn autostart_command(state: Option<Switch>) -> ExitCode {
    let result = match state {
        Some(s) => autostart::set(matches!(s, Switch::On)).and_then(|()| autostart::enabled()),
        None => autostart::enabled(),
    };
    match result {
        Ok(on) => {
            println!("start at login: {}", if on { "on" } else { "off" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot change starting at login: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// On Windows the binary is a GUI program (no console window pops up when it starts from the Start menu
/// or at login); when a terminal started it, its output goes to that terminal.
#[cfg(windows)]
#[allow(unsafe_code)]
fn attach_console() {
    use windows_sys::Win32::System::Console::{ATTACH_PARENT_PROCESS, AttachConsole};
    // SAFETY: AttachConsole takes a process id and has no other preconditions; it fails harmlessly
    // when the parent has no console or this process already has one (standard handles redirected to
    // pipes, as for a panel's process, stay as they are).
    unsafe {
        AttachConsole(ATTACH_PARENT_PROCESS);
    }
}

/// Whether a graphical session is available.
fn has_display() -> bool {
    if cfg!(target_os = "linux") {
        ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    } else {
        true
    }
}

/// Runs the app with the process's arguments.
pub fn main() -> ExitCode {
    #[cfg(windows)]
    attach_console();
    let cli = Cli::parse();
    if let Some(Command::Autostart { state }) = cli.command {
        return autostart_command(state);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let mut settings_path = settings::Settings::default_path();
    let mut settings = settings_path
        .as_deref()
        .map(settings::Settings::load)
        .unwrap_or_default();
    // An explicit --lang (or PINCHAT_LANG) wins over the menu's choice, which wins over the OS locale.
    let lang = cli.lang.or(settings.lang).unwrap_or_else(Lang::from_os);
    let gui = !cli.terminal && has_display();
    if let Some(Command::Panel {
        widget,
        chat,
        ring,
        title,
        x,
        y,
        width,
        height,
        managed,
        popover,
    }) = cli.command
    {
        #[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "macos")))]
        {
            let _ = (widget, chat, ring, title, x, y, width, height, managed, popover);
            eprintln!("error: panels are not available on this platform");
            return ExitCode::FAILURE;
        }
        #[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
        return run_panel(
            Options {
                socket: cli.socket,
                panel: true,
                ..Options::default()
            },
            lang,
            PanelArgs {
                widget,
                chat,
                ring,
                title,
                position: x.zip(y),
                size: width.zip(height),
                managed,
                popover,
                automation: cli.automation,
                full: false,
                server: None,
                account: None,
            },
        );
    }
    let mut options = Options {
        socket: cli.socket,
        data_dir: cli.data_dir,
        single_instance: gui,
        demo: None,
        panel: false,
    };
    // The demo's server and data live as long as the app; they are cleaned up when it quits.
    let mut on_exit: Box<dyn FnOnce() + Send> = Box::new(|| {});
    if let Some(Command::Demo { port, every }) = cli.command {
        let dir = match tempfile::Builder::new().prefix("pinchat-demo-").tempdir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: cannot create the demo's directory: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut server = match demo::DemoServer::start(dir.path(), port, every) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "pinchat demo: demo server at {} (user \"demo\", password \"demo\"); the demo user is logged in, with five contacts pinned",
            server.url
        );
        options.socket = Some(demo_socket(dir.path()));
        options.data_dir = Some(dir.path().join("daemon"));
        options.single_instance = false;
        options.demo = Some(server.url.clone());
        // The demo keeps its settings to itself: it starts in the language the app uses, and what is
        // chosen in it (language, do not disturb) goes with its directory.
        settings.do_not_disturb.clear();
        settings_path = Some(dir.path().join("settings.json"));
        on_exit = Box::new(move || {
            server.stop();
            drop(dir);
        });
    }
    if gui {
        #[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
        return match gui::run(options, lang, (settings, settings_path), on_exit) {
            Ok(never) => match never {},
            Err(e) if e.is::<AlreadyRunning>() => {
                println!("{e}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let backend = match Backend::start(options, move |e| {
        let _ = tx.send(e);
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = terminal::run(backend, rx, lang);
    on_exit();
    code
}

/// A panel's process (see [`panel`]).
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
fn run_panel(options: Options, lang: Lang, args: PanelArgs) -> ExitCode {
    if !has_display() {
        eprintln!("error: a panel needs a display");
        return ExitCode::FAILURE;
    }
    match panel::run(options, lang, args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo daemon's own socket, away from a real daemon's.
fn demo_socket(dir: &std::path::Path) -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(format!(r"\\.\pipe\pinchat-demo-{}", std::process::id()))
    } else {
        dir.join("run").join("daemon.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_can_follow_the_command_as_the_readme_says() {
        for args in [
            &["pinchat", "demo", "--lang", "zh"][..],
            &["pinchat", "--lang", "zh", "demo"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.lang, Some(Lang::Zh), "{args:?}");
            assert!(matches!(cli.command, Some(Command::Demo { .. })));
        }
    }
}
