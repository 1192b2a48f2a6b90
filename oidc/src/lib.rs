//! Verifies OIDC JWT bearer tokens: the signature against the issuer's published keys (found through its
//! discovery document, `/.well-known/openid-configuration` → `jwks_uri`), then `iss`, `aud`, `exp` and
//! `nbf`. Keys are cached per issuer and fetched again when a token names a key the cache does not hold
//! (the issuer rotated), at most once per [`REFETCH_AFTER`] so a flood of forged key ids cannot turn into
//! a flood of requests to the issuer, and every [`KEYS_TTL`] in any case.
//!
//! Issuers are configured by tenant admins, so fetching their documents must not become a way into the
//! host's network: issuer and key-set URLs must be `https` (plain `http` only when the operator allows it
//! for development), redirects are not followed, and answers are capped in size and time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

pub mod flow;
pub use flow::{Endpoints, Flow, authorization_url, pkce_challenge};

/// Keys are fetched again at least this often.
pub const KEYS_TTL: Duration = Duration::from_secs(600);
/// An unknown key id fetches the keys again only if the last fetch is older than this.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// Largest discovery document or key set read from an issuer.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Longest principal name taken from a token.
pub const MAX_PRINCIPAL_CHARS: usize = 256;

/// An issuer a tenant trusts, the audience its tokens must name, and which claims say who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OidcTrust))]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// The `iss` value, e.g. `https://login.example.com/realms/acme` (discovery is under it). Must be
    /// `https`.
    pub issuer: String,
    /// The `aud` the tokens must name.
    pub audience: String,
    /// The claim naming the principal (default `sub`; often `email` or `preferred_username`).
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim listing the principal's groups (default `groups`); absent in a token means no groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_principal_claim() -> String {
    "sub".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

impl Trust {
    /// Trust `issuer` for `audience`, with the principal in `sub` and groups in `groups`.
    pub fn new(issuer: &str, audience: &str) -> Trust {
        Trust {
            issuer: issuer.into(),
            audience: audience.into(),
            principal_claim: default_principal_claim(),
            groups_claim: default_groups_claim(),
        }
    }

    /// Who the (verified) `claims` say signed in.
    pub fn signed_in(&self, claims: &Value) -> Result<SignedIn, OidcError> {
        let principal = match claims.get(&self.principal_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(OidcError::Claim(format!("no text claim `{}` names the principal", self.principal_claim))),
        };
        if principal.chars().count() > MAX_PRINCIPAL_CHARS || principal.chars().any(char::is_control) {
            return Err(OidcError::Claim(format!(
                "claim `{}` is longer than {MAX_PRINCIPAL_CHARS} characters or holds control characters",
                self.principal_claim
            )));
        }
        let groups = match claims.get(&self.groups_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| OidcError::Claim(format!("claim `{}` is not a list of texts", self.groups_claim)))?,
            Some(_) => return Err(OidcError::Claim(format!("claim `{}` is not a list of texts", self.groups_claim))),
        };
        Ok(SignedIn { principal, groups })
    }
}

/// Who a verified token says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub principal: String,
    pub groups: Vec<String>,
}

/// Whether a bearer token is a JWT (three base64url parts) rather than an API key.
pub fn is_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// The issuer and audiences a token claims, NOT verified: only to find which tenant's trust to verify
/// it with.
pub fn unverified_issuer(token: &str) -> Result<(String, Vec<String>), OidcError> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or_else(|| OidcError::Malformed("no payload".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| OidcError::Malformed(format!("the payload is not base64url: {e}")))?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|e| OidcError::Malformed(format!("the payload: {e}")))?;
    let issuer = claims.get("iss").and_then(Value::as_str).ok_or_else(|| OidcError::Malformed("no `iss` claim".into()))?;
    let audiences = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    Ok((issuer.to_string(), audiences))
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("the token is signed with {0:?}; accepted are RS256, RS384, RS512, ES256 and ES384")]
    Algorithm(Algorithm),
    #[error("the token names no key (`kid`)")]
    NoKeyId,
    #[error("the token's key `{kid}` is not among the keys {issuer} publishes")]
    UnknownKey { issuer: String, kid: String },
    #[error("cannot fetch the keys of {issuer}: {message}")]
    Keys { issuer: String, message: String },
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token does not say who signed in: {0}")]
    Claim(String),
    #[error("issuer URL `{0}` must use https")]
    Insecure(String),
    #[error("browser sign-in failed: {0}")]
    Flow(String),
}

#[derive(Debug)]
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// Verifies tokens of any number of issuers, caching each issuer's keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    http: reqwest::Client,
    keys: Arc<Mutex<HashMap<String, Arc<Keys>>>>,
    /// Key fetches so far (discovery + JWKS count as one), for tests and metrics.
    fetches: Arc<std::sync::atomic::AtomicU64>,
    refetch_after: Duration,
    ttl: Duration,
    allow_http: bool,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    /// A verifier that fetches over https only and follows no redirects.
    pub fn new() -> Verifier {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Verifier {
            http,
            keys: Arc::default(),
            fetches: Arc::default(),
            refetch_after: REFETCH_AFTER,
            ttl: KEYS_TTL,
            allow_http: false,
        }
    }

    /// Also accept `http://` issuers: for development and tests only.
    pub fn allow_http(mut self, allow: bool) -> Verifier {
        self.allow_http = allow;
        self
    }

    /// Checks that `issuer` may be fetched from, before it is trusted.
    pub fn check_issuer_url(&self, issuer: &str) -> Result<(), OidcError> {
        self.check_url(issuer)
    }

    fn check_url(&self, url: &str) -> Result<(), OidcError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| OidcError::Malformed(format!("`{url}` is not a URL: {e}")))?;
        match parsed.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http => Ok(()),
            _ => Err(OidcError::Insecure(url.into())),
        }
    }

    /// Verifies `token` with `trust` and says who it signs in.
    pub async fn sign_in(&self, token: &str, trust: &Trust) -> Result<SignedIn, OidcError> {
        let claims = self.verify(token, trust).await?;
        trust.signed_in(&claims)
    }

    /// An unknown key id fetches the keys again only if the last fetch is older than this (default
    /// [`REFETCH_AFTER`]).
    pub fn refetch_after(mut self, interval: Duration) -> Verifier {
        self.refetch_after = interval;
        self
    }

    /// Keys are fetched again at least this often (default [`KEYS_TTL`]).
    pub fn keys_ttl(mut self, ttl: Duration) -> Verifier {
        self.ttl = ttl;
        self
    }

    /// How many times keys were fetched from issuers.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The token's claims, if it is signed by a key `trust.issuer` publishes, was issued by it for
    /// `trust.audience`, and is within its validity period.
    pub async fn verify(&self, token: &str, trust: &Trust) -> Result<Value, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| OidcError::Malformed(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::ES256 | Algorithm::ES384) {
            return Err(OidcError::Algorithm(header.alg));
        }
        let kid = header.kid.ok_or(OidcError::NoKeyId)?;
        let jwk = self.key(&trust.issuer, &kid).await?;
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| OidcError::Keys { issuer: trust.issuer.clone(), message: e.to_string() })?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&trust.issuer]);
        validation.set_audience(&[&trust.audience]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| OidcError::Invalid(e.to_string()))?;
        Ok(data.claims)
    }

    /// The issuer's key `kid`, from the cache or, if it is not there, from the issuer.
    async fn key(&self, issuer: &str, kid: &str) -> Result<jsonwebtoken::jwk::Jwk, OidcError> {
        // One fetch at a time per verifier: concurrent tokens with a new key wait for the same fetch.
        let mut cache = self.keys.lock().await;
        let cached = cache.get(issuer).cloned();
        let fresh = cached.as_ref().is_some_and(|k| k.fetched.elapsed() < self.ttl);
        if let Some(keys) = cached.as_ref().filter(|_| fresh)
            && let Some(jwk) = keys.set.find(kid)
        {
            return Ok(jwk.clone());
        }
        if let Some(keys) = cached.as_ref().filter(|k| fresh && k.fetched.elapsed() < self.refetch_after) {
            // Fetched a moment ago and the key was not there: do not ask again yet.
            return keys.set.find(kid).cloned().ok_or_else(|| OidcError::UnknownKey { issuer: issuer.into(), kid: kid.into() });
        }
        let keys = match (self.fetch(issuer).await, cached) {
            (Ok(keys), _) => Arc::new(keys),
            // The issuer is down: keep verifying with the keys it last published, and ask again after
            // the refetch interval rather than on every token.
            (Err(e), Some(old)) => {
                tracing::warn!(%issuer, error = %e, "cannot refresh the issuer's keys; using the ones fetched before");
                let retry_at =
                    Instant::now().checked_sub(self.ttl.saturating_sub(self.refetch_after)).unwrap_or_else(Instant::now);
                Arc::new(Keys { set: old.set.clone(), fetched: retry_at })
            }
            (Err(e), None) => return Err(e),
        };
        cache.insert(issuer.to_string(), keys.clone());
        keys.set.find(kid).cloned().ok_or_else(|| OidcError::UnknownKey { issuer: issuer.into(), kid: kid.into() })
    }

    async fn fetch(&self, issuer: &str) -> Result<Keys, OidcError> {
        self.check_url(issuer)?;
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let failed = |message: String| OidcError::Keys { issuer: issuer.into(), message };
        let document = self.discovery(issuer).await.map_err(failed)?;
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| failed("the discovery document has no jwks_uri".into()))?;
        self.check_url(jwks_uri)?;
        let set = self.get_json(jwks_uri).await.map_err(failed)?;
        let set: JwkSet = serde_json::from_value(set).map_err(|e| failed(format!("the key set is not a JWK set: {e}")))?;
        tracing::info!(%issuer, keys = set.keys.len(), "fetched the issuer's signing keys");
        Ok(Keys { set, fetched: Instant::now() })
    }

    /// The issuer's discovery document.
    async fn discovery(&self, issuer: &str) -> Result<Value, String> {
        self.get_json(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))).await
    }

    /// A JSON document of at most [`MAX_DOCUMENT_BYTES`] (the URL must have passed `check_url`).
    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let response = self.http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        flow::read_json(response, url).await
    }
}

#[cfg(feature = "testing")]
pub mod testing;
