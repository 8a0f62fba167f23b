//! Raw policy documents exactly as users write them (SPEC §2).
//!
//! These types only describe shape: every struct rejects unknown keys so that a misspelt
//! `notActions` can never grant silently. Meaning (valid scopes, known roles, ...) is checked
//! by [`crate::policy::compile`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One policy document (a YAML or JSON file).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document {
    /// Format version; must be present and equal to 1 (a number: `"1"` is refused in YAML
    /// as in JSON).
    #[serde(default, deserialize_with = "strict::opt_u32")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CatalogActionDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope_links: Vec<ScopeLinkDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<AssignmentDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_assignments: Vec<DenyAssignmentDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteDoc>,
    /// Present and null (`identity:` with its whole body commented out) is an error, as
    /// for [`IdentityDoc::sources`]: leaving the key out is how the default is chosen.
    #[serde(
        default,
        deserialize_with = "present_identity",
        skip_serializing_if = "Option::is_none"
    )]
    pub identity: Option<IdentityDoc>,
    /// The AuthZEN API's settings (SPEC §12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authzen: Option<AuthzenDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCaseDoc>,
}

/// `authzen:` — how AuthZEN requests map to this policy (SPEC §12).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzenDoc {
    /// AuthZEN subject type → principal type (`identity: user`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subject_types: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatalogActionDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(
        default,
        deserialize_with = "strict::bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub data_action: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub implies: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoleDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_data_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignable_scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupDoc {
    pub id: String,
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScopeLinkDoc {
    pub scope: String,
    #[serde(default)]
    pub parents: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssignmentDoc {
    pub principal: String,
    pub role: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DenyAssignmentDoc {
    pub name: String,
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_data_actions: Vec<String>,
    pub scope: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConstraintDoc {
    pub min_assignments: MinAssignmentsDoc,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MinAssignmentsDoc {
    pub role: String,
    pub scope: String,
    #[serde(deserialize_with = "strict::u32")]
    pub count: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDoc {
    pub methods: Vec<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(
        default,
        deserialize_with = "strict::bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub data_action: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(
        default,
        deserialize_with = "strict::bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub public: bool,
    /// `enforce` (the default) or `shadow`: evaluate and log as usual, but let the request
    /// through, marking would-be denials.
    #[serde(default, skip_serializing_if = "RouteMode::is_enforce")]
    pub mode: RouteMode,
}

/// How a route's decisions are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    #[default]
    Enforce,
    Shadow,
}

impl RouteMode {
    pub fn is_enforce(&self) -> bool {
        *self == Self::Enforce
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityDoc {
    /// Absent: the header source `x-iotauthz-principal`. Present and empty: no source, so
    /// every request that needs an identity is `noIdentity`. Present and null (`sources:`
    /// with every entry commented out) is an error, never the default: the default is the
    /// forgeable header source, and a list emptied by hand must not bring it back.
    #[serde(
        default,
        deserialize_with = "present_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub sources: Option<Vec<IdentitySourceDoc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_action: Option<String>,
    /// The action the Admin API requires to delete a role assignment (SPEC §9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unassign_action: Option<String>,
}

/// One identity source; exactly one key must be present.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentitySourceDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSourceDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_certificate: Option<PeerCertificateSourceDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerSourceDoc>,
}

/// A JWT verified by iot-authz itself (SPEC §13).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BearerSourceDoc {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Exactly one of `jwks` and `discovery: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    pub principal_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// `60s`, `2m`, or a number of seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<DurationDoc>,
}

/// Where a bearer source's keys are: exactly one key.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwksDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A duration written as text (`60s`) or as a number of seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum DurationDoc {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtSourceDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    pub principal_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerCertificateSourceDoc {
    pub principal_type: String,
}

/// One `tests:` case (SPEC §8). Used only by `iot-authz test`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestCaseDoc {
    pub name: String,
    #[serde(default)]
    pub principal: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default, deserialize_with = "strict::bool")]
    pub data_action: bool,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub at: Option<String>,
    pub expect: Expectation,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    #[default]
    Allow,
    Deny,
}

/// A present key that must not be null, with the message to give when it is. Only called
/// when the key is present; an absent key takes the field's default.
fn not_null<'de, D, T>(deserializer: D, message: &'static str) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)?
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(message))
}

fn present_list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    not_null(
        deserializer,
        "is null: write `[]` for no identity source, or leave the key out for the default header source",
    )
}

fn present_identity<'de, D>(deserializer: D) -> Result<Option<IdentityDoc>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    not_null(
        deserializer,
        "is null: leave the key out for the default identity (the `x-iotauthz-principal` header), or give its `sources`",
    )
}

/// Typed scalars read the same way from YAML and JSON: a number must be written as a
/// number and a boolean as `true`/`false`; the quoted `"1"` or `"true"` is a string in both
/// formats, so it is refused in both (JSON's rule; the YAML parser alone would convert it).
mod strict {
    use std::fmt;

    use serde::de::{self, Deserializer, Unexpected, Visitor};

    struct U32;

    impl Visitor<'_> for U32 {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number (unquoted)")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
        }
    }

    struct Bool;

    impl Visitor<'_> for Bool {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("`true` or `false` (unquoted)")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        d.deserialize_any(U32)
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(U32).map(Some)
    }

    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        d.deserialize_any(Bool)
    }
}
