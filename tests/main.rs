//! The integration tests, in one binary: decision fixtures, validation rules, the command
//! line, the services end to end. The property tests against the reference model
//! (`properties.rs`, `overlay.rs`, `planes.rs`) are built into the library's unit tests
//! instead (`src/lib.rs`), so that they judge mutants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod authzen;
mod bearer;
mod cli;
mod console;
mod console_browser;
mod console_store;
mod decisions;
mod demo;
mod envoy;
mod explain;
mod faults;
mod grpc;
mod hardening;
mod hostile;
mod http_mode;
mod observability;
mod overlay_store;
mod plan;
mod reload;
mod soak;
mod store;
mod store_auth;
mod support;
mod tracing;
mod tutorial;
mod validation;
