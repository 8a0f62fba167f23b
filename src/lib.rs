//! iot-authz: an Azure-style RBAC policy decision point for IoT platforms.
//!
//! Module map:
//! - [`policy`]: the pure core. Policy documents ([`policy::document`]), checked value
//!   types ([`policy::syntax`]), validation and compilation ([`policy::compile`]) into an
//!   immutable [`policy::Snapshot`], evaluation ([`policy::snapshot`]), routes and path
//!   canonicalisation ([`policy::route`]), identity sources ([`policy::identity`]) and the
//!   queries beyond one check ([`policy::queries`]). Only [`policy::source`] reads files.
//! - [`demo`]: the embedded demo policy (role packs plus demo principals and routes).
//! - [`import_azure`]: Azure role definitions and assignments to policy YAML.
//! - [`loadgen`]: `iot-authz load`, a load generator for benchmarks over loopback.
//! - [`testing`]: runs the `tests:` cases of a policy.
//! - [`server`]: the service: native gRPC API, Envoy ext_authz, health, reflection, and
//!   the HTTP endpoints, over a live [`live::PolicyState`].
//! - [`console`]: the web console (`serve --console`), pages under `/console/` on the
//!   HTTP port.
//! - [`sources`]: live policy sources: watched files and directories, and an HTTP bundle
//!   poller, feeding validated snapshots into the server's policy state.
//! - [`store`]: the etcd store (SPEC §9): policy objects managed at run time, read once
//!   and then followed through etcd's watch, and consistency tokens (SPEC §10).
//! - [`telemetry`]: logs, and OTLP traces parented on the caller's `traceparent`.
//! - [`proto`]: generated protobuf code, kept at the edge.
//! - [`cli`]: the `iot-authz` command line: [`cli::serve`] starts the server,
//!   [`cli::admin`] holds the `admin` (Admin API client) and `store` (import/export)
//!   commands.
//!
//! The top-level modules form no import cycle (layers, lowest first: `policy`; `live`;
//! `store`; `sources`; `server`; `cli`), and no function in `src/` is over 150 lines:
//! `scripts/check-shape.py` checks both.

pub mod cli;
pub mod demo;
pub mod import_azure;
pub mod live;
pub mod loadgen;
pub mod policy;
pub mod priority;
pub mod proto;
pub mod server;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod testing;

// The property tests against the reference model of SPEC §3 (`tests/properties.rs`,
// `tests/reference/`), of the store's incremental path (`tests/overlay.rs`) and of the
// planes (`tests/planes.rs`) are built into the library's unit tests rather than the
// integration binary, so that they judge every mutant of the policy core at the cost of
// one rebuild of this crate's test binary (docs/mutants.md). They name the crate as
// `iot_authz`, as any outside user does.
#[cfg(test)]
extern crate self as iot_authz;
#[cfg(test)]
#[path = "../tests/overlay.rs"]
mod overlay_properties;
#[cfg(test)]
#[path = "../tests/planes.rs"]
mod plane_properties;
#[cfg(test)]
#[path = "../tests/properties.rs"]
mod properties;

/// Installs rustls' `ring` provider as the process default (idempotent). HTTPS clients
/// need it: the build carries no other provider.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
