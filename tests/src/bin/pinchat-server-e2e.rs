//! The server binary the end-to-end tests run: the same one-line `main` as `pinchat-server`, built by
//! cargo together with the tests so that it is always current.

fn main() -> std::process::ExitCode {
    pinchat_server::cli::main()
}
