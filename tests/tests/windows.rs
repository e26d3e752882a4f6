//! The Windows build for real, under Wine: the MSI that `cargo xtask package msi` makes is installed
//! into a private Wine prefix, and the installed `pinchatd.exe` and `pinchatctl.exe` talk to the Linux
//! `pinchat-server` on loopback over the real named pipe, with the auth key kept by the Windows keyring
//! store (Wine's Credential Manager): add a widget, pin, a presence change and a message arrive, one is
//! sent; the installed `pinchat-full.exe` lends the widget its connection and takes it back when killed.
//! The installed `pinchat.exe` starts its tray under Xvfb and, with no WebView2 in Wine, says what
//! to install. Then the next version upgrades in place keeping the widget, and uninstalling removes the
//! programs and keeps the user's data.
//!
//! It needs the MSIs, so it is ignored by a plain `cargo test`; `cargo xtask test` (and `cargo xtask
//! package msi --check`) builds them and runs it with `--ignored`, passing their paths in
//! `PINCHAT_MSI`, `PINCHAT_MSI_NEXT` and `PINCHAT_MSI_NEXT_VERSION`. Wine runs on Linux, so this file
//! is Linux's; on Windows itself the whole suite runs natively.
#![cfg(target_os = "linux")]

use pinchat_ipc::api::{Connection, Via, WidgetView};
use pinchat_tests::desktop::{Xvfb, eventually};
use pinchat_tests::pinchat_proto::Presence;
use pinchat_tests::{Server, pinchat_proto::codec::Encoding};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A private Wine prefix with the `ProcessPrng` shim that Rust programs need under Wine 8, on a
/// private X display: Wine's desktop process, which hosts the tray, starts with the prefix's first
/// program and keeps the display it found, so every program runs with it.
struct Wine {
    prefix: tempfile::TempDir,
    display: String,
}

impl Wine {
    fn new(display: &str) -> Wine {
        let prefix = tempfile::Builder::new()
            .prefix("pinchat-wine-")
            .tempdir()
            .unwrap();
        let wine = Wine {
            prefix,
            display: display.to_owned(),
        };
        let out = wine
            .command("wineboot")
            .arg("--init")
            .output()
            .expect("run wineboot");
        assert!(
            out.status.success(),
            "wineboot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The shim is built from its source here, with MinGW, and lives only in this prefix.
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../installers/windows/wine");
        let dll = wine.drive_c().join("windows/system32/bcryptprimitives.dll");
        let out = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-o"])
            .arg(&dll)
            .arg(source.join("processprng.c"))
            .arg(source.join("processprng.def"))
            .arg("-ladvapi32")
            .output()
            .expect("run x86_64-w64-mingw32-gcc");
        assert!(
            out.status.success(),
            "the ProcessPrng shim: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wine
    }

    fn drive_c(&self) -> PathBuf {
        self.prefix.path().join("drive_c")
    }

    fn program_files(&self) -> PathBuf {
        self.drive_c().join("Program Files/pinchat")
    }

    /// `wine <program>` in this prefix, quiet, with the shim preferred over Wine's own DLL and no
    /// Mono or Gecko installers popping up.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("wine");
        c.arg(program)
            .env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            .env("RUST_LOG", "info")
            .env("WINEDLLOVERRIDES", "bcryptprimitives=n,b;mscoree,mshtml=")
            .env("DISPLAY", &self.display)
            .stdin(Stdio::null());
        c
    }

    /// An installed program, by name.
    fn installed(&self, exe: &str) -> Command {
        self.command(&format!("C:\\Program Files\\pinchat\\{exe}"))
    }

    fn msiexec(&self, args: &[&str], msi: &Path) -> Output {
        let windows_path = format!("Z:{}", msi.display()).replace('/', "\\");
        let out = self
            .command("msiexec")
            .args(args)
            .arg(windows_path)
            .arg("/qn")
            .output()
            .unwrap();
        assert!(out.status.success(), "msiexec {args:?}: {out:?}");
        out
    }

    /// `pinchatctl.exe` with this test's pipe; its standard output.
    fn ctl(&self, pipe: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = self
            .installed("pinchatctl.exe")
            .args(["--socket", pipe])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pinchatctl.exe {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the installed `pinchatd.exe` on `pipe`, with its data in `data` (a Windows path); returns
    /// once it listens.
    fn daemon(&self, pipe: &str, data: &str) -> Child {
        let mut child = self
            .installed("pinchatd.exe")
            .args(["--socket", pipe, "--data-dir", data])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("pinchatd listening on"),
            "pinchatd.exe printed {line:?}"
        );
        child
    }

    /// `pinchat.exe autostart [state]`: what it printed.
    fn autostart(&self, state: &[&str]) -> String {
        let out = self
            .installed("pinchat.exe")
            .arg("autostart")
            .args(state)
            .output()
            .unwrap();
        assert!(out.status.success(), "pinchat.exe autostart {state:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The `pinchat` value under `<root>\…\CurrentVersion\Run`, if there is one.
    fn run_value(&self, root: &str) -> Option<String> {
        let out = self
            .command("reg")
            .args([
                "query",
                &format!(r"{root}\Software\Microsoft\Windows\CurrentVersion\Run"),
                "/v",
                "pinchat",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("pinchat")?.trim_start().strip_prefix("REG_SZ"))
            .map(|v| v.trim().to_owned())
    }

    /// The `DisplayVersion` of every installed product named pinchat.
    fn uninstall_entries(&self) -> Vec<String> {
        let out = self
            .command("reg")
            .args([
                "query",
                r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall",
                "/s",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        let mut entries = Vec::new();
        for block in text.split("\n\n") {
            if block
                .lines()
                .any(|l| l.trim().starts_with("DisplayName") && l.trim().ends_with("pinchat"))
            {
                let version = block
                    .lines()
                    .find(|l| l.trim().starts_with("DisplayVersion"))
                    .and_then(|l| l.split_whitespace().last())
                    .unwrap_or("?");
                entries.push(version.to_owned());
            }
        }
        entries
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = Command::new("wineserver")
            .arg("-k")
            .env("WINEPREFIX", self.prefix.path())
            .status();
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// How many times `text` from `from` is in the conversation of the account holding `key`, once it is
/// there at all: a widget's send answers when the message is queued in its outbox, and the send itself
/// happens a moment later (waits up to [`pinchat_tests::DEADLINE`]).
async fn received(
    server: &Server,
    key: &str,
    from: pinchat_tests::pinchat_proto::AccountId,
    text: &str,
) -> usize {
    let deadline = std::time::Instant::now() + pinchat_tests::DEADLINE;
    loop {
        let history: pinchat_tests::pinchat_proto::http::HistoryPage =
            server.get(key, &format!("/v1/messages/{from}")).await.unwrap();
        let count = history.messages.iter().filter(|m| m.text == text).count();
        if count > 0 {
            return count;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{text:?} never reached the contact; the conversation: {:?}",
            history.messages.iter().map(|m| &m.text).collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: run this test through `cargo xtask package msi --check` (or `cargo xtask test`)")
    }))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the MSIs and Wine: `cargo xtask test` builds them and runs it"]
async fn the_windows_build_installs_runs_upgrades_and_uninstalls_under_wine() {
    let msi = env_path("PINCHAT_MSI");
    let next = env_path("PINCHAT_MSI_NEXT");
    let next_version = std::env::var("PINCHAT_MSI_NEXT_VERSION").expect("PINCHAT_MSI_NEXT_VERSION");
    let version = env!("CARGO_PKG_VERSION");
    let x = Xvfb::start();
    let wine = tokio::task::block_in_place(|| Wine::new(&x.display));

    // Uninstalling turns starting at login off, while the program is still there, and upgrading does not.
    let sequence = msi_table(&msi, "InstallExecuteSequence");
    let at = |action: &str| -> (String, u32) {
        let row = sequence
            .iter()
            .find(|r| r[0] == action)
            .unwrap_or_else(|| panic!("no {action} in InstallExecuteSequence: {sequence:?}"));
        (row[1].clone(), row[2].parse().unwrap())
    };
    let (condition, order) = at("AutostartOff");
    assert_eq!(condition, r#"REMOVE="ALL" AND NOT UPGRADINGPRODUCTCODE"#);
    assert!(
        at("InstallInitialize").1 < order && order < at("RemoveFiles").1,
        "AutostartOff is not between InstallInitialize and RemoveFiles: {sequence:?}"
    );
    let actions = msi_table(&msi, "CustomAction");
    let action = actions.iter().find(|r| r[0] == "AutostartOff").unwrap();
    // 18 (a program installed by this package) + 64 (its exit code ignored) + 1024 (deferred); not 2048
    // (no impersonation), so it runs as the user whose setting it is.
    assert_eq!(&action[1..4], ["1106", "pinchat.exe", "autostart off"]);

    // Install: the programs in Program Files, byte for byte, and one entry in Programs and Features.
    tokio::task::block_in_place(|| wine.msiexec(&["/i"], &msi));
    let installed = wine.program_files();
    let staged = msi.parent().unwrap().join("bin");
    for file in [
        "pinchat.exe",
        "pinchatd.exe",
        "pinchatctl.exe",
        "pinchat-full.exe",
        "WebView2Loader.dll",
    ] {
        let got = std::fs::read(installed.join(file)).unwrap_or_else(|e| panic!("{file} not installed: {e}"));
        assert!(
            got == std::fs::read(staged.join(file)).unwrap(),
            "{file} differs from the built one"
        );
    }
    let shortcuts: Vec<PathBuf> = walk(&wine.drive_c())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("Start Menu") && p.extension().is_some_and(|e| e == "lnk"))
        .collect();
    for name in ["pinchat.lnk", "pinchat (all contacts).lnk"] {
        assert!(
            shortcuts.iter().any(|p| p.file_name().unwrap() == name),
            "no Start-menu shortcut {name}: {shortcuts:?}"
        );
    }
    assert_eq!(
        tokio::task::block_in_place(|| wine.uninstall_entries()),
        vec![version.to_owned()]
    );

    // The Linux server with its demo world: the widget binds "alice", whose contact "demo" acts from
    // the server's side.
    let server = Server::start().await;
    let contact_key = server.key("demo").await;
    let my_key = server.key("alice").await;
    let me = server.id_of(&contact_key, "alice").await;

    // The installed daemon and pinchatctl over the named pipe: add alice's widget, pin demo.
    let pipe = format!(r"\\.\pipe\pinchat-wine-{}", std::process::id());
    let data = r"C:\users\Public\pinchat-data";
    let daemon = tokio::task::block_in_place(|| wine.daemon(&pipe, data));
    let added = tokio::task::block_in_place(|| {
        wine.ctl(
            &pipe,
            &[
                "--json",
                "add",
                "--server",
                &server.url(""),
                "--account",
                "alice",
                "--password-stdin",
            ],
            Some("demo\n"),
        )
    });
    let added: serde_json::Value = serde_json::from_str(&added).expect("add answers JSON");
    let widget = added["widget"]["id"].as_str().expect("a widget id").to_owned();
    tokio::task::block_in_place(|| wine.ctl(&pipe, &["pin", &widget, "demo"], None));
    let show = |wine: &Wine| -> WidgetView {
        serde_json::from_str(&wine.ctl(&pipe, &["--json", "show", &widget], None)).expect("show answers JSON")
    };

    // The contact comes online: the change reaches the Windows widget.
    let _contact_stream = server.stream(&contact_key, Encoding::Json).await;
    tokio::task::block_in_place(|| {
        eventually("the contact online in the Windows widget", || {
            let view = show(&wine);
            (view.pins.first()?.state == Presence::Online).then_some(())
        });
    });
    // The contact writes: the message is counted.
    server
        .send_text(&contact_key, me, "wine-1", "hello, Windows")
        .await;
    tokio::task::block_in_place(|| {
        eventually("the contact's message in the Windows widget", || {
            (show(&wine).pins.first()?.unread == 1).then_some(())
        });
    });
    // The widget's account answers from Windows: it reaches the contact once.
    tokio::task::block_in_place(|| wine.ctl(&pipe, &["send", &widget, "demo", "hello from Windows"], None));
    assert_eq!(received(&server, &contact_key, me, "hello from Windows").await, 1);

    // The full client of the same account, installed with it: the Windows widget borrows its connection
    // (registration in %LOCALAPPDATA%, sysinfo's checks, the endpoint's named pipe), sends through it
    // once, and takes its own connection back when the full client is killed.
    let mut full = wine
        .installed("pinchat-full.exe")
        .args(["--headless", "--server", &server.url(""), "--account", "alice"])
        .env("PINCHAT_PASSWORD", "demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = tokio::task::block_in_place(|| {
        let mut line = String::new();
        BufReader::new(full.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    });
    assert!(
        ready.starts_with("pinchat-full ready: alice"),
        "pinchat-full.exe printed {ready:?}"
    );
    tokio::task::block_in_place(|| {
        eventually(
            "the Windows widget borrowing the full client's connection",
            || matches!(show(&wine).via, Via::FullClient { .. }).then_some(()),
        );
    });
    tokio::task::block_in_place(|| {
        wine.ctl(&pipe, &["send", &widget, "demo", "through the full client"], None)
    });
    assert_eq!(
        received(&server, &contact_key, me, "through the full client").await,
        1,
        "sent once through the full client"
    );
    stop(full);
    tokio::task::block_in_place(|| {
        eventually("the Windows widget on its own connection again", || {
            let view = show(&wine);
            (view.via == Via::Own && view.connection == Connection::Online).then_some(())
        });
    });

    // The auth key is in Wine's Credential Manager, never in the widget's files in clear.
    let key_on_disk = walk(&wine.drive_c().join("users/Public/pinchat-data"))
        .iter()
        .any(|p| std::fs::read(p).is_ok_and(|b| contains(&b, my_key.as_bytes())));
    assert!(!key_on_disk, "the auth key is on disk in clear");
    stop(daemon);

    // The tray app under X: its tray starts, and without WebView2 it says what to install.
    let mut app = wine
        .installed("pinchat.exe")
        .args(["--socket", &pipe])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = app.stderr.take().unwrap();
    let said = tokio::task::block_in_place(|| {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains("WebView2 Runtime") {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    assert!(
        said.contains("WebView2 Runtime") && said.contains("go.microsoft.com"),
        "pinchat.exe said {said:?}"
    );
    // The line that says the tray icon exists, read on a thread so that a silent app fails the test
    // at the deadline instead of hanging it.
    let stdout = app.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let out = rx.recv_timeout(pinchat_tests::DEADLINE).unwrap_or_default();
    if out.trim() != "pinchat tray ready" {
        let _ = app.kill();
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        panic!(
            "pinchat.exe printed {out:?}; its log: {said}{rest}; exit {:?}",
            app.wait()
        );
    }
    assert!(app.try_wait().unwrap().is_none(), "pinchat.exe exited");
    stop(app);

    // Starting at login is the user's choice, made by the app for this user only, with the path quoted
    // (it has a space).
    assert_eq!(
        tokio::task::block_in_place(|| wine.autostart(&[])),
        "start at login: off"
    );
    assert_eq!(
        tokio::task::block_in_place(|| wine.autostart(&["on"])),
        "start at login: on"
    );
    assert_eq!(
        tokio::task::block_in_place(|| wine.run_value("HKCU")).as_deref(),
        Some(r#""C:\Program Files\pinchat\pinchat.exe""#)
    );
    assert_eq!(tokio::task::block_in_place(|| wine.run_value("HKLM")), None);

    // Upgrade in place: one entry, the new version, and the widget still there.
    tokio::task::block_in_place(|| wine.msiexec(&["/i"], &next));
    assert_eq!(
        tokio::task::block_in_place(|| wine.uninstall_entries()),
        vec![next_version]
    );
    let daemon = tokio::task::block_in_place(|| wine.daemon(&pipe, data));
    let view = tokio::task::block_in_place(|| show(&wine));
    assert_eq!(view.pins.len(), 1, "the pinned contact survives the upgrade");
    stop(daemon);
    // On Windows the upgrade keeps starting at login: the old version is removed with
    // UPGRADINGPRODUCTCODE set, which the uninstall action's condition excludes (checked on the MSI's
    // tables above). Wine's RemoveExistingProducts runs `msiexec /i {code} REMOVE=ALL` without it, so
    // here the old version's uninstall turns it off; turn it on again for the uninstall below.
    assert_eq!(
        tokio::task::block_in_place(|| wine.autostart(&["on"])),
        "start at login: on"
    );

    // Uninstall: the programs go, the user's data stays.
    tokio::task::block_in_place(|| wine.msiexec(&["/x"], &next));
    assert!(
        !installed.join("pinchat.exe").exists(),
        "pinchat.exe is still there after uninstall"
    );
    assert!(tokio::task::block_in_place(|| wine.uninstall_entries()).is_empty());
    assert_eq!(
        tokio::task::block_in_place(|| wine.run_value("HKCU")),
        None,
        "uninstalling left pinchat starting at login"
    );
    assert!(
        !walk(&wine.drive_c().join("users/Public/pinchat-data")).is_empty(),
        "uninstalling removed the user's widgets"
    );
}

/// The rows of one table of an MSI (`msiinfo export`, without its three header lines).
fn msi_table(msi: &Path, table: &str) -> Vec<Vec<String>> {
    let out = Command::new("msiinfo")
        .arg("export")
        .arg(msi)
        .arg(table)
        .output()
        .expect("msiinfo (Debian's msitools)");
    assert!(out.status.success(), "msiinfo export {table}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .replace('\r', "")
        .lines()
        .skip(3)
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
