//! Generated protobuf code and the descriptor sets served by reflection. Architecture
//! invariant: generated types stop here and in `server`; the policy engine never sees them.

pub mod codec;

/// The native API, `iotauthz.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod iotauthz {
    pub mod v1 {
        tonic::include_proto!("iotauthz.v1");
    }
}

/// Envoy's `envoy.service.auth.v3.Authorization` server, generated with the native API's
/// codec ([`codec::AdmittingCodec`]); its messages are `envoy-types`'.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod envoy_auth {
    tonic::include_proto!("envoy.service.auth.v3");
}

/// etcd's v3 API (client side), for the store (`crate::store`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcd {
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
}

/// Descriptor set of `iotauthz.v1` (for reflection).
pub const IOTAUTHZ_DESCRIPTOR: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/iotauthz_descriptor.bin"));

/// Descriptor set of `envoy.service.auth.v3` and its imports (for reflection).
pub const ENVOY_AUTH_DESCRIPTOR: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_auth_descriptor.bin"));

use crate::policy::syntax::Instant;

/// Converts a protobuf timestamp to Unix nanoseconds (exact: an [`Instant`] holds every
/// timestamp).
pub fn timestamp_to_instant(ts: &prost_types::Timestamp) -> Instant {
    Instant::from(ts.seconds) * 1_000_000_000 + Instant::from(ts.nanos)
}

/// A timestamp `google.protobuf.Timestamp` does not allow (defined with the policy
/// language's other value problems, so that a request error can carry it).
pub use crate::policy::syntax::TimestampError;

/// A request's timestamp as an instant, refusing what `google.protobuf.Timestamp` does
/// not allow: `nanos` outside 0 to 999,999,999, or a time outside the years 0001 to 9999.
pub fn request_instant(ts: &prost_types::Timestamp) -> Result<Instant, TimestampError> {
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in Unix seconds.
    const FIRST: i64 = -62_135_596_800;
    const LAST: i64 = 253_402_300_799;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(TimestampError::Nanos(ts.nanos));
    }
    if !(FIRST..=LAST).contains(&ts.seconds) {
        return Err(TimestampError::Seconds(ts.seconds));
    }
    Ok(timestamp_to_instant(ts))
}

/// Converts Unix nanoseconds to a protobuf timestamp.
pub fn instant_to_timestamp(at: Instant) -> prost_types::Timestamp {
    let seconds = at.div_euclid(1_000_000_000);
    prost_types::Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(if seconds < 0 { i64::MIN } else { i64::MAX }),
        nanos: i32::try_from(at.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::{TimestampError, request_instant};

    #[test]
    fn request_timestamps_outside_protobufs_range_are_refused_by_kind() {
        let at = |seconds, nanos| request_instant(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(at(0, 5), Ok(5));
        assert_eq!(at(0, -1), Err(TimestampError::Nanos(-1)));
        assert_eq!(
            at(0, 1_000_000_000),
            Err(TimestampError::Nanos(1_000_000_000))
        );
        assert_eq!(
            at(-62_135_596_801, 0),
            Err(TimestampError::Seconds(-62_135_596_801))
        );
        assert_eq!(
            at(253_402_300_800, 0),
            Err(TimestampError::Seconds(253_402_300_800))
        );
        assert_eq!(
            TimestampError::Nanos(-1).to_string(),
            "timestamp nanos -1 is outside 0 to 999999999"
        );
    }
}
