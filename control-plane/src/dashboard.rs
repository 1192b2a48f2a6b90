//! The admin dashboard: three static files compiled into the binary and served at `/`. The page is a
//! client of the public `/v1` API only — it signs in with an API key (or a sign-in JWT) and everything it
//! shows or changes goes through the same endpoints, roles and audit as the CLI and Terraform. No
//! build step and nothing from a CDN (ADR 0012); the strict Content-Security-Policy allows no inline
//! script and no other origin, so a value shown on a page can never run as code.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                      form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new binary's dashboard shows at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/`, `/dashboard/app.js` and `/dashboard/app.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        // Everything the page needs comes from this origin: no CDN, no inline script for the CSP to refuse.
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!INDEX.contains("<script>") && INDEX.contains(r#"<script type="module" src="/dashboard/app.js">"#));
        assert!(!SCRIPT.contains("innerHTML"), "text is set with textContent only");
        assert!(!SCRIPT.contains("localStorage"), "the key lives for the tab's session only");
    }
}
