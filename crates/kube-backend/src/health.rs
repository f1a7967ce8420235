//! kstatus-like health rules, computed from an object as the API server returns it.
//!
//! Pure functions over JSON so they are unit-tested without a server and never panic on what a
//! server (or a user editing status) puts in an object: missing or mistyped fields read as absent.

use serde_json::Value;
use trueup_core::object::Object;
use trueup_core::traits::backend::Health;

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

fn status_int(obj: &Object, key: &str) -> i64 {
    int(obj.status().and_then(|s| s.get(key))).unwrap_or(0)
}

fn spec_replicas(obj: &Object) -> i64 {
    // Kubernetes defaults spec.replicas to 1; the server fills it in, but be safe.
    int(obj.spec().and_then(|s| s.get("replicas"))).unwrap_or(1)
}

/// A condition of `status.conditions` by type: (status, reason, message, observedGeneration).
struct Condition<'a> {
    status: &'a str,
    reason: &'a str,
    message: &'a str,
    observed_generation: Option<i64>,
}

fn condition<'a>(obj: &'a Object, kind: &str) -> Option<Condition<'a>> {
    let conds = obj.status()?.get("conditions")?.as_array()?;
    conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
            Condition {
                status: s("status"),
                reason: s("reason"),
                message: s("message"),
                observed_generation: int(c.get("observedGeneration")),
            }
        })
}

fn condition_text(c: &Condition<'_>, fallback: &str) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (true, true) => fallback.to_string(),
        (false, true) => c.reason.to_string(),
        (true, false) => c.message.to_string(),
        (false, false) => format!("{}: {}", c.reason, c.message),
    }
}

/// `status.observedGeneration` behind `metadata.generation`: the controller has not seen the
/// latest spec yet, so nothing else in status can be trusted.
fn stale_generation(obj: &Object) -> Option<Health> {
    let observed = int(obj.status().and_then(|s| s.get("observedGeneration")))?;
    let generation = obj.generation();
    (observed < generation).then(|| {
        Health::InProgress(format!(
            "waiting for the controller to observe generation {generation} (observed {observed})"
        ))
    })
}

/// The health of an object by kstatus rules.
pub fn health_of(obj: &Object) -> Health {
    if obj
        .metadata()
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
    {
        return Health::InProgress("being deleted".into());
    }
    match (obj.group(), obj.kind()) {
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => statefulset(obj),
        ("apps", "DaemonSet") => daemonset(obj),
        ("apps", "ReplicaSet") => replicaset(obj),
        ("batch", "Job") => job(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Pod") => pod(obj),
        ("", "PersistentVolumeClaim") => pvc(obj),
        _ => generic(obj),
    }
}

fn deployment(obj: &Object) -> Health {
    if obj.status().is_none() {
        return Health::InProgress("waiting for the Deployment controller to report status".into());
    }
    if let Some(h) = stale_generation(obj) {
        return h;
    }
    if let Some(c) = condition(obj, "Progressing") {
        if c.reason == "ProgressDeadlineExceeded" {
            return Health::Failed(condition_text(&c, "progress deadline exceeded"));
        }
    }
    let want = spec_replicas(obj);
    let updated = status_int(obj, "updatedReplicas");
    let replicas = status_int(obj, "replicas");
    let available = status_int(obj, "availableReplicas");
    if updated < want {
        return Health::InProgress(format!("{updated} of {want} replicas updated"));
    }
    if replicas > updated {
        return Health::InProgress(format!(
            "{} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < want {
        return Health::InProgress(format!("{available} of {want} replicas available"));
    }
    Health::Current
}

fn statefulset(obj: &Object) -> Health {
    if obj.status().is_none() {
        return Health::InProgress(
            "waiting for the StatefulSet controller to report status".into(),
        );
    }
    if let Some(h) = stale_generation(obj) {
        return h;
    }
    let want = spec_replicas(obj);
    let ready = status_int(obj, "readyReplicas");
    let current = status_int(obj, "currentReplicas");
    let updated = status_int(obj, "updatedReplicas");
    let rolling = obj
        .spec()
        .and_then(|s| s.get("updateStrategy"))
        .and_then(|u| u.get("type"))
        .and_then(Value::as_str)
        .is_none_or(|t| t == "RollingUpdate");
    if ready < want {
        return Health::InProgress(format!("{ready} of {want} replicas ready"));
    }
    if rolling {
        let status = obj.status();
        let rev = |k: &str| status.and_then(|s| s.get(k)).and_then(Value::as_str);
        if updated < want {
            return Health::InProgress(format!("{updated} of {want} replicas updated"));
        }
        if rev("currentRevision") != rev("updateRevision") {
            return Health::InProgress(format!(
                "rolling out revision {} ({current} of {want} current)",
                rev("updateRevision").unwrap_or("?")
            ));
        }
    }
    Health::Current
}

fn daemonset(obj: &Object) -> Health {
    if obj.status().is_none() {
        return Health::InProgress("waiting for the DaemonSet controller to report status".into());
    }
    if let Some(h) = stale_generation(obj) {
        return h;
    }
    let desired = status_int(obj, "desiredNumberScheduled");
    let updated = status_int(obj, "updatedNumberScheduled");
    let available = status_int(obj, "numberAvailable");
    if updated < desired {
        return Health::InProgress(format!("{updated} of {desired} pods updated"));
    }
    if available < desired {
        return Health::InProgress(format!("{available} of {desired} pods available"));
    }
    Health::Current
}

fn replicaset(obj: &Object) -> Health {
    if let Some(h) = stale_generation(obj) {
        return h;
    }
    let want = spec_replicas(obj);
    let available = status_int(obj, "availableReplicas");
    if available < want {
        return Health::InProgress(format!("{available} of {want} replicas available"));
    }
    Health::Current
}

fn job(obj: &Object) -> Health {
    if let Some(c) = condition(obj, "Failed") {
        if c.status == "True" {
            return Health::Failed(condition_text(&c, "job failed"));
        }
    }
    if let Some(c) = condition(obj, "Complete") {
        if c.status == "True" {
            return Health::Current;
        }
    }
    let succeeded = status_int(obj, "succeeded");
    let active = status_int(obj, "active");
    Health::InProgress(format!(
        "job not complete ({active} active, {succeeded} succeeded)"
    ))
}

fn crd(obj: &Object) -> Health {
    if let Some(c) = condition(obj, "NamesAccepted") {
        if c.status == "False" {
            return Health::Failed(condition_text(&c, "names not accepted"));
        }
    }
    match condition(obj, "Established") {
        Some(c) if c.status == "True" => Health::Current,
        _ => Health::InProgress("waiting for the CRD to be established".into()),
    }
}

fn namespace(obj: &Object) -> Health {
    match obj
        .status()
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
    {
        Some("Terminating") => Health::InProgress("namespace is terminating".into()),
        // A namespace with no phase yet is as good as Active: the server sets it on create.
        _ => Health::Current,
    }
}

fn pod(obj: &Object) -> Health {
    match obj
        .status()
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
    {
        Some("Succeeded") => Health::Current,
        Some("Failed") => Health::Failed("pod failed".into()),
        Some("Running") => match condition(obj, "Ready") {
            Some(c) if c.status == "True" => Health::Current,
            _ => Health::InProgress("pod running but not ready".into()),
        },
        Some(phase) => Health::InProgress(format!("pod is {phase}")),
        None => Health::InProgress("pod has no phase yet".into()),
    }
}

fn pvc(obj: &Object) -> Health {
    match obj
        .status()
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
    {
        Some("Bound") => Health::Current,
        Some("Lost") => Health::Failed("claim lost its volume".into()),
        other => Health::InProgress(format!("claim is {}", other.unwrap_or("pending"))),
    }
}

/// Objects with no kind-specific rule: the `Stalled`/`Ready`/`Reconciling` conditions that
/// Flux's own kinds and most operators set, checked against the generation they describe.
fn generic(obj: &Object) -> Health {
    if let Some(h) = stale_generation(obj) {
        return h;
    }
    if let Some(c) = condition(obj, "Stalled") {
        if c.status == "True" {
            return Health::Failed(condition_text(&c, "stalled"));
        }
    }
    if let Some(c) = condition(obj, "Reconciling") {
        if c.status == "True" {
            return Health::InProgress(condition_text(&c, "reconciling"));
        }
    }
    match condition(obj, "Ready") {
        Some(c) => {
            if c.observed_generation.is_some_and(|g| g < obj.generation()) {
                return Health::InProgress("Ready condition is for an older generation".into());
            }
            match c.status {
                "True" => Health::Current,
                "False" => Health::InProgress(condition_text(&c, "not ready")),
                _ => Health::InProgress(condition_text(&c, "readiness unknown")),
            }
        }
        None => Health::Current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        Object::from_value(v).unwrap()
    }

    #[test]
    fn deployment_rollout() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "n", "generation": 2},
            "spec": {"replicas": 2}});
        assert!(matches!(health_of(&obj(d.clone())), Health::InProgress(_)));
        d["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(
            matches!(health_of(&obj(d.clone())), Health::InProgress(m) if m.contains("generation"))
        );
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(health_of(&obj(d.clone())), Health::Current);
        d["status"]["availableReplicas"] = json!(1);
        assert!(
            matches!(health_of(&obj(d.clone())), Health::InProgress(m) if m.contains("available"))
        );
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert!(matches!(health_of(&obj(d)), Health::Failed(_)));
    }

    #[test]
    fn job_crd_and_generic() {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}});
        assert!(matches!(health_of(&obj(j.clone())), Health::InProgress(_)));
        j["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
        assert_eq!(health_of(&obj(j.clone())), Health::Current);
        j["status"] = json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]});
        assert!(matches!(health_of(&obj(j)), Health::Failed(m) if m.contains("Backoff")));

        let mut c = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x.y"}});
        assert!(matches!(health_of(&obj(c.clone())), Health::InProgress(_)));
        c["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
        assert_eq!(health_of(&obj(c)), Health::Current);

        let mut g = json!({"apiVersion": "x/v1", "kind": "Thing", "metadata": {"name": "t", "generation": 3}});
        assert_eq!(health_of(&obj(g.clone())), Health::Current);
        g["status"] = json!({"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "False", "reason": "Nope"}]});
        assert!(matches!(health_of(&obj(g.clone())), Health::InProgress(m) if m == "Nope"));
        g["status"]["conditions"] =
            json!([{"type": "Ready", "status": "True", "observedGeneration": 2}]);
        assert!(matches!(health_of(&obj(g.clone())), Health::InProgress(_)));
        g["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(health_of(&obj(g.clone())), Health::Current);
        g["status"]["conditions"] =
            json!([{"type": "Stalled", "status": "True", "message": "bad"}]);
        assert!(matches!(health_of(&obj(g)), Health::Failed(_)));
    }

    #[test]
    fn mistyped_status_does_not_panic() {
        for status in [
            json!("x"),
            json!([1]),
            json!({"conditions": "no"}),
            json!({"conditions": [1, null, {"type": 3}]}),
            json!({"observedGeneration": "2"}),
        ] {
            for (api, kind) in [
                ("apps/v1", "Deployment"),
                ("apps/v1", "StatefulSet"),
                ("apps/v1", "DaemonSet"),
                ("batch/v1", "Job"),
                ("v1", "Pod"),
                ("v1", "Namespace"),
                ("x/v1", "Y"),
            ] {
                let o = obj(
                    json!({"apiVersion": api, "kind": kind, "metadata": {"name": "a", "deletionTimestamp": null}, "status": status.clone(), "spec": "weird"}),
                );
                let _ = health_of(&o);
            }
        }
    }
}
