use super::*;
use crate::policy::bearer::test_keys::{TestKey, claims, jwks};
use crate::policy::bearer::{SigningAlgorithm, TokenVerifier as _};
use crate::policy::identity::IdentitySource;
use jsonwebtoken::Algorithm;

const ISSUER: &str = "https://login.example.com/";
const NOW: i64 = 1_800_000_000;

fn at(secs: i64) -> Instant {
    i128::from(secs) * 1_000_000_000
}

/// Reads the JWKS file again (a fetch that starts after this call, whether or not a
/// file event got there first) and checks that the set now holds `kids`.
async fn reload(store: &KeyStore, kids: &[&str]) {
    store.refresh_for(ISSUER).await;
    assert_eq!(store.status()[0].kids, kids);
}

/// A remembered verification answers only while the key set it was checked with serves,
/// for the same source settings (the policy's own `Arc`, or equal settings after a
/// reload), until `exp` plus the leeway; anything else is verified again.
#[tokio::test]
async fn a_remembered_verification_needs_its_keys_its_settings_and_an_unexpired_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let a = TestKey::ec("a", Algorithm::ES256);
    let b = TestKey::ec("b", Algorithm::ES256);
    std::fs::write(&path, jwks(&[&a])).unwrap();
    let source = Arc::new(BearerSource {
        issuer: ISSUER.into(),
        audiences: vec!["iot-api".into()],
        jwks: JwksLocation::File(path.display().to_string()),
        claim: "sub".into(),
        principal_type: "user".into(),
        groups_claim: None,
        algorithms: vec![SigningAlgorithm::ES256],
        leeway_secs: 60,
    });
    let identity = IdentityConfig {
        sources: vec![IdentitySource::Bearer(source.clone())],
        ..IdentityConfig::default()
    };
    let options = KeyOptions {
        unknown_kid_interval: Duration::ZERO,
        ..KeyOptions::default()
    };
    let store = Arc::new(KeyStore::new(options, KeyCounters::default()));
    store.sync(&identity);
    store.first_fetches(Duration::from_secs(10)).await;
    let counts = || {
        (
            store.counters.cache_hits.get(),
            store.counters.cache_misses.get(),
        )
    };
    let token = a.sign(&claims(ISSUER, "iot-api", "alice", NOW));

    let alice = store.verify(&source, &token, at(NOW)).unwrap();
    assert_eq!(alice.principal, "user:alice");
    assert_eq!(counts(), (0, 1));
    assert_eq!(
        store.verify(&source, &token, at(NOW + 1)),
        Ok(alice.clone())
    );
    assert_eq!(counts(), (1, 1), "the same settings by pointer: a hit");
    let reloaded = Arc::new((*source).clone());
    assert_eq!(
        store.verify(&reloaded, &token, at(NOW + 2)),
        Ok(alice.clone())
    );
    assert_eq!(
        counts(),
        (2, 1),
        "equal settings in another allocation: a hit"
    );
    let changed = Arc::new(BearerSource {
        leeway_secs: 0,
        ..(*source).clone()
    });
    let strict = store.verify(&changed, &token, at(NOW + 3)).unwrap();
    assert_eq!(strict.expires, NOW + 3600);
    assert_eq!(counts(), (2, 2), "other settings: verified again");
    assert_eq!(
        store.verify(&changed, &token, at(NOW + 3600)),
        Err(Rejection::Expired)
    );
    assert_eq!(
        counts(),
        (2, 3),
        "past exp plus the leeway: never from the cache"
    );

    store.verify(&source, &token, at(NOW + 4)).unwrap();
    assert_eq!(
        store.verify(&source, &token, at(NOW + 5)),
        Ok(alice.clone())
    );
    assert_eq!(counts(), (3, 4));
    // A new key set (a rotation) makes the token be verified again with it.
    std::fs::write(&path, jwks(&[&a, &b])).unwrap();
    reload(&store, &["a", "b"]).await;
    assert_eq!(
        store.verify(&source, &token, at(NOW + 6)),
        Ok(alice.clone())
    );
    assert_eq!(counts(), (3, 5), "another key set: verified again");
    // A key removed from the set no longer admits the tokens it signed.
    std::fs::write(&path, jwks(&[&b])).unwrap();
    reload(&store, &["b"]).await;
    assert_eq!(
        store.verify(&source, &token, at(NOW + 7)),
        Err(Rejection::UnknownKey)
    );
    assert_eq!(counts(), (3, 6));
}

#[test]
fn cache_control() {
    assert_eq!(
        cache_max_age("public, max-age=3600"),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        cache_max_age("max-age=\"60\""),
        Some(Duration::from_secs(60))
    );
    assert_eq!(cache_max_age("no-store"), Some(Duration::ZERO));
    assert_eq!(cache_max_age("public"), None);
    assert_eq!(cache_max_age("max-age=soon"), None);
}
