//! Reconcilers: one per kind, each a function of (object, backend, its parts) -> status and
//! events. The [`crate::runtime::Runtime`] owns timing; reconcilers only decide.

pub mod chartbuild;
pub mod git;
pub mod helmchart;
pub mod helmrelease;
pub mod kustomization;
pub mod oci;
pub mod remote;
pub mod terraform;

use crate::api::{ApiError, FluxKind};
use crate::event::{Event, Severity};
use crate::object::{GroupKind, Object, ObjectRef};
use crate::status::{reason, Status};
use crate::traits::Backend;
use async_trait::async_trait;
use std::time::Duration;

pub use git::GitRepositoryReconciler;
pub use helmchart::HelmChartReconciler;
pub use helmrelease::{HelmReleaseReconciler, ReleaseManager};
pub use kustomization::KustomizationReconciler;
pub use oci::OciRepositoryReconciler;
pub use remote::RemoteClusters;
pub use terraform::TerraformReconciler;

/// How the runtime schedules one object, read from its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    /// Base delay after a failure; doubles with each consecutive failure, up to the interval.
    pub retry_interval: Duration,
    /// Budget for one reconcile.
    pub timeout: Duration,
    pub suspend: bool,
    /// `spec.dependsOn`: objects that must be Ready first.
    pub depends_on: Vec<ObjectRef>,
    /// Objects whose status changes should trigger a reconcile at once (the source).
    pub watches: Vec<ObjectRef>,
}

/// What a reconcile concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// Failed; retried with backoff. `stalled`: retrying without a change cannot help.
    Failed {
        stalled: bool,
    },
    /// Waiting for something else (a dependency, a source artifact); retried at the retry
    /// interval, and at once when what it waits for changes.
    Waiting,
}

/// The result of one reconcile.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The object's new status (conditions set by the reconciler).
    pub status: Status,
    pub events: Vec<Event>,
    /// Overrides the schedule's next run (e.g. a plan waiting for approval).
    pub requeue_after: Option<Duration>,
}

impl Outcome {
    pub fn new(verdict: Verdict, status: Status) -> Self {
        Outcome {
            verdict,
            status,
            events: Vec::new(),
            requeue_after: None,
        }
    }

    /// A failure with its Ready=False condition and an error event.
    pub fn failed(
        obj: &Object,
        mut status: Status,
        why: &str,
        message: String,
        stalled: bool,
    ) -> Self {
        let now = crate::time::now_rfc3339();
        status.mark_failed(why, message.clone(), stalled, obj.generation(), &now);
        let mut out = Outcome::new(Verdict::Failed { stalled }, status);
        out.events
            .push(Event::new(obj.object_ref(), Severity::Error, why, message));
        out
    }

    /// Ready with nothing new to do (a source whose revision did not change): the condition is
    /// refreshed for the current generation, no event is sent.
    pub fn unchanged(obj: &Object, mut status: Status, message: String) -> Self {
        let now = crate::time::now_rfc3339();
        status.observed_generation = obj.generation();
        status.mark_ready(reason::SUCCEEDED, message, obj.generation(), &now);
        Outcome::new(Verdict::Ready, status)
    }

    /// Waiting on something else: Ready=False, no event (it is not a failure).
    pub fn waiting(obj: &Object, mut status: Status, why: &str, message: String) -> Self {
        let now = crate::time::now_rfc3339();
        status.mark_failed(why, message, false, obj.generation(), &now);
        Outcome::new(Verdict::Waiting, status)
    }
}

/// Turns a spec parse error into a stalled outcome naming the field.
pub fn invalid_spec(obj: &Object, err: &ApiError) -> Outcome {
    Outcome::failed(
        obj,
        Status::from_value(obj.status()),
        reason::INVALID_SPEC,
        err.to_string(),
        true,
    )
}

/// One reconciler per kind.
#[async_trait]
pub trait Reconciler: Send + Sync {
    /// The group and kind this reconciler serves: one of Flux's ([`FluxKind`] converts with
    /// `.into()`) or a kind of your own.
    fn kind(&self) -> GroupKind;

    /// Reads the schedule from the object's spec. An error stalls the object.
    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError>;

    /// Brings the world in line with the object.
    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome;

    /// Cleans up after an object was deleted (prune its inventory when it asked for pruning).
    /// An event of severity Error says the clean-up failed: on a backend that holds finalizers
    /// the object keeps Flux's finalizer and the clean-up runs again after a backoff.
    async fn finalize(&self, obj: &Object, backend: &dyn Backend) -> Vec<Event> {
        let _ = (obj, backend);
        Vec::new()
    }
}

/// The backend acting as an object's `spec.serviceAccountName` (None: the controller's own),
/// and what the Ready message adds when the backend has no identities to act as. Such a
/// backend (the local one) applies anyway: it has no rights to check, so refusing would only
/// make multi-tenant fleets unusable on it; the message says so.
#[allow(clippy::type_complexity)]
pub(crate) fn acting_backend(
    namespace: &str,
    service_account_name: Option<&str>,
    backend: &dyn Backend,
) -> Result<(Option<std::sync::Arc<dyn Backend>>, String), String> {
    let Some(sa) = service_account_name.filter(|s| !s.is_empty()) else {
        return Ok((None, String::new()));
    };
    match backend.for_service_account(namespace, sa) {
        Ok(Some(b)) => Ok((Some(b), String::new())),
        Ok(None) => Ok((
            None,
            format!(" (spec.serviceAccountName '{sa}' not enforced: this backend has no service accounts)"),
        )),
        Err(e) => Err(format!(
            "spec.serviceAccountName: acting as ServiceAccount '{namespace}/{sa}': {e}"
        )),
    }
}

/// `spec.dependsOn` entries as references of the same kind; the namespace defaults to the
/// object's own.
pub fn dependency_refs(
    kind: FluxKind,
    own_namespace: &str,
    deps: &[crate::api::meta::DependencyReference],
) -> Vec<ObjectRef> {
    deps.iter()
        .map(|d| kind.ref_to(d.namespace.as_deref().unwrap_or(own_namespace), &d.name))
        .collect()
}

/// A `sourceRef` as an object reference.
pub fn source_ref(
    own_namespace: &str,
    r: &crate::api::meta::CrossNamespaceObjectReference,
) -> Option<ObjectRef> {
    let kind = match r.kind.as_str() {
        "GitRepository" => FluxKind::GitRepository,
        "OCIRepository" => FluxKind::OciRepository,
        "HelmRepository" => FluxKind::HelmRepository,
        "HelmChart" => FluxKind::HelmChart,
        _ => return None,
    };
    Some(kind.ref_to(r.namespace.as_deref().unwrap_or(own_namespace), &r.name))
}

/// Reads a Secret's or ConfigMap's data as strings/bytes: `data` (base64 for Secrets) and
/// `stringData`/`binaryData`.
pub fn object_data(obj: &Object) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine;
    let mut out = std::collections::BTreeMap::new();
    let is_secret = obj.kind() == "Secret";
    if let Some(data) = obj.0.get("data").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let s = v.as_str().unwrap_or_default();
            let bytes = if is_secret {
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|_| format!("{}: data.{k} is not valid base64", obj.display_name()))?
            } else {
                s.as_bytes().to_vec()
            };
            out.insert(k.clone(), bytes);
        }
    }
    for key in ["stringData", "binaryData"] {
        if let Some(data) = obj.0.get(key).and_then(|d| d.as_object()) {
            for (k, v) in data {
                let s = v.as_str().unwrap_or_default();
                let bytes = if key == "binaryData" {
                    base64::engine::general_purpose::STANDARD
                        .decode(s.trim())
                        .map_err(|_| {
                            format!("{}: binaryData.{k} is not valid base64", obj.display_name())
                        })?
                } else {
                    s.as_bytes().to_vec()
                };
                out.insert(k.clone(), bytes);
            }
        }
    }
    Ok(out)
}

/// Packs a fetched source tree into a stored artifact: `.sourceignore`/`spec.ignore` applied,
/// content-addressed, older archives of `owner` collected. Runs on the blocking pool.
pub async fn archive_fetched(
    store: &crate::storage::ArtifactStore,
    owner: &ObjectRef,
    dir: &std::path::Path,
    revision: &str,
    ignore: Option<&str>,
) -> Result<crate::status::Artifact, String> {
    let (store, owner, dir) = (store.clone(), owner.clone(), dir.to_path_buf());
    let (revision, ignore) = (revision.to_string(), ignore.map(str::to_string));
    tokio::task::spawn_blocking(move || -> Result<crate::status::Artifact, String> {
        let filter = crate::sourceignore::SourceIgnore::load(&dir, ignore.as_deref())
            .map_err(|e| e.to_string())?;
        let artifact = store
            .archive_dir(&owner, &dir, &revision, &filter)
            .map_err(|e| e.to_string())?;
        // Collection failures only leave old archives behind; the new one is stored.
        let _ = store.gc(&owner, &artifact);
        Ok(artifact)
    })
    .await
    .map_err(|e| format!("failed to store artifact: {e}"))?
    .map_err(|msg| format!("failed to store artifact: {msg}"))
}
