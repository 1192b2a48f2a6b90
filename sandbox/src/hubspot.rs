//! HubSpot's CRM API v3 objects (as `sandbox/specs/hubspot-crm-*-v3.json` describe them): private-app
//! tokens, `limit` (at most 100) and the `paging.next.after` cursor, `properties` (only those asked for,
//! plus the defaults, and every value a string), `associations=companies` on contacts, and the
//! ten-secondly rolling limit reported in `X-HubSpot-RateLimit-*` headers and answered with 429.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::SandboxConfig;
use crate::harness::{self, App, Harness, Window};
use crate::world::World;

const WINDOW_MS: u64 = 10_000;

#[derive(Debug)]
pub struct HubspotState {
    world: Arc<World>,
    token: String,
    base: String,
    window: Window,
    pub harness: Arc<Harness>,
}

impl HubspotState {
    pub fn new(world: Arc<World>, config: &SandboxConfig, base: &str) -> Arc<Self> {
        Arc::new(HubspotState {
            world,
            token: config.credentials.hubspot_token.clone(),
            base: base.to_string(),
            window: Window::new(config.quotas.hubspot_per_ten_seconds, Duration::from_millis(WINDOW_MS)),
            harness: Harness::new(App::Hubspot, config.hubspot, config.seed),
        })
    }
}

pub fn router(state: Arc<HubspotState>) -> Router {
    let app = Router::new()
        .route("/crm/v3/objects/companies", get(companies))
        .route("/crm/v3/objects/contacts", get(contacts))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "Resource not found") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    harness::wrap(app, state.harness.clone())
}

/// HubSpot's error object.
fn error(status: StatusCode, category: &str, message: &str) -> Response {
    let body = json!({
        "status": "error", "message": message, "correlationId": "0b2a6f7e-5d1c-4c3e-9f00-5a0d0b0e0c01", "category": category,
    });
    (status, Json(body)).into_response()
}

/// The ten-secondly rolling limit's answer.
pub fn rate_limited() -> Response {
    let body = json!({
        "status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT",
        "correlationId": "0b2a6f7e-5d1c-4c3e-9f00-5a0d0b0e0c02", "policyName": "TEN_SECONDLY_ROLLING", "category": "RATE_LIMITS",
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    resp.headers_mut().insert("x-hubspot-ratelimit-interval-milliseconds", HeaderValue::from(WINDOW_MS));
    resp
}

async fn guard(State(s): State<Arc<HubspotState>>, req: Request, next: Next) -> Response {
    if harness::bearer(&req) != Some(s.token.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        );
    }
    let limit = s.window.limit();
    let (mut resp, remaining) = match s.window.take() {
        Ok(remaining) => (next.run(req).await, remaining),
        Err(_) => (rate_limited(), 0),
    };
    let h = resp.headers_mut();
    h.insert("x-hubspot-ratelimit-max", HeaderValue::from(limit));
    h.insert("x-hubspot-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-hubspot-ratelimit-interval-milliseconds", HeaderValue::from(WINDOW_MS));
    resp
}

type Q = Query<HashMap<String, String>>;

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One object as the list answers it: the asked-for properties plus the defaults that have a value, all
/// strings.
fn object(
    id: &str,
    created: &str,
    properties: &[(&str, Option<String>)],
    asked: &[&str],
    defaults: &[&str],
) -> Map<String, Value> {
    let mut props = Map::new();
    for (name, value) in properties {
        if let Some(value) = value.clone().filter(|_| asked.contains(name) || defaults.contains(name)) {
            props.insert(name.to_string(), Value::String(value));
        }
    }
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("properties".into(), Value::Object(props));
    o.insert("createdAt".into(), json!(created));
    o.insert("updatedAt".into(), json!(created));
    o.insert("archived".into(), json!(false));
    o
}

/// A page of `rows` after the `after` cursor; `path` builds the next link.
fn page(s: &HubspotState, path: &str, rows: Vec<Value>, q: &HashMap<String, String>) -> Response {
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "limit must be between 1 and 100"),
    };
    let start = match q.get("after").map(|a| a.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "Invalid input JSON: after is not a valid cursor");
        }
    };
    let results: Vec<Value> = rows.iter().skip(start).take(limit).cloned().collect();
    let mut body = json!({"results": results});
    let next = start + limit;
    if next < rows.len() {
        body["paging"] = json!({"next": {"after": next.to_string(), "link": format!("{}{path}?after={next}", s.base)}});
    }
    Json(body).into_response()
}

fn asked(q: &HashMap<String, String>) -> Vec<&str> {
    q.get("properties").map(|p| p.split(',').map(str::trim).collect()).unwrap_or_default()
}

async fn companies(State(s): State<Arc<HubspotState>>, Query(q): Q) -> Response {
    let asked = asked(&q);
    let defaults = ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"];
    let rows = s
        .world
        .hubspot_companies
        .iter()
        .map(|c| {
            let created = time(c.created);
            let props = [
                ("name", Some(c.name.clone())),
                ("domain", Some(c.domain.clone())),
                ("industry", Some(c.industry.to_uppercase())),
                ("city", Some(c.city.to_string())),
                ("country", Some(c.country.to_string())),
                ("numberofemployees", c.employees.map(|n| n.to_string())),
                ("lifecyclestage", Some(c.lifecycle.to_string())),
                ("createdate", Some(created.clone())),
                ("hs_lastmodifieddate", Some(created.clone())),
                ("hs_object_id", Some(c.id.clone())),
            ];
            Value::Object(object(&c.id, &created, &props, &asked, &defaults))
        })
        .collect();
    page(&s, "/crm/v3/objects/companies", rows, &q)
}

async fn contacts(State(s): State<Arc<HubspotState>>, Query(q): Q) -> Response {
    let asked = asked(&q);
    let defaults = ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"];
    let with_companies = q.get("associations").is_some_and(|a| a.split(',').any(|a| a.trim() == "companies"));
    let w = &s.world;
    let rows = w
        .hubspot_contacts
        .iter()
        .map(|c| {
            let created = time(c.created);
            let company = &w.hubspot_companies[c.company];
            let props = [
                ("email", Some(c.email.clone())),
                ("firstname", Some(c.first.clone())),
                ("lastname", Some(c.last.clone())),
                ("jobtitle", Some(c.job_title.to_string())),
                ("company", Some(company.name.clone())),
                ("lifecyclestage", Some(c.lifecycle.to_string())),
                ("createdate", Some(created.clone())),
                ("lastmodifieddate", Some(created.clone())),
                ("hs_object_id", Some(c.id.clone())),
            ];
            let mut o = object(&c.id, &created, &props, &asked, &defaults);
            if with_companies {
                o.insert(
                    "associations".into(),
                    json!({"companies": {"results": [{"id": company.id, "type": "contact_to_company"}]}}),
                );
            }
            Value::Object(o)
        })
        .collect();
    page(&s, "/crm/v3/objects/contacts", rows, &q)
}
