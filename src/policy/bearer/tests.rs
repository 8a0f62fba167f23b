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
    assert!(
        matches!(&e, JwksError::InvalidKey { kid, .. } if kid == "bad"),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("key bad is invalid: "), "{e}");
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
    assert_eq!(
        KeySet::parse(oct.to_string().as_bytes()).err(),
        Some(JwksError::NoSignatureKey)
    );
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
    for garbage in ["", "<html>", "{}"] {
        assert!(
            matches!(
                KeySet::parse(garbage.as_bytes()),
                Err(JwksError::NotJwks(_))
            ),
            "{garbage}"
        );
    }
    assert_eq!(
        KeySet::parse(b"{\"keys\": []}").err(),
        Some(JwksError::NoSignatureKey)
    );
    // A key without its parameters is no key: the set has none to sign with.
    assert_eq!(
        KeySet::parse(b"{\"keys\": [{\"kty\": \"RSA\"}]}").err(),
        Some(JwksError::NoSignatureKey)
    );
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
