#![allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: a failure should stop the test
//! A real OIDC issuer for tests: serves a discovery document and a JWKS over HTTP on a free port and signs
//! ES256 tokens with keys it may publish, withdraw or stop serving. It also runs the browser flow
//! (authorization code with PKCE `S256`): `/authorize` signs in whoever [`Issuer::login`] names without
//! asking (like a browser that already has a session there), and `/token` redeems each code once, for the
//! client, redirect URI and verifier it was issued to.

use std::collections::HashMap;
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

/// Who `/authorize` signs in (its `sub`), and the key that signs their ID tokens; `None`: the user
/// declines (`error=access_denied`).
pub type Login = Option<(String, Arc<Key>)>;

/// An issuer on a free port publishing `keys`; counts JWKS requests.
pub struct Issuer {
    pub url: String,
    pub published: Arc<Mutex<Vec<Value>>>,
    pub jwks_requests: Arc<AtomicU64>,
    /// While set, the key set answers 503.
    pub down: Arc<std::sync::atomic::AtomicBool>,
    pub login: Arc<Mutex<Login>>,
}

/// A code `/authorize` handed out, waiting to be redeemed.
struct Pending {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    sub: String,
    key: Arc<Key>,
}

type Params = HashMap<String, String>;

/// `/authorize`: a code for the logged-in user, sent to the redirect URI with the client's state.
fn authorize(login: &Mutex<Login>, codes: &Mutex<HashMap<String, Pending>>, q: &Params) -> String {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let back = |pairs: &[(&str, &str)]| {
        let mut url = reqwest::Url::parse(&get("redirect_uri")).expect("test issuer: redirect_uri");
        url.query_pairs_mut().extend_pairs(pairs).append_pair("state", &get("state"));
        url.to_string()
    };
    if get("response_type") != "code" || get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return back(&[("error", "invalid_request"), ("error_description", "code flow with PKCE S256 only")]);
    }
    let Some((sub, key)) = login.lock().expect("test issuer").clone() else {
        return back(&[("error", "access_denied"), ("error_description", "the user declined")]);
    };
    let code = format!("code-{}-{}", now(), codes.lock().expect("test issuer").len());
    let pending = Pending {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        challenge: get("code_challenge"),
        nonce: get("nonce"),
        sub,
        key,
    };
    codes.lock().expect("test issuer").insert(code.clone(), pending);
    back(&[("code", &code)])
}

/// `/token`: the ID token for a code, once, if the client, redirect URI and PKCE verifier match.
fn token(issuer: &str, codes: &Mutex<HashMap<String, Pending>>, form: &Params) -> Result<Value, String> {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return Err("unsupported grant_type".into());
    }
    let p = codes.lock().expect("test issuer").remove(&get("code")).ok_or("unknown or already redeemed code")?;
    if p.client_id != get("client_id") || p.redirect_uri != get("redirect_uri") {
        return Err("the code was issued to another client or redirect URI".into());
    }
    if crate::pkce_challenge(&get("code_verifier")) != p.challenge {
        return Err("PKCE verification failed".into());
    }
    let mut c = claims(issuer, &p.client_id, now() + 300);
    c["sub"] = json!(p.sub);
    c["nonce"] = json!(p.nonce);
    Ok(json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 300, "id_token": p.key.sign(&c)}))
}

pub async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("test issuer");
    let url = format!("http://{}", listener.local_addr().expect("test issuer"));
    let published: Arc<Mutex<Vec<Value>>> = Arc::default();
    let jwks_requests: Arc<AtomicU64> = Arc::default();
    let down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let login: Arc<Mutex<Login>> = Arc::default();
    let codes: Arc<Mutex<HashMap<String, Pending>>> = Arc::default();
    let (keys, count, base, is_down) = (published.clone(), jwks_requests.clone(), url.clone(), down.clone());
    let (base_t, who, codes_a, codes_t) = (url.clone(), login.clone(), codes.clone(), codes);
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let base = base.clone();
                async move {
                    axum::Json(json!({"issuer": base, "jwks_uri": format!("{base}/jwks"),
                        "authorization_endpoint": format!("{base}/authorize"), "token_endpoint": format!("{base}/token")}))
                }
            }),
        )
        .route(
            "/authorize",
            axum::routing::get(move |axum::extract::Query(q): axum::extract::Query<Params>| {
                let to = authorize(&who, &codes_a, &q);
                async move { axum::response::Redirect::to(&to) }
            }),
        )
        .route(
            "/token",
            axum::routing::post(move |axum::Form(form): axum::Form<Params>| {
                let answer = token(&base_t, &codes_t, &form);
                async move {
                    use axum::response::IntoResponse;
                    match answer {
                        Ok(body) => axum::Json(body).into_response(),
                        Err(why) => (
                            axum::http::StatusCode::BAD_REQUEST,
                            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
                        )
                            .into_response(),
                    }
                }
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
    Issuer { url, published, jwks_requests, down, login }
}

/// Unix seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("test issuer").as_secs()
}

/// Claims of a token for `sam` (group `sales`) that expires at `exp`.
pub fn claims(issuer: &str, audience: &str, exp: u64) -> Value {
    json!({"iss": issuer, "aud": audience, "sub": "sam", "groups": ["sales"], "exp": exp, "iat": now(), "nbf": now() - 5})
}
