use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the request path (protobuf strings, reasons,
/// cache entries) and policy compiles allocate many small objects, which it serves faster
/// and with less fragmentation than glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    iot_authz::cli::run(iot_authz::cli::Cli::parse())
}
