//! The native API's codec: prost, with a look at a request's shape before it is decoded.
//!
//! Decoding a message allocates for every element of its repeated fields, and an element
//! can be two bytes on the wire: a 4 MiB BatchCheck of empty checks decodes to about two
//! million of them, over 500 MB, before the handler could count them. [`Admit`] lets a
//! message refuse such a shape from its raw bytes first, at no allocation.

use std::marker::PhantomData;

use prost::Message;
use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::iotauthz::v1 as pb;

/// The most checks one BatchCheck carries.
pub const MAX_BATCH: usize = 1000;

/// Batches up to this many checks are decoded and refused by the handler (which counts
/// them in `iot_authz_request_errors_total`); larger ones are refused here, undecoded, so
/// no request decodes more than this many checks.
pub const MAX_DECODED_BATCH: usize = 10 * MAX_BATCH;

/// What a message's raw bytes must satisfy before they are decoded.
pub trait Admit {
    /// `Ok` to decode; an error status refuses the message undecoded.
    fn admit(_bytes: &[u8]) -> Result<(), Status> {
        Ok(())
    }
}

/// Messages decoded as they come: their size limit bounds what they decode to.
macro_rules! admit_every {
    ($($message:ty),* $(,)?) => {
        $(impl Admit for $message {})*
    };
}

admit_every!(
    pb::CheckResponse,
    pb::BatchCheckResponse,
    pb::CheckHttpResponse,
    pb::ListPermissionsResponse,
    pb::WhoCanRequest,
    pb::WhoCanResponse,
    pb::CheckAssignRequest,
    pb::CheckAssignResponse,
    pb::GetPolicyStatusRequest,
    pb::PolicyStatus,
    pb::PlanRequest,
    pb::PlanResponse,
);

// The Admin API (src/server/admin.rs).
admit_every!(
    pb::RoleAssignment,
    pb::CreateRoleAssignmentRequest,
    pb::CreateRoleAssignmentResponse,
    pb::DeleteRoleAssignmentRequest,
    pb::WriteResponse,
    pb::ListRoleAssignmentsRequest,
    pb::ListRoleAssignmentsResponse,
    pb::RoleDefinition,
    pb::PutRoleDefinitionRequest,
    pb::DeleteRoleDefinitionRequest,
    pb::Group,
    pb::PutGroupRequest,
    pb::DeleteGroupRequest,
);

/// The most groups a request may carry (a token's groups), and the most headers of a
/// CheckHttp request, counted on the wire before decoding: an empty group or header is two
/// bytes, so 4 MiB would otherwise decode to two million of them (140 MB).
pub const MAX_GROUPS: usize = 10_000;
pub const MAX_HEADERS: usize = 10_000;

/// Refuses a message with more than `max` occurrences of field `number`, `what` naming it.
fn at_most(bytes: &[u8], number: u64, max: usize, what: &str) -> Result<(), Status> {
    match count_field(bytes, number) {
        Some(n) if n <= max => Ok(()),
        Some(n) => Err(Status::invalid_argument(format!(
            "request has {n} {what}; at most {max} are allowed"
        ))),
        None => Err(Status::invalid_argument("request bytes cannot be walked")),
    }
}

impl Admit for pb::CheckRequest {
    fn admit(bytes: &[u8]) -> Result<(), Status> {
        at_most(bytes, 5, MAX_GROUPS, "groups")
    }
}

impl Admit for pb::CheckHttpRequest {
    fn admit(bytes: &[u8]) -> Result<(), Status> {
        at_most(bytes, 4, MAX_HEADERS, "headers")?;
        at_most(bytes, 5, MAX_GROUPS, "groups")
    }
}

impl Admit for pb::ListPermissionsRequest {
    fn admit(bytes: &[u8]) -> Result<(), Status> {
        at_most(bytes, 3, MAX_GROUPS, "groups")
    }
}

impl Admit for pb::BatchCheckRequest {
    fn admit(bytes: &[u8]) -> Result<(), Status> {
        // Field 1, `checks`. Bytes the walk cannot follow count as too many: prost would
        // skip a group and decode on, so an unreadable prefix must not hide the rest.
        let n = count_field(bytes, 1).unwrap_or(usize::MAX);
        if n > MAX_DECODED_BATCH {
            return Err(Status::invalid_argument(format!(
                "batch has {n} checks; at most {MAX_BATCH} are allowed"
            )));
        }
        Ok(())
    }
}

/// How many times field `number` occurs at the top level of an encoded message, walking
/// the wire format without decoding. `None` for bytes the walk cannot follow: malformed, or
/// a group (wire types 3 and 4, which proto3 senders never write).
fn count_field(mut bytes: &[u8], number: u64) -> Option<usize> {
    let mut count = 0;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let skip = match key & 7 {
            0 => varint(&mut bytes).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut bytes).and_then(|len| usize::try_from(len).ok()),
            5 => Some(4),
            _ => None,
        };
        bytes = bytes.get(skip?..)?;
        if key >> 3 == number {
            count += 1;
        }
    }
    Some(count)
}

/// Reads one base-128 varint.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// prost's codec, with [`Admit`] before every decode.
#[derive(Debug, Clone)]
pub struct AdmittingCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for AdmittingCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for AdmittingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Admit + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = AdmittingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        AdmittingDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// The decoder of [`AdmittingCodec`]: [`Admit`], then prost's decoder.
#[derive(Debug, Clone)]
pub struct AdmittingDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default + Admit> Decoder for AdmittingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // A DecodeBuf holds one whole message in one contiguous buffer.
        U::admit(buf.chunk())?;
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_groups_and_headers_are_refused_before_decoding() {
        let check = |n: usize| {
            pb::CheckRequest {
                groups: vec![String::new(); n],
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert!(pb::CheckRequest::admit(&check(MAX_GROUPS)).is_ok());
        assert!(pb::CheckRequest::admit(&check(MAX_GROUPS + 1)).is_err());
        let http = |headers: usize, groups: usize| {
            pb::CheckHttpRequest {
                headers: (0..headers)
                    .map(|i| (i.to_string(), String::new()))
                    .collect(),
                groups: vec![String::new(); groups],
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert!(pb::CheckHttpRequest::admit(&http(MAX_HEADERS, MAX_GROUPS)).is_ok());
        assert!(pb::CheckHttpRequest::admit(&http(MAX_HEADERS + 1, 0)).is_err());
        assert!(pb::CheckHttpRequest::admit(&http(0, MAX_GROUPS + 1)).is_err());
        let list = pb::ListPermissionsRequest {
            groups: vec![String::new(); MAX_GROUPS + 1],
            ..Default::default()
        };
        assert!(pb::ListPermissionsRequest::admit(&list.encode_to_vec()).is_err());
    }

    #[test]
    fn fields_are_counted_on_the_wire() {
        let batch = |n: usize| pb::BatchCheckRequest {
            checks: (0..n)
                .map(|i| pb::CheckRequest {
                    principal: format!("user:{i}"),
                    groups: vec!["group:g".into()],
                    at: Some(prost_types::Timestamp {
                        seconds: 5,
                        nanos: 7,
                    }),
                    data_action: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        for n in [0, 1, 1000, 1001, MAX_DECODED_BATCH, MAX_DECODED_BATCH + 1] {
            let bytes = batch(n).encode_to_vec();
            assert_eq!(count_field(&bytes, 1), Some(n));
            let admitted = pb::BatchCheckRequest::admit(&bytes).is_ok();
            assert_eq!(admitted, n <= MAX_DECODED_BATCH, "{n}");
        }
        // Two million empty checks are refused from their bytes alone.
        let empty = [0x0a, 0x00].repeat(2_000_000);
        let e = pb::BatchCheckRequest::admit(&empty).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("batch has 2000000 checks"), "{e:?}");
        // Bytes the walk cannot follow are refused, not counted short: an empty group
        // (prost would skip it) in front of two million empty checks.
        assert_eq!(count_field(&[0x0a, 0x05, 0x01], 1), None);
        assert_eq!(count_field(&[0xff; 11], 1), None);
        let mut grouped = vec![0x13, 0x14];
        grouped.extend([0x0a, 0x00].repeat(2_000_000));
        assert_eq!(count_field(&grouped, 1), None);
        assert!(pb::BatchCheckRequest::admit(&grouped).is_err());
    }
}
