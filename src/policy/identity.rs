//! Who is asking (SPEC §5): identity sources tried in order over a request's headers, the
//! claims Envoy's `jwt_authn` filter put in metadata, and the mTLS peer principal.

use std::sync::Arc;

use serde_json::Value;

use super::bearer::{self, BearerSource, JwksLocation, Rejection, SigningAlgorithm, TokenVerifier};
use super::document::{BearerSourceDoc, DurationDoc, IdentityDoc};
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
    /// A JWT in `Authorization: Bearer`, verified here (SPEC §13). Shared, so that the
    /// verification cache knows the serving settings by pointer.
    Bearer(Arc<BearerSource>),
}

/// Why identification failed outright (the search stops; no later source is tried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifyError {
    /// A header that identifies the caller arrived with different values: malformed.
    Ambiguous(String),
    /// A bearer token was present but invalid: no identity (401).
    Rejected { issuer: String, reason: Rejection },
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

    /// The bearer sources, in order.
    pub fn bearer_sources(&self) -> impl Iterator<Item = &Arc<BearerSource>> {
        self.sources.iter().filter_map(|s| match s {
            IdentitySource::Bearer(b) => Some(b),
            _ => None,
        })
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
    /// Checks bearer tokens (keys and cache live in the shell). Without one, a present
    /// token is rejected with `no keys`: fail closed.
    pub verifier: Option<&'a dyn TokenVerifier>,
    /// The request's time, for `exp` and `nbf`.
    pub at: syntax::Instant,
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
                + usize::from(source.peer_certificate.is_some())
                + usize::from(source.bearer.is_some());
            if given != 1 {
                problems.push((
                    object,
                    "must have exactly one of `header`, `jwt`, `peerCertificate`, `bearer`"
                        .to_owned(),
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
            } else if let Some(doc) = &source.bearer {
                match compile_bearer(doc).and_then(|b| {
                    if sources
                        .iter()
                        .any(|s| matches!(s, IdentitySource::Bearer(o) if o.issuer == b.issuer))
                    {
                        Err(BearerError::DuplicateIssuer { issuer: b.issuer })
                    } else {
                        Ok(b)
                    }
                }) {
                    Ok(b) => sources.push(IdentitySource::Bearer(Arc::new(b))),
                    Err(e) => problems.push((format!("{object}.bearer"), e.to_string())),
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
            problems.push(("identity.assignAction".to_owned(), e.to_string()));
        }
        let unassign_action = doc
            .unassign_action
            .clone()
            .unwrap_or_else(|| DEFAULT_UNASSIGN_ACTION.to_owned());
        if let Err(e) = syntax::check_action(&unassign_action) {
            problems.push(("identity.unassignAction".to_owned(), e.to_string()));
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
    /// A bearer token that is present but invalid stops the search too
    /// ([`IdentifyError::Rejected`]).
    pub fn identify(&self, input: &IdentityInput<'_>) -> Result<Option<Identity>, IdentifyError> {
        self.sources
            .iter()
            .find_map(|source| self.try_source(source, input))
            .transpose()
    }

    /// Only the bearer sources, over one `Authorization` value: how a gRPC caller is
    /// identified from its `authorization` metadata (header sources are never trusted
    /// there: any client can set metadata).
    pub fn identify_bearer(
        &self,
        authorization: &str,
        verifier: &dyn TokenVerifier,
        at: syntax::Instant,
    ) -> Result<Option<Identity>, IdentifyError> {
        struct Authorization<'a>(&'a str);
        impl HeaderLookup for Authorization<'_> {
            fn lookup(&self, lowercase_name: &str) -> HeaderFound<'_> {
                super::route::lookup_header([("authorization", self.0)], lowercase_name)
            }
        }
        let headers = Authorization(authorization);
        let input = IdentityInput {
            headers: Some(&headers),
            verifier: Some(verifier),
            at,
            ..IdentityInput::default()
        };
        self.sources
            .iter()
            .filter(|s| matches!(s, IdentitySource::Bearer(_)))
            .find_map(|source| self.try_source(source, &input))
            .transpose()
    }

    /// What one source says: nothing, an identity, or an ambiguous header.
    fn try_source(
        &self,
        source: &IdentitySource,
        input: &IdentityInput<'_>,
    ) -> Option<Result<Identity, IdentifyError>> {
        let identity = match source {
            IdentitySource::Header(name) => {
                let value = match input.headers?.lookup(name) {
                    HeaderFound::Value(value) => value,
                    HeaderFound::Missing => return None,
                    HeaderFound::Conflicting => {
                        return Some(Err(IdentifyError::Ambiguous(conflicting_header_message(
                            name,
                        ))));
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
                let (principal, groups) = from_claims(
                    payload,
                    &jwt.claim,
                    &jwt.principal_type,
                    jwt.groups_claim.as_deref(),
                )?;
                Identity {
                    principal,
                    groups,
                    source: "jwt",
                }
            }
            IdentitySource::Bearer(source) => {
                let token = match input.headers?.lookup("authorization") {
                    HeaderFound::Missing => return None,
                    HeaderFound::Value(value) => match bearer::token_from_authorization(value) {
                        Some(token) if !token.is_empty() => token,
                        _ if bearer::other_scheme(value) => return None,
                        _ => {
                            return Some(Err(IdentifyError::Rejected {
                                issuer: source.issuer.clone(),
                                reason: Rejection::Malformed,
                            }));
                        }
                    },
                    // Two credentials (two lines, or one joined with a comma): which one
                    // speaks for the caller is ambiguous.
                    HeaderFound::Conflicting => {
                        return Some(Err(IdentifyError::Ambiguous(conflicting_header_message(
                            "authorization",
                        ))));
                    }
                };
                // With several issuers, the first bearer source reached decides the token:
                // it is checked by the source of the issuer it names (unverified, only to
                // choose), and a token naming none of them by this one, which refuses it.
                // So a present token is judged here and never skipped for a source (a
                // header, say) that sits between two bearer sources. With one bearer
                // source there is nothing to choose, and the token is not decoded here.
                let several = self.bearer_sources().nth(1).is_some();
                let source = match several.then(|| bearer::unverified_issuer(token)).flatten() {
                    Some(named) if named != source.issuer => self
                        .bearer_sources()
                        .find(|b| b.issuer == named)
                        .unwrap_or(source),
                    _ => source,
                };
                let result = match input.verifier {
                    Some(v) => v.verify(source, token, input.at),
                    None => Err(Rejection::NoKeys),
                };
                match result {
                    Ok(v) => Identity {
                        principal: v.principal,
                        groups: v.groups,
                        source: "bearer",
                    },
                    Err(reason) => {
                        return Some(Err(IdentifyError::Rejected {
                            issuer: source.issuer.clone(),
                            reason,
                        }));
                    }
                }
            }
            IdentitySource::PeerCertificate { principal_type } => {
                let principal = principal_from(principal_type, input.peer_principal?)?;
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

/// A `bearer` source the compiler refuses, with the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    #[error("`issuer` is empty")]
    EmptyIssuer,
    #[error("`audiences` must list at least one non-empty audience")]
    NoAudience,
    #[error("must have exactly one of `jwks` and `discovery: true`")]
    JwksOrDiscovery,
    #[error("`issuer` for discovery: {0}")]
    DiscoveryUrl(FetchUrlError),
    #[error("`jwks.url`: {0}")]
    JwksUrl(FetchUrlError),
    #[error("`jwks` must have exactly one of `file`, `url`")]
    JwksFileOrUrl,
    #[error("`principalType: {}` is not a principal type", escape(.principal_type))]
    PrincipalType { principal_type: String },
    #[error("`algorithms` is empty")]
    NoAlgorithms,
    #[error("algorithm `none` is never accepted: unsigned tokens prove nothing")]
    AlgorithmNone,
    #[error(
        "algorithm `{}` is never accepted: HMAC would let a public key serve as a shared secret",
        escape(.name)
    )]
    AlgorithmHmac { name: String },
    #[error(
        "algorithm `{}` is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384",
        escape(.name)
    )]
    UnknownAlgorithm { name: String },
    #[error("`leeway: {}` is not a duration such as 60s", escape(.text))]
    BadLeeway { text: String },
    #[error("`leeway` of {secs}s is more than the limit of {limit}s")]
    LeewayOverLimit { secs: u64, limit: u64 },
    #[error("`claim` is empty")]
    EmptyClaim,
    #[error(
        "issuer `{}` has a bearer source already (one source per issuer)",
        escape(.issuer)
    )]
    DuplicateIssuer { issuer: String },
}

/// A URL keys may not be fetched from (`url` as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchUrlError {
    #[error("`{}` is not a URL: {reason}", escape(.url))]
    NotUrl {
        url: String,
        reason: url::ParseError,
    },
    #[error("`{}` is plain http to a non-loopback host; use https", escape(.url))]
    PlainHttp { url: String },
    #[error("scheme `{}` is not https", escape(.scheme))]
    Scheme { scheme: String },
}

/// Compiles a `bearer` source; the error names the bad value.
fn compile_bearer(doc: &BearerSourceDoc) -> Result<BearerSource, BearerError> {
    if doc.issuer.is_empty() {
        return Err(BearerError::EmptyIssuer);
    }
    if doc.audiences.is_empty() || doc.audiences.iter().any(String::is_empty) {
        return Err(BearerError::NoAudience);
    }
    let jwks = match (&doc.jwks, doc.discovery) {
        (Some(_), Some(true)) | (None, None | Some(false)) => {
            return Err(BearerError::JwksOrDiscovery);
        }
        (None, Some(true)) => {
            check_fetch_url(&doc.issuer).map_err(BearerError::DiscoveryUrl)?;
            JwksLocation::Discovery
        }
        (Some(jwks), _) => match (&jwks.file, &jwks.url) {
            (Some(file), None) if !file.is_empty() => JwksLocation::File(file.clone()),
            (None, Some(url)) => {
                check_fetch_url(url).map_err(BearerError::JwksUrl)?;
                JwksLocation::Url(url.clone())
            }
            _ => return Err(BearerError::JwksFileOrUrl),
        },
    };
    let principal_type = syntax::principal_type(&format!("{}:x", doc.principal_type))
        .map(|_| doc.principal_type.clone())
        .map_err(|_| BearerError::PrincipalType {
            principal_type: doc.principal_type.clone(),
        })?;
    let names: Vec<&str> = match &doc.algorithms {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => bearer::DEFAULT_ALGORITHMS.to_vec(),
    };
    if names.is_empty() {
        return Err(BearerError::NoAlgorithms);
    }
    let mut algorithms = Vec::new();
    for name in names {
        let upper = name.to_ascii_uppercase();
        let Some(alg) = SigningAlgorithm::parse(name) else {
            return Err(if upper == "NONE" {
                BearerError::AlgorithmNone
            } else if upper.starts_with("HS") {
                BearerError::AlgorithmHmac { name: name.into() }
            } else {
                BearerError::UnknownAlgorithm { name: name.into() }
            });
        };
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    let leeway_secs = match &doc.leeway {
        None => bearer::DEFAULT_LEEWAY_SECS,
        Some(DurationDoc::Seconds(n)) => *n,
        Some(DurationDoc::Text(t)) => bearer::parse_duration_secs(t)
            .ok_or_else(|| BearerError::BadLeeway { text: t.clone() })?,
    };
    if leeway_secs > bearer::MAX_LEEWAY_SECS {
        return Err(BearerError::LeewayOverLimit {
            secs: leeway_secs,
            limit: bearer::MAX_LEEWAY_SECS,
        });
    }
    let claim = doc.claim.clone().unwrap_or_else(|| "sub".to_owned());
    if claim.is_empty() {
        return Err(BearerError::EmptyClaim);
    }
    Ok(BearerSource {
        issuer: doc.issuer.clone(),
        audiences: doc.audiences.clone(),
        jwks,
        claim,
        principal_type,
        groups_claim: doc.groups_claim.clone(),
        algorithms,
        leeway_secs,
    })
}

/// A URL keys may be fetched from: `https`, or `http` to a loopback address only (keys
/// fetched in clear over a network could be replaced on the way).
pub fn check_fetch_url(url: &str) -> Result<(), FetchUrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|reason| FetchUrlError::NotUrl {
        url: url.into(),
        reason,
    })?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(FetchUrlError::PlainHttp { url: url.into() }),
        other => Err(FetchUrlError::Scheme {
            scheme: other.into(),
        }),
    }
}

/// The principal `TYPE:VALUE` made from a value from outside the policy (a claim, the peer
/// certificate's principal). `None` when it is no valid principal id, or when it holds a
/// comma: it is forwarded in `x-iotauthz-principal`, where a comma separates values (the
/// header source refuses such a value as conflicting), so an upstream could take a part of
/// it for the caller.
fn principal_from(principal_type: &str, value: &str) -> Option<String> {
    if value.contains(',') {
        return None;
    }
    let principal = format!("{principal_type}:{value}");
    syntax::principal_type(&principal).ok()?;
    Some(principal)
}

/// The principal and groups a set of claims names (a `jwt` source's metadata, a verified
/// bearer token): the string claim `claim` as a principal of `principal_type` (see
/// [`principal_from`]), and each valid value of `groups_claim` as `group:VALUE`. `None`
/// when the claim does not make a principal.
pub(super) fn from_claims(
    claims: &Value,
    claim: &str,
    principal_type: &str,
    groups_claim: Option<&str>,
) -> Option<(String, Vec<String>)> {
    let principal = principal_from(principal_type, claims.get(claim)?.as_str()?)?;
    let groups = groups_claim
        .and_then(|c| claims.get(c))
        .map(claim_values)
        .unwrap_or_default()
        .into_iter()
        .map(|g| format!("group:{g}"))
        .filter(|g| syntax::group_id(g).is_ok())
        .collect();
    Some((principal, groups))
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

    /// A principal made from a claim or a peer certificate is forwarded in
    /// `x-iotauthz-principal`, where a comma separates values: one with a comma identifies
    /// no one (the source yields nothing), whatever source made it.
    #[test]
    fn a_principal_from_a_claim_or_a_peer_never_holds_a_comma() {
        let config = IdentityConfig {
            sources: vec![
                IdentitySource::Jwt(JwtSource {
                    namespace: "jwt".into(),
                    key: "payload".into(),
                    claim: "sub".into(),
                    principal_type: "user".into(),
                    groups_claim: Some("groups".into()),
                }),
                IdentitySource::PeerCertificate {
                    principal_type: "device".into(),
                },
            ],
            assign_action: String::new(),
            unassign_action: String::new(),
        };
        let run = |sub: &str, peer: &str| {
            let metadata = serde_json::json!({"jwt": {"payload": {"sub": sub, "groups": "ops"}}});
            config
                .identify(&IdentityInput {
                    metadata: Some(&metadata),
                    peer_principal: Some(peer),
                    ..IdentityInput::default()
                })
                .unwrap()
                .map(|i| (i.principal, i.groups))
        };
        assert_eq!(
            run("alice", "spiffe://f/plc"),
            Some(("user:alice".into(), vec!["group:ops".into()]))
        );
        assert_eq!(
            run("mallory,user:alice", "spiffe://f/plc"),
            Some(("device:spiffe://f/plc".into(), vec![]))
        );
        assert_eq!(run("mallory,user:alice", "spiffe://f/a,device:b"), None);
        let claims = serde_json::json!({"sub": "a, b"});
        assert_eq!(from_claims(&claims, "sub", "user", None), None);
    }
}

#[cfg(test)]
mod bearer_tests {
    use super::super::bearer::test_keys::{TestKey, claims, unix_now};
    use super::super::bearer::{KeySet, StaticKeys};
    use super::super::document::IdentityDoc;
    use super::*;
    use jsonwebtoken::Algorithm;
    use std::sync::Arc;

    const ISSUER: &str = "https://login.example.com/";

    fn config(yaml: &str) -> Result<IdentityConfig, Vec<(String, String)>> {
        let doc: IdentityDoc = serde_saphyr::from_str(yaml).unwrap();
        IdentityConfig::compile(&doc)
    }

    fn bearer_then_header() -> IdentityConfig {
        config(
            "sources:\n\
             - bearer: {issuer: 'https://login.example.com/', audiences: [iot-api], jwks: {file: k.json}, principalType: user}\n\
             - header: x-iotauthz-principal\n",
        )
        .unwrap()
    }

    #[test]
    fn a_missing_token_lets_the_next_source_try_and_a_bad_one_stops_the_search() {
        let key = TestKey::ec("k1", Algorithm::ES256);
        let keys = StaticKeys(vec![(
            ISSUER.into(),
            Arc::new(
                KeySet::parse(super::super::bearer::test_keys::jwks(&[&key]).as_bytes()).unwrap(),
            ),
        )]);
        let cfg = bearer_then_header();
        let now = unix_now();
        let run = |headers: &[(&str, &str)]| {
            cfg.identify(&IdentityInput {
                headers: Some(&headers.to_vec()),
                verifier: Some(&keys),
                at: syntax::now(),
                ..IdentityInput::default()
            })
        };
        let good = key.sign(&claims(ISSUER, "iot-api", "alice", now));
        let auth = format!("Bearer {good}");
        let found = run(&[("authorization", &auth)]).unwrap().unwrap();
        assert_eq!(
            (found.principal.as_str(), found.source),
            ("user:alice", "bearer")
        );
        // No token, or another scheme: the header source answers.
        let found = run(&[("x-iotauthz-principal", "user:bob")])
            .unwrap()
            .unwrap();
        assert_eq!(found.principal, "user:bob");
        let found = run(&[
            ("authorization", "Basic Ym9iOg=="),
            ("x-iotauthz-principal", "user:bob"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(found.principal, "user:bob");
        // A present but invalid token stops the search, even with a forgeable header behind it.
        let expired = key.sign(&claims(ISSUER, "iot-api", "alice", now - 7200));
        let auth = format!("Bearer {expired}");
        assert_eq!(
            run(&[
                ("authorization", &auth),
                ("x-iotauthz-principal", "user:bob")
            ]),
            Err(IdentifyError::Rejected {
                issuer: ISSUER.into(),
                reason: Rejection::Expired
            })
        );
        // Without a verifier a token is never trusted.
        let auth = format!("Bearer {good}");
        let headers: &[(&str, &str)] = &[("authorization", &auth)];
        assert!(matches!(
            cfg.identify(&IdentityInput {
                headers: Some(&headers.to_vec()),
                ..IdentityInput::default()
            }),
            Err(IdentifyError::Rejected {
                reason: Rejection::NoKeys,
                ..
            })
        ));
    }

    #[test]
    fn a_token_in_a_second_authorization_header_is_ambiguous() {
        let key = TestKey::ec("k1", Algorithm::ES256);
        let keys = StaticKeys(vec![(
            ISSUER.into(),
            Arc::new(
                KeySet::parse(super::super::bearer::test_keys::jwks(&[&key]).as_bytes()).unwrap(),
            ),
        )]);
        let cfg = bearer_then_header();
        let good = format!(
            "Bearer {}",
            key.sign(&claims(ISSUER, "iot-api", "alice", unix_now()))
        );
        let evil = format!(
            "Bearer {}",
            key.sign(&claims(ISSUER, "iot-api", "mallory", unix_now()))
        );
        for headers in [
            vec![
                ("authorization", good.as_str()),
                ("Authorization", evil.as_str()),
            ],
            vec![
                ("authorization", good.as_str()),
                ("authorization", "Basic Ym9iOg=="),
            ],
        ] {
            assert!(matches!(
                cfg.identify(&IdentityInput {
                    headers: Some(&headers),
                    verifier: Some(&keys),
                    at: syntax::now(),
                    ..IdentityInput::default()
                }),
                Err(IdentifyError::Ambiguous(_))
            ));
        }
        let joined = format!("{good}, {evil}");
        let headers: &[(&str, &str)] = &[("authorization", &joined)];
        assert!(matches!(
            cfg.identify(&IdentityInput {
                headers: Some(&headers.to_vec()),
                verifier: Some(&keys),
                at: syntax::now(),
                ..IdentityInput::default()
            }),
            Err(IdentifyError::Ambiguous(_))
        ));
    }

    #[test]
    fn bearer_settings_are_validated() {
        let base =
            "issuer: 'https://login.example.com/', audiences: [iot-api], principalType: user";
        let problem = |extra: &str| {
            let errors = config(&format!("sources:\n- bearer: {{{base}{extra}}}\n")).unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].0, "identity.sources[0].bearer");
            errors[0].1.clone()
        };
        assert!(problem("").contains("exactly one of `jwks` and `discovery: true`"));
        assert!(
            problem(", jwks: {file: a, url: 'https://x/'}")
                .contains("exactly one of `file`, `url`")
        );
        assert!(problem(", jwks: {url: 'http://keys.example.com/jwks'}").contains("use https"));
        assert!(problem(", jwks: {url: 'ftp://x/'}").contains("not https"));
        assert!(problem(", jwks: {file: k}, discovery: true").contains("exactly one"));
        assert!(
            problem(", jwks: {file: k}, algorithms: [none]").contains("`none` is never accepted")
        );
        assert!(problem(", jwks: {file: k}, algorithms: [HS256]").contains("HMAC"));
        assert!(problem(", jwks: {file: k}, algorithms: [EdDSA]").contains("not one of"));
        assert!(problem(", jwks: {file: k}, algorithms: []").contains("empty"));
        assert!(problem(", jwks: {file: k}, leeway: 1h").contains("more than the limit"));
        assert!(problem(", jwks: {file: k}, leeway: soon").contains("not a duration"));
        let errors = config("sources:\n- bearer: {issuer: x, audiences: [], principalType: user, jwks: {file: k}}\n")
        .unwrap_err();
        assert!(errors[0].1.contains("audiences"));
        // http is fine to a loopback address; discovery needs a fetchable issuer.
        assert!(
            config(&format!(
                "sources:\n- bearer: {{{base}, jwks: {{url: 'http://127.0.0.1:8080/k'}}}}\n"
            ))
            .is_ok()
        );
        assert!(config("sources:\n- bearer: {issuer: corp, audiences: [a], principalType: user, discovery: true}\n").is_err());
        // One source per issuer.
        let errors = config(&format!(
            "sources:\n- bearer: {{{base}, jwks: {{file: a}}}}\n- bearer: {{{base}, jwks: {{file: b}}}}\n"
        ))
        .unwrap_err();
        assert_eq!(errors[0].0, "identity.sources[1].bearer");
        assert!(errors[0].1.contains("one source per issuer"));
        let ok = config(&format!("sources:\n- bearer: {{{base}, jwks: {{file: k}}, leeway: 30s, algorithms: [PS256, ES384]}}\n")).unwrap();
        let b = ok.bearer_sources().next().unwrap();
        assert_eq!(b.leeway_secs, 30);
        assert_eq!(
            b.algorithms,
            [SigningAlgorithm::PS256, SigningAlgorithm::ES384]
        );
        assert_eq!(b.claim, "sub");
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn bearer(yaml: &str) -> Result<BearerSource, BearerError> {
        let doc: BearerSourceDoc = serde_saphyr::from_str(yaml).unwrap();
        compile_bearer(&doc)
    }

    const BASE: &str =
        "{issuer: 'https://i.example/', audiences: [a], principalType: user, discovery: true";

    #[test]
    fn bearer_errors_carry_the_bad_value() {
        let with = |rest: &str| bearer(&format!("{BASE}, {rest}}}"));
        assert!(with("claim: sub").is_ok());
        assert_eq!(
            with("algorithms: [none]").unwrap_err(),
            BearerError::AlgorithmNone
        );
        assert_eq!(
            with("algorithms: [HS256]").unwrap_err(),
            BearerError::AlgorithmHmac {
                name: "HS256".into()
            }
        );
        assert_eq!(
            with("algorithms: [XX1]").unwrap_err(),
            BearerError::UnknownAlgorithm { name: "XX1".into() }
        );
        assert_eq!(
            with("algorithms: []").unwrap_err(),
            BearerError::NoAlgorithms
        );
        assert_eq!(
            with("leeway: soon").unwrap_err(),
            BearerError::BadLeeway {
                text: "soon".into()
            }
        );
        assert_eq!(
            with("leeway: 100000").unwrap_err(),
            BearerError::LeewayOverLimit {
                secs: 100_000,
                limit: bearer::MAX_LEEWAY_SECS
            }
        );
        assert_eq!(with("claim: ''").unwrap_err(), BearerError::EmptyClaim);
        assert_eq!(
            with("jwks: {file: k.json}").unwrap_err(),
            BearerError::JwksOrDiscovery
        );
        assert_eq!(
            bearer("{issuer: '', audiences: [a], principalType: user, discovery: true}")
                .unwrap_err(),
            BearerError::EmptyIssuer
        );
        assert_eq!(
            bearer("{issuer: i, audiences: [], principalType: user, discovery: true}").unwrap_err(),
            BearerError::NoAudience
        );
        assert_eq!(
            bearer("{issuer: i, audiences: [a], principalType: robot, jwks: {file: k}}")
                .unwrap_err(),
            BearerError::PrincipalType {
                principal_type: "robot".into()
            }
        );
        assert_eq!(
            bearer("{issuer: i, audiences: [a], principalType: user, jwks: {}}").unwrap_err(),
            BearerError::JwksFileOrUrl
        );
        assert_eq!(
            bearer("{issuer: 'http://i.example/', audiences: [a], principalType: user, discovery: true}")
                .unwrap_err(),
            BearerError::DiscoveryUrl(FetchUrlError::PlainHttp {
                url: "http://i.example/".into()
            })
        );
        let e = bearer("{issuer: i, audiences: [a], principalType: user, jwks: {url: 'ftp://k'}}")
            .unwrap_err();
        assert_eq!(
            e,
            BearerError::JwksUrl(FetchUrlError::Scheme {
                scheme: "ftp".into()
            })
        );
        assert_eq!(e.to_string(), "`jwks.url`: scheme `ftp` is not https");
    }

    #[test]
    fn fetch_url_errors_carry_the_url_and_the_reason() {
        assert_eq!(check_fetch_url("https://k.example/keys"), Ok(()));
        assert_eq!(check_fetch_url("http://127.0.0.1:8080/keys"), Ok(()));
        assert_eq!(
            check_fetch_url("not a url"),
            Err(FetchUrlError::NotUrl {
                url: "not a url".into(),
                reason: url::ParseError::RelativeUrlWithoutBase
            })
        );
        assert_eq!(
            check_fetch_url("http://k.example/keys"),
            Err(FetchUrlError::PlainHttp {
                url: "http://k.example/keys".into()
            })
        );
    }
}
