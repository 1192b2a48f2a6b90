#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tokens from a real local issuer (discovery document and JWKS over HTTP, ES256 keys): accepted when
//! valid; refused when expired, not yet valid, for another audience or issuer, signed by a key the issuer
//! does not publish, or with a symmetric algorithm; a rotated key is picked up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use omnisql_oidc::{OidcError, Trust, Verifier};
use serde_json::{Value, json};

struct Key {
    kid: String,
    pair: rcgen::KeyPair,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key { kid: kid.into(), pair: rcgen::KeyPair::generate().unwrap() }
    }

    fn jwk(&self) -> Value {
        let raw = self.pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]), "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pair.serialize_der())).unwrap()
    }
}

/// An issuer on a free port publishing `keys`; counts JWKS requests.
struct Issuer {
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
    jwks_requests: Arc<AtomicU64>,
    /// While set, the key set answers 503.
    down: Arc<std::sync::atomic::AtomicBool>,
}

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let published: Arc<Mutex<Vec<Value>>> = Arc::default();
    let jwks_requests: Arc<AtomicU64> = Arc::default();
    let down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let (keys, count, base, is_down) = (published.clone(), jwks_requests.clone(), url.clone(), down.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let base = base.clone();
                async move { axum::Json(json!({"issuer": base, "jwks_uri": format!("{base}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                count.fetch_add(1, Ordering::Relaxed);
                let keys = keys.lock().unwrap().clone();
                let down = is_down.load(Ordering::Relaxed);
                async move {
                    use axum::response::IntoResponse;
                    if down {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        axum::Json(json!({"keys": keys})).into_response()
                    }
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Issuer { url, published, jwks_requests, down }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(issuer: &str, audience: &str, exp: u64) -> Value {
    json!({"iss": issuer, "aud": audience, "sub": "sam", "groups": ["sales"], "exp": exp, "iat": now(), "nbf": now() - 5})
}

#[tokio::test]
async fn tokens_are_checked_against_the_issuers_published_keys_and_claims() {
    let issuer = issuer().await;
    let (k1, k2, stranger) = (Key::new("k1"), Key::new("k2"), Key::new("k3"));
    issuer.published.lock().unwrap().push(k1.jwk());
    let trust = Trust { issuer: issuer.url.clone(), audience: "omnisql".into() };
    let verifier =
        Verifier::new(reqwest::Client::new()).refetch_after(Duration::from_millis(300)).keys_ttl(Duration::from_secs(1));

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
    let verifier = Verifier::new(reqwest::Client::new());
    let k = Key::new("k1");
    let trust = Trust { issuer: "http://127.0.0.1:9".into(), audience: "omnisql".into() };
    let e = verifier.verify(&k.sign(&claims(&trust.issuer, "omnisql", now() + 300)), &trust).await.unwrap_err();
    assert!(matches!(e, OidcError::Keys { .. }) && e.to_string().contains("127.0.0.1:9"), "{e}");
    assert!(matches!(verifier.verify("not-a-jwt", &trust).await, Err(OidcError::Malformed(_))));
}
