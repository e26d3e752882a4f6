// A tray app has no console window of its own on Windows; `pinchat_ui::main` borrows the console of
// the terminal that started it, if any, for `--help`, the terminal view and error messages.
#![cfg_attr(windows, windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    pinchat_ui::main()
}
