//! The reconcile loop. Each pass over a `DataPlane` runs the same phases: read it, validate its spec
//! (a bad one is a `Degraded` condition, not a crash loop), build the desired objects
//! ([`crate::desired`]), server-side apply them, leave an enrolment token for each replica that has no
//! identity yet and remove from the control plane the data planes scaled away, then write the status.
//! A finalizer removes every data plane of the resource from the control plane before it goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control_plane::{ControlPlane, RegisteredDataPlane};
use crate::desired::{self, desired, enrollment_secret, pod_names};
use crate::resource::{DataPlane, DataPlaneStatus, ReplicaStatus};

pub const FINALIZER: &str = "omnisql.io/deregister-data-planes";
const MANAGER: &str = "omnisql-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("control plane: {0}")]
    ControlPlane(#[from] crate::control_plane::Error),
    #[error("the Secret {0} has no `apiKey`: the operator cannot reach the control plane")]
    NoApiKey(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub http: reqwest::Client,
}

/// Runs the operator until a shutdown signal, watching `DataPlane`s in `namespace` (all when `None`).
pub async fn run(client: Client, namespace: Option<&str>) {
    let data_planes: Api<DataPlane> = scoped(&client, namespace);
    let sets: Api<StatefulSet> = scoped(&client, namespace);
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client, Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() }),
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
    });
    Controller::new(data_planes, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

fn scoped<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<K> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn reconcile(dp: Arc<DataPlane>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = dp.namespace().unwrap_or_else(|| "default".into());
    let api: Api<DataPlane> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, dp, |event| async {
        match event {
            Finalizer::Apply(dp) => apply(&dp, &ctx).await,
            Finalizer::Cleanup(dp) => cleanup(&dp, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Errors back off: the next attempt comes later, and the status says what failed.
fn error_policy(dp: Arc<DataPlane>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(data_plane = %dp.name_any(), %error, "reconcile failed; retrying in 15 s");
    Action::requeue(Duration::from_secs(15))
}

async fn apply(dp: &DataPlane, ctx: &Context) -> Result<Action, Error> {
    let ns = dp.namespace().unwrap_or_else(|| "default".into());
    if let Err(invalid) = dp.spec.validate() {
        let conditions = vec![
            condition("Ready", false, "InvalidSpec", &invalid.to_string()),
            condition("Degraded", true, "InvalidSpec", &invalid.to_string()),
            condition("Progressing", false, "InvalidSpec", "waiting for a valid spec"),
        ];
        write_status(dp, ctx, DataPlaneStatus { ready_replicas: 0, replicas: vec![], conditions, observed_generation: None })
            .await?;
        return Ok(Action::await_change());
    }
    let d = desired(dp);
    server_side_apply(ctx, &ns, &d.service_account).await?;
    server_side_apply(ctx, &ns, &d.service).await?;
    server_side_apply(ctx, &ns, &d.pods_service).await?;
    server_side_apply(ctx, &ns, &d.disruption_budget).await?;
    server_side_apply(ctx, &ns, &d.network_policy).await?;
    if let Some(ca) = &d.ca_bundle {
        server_side_apply(ctx, &ns, ca).await?;
    }
    let control_plane = control_plane(dp, ctx, &ns).await?;
    let registered = control_plane.data_planes(&dp.spec.region).await?;
    sync_enrollment(dp, ctx, &ns, &control_plane, &registered).await?;
    server_side_apply(ctx, &ns, &d.stateful_set).await?;
    let set: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let observed = set.get_opt(&dp.name_any()).await?.and_then(|s| s.status);
    let ready = observed.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = observed.as_ref().and_then(|s| s.updated_replicas).unwrap_or(0);
    let rolled = observed.as_ref().is_some_and(|s| s.current_revision == s.update_revision);
    let replicas = pod_names(dp, dp.spec.replicas)
        .into_iter()
        .map(|pod| {
            let r = registered.iter().find(|r| r.hostname == pod);
            ReplicaStatus {
                data_plane_id: r.map(|r| r.id.clone()),
                version: r.map(|r| r.version.clone()),
                last_heartbeat: r.and_then(|r| r.last_heartbeat_at).map(rfc3339),
                applied_revision: r.map(|r| r.acked_revision),
                pod,
            }
        })
        .collect::<Vec<_>>();
    let enrolled = replicas.iter().filter(|r| r.data_plane_id.is_some()).count() as i32;
    let want = dp.spec.replicas;
    let all_ready = ready >= want && enrolled >= want && rolled && updated >= want;
    let conditions = if all_ready {
        vec![
            condition(
                "Ready",
                true,
                "AllReplicasServing",
                &format!("{want} of {want} replicas serving, enrolled and at version {}", dp.spec.version),
            ),
            condition("Progressing", false, "RolledOut", "nothing to change"),
            condition("Degraded", false, "AllReplicasServing", "no problem seen"),
        ]
    } else {
        let message = format!("{ready} of {want} replicas ready, {enrolled} enrolled, {updated} at version {}", dp.spec.version);
        vec![
            condition("Ready", false, "ReplicasStarting", &message),
            condition("Progressing", true, if rolled { "ScalingOrEnrolling" } else { "RollingUpdate" }, &message),
            condition("Degraded", false, "Progressing", "no problem seen"),
        ]
    };
    let status = DataPlaneStatus { observed_generation: dp.metadata.generation, ready_replicas: ready, replicas, conditions };
    write_status(dp, ctx, status).await?;
    // Heartbeats and applied revisions change without any Kubernetes event: look again soon.
    Ok(Action::requeue(Duration::from_secs(if all_ready { 30 } else { 3 })))
}

/// Leaves a one-time enrolment token under each pod's name for the replicas the control plane does
/// not know yet, drops tokens of those it knows, and removes the data planes of replicas scaled away.
async fn sync_enrollment(
    dp: &DataPlane,
    ctx: &Context,
    ns: &str,
    control_plane: &ControlPlane,
    registered: &[RegisteredDataPlane],
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = enrollment_secret(dp);
    let existing = secrets.get_opt(&name).await?.and_then(|s| s.data).unwrap_or_default();
    let mut tokens: BTreeMap<String, ByteString> = BTreeMap::new();
    for pod in pod_names(dp, dp.spec.replicas) {
        if registered.iter().any(|r| r.hostname == pod) {
            continue;
        }
        let token = match existing.get(&pod) {
            Some(t) => t.clone(),
            None => ByteString(control_plane.enrollment_token(&dp.spec.region).await?.into_bytes()),
        };
        tokens.insert(pod, token);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.into()),
            owner_references: dp.controller_owner_ref(&()).map(|o| vec![o]),
            labels: Some(desired::selector_labels(dp)),
            ..Default::default()
        },
        data: Some(tokens),
        ..Default::default()
    };
    server_side_apply(ctx, ns, &secret).await?;
    let prefix = format!("{}-", dp.name_any());
    for r in registered {
        let ordinal = r.hostname.strip_prefix(&prefix).and_then(|o| o.parse::<i32>().ok());
        if ordinal.is_some_and(|o| o >= dp.spec.replicas) {
            control_plane.remove(&r.id).await?;
            publish(
                ctx,
                dp,
                EventType::Normal,
                "Deregistered",
                &format!("removed data plane {} ({}) scaled away", r.id, r.hostname),
            )
            .await;
        }
    }
    Ok(())
}

async fn cleanup(dp: &DataPlane, ctx: &Context) -> Result<Action, Error> {
    let ns = dp.namespace().unwrap_or_else(|| "default".into());
    let control_plane = control_plane(dp, ctx, &ns).await?;
    let prefix = format!("{}-", dp.name_any());
    for r in control_plane.data_planes(&dp.spec.region).await? {
        if r.hostname.strip_prefix(&prefix).is_some_and(|o| o.parse::<i32>().is_ok()) {
            control_plane.remove(&r.id).await?;
        }
    }
    publish(ctx, dp, EventType::Normal, "Deregistered", "removed every data plane of this resource from the control plane").await;
    Ok(Action::await_change())
}

async fn control_plane(dp: &DataPlane, ctx: &Context, ns: &str) -> Result<ControlPlane, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = &dp.spec.control_plane.credentials_secret;
    let key = secrets
        .get_opt(name)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| d.get("apiKey").cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .ok_or_else(|| Error::NoApiKey(format!("{ns}/{name}")))?;
    Ok(ControlPlane::new(ctx.http.clone(), &dp.spec.control_plane.admin_url, key.trim()))
}

async fn server_side_apply<K>(ctx: &Context, ns: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = object.meta().name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(object).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.insert("apiVersion".into(), K::api_version(&()).into());
        o.insert("kind".into(), K::kind(&()).into());
    }
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Writes the status, keeping each condition's transition time while its status holds and telling
/// Kubernetes (an Event) when `Ready` changes.
async fn write_status(dp: &DataPlane, ctx: &Context, mut status: DataPlaneStatus) -> Result<(), Error> {
    let before = dp.status.clone().unwrap_or_default();
    for c in &mut status.conditions {
        if let Some(old) = before.conditions.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    let ready =
        |s: &DataPlaneStatus| s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| (c.status.clone(), c.reason.clone()));
    if ready(&before) != ready(&status) {
        if let Some(c) = status.conditions.iter().find(|c| c.type_ == "Ready") {
            let kind = if c.reason == "InvalidSpec" { EventType::Warning } else { EventType::Normal };
            publish(ctx, dp, kind, &c.reason, &c.message).await;
        }
    }
    let ns = dp.namespace().unwrap_or_else(|| "default".into());
    let api: Api<DataPlane> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({"apiVersion": "omnisql.io/v1alpha1", "kind": "DataPlane", "status": status});
    api.patch_status(&dp.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch)).await?;
    Ok(())
}

async fn publish(ctx: &Context, dp: &DataPlane, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &dp.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot record an event");
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(jiff_now()),
        observed_generation: None,
    }
}

fn jiff_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn rfc3339(unix_ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(unix_ms).map(|t| t.to_string()).unwrap_or_default()
}
