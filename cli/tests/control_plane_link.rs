#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A data plane configured by a real control plane: enrollment, the configuration watch, revocation
//! and deletion reaching the data plane, serving from disk while the control plane is down, resuming
//! the watch, and every query attempt's audit event arriving exactly once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omnisql_control_plane::model::{ConnectorVersion, ParameterSpec};
use omnisql_control_plane::{ControlPlane, Options};
use omnisql_data_plane::control::{ControlLink, LinkOptions};
use omnisql_engine::audit::Outbox;
use omnisql_engine::{Config, Engine, EngineOptions};
use omnisql_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};

fn catalog() -> Vec<ConnectorVersion> {
    omnisql_connectors::all()
        .iter()
        .map(|f| ConnectorVersion {
            name: f.name().into(),
            version: f.version().into(),
            parameters: f
                .parameters()
                .iter()
                .map(|p| ParameterSpec {
                    name: p.name.into(),
                    description: p.description.into(),
                    required: p.required && p.default.is_none(),
                    secret: p.secret,
                })
                .collect(),
            tables: vec![],
            created_at: 0,
        })
        .collect()
}

async fn control_plane(dir: &Path, grpc_addr: &str) -> ControlPlane {
    control_plane_with(dir, grpc_addr, None).await
}

async fn control_plane_with(
    dir: &Path,
    grpc_addr: &str,
    smoke_tests: Option<Arc<dyn omnisql_control_plane::smoke::SmokeTests>>,
) -> ControlPlane {
    ControlPlane::start(Options {
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: grpc_addr.into(),
        database_url: format!("sqlite://{}/cp.db", dir.display()),
        kms: omnisql_secrets::ProviderConfig::Local { key_file: dir.join("master.key") },
        default_key_id: "local".into(),
        connectors: catalog(),
        grpc_tls: None,
        bootstrap_key: None,
        oidc_allow_http: true,
        public_url: None,
        smoke_tests,
    })
    .await
    .unwrap()
}

struct Admin {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Admin {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}

/// A data plane in this process: engine, outbox, link, Flight SQL on a free port.
struct Plane {
    link: ControlLink,
    uri: String,
    server: tokio::task::JoinHandle<()>,
}

impl Plane {
    async fn start(grpc_url: &str, token: Option<String>, state: &Path) -> Plane {
        let engine = Arc::new(
            Engine::new(&Config::default(), EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() })
                .unwrap(),
        );
        let outbox = Outbox::open(&state.join("audit")).unwrap();
        let options = LinkOptions {
            url: grpc_url.into(),
            enrollment_token: token,
            state_dir: state.to_path_buf(),
            kms: omnisql_secrets::ProviderConfig::Local { key_file: state.parent().unwrap().join("cp/master.key") },
            ca_pem: None,
        };
        let link = omnisql_data_plane::control::start(engine.clone(), outbox.clone(), options).await.unwrap();
        let listener = omnisql_data_plane::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = omnisql_data_plane::serve(engine, Some(outbox), listener, None, std::future::pending()).await;
        });
        Plane { link, uri, server }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const QUERY: &str = "SELECT count(*) AS n FROM github.repos";

/// Runs the query; `Err` carries the gRPC message.
async fn query(uri: &str, key: &str) -> Result<i64, String> {
    let batches = query_sql(uri, key, QUERY).await?;
    let col = batches[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap();
    Ok(col.value(0))
}

async fn query_sql(uri: &str, key: &str, sql: &str) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>, String> {
    let mut client = omnisql_data_plane::client::connect(uri, key).await.map_err(|e| e.to_string())?;
    omnisql_data_plane::client::query(&mut client, sql).await.map_err(|e| e.to_string())
}

/// Polls until `done` holds, returning how long it took.
async fn time_until<F, Fut>(mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(20), "no change reached the data plane within 20 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("omnisql-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(d.join("cp")).unwrap();
    d
}

/// Sets up tenant `acme` (region eu) with a member key and a GitHub connection; returns the key and its id.
async fn tenant(admin: &Admin, sandbox: &Sandbox) -> (String, String) {
    admin.post("/v1/tenants", json!({"id": "acme", "name": "Acme", "region": "eu"})).await;
    admin.post("/v1/tenants/acme/principals", json!({"id": "ann", "kind": "user", "role": "tenant_member"})).await;
    let key = admin.post("/v1/tenants/acme/api-keys", json!({"principal": "ann"})).await;
    let github = sandbox.connections().into_iter().find(|c| c.connector == "github").unwrap();
    admin.post("/v1/tenants/acme/connections", json!({"name": "github", "connector": "github", "options": github.options})).await;
    (key["key"].as_str().unwrap().to_string(), key["api_key"]["id"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_deletion_reach_the_data_plane_within_seconds() {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = temp_dir("link");
    let cp = control_plane(&dir.join("cp"), "127.0.0.1:0").await;
    let admin = Admin { http: reqwest::Client::new(), url: cp.admin_url(), key: cp.bootstrap_key.clone().unwrap() };
    let (key, key_id) = tenant(&admin, &sandbox).await;
    let enrollment = admin.post("/v1/enrollment-tokens", json!({"region": "eu"})).await;
    let plane = Plane::start(&cp.grpc_url(), enrollment["token"].as_str().map(String::from), &dir.join("dp")).await;
    plane.link.applied(cp.state.store.revision().await.unwrap() as u64).await;
    assert_eq!(plane.link.region, "eu");
    assert_eq!(query(&plane.uri, &key).await, Ok(4));

    // A key created now works on the data plane within moments.
    let created_at = Instant::now();
    let second = admin.post("/v1/tenants/acme/api-keys", json!({"principal": "ann"})).await;
    let second = second["key"].as_str().unwrap().to_string();
    let grant = time_until(|| async { query(&plane.uri, &second).await.is_ok() }).await;

    // Revocation.
    let revoked_at = Instant::now();
    admin.send(reqwest::Method::DELETE, &format!("/v1/tenants/acme/api-keys/{key_id}"), None).await;
    let revoke = time_until(|| async { query(&plane.uri, &key).await.is_err_and(|e| e.contains("unknown or revoked")) }).await;

    // A failed query is one audit event too, with its error.
    assert!(query_sql(&plane.uri, &second, "SELECT * FROM github.nope").await.is_err());

    // Deleting the connection removes its schema.
    let deleted_at = Instant::now();
    admin.send(reqwest::Method::DELETE, "/v1/tenants/acme/connections/github", None).await;
    let delete = time_until(|| async { query(&plane.uri, &second).await.is_err_and(|e| e.contains("github")) }).await;
    println!(
        "after the admin API answered, the data plane had: a new key in {grant:?}, a revocation in {revoke:?}, a deleted connection in {delete:?} (API calls took {:?}, {:?}, {:?})",
        created_at.elapsed() - grant,
        revoked_at.elapsed() - revoke,
        deleted_at.elapsed() - delete
    );
    // Deleting the tenant removes it from the data plane.
    admin.send(reqwest::Method::DELETE, "/v1/tenants/acme", None).await;
    let removed =
        time_until(|| async { query(&plane.uri, &second).await.is_err_and(|e| e.contains("unknown or revoked")) }).await;
    println!("a deleted tenant's keys were refused {removed:?} after the admin API answered");
    let errors = admin.send(reqwest::Method::GET, "/v1/tenants/acme/audit?outcome=error", None).await;
    let errors = errors["items"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["sql"] == "SELECT * FROM github.nope" && e["error"].as_str().unwrap().contains("nope")));

    // The data plane reaches the latest revision (and has saved it).
    let latest = cp.state.store.revision().await.unwrap() as u64;
    let reached = tokio::time::timeout(Duration::from_secs(5), plane.link.applied(latest)).await;
    assert!(reached.is_ok(), "the data plane never applied revision {latest}");

    // The saved configuration holds sealed secrets only.
    let saved = std::fs::read(dir.join("dp/config.pb")).unwrap();
    let token = sandbox.connections().into_iter().find(|c| c.connector == "github").unwrap().options["token"].clone();
    assert!(!String::from_utf8_lossy(&saved).contains(&token), "the plaintext credential reached the data plane's disk");

    // An operator removes the data plane: it fails closed and forgets its credential.
    admin.post("/v1/tenants", json!({"id": "beta", "name": "Beta", "region": "eu"})).await;
    admin.post("/v1/tenants/beta/principals", json!({"id": "bo", "kind": "user", "role": "tenant_member"})).await;
    let bo = admin.post("/v1/tenants/beta/api-keys", json!({"principal": "bo"})).await["key"].as_str().unwrap().to_string();
    time_until(|| async { query_sql(&plane.uri, &bo, "SELECT 1").await.is_ok() }).await;
    admin.send(reqwest::Method::DELETE, &format!("/v1/data-planes/{}", plane.link.data_plane_id), None).await;
    let cut = time_until(|| async { query_sql(&plane.uri, &bo, "SELECT 1").await.is_err() }).await;
    println!("a removed data plane stopped serving {cut:?} after the admin API answered");
    assert!(!dir.join("dp/identity.json").exists() && !dir.join("dp/config.pb").exists());
    drop(plane);
    cp.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_serves_its_saved_configuration_while_the_control_plane_is_down_and_resumes_the_watch() {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = temp_dir("offline");
    let grpc_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let cp = control_plane(&dir.join("cp"), &grpc_addr).await;
    let operator = cp.bootstrap_key.clone().unwrap();
    let admin = Admin { http: reqwest::Client::new(), url: cp.admin_url(), key: operator.clone() };
    let (key, _) = tenant(&admin, &sandbox).await;
    let enrollment = admin.post("/v1/enrollment-tokens", json!({"region": "eu"})).await;
    let plane = Plane::start(&cp.grpc_url(), enrollment["token"].as_str().map(String::from), &dir.join("dp")).await;
    let revision = cp.state.store.revision().await.unwrap() as u64;
    plane.link.applied(revision).await;
    assert_eq!(query(&plane.uri, &key).await, Ok(4));

    // The control plane goes away; the data plane restarts and serves from disk.
    cp.shutdown().await;
    drop(plane);
    let plane = Plane::start(&format!("http://{grpc_addr}"), None, &dir.join("dp")).await;
    assert_eq!(plane.link.revision(), revision, "the saved configuration is applied at start");
    for _ in 0..3 {
        assert_eq!(query(&plane.uri, &key).await, Ok(4));
    }
    assert!(query(&plane.uri, "omk_not-a-key-at-all-000000000000").await.is_err());

    // The control plane returns on the same address; a change made now reaches the data plane.
    let cp = control_plane(&dir.join("cp"), &grpc_addr).await;
    assert!(cp.bootstrap_key.is_none());
    let admin = Admin { http: reqwest::Client::new(), url: cp.admin_url(), key: operator };
    let later = admin.post("/v1/tenants/acme/api-keys", json!({"principal": "ann"})).await;
    let later = later["key"].as_str().unwrap().to_string();
    let resumed = time_until(|| async { query(&plane.uri, &later).await.is_ok() }).await;
    println!("after the control plane returned, a new key reached the data plane in {resumed:?}");

    // Every attempt (5 ok, 1 unauthenticated before; those of the polling above) is stored once.
    let verify = time_until(|| async {
        let page = admin.send(reqwest::Method::GET, "/v1/tenants/acme/audit?limit=500", None).await;
        let outcomes: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
        outcomes.iter().filter(|o| **o == "ok").count() >= 5
    })
    .await;
    let page = admin.send(reqwest::Method::GET, "/v1/tenants/acme/audit?limit=500", None).await;
    let ids: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no audit event is stored twice");
    let chain = admin.send(reqwest::Method::GET, "/v1/tenants/acme/audit/verify", None).await;
    assert_eq!(chain["valid"], true);
    let platform = admin.send(reqwest::Method::GET, "/v1/tenants/_platform/audit?outcome=unauthenticated", None).await;
    assert!(!platform["items"].as_array().unwrap().is_empty(), "failed logins are audited too");
    println!("audit events of the tenant: {} (shipped {verify:?} after the check began)", ids.len());
    drop(plane);
    cp.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_control_plane_is_trusted_through_its_ca_and_refused_without_it() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A private CA and a certificate for 127.0.0.1 signed by it, as a hosted control plane might use.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let dir = temp_dir("tls");
    let cp = ControlPlane::start(Options {
        http_addr: "127.0.0.1:0".into(),
        grpc_addr: "127.0.0.1:0".into(),
        database_url: format!("sqlite://{}/cp.db", dir.join("cp").display()),
        kms: omnisql_secrets::ProviderConfig::Local { key_file: dir.join("cp/master.key") },
        default_key_id: "local".into(),
        connectors: catalog(),
        grpc_tls: Some(
            omnisql_control_plane::ServerTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap(),
        ),
        bootstrap_key: None,
        oidc_allow_http: true,
        public_url: None,
        smoke_tests: None,
    })
    .await
    .unwrap();
    assert!(cp.grpc_url().starts_with("https://"), "{}", cp.grpc_url());
    let admin = Admin { http: reqwest::Client::new(), url: cp.admin_url(), key: cp.bootstrap_key.clone().unwrap() };
    let engine = Arc::new(
        Engine::new(&Config::default(), EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() })
            .unwrap(),
    );
    let link = |state: &str, ca_pem: Option<Vec<u8>>, token: String| {
        let (engine, state) = (engine.clone(), dir.join(state));
        let options = LinkOptions {
            url: cp.grpc_url(),
            enrollment_token: Some(token),
            kms: omnisql_secrets::ProviderConfig::Local { key_file: dir.join("cp/master.key") },
            ca_pem,
            state_dir: state.clone(),
        };
        async move {
            let outbox = Outbox::open(&state.join("audit")).unwrap();
            omnisql_data_plane::control::start(engine, outbox, options).await
        }
    };

    // Without the CA (public roots only) the certificate is refused, and the error says so.
    let token = admin.post("/v1/enrollment-tokens", json!({"region": "eu"})).await["token"].as_str().unwrap().to_string();
    let refused = link("untrusting", None, token.clone()).await.unwrap_err().to_string();
    println!("without the CA: {refused}");
    assert!(refused.contains("certificate") || refused.contains("UnknownIssuer"), "{refused}");
    // With it, the same token enrols (it was not spent) and the configuration arrives.
    let linked = link("trusting", Some(ca.pem().into_bytes()), token).await.unwrap();
    let listed = admin.send(reqwest::Method::GET, "/v1/data-planes", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    time_until(|| async { linked.revision() > 0 }).await;
    drop(linked);
    cp.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_tests_a_connection_through_a_data_plane_of_the_tenants_region() {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = temp_dir("test-connection");
    let cp = control_plane(&dir.join("cp"), "127.0.0.1:0").await;
    let admin = Admin { http: reqwest::Client::new(), url: cp.admin_url(), key: cp.bootstrap_key.clone().unwrap() };
    let (member_key, _) = tenant(&admin, &sandbox).await;
    let test = |key: String, name: &'static str| {
        let (http, url) = (admin.http.clone(), admin.url.clone());
        async move {
            let resp = http.post(format!("{url}/v1/tenants/acme/connections/{name}/test")).bearer_auth(key).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };

    // No data plane of region eu yet: the admin is told so at once.
    let (status, body) = test(admin.key.clone(), "github").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no data plane of region `eu` is connected"), "{body}");

    let enrollment = admin.post("/v1/enrollment-tokens", json!({"region": "eu"})).await;
    let plane = Plane::start(&cp.grpc_url(), enrollment["token"].as_str().map(String::from), &dir.join("dp")).await;
    plane.link.applied(cp.state.store.revision().await.unwrap() as u64).await;
    time_until(|| async { cp.state.store.list_data_planes().await.unwrap().iter().any(|dp| dp.last_heartbeat_at.is_some()) })
        .await;

    // A working connection: the data plane read one row of its first table that needs no filter.
    let (status, body) = test(admin.key.clone(), "github").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data_plane"], plane.link.data_plane_id.as_str(), "{body}");
    let result = &body["result"];
    assert_eq!(result["ok"], true, "{body}");
    assert_eq!(result["rows"], 1, "{body}");
    assert!(result["tables"].as_u64().unwrap() >= 3, "{body}");
    let table = result["table"].as_str().unwrap().to_string();
    assert!(result["api_requests"].as_u64().unwrap() >= 1, "the test must reach the API, not a cache: {body}");

    // Wrong credentials: the test fails with the API's refusal, and says what to do.
    let mut options = sandbox.connections().into_iter().find(|c| c.connector == "github").unwrap().options;
    options.insert("token".into(), "ghp_not_a_real_token".into());
    admin.post("/v1/tenants/acme/connections", json!({"name": "github_bad", "connector": "github", "options": options})).await;
    plane.link.applied(cp.state.store.revision().await.unwrap() as u64).await;
    let (status, body) = test(admin.key.clone(), "github_bad").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["ok"], false, "{body}");
    assert!(body["result"]["error"].as_str().unwrap().contains("rejected the credentials"), "{body}");

    // Only admins test connections; an unknown connection is a 404.
    assert_eq!(test(member_key, "github").await.0, 403);
    assert_eq!(test(admin.key.clone(), "nope").await.0, 404);

    // Each test is a query attempt in the tenant's audit trail, with the table it read.
    let expected = format!("github.{table}");
    time_until(|| async {
        let audit = admin.send(reqwest::Method::GET, "/v1/tenants/acme/audit", None).await;
        let tests: Vec<&Value> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["sql"].as_str().unwrap().starts_with("-- connection test"))
            .collect();
        tests.iter().any(|e| e["outcome"] == "ok" && e["tables"].as_array().unwrap().iter().any(|t| t == &expected))
            && tests.iter().any(|e| e["outcome"] == "error")
    })
    .await;
    drop(plane);
    cp.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Smoke tests against a healthy sandbox, or — while `broken` is set — one whose Slack fails every request.
#[derive(Debug)]
struct Switchable {
    broken: std::sync::atomic::AtomicBool,
    healthy: omnisql_cli::smoke::SandboxSmokeTests,
    failing: omnisql_cli::smoke::SandboxSmokeTests,
}

impl omnisql_control_plane::smoke::SmokeTests for Switchable {
    fn run<'a>(
        &'a self,
        connector: &'a str,
        version: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = omnisql_control_plane::smoke::SmokeReport> + Send + 'a>> {
        if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
            self.failing.run(connector, version)
        } else {
            self.healthy.run(connector, version)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_runs_the_versions_smoke_tests_first_and_a_pinned_connection_keeps_answering() {
    use omnisql_sandbox::{Faults, Quotas, Settings};
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = temp_dir("upgrade");
    let failing = SandboxConfig {
        quotas: Quotas::generous(),
        slack: Settings { faults: Faults { server_error_rate: 1.0, ..Faults::default() }, ..Settings::default() },
        ..SandboxConfig::default()
    };
    let smoke = Arc::new(Switchable {
        broken: true.into(),
        healthy: omnisql_cli::smoke::SandboxSmokeTests::new(),
        failing: omnisql_cli::smoke::SandboxSmokeTests::with_config(failing),
    });
    let cp = control_plane_with(&dir.join("cp"), "127.0.0.1:0", Some(smoke.clone())).await;
    let admin = Admin { http: reqwest::Client::new(), url: cp.admin_url(), key: cp.bootstrap_key.clone().unwrap() };
    let (key, _) = tenant(&admin, &sandbox).await;
    let slack = sandbox.connections().into_iter().find(|c| c.connector == "slack").unwrap();
    for name in ["slack_pinned", "slack_moving"] {
        let body = json!({"name": name, "connector": "slack", "version": "1.0.0", "options": slack.options});
        admin.post("/v1/tenants/acme/connections", body).await;
    }
    let enrollment = admin.post("/v1/enrollment-tokens", json!({"region": "eu"})).await;
    let plane = Plane::start(&cp.grpc_url(), enrollment["token"].as_str().map(String::from), &dir.join("dp")).await;
    plane.link.applied(cp.state.store.revision().await.unwrap() as u64).await;
    let count = |schema: &'static str, column: &'static str| {
        let (uri, key) = (plane.uri.clone(), key.clone());
        async move {
            let batches = query_sql(&uri, &key, &format!("SELECT count({column}) AS n FROM {schema}.messages")).await?;
            Ok::<i64, String>(
                batches[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0),
            )
        }
    };
    let before = count("slack_pinned", "user_id").await.unwrap();
    assert!(before > 0);
    assert_eq!(count("slack_moving", "user_id").await, Ok(before));

    let upgrade = |version: &'static str, key: String| {
        let url = format!("{}/v1/tenants/acme/connections/slack_moving/upgrade", cp.admin_url());
        async move {
            let resp = reqwest::Client::new().post(url).bearer_auth(key).json(&json!({"version": version})).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // A version the catalog does not have, and a member who is not an admin.
    let (status, body) = upgrade("9.9.9", admin.key.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("1.0.0, 2.0.0"), "{body}");
    assert_eq!(upgrade("2.0.0", key.clone()).await.0, 403);

    // Version 2's smoke tests fail (every Slack request answers 503): refused, nothing changes.
    let (status, body) = upgrade("2.0.0", admin.key.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["upgraded"], false);
    assert_eq!(body["smoke"]["passed"], false);
    let checks = body["smoke"]["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["ok"] == false && c["error"].as_str().unwrap().contains("Slack")), "{body}");
    assert_eq!(admin.send(reqwest::Method::GET, "/v1/tenants/acme/connections/slack_moving", None).await["version"], "1.0.0");
    assert_eq!(count("slack_moving", "user_id").await, Ok(before));

    // They pass: upgraded, and the data plane switches that connection only.
    smoke.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = upgrade("2.0.0", admin.key.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["upgraded"].as_bool(), body["from_version"].as_str()), (Some(true), Some("1.0.0")));
    let checks = body["smoke"]["checks"].as_array().unwrap();
    let tables: Vec<&str> = checks.iter().map(|c| c["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["channels", "users", "messages"]);
    assert!(
        checks.iter().all(|c| c["ok"] == true && c["rows"].as_u64() > Some(0) && c["api_requests"].as_u64() > Some(0)),
        "{body}"
    );
    assert_eq!(admin.send(reqwest::Method::GET, "/v1/tenants/acme/connections/slack_moving", None).await["version"], "2.0.0");
    time_until(|| async { count("slack_moving", "author_id").await == Ok(before) }).await;
    assert!(count("slack_moving", "user_id").await.is_err_and(|e| e.contains("user_id")), "version 2 renamed the column");
    assert_eq!(count("slack_pinned", "user_id").await, Ok(before), "the pinned connection answers as before");
    drop(plane);
    cp.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
