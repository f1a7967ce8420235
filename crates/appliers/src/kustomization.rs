//! The Kustomize applier: a Flux Kustomization's source directory rendered (plain manifests or
//! an overlay), substituted, applied with an inventory, pruned, and health-checked.

use crate::kustomize::{render_with_overlay, Overlay, RenderOptions};
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use futures::FutureExt;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use trueup_core::api::kustomize::KustomizationSpec;
use trueup_core::object::{Object, ObjectRef};
use trueup_core::reconcile::object_data;
use trueup_core::resources::{is_cluster_definition, sort_for_deletion};
use trueup_core::scope::is_cluster_scoped;
use trueup_core::status::{Inventory, InventoryEntry};
use trueup_core::substitute::{substitute_objects, Vars};
use trueup_core::traits::applier::{Applied, ApplyError, ApplyRequest};
use trueup_core::traits::{Applier, ApplyAction, ApplyOptions, Backend, Health};
use trueup_core::ResourceSet;

/// Per-object annotation: `Override` (default), `Merge`, `IfNotPresent` or `Ignore`.
pub const SSA_KEY: &str = "kustomize.toolkit.fluxcd.io/ssa";
/// Per-object annotation: `disabled` keeps the object when it leaves the source.
pub const PRUNE_KEY: &str = "kustomize.toolkit.fluxcd.io/prune";
/// Per-object annotation: `Enabled` recreates the object when an immutable field changed.
pub const FORCE_KEY: &str = "kustomize.toolkit.fluxcd.io/force";
/// Labels that tie applied objects to their Kustomization, as Flux writes them.
pub const NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
pub const NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";

/// Settings of the applier.
#[derive(Clone, Debug)]
pub struct KustomizeApplierOptions {
    /// Fail on `${var}` without a value or default (Flux's StrictPostBuildSubstitutions).
    pub strict_substitution: bool,
    pub field_manager: String,
    /// Objects applied at once within a stage.
    pub apply_concurrency: usize,
    /// Time between health polls.
    pub health_poll: Duration,
}

impl Default for KustomizeApplierOptions {
    fn default() -> Self {
        KustomizeApplierOptions {
            strict_substitution: false,
            field_manager: "trueup".into(),
            apply_concurrency: 8,
            health_poll: Duration::from_millis(500),
        }
    }
}

/// Applies Flux Kustomizations with the native overlay renderer.
#[derive(Clone, Debug, Default)]
pub struct KustomizeApplier {
    options: KustomizeApplierOptions,
}

impl KustomizeApplier {
    pub fn new(options: KustomizeApplierOptions) -> Self {
        KustomizeApplier { options }
    }
}

/// The overlay fields of a Kustomization spec, for the renderer.
pub fn overlay_of(spec: &KustomizationSpec) -> Overlay {
    let meta = spec.common_metadata.clone().unwrap_or_default();
    Overlay {
        name_prefix: spec.name_prefix.clone(),
        name_suffix: spec.name_suffix.clone(),
        namespace: spec.target_namespace.clone(),
        patches: spec.patches.clone(),
        images: spec.images.clone(),
        components: spec.components.clone(),
        common_labels: meta.labels,
        common_annotations: meta.annotations,
    }
}

/// Renders the manifests a Kustomization would apply: the directory at `spec.path` inside
/// `root`, with the spec's overlay fields. Synchronous and backend-free (used by `build`).
pub fn build(root: &std::path::Path, spec: &KustomizationSpec) -> Result<ResourceSet, ApplyError> {
    let path = spec.path.as_deref().unwrap_or("./");
    let dir = trueup_core::paths::join_inside(root, path)
        .map_err(|e| ApplyError::Build(format!("spec.path: {e}")))?;
    if !spec.patches_strategic_merge.is_empty() || !spec.patches_json6902.is_empty() {
        return Err(ApplyError::Build(
            "spec.patchesStrategicMerge and spec.patchesJson6902 (v1beta2) are not supported: use spec.patches".into(),
        ));
    }
    let opts = RenderOptions::flux();
    render_with_overlay(&dir, &overlay_of(spec), &opts)
        .map_err(|e| ApplyError::Build(e.to_string()))
}

/// Reads the variables of `postBuild`: `substituteFrom` in order, then `substitute` over them.
async fn collect_vars(
    spec: &KustomizationSpec,
    namespace: &str,
    backend: &dyn Backend,
) -> Result<Option<Vars>, ApplyError> {
    let Some(pb) = &spec.post_build else {
        return Ok(None);
    };
    if pb.substitute.is_empty() && pb.substitute_from.is_empty() {
        return Ok(None);
    }
    let mut vars = Vars::new();
    for src in &pb.substitute_from {
        let r = ObjectRef::new("", &src.kind, namespace, &src.name);
        if src.kind != "ConfigMap" && src.kind != "Secret" {
            return Err(ApplyError::Build(format!(
                "postBuild.substituteFrom: unsupported kind '{}' (ConfigMap or Secret)",
                src.kind
            )));
        }
        let obj = backend
            .get(&r)
            .await
            .map_err(|e| ApplyError::Build(format!("substitute from {r}: {e}")))?;
        let Some(obj) = obj else {
            if src.optional {
                continue;
            }
            return Err(ApplyError::Build(format!(
                "substitute from '{}/{namespace}/{}' error: not found",
                src.kind, src.name
            )));
        };
        let data = object_data(&obj).map_err(ApplyError::Build)?;
        let mut pairs = Vec::with_capacity(data.len());
        for (k, v) in data {
            let s = String::from_utf8(v).map_err(|_| {
                ApplyError::Build(format!("substitute from {r}: key '{k}' is not valid UTF-8"))
            })?;
            pairs.push((k, s));
        }
        vars.extend(pairs, &r.to_string())
            .map_err(|e| ApplyError::Build(e.to_string()))?;
    }
    vars.extend(
        pb.substitute.iter().map(|(k, v)| (k.clone(), v.clone())),
        "spec.postBuild.substitute",
    )
    .map_err(|e| ApplyError::Build(e.to_string()))?;
    Ok(Some(vars))
}

fn inventory_of(objects: &[Object]) -> Inventory {
    let mut entries: Vec<InventoryEntry> = objects
        .iter()
        .map(|o| InventoryEntry {
            id: o.object_ref().inventory_id(),
            v: o.version().to_string(),
        })
        .collect();
    entries.sort();
    entries.dedup();
    Inventory { entries }
}

fn refs_of(inv: &Inventory) -> Vec<ObjectRef> {
    inv.entries
        .iter()
        .filter_map(|e| ObjectRef::from_inventory_id(&e.id).ok())
        .collect()
}

/// Checks what a server would reject, before anything is applied: namespaced built-in kinds
/// need a namespace.
fn validate(objects: &[Object]) -> Result<(), ApplyError> {
    for o in objects {
        if o.namespace().is_none() && is_cluster_scoped(o.group(), o.kind()) == Some(false) {
            return Err(ApplyError::Build(format!(
                "{}/{} namespace not specified: set metadata.namespace or spec.targetNamespace",
                o.kind(),
                o.name()
            )));
        }
    }
    Ok(())
}

impl KustomizeApplier {
    async fn apply_one(
        &self,
        backend: &dyn Backend,
        obj: &Object,
    ) -> Result<Option<(ObjectRef, ApplyAction)>, ApplyError> {
        let r = obj.object_ref();
        let ssa = obj.annotation(SSA_KEY).unwrap_or("Override");
        if ssa.eq_ignore_ascii_case("Ignore") {
            return Ok(None);
        }
        if ssa.eq_ignore_ascii_case("IfNotPresent") {
            let existing = backend
                .get(&r)
                .await
                .map_err(|e| ApplyError::Apply(e.to_string()))?;
            if existing.is_some() {
                return Ok(Some((r, ApplyAction::Unchanged)));
            }
        }
        let opts = ApplyOptions {
            field_manager: self.options.field_manager.clone(),
            recreate_on_immutable: obj
                .annotation(FORCE_KEY)
                .is_some_and(|v| v.eq_ignore_ascii_case("enabled")),
            ..ApplyOptions::default()
        };
        let (action, _) = backend
            .apply(obj, &opts)
            .await
            .map_err(|e| ApplyError::Apply(format!("{r} apply failed: {e}")))?;
        Ok(Some((r, action)))
    }

    /// Applies in two stages, as Flux does: cluster definitions (CRDs, Namespaces) first, then
    /// everything else. Within a stage objects are applied concurrently.
    async fn apply_all(
        &self,
        backend: &dyn Backend,
        set: &ResourceSet,
    ) -> Result<Vec<(ObjectRef, ApplyAction)>, ApplyError> {
        let ordered = set.in_apply_order();
        let (first, rest): (Vec<&Object>, Vec<&Object>) = ordered
            .into_iter()
            .partition(|o| is_cluster_definition(o.kind()));
        let mut changes = Vec::with_capacity(set.len());
        for stage in [first, rest] {
            // Boxed up front: a lazily mapped stream trips the compiler's higher-ranked
            // lifetime inference inside async-trait methods.
            let futs: Vec<futures::future::BoxFuture<'_, _>> = stage
                .into_iter()
                .map(|o| self.apply_one(backend, o).boxed())
                .collect();
            let mut results = stream::iter(futs).buffered(self.options.apply_concurrency.max(1));
            while let Some(r) = results.next().await {
                if let Some(c) = r? {
                    changes.push(c);
                }
            }
        }
        Ok(changes)
    }

    async fn prune(
        &self,
        backend: &dyn Backend,
        owner: &ObjectRef,
        stale: Vec<ObjectRef>,
    ) -> Result<Vec<ObjectRef>, ApplyError> {
        let mut stale = stale;
        sort_for_deletion(&mut stale);
        let mut deleted = Vec::new();
        for r in stale {
            let live = backend
                .get(&r)
                .await
                .map_err(|e| ApplyError::Prune(format!("{r}: {e}")))?;
            let Some(live) = live else { continue };
            if live
                .annotation(PRUNE_KEY)
                .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
                || live
                    .label(PRUNE_KEY)
                    .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
            {
                continue;
            }
            // An object another Kustomization has taken over is not ours to delete.
            let owned = match (live.label(NAME_LABEL), live.label(NAMESPACE_LABEL)) {
                (Some(n), Some(ns)) => n == owner.name && ns == owner.namespace,
                _ => true,
            };
            if !owned {
                continue;
            }
            if backend
                .delete(&r)
                .await
                .map_err(|e| ApplyError::Prune(format!("{r} delete failed: {e}")))?
            {
                deleted.push(r);
            }
        }
        Ok(deleted)
    }

    async fn wait_healthy(
        &self,
        backend: &dyn Backend,
        refs: &[ObjectRef],
        timeout: Duration,
    ) -> Result<String, ApplyError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut pending: Vec<ObjectRef> = refs.to_vec();
        loop {
            let mut still = Vec::new();
            let mut failed = Vec::new();
            for r in &pending {
                match backend
                    .health(r)
                    .await
                    .map_err(|e| ApplyError::Health(format!("{r}: {e}")))?
                {
                    Health::Current => {}
                    Health::Failed(why) => failed.push(format!("{r} failed: {why}")),
                    Health::InProgress(why) => still.push((r.clone(), why)),
                    Health::NotFound => still.push((r.clone(), "not found".into())),
                }
            }
            if !failed.is_empty() {
                return Err(ApplyError::Health(format!(
                    "health check failed: {}",
                    failed.join("; ")
                )));
            }
            if still.is_empty() {
                let took = format!("{:.1?}", started.elapsed());
                return Ok(if backend.runs_workloads() {
                    format!("Health check passed in {took}")
                } else {
                    format!(
                        "Health check passed in {took} ({}: nothing runs the objects here, so this checked that {} object(s) were written)",
                        backend.describe(),
                        refs.len()
                    )
                });
            }
            if Instant::now() >= deadline {
                let detail: Vec<String> = still
                    .iter()
                    .map(|(r, why)| format!("{r} status: '{why}'"))
                    .collect();
                return Err(ApplyError::Health(format!(
                    "health check failed after {:.1?}: timeout waiting for: [{}]",
                    started.elapsed(),
                    detail.join(", ")
                )));
            }
            pending = still.into_iter().map(|(r, _)| r).collect();
            tokio::time::sleep(self.options.health_poll).await;
        }
    }
}

#[async_trait]
impl Applier for KustomizeApplier {
    type Spec = KustomizationSpec;

    async fn apply(&self, req: ApplyRequest<'_, KustomizationSpec>) -> Result<Applied, ApplyError> {
        let spec = req.spec;
        if spec.decryption.is_some() {
            return Err(ApplyError::Build(
                "spec.decryption: SOPS decryption is not supported yet; nothing was applied".into(),
            ));
        }
        let root = req.artifact_dir.to_path_buf();
        let spec_owned = spec.clone();
        let mut set = tokio::task::spawn_blocking(move || build(&root, &spec_owned))
            .await
            .map_err(|e| ApplyError::Build(format!("render task failed: {e}")))??;

        if let Some(vars) = collect_vars(spec, &req.object.namespace, req.backend).await? {
            let mut objects = set.into_objects();
            substitute_objects(&mut objects, &vars, self.options.strict_substitution)
                .map_err(|e| ApplyError::Build(e.to_string()))?;
            set =
                ResourceSet::from_objects(objects).map_err(|e| ApplyError::Build(e.to_string()))?;
        }
        for o in set.iter_mut() {
            o.set_label(NAME_LABEL, &req.object.name);
            o.set_label(NAMESPACE_LABEL, &req.object.namespace);
        }
        validate(set.objects())?;

        let changes = self.apply_all(req.backend, &set).await?;
        let inventory = inventory_of(set.objects());

        let pruned = if spec.prune {
            let keep: HashSet<String> = inventory.entries.iter().map(|e| e.id.clone()).collect();
            let stale: Vec<ObjectRef> = req
                .previous_inventory
                .map(refs_of)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !keep.contains(&r.inventory_id()))
                .collect();
            self.prune(req.backend, req.object, stale).await?
        } else {
            Vec::new()
        };

        let to_check: Vec<ObjectRef> = if spec.wait {
            set.refs()
        } else {
            spec.health_checks
                .iter()
                .map(|h| {
                    let group = h
                        .api_version
                        .as_deref()
                        .map(|v| trueup_core::object::split_api_version(v).0)
                        .unwrap_or("");
                    ObjectRef::new(
                        group,
                        &h.kind,
                        h.namespace.as_deref().unwrap_or(&req.object.namespace),
                        &h.name,
                    )
                })
                .collect()
        };
        let health = if to_check.is_empty() {
            String::new()
        } else {
            self.wait_healthy(req.backend, &to_check, req.timeout)
                .await?
        };
        Ok(Applied {
            inventory,
            changes,
            pruned,
            health,
        })
    }

    async fn remove(
        &self,
        inventory: &Inventory,
        backend: &dyn Backend,
    ) -> Result<Vec<ObjectRef>, ApplyError> {
        let refs = refs_of(inventory);
        // The owner is unknown here; deletion of the owner removes what its inventory lists.
        let mut stale = refs;
        sort_for_deletion(&mut stale);
        let mut deleted = Vec::new();
        for r in stale {
            let Some(live) = backend
                .get(&r)
                .await
                .map_err(|e| ApplyError::Prune(e.to_string()))?
            else {
                continue;
            };
            if live
                .annotation(PRUNE_KEY)
                .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
            {
                continue;
            }
            if backend
                .delete(&r)
                .await
                .map_err(|e| ApplyError::Prune(format!("{r} delete failed: {e}")))?
            {
                deleted.push(r);
            }
        }
        Ok(deleted)
    }
}

/// Groups applied objects by action, for summaries.
pub fn count_actions(changes: &[(ObjectRef, ApplyAction)]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for (_, a) in changes {
        *m.entry(a.as_str()).or_insert(0) += 1;
    }
    m
}
