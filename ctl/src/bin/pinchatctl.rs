//! `pinchatctl`: everything is in the library; see the `pinchatctl` crate.

fn main() -> std::process::ExitCode {
    pinchatctl::main()
}
