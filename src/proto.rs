//! Generated protobuf code and the descriptor sets served by reflection. Architecture
//! invariant: generated types stop here and in `server`; the policy engine never sees them.

/// The native API, `iotauthz.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod iotauthz {
    pub mod v1 {
        tonic::include_proto!("iotauthz.v1");
    }
}

/// Descriptor set of `iotauthz.v1` (for reflection).
pub const IOTAUTHZ_DESCRIPTOR: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/iotauthz_descriptor.bin"));

/// Descriptor set of `envoy.service.auth.v3` and its imports (for reflection).
pub const ENVOY_AUTH_DESCRIPTOR: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_auth_descriptor.bin"));

/// Converts a protobuf timestamp to Unix nanoseconds, saturating.
pub fn timestamp_to_instant(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(ts.nanos))
}

/// Converts Unix nanoseconds to a protobuf timestamp.
pub fn instant_to_timestamp(at: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.div_euclid(1_000_000_000),
        nanos: i32::try_from(at.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}
