//! The HelmRelease reconciler: HelmRepository -> chart artifact -> values -> release actions
//! (install, upgrade, remediation by rollback or uninstall) -> status and events.
//!
//! The reconciler decides *what* to do, as Flux's helm-controller does; a [`ReleaseManager`]
//! (the Helm-compatible one lives in trueup-appliers) does it against a backend and keeps the
//! release records. The chart is fetched through any [`Source`] that can read a HelmRepository
//! plus a chart spec; core names no concrete source, so the caller passes a function building
//! that source's spec from the pair.

use super::{dependency_refs, invalid_spec, object_data, Outcome, Reconciler, Schedule, Verdict};
use crate::api::helm::{HelmReleaseSpec, ValuesReference};
use crate::api::source::{HelmChartSpec, HelmRepositorySpec};
use crate::api::{from_object, ApiError, FluxKind, HelmRelease};
use crate::event::{Event, Severity};
use crate::object::{Object, ObjectRef};
use crate::status::{reason, Artifact, Condition, ConditionStatus, Status};
use crate::storage::ArtifactStore;
use crate::traits::Backend;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Condition types of a HelmRelease.
pub const RELEASED: &str = "Released";
pub const REMEDIATED: &str = "Remediated";
pub const TEST_SUCCESS: &str = "TestSuccess";

/// Reasons of the HelmRelease conditions, as Flux names them.
pub mod helm_reason {
    pub const INSTALL_SUCCEEDED: &str = "InstallSucceeded";
    pub const INSTALL_FAILED: &str = "InstallFailed";
    pub const UPGRADE_SUCCEEDED: &str = "UpgradeSucceeded";
    pub const UPGRADE_FAILED: &str = "UpgradeFailed";
    pub const ROLLBACK_SUCCEEDED: &str = "RollbackSucceeded";
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    pub const UNINSTALL_SUCCEEDED: &str = "UninstallSucceeded";
    pub const UNINSTALL_FAILED: &str = "UninstallFailed";
    pub const TEST_SUCCEEDED: &str = "TestSucceeded";
    pub const TEST_FAILED: &str = "TestFailed";
    /// The backend runs no workloads, so test Pods could not run.
    pub const TEST_NOT_RUN: &str = "TestNotRun";
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    pub const VALUES_ERROR: &str = "InitFailed";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExceeded";
}

/// Helm's release states, as stored in the release records.
pub mod release_status {
    pub const DEPLOYED: &str = "deployed";
    pub const SUPERSEDED: &str = "superseded";
    pub const FAILED: &str = "failed";
    pub const UNINSTALLED: &str = "uninstalled";
    pub const PENDING_INSTALL: &str = "pending-install";
    pub const PENDING_UPGRADE: &str = "pending-upgrade";
    pub const PENDING_ROLLBACK: &str = "pending-rollback";
}

/// One release record, summarized: what `status.history` snapshots hold (Flux's `Snapshot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseInfo {
    pub name: String,
    pub namespace: String,
    pub version: i64,
    pub status: String,
    pub chart_name: String,
    pub chart_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_version: String,
    /// Digest of the user values (`sha256:<hex>`).
    pub config_digest: String,
    /// Digest of the whole record (`sha256:<hex>`).
    pub digest: String,
    #[serde(default)]
    pub first_deployed: String,
    #[serde(default)]
    pub last_deployed: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deleted: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The last runs of the release's test hooks, by hook name (Flux's `testHooks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_hooks: Option<BTreeMap<String, TestHookStatus>>,
    /// What the action wants the status message to say about how it ran (e.g. hooks a backend
    /// could only write, not run). Not stored.
    #[serde(skip)]
    pub messages: Vec<String>,
}

/// One test hook's last run, as Flux's `TestHookStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestHookStatus {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_started: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_completed: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

impl ReleaseInfo {
    pub fn is_pending(&self) -> bool {
        self.status.starts_with("pending-")
    }
}

/// Where a release lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseTarget {
    pub name: String,
    /// Where the chart's namespaced objects go (`.Release.Namespace`).
    pub namespace: String,
    /// Where the release records are kept.
    pub storage_namespace: String,
}

/// What an install or upgrade is asked to do.
pub struct ReleaseRequest<'a> {
    /// The HelmRelease, for messages and ownership.
    pub object: &'a ObjectRef,
    pub spec: &'a HelmReleaseSpec,
    pub target: &'a ReleaseTarget,
    /// The unpacked chart artifact (a directory holding the chart's directory).
    pub chart_dir: &'a Path,
    /// The merged user values (`valuesFrom`, then `values`).
    pub values: &'a Value,
    pub config_digest: &'a str,
    pub backend: &'a dyn Backend,
    pub timeout: Duration,
}

/// Which step failed, so that the reconciler picks the reason and the remediation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseErrorKind {
    /// The chart or values could not be rendered: nothing was applied, no record was written.
    Render,
    /// Objects could not be applied.
    Apply,
    /// Applied objects did not become healthy in time.
    Health,
    /// Release records could not be read or written.
    Storage,
    /// A release hook failed (or did not finish in time).
    Hook,
    /// A Helm test failed: the release itself was deployed.
    Test,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReleaseError {
    pub kind: ReleaseErrorKind,
    pub message: String,
    /// The record written for the failed attempt (status `failed`), when one was.
    pub release: Option<Box<ReleaseInfo>>,
}

impl ReleaseError {
    pub fn new(kind: ReleaseErrorKind, message: impl Into<String>) -> Self {
        ReleaseError {
            kind,
            message: message.into(),
            release: None,
        }
    }
}

/// Executes release actions and keeps the release records (Helm's `action` + `storage`).
#[async_trait]
pub trait ReleaseManager: Send + Sync {
    /// Every record of the release, oldest first.
    async fn history(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
    ) -> Result<Vec<ReleaseInfo>, ReleaseError>;

    async fn install(&self, req: ReleaseRequest<'_>) -> Result<ReleaseInfo, ReleaseError>;

    async fn upgrade(&self, req: ReleaseRequest<'_>) -> Result<ReleaseInfo, ReleaseError>;

    /// Re-applies revision `to` as a new revision (Helm's rollback).
    async fn rollback(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        to: i64,
        spec: &HelmReleaseSpec,
        timeout: Duration,
    ) -> Result<ReleaseInfo, ReleaseError>;

    /// Deletes the release's objects and its records (all but an `uninstalled` one with
    /// `keep_history`). Returns what was deleted.
    async fn uninstall(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        keep_history: bool,
        spec: &HelmReleaseSpec,
        timeout: Duration,
    ) -> Result<Vec<ObjectRef>, ReleaseError>;

    /// Runs the test hooks of the deployed release (Helm's `helm test`), keeping only those
    /// `spec.test.filters` select, and records their runs in the release. Called only on
    /// backends that run workloads.
    async fn test(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        spec: &HelmReleaseSpec,
        timeout: Duration,
    ) -> Result<ReleaseInfo, ReleaseError>;

    /// Compares the deployed release's objects with what the backend holds (Flux's drift
    /// detection), leaving out `spec.driftDetection.ignore`. Returns one line per drifted
    /// object (`Kind/ns/name: /changed/paths` or `... : missing`); with `correct`, applies the
    /// drifted objects again (ignored fields keep their cluster values).
    async fn drift(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        spec: &HelmReleaseSpec,
        correct: bool,
    ) -> Result<Vec<String>, ReleaseError>;

    /// Marks a record `failed` (recovers a release left pending by a crash).
    async fn mark_failed(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        version: i64,
        description: &str,
    ) -> Result<(), ReleaseError>;
}

/// Builds the chart source's spec from the HelmRepository and the chart template.
pub type ChartSpecFn<T> = fn(HelmRepositorySpec, HelmChartSpec) -> T;

/// Reconciles HelmRelease objects. The chart comes from a HelmChart (the one `spec.chart`
/// describes, created and owned by the release as helm-controller does, or the one
/// `spec.chartRef` names) or from an OCIRepository holding the chart layer (`spec.chartRef`);
/// their reconcilers fetch it, this one waits for their artifact.
pub struct HelmReleaseReconciler<M> {
    manager: M,
    store: ArtifactStore,
    remote: Option<std::sync::Arc<super::RemoteClusters>>,
}

impl<M> HelmReleaseReconciler<M> {
    pub fn new(manager: M, store: ArtifactStore) -> Self {
        HelmReleaseReconciler {
            manager,
            store,
            remote: None,
        }
    }

    /// Reaches the clusters of `spec.kubeConfig` through `remote` (release records, objects,
    /// hooks and tests all go there). Without it, a HelmRelease with a kubeConfig stalls
    /// saying this build cannot reach remote clusters.
    pub fn with_remote_clusters(mut self, remote: std::sync::Arc<super::RemoteClusters>) -> Self {
        self.remote = Some(remote);
        self
    }
}

/// Flux's reason while the chart source has no usable artifact yet.
pub const SOURCE_NOT_READY: &str = "SourceNotReady";

/// Flux's default release name: `[targetNamespace-]name`, shortened to Helm's 53 characters
/// with a hash suffix so that two long names stay distinct (helm-controller's `ShortenName`).
pub fn release_name(hr: &HelmRelease) -> String {
    if let Some(n) = hr.spec.release_name.as_deref().filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    let full = match hr
        .spec
        .target_namespace
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        Some(ns) => format!("{ns}-{}", hr.name()),
        None => hr.name().to_string(),
    };
    shorten_name(&full)
}

/// helm-controller's `ShortenName`: names over 53 characters keep their first 40 plus `-` and
/// 12 hex characters of their sha256.
pub fn shorten_name(name: &str) -> String {
    const MAX: usize = 53;
    const HASH: usize = 12;
    if name.len() <= MAX {
        return name.to_string();
    }
    let sum = hex::encode(Sha256::digest(name.as_bytes()));
    let mut cut = MAX - HASH - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{}", &name[..cut], &sum[..HASH])
}

/// Where the release lives, from the spec (Flux's defaults).
pub fn release_target(hr: &HelmRelease) -> ReleaseTarget {
    let own = hr.namespace().to_string();
    ReleaseTarget {
        name: release_name(hr),
        namespace: hr
            .spec
            .target_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| own.clone()),
        storage_namespace: hr
            .spec
            .storage_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or(own),
    }
}

/// `sha256:<hex>` of values in a canonical form (serde_json sorts map keys), so the same values
/// always give the same digest.
pub fn config_digest(values: &Value) -> String {
    let bytes = serde_json::to_vec(values).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// Annotation that, set to the same token as `reconcile.fluxcd.io/requestedAt`, runs the
/// release action once even when nothing changed or remediation is exhausted.
pub const FORCE_AT: &str = "reconcile.fluxcd.io/forceAt";
/// Annotation that, set to the same token as `reconcile.fluxcd.io/requestedAt`, resets the
/// failure counts (so remediation retries start over).
pub const RESET_AT: &str = "reconcile.fluxcd.io/resetAt";

/// `flux reconcile helmrelease --force`: asks for one forced release run. The token is any
/// string that differs from the last one (Flux uses the time).
pub fn request_force(hr: &mut Object, token: &str) {
    hr.set_annotation(crate::runtime::REQUESTED_AT, token);
    hr.set_annotation(FORCE_AT, token);
}

/// `flux reconcile helmrelease --reset`: asks for the failure counts to be reset.
pub fn request_reset(hr: &mut Object, token: &str) {
    hr.set_annotation(crate::runtime::REQUESTED_AT, token);
    hr.set_annotation(RESET_AT, token);
}

/// The token of an annotation (`forceAt`/`resetAt`) that asks for action now: equal to
/// `requestedAt` (helm-controller's rule, so a stale annotation does nothing) and not handled
/// yet.
fn pending_request(obj: &Object, annotation: &str, handled: &str) -> Option<String> {
    let token = obj.annotation(annotation)?;
    let requested = obj.annotation(crate::runtime::REQUESTED_AT)?;
    (token == requested && token != handled && !token.is_empty()).then(|| token.to_string())
}

/// `sha256:<hex>` of `spec.postRenderers`, empty without any.
pub fn post_renderers_digest(spec: &HelmReleaseSpec) -> String {
    if spec.post_renderers.is_empty() {
        return String::new();
    }
    config_digest(&serde_json::to_value(&spec.post_renderers).unwrap_or_default())
}

/// Merges `src` over `dst` the way Helm merges values maps (maps merge, anything else replaces).
pub fn merge_values(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(dv @ Value::Object(_)) if v.is_object() => merge_values(dv, v),
                    _ => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

/// Sets `value` at a dotted `targetPath` (`a.b.c`; `\.` escapes a dot), creating maps on the
/// way. Flux parses the path with Helm's strvals; plain dotted paths are what charts use.
fn set_path(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                cur.push('.');
                chars.next();
            }
            '.' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("invalid targetPath '{path}'"));
    }
    let mut node = root;
    for (i, p) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            map.insert(p.clone(), value);
            return Ok(());
        }
        node = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// Composes the values as Flux does: each `valuesFrom` in order, then the inline `values` on
/// top. Errors name the reference and key, never the content (it may be secret).
pub async fn compose_values(
    backend: &dyn Backend,
    namespace: &str,
    refs: &[ValuesReference],
    inline: Option<&Value>,
) -> Result<Value, String> {
    let mut out = Value::Object(Default::default());
    for (i, r) in refs.iter().enumerate() {
        let kind = match r.kind.as_str() {
            "Secret" | "ConfigMap" => r.kind.as_str(),
            other => {
                return Err(format!(
                    "spec.valuesFrom[{i}].kind: unsupported kind '{other}' (Secret, ConfigMap)"
                ))
            }
        };
        let oref = ObjectRef::new("", kind, namespace, &r.name);
        let obj = match backend.get(&oref).await {
            Ok(Some(o)) => o,
            Ok(None) if r.optional => continue,
            Ok(None) => return Err(format!("could not find {kind} '{namespace}/{}'", r.name)),
            Err(e) => {
                return Err(format!(
                    "could not get {kind} '{namespace}/{}': {e}",
                    r.name
                ))
            }
        };
        let data = object_data(&obj)?;
        let key = r
            .values_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or("values.yaml");
        let Some(bytes) = data.get(key) else {
            if r.optional {
                continue;
            }
            return Err(format!(
                "missing key '{key}' in {kind} '{namespace}/{}'",
                r.name
            ));
        };
        let text = String::from_utf8_lossy(bytes);
        match r.target_path.as_deref().filter(|p| !p.is_empty()) {
            Some(path) => {
                // Flux sets the raw value as a string at the path (strvals `--set-string`
                // semantics for anything that is not a plain scalar).
                set_path(
                    &mut out,
                    path,
                    Value::String(text.trim_end_matches('\n').to_string()),
                )
                .map_err(|e| format!("spec.valuesFrom[{i}].targetPath: {e}"))?;
            }
            None => {
                let v: Value = serde_yaml::from_str(&text).map_err(|e| {
                    // The YAML error may quote the content: keep only where it broke.
                    let at = e
                        .location()
                        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                        .unwrap_or_default();
                    format!(
                        "unable to read values from key '{key}' in {kind} '{namespace}/{}': invalid YAML{at}",
                        r.name
                    )
                })?;
                match v {
                    Value::Null => {}
                    v @ Value::Object(_) => merge_values(&mut out, v),
                    _ => {
                        return Err(format!(
                            "unable to read values from key '{key}' in {kind} '{namespace}/{}': not a map",
                            r.name
                        ))
                    }
                }
            }
        }
    }
    if let Some(v) = inline {
        match v {
            Value::Null => {}
            Value::Object(_) => merge_values(&mut out, v.clone()),
            _ => return Err("spec.values: must be a map".into()),
        }
    }
    Ok(out)
}

/// The status fields only a HelmRelease has (kept in `Status::extra`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ReleaseInfo>,
    #[serde(default)]
    pub failures: i64,
    #[serde(default)]
    pub install_failures: i64,
    #[serde(default)]
    pub upgrade_failures: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_attempted_config_digest: String,
    #[serde(default)]
    pub last_attempted_generation: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_attempted_release_action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helm_chart: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_namespace: String,
    /// The `reconcile.fluxcd.io/forceAt` token last acted on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_handled_force_at: String,
    /// The `reconcile.fluxcd.io/resetAt` token last acted on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_handled_reset_at: String,
    /// Digest of the `spec.postRenderers` the deployed release was rendered with (Flux's
    /// `observedPostRenderersDigest`); a change upgrades the release.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub observed_post_renderers_digest: String,
    /// The chart artifact kept in the store (revision = chart version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_artifact: Option<Artifact>,
}

const HR_FIELDS: &[&str] = &[
    "history",
    "failures",
    "installFailures",
    "upgradeFailures",
    "lastAttemptedConfigDigest",
    "lastAttemptedGeneration",
    "lastAttemptedReleaseAction",
    "helmChart",
    "storageNamespace",
    "observedPostRenderersDigest",
    "lastHandledForceAt",
    "lastHandledResetAt",
    "chartArtifact",
];

impl HelmReleaseStatus {
    pub fn from_status(st: &Status) -> Self {
        serde_json::from_value(Value::Object(st.extra.clone())).unwrap_or_default()
    }

    pub fn write_to(&self, st: &mut Status) {
        for f in HR_FIELDS {
            st.extra.remove(*f);
        }
        if let Ok(Value::Object(m)) = serde_json::to_value(self) {
            st.extra.extend(m);
        }
    }
}

/// Flux keeps the latest five snapshots in `status.history`, newest first.
const STATUS_HISTORY: usize = 5;

fn snapshots(mut records: Vec<ReleaseInfo>) -> Vec<ReleaseInfo> {
    records.sort_by_key(|r| std::cmp::Reverse(r.version));
    records.truncate(STATUS_HISTORY);
    records
}

/// Remaining attempts: `retries` counts retries after the first failure; negative = unlimited.
fn exhausted(failures: i64, retries: i64) -> bool {
    retries >= 0 && failures > retries
}

/// The object a HelmRelease takes its chart from: its own HelmChart for `spec.chart`, the
/// `spec.chartRef` otherwise.
fn chart_source_ref(hr: &HelmRelease) -> Option<ObjectRef> {
    if let Some(tpl) = &hr.spec.chart {
        return Some(super::helmchart::template_chart_ref(
            hr.namespace(),
            hr.name(),
            tpl.spec.source_ref.namespace.as_deref(),
        ));
    }
    let r = hr.spec.chart_ref.as_ref()?;
    let kind = match r.kind.as_str() {
        "OCIRepository" => FluxKind::OciRepository,
        "HelmChart" => FluxKind::HelmChart,
        _ => return None,
    };
    Some(
        kind.ref_to(
            r.namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(hr.namespace()),
            &r.name,
        ),
    )
}

/// Deletes the HelmChart a HelmRelease created (`status.helmChart`), when it still carries the
/// release's owner labels. Returns the event to record.
async fn delete_owned_chart(obj: &Object, backend: &dyn Backend) -> Vec<Event> {
    let st = Status::from_value(obj.status());
    let hst = HelmReleaseStatus::from_status(&st);
    let mut name = hst.helm_chart;
    // Deleted before its chart was ever ready: the chart the template names.
    if name.is_empty() {
        if let Some(r) = from_object::<HelmRelease>(obj)
            .ok()
            .filter(|hr| hr.spec.chart.is_some())
            .and_then(|hr| chart_source_ref(&hr))
        {
            name = format!("{}/{}", r.namespace, r.name);
        }
    }
    delete_chart_by_status(&obj.object_ref(), &name, backend).await
}

async fn delete_chart_by_status(
    me: &ObjectRef,
    helm_chart: &str,
    backend: &dyn Backend,
) -> Vec<Event> {
    use super::helmchart::{OWNER_NAMESPACE_LABEL, OWNER_NAME_LABEL};
    let Some((ns, name)) = helm_chart.split_once('/') else {
        return Vec::new();
    };
    let r = FluxKind::HelmChart.ref_to(ns, name);
    let owned = match backend.get(&r).await {
        Ok(Some(o)) => {
            o.label(OWNER_NAME_LABEL) == Some(me.name.as_str())
                && o.label(OWNER_NAMESPACE_LABEL) == Some(me.namespace.as_str())
        }
        _ => false,
    };
    if !owned {
        return Vec::new();
    }
    match backend.delete(&r).await {
        Ok(_) => vec![Event::new(
            me.clone(),
            Severity::Info,
            "HelmChartDeleted",
            format!("deleted HelmChart '{helm_chart}'"),
        )],
        Err(e) => vec![Event::new(
            me.clone(),
            Severity::Error,
            "HelmChartDeleteFailed",
            format!("failed to delete HelmChart '{helm_chart}': {e}"),
        )],
    }
}

/// Metadata key of a chart artifact built from an OCIRepository: that artifact's digest.
const SOURCE_DIGEST: &str = "sourceDigest";

impl<M> HelmReleaseReconciler<M>
where
    M: ReleaseManager,
{
    /// Flux's test step after a successful install or upgrade (`spec.test.enable`): the
    /// TestSuccess condition, an event, and a failed test as a failed release unless
    /// `ignoreFailures`. A backend that runs no workloads cannot run test Pods: the condition
    /// says so.
    #[allow(clippy::too_many_arguments)]
    async fn run_tests(
        &self,
        hr: &HelmRelease,
        me: &ObjectRef,
        target: &ReleaseTarget,
        backend: &dyn Backend,
        timeout: Duration,
        generation: i64,
        is_install: bool,
        result: Result<ReleaseInfo, ReleaseError>,
        status: &mut Status,
        events: &mut Vec<Event>,
    ) -> Result<ReleaseInfo, ReleaseError> {
        let test = hr.spec.test.clone().unwrap_or_default();
        let Ok(rel) = result else {
            return result;
        };
        let now = crate::time::now_rfc3339();
        if !test.enable {
            status.remove_condition(TEST_SUCCESS);
            return Ok(rel);
        }
        let name = format!("{}/{}.v{}", target.namespace, rel.name, rel.version);
        if !backend.runs_workloads() {
            let msg = format!(
                "Helm tests of release {name} were not run: {} runs no workloads",
                backend.describe()
            );
            status.set_condition(
                Condition::new(
                    TEST_SUCCESS,
                    ConditionStatus::Unknown,
                    helm_reason::TEST_NOT_RUN,
                    msg.clone(),
                ),
                generation,
                &now,
            );
            let mut rel = rel;
            rel.messages.push(msg);
            return Ok(rel);
        }
        let timeout = test
            .timeout
            .as_ref()
            .map(|t| t.duration())
            .unwrap_or(timeout);
        let ignore = test.ignore_failures || {
            let rem = if is_install {
                hr.spec
                    .install
                    .as_ref()
                    .and_then(|i| i.remediation.as_ref())
            } else {
                hr.spec
                    .upgrade
                    .as_ref()
                    .and_then(|u| u.remediation.as_ref())
            };
            rem.and_then(|r| r.ignore_test_failures).unwrap_or(false)
        };
        match self.manager.test(backend, target, &hr.spec, timeout).await {
            Ok(t) => {
                let n = t.test_hooks.as_ref().map(|h| h.len()).unwrap_or(0);
                let msg = format!(
                    "Helm test succeeded for release {name} with chart {}@{}: {n} test hook(s) completed successfully",
                    rel.chart_name, rel.chart_version
                );
                status.set_condition(
                    Condition::new(
                        TEST_SUCCESS,
                        ConditionStatus::True,
                        helm_reason::TEST_SUCCEEDED,
                        msg.clone(),
                    ),
                    generation,
                    &now,
                );
                events.push(Event::new(
                    me.clone(),
                    Severity::Info,
                    helm_reason::TEST_SUCCEEDED,
                    msg,
                ));
                let mut t = t;
                t.messages = rel.messages;
                Ok(t)
            }
            Err(mut e) => {
                let msg = format!(
                    "Helm test failed for release {name} with chart {}@{}: {}",
                    rel.chart_name, rel.chart_version, e.message
                );
                status.set_condition(
                    Condition::new(
                        TEST_SUCCESS,
                        ConditionStatus::False,
                        helm_reason::TEST_FAILED,
                        msg.clone(),
                    ),
                    generation,
                    &now,
                );
                events.push(Event::new(
                    me.clone(),
                    Severity::Error,
                    helm_reason::TEST_FAILED,
                    msg.clone(),
                ));
                if ignore {
                    let mut rel = rel;
                    rel.messages.push("test failures ignored".into());
                    return Ok(rel);
                }
                e.kind = ReleaseErrorKind::Test;
                e.release = Some(Box::new(rel));
                Err(e)
            }
        }
    }

    /// Makes sure the chart's source exists and is ready, and returns the chart artifact
    /// (revision = chart version). `SOURCE_NOT_READY` errors mean waiting, not failing.
    async fn chart_artifact(
        &self,
        hr: &HelmRelease,
        hst: &HelmReleaseStatus,
        backend: &dyn Backend,
        _timeout: Duration,
    ) -> Result<Artifact, (String, String, bool)> {
        let invalid = |m: String| Err((reason::INVALID_SPEC.to_string(), m, true));
        let not_ready = |m: String| (SOURCE_NOT_READY.to_string(), m, false);
        let get_failed = |m: String| {
            (
                reason::ARTIFACT_FAILED.to_string(),
                format!("could not get Source object: {m}"),
                false,
            )
        };
        let me = hr.object_ref();
        match (&hr.spec.chart, &hr.spec.chart_ref) {
            (Some(_), Some(_)) | (None, None) => invalid(
                "invalid Chart reference: set exactly one of spec.chart and spec.chartRef".into(),
            ),
            (Some(tpl), None) => {
                let kind = tpl.spec.source_ref.kind.as_str();
                if !matches!(kind, "HelmRepository" | "GitRepository" | "Bucket") {
                    return invalid(format!(
                        "spec.chart.spec.sourceRef.kind: unsupported kind '{kind}' (HelmRepository, GitRepository, Bucket)"
                    ));
                }
                let desired = super::helmchart::chart_from_template(
                    hr.namespace(),
                    hr.name(),
                    &hr.spec.interval.to_string(),
                    tpl,
                );
                let cref = desired.object_ref();
                let wanted = format!("{}/{}", cref.namespace, cref.name);
                if !hst.helm_chart.is_empty() && hst.helm_chart != wanted {
                    delete_chart_by_status(&me, &hst.helm_chart, backend).await;
                }
                let existing = backend
                    .get(&cref)
                    .await
                    .map_err(|e| get_failed(e.to_string()))?;
                let in_sync = existing.as_ref().is_some_and(|e| {
                    e.spec() == desired.spec()
                        && desired
                            .labels()
                            .into_iter()
                            .flatten()
                            .all(|(k, v)| e.labels().and_then(|l| l.get(k)) == Some(v))
                        && desired
                            .annotations()
                            .into_iter()
                            .flatten()
                            .all(|(k, v)| e.annotations().and_then(|l| l.get(k)) == Some(v))
                });
                let chart_obj = match existing {
                    Some(e) if in_sync => e,
                    _ => {
                        backend
                            .apply(&desired, &crate::traits::ApplyOptions::default())
                            .await
                            .map_err(|e| {
                                (
                                    reason::ARTIFACT_FAILED.to_string(),
                                    format!("failed to apply HelmChart '{wanted}': {e}"),
                                    false,
                                )
                            })?;
                        backend
                            .get(&cref)
                            .await
                            .map_err(|e| get_failed(e.to_string()))?
                            .ok_or_else(|| {
                                not_ready(format!(
                                    "HelmChart '{wanted}' is not ready: not created yet"
                                ))
                            })?
                    }
                };
                let artifact = super::helmchart::source_readiness(&chart_obj).map_err(not_ready)?;
                if !self.store.contains(&artifact) {
                    return Err(not_ready(
                        "Source not ready: artifact not found".to_string(),
                    ));
                }
                Ok(artifact)
            }
            (None, Some(r)) => {
                if !hst.helm_chart.is_empty() {
                    delete_chart_by_status(&me, &hst.helm_chart, backend).await;
                }
                let Some(sref) = chart_source_ref(hr) else {
                    return invalid(format!(
                        "spec.chartRef.kind: unsupported kind '{}' (OCIRepository, HelmChart)",
                        r.kind
                    ));
                };
                let src = backend
                    .get(&sref)
                    .await
                    .map_err(|e| get_failed(e.to_string()))?
                    .ok_or_else(|| {
                        get_failed(format!(
                            "{} '{}/{}' not found",
                            r.kind, sref.namespace, sref.name
                        ))
                    })?;
                let artifact = super::helmchart::source_readiness(&src).map_err(not_ready)?;
                if !self.store.contains(&artifact) {
                    return Err(not_ready(
                        "Source not ready: artifact not found".to_string(),
                    ));
                }
                if sref.kind == "HelmChart" {
                    return Ok(artifact);
                }
                self.oci_chart(hr, hst, &artifact).await
            }
        }
    }

    /// The chart inside an OCIRepository artifact (the chart layer copied, or extracted), its
    /// version given the first 12 hex characters of the manifest digest as build metadata, as
    /// helm-controller does so that a re-pushed tag is noticed.
    async fn oci_chart(
        &self,
        hr: &HelmRelease,
        hst: &HelmReleaseStatus,
        source: &Artifact,
    ) -> Result<Artifact, (String, String, bool)> {
        if let Some(a) = &hst.chart_artifact {
            if a.metadata.get(SOURCE_DIGEST) == Some(&source.digest) && self.store.contains(a) {
                return Ok(a.clone());
            }
        }
        let store = self.store.clone();
        let source = source.clone();
        let owner = hr.object_ref();
        let shown = format!("OCIRepository artifact '{}'", source.revision);
        tokio::task::spawn_blocking(move || -> Result<Artifact, (String, String, bool)> {
            use super::chartbuild::{from_archive, BuildOptions};
            let fail = |m: String| {
                (
                    reason::ARTIFACT_FAILED.to_string(),
                    format!("Could not load chart: {m}"),
                    false,
                )
            };
            let dir = store.unpacked(&source).map_err(|e| fail(e.to_string()))?;
            let tgzs: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| fail(e.to_string()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "tgz"))
                .collect();
            let limits = store.limits();
            let tgz = match tgzs.as_slice() {
                [one] => std::fs::read(one).map_err(|e| fail(e.to_string()))?,
                _ => {
                    let root =
                        super::chartbuild::chart_root(&dir, &shown).map_err(|e| fail(e.message))?;
                    let parent = root.parent().unwrap_or(&dir).to_path_buf();
                    let b = super::chartbuild::package_dir(
                        &root,
                        &parent,
                        &shown,
                        &BuildOptions::default(),
                    )
                    .map_err(|e| fail(e.message))?;
                    b.tgz
                }
            };
            let plain = from_archive(tgz, &shown, &BuildOptions::default(), &limits)
                .map_err(|e| fail(e.message))?;
            let (tag, digest) = match source.revision.rsplit_once('@') {
                Some((t, d)) => (Some(t), d),
                None => (None, source.revision.as_str()),
            };
            if let Some(t) = tag {
                if t != plain.version && t.replace('_', "+") != plain.version {
                    return Err((
                        "ChartMutateError".into(),
                        format!(
                            "artifact revision {} does not match chart version {}",
                            source.revision, plain.version
                        ),
                        false,
                    ));
                }
            }
            let hex = digest.rsplit_once(':').map_or(digest, |(_, h)| h);
            if hex.len() < 12 {
                return Err((
                    "ChartMutateError".into(),
                    format!("invalid artifact revision {}", source.revision),
                    false,
                ));
            }
            let opts = BuildOptions {
                version_metadata: Some(hex[..12].to_string()),
                ..Default::default()
            };
            let built = from_archive(plain.tgz, &shown, &opts, &limits)
                .map_err(|e| ("ChartMutateError".to_string(), e.message, false))?;
            let mut a = store
                .store_bytes(&owner, &built.tgz, &built.version)
                .map_err(|e| fail(e.to_string()))?;
            a.metadata
                .insert(SOURCE_DIGEST.into(), source.digest.clone());
            Ok(a)
        })
        .await
        .map_err(|e| (reason::ARTIFACT_FAILED.to_string(), e.to_string(), false))?
    }
}

#[async_trait]
impl<M> Reconciler for HelmReleaseReconciler<M>
where
    M: ReleaseManager,
{
    fn kind(&self) -> crate::object::GroupKind {
        FluxKind::HelmRelease.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let hr: HelmRelease = from_object(obj)?;
        let interval = hr.spec.interval.duration().max(Duration::from_secs(1));
        let watches = chart_source_ref(&hr).into_iter().collect();
        Ok(Schedule {
            interval,
            retry_interval: interval,
            // Flux's default timeout for Helm actions is 5m; one reconcile may run an action
            // plus its remediation plus an uninstall, each with that budget.
            timeout: hr.spec.action_timeout() * 3,
            suspend: hr.spec.suspend,
            depends_on: dependency_refs(FluxKind::HelmRelease, hr.namespace(), &hr.spec.depends_on),
            watches,
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let hr: HelmRelease = match from_object(obj) {
            Ok(h) => h,
            Err(e) => return invalid_spec(obj, &e),
        };
        // Checked before anything is installed: an uninstall (remediation, deletion) must not
        // be the first to find out.
        if let Err(msg) = hr.spec.deletion_propagation() {
            return Outcome::failed(
                obj,
                Status::from_value(obj.status()),
                reason::INVALID_SPEC,
                msg,
                true,
            );
        }
        let me = obj.object_ref();
        let generation = obj.generation();
        let mut status = Status::from_value(obj.status());
        let mut hst = HelmReleaseStatus::from_status(&status);
        let timeout = hr.spec.action_timeout();
        let target = release_target(&hr);
        hst.storage_namespace = target.storage_namespace.clone();

        let artifact = match self.chart_artifact(&hr, &hst, backend, timeout).await {
            Ok(a) => a,
            Err((why, msg, _)) if why == SOURCE_NOT_READY => {
                hst.write_to(&mut status);
                return Outcome::waiting(obj, status, &why, msg);
            }
            Err((why, msg, stalled)) => {
                hst.write_to(&mut status);
                return Outcome::failed(obj, status, &why, msg, stalled);
            }
        };
        if let Some(tpl) = &hr.spec.chart {
            let ns = tpl
                .spec
                .source_ref
                .namespace
                .as_deref()
                .unwrap_or(hr.namespace());
            hst.helm_chart = format!("{ns}/{}-{}", hr.namespace(), hr.name());
        } else {
            hst.helm_chart.clear();
        }
        hst.chart_artifact = Some(artifact.clone());
        let chart_version = artifact.revision.clone();
        let store = self.store.clone();
        let a2 = artifact.clone();
        let dir = match tokio::task::spawn_blocking(move || store.unpacked(&a2)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                hst.write_to(&mut status);
                return Outcome::failed(obj, status, reason::ARTIFACT_FAILED, e.to_string(), false);
            }
            Err(e) => {
                hst.write_to(&mut status);
                return Outcome::failed(obj, status, reason::ARTIFACT_FAILED, e.to_string(), false);
            }
        };

        let values = match compose_values(
            backend,
            hr.namespace(),
            &hr.spec.values_from,
            hr.spec.values.as_ref(),
        )
        .await
        {
            Ok(v) => v,
            Err(e) => {
                hst.write_to(&mut status);
                return Outcome::failed(obj, status, helm_reason::VALUES_ERROR, e, false);
            }
        };
        let digest = config_digest(&values);

        let force = pending_request(obj, FORCE_AT, &hst.last_handled_force_at);
        let reset = pending_request(obj, RESET_AT, &hst.last_handled_reset_at);
        // A new desired state (spec, chart version or values), or a reset request, starts the
        // failure counts over.
        if hst.last_attempted_generation != generation
            || status.last_attempted_revision != chart_version
            || hst.last_attempted_config_digest != digest
            || reset.is_some()
        {
            hst.failures = 0;
            hst.install_failures = 0;
            hst.upgrade_failures = 0;
        }
        status.observed_generation = generation;
        if let Some(t) = reset {
            hst.last_handled_reset_at = t;
        }
        if let Some(t) = &force {
            hst.last_handled_force_at = t.clone();
        }

        // spec.kubeConfig: the release's actions (storage, install, upgrade, tests, rollback,
        // uninstall) run on that cluster; spec.serviceAccountName: as that account (on the
        // remote cluster when there is one).
        let (acting, not_enforced) = match super::remote::target_backend(
            &me,
            hr.spec.kube_config.as_ref(),
            hr.spec.service_account_name.as_deref(),
            backend,
            self.remote.as_deref(),
            timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                hst.write_to(&mut status);
                return Outcome::failed(obj, status, e.reason, e.message, e.stalled);
            }
        };
        let backend: &dyn Backend = acting.as_deref().unwrap_or(backend);
        let mut history = match self.manager.history(backend, &target).await {
            Ok(h) => h,
            Err(e) => {
                hst.write_to(&mut status);
                return Outcome::failed(
                    obj,
                    status,
                    reason::RECONCILIATION_FAILED,
                    e.message,
                    false,
                );
            }
        };
        let mut events = Vec::new();
        // A record left pending (the process died mid-action) would block every later action
        // ("another operation is in progress"): mark it failed and carry on.
        if let Some(last) = history.last().filter(|r| r.is_pending()).cloned() {
            let desc = format!(
                "Release {} was left in {} and was marked failed",
                last.version, last.status
            );
            if let Err(e) = self
                .manager
                .mark_failed(backend, &target, last.version, &desc)
                .await
            {
                hst.write_to(&mut status);
                return Outcome::failed(
                    obj,
                    status,
                    reason::RECONCILIATION_FAILED,
                    e.message,
                    false,
                );
            }
            events.push(Event::new(
                me.clone(),
                Severity::Info,
                "PendingReleaseRecovered",
                desc,
            ));
            if let Some(l) = history.last_mut() {
                l.status = release_status::FAILED.into();
            }
        }

        let install = hr.spec.install.clone().unwrap_or_default();
        let upgrade = hr.spec.upgrade.clone().unwrap_or_default();
        let install_rem = install.remediation.clone().unwrap_or_default();
        let upgrade_rem = upgrade.remediation.clone().unwrap_or_default();
        let latest = history.last().cloned();
        let deployed = history
            .iter()
            .rev()
            .find(|r| r.status == release_status::DEPLOYED)
            .cloned();
        let now = crate::time::now_rfc3339();

        // Up to date: the deployed release is the latest record and matches what is desired
        // (chart version and values). The record may have been written by someone else, e.g.
        // a `helm rollback` to a revision that is what the spec asks for: it is taken as the
        // current one, not fought. A release this object never managed (no history in its
        // status, e.g. one `helm install`ed) is adopted by an upgrade, as Flux does.
        let managed = !hst.history.is_empty();
        let post_renderers = post_renderers_digest(&hr.spec);
        if let (Some(d), Some(l)) = (&deployed, &latest) {
            if d.version == l.version
                && d.chart_version == chart_version
                && d.config_digest == digest
                && hst.observed_post_renderers_digest == post_renderers
                && managed
                && force.is_none()
            {
                hst.last_attempted_generation = generation;
                let mut msg = format!(
                    "Helm release '{}' is up to date ({})",
                    target.name, d.description
                );
                let dd = hr.spec.drift_detection.clone().unwrap_or_default();
                let mode = dd.mode.as_deref().unwrap_or("disabled");
                if !matches!(mode, "enabled" | "warn" | "disabled" | "") {
                    hst.write_to(&mut status);
                    return Outcome::failed(
                        obj,
                        status,
                        reason::INVALID_SPEC,
                        format!("spec.driftDetection.mode: unsupported mode '{mode}' (enabled, warn, disabled)"),
                        true,
                    );
                }
                if matches!(mode, "enabled" | "warn") {
                    let correct = mode == "enabled";
                    match self
                        .manager
                        .drift(backend, &target, &hr.spec, correct)
                        .await
                    {
                        Ok(drifted) if drifted.is_empty() => {}
                        Ok(drifted) => {
                            let (why, sev, what) = if correct {
                                (helm_reason::DRIFT_CORRECTED, Severity::Info, "corrected")
                            } else {
                                (
                                    helm_reason::DRIFT_DETECTED,
                                    Severity::Error,
                                    "detected (warn mode: not corrected)",
                                )
                            };
                            let text = format!(
                                "Cluster state of release {}/{}.v{} drifted from the release, {what}:\n{}",
                                target.namespace,
                                target.name,
                                d.version,
                                drifted.join("\n")
                            );
                            events.push(
                                Event::new(me.clone(), sev, why, text)
                                    .with_revision(chart_version.clone()),
                            );
                            msg.push_str(&format!("; drift {what} in {} object(s)", drifted.len()));
                        }
                        Err(e) => {
                            hst.write_to(&mut status);
                            let mut out = Outcome::failed(
                                obj,
                                status,
                                helm_reason::DRIFT_DETECTED,
                                format!("drift detection failed: {}", e.message),
                                false,
                            );
                            out.events.extend(events);
                            return out;
                        }
                    }
                }
                hst.history = snapshots(history);
                hst.write_to(&mut status);
                status.last_attempted_revision = chart_version.clone();
                status.last_applied_revision = chart_version.clone();
                status.mark_ready(
                    reason::RECONCILIATION_SUCCEEDED,
                    format!("{msg}{not_enforced}"),
                    generation,
                    &now,
                );
                let mut out = Outcome::new(Verdict::Ready, status);
                out.events = events;
                return out;
            }
        }

        let is_install = deployed.is_none();
        let (failures, retries) = if is_install {
            (hst.install_failures, install_rem.retries.unwrap_or(0))
        } else {
            (hst.upgrade_failures, upgrade_rem.retries.unwrap_or(0))
        };
        if exhausted(failures, retries) && force.is_none() {
            hst.history = snapshots(history);
            hst.write_to(&mut status);
            let msg = format!(
                "Failed to {} after {failures} attempt(s); change the HelmRelease, or request a reset or a forced run (reconcile.fluxcd.io/resetAt, forceAt), to try again",
                if is_install { "install" } else { "upgrade" }
            );
            return Outcome::failed(obj, status, helm_reason::RETRIES_EXHAUSTED, msg, true);
        }

        // A failed install leaves records but nothing deployed: Helm cannot upgrade from there,
        // so clear them first (Flux's uninstall-then-install).
        if is_install
            && latest
                .as_ref()
                .is_some_and(|l| l.status != release_status::UNINSTALLED)
        {
            if let Err(e) = self
                .manager
                .uninstall(backend, &target, false, &hr.spec, timeout)
                .await
            {
                hst.write_to(&mut status);
                return Outcome::failed(
                    obj,
                    status,
                    helm_reason::UNINSTALL_FAILED,
                    e.message,
                    false,
                );
            }
        }

        status.last_attempted_revision = chart_version.clone();
        hst.last_attempted_config_digest = digest.clone();
        hst.last_attempted_generation = generation;
        hst.last_attempted_release_action = if is_install { "install" } else { "upgrade" }.into();
        let req = ReleaseRequest {
            object: &me,
            spec: &hr.spec,
            target: &target,
            chart_dir: &dir,
            values: &values,
            config_digest: &digest,
            backend,
            timeout,
        };
        let result = if is_install {
            self.manager.install(req).await
        } else {
            self.manager.upgrade(req).await
        };

        let result = self
            .run_tests(
                &hr,
                &me,
                &target,
                backend,
                timeout,
                generation,
                is_install,
                result,
                &mut status,
                &mut events,
            )
            .await;

        let verdict;
        match result {
            Ok(rel) => {
                let (why, mut msg) = if is_install {
                    (
                        helm_reason::INSTALL_SUCCEEDED,
                        format!(
                            "Helm install succeeded for release {}/{}.v{} with chart {}@{}",
                            target.namespace,
                            rel.name,
                            rel.version,
                            rel.chart_name,
                            rel.chart_version
                        ),
                    )
                } else {
                    (
                        helm_reason::UPGRADE_SUCCEEDED,
                        format!(
                            "Helm upgrade succeeded for release {}/{}.v{} with chart {}@{}",
                            target.namespace,
                            rel.name,
                            rel.version,
                            rel.chart_name,
                            rel.chart_version
                        ),
                    )
                };
                for m in &rel.messages {
                    msg.push_str(&format!(" ({m})"));
                }
                status.set_condition(
                    Condition::new(RELEASED, ConditionStatus::True, why, msg.clone()),
                    generation,
                    &now,
                );
                status.remove_condition(REMEDIATED);
                hst.observed_post_renderers_digest = post_renderers;
                status.last_applied_revision = chart_version.clone();
                status.mark_ready(why, format!("{msg}{not_enforced}"), generation, &now);
                events.push(
                    Event::new(me.clone(), Severity::Info, why, msg)
                        .with_revision(chart_version.clone()),
                );
                verdict = Verdict::Ready;
            }
            Err(e) => {
                let (why, rem) = if is_install {
                    hst.install_failures += 1;
                    (helm_reason::INSTALL_FAILED, &install_rem)
                } else {
                    hst.upgrade_failures += 1;
                    (helm_reason::UPGRADE_FAILED, &upgrade_rem)
                };
                hst.failures += 1;
                let tested = e.kind == ReleaseErrorKind::Test;
                let msg = if tested {
                    format!(
                        "Helm test failed for release {}/{} with chart {}: {}",
                        target.namespace, target.name, chart_version, e.message
                    )
                } else {
                    format!(
                        "Helm {} failed for release {}/{} with chart {}: {}",
                        if is_install { "install" } else { "upgrade" },
                        target.namespace,
                        target.name,
                        chart_version,
                        e.message
                    )
                };
                let why = if tested {
                    helm_reason::TEST_FAILED
                } else {
                    why
                };
                if !tested {
                    status.set_condition(
                        Condition::new(RELEASED, ConditionStatus::False, why, msg.clone()),
                        generation,
                        &now,
                    );
                }
                events.push(
                    Event::new(me.clone(), Severity::Error, why, msg.clone())
                        .with_revision(chart_version.clone()),
                );
                let retries = rem.retries.unwrap_or(0);
                // Flux remediates while retries remain, and after the last one only with
                // remediateLastFailure (default: on when retries > 0). A render error wrote
                // nothing, so there is nothing to remediate.
                let last = exhausted(
                    if is_install {
                        hst.install_failures
                    } else {
                        hst.upgrade_failures
                    },
                    retries,
                );
                let remediate = e.kind != ReleaseErrorKind::Render
                    && e.release.is_some()
                    && (retries != 0 || rem.remediate_last_failure == Some(true))
                    && (!last || rem.remediate_last_failure.unwrap_or(retries != 0));
                if remediate {
                    let strategy = rem.strategy.as_deref().unwrap_or("rollback");
                    let rollback_to = deployed.as_ref().map(|d| d.version);
                    let res: Result<(&str, String), (&str, String)> = match (is_install, strategy, rollback_to) {
                        (false, "rollback", Some(to)) => self
                            .manager
                            .rollback(backend, &target, to, &hr.spec, timeout)
                            .await
                            .map(|r| {
                                (
                                    helm_reason::ROLLBACK_SUCCEEDED,
                                    format!("Helm rollback to previous release {}/{}.v{} with chart {}@{} succeeded", target.namespace, target.name, to, r.chart_name, r.chart_version),
                                )
                            })
                            .map_err(|e| (helm_reason::ROLLBACK_FAILED, e.message)),
                        _ => self
                            .manager
                            .uninstall(backend, &target, false, &hr.spec, timeout)
                            .await
                            .map(|_| {
                                (
                                    helm_reason::UNINSTALL_SUCCEEDED,
                                    format!("Helm uninstall succeeded for release {}/{}", target.namespace, target.name),
                                )
                            })
                            .map_err(|e| (helm_reason::UNINSTALL_FAILED, e.message)),
                    };
                    match res {
                        Ok((r, m)) => {
                            status.set_condition(
                                Condition::new(REMEDIATED, ConditionStatus::True, r, m.clone()),
                                generation,
                                &now,
                            );
                            events.push(Event::new(me.clone(), Severity::Info, r, m));
                        }
                        Err((r, m)) => {
                            status.set_condition(
                                Condition::new(REMEDIATED, ConditionStatus::False, r, m.clone()),
                                generation,
                                &now,
                            );
                            events.push(Event::new(me.clone(), Severity::Error, r, m));
                        }
                    }
                }
                let stalled = last;
                status.mark_failed(why, msg, stalled, generation, &now);
                verdict = Verdict::Failed { stalled };
            }
        }
        if let Ok(h) = self.manager.history(backend, &target).await {
            history = h;
        }
        hst.history = snapshots(history);
        hst.write_to(&mut status);
        let store = self.store.clone();
        let owner = me.clone();
        let _ = tokio::task::spawn_blocking(move || store.gc(&owner, &artifact)).await;
        let mut out = Outcome::new(verdict, status);
        out.events = events;
        out
    }

    async fn finalize(&self, obj: &Object, backend: &dyn Backend) -> Vec<Event> {
        let Ok(hr) = from_object::<HelmRelease>(obj) else {
            return delete_owned_chart(obj, backend).await;
        };
        let target = release_target(&hr);
        let keep = hr.spec.uninstall.as_ref().is_some_and(|u| u.keep_history);
        let timeout = hr.spec.action_timeout();
        let me = obj.object_ref();
        let acting = match super::remote::target_backend(
            &me,
            hr.spec.kube_config.as_ref(),
            hr.spec.service_account_name.as_deref(),
            backend,
            self.remote.as_deref(),
            timeout,
        )
        .await
        {
            Ok((b, _)) => b,
            // The remote cluster's credentials are gone: the release cannot be uninstalled
            // there, and waiting cannot bring them back; its HelmChart still goes.
            Err(e) if e.gone => {
                let mut out = vec![Event::new(
                    me,
                    Severity::Info,
                    "UninstallSkipped",
                    format!(
                        "{}: release {}/{} left on the remote cluster",
                        e.message, target.namespace, target.name
                    ),
                )];
                out.extend(delete_owned_chart(obj, backend).await);
                return out;
            }
            Err(e) => {
                return vec![Event::new(
                    me,
                    Severity::Error,
                    helm_reason::UNINSTALL_FAILED,
                    e.message,
                )]
            }
        };
        let acting: &dyn Backend = acting.as_deref().unwrap_or(backend);
        let mut out = match self
            .manager
            .uninstall(acting, &target, keep, &hr.spec, timeout)
            .await
        {
            Ok(removed) => {
                let mut msg = format!(
                    "Helm uninstall succeeded for release {}/{}",
                    target.namespace, target.name
                );
                for r in removed {
                    msg.push_str(&format!("\n{r} deleted"));
                }
                vec![Event::new(
                    me,
                    Severity::Info,
                    helm_reason::UNINSTALL_SUCCEEDED,
                    msg,
                )]
            }
            Err(e) => vec![Event::new(
                me,
                Severity::Error,
                helm_reason::UNINSTALL_FAILED,
                e.message,
            )],
        };
        // Then the HelmChart it created, as helm-controller does.
        out.extend(delete_owned_chart(obj, backend).await);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortens_long_names_like_flux() {
        assert_eq!(shorten_name("short"), "short");
        let long = "a".repeat(60);
        let s = shorten_name(&long);
        assert_eq!(s.len(), 53);
        assert!(s.starts_with(&"a".repeat(40)));
        assert_eq!(&s[40..41], "-");
    }

    #[test]
    fn values_merge_and_target_path() {
        let mut v = serde_json::json!({"a": {"b": 1, "c": 2}});
        merge_values(&mut v, serde_json::json!({"a": {"b": 3}, "d": 4}));
        assert_eq!(v, serde_json::json!({"a": {"b": 3, "c": 2}, "d": 4}));
        set_path(&mut v, "x.y\\.z", Value::String("s".into())).unwrap();
        assert_eq!(v["x"]["y.z"], "s");
        assert!(set_path(&mut v, "x..y", Value::Null).is_err());
    }
}
