//! The cluster: where objects are applied, read, watched and deleted.

use crate::event::Event;
use crate::object::{Object, ObjectRef};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How an object is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    /// The field manager of server-side apply.
    pub field_manager: String,
    /// Compute the result without persisting it.
    pub dry_run: bool,
    /// Take fields owned by other managers (conflicts are overridden, as Flux does).
    pub force_conflicts: bool,
    /// Recreate the object when an immutable field changed.
    pub recreate_on_immutable: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            field_manager: "trueup".into(),
            dry_run: false,
            force_conflicts: true,
            recreate_on_immutable: false,
        }
    }
}

/// What an apply did to an object, in Flux's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// What happens to the dependents of a deleted object (objects whose `ownerReferences` name
/// it), as Kubernetes' `propagationPolicy` and Helm's `uninstall --cascade` say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Propagation {
    /// The object goes at once; the garbage collector deletes its dependents afterwards.
    #[default]
    Background,
    /// The object stays (with a `foregroundDeletion` finalizer) until its dependents are gone.
    Foreground,
    /// The object goes; its dependents stay, their owner references to it removed.
    Orphan,
}

impl Propagation {
    /// Parses Flux's and Helm's spelling (`background`, `foreground`, `orphan`); `None` for
    /// anything else.
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "background" => Some(Propagation::Background),
            "foreground" => Some(Propagation::Foreground),
            "orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "background",
            Propagation::Foreground => "foreground",
            Propagation::Orphan => "orphan",
        }
    }
}

/// How an object is deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// What happens to its dependents; `None` is the backend's default (background on
    /// Kubernetes).
    pub propagation: Option<Propagation>,
}

impl DeleteOptions {
    pub fn propagation(p: Propagation) -> Self {
        DeleteOptions {
            propagation: Some(p),
        }
    }
}

/// Which objects to list: one group and kind, optionally one namespace and a label selector
/// (all labels must match).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ListParams {
    pub fn kind(group: &str, kind: &str) -> Self {
        ListParams {
            group: group.into(),
            kind: kind.into(),
            ..Default::default()
        }
    }
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// Created or changed (spec, metadata or status).
    Applied(Object),
    Deleted(ObjectRef),
}

pub type WatchStream = BoxStream<'static, WatchEvent>;

/// The health of an applied object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Reconciled and ready.
    Current,
    /// Still rolling out; the message says what is awaited.
    InProgress(String),
    /// Will not become ready without a change.
    Failed(String),
    /// The object does not exist.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} not found")]
    NotFound(ObjectRef),
    #[error("{object}: {message}")]
    Invalid { object: ObjectRef, message: String },
    #[error("{object}: conflict: {message}")]
    Conflict { object: ObjectRef, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Other {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The cluster trueup reconciles into: a Kubernetes API server, or the embedded local backend.
///
/// Fleet objects (GitRepository, Kustomization, ...) live in the backend like any other object;
/// their status is written through [`Backend::update_status`] (the status subresource).
#[async_trait]
pub trait Backend: Send + Sync {
    /// Server-side apply. Returns what happened and the object as stored.
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), BackendError>;

    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError>;

    async fn list(&self, params: &ListParams) -> Result<Vec<Object>, BackendError>;

    /// Deletes an object; `Ok(false)` when it did not exist.
    async fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError>;

    /// Deletes an object with options (the propagation to its dependents); `Ok(false)` when it
    /// did not exist. The default ignores the options and calls [`Backend::delete`]: right for
    /// backends where objects have no dependents (the local directory, memory), where every
    /// propagation means the same thing.
    async fn delete_with(&self, r: &ObjectRef, opts: &DeleteOptions) -> Result<bool, BackendError> {
        let _ = opts;
        self.delete(r).await
    }

    /// Replaces the status of an object, leaving spec and metadata alone.
    async fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError>;

    /// Records an event about an object.
    async fn record_event(&self, event: &Event) -> Result<(), BackendError>;

    /// The health of an applied object.
    async fn health(&self, r: &ObjectRef) -> Result<Health, BackendError>;

    /// Changes to objects of the given (group, kind) pairs, from now on.
    async fn watch(&self, kinds: &[(String, String)]) -> Result<WatchStream, BackendError>;

    /// Whether workloads actually run here. The local backend writes objects without running
    /// them, so health there means "written"; messages say so.
    fn runs_workloads(&self) -> bool {
        true
    }

    /// A short description for messages (`local directory ./out`, `cluster https://...`).
    fn describe(&self) -> String;

    /// Whether a deleted object stays here until its finalizers are removed (Kubernetes), as
    /// opposed to going at once (a directory, memory). Where it does, Flux objects carry
    /// [`FLUX_FINALIZER`] so that their clean-up (pruning a Kustomization's inventory) runs
    /// before they go.
    fn holds_finalizers(&self) -> bool {
        false
    }

    /// This backend acting as a ServiceAccount (Flux's `spec.serviceAccountName`): what it
    /// applies, prunes and reads is allowed or refused by that account's rights. `Ok(None)`
    /// when this backend has no identities to act as (the local and in-memory backends).
    fn for_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<dyn Backend>>, BackendError> {
        let _ = (namespace, name);
        Ok(None)
    }

    /// Adds `finalizer` to the object's `metadata.finalizers`. `Ok(false)` when it was there
    /// already, or when this backend holds no finalizers.
    async fn add_finalizer(&self, r: &ObjectRef, finalizer: &str) -> Result<bool, BackendError> {
        let _ = (r, finalizer);
        Ok(false)
    }

    /// Removes `finalizer` from the object; the last one removed from an object being deleted
    /// lets it go. `Ok(false)` when it was not there, the object is gone, or this backend holds
    /// no finalizers.
    async fn remove_finalizer(&self, r: &ObjectRef, finalizer: &str) -> Result<bool, BackendError> {
        let _ = (r, finalizer);
        Ok(false)
    }
}

/// Polls until none of `refs` exists any more (an object deleted in the foreground stays until
/// its dependents are gone, one with finalizers until they are removed), up to `timeout`. An
/// object whose kind is no longer served counts as gone. The error names what is left.
pub async fn wait_until_deleted(
    backend: &dyn Backend,
    refs: &[ObjectRef],
    timeout: std::time::Duration,
    poll: std::time::Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<ObjectRef> = refs.to_vec();
    loop {
        let mut still = Vec::new();
        let mut last_err = None;
        for r in pending {
            match backend.get(&r).await {
                Ok(None) | Err(BackendError::NotFound(_)) | Err(BackendError::Invalid { .. }) => {}
                Ok(Some(_)) => still.push(r),
                Err(e) => {
                    last_err = Some(e.to_string());
                    still.push(r);
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<String> = still.iter().map(|r| r.to_string()).collect();
            return Err(format!(
                "timed out after {timeout:?} waiting for the deletion of {}{}",
                names.join(", "),
                last_err
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ));
        }
        pending = still;
        tokio::time::sleep(poll).await;
    }
}

/// The user name Kubernetes gives a ServiceAccount: `system:serviceaccount:<ns>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The finalizer Flux's controllers put on the objects they reconcile.
pub const FLUX_FINALIZER: &str = "finalizers.fluxcd.io";
