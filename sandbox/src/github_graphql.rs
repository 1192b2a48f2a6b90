//! GitHub GraphQL (`POST /graphql`): documents are parsed, validated and executed against GitHub's
//! published schema (`specs/github-graphql-schema.graphql`), so a query the real API would refuse is
//! refused here with GraphQL errors, and answers have the schema's types and null rules. The sandbox
//! resolves what the connector reads: `user(login:)`, `repositoryOwner(login:)` and `rateLimit`, with the
//! scalar fields of users listed in [`user_field`]; any other field of the schema is a field error that
//! says so. Rate limiting is GitHub's: an hourly budget of points of its own (`x-ratelimit-resource:
//! graphql`), where a query that reads no connection costs 1 point however many objects it looks up.

use std::sync::{Arc, OnceLock};

use apollo_compiler::collections::HashMap as NameMap;
use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::response::{JsonMap, JsonValue};
use apollo_compiler::schema::Implementers;
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Name, Schema};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::github::{Caller, GithubState, Quota};
use crate::world::GithubUser;

const SDL: &str = include_str!("../specs/github-graphql-schema.graphql");

/// The schema, parsed once. GitHub's published SDL declares two fields of `EnterpriseOwnerInfo` twice,
/// which strict schema validation rejects; it is taken as GitHub serves it, and queries are validated.
fn schema() -> &'static (Valid<Schema>, NameMap<Name, Implementers>) {
    static SCHEMA: OnceLock<(Valid<Schema>, NameMap<Name, Implementers>)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = Schema::parse(SDL, "github-graphql-schema.graphql").unwrap_or_else(|e| e.partial);
        let schema = Valid::assume_valid(schema);
        let implementers = schema.implementers_map();
        (schema, implementers)
    })
}

/// Points a query costs: GitHub counts the requests its connections would need, divided by 100, at
/// least 1. The served subset has no connections, so every query that runs costs 1; one that fails
/// to parse or validate costs nothing.
pub const QUERY_COST: u64 = 1;

/// What a response cost, for the guard to charge (a response extension).
#[derive(Debug, Clone, Copy)]
pub struct Cost(pub u64);

/// `POST /graphql` with `{"query", "variables"?, "operationName"?}`.
pub async fn graphql(State(s): State<Arc<GithubState>>, axum::Extension(c): axum::Extension<Caller>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return super::github::error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return errors(vec![json!({"message": "A query attribute must be specified and must be a string."})]);
    };
    let variables: JsonMap = match request.get("variables") {
        None | Some(Value::Null) => JsonMap::new(),
        Some(Value::Object(v)) => match serde_json::from_value(Value::Object(v.clone())) {
            Ok(map) => map,
            Err(e) => return errors(vec![json!({"message": format!("Variables are invalid JSON: {e}")})]),
        },
        Some(_) => return errors(vec![json!({"message": "Variables are invalid JSON."})]),
    };
    let (schema, implementers) = schema();
    let document = match ExecutableDocument::parse_and_validate(schema, query, "query.graphql") {
        Ok(d) => d,
        Err(e) => return errors(e.errors.iter().map(|d| serde_json::to_value(d.to_json()).unwrap_or(Value::Null)).collect()),
    };
    let operation_name = request.get("operationName").and_then(Value::as_str);
    let execution = match Execution::new(schema, &document).implementers_map(implementers).operation_name(operation_name) {
        Ok(e) => e,
        Err(e) => return errors(vec![serde_json::to_value(e.to_graphql_error(&document.sources)).unwrap_or(Value::Null)]),
    };
    let root = Query { state: &s, quota: c.quota, nodes: nodes(&document) };
    match execution.raw_variable_values(&variables).execute_sync(&root) {
        Ok(response) => {
            let mut body = serde_json::to_value(&response).unwrap_or(Value::Null);
            // GitHub names the kind of a field error at the top level of the error.
            if let Some(list) = body.get_mut("errors").and_then(Value::as_array_mut) {
                for e in list {
                    // The executor prefixes resolver errors; GitHub's messages have no prefix.
                    let message = e["message"].as_str().unwrap_or_default();
                    let message = message.strip_prefix("resolver error: ").unwrap_or(message).to_string();
                    if message.starts_with("Could not resolve to a User") {
                        e["type"] = json!("NOT_FOUND");
                    }
                    e["message"] = json!(message);
                }
            }
            let mut resp = Json(body).into_response();
            resp.extensions_mut().insert(Cost(QUERY_COST));
            resp
        }
        Err(e) => errors(vec![serde_json::to_value(e.to_graphql_error(&document.sources)).unwrap_or(Value::Null)]),
    }
}

/// A request-level failure: GitHub answers 200 with `errors` and no `data`.
fn errors(list: Vec<Value>) -> Response {
    Json(json!({ "errors": list })).into_response()
}

/// Objects the query asks for: `rateLimit.nodeCount`.
fn nodes(document: &ExecutableDocument) -> u64 {
    document.operations.iter().map(|op| op.selection_set.selections.len() as u64).sum()
}

struct Query<'a> {
    state: &'a GithubState,
    quota: Quota,
    nodes: u64,
}

impl ObjectValue for Query<'_> {
    fn type_name(&self) -> &str {
        "Query"
    }
    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        let login = || info.arguments().get("login").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        match info.field_name() {
            "user" => {
                let login = login();
                match self.state.world().github_user_by_login(&login) {
                    Some(u) => Ok(ResolvedValue::object(User(u))),
                    None => Err(FieldError { message: format!("Could not resolve to a User with the login of '{login}'.") }),
                }
            }
            // An owner that does not exist is null, without an error.
            "repositoryOwner" => Ok(ResolvedValue::nullable_object(self.state.world().github_user_by_login(&login()).map(User))),
            "rateLimit" => Ok(ResolvedValue::object(RateLimit { quota: self.quota, nodes: self.nodes })),
            other => Err(not_served("Query", other)),
        }
    }
}

fn not_served(ty: &str, field: &str) -> FieldError {
    FieldError { message: format!("{ty}.{field} is in GitHub's schema but not served by the sandbox") }
}

struct User<'w>(&'w GithubUser);

/// The scalar fields of a user that the sandbox serves, as GitHub's schema types them.
fn user_field(u: &GithubUser, field: &str) -> Option<JsonValue> {
    Some(match field {
        "login" => u.login.as_str().into(),
        "databaseId" => u.id.into(),
        "id" => format!("U_{:08}", u.id).into(),
        "name" => u.name.as_str().into(),
        // `email` is non-null: GitHub answers "" for an address the user keeps private.
        "email" => u.email.as_deref().unwrap_or_default().into(),
        "company" => u.company.as_deref().map_or(JsonValue::Null, Into::into),
        "createdAt" | "updatedAt" => super::github::ts(u.created).into(),
        "isSiteAdmin" => false.into(),
        "url" => format!("https://github.example/{}", u.login).into(),
        _ => return None,
    })
}

impl ObjectValue for User<'_> {
    fn type_name(&self) -> &str {
        "User"
    }
    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        user_field(self.0, info.field_name()).map(ResolvedValue::leaf).ok_or_else(|| not_served("User", info.field_name()))
    }
}

struct RateLimit {
    quota: Quota,
    nodes: u64,
}

impl ObjectValue for RateLimit {
    fn type_name(&self) -> &str {
        "RateLimit"
    }
    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        let q = self.quota;
        let used = q.used + QUERY_COST;
        Ok(ResolvedValue::leaf(match info.field_name() {
            "cost" => JsonValue::from(QUERY_COST),
            "limit" => q.limit.into(),
            "remaining" => q.limit.saturating_sub(used).into(),
            "used" => used.into(),
            "nodeCount" => self.nodes.into(),
            "resetAt" => {
                let at = chrono::DateTime::from_timestamp(q.reset as i64, 0).unwrap_or_default();
                super::github::ts(at).into()
            }
            other => return Err(not_served("RateLimit", other)),
        }))
    }
}
