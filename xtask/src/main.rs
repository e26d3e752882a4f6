//! `cargo xtask <task>`: project automation in Rust rather than shell, so that it runs the same on
//! Windows, macOS and Linux.
//!
//! - `test`: the whole test suite (`cargo test --workspace`), in one place so that the README, CI and a
//!   newcomer all run exactly the same thing. On Linux it runs inside a private D-Bus session with a
//!   fresh, unlocked gnome-keyring, so that the daemon's tests use a real Secret Service without ever
//!   touching the developer's own keyring. On macOS and Windows the tests use the real Keychain and
//!   Credential Manager. On Linux it then builds the .deb and checks it ([`package`]).
//! - `package deb [--profile P] [--check] [--system-test]`: the Linux package ([`package`]).
//! - `package macos [--bin-dir DIR] [--check]`: the macOS bundle, and off macOS a structural DMG
//!   ([`macos`]).
//! - `package msi [--profile P] [--check]`: the Windows installer, cross-built, and with `--check` its
//!   end-to-end test under Wine ([`windows`]).

mod macos;
mod package;
mod windows;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask test [extra cargo test arguments]
       cargo xtask package deb [--profile dist|release|dev] [--check] [--system-test]
       cargo xtask package macos [--bin-dir DIR] [--check]
       cargo xtask package msi [--profile release|dist] [--check]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match (args.first().map(String::as_str), args.get(1).map(String::as_str)) {
        (Some("test"), _) => return test(&args[1..]),
        (Some("package"), Some("deb")) => package::Options::parse(&args[2..]).map(|o| package::deb(&o)),
        (Some("package"), Some("msi")) => windows::Options::parse(&args[2..]).map(|o| windows::run(&o)),
        (Some("package"), Some("macos")) => macos::Options::parse(&args[2..]).map(|o| macos::run(&o)),
        _ => Err(String::new()),
    };
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
        // A command line that cannot be understood: what was wrong, and how to say it.
        Err(e) => {
            if !e.is_empty() {
                eprintln!("xtask: {e}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The suites that run a second time with every test server on PostgreSQL (`PINCHAT_TEST_STORE=postgres`):
/// everything that talks to a server, but the disk faults, which are about SQLite's file.
const POSTGRES_SUITES: &[&str] = &[
    "stream",
    "http",
    "auth_matrix",
    "cli",
    "calls",
    "daemon",
    "borrow",
    "faults",
];
const POSTGRES_SKIPS: &[&str] = &["the_server_on_a_full_disk", "the_server_on_a_read_only_disk"];

fn test(extra: &[String]) -> ExitCode {
    let Some(mut command) = suite_command() else {
        return ExitCode::FAILURE;
    };
    // Every test binary runs even when one fails, so that one run shows every failure.
    command
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra);
    let status = command.status();
    let whole = extra.iter().all(|a| a == "--locked");
    // The whole suite runs the server's suites once more on PostgreSQL (cluster mode's store).
    let status = match status {
        Ok(s) if s.success() && whole && cfg!(target_os = "linux") => {
            let Some(mut again) = suite_command() else {
                return ExitCode::FAILURE;
            };
            again
                .env("PINCHAT_TEST_STORE", "postgres")
                .args(["test", "--no-fail-fast", "-p", "pinchat-tests"])
                .args(extra);
            for suite in POSTGRES_SUITES {
                again.args(["--test", suite]);
            }
            again.arg("--");
            for skip in POSTGRES_SKIPS {
                again.args(["--skip", skip]);
            }
            eprintln!("xtask: the server's suites again, on PostgreSQL");
            again.status()
        }
        other => other,
    };
    match status {
        // The whole suite (no filter given) ends with the packages: the .deb built, linted and its
        // programs run (with PINCHAT_SYSTEM_TESTS=1, CI's disposable machine, also installed with apt
        // and purged), the macOS bundle and DMG laid out and read back, and the MSI built and run under
        // Wine.
        Ok(s) if s.success() && whole && cfg!(target_os = "linux") => {
            let deb = package::Options {
                profile: "dev".into(),
                check: true,
                system_test: std::env::var("PINCHAT_SYSTEM_TESTS").as_deref() == Ok("1"),
            };
            let macos = macos::Options {
                bin_dir: None,
                check: true,
            };
            let msi = windows::Options {
                profile: "release".into(),
                check: true,
            };
            let disposable = deb.system_test;
            match package::deb(&deb)
                .and_then(|()| macos::run(&macos))
                .and_then(|()| {
                    // The Windows cross-build needs gigabytes of its own; on CI's disposable machine,
                    // whose disk may be small, the suite's finished test programs make room for it.
                    if disposable {
                        free_test_programs();
                    }
                    windows::run(&msi)
                }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtask: the package check failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("xtask: the test suite failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask: cannot run the tests: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo`, on Linux inside a private D-Bus session with an unlocked gnome-keyring (the daemon's tests
/// need a Secret Service); `None` after saying what is missing.
fn suite_command() -> Option<Command> {
    if !cfg!(target_os = "linux") {
        return Some(Command::new(cargo()));
    }
    for tool in ["dbus-run-session", "gnome-keyring-daemon"] {
        if !on_path(tool) {
            eprintln!(
                "xtask: `{tool}` is missing; the daemon's tests need a session bus and a Secret Service.\n\
                 On Debian/Ubuntu: sudo apt-get install dbus gnome-keyring"
            );
            return None;
        }
    }
    // A fresh keyring directory per run: gnome-keyring creates and unlocks a new login keyring there.
    let keyrings = std::env::temp_dir().join(format!("pinchat-xtask-keyring-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&keyrings) {
        eprintln!("xtask: cannot create {}: {e}", keyrings.display());
        return None;
    }
    let script = r#"echo -n pinchat | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 1; exec "$@""#;
    let mut c = Command::new("dbus-run-session");
    c.args(["--", "sh", "-c", script, "sh"])
        .arg(cargo())
        .env("XDG_DATA_HOME", &keyrings);
    Some(c)
}

/// Removes the test programs the suite has run (and the incremental caches), keeping every library
/// and the workspace's own programs so that what runs next rebuilds nothing but the one test it needs.
/// Test programs are the executables in `target/debug/deps` that have no second link: cargo hard-links
/// each workspace program into `target/debug`, so those have two.
#[cfg(unix)]
fn free_test_programs() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let debug = std::path::Path::new("target/debug");
    let _ = std::fs::remove_dir_all(debug.join("incremental"));
    let Ok(entries) = std::fs::read_dir(debug.join("deps")) else {
        return;
    };
    let mut freed = 0u64;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let executable = meta.is_file() && meta.permissions().mode() & 0o111 != 0;
        let library = entry
            .path()
            .extension()
            .is_some_and(|e| e == "so" || e == "rlib" || e == "rmeta");
        if executable && !library && meta.nlink() == 1 && std::fs::remove_file(entry.path()).is_ok() {
            freed += meta.len();
        }
    }
    eprintln!(
        "xtask: removed the suite's test programs ({:.1} GB)",
        freed as f64 / 1e9
    );
}

/// The package check after the suite runs on Linux only.
#[cfg(not(unix))]
fn free_test_programs() {}

/// Runs a command, echoing it; its failure is an error naming it.
pub(crate) fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    eprintln!("xtask: {shown}");
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{shown} failed ({s})")),
        Err(e) => Err(format!("cannot run {shown}: {e}")),
    }
}

/// Fails with how to install `tool` when it is not on the PATH: `how` is a cargo command, or else the
/// Debian package that has it.
pub(crate) fn need(tool: &str, how: &str) -> Result<(), String> {
    if on_path(tool) {
        return Ok(());
    }
    let how = if how.starts_with("cargo ") {
        how.to_owned()
    } else {
        format!("sudo apt-get install {how}")
    };
    Err(format!("`{tool}` is missing; on Debian/Ubuntu: {how}"))
}

/// Builds what the packages ship: the tray app without the demo server, the daemon and pinchatctl, in
/// one build so that they share one set of dependencies (the daemon and pinchatctl have no default
/// features to lose); for `target` when given (a cross-build).
pub(crate) fn build_programs(profile: &str, target: Option<&str>) -> Result<(), String> {
    let mut command = Command::new(cargo());
    command.args(["build", "--locked", "--profile", profile, "--no-default-features"]);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    command.args([
        "-p",
        "pinchat-ui",
        "--bin",
        "pinchat",
        "-p",
        "pinchat-daemon",
        "--bin",
        "pinchatd",
        "-p",
        "pinchatctl",
        "--bin",
        "pinchatctl",
        "-p",
        "pinchat-full",
        "--bin",
        "pinchat-full",
    ]);
    run(&mut command)
}

pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}
