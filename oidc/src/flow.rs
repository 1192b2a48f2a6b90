//! Browser sign-in through the issuer: the authorization-code flow with PKCE (RFC 7636, `S256`) and a
//! nonce, as a public client whose `client_id` is the trust's audience (an ID token's `aud` is the client
//! it was issued to). The caller keeps `state`, the PKCE verifier and the nonce for the one browser that
//! started the flow, sends the browser to [`authorization_url`], and redeems the code the issuer sends back
//! with [`Verifier::redeem`], which returns the ID token only once it verifies like any other sign-in token.

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{OidcError, SignedIn, Trust, Verifier};

/// Where an issuer takes browsers and codes, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
}

/// What the browser's flow must remember between leaving for the issuer and coming back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow<'a> {
    /// Sent to the issuer and back: the callback's `state` must equal it (a code from someone else's flow
    /// is refused).
    pub state: &'a str,
    /// The PKCE verifier; the issuer only sees its challenge, and hands out tokens only to whoever has it.
    pub verifier: &'a str,
    /// Sent to the issuer, which puts it in the ID token: a token from another flow is refused.
    pub nonce: &'a str,
    /// This control plane's callback, registered with the issuer for the client.
    pub redirect_uri: &'a str,
}

/// The PKCE `S256` challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The issuer's authorization URL that starts `flow` for `trust`'s client.
pub fn authorization_url(endpoints: &Endpoints, trust: &Trust, flow: &Flow<'_>) -> Result<String, OidcError> {
    let mut url = reqwest::Url::parse(&endpoints.authorization)
        .map_err(|e| OidcError::Malformed(format!("authorization endpoint `{}`: {e}", endpoints.authorization)))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &trust.audience)
        .append_pair("redirect_uri", flow.redirect_uri)
        .append_pair("scope", "openid profile email")
        .append_pair("state", flow.state)
        .append_pair("nonce", flow.nonce)
        .append_pair("code_challenge", &pkce_challenge(flow.verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

impl Verifier {
    /// The issuer's authorization and token endpoints (each must pass the same URL check as the issuer).
    pub async fn endpoints(&self, issuer: &str) -> Result<Endpoints, OidcError> {
        self.check_url(issuer)?;
        let failed = |message: String| OidcError::Flow(format!("{issuer}: {message}"));
        let document = self.discovery(issuer).await.map_err(failed)?;
        let endpoint = |name: &str| {
            let url = document.get(name).and_then(Value::as_str).ok_or_else(|| {
                failed(format!("the discovery document has no {name}: the issuer does not offer browser sign-in"))
            })?;
            self.check_url(url)?;
            Ok::<_, OidcError>(url.to_string())
        };
        Ok(Endpoints { authorization: endpoint("authorization_endpoint")?, token: endpoint("token_endpoint")? })
    }

    /// Redeems the issuer's `code` for `flow` and returns its ID token and who it signs in, once the token
    /// verifies against `trust` and carries the flow's nonce.
    pub async fn redeem(
        &self,
        trust: &Trust,
        endpoints: &Endpoints,
        code: &str,
        flow: &Flow<'_>,
    ) -> Result<(String, SignedIn), OidcError> {
        self.check_url(&endpoints.token)?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", flow.redirect_uri),
            ("client_id", &trust.audience),
            ("code_verifier", flow.verifier),
        ];
        let url = &endpoints.token;
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Flow(format!("cannot reach the token endpoint {url}: {e}")))?;
        let status = response.status();
        let body = read_json(response, url).await.map_err(OidcError::Flow)?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
            let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(OidcError::Flow(format!("the token endpoint refused the code ({status}): {error} {description}")));
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OidcError::Flow("the token endpoint answered without an id_token (is `openid` scope allowed?)".into())
            })?
            .to_string();
        let claims = self.verify(&id_token, trust).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(flow.nonce) {
            return Err(OidcError::Flow("the ID token's nonce is not the one this sign-in sent".into()));
        }
        let signed_in = trust.signed_in(&claims)?;
        Ok((id_token, signed_in))
    }
}

/// A JSON answer of at most [`crate::MAX_DOCUMENT_BYTES`].
pub(crate) async fn read_json(mut response: reqwest::Response, url: &str) -> Result<Value, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() > crate::MAX_DOCUMENT_BYTES {
            return Err(format!("{url} answered more than {} bytes", crate::MAX_DOCUMENT_BYTES));
        }
    }
    serde_json::from_slice::<Value>(&body).map_err(|e| format!("{url} is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        assert_eq!(pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn the_authorization_url_carries_the_flow_and_keeps_the_endpoints_own_query() {
        let endpoints =
            Endpoints { authorization: "https://idp.example/auth?tenant=a".into(), token: "https://idp.example/token".into() };
        let flow = Flow { state: "s1", verifier: "v", nonce: "n&1", redirect_uri: "https://cp.example/v1/sign-in/callback" };
        let url =
            reqwest::Url::parse(&authorization_url(&endpoints, &Trust::new("https://idp.example", "omnisql"), &flow).unwrap())
                .unwrap();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["tenant"], "a");
        assert_eq!(query["client_id"], "omnisql");
        assert_eq!(query["nonce"], "n&1");
        assert_eq!(query["redirect_uri"], "https://cp.example/v1/sign-in/callback");
        assert_eq!(query["code_challenge"], pkce_challenge("v"));
        assert_eq!(query["code_challenge_method"], "S256");
        assert!(!url.as_str().contains("verifier"), "the verifier never leaves: {url}");
    }
}
