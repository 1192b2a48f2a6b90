//! The Slack Web API: bearer tokens with failures as HTTP 200 `ok:false`, cursor pagination through
//! `response_metadata.next_cursor`, `oldest`/`latest`/`inclusive` on history, and per-method tier limits
//! answered with 429 and `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::SandboxConfig;
use crate::harness::{self, App, Harness};
use crate::world::World;

const TEAM: &str = "T0SANDBOX1";

#[derive(Debug)]
pub struct SlackState {
    world: Arc<World>,
    token: String,
    multiplier: f64,
    /// method → (window start, calls in this minute).
    calls: Mutex<HashMap<&'static str, (Instant, u64)>>,
    pub harness: Arc<Harness>,
}

impl SlackState {
    pub fn new(world: Arc<World>, config: &SandboxConfig) -> Arc<Self> {
        Arc::new(SlackState {
            world,
            token: config.credentials.slack_token.clone(),
            multiplier: config.quotas.slack_tier_multiplier,
            calls: Mutex::new(HashMap::new()),
            harness: Harness::new(App::Slack, config.slack, config.seed),
        })
    }
}

/// Requests per minute of each method's tier.
fn tier(method: &str) -> (&'static str, u64) {
    match method {
        "conversations.history" => ("conversations.history", 50),
        "conversations.list" => ("conversations.list", 20),
        "users.list" => ("users.list", 20),
        _ => ("other", 100),
    }
}

pub fn router(state: Arc<SlackState>) -> Router {
    let app = Router::new()
        .route("/api/conversations.list", get(conversations_list).post(conversations_list))
        .route("/api/conversations.history", get(conversations_history).post(conversations_history))
        .route("/api/users.list", get(users_list).post(users_list))
        .route("/api/auth.test", get(auth_test).post(auth_test))
        .fallback(|| async { Json(json!({"ok": false, "error": "unknown_method"})) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    harness::wrap(app, state.harness.clone())
}

fn fail(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

async fn guard(State(s): State<Arc<SlackState>>, req: Request, next: Next) -> Response {
    let header_token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let query_token = req
        .uri()
        .query()
        .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.to_string()));
    match header_token.or(query_token) {
        None => return fail("not_authed"),
        Some(t) if t == s.token => {}
        Some(t) if t.starts_with("xoxb-revoked") => return fail("token_revoked"),
        Some(_) => return fail("invalid_auth"),
    }
    let method = req.uri().path().trim_start_matches("/api/").to_string();
    let (key, per_minute) = tier(&method);
    let allowed = ((per_minute as f64) * s.multiplier).max(1.0) as u64;
    let retry_after = {
        let mut calls = s.calls.lock().unwrap_or_else(|e| e.into_inner());
        let entry = calls.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed().as_secs() >= 60 {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= allowed {
            Some(60u64.saturating_sub(entry.0.elapsed().as_secs()).max(1))
        } else {
            entry.1 += 1;
            None
        }
    };
    if let Some(secs) = retry_after {
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"ok": false, "error": "ratelimited"}))).into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
        return resp;
    }
    next.run(req).await
}

type Q = Query<HashMap<String, String>>;

/// Slices `items` at the opaque cursor; returns the page and the next cursor ("" at the end).
fn cursor_page<T: Clone>(items: &[T], q: &HashMap<String, String>, max: usize) -> Result<(Vec<T>, String), Response> {
    let limit = q.get("limit").and_then(|v| v.parse::<usize>().ok()).unwrap_or(100).clamp(1, max);
    let start = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c.strip_prefix("dXNlcjp").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n <= items.len() => n,
            _ => return Err(fail("invalid_cursor")),
        },
    };
    let end = (start + limit).min(items.len());
    let next = if end < items.len() { format!("dXNlcjp{end}") } else { String::new() };
    Ok((items[start..end].to_vec(), next))
}

async fn auth_test(State(_s): State<Arc<SlackState>>) -> Response {
    Json(json!({"ok": true, "url": "https://acme.slack.example/", "team": "Acme", "user": "omnisql", "team_id": TEAM, "user_id": "U0SANDBOXBOT"})).into_response()
}

async fn conversations_list(State(s): State<Arc<SlackState>>, Query(q): Q) -> Response {
    let w = &s.world;
    let types = q.get("types").cloned().unwrap_or_else(|| "public_channel".into());
    if !types.split(',').any(|t| t.trim() == "public_channel") {
        return Json(json!({"ok": true, "channels": [], "response_metadata": {"next_cursor": ""}})).into_response();
    }
    let exclude_archived = q.get("exclude_archived").is_some_and(|v| v == "true" || v == "1");
    let channels: Vec<Value> = w
        .channels
        .iter()
        .filter(|c| !(exclude_archived && c.archived))
        .map(|c| {
            let creator = &w.employees[c.creator].slack_id;
            json!({
                "id": c.id, "name": c.name, "name_normalized": c.name, "created": c.created.timestamp(),
                "creator": creator, "is_archived": c.archived, "is_channel": true, "is_general": c.name == "general",
                "is_mpim": false, "is_group": false, "is_org_shared": false, "is_im": false, "is_shared": false,
                "is_private": false, "is_member": true, "num_members": w.employees.len(),
                "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": c.purpose, "creator": creator, "last_set": c.created.timestamp()},
            })
        })
        .collect();
    match cursor_page(&channels, &q, 1000) {
        Ok((page, next)) => {
            Json(json!({"ok": true, "channels": page, "response_metadata": {"next_cursor": next}})).into_response()
        }
        Err(resp) => resp,
    }
}

fn ts_value(ts: &str) -> Option<f64> {
    ts.parse::<f64>().ok()
}

async fn conversations_history(State(s): State<Arc<SlackState>>, Query(q): Q) -> Response {
    let w = &s.world;
    let Some(channel) = q.get("channel") else {
        return fail("channel_not_found");
    };
    let Some(ci) = w.channels.iter().position(|c| &c.id == channel) else {
        return fail("channel_not_found");
    };
    let inclusive = q.get("inclusive").is_some_and(|v| v == "true" || v == "1");
    let parse_bound = |name: &str| match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => ts_value(v).map(Some).ok_or(()),
    };
    let (Ok(oldest), Ok(latest)) = (parse_bound("oldest"), parse_bound("latest")) else {
        return fail("invalid_ts_oldest");
    };
    // Newest first, as Slack returns history.
    let mut msgs: Vec<Value> = w
        .messages
        .iter()
        .filter(|m| m.channel == ci)
        .filter(|m| {
            let t = ts_value(&m.ts).unwrap_or(0.0);
            let above = oldest.is_none_or(|o| if inclusive { t >= o } else { t > o });
            let below = latest.is_none_or(|l| if inclusive { t <= l } else { t < l });
            above && below
        })
        .map(|m| {
            let mut v =
                json!({"type": "message", "user": w.employees[m.user].slack_id, "text": m.text, "ts": m.ts, "team": TEAM});
            if let Some(t) = &m.thread_ts {
                v["thread_ts"] = json!(t);
            }
            v
        })
        .collect();
    msgs.reverse();
    match cursor_page(&msgs, &q, 999) {
        Ok((page, next)) => {
            let mut body = json!({
                "ok": true, "messages": page, "has_more": !next.is_empty(), "pin_count": 0,
                "channel_actions_ts": null, "channel_actions_count": 0,
            });
            if !next.is_empty() {
                body["response_metadata"] = json!({"next_cursor": next});
            }
            Json(body).into_response()
        }
        Err(resp) => resp,
    }
}

async fn users_list(State(s): State<Arc<SlackState>>, Query(q): Q) -> Response {
    let w = &s.world;
    let mut members: Vec<Value> = w
        .employees
        .iter()
        .map(|e| {
            let name = e.name();
            json!({
                "id": e.slack_id, "team_id": TEAM, "name": e.first.to_lowercase(), "deleted": false, "color": "9f69e7",
                "real_name": name, "tz": "Europe/Berlin", "tz_label": "Central European Time", "tz_offset": 3600,
                "is_admin": false, "is_owner": false, "is_primary_owner": false, "is_restricted": false,
                "is_ultra_restricted": false, "is_bot": false, "is_app_user": false, "updated": 1_700_000_000,
                "profile": {
                    "real_name": name, "display_name": e.first, "avatar_hash": "g1a2b3c4d5e6",
                    "real_name_normalized": name, "display_name_normalized": e.first, "title": e.title,
                    "phone": "", "skype": "", "status_text": "", "status_emoji": "", "fields": null,
                    "email": e.email, "team": TEAM,
                },
            })
        })
        .collect();
    // A bot user with no email, as every workspace has.
    members.push(json!({
        "id": "U0SANDBOXBOT", "team_id": TEAM, "name": "omnisql", "deleted": false, "real_name": "OmniSQL",
        "is_bot": true, "is_app_user": false, "updated": 1_700_000_000,
        "profile": {
            "real_name": "OmniSQL", "display_name": "omnisql", "avatar_hash": "b0b0b0b0b0b0", "real_name_normalized": "OmniSQL",
            "display_name_normalized": "omnisql", "title": "", "phone": "", "skype": "", "status_text": "",
            "status_emoji": "", "fields": null, "email": null, "team": TEAM,
        },
    }));
    match cursor_page(&members, &q, 1000) {
        Ok((page, next)) => Json(json!({
            "ok": true, "members": page, "cache_ts": 1_700_000_000, "response_metadata": {"next_cursor": next},
        }))
        .into_response(),
        Err(resp) => resp,
    }
}
