//! Salesforce REST: OAuth client-credentials and refresh-token flows, expiring sessions
//! (`INVALID_SESSION_ID`), versioned paths, describe, SOQL query with `nextRecordsUrl` batches, the rolling
//! daily allocation with `Sforce-Limit-Info`, and error bodies as JSON arrays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::SandboxConfig;
use crate::harness::{self, App, Harness};
use crate::soql;
use crate::world::World;

const MIN_VERSION: u32 = 59;
const MAX_VERSION: u32 = 66;

/// One field of an sObject, as describe reports it.
#[derive(Debug, Clone)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: &'static str,
    pub label: &'static str,
    pub nillable: bool,
    pub reference_to: Option<&'static str>,
}

#[derive(Debug)]
pub struct SObject {
    pub name: &'static str,
    pub label: &'static str,
    pub key_prefix: &'static str,
    pub custom: bool,
    pub fields: Vec<FieldDef>,
    pub records: Vec<Map<String, Value>>,
}

const fn f(name: &'static str, kind: &'static str, label: &'static str, nillable: bool) -> FieldDef {
    FieldDef { name, kind, label, nillable, reference_to: None }
}
const fn r(name: &'static str, to: &'static str, label: &'static str, nillable: bool) -> FieldDef {
    FieldDef { name, kind: "reference", label, nillable, reference_to: Some(to) }
}

fn sf_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// The org's sObjects with their records, from the world.
pub fn objects(w: &World) -> Vec<SObject> {
    let rec = |pairs: Vec<(&str, Value)>| pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>();
    let owner = |i: usize| json!(w.employees[i].salesforce_id);
    let account = SObject {
        name: "Account",
        label: "Account",
        key_prefix: "001",
        custom: false,
        fields: vec![
            f("Id", "id", "Account ID", false),
            f("Name", "string", "Account Name", false),
            f("Type", "picklist", "Account Type", true),
            f("Industry", "picklist", "Industry", true),
            f("AnnualRevenue", "currency", "Annual Revenue", true),
            f("NumberOfEmployees", "int", "Employees", true),
            f("Website", "url", "Website", true),
            f("BillingCity", "string", "Billing City", true),
            f("BillingCountry", "string", "Billing Country", true),
            r("OwnerId", "User", "Owner ID", false),
            f("CreatedDate", "datetime", "Created Date", false),
            f("Customer_Tier__c", "picklist", "Customer Tier", true),
        ],
        records: w
            .accounts
            .iter()
            .map(|a| {
                rec(vec![
                    ("Id", json!(a.id)),
                    ("Name", json!(a.name)),
                    ("Type", json!(a.kind)),
                    ("Industry", json!(a.industry)),
                    ("AnnualRevenue", json!(a.annual_revenue)),
                    ("NumberOfEmployees", json!(a.employees)),
                    ("Website", json!(format!("https://www.{}", a.domain))),
                    ("BillingCity", json!(a.city)),
                    ("BillingCountry", json!(a.country)),
                    ("OwnerId", owner(a.owner)),
                    ("CreatedDate", json!(sf_time(a.created))),
                    ("Customer_Tier__c", json!(a.tier)),
                ])
            })
            .collect(),
    };
    let contact = SObject {
        name: "Contact",
        label: "Contact",
        key_prefix: "003",
        custom: false,
        fields: vec![
            f("Id", "id", "Contact ID", false),
            r("AccountId", "Account", "Account ID", true),
            f("FirstName", "string", "First Name", true),
            f("LastName", "string", "Last Name", false),
            f("Name", "string", "Full Name", false),
            f("Email", "email", "Email", true),
            f("Title", "string", "Title", true),
            r("OwnerId", "User", "Owner ID", false),
            f("CreatedDate", "datetime", "Created Date", false),
        ],
        records: w
            .contacts
            .iter()
            .map(|c| {
                rec(vec![
                    ("Id", json!(c.id)),
                    ("AccountId", json!(w.accounts[c.account].id)),
                    ("FirstName", json!(c.first)),
                    ("LastName", json!(c.last)),
                    ("Name", json!(format!("{} {}", c.first, c.last))),
                    ("Email", json!(c.email)),
                    ("Title", json!(c.title)),
                    ("OwnerId", owner(w.accounts[c.account].owner)),
                    ("CreatedDate", json!(sf_time(c.created))),
                ])
            })
            .collect(),
    };
    let opportunity = SObject {
        name: "Opportunity",
        label: "Opportunity",
        key_prefix: "006",
        custom: false,
        fields: vec![
            f("Id", "id", "Opportunity ID", false),
            r("AccountId", "Account", "Account ID", true),
            f("Name", "string", "Name", false),
            f("Amount", "currency", "Amount", true),
            f("CloseDate", "date", "Close Date", false),
            f("StageName", "picklist", "Stage", false),
            f("Probability", "percent", "Probability (%)", true),
            f("IsClosed", "boolean", "Closed", false),
            f("IsWon", "boolean", "Won", false),
            r("OwnerId", "User", "Owner ID", false),
            f("CreatedDate", "datetime", "Created Date", false),
        ],
        records: w
            .opportunities
            .iter()
            .map(|o| {
                rec(vec![
                    ("Id", json!(o.id)),
                    ("AccountId", json!(w.accounts[o.account].id)),
                    ("Name", json!(o.name)),
                    ("Amount", json!(o.amount)),
                    ("CloseDate", json!(o.close_date.format("%Y-%m-%d").to_string())),
                    ("StageName", json!(o.stage)),
                    ("Probability", json!(o.probability)),
                    ("IsClosed", json!(o.stage.starts_with("Closed"))),
                    ("IsWon", json!(o.stage == "Closed Won")),
                    ("OwnerId", owner(w.accounts[o.account].owner)),
                    ("CreatedDate", json!(sf_time(o.created))),
                ])
            })
            .collect(),
    };
    let user = SObject {
        name: "User",
        label: "User",
        key_prefix: "005",
        custom: false,
        fields: vec![
            f("Id", "id", "User ID", false),
            f("Username", "string", "Username", false),
            f("Name", "string", "Full Name", false),
            f("Email", "email", "Email", false),
            f("Title", "string", "Title", true),
            f("IsActive", "boolean", "Active", false),
        ],
        records: w
            .employees
            .iter()
            .map(|e| {
                rec(vec![
                    ("Id", json!(e.salesforce_id)),
                    ("Username", json!(format!("{}.sf", e.email))),
                    ("Name", json!(e.name())),
                    ("Email", json!(e.email)),
                    ("Title", json!(e.title)),
                    ("IsActive", json!(true)),
                ])
            })
            .collect(),
    };
    let renewal = SObject {
        name: "Renewal__c",
        label: "Renewal",
        key_prefix: "a01",
        custom: true,
        fields: vec![
            f("Id", "id", "Record ID", false),
            f("Name", "string", "Renewal Name", false),
            r("Account__c", "Account", "Account", false),
            f("Amount__c", "currency", "Amount", true),
            f("Renewal_Date__c", "date", "Renewal Date", true),
            f("CreatedDate", "datetime", "Created Date", false),
        ],
        records: w
            .renewals
            .iter()
            .map(|n| {
                rec(vec![
                    ("Id", json!(n.id)),
                    ("Name", json!(n.name)),
                    ("Account__c", json!(w.accounts[n.account].id)),
                    ("Amount__c", json!(n.amount)),
                    ("Renewal_Date__c", json!(n.date.format("%Y-%m-%d").to_string())),
                    ("CreatedDate", json!(sf_time(n.created))),
                ])
            })
            .collect(),
    };
    vec![account, contact, opportunity, user, renewal]
}

/// An open query cursor: query id, its rows, batch size.
type Cursor = (String, Arc<Vec<Value>>, usize);

#[derive(Debug)]
pub struct SalesforceState {
    base: String,
    objects: Vec<SObject>,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_ttl: Duration,
    per_day: u64,
    used: Mutex<(Instant, u64)>,
    sessions: Mutex<HashMap<String, Instant>>,
    cursors: Mutex<HashMap<String, Cursor>>,
    counter: Mutex<u64>,
    pub harness: Arc<Harness>,
}

impl SalesforceState {
    pub fn new(world: Arc<World>, config: &SandboxConfig, base: String) -> Arc<Self> {
        Arc::new(SalesforceState {
            base,
            objects: objects(&world),
            client_id: config.credentials.salesforce_client_id.clone(),
            client_secret: config.credentials.salesforce_client_secret.clone(),
            refresh_token: config.credentials.salesforce_refresh_token.clone(),
            token_ttl: Duration::from_secs(config.salesforce_token_ttl_secs),
            per_day: config.quotas.salesforce_per_day,
            used: Mutex::new((Instant::now(), 0)),
            sessions: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            counter: Mutex::new(0),
            harness: Harness::new(App::Salesforce, config.salesforce, config.seed),
        })
    }

    fn next_id(&self) -> u64 {
        let mut c = self.counter.lock().unwrap_or_else(|e| e.into_inner());
        *c += 1;
        *c
    }

    fn object(&self, name: &str) -> Option<&SObject> {
        self.objects.iter().find(|o| o.name.eq_ignore_ascii_case(name))
    }
}

pub fn router(state: Arc<SalesforceState>) -> Router {
    let data = Router::new()
        .route("/services/data/{version}/sobjects", get(sobjects))
        .route("/services/data/{version}/sobjects/", get(sobjects))
        .route("/services/data/{version}/sobjects/{name}/describe", get(describe))
        .route("/services/data/{version}/sobjects/{name}/describe/", get(describe))
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/", get(query))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .route("/services/data/{version}/limits", get(limits))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    let app = Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data", get(versions))
        .route("/services/data/", get(versions))
        .merge(data)
        .fallback(|| async { errors(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist") })
        .with_state(state.clone());
    harness::wrap(app, state.harness.clone())
}

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!([{"message": message, "errorCode": code}]))).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct TokenForm {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

async fn token(State(s): State<Arc<SalesforceState>>, Form(form): Form<TokenForm>) -> Response {
    let oauth_error = |error: &str, description: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": error, "error_description": description}))).into_response()
    };
    let client_ok = form.client_id.as_deref() == Some(s.client_id.as_str())
        && form.client_secret.as_deref() == Some(s.client_secret.as_str());
    match form.grant_type.as_str() {
        "client_credentials" if client_ok => {}
        "refresh_token" if client_ok => {
            if form.refresh_token.as_deref() != Some(s.refresh_token.as_str()) {
                return oauth_error("invalid_grant", "expired access/refresh token");
            }
        }
        "client_credentials" | "refresh_token" => {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    }
    let access = format!("00DSANDBOX!{:016x}", s.next_id().wrapping_mul(0x9E37_79B9_7F4A_7C15));
    s.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(access.clone(), Instant::now());
    Json(json!({
        "access_token": access, "instance_url": s.base, "id": format!("{}/id/00DSANDBOX/005000000000000001", s.base),
        "token_type": "Bearer", "issued_at": Utc::now().timestamp_millis().to_string(),
        "signature": "c2FuZGJveA==", "scope": "api",
    }))
    .into_response()
}

async fn versions(State(s): State<Arc<SalesforceState>>) -> Response {
    let list: Vec<Value> = (MIN_VERSION..=MAX_VERSION)
        .map(|v| json!({"label": format!("Release {v}"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")}))
        .collect();
    let _ = &s.base;
    Json(list).into_response()
}

/// Session, version and the daily allocation, for every data call.
async fn guard(
    State(s): State<Arc<SalesforceState>>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let version_ok = params
        .get("version")
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.strip_suffix(".0"))
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|v| (MIN_VERSION..=MAX_VERSION).contains(&v));
    if !version_ok {
        return errors(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist");
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let valid = token.as_ref().is_some_and(|t| {
        s.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(t).is_some_and(|issued| issued.elapsed() < s.token_ttl)
    });
    if !valid {
        return errors(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid");
    }
    let used = {
        let mut u = s.used.lock().unwrap_or_else(|e| e.into_inner());
        if u.0.elapsed() >= Duration::from_secs(24 * 3600) {
            *u = (Instant::now(), 0);
        }
        if u.1 >= s.per_day {
            None
        } else {
            u.1 += 1;
            Some(u.1)
        }
    };
    let Some(used) = used else {
        let mut resp = errors(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.");
        if let Ok(v) = HeaderValue::from_str(&format!("api-usage={}/{}", s.per_day, s.per_day)) {
            resp.headers_mut().insert("sforce-limit-info", v);
        }
        return resp;
    };
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{}", s.per_day)) {
        resp.headers_mut().insert("sforce-limit-info", v);
    }
    resp
}

async fn sobjects(State(s): State<Arc<SalesforceState>>, Path(version): Path<String>) -> Response {
    let list: Vec<Value> = s
        .objects
        .iter()
        .map(|o| {
            let url = format!("/services/data/{version}/sobjects/{}", o.name);
            json!({
                "name": o.name, "label": o.label, "labelPlural": format!("{}s", o.label), "keyPrefix": o.key_prefix,
                "custom": o.custom, "queryable": true, "retrieveable": true, "searchable": true, "createable": true,
                "updateable": true, "deletable": true, "layoutable": true, "triggerable": true,
                "urls": {"sobject": url, "describe": format!("{url}/describe"), "rowTemplate": format!("{url}/{{ID}}")},
            })
        })
        .collect();
    Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})).into_response()
}

fn soap_type(kind: &str) -> &'static str {
    match kind {
        "id" | "reference" => "tns:ID",
        "boolean" => "xsd:boolean",
        "int" => "xsd:int",
        "double" | "currency" | "percent" => "xsd:double",
        "date" => "xsd:date",
        "datetime" => "xsd:dateTime",
        _ => "xsd:string",
    }
}

fn field_json(fd: &FieldDef) -> Value {
    let numeric = matches!(fd.kind, "double" | "currency" | "percent");
    let text = !matches!(fd.kind, "boolean" | "int" | "double" | "currency" | "percent" | "date" | "datetime");
    let length = match fd.kind {
        "id" | "reference" => 18,
        _ if text => 255,
        _ => 0,
    };
    json!({
        "aggregatable": true, "aiPredictionField": false, "autoNumber": false, "byteLength": length * 3,
        "calculated": false, "calculatedFormula": null, "cascadeDelete": false, "caseSensitive": false,
        "compoundFieldName": null, "controllerName": null, "createable": fd.kind != "id", "custom": fd.name.ends_with("__c"),
        "defaultValue": null, "defaultValueFormula": null, "defaultedOnCreate": fd.kind == "id", "dependentPicklist": false,
        "deprecatedAndHidden": false, "digits": if fd.kind == "int" { 9 } else { 0 }, "displayLocationInDecimal": false,
        "encrypted": false, "externalId": false, "extraTypeInfo": null, "filterable": true, "filteredLookupInfo": null,
        "groupable": !numeric, "highScaleNumber": false, "htmlFormatted": false, "idLookup": fd.kind == "id",
        "inlineHelpText": null, "label": fd.label, "length": length, "mask": null, "maskType": null, "name": fd.name,
        "nameField": fd.name == "Name", "namePointing": false, "nillable": fd.nillable, "permissionable": fd.nillable,
        "picklistValues": [], "polymorphicForeignKey": false, "precision": if numeric { 18 } else { 0 },
        "queryByDistance": false, "referenceTargetField": null,
        "referenceTo": fd.reference_to.map(|t| vec![t]).unwrap_or_default(),
        "relationshipName": fd.reference_to.map(|_| fd.name.trim_end_matches("Id").trim_end_matches("__c").to_string()),
        "relationshipOrder": null, "restrictedDelete": false, "restrictedPicklist": false,
        "scale": if numeric { 2 } else { 0 }, "searchPrefilterable": false, "soapType": soap_type(fd.kind),
        "sortable": true, "type": fd.kind, "unique": false, "updateable": fd.kind != "id",
        "writeRequiresMasterRead": false,
    })
}

async fn describe(State(s): State<Arc<SalesforceState>>, Path((version, name)): Path<(String, String)>) -> Response {
    let Some(o) = s.object(&name) else {
        return errors(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("The requested resource does not exist: sObject type '{name}' is not supported."),
        );
    };
    let url = format!("/services/data/{version}/sobjects/{}", o.name);
    Json(json!({
        "actionOverrides": [], "activateable": false, "childRelationships": [], "compactLayoutable": true,
        "createable": true, "custom": o.custom, "customSetting": false, "deepCloneable": false, "deletable": true,
        "deprecatedAndHidden": false, "feedEnabled": false, "fields": o.fields.iter().map(field_json).collect::<Vec<_>>(),
        "hasSubtypes": false, "idEnabled": true, "isInterface": false, "isSubtype": false, "keyPrefix": o.key_prefix,
        "label": o.label, "labelPlural": format!("{}s", o.label), "layoutable": true, "mergeable": false,
        "mruEnabled": true, "name": o.name, "namedLayoutInfos": [], "networkScopeFieldName": null, "queryable": true,
        "recordTypeInfos": [], "replicateable": true, "retrieveable": true, "searchLayoutable": true, "searchable": true,
        "supportedScopes": [{"label": "All", "name": "everything"}], "triggerable": true, "undeletable": true,
        "updateable": true, "urlDetail": null, "urlEdit": null, "urlNew": null,
        "urls": {"sobject": url, "describe": format!("{url}/describe")},
    }))
    .into_response()
}

fn batch_size(req_headers: &axum::http::HeaderMap) -> usize {
    req_headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("batchSize=")))
        .and_then(|v| v.parse::<usize>().ok())
        .map(|n| n.clamp(200, 2000))
        .unwrap_or(2000)
}

async fn query(
    State(s): State<Arc<SalesforceState>>,
    Path(version): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(text) = q.get("q") else {
        return errors(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "Missing query parameter 'q'");
    };
    let parsed = match soql::parse(text) {
        Ok(p) => p,
        Err(e) => {
            return errors(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &format!("unexpected token: {e}"));
        }
    };
    let Some(o) = s.object(&parsed.object) else {
        return errors(StatusCode::BAD_REQUEST, "INVALID_TYPE", &format!("sObject type '{}' is not supported.", parsed.object));
    };
    // Every referenced field must exist (case-insensitive), as Salesforce checks.
    let resolve = |f: &str| o.fields.iter().find(|d| d.name.eq_ignore_ascii_case(f)).map(|d| d.name);
    let mut referenced = parsed.fields.clone();
    if let Some(c) = &parsed.filter {
        soql::fields_of(c, &mut referenced);
    }
    referenced.extend(parsed.order.iter().map(|o| o.0.clone()));
    for f in &referenced {
        if resolve(f).is_none() {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!(
                    "No such column '{f}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                    o.name
                ),
            );
        }
    }
    let get_from = |rec: &Map<String, Value>, f: &str| resolve(f).and_then(|n| rec.get(n).cloned()).unwrap_or(Value::Null);
    let mut rows: Vec<&Map<String, Value>> =
        o.records.iter().filter(|rec| parsed.filter.as_ref().is_none_or(|c| soql::eval(c, &|f| get_from(rec, f)))).collect();
    if !parsed.order.is_empty() {
        rows.sort_by(|a, b| {
            for (f, desc, nulls) in &parsed.order {
                let ord = soql::order_values(&get_from(a, f), &get_from(b, f), *desc, *nulls);
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    let rows: Vec<Value> = rows
        .into_iter()
        .skip(parsed.offset.unwrap_or(0))
        .take(parsed.limit.unwrap_or(usize::MAX))
        .map(|rec| {
            let mut out = Map::new();
            let id = rec.get("Id").and_then(Value::as_str).unwrap_or_default();
            out.insert(
                "attributes".into(),
                json!({"type": o.name, "url": format!("/services/data/{version}/sobjects/{}/{id}", o.name)}),
            );
            for f in &parsed.fields {
                if let Some(n) = resolve(f) {
                    out.insert(n.to_string(), rec.get(n).cloned().unwrap_or(Value::Null));
                }
            }
            Value::Object(out)
        })
        .collect();
    let id = format!("01gSANDBOX{:08}", s.next_id());
    respond_batch(&s, &version, id, Arc::new(rows), 0, batch_size(&headers))
}

fn respond_batch(s: &SalesforceState, version: &str, id: String, rows: Arc<Vec<Value>>, start: usize, batch: usize) -> Response {
    let end = (start + batch).min(rows.len());
    let done = end >= rows.len();
    let mut body = json!({"totalSize": rows.len(), "done": done, "records": rows[start..end].to_vec()});
    if !done {
        let locator = format!("{id}-{end}");
        body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{locator}"));
        s.cursors.lock().unwrap_or_else(|e| e.into_inner()).insert(locator, (id, rows, batch));
    }
    Json(body).into_response()
}

async fn query_more(State(s): State<Arc<SalesforceState>>, Path((version, locator)): Path<(String, String)>) -> Response {
    let Some((id, rows, batch)) = s.cursors.lock().unwrap_or_else(|e| e.into_inner()).remove(&locator) else {
        return errors(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    let start = locator.rsplit('-').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(rows.len());
    respond_batch(&s, &version, id, rows, start, batch)
}

async fn limits(State(s): State<Arc<SalesforceState>>) -> Response {
    let used = s.used.lock().unwrap_or_else(|e| e.into_inner()).1;
    Json(json!({"DailyApiRequests": {"Max": s.per_day, "Remaining": s.per_day.saturating_sub(used)}})).into_response()
}
