use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    iot_authz::cli::run(iot_authz::cli::Cli::parse())
}
