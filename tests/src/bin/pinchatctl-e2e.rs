//! The `pinchatctl` the end-to-end tests run: the same one-line `main`.

fn main() -> std::process::ExitCode {
    pinchatctl::main()
}
