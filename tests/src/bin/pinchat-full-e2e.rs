//! The full client binary the end-to-end tests run: the same one-line `main` as `pinchat-full`. The
//! tests copy it to a file named `pinchat-full`, the name the daemon requires of a full client.

fn main() -> std::process::ExitCode {
    pinchat_full::main()
}
