//! Remote clusters: Flux's `spec.kubeConfig`. A Kustomization or HelmRelease that names a
//! kubeconfig Secret acts on the cluster that kubeconfig describes, not on the backend it lives
//! in. Core reads the Secret and caches the connections; a [`ClusterConnector`] (the Kubernetes
//! backend's `KubeConnector`) turns the kubeconfig into a [`Backend`].

use super::backend::Backend;
use async_trait::async_trait;
use std::sync::Arc;

/// Why a kubeconfig gave no backend. Messages name the Secret and the server, never the
/// kubeconfig's content (tokens, keys).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig cannot be used as written (does not parse, names no server, asks for
    /// local files or credential plugins): retrying without a change to the Secret cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The cluster could not be reached or refused the credentials; retried.
    #[error("cannot reach the cluster at {server}: {source}")]
    Unreachable {
        server: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Builds backends on remote clusters from kubeconfigs.
#[async_trait]
pub trait ClusterConnector: Send + Sync {
    /// A backend on the cluster of `kubeconfig` (its current context), checked to answer.
    /// `origin` says where the kubeconfig came from (`Secret 'ns/name' key 'value'`) for
    /// messages.
    async fn connect(
        &self,
        kubeconfig: &[u8],
        origin: &str,
    ) -> Result<Arc<dyn Backend>, ConnectError>;
}
