//! Appliers: turn an artifact into applied state on a backend.

use super::backend::{ApplyAction, Backend};
use crate::object::ObjectRef;
use crate::status::Inventory;
use async_trait::async_trait;
use std::path::Path;
use std::time::Duration;

/// What an applier is asked to do.
pub struct ApplyRequest<'a, S> {
    /// The object being reconciled (a Kustomization, a HelmRelease).
    pub object: &'a ObjectRef,
    pub spec: &'a S,
    /// The unpacked source artifact.
    pub artifact_dir: &'a Path,
    pub revision: &'a str,
    /// What the previous successful apply left, for pruning.
    pub previous_inventory: Option<&'a Inventory>,
    /// Where the objects go: the object's own backend, a remote cluster (`spec.kubeConfig`),
    /// either possibly acting as a ServiceAccount (`spec.serviceAccountName`).
    pub backend: &'a dyn Backend,
    /// Where the object itself lives, as the controller: its Secrets and ConfigMaps
    /// (`postBuild.substituteFrom`) are read here, as Flux reads them with its own client.
    pub management: &'a dyn Backend,
    /// The budget for apply plus health checks.
    pub timeout: Duration,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub inventory: Inventory,
    /// Every applied object with what happened to it, in apply order.
    pub changes: Vec<(ObjectRef, ApplyAction)>,
    pub pruned: Vec<ObjectRef>,
    /// What the health check established, for the Ready message (empty when none ran).
    pub health: String,
}

impl Applied {
    /// Flux's change-set summary: one `Kind/ns/name action` line per object that changed.
    pub fn change_summary(&self) -> String {
        let mut lines: Vec<String> = self
            .changes
            .iter()
            .filter(|(_, a)| *a != ApplyAction::Unchanged)
            .map(|(r, a)| format!("{r} {}", a.as_str()))
            .collect();
        lines.extend(self.pruned.iter().map(|r| format!("{r} deleted")));
        lines.join("\n")
    }
}

/// Why an apply failed; the variant picks the condition reason.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The manifests could not be built (render, substitution, invalid objects).
    #[error("{0}")]
    Build(String),
    /// The backend refused an object.
    #[error("{0}")]
    Apply(String),
    #[error("{0}")]
    Health(String),
    #[error("{0}")]
    Prune(String),
}

#[async_trait]
pub trait Applier: Send + Sync {
    /// The spec this applier reads (e.g. `KustomizationSpec`).
    type Spec: Send + Sync;

    /// Renders the artifact, applies it, records the inventory, prunes what is gone and checks
    /// health.
    async fn apply(&self, req: ApplyRequest<'_, Self::Spec>) -> Result<Applied, ApplyError>;

    /// Removes what an inventory lists (the object was deleted and prune is on).
    async fn remove(
        &self,
        inventory: &Inventory,
        backend: &dyn Backend,
    ) -> Result<Vec<ObjectRef>, ApplyError>;
}
