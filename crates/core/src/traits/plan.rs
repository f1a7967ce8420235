//! Plan runners: OpenTofu/Terraform workspaces planned, approved and applied.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A prepared working directory for one Terraform object.
#[derive(Clone, Debug, Default)]
pub struct TofuWorkspace {
    pub dir: PathBuf,
    /// `terraform workspace` name (`default` when empty).
    pub workspace: String,
    /// Backend configuration written as an override file, when the user gave one.
    pub backend_override: Option<String>,
    pub env: BTreeMap<String, String>,
}

/// Counts of planned changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

/// A saved plan.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Binds an approval to exactly this plan (`plan-<rev>-<digest8>`).
    pub id: String,
    pub summary: PlanSummary,
    /// `show -json` of the plan.
    pub json: Value,
    /// The saved plan file.
    pub file: PathBuf,
    pub has_changes: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{step}: {message}")]
pub struct PlanError {
    pub step: String,
    pub message: String,
}

#[async_trait]
pub trait PlanRunner: Send + Sync {
    async fn init(&self, ws: &TofuWorkspace) -> Result<(), PlanError>;
    async fn plan(&self, ws: &TofuWorkspace, vars: &Map<String, Value>, destroy: bool) -> Result<Plan, PlanError>;
    /// Applies exactly the saved plan.
    async fn apply(&self, ws: &TofuWorkspace, plan: &Plan) -> Result<(), PlanError>;
    async fn outputs(&self, ws: &TofuWorkspace) -> Result<Map<String, Value>, PlanError>;
}
