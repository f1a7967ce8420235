//! The Kustomize applier: a Flux Kustomization's source directory rendered (plain manifests or
//! an overlay), substituted, applied with an inventory, pruned, and health-checked.

use crate::kustomize::{render_with_overlay, Overlay, RenderOptions};
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use futures::FutureExt;
use std::collections::HashSet;
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

    /// Deletes objects in deletion order, keeping those marked `prune: disabled` and, when
    /// `owner` is given, those another Kustomization has taken over.
    async fn delete_objects(
        &self,
        backend: &dyn Backend,
        owner: Option<&ObjectRef>,
        mut refs: Vec<ObjectRef>,
    ) -> Result<Vec<ObjectRef>, ApplyError> {
        sort_for_deletion(&mut refs);
        let mut deleted = Vec::new();
        for r in refs {
            let live = backend
                .get(&r)
                .await
                .map_err(|e| ApplyError::Prune(format!("{r}: {e}")))?;
            let Some(live) = live else { continue };
            let disabled = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("disabled"));
            if disabled(live.annotation(PRUNE_KEY)) || disabled(live.label(PRUNE_KEY)) {
                continue;
            }
            if let Some(owner) = owner {
                let owned = match (live.label(NAME_LABEL), live.label(NAMESPACE_LABEL)) {
                    (Some(n), Some(ns)) => n == owner.name && ns == owner.namespace,
                    _ => true,
                };
                if !owned {
                    continue;
                }
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

        if let Some(vars) = collect_vars(spec, &req.object.namespace, req.management).await? {
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
            self.delete_objects(req.backend, Some(req.object), stale)
                .await?
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
        self.delete_objects(backend, None, refs_of(inventory)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use trueup_core::api::{from_object, Kustomization};
    use trueup_core::memory::MemoryBackend;

    fn spec(extra: &str) -> KustomizationSpec {
        let text = format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: apps, namespace: flux-system}}\nspec:\n  interval: 10m\n  prune: true\n  sourceRef: {{kind: GitRepository, name: fleet}}\n{extra}"
        );
        let obj = trueup_core::yaml::parse_objects(&text, "ks.yaml")
            .unwrap()
            .remove(0);
        from_object::<Kustomization>(&obj).unwrap().spec
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: apps\ndata:\n  region: ${region:=none}\n";

    fn owner() -> ObjectRef {
        ObjectRef::new(
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            "flux-system",
            "apps",
        )
    }

    async fn apply(
        dir: &Path,
        spec: &KustomizationSpec,
        backend: &MemoryBackend,
        prev: Option<&Inventory>,
    ) -> Result<Applied, ApplyError> {
        KustomizeApplier::default()
            .apply(ApplyRequest {
                object: &owner(),
                spec,
                artifact_dir: dir,
                revision: "main@sha1:1",
                previous_inventory: prev,
                backend,
                management: backend,
                timeout: Duration::from_secs(5),
            })
            .await
    }

    fn cm(name: &str) -> ObjectRef {
        ObjectRef::new("", "ConfigMap", "apps", name)
    }

    #[tokio::test]
    async fn applies_records_inventory_and_prunes_what_left_git() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", &CM.replace("{name}", "a"));
        write(d.path(), "b.yaml", &CM.replace("{name}", "b"));
        let backend = MemoryBackend::new();
        let s = spec("");
        let first = apply(d.path(), &s, &backend, None).await.unwrap();
        let ids: Vec<&str> = first
            .inventory
            .entries
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, ["apps_a__ConfigMap", "apps_b__ConfigMap"]);
        assert!(first
            .changes
            .iter()
            .all(|(_, a)| *a == ApplyAction::Created));
        let a = backend.get(&cm("a")).await.unwrap().unwrap();
        assert_eq!(a.label(NAME_LABEL), Some("apps"));
        assert_eq!(a.label(NAMESPACE_LABEL), Some("flux-system"));
        // No postBuild: `${...}` is left alone, as in Flux.
        assert_eq!(a.0["data"]["region"], "${region:=none}");

        std::fs::remove_file(d.path().join("b.yaml")).unwrap();
        let second = apply(d.path(), &s, &backend, Some(&first.inventory))
            .await
            .unwrap();
        assert_eq!(second.pruned, vec![cm("b")]);
        assert_eq!(second.change_summary(), "ConfigMap/apps/b deleted");
        assert!(backend.get(&cm("b")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn prune_opt_out_and_objects_owned_elsewhere_are_kept() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", &CM.replace("{name}", "a"));
        let keep = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  namespace: apps\n  annotations: {kustomize.toolkit.fluxcd.io/prune: disabled}\n";
        write(d.path(), "keep.yaml", keep);
        write(d.path(), "moved.yaml", &CM.replace("{name}", "moved"));
        let backend = MemoryBackend::new();
        let s = spec("");
        let first = apply(d.path(), &s, &backend, None).await.unwrap();
        // Another Kustomization adopts `moved`.
        let mut moved = backend.get(&cm("moved")).await.unwrap().unwrap();
        moved.set_label(NAME_LABEL, "other");
        backend
            .apply(&moved, &ApplyOptions::default())
            .await
            .unwrap();
        std::fs::remove_file(d.path().join("keep.yaml")).unwrap();
        std::fs::remove_file(d.path().join("moved.yaml")).unwrap();
        let second = apply(d.path(), &s, &backend, Some(&first.inventory))
            .await
            .unwrap();
        assert!(second.pruned.is_empty(), "{:?}", second.pruned);
        assert!(backend.get(&cm("keep")).await.unwrap().is_some());
        assert!(backend.get(&cm("moved")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn ssa_ignore_and_if_not_present() {
        let d = tempfile::tempdir().unwrap();
        let ann = |v: &str, name: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: apps\n  annotations: {{kustomize.toolkit.fluxcd.io/ssa: {v}}}\ndata: {{v: from-git}}\n")
        };
        write(d.path(), "ignored.yaml", &ann("Ignore", "ignored"));
        write(d.path(), "once.yaml", &ann("IfNotPresent", "once"));
        let backend = MemoryBackend::new();
        let mut live = trueup_core::yaml::parse_objects(&ann("IfNotPresent", "once"), "x")
            .unwrap()
            .remove(0);
        live.0
            .insert("data".into(), serde_json::json!({"v": "edited in cluster"}));
        backend
            .apply(&live, &ApplyOptions::default())
            .await
            .unwrap();
        apply(d.path(), &spec(""), &backend, None).await.unwrap();
        assert!(backend.get(&cm("ignored")).await.unwrap().is_none());
        assert_eq!(
            backend.get(&cm("once")).await.unwrap().unwrap().0["data"]["v"],
            "edited in cluster"
        );
    }

    #[tokio::test]
    async fn substitution_reads_substitute_from_in_order() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", &CM.replace("{name}", "a"));
        let backend = MemoryBackend::new();
        let mut vars = Object::new("v1", "ConfigMap", Some("flux-system"), "vars");
        vars.0
            .insert("data".into(), serde_json::json!({"region": "eu-west-1"}));
        backend
            .apply(&vars, &ApplyOptions::default())
            .await
            .unwrap();
        let s = spec("  postBuild:\n    substituteFrom:\n      - {kind: ConfigMap, name: vars}\n      - {kind: Secret, name: missing, optional: true}\n");
        apply(d.path(), &s, &backend, None).await.unwrap();
        assert_eq!(
            backend.get(&cm("a")).await.unwrap().unwrap().0["data"]["region"],
            "eu-west-1"
        );

        let s = spec("  postBuild:\n    substituteFrom:\n      - {kind: Secret, name: missing}\n");
        let err = apply(d.path(), &s, &backend, None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "substitute from 'Secret/flux-system/missing' error: not found"
        );
    }

    #[tokio::test]
    async fn clear_build_errors() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n",
        );
        let backend = MemoryBackend::new();
        let err = apply(d.path(), &spec(""), &backend, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ApplyError::Build(_)));
        assert!(
            err.to_string()
                .starts_with("Deployment/web namespace not specified"),
            "{err}"
        );
        // targetNamespace fixes it.
        apply(d.path(), &spec("  targetNamespace: web\n"), &backend, None)
            .await
            .unwrap();
        assert!(backend
            .get(&ObjectRef::new("apps", "Deployment", "web", "web"))
            .await
            .unwrap()
            .is_some());

        let err = apply(d.path(), &spec("  path: ../outside\n"), &backend, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.path: path `../outside` escapes the root directory"
        );
        let err = apply(
            d.path(),
            &spec("  decryption: {provider: sops}\n"),
            &backend,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("SOPS decryption is not supported"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn health_on_a_backend_that_runs_nothing_says_what_it_checked() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", &CM.replace("{name}", "a"));
        let backend = MemoryBackend::new();
        let out = apply(d.path(), &spec("  wait: true\n"), &backend, None)
            .await
            .unwrap();
        assert!(
            out.health.starts_with("Health check passed in "),
            "{}",
            out.health
        );
        assert!(
            out.health
                .contains("in-memory backend: nothing runs the objects here"),
            "{}",
            out.health
        );
        let s = spec("  healthChecks:\n    - {apiVersion: apps/v1, kind: Deployment, name: missing, namespace: apps}\n  timeout: 1s\n");
        let k = KustomizeApplier::new(KustomizeApplierOptions {
            health_poll: Duration::from_millis(50),
            ..Default::default()
        });
        let err = k
            .apply(ApplyRequest {
                object: &owner(),
                spec: &s,
                artifact_dir: d.path(),
                revision: "r",
                previous_inventory: None,
                backend: &backend,
                management: &backend,
                timeout: Duration::from_millis(300),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ApplyError::Health(_)));
        assert!(
            err.to_string()
                .contains("Deployment/apps/missing status: 'not found'"),
            "{err}"
        );
    }

    /// A connector to one in-memory "remote" cluster.
    struct OneCluster(std::sync::Arc<MemoryBackend>);

    #[async_trait::async_trait]
    impl trueup_core::traits::ClusterConnector for OneCluster {
        async fn connect(
            &self,
            _kubeconfig: &[u8],
            _origin: &str,
        ) -> Result<std::sync::Arc<dyn Backend>, trueup_core::traits::ConnectError> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_kube_config_applies_and_prunes_remotely_with_variables_from_home() {
        use trueup_core::reconcile::{KustomizationReconciler, Reconciler, RemoteClusters};
        use trueup_core::traits::ApplyOptions;
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        write(&tree, "a.yaml", &CM.replace("{name}", "a"));
        let store = trueup_core::storage::ArtifactStore::new(d.path().join("artifacts")).unwrap();
        let git = ObjectRef::new(
            "source.toolkit.fluxcd.io",
            "GitRepository",
            "flux-system",
            "fleet",
        );
        let filter = trueup_core::sourceignore::SourceIgnore::load(&tree, None).unwrap();
        let artifact = store
            .archive_dir(&git, &tree, "main@sha1:1", &filter)
            .unwrap();
        let home = MemoryBackend::new();
        let objects = trueup_core::yaml::parse_objects(
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: fleet, namespace: flux-system}\nspec: {interval: 1m, url: 'https://example.invalid/fleet'}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: kc, namespace: flux-system}\nstringData: {value: 'a kubeconfig'}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vars, namespace: flux-system}\ndata: {region: eu}\n---\n\
             apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: apps, namespace: flux-system}\nspec:\n  interval: 10m\n  prune: true\n  sourceRef: {kind: GitRepository, name: fleet}\n  kubeConfig: {secretRef: {name: kc}}\n  postBuild: {substituteFrom: [{kind: ConfigMap, name: vars}]}\n",
            "objects.yaml",
        )
        .unwrap();
        for o in &objects {
            home.apply(o, &ApplyOptions::default()).await.unwrap();
        }
        let status = trueup_core::status::Status {
            artifact: Some(artifact),
            ..Default::default()
        };
        home.update_status(&git, &status.to_value()).await.unwrap();
        let remote = std::sync::Arc::new(MemoryBackend::new());
        let reconciler = KustomizationReconciler::new(KustomizeApplier::default(), store)
            .with_remote_clusters(std::sync::Arc::new(RemoteClusters::new(OneCluster(
                remote.clone(),
            ))));
        let mut ks = objects[3].clone();
        let out = reconciler.reconcile(&ks, &home).await;
        assert!(out.status.is_ready(), "{:?}", out.status);
        // Applied remotely, with the variables of the ConfigMap that lives with the object.
        let a = remote
            .get(&cm("a"))
            .await
            .unwrap()
            .expect("applied remotely");
        assert_eq!(a.0["data"]["region"], "eu");
        assert!(home.get(&cm("a")).await.unwrap().is_none());

        // Deleted while its kubeconfig Secret is gone: nothing can be pruned, and it says so
        // without holding the object.
        ks.0.insert("status".into(), out.status.to_value());
        let kc = ObjectRef::new("", "Secret", "flux-system", "kc");
        let secret = home.get(&kc).await.unwrap().unwrap();
        home.delete(&kc).await.unwrap();
        let events = reconciler.finalize(&ks, &home).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].severity, trueup_core::event::Severity::Info);
        assert_eq!(
            events[0].message,
            "spec.kubeConfig.secretRef: Secret 'flux-system/kc' not found: 1 objects left on the remote cluster"
        );
        assert!(remote.get(&cm("a")).await.unwrap().is_some());
        // With it: the inventory is pruned on the remote cluster.
        home.apply(&secret, &ApplyOptions::default()).await.unwrap();
        let events = reconciler.finalize(&ks, &home).await;
        assert_eq!(events[0].message, "ConfigMap/apps/a deleted");
        assert!(remote.get(&cm("a")).await.unwrap().is_none());
    }
}
