//! Keys and tokens for the bearer-token tests: RSA keys from the `rsa` crate, EC keys from
//! ring, tokens signed by `jsonwebtoken`, and hand-built tokens for the attacks. Shared by
//! the library's unit tests (through `#[path]`) and the integration tests.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
};
use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    pub jwk: Value,
    /// The public key's DER (PKCS#1 for RSA), what an attacker would use as an HMAC secret.
    pub public_der: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn trimmed(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

impl TestKey {
    /// A fresh 2048-bit RSA key for an RS* or PS* algorithm.
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        let mut rng = getrandom::SysRng;
        let private = rsa::PrivateKey::new(&mut rng, 2048).expect("RSA key");
        let public = private.to_public_key();
        let der = private.to_pkcs1_der().expect("PKCS#1 DER");
        let jwk = json!({
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": format!("{alg:?}"),
            "n": b64(trimmed(&public.n().to_be_bytes())),
            "e": b64(trimmed(&public.e().to_be_bytes())),
        });
        Self {
            kid: kid.to_owned(),
            alg,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
            public_der: public
                .to_pkcs1_der()
                .expect("public DER")
                .as_bytes()
                .to_vec(),
        }
    }

    /// A fresh EC key for ES256 (P-256) or ES384 (P-384).
    pub fn ec(kid: &str, alg: Algorithm) -> Self {
        let (signing, crv, width) = match alg {
            Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            Algorithm::ES384 => (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
            other => panic!("not an EC algorithm: {other:?}"),
        };
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("EC key");
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).expect("EC pair");
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC",
            "kid": kid,
            "use": "sig",
            "crv": crv,
            "x": b64(&point[1..1 + width]),
            "y": b64(&point[1 + width..]),
        });
        Self {
            kid: kid.to_owned(),
            alg,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            public_der: point,
        }
    }

    /// Signs `claims` with this key's algorithm and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    /// Signs `claims` under a header of the caller's making.
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signed token")
    }
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// A token from raw parts: `header` and `claims` as JSON, the signature as given.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// An HS256 token whose HMAC secret is `secret` (the algorithm-confusion attack uses the
/// issuer's public key).
pub fn hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", b64(tag.as_ref()))
}

/// Claims for `sub` valid from `now - 60` to `now + 3600` (Unix seconds).
pub fn claims(issuer: &str, audience: &str, sub: &str, now: i64) -> Value {
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
    })
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
