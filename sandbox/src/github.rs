//! GitHub REST, as its documentation and `sandbox/specs/` describe it: bearer or `token` auth, `User-Agent` required,
//! API version header, page/per_page with a `link` header, hourly core and per-minute search quotas with
//! `x-ratelimit-*` headers, and `etag`/`If-None-Match` → 304 that costs no quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::SandboxConfig;
use crate::harness::{self, App, Harness};
use crate::world::{GithubUser, Issue, ORG, Repo, World};

const VERSIONS: &[&str] = &["2022-11-28", "2026-03-10"];
const RETIRED_VERSIONS: &[&str] = &["2021-07-01"];
const DOCS: &str = "https://docs.github.com/rest";

/// (token or "anonymous", resource).
type QuotaKey = (String, &'static str);
/// (window start in epoch seconds, requests used in it).
type Window = (u64, u64);

#[derive(Debug)]
pub struct GithubState {
    world: Arc<World>,
    base: String,
    token: String,
    per_hour: u64,
    search_per_minute: u64,
    usage: Mutex<HashMap<QuotaKey, Window>>,
    /// Open issues per repository, counted once.
    open_issues: Vec<usize>,
    /// Issue indices per repository in creation order (the default sort, so sorting is a no-op).
    by_repo: Vec<Vec<usize>>,
    points_per_minute: u64,
    graphql_points_per_minute: u64,
    max_concurrent: usize,
    /// (caller, endpoint) → (minute window start, points used): the secondary limit.
    points: Mutex<HashMap<(String, String), Window>>,
    in_flight: std::sync::atomic::AtomicUsize,
    pub harness: Arc<Harness>,
}

impl GithubState {
    pub fn new(world: Arc<World>, config: &SandboxConfig, base: String) -> Arc<Self> {
        let open_issues = (0..world.repos.len()).map(|r| world.issues.iter().filter(|i| i.repo == r && i.open).count()).collect();
        let by_repo = (0..world.repos.len())
            .map(|r| {
                let mut ids: Vec<usize> = (0..world.issues.len()).filter(|&i| world.issues[i].repo == r).collect();
                ids.sort_by_key(|&i| (world.issues[i].created, world.issues[i].number));
                ids
            })
            .collect();
        Arc::new(GithubState {
            world,
            base,
            token: config.credentials.github_token.clone(),
            per_hour: config.quotas.github_per_hour,
            search_per_minute: config.quotas.github_search_per_minute,
            usage: Mutex::new(HashMap::new()),
            open_issues,
            by_repo,
            points_per_minute: config.quotas.github_points_per_minute,
            graphql_points_per_minute: config.quotas.github_graphql_points_per_minute,
            max_concurrent: config.quotas.github_max_concurrent,
            points: Mutex::new(HashMap::new()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            harness: Harness::new(App::Github, config.github, config.seed),
        })
    }
}

impl GithubState {
    pub(crate) fn world(&self) -> &World {
        &self.world
    }
}

pub fn router(state: Arc<GithubState>) -> Router {
    let app = Router::new()
        .route("/rate_limit", get(rate_limit))
        .route("/orgs/{org}/repos", get(org_repos))
        .route("/orgs/{org}/issues", get(org_issues))
        .route("/users/{username}/repos", get(user_repos))
        .route("/repos/{owner}/{repo}", get(repo))
        .route("/repos/{owner}/{repo}/issues", get(issues))
        .route("/repos/{owner}/{repo}/pulls", get(pulls))
        .route("/repos/{owner}/{repo}/commits", get(commits))
        .route("/users", get(users))
        .route("/users/{username}", get(user))
        .route("/search/issues", get(search_issues))
        .route("/graphql", post(crate::github_graphql::graphql))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    harness::wrap(app, state.harness.clone())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"message": message, "documentation_url": DOCS}))).into_response()
}

/// Who is calling, as the guard decided.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub authenticated: bool,
    /// The caller's budget for this request's resource before the request.
    pub quota: Quota,
}

/// A rate-limit window: its size, what was used before this request, and when it resets (epoch s).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub limit: u64,
    pub used: u64,
    pub reset: u64,
}

/// Auth, version, quota and conditional requests, around every endpoint.
async fn guard(State(s): State<Arc<GithubState>>, mut req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    if headers.get("user-agent").is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }
    if let Some(v) = headers.get("x-github-api-version").and_then(|v| v.to_str().ok()) {
        if RETIRED_VERSIONS.contains(&v) {
            return error(StatusCode::GONE, &format!("API version '{v}' has been retired."));
        }
        if !VERSIONS.contains(&v) {
            return error(StatusCode::BAD_REQUEST, &format!("API version '{v}' is not supported."));
        }
    }
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).map(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .or_else(|| v.strip_prefix("token "))
            .unwrap_or(v)
            .trim()
            .to_string()
    });
    let (key, limit) = match &token {
        Some(t) if *t == s.token => (t.clone(), s.per_hour),
        Some(_) => return error(StatusCode::UNAUTHORIZED, "Bad credentials"),
        None => ("anonymous".to_string(), 60),
    };
    let path = req.uri().path().to_string();
    let graphql = path == "/graphql";
    if graphql && token.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "message": "This endpoint requires you to be authenticated.",
                "documentation_url": "https://docs.github.com/graphql/guides/forming-calls-with-graphql#authenticating-with-graphql",
            })),
        )
            .into_response();
    }
    let (resource, limit, window) = if path.starts_with("/search/") {
        ("search", if token.is_some() { s.search_per_minute } else { 10 }, 60)
    } else if graphql {
        ("graphql", limit, 3600)
    } else {
        ("core", limit, 3600)
    };
    let free = path == "/rate_limit";
    let t = now();
    let (start, used) = {
        let mut usage = s.usage.lock().unwrap_or_else(|e| e.into_inner());
        let entry = usage.entry((key.clone(), resource)).or_insert((t, 0));
        if t >= entry.0 + window {
            *entry = (t, 0);
        }
        *entry
    };
    let reset = start + window;
    let rate_headers = |resp: &mut Response, used: u64| {
        let h = resp.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", limit),
            ("x-ratelimit-remaining", limit.saturating_sub(used)),
            ("x-ratelimit-used", used),
            ("x-ratelimit-reset", reset),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
                h.insert(name, v);
            }
        }
        h.insert("x-ratelimit-resource", HeaderValue::from_static(resource));
    };
    if !free && used >= limit && graphql {
        let body = json!({"errors": [{"type": "RATE_LIMITED", "message": "API rate limit already exceeded for user ID 1."}]});
        let mut resp = (StatusCode::FORBIDDEN, Json(body)).into_response();
        rate_headers(&mut resp, used);
        return resp;
    }
    if !free && used >= limit {
        let mut resp = error(
            StatusCode::FORBIDDEN,
            &format!(
                "API rate limit exceeded for {key_kind}.",
                key_kind = if token.is_some() { "user ID 1" } else { "127.0.0.1" }
            ),
        );
        rate_headers(&mut resp, used);
        return resp;
    }
    if !free {
        let endpoint =
            req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or(path.clone());
        let cap = if graphql { s.graphql_points_per_minute } else { s.points_per_minute };
        if let Some(wait) = secondary_limit(&s, &key, endpoint, cap, t) {
            let mut resp = error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
            rate_headers(&mut resp, used);
            return resp;
        }
    }
    req.extensions_mut().insert(Caller { authenticated: token.is_some(), quota: Quota { limit, used, reset } });
    let in_flight = InFlight::enter(&s.in_flight);
    let resp = next.run(req).await;
    drop(in_flight);
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    };
    // GraphQL answers are POSTs: no validators, no conditional requests.
    let mut resp = if parts.status == StatusCode::OK && !graphql {
        let etag = format!("W/\"{:016x}\"", fnv1a(&bytes));
        let matches = headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag || v == etag.trim_start_matches("W/"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            parts.headers.insert("etag", v);
        }
        if matches {
            // A 304 does not count against the quota.
            let mut resp = Response::from_parts(parts, axum::body::Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            rate_headers(&mut resp, used);
            return resp;
        }
        Response::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        Response::from_parts(parts, axum::body::Body::from(bytes))
    };
    // A REST request costs one; a GraphQL query what the handler charged (nothing if it did not run).
    let cost = if graphql { resp.extensions().get::<crate::github_graphql::Cost>().map_or(0, |c| c.0) } else { 1 };
    let used = if free {
        used
    } else {
        let mut usage = s.usage.lock().unwrap_or_else(|e| e.into_inner());
        let entry = usage.entry((key, resource)).or_insert((t, 0));
        entry.1 += cost;
        entry.1
    };
    rate_headers(&mut resp, used);
    resp
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Seconds to wait when a secondary limit is hit: too many requests in flight, or too many points on
/// one endpoint this minute.
fn secondary_limit(s: &GithubState, key: &str, endpoint: String, cap: u64, t: u64) -> Option<u64> {
    if s.in_flight.load(std::sync::atomic::Ordering::SeqCst) >= s.max_concurrent {
        return Some(1);
    }
    let mut points = s.points.lock().unwrap_or_else(|e| e.into_inner());
    let window = points.entry((key.to_string(), endpoint)).or_insert((t, 0));
    if t >= window.0 + 60 {
        *window = (t, 0);
    }
    if window.1 >= cap {
        return Some((window.0 + 60).saturating_sub(t).max(1));
    }
    window.1 += 1;
    None
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Serves one page of `items` with GitHub's `link` header; only that page is rendered to JSON.
fn page<T>(s: &GithubState, path: &str, q: &HashMap<String, String>, items: Vec<T>, render: impl Fn(T) -> Value) -> Response {
    let per_page = q.get("per_page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(30).clamp(1, 100);
    let page = q.get("page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let chunk: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).map(render).collect();
    let mut resp = Json(chunk).into_response();
    if last > 1 {
        let mut params: Vec<(String, String)> =
            q.iter().filter(|(k, _)| k.as_str() != "page").map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort();
        let link = |p: usize, rel: &str| {
            let mut all = params.clone();
            all.push(("page".into(), p.to_string()));
            let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(all).finish();
            format!("<{}{}?{}>; rel=\"{}\"", s.base, path, query, rel)
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(link(page - 1, "prev"));
        }
        if page < last {
            links.push(link(page + 1, "next"));
            links.push(link(last, "last"));
        }
        if page > 1 {
            links.push(link(1, "first"));
        }
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

fn simple_user(s: &GithubState, u: &GithubUser) -> Value {
    let api = format!("{}/users/{}", s.base, u.login);
    json!({
        "login": u.login, "id": u.id, "node_id": format!("U_{:08}", u.id),
        "avatar_url": format!("https://avatars.example/u/{}", u.id), "gravatar_id": "",
        "url": api, "html_url": format!("https://github.example/{}", u.login),
        "followers_url": format!("{api}/followers"), "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"), "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"), "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"), "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"), "type": "User", "site_admin": false,
    })
}

fn public_user(s: &GithubState, u: &GithubUser) -> Value {
    let mut v = simple_user(s, u);
    let extra = json!({
        "name": u.name, "company": u.company, "blog": "", "location": null, "email": u.email,
        "hireable": null, "bio": null, "twitter_username": null, "public_repos": if u.employee { 4 } else { 1 },
        "public_gists": 0, "followers": u.id % 97, "following": u.id % 13,
        "created_at": ts(u.created), "updated_at": ts(u.created),
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    v
}

fn org_owner(s: &GithubState) -> Value {
    let mut v = simple_user(
        s,
        &GithubUser {
            id: 1,
            login: ORG.into(),
            name: "Acme".into(),
            email: None,
            company: None,
            created: Utc::now(),
            employee: false,
        },
    );
    v["type"] = json!("Organization");
    v
}

fn repo_json(s: &GithubState, r: &Repo) -> Value {
    let full = r.full_name();
    let api = format!("{}/repos/{full}", s.base);
    let html = format!("https://github.example/{full}");
    let open = s.open_issues.get((r.id - 5000) as usize).copied().unwrap_or(0);
    let mut v = json!({
        "id": r.id, "node_id": format!("R_{:08}", r.id), "name": r.name, "full_name": full,
        "owner": org_owner(s), "private": r.private, "html_url": html, "description": r.description,
        "fork": false, "url": api, "homepage": null, "language": r.language,
        "forks_count": 3, "stargazers_count": 42, "watchers_count": 42, "size": 1024,
        "default_branch": "main", "open_issues_count": open, "is_template": false, "topics": [],
        "has_issues": true, "has_projects": true, "has_wiki": false, "has_pages": false, "has_downloads": true,
        "archived": false, "disabled": false, "visibility": if r.private { "private" } else { "public" },
        "pushed_at": ts(r.created), "created_at": ts(r.created), "updated_at": ts(r.created),
        "forks": 3, "open_issues": open, "watchers": 42, "license": null, "mirror_url": null,
        "git_url": format!("git://github.example/{full}.git"), "ssh_url": format!("git@github.example:{full}.git"),
        "clone_url": format!("{html}.git"), "svn_url": html,
    });
    for (field, suffix) in [
        ("archive_url", "/{archive_format}{/ref}"),
        ("assignees_url", "/assignees{/user}"),
        ("blobs_url", "/git/blobs{/sha}"),
        ("branches_url", "/branches{/branch}"),
        ("collaborators_url", "/collaborators{/collaborator}"),
        ("comments_url", "/comments{/number}"),
        ("commits_url", "/commits{/sha}"),
        ("compare_url", "/compare/{base}...{head}"),
        ("contents_url", "/contents/{+path}"),
        ("contributors_url", "/contributors"),
        ("deployments_url", "/deployments"),
        ("downloads_url", "/downloads"),
        ("events_url", "/events"),
        ("forks_url", "/forks"),
        ("git_commits_url", "/git/commits{/sha}"),
        ("git_refs_url", "/git/refs{/sha}"),
        ("git_tags_url", "/git/tags{/sha}"),
        ("hooks_url", "/hooks"),
        ("issue_comment_url", "/issues/comments{/number}"),
        ("issue_events_url", "/issues/events{/number}"),
        ("issues_url", "/issues{/number}"),
        ("keys_url", "/keys{/key_id}"),
        ("labels_url", "/labels{/name}"),
        ("languages_url", "/languages"),
        ("merges_url", "/merges"),
        ("milestones_url", "/milestones{/number}"),
        ("notifications_url", "/notifications{?since,all,participating}"),
        ("pulls_url", "/pulls{/number}"),
        ("releases_url", "/releases{/id}"),
        ("stargazers_url", "/stargazers"),
        ("statuses_url", "/statuses/{sha}"),
        ("subscribers_url", "/subscribers"),
        ("subscription_url", "/subscription"),
        ("tags_url", "/tags"),
        ("teams_url", "/teams"),
        ("trees_url", "/git/trees{/sha}"),
    ] {
        v[field] = json!(format!("{api}{suffix}"));
    }
    v
}

fn label_json(s: &GithubState, repo: &Repo, name: &str) -> Value {
    json!({
        "id": fnv1a(name.as_bytes()) as i64 & 0x7fff_ffff, "node_id": format!("LA_{name}"),
        "url": format!("{}/repos/{}/labels/{name}", s.base, repo.full_name()),
        "name": name, "description": format!("Label {name}"), "color": "d73a4a", "default": name == "bug",
    })
}

fn issue_json(s: &GithubState, i: &Issue) -> Value {
    let w = &s.world;
    let repo = &w.repos[i.repo];
    let full = repo.full_name();
    let api = format!("{}/repos/{full}/issues/{}", s.base, i.number);
    let html = format!("https://github.example/{full}/issues/{}", i.number);
    let author = &w.github_users[i.author];
    let mut v = json!({
        "id": i.id, "node_id": format!("I_{:08}", i.id), "url": api,
        "repository_url": format!("{}/repos/{full}", s.base), "labels_url": format!("{api}/labels{{/name}}"),
        "comments_url": format!("{api}/comments"), "events_url": format!("{api}/events"), "html_url": html,
        "number": i.number, "state": if i.open { "open" } else { "closed" },
        "state_reason": if i.open { Value::Null } else { json!("completed") },
        "title": i.title, "body": i.body, "user": simple_user(s, author),
        "labels": i.labels.iter().map(|l| label_json(s, repo, l)).collect::<Vec<_>>(),
        "assignee": i.assignee.map(|a| simple_user(s, &w.github_users[a])),
        "assignees": i.assignee.map(|a| vec![simple_user(s, &w.github_users[a])]).unwrap_or_default(),
        "milestone": null, "locked": false, "active_lock_reason": null, "comments": i.comments,
        "closed_at": i.closed.map(ts), "created_at": ts(i.created), "updated_at": ts(i.updated),
        "author_association": if author.employee { "MEMBER" } else { "NONE" },
    });
    if i.is_pull {
        let pr = format!("{}/repos/{full}/pulls/{}", s.base, i.number);
        v["pull_request"] = json!({
            "url": pr, "html_url": format!("https://github.example/{full}/pull/{}", i.number),
            "diff_url": format!("https://github.example/{full}/pull/{}.diff", i.number),
            "patch_url": format!("https://github.example/{full}/pull/{}.patch", i.number),
            "merged_at": if i.merged { i.closed.map(ts) } else { None },
        });
    }
    v
}

fn pull_json(s: &GithubState, i: &Issue) -> Value {
    let w = &s.world;
    let repo = &w.repos[i.repo];
    let full = repo.full_name();
    let api = format!("{}/repos/{full}/pulls/{}", s.base, i.number);
    let html = format!("https://github.example/{full}/pull/{}", i.number);
    let issue_api = format!("{}/repos/{full}/issues/{}", s.base, i.number);
    let author = simple_user(s, &w.github_users[i.author]);
    let branch = |r#ref: String, sha: String| json!({"label": format!("{ORG}:{ref}"), "ref": r#ref, "repo": repo_json(s, repo), "sha": sha, "user": author.clone()});
    let link = |href: String| json!({"href": href});
    json!({
        "url": api, "id": i.id + 10_000_000, "node_id": format!("PR_{:08}", i.id), "html_url": html,
        "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"), "issue_url": issue_api,
        "commits_url": format!("{api}/commits"), "review_comments_url": format!("{api}/comments"),
        "review_comment_url": format!("{}/repos/{full}/pulls/comments{{/number}}", s.base),
        "comments_url": format!("{issue_api}/comments"),
        "statuses_url": format!("{}/repos/{full}/statuses/{:040x}", s.base, i.id),
        "number": i.number, "state": if i.open { "open" } else { "closed" }, "locked": false, "title": i.title,
        "user": author, "body": i.body,
        "labels": i.labels.iter().map(|l| label_json(s, repo, l)).collect::<Vec<_>>(),
        "milestone": null, "active_lock_reason": null,
        "created_at": ts(i.created), "updated_at": ts(i.updated), "closed_at": i.closed.map(ts),
        "merged_at": if i.merged { i.closed.map(ts) } else { None },
        "merge_commit_sha": if i.merged { Some(format!("{:040x}", i.id)) } else { None },
        "assignee": i.assignee.map(|a| simple_user(s, &w.github_users[a])),
        "assignees": i.assignee.map(|a| vec![simple_user(s, &w.github_users[a])]).unwrap_or_default(),
        "requested_reviewers": [], "requested_teams": [],
        "head": branch(format!("fix-{}", i.number), format!("{:040x}", i.id * 7)),
        "base": branch("main".into(), format!("{:040x}", i.id * 3)),
        "_links": {
            "self": link(api.clone()), "html": link(html.clone()), "issue": link(issue_api.clone()),
            "comments": link(format!("{issue_api}/comments")), "review_comments": link(format!("{api}/comments")),
            "review_comment": link(format!("{}/repos/{full}/pulls/comments{{/number}}", s.base)),
            "commits": link(format!("{api}/commits")),
            "statuses": link(format!("{}/repos/{full}/statuses/{:040x}", s.base, i.id)),
        },
        "author_association": "MEMBER", "auto_merge": null, "draft": false,
    })
}

fn find_repo<'a>(s: &'a GithubState, owner: &str, name: &str, caller: &Caller) -> Option<&'a Repo> {
    if !owner.eq_ignore_ascii_case(ORG) {
        return None;
    }
    // Private repositories answer 404, not 403, to callers who may not see them.
    s.world.repos.iter().find(|r| r.name.eq_ignore_ascii_case(name) && (caller.authenticated || !r.private))
}

type Q = Query<HashMap<String, String>>;

async fn rate_limit(State(s): State<Arc<GithubState>>) -> Response {
    let t = now();
    let resources = json!({
        "core": {"limit": s.per_hour, "remaining": s.per_hour, "reset": t + 3600, "used": 0, "resource": "core"},
        "search": {"limit": s.search_per_minute, "remaining": s.search_per_minute, "reset": t + 60, "used": 0, "resource": "search"},
        "graphql": {"limit": s.per_hour, "remaining": s.per_hour, "reset": t + 3600, "used": 0, "resource": "graphql"},
    });
    Json(json!({"resources": resources, "rate": resources["core"]})).into_response()
}

fn sorted_repos(s: &GithubState, caller: &Caller, q: &HashMap<String, String>) -> Vec<Value> {
    let kind = q.get("type").map(String::as_str).unwrap_or("all");
    let mut repos: Vec<&Repo> = s
        .world
        .repos
        .iter()
        .filter(|r| caller.authenticated || !r.private)
        .filter(|r| match kind {
            "public" => !r.private,
            "private" => r.private,
            "forks" => false,
            _ => true,
        })
        .collect();
    match q.get("sort").map(String::as_str).unwrap_or("created") {
        "full_name" => repos.sort_by_key(|r| r.full_name()),
        _ => repos.sort_by_key(|r| std::cmp::Reverse(r.created)),
    }
    if q.get("direction").map(String::as_str)
        == Some(if q.get("sort").map(String::as_str) == Some("full_name") { "desc" } else { "asc" })
    {
        repos.reverse();
    }
    repos.into_iter().map(|r| repo_json(s, r)).collect()
}

async fn org_repos(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(org): Path<String>,
    Query(q): Q,
) -> Response {
    if !org.eq_ignore_ascii_case(ORG) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let items = sorted_repos(&s, &c, &q);
    page(&s, &format!("/orgs/{org}/repos"), &q, items, |v| v)
}

async fn user_repos(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(user): Path<String>,
    Query(q): Q,
) -> Response {
    if s.world.github_user_by_login(&user).is_none() && !user.eq_ignore_ascii_case(ORG) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    // Users own no repositories in this world; the organisation's are listed under its name.
    let items = if user.eq_ignore_ascii_case(ORG) { sorted_repos(&s, &c, &q) } else { Vec::new() };
    page(&s, &format!("/users/{user}/repos"), &q, items, |v| v)
}

async fn repo(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    match find_repo(&s, &owner, &name, &c) {
        Some(r) => Json(repo_json(&s, r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn parse_time(v: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&Utc))
}

fn sort_issues(items: &mut [&Issue], q: &HashMap<String, String>) {
    match q.get("sort").map(String::as_str).unwrap_or("created") {
        "updated" => items.sort_by_key(|i| (i.updated, i.number)),
        "comments" => items.sort_by_key(|i| (i.comments, i.number)),
        _ => items.sort_by_key(|i| (i.created, i.number)),
    }
    if q.get("direction").map(String::as_str) != Some("asc") {
        items.reverse();
    }
}

fn state_matches(i: &Issue, q: &HashMap<String, String>) -> Result<bool, Response> {
    match q.get("state").map(String::as_str).unwrap_or("open") {
        "open" => Ok(i.open),
        "closed" => Ok(!i.open),
        "all" => Ok(true),
        other => Err(validation_failed("state", other)),
    }
}

fn validation_failed(field: &str, value: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({
            "message": "Validation Failed",
            "errors": [{"resource": "Issue", "field": field, "code": "invalid", "value": value}],
            "documentation_url": DOCS,
        })),
    )
        .into_response()
}

async fn issues(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let Some(repo) = find_repo(&s, &owner, &name, &c) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let repo_idx = (repo.id - 5000) as usize;
    let candidates = s.by_repo[repo_idx].iter().map(|&i| &s.world.issues[i]);
    match filtered_issues(&s, &q, candidates, true) {
        Ok(out) => page(&s, &format!("/repos/{owner}/{name}/issues"), &q, out, |i| issue_json(&s, i)),
        Err(resp) => resp,
    }
}

/// `GET /orgs/{org}/issues`: issues and pull requests of every repository of the organisation the caller
/// can see, each with its `repository`. `filter=all` and `filter=repos` list them all; the default
/// (`assigned`) and `created`, `mentioned`, `subscribed` are relative to the token's user, who in this
/// world authors, is assigned and follows nothing, so they list none. The repository endpoint's
/// `assignee`, `creator` and `mentioned` are not parameters here and are ignored, as GitHub does.
async fn org_issues(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path(org): Path<String>,
    Query(q): Q,
) -> Response {
    if !c.authenticated {
        return error(StatusCode::UNAUTHORIZED, "Requires authentication");
    }
    if !org.eq_ignore_ascii_case(ORG) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let everything = match q.get("filter").map(String::as_str).unwrap_or("assigned") {
        "all" | "repos" => true,
        "assigned" | "created" | "mentioned" | "subscribed" => false,
        other => return validation_failed("filter", other),
    };
    let w = &s.world;
    // An authenticated caller sees every repository of the organisation (see `find_repo`).
    let repos = if everything { 0..w.repos.len() } else { 0..0 };
    let candidates = repos.flat_map(|r| s.by_repo[r].iter().map(|&i| &w.issues[i]));
    // Each repository rendered once, not once per issue.
    let rendered: Vec<Value> = w.repos.iter().map(|r| repo_json(&s, r)).collect();
    match filtered_issues(&s, &q, candidates, false) {
        Ok(out) => page(&s, &format!("/orgs/{org}/issues"), &q, out, |i| {
            let mut v = issue_json(&s, i);
            v["repository"] = rendered[i.repo].clone();
            v
        }),
        Err(resp) => resp,
    }
}

/// The `candidates` a list request keeps, in the order it asks for: `state`, `labels` and `since`, and
/// on a repository's list (`per_repo`) also `assignee`, `creator` and `mentioned`.
fn filtered_issues<'w>(
    s: &'w GithubState,
    q: &HashMap<String, String>,
    candidates: impl Iterator<Item = &'w Issue>,
    per_repo: bool,
) -> Result<Vec<&'w Issue>, Response> {
    let w = &s.world;
    let labels: Vec<&str> =
        q.get("labels").map(|l| l.split(',').map(str::trim).filter(|l| !l.is_empty()).collect()).unwrap_or_default();
    let since = match q.get("since") {
        Some(v) => match parse_time(v) {
            Some(t) => Some(t),
            None => return Err(validation_failed("since", v)),
        },
        None => None,
    };
    let param = |k: &str| if per_repo { q.get(k).map(String::as_str) } else { None };
    let login_of = |u: usize| w.github_users[u].login.as_str();
    let mut out = Vec::new();
    for i in candidates {
        if !state_matches(i, q)? {
            continue;
        }
        if !labels.iter().all(|l| i.labels.iter().any(|x| x.eq_ignore_ascii_case(l))) {
            continue;
        }
        let assigned_to = |a: &str| i.assignee.is_some_and(|x| login_of(x).eq_ignore_ascii_case(a));
        let assignee_ok = match param("assignee") {
            None => true,
            Some("*") => i.assignee.is_some(),
            Some("none") => i.assignee.is_none(),
            Some(a) => assigned_to(a),
        };
        if !assignee_ok {
            continue;
        }
        if param("creator").is_some_and(|creator| !login_of(i.author).eq_ignore_ascii_case(creator)) {
            continue;
        }
        if param("mentioned").is_some_and(|m| !assigned_to(m)) {
            continue;
        }
        if since.is_some_and(|since| i.updated < since) {
            continue;
        }
        out.push(i);
    }
    sort_issues(&mut out, q);
    Ok(out)
}

async fn pulls(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let Some(repo) = find_repo(&s, &owner, &name, &c) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let repo_idx = (repo.id - 5000) as usize;
    let mut out = Vec::new();
    for i in s.by_repo[repo_idx].iter().map(|&i| &s.world.issues[i]).filter(|i| i.is_pull) {
        match state_matches(i, &q) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(resp) => return resp,
        }
        if let Some(head) = q.get("head") {
            if head.rsplit(':').next() != Some(format!("fix-{}", i.number).as_str()) {
                continue;
            }
        }
        if let Some(base) = q.get("base") {
            if base != "main" {
                continue;
            }
        }
        out.push(i);
    }
    match q.get("sort").map(String::as_str).unwrap_or("created") {
        "updated" => out.sort_by_key(|i| (i.updated, i.number)),
        _ => out.sort_by_key(|i| (i.created, i.number)),
    }
    if q.get("direction").map(String::as_str) != Some("asc") {
        out.reverse();
    }
    page(&s, &format!("/repos/{owner}/{name}/pulls"), &q, out, |i| pull_json(&s, i))
}

async fn commits(
    State(s): State<Arc<GithubState>>,
    axum::Extension(c): axum::Extension<Caller>,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let Some(repo) = find_repo(&s, &owner, &name, &c) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let w = &s.world;
    let repo_idx = (repo.id - 5000) as usize;
    let since = q.get("since").and_then(|v| parse_time(v));
    let until = q.get("until").and_then(|v| parse_time(v));
    let mut items = Vec::new();
    for cm in w.commits.iter().filter(|cm| cm.repo == repo_idx) {
        let e = &w.employees[cm.author];
        if let Some(a) = q.get("author").or(q.get("committer")) {
            if !(e.github_login.eq_ignore_ascii_case(a) || e.email.eq_ignore_ascii_case(a)) {
                continue;
            }
        }
        if since.is_some_and(|t| cm.date < t) || until.is_some_and(|t| cm.date > t) {
            continue;
        }
        items.push(cm);
    }
    let render = |cm: &crate::world::Commit| {
        let e = &w.employees[cm.author];
        let api = format!("{}/repos/{}/commits/{}", s.base, repo.full_name(), cm.sha);
        let user = simple_user(&s, &w.github_users[w.employee_github_user(cm.author)]);
        let git_user = json!({"name": e.name(), "email": e.email, "date": ts(cm.date)});
        json!({
            "url": api, "sha": cm.sha, "node_id": format!("C_{}", &cm.sha[..12]),
            "html_url": format!("https://github.example/{}/commit/{}", repo.full_name(), cm.sha),
            "comments_url": format!("{api}/comments"),
            "commit": {
                "url": format!("{}/repos/{}/git/commits/{}", s.base, repo.full_name(), cm.sha),
                "author": git_user, "committer": git_user, "message": cm.message, "comment_count": 0,
                "tree": {"sha": format!("{:040x}", fnv1a(cm.sha.as_bytes())), "url": format!("{}/repos/{}/git/trees/{}", s.base, repo.full_name(), cm.sha)},
            },
            "author": user, "committer": user, "parents": [],
        })
    };
    page(&s, &format!("/repos/{owner}/{name}/commits"), &q, items, render)
}

async fn users(State(s): State<Arc<GithubState>>, Query(q): Q) -> Response {
    let since = q.get("since").and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let per_page = q.get("per_page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(30).clamp(1, 100);
    let mut list: Vec<&GithubUser> = s.world.github_users.iter().filter(|u| u.id > since).collect();
    list.sort_by_key(|u| u.id);
    let chunk: Vec<&GithubUser> = list.iter().take(per_page).copied().collect();
    let mut resp = Json(chunk.iter().map(|u| simple_user(&s, u)).collect::<Vec<_>>()).into_response();
    // `GET /users` pages only by `since`: the link points past the last id of this page.
    if list.len() > per_page {
        if let Some(last) = chunk.last() {
            let link = format!("<{}/users?per_page={per_page}&since={}>; rel=\"next\"", s.base, last.id);
            if let Ok(v) = HeaderValue::from_str(&link) {
                resp.headers_mut().insert("link", v);
            }
        }
    }
    resp
}

async fn user(State(s): State<Arc<GithubState>>, Path(login): Path<String>) -> Response {
    match s.world.github_user_by_login(&login) {
        Some(u) => Json(public_user(&s, u)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// `GET /search/issues`: the qualifiers `repo:`, `org:`, `is:issue|pr`, `state:`, `label:`, `author:`,
/// `assignee:` and free words matched against titles. At most 1,000 results are reachable.
async fn search_issues(State(s): State<Arc<GithubState>>, axum::Extension(c): axum::Extension<Caller>, Query(q): Q) -> Response {
    let Some(query) = q.get("q") else {
        return validation_failed("q", "");
    };
    let w = &s.world;
    let mut words = Vec::new();
    let mut matches: Vec<&Issue> = w.issues.iter().filter(|i| c.authenticated || !w.repos[i.repo].private).collect();
    for term in query.split_whitespace() {
        let (k, v) = term.split_once(':').unwrap_or(("", term));
        let v = v.trim_matches('"');
        matches.retain(|i| match k {
            "repo" => w.repos[i.repo].full_name().eq_ignore_ascii_case(v),
            "org" => v.eq_ignore_ascii_case(ORG),
            "is" => match v {
                "issue" => !i.is_pull,
                "pr" => i.is_pull,
                "open" => i.open,
                "closed" => !i.open,
                _ => true,
            },
            "state" => (v == "open") == i.open,
            "label" => i.labels.iter().any(|l| l.eq_ignore_ascii_case(v)),
            "author" => w.github_users[i.author].login.eq_ignore_ascii_case(v),
            "assignee" => i.assignee.is_some_and(|a| w.github_users[a].login.eq_ignore_ascii_case(v)),
            _ => true,
        });
        if k.is_empty() {
            words.push(v.to_lowercase());
        }
    }
    matches.retain(|i| words.iter().all(|word| i.title.to_lowercase().contains(word)));
    sort_issues(&mut matches, &q);
    let total = matches.len();
    let per_page = q.get("per_page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(30).clamp(1, 100);
    let page_no = q.get("page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).max(1);
    if (page_no - 1) * per_page >= 1000 && total > 0 {
        return validation_failed("page", "Only the first 1000 search results are available");
    }
    let reachable: Vec<&Issue> = matches.into_iter().take(1000).collect();
    let resp = page(&s, "/search/issues", &q, reachable, |i| {
        let mut v = issue_json(&s, i);
        v["score"] = json!(1.0);
        v
    });
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
    };
    let items: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Array(vec![]));
    let body = json!({"total_count": total, "incomplete_results": false, "items": items});
    let mut resp = Json(body).into_response();
    let mut headers = HeaderMap::new();
    if let Some(link) = parts.headers.get("link") {
        headers.insert("link", link.clone());
    }
    resp.headers_mut().extend(headers);
    resp
}
