//! The integration tests, in one binary: decision fixtures, validation rules, the command
//! line, and property tests against a reference model.

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
