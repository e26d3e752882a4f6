//! The desktop app binary the end-to-end tests run: the same one-line `main` as `pinchat`.

fn main() -> std::process::ExitCode {
    pinchat_ui::main()
}
