//! The HelmChart reconciler (source.toolkit.fluxcd.io/v1 HelmChart): a chart from a
//! HelmRepository (an HTTP index or `type: oci`, fetched through a [`Source`]) or from a path in
//! a GitRepository's artifact, with `valuesFiles` merged into its `values.yaml`, stored as the
//! chart archive; the artifact's revision is the chart version, as in Flux.

use super::chartbuild::{self, build_reason, BuildOptions, Built};
use super::git::read_credentials;
use super::helmrelease::ChartSpecFn;
use super::{invalid_spec, Outcome, Reconciler, Schedule, Verdict};
use crate::api::source::{HelmChartSpec, HelmRepositorySpec};
use crate::api::{from_object, ApiError, FluxKind, HelmChart, Resource};
use crate::event::{Event, Severity};
use crate::object::{Object, ObjectRef};
use crate::status::{reason, Condition, ConditionStatus, Status, ARTIFACT_IN_STORAGE};
use crate::storage::ArtifactStore;
use crate::traits::source::{
    ChartDependencyFetcher, ChartDependencyRequest, Credentials, SourceErrorKind, SourceRequest,
};
use crate::traits::{Backend, ListParams, Source};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Flux's reasons for a HelmChart.
pub mod chart_reason {
    pub const CHART_PULL_SUCCEEDED: &str = "ChartPullSucceeded";
    pub const CHART_PACKAGE_SUCCEEDED: &str = "ChartPackageSucceeded";
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    pub const UNSUPPORTED_SOURCE_KIND: &str = "UnsupportedSourceKind";
    pub const NO_SOURCE_ARTIFACT: &str = "NoSourceArtifact";
}

/// The status fields only a HelmChart has (kept in `Status::extra`).
pub const OBSERVED_CHART_NAME: &str = "observedChartName";
pub const OBSERVED_SOURCE_ARTIFACT_REVISION: &str = "observedSourceArtifactRevision";
pub const OBSERVED_VALUES_FILES: &str = "observedValuesFiles";

/// Artifact metadata: the HelmChart generation the artifact was built for. The runtime records
/// every generation it ran as observed, failed or not; this tells a HelmRelease that a chart
/// whose latest spec failed to build is not ready (Flux leaves `observedGeneration` behind).
pub const ARTIFACT_GENERATION: &str = "helmChartGeneration";

/// Flux's default timeout of a HelmRepository.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// A HelmChart without an interval (a hand-written one) is checked this often.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// Reconciles HelmChart objects. `source` fetches charts from HelmRepositories (both types);
/// `chart_spec` builds its spec from the repository and the chart (core names no concrete
/// source). Charts from GitRepositories are read from the repository's stored artifact; their
/// dependencies from chart repositories come through the [`ChartDependencyFetcher`] given with
/// [`HelmChartReconciler::with_dependency_fetcher`] (without one they must be vendored).
pub struct HelmChartReconciler<S: Source> {
    source: S,
    store: ArtifactStore,
    chart_spec: ChartSpecFn<S::Spec>,
    dependencies: Option<Arc<dyn ChartDependencyFetcher>>,
}

impl<S: Source> HelmChartReconciler<S> {
    pub fn new(source: S, store: ArtifactStore, chart_spec: ChartSpecFn<S::Spec>) -> Self {
        HelmChartReconciler {
            source,
            store,
            chart_spec,
            dependencies: None,
        }
    }

    /// Fetches the dependencies of charts from GitRepositories that `Chart.yaml` takes from
    /// HTTP or OCI chart repositories, as source-controller's dependency manager does.
    pub fn with_dependency_fetcher(mut self, fetcher: Arc<dyn ChartDependencyFetcher>) -> Self {
        self.dependencies = Some(fetcher);
        self
    }
}

/// `secretRef` and `certSecretRef` of a HelmRepository as one set of credentials (the Secrets'
/// keys do not overlap in practice; on a clash the credentials Secret wins).
pub async fn read_repository_credentials(
    backend: &dyn Backend,
    namespace: &str,
    spec: &HelmRepositorySpec,
) -> Result<Option<Credentials>, String> {
    let creds = read_credentials(backend, namespace, spec.secret_ref.as_ref()).await?;
    let certs = read_credentials(backend, namespace, spec.cert_secret_ref.as_ref()).await?;
    Ok(match (creds, certs) {
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => Some(c),
        (Some(mut c), Some(certs)) => {
            for (k, v) in certs.0 {
                c.0.entry(k).or_insert(v);
            }
            Some(c)
        }
    })
}

/// Redacts a Secret's values from a message (see [`Credentials::redact`]).
pub fn redact_credentials(creds: Option<&Credentials>, msg: &str) -> String {
    creds.map_or_else(|| msg.to_string(), |c| c.redact(msg))
}

/// The hex of a Git revision (`main@sha1:<hex>`, `sha1:<hex>`, `<hex>`, `main/<hex>`).
fn revision_hash(rev: &str) -> &str {
    let r = rev.rsplit_once('@').map_or(rev, |(_, d)| d);
    let r = r.rsplit_once(':').map_or(r, |(_, h)| h);
    r.rsplit_once('/').map_or(r, |(_, h)| h)
}

/// A failed build as an outcome.
struct Failure {
    reason: String,
    message: String,
    stalled: bool,
    waiting: bool,
}

impl Failure {
    fn new(reason: &str, message: impl Into<String>, stalled: bool) -> Self {
        Failure {
            reason: reason.into(),
            message: message.into(),
            stalled,
            waiting: false,
        }
    }

    fn build(e: chartbuild::BuildError) -> Self {
        let prefix = match e.reason {
            build_reason::INVALID_CHART_REFERENCE => "invalid chart reference",
            build_reason::CHART_PULL => "chart pull error",
            build_reason::VALUES_FILES => "values files error",
            build_reason::METADATA_PATCH => "chart metadata patch error",
            build_reason::DEPENDENCY_BUILD => "dependency build error",
            _ => "chart package error",
        };
        Failure::new(
            e.reason,
            format!("{prefix}: {}", e.message),
            e.is_persistent(),
        )
    }
}

/// The result of a build: what to store and what the status records.
struct Build {
    built: Built,
    source_revision: Option<String>,
}

impl<S> HelmChartReconciler<S>
where
    S: Source,
    S::Spec: Send + Sync,
{
    async fn build_from_helm_repository(
        &self,
        obj: &Object,
        chart: &HelmChart,
        status: &Status,
        backend: &dyn Backend,
        opts: BuildOptions,
    ) -> Result<Option<Build>, Failure> {
        let ns = chart.namespace().to_string();
        let sref = &chart.spec.source_ref;
        let repo_ref = FluxKind::HelmRepository.ref_to(&ns, &sref.name);
        let repo_obj = match backend.get(&repo_ref).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Err(Failure::new(
                    chart_reason::SOURCE_UNAVAILABLE,
                    format!(
                        "failed to get source: HelmRepository '{ns}/{}' not found",
                        sref.name
                    ),
                    false,
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    chart_reason::SOURCE_UNAVAILABLE,
                    format!("failed to get source: {e}"),
                    false,
                ))
            }
        };
        let repo: Resource<HelmRepositorySpec> = from_object(&repo_obj).map_err(|e| {
            Failure::new(
                chart_reason::SOURCE_UNAVAILABLE,
                format!("failed to get source: {e}"),
                false,
            )
        })?;
        let creds = read_repository_credentials(backend, &ns, &repo.spec)
            .await
            .map_err(|m| Failure::new(reason::AUTHENTICATION_FAILED, m, false))?;
        let timeout = repo
            .spec
            .timeout
            .as_ref()
            .map(|t| t.duration())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT);
        let spec = (self.chart_spec)(repo.spec.clone(), chart.spec.clone());
        let me = obj.object_ref();
        let req = SourceRequest {
            object: &me,
            spec: &spec,
            credentials: creds.as_ref(),
            timeout,
        };
        let src_err = |e: crate::traits::SourceError| {
            let msg = redact_credentials(creds.as_ref(), &e.message);
            match e.kind {
                SourceErrorKind::Auth => Failure::new(reason::AUTHENTICATION_FAILED, msg, false),
                SourceErrorKind::InvalidSpec => Failure::new(
                    build_reason::INVALID_CHART_REFERENCE,
                    format!("invalid chart reference: {msg}"),
                    true,
                ),
                SourceErrorKind::NotFound => Failure::new(
                    build_reason::INVALID_CHART_REFERENCE,
                    format!("invalid chart reference: {msg}"),
                    true,
                ),
                _ => Failure::new(
                    build_reason::CHART_PULL,
                    format!("chart pull error: {msg}"),
                    false,
                ),
            }
        };
        let resolved = self.source.resolve(&req).await.map_err(src_err)?;
        let version = match &opts.version_metadata {
            Some(m) => chartbuild::with_metadata(&resolved.revision, m),
            None => resolved.revision.clone(),
        };
        if self.up_to_date(obj, status, &version) {
            return Ok(None);
        }
        let tmp = tempfile::tempdir().map_err(|e| {
            Failure::new(
                build_reason::CHART_PULL,
                format!("failed to create a working directory: {e}"),
                false,
            )
        })?;
        self.source
            .fetch(&req, &resolved, tmp.path())
            .await
            .map_err(src_err)?;
        let shown = format!(
            "chart '{}' version '{}'",
            chart.spec.chart, resolved.revision
        );
        let tgz = std::fs::read_dir(tmp.path())
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .and_then(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                Failure::new(
                    build_reason::CHART_PULL,
                    format!("chart pull error: the source fetched no chart archive for {shown}"),
                    false,
                )
            })?;
        let limits = self.store.limits();
        let built = tokio::task::spawn_blocking(move || {
            chartbuild::from_archive(tgz, &shown, &opts, &limits)
        })
        .await
        .map_err(|e| Failure::new(build_reason::CHART_PULL, e.to_string(), false))?
        .map_err(Failure::build)?;
        Ok(Some(Build {
            built,
            source_revision: None,
        }))
    }

    async fn build_from_git_repository(
        &self,
        obj: &Object,
        chart: &HelmChart,
        status: &Status,
        backend: &dyn Backend,
        mut opts: BuildOptions,
    ) -> Result<Option<Build>, Failure> {
        let ns = chart.namespace().to_string();
        let sref = &chart.spec.source_ref;
        let git_ref = FluxKind::GitRepository.ref_to(&ns, &sref.name);
        let git_obj = match backend.get(&git_ref).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Err(Failure::new(
                    chart_reason::SOURCE_UNAVAILABLE,
                    format!(
                        "failed to get source: GitRepository '{ns}/{}' not found",
                        sref.name
                    ),
                    false,
                ))
            }
            Err(e) => {
                return Err(Failure::new(
                    chart_reason::SOURCE_UNAVAILABLE,
                    format!("failed to get source: {e}"),
                    false,
                ))
            }
        };
        // Only the artifact matters: a spec that does not parse shows on the GitRepository.
        let source_artifact = Status::from_value(git_obj.status())
            .artifact
            .filter(|a| self.store.contains(a));
        let Some(source_artifact) = source_artifact else {
            let mut f = Failure::new(
                chart_reason::NO_SOURCE_ARTIFACT,
                format!(
                    "no artifact available for GitRepository source '{}'",
                    sref.name
                ),
                false,
            );
            f.waiting = true;
            return Err(f);
        };
        let strategy = chart
            .spec
            .reconcile_strategy
            .as_deref()
            .unwrap_or("ChartVersion");
        let mut meta = match strategy {
            "Revision" => Some(
                revision_hash(&source_artifact.revision)
                    .chars()
                    .take(12)
                    .collect::<String>(),
            ),
            _ => None,
        };
        if !opts.values_files.is_empty() {
            let g = obj.generation().to_string();
            meta = Some(match meta {
                Some(m) => format!("{m}.{g}"),
                None => g,
            });
        }
        opts.version_metadata = meta;
        opts.local_dependencies = true;
        let store = self.store.clone();
        let path = chart.spec.chart.clone();
        let a = source_artifact.clone();
        let (root, chart_dir) = tokio::task::spawn_blocking(move || {
            let root = store.unpacked(&a).map_err(|e| {
                Failure::new(
                    build_reason::CHART_PULL,
                    format!("failed to read source artifact: {e}"),
                    false,
                )
            })?;
            let dir = crate::paths::join_inside(&root, &path).map_err(|e| {
                Failure::new(
                    build_reason::INVALID_CHART_REFERENCE,
                    format!("invalid chart reference: spec.chart '{path}': {e}"),
                    true,
                )
            })?;
            if !dir.join("Chart.yaml").is_file() {
                return Err(Failure::new(
                    build_reason::INVALID_CHART_REFERENCE,
                    format!(
                        "invalid chart reference: no chart found at path '{path}' in the GitRepository artifact"
                    ),
                    true,
                ));
            }
            Ok((root, dir))
        })
        .await
        .map_err(|e| Failure::new(build_reason::CHART_PULL, e.to_string(), false))??;
        let shown = chart.spec.chart.clone();
        let version =
            chartbuild::local_version(&chart_dir, &shown, &opts).map_err(Failure::build)?;
        if self.up_to_date(obj, status, &version) {
            return Ok(None);
        }
        if let Some(fetcher) = self.dependencies.clone() {
            let (dir, s) = (chart_dir.clone(), shown.clone());
            let deps =
                tokio::task::spawn_blocking(move || chartbuild::remote_dependencies(&dir, &s))
                    .await
                    .map_err(|e| {
                        Failure::new(build_reason::DEPENDENCY_BUILD, e.to_string(), false)
                    })?
                    .map_err(Failure::build)?;
            if !deps.is_empty() {
                opts.fetched_dependencies = self
                    .fetch_dependencies(fetcher.as_ref(), chart, backend, &deps)
                    .await?;
            }
        }
        let built = tokio::task::spawn_blocking(move || {
            chartbuild::package_dir(&chart_dir, &root, &shown, &opts)
        })
        .await
        .map_err(|e| Failure::new(build_reason::CHART_PACKAGE, e.to_string(), false))?
        .map_err(Failure::build)?;
        Ok(Some(Build {
            built,
            source_revision: Some(source_artifact.revision),
        }))
    }

    /// Fetches the dependencies a chart from a source tree takes from chart repositories: each
    /// with the credentials and TLS settings of the HelmRepository of the chart's namespace whose
    /// URL matches the dependency's, else anonymously (as source-controller does).
    async fn fetch_dependencies(
        &self,
        fetcher: &dyn ChartDependencyFetcher,
        chart: &HelmChart,
        backend: &dyn Backend,
        deps: &[chartbuild::RemoteDependency],
    ) -> Result<Vec<chartbuild::FetchedDependency>, Failure> {
        let ns = chart.namespace().to_string();
        let whose = format!("HelmChart '{ns}/{}' ({})", chart.name(), chart.spec.chart);
        let params = ListParams {
            namespace: Some(ns.clone()),
            ..ListParams::kind(crate::api::SOURCE_GROUP, "HelmRepository")
        };
        let mut repos: Vec<(String, HelmRepositorySpec)> = backend
            .list(&params)
            .await
            .map_err(|e| {
                Failure::new(
                    build_reason::DEPENDENCY_BUILD,
                    format!("dependency build error: {whose}: listing HelmRepositories: {e}"),
                    false,
                )
            })?
            .iter()
            .filter(|o| o.namespace() == Some(ns.as_str()))
            .filter_map(|o| {
                let r: Resource<HelmRepositorySpec> = from_object(o).ok()?;
                Some((o.name().to_string(), r.spec))
            })
            .collect();
        repos.sort_by(|a, b| a.0.cmp(&b.0));
        let limits = self.store.limits();
        let mut out = Vec::new();
        for d in deps {
            let url = chartbuild::normalize_repository_url(&d.repository);
            let matching = repos
                .iter()
                .find(|(_, s)| chartbuild::normalize_repository_url(&s.url) == url);
            let what = format!(
                "{whose}: failed to add remote dependency '{}' version '{}'{} from '{}'{}",
                d.name,
                d.version,
                if d.locked { " (Chart.lock)" } else { "" },
                d.repository,
                matching
                    .map(|(n, _)| format!(" (HelmRepository '{ns}/{n}')"))
                    .unwrap_or_default()
            );
            let (spec, creds) = match matching {
                Some((_, spec)) => {
                    let creds = read_repository_credentials(backend, &ns, spec)
                        .await
                        .map_err(|m| {
                            Failure::new(
                                build_reason::DEPENDENCY_BUILD,
                                format!("dependency build error: {what}: {m}"),
                                false,
                            )
                        })?;
                    (spec.clone(), creds)
                }
                None => {
                    let mut v = serde_json::json!({"url": d.repository.trim()});
                    if url.starts_with("oci://") {
                        v["type"] = Value::String("oci".into());
                    }
                    let spec: HelmRepositorySpec = serde_json::from_value(v).map_err(|e| {
                        Failure::new(
                            build_reason::DEPENDENCY_BUILD,
                            format!("dependency build error: {what}: {e}"),
                            true,
                        )
                    })?;
                    (spec, None)
                }
            };
            let timeout = spec
                .timeout
                .as_ref()
                .map(|t| t.duration())
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_TIMEOUT);
            let req = ChartDependencyRequest {
                repository: d.repository.trim(),
                chart: &d.name,
                version: &d.version,
                repository_spec: &spec,
                credentials: creds.as_ref(),
                timeout,
                max_bytes: limits.max_archive_bytes,
            };
            let fetched = fetcher.fetch_dependency(&req).await.map_err(|e| {
                let cause = redact_credentials(creds.as_ref(), &e.message);
                // A version or chart that is not there, or a spec that cannot work, stays so
                // until something changes; the rest is retried.
                let persistent = matches!(
                    e.kind,
                    SourceErrorKind::NotFound | SourceErrorKind::InvalidSpec
                );
                Failure::new(
                    build_reason::DEPENDENCY_BUILD,
                    format!("dependency build error: {what}: {cause}"),
                    persistent,
                )
            })?;
            out.push(chartbuild::FetchedDependency {
                name: d.name.clone(),
                version: fetched.version,
                tgz: fetched.tgz,
            });
        }
        Ok(out)
    }

    /// The stored artifact already holds this version of this chart for this generation.
    fn up_to_date(&self, obj: &Object, status: &Status, version: &str) -> bool {
        status.observed_generation == obj.generation()
            && status.extra.contains_key(OBSERVED_CHART_NAME)
            && status
                .artifact
                .as_ref()
                .is_some_and(|a| a.revision == version && self.store.contains(a))
    }
}

#[async_trait]
impl<S> Reconciler for HelmChartReconciler<S>
where
    S: Source,
    S::Spec: Send + Sync,
{
    fn kind(&self) -> crate::object::GroupKind {
        FluxKind::HelmChart.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let chart: HelmChart = from_object(obj)?;
        let interval = chart
            .spec
            .interval
            .as_ref()
            .map(|i| i.duration())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_INTERVAL)
            .max(Duration::from_secs(1));
        let watches = match chart.spec.source_ref.kind.as_str() {
            "GitRepository" => {
                vec![FluxKind::GitRepository.ref_to(chart.namespace(), &chart.spec.source_ref.name)]
            }
            "HelmRepository" => {
                vec![FluxKind::HelmRepository.ref_to(chart.namespace(), &chart.spec.source_ref.name)]
            }
            _ => Vec::new(),
        };
        Ok(Schedule {
            interval,
            retry_interval: interval.min(Duration::from_secs(30)),
            timeout: Duration::from_secs(300),
            suspend: chart.spec.suspend,
            depends_on: Vec::new(),
            watches,
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let chart: HelmChart = match from_object(obj) {
            Ok(c) => c,
            Err(e) => return invalid_spec(obj, &e),
        };
        let status = Status::from_value(obj.status());
        let me = obj.object_ref();
        let generation = obj.generation();
        let sref = &chart.spec.source_ref;
        if sref
            .namespace
            .as_deref()
            .is_some_and(|n| !n.is_empty() && n != chart.namespace())
        {
            return Outcome::failed(
                obj,
                status,
                reason::INVALID_SPEC,
                format!(
                    "spec.sourceRef.namespace: a HelmChart reads sources of its own namespace '{}' only",
                    chart.namespace()
                ),
                true,
            );
        }
        if chart.spec.verify.is_some() {
            return Outcome::failed(
                obj,
                status,
                reason::INVALID_SPEC,
                "spec.verify: signature verification of charts is not supported yet".into(),
                true,
            );
        }
        let opts = BuildOptions {
            values_files: chartbuild::effective_values_files(
                chart.spec.values_file.as_deref(),
                &chart.spec.values_files,
            ),
            ignore_missing_values_files: chart.spec.ignore_missing_values_files,
            version_metadata: None,
            local_dependencies: false,
            fetched_dependencies: Vec::new(),
        };
        let result = match sref.kind.as_str() {
            "HelmRepository" => {
                let mut opts = opts;
                if !opts.values_files.is_empty() {
                    opts.version_metadata = Some(generation.to_string());
                }
                self.build_from_helm_repository(obj, &chart, &status, backend, opts)
                    .await
            }
            "GitRepository" => {
                self.build_from_git_repository(obj, &chart, &status, backend, opts)
                    .await
            }
            "Bucket" => Err(Failure::new(
                chart_reason::UNSUPPORTED_SOURCE_KIND,
                format!(
                    "failed to get source: Bucket '{}' is not supported: trueup has no Bucket source; use a GitRepository, HelmRepository or OCIRepository",
                    sref.name
                ),
                true,
            )),
            other => Err(Failure::new(
                chart_reason::UNSUPPORTED_SOURCE_KIND,
                format!(
                    "failed to get source: unsupported source kind '{other}', must be one of: [HelmRepository GitRepository Bucket]"
                ),
                true,
            )),
        };
        let build = match result {
            Ok(b) => b,
            Err(f) if f.waiting => return Outcome::waiting(obj, status, &f.reason, f.message),
            Err(f) => return Outcome::failed(obj, status, &f.reason, f.message, f.stalled),
        };
        let Some(build) = build else {
            let version = status
                .artifact
                .as_ref()
                .map(|a| a.revision.clone())
                .unwrap_or_default();
            let name = status
                .extra
                .get(OBSERVED_CHART_NAME)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // The message of the build that made the stored artifact still describes it.
            let message = status
                .condition(crate::status::READY)
                .filter(|c| c.status == ConditionStatus::True && !c.message.is_empty())
                .map(|c| c.message.clone())
                .unwrap_or_else(|| format!("pulled '{name}' chart with version '{version}'"));
            return Outcome::unchanged(obj, status, message);
        };
        let Build {
            built,
            source_revision,
        } = build;
        let store = self.store.clone();
        let (tgz, version) = (built.tgz.clone(), built.version.clone());
        let owner = me.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut a = store.store_bytes(&owner, &tgz, &version)?;
            a.metadata
                .insert(ARTIFACT_GENERATION.into(), generation.to_string());
            let _ = store.gc(&owner, &a);
            Ok::<_, crate::storage::StorageError>(a)
        })
        .await;
        let artifact = match stored {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                return Outcome::failed(
                    obj,
                    status,
                    "StorageOperationFailed",
                    format!("unable to copy Helm chart to storage: {e}"),
                    false,
                )
            }
            Err(e) => {
                return Outcome::failed(
                    obj,
                    status,
                    "StorageOperationFailed",
                    format!("unable to copy Helm chart to storage: {e}"),
                    false,
                )
            }
        };
        let mut status = status;
        let now = crate::time::now_rfc3339();
        let changed = status.artifact.as_ref().map(|a| &a.digest) != Some(&artifact.digest);
        let why = if built.packaged {
            chart_reason::CHART_PACKAGE_SUCCEEDED
        } else {
            chart_reason::CHART_PULL_SUCCEEDED
        };
        let message = built.summary();
        status.artifact = Some(artifact.clone());
        status.extra.insert(
            OBSERVED_CHART_NAME.into(),
            Value::String(built.name.clone()),
        );
        match source_revision {
            Some(r) => {
                status
                    .extra
                    .insert(OBSERVED_SOURCE_ARTIFACT_REVISION.into(), Value::String(r));
            }
            None => {
                status.extra.remove(OBSERVED_SOURCE_ARTIFACT_REVISION);
            }
        }
        if chart.spec.ignore_missing_values_files {
            status.extra.insert(
                OBSERVED_VALUES_FILES.into(),
                Value::Array(
                    built
                        .values_files
                        .iter()
                        .cloned()
                        .map(Value::String)
                        .collect(),
                ),
            );
        } else {
            status.extra.remove(OBSERVED_VALUES_FILES);
        }
        status.observed_generation = generation;
        status.mark_ready(why, message.clone(), generation, &now);
        status.set_condition(
            Condition::new(
                ARTIFACT_IN_STORAGE,
                ConditionStatus::True,
                why,
                message.clone(),
            ),
            generation,
            &now,
        );
        let mut out = Outcome::new(Verdict::Ready, status);
        if changed {
            out.events.push(
                Event::new(me, Severity::Info, why, message).with_revision(artifact.revision),
            );
        }
        out
    }
}

/// The name helm-controller gives the HelmChart of a HelmRelease: `<namespace>-<name>`.
pub fn chart_name_for(hr_namespace: &str, hr_name: &str) -> String {
    format!("{hr_namespace}-{hr_name}")
}

/// The labels marking a HelmChart as owned by a HelmRelease (fluxcd/pkg/ssa owner labels).
pub const OWNER_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const OWNER_NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";

/// The HelmChart object a HelmRelease's `spec.chart` template describes, as helm-controller
/// builds it: version `*` by default, the release's interval when the template has none.
pub fn chart_from_template(
    hr_namespace: &str,
    hr_name: &str,
    hr_interval: &str,
    tpl: &crate::api::helm::HelmChartTemplate,
) -> Object {
    let spec: &HelmChartSpec = &tpl.spec;
    let ns = spec
        .source_ref
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| hr_namespace.to_string());
    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    if let Some(m) = &tpl.metadata {
        for (k, v) in &m.labels {
            labels.insert(k.clone(), Value::String(v.clone()));
        }
        for (k, v) in &m.annotations {
            annotations.insert(k.clone(), Value::String(v.clone()));
        }
    }
    labels.insert(OWNER_NAME_LABEL.into(), Value::String(hr_name.into()));
    labels.insert(
        OWNER_NAMESPACE_LABEL.into(),
        Value::String(hr_namespace.into()),
    );
    let mut s = serde_json::Map::new();
    s.insert("chart".into(), Value::String(spec.chart.clone()));
    s.insert(
        "version".into(),
        Value::String(
            spec.version
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "*".into()),
        ),
    );
    s.insert(
        "sourceRef".into(),
        serde_json::json!({"kind": spec.source_ref.kind, "name": spec.source_ref.name}),
    );
    s.insert(
        "interval".into(),
        Value::String(
            spec.interval
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_else(|| hr_interval.to_string()),
        ),
    );
    s.insert(
        "reconcileStrategy".into(),
        Value::String(
            spec.reconcile_strategy
                .clone()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "ChartVersion".into()),
        ),
    );
    if !spec.values_files.is_empty() || spec.values_file.is_some() {
        let mut all: Vec<String> = Vec::new();
        if let Some(f) = spec.values_file.as_deref().filter(|f| !f.is_empty()) {
            all.push(f.into());
        }
        all.extend(spec.values_files.iter().cloned());
        s.insert(
            "valuesFiles".into(),
            Value::Array(all.into_iter().map(Value::String).collect()),
        );
    }
    if spec.ignore_missing_values_files {
        s.insert("ignoreMissingValuesFiles".into(), Value::Bool(true));
    }
    if let Some(v) = &spec.verify {
        if let Ok(v) = serde_json::to_value(v) {
            s.insert("verify".into(), v);
        }
    }
    let mut meta = serde_json::Map::new();
    meta.insert(
        "name".into(),
        Value::String(chart_name_for(hr_namespace, hr_name)),
    );
    meta.insert("namespace".into(), Value::String(ns));
    meta.insert("labels".into(), Value::Object(labels));
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    let mut o = serde_json::Map::new();
    o.insert(
        "apiVersion".into(),
        Value::String(format!("{}/v1", crate::api::SOURCE_GROUP)),
    );
    o.insert("kind".into(), Value::String("HelmChart".into()));
    o.insert("metadata".into(), Value::Object(meta));
    o.insert("spec".into(), Value::Object(s));
    Object(o)
}

/// Whether a HelmChart object is ready for use, as helm-controller checks a source: its latest
/// generation reconciled, not stalled, with an artifact. The message says why not.
pub fn source_readiness(obj: &Object) -> Result<crate::status::Artifact, String> {
    let st = Status::from_value(obj.status());
    let name = format!(
        "{} '{}/{}'",
        obj.kind(),
        obj.namespace().unwrap_or_default(),
        obj.name()
    );
    let ready = st.condition(crate::status::READY);
    if obj.generation() != st.observed_generation {
        let msg = match ready {
            Some(c) if c.status == ConditionStatus::False => c.message.clone(),
            _ => "latest generation of object has not been reconciled".into(),
        };
        return Err(format!("{name} is not ready: {msg}"));
    }
    if let Some(c) = st
        .condition(crate::status::STALLED)
        .filter(|c| c.status == ConditionStatus::True)
    {
        return Err(format!("{name} is not ready: {}", c.message));
    }
    if let Some(c) = ready.filter(|c| c.status == ConditionStatus::False) {
        let built_for = st
            .artifact
            .as_ref()
            .and_then(|a| a.metadata.get(ARTIFACT_GENERATION))
            .and_then(|g| g.parse::<i64>().ok());
        if st.artifact.is_none() || built_for.is_some_and(|g| g != obj.generation()) {
            return Err(format!("{name} is not ready: {}", c.message));
        }
    }
    st.artifact
        .ok_or_else(|| format!("{name} is not ready: does not have an artifact"))
}

/// The object reference of the HelmChart a HelmRelease with a chart template owns.
pub fn template_chart_ref(hr_namespace: &str, hr_name: &str, tpl_ns: Option<&str>) -> ObjectRef {
    FluxKind::HelmChart.ref_to(
        tpl_ns.filter(|n| !n.is_empty()).unwrap_or(hr_namespace),
        &chart_name_for(hr_namespace, hr_name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::reconcile::helmrelease::{
        HelmReleaseReconciler, ReleaseError, ReleaseInfo, ReleaseManager, ReleaseRequest,
        ReleaseTarget, SOURCE_NOT_READY,
    };
    use crate::traits::source::{FetchedRevision, SourceError};
    use crate::traits::ApplyOptions;
    use serde_json::json;
    use std::path::Path;
    use std::sync::Mutex;

    type Pair = (HelmRepositorySpec, HelmChartSpec);

    /// A Helm repository in memory: chart versions it holds, fetches counted, one failure
    /// to hand out.
    #[derive(Default)]
    struct FakeRepo {
        versions: Vec<&'static str>,
        fetches: Mutex<usize>,
        fail: Mutex<Option<SourceError>>,
    }

    fn chart_tgz(version: &str) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("app")).unwrap();
        std::fs::write(
            d.path().join("app/Chart.yaml"),
            format!("apiVersion: v2\nname: app\nversion: {version}\n"),
        )
        .unwrap();
        std::fs::write(d.path().join("app/values.yaml"), "a: 1\n").unwrap();
        std::fs::write(d.path().join("app/values-prod.yaml"), "a: 2\n").unwrap();
        crate::storage::pack_dir(d.path(), &crate::storage::keep_all).unwrap()
    }

    #[async_trait]
    impl Source for FakeRepo {
        type Spec = Pair;

        async fn resolve(
            &self,
            req: &SourceRequest<'_, Pair>,
        ) -> Result<FetchedRevision, SourceError> {
            if let Some(e) = self.fail.lock().unwrap().take() {
                return Err(e);
            }
            let want = req.spec.1.version.clone().unwrap_or_default();
            self.versions
                .iter()
                .find(|v| want == "*" || **v == want)
                .map(|v| FetchedRevision {
                    revision: v.to_string(),
                    metadata: Default::default(),
                })
                .ok_or_else(|| {
                    SourceError::new(
                        SourceErrorKind::NotFound,
                        format!("no 'app' chart with version matching '{want}' found"),
                    )
                })
        }

        async fn fetch(
            &self,
            _req: &SourceRequest<'_, Pair>,
            rev: &FetchedRevision,
            dir: &Path,
        ) -> Result<FetchedRevision, SourceError> {
            *self.fetches.lock().unwrap() += 1;
            std::fs::write(
                dir.join(format!("app-{}.tgz", rev.revision)),
                chart_tgz(&rev.revision),
            )
            .unwrap();
            Ok(rev.clone())
        }
    }

    fn obj(v: serde_json::Value) -> Object {
        Object::from_value(v).unwrap()
    }

    fn chart(spec: serde_json::Value) -> Object {
        obj(
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
            "metadata": {"name": "app", "namespace": "flux-system", "generation": 2}, "spec": spec}),
        )
    }

    fn rec(store: &ArtifactStore, repo: FakeRepo) -> HelmChartReconciler<FakeRepo> {
        HelmChartReconciler::new(repo, store.clone(), |r, c| (r, c))
    }

    async fn backend_with_repo() -> MemoryBackend {
        let b = MemoryBackend::new();
        let repo = obj(
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
            "metadata": {"name": "charts", "namespace": "flux-system"},
            "spec": {"url": "oci://r.example/charts", "type": "oci", "secretRef": {"name": "creds"}}}),
        );
        b.apply(&repo, &ApplyOptions::default()).await.unwrap();
        let secret = obj(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "flux-system"},
            "stringData": {"username": "bot", "password": "hunter2-secret"}}));
        b.apply(&secret, &ApplyOptions::default()).await.unwrap();
        b
    }

    fn ready(out: &Outcome) -> Condition {
        out.status.condition(crate::status::READY).cloned().unwrap()
    }

    #[tokio::test]
    async fn pulls_packages_with_values_files_and_skips_unchanged_versions() {
        let storage = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(storage.path()).unwrap();
        let r = rec(
            &store,
            FakeRepo {
                versions: vec!["1.0.0"],
                ..Default::default()
            },
        );
        let b = backend_with_repo().await;
        let o = chart(json!({"chart": "app", "version": "*", "interval": "5m",
            "sourceRef": {"kind": "HelmRepository", "name": "charts"}}));
        let sched = r.schedule(&o).unwrap();
        assert_eq!(sched.interval, Duration::from_secs(300));
        assert_eq!(
            sched.watches,
            vec![FluxKind::HelmRepository.ref_to("flux-system", "charts")]
        );
        let out = r.reconcile(&o, &b).await;
        assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
        assert_eq!(
            ready(&out).message,
            "pulled 'app' chart with version '1.0.0'"
        );
        assert_eq!(ready(&out).reason, chart_reason::CHART_PULL_SUCCEEDED);
        let a = out.status.artifact.clone().unwrap();
        assert_eq!(a.revision, "1.0.0");
        assert_eq!(
            std::fs::read(store.path_of(&a)).unwrap(),
            chart_tgz("1.0.0"),
            "kept as pulled"
        );
        assert_eq!(out.events.len(), 1);
        // Same version again: nothing fetched, no event.
        let mut o2 = o.clone();
        o2.0.insert("status".into(), out.status.to_value());
        let out2 = r.reconcile(&o2, &b).await;
        assert_eq!(out2.verdict, Verdict::Ready);
        assert!(out2.events.is_empty());
        assert_eq!(*r.source.fetches.lock().unwrap(), 1);

        // Values files: packaged, version + generation.
        let o3 = chart(json!({"chart": "app", "version": "*",
            "sourceRef": {"kind": "HelmRepository", "name": "charts"},
            "valuesFiles": ["values.yaml", "values-prod.yaml"]}));
        let out3 = r.reconcile(&o3, &b).await;
        assert_eq!(out3.status.artifact.as_ref().unwrap().revision, "1.0.0+2");
        assert_eq!(ready(&out3).reason, chart_reason::CHART_PACKAGE_SUCCEEDED);
        assert!(!out3.status.extra.contains_key(OBSERVED_VALUES_FILES));
    }

    #[tokio::test]
    async fn failures_name_the_problem() {
        let storage = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(storage.path()).unwrap();
        let r = rec(
            &store,
            FakeRepo {
                versions: vec!["1.0.0"],
                ..Default::default()
            },
        );
        let b = backend_with_repo().await;
        let missing = chart(json!({"chart": "app", "version": "9.x",
            "sourceRef": {"kind": "HelmRepository", "name": "charts"}}));
        let out = r.reconcile(&missing, &b).await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: true });
        assert_eq!(ready(&out).reason, "InvalidChartReference");
        assert!(
            ready(&out).message.contains("'9.x'"),
            "{}",
            ready(&out).message
        );

        *r.source.fail.lock().unwrap() = Some(SourceError::new(
            SourceErrorKind::Auth,
            "401 for bot:hunter2-secret",
        ));
        let any = chart(
            json!({"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        );
        let out = r.reconcile(&any, &b).await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: false });
        assert_eq!(ready(&out).reason, reason::AUTHENTICATION_FAILED);
        assert!(
            !ready(&out).message.contains("hunter2-secret"),
            "{}",
            ready(&out).message
        );
        assert!(!out.events[0].message.contains("hunter2-secret"));

        let bucket = chart(json!({"chart": "app", "sourceRef": {"kind": "Bucket", "name": "b"}}));
        let out = r.reconcile(&bucket, &b).await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: true });
        assert!(
            ready(&out).message.contains("Bucket 'b' is not supported"),
            "{}",
            ready(&out).message
        );
        let odd =
            chart(json!({"chart": "app", "sourceRef": {"kind": "OCIRepository", "name": "o"}}));
        let out = r.reconcile(&odd, &b).await;
        assert!(ready(&out)
            .message
            .contains("unsupported source kind 'OCIRepository'"));

        let no_repo =
            chart(json!({"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "gone"}}));
        let out = r.reconcile(&no_repo, &b).await;
        assert_eq!(ready(&out).reason, chart_reason::SOURCE_UNAVAILABLE);
        assert!(ready(&out)
            .message
            .contains("HelmRepository 'flux-system/gone' not found"));

        // A GitRepository without an artifact yet: waiting, not failing.
        let git = obj(
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "fleet", "namespace": "flux-system"},
            "spec": {"url": "https://git.example/fleet", "interval": "1m"}}),
        );
        b.apply(&git, &ApplyOptions::default()).await.unwrap();
        let from_git = chart(
            json!({"chart": "./charts/app", "sourceRef": {"kind": "GitRepository", "name": "fleet"}}),
        );
        let out = r.reconcile(&from_git, &b).await;
        assert_eq!(out.verdict, Verdict::Waiting);
        assert_eq!(ready(&out).reason, chart_reason::NO_SOURCE_ARTIFACT);
        let suspended = chart(
            json!({"chart": "app", "suspend": true, "sourceRef": {"kind": "HelmRepository", "name": "charts"}}),
        );
        assert!(r.schedule(&suspended).unwrap().suspend);
    }

    #[test]
    fn a_chart_whose_new_spec_failed_is_not_ready_but_a_transient_failure_is() {
        let mk = |generation: i64, built_for: i64, ready: &str| {
            obj(
                json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
                "metadata": {"name": "c", "namespace": "ns", "generation": generation},
                "status": {"observedGeneration": generation,
                    "artifact": {"path": "p", "url": "u", "revision": "1.0.0", "digest": "sha256:0",
                        "lastUpdateTime": "t", "metadata": {ARTIFACT_GENERATION: built_for.to_string()}},
                    "conditions": [{"type": "Ready", "status": ready, "reason": "AuthenticationFailed",
                        "message": "401 Unauthorized"}]}}),
            )
        };
        // The spec changed (generation 2) and its build failed: wait, and say why.
        assert_eq!(
            source_readiness(&mk(2, 1, "False")).unwrap_err(),
            "HelmChart 'ns/c' is not ready: 401 Unauthorized"
        );
        // The same spec failed again after a success: the artifact it has still serves.
        assert_eq!(
            source_readiness(&mk(2, 2, "False")).unwrap().revision,
            "1.0.0"
        );
        assert_eq!(
            source_readiness(&mk(2, 2, "True")).unwrap().revision,
            "1.0.0"
        );
    }

    /// A manager that is never reached: these cases stop before any release action.
    struct NoManager;

    #[async_trait]
    impl ReleaseManager for NoManager {
        async fn history(
            &self,
            _: &dyn Backend,
            _: &ReleaseTarget,
        ) -> Result<Vec<ReleaseInfo>, ReleaseError> {
            Ok(Vec::new())
        }
        async fn install(&self, _: ReleaseRequest<'_>) -> Result<ReleaseInfo, ReleaseError> {
            panic!("no install expected")
        }
        async fn upgrade(&self, _: ReleaseRequest<'_>) -> Result<ReleaseInfo, ReleaseError> {
            panic!("no upgrade expected")
        }
        async fn rollback(
            &self,
            _: &dyn Backend,
            _: &ReleaseTarget,
            _: i64,
            _: &crate::api::helm::HelmReleaseSpec,
            _: Duration,
        ) -> Result<ReleaseInfo, ReleaseError> {
            panic!("no rollback expected")
        }
        async fn uninstall(
            &self,
            _: &dyn Backend,
            _: &ReleaseTarget,
            _: bool,
            _: &crate::api::helm::HelmReleaseSpec,
            _: Duration,
        ) -> Result<Vec<ObjectRef>, ReleaseError> {
            Ok(Vec::new())
        }
        async fn test(
            &self,
            _: &dyn Backend,
            _: &ReleaseTarget,
            _: &crate::api::helm::HelmReleaseSpec,
            _: Duration,
        ) -> Result<ReleaseInfo, ReleaseError> {
            panic!("no test expected")
        }
        async fn drift(
            &self,
            _: &dyn Backend,
            _: &ReleaseTarget,
            _: &crate::api::helm::HelmReleaseSpec,
            _: bool,
        ) -> Result<Vec<String>, ReleaseError> {
            panic!("no drift detection expected")
        }
        async fn mark_failed(
            &self,
            _: &dyn Backend,
            _: &ReleaseTarget,
            _: i64,
            _: &str,
        ) -> Result<(), ReleaseError> {
            Ok(())
        }
    }

    fn release(spec: serde_json::Value) -> Object {
        obj(
            json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": "apps", "generation": 1}, "spec": spec}),
        )
    }

    #[tokio::test]
    async fn releases_create_their_chart_wait_for_it_and_delete_it() {
        let storage = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(storage.path()).unwrap();
        let hr_rec = HelmReleaseReconciler::new(NoManager, store);
        let b = MemoryBackend::new();
        let hr = release(json!({"interval": "7m", "chart": {
            "metadata": {"labels": {"team": "web"}},
            "spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"}}}}));
        let chart_ref = FluxKind::HelmChart.ref_to("flux-system", "apps-web");
        assert_eq!(
            hr_rec.schedule(&hr).unwrap().watches,
            vec![chart_ref.clone()]
        );
        let out = hr_rec.reconcile(&hr, &b).await;
        assert_eq!(out.verdict, Verdict::Waiting);
        assert_eq!(ready(&out).reason, SOURCE_NOT_READY);
        assert_eq!(
            ready(&out).message,
            "HelmChart 'flux-system/apps-web' is not ready: latest generation of object has not been reconciled"
        );
        let c = b.get(&chart_ref).await.unwrap().expect("HelmChart created");
        assert_eq!(c.label(OWNER_NAME_LABEL), Some("web"));
        assert_eq!(c.label(OWNER_NAMESPACE_LABEL), Some("apps"));
        assert_eq!(c.label("team"), Some("web"));
        assert_eq!(
            c.spec().unwrap(),
            &json!({"chart": "app", "version": "*", "interval": "7m", "reconcileStrategy": "ChartVersion",
                "sourceRef": {"kind": "HelmRepository", "name": "charts"}})
        );
        // Deleting the release deletes the chart it created.
        let events = hr_rec.finalize(&hr, &b).await;
        assert!(
            events.iter().any(|e| e.reason == "HelmChartDeleted"),
            "{events:?}"
        );
        assert!(b.get(&chart_ref).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn chart_refs_are_checked() {
        let storage = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(storage.path()).unwrap();
        let hr_rec = HelmReleaseReconciler::new(NoManager, store);
        let b = MemoryBackend::new();
        let check = |spec: serde_json::Value| release(spec);
        let out = hr_rec
            .reconcile(
                &check(
                    json!({"interval": "1m", "chartRef": {"kind": "GitRepository", "name": "x"}}),
                ),
                &b,
            )
            .await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: true });
        assert_eq!(
            ready(&out).message,
            "spec.chartRef.kind: unsupported kind 'GitRepository' (OCIRepository, HelmChart)"
        );
        let out = hr_rec
            .reconcile(&check(json!({"interval": "1m"})), &b)
            .await;
        assert!(
            ready(&out).message.contains("invalid Chart reference"),
            "{}",
            ready(&out).message
        );
        let out = hr_rec
            .reconcile(
                &check(
                    json!({"interval": "1m", "chartRef": {"kind": "HelmChart", "name": "nope"}}),
                ),
                &b,
            )
            .await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: false });
        assert_eq!(ready(&out).reason, reason::ARTIFACT_FAILED);
        assert_eq!(
            ready(&out).message,
            "could not get Source object: HelmChart 'apps/nope' not found"
        );
        // An OCIRepository that failed: the release waits and says why.
        let repo = obj(
            json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": "chart", "namespace": "apps", "generation": 1},
            "spec": {"url": "oci://r.example/chart", "interval": "1m"},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False",
                "reason": "OCIArtifactPullFailed", "message": "tag '1.0.0' not found"}]}}),
        );
        b.apply(&repo, &ApplyOptions::default()).await.unwrap();
        b.update_status(&repo.object_ref(), &repo.0["status"])
            .await
            .unwrap();
        let hr = check(
            json!({"interval": "1m", "chartRef": {"kind": "OCIRepository", "name": "chart"}}),
        );
        assert_eq!(
            hr_rec.schedule(&hr).unwrap().watches,
            vec![FluxKind::OciRepository.ref_to("apps", "chart")]
        );
        let out = hr_rec.reconcile(&hr, &b).await;
        assert_eq!(out.verdict, Verdict::Waiting);
        assert_eq!(
            ready(&out).message,
            "OCIRepository 'apps/chart' is not ready: tag '1.0.0' not found"
        );
    }
}
