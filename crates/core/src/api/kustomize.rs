//! kustomize.toolkit.fluxcd.io: Kustomization.

use super::duration::GoDuration;
use super::meta::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `Kustomization.spec.deletionPolicy`: what deleting the Kustomization does to the objects it
/// applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Delete them when `spec.prune` is true, else leave them (the default).
    #[default]
    MirrorPrune,
    /// Delete them whatever `spec.prune` says.
    Delete,
    /// Delete them and wait, up to `spec.timeout`, until they are gone (their finalizers done).
    WaitForTermination,
    /// Leave them whatever `spec.prune` says.
    Orphan,
}

impl KustomizationSpec {
    /// `spec.timeout`, which defaults to `spec.interval` as in Flux: the budget of one apply,
    /// its health checks, and a clean-up on deletion.
    pub fn action_timeout(&self) -> std::time::Duration {
        self.timeout
            .as_ref()
            .map(|d| d.duration())
            .unwrap_or(self.interval.duration())
    }

    /// `spec.deletionPolicy`; an unknown value is an error naming the field.
    pub fn deletion_policy(&self) -> Result<DeletionPolicy, String> {
        match self.deletion_policy.as_deref() {
            None | Some("") | Some("MirrorPrune") => Ok(DeletionPolicy::MirrorPrune),
            Some("Delete") => Ok(DeletionPolicy::Delete),
            Some("WaitForTermination") => Ok(DeletionPolicy::WaitForTermination),
            Some("Orphan") => Ok(DeletionPolicy::Orphan),
            Some(v) => Err(format!(
                "spec.deletionPolicy: unsupported value '{v}' (MirrorPrune, Delete, WaitForTermination, Orphan)"
            )),
        }
    }

    /// Whether deleting the Kustomization deletes what it applied.
    pub fn deletes_on_deletion(&self) -> Result<bool, String> {
        Ok(match self.deletion_policy()? {
            DeletionPolicy::MirrorPrune => self.prune,
            DeletionPolicy::Delete | DeletionPolicy::WaitForTermination => true,
            DeletionPolicy::Orphan => false,
        })
    }
}

/// `Kustomization.spec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    pub interval: GoDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<KubeConfigReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    #[serde(default)]
    pub prune: bool,
    /// `MirrorPrune` (default), `Delete`, `WaitForTermination` or `Orphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<CrossNamespaceObjectReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
    /// v1beta2 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches_strategic_merge: Vec<Value>,
    /// v1beta2 only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches_json6902: Vec<JsonPatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    pub source_ref: CrossNamespaceObjectReference,
    #[serde(default)]
    pub suspend: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub wait: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    #[serde(default)]
    pub ignore_missing_components: bool,
    /// v1beta2 only; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
}

/// `Kustomization.spec.decryption`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Decryption {
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// `Kustomization.spec.postBuild`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PostBuild {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
}

/// `postBuild.substituteFrom[]` (also HelmRelease `valuesFrom`-like references).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub optional: bool,
}

#[cfg(test)]
mod deletion_policy_tests {
    use super::*;

    fn spec(prune: bool, policy: Option<&str>) -> KustomizationSpec {
        let mut v = serde_json::json!({
            "interval": "10m",
            "prune": prune,
            "sourceRef": {"kind": "GitRepository", "name": "fleet"},
        });
        if let Some(p) = policy {
            v["deletionPolicy"] = p.into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn deletion_policy_decides_whether_deletion_deletes() {
        for (prune, policy, deletes) in [
            (true, None, true),
            (false, None, false),
            (true, Some("MirrorPrune"), true),
            (false, Some("MirrorPrune"), false),
            (false, Some("Delete"), true),
            (false, Some("WaitForTermination"), true),
            (true, Some("Orphan"), false),
        ] {
            assert_eq!(
                spec(prune, policy).deletes_on_deletion(),
                Ok(deletes),
                "prune {prune}, {policy:?}"
            );
        }
        let e = spec(true, Some("orphan")).deletion_policy().unwrap_err();
        assert!(
            e.starts_with("spec.deletionPolicy: unsupported value 'orphan'"),
            "{e}"
        );
    }
}
