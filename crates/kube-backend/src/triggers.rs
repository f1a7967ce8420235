//! Secrets and ConfigMaps labelled `reconcile.fluxcd.io/watch: Enabled` reconcile the objects
//! that reference them as soon as they change, as Flux does: a Kustomization's
//! `spec.postBuild.substituteFrom` and a HelmRelease's `spec.valuesFrom`. Unlabelled ones are
//! picked up at the next interval (watching every Secret of a cluster is what the label avoids).

use crate::KubeBackend;
use futures::StreamExt;
use serde_json::Value;
use trueup_core::object::{Object, ObjectRef};
use trueup_core::runtime::{CancellationToken, Runtime};
use trueup_core::traits::backend::{BackendError, WatchEvent};

/// Whether `obj` (a Kustomization or HelmRelease) reads the Secret or ConfigMap `config`.
pub fn references(obj: &Object, config: &ObjectRef) -> bool {
    if !config.group.is_empty() || !matches!(config.kind.as_str(), "Secret" | "ConfigMap") {
        return false;
    }
    if obj.namespace().unwrap_or("") != config.namespace {
        return false;
    }
    let list = match (obj.group(), obj.kind()) {
        ("kustomize.toolkit.fluxcd.io", "Kustomization") => obj
            .spec()
            .and_then(|s| s.get("postBuild"))
            .and_then(|p| p.get("substituteFrom")),
        ("helm.toolkit.fluxcd.io", "HelmRelease") => obj.spec().and_then(|s| s.get("valuesFrom")),
        _ => None,
    };
    list.and_then(Value::as_array).is_some_and(|refs| {
        refs.iter().any(|r| {
            r.get("kind").and_then(Value::as_str) == Some(config.kind.as_str())
                && r.get("name").and_then(Value::as_str) == Some(config.name.as_str())
        })
    })
}

/// Watches the labelled Secrets and ConfigMaps and asks `runtime` to reconcile the objects that
/// reference one whenever it changes or goes away, until `cancel` fires.
pub async fn retrigger_on_config_changes(
    backend: &KubeBackend,
    runtime: &Runtime,
    cancel: CancellationToken,
) -> Result<(), BackendError> {
    let mut changes = backend.watch_labelled_configs().await?;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = changes.next() => ev,
        };
        let config = match ev {
            Some(WatchEvent::Applied(o)) => o.object_ref(),
            Some(WatchEvent::Deleted(r)) => r,
            None => {
                changes = backend.watch_labelled_configs().await?;
                continue;
            }
        };
        let selected = runtime.request_reconcile_matching(|o| references(o, &config));
        if !selected.is_empty() {
            // Names only: the content of a Secret never reaches a log.
            tracing::info!(
                config = %config,
                objects = %selected.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                "watched configuration changed: reconciling the objects that use it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        Object::from_value(v).unwrap()
    }

    #[test]
    fn substitute_from_and_values_from() {
        let ks = obj(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"postBuild": {"substituteFrom": [
                {"kind": "ConfigMap", "name": "cluster-vars"},
                {"kind": "Secret", "name": "cluster-secrets", "optional": true}]}}
        }));
        let cm = |ns: &str, name: &str| ObjectRef::new("", "ConfigMap", ns, name);
        assert!(references(&ks, &cm("flux-system", "cluster-vars")));
        assert!(references(
            &ks,
            &ObjectRef::new("", "Secret", "flux-system", "cluster-secrets")
        ));
        assert!(!references(&ks, &cm("other", "cluster-vars")));
        assert!(!references(&ks, &cm("flux-system", "cluster-secrets")));
        let hr = obj(serde_json::json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "podinfo", "namespace": "apps"},
            "spec": {"valuesFrom": [{"kind": "ConfigMap", "name": "values"}]}
        }));
        assert!(references(&hr, &cm("apps", "values")));
        assert!(!references(&hr, &cm("apps", "other")));
    }
}
