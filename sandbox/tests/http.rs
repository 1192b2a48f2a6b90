//! The sandbox behaves like the real APIs on the points connectors depend on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omnisql_sandbox::{Faults, Quotas, Sandbox, SandboxConfig, Settings};
use reqwest::{Client, StatusCode};
use serde_json::Value;

async fn start(config: SandboxConfig) -> (Sandbox, Client) {
    (Sandbox::start(config).await.unwrap(), Client::builder().user_agent("sandbox-test").build().unwrap())
}

fn gh_auth(sb: &Sandbox) -> String {
    format!("Bearer {}", sb.credentials.github_token)
}

#[tokio::test]
async fn github_rejects_bad_tokens_missing_user_agent_and_unknown_versions() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let url = format!("{}/repos/acme/api/issues", sb.github_url);
    let r = c.get(&url).header("authorization", "Bearer nope").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Bad credentials");
    let r = Client::new().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no User-Agent");
    let r = c.get(&url).header("authorization", gh_auth(&sb)).header("x-github-api-version", "1999-01-01").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c.get(&url).header("authorization", gh_auth(&sb)).header("x-github-api-version", "2021-07-01").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
}

#[tokio::test]
async fn github_private_repositories_answer_404_without_auth() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let url = format!("{}/repos/acme/cli/issues", sb.github_url);
    assert_eq!(c.get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn github_link_header_pages_cover_every_issue_exactly_once() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let mut url = Some(format!("{}/repos/acme/api/issues?state=all&per_page=7", sb.github_url));
    let mut numbers = Vec::new();
    let mut last_seen = None;
    while let Some(u) = url {
        let r = c.get(&u).header("authorization", gh_auth(&sb)).send().await.unwrap();
        let link = r.headers().get("link").map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = r.json().await.unwrap();
        numbers.extend(page.iter().map(|i| i["number"].as_i64().unwrap()));
        if last_seen.is_none() {
            last_seen = link.clone().filter(|l| l.contains("rel=\"last\""));
        }
        url = link.and_then(|l| {
            l.split(',')
                .find(|p| p.contains("rel=\"next\""))
                .map(|p| p.split(';').next().unwrap().trim().trim_matches(['<', '>']).to_string())
        });
    }
    let expected = sb.world.issues.iter().filter(|i| i.repo == 0).count();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), expected);
    assert!(last_seen.is_some(), "the first page links to the last");
    // Everything on one page: no link header at all.
    let r = c.get(format!("{}/orgs/acme/repos", sb.github_url)).header("authorization", gh_auth(&sb)).send().await.unwrap();
    assert!(r.headers().get("link").is_none());
}

#[tokio::test]
async fn github_organisation_issues_list_every_repository_with_filter_all_and_none_by_default() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let get = |query: &str| {
        let url = format!("{}/orgs/acme/issues?{query}", sb.github_url);
        c.get(url).header("authorization", gh_auth(&sb)).send()
    };
    let mut seen = Vec::new();
    for page in 1.. {
        let r = get(&format!("filter=all&state=open&per_page=100&page={page}")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let has_next = r.headers().get("link").is_some_and(|l| l.to_str().unwrap().contains("rel=\"next\""));
        let items: Vec<Value> = r.json().await.unwrap();
        for i in &items {
            assert_eq!(i["state"], "open");
            let repo = i["repository"]["full_name"].as_str().unwrap().to_string();
            assert!(i["url"].as_str().unwrap().contains(&format!("/repos/{repo}/issues/")), "{i}");
            seen.push((repo, i["number"].as_i64().unwrap()));
        }
        if !has_next {
            break;
        }
    }
    let w = &sb.world;
    let mut expected: Vec<(String, i64)> =
        w.issues.iter().filter(|i| i.open).map(|i| (w.repos[i.repo].full_name(), i.number)).collect();
    expected.sort();
    seen.sort();
    assert!(!expected.is_empty());
    assert_eq!(seen, expected, "every open issue and pull request of every repository, each once");
    // The default filter is the token user's assigned issues: none in this world.
    let r = get("state=all").await.unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 0);
    assert_eq!(get("filter=everything").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = c.get(format!("{}/orgs/acme/issues?filter=all", sb.github_url)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn github_quota_headers_count_down_and_exhaustion_answers_403_with_remaining_zero() {
    let (sb, c) = start(SandboxConfig { quotas: Quotas { github_per_hour: 3, ..Quotas::default() }, ..Default::default() }).await;
    let url = format!("{}/repos/acme/api", sb.github_url);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        remaining.push(r.headers()["x-ratelimit-remaining"].to_str().unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers()["x-ratelimit-reset"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("rate limit exceeded"));
}

#[tokio::test]
async fn github_conditional_requests_answer_304_and_cost_no_quota() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let url = format!("{}/repos/acme/api/issues", sb.github_url);
    let r = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let before: u64 = r.headers()["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap();
    let r = c.get(&url).header("authorization", gh_auth(&sb)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let after: u64 = r.headers()["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap();
    assert_eq!(before, after);
    assert!(r.bytes().await.unwrap().is_empty());
}

async fn sf_token(sb: &Sandbox, c: &Client) -> String {
    let cr = &sb.credentials;
    let r = c
        .post(format!("{}/services/oauth2/token", sb.salesforce_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &cr.salesforce_client_id),
            ("client_secret", &cr.salesforce_client_secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn salesforce_oauth_rejects_wrong_secrets_and_expired_sessions() {
    let (sb, c) = start(SandboxConfig { salesforce_token_ttl_secs: 0, ..Default::default() }).await;
    let r = c
        .post(format!("{}/services/oauth2/token", sb.salesforce_url))
        .form(&[("grant_type", "client_credentials"), ("client_id", "x"), ("client_secret", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let token = sf_token(&sb, &c).await;
    let r = c.get(format!("{}/services/data/v62.0/limits", sb.salesforce_url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()[0]["errorCode"], "INVALID_SESSION_ID");
}

#[tokio::test]
async fn salesforce_query_batches_follow_next_records_url_and_report_usage() {
    let (sb, c) = start(SandboxConfig { scale: 20, ..Default::default() }).await;
    let token = sf_token(&sb, &c).await;
    let mut url = format!("{}/services/data/v62.0/query?q=SELECT+Id,+Email+FROM+Contact", sb.salesforce_url);
    let mut ids = 0;
    let mut batches = 0;
    loop {
        let r = c.get(&url).bearer_auth(&token).header("sforce-query-options", "batchSize=200").send().await.unwrap();
        assert!(r.headers()["sforce-limit-info"].to_str().unwrap().starts_with("api-usage="));
        let body: Value = r.json().await.unwrap();
        ids += body["records"].as_array().unwrap().len();
        batches += 1;
        match body["nextRecordsUrl"].as_str() {
            Some(next) => url = format!("{}{next}", sb.salesforce_url),
            None => break,
        }
    }
    assert_eq!(ids, sb.world.contacts.len());
    assert_eq!(batches, sb.world.contacts.len().div_ceil(200));
}

#[tokio::test]
async fn salesforce_reports_malformed_queries_unknown_fields_and_exhausted_allocations() {
    let (sb, c) =
        start(SandboxConfig { quotas: Quotas { salesforce_per_day: 3, ..Quotas::default() }, ..Default::default() }).await;
    let token = sf_token(&sb, &c).await;
    let q = |soql: &str| format!("{}/services/data/v62.0/query?q={}", sb.salesforce_url, soql.replace(' ', "+"));
    let r = c.get(q("SELECT FROM Account")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()[0]["errorCode"], "MALFORMED_QUERY");
    let r = c.get(q("SELECT Nope FROM Account")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()[0]["errorCode"], "INVALID_FIELD");
    let r = c.get(q("SELECT Id FROM Account")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(q("SELECT Id FROM Account")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn slack_fails_with_ok_false_pages_by_cursor_and_limits_tiers_with_429() {
    let (sb, c) =
        start(SandboxConfig { quotas: Quotas { slack_tier_multiplier: 0.1, ..Quotas::default() }, ..Default::default() }).await;
    let r: Value =
        c.get(format!("{}/api/users.list", sb.slack_url)).bearer_auth("xoxb-wrong").send().await.unwrap().json().await.unwrap();
    assert_eq!((r["ok"].as_bool(), r["error"].as_str()), (Some(false), Some("invalid_auth")));
    let token = &sb.credentials.slack_token;
    let channel = &sb.world.channels[0].id;
    let mut cursor = String::new();
    let mut seen = 0;
    // conversations.history is Tier 3: 50/min, times 0.1 = 5 calls a minute.
    for _ in 0..5 {
        let r: Value = c
            .get(format!("{}/api/conversations.history?channel={channel}&limit=7&cursor={cursor}", sb.slack_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["ok"], true);
        seen += r["messages"].as_array().unwrap().len();
        cursor = r["response_metadata"]["next_cursor"].as_str().unwrap_or_default().to_string();
    }
    assert_eq!(seen, 35);
    let r =
        c.get(format!("{}/api/conversations.history?channel={channel}", sb.slack_url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "ratelimited");
}

#[tokio::test]
async fn stats_count_requests_per_endpoint_and_reset_zeroes_them() {
    let (sb, c) = start(SandboxConfig::default()).await;
    for _ in 0..3 {
        c.get(format!("{}/repos/acme/api/issues", sb.github_url)).header("authorization", gh_auth(&sb)).send().await.unwrap();
    }
    c.get(format!("{}/users/nobody", sb.github_url)).header("authorization", gh_auth(&sb)).send().await.unwrap();
    let stats: Value = c.get(format!("{}/_sandbox/stats", sb.github_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["total"], 4);
    assert_eq!(stats["endpoints"]["GET /repos/{owner}/{repo}/issues"], 3);
    assert_eq!(stats["endpoints"]["GET /users/{username}"], 1);
    let reset: Value = c.post(format!("{}/_sandbox/stats/reset", sb.github_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(reset["total"], 0);
}

#[tokio::test]
async fn faults_inject_server_errors_malformed_and_truncated_bodies() {
    let (sb, c) = start(SandboxConfig::default()).await;
    let set = |faults: Faults| {
        let c = c.clone();
        let url = format!("{}/_sandbox/settings", sb.github_url);
        async move { c.post(url).json(&Settings { faults, ..Default::default() }).send().await.unwrap() }
    };
    let url = format!("{}/repos/acme/api/issues", sb.github_url);
    set(Faults { server_error_rate: 1.0, ..Default::default() }).await;
    assert_eq!(c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap().status(), StatusCode::BAD_GATEWAY);
    set(Faults { rate_limit_rate: 1.0, retry_after_secs: 7, ..Default::default() }).await;
    let r = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap();
    assert_eq!((r.status(), r.headers()["retry-after"].to_str().unwrap()), (StatusCode::FORBIDDEN, "7"));
    set(Faults { malformed_rate: 1.0, ..Default::default() }).await;
    let body = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap().text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err());
    set(Faults { truncated_rate: 1.0, ..Default::default() }).await;
    let body = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap().text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err() && body.starts_with('['));
    set(Faults { slow_body_ms: 300, ..Default::default() }).await;
    let started = std::time::Instant::now();
    let body = c.get(&url).header("authorization", gh_auth(&sb)).send().await.unwrap().text().await.unwrap();
    assert!(started.elapsed().as_millis() >= 300 && serde_json::from_str::<Value>(&body).is_ok());
}

#[tokio::test]
async fn github_secondary_limit_caps_points_per_endpoint_per_minute_with_retry_after() {
    let quotas = Quotas { github_points_per_minute: 3, ..Quotas::default() };
    let (sb, c) = start(SandboxConfig { quotas, ..Default::default() }).await;
    let get = |path: &str| c.get(format!("{}{path}", sb.github_url)).header("authorization", gh_auth(&sb)).send();
    for _ in 0..3 {
        assert_eq!(get("/repos/acme/api/issues").await.unwrap().status(), StatusCode::OK);
    }
    // Another repository is the same endpoint template, so the same bucket.
    let r = get("/repos/acme/web/issues").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_ne!(r.headers()["x-ratelimit-remaining"], "0", "a secondary limit is not the hourly quota");
    assert!(r.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("secondary rate limit"));
    assert_eq!(get("/repos/acme/api").await.unwrap().status(), StatusCode::OK, "other endpoints have their own points");
}

/// GitHub GraphQL: many users in one query for one point, GraphQL's own errors and its own quota.
#[tokio::test]
async fn github_graphql_looks_up_many_users_for_one_point_with_graphql_errors_and_quota() {
    let (sb, c) = start(SandboxConfig { quotas: Quotas { github_per_hour: 3, ..Quotas::default() }, ..Default::default() }).await;
    let url = format!("{}/graphql", sb.github_url);
    let post = |body: Value| c.post(&url).header("authorization", gh_auth(&sb)).json(&body).send();
    let logins: Vec<&str> = sb.world.github_users.iter().take(40).map(|u| u.login.as_str()).collect();
    let fields = "login databaseId name email company createdAt";
    let mut query = String::from("query(");
    query += &(0..logins.len()).map(|i| format!("$l{i}: String!")).collect::<Vec<_>>().join(", ");
    query += ") { rateLimit { cost remaining limit used resetAt } ";
    for i in 0..logins.len() {
        query += &format!("u{i}: user(login: $l{i}) {{ {fields} }} ");
    }
    query += "missing: user(login: \"nobody-here\") { login } owner: repositoryOwner(login: \"nobody-here\") { login } }";
    let variables: serde_json::Map<String, Value> =
        logins.iter().enumerate().map(|(i, l)| (format!("l{i}"), Value::from(*l))).collect();
    let r = post(serde_json::json!({"query": query, "variables": variables})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-resource"], "graphql");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "2", "40 users cost one point");
    let body: Value = r.json().await.unwrap();
    for (i, login) in logins.iter().enumerate() {
        let u = &body["data"][format!("u{i}")];
        let world = sb.world.github_user_by_login(login).unwrap();
        assert_eq!(u["login"], *login);
        assert_eq!(u["databaseId"], world.id);
        assert_eq!(u["email"], world.email.clone().unwrap_or_default(), "a private address is \"\"");
    }
    assert_eq!(body["data"]["rateLimit"]["cost"], 1);
    assert_eq!(body["data"]["rateLimit"]["remaining"], 2);
    assert!(body["data"]["missing"].is_null() && body["data"]["owner"].is_null());
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "an unknown owner is null without an error: {errors:?}");
    assert_eq!(errors[0]["type"], "NOT_FOUND", "{errors:?}");
    assert_eq!(errors[0]["path"], serde_json::json!(["missing"]));
    assert!(errors[0]["message"].as_str().unwrap().contains("nobody-here"));

    // A field GitHub's schema does not have is a validation error with its location; no data.
    let r = post(serde_json::json!({"query": "{ user(login: \"x\") { login nope } }"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert!(body.get("data").is_none());
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nope"));
    assert_eq!(body["errors"][0]["locations"][0]["line"], 1);
    // A missing variable, a missing query, broken JSON.
    let r = post(serde_json::json!({"query": "query($l: String!) { user(login: $l) { login } }"})).await.unwrap();
    assert!(r.json::<Value>().await.unwrap()["errors"][0]["message"].as_str().unwrap().contains("l"));
    let r = post(serde_json::json!({"variables": {}})).await.unwrap();
    assert!(r.json::<Value>().await.unwrap()["errors"][0]["message"].as_str().unwrap().contains("query attribute"));
    let r = c.post(&url).header("authorization", gh_auth(&sb)).body("{").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Queries that did not run cost nothing; the GraphQL budget (3 here) is then spent: RATE_LIMITED with
    // remaining 0; REST's own budget is untouched.
    for left in [1, 0] {
        let r = post(serde_json::json!({"query": "{ rateLimit { remaining } }"})).await.unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["data"]["rateLimit"]["remaining"], left);
    }
    let r = post(serde_json::json!({"query": "{ rateLimit { remaining } }"})).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(r.json::<Value>().await.unwrap()["errors"][0]["type"], "RATE_LIMITED");
    let rest = c.get(format!("{}/repos/acme/api", sb.github_url)).header("authorization", gh_auth(&sb)).send().await.unwrap();
    assert_eq!(rest.headers()["x-ratelimit-remaining"], "2");
    // GraphQL needs a token.
    let r = c.post(&url).json(&serde_json::json!({"query": "{ rateLimit { cost } }"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
