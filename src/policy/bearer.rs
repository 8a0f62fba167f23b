//! Bearer tokens verified by iot-authz itself (SPEC §13): the `bearer` identity source's
//! settings, a parsed key set, and [`verify`], which checks a compact JWS against them.
//!
//! Everything here is pure: the key set arrives already fetched (the shell fetches, watches
//! and refreshes it, `sources::jwks`), and the time is the request's. Signatures are checked
//! by `jsonwebtoken` (RustCrypto backend); this module decides which key and algorithm may
//! be used and checks the claims. A rejection is a short, fixed reason; it never carries the
//! token or its claims.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;

use super::syntax::{Instant, escape};

/// The longest token accepted, in bytes: anything longer is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The most keys one key set may hold.
pub const MAX_KEYS: usize = 100;
/// The algorithms used when a source names none.
pub const DEFAULT_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];
/// The clock skew allowed for `exp` and `nbf` when a source names none.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// The largest leeway a source may set.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// Where a source's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksLocation {
    /// A JWKS file, watched and reloaded.
    File(String),
    /// A JWKS URL, fetched and refreshed.
    Url(String),
    /// `jwks_uri` of the issuer's OpenID configuration (`{issuer}/.well-known/openid-configuration`).
    Discovery,
}

/// An algorithm a source may accept: only asymmetric ones exist here, so `none` and HMAC
/// cannot even be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

impl SigningAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            _ => return None,
        })
    }

    fn jose(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
        }
    }

    /// The kind of key this algorithm needs.
    fn key_kind(self) -> KeyKind {
        match self {
            Self::ES256 => KeyKind::P256,
            Self::ES384 => KeyKind::P384,
            _ => KeyKind::Rsa,
        }
    }

    fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            Self::RS256 => KeyAlgorithm::RS256,
            Self::RS384 => KeyAlgorithm::RS384,
            Self::RS512 => KeyAlgorithm::RS512,
            Self::PS256 => KeyAlgorithm::PS256,
            Self::PS384 => KeyAlgorithm::PS384,
            Self::PS512 => KeyAlgorithm::PS512,
            Self::ES256 => KeyAlgorithm::ES256,
            Self::ES384 => KeyAlgorithm::ES384,
        }
    }
}

/// The compiled `bearer` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerSource {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksLocation,
    pub claim: String,
    pub principal_type: String,
    pub groups_claim: Option<String>,
    pub algorithms: Vec<SigningAlgorithm>,
    pub leeway_secs: u64,
}

/// Why a present token identifies no one. The text is fixed and short: it goes to logs,
/// metrics labels and the decision log, never with the token or its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not three base64url parts, or a header or payload that is not a JSON object.
    Malformed,
    TooLarge,
    /// `alg` is not in the source's list (`none` and HMAC never are).
    AlgorithmNotAllowed,
    /// No key of the set has the token's `kid` (or, without `kid`, fits the algorithm).
    UnknownKey,
    /// The source has no key set yet (never fetched successfully).
    NoKeys,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    NotYetValid,
    /// No `exp` claim: a token that never expires is not accepted.
    NoExpiry,
    /// The principal claim is missing, or does not make a principal a header can carry
    /// (`identity::from_claims`).
    NoPrincipal,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too large",
            Self::AlgorithmNotAllowed => "algorithm not allowed",
            Self::UnknownKey => "unknown key",
            Self::NoKeys => "no keys",
            Self::BadSignature => "bad signature",
            Self::WrongIssuer => "wrong issuer",
            Self::WrongAudience => "wrong audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not yet valid",
            Self::NoExpiry => "no expiry",
            Self::NoPrincipal => "no principal",
        }
    }

    /// Whether fetching the keys again may change the answer.
    pub fn wants_keys(self) -> bool {
        matches!(self, Self::UnknownKey | Self::NoKeys)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

/// One usable verification key.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one: then only that algorithm may use the key.
    alg: Option<KeyAlgorithm>,
    key: DecodingKey,
}

/// Why a document is not a usable key set (the text it quotes is escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    #[error("{0} keys, more than the limit of {MAX_KEYS}")]
    TooManyKeys(usize),
    /// No key is usable, and this one (the first) did not decode.
    #[error("key {kid} is invalid: {message}")]
    InvalidKey { kid: String, message: String },
    #[error("no RSA or EC (P-256, P-384) signature key")]
    NoSignatureKey,
}

/// A parsed JWKS: only signature keys of the kinds this module verifies (RSA, EC P-256,
/// EC P-384). Symmetric (`oct`) keys and keys for encryption are left out, so no token can
/// ever be checked against a secret.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
    /// SHA-256 of the document: an unchanged document is the same key set.
    digest: [u8; 32],
    /// Keys of the document that were skipped (unsupported type or curve, `use: enc`).
    pub skipped: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Fails when it is not one, or when it
    /// holds no usable key: an empty set must never replace a good one.
    pub fn parse(bytes: &[u8]) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_slice(bytes)
            .map_err(|e| JwksError::NotJwks(escape(&e.to_string())))?;
        if set.keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys(set.keys.len()));
        }
        let mut out = Self {
            digest: sha2::Sha256::digest(bytes).into(),
            ..Self::default()
        };
        let mut invalid: Option<JwksError> = None;
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                out.skipped += 1;
                continue;
            }
            let kind = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyKind::Rsa,
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => KeyKind::P256,
                    EllipticCurve::P384 => KeyKind::P384,
                    _ => {
                        out.skipped += 1;
                        continue;
                    }
                },
                _ => {
                    out.skipped += 1;
                    continue;
                }
            };
            // A key that does not decode is skipped like a key of another type, so one bad
            // entry never takes the issuer's good keys down with it; a token naming it is
            // `unknown key`.
            let key = match DecodingKey::from_jwk(jwk) {
                Ok(key) => key,
                Err(e) => {
                    invalid.get_or_insert_with(|| JwksError::InvalidKey {
                        kid: escape(jwk.common.key_id.as_deref().unwrap_or("(no kid)")),
                        message: escape(&e.to_string()),
                    });
                    out.skipped += 1;
                    continue;
                }
            };
            out.keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                kind,
                alg: jwk.common.key_algorithm,
                key,
            });
        }
        if out.keys.is_empty() {
            return Err(invalid.unwrap_or(JwksError::NoSignatureKey));
        }
        Ok(out)
    }

    /// The key ids, for logs.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-"))
    }

    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub principal: String,
    pub groups: Vec<String>,
    /// `exp` in Unix seconds: a cached verification is good until then (plus the leeway).
    pub expires: i64,
}

/// Supplies key sets and, optionally, remembers verifications: the shell's part of the
/// bearer source. [`verify`] is what an implementation calls on a miss.
///
/// `source` is the policy's own `Arc` (the one in `IdentitySource::Bearer`), so a cache
/// can tell the serving settings by pointer and compare by value only after a reload.
pub trait TokenVerifier: Send + Sync {
    fn verify(
        &self,
        source: &Arc<BearerSource>,
        token: &str,
        now: Instant,
    ) -> Result<Verified, Rejection>;
}

/// Verifies with a fixed key set per issuer and no cache (the CLI, tests).
#[derive(Debug, Default, Clone)]
pub struct StaticKeys(pub Vec<(String, Arc<KeySet>)>);

impl TokenVerifier for StaticKeys {
    fn verify(
        &self,
        source: &Arc<BearerSource>,
        token: &str,
        now: Instant,
    ) -> Result<Verified, Rejection> {
        let keys = self
            .0
            .iter()
            .find(|(issuer, _)| *issuer == source.issuer)
            .map(|(_, k)| &**k);
        verify(source, keys, token, now)
    }
}

/// The token in an `Authorization` value: `Bearer <token>` (scheme in any case). `None`
/// when the value uses another scheme (the next source may try).
pub fn token_from_authorization(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_matches([' ', '\t']))
}

/// Whether an `Authorization` value is a credential of another scheme (`Basic ...`), which
/// lets the next identity source try. Anything that is or may be a bearer credential but
/// is not exactly `Bearer <token>` (`Bearer` alone, `Bearer<TAB>...`, a value that is not
/// visible ASCII) is a present, malformed token: it must stop the search, never fall
/// through to a weaker source.
pub fn other_scheme(value: &str) -> bool {
    let readable = !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    let scheme = value.split([' ', '\t']).next().unwrap_or_default().trim();
    readable && !scheme.to_ascii_lowercase().starts_with("bearer")
}

/// The `iss` a token claims, before any check: only for choosing which source checks it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    decode_part::<Iss>(payload).ok()?.iss
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    kid: Option<String>,
    /// Critical extensions this verifier does not understand make the token invalid
    /// (RFC 7515 §4.1.11); none are understood. Present in any form, `null` included.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// True for a member that is there, whatever its value (`null` too).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(true)
}

/// Checks a compact JWS against a source and its key set at time `now`.
pub fn verify(
    source: &BearerSource,
    keys: Option<&KeySet>,
    token: &str,
    now: Instant,
) -> Result<Verified, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    let header: JoseHeader = decode_part(header_b64)?;
    let Some(alg) = header
        .alg
        .as_deref()
        .and_then(SigningAlgorithm::parse)
        .filter(|a| source.algorithms.contains(a))
    else {
        return Err(Rejection::AlgorithmNotAllowed);
    };
    if header.crit {
        return Err(Rejection::Malformed);
    }
    let keys = keys.ok_or(Rejection::NoKeys)?;
    // The key must be of the algorithm's kind and, when the JWK names an algorithm, of that
    // one: an RSA key never checks an HMAC or EC signature (algorithm confusion).
    let fits =
        |k: &&VerifyKey| k.kind == alg.key_kind() && k.alg.is_none_or(|a| a == alg.key_algorithm());
    let candidates: Vec<&VerifyKey> = match header.kid.as_deref() {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .filter(fits)
            .collect(),
        None => keys.keys.iter().filter(fits).collect(),
    };
    if candidates.is_empty() {
        return Err(Rejection::UnknownKey);
    }
    let message = &token[..header_b64.len() + 1 + payload_b64.len()];
    let verified = candidates.iter().any(|k| {
        jsonwebtoken::crypto::verify(signature_b64, message.as_bytes(), &k.key, alg.jose())
            .unwrap_or(false)
    });
    if !verified {
        return Err(Rejection::BadSignature);
    }
    let claims: Value = decode_part(payload_b64)?;
    check_claims(source, &claims, now)
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Malformed)
}

/// A NumericDate claim in whole seconds (fractions are cut toward the past).
fn numeric_date(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })
}

fn check_claims(
    source: &BearerSource,
    claims: &Value,
    now: Instant,
) -> Result<Verified, Rejection> {
    if !claims.is_object() {
        return Err(Rejection::Malformed);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(source.issuer.as_str()) {
        return Err(Rejection::WrongIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => source.audiences.iter().any(|s| s == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| source.audiences.iter().any(|s| s == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(Rejection::WrongAudience);
    }
    let now_secs = i64::try_from(now.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    let leeway = i64::try_from(source.leeway_secs).unwrap_or(0);
    let expires = match claims.get("exp") {
        None => return Err(Rejection::NoExpiry),
        Some(v) => numeric_date(v).ok_or(Rejection::Malformed)?,
    };
    if now_secs >= expires.saturating_add(leeway) {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(Rejection::Malformed)?;
        if now_secs < nbf.saturating_sub(leeway) {
            return Err(Rejection::NotYetValid);
        }
    }
    let (principal, groups) = super::identity::from_claims(
        claims,
        &source.claim,
        &source.principal_type,
        source.groups_claim.as_deref(),
    )
    .ok_or(Rejection::NoPrincipal)?;
    Ok(Verified {
        principal,
        groups,
        expires: expires.saturating_add(leeway),
    })
}

/// Parses a duration such as `60s`, `2m` or `90` (seconds).
pub fn parse_duration_secs(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
}

#[cfg(test)]
#[path = "../../tests/support/jwt.rs"]
pub(crate) mod test_keys;

#[cfg(test)]
mod tests;
