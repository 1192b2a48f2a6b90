//! Stripe's API (as `sandbox/specs/stripe-openapi-v3.json` describes it): secret keys as bearer tokens,
//! lists newest first with `limit` (1–100), `starting_after` / `has_more`, the filters `email`,
//! `customer`, `status` and `created` (a number or `created[gt|gte|lt|lte]`), and test mode's 25 reads
//! per second answered with 429 and Stripe's `rate_limit` error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::SandboxConfig;
use crate::harness::{self, App, Harness, Window};
use crate::world::World;

#[derive(Debug)]
pub struct StripeState {
    world: Arc<World>,
    key: String,
    reads: Window,
    pub harness: Arc<Harness>,
}

impl StripeState {
    pub fn new(world: Arc<World>, config: &SandboxConfig) -> Arc<Self> {
        Arc::new(StripeState {
            world,
            key: config.credentials.stripe_key.clone(),
            reads: Window::new(config.quotas.stripe_per_second, Duration::from_secs(1)),
            harness: Harness::new(App::Stripe, config.stripe, config.seed),
        })
    }
}

pub fn router(state: Arc<StripeState>) -> Router {
    let app = Router::new()
        .route("/v1/customers", get(customers))
        .route("/v1/invoices", get(invoices))
        .fallback(|req: Request| async move {
            error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                &format!("Unrecognized request URL (GET: {}).", req.uri().path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    harness::wrap(app, state.harness.clone())
}

/// Stripe's error object.
fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut e = json!({"type": kind, "message": message});
    if let Some(code) = code {
        e["code"] = json!(code);
    }
    (status, Json(json!({"error": e}))).into_response()
}

pub fn rate_limited() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "invalid_request_error",
        Some("rate_limit"),
        "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
    )
}

async fn guard(State(s): State<Arc<StripeState>>, req: Request, next: Next) -> Response {
    match harness::bearer(&req) {
        Some(k) if k == s.key => {}
        Some(k) => {
            let shown: String = k.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                &format!("Invalid API Key provided: sk_test_********{shown}"),
            );
            resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"Stripe\""));
            return resp;
        }
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            );
        }
    }
    if s.reads.take().is_err() {
        return rate_limited();
    }
    next.run(req).await
}

type Q = Query<HashMap<String, String>>;

/// A 400 naming the parameter at fault.
fn invalid(param: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": {"type": "invalid_request_error", "message": message, "param": param}})))
        .into_response()
}

/// Whether `created` passes the `created` / `created[op]` parameters.
fn created_ok(q: &HashMap<String, String>, created: i64) -> Result<bool, Response> {
    let mut ok = true;
    for (name, value) in q.iter().filter(|(k, _)| k.starts_with("created")) {
        let bound = value.parse::<i64>().map_err(|_| invalid(name, &format!("Invalid integer: {value}")))?;
        ok &= match name.as_str() {
            "created" => created == bound,
            "created[gt]" => created > bound,
            "created[gte]" => created >= bound,
            "created[lt]" => created < bound,
            "created[lte]" => created <= bound,
            other => return Err(invalid(other, &format!("Received unknown parameter: {other}"))),
        };
    }
    Ok(ok)
}

/// A list answer: `limit` rows after `starting_after` (an id of the list), newest first.
fn list(url: &str, rows: Vec<(String, Value)>, q: &HashMap<String, String>, what: &str) -> Response {
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return invalid("limit", "This value must be greater than or equal to 1 and less than or equal to 100."),
    };
    let start = match q.get("starting_after") {
        None => 0,
        Some(id) => match rows.iter().position(|(r, _)| r == id) {
            Some(i) => i + 1,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such {what}: '{id}'"),
                );
            }
        },
    };
    let data: Vec<Value> = rows.iter().skip(start).take(limit).map(|(_, v)| v.clone()).collect();
    let has_more = start + data.len() < rows.len();
    Json(json!({"object": "list", "data": data, "has_more": has_more, "url": url})).into_response()
}

async fn customers(State(s): State<Arc<StripeState>>, Query(q): Q) -> Response {
    let w = &s.world;
    let mut order: Vec<usize> = (0..w.stripe_customers.len()).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(w.stripe_customers[c].created), c));
    let mut rows = Vec::new();
    for c in order {
        let cu = &w.stripe_customers[c];
        match created_ok(&q, cu.created.timestamp()) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(resp) => return resp,
        }
        if q.get("email").is_some_and(|e| e != &cu.email) {
            continue;
        }
        let metadata = match cu.account {
            Some(a) => json!({"salesforce_account_id": w.accounts[a].id}),
            None => json!({}),
        };
        rows.push((
            cu.id.clone(),
            json!({
                "id": cu.id, "object": "customer", "address": null, "balance": 0, "created": cu.created.timestamp(),
                "currency": "usd", "default_source": null, "delinquent": cu.delinquent, "description": null,
                "email": cu.email, "invoice_prefix": cu.id[4..12].to_uppercase(), "livemode": false, "metadata": metadata,
                "name": cu.name, "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
                "test_clock": null,
                "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
            }),
        ));
    }
    list("/v1/customers", rows, &q, "customer")
}

async fn invoices(State(s): State<Arc<StripeState>>, Query(q): Q) -> Response {
    let w = &s.world;
    if let Some(status) = q.get("status")
        && !["draft", "open", "paid", "uncollectible", "void"].contains(&status.as_str())
    {
        return invalid("status", "Invalid status: must be one of draft, open, paid, uncollectible, or void");
    }
    let mut order: Vec<usize> = (0..w.stripe_invoices.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(w.stripe_invoices[i].created), i));
    let mut rows = Vec::new();
    for i in order {
        let inv = &w.stripe_invoices[i];
        let cu = &w.stripe_customers[inv.customer];
        match created_ok(&q, inv.created.timestamp()) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(resp) => return resp,
        }
        if q.get("customer").is_some_and(|c| c != &cu.id) || q.get("status").is_some_and(|st| st != inv.status) {
            continue;
        }
        let created = inv.created.timestamp();
        let finalized = inv.status != "draft";
        rows.push((
            inv.id.clone(),
            json!({
                "id": inv.id, "object": "invoice", "account_country": "US", "account_name": "Acme",
                "amount_due": inv.amount_due, "amount_overpaid": 0, "amount_paid": inv.amount_paid,
                "amount_paid_off_stripe": 0, "amount_remaining": inv.amount_due - inv.amount_paid, "amount_shipping": 0,
                "attempt_count": if finalized { 1 } else { 0 }, "attempted": finalized, "auto_advance": inv.status == "open",
                "automatic_tax": {"enabled": false, "liability": null, "status": null},
                "billing_reason": "subscription_cycle", "collection_method": "send_invoice", "created": created,
                "currency": "usd", "customer": cu.id, "customer_email": cu.email, "customer_name": cu.name,
                "default_tax_rates": [], "description": null, "discounts": [], "due_date": inv.due.timestamp(),
                "issuer": {"type": "self"}, "livemode": false, "metadata": {}, "number": inv.number,
                "lines": {"object": "list", "data": [], "has_more": false, "url": format!("/v1/invoices/{}/lines", inv.id)},
                "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
                "period_end": created, "period_start": created - 30 * 86_400,
                "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "starting_balance": 0,
                "status": inv.status,
                "status_transitions": {
                    "finalized_at": finalized.then_some(created),
                    "marked_uncollectible_at": (inv.status == "uncollectible").then_some(inv.due.timestamp()),
                    "paid_at": (inv.status == "paid").then_some(created + 86_400),
                    "voided_at": (inv.status == "void").then_some(created + 86_400),
                },
                "subtotal": inv.amount_due, "total": inv.amount_due,
            }),
        ));
    }
    list("/v1/invoices", rows, &q, "invoice")
}
