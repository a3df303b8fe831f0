//! `passerelle`: one binary for every command. It parses the command line and hands over to
//! [`passerelle::cli::run`]; everything else lives in the library so tests can drive it.

use std::process::ExitCode;

fn main() -> ExitCode {
    passerelle::cli::run(std::env::args_os())
}
