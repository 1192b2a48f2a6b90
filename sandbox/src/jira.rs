//! Jira Cloud's REST API v3 (as `sandbox/specs/jira-platform-openapi-v3.json` describes it): OAuth bearer
//! tokens (401 with an error collection otherwise), `startAt` / `maxResults` pages, JQL on
//! `/rest/api/3/search` (a clause per field joined with `AND`; an unknown field or a malformed query is
//! a 400 naming it), and a per-token budget answered with 429, `Retry-After` and `X-RateLimit-*`.

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
use crate::world::{JiraIssue, World};

#[derive(Debug)]
pub struct JiraState {
    world: Arc<World>,
    token: String,
    base: String,
    budget: Window,
    pub harness: Arc<Harness>,
}

impl JiraState {
    pub fn new(world: Arc<World>, config: &SandboxConfig, base: &str) -> Arc<Self> {
        Arc::new(JiraState {
            world,
            token: config.credentials.jira_token.clone(),
            base: base.to_string(),
            budget: Window::new(config.quotas.jira_per_minute, Duration::from_secs(60)),
            harness: Harness::new(App::Jira, config.jira, config.seed),
        })
    }
}

pub fn router(state: Arc<JiraState>) -> Router {
    let app = Router::new()
        .route("/rest/api/3/project/search", get(projects))
        .route("/rest/api/3/search", get(search))
        .route("/rest/api/3/users/search", get(users))
        .fallback(|| async { errors(StatusCode::NOT_FOUND, "Not Found") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    harness::wrap(app, state.harness.clone())
}

/// Jira's error collection.
fn errors(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"errorMessages": [message], "errors": {}}))).into_response()
}

/// The answer once the token's budget is spent.
pub fn rate_limited() -> Response {
    errors(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.")
}

async fn guard(State(s): State<Arc<JiraState>>, req: Request, next: Next) -> Response {
    if harness::bearer(&req) != Some(s.token.as_str()) {
        let mut resp = errors(StatusCode::UNAUTHORIZED, "Client must be authenticated to access this resource.");
        resp.headers_mut().insert("www-authenticate", HeaderValue::from_static("OAuth realm=\"https%3A%2F%2Fjira\""));
        return resp;
    }
    let limit = s.budget.limit();
    let (remaining, wait) = match s.budget.take() {
        Ok(remaining) => (remaining, None),
        Err(wait) => (0, Some(wait)),
    };
    let mut resp = match wait {
        Some(_) => rate_limited(),
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    for (name, value) in [("x-ratelimit-limit", limit), ("x-ratelimit-remaining", remaining)] {
        h.insert(name, HeaderValue::from(value));
    }
    if let Some(wait) = wait {
        h.insert("retry-after", HeaderValue::from(wait.as_secs().max(1)));
        let reset = chrono::Utc::now() + wait;
        if let Ok(v) = HeaderValue::from_str(&reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            h.insert("x-ratelimit-reset", v);
        }
    }
    resp
}

type Q = Query<HashMap<String, String>>;

/// `startAt` and `maxResults` (at most `max`), or the 400 Jira gives for them.
fn window(q: &HashMap<String, String>, default: usize, max: usize) -> Result<(usize, usize), Response> {
    let number = |name: &str, default: usize| match q.get(name) {
        None => Ok(default),
        Some(v) => {
            v.parse::<usize>().map_err(|_| errors(StatusCode::BAD_REQUEST, &format!("The {name} parameter must be a number.")))
        }
    };
    Ok((number("startAt", 0)?, number("maxResults", default)?.min(max)))
}

fn avatars(base: &str, id: &str) -> Value {
    json!({
        "48x48": format!("{base}/secure/useravatar?size=large&ownerId={id}"),
        "24x24": format!("{base}/secure/useravatar?size=small&ownerId={id}"),
        "16x16": format!("{base}/secure/useravatar?size=xsmall&ownerId={id}"),
        "32x32": format!("{base}/secure/useravatar?size=medium&ownerId={id}"),
    })
}

/// An employee's Atlassian account id.
pub fn account_id(employee: usize) -> String {
    format!("5b10a2844c20165700ede{:03}", employee + 1)
}

fn user(s: &JiraState, employee: usize) -> Value {
    let e = &s.world.employees[employee];
    let id = account_id(employee);
    json!({
        "self": format!("{}/rest/api/3/user?accountId={id}", s.base), "accountId": id, "accountType": "atlassian",
        "emailAddress": e.email, "avatarUrls": avatars(&s.base, &id), "displayName": e.name(), "active": true,
        "timeZone": "Europe/Berlin", "locale": "en_US",
    })
}

async fn users(State(s): State<Arc<JiraState>>, Query(q): Q) -> Response {
    let (start, max) = match window(&q, 50, 1000) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let all: Vec<Value> = (0..s.world.employees.len()).map(|e| user(&s, e)).collect();
    Json(all.into_iter().skip(start).take(max).collect::<Vec<_>>()).into_response()
}

async fn projects(State(s): State<Arc<JiraState>>, Query(q): Q) -> Response {
    let (start, max) = match window(&q, 50, 100) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let keys: Option<Vec<String>> = q.get("keys").map(|k| k.split(',').map(|k| k.trim().to_uppercase()).collect());
    let all: Vec<Value> = s
        .world
        .jira_projects
        .iter()
        .filter(|p| keys.as_ref().is_none_or(|k| k.contains(&p.key)))
        .map(|p| {
            let lead = user(&s, p.lead);
            json!({
                "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
                "self": format!("{}/rest/api/3/project/{}", s.base, p.id), "id": p.id.to_string(), "key": p.key,
                "name": p.name, "avatarUrls": avatars(&s.base, &p.key), "projectTypeKey": "software",
                "simplified": false, "style": "classic", "isPrivate": false, "properties": {}, "lead": lead,
            })
        })
        .collect();
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start).take(max).collect();
    let is_last = start + page.len() >= total;
    let mut body = json!({
        "self": format!("{}/rest/api/3/project/search?startAt={start}&maxResults={max}", s.base),
        "maxResults": max, "startAt": start, "total": total, "isLast": is_last, "values": page,
    });
    if !is_last {
        body["nextPage"] = json!(format!("{}/rest/api/3/project/search?startAt={}&maxResults={max}", s.base, start + max));
    }
    Json(body).into_response()
}

async fn search(State(s): State<Arc<JiraState>>, Query(q): Q) -> Response {
    let (start, max) = match window(&q, 50, 100) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let clauses = match parse_jql(q.get("jql").map_or("", String::as_str)) {
        Ok(c) => c,
        Err(message) => return errors(StatusCode::BAD_REQUEST, &message),
    };
    let w = &s.world;
    let mut matching: Vec<&JiraIssue> = Vec::new();
    for issue in &w.jira_issues {
        let mut all = true;
        for c in &clauses {
            match matches(&s, issue, c) {
                Ok(true) => {}
                Ok(false) => {
                    all = false;
                    break;
                }
                Err(message) => return errors(StatusCode::BAD_REQUEST, &message),
            }
        }
        if all {
            matching.push(issue);
        }
    }
    let total = matching.len();
    let issues: Vec<Value> = matching.into_iter().skip(start).take(max).map(|i| issue_json(&s, i)).collect();
    Json(json!({
        "expand": "schema,names", "startAt": start, "maxResults": max, "total": total, "issues": issues,
    }))
    .into_response()
}

fn issue_json(s: &JiraState, i: &JiraIssue) -> Value {
    let w = &s.world;
    let project = &w.jira_projects[i.project];
    let github = &w.issues[i.github_issue];
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string();
    let category = match i.status {
        "Done" => ("done", "Done", "green"),
        "In Progress" => ("indeterminate", "In Progress", "yellow"),
        _ => ("new", "To Do", "blue-gray"),
    };
    json!({
        "expand": "operations,versionedRepresentations,editmeta,changelog,renderedFields",
        "id": i.id.to_string(), "self": format!("{}/rest/api/3/issue/{}", s.base, i.id), "key": i.key,
        "fields": {
            "summary": i.summary,
            "issuetype": {"name": i.issue_type, "subtask": false},
            "status": {"name": i.status, "statusCategory": {"key": category.0, "name": category.1, "colorName": category.2}},
            "priority": {"name": i.priority},
            "project": {"id": project.id.to_string(), "key": project.key, "name": project.name},
            "reporter": user(s, i.reporter),
            "assignee": i.assignee.map(|a| user(s, a)),
            "labels": i.labels,
            "created": when(i.created),
            "updated": when(i.updated),
            "resolutiondate": (i.status == "Done").then(|| when(i.updated)),
            // The "GitHub issue" URL field and the "Customer domain" text field of the site.
            "customfield_10042": format!("https://github.example/{}/issues/{}", w.repos[github.repo].full_name(), github.number),
            "customfield_10043": i.account.map(|a| w.accounts[a].domain.clone()),
        },
    })
}

/// One JQL clause: `field op value(s)`.
#[derive(Debug, PartialEq)]
struct Clause {
    field: String,
    op: String,
    values: Vec<String>,
}

/// The clauses of a JQL query: `clause (AND clause)*`, an optional `ORDER BY` ignored. Values are quoted
/// strings (with `\"` and `\\` escapes) or bare words.
fn parse_jql(jql: &str) -> Result<Vec<Clause>, String> {
    let tokens = tokens(jql)?;
    let end = tokens.windows(2).position(|w| w[0].eq_ignore_ascii_case("order") && w[1].eq_ignore_ascii_case("by"));
    let tokens = &tokens[..end.unwrap_or(tokens.len())];
    let mut clauses = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let field = tokens[i].to_lowercase();
        let op = tokens.get(i + 1).ok_or_else(|| format!("Error in the JQL Query: Expecting an operator after '{field}'."))?;
        let op = op.to_lowercase();
        i += 2;
        let values = if op == "in" {
            if tokens.get(i).map(String::as_str) != Some("(") {
                return Err("Error in the JQL Query: Expecting '(' after 'in'.".into());
            }
            let mut values = Vec::new();
            i += 1;
            while let Some(t) = tokens.get(i) {
                i += 1;
                match t.as_str() {
                    ")" => break,
                    "," => {}
                    v => values.push(unquote(v)),
                }
            }
            values
        } else {
            let v = tokens.get(i).ok_or_else(|| format!("Error in the JQL Query: Expecting a value after '{op}'."))?;
            i += 1;
            vec![unquote(v)]
        };
        if !matches!(op.as_str(), "=" | "!=" | "in" | ">" | ">=" | "<" | "<=") {
            return Err(format!("Error in the JQL Query: The operator '{op}' is not supported."));
        }
        clauses.push(Clause { field, op, values });
        match tokens.get(i) {
            None => {}
            Some(t) if t.eq_ignore_ascii_case("and") => i += 1,
            Some(t) => return Err(format!("Error in the JQL Query: Expecting 'AND' but got '{t}'.")),
        }
    }
    Ok(clauses)
}

fn tokens(jql: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = jql.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                out.push(c.to_string());
                chars.next();
            }
            '"' => {
                chars.next();
                let mut s = String::from("\"");
                loop {
                    match chars.next() {
                        None => return Err("Error in the JQL Query: The quoted string has not been completed.".into()),
                        Some('\\') => s.push(chars.next().unwrap_or('\\')),
                        Some('"') => break,
                        Some(c) => s.push(c),
                    }
                }
                out.push(s);
            }
            '=' | '!' | '<' | '>' => {
                let mut op = String::new();
                while let Some(&c) = chars.peek().filter(|c| matches!(c, '=' | '!' | '<' | '>')) {
                    op.push(c);
                    chars.next();
                }
                out.push(op);
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) =
                    chars.peek().filter(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | ',' | '=' | '!' | '<' | '>' | '"'))
                {
                    word.push(c);
                    chars.next();
                }
                out.push(word);
            }
        }
    }
    Ok(out)
}

/// A token's value: quoted strings come with a leading `"` marker from [`tokens`].
fn unquote(t: &str) -> String {
    t.strip_prefix('"').unwrap_or(t).to_string()
}

fn matches(s: &JiraState, i: &JiraIssue, c: &Clause) -> Result<bool, String> {
    let w = &s.world;
    let project = &w.jira_projects[i.project];
    let texts: Vec<String> = match c.field.as_str() {
        "project" => vec![project.key.clone(), project.name.clone(), project.id.to_string()],
        "status" => vec![i.status.to_string()],
        "issuetype" | "type" => vec![i.issue_type.to_string()],
        "priority" => vec![i.priority.to_string()],
        "assignee" => i.assignee.map(account_id).into_iter().collect(),
        "reporter" => vec![account_id(i.reporter)],
        "labels" => i.labels.iter().map(|l| l.to_string()).collect(),
        "key" | "issuekey" => vec![i.key.clone()],
        "created" | "updated" => {
            let at = if c.field == "created" { i.created } else { i.updated };
            let bound = c.values.first().and_then(|v| jql_date(v)).ok_or_else(|| {
                format!("Date value '{}' for field '{}' is invalid.", c.values.first().map_or("", String::as_str), c.field)
            })?;
            return Ok(match c.op.as_str() {
                ">" => at > bound,
                ">=" => at >= bound,
                "<" => at < bound,
                "<=" => at <= bound,
                "=" => at == bound,
                _ => at != bound,
            });
        }
        other => return Err(format!("Field '{other}' does not exist or you do not have permission to view it.")),
    };
    let hit = texts.iter().any(|t| c.values.iter().any(|v| t.eq_ignore_ascii_case(v)));
    Ok(match c.op.as_str() {
        "=" | "in" => hit,
        "!=" => !hit,
        op => return Err(format!("The operator '{op}' is not supported by the '{}' field.", c.field)),
    })
}

/// JQL dates: `yyyy-MM-dd HH:mm` or `yyyy-MM-dd` (the site's time zone is UTC).
fn jql_date(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let v = v.replace('/', "-");
    chrono::NaiveDateTime::parse_from_str(&v, "%Y-%m-%d %H:%M")
        .ok()
        .or_else(|| chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jql_reads_clauses_lists_and_escaped_quotes() {
        let c =
            parse_jql(r#"project = "API" AND status IN ("To Do", "In Progress") AND labels = "a \"b\"" ORDER BY key"#).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1], Clause { field: "status".into(), op: "in".into(), values: vec!["To Do".into(), "In Progress".into()] });
        assert_eq!(c[2].values, ["a \"b\""]);
        assert!(parse_jql("project = API OR status = Done").unwrap_err().contains("Expecting 'AND'"));
        assert!(parse_jql(r#"project = "API"#).is_err());
        assert!(parse_jql("").unwrap().is_empty());
    }
}
