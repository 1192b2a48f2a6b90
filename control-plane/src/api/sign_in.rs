//! Browser sign-in through the tenant's OIDC issuer, for the dashboard: the authorization-code flow with
//! PKCE and a nonce ([`omnisql_oidc::flow`]), the control plane being the issuer's public client whose id
//! is the trust's audience. The browser goes to `/v1/tenants/{t}/sign-in`, on to the issuer, and back to
//! `/v1/sign-in/callback`, which redeems the code; the page then takes the ID token from
//! `POST /v1/sign-in/session` and uses it as a bearer token like any sign-in JWT.
//!
//! Nothing is kept on the server, so any control-plane replica can answer any step: the flow's state,
//! PKCE verifier and nonce ride in an HttpOnly cookie scoped to `/v1/sign-in` of the browser that started
//! it, and the ID token in a second one that the session call reads once. No token ever appears in a URL.
//! Steps the browser navigates to answer failures with a redirect to the dashboard naming what went wrong.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use omnisql_oidc::{Flow, SignedIn};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody};
use crate::keys;
use crate::model::{OidcTrust, TenantId};
use crate::store::StoreError;

/// The cookie holding a started flow's tenant, state, PKCE verifier and nonce.
const FLOW_COOKIE: &str = "omnisql_sign_in";
/// The cookie holding a finished flow's tenant and ID token until the page takes it.
const TOKEN_COOKIE: &str = "omnisql_signed_in";
/// A browser has this long at the issuer.
const FLOW_SECONDS: u32 = 600;
/// The page has this long to take the token after coming back.
const TOKEN_SECONDS: u32 = 120;
/// Where the issuer sends browsers back; register `<public URL>` + this with the issuer.
pub const CALLBACK_PATH: &str = "/v1/sign-in/callback";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/sign-in", get(start))
        .route(CALLBACK_PATH, get(callback))
        .route("/v1/sign-in/session", post(session))
}

/// Starts a browser sign-in through the tenant's identity provider: redirects to the issuer's
/// authorization endpoint (no credentials needed; a browser navigates here).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sign-in", tag = "access", params(("tenant" = String, Path)), security(()),
    responses((status = 303, description = "To the issuer's authorization endpoint, or back to the dashboard with `#sign-in-error=…`")))]
pub async fn start(State(state): State<AppState>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    let begin = async {
        let redirect_uri = redirect_uri(&state, &headers)?;
        let trust = trust_of(&state, &tenant).await?;
        let endpoints = state.oidc.endpoints(&trust.issuer).await.map_err(|e| e.to_string())?;
        let (flow_state, verifier, nonce) = (keys::generate("st"), keys::generate("pv"), keys::generate("nc"));
        let flow = Flow { state: &flow_state, verifier: &verifier, nonce: &nonce, redirect_uri: &redirect_uri };
        let url = omnisql_oidc::authorization_url(&endpoints, &trust, &flow).map_err(|e| e.to_string())?;
        let cookie = cookie(&state, FLOW_COOKIE, &format!("{tenant}.{flow_state}.{verifier}.{nonce}"), FLOW_SECONDS);
        Ok::<_, String>((url, cookie))
    };
    match begin.await {
        Ok((url, cookie)) => redirect(&url, &[cookie]),
        Err(message) => failed(&message),
    }
}

/// What the issuer sends back: a code, or an error.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The issuer's redirect back: redeems the code with the browser's PKCE verifier, checks the ID token
/// (signature, issuer, audience, expiry, nonce) and that it names a principal of the tenant, and leaves
/// the token for the dashboard to take.
#[utoipa::path(get, path = "/v1/sign-in/callback", tag = "access", params(Callback), security(()),
    responses((status = 303, description = "To the dashboard: `/#signed-in`, or `/#sign-in-error=…`")))]
pub async fn callback(State(state): State<AppState>, headers: HeaderMap, Query(back): Query<Callback>) -> Response {
    let clear_flow = cookie(&state, FLOW_COOKIE, "", 0);
    match finish(&state, &headers, back).await {
        Ok((tenant, token, signed_in)) => {
            tracing::info!(%tenant, principal = %signed_in.principal, "signed in through the tenant's identity provider");
            redirect("/#signed-in", &[clear_flow, cookie(&state, TOKEN_COOKIE, &format!("{tenant}.{token}"), TOKEN_SECONDS)])
        }
        Err(message) => {
            let mut response = failed(&message);
            response.headers_mut().append(header::SET_COOKIE, clear_flow);
            response
        }
    }
}

async fn finish(state: &AppState, headers: &HeaderMap, back: Callback) -> Result<(String, String, SignedIn), String> {
    if let Some(error) = back.error {
        return Err(format!(
            "the identity provider did not sign you in: {error}{}",
            back.error_description.map(|d| format!(" ({d})")).unwrap_or_default()
        ));
    }
    let started = read_cookie(headers, FLOW_COOKIE).ok_or(
        "this browser has no sign-in under way here (it took longer than 10 minutes, or cookies are blocked): start again",
    )?;
    let [tenant, flow_state, verifier, nonce]: [&str; 4] =
        started.split('.').collect::<Vec<_>>().try_into().map_err(|_| "the sign-in cookie is damaged: start again")?;
    if back.state.as_deref() != Some(flow_state) {
        return Err("this answer belongs to another sign-in (its state differs): start again".into());
    }
    let code = back.code.ok_or("the identity provider sent no code")?;
    let trust = trust_of(state, tenant).await?;
    let redirect_uri = redirect_uri(state, headers)?;
    let endpoints = state.oidc.endpoints(&trust.issuer).await.map_err(|e| e.to_string())?;
    let flow = Flow { state: flow_state, verifier, nonce, redirect_uri: &redirect_uri };
    let (token, signed_in) = state.oidc.redeem(&trust, &endpoints, &code, &flow).await.map_err(|e| e.to_string())?;
    match state.store.get_principal(&TenantId(tenant.into()), &signed_in.principal).await {
        Ok(_) => Ok((tenant.to_string(), token, signed_in)),
        Err(StoreError::NotFound(_)) => Err(format!(
            "`{}` signed in through the identity provider but is not a principal of tenant `{tenant}`: ask a tenant admin to add it",
            signed_in.principal
        )),
        Err(e) => Err(format!("cannot look up the principal: {e}")),
    }
}

/// A finished browser sign-in: the ID token to send as `Authorization: Bearer`, with
/// `x-omnisql-tenant` naming the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignInSession {
    pub tenant: String,
    pub token: String,
}

/// Hands the page the ID token of the sign-in that just finished in this browser, once.
#[utoipa::path(post, path = "/v1/sign-in/session", tag = "access", security(()),
    responses((status = 200, body = SignInSession), (status = 401, body = ErrorBody)))]
pub async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let value = read_cookie(&headers, TOKEN_COOKIE)
        .ok_or_else(|| ApiError::Unauthenticated("no sign-in has finished in this browser in the last two minutes".into()))?;
    let (tenant, token) =
        value.split_once('.').ok_or_else(|| ApiError::Unauthenticated("the sign-in cookie is damaged: sign in again".into()))?;
    let body = SignInSession { tenant: tenant.into(), token: token.into() };
    Ok(([(header::SET_COOKIE, cookie(&state, TOKEN_COOKIE, "", 0))], axum::Json(body)).into_response())
}

/// The tenant's trust, with one answer for a tenant that does not exist and one that trusts no issuer
/// (this step needs no credentials, so it must not tell which tenants exist).
async fn trust_of(state: &AppState, tenant: &str) -> Result<OidcTrust, String> {
    let none = || format!("tenant `{tenant}` does not sign in through an identity provider; sign in with an API key");
    match state.store.get_tenant(&TenantId(tenant.into())).await {
        Ok(t) => t.oidc.ok_or_else(none),
        Err(StoreError::NotFound(_)) => Err(none()),
        Err(e) => Err(format!("cannot look up the tenant: {e}")),
    }
}

/// This control plane's callback URL: under its public URL, or (development, no public URL set) under
/// the host the browser used, over http.
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Result<String, String> {
    if let Some(url) = &state.public_url {
        return Ok(format!("{}{CALLBACK_PATH}", url.trim_end_matches('/')));
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let authority = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !authority {
        return Err("the request names no usable host; start the control plane with `--public-url`".into());
    }
    Ok(format!("http://{host}{CALLBACK_PATH}"))
}

fn cookie(state: &AppState, name: &str, value: &str, max_age: u32) -> HeaderValue {
    let secure = if state.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) { "; Secure" } else { "" };
    // Lax, not Strict: the issuer's redirect back is a navigation from its site, which must carry the flow.
    let text = format!("{name}={value}; Path=/v1/sign-in; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("omnisql_sign_in=; Max-Age=0"))
}

fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v)
}

fn redirect(location: &str, cookies: &[HeaderValue]) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::CACHE_CONTROL, "no-store")]).into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

/// Back to the dashboard's sign-in page, which shows `message`.
fn failed(message: &str) -> Response {
    tracing::info!(%message, "browser sign-in failed");
    redirect(&format!("/#sign-in-error={}", url_encode(message)), &[])
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("x_omnisql_sign_in=bad; omnisql_sign_in=a.b.c.d; other=1"));
        assert_eq!(read_cookie(&headers, FLOW_COOKIE), Some("a.b.c.d"));
        assert_eq!(read_cookie(&headers, TOKEN_COOKIE), None);
    }

    #[test]
    fn messages_are_percent_encoded_whole() {
        assert_eq!(url_encode("a b&c=`d`é"), "a%20b%26c%3D%60d%60%C3%A9");
    }
}
