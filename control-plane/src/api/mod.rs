//! The admin REST API, `/v1`: tenants, principals, API keys, connector catalog, connections, policies,
//! data planes, audit search and verification. JSON in and out; authenticated by API keys with roles
//! ([`auth`]); errors mapped once ([`error`]); creates accept an `Idempotency-Key`. The OpenAPI document
//! ([`openapi`]) is generated from these handlers and committed as `control-plane/openapi.json`.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod platform;
pub mod sign_in;
pub mod tenants;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use omnisql_secrets::Sealer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use auth::Caller;
pub use error::{ApiError, ErrorBody, FieldError};

use crate::model::{PageRequest, TenantId, now_ms};
use crate::store::{IdempotentResponse, Store};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub sealer: Sealer,
    /// The key-encryption key new tenants get unless they name one (`local` with the local provider).
    pub default_key_id: String,
    /// Bumped after every configuration change, so data-plane watches wake at once.
    pub changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped when a connection test is asked for or reported, so data planes and waiting admins wake.
    pub tests: Arc<tokio::sync::watch::Sender<u64>>,
    /// Verifies OIDC sign-in tokens against the issuers tenants trust.
    pub oidc: omnisql_oidc::Verifier,
    /// The URL browsers reach this control plane at (e.g. `https://omnisql.example.com`), for the
    /// identity provider's redirect back; without it, the host the browser used, over http (development).
    pub public_url: Option<String>,
    /// Runs a connector version's smoke tests before a connection is upgraded to it; without it,
    /// upgrades are refused.
    pub smoke_tests: Option<Arc<dyn crate::smoke::SmokeTests>>,
    in_flight: Arc<Mutex<HashSet<(TenantId, String)>>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store.backend()).finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, sealer: Sealer, default_key_id: String) -> AppState {
        AppState {
            store,
            sealer,
            default_key_id,
            changes: Arc::new(tokio::sync::watch::channel(0).0),
            tests: Arc::new(tokio::sync::watch::channel(0).0),
            oidc: omnisql_oidc::Verifier::new(),
            public_url: None,
            smoke_tests: None,
            in_flight: Arc::default(),
        }
    }

    /// Verifies sign-in tokens with `verifier` (e.g. one that also accepts `http` issuers in development).
    pub fn with_oidc(mut self, verifier: omnisql_oidc::Verifier) -> AppState {
        self.oidc = verifier;
        self
    }

    /// Browsers reach this control plane at `url`.
    pub fn with_public_url(mut self, url: Option<String>) -> AppState {
        self.public_url = url;
        self
    }

    /// Upgrades run `tests` first.
    pub fn with_smoke_tests(mut self, tests: Option<Arc<dyn crate::smoke::SmokeTests>>) -> AppState {
        self.smoke_tests = tests;
        self
    }

    /// Wakes every configuration watch.
    pub fn config_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes data planes waiting for connection tests, and admins waiting for results.
    pub fn tests_changed(&self) {
        self.tests.send_modify(|n| *n += 1);
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(tenants::routes())
        .merge(catalog::routes())
        .merge(platform::routes())
        .merge(audit::routes())
        .merge(sign_in::routes())
        .route("/v1/openapi.json", axum::routing::get(|| async { axum::Json(openapi::document()) }))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .route("/metrics", axum::routing::get(metrics::metrics))
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint; the API is described at /v1/openapi.json".into()) })
        .with_state(state)
}

/// A JSON request body; malformed JSON is a 400 that says where, a wrong field a 422 naming it.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(Body(v)),
            Err(e) if e.inner().is_data() => {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                // A missing field is reported at its parent; name the field itself.
                let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
                let field = match (path.as_str(), missing) {
                    (".", Some(name)) => name.to_string(),
                    (_, Some(name)) => format!("{path}.{name}"),
                    (".", None) => "body".to_string(),
                    _ => path,
                };
                Err(ApiError::field(field, message))
            }
            Err(e) => Err(ApiError::BadRequest(format!("the body is not valid JSON: {}", e.inner()))),
        }
    }
}

/// `?after=…&limit=…` on list endpoints.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<u32>,
}

impl PageQuery {
    pub fn request(&self) -> Result<PageRequest, ApiError> {
        if self.limit == Some(0) {
            return Err(ApiError::field("limit", "must be between 1 and 500"));
        }
        Ok(PageRequest { after: self.after.clone(), limit: self.limit.unwrap_or(PageRequest::DEFAULT_LIMIT) })
    }
}

/// A JSON response with a status.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Runs a create at most once per `Idempotency-Key` (scoped by tenant): a retry with the same key and
/// the same request gets the first answer again (with `Idempotent-Replayed: true`), a retry with a
/// different request is refused. Secrets shown once (API keys, tokens) are not stored: the fields at the
/// JSON pointers in `shown_once` are emptied in the copy kept for replays.
pub async fn idempotent<F, Fut>(
    state: &AppState,
    scope: &TenantId,
    headers: &HeaderMap,
    request: &impl Serialize,
    shown_once: &[&str],
    create: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(key) = headers.get("idempotency-key") else {
        let (status, body) = create().await?;
        return Ok(json(status, &body));
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| ApiError::BadRequest("Idempotency-Key must be 1 to 255 characters of text".into()))?
        .to_string();
    let hash = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(request).unwrap_or_default());
        crate::keys::hex(&h.finalize())
    };
    let replay = |stored: IdempotentResponse| -> Result<Response, ApiError> {
        if stored.request_hash != hash {
            return Err(ApiError::field("Idempotency-Key", "this key was used for a different request; use a new key"));
        }
        let body: serde_json::Value = serde_json::from_str(&stored.body).unwrap_or_default();
        let mut response = json(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK), &body);
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
        Ok(response)
    };
    if let Some(stored) = state.store.idempotent_response(scope, &key).await? {
        return replay(stored);
    }
    let slot = (scope.clone(), key.clone());
    if !state.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(slot.clone()) {
        return Err(ApiError::Conflict("a request with this Idempotency-Key is still in progress; retry shortly".into()));
    }
    let result = create().await;
    let outcome = match result {
        Ok((status, body)) => {
            let mut kept = body.clone();
            for pointer in shown_once {
                if let Some(v) = kept.pointer_mut(pointer) {
                    *v = serde_json::Value::Null;
                }
            }
            let stored = IdempotentResponse { request_hash: hash, status: status.as_u16(), body: kept.to_string() };
            state.store.save_idempotent_response(scope, &key, &stored, now_ms()).await.map(|_| json(status, &body))
        }
        Err(e) => {
            state.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot);
            return Err(e);
        }
    };
    state.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot);
    Ok(outcome?)
}

/// Checks an identifier: lower-case letters, digits, `_` and `-`, starting with a letter.
pub fn check_id(field: &str, value: &str, max: usize, errors: &mut Vec<FieldError>) {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        errors.push(FieldError {
            field: field.into(),
            message: format!("must be 1 to {max} lower-case letters, digits, `_` or `-`, starting with a letter"),
        });
    }
}

/// `Ok` when no field was wrong.
pub fn valid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Invalid(errors)) }
}
