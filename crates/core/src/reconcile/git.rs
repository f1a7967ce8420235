//! The GitRepository reconciler: resolve the ref cheaply, fetch only on a new revision, apply
//! ignore rules and includes, store a content-addressed artifact.

use super::{invalid_spec, object_data, Outcome, Reconciler, Schedule, Verdict};
use crate::api::source::GitRepositorySpec;
use crate::api::{from_object, ApiError, FluxKind, GitRepository};
use crate::event::{Event, Severity};
use crate::object::{Object, ObjectRef};
use crate::status::{reason, Artifact, Condition, ConditionStatus, Status, ARTIFACT_IN_STORAGE};
use crate::storage::ArtifactStore;
use crate::traits::source::{Credentials, SourceErrorKind, SourceRequest};
use crate::traits::{Backend, Source};
use async_trait::async_trait;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Reconciles GitRepository objects with any [`Source`] that reads a `GitRepositorySpec`.
pub struct GitRepositoryReconciler<S> {
    source: S,
    store: ArtifactStore,
}

impl<S> GitRepositoryReconciler<S> {
    pub fn new(source: S, store: ArtifactStore) -> Self {
        GitRepositoryReconciler { source, store }
    }
}

/// Reads the credentials a source spec's `secretRef` points at.
pub async fn read_credentials(
    backend: &dyn Backend,
    namespace: &str,
    secret: Option<&crate::api::meta::LocalObjectReference>,
) -> Result<Option<Credentials>, String> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let r = ObjectRef::new("", "Secret", namespace, &secret.name);
    match backend.get(&r).await {
        Ok(Some(obj)) => Ok(Some(Credentials(object_data(&obj)?))),
        Ok(None) => Err(format!(
            "failed to get secret '{namespace}/{}': not found",
            secret.name
        )),
        Err(e) => Err(format!(
            "failed to get secret '{namespace}/{}': {e}",
            secret.name
        )),
    }
}

fn included_revisions(status: &Status) -> Value {
    status
        .extra
        .get("includedArtifacts")
        .cloned()
        .unwrap_or(Value::Null)
}

#[async_trait]
impl<S> Reconciler for GitRepositoryReconciler<S>
where
    S: Source<Spec = GitRepositorySpec>,
{
    fn kind(&self) -> crate::object::GroupKind {
        FluxKind::GitRepository.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let repo: GitRepository = from_object(obj)?;
        let interval = repo.spec.interval.duration().max(Duration::from_secs(1));
        Ok(Schedule {
            interval,
            retry_interval: interval.min(Duration::from_secs(30)),
            timeout: repo
                .spec
                .timeout
                .as_ref()
                .map(|t| t.duration())
                .unwrap_or(DEFAULT_TIMEOUT),
            suspend: repo.spec.suspend,
            depends_on: Vec::new(),
            watches: repo
                .spec
                .include
                .iter()
                .map(|i| FluxKind::GitRepository.ref_to(repo.namespace(), &i.repository.name))
                .collect(),
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let repo: GitRepository = match from_object(obj) {
            Ok(r) => r,
            Err(e) => return invalid_spec(obj, &e),
        };
        let status = Status::from_value(obj.status());
        let me = obj.object_ref();
        let ns = repo.namespace().to_string();
        let creds = match read_credentials(backend, &ns, repo.spec.secret_ref.as_ref()).await {
            Ok(c) => c,
            Err(msg) => {
                return Outcome::failed(obj, status, reason::AUTHENTICATION_FAILED, msg, false)
            }
        };
        let req = SourceRequest {
            object: &me,
            spec: &repo.spec,
            credentials: creds.as_ref(),
            timeout: repo
                .spec
                .timeout
                .as_ref()
                .map(|t| t.duration())
                .unwrap_or(DEFAULT_TIMEOUT),
        };
        let fail = |status: Status, kind: SourceErrorKind, msg: String| {
            let why = match kind {
                SourceErrorKind::Auth => reason::AUTHENTICATION_FAILED,
                SourceErrorKind::InvalidSpec => reason::INVALID_SPEC,
                _ => reason::GIT_OPERATION_FAILED,
            };
            let msg = creds.as_ref().map(|c| c.redact(&msg)).unwrap_or(msg);
            Outcome::failed(obj, status, why, msg, kind == SourceErrorKind::InvalidSpec)
        };
        let resolved = match self.source.resolve(&req).await {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    status,
                    e.kind,
                    format!("failed to checkout and determine revision: {}", e.message),
                )
            }
        };

        // Included repositories must have artifacts; their revisions are part of ours.
        let mut includes = Vec::new();
        for inc in &repo.spec.include {
            let r = FluxKind::GitRepository.ref_to(&ns, &inc.repository.name);
            let artifact = match backend.get(&r).await {
                Ok(Some(o)) => Status::from_value(o.status()).artifact,
                _ => None,
            };
            let Some(artifact) = artifact else {
                return Outcome::waiting(
                    obj,
                    status,
                    reason::ARTIFACT_FAILED,
                    format!(
                        "no artifact available for include '{}'",
                        inc.repository.name
                    ),
                );
            };
            includes.push((inc.clone(), artifact));
        }
        let include_revs = Value::Array(
            includes
                .iter()
                .map(|(i, a)| serde_json::json!({"name": i.repository.name, "revision": a.revision, "digest": a.digest}))
                .collect(),
        );
        let include_revs = if includes.is_empty() {
            Value::Null
        } else {
            include_revs
        };

        if let Some(current) = &status.artifact {
            if current.revision == resolved.revision
                && self.store.contains(current)
                && included_revisions(&status) == include_revs
            {
                let message = format!("stored artifact for revision '{}'", resolved.revision);
                return Outcome::unchanged(obj, status, message);
            }
        }

        let tmp = match tempfile::Builder::new().prefix("trueup-git-").tempdir() {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    status,
                    SourceErrorKind::Other,
                    format!("failed to create a working directory: {e}"),
                )
            }
        };
        let fetched = match self.source.fetch(&req, &resolved, tmp.path()).await {
            Ok(f) => f,
            Err(e) => {
                return fail(
                    status,
                    e.kind,
                    format!("failed to checkout and determine revision: {}", e.message),
                )
            }
        };
        for (inc, artifact) in &includes {
            if let Err(msg) = copy_include(&self.store, artifact, inc, tmp.path()) {
                return fail(status, SourceErrorKind::Other, msg);
            }
        }
        let archived = super::archive_fetched(
            &self.store,
            &me,
            tmp.path(),
            &fetched.revision,
            repo.spec.ignore.as_deref(),
        )
        .await;
        let mut artifact = match archived {
            Ok(a) => a,
            Err(msg) => return fail(status, SourceErrorKind::Other, msg),
        };
        artifact.metadata = fetched.metadata.clone();

        let mut status = status;
        let now = crate::time::now_rfc3339();
        let changed = status.artifact.as_ref().map(|a| &a.digest) != Some(&artifact.digest)
            || status.artifact.as_ref().map(|a| &a.revision) != Some(&artifact.revision);
        let message = format!("stored artifact for revision '{}'", artifact.revision);
        status.artifact = Some(artifact.clone());
        if include_revs.is_null() {
            status.extra.remove("includedArtifacts");
        } else {
            status
                .extra
                .insert("includedArtifacts".into(), include_revs);
        }
        status.observed_generation = obj.generation();
        status.mark_ready(reason::SUCCEEDED, message.clone(), obj.generation(), &now);
        status.set_condition(
            Condition::new(
                ARTIFACT_IN_STORAGE,
                ConditionStatus::True,
                reason::SUCCEEDED,
                message,
            ),
            obj.generation(),
            &now,
        );
        let mut out = Outcome::new(Verdict::Ready, status);
        if changed {
            let subject = fetched
                .metadata
                .get("git.subject")
                .cloned()
                .unwrap_or_else(|| artifact.revision.clone());
            out.events.push(
                Event::new(
                    me,
                    Severity::Info,
                    reason::NEW_ARTIFACT,
                    format!("stored artifact for commit '{subject}'"),
                )
                .with_revision(artifact.revision),
            );
        }
        out
    }
}

/// Copies an included repository's artifact (`fromPath`, default the root) to `toPath`
/// (default the repository's name) inside the working tree.
fn copy_include(
    store: &ArtifactStore,
    artifact: &Artifact,
    inc: &crate::api::source::GitRepositoryInclude,
    dest_root: &Path,
) -> Result<(), String> {
    let src_root = store.unpacked(artifact).map_err(|e| e.to_string())?;
    let from = inc.from_path.as_deref().unwrap_or(".");
    let to = inc.to_path.as_deref().unwrap_or(&inc.repository.name);
    let src = crate::paths::join_inside(&src_root, from)
        .map_err(|e| format!("include '{}': fromPath: {e}", inc.repository.name))?;
    let dest = crate::paths::join_for_write(dest_root, to)
        .map_err(|e| format!("include '{}': toPath: {e}", inc.repository.name))?;
    crate::paths::copy_tree(&src, &dest)
        .map_err(|e| format!("include '{}': {e}", inc.repository.name))
}
