fn main() -> std::process::ExitCode {
    pinchat_ui::main()
}
