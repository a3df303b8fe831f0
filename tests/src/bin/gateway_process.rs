//! The `passerelle` binary, built within this crate so that the crash tests can start it as a
//! child process (Cargo gives integration tests the path of their own crate's binaries only).

use std::process::ExitCode;

fn main() -> ExitCode {
    passerelle::cli::run(std::env::args_os())
}
