//! infra.contrib.fluxcd.io: Terraform (tofu-controller's object, run here by a PlanRunner).

use super::duration::GoDuration;
use super::meta::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `Terraform.spec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TerraformSpec {
    /// `auto`, empty (plan only and wait), or the id of a pending plan to apply.
    #[serde(default)]
    pub approve_plan: String,
    #[serde(default)]
    pub destroy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_config: Option<BackendConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_configs_from: Vec<BackendConfigsReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<Variable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars_from: Vec<VarsReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_mappings: Vec<Value>,
    pub interval: GoDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub source_ref: CrossNamespaceObjectReference,
    #[serde(default)]
    pub suspend: bool,
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_inputs_from_secrets: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_outputs_to_secret: Option<WriteOutputsToSecret>,
    #[serde(default)]
    pub disable_drift_detection: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_spec: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_config_secret_ref: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<Value>,
    #[serde(default)]
    pub destroy_resources_on_deletion: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_cleanup_runner_pod: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_termination_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub refresh_before_apply: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_pod_template: Option<Value>,
    #[serde(default)]
    pub enable_inventory: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tfstate: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i64>,
    /// `none`, `json` or `human`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_readable_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<NamespacedObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<Value>,
    #[serde(default)]
    pub plan_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_the_glass: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_planner: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Value>,
    #[serde(default)]
    pub upgrade_on_init: bool,
}

/// `Terraform.spec.backendConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendConfig {
    #[serde(default)]
    pub disable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_suffix: Option<String>,
    #[serde(default)]
    pub in_cluster_config: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_configuration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendConfigsReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default)]
    pub optional: bool,
}

/// `Terraform.spec.vars[]`: a value is any JSON value (HCL accepts lists and maps too).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variable {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<Value>,
}

/// `Terraform.spec.varsFrom[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VarsReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars_keys: Vec<String>,
    #[serde(default)]
    pub optional: bool,
}

/// `Terraform.spec.writeOutputsToSecret`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WriteOutputsToSecret {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
}
