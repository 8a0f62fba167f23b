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
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS document: {}", escape(&e.to_string())))?;
        if set.keys.len() > MAX_KEYS {
            return Err(format!(
                "{} keys, more than the limit of {MAX_KEYS}",
                set.keys.len()
            ));
        }
        let mut out = Self {
            digest: sha2::Sha256::digest(bytes).into(),
            ..Self::default()
        };
        let mut invalid: Option<String> = None;
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
                    invalid.get_or_insert_with(|| {
                        format!(
                            "key {} is invalid: {}",
                            escape(jwk.common.key_id.as_deref().unwrap_or("(no kid)")),
                            escape(&e.to_string())
                        )
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
            return Err(
                invalid.unwrap_or_else(|| "no RSA or EC (P-256, P-384) signature key".to_owned())
            );
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
mod tests {
    use super::test_keys as keys;
    use jsonwebtoken::{Algorithm, Header};
    use serde_json::json;

    use super::*;
    use keys::{TestKey, claims, hs256, jwks, raw_token};

    const ISSUER: &str = "https://login.example.com/";
    const NOW: i64 = 1_800_000_000;

    fn source(algorithms: &[SigningAlgorithm]) -> BearerSource {
        BearerSource {
            issuer: ISSUER.into(),
            audiences: vec!["iot-api".into(), "other".into()],
            jwks: JwksLocation::File("jwks.json".into()),
            claim: "sub".into(),
            principal_type: "user".into(),
            groups_claim: Some("groups".into()),
            algorithms: algorithms.to_vec(),
            leeway_secs: 60,
        }
    }

    fn at(secs: i64) -> Instant {
        i128::from(secs) * 1_000_000_000
    }

    fn rsa() -> &'static TestKey {
        static KEY: std::sync::OnceLock<TestKey> = std::sync::OnceLock::new();
        KEY.get_or_init(|| TestKey::rsa("rsa-1", Algorithm::RS256))
    }

    fn set(keys: &[&TestKey]) -> KeySet {
        KeySet::parse(jwks(keys).as_bytes()).unwrap()
    }

    fn good() -> serde_json::Value {
        claims(ISSUER, "iot-api", "alice@contoso.com", NOW)
    }

    fn check(token: &str) -> Result<Verified, Rejection> {
        verify(
            &source(&[SigningAlgorithm::RS256, SigningAlgorithm::ES256]),
            Some(&set(&[rsa()])),
            token,
            at(NOW),
        )
    }

    #[test]
    fn every_supported_algorithm_verifies() {
        let all = [
            SigningAlgorithm::RS256,
            SigningAlgorithm::RS384,
            SigningAlgorithm::RS512,
            SigningAlgorithm::PS256,
            SigningAlgorithm::PS384,
            SigningAlgorithm::PS512,
            SigningAlgorithm::ES256,
            SigningAlgorithm::ES384,
        ];
        let rsa = rsa();
        let p256 = TestKey::ec("p256", Algorithm::ES256);
        let p384 = TestKey::ec("p384", Algorithm::ES384);
        // One RSA key without `alg` serves every RSA algorithm.
        let mut any_rsa = TestKey::rsa("rsa-any", Algorithm::RS256);
        any_rsa.jwk.as_object_mut().unwrap().remove("alg");
        let keys = set(&[rsa, &any_rsa, &p256, &p384]);
        let mut claims = good();
        claims["groups"] = json!(["ot-admins", 42]);
        for (key, alg) in [
            (&any_rsa, Algorithm::RS256),
            (&any_rsa, Algorithm::RS384),
            (&any_rsa, Algorithm::RS512),
            (&any_rsa, Algorithm::PS256),
            (&any_rsa, Algorithm::PS384),
            (&any_rsa, Algorithm::PS512),
            (&p256, Algorithm::ES256),
            (&p384, Algorithm::ES384),
        ] {
            let mut header = Header::new(alg);
            header.kid = Some(key.kid.clone());
            let token = key.sign_with(header, &claims);
            let v = verify(&source(&all), Some(&keys), &token, at(NOW))
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(v.principal, "user:alice@contoso.com");
            assert_eq!(v.groups, ["group:ot-admins"]);
            assert_eq!(v.expires, NOW + 3600 + 60);
        }
        // A key whose JWK names RS256 is not used for RS512.
        let mut header = Header::new(Algorithm::RS512);
        header.kid = Some(rsa.kid.clone());
        let token = rsa.sign_with(header, &claims);
        assert_eq!(
            verify(&source(&all), Some(&keys), &token, at(NOW)),
            Err(Rejection::UnknownKey)
        );
    }

    #[test]
    fn a_token_without_kid_is_checked_against_the_keys_of_its_kind() {
        let token = rsa().sign_with(Header::new(Algorithm::RS256), &good());
        assert!(check(&token).is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let token = raw_token(&json!({"alg": alg, "kid": "rsa-1"}), &good(), b"");
            assert_eq!(check(&token), Err(Rejection::AlgorithmNotAllowed), "{alg}");
        }
        let no_alg = raw_token(&json!({"kid": "rsa-1"}), &good(), b"x");
        assert_eq!(check(&no_alg), Err(Rejection::AlgorithmNotAllowed));
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let rsa = rsa();
        let forged = hs256(&rsa.kid, &rsa.public_der, &good());
        assert_eq!(check(&forged), Err(Rejection::AlgorithmNotAllowed));
        // The JWK's own JSON as the secret, the other common spelling of the attack.
        let forged = hs256(&rsa.kid, rsa.jwk.to_string().as_bytes(), &good());
        assert_eq!(check(&forged), Err(Rejection::AlgorithmNotAllowed));
    }

    #[test]
    fn an_algorithm_of_another_key_kind_finds_no_key() {
        // ES256 is allowed, but the only key with this kid is RSA.
        let ec = TestKey::ec("rsa-1", Algorithm::ES256);
        assert_eq!(check(&ec.sign(&good())), Err(Rejection::UnknownKey));
    }

    #[test]
    fn an_algorithm_outside_the_list_is_refused() {
        let mut header = Header::new(Algorithm::RS512);
        header.kid = Some("rsa-1".into());
        let token = rsa().sign_with(header, &good());
        assert_eq!(check(&token), Err(Rejection::AlgorithmNotAllowed));
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused_outside_the_leeway() {
        let token = rsa().sign(&good());
        let s = source(&[SigningAlgorithm::RS256]);
        let keys = set(&[rsa()]);
        let run = |secs| verify(&s, Some(&keys), &token, at(secs));
        assert!(run(NOW + 3600 + 59).is_ok(), "inside the leeway after exp");
        assert_eq!(run(NOW + 3600 + 60), Err(Rejection::Expired));
        assert!(run(NOW - 120).is_ok(), "inside the leeway before nbf");
        assert_eq!(run(NOW - 121), Err(Rejection::NotYetValid));
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let mut claims = good();
        claims.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::NoExpiry));
        claims["exp"] = json!("tomorrow");
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::Malformed));
    }

    #[test]
    fn wrong_issuer_is_refused() {
        for iss in [
            json!("https://evil.example.com/"),
            json!("https://login.example.com"),
            json!(null),
        ] {
            let mut claims = good();
            claims["iss"] = iss;
            assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::WrongIssuer));
        }
    }

    #[test]
    fn wrong_audience_is_refused_and_a_list_needs_one_match() {
        let mut claims = good();
        claims["aud"] = json!("someone-else");
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::WrongAudience));
        claims["aud"] = json!(["someone-else", "iot-api"]);
        assert!(check(&rsa().sign(&claims)).is_ok());
        claims.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::WrongAudience));
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let other = TestKey::rsa("rsa-2", Algorithm::RS256);
        assert_eq!(check(&other.sign(&good())), Err(Rejection::UnknownKey));
    }

    #[test]
    fn a_kid_with_path_characters_only_finds_no_key() {
        for kid in [
            "../../etc/passwd",
            "/etc/iot-authz/jwks.json",
            "rsa-1/../rsa-1",
            "rsa-1\u{0}",
        ] {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.into());
            let token = rsa().sign_with(header, &good());
            assert_eq!(check(&token), Err(Rejection::UnknownKey), "{kid:?}");
        }
    }

    #[test]
    fn a_key_set_is_needed() {
        let token = rsa().sign(&good());
        let s = source(&[SigningAlgorithm::RS256]);
        assert_eq!(verify(&s, None, &token, at(NOW)), Err(Rejection::NoKeys));
    }

    #[test]
    fn tampered_truncated_and_oversized_tokens_are_refused() {
        let token = rsa().sign(&good());
        let (message, signature) = token.rsplit_once('.').unwrap();
        // Another payload under the original signature.
        let mut other = good();
        other["sub"] = json!("mallory@contoso.com");
        let forged_payload = raw_token(&json!({"alg": "RS256", "kid": "rsa-1"}), &other, b"");
        let (forged_message, _) = forged_payload.rsplit_once('.').unwrap();
        assert_eq!(
            check(&format!("{forged_message}.{signature}")),
            Err(Rejection::BadSignature)
        );
        assert_eq!(check(&format!("{message}.")), Err(Rejection::BadSignature));
        assert_eq!(
            check(&token[..token.len() - 10]),
            Err(Rejection::BadSignature)
        );
        assert_eq!(check(message), Err(Rejection::Malformed));
        assert_eq!(check(&format!("{token}.x")), Err(Rejection::Malformed));
        assert_eq!(check("not a token"), Err(Rejection::Malformed));
        assert_eq!(check(""), Err(Rejection::Malformed));
        let mut big = good();
        big["pad"] = json!("x".repeat(MAX_TOKEN_BYTES));
        assert_eq!(check(&rsa().sign(&big)), Err(Rejection::TooLarge));
    }

    #[test]
    fn unknown_critical_header_parameters_are_refused() {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        header.crit = Some(vec!["exp".into()]);
        assert_eq!(
            check(&rsa().sign_with(header, &good())),
            Err(Rejection::Malformed)
        );
    }

    #[test]
    fn a_null_critical_header_is_refused_too() {
        // Refused before any key is looked at: not a signature failure.
        let header = json!({"alg": "RS256", "kid": "rsa-1", "crit": null});
        let token = raw_token(&header, &good(), b"not a signature");
        assert_eq!(check(&token), Err(Rejection::Malformed));
    }

    #[test]
    fn a_key_that_does_not_decode_is_skipped_not_fatal() {
        let mut keys = serde_json::from_str::<serde_json::Value>(&jwks(&[rsa()])).unwrap();
        keys["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "RSA", "kid": "bad", "n": "!!!", "e": "AQAB"}));
        let set = KeySet::parse(keys.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        let source = source(&[SigningAlgorithm::RS256]);
        assert!(verify(&source, Some(&set), &rsa().sign(&good()), at(NOW)).is_ok());
        // Alone, it is the set's error, naming the key.
        let only = json!({"keys": [{"kty": "RSA", "kid": "bad", "n": "!!!", "e": "AQAB"}]});
        let e = KeySet::parse(only.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("key bad is invalid"), "{e}");
    }

    #[test]
    fn a_subject_that_is_no_principal_is_refused() {
        let mut claims = good();
        claims["sub"] = json!("");
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::NoPrincipal));
        claims["sub"] = json!(42);
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::NoPrincipal));
        // A comma would read as two values in `x-iotauthz-principal`.
        claims["sub"] = json!("mallory,user:alice@contoso.com");
        assert_eq!(check(&rsa().sign(&claims)), Err(Rejection::NoPrincipal));
    }

    #[test]
    fn key_sets_keep_only_signature_keys_and_refuse_garbage() {
        let oct = json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]});
        assert!(KeySet::parse(oct.to_string().as_bytes()).is_err());
        let mut mixed = serde_json::from_str::<serde_json::Value>(&jwks(&[rsa()])).unwrap();
        mixed["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"}));
        let mut enc = rsa().jwk.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc-1");
        mixed["keys"].as_array_mut().unwrap().push(enc);
        let parsed = KeySet::parse(mixed.to_string().as_bytes()).unwrap();
        assert_eq!((parsed.len(), parsed.skipped), (1, 2));
        for garbage in [
            "",
            "<html>",
            "{}",
            "{\"keys\": []}",
            "{\"keys\": [{\"kty\": \"RSA\"}]}",
        ] {
            assert!(KeySet::parse(garbage.as_bytes()).is_err(), "{garbage}");
        }
    }

    #[test]
    fn only_the_bearer_scheme_carries_a_token() {
        assert_eq!(token_from_authorization("Bearer abc"), Some("abc"));
        assert_eq!(token_from_authorization("bearer  abc "), Some("abc"));
        assert_eq!(token_from_authorization("Basic YWxpY2U6"), None);
        assert_eq!(token_from_authorization("Bearer"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("60s"), Some(60));
        assert_eq!(parse_duration_secs("2m"), Some(120));
        assert_eq!(parse_duration_secs("90"), Some(90));
        assert_eq!(parse_duration_secs("1d"), None);
        assert_eq!(parse_duration_secs("s"), None);
    }
}
