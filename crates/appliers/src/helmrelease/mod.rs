//! The Helm release manager: renders a chart with `trueup_gotmpl`, post-renders it (Flux's
//! kustomize `postRenderers`), installs the chart's CRDs by policy, runs hooks in Helm's order
//! ([`hooks`]), applies the manifests to a backend, waits for health, prunes what the previous
//! revision had and this one does not, runs Helm tests, detects drift ([`drift`]) and keeps
//! Helm-compatible release records ([`record`]) that the helm CLI (v3 and v4) reads,
//! rolls back and upgrades.
//!
//! On a backend that runs no workloads (the local one) hook Jobs/Pods count as done once
//! written, and the status message says so; Helm tests are not run there (TestSuccess Unknown).

pub mod drift;
pub mod hooks;
pub mod record;

use async_trait::async_trait;
use base64::Engine;
use record::{Chart, File, Info, Release};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trueup_core::api::helm::HelmReleaseSpec;
use trueup_core::object::{Object, ObjectRef};
use trueup_core::reconcile::helmrelease::{
    release_status as rs, ReleaseError, ReleaseErrorKind, ReleaseInfo, ReleaseManager,
    ReleaseRequest, ReleaseTarget,
};
use trueup_core::resources::sort_for_deletion;
use trueup_core::scope::is_cluster_scoped;
use trueup_core::traits::backend::wait_until_deleted;
use trueup_core::traits::{ApplyAction, ApplyOptions, Backend, DeleteOptions, Health, ListParams};

/// The label and annotations Helm puts on what it installs, and checks before adopting.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const RELEASE_NAME_ANNOTATION: &str = "meta.helm.sh/release-name";
pub const RELEASE_NAMESPACE_ANNOTATION: &str = "meta.helm.sh/release-namespace";

/// Flux's default `spec.maxHistory`.
const DEFAULT_MAX_HISTORY: i64 = 5;

/// Helm release actions against a [`Backend`], with records in Helm's storage format.
#[derive(Clone, Debug)]
pub struct HelmReleaseApplier {
    /// How often health is polled while waiting.
    pub poll: Duration,
}

impl Default for HelmReleaseApplier {
    fn default() -> Self {
        HelmReleaseApplier {
            poll: Duration::from_millis(200),
        }
    }
}

fn err(kind: ReleaseErrorKind, msg: impl Into<String>) -> ReleaseError {
    ReleaseError::new(kind, msg)
}

fn storage_err(msg: impl Into<String>) -> ReleaseError {
    err(ReleaseErrorKind::Storage, msg)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The chart directory inside an unpacked artifact (the archive holds `<name>/Chart.yaml`).
fn chart_root(dir: &Path) -> Result<PathBuf, ReleaseError> {
    if dir.join("Chart.yaml").is_file() {
        return Ok(dir.to_path_buf());
    }
    std::fs::read_dir(dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("Chart.yaml").is_file())
        .ok_or_else(|| {
            err(
                ReleaseErrorKind::Render,
                "chart artifact: no Chart.yaml found",
            )
        })
}

fn read_yaml(path: &Path, what: &str) -> Result<Value, ReleaseError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) => return Ok(Value::Null),
    };
    serde_yaml::from_str(&text).map_err(|e| {
        err(
            ReleaseErrorKind::Render,
            format!("chart {what}: invalid YAML: {e}"),
        )
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<File>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_files(root, &p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            let name = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            out.push(File {
                name,
                data: base64::engine::general_purpose::STANDARD.encode(bytes),
            });
        }
    }
}

/// The chart as Helm records it in a release: metadata, default values and templates.
fn chart_record(root: &Path) -> Result<Chart, ReleaseError> {
    let metadata = read_yaml(&root.join("Chart.yaml"), "Chart.yaml")?;
    if !metadata.is_object() {
        return Err(err(ReleaseErrorKind::Render, "chart Chart.yaml: not a map"));
    }
    let values = match read_yaml(&root.join("values.yaml"), "values.yaml")? {
        Value::Null => Value::Object(Default::default()),
        v => v,
    };
    let mut templates = Vec::new();
    collect_files(root, &root.join("templates"), &mut templates);
    Ok(Chart {
        metadata,
        lock: None,
        templates,
        values,
        schema: None,
        files: Vec::new(),
    })
}

/// Parses a multi-document manifest into objects (empty documents skipped).
fn parse_manifest(text: &str, source: &str) -> Result<Vec<Object>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).map_err(|e| format!("{source}: invalid YAML: {e}"))?;
        if v.is_null() {
            continue;
        }
        out.push(Object::from_value(v).map_err(|e| format!("{source}: {e}"))?);
    }
    Ok(out)
}

/// The objects of a stored manifest, placed and labelled as Helm applies them.
fn release_objects(manifest: &str, target: &ReleaseTarget) -> Result<Vec<Object>, String> {
    let mut objs = parse_manifest(manifest, "manifest")?;
    for o in &mut objs {
        // Helm puts namespaced objects without a namespace into the release namespace; kinds
        // it cannot place (CRs) are assumed namespaced, as most are.
        if o.namespace().is_none() && is_cluster_scoped(o.group(), o.kind()) != Some(true) {
            o.set_namespace(&target.namespace);
        }
        o.set_label(MANAGED_BY, "Helm");
        o.set_annotation(RELEASE_NAME_ANNOTATION, &target.name);
        o.set_annotation(RELEASE_NAMESPACE_ANNOTATION, &target.namespace);
    }
    Ok(objs)
}

/// A rendered release: Helm's manifest text (non-hook documents, `# Source:` headers), the
/// hook documents, the chart's NOTES.txt and the chart record.
struct Rendered {
    manifest: String,
    hooks: Vec<trueup_gotmpl::RenderedFile>,
    notes: String,
    chart: Chart,
}

/// Flux's `postRenderers`: each kustomize post-renderer in order, run by the native overlay
/// renderer over the chart's manifest (hooks are not post-rendered, as in Helm). The result is
/// the release manifest.
fn post_render(
    manifest: String,
    renderers: &[trueup_core::api::helm::PostRenderer],
) -> Result<String, ReleaseError> {
    use trueup_core::api::meta::Patch;
    let mut manifest = manifest;
    for (i, pr) in renderers.iter().enumerate() {
        let Some(k) = &pr.kustomize else {
            continue;
        };
        let field = format!("spec.postRenderers[{i}].kustomize");
        let perr = |m: String| err(ReleaseErrorKind::Render, format!("{field}: {m}"));
        let mut patches = k.patches.clone();
        for p in &k.patches_strategic_merge {
            patches.push(Patch {
                patch: serde_yaml::to_string(p).map_err(|e| perr(e.to_string()))?,
                target: None,
            });
        }
        for p in &k.patches_json6902 {
            patches.push(Patch {
                patch: serde_json::to_string(&p.patch).map_err(|e| perr(e.to_string()))?,
                target: Some(p.target.clone()),
            });
        }
        let overlay = crate::kustomize::Overlay {
            patches,
            images: k.images.clone(),
            ..Default::default()
        };
        let tmp = tempfile::tempdir().map_err(|e| perr(e.to_string()))?;
        std::fs::write(tmp.path().join("helm-output.yaml"), &manifest)
            .map_err(|e| perr(e.to_string()))?;
        let set = crate::kustomize::render_with_overlay(
            tmp.path(),
            &overlay,
            &crate::kustomize::RenderOptions::flux(),
        )
        .map_err(|e| perr(e.to_string().replace(&tmp.path().display().to_string(), "")))?;
        let objs: Vec<Object> = set.iter().cloned().collect();
        manifest = crate::kustomize::to_yaml(&objs);
    }
    Ok(manifest)
}

/// Creates namespace `ns` unless it exists.
async fn ensure_namespace(backend: &dyn Backend, ns: &str) -> Result<(), ReleaseError> {
    let r = ObjectRef::new("", "Namespace", "", ns);
    let exists = backend
        .get(&r)
        .await
        .map_err(|e| err(ReleaseErrorKind::Apply, format!("namespace {ns}: {e}")))?
        .is_some();
    if !exists {
        let o = Object::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns},
        }))
        .map_err(|e| err(ReleaseErrorKind::Apply, format!("namespace {ns}: {e}")))?;
        backend
            .apply(&o, &ApplyOptions::default())
            .await
            .map_err(|e| {
                err(
                    ReleaseErrorKind::Apply,
                    format!("creating namespace {ns}: {e}"),
                )
            })?;
    }
    Ok(())
}

/// Renders the chart as `helm install/upgrade` does: `.Release.IsInstall`/`IsUpgrade` and
/// `.Release.Revision` say which operation this is and the revision it will write.
fn render(
    chart_dir: &Path,
    target: &ReleaseTarget,
    values: &Value,
    upgrade: bool,
    revision: i64,
) -> Result<Rendered, ReleaseError> {
    let root = chart_root(chart_dir)?;
    let chart = chart_record(&root)?;
    let opts = trueup_gotmpl::ChartOptions {
        release_name: target.name.clone(),
        namespace: target.namespace.clone(),
        is_install: !upgrade,
        is_upgrade: upgrade,
        revision,
        ..Default::default()
    };
    let files = trueup_gotmpl::render_chart(&root, &opts, values)
        .map_err(|e| err(ReleaseErrorKind::Render, e.helm_message()))?;
    let mut manifest = String::new();
    for f in files.iter().filter(|f| !f.hook) {
        // Helm's `---\n# Source: %s\n%s\n`: the document keeps its own trailing whitespace.
        manifest.push_str(&format!("---\n# Source: {}\n{}\n", f.path, f.content));
    }
    // The release notes are the top chart's NOTES.txt, rendered with the same values. The
    // chart renderer leaves NOTES.txt out of the manifests, so they take a second pass, only
    // for charts that have notes.
    let notes = if root.join("templates/NOTES.txt").is_file() {
        let gv = trueup_gotmpl::Value::from_json(values);
        let name = format!("{}/templates/NOTES.txt", chart_name(&chart));
        trueup_gotmpl::render_templates(&root, &opts, &gv)
            .map_err(|e| err(ReleaseErrorKind::Render, e.helm_message()))?
            .into_iter()
            .find(|(p, _)| *p == name)
            .map(|(_, t)| t)
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Rendered {
        manifest,
        hooks: files.into_iter().filter(|f| f.hook).collect(),
        notes,
        chart,
    })
}

fn chart_name(chart: &Chart) -> String {
    chart
        .metadata
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string()
}

/// `install.crds` / `upgrade.crds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrdPolicy {
    /// Leave the chart's CRDs alone.
    Skip,
    /// Create the CRDs that do not exist; never change existing ones.
    Create,
    /// Create new CRDs and update existing ones.
    CreateReplace,
}

fn crd_policy(v: Option<&str>, default: CrdPolicy, field: &str) -> Result<CrdPolicy, ReleaseError> {
    match v {
        None | Some("") => Ok(default),
        Some("Skip") => Ok(CrdPolicy::Skip),
        Some("Create") => Ok(CrdPolicy::Create),
        Some("CreateReplace") => Ok(CrdPolicy::CreateReplace),
        Some(o) => Err(err(
            ReleaseErrorKind::Render,
            format!("{field}: unsupported policy '{o}' (Skip, Create, CreateReplace)"),
        )),
    }
}

/// The chart's `crds/` files (and its subcharts'), as Helm installs them: not templated, not
/// part of the release manifest.
fn chart_crds(chart_dir: &Path) -> Result<Vec<Object>, ReleaseError> {
    let root = chart_root(chart_dir)?;
    let mut dirs = vec![root.join("crds")];
    if let Ok(rd) = std::fs::read_dir(root.join("charts")) {
        let mut subs: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("crds")).collect();
        subs.sort();
        dirs.extend(subs);
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| {
                err(
                    ReleaseErrorKind::Render,
                    format!("chart {}: {e}", f.display()),
                )
            })?;
            let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
            out.extend(
                parse_manifest(&text, &format!("chart {name}"))
                    .map_err(|e| err(ReleaseErrorKind::Render, e))?,
            );
        }
    }
    Ok(out)
}

/// A set of object identities, for pruning.
fn ids(objs: &[Object]) -> HashSet<ObjectRef> {
    objs.iter().map(|o| o.object_ref()).collect()
}

impl HelmReleaseApplier {
    pub fn new() -> Self {
        Self::default()
    }

    async fn records(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
    ) -> Result<Vec<Release>, ReleaseError> {
        let mut params = ListParams::kind("", "Secret");
        params.namespace = Some(target.storage_namespace.clone());
        params.labels.insert("owner".into(), "helm".into());
        params.labels.insert("name".into(), target.name.clone());
        let objs = backend
            .list(&params)
            .await
            .map_err(|e| storage_err(format!("listing release records: {e}")))?;
        let mut out = Vec::new();
        for o in objs {
            if o.0.get("type").and_then(|t| t.as_str()) != Some(record::SECRET_TYPE) {
                continue;
            }
            out.push(record::from_secret(&o).map_err(storage_err)?);
        }
        out.sort_by_key(|r| r.version);
        Ok(out)
    }

    async fn write(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        rel: &Release,
    ) -> Result<(), ReleaseError> {
        let secret =
            record::to_secret(rel, &target.storage_namespace, unix_now()).map_err(storage_err)?;
        backend
            .apply(&secret, &ApplyOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| storage_err(format!("writing release record: {e}")))
    }

    /// Applies objects in order; returns what each apply did. Stops at the first refusal.
    async fn apply_all(
        &self,
        backend: &dyn Backend,
        objs: &[Object],
        changes: &mut Vec<(ObjectRef, ApplyAction)>,
        force: bool,
    ) -> Result<(), ReleaseError> {
        // `force`: Helm's replacement strategy; fields other managers own are taken and an
        // object whose immutable fields changed is deleted and created again.
        let opts = ApplyOptions {
            field_manager: "helm".into(),
            force_conflicts: force,
            recreate_on_immutable: force,
            ..Default::default()
        };
        for o in objs {
            let (action, _) = backend
                .apply(o, &opts)
                .await
                .map_err(|e| err(ReleaseErrorKind::Apply, e.to_string()))?;
            changes.push((o.object_ref(), action));
        }
        Ok(())
    }

    /// Helm's `--wait`: every object Current, a Failed one ends the wait at once.
    async fn wait(
        &self,
        backend: &dyn Backend,
        objs: &[Object],
        timeout: Duration,
    ) -> Result<(), ReleaseError> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<ObjectRef> = objs.iter().map(|o| o.object_ref()).collect();
        loop {
            let mut still = Vec::new();
            let mut last = String::new();
            for r in pending {
                match backend.health(&r).await {
                    Ok(Health::Current) => {}
                    Ok(Health::Failed(m)) => {
                        return Err(err(ReleaseErrorKind::Health, format!("{r}: {m}")))
                    }
                    Ok(Health::InProgress(m)) => {
                        last = format!("{r}: {m}");
                        still.push(r);
                    }
                    Ok(Health::NotFound) => {
                        last = format!("{r}: not found");
                        still.push(r);
                    }
                    Err(e) => {
                        last = e.to_string();
                        still.push(r);
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(err(
                    ReleaseErrorKind::Health,
                    format!("timed out waiting for the condition ({last})"),
                ));
            }
            pending = still;
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn delete_all(
        &self,
        backend: &dyn Backend,
        refs: Vec<ObjectRef>,
    ) -> Result<Vec<ObjectRef>, ReleaseError> {
        self.delete_all_with(backend, refs, &DeleteOptions::default())
            .await
    }

    async fn delete_all_with(
        &self,
        backend: &dyn Backend,
        mut refs: Vec<ObjectRef>,
        opts: &DeleteOptions,
    ) -> Result<Vec<ObjectRef>, ReleaseError> {
        sort_for_deletion(&mut refs);
        let mut deleted = Vec::new();
        for r in refs {
            match backend.delete_with(&r, opts).await {
                Ok(true) => deleted.push(r),
                Ok(false) => {}
                Err(e) => return Err(err(ReleaseErrorKind::Apply, format!("deleting {r}: {e}"))),
            }
        }
        Ok(deleted)
    }

    /// Drops the oldest records beyond `maxHistory` (0 = unlimited), never a deployed one.
    async fn prune_history(&self, backend: &dyn Backend, target: &ReleaseTarget, max: i64) {
        if max <= 0 {
            return;
        }
        let Ok(recs) = self.records(backend, target).await else {
            return;
        };
        let excess = recs.len().saturating_sub(max as usize);
        for r in recs
            .iter()
            .filter(|r| r.info.status != rs::DEPLOYED)
            .take(excess)
        {
            let sref = ObjectRef::new(
                "",
                "Secret",
                &target.storage_namespace,
                &record::secret_name(&r.name, r.version),
            );
            let _ = backend.delete(&sref).await;
        }
    }

    /// Installs the chart's CRDs by `policy` and waits until they are established, so that
    /// the chart's custom resources apply.
    async fn crds(
        &self,
        backend: &dyn Backend,
        crds: &[Object],
        policy: CrdPolicy,
        timeout: Duration,
        notes: &mut Vec<String>,
    ) -> Result<(), ReleaseError> {
        if policy == CrdPolicy::Skip || crds.is_empty() {
            return Ok(());
        }
        let opts = ApplyOptions {
            field_manager: "helm".into(),
            force_conflicts: true,
            ..Default::default()
        };
        let mut applied = Vec::new();
        for c in crds {
            let r = c.object_ref();
            if policy == CrdPolicy::Create {
                let exists = backend
                    .get(&r)
                    .await
                    .map_err(|e| err(ReleaseErrorKind::Apply, format!("{r}: {e}")))?
                    .is_some();
                if exists {
                    continue;
                }
            }
            backend
                .apply(c, &opts)
                .await
                .map_err(|e| err(ReleaseErrorKind::Apply, format!("CRD {r}: {e}")))?;
            applied.push(c.clone());
        }
        if !applied.is_empty() {
            self.wait(backend, &applied, timeout).await?;
            notes.push(format!(
                "{} CRD(s) {}",
                applied.len(),
                if policy == CrdPolicy::Create {
                    "created"
                } else {
                    "created or replaced"
                }
            ));
        }
        Ok(())
    }

    /// Runs the release's hooks of `event`; the record keeps their last runs.
    async fn hooks(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        rel: &mut Release,
        event: &str,
        timeout: Duration,
        notes: &mut Vec<String>,
    ) -> Result<(), ReleaseError> {
        if !rel.hooks.iter().any(|h| h.has_event(event)) {
            return Ok(());
        }
        let ran = hooks::run(
            backend,
            &mut rel.hooks,
            event,
            &target.namespace,
            timeout,
            self.poll,
            &|_| true,
        )
        .await;
        // The record shows the hooks' runs, failed or not.
        self.write(backend, target, rel).await?;
        let ran = ran?;
        if !ran.not_waited.is_empty() {
            notes.push(format!(
                "{event} hooks {} counted as done once written: {} runs no workloads",
                ran.not_waited.join(", "),
                backend.describe()
            ));
        }
        Ok(())
    }

    /// The shared install/upgrade path: new record pending, apply, prune, wait, settle record.
    async fn release(
        &self,
        req: ReleaseRequest<'_>,
        upgrade: bool,
    ) -> Result<ReleaseInfo, ReleaseError> {
        let backend = req.backend;
        let target = req.target;
        let history = self.records(backend, target).await?;
        if let Some(p) = history
            .iter()
            .rev()
            .find(|r| r.info.status.starts_with("pending-"))
        {
            return Err(storage_err(format!(
                "another operation (install/upgrade/rollback) is in progress: release {} is {}",
                p.version, p.info.status
            )));
        }
        let version = history.last().map(|r| r.version).unwrap_or(0) + 1;
        let Rendered {
            manifest,
            hooks: hook_files,
            notes,
            chart,
        } = render(req.chart_dir, target, req.values, upgrade, version)?;
        let manifest = post_render(manifest, &req.spec.post_renderers)?;
        let objs =
            release_objects(&manifest, target).map_err(|e| err(ReleaseErrorKind::Render, e))?;
        let release_hooks =
            hooks::parse(&hook_files).map_err(|e| err(ReleaseErrorKind::Render, e))?;
        let previous = history
            .iter()
            .rev()
            .find(|r| r.info.status == rs::DEPLOYED)
            .cloned();
        let now = trueup_core::time::now_rfc3339();
        let first = previous
            .as_ref()
            .map(|p| p.info.first_deployed.clone())
            .unwrap_or_else(|| now.clone());
        let mut rel = Release {
            name: target.name.clone(),
            info: Info {
                first_deployed: first,
                last_deployed: now.clone(),
                deleted: String::new(),
                description: if upgrade {
                    "Preparing upgrade".into()
                } else {
                    "Initial install underway".into()
                },
                status: if upgrade {
                    rs::PENDING_UPGRADE
                } else {
                    rs::PENDING_INSTALL
                }
                .into(),
                notes,
            },
            chart,
            config: req.values.clone(),
            manifest,
            hooks: release_hooks,
            version,
            namespace: target.namespace.clone(),
            apply_method: record::APPLY_METHOD_SSA.into(),
        };
        // `install.createNamespace` (Helm's `--create-namespace`): before anything is written
        // there, records included when they share it.
        if !upgrade
            && req
                .spec
                .install
                .as_ref()
                .is_some_and(|i| i.create_namespace)
        {
            ensure_namespace(backend, &target.namespace).await?;
        }
        self.write(backend, target, &rel).await?;

        let (opts_wait, cleanup, disable_hooks, force, crds) = if upgrade {
            let u = req.spec.upgrade.clone().unwrap_or_default();
            let crds = crd_policy(u.crds.as_deref(), CrdPolicy::Skip, "spec.upgrade.crds")?;
            (
                !u.disable_wait,
                u.cleanup_on_fail,
                u.disable_hooks,
                u.force,
                crds,
            )
        } else {
            let i = req.spec.install.clone().unwrap_or_default();
            let crds = if i.skip_crds && i.crds.is_none() {
                CrdPolicy::Skip
            } else {
                crd_policy(i.crds.as_deref(), CrdPolicy::Create, "spec.install.crds")?
            };
            (!i.disable_wait, false, i.disable_hooks, false, crds)
        };
        let crd_objs = chart_crds(req.chart_dir)?;
        let (pre, post) = if upgrade {
            (hooks::PRE_UPGRADE, hooks::POST_UPGRADE)
        } else {
            (hooks::PRE_INSTALL, hooks::POST_INSTALL)
        };
        let mut notes = Vec::new();
        let mut changes = Vec::new();
        let mut result = self
            .crds(backend, &crd_objs, crds, req.timeout, &mut notes)
            .await;
        if result.is_ok() && !disable_hooks {
            result = self
                .hooks(backend, target, &mut rel, pre, req.timeout, &mut notes)
                .await;
        }
        if result.is_ok() {
            result = self.apply_all(backend, &objs, &mut changes, force).await;
        }
        if result.is_ok() {
            // What the deployed revision had and this one does not goes away (Helm deletes
            // resources dropped by an upgrade).
            if let Some(p) = &previous {
                let keep = ids(&objs);
                let old = release_objects(&p.manifest, target).unwrap_or_default();
                let gone: Vec<ObjectRef> = old
                    .iter()
                    .map(|o| o.object_ref())
                    .filter(|r| !keep.contains(r))
                    .collect();
                result = self.delete_all(backend, gone).await.map(|_| ());
            }
        }
        if result.is_ok() && opts_wait {
            // Helm's `--wait-for-jobs` is on unless `disableWaitForJobs`: without it, Jobs
            // are not waited for.
            let wait_for_jobs = !if upgrade {
                req.spec
                    .upgrade
                    .as_ref()
                    .is_some_and(|u| u.disable_wait_for_jobs)
            } else {
                req.spec
                    .install
                    .as_ref()
                    .is_some_and(|i| i.disable_wait_for_jobs)
            };
            let awaited: Vec<Object> = objs
                .iter()
                .filter(|o| wait_for_jobs || !(o.group() == "batch" && o.kind() == "Job"))
                .cloned()
                .collect();
            result = self.wait(backend, &awaited, req.timeout).await;
        }
        if result.is_ok() && !disable_hooks {
            result = self
                .hooks(backend, target, &mut rel, post, req.timeout, &mut notes)
                .await;
        }
        let now = trueup_core::time::now_rfc3339();
        rel.info.last_deployed = now;
        match result {
            Ok(()) => {
                rel.info.status = rs::DEPLOYED.into();
                rel.info.description = if upgrade {
                    "Upgrade complete".into()
                } else {
                    "Install complete".into()
                };
                self.write(backend, target, &rel).await?;
                if let Some(mut p) = previous {
                    p.info.status = rs::SUPERSEDED.into();
                    self.write(backend, target, &p).await?;
                }
                self.prune_history(
                    backend,
                    target,
                    req.spec.max_history.unwrap_or(DEFAULT_MAX_HISTORY),
                )
                .await;
                let mut info = record::info_of(&rel);
                info.messages = notes;
                Ok(info)
            }
            Err(mut e) => {
                rel.info.status = rs::FAILED.into();
                rel.info.description = if upgrade {
                    format!("Upgrade {:?} failed: {}", target.name, e.message)
                } else {
                    format!("Release {:?} failed: {}", target.name, e.message)
                };
                // cleanupOnFail: objects this attempt created are removed, so that the
                // remediation starts from what the deployed revision had.
                if cleanup {
                    let created: Vec<ObjectRef> = changes
                        .iter()
                        .filter(|(_, a)| *a == ApplyAction::Created)
                        .map(|(r, _)| r.clone())
                        .collect();
                    let _ = self.delete_all(backend, created).await;
                }
                self.write(backend, target, &rel).await?;
                e.release = Some(Box::new(record::info_of(&rel)));
                Err(e)
            }
        }
    }
}

#[async_trait]
impl ReleaseManager for HelmReleaseApplier {
    async fn history(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
    ) -> Result<Vec<ReleaseInfo>, ReleaseError> {
        Ok(self
            .records(backend, target)
            .await?
            .iter()
            .map(record::info_of)
            .collect())
    }

    async fn install(&self, req: ReleaseRequest<'_>) -> Result<ReleaseInfo, ReleaseError> {
        self.release(req, false).await
    }

    async fn upgrade(&self, req: ReleaseRequest<'_>) -> Result<ReleaseInfo, ReleaseError> {
        self.release(req, true).await
    }

    async fn rollback(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        to: i64,
        spec: &HelmReleaseSpec,
        timeout: Duration,
    ) -> Result<ReleaseInfo, ReleaseError> {
        let history = self.records(backend, target).await?;
        let Some(to_rel) = history.iter().find(|r| r.version == to).cloned() else {
            return Err(storage_err(format!(
                "release {} has no revision {to}",
                target.name
            )));
        };
        let current = history.last().cloned();
        let objs = release_objects(&to_rel.manifest, target).map_err(storage_err)?;
        let version = current.as_ref().map(|r| r.version).unwrap_or(0) + 1;
        let now = trueup_core::time::now_rfc3339();
        let mut rel = Release {
            name: target.name.clone(),
            info: Info {
                first_deployed: to_rel.info.first_deployed.clone(),
                last_deployed: now,
                deleted: String::new(),
                description: format!("Rollback to {to}"),
                status: rs::PENDING_ROLLBACK.into(),
                notes: to_rel.info.notes.clone(),
            },
            chart: to_rel.chart.clone(),
            config: to_rel.config.clone(),
            manifest: to_rel.manifest.clone(),
            hooks: to_rel.hooks.clone(),
            version,
            namespace: target.namespace.clone(),
            apply_method: record::APPLY_METHOD_SSA.into(),
        };
        self.write(backend, target, &rel).await?;
        let rb = spec.rollback.clone().unwrap_or_default();
        let mut notes = Vec::new();
        let mut changes = Vec::new();
        let mut result = Ok(());
        if !rb.disable_hooks {
            result = self
                .hooks(
                    backend,
                    target,
                    &mut rel,
                    hooks::PRE_ROLLBACK,
                    timeout,
                    &mut notes,
                )
                .await;
        }
        if result.is_ok() {
            result = self
                .apply_all(backend, &objs, &mut changes, rb.force || rb.recreate)
                .await;
        }
        if result.is_ok() {
            if let Some(c) = &current {
                let keep = ids(&objs);
                let gone: Vec<ObjectRef> = release_objects(&c.manifest, target)
                    .unwrap_or_default()
                    .iter()
                    .map(|o| o.object_ref())
                    .filter(|r| !keep.contains(r))
                    .collect();
                result = self.delete_all(backend, gone).await.map(|_| ());
            }
        }
        if result.is_ok() && !rb.disable_wait {
            result = self.wait(backend, &objs, timeout).await;
        }
        if result.is_ok() && !rb.disable_hooks {
            result = self
                .hooks(
                    backend,
                    target,
                    &mut rel,
                    hooks::POST_ROLLBACK,
                    timeout,
                    &mut notes,
                )
                .await;
        }
        match result {
            Ok(()) => {
                // Helm's rollback supersedes the current record and every deployed one.
                for mut r in history {
                    if r.info.status == rs::DEPLOYED
                        || Some(r.version) == current.as_ref().map(|c| c.version)
                    {
                        r.info.status = rs::SUPERSEDED.into();
                        self.write(backend, target, &r).await?;
                    }
                }
                rel.info.status = rs::DEPLOYED.into();
                self.write(backend, target, &rel).await?;
                self.prune_history(
                    backend,
                    target,
                    spec.max_history.unwrap_or(DEFAULT_MAX_HISTORY),
                )
                .await;
                let mut info = record::info_of(&rel);
                info.messages = notes;
                Ok(info)
            }
            Err(mut e) => {
                rel.info.status = rs::FAILED.into();
                rel.info.description = format!("Rollback {:?} failed: {}", target.name, e.message);
                self.write(backend, target, &rel).await?;
                e.release = Some(Box::new(record::info_of(&rel)));
                Err(e)
            }
        }
    }

    async fn uninstall(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        keep_history: bool,
        spec: &HelmReleaseSpec,
        timeout: Duration,
    ) -> Result<Vec<ObjectRef>, ReleaseError> {
        let history = self.records(backend, target).await?;
        let Some(mut latest) = history.last().cloned() else {
            return Ok(Vec::new());
        };
        let un = spec.uninstall.clone().unwrap_or_default();
        let timeout = un.timeout.as_ref().map(|t| t.duration()).unwrap_or(timeout);
        let propagation = spec
            .deletion_propagation()
            .map_err(|m| err(ReleaseErrorKind::Apply, m))?;
        let mut notes = Vec::new();
        if !un.disable_hooks {
            self.hooks(
                backend,
                target,
                &mut latest,
                hooks::PRE_DELETE,
                timeout,
                &mut notes,
            )
            .await?;
        }
        // The latest record says what is there now; a deployed one underneath a failed
        // attempt may still own objects the attempt did not touch.
        let mut refs: Vec<ObjectRef> = Vec::new();
        let mut seen = HashSet::new();
        let deployed = history.iter().rev().find(|r| r.info.status == rs::DEPLOYED);
        for r in std::iter::once(&latest).chain(deployed) {
            for o in release_objects(&r.manifest, target).unwrap_or_default() {
                let oref = o.object_ref();
                if seen.insert(oref.clone()) {
                    refs.push(oref);
                }
            }
        }
        // Helm's `--cascade`: what happens to the dependents of what goes (a Deployment's
        // ReplicaSets, ...).
        let deleted = self
            .delete_all_with(backend, refs, &DeleteOptions::propagation(propagation))
            .await?;
        // Helm's `--wait` (Flux waits unless `disableWait`): until what was deleted is gone. A
        // timeout does not stop the uninstall; it fails it once the rest is done, as in Helm.
        let mut errors = Vec::new();
        if !un.disable_wait {
            if let Err(e) = wait_until_deleted(backend, &deleted, timeout, self.poll).await {
                errors.push(e);
            }
        }
        if !un.disable_hooks {
            self.hooks(
                backend,
                target,
                &mut latest,
                hooks::POST_DELETE,
                timeout,
                &mut notes,
            )
            .await?;
        }
        if keep_history {
            let mut l = latest;
            l.info.status = rs::UNINSTALLED.into();
            l.info.deleted = trueup_core::time::now_rfc3339();
            l.info.description = "Uninstallation complete".into();
            self.write(backend, target, &l).await?;
        } else {
            for r in &history {
                let sref = ObjectRef::new(
                    "",
                    "Secret",
                    &target.storage_namespace,
                    &record::secret_name(&r.name, r.version),
                );
                backend
                    .delete(&sref)
                    .await
                    .map_err(|e| storage_err(format!("deleting release record: {e}")))?;
            }
        }
        if !errors.is_empty() {
            return Err(err(
                ReleaseErrorKind::Apply,
                format!(
                    "uninstallation completed with {} error(s): {}",
                    errors.len(),
                    errors.join("; ")
                ),
            ));
        }
        Ok(deleted)
    }

    async fn test(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        spec: &HelmReleaseSpec,
        timeout: Duration,
    ) -> Result<ReleaseInfo, ReleaseError> {
        let history = self.records(backend, target).await?;
        let Some(mut rel) = history
            .into_iter()
            .rev()
            .find(|r| r.info.status == rs::DEPLOYED)
        else {
            return Err(storage_err(format!(
                "release {} has no deployed revision to test",
                target.name
            )));
        };
        let filters = spec
            .test
            .as_ref()
            .map(|t| t.filters.clone())
            .unwrap_or_default();
        // Flux's filters: names with exclude=false are the only tests run (when any), names
        // with exclude=true are never run.
        let only = move |h: &hooks::Hook| {
            let includes: Vec<&str> = filters
                .iter()
                .filter(|f| !f.exclude)
                .map(|f| f.name.as_str())
                .collect();
            (includes.is_empty() || includes.contains(&h.name.as_str()))
                && !filters.iter().any(|f| f.exclude && f.name == h.name)
        };
        // Test runs of an earlier test step do not count for this one.
        for h in rel.hooks.iter_mut().filter(|h| h.has_event(hooks::TEST)) {
            h.last_run = hooks::HookExecution::default();
        }
        let ran = hooks::run(
            backend,
            &mut rel.hooks,
            hooks::TEST,
            &target.namespace,
            timeout,
            self.poll,
            &only,
        )
        .await;
        self.write(backend, target, &rel).await?;
        ran.map_err(|mut e| {
            e.release = Some(Box::new(record::info_of(&rel)));
            e
        })?;
        Ok(record::info_of(&rel))
    }

    async fn drift(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        spec: &HelmReleaseSpec,
        correct: bool,
    ) -> Result<Vec<String>, ReleaseError> {
        let history = self.records(backend, target).await?;
        let Some(rel) = history.iter().rev().find(|r| r.info.status == rs::DEPLOYED) else {
            return Ok(Vec::new());
        };
        let rules = spec
            .drift_detection
            .as_ref()
            .map(|d| d.ignore.clone())
            .unwrap_or_default();
        let objs = release_objects(&rel.manifest, target).map_err(storage_err)?;
        let dry = ApplyOptions {
            field_manager: "helm".into(),
            dry_run: true,
            force_conflicts: true,
            ..Default::default()
        };
        let fix = ApplyOptions {
            dry_run: false,
            ..dry.clone()
        };
        let mut out = Vec::new();
        for o in objs {
            let r = o.object_ref();
            let ignore = drift::ignored_paths(&rules, &o);
            let live = backend
                .get(&r)
                .await
                .map_err(|e| err(ReleaseErrorKind::Apply, format!("{r}: {e}")))?;
            let (line, desired) = match live {
                None => (format!("{r}: missing"), o),
                Some(live) => {
                    let (_, would) = backend
                        .apply(&o, &dry)
                        .await
                        .map_err(|e| err(ReleaseErrorKind::Apply, format!("{r}: dry-run: {e}")))?;
                    let paths = drift::without_ignored(
                        drift::diff(&Value::Object(live.0.clone()), &Value::Object(would.0)),
                        &ignore,
                    );
                    if paths.is_empty() {
                        continue;
                    }
                    let mut desired = o;
                    drift::keep_live(&mut desired, &live, &ignore);
                    (format!("{r}: {}", paths.join(", ")), desired)
                }
            };
            if correct {
                backend
                    .apply(&desired, &fix)
                    .await
                    .map_err(|e| err(ReleaseErrorKind::Apply, format!("correcting {r}: {e}")))?;
            }
            out.push(line);
        }
        Ok(out)
    }

    async fn mark_failed(
        &self,
        backend: &dyn Backend,
        target: &ReleaseTarget,
        version: i64,
        description: &str,
    ) -> Result<(), ReleaseError> {
        let history = self.records(backend, target).await?;
        let Some(mut r) = history.into_iter().find(|r| r.version == version) else {
            return Ok(());
        };
        r.info.status = rs::FAILED.into();
        r.info.description = description.to_string();
        self.write(backend, target, &r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_renderer_images_and_json6902() {
        let manifest = "---\n# Source: c/templates/d.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.25\n\n";
        let prs: Vec<trueup_core::api::helm::PostRenderer> = serde_yaml::from_str(
            r#"
- kustomize:
    images:
    - {name: nginx, newName: registry.local/nginx, newTag: "1.27"}
- kustomize:
    patchesJson6902:
    - target: {kind: Deployment, name: web}
      patch:
      - {op: add, path: /spec/replicas, value: 3}
"#,
        )
        .unwrap();
        let out = post_render(manifest.into(), &prs).unwrap();
        let objs = parse_manifest(&out, "out").unwrap();
        assert_eq!(
            objs[0].0["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.local/nginx:1.27"
        );
        assert_eq!(objs[0].0["spec"]["replicas"], 3);
        // No post-renderers: the manifest is left as rendered.
        assert_eq!(post_render(manifest.into(), &[]).unwrap(), manifest);
    }
}
