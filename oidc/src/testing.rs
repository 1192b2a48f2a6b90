#![allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: a failure should stop the test
//! A real OIDC issuer for tests: serves a discovery document and a JWKS over HTTP on a free port and signs
//! ES256 tokens with keys it may publish, withdraw or stop serving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A signing key; sign tokens with it, publish it with [`Key::jwk`].
pub struct Key {
    pub kid: String,
    pair: rcgen::KeyPair,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        Key { kid: kid.into(), pair: rcgen::KeyPair::generate().expect("test issuer") }
    }

    pub fn jwk(&self) -> Value {
        let raw = self.pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65]), "kid": self.kid, "alg": "ES256", "use": "sig"})
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pair.serialize_der())).expect("test issuer")
    }
}

/// An issuer on a free port publishing `keys`; counts JWKS requests.
pub struct Issuer {
    pub url: String,
    pub published: Arc<Mutex<Vec<Value>>>,
    pub jwks_requests: Arc<AtomicU64>,
    /// While set, the key set answers 503.
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

pub async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("test issuer");
    let url = format!("http://{}", listener.local_addr().expect("test issuer"));
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
                let keys = keys.lock().expect("test issuer").clone();
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
    tokio::spawn(async move { axum::serve(listener, app).await.expect("test issuer") });
    Issuer { url, published, jwks_requests, down }
}

/// Unix seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("test issuer").as_secs()
}

/// Claims of a token for `sam` (group `sales`) that expires at `exp`.
pub fn claims(issuer: &str, audience: &str, exp: u64) -> Value {
    json!({"iss": issuer, "aud": audience, "sub": "sam", "groups": ["sales"], "exp": exp, "iat": now(), "nbf": now() - 5})
}
