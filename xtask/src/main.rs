//! `cargo xtask <task>`: project automation in Rust rather than shell, so that it runs the same on
//! Windows, macOS and Linux.
//!
//! - `test`: the whole test suite (`cargo test --workspace`), in one place so that the README, CI and a
//!   newcomer all run exactly the same thing. Suites that need services (a session bus and a Secret
//!   Service for the keyring, a display for the webview) will get them set up here.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask test [extra cargo test arguments]");
            ExitCode::from(2)
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn test(extra: &[String]) -> ExitCode {
    let status = cargo().args(["test", "--workspace"]).args(extra).status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("xtask: the test suite failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
