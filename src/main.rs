use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sofia_phone::cli::run(sofia_phone::cli::Cli::parse())
}
