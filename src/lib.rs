//! # trueup
//!
//! An embeddable GitOps reconciliation library: the objects Flux users keep in Git
//! (GitRepository, Kustomization, HelmRelease, Terraform, ...) are fetched, rendered and applied
//! by Rust code you can embed, to a Kubernetes cluster or to a plain directory.
//!
//! This crate re-exports the workspace's parts behind features:
//!
//! | module | crate | feature |
//! | --- | --- | --- |
//! | [`core`] | `trueup-core`: objects, API types, traits, runtime, reconcilers | always |
//! | `sources` | `trueup-sources`: Git (and more) sources | `sources` (default) |
//! | `appliers` | `trueup-appliers`: Kustomize overlay renderer and applier | `appliers` (default) |
//! | `local` | `trueup-local`: the embedded directory backend | `local` (default) |
//! | `notifiers` | `trueup-notifiers`: Alerts, Providers, webhook Receivers | `notifiers` (default) |
//! | `helm` | `trueup-gotmpl`: Go templates with Helm's functions, `helm template` | `helm` (default) |
//! | `kube` | `trueup-kube`: the Kubernetes backend | `kube` |
//!
//! ```no_run
//! # #[cfg(all(feature = "sources", feature = "appliers", feature = "local"))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use trueup::core::reconcile::{GitRepositoryReconciler, KustomizationReconciler};
//! use trueup::core::runtime::{CancellationToken, Runtime};
//! use trueup::core::storage::ArtifactStore;
//!
//! let backend = trueup::local::LocalBackend::open("./cluster")?;
//! let store = ArtifactStore::new(backend.state_dir().join("artifacts"))?;
//! let runtime = Runtime::builder(Arc::new(backend))
//!     .reconciler(GitRepositoryReconciler::new(trueup::sources::GitSource::default(), store.clone()))
//!     .reconciler(KustomizationReconciler::new(trueup::appliers::KustomizeApplier::default(), store))
//!     .build();
//! let summary = runtime.run_until_settled(CancellationToken::new()).await?;
//! println!("{} objects, all ready: {}", summary.len(), summary.iter().all(|s| s.is_ready()));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub use trueup_core as core;

#[cfg(feature = "appliers")]
pub use trueup_appliers as appliers;
#[cfg(feature = "helm")]
pub use trueup_gotmpl as helm;
#[cfg(feature = "kube")]
pub use trueup_kube as kube;
#[cfg(feature = "local")]
pub use trueup_local as local;
#[cfg(feature = "notifiers")]
pub use trueup_notifiers as notifiers;
#[cfg(feature = "sources")]
pub use trueup_sources as sources;

/// Ready-made assemblies of the parts, for programs that want the usual wiring.
#[cfg(all(feature = "sources", feature = "appliers"))]
pub mod presets {
    use std::sync::Arc;
    use trueup_core::reconcile::{
        GitRepositoryReconciler, HelmChartReconciler, HelmReleaseReconciler,
        KustomizationReconciler, OciRepositoryReconciler, RemoteClusters, TerraformReconciler,
    };
    use trueup_core::runtime::{Runtime, RuntimeBuilder};
    use trueup_core::storage::ArtifactStore;
    use trueup_core::traits::Backend;

    /// The remote clusters of `spec.kubeConfig` this build can reach: with the `kube` feature,
    /// any cluster a kubeconfig Secret describes ([`trueup_kube::KubeConnector`]); without it,
    /// none (such objects stall, saying so).
    pub fn remote_clusters() -> Option<Arc<RemoteClusters>> {
        #[cfg(feature = "kube")]
        {
            Some(Arc::new(RemoteClusters::new(
                trueup_kube::KubeConnector::new(),
            )))
        }
        #[cfg(not(feature = "kube"))]
        {
            None
        }
    }

    /// A runtime builder with the Git, OCI and Helm sources (the Helm one also fetching the
    /// chart-repository dependencies of charts from Git), the Kustomize and HelmRelease
    /// appliers wired to `backend` (and to the remote clusters of `spec.kubeConfig`, see
    /// [`remote_clusters`]),
    /// artifacts kept in `store`, and the Terraform reconciler when a `tofu` or `terraform`
    /// binary is on PATH. Add notifiers and options, then `build()`.
    pub fn gitops(backend: Arc<dyn Backend>, store: ArtifactStore) -> RuntimeBuilder {
        let mut kustomizations = KustomizationReconciler::new(
            trueup_appliers::KustomizeApplier::default(),
            store.clone(),
        );
        let mut releases = HelmReleaseReconciler::new(
            trueup_appliers::helmrelease::HelmReleaseApplier::new(),
            store.clone(),
        );
        if let Some(remote) = remote_clusters() {
            kustomizations = kustomizations.with_remote_clusters(remote.clone());
            releases = releases.with_remote_clusters(remote);
        }
        let helm = trueup_sources::HelmSource::new();
        let builder = Runtime::builder(backend)
            .reconciler(GitRepositoryReconciler::new(
                trueup_sources::GitSource::new(),
                store.clone(),
            ))
            .reconciler(OciRepositoryReconciler::new(
                trueup_sources::OciSource::default(),
                store.clone(),
            ))
            .reconciler(kustomizations)
            .reconciler(
                HelmChartReconciler::new(helm.clone(), store.clone(), |repository, chart| {
                    trueup_sources::helm::HelmChartSource { repository, chart }
                })
                // Dependencies of charts from Git, from HTTP and OCI chart repositories.
                .with_dependency_fetcher(Arc::new(helm)),
            )
            .reconciler(releases);
        match trueup_appliers::tofu::TofuRunner::detect() {
            Ok(runner) => builder.reconciler(TerraformReconciler::new(runner, store)),
            Err(_) => builder,
        }
    }
}
