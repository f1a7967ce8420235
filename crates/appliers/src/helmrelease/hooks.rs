//! Helm's release hooks: documents annotated `helm.sh/hook`, run around an action in Helm's
//! order (weight, then kind install order, then name), each created, waited for (Jobs and Pods,
//! on backends that run workloads) and deleted according to `helm.sh/hook-delete-policy`. Their
//! runs are recorded in the release's `hooks`, with Helm's field names.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use trueup_core::object::{Object, ObjectRef};
use trueup_core::reconcile::helmrelease::{ReleaseError, ReleaseErrorKind};
use trueup_core::scope::is_cluster_scoped;
use trueup_core::traits::{ApplyOptions, Backend, Health};

pub const HOOK_ANNOTATION: &str = "helm.sh/hook";
pub const WEIGHT_ANNOTATION: &str = "helm.sh/hook-weight";
pub const DELETE_POLICY_ANNOTATION: &str = "helm.sh/hook-delete-policy";

pub const PRE_INSTALL: &str = "pre-install";
pub const POST_INSTALL: &str = "post-install";
pub const PRE_UPGRADE: &str = "pre-upgrade";
pub const POST_UPGRADE: &str = "post-upgrade";
pub const PRE_ROLLBACK: &str = "pre-rollback";
pub const POST_ROLLBACK: &str = "post-rollback";
pub const PRE_DELETE: &str = "pre-delete";
pub const POST_DELETE: &str = "post-delete";
pub const TEST: &str = "test";

const EVENTS: &[&str] = &[
    PRE_INSTALL,
    POST_INSTALL,
    PRE_UPGRADE,
    POST_UPGRADE,
    PRE_ROLLBACK,
    POST_ROLLBACK,
    PRE_DELETE,
    POST_DELETE,
    TEST,
];

pub const BEFORE_HOOK_CREATION: &str = "before-hook-creation";
pub const HOOK_SUCCEEDED: &str = "hook-succeeded";
pub const HOOK_FAILED: &str = "hook-failed";

/// Helm's `release.Hook`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub name: String,
    pub kind: String,
    pub path: String,
    pub manifest: String,
    #[serde(default, deserialize_with = "super::record::nullable")]
    pub events: Vec<String>,
    #[serde(default)]
    pub last_run: HookExecution,
    #[serde(default)]
    pub weight: i64,
    #[serde(default, deserialize_with = "super::record::nullable")]
    pub delete_policies: Vec<String>,
}

/// Helm's `release.HookExecution`. Helm writes zero times as `""`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HookExecution {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub completed_at: String,
    /// `Unknown`, `Running`, `Succeeded` or `Failed`.
    #[serde(default)]
    pub phase: String,
}

impl Hook {
    pub fn has_event(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// Helm's kind install order, for hooks of the same weight.
fn kind_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "PriorityClass",
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodSecurityPolicy",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "SecretList",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleList",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        "Role",
        "RoleList",
        "RoleBinding",
        "RoleBindingList",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// Parses the hook documents of a render. Errors name the template.
pub fn parse(files: &[trueup_gotmpl::RenderedFile]) -> Result<Vec<Hook>, String> {
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.hook) {
        let v: serde_json::Value = serde_yaml::from_str(&f.content)
            .map_err(|e| format!("hook {}: invalid YAML: {e}", f.path))?;
        let o = Object::from_value(v).map_err(|e| format!("hook {}: {e}", f.path))?;
        let list = |key: &str| -> Vec<String> {
            o.annotation(key)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        // `test-success` is the old name of `test`; events Helm does not know are ignored
        // (as Helm does), a document with none left is not run.
        let events: Vec<String> = list(HOOK_ANNOTATION)
            .into_iter()
            .map(|e| if e == "test-success" { TEST.into() } else { e })
            .filter(|e| EVENTS.contains(&e.as_str()))
            .collect();
        if events.is_empty() {
            continue;
        }
        let weight = match o.annotation(WEIGHT_ANNOTATION).map(str::trim) {
            None | Some("") => 0,
            Some(w) => w.parse().map_err(|_| {
                format!(
                    "hook {} ({}/{}): {WEIGHT_ANNOTATION}: '{w}' is not an integer",
                    f.path,
                    o.kind(),
                    o.name()
                )
            })?,
        };
        let mut delete_policies = list(DELETE_POLICY_ANNOTATION);
        if delete_policies.is_empty() {
            delete_policies.push(BEFORE_HOOK_CREATION.into());
        }
        out.push(Hook {
            name: o.name().to_string(),
            kind: o.kind().to_string(),
            path: f.path.clone(),
            manifest: f.content.clone() + "\n",
            events,
            last_run: HookExecution::default(),
            weight,
            delete_policies,
        });
    }
    Ok(out)
}

/// How a run of hooks went, for the status message.
#[derive(Debug, Default)]
pub struct HookRun {
    /// `kind/name` of every hook run.
    pub ran: Vec<String>,
    /// Hooks counted as done once written, because the backend runs nothing.
    pub not_waited: Vec<String>,
}

fn hook_err(event: &str, msg: impl std::fmt::Display) -> ReleaseError {
    ReleaseError::new(
        ReleaseErrorKind::Hook,
        format!("{event} hook failed: {msg}"),
    )
}

fn object(h: &Hook, namespace: &str) -> Result<Object, String> {
    let v: serde_json::Value = serde_yaml::from_str(&h.manifest)
        .map_err(|e| format!("hook {}: invalid YAML: {e}", h.path))?;
    let mut o = Object::from_value(v).map_err(|e| format!("hook {}: {e}", h.path))?;
    if o.namespace().is_none() && is_cluster_scoped(o.group(), o.kind()) != Some(true) {
        o.set_namespace(namespace);
    }
    Ok(o)
}

/// Deletes a hook object and waits until it is gone (a Job being deleted still blocks a new one
/// of the same name).
async fn delete_and_wait(
    backend: &dyn Backend,
    r: &ObjectRef,
    deadline: Instant,
    poll: Duration,
) -> Result<(), String> {
    if !backend.delete(r).await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    loop {
        match backend.get(r).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) if Instant::now() < deadline => tokio::time::sleep(poll).await,
            Ok(Some(_)) => return Err(format!("timed out waiting for {r} to be deleted")),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Runs the hooks of `event` in Helm's order, updating their `last_run`. Selected by `only`
/// when given (Helm test filters). Stops at the first failure.
pub async fn run(
    backend: &dyn Backend,
    hooks: &mut [Hook],
    event: &str,
    namespace: &str,
    timeout: Duration,
    poll: Duration,
    only: &(dyn Fn(&Hook) -> bool + Sync),
) -> Result<HookRun, ReleaseError> {
    let mut order: Vec<usize> = (0..hooks.len())
        .filter(|i| hooks[*i].has_event(event) && only(&hooks[*i]))
        .collect();
    order.sort_by(|a, b| {
        let (x, y) = (&hooks[*a], &hooks[*b]);
        x.weight
            .cmp(&y.weight)
            .then_with(|| kind_rank(&x.kind).cmp(&kind_rank(&y.kind)))
            .then_with(|| x.name.cmp(&y.name))
    });
    let deadline = Instant::now() + timeout;
    let mut report = HookRun::default();
    let opts = ApplyOptions {
        field_manager: "helm".into(),
        force_conflicts: true,
        ..Default::default()
    };
    let waits = backend.runs_workloads();
    let mut done = Vec::new();
    for i in order {
        let h = &mut hooks[i];
        let obj = object(h, namespace).map_err(|e| hook_err(event, e))?;
        let r = obj.object_ref();
        if h.delete_policies.iter().any(|p| p == BEFORE_HOOK_CREATION) {
            delete_and_wait(backend, &r, deadline, poll)
                .await
                .map_err(|e| hook_err(event, format!("{r}: {e}")))?;
        }
        h.last_run = HookExecution {
            started_at: trueup_core::time::now_rfc3339(),
            completed_at: String::new(),
            phase: "Running".into(),
        };
        let mut result = backend
            .apply(&obj, &opts)
            .await
            .map(|_| ())
            .map_err(|e| format!("{r}: {e}"));
        // Helm waits for Jobs to complete and Pods to succeed; anything else is done once
        // created. A backend that runs nothing can only write the object.
        let workload = matches!(
            (r.group.as_str(), r.kind.as_str()),
            ("batch", "Job") | ("", "Pod")
        );
        if result.is_ok() && workload {
            if waits {
                result = wait(backend, &r, deadline, poll).await;
            } else {
                report.not_waited.push(format!("{}/{}", r.kind, r.name));
            }
        }
        h.last_run.completed_at = trueup_core::time::now_rfc3339();
        report.ran.push(format!("{}/{}", r.kind, r.name));
        match result {
            Ok(()) => {
                h.last_run.phase = "Succeeded".into();
                done.push(i);
            }
            Err(e) => {
                h.last_run.phase = "Failed".into();
                if h.delete_policies.iter().any(|p| p == HOOK_FAILED) {
                    let _ = backend.delete(&r).await;
                }
                return Err(hook_err(event, e));
            }
        }
    }
    // Helm deletes hook-succeeded hooks once every hook of the event succeeded.
    for i in done {
        let h = &hooks[i];
        if h.delete_policies.iter().any(|p| p == HOOK_SUCCEEDED) {
            if let Ok(o) = object(h, namespace) {
                let _ = backend.delete(&o.object_ref()).await;
            }
        }
    }
    Ok(report)
}

async fn wait(
    backend: &dyn Backend,
    r: &ObjectRef,
    deadline: Instant,
    poll: Duration,
) -> Result<(), String> {
    loop {
        // A Pod hook is done when it has run to completion, not when it is Ready.
        if r.kind == "Pod" && r.group.is_empty() {
            let phase = match backend.get(r).await {
                Ok(Some(o)) => o
                    .status()
                    .and_then(|s| s.get("phase"))
                    .and_then(|p| p.as_str())
                    .unwrap_or("Pending")
                    .to_string(),
                Ok(None) => "not found".into(),
                Err(e) => e.to_string(),
            };
            match phase.as_str() {
                "Succeeded" => return Ok(()),
                "Failed" => return Err(format!("{r} failed: pod phase Failed")),
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "{r}: timed out waiting for the condition (pod is {phase})"
                    ))
                }
                _ => {
                    tokio::time::sleep(poll).await;
                    continue;
                }
            }
        }
        let last = match backend.health(r).await {
            Ok(Health::Current) => return Ok(()),
            Ok(Health::Failed(m)) => return Err(format!("{r} failed: {m}")),
            Ok(Health::InProgress(m)) => m,
            Ok(Health::NotFound) => "not found".into(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{r}: timed out waiting for the condition ({last})"));
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trueup_gotmpl::RenderedFile;

    fn file(content: &str) -> RenderedFile {
        RenderedFile {
            path: "c/templates/h.yaml".into(),
            content: content.into(),
            hook: true,
        }
    }

    #[test]
    fn parses_events_weight_and_policies() {
        let hs = parse(&[
            file("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: a\n  annotations:\n    helm.sh/hook: pre-install, post-upgrade,test-success,crd-install\n    helm.sh/hook-weight: \"-5\"\n    helm.sh/hook-delete-policy: hook-succeeded,hook-failed"),
            file("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  annotations:\n    helm.sh/hook: post-install"),
        ])
        .unwrap();
        assert_eq!(hs[0].events, ["pre-install", "post-upgrade", "test"]);
        assert_eq!(hs[0].weight, -5);
        assert_eq!(hs[0].delete_policies, ["hook-succeeded", "hook-failed"]);
        assert_eq!(hs[1].delete_policies, ["before-hook-creation"]);
        let bad = parse(&[file("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  annotations:\n    helm.sh/hook: post-install\n    helm.sh/hook-weight: heavy")]);
        assert!(bad.unwrap_err().contains("ConfigMap/b"));
    }
}
