#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tokens from a real local issuer (discovery document and JWKS over HTTP, ES256 keys): accepted when
//! valid; refused when expired, not yet valid, for another audience or issuer, signed by a key the issuer
//! does not publish, or with a symmetric algorithm; a rotated key is picked up.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use omnisql_oidc::testing::{Key, claims, issuer, now};
use omnisql_oidc::{OidcError, Trust, Verifier};
use serde_json::{Value, json};

#[tokio::test]
async fn tokens_are_checked_against_the_issuers_published_keys_and_claims() {
    let issuer = issuer().await;
    let (k1, k2, stranger) = (Key::new("k1"), Key::new("k2"), Key::new("k3"));
    issuer.published.lock().unwrap().push(k1.jwk());
    let trust = Trust::new(&issuer.url, "omnisql");
    let verifier = Verifier::new().allow_http(true).refetch_after(Duration::from_millis(300)).keys_ttl(Duration::from_secs(1));

    let good = verifier.verify(&k1.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await.unwrap();
    assert_eq!((good["sub"].as_str(), good["groups"][0].as_str()), (Some("sam"), Some("sales")));
    // Cached: a second token needs no fetch.
    verifier.verify(&k1.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await.unwrap();
    assert_eq!(issuer.jwks_requests.load(Ordering::Relaxed), 1);

    let refused = |r: Result<Value, OidcError>| r.expect_err("refused").to_string();
    let expired = refused(verifier.verify(&k1.sign(&claims(&issuer.url, "omnisql", now() - 120)), &trust).await);
    assert!(expired.contains("Expired"), "{expired}");
    let mut early = claims(&issuer.url, "omnisql", now() + 600);
    early["nbf"] = json!(now() + 300);
    let early = refused(verifier.verify(&k1.sign(&early), &trust).await);
    assert!(early.contains("Immature"), "{early}");
    let other_audience = refused(verifier.verify(&k1.sign(&claims(&issuer.url, "someone-else", now() + 300)), &trust).await);
    assert!(other_audience.contains("Audience"), "{other_audience}");
    let other_issuer = refused(verifier.verify(&k1.sign(&claims("https://evil.example", "omnisql", now() + 300)), &trust).await);
    assert!(other_issuer.contains("Issuer"), "{other_issuer}");

    // A key the issuer never published: refused, and a burst of such tokens does not hammer the issuer.
    let before = issuer.jwks_requests.load(Ordering::Relaxed);
    for _ in 0..20 {
        let e = verifier.verify(&stranger.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await.unwrap_err();
        assert!(matches!(e, OidcError::UnknownKey { .. }), "{e}");
    }
    assert!(issuer.jwks_requests.load(Ordering::Relaxed) - before <= 1, "at most one fetch for the burst");

    // A symmetric token (the classic confusion attack) is refused before any key is consulted.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged =
        jsonwebtoken::encode(&header, &claims(&issuer.url, "omnisql", now() + 300), &EncodingKey::from_secret(b"k1").unwrap())
            .unwrap();
    assert!(matches!(verifier.verify(&forged, &trust).await, Err(OidcError::Algorithm(Algorithm::HS256))));

    // The issuer rotates to k2: once the refetch interval has passed, a k2 token is accepted.
    issuer.published.lock().unwrap().push(k2.jwk());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let rotated = verifier.verify(&k2.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await.unwrap();
    assert_eq!(rotated["sub"], "sam");
    // And k1 is withdrawn: after the next fetch, k1 tokens are refused.
    issuer.published.lock().unwrap().retain(|k| k["kid"] != "k1");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = verifier.verify(&stranger.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await; // triggers a fetch
    let withdrawn = verifier.verify(&k1.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await.unwrap_err();
    assert!(matches!(withdrawn, OidcError::UnknownKey { .. }), "{withdrawn}");
    // The issuer goes down past the keys' lifetime: the refresh fails, and tokens signed with the keys it
    // last published still verify; the next attempt waits for the refetch interval.
    issuer.down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = issuer.jwks_requests.load(Ordering::Relaxed);
    for _ in 0..5 {
        assert!(verifier.verify(&k2.sign(&claims(&issuer.url, "omnisql", now() + 300)), &trust).await.is_ok());
    }
    assert_eq!(issuer.jwks_requests.load(Ordering::Relaxed) - before, 1, "one failed refresh, then the old keys");
    println!("jwks fetches: {}", issuer.jwks_requests.load(Ordering::Relaxed));
}

#[tokio::test]
async fn an_unreachable_issuer_is_an_error_that_names_it() {
    let verifier = Verifier::new().allow_http(true);
    let k = Key::new("k1");
    let trust = Trust::new("http://127.0.0.1:9", "omnisql");
    let e = verifier.verify(&k.sign(&claims(&trust.issuer, "omnisql", now() + 300)), &trust).await.unwrap_err();
    assert!(matches!(e, OidcError::Keys { .. }) && e.to_string().contains("127.0.0.1:9"), "{e}");
    assert!(matches!(verifier.verify("not-a-jwt", &trust).await, Err(OidcError::Malformed(_))));
}

#[tokio::test]
async fn plain_http_issuers_are_refused_unless_allowed() {
    let issuer = issuer().await;
    let k = Key::new("k1");
    issuer.published.lock().unwrap().push(k.jwk());
    let trust = Trust::new(&issuer.url, "omnisql");
    let token = k.sign(&claims(&issuer.url, "omnisql", now() + 300));
    let e = Verifier::new().sign_in(&token, &trust).await.unwrap_err();
    assert!(matches!(e, OidcError::Insecure(_)), "{e}");
    assert_eq!(issuer.jwks_requests.load(Ordering::Relaxed), 0, "nothing was fetched");
    assert!(Verifier::new().check_issuer_url("file:///etc/passwd").is_err());
    assert!(Verifier::new().check_issuer_url("https://login.example.com/realms/acme").is_ok());
}

#[tokio::test]
async fn claims_say_who_signed_in_as_the_trust_maps_them() {
    let issuer = issuer().await;
    let k = Key::new("k1");
    issuer.published.lock().unwrap().push(k.jwk());
    let verifier = Verifier::new().allow_http(true);
    let mut c = claims(&issuer.url, "omnisql", now() + 300);
    c["email"] = json!("sam@acme.example");
    c["roles"] = json!("analyst");
    let token = k.sign(&c);
    assert!(omnisql_oidc::is_jwt(&token) && !omnisql_oidc::is_jwt("osk_abcdefghijklmnop"));
    assert_eq!(omnisql_oidc::unverified_issuer(&token).unwrap(), (issuer.url.clone(), vec!["omnisql".to_string()]));

    let by_sub = verifier.sign_in(&token, &Trust::new(&issuer.url, "omnisql")).await.unwrap();
    assert_eq!((by_sub.principal.as_str(), by_sub.groups.clone()), ("sam", vec!["sales".to_string()]));
    let mapped = Trust { principal_claim: "email".into(), groups_claim: "roles".into(), ..Trust::new(&issuer.url, "omnisql") };
    let by_email = verifier.sign_in(&token, &mapped).await.unwrap();
    assert_eq!((by_email.principal.as_str(), by_email.groups), ("sam@acme.example", vec!["analyst".to_string()]));
    let missing = Trust { principal_claim: "upn".into(), ..Trust::new(&issuer.url, "omnisql") };
    let e = verifier.sign_in(&token, &missing).await.unwrap_err();
    assert!(matches!(e, OidcError::Claim(_)) && e.to_string().contains("`upn`"), "{e}");
    let mut odd = c.clone();
    odd["groups"] = json!([1, 2]);
    let e = verifier.sign_in(&k.sign(&odd), &Trust::new(&issuer.url, "omnisql")).await.unwrap_err();
    assert!(matches!(e, OidcError::Claim(_)), "{e}");
}
