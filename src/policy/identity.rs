//! Who is asking (SPEC §5): identity sources tried in order over a request's headers, the
//! claims Envoy's `jwt_authn` filter put in metadata, and the mTLS peer principal.

use serde_json::Value;

use super::document::IdentityDoc;
use super::route::{HeaderFound, HeaderLookup, conflicting_header_message};
use super::syntax::{self, escape};

/// The header source used when a policy has no `identity` section.
pub const DEFAULT_PRINCIPAL_HEADER: &str = "x-iotauthz-principal";
/// The action CheckAssign requires when the policy names none.
pub const DEFAULT_ASSIGN_ACTION: &str = "Microsoft.Authorization/roleAssignments/write";
/// The action the Admin API requires to delete a role assignment when the policy names none.
pub const DEFAULT_UNASSIGN_ACTION: &str = "Microsoft.Authorization/roleAssignments/delete";
/// Envoy's jwt_authn filter namespace, the default for `jwt.namespace`.
pub const DEFAULT_JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A request header whose value is a full principal id (lowercase name).
    Header(String),
    Jwt(JwtSource),
    /// The peer certificate's principal as Envoy reports it, given this principal type.
    PeerCertificate {
        principal_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSource {
    pub namespace: String,
    pub key: String,
    pub claim: String,
    pub principal_type: String,
    pub groups_claim: Option<String>,
}

/// The compiled `identity` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    pub sources: Vec<IdentitySource>,
    pub assign_action: String,
    pub unassign_action: String,
}

impl IdentityConfig {
    /// Whether a source reads Envoy metadata namespace `namespace` (only those are turned
    /// into JSON for the identity step; the others are never looked at).
    pub fn reads_namespace(&self, namespace: &str) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, IdentitySource::Jwt(jwt) if jwt.namespace == namespace))
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            sources: vec![IdentitySource::Header(DEFAULT_PRINCIPAL_HEADER.to_owned())],
            assign_action: DEFAULT_ASSIGN_ACTION.to_owned(),
            unassign_action: DEFAULT_UNASSIGN_ACTION.to_owned(),
        }
    }
}

/// What a request offers to identify its caller.
#[derive(Default, Clone, Copy)]
pub struct IdentityInput<'a> {
    pub headers: Option<&'a dyn HeaderLookup>,
    /// Envoy's `metadata_context.filter_metadata` as JSON: namespace → struct.
    pub metadata: Option<&'a Value>,
    /// The peer certificate's URI SAN / SPIFFE id, as Envoy reports `source.principal`.
    pub peer_principal: Option<&'a str>,
}

/// A caller identified by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: String,
    pub groups: Vec<String>,
    /// Which source yielded it, for logs (never the token).
    pub source: &'static str,
}

impl IdentityConfig {
    pub fn compile(doc: &IdentityDoc) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut sources = Vec::new();
        for (i, source) in doc.sources.iter().flatten().enumerate() {
            let object = format!("identity.sources[{i}]");
            let given = usize::from(source.header.is_some())
                + usize::from(source.jwt.is_some())
                + usize::from(source.peer_certificate.is_some());
            if given != 1 {
                problems.push((
                    object,
                    "must have exactly one of `header`, `jwt`, `peerCertificate`".to_owned(),
                ));
                continue;
            }
            let check_type = |t: &str| {
                syntax::principal_type(&format!("{t}:x"))
                    .map(|_| t.to_owned())
                    .map_err(|_| format!("`principalType: {}` is not a principal type", escape(t)))
            };
            if let Some(header) = &source.header {
                if header.is_empty()
                    || !header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    problems.push((
                        object,
                        format!("`header: {}` is not a header name", escape(header)),
                    ));
                } else {
                    sources.push(IdentitySource::Header(header.to_ascii_lowercase()));
                }
            } else if let Some(jwt) = &source.jwt {
                match check_type(&jwt.principal_type) {
                    Ok(principal_type) => sources.push(IdentitySource::Jwt(JwtSource {
                        namespace: jwt
                            .namespace
                            .clone()
                            .unwrap_or_else(|| DEFAULT_JWT_NAMESPACE.to_owned()),
                        key: jwt.key.clone().unwrap_or_else(|| "jwt_payload".to_owned()),
                        claim: jwt.claim.clone().unwrap_or_else(|| "sub".to_owned()),
                        principal_type,
                        groups_claim: jwt.groups_claim.clone(),
                    })),
                    Err(e) => problems.push((object, e)),
                }
            } else if let Some(peer) = &source.peer_certificate {
                match check_type(&peer.principal_type) {
                    Ok(principal_type) => {
                        sources.push(IdentitySource::PeerCertificate { principal_type })
                    }
                    Err(e) => problems.push((object, e)),
                }
            }
        }
        let assign_action = doc
            .assign_action
            .clone()
            .unwrap_or_else(|| DEFAULT_ASSIGN_ACTION.to_owned());
        if let Err(e) = syntax::check_action(&assign_action) {
            problems.push(("identity.assignAction".to_owned(), e));
        }
        let unassign_action = doc
            .unassign_action
            .clone()
            .unwrap_or_else(|| DEFAULT_UNASSIGN_ACTION.to_owned());
        if let Err(e) = syntax::check_action(&unassign_action) {
            problems.push(("identity.unassignAction".to_owned(), e));
        }
        // Only an absent `sources` means the default header source: an empty list is no
        // source at all, never the forgeable header by surprise.
        if doc.sources.is_none() {
            sources = IdentityConfig::default().sources;
        }
        if problems.is_empty() {
            Ok(Self {
                sources,
                assign_action,
                unassign_action,
            })
        } else {
            Err(problems)
        }
    }

    /// The header names that carry identity; proxies must strip them from clients.
    pub fn identity_headers(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|s| match s {
            IdentitySource::Header(h) => Some(h.as_str()),
            _ => None,
        })
    }

    /// Tries each source in order; the first that yields a valid principal wins. A header
    /// source whose header arrives with different values is ambiguous: an error (the
    /// request is malformed), never a fall-through to the next source.
    pub fn identify(&self, input: &IdentityInput<'_>) -> Result<Option<Identity>, String> {
        self.sources
            .iter()
            .find_map(|source| Self::try_source(source, input))
            .transpose()
    }

    /// What one source says: nothing, an identity, or an ambiguous header.
    fn try_source(
        source: &IdentitySource,
        input: &IdentityInput<'_>,
    ) -> Option<Result<Identity, String>> {
        let identity = match source {
            IdentitySource::Header(name) => {
                let value = match input.headers?.lookup(name) {
                    HeaderFound::Value(value) => value,
                    HeaderFound::Missing => return None,
                    HeaderFound::Conflicting => {
                        return Some(Err(conflicting_header_message(name)));
                    }
                };
                syntax::principal_type(value).ok()?;
                Identity {
                    principal: value.to_owned(),
                    groups: Vec::new(),
                    source: "header",
                }
            }
            IdentitySource::Jwt(jwt) => {
                let payload = input.metadata?.get(&jwt.namespace)?.get(&jwt.key)?;
                let subject = payload.get(&jwt.claim)?.as_str()?;
                let principal = format!("{}:{subject}", jwt.principal_type);
                syntax::principal_type(&principal).ok()?;
                let groups = jwt
                    .groups_claim
                    .as_ref()
                    .and_then(|claim| payload.get(claim))
                    .map(claim_values)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|g| format!("group:{g}"))
                    .filter(|g| syntax::group_id(g).is_ok())
                    .collect();
                Identity {
                    principal,
                    groups,
                    source: "jwt",
                }
            }
            IdentitySource::PeerCertificate { principal_type } => {
                let peer = input.peer_principal.filter(|p| !p.is_empty())?;
                let principal = format!("{principal_type}:{peer}");
                syntax::principal_type(&principal).ok()?;
                Identity {
                    principal,
                    groups: Vec::new(),
                    source: "peerCertificate",
                }
            }
        };
        Some(Ok(identity))
    }
}

/// A groups claim is a list of strings, or one string of space-separated values (the
/// OAuth `scope` convention).
fn claim_values(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_namespaces_of_jwt_sources_are_read() {
        let jwt = |namespace: &str| {
            IdentitySource::Jwt(JwtSource {
                namespace: namespace.into(),
                key: "jwt_payload".into(),
                claim: "sub".into(),
                principal_type: "user".into(),
                groups_claim: None,
            })
        };
        let config = IdentityConfig {
            sources: vec![
                IdentitySource::Header("x-p".into()),
                jwt("envoy.filters.http.jwt_authn"),
            ],
            assign_action: String::new(),
            unassign_action: String::new(),
        };
        assert!(config.reads_namespace("envoy.filters.http.jwt_authn"));
        assert!(!config.reads_namespace("envoy.filters.http.rbac"));
        assert!(!IdentityConfig::default().reads_namespace("envoy.filters.http.jwt_authn"));
    }
}
