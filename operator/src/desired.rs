//! The objects a valid `DataPlane` asks for, as pure functions of the resource: no API calls here, so
//! every rule (what the pods run, what they may reach) is a unit test away.
//!
//! Each replica runs `omnisql data-plane` with its identity, configuration and audit outbox on a
//! volume of its own, and enrols once with the token the operator left for it under its pod name.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SecretEnvSource, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::resource::DataPlane;

/// Where each pod finds its enrolment token (a file named after the pod) and keeps its state.
pub const ENROLLMENT_DIR: &str = "/var/run/omnisql/enrollment";
pub const STATE_DIR: &str = "/var/lib/omnisql";
pub const CA_DIR: &str = "/var/run/omnisql/control-plane-ca";
pub const FLIGHT_TLS_DIR: &str = "/var/run/omnisql/flight-sql-tls";
pub const HEALTH_PORT: i32 = 8080;
/// The user the image runs as (not root).
pub const RUN_AS: i64 = 65532;

/// Every object the operator applies for one `DataPlane`.
#[derive(Debug, Clone)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub stateful_set: StatefulSet,
    pub service: Service,
    pub pods_service: Service,
    pub disruption_budget: PodDisruptionBudget,
    pub network_policy: NetworkPolicy,
    /// The control plane's CA bundle, mounted into the pods, when the spec has one.
    pub ca_bundle: Option<ConfigMap>,
}

/// Names of the objects, derived from the resource's name.
pub fn enrollment_secret(dp: &DataPlane) -> String {
    format!("{}-enrollment", dp.name_any())
}

fn ca_config_map(dp: &DataPlane) -> String {
    format!("{}-control-plane-ca", dp.name_any())
}

fn pods_service(dp: &DataPlane) -> String {
    format!("{}-pods", dp.name_any())
}

/// The pod names of replicas `0..replicas`, as the StatefulSet names them.
pub fn pod_names(dp: &DataPlane, replicas: i32) -> Vec<String> {
    (0..replicas.max(0)).map(|i| format!("{}-{i}", dp.name_any())).collect()
}

/// Labels that select this `DataPlane`'s pods.
pub fn selector_labels(dp: &DataPlane) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "omnisql-data-plane".to_string()),
        ("app.kubernetes.io/instance".to_string(), dp.name_any()),
    ])
}

fn labels(dp: &DataPlane) -> BTreeMap<String, String> {
    let mut l = selector_labels(dp);
    l.insert("app.kubernetes.io/managed-by".into(), "omnisql-operator".into());
    l.insert("app.kubernetes.io/version".into(), dp.spec.version.clone());
    l.insert("omnisql.io/region".into(), dp.spec.region.clone());
    l
}

fn meta(dp: &DataPlane, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: dp.namespace(),
        labels: Some(labels(dp)),
        owner_references: owner(dp).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Owned objects go when the `DataPlane` goes.
fn owner(dp: &DataPlane) -> Option<OwnerReference> {
    dp.controller_owner_ref(&())
}

/// Builds everything; the spec must have passed [`crate::resource::DataPlaneSpec::validate`].
pub fn desired(dp: &DataPlane) -> Desired {
    Desired {
        service_account: ServiceAccount {
            metadata: meta(dp, dp.name_any()),
            // The data plane never calls the Kubernetes API.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        stateful_set: stateful_set(dp),
        service: service(dp, dp.name_any(), false),
        pods_service: service(dp, pods_service(dp), true),
        disruption_budget: PodDisruptionBudget {
            metadata: meta(dp, dp.name_any()),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector { match_labels: Some(selector_labels(dp)), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        },
        network_policy: network_policy(dp),
        ca_bundle: dp.spec.control_plane.ca_bundle.as_ref().map(|pem| ConfigMap {
            metadata: meta(dp, ca_config_map(dp)),
            data: Some(BTreeMap::from([("ca.pem".to_string(), pem.clone())])),
            ..Default::default()
        }),
    }
}

/// The arguments of `omnisql data-plane` for this spec. `$(POD_NAME)` is expanded by the kubelet.
pub fn args(dp: &DataPlane) -> Vec<String> {
    let s = &dp.spec;
    let mut a = vec![
        "data-plane".to_string(),
        format!("--control-plane={}", s.control_plane.url),
        format!("--enrollment-token-file={ENROLLMENT_DIR}/$(POD_NAME)"),
        format!("--state-dir={STATE_DIR}/state"),
        format!("--flight-addr=0.0.0.0:{}", s.flight_sql.port),
        format!("--health-addr=0.0.0.0:{HEALTH_PORT}"),
        format!("--kms={}", s.kms.provider),
    ];
    if s.kms.provider == "local" {
        a.push(format!("--kms-key-file={STATE_DIR}/master.key"));
    }
    if let Some(e) = &s.kms.endpoint {
        a.push(format!("--kms-endpoint={e}"));
    }
    if let Some(r) = &s.kms.region {
        a.push(format!("--kms-region={r}"));
    }
    if s.control_plane.ca_bundle.is_some() {
        a.push(format!("--control-plane-ca-file={CA_DIR}/ca.pem"));
    }
    if let Some(pg) = &s.postgres {
        a.push(format!("--pg-addr=0.0.0.0:{}", pg.port));
    }
    if s.flight_sql.tls_secret.is_some() {
        a.push(format!("--flight-tls-cert={FLIGHT_TLS_DIR}/tls.crt"));
        a.push(format!("--flight-tls-key={FLIGHT_TLS_DIR}/tls.key"));
    }
    if let Some(c) = s.cache_mib {
        a.push(format!("--cache-mib={c}"));
    }
    if let Some(c) = s.result_cache_mib {
        a.push(format!("--result-cache-mib={c}"));
    }
    if let Some(m) = &s.memory_limit {
        a.push(format!("--memory-limit={m}"));
    }
    if let Some(r) = &s.redis_url {
        a.push(format!("--redis-url={r}"));
    }
    for u in &s.opa_urls {
        a.push(format!("--opa-allow-url={u}"));
    }
    a
}

fn stateful_set(dp: &DataPlane) -> StatefulSet {
    let s = &dp.spec;
    let env = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        },
        EnvVar { name: "OMNISQL_LOG".into(), value: Some("info".into()), ..Default::default() },
    ];
    let mut volumes = vec![Volume {
        name: "enrollment".into(),
        secret: Some(SecretVolumeSource { secret_name: Some(enrollment_secret(dp)), optional: Some(true), ..Default::default() }),
        ..Default::default()
    }];
    let mut mounts = vec![
        VolumeMount { name: "state".into(), mount_path: STATE_DIR.into(), ..Default::default() },
        VolumeMount { name: "enrollment".into(), mount_path: ENROLLMENT_DIR.into(), read_only: Some(true), ..Default::default() },
    ];
    if s.control_plane.ca_bundle.is_some() {
        volumes.push(Volume {
            name: "control-plane-ca".into(),
            config_map: Some(ConfigMapVolumeSource { name: ca_config_map(dp), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "control-plane-ca".into(),
            mount_path: CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if let Some(secret) = &s.flight_sql.tls_secret {
        // Mounted as a directory (not subPath) so the kubelet's updates of a renewed Secret reach the pod.
        volumes.push(Volume {
            name: "flight-sql-tls".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret.clone()), optional: Some(false), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "flight-sql-tls".into(),
            mount_path: FLIGHT_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let env_from = s.kms.credentials_secret.as_ref().map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: name.clone(), optional: Some(false) }),
            ..Default::default()
        }]
    });
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(HEALTH_PORT), ..Default::default() }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let container = Container {
        name: "data-plane".into(),
        image: Some(s.image_ref()),
        image_pull_policy: s.image_pull_policy.clone(),
        command: Some(vec!["omnisql".into()]),
        args: Some(args(dp)),
        env: Some(env),
        env_from,
        ports: Some(
            [
                Some(ContainerPort { name: Some("flight-sql".into()), container_port: s.flight_sql.port, ..Default::default() }),
                s.postgres.as_ref().map(|pg| ContainerPort {
                    name: Some("postgres".into()),
                    container_port: pg.port,
                    ..Default::default()
                }),
                Some(ContainerPort { name: Some("health".into()), container_port: HEALTH_PORT, ..Default::default() }),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        readiness_probe: Some(probe("/ready", 5)),
        liveness_probe: Some(probe("/live", 10)),
        volume_mounts: Some(mounts),
        resources: s.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut claim_spec = PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([("storage".to_string(), Quantity(s.storage.size.clone()))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    claim_spec.storage_class_name = s.storage.storage_class_name.clone();
    StatefulSet {
        metadata: meta(dp, dp.name_any()),
        spec: Some(StatefulSetSpec {
            replicas: Some(s.replicas),
            service_name: Some(pods_service(dp)),
            selector: LabelSelector { match_labels: Some(selector_labels(dp)), ..Default::default() },
            // One at a time: each replica enrols before the next starts, and an upgrade replaces one
            // pod at a time, waiting until the new one is serving.
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy { partition: Some(0), ..Default::default() }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(dp)),
                    // Prometheus's conventional pod annotations: the health port serves /metrics.
                    annotations: Some(BTreeMap::from([
                        ("prometheus.io/scrape".to_string(), "true".to_string()),
                        ("prometheus.io/port".to_string(), HEALTH_PORT.to_string()),
                        ("prometheus.io/path".to_string(), "/metrics".to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(dp.name_any()),
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
                    tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
                    affinity: s.affinity.clone(),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta { name: Some("state".into()), labels: Some(selector_labels(dp)), ..Default::default() },
                spec: Some(claim_spec),
                ..Default::default()
            }]),
            // Identity and audit outbox stay when a replica is scaled away and back.
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(dp: &DataPlane, name: String, headless: bool) -> Service {
    Service {
        metadata: meta(dp, name),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(dp)),
            cluster_ip: headless.then(|| "None".to_string()),
            publish_not_ready_addresses: headless.then_some(true),
            ports: Some(
                [Some(("flight-sql", dp.spec.flight_sql.port)), dp.spec.postgres.as_ref().map(|pg| ("postgres", pg.port))]
                    .into_iter()
                    .flatten()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.into()),
                        port,
                        target_port: Some(IntOrString::String(name.into())),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ingress: Flight SQL, the Postgres protocol where served, and the health port only. Egress: DNS, and 443/the named ports to the address
/// blocks the spec lists for the SaaS APIs and the platform (control plane, KMS, Redis). Nothing else.
fn network_policy(dp: &DataPlane) -> NetworkPolicy {
    let port = |p: i32, proto: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some(proto.into()),
        ..Default::default()
    };
    let blocks = |cidrs: &[String]| -> Vec<NetworkPolicyPeer> {
        cidrs
            .iter()
            .map(|c| NetworkPolicyPeer { ip_block: Some(IPBlock { cidr: c.clone(), except: None }), ..Default::default() })
            .collect()
    };
    let mut egress = vec![NetworkPolicyEgressRule { ports: Some(vec![port(53, "UDP"), port(53, "TCP")]), to: None }];
    if !dp.spec.egress.api_cidrs.is_empty() {
        egress.push(NetworkPolicyEgressRule { ports: Some(vec![port(443, "TCP")]), to: Some(blocks(&dp.spec.egress.api_cidrs)) });
    }
    if !dp.spec.egress.platform_cidrs.is_empty() {
        let mut ports = vec![port(443, "TCP")];
        for url in [
            Some(&dp.spec.control_plane.url),
            Some(&dp.spec.control_plane.admin_url),
            dp.spec.kms.endpoint.as_ref(),
            dp.spec.redis_url.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(&dp.spec.opa_urls)
        {
            if let Some(p) = url_port(url) {
                if !ports.iter().any(|q| q.port == Some(IntOrString::Int(p))) {
                    ports.push(port(p, "TCP"));
                }
            }
        }
        egress.push(NetworkPolicyEgressRule { ports: Some(ports), to: Some(blocks(&dp.spec.egress.platform_cidrs)) });
    }
    NetworkPolicy {
        metadata: meta(dp, dp.name_any()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(selector_labels(dp)), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(
                    [Some(dp.spec.flight_sql.port), dp.spec.postgres.as_ref().map(|pg| pg.port), Some(HEALTH_PORT)]
                        .into_iter()
                        .flatten()
                        .map(|p| port(p, "TCP"))
                        .collect(),
                ),
                from: None,
            }]),
            egress: Some(egress),
        }),
    }
}

/// The explicit port of `scheme://host:port/…`, if any.
fn url_port(url: &str) -> Option<i32> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next()?;
    let (_, port) = host_port.rsplit_once(':')?;
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::DataPlaneSpec;

    fn data_plane(extra: serde_json::Value) -> DataPlane {
        let mut spec = serde_json::json!({
            "region": "eu-west",
            "replicas": 2,
            "version": "0.1.0",
            "controlPlane": {"url": "https://cp.example:7070", "adminUrl": "https://cp.example", "credentialsSecret": "omnisql-operator"},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let spec: DataPlaneSpec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
        let mut dp = DataPlane::new("analytics", spec);
        dp.metadata.namespace = Some("omnisql".into());
        dp.metadata.uid = Some("6f1c7f3e-0000-4000-8000-000000000001".into());
        dp
    }

    #[test]
    fn the_pods_run_the_data_plane_with_their_own_token_and_volume() {
        let dp = data_plane(serde_json::json!({
            "memoryLimit": "2GiB",
            "cacheMib": 32,
            "resultCacheMib": 8,
            "kms": {"provider": "aws-kms", "region": "eu-west-1"}
        }));
        let d = desired(&dp);
        let sts = d.stateful_set.spec.unwrap_or_default();
        assert_eq!(sts.replicas, Some(2));
        let annotations = sts.template.metadata.clone().unwrap_or_default().annotations.unwrap_or_default();
        assert_eq!(annotations.get("prometheus.io/port").map(String::as_str), Some("8080"), "Prometheus scrapes the health port");
        assert_eq!(sts.pod_management_policy.as_deref(), Some("OrderedReady"));
        let pod = sts.template.spec.unwrap_or_default();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/omnisql/omnisql:0.1.0"));
        let args = c.args.clone().unwrap_or_default();
        for want in [
            "--control-plane=https://cp.example:7070",
            "--enrollment-token-file=/var/run/omnisql/enrollment/$(POD_NAME)",
            "--state-dir=/var/lib/omnisql/state",
            "--memory-limit=2GiB",
            "--cache-mib=32",
            "--result-cache-mib=8",
            "--kms-region=eu-west-1",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing from {args:?}");
        }
        assert_eq!(sts.volume_claim_templates.unwrap_or_default()[0].metadata.name.as_deref(), Some("state"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod_names(&dp, 2), ["analytics-0", "analytics-1"]);
    }

    #[test]
    fn every_object_is_owned_by_the_data_plane_so_deletion_cascades() {
        let d = desired(&data_plane(serde_json::json!({})));
        for m in [
            &d.service_account.metadata,
            &d.stateful_set.metadata,
            &d.service.metadata,
            &d.pods_service.metadata,
            &d.disruption_budget.metadata,
            &d.network_policy.metadata,
        ] {
            let owners = m.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{:?}", m.name);
            assert_eq!((owners[0].kind.as_str(), owners[0].controller), ("DataPlane", Some(true)));
            assert_eq!(m.namespace.as_deref(), Some("omnisql"));
        }
    }

    #[test]
    fn egress_reaches_only_dns_and_the_listed_blocks() {
        let open = desired(&data_plane(serde_json::json!({})));
        let rules = open.network_policy.spec.clone().unwrap_or_default().egress.unwrap_or_default();
        assert_eq!(rules.len(), 1, "without blocks only DNS is allowed");
        let dp = data_plane(serde_json::json!({
            "egress": {"apiCidrs": ["203.0.113.0/24"], "platformCidrs": ["10.20.0.0/16"]},
            "redisUrl": "redis://redis.internal:6379",
            "opaUrls": ["http://opa.policy:8181/"],
        }));
        let rules = desired(&dp).network_policy.spec.unwrap_or_default().egress.unwrap_or_default();
        assert_eq!(rules.len(), 3);
        let platform_ports: Vec<_> = rules[2].ports.clone().unwrap_or_default().into_iter().filter_map(|p| p.port).collect();
        assert_eq!(
            platform_ports,
            [IntOrString::Int(443), IntOrString::Int(7070), IntOrString::Int(6379), IntOrString::Int(8181)]
        );
        assert!(args(&dp).iter().any(|a| a == "--opa-allow-url=http://opa.policy:8181/"));
    }

    #[test]
    fn a_ca_bundle_is_mounted_and_passed() {
        let dp = data_plane(serde_json::json!({"controlPlane": {
            "url": "https://cp:7070", "adminUrl": "https://cp", "credentialsSecret": "s", "caBundle": "-----BEGIN CERTIFICATE-----"
        }}));
        let d = desired(&dp);
        assert_eq!(
            d.ca_bundle.and_then(|c| c.data).and_then(|d| d.get("ca.pem").cloned()).as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
        assert!(args(&dp).iter().any(|a| a == "--control-plane-ca-file=/var/run/omnisql/control-plane-ca/ca.pem"));
        let pod = d.stateful_set.spec.unwrap_or_default().template.spec.unwrap_or_default();
        assert!(pod.volumes.unwrap_or_default().iter().any(|v| v.name == "control-plane-ca"));
    }

    #[test]
    fn the_postgres_protocol_is_served_listed_and_let_in_only_when_asked_for() {
        let dp = data_plane(serde_json::json!({"postgres": {"port": 5432}}));
        assert!(args(&dp).contains(&"--pg-addr=0.0.0.0:5432".to_string()));
        let ports = |d: &DataPlane| -> Vec<(String, i32)> {
            let pod = stateful_set(d).spec.unwrap_or_default().template.spec.unwrap_or_default();
            pod.containers[0]
                .ports
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.name.unwrap_or_default(), p.container_port))
                .collect()
        };
        assert!(ports(&dp).contains(&("postgres".into(), 5432)));
        let svc = service(&dp, "x".into(), false).spec.and_then(|s| s.ports).unwrap_or_default();
        assert!(svc.iter().any(|p| p.name.as_deref() == Some("postgres") && p.port == 5432));
        let ingress = network_policy(&dp).spec.and_then(|s| s.ingress).unwrap_or_default();
        let open: Vec<_> = ingress.iter().flat_map(|r| r.ports.clone().unwrap_or_default()).filter_map(|p| p.port).collect();
        assert!(open.contains(&IntOrString::Int(5432)));
        let plain = data_plane(serde_json::json!({}));
        assert!(!args(&plain).iter().any(|a| a.starts_with("--pg-addr")));
        assert!(!ports(&plain).iter().any(|(n, _)| n == "postgres"));
        let ingress = network_policy(&plain).spec.and_then(|s| s.ingress).unwrap_or_default();
        assert!(
            !ingress.iter().flat_map(|r| r.ports.clone().unwrap_or_default()).any(|p| p.port == Some(IntOrString::Int(5432)))
        );
    }

    #[test]
    fn a_tls_secret_serves_flight_sql_over_tls_from_a_mounted_directory() {
        let dp = data_plane(serde_json::json!({"flightSql": {"port": 50051, "tlsSecret": "flight-sql-cert"}}));
        let a = args(&dp);
        for want in [
            "--flight-tls-cert=/var/run/omnisql/flight-sql-tls/tls.crt",
            "--flight-tls-key=/var/run/omnisql/flight-sql-tls/tls.key",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        let pod = desired(&dp).stateful_set.spec.unwrap_or_default().template.spec.unwrap_or_default();
        let volume = pod.volumes.unwrap_or_default().into_iter().find(|v| v.name == "flight-sql-tls").expect("volume");
        assert_eq!(volume.secret.and_then(|s| s.secret_name).as_deref(), Some("flight-sql-cert"));
        let mount = pod.containers[0].volume_mounts.clone().unwrap_or_default().into_iter().find(|m| m.name == "flight-sql-tls");
        let mount = mount.expect("mount");
        // A subPath mount would never see the renewed Secret.
        assert_eq!((mount.mount_path.as_str(), mount.sub_path), ("/var/run/omnisql/flight-sql-tls", None));
        assert!(!args(&data_plane(serde_json::json!({}))).iter().any(|x| x.starts_with("--flight-tls")));
    }
}
