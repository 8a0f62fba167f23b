//! The codec of every gRPC service we generate (the native API and Envoy's Authorization
//! service): prost, with a look at a request's shape before it is decoded.
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

/// Envoy's CheckRequest, looked at before it is decoded (`envoy.service.auth.v3`).
///
/// Every element of a repeated field, map or `ListValue` decodes to an allocation of its
/// own, and can be two bytes on the wire: 4 MiB of empty `ListValue` entries in the
/// metadata decoded to over 200 MB. One walk over the bytes, following only the fields that
/// nest or repeat, refuses a request whose metadata nests deeper than
/// [`MAX_METADATA_DEPTH`], that carries more than [`MAX_HEADERS`] headers, or more than
/// [`MAX_ENTRIES`] other repeated entries (metadata values and fields, map entries).
impl Admit for envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    fn admit(bytes: &[u8]) -> Result<(), Status> {
        let mut tally = Tally::default();
        walk(bytes, Shape::CheckRequest, 0, &mut tally).map_err(Refusal::status)
    }
}

/// The most `Struct` / `ListValue` levels in a CheckRequest's metadata (the namespace's own
/// `Struct` is level 1). Envoy's filters write a handful; prost stops at 100 messages deep.
pub const MAX_METADATA_DEPTH: usize = 32;

/// The most repeated entries of a CheckRequest apart from its headers: metadata values
/// (list elements and struct fields), metadata namespaces, context extensions and peer
/// labels together. A JWT payload that fits Envoy's default 60 KiB of request headers has
/// fewer than 31,000 values.
pub const MAX_ENTRIES: usize = 50_000;

/// A message of `envoy.service.auth.v3.CheckRequest`'s tree that can nest or repeat.
#[derive(Debug, Clone, Copy)]
enum Shape {
    CheckRequest,
    AttributeContext,
    Peer,
    Request,
    HttpRequest,
    HeaderMap,
    Metadata,
    /// An entry of `Metadata.filter_metadata`: namespace and `Struct`.
    Namespace,
    Struct,
    /// An entry of `Struct.fields`: name and `Value`.
    Field,
    Value,
    ListValue,
}

/// What one occurrence of a length-delimited field is counted as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Counted {
    Not,
    Entry,
    Header,
}

impl Shape {
    /// Field `number` of this message: what it counts as, and the message to walk into
    /// (`None`: strings, bytes and messages that neither nest nor repeat).
    fn field(self, number: u64) -> (Counted, Option<Shape>) {
        use Counted::{Entry, Header, Not};
        match (self, number) {
            (Shape::CheckRequest, 1) => (Not, Some(Shape::AttributeContext)),
            // source, destination; request; context_extensions; metadata_context,
            // route_metadata_context.
            (Shape::AttributeContext, 1 | 2) => (Not, Some(Shape::Peer)),
            (Shape::AttributeContext, 4) => (Not, Some(Shape::Request)),
            (Shape::AttributeContext, 10) => (Entry, None),
            (Shape::AttributeContext, 11 | 13) => (Not, Some(Shape::Metadata)),
            (Shape::Peer, 3) => (Entry, None),
            (Shape::Request, 2) => (Not, Some(Shape::HttpRequest)),
            (Shape::HttpRequest, 3) => (Header, None),
            (Shape::HttpRequest, 13) => (Not, Some(Shape::HeaderMap)),
            (Shape::HeaderMap, 1) => (Header, None),
            // filter_metadata; typed_filter_metadata (an `Any` each, not looked into).
            (Shape::Metadata, 1) => (Entry, Some(Shape::Namespace)),
            (Shape::Metadata, 2) => (Entry, None),
            (Shape::Namespace, 2) => (Not, Some(Shape::Struct)),
            (Shape::Struct, 1) => (Entry, Some(Shape::Field)),
            (Shape::Field, 2) => (Not, Some(Shape::Value)),
            (Shape::Value, 5) => (Not, Some(Shape::Struct)),
            (Shape::Value, 6) => (Not, Some(Shape::ListValue)),
            (Shape::ListValue, 1) => (Entry, Some(Shape::Value)),
            _ => (Not, None),
        }
    }
}

/// The entries counted so far in one request.
#[derive(Debug, Default)]
struct Tally {
    entries: usize,
    headers: usize,
}

/// Why a CheckRequest is refused undecoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    Unreadable,
    TooDeep,
    TooManyEntries,
    TooManyHeaders,
}

impl Refusal {
    fn status(self) -> Status {
        Status::invalid_argument(match self {
            Refusal::Unreadable => "request bytes cannot be walked".to_owned(),
            Refusal::TooDeep => {
                format!("request metadata nests deeper than {MAX_METADATA_DEPTH} levels")
            }
            Refusal::TooManyEntries => {
                format!("request has more than {MAX_ENTRIES} metadata values and map entries")
            }
            Refusal::TooManyHeaders => format!("request has more than {MAX_HEADERS} headers"),
        })
    }
}

/// Walks one encoded `shape` message, `depth` metadata levels down, counting into `tally`.
/// Recursion is bounded: it only goes deeper through a `Struct` or `ListValue`, at most
/// [`MAX_METADATA_DEPTH`] of them.
fn walk(mut bytes: &[u8], shape: Shape, depth: usize, tally: &mut Tally) -> Result<(), Refusal> {
    while !bytes.is_empty() {
        let key = varint(&mut bytes).ok_or(Refusal::Unreadable)?;
        let skip = match key & 7 {
            0 => varint(&mut bytes).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut bytes).and_then(|len| usize::try_from(len).ok()),
            5 => Some(4),
            _ => None,
        }
        .ok_or(Refusal::Unreadable)?;
        let (inner, rest) = bytes.split_at_checked(skip).ok_or(Refusal::Unreadable)?;
        bytes = rest;
        if key & 7 != 2 {
            continue;
        }
        let (counted, child) = shape.field(key >> 3);
        match counted {
            Counted::Not => {}
            Counted::Entry => {
                tally.entries += 1;
                if tally.entries > MAX_ENTRIES {
                    return Err(Refusal::TooManyEntries);
                }
            }
            Counted::Header => {
                tally.headers += 1;
                if tally.headers > MAX_HEADERS {
                    return Err(Refusal::TooManyHeaders);
                }
            }
        }
        if let Some(child) = child {
            let depth = match child {
                Shape::Struct | Shape::ListValue => depth + 1,
                _ => depth,
            };
            if depth > MAX_METADATA_DEPTH {
                return Err(Refusal::TooDeep);
            }
            walk(inner, child, depth, tally)?;
        }
    }
    Ok(())
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
mod tests;
