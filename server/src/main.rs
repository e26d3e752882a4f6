//! `pinchat-server`: everything is in the library; see `pinchat_server::cli`.

fn main() -> std::process::ExitCode {
    pinchat_server::cli::main()
}
