#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The admin REST API over HTTP: roles and tenant isolation, validation errors, pagination, idempotent
//! creates, sealed secrets that never show, the committed OpenAPI document.

use std::io::Write;
use std::sync::{Arc, Mutex};

use omnisql_control_plane::model::*;
use omnisql_control_plane::testing::PostgresServer;
use omnisql_control_plane::{ControlPlane, Options};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PLANTED_SECRET: &str = "ghp_PLANTED-secret-never-stored-4f1d2c";

fn github_connector() -> ConnectorVersion {
    ConnectorVersion {
        name: "github".into(),
        version: "1.0.0".into(),
        parameters: vec![
            ParameterSpec { name: "token".into(), description: "PAT".into(), required: true, secret: true },
            ParameterSpec { name: "orgs".into(), description: "organisations".into(), required: true, secret: false },
            ParameterSpec { name: "base_url".into(), description: "API URL".into(), required: false, secret: false },
        ],
        tables: vec![],
        created_at: 0,
    }
}

async fn start(database_url: String, dir: &std::path::Path) -> ControlPlane {
    ControlPlane::start(Options {
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: "127.0.0.1:0".into(),
        database_url,
        kms: omnisql_secrets::ProviderConfig::Local { key_file: dir.join("master.key") },
        default_key_id: "local".into(),
        connectors: vec![github_connector()],
        grpc_tls: None,
        bootstrap_key: None,
        oidc_allow_http: true,
        public_url: None,
        smoke_tests: None,
    })
    .await
    .unwrap()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, key, path, None, None).await
    }
    async fn post(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, key, path, Some(body), None).await
    }
    async fn put(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, key, path, Some(body), None).await
    }
    async fn delete(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, key, path, None, None).await
    }
}

/// The whole admin flow, run against each backend; returns the API keys it was shown.
async fn admin_flow(cp: &ControlPlane) -> Vec<String> {
    let c = Client { http: reqwest::Client::new(), base: cp.admin_url() };
    let op = cp.bootstrap_key.clone().expect("first start creates the operator key");

    // No key, a wrong key.
    let (s, body) = c.get("nope", "/v1/me").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert_eq!(c.get(&op, "/v1/me").await.1["role"], "platform_operator");

    // Tenants with their first admins.
    let (s, a) = c.post(&op, "/v1/tenants", json!({"id": "acme", "name": "Acme", "region": "eu", "admin": "alice"})).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let alice = a["admin"]["key"].as_str().unwrap().to_string();
    let (_, b) = c.post(&op, "/v1/tenants", json!({"id": "globex", "name": "Globex", "region": "eu", "admin": "gina"})).await;
    let gina = b["admin"]["key"].as_str().unwrap().to_string();
    assert_eq!(c.post(&op, "/v1/tenants", json!({"id": "acme", "name": "Acme", "region": "eu"})).await.0, StatusCode::CONFLICT);

    // Validation errors name the fields.
    let (s, e) = c.post(&op, "/v1/tenants", json!({"id": "Bad Id", "name": "", "region": "eu", "weight": -1})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<_> = e["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["id", "name", "weight"]);
    let (s, e) = c.post(&op, "/v1/tenants", json!({"id": "x", "name": "X"})).await;
    assert_eq!((s, e["error"]["fields"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("region")));
    let (s, e) = c.post(&op, "/v1/tenants", json!({"id": "x", "name": "X", "region": "eu", "colour": "red"})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid")), "{e}");
    let raw = c.http.post(format!("{}/v1/tenants", c.base)).bearer_auth(&op).body("{not json").send().await.unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);

    // Roles: a tenant admin cannot create tenants, and another tenant is invisible.
    assert_eq!(c.post(&alice, "/v1/tenants", json!({"id": "mine", "name": "M", "region": "eu"})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.get(&alice, "/v1/tenants/globex").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&alice, "/v1/tenants/globex/connections").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&alice, "/v1/tenants").await.1["items"].as_array().unwrap().len(), 1);
    assert_eq!(c.get(&alice, "/v1/data-planes").await.0, StatusCode::FORBIDDEN);

    // Operators set a tenant's limits; a tenant admin cannot raise its own.
    let limits = json!({"statement_timeout_seconds": 30, "max_concurrent_queries": 4});
    let (s, t) = c.call(reqwest::Method::PATCH, &op, "/v1/tenants/acme", Some(limits.clone()), None).await;
    assert_eq!(
        (s, &t["statement_timeout_seconds"], &t["max_concurrent_queries"], &t["name"]),
        (StatusCode::OK, &json!(30), &json!(4), &json!("Acme"))
    );
    assert_eq!(c.call(reqwest::Method::PATCH, &alice, "/v1/tenants/acme", Some(limits), None).await.0, StatusCode::FORBIDDEN);
    let (s, e) = c
        .call(
            reqwest::Method::PATCH,
            &op,
            "/v1/tenants/acme",
            Some(json!({"statement_timeout_seconds": 0, "max_concurrent_queries": -1})),
            None,
        )
        .await;
    let fields: Vec<_> = e["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!((s, fields), (StatusCode::UNPROCESSABLE_ENTITY, vec!["statement_timeout_seconds", "max_concurrent_queries"]));
    assert_eq!(
        c.call(reqwest::Method::PATCH, &op, "/v1/tenants/nobody", Some(json!({"weight": 2})), None).await.0,
        StatusCode::NOT_FOUND
    );

    // A member can read but not change.
    let (s, _) =
        c.post(&alice, "/v1/tenants/acme/principals", json!({"id": "bob", "kind": "user", "role": "tenant_member"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, k) = c.post(&alice, "/v1/tenants/acme/api-keys", json!({"principal": "bob"})).await;
    let bob = k["key"].as_str().unwrap().to_string();
    let bob_key_id = k["api_key"]["id"].as_str().unwrap().to_string();
    assert!(k["api_key"].get("sha256").is_none(), "hashes are not shown");
    assert_eq!(c.get(&bob, "/v1/tenants/acme/connections").await.0, StatusCode::OK);
    assert_eq!(c.post(&bob, "/v1/tenants/acme/api-keys", json!({"principal": "bob"})).await.0, StatusCode::FORBIDDEN);
    let (s, e) =
        c.post(&alice, "/v1/tenants/acme/principals", json!({"id": "eve", "kind": "user", "role": "platform_operator"})).await;
    assert_eq!((s, e["error"]["fields"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("role")));

    // Pagination.
    for p in ["p1", "p2", "p3"] {
        c.post(&alice, "/v1/tenants/acme/principals", json!({"id": p, "kind": "service_account", "role": "tenant_member"})).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/tenants/acme/principals?limit=2".to_string();
    loop {
        let (_, page) = c.get(&alice, &path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/tenants/acme/principals?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "p1", "p2", "p3"]);
    assert_eq!(c.get(&alice, "/v1/tenants/acme/principals?limit=0").await.0, StatusCode::UNPROCESSABLE_ENTITY);

    // Connections: validated against the catalog, secrets sealed and never shown.
    let (s, e) = c
        .post(&alice, "/v1/tenants/acme/connections", json!({"name": "gh", "connector": "github", "options": {"tokn": "x"}}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<_> = e["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["options.tokn", "options.token", "options.orgs"]);
    let (s, e) = c
        .post(
            &alice,
            "/v1/tenants/acme/connections",
            json!({"name": "gh", "connector": "github", "version": "9.0.0", "options": {}}),
        )
        .await;
    assert_eq!((s, e["error"]["fields"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("version")));
    let body = json!({"name": "gh", "connector": "github", "options": {"token": PLANTED_SECRET, "orgs": "acme"}, "cache_ttl_seconds": 30});
    let (s, conn) =
        c.call(reqwest::Method::POST, &alice, "/v1/tenants/acme/connections", Some(body.clone()), Some("create-gh-1")).await;
    assert_eq!(s, StatusCode::CREATED, "{conn}");
    assert_eq!(conn["version"], "1.0.0");
    assert_eq!(conn["secret_options"], json!(["token"]));
    assert!(!conn.to_string().contains(PLANTED_SECRET));
    // Idempotent retry: same answer, one connection; the same key for another request is refused.
    let resp = c
        .http
        .post(format!("{}/v1/tenants/acme/connections", c.base))
        .bearer_auth(&alice)
        .header("Idempotency-Key", "create-gh-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(resp.json::<Value>().await.unwrap(), conn);
    let mut other = body.clone();
    other["name"] = json!("gh2");
    let (s, _) = c.call(reqwest::Method::POST, &alice, "/v1/tenants/acme/connections", Some(other), Some("create-gh-1")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.get(&alice, "/v1/tenants/acme/connections").await.1["items"].as_array().unwrap().len(), 1);
    // Two concurrent retries with one key create one object: one succeeds, the other is told the
    // request is in progress or gets the same answer replayed.
    let concurrent = json!({"id": "twin", "kind": "service_account", "role": "tenant_member"});
    let send = || {
        c.http
            .post(format!("{}/v1/tenants/acme/principals", c.base))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "twin-1")
            .json(&concurrent)
            .send()
    };
    let (a, b) = tokio::join!(send(), send());
    let mut statuses = [a.unwrap().status(), b.unwrap().status()];
    statuses.sort();
    assert!(
        statuses == [StatusCode::CREATED, StatusCode::CREATED] || statuses == [StatusCode::CREATED, StatusCode::CONFLICT],
        "{statuses:?}"
    );
    let principals = c.get(&alice, "/v1/tenants/acme/principals?limit=500").await.1;
    assert_eq!(principals["items"].as_array().unwrap().iter().filter(|p| p["id"] == "twin").count(), 1);
    let (s, got) = c.get(&alice, "/v1/tenants/acme/connections/gh").await;
    assert_eq!(s, StatusCode::OK);
    assert!(!got.to_string().contains(PLANTED_SECRET) && !got.to_string().contains("sealed:v1"));
    assert_eq!(c.get(&gina, "/v1/tenants/acme/connections/gh").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.delete(&gina, "/v1/tenants/acme/connections/gh").await.0, StatusCode::NOT_FOUND);

    // Policies are versioned.
    let put = |v: &str| {
        c.call(
            reqwest::Method::PUT,
            &alice,
            "/v1/tenants/acme/policies/rows",
            Some(json!({"rego": format!("package omnisql\n# {v}")})),
            None,
        )
    };
    assert_eq!(put("one").await.1["version"], 1);
    assert_eq!(put("two").await.1["version"], 2);
    assert_eq!(c.get(&alice, "/v1/tenants/acme/policies/rows").await.1.as_array().unwrap().len(), 2);
    let (s, _) = c
        .call(reqwest::Method::PUT, &alice, "/v1/tenants/acme/policies/rows", Some(json!({"rego": "allow := true"})), None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // A key created with an Idempotency-Key is shown once: the replay names the same key but not the secret.
    let (s1, first) = c
        .call(reqwest::Method::POST, &alice, "/v1/tenants/acme/api-keys", Some(json!({"principal": "bob"})), Some("bob-key-2"))
        .await;
    let (s2, replay) = c
        .call(reqwest::Method::POST, &alice, "/v1/tenants/acme/api-keys", Some(json!({"principal": "bob"})), Some("bob-key-2"))
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(replay["api_key"]["id"], first["api_key"]["id"]);
    assert!(first["key"].is_string() && replay["key"].is_null(), "{replay}");
    let idempotent_key = first["key"].as_str().unwrap().to_string();

    // Revoking a key locks it out at once.
    assert_eq!(c.delete(&alice, &format!("/v1/tenants/acme/api-keys/{bob_key_id}")).await.0, StatusCode::OK);
    assert_eq!(c.get(&bob, "/v1/me").await.0, StatusCode::UNAUTHORIZED);

    // Enrollment tokens: operators only, shown once.
    let (s, t) = c.post(&op, "/v1/enrollment-tokens", json!({"region": "eu"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(t["token"].as_str().unwrap().starts_with("omen_"));
    assert_eq!(c.post(&alice, "/v1/enrollment-tokens", json!({"region": "eu"})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.delete(&alice, "/v1/data-planes/dp-x").await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.delete(&op, "/v1/data-planes/dp-x").await.0, StatusCode::NOT_FOUND);

    // A data_plane_operator (a Kubernetes operator's credential): tokens for its regions only, its
    // regions' data planes only, removes only those enrolled with its own tokens, reads no tenant.
    let (s, e) = c
        .post(
            &op,
            &format!("/v1/tenants/{PLATFORM_TENANT}/principals"),
            json!({"id": "k8s", "kind": "service_account", "role": "data_plane_operator"}),
        )
        .await;
    assert_eq!((s, e["error"]["fields"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("regions")), "{e}");
    let (s, e) = c
        .post(
            &op,
            "/v1/tenants/acme/principals",
            json!({"id": "k8s", "kind": "service_account", "role": "data_plane_operator", "regions": ["eu"]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, p) = c
        .post(
            &op,
            &format!("/v1/tenants/{PLATFORM_TENANT}/principals"),
            json!({"id": "k8s", "kind": "service_account", "role": "data_plane_operator", "regions": ["eu"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (_, k) = c.post(&op, &format!("/v1/tenants/{PLATFORM_TENANT}/api-keys"), json!({"principal": "k8s"})).await;
    let k8s = k["key"].as_str().unwrap().to_string();
    let (s, own_token) = c.post(&k8s, "/v1/enrollment-tokens", json!({"region": "eu"})).await;
    assert_eq!(s, StatusCode::CREATED, "{own_token}");
    assert_eq!(c.post(&k8s, "/v1/enrollment-tokens", json!({"region": "us"})).await.0, StatusCode::FORBIDDEN);
    let (_, other_token) = c.post(&op, "/v1/enrollment-tokens", json!({"region": "eu"})).await;
    let (_, us_token) = c.post(&op, "/v1/enrollment-tokens", json!({"region": "us"})).await;
    let mut enrolled = Vec::new();
    for (token, host) in [(&own_token, "k8s-0"), (&other_token, "by-hand"), (&us_token, "us-0")] {
        let dp = DataPlane {
            id: format!("dp-{host}"),
            region: String::new(),
            hostname: host.into(),
            version: "0.1.0".into(),
            enrolled_at: now_ms(),
            last_heartbeat_at: None,
            acked_revision: 0,
            latest_revision: 0,
            audit_pending: 0,
            enrolled_by: None,
            credential_sha256: format!("cred-{host}"),
        };
        let sha = omnisql_control_plane::keys::sha256_hex(token["token"].as_str().unwrap());
        enrolled.push(cp.state.store.enroll(&sha, dp).await.unwrap());
    }
    assert_eq!(enrolled[0].enrolled_by.as_deref(), Some("k8s"));
    let (_, listed) = c.get(&k8s, "/v1/data-planes").await;
    let hosts: Vec<_> = listed.as_array().unwrap().iter().map(|d| d["hostname"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["by-hand", "k8s-0"], "only its region's data planes");
    assert_eq!(c.delete(&k8s, "/v1/data-planes/dp-by-hand").await.0, StatusCode::NOT_FOUND, "not enrolled with its tokens");
    assert_eq!(c.delete(&k8s, "/v1/data-planes/dp-us-0").await.0, StatusCode::NOT_FOUND, "not its region");
    assert_eq!(c.delete(&k8s, "/v1/data-planes/dp-k8s-0").await.0, StatusCode::NO_CONTENT);
    let platform_principals = format!("/v1/tenants/{PLATFORM_TENANT}/principals");
    assert_eq!(c.get(&k8s, "/v1/tenants").await.1["items"], json!([]));
    for path in ["/v1/tenants/acme", platform_principals.as_str(), "/v1/tenants/acme/connections", "/v1/tenants/acme/audit"] {
        let s = c.get(&k8s, path).await.0;
        assert!(s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN, "{path}: {s}");
    }
    for id in ["dp-by-hand", "dp-us-0"] {
        assert_eq!(c.delete(&op, &format!("/v1/data-planes/{id}")).await.0, StatusCode::NO_CONTENT);
    }

    // Audit endpoints answer (the data-plane tests fill them).
    let (s, v) = c.get(&alice, "/v1/tenants/acme/audit/verify").await;
    assert_eq!((s, v["valid"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(c.get(&alice, "/v1/tenants/acme/audit?outcome=maybe").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    // Usage per minute, rolled up as events are stored: for the tenant's admins and operators.
    let started = now_ms() - 1_000;
    let event = NewAuditEvent {
        id: format!("usage-{started}"),
        tenant_id: TenantId("acme".into()),
        principal: "alice".into(),
        sql: "SELECT 1".into(),
        tables: vec![],
        api_requests: 2,
        rows: 1,
        bytes: 8,
        duration_ms: 4.0,
        outcome: "ok".into(),
        error: None,
        started_at: started,
        data_plane: "dp".into(),
        policy_revision: None,
        api_requests_by_app: [("GitHub".to_string(), 2)].into(),
        cache_hits: 1,
    };
    cp.state.store.append_audit(&[event], now_ms()).await.unwrap();
    let (s, usage) = c.get(&alice, "/v1/tenants/acme/usage").await;
    assert_eq!(s, StatusCode::OK, "{usage}");
    assert_eq!((usage[0]["queries"].as_i64(), usage[0]["api_requests_by_app"]["GitHub"].as_i64()), (Some(1), Some(2)), "{usage}");
    assert!(usage[0]["p50_ms"].as_f64().is_some_and(|p| (3.0..=5.0).contains(&p)), "{usage}");
    assert_eq!(c.get(&op, "/v1/tenants/acme/usage").await.1, usage);
    let (_, k) = c.post(&alice, "/v1/tenants/acme/api-keys", json!({"principal": "bob"})).await;
    assert_eq!(c.get(k["key"].as_str().unwrap(), "/v1/tenants/acme/usage").await.0, StatusCode::FORBIDDEN, "members");
    assert_eq!(c.get(&gina, "/v1/tenants/acme/usage").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.get(&alice, "/v1/tenants/acme/usage?from=0&to=999999999999").await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(c.get(&op, "/v1/no-such-thing").await.0, StatusCode::NOT_FOUND);
    oidc_flow(&c, &alice, &gina).await;
    browser_sign_in(&c, &alice).await;
    vec![alice, gina, bob, idempotent_key]
}

/// A tenant trusts a real local issuer: its tokens sign in the tenant's existing principals, with their
/// role; tokens of unknown principals, other audiences, expired or signed by unknown keys are refused; two
/// tenants trusting the same issuer need the `x-omnisql-tenant` header.
async fn oidc_flow(c: &Client, alice: &str, gina: &str) {
    use omnisql_oidc::testing::{Key, claims, issuer, now};
    let issuer = issuer().await;
    let key = Key::new("k1");
    issuer.published.lock().unwrap().push(key.jwk());
    let trust = json!({"issuer": issuer.url, "audience": "omnisql"});
    let (_, k) = c.post(alice, "/v1/tenants/acme/api-keys", json!({"principal": "bob"})).await;
    let bob = k["key"].as_str().unwrap();

    assert_eq!(c.get(alice, "/v1/tenants/acme/oidc").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.put(bob, "/v1/tenants/acme/oidc", trust.clone()).await.0, StatusCode::FORBIDDEN, "members cannot");
    assert_eq!(c.put(gina, "/v1/tenants/acme/oidc", trust.clone()).await.0, StatusCode::NOT_FOUND, "another tenant's");
    let (s, e) =
        c.put(alice, "/v1/tenants/acme/oidc", json!({"issuer": "ftp://idp", "audience": "", "principal_claim": "a b"})).await;
    let fields: Vec<_> = e["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!((s, fields), (StatusCode::UNPROCESSABLE_ENTITY, vec!["issuer", "audience", "principal_claim"]));
    let (s, t) = c.put(alice, "/v1/tenants/acme/oidc", trust.clone()).await;
    assert_eq!((s, t["principal_claim"].as_str(), t["groups_claim"].as_str()), (StatusCode::OK, Some("sub"), Some("groups")));
    assert_eq!(c.get(bob, "/v1/tenants/acme/oidc").await.1["issuer"], json!(issuer.url));
    assert_eq!(c.get(gina, "/v1/tenants/acme/oidc").await.0, StatusCode::NOT_FOUND);

    let token = |sub: &str, audience: &str, exp: u64| {
        let mut c = claims(&issuer.url, audience, exp);
        c["sub"] = json!(sub);
        key.sign(&c)
    };
    // An existing principal signs in with its role: bob reads but may not change the tenant.
    let bob_token = token("bob", "omnisql", now() + 300);
    let (s, me) = c.get(&bob_token, "/v1/me").await;
    assert_eq!((s, me["id"].as_str(), me["role"].as_str()), (StatusCode::OK, Some("bob"), Some("tenant_member")), "{me}");
    assert_eq!(c.get(&bob_token, "/v1/tenants/acme/connections").await.0, StatusCode::OK);
    assert_eq!(c.put(&bob_token, "/v1/tenants/acme/oidc", trust.clone()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(c.get(&bob_token, "/v1/tenants/globex").await.0, StatusCode::NOT_FOUND);
    // Refused: a principal the tenant does not have, another audience, expired, an unknown key.
    let (s, e) = c.get(&token("mallory", "omnisql", now() + 300), "/v1/me").await;
    assert!(s == StatusCode::UNAUTHORIZED && e.to_string().contains("not a principal"), "{e}");
    let (s, e) = c.get(&token("bob", "another-app", now() + 300), "/v1/me").await;
    assert!(s == StatusCode::UNAUTHORIZED && e.to_string().contains("no tenant trusts"), "{e}");
    let (s, e) = c.get(&token("bob", "omnisql", now() - 120), "/v1/me").await;
    assert!(s == StatusCode::UNAUTHORIZED && e.to_string().contains("Expired"), "{e}");
    let mut forged = claims(&issuer.url, "omnisql", now() + 300);
    forged["sub"] = json!("alice");
    let (s, e) = c.get(&Key::new("k9").sign(&forged), "/v1/me").await;
    assert!(s == StatusCode::UNAUTHORIZED && e.to_string().contains("k9"), "{e}");

    // globex trusts the same issuer and audience: a token must name its tenant.
    assert_eq!(c.put(gina, "/v1/tenants/globex/oidc", trust.clone()).await.0, StatusCode::OK);
    let (s, e) = c.get(&bob_token, "/v1/me").await;
    assert!(s == StatusCode::UNAUTHORIZED && e.to_string().contains("x-omnisql-tenant"), "{e}");
    let named = c.http.get(format!("{}/v1/me", c.base)).bearer_auth(&bob_token).header("x-omnisql-tenant", "acme");
    assert_eq!(named.send().await.unwrap().status(), StatusCode::OK);
    let wrong = c.http.get(format!("{}/v1/me", c.base)).bearer_auth(&bob_token).header("x-omnisql-tenant", "globex");
    assert_eq!(wrong.send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "bob is not globex's");

    // Trust withdrawn: the token is refused at once.
    assert_eq!(c.delete(alice, "/v1/tenants/acme/oidc").await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.delete(gina, "/v1/tenants/globex/oidc").await.0, StatusCode::NO_CONTENT);
    assert_eq!(c.get(&bob_token, "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(issuer.jwks_requests.load(std::sync::atomic::Ordering::Relaxed), 1, "keys fetched once, then cached");
}

/// What a browser sees at one step of a sign-in: status, where it is sent next, cookies it is given.
struct Step {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
}

impl Step {
    /// The value of cookie `name` this step set (empty when it clears it).
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.iter().find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap().to_string()))
    }

    /// The message of a `/#sign-in-error=…` redirect, decoded.
    fn error(&self) -> String {
        let encoded = self.location.strip_prefix("/#sign-in-error=").unwrap_or_else(|| panic!("not an error: {}", self.location));
        let url = reqwest::Url::parse(&format!("http://x/?m={encoded}")).unwrap();
        url.query_pairs().next().unwrap().1.into_owned()
    }
}

async fn navigate(browser: &reqwest::Client, url: &str, cookie: Option<&str>) -> Step {
    let mut request = browser.get(url);
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    let response = request.send().await.unwrap();
    let header = |name| response.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    Step { status: response.status(), location: header("location").concat(), cookies: header("set-cookie") }
}

/// Browser sign-in through the tenant's issuer (authorization code + PKCE), step by step as a browser
/// follows it: the token reaches the page only through the one-time session call; a foreign state, a
/// replayed code, a wrong verifier, an unknown principal and a declined login are each refused with a
/// message for the sign-in page.
async fn browser_sign_in(c: &Client, alice: &str) {
    use omnisql_oidc::testing::{Key, issuer};
    let issuer = issuer().await;
    let key = Arc::new(Key::new("b1"));
    issuer.published.lock().unwrap().push(key.jwk());
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let start = format!("{}/v1/tenants/acme/sign-in", c.base);
    let callback = |location: &str| {
        assert!(location.starts_with(&format!("{}/v1/sign-in/callback?", c.base)), "{location}");
        location.to_string()
    };

    // No trust yet; an unknown tenant gets the same answer.
    let none = navigate(&browser, &start, None).await;
    assert_eq!(none.status, StatusCode::SEE_OTHER);
    assert!(none.error().contains("does not sign in through an identity provider"), "{}", none.error());
    let unknown = navigate(&browser, &format!("{}/v1/tenants/nobody/sign-in", c.base), None).await;
    assert!(unknown.error().contains("does not sign in through an identity provider"), "{}", unknown.error());

    let trust = json!({"issuer": issuer.url, "audience": "omnisql-dashboard"});
    assert_eq!(c.put(alice, "/v1/tenants/acme/oidc", trust).await.0, StatusCode::OK);
    *issuer.login.lock().unwrap() = Some(("bob".into(), key.clone()));

    // Off to the issuer, with the flow in an HttpOnly cookie for /v1/sign-in only.
    let to_issuer = navigate(&browser, &start, None).await;
    assert_eq!(to_issuer.status, StatusCode::SEE_OTHER);
    assert!(to_issuer.location.starts_with(&format!("{}/authorize?", issuer.url)), "{}", to_issuer.location);
    assert!(
        to_issuer.location.contains("client_id=omnisql-dashboard") && to_issuer.location.contains("code_challenge_method=S256")
    );
    let set = to_issuer.cookies.concat();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/v1/sign-in"), "{set}");
    let flow = format!("omnisql_sign_in={}", to_issuer.cookie("omnisql_sign_in").unwrap());
    assert!(!to_issuer.location.contains(flow.split('.').nth(2).unwrap()), "the PKCE verifier stays in the browser");
    let back = callback(&navigate(&browser, &to_issuer.location, None).await.location);

    // Refused without the browser's cookie, or with another flow's state; neither spends the code.
    assert!(navigate(&browser, &back, None).await.error().contains("no sign-in under way"));
    let other_state = flow.replacen(".st_", ".st_x", 1);
    assert!(navigate(&browser, &back, Some(&other_state)).await.error().contains("another sign-in"));

    // The real return: the token waits in a cookie (not the URL) and the flow cookie is cleared.
    let done = navigate(&browser, &back, Some(&flow)).await;
    assert_eq!((done.status, done.location.as_str()), (StatusCode::SEE_OTHER, "/#signed-in"));
    assert_eq!(done.cookie("omnisql_sign_in").as_deref(), Some(""), "the flow cookie is cleared");
    let signed_in = format!("omnisql_signed_in={}", done.cookie("omnisql_signed_in").unwrap());
    // A replayed code is refused by the issuer.
    let replay = navigate(&browser, &back, Some(&flow)).await.error();
    assert!(replay.contains("refused the code") && replay.contains("already redeemed"), "{replay}");

    // The page takes the token once and calls the API with it as bob, a member.
    let session = |cookie: Option<String>| {
        let mut r = browser.post(format!("{}/v1/sign-in/session", c.base));
        if let Some(cookie) = cookie {
            r = r.header("cookie", cookie);
        }
        r.send()
    };
    let taken = session(Some(signed_in)).await.unwrap();
    assert_eq!(taken.status(), StatusCode::OK);
    assert!(taken.headers()["set-cookie"].to_str().unwrap().starts_with("omnisql_signed_in=;"), "taken once");
    let body: Value = taken.json().await.unwrap();
    assert_eq!(body["tenant"], "acme");
    let token = body["token"].as_str().unwrap();
    let me = c.http.get(format!("{}/v1/me", c.base)).bearer_auth(token).header("x-omnisql-tenant", "acme").send().await.unwrap();
    let me: Value = me.json().await.unwrap();
    assert_eq!((me["id"].as_str(), me["role"].as_str()), (Some("bob"), Some("tenant_member")), "{me}");
    assert_eq!(session(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // A flow whose verifier is not the one its challenge was made from: the issuer keeps the token.
    let to_issuer = navigate(&browser, &start, None).await;
    let flow = format!("omnisql_sign_in={}", to_issuer.cookie("omnisql_sign_in").unwrap());
    let back = callback(&navigate(&browser, &to_issuer.location, None).await.location);
    let wrong = navigate(&browser, &back, Some(&flow.replacen(".pv_", ".pv_x", 1))).await.error();
    assert!(wrong.contains("PKCE"), "{wrong}");

    // Someone the issuer knows but the tenant does not; a user who declines.
    *issuer.login.lock().unwrap() = Some(("mallory".into(), key.clone()));
    let to_issuer = navigate(&browser, &start, None).await;
    let flow = format!("omnisql_sign_in={}", to_issuer.cookie("omnisql_sign_in").unwrap());
    let back = callback(&navigate(&browser, &to_issuer.location, None).await.location);
    let stranger = navigate(&browser, &back, Some(&flow)).await.error();
    assert!(stranger.contains("`mallory`") && stranger.contains("not a principal of tenant `acme`"), "{stranger}");
    *issuer.login.lock().unwrap() = None;
    let to_issuer = navigate(&browser, &start, None).await;
    let flow = format!("omnisql_sign_in={}", to_issuer.cookie("omnisql_sign_in").unwrap());
    let back = callback(&navigate(&browser, &to_issuer.location, None).await.location);
    let declined = navigate(&browser, &back, Some(&flow)).await.error();
    assert!(declined.contains("did not sign you in: access_denied"), "{declined}");

    assert_eq!(c.delete(alice, "/v1/tenants/acme/oidc").await.0, StatusCode::NO_CONTENT);
}

/// Captures log output of everything running on this (current-thread) runtime.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn admin_api_on_sqlite_and_no_secret_reaches_the_database_or_the_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = std::env::temp_dir().join(format!("omnisql-admin-{}", uuid::Uuid::new_v4().simple()));
    let cp = start(format!("sqlite://{}/control.db", dir.display()), &dir).await;
    let operator_key = cp.bootstrap_key.clone().unwrap();
    let shown = admin_flow(&cp).await;
    cp.shutdown().await;

    // Grep every file the control plane wrote (database, WAL) and the logs for the planted secret and
    // for the API keys it handed out.
    let mut haystack = logs.0.lock().unwrap().clone();
    for entry in std::fs::read_dir(&dir).unwrap() {
        // SQLite may remove its -wal/-shm files between the listing and the read: their content is in the
        // database file by then.
        match std::fs::read(entry.unwrap().path()) {
            Ok(bytes) => haystack.extend(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{e}"),
        }
    }
    let text = String::from_utf8_lossy(&haystack);
    assert!(text.contains("control plane listening"), "the logs were captured");
    assert!(text.contains("sealed:v1:"), "the sealed secret is in the database");
    for needle in [PLANTED_SECRET, "PLANTED-secret", operator_key.as_str()].into_iter().chain(shown.iter().map(String::as_str)) {
        assert!(!text.contains(needle), "`{needle}` leaked into the database or the logs");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn admin_api_on_postgres() {
    let pg = PostgresServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("omnisql-admin-pg-{}", uuid::Uuid::new_v4().simple()));
    let cp = start(pg.url.clone(), &dir).await;
    admin_flow(&cp).await;
    cp.shutdown().await;
    // A restart finds the operator and does not create another.
    let again = start(pg.url.clone(), &dir).await;
    assert!(again.bootstrap_key.is_none());
    again.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn openapi_document_is_committed_and_current() {
    // Read where cargo runs the test from: a test binary reused from another checkout of the same
    // target folder must still compare this checkout's document.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let path = std::path::Path::new(&dir).join("openapi.json");
    let current = omnisql_control_plane::api::openapi::document_text();
    if std::env::var_os("OMNISQL_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "control-plane/openapi.json is stale: run `OMNISQL_UPDATE_OPENAPI=1 cargo test -p omnisql-control-plane --test admin_api` and commit it"
    );
    let doc: Value = serde_json::from_str(&committed).unwrap();
    for path in ["/v1/tenants", "/v1/tenants/{tenant}/connections", "/v1/tenants/{tenant}/audit", "/v1/enrollment-tokens"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}

#[tokio::test]
async fn a_bootstrap_key_chosen_by_the_deployer_becomes_the_operators_and_is_never_shown() {
    let dir = std::env::temp_dir().join(format!("omnisql-bootstrap-{}", uuid::Uuid::new_v4().simple()));
    let options = |key: &str| Options {
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}/control.db", dir.display()),
        kms: omnisql_secrets::ProviderConfig::Local { key_file: dir.join("master.key") },
        default_key_id: "local".into(),
        connectors: vec![],
        grpc_tls: None,
        bootstrap_key: Some(key.into()),
        oidc_allow_http: true,
        public_url: None,
        smoke_tests: None,
    };
    let weak = ControlPlane::start(options("short")).await.map(|_| ()).unwrap_err();
    assert!(weak.to_string().contains("at least 32 characters"), "{weak}");
    let key = "omk_deployer-chosen-0123456789abcdef0123";
    let cp = ControlPlane::start(options(key)).await.unwrap();
    assert!(cp.bootstrap_key.is_none(), "a provided key is not handed back");
    let c = Client { http: reqwest::Client::new(), base: cp.admin_url() };
    assert_eq!(c.get(key, "/v1/me").await.1["role"], "platform_operator");
    cp.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
