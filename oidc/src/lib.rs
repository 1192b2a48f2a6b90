//! Verifies OIDC JWT bearer tokens: the signature against the issuer's published keys (found through its
//! discovery document, `/.well-known/openid-configuration` → `jwks_uri`), then `iss`, `aud`, `exp` and
//! `nbf`. Keys are cached per issuer and fetched again when a token names a key the cache does not hold
//! (the issuer rotated), at most once per [`REFETCH_AFTER`] so a flood of forged key ids cannot turn into
//! a flood of requests to the issuer, and every [`KEYS_TTL`] in any case.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

/// Keys are fetched again at least this often.
pub const KEYS_TTL: Duration = Duration::from_secs(600);
/// An unknown key id fetches the keys again only if the last fetch is older than this.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

/// An issuer a tenant trusts, and the audience its tokens must name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Trust {
    /// The `iss` value, e.g. `https://login.example.com/realms/acme` (discovery is under it).
    pub issuer: String,
    pub audience: String,
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
}

impl Verifier {
    pub fn new(http: reqwest::Client) -> Verifier {
        Verifier { http, keys: Arc::default(), fetches: Arc::default(), refetch_after: REFETCH_AFTER, ttl: KEYS_TTL }
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
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let failed = |message: String| OidcError::Keys { issuer: issuer.into(), message };
        let discovery = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let get = |url: String| async move {
            let response = self.http.get(&url).timeout(Duration::from_secs(5)).send().await.map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            response.json::<Value>().await.map_err(|e| format!("{url}: {e}"))
        };
        let document = get(discovery).await.map_err(failed)?;
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| failed("the discovery document has no jwks_uri".into()))?;
        let set = get(jwks_uri.to_string()).await.map_err(failed)?;
        let set: JwkSet = serde_json::from_value(set).map_err(|e| failed(format!("the key set is not a JWK set: {e}")))?;
        tracing::info!(%issuer, keys = set.keys.len(), "fetched the issuer's signing keys");
        Ok(Keys { set, fetched: Instant::now() })
    }
}
