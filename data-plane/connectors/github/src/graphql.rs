//! Users by login through GitHub's GraphQL API: up to [`LOGINS_PER_QUERY`] aliased `repositoryOwner`
//! lookups in one query, which costs one point of the GraphQL budget, where REST needs one request per
//! user (`GET /users/{login}`) to learn name, email and company. Answers come back in the shape of the
//! REST user, so the table's columns read both alike.

use omnisql_connector::{ConnectorError, QueryContext, Result};
use serde_json::{Map, Value, json};

use crate::Api;

/// Aliases per query: GitHub's page size, and a query that stays far below its node limit.
pub const LOGINS_PER_QUERY: usize = 100;

/// `GraphQL` for an API base URL: `https://api.github.com` → `https://api.github.com/graphql`;
/// GitHub Enterprise Server's `https://host/api/v3` → `https://host/api/graphql`.
pub fn endpoint(base: &str) -> String {
    match base.strip_suffix("/api/v3") {
        Some(host) => format!("{host}/api/graphql"),
        None => format!("{base}/graphql"),
    }
}

/// The query for `count` logins, passed as variables `$l0…` (never spliced into the text).
fn query(count: usize) -> String {
    let variables: Vec<String> = (0..count).map(|i| format!("$l{i}: String!")).collect();
    let mut q = format!("query({}) {{", variables.join(", "));
    for i in 0..count {
        q.push_str(&format!(
            " u{i}: repositoryOwner(login: $l{i}) {{ __typename login \
             ... on User {{ databaseId name email company createdAt isSiteAdmin }} \
             ... on Organization {{ databaseId name orgEmail: email createdAt }} }}"
        ));
    }
    q.push_str(" }");
    q
}

/// The owners among `logins` (at most [`LOGINS_PER_QUERY`]) as REST user objects; logins that name no
/// one are left out, as REST's 404 is.
pub async fn owners(api: &Api, q: &QueryContext, logins: &[String]) -> Result<Vec<Value>> {
    let variables: Map<String, Value> = logins.iter().enumerate().map(|(i, l)| (format!("l{i}"), json!(l))).collect();
    let body = json!({ "query": query(logins.len()), "variables": variables });
    let resp = api.client.post_read(q, &api.graphql, &body).await?;
    read(api, &resp.body, logins.len())
}

fn read(api: &Api, body: &Value, count: usize) -> Result<Vec<Value>> {
    let errors = body.get("errors").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    // NOT_FOUND is an absent user; anything else means the answer cannot be trusted whole.
    let failures: Vec<&Value> = errors.iter().filter(|e| e.get("type").and_then(Value::as_str) != Some("NOT_FOUND")).collect();
    if let Some(first) = failures.first() {
        let message = first.get("message").and_then(Value::as_str).unwrap_or("GraphQL error").to_string();
        if first.get("type").and_then(Value::as_str) == Some("RATE_LIMITED") {
            return Err(ConnectorError::QuotaExhausted {
                app: "GitHub",
                connection: api.client.connection().into(),
                message,
                reset_in: std::time::Duration::from_secs(60),
            });
        }
        return Err(ConnectorError::Upstream {
            app: "GitHub",
            connection: api.client.connection().into(),
            status: 200,
            message: format!("GraphQL: {message} ({} error(s))", failures.len()),
        });
    }
    let Some(data) = body.get("data").and_then(Value::as_object) else {
        return Err(shape(api, "data"));
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        match data.get(&format!("u{i}")) {
            Some(Value::Null) => {}
            Some(owner) => out.push(rest_user(owner)),
            None => return Err(shape(api, &format!("data.u{i}"))),
        }
    }
    Ok(out)
}

fn shape(api: &Api, field: &str) -> ConnectorError {
    ConnectorError::UnexpectedShape {
        app: "GitHub",
        connection: api.client.connection().into(),
        field: format!("GraphQL `{field}`"),
    }
}

/// A GraphQL owner as REST's `GET /users/{login}` shows it: `id`, `type`, `site_admin`, and a private
/// email as null (GraphQL answers "").
fn rest_user(owner: &Value) -> Value {
    let text = |k: &str| owner.get(k).cloned().unwrap_or(Value::Null);
    // An organisation's `email` is nullable where a user's is not: GraphQL needs the two apart.
    let email = owner.get("email").or_else(|| owner.get("orgEmail")).and_then(Value::as_str).filter(|e| !e.is_empty());
    json!({
        "login": text("login"),
        "id": text("databaseId"),
        "name": text("name"),
        "email": email,
        "company": text("company"),
        "created_at": text("createdAt"),
        "type": text("__typename"),
        "site_admin": owner.get("isSiteAdmin").and_then(Value::as_bool).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_follow_the_rest_base() {
        assert_eq!(super::endpoint("https://api.github.com"), "https://api.github.com/graphql");
        assert_eq!(super::endpoint("https://ghe.example/api/v3"), "https://ghe.example/api/graphql");
    }

    /// Contract: the query validates against GitHub's published schema (vendored for the sandbox), field
    /// merging rules included; `apollo-compiler` is an implementation independent of the sandbox's use.
    #[test]
    fn the_query_is_valid_against_githubs_published_schema() {
        use apollo_compiler::validation::Valid;
        let sdl = include_str!("../../../../sandbox/specs/github-graphql-schema.graphql");
        let schema = apollo_compiler::Schema::parse(sdl, "github.graphql").unwrap_or_else(|e| e.partial);
        let schema = Valid::assume_valid(schema);
        for n in [1, super::LOGINS_PER_QUERY] {
            if let Err(e) = apollo_compiler::ExecutableDocument::parse_and_validate(&schema, super::query(n), "q.graphql") {
                panic!("{}", e.errors);
            }
        }
    }

    #[test]
    fn logins_travel_as_variables() {
        let q = super::query(2);
        assert!(q.starts_with("query($l0: String!, $l1: String!) {"));
        assert!(q.contains("u1: repositoryOwner(login: $l1)"));
    }
}
