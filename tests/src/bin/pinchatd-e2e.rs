//! The daemon binary the end-to-end tests run: the same one-line `main` as `pinchatd`.

fn main() -> std::process::ExitCode {
    pinchat_daemon::cli::main()
}
