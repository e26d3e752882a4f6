//! `pinchatd`: everything is in the library; see `pinchat_daemon::cli`.

fn main() -> std::process::ExitCode {
    pinchat_daemon::cli::main()
}
