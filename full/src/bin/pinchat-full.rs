//! `pinchat-full`: see the `pinchat_full` library.

fn main() -> std::process::ExitCode {
    pinchat_full::main()
}
