//! The Kustomization reconciler: source artifact -> applier (render, substitute, apply,
//! inventory, prune, health) -> status and events.

use super::remote::{target_backend, RemoteClusters};
use super::{dependency_refs, invalid_spec, source_ref, Outcome, Reconciler, Schedule, Verdict};
use crate::api::kustomize::DeletionPolicy;
use crate::api::kustomize::KustomizationSpec;
use crate::api::{from_object, ApiError, FluxKind, Kustomization};
use crate::event::{Event, Severity};
use crate::object::Object;
use crate::status::{reason, Condition, ConditionStatus, Status, HEALTHY};
use crate::storage::ArtifactStore;
use crate::traits::applier::{ApplyError, ApplyRequest};
use crate::traits::backend::wait_until_deleted;
use crate::traits::{Applier, Backend};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reconciles Kustomization objects with any [`Applier`] that reads a `KustomizationSpec`.
pub struct KustomizationReconciler<A> {
    applier: A,
    store: ArtifactStore,
    remote: Option<Arc<RemoteClusters>>,
}

impl<A> KustomizationReconciler<A> {
    pub fn new(applier: A, store: ArtifactStore) -> Self {
        KustomizationReconciler {
            applier,
            store,
            remote: None,
        }
    }

    /// Reaches the clusters of `spec.kubeConfig` through `remote`. Without it, a
    /// Kustomization with a kubeConfig stalls saying this build cannot reach remote clusters.
    pub fn with_remote_clusters(mut self, remote: Arc<RemoteClusters>) -> Self {
        self.remote = Some(remote);
        self
    }
}

#[async_trait]
impl<A> Reconciler for KustomizationReconciler<A>
where
    A: Applier<Spec = KustomizationSpec>,
{
    fn kind(&self) -> crate::object::GroupKind {
        FluxKind::Kustomization.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let k: Kustomization = from_object(obj)?;
        let interval = k.spec.interval.duration().max(Duration::from_secs(1));
        Ok(Schedule {
            interval,
            retry_interval: k
                .spec
                .retry_interval
                .as_ref()
                .map(|d| d.duration())
                .unwrap_or(interval),
            timeout: k
                .spec
                .timeout
                .as_ref()
                .map(|d| d.duration())
                .unwrap_or(interval),
            suspend: k.spec.suspend,
            depends_on: dependency_refs(FluxKind::Kustomization, k.namespace(), &k.spec.depends_on),
            watches: source_ref(k.namespace(), &k.spec.source_ref)
                .into_iter()
                .collect(),
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let k: Kustomization = match from_object(obj) {
            Ok(k) => k,
            Err(e) => return invalid_spec(obj, &e),
        };
        let mut status = Status::from_value(obj.status());
        let generation = obj.generation();
        // Checked up front: the deletion (finalize) must not be the first to find out.
        if let Err(msg) = k.spec.deletion_policy() {
            return Outcome::failed(obj, status, reason::INVALID_SPEC, msg, true);
        }
        let Some(src_ref) = source_ref(k.namespace(), &k.spec.source_ref) else {
            return Outcome::failed(
                obj,
                status,
                reason::INVALID_SPEC,
                format!("spec.sourceRef.kind: unsupported source kind '{}' (GitRepository, OCIRepository)", k.spec.source_ref.kind),
                true,
            );
        };
        let source = match backend.get(&src_ref).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Outcome::waiting(
                    obj,
                    status,
                    reason::ARTIFACT_FAILED,
                    format!("Source '{src_ref}' not found"),
                )
            }
            Err(e) => {
                return Outcome::failed(obj, status, reason::ARTIFACT_FAILED, e.to_string(), false)
            }
        };
        let Some(artifact) = Status::from_value(source.status()).artifact else {
            return Outcome::waiting(
                obj,
                status,
                reason::ARTIFACT_FAILED,
                format!("Source artifact not found for '{src_ref}', waiting for it to be stored"),
            );
        };
        let revision = artifact.revision.clone();
        let store = self.store.clone();
        let unpacked = tokio::task::spawn_blocking(move || store.unpacked(&artifact)).await;
        let dir = match unpacked {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                return Outcome::failed(obj, status, reason::ARTIFACT_FAILED, e.to_string(), false)
            }
            Err(e) => {
                return Outcome::failed(obj, status, reason::ARTIFACT_FAILED, e.to_string(), false)
            }
        };

        let me = obj.object_ref();
        let timeout = k.spec.action_timeout();
        // spec.kubeConfig: act on that cluster; spec.serviceAccountName: apply and prune as
        // that account (on the remote cluster when there is one).
        let management = backend;
        let (acting, not_enforced) = match target_backend(
            &me,
            k.spec.kube_config.as_ref(),
            k.spec.service_account_name.as_deref(),
            management,
            self.remote.as_deref(),
            timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return Outcome::failed(obj, status, e.reason, e.message, e.stalled),
        };
        let backend: &dyn Backend = acting.as_deref().unwrap_or(backend);
        let started = Instant::now();
        let result = self
            .applier
            .apply(ApplyRequest {
                object: &me,
                spec: &k.spec,
                artifact_dir: &dir,
                revision: &revision,
                previous_inventory: status.inventory.as_ref(),
                backend,
                management,
                timeout,
            })
            .await;
        let now = crate::time::now_rfc3339();
        status.last_attempted_revision = revision.clone();
        status.observed_generation = generation;
        match result {
            Ok(applied) => {
                let first_apply = status.last_applied_revision != revision;
                status.inventory = Some(applied.inventory.clone());
                status.last_applied_revision = revision.clone();
                if !applied.health.is_empty() {
                    status.set_condition(
                        Condition::new(
                            HEALTHY,
                            ConditionStatus::True,
                            reason::SUCCEEDED,
                            applied.health.clone(),
                        ),
                        generation,
                        &now,
                    );
                }
                status.mark_ready(
                    reason::RECONCILIATION_SUCCEEDED,
                    format!("Applied revision: {revision}{not_enforced}"),
                    generation,
                    &now,
                );
                let summary = applied.change_summary();
                let mut out = Outcome::new(Verdict::Ready, status);
                if !summary.is_empty() || first_apply {
                    let msg = if summary.is_empty() {
                        format!(
                            "Reconciliation finished in {:.1?}, next run in {}",
                            started.elapsed(),
                            k.spec.interval
                        )
                    } else {
                        summary
                    };
                    out.events.push(
                        Event::new(me, Severity::Info, reason::RECONCILIATION_SUCCEEDED, msg)
                            .with_revision(revision),
                    );
                }
                out
            }
            Err(e) => {
                let why = match &e {
                    ApplyError::Build(_) => reason::BUILD_FAILED,
                    ApplyError::Apply(_) => reason::RECONCILIATION_FAILED,
                    ApplyError::Health(_) => reason::HEALTH_CHECK_FAILED,
                    ApplyError::Prune(_) => reason::PRUNE_FAILED,
                };
                if matches!(e, ApplyError::Health(_)) {
                    status.set_condition(
                        Condition::new(HEALTHY, ConditionStatus::False, why, e.to_string()),
                        generation,
                        &now,
                    );
                }
                let mut out = Outcome::failed(obj, status, why, e.to_string(), false);
                for ev in &mut out.events {
                    ev.metadata.insert("revision".into(), revision.clone());
                    ev.revision = Some(revision.clone());
                }
                out
            }
        }
    }

    async fn finalize(&self, obj: &Object, backend: &dyn Backend) -> Vec<Event> {
        let Ok(k) = from_object::<Kustomization>(obj) else {
            return Vec::new();
        };
        let status = Status::from_value(obj.status());
        let me = obj.object_ref();
        // spec.deletionPolicy: MirrorPrune follows spec.prune, Delete and WaitForTermination
        // delete, Orphan leaves.
        let (policy, delete) = match k
            .spec
            .deletion_policy()
            .and_then(|p| Ok((p, k.spec.deletes_on_deletion()?)))
        {
            Ok(p) => p,
            Err(msg) => return vec![Event::new(me, Severity::Error, reason::PRUNE_FAILED, msg)],
        };
        let (true, Some(inv)) = (delete, status.inventory.as_ref()) else {
            return Vec::new();
        };
        let timeout = k.spec.action_timeout();
        let acting = match target_backend(
            &me,
            k.spec.kube_config.as_ref(),
            k.spec.service_account_name.as_deref(),
            backend,
            self.remote.as_deref(),
            timeout,
        )
        .await
        {
            Ok((b, _)) => b,
            // The remote cluster's credentials are gone: nothing can be pruned there, and
            // waiting cannot bring them back (Flux skips the prune too).
            Err(e) if e.gone => {
                return vec![Event::new(
                    me,
                    Severity::Info,
                    "PruneSkipped",
                    format!(
                        "{}: {} objects left on the remote cluster",
                        e.message,
                        inv.entries.len()
                    ),
                )]
            }
            Err(e) => {
                return vec![Event::new(
                    me,
                    Severity::Error,
                    reason::PRUNE_FAILED,
                    e.message,
                )]
            }
        };
        let backend: &dyn Backend = acting.as_deref().unwrap_or(backend);
        match self.applier.remove(inv, backend).await {
            Ok(removed) if removed.is_empty() => Vec::new(),
            Ok(removed) => {
                let mut out = vec![Event::new(
                    me.clone(),
                    Severity::Info,
                    "Pruned",
                    removed
                        .iter()
                        .map(|r| format!("{r} deleted"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )];
                // WaitForTermination: the Kustomization goes only once they are gone. A
                // timeout is an error: on a backend that holds finalizers it keeps its own and
                // the deletion (and the wait) is retried.
                if policy == DeletionPolicy::WaitForTermination {
                    let poll = Duration::from_millis(500);
                    if let Err(e) = wait_until_deleted(backend, &removed, timeout, poll).await {
                        out.push(Event::new(me, Severity::Error, reason::PRUNE_FAILED, e));
                    }
                }
                out
            }
            Err(e) => vec![Event::new(
                me,
                Severity::Error,
                reason::PRUNE_FAILED,
                e.to_string(),
            )],
        }
    }
}
