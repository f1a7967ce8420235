//! Plan runners: OpenTofu/Terraform root modules planned, approved and applied.
//!
//! A [`PlanRunner`] turns a source directory into a saved plan ([`PlanRunner::plan`]) and applies
//! exactly that saved plan later ([`PlanRunner::apply`]), possibly in another process: a plan is
//! plain data (the saved plan file's bytes and its `show -json`), so the reconciler can store it
//! in the backend while it waits for approval. Every call prepares its own working directory; a
//! runner keeps nothing between calls except what it keeps in the backend (the state).
//!
//! Identity of a plan lives here, not in the runner: [`plan_id`] binds an approval to the source
//! revision *and* to a digest of the planned changes, so approving an id can never apply a plan
//! other than the one reviewed.

use crate::object::ObjectRef;
use crate::traits::Backend;
use async_trait::async_trait;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What a runner needs to run one Terraform object.
#[derive(Clone, Copy)]
pub struct PlanRequest<'a> {
    /// The Terraform object (names state, errors and messages).
    pub object: &'a ObjectRef,
    /// The unpacked source artifact. Runners copy it and never write to it.
    pub source_dir: &'a Path,
    /// `spec.path`: the root module, relative to `source_dir` (must stay inside it).
    pub path: &'a str,
    /// `terraform workspace` name (`default` unless the spec names one).
    pub workspace: &'a str,
    /// `spec.backendConfig.customConfiguration`: the body of a `terraform {}` block (a
    /// `backend "..." {}` block), written as an override file. `None`: the runner's own state
    /// store, kept in `backend`.
    pub backend_config: Option<&'a str>,
    /// `spec.backendConfig.secretSuffix` (defaults to the object's name): names the state Secret.
    pub state_suffix: &'a str,
    /// Input variables, resolved from `vars` and `varsFrom`. Runners pass them in a var file,
    /// never on a command line.
    pub vars: &'a Map<String, Value>,
    /// Values that must never appear in messages (variables read from Secrets).
    pub sensitive: &'a [String],
    /// Plan a destroy (`plan -destroy`). Only read by [`PlanRunner::plan`].
    pub destroy: bool,
    /// Budget for the whole call; the runner ends everything it started when it runs out.
    pub timeout: Duration,
    /// The cluster: state, and the Secrets and ConfigMaps a runner may read.
    pub backend: &'a dyn Backend,
}

/// Counts of planned resource changes (a replace counts as one add and one destroy, as the CLI
/// reports it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSummary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to add, {} to change, {} to destroy",
            self.add, self.change, self.destroy
        )
    }
}

/// One planned resource change, from `show -json`'s `resource_changes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceChange {
    pub address: String,
    /// `create`, `update`, `delete`, `read`, `no-op`; a replace is `["delete","create"]` or
    /// `["create","delete"]`.
    pub actions: Vec<String>,
}

/// A saved plan: the file to apply and what it will do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The saved plan file (`plan -out`). Applying a plan applies exactly these bytes.
    pub file: Vec<u8>,
    /// `show -json` of the plan. Holds sensitive values in clear: store it only in Secrets.
    pub json: Value,
    /// The human-readable plan (the CLI's plan output, sensitive values masked by the CLI,
    /// secrets redacted by the runner).
    pub human: String,
}

impl Plan {
    /// Resource changes that do something (no `no-op`, no `read`).
    pub fn resource_changes(&self) -> Vec<ResourceChange> {
        let mut out = Vec::new();
        for rc in self
            .json
            .get("resource_changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let actions: Vec<String> = rc
                .pointer("/change/actions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            if actions.iter().all(|a| a == "no-op" || a == "read") {
                continue;
            }
            let address = rc
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            out.push(ResourceChange { address, actions });
        }
        out
    }

    pub fn summary(&self) -> PlanSummary {
        let mut s = PlanSummary::default();
        for rc in self.resource_changes() {
            for a in &rc.actions {
                match a.as_str() {
                    "create" => s.add += 1,
                    "update" => s.change += 1,
                    "delete" => s.destroy += 1,
                    _ => {}
                }
            }
        }
        s
    }

    /// Output names whose value the plan changes.
    pub fn output_changes(&self) -> Vec<String> {
        let Some(m) = self.json.get("output_changes").and_then(Value::as_object) else {
            return Vec::new();
        };
        m.iter()
            .filter(|(_, c)| {
                c.get("actions")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() != Some("no-op")))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether applying the plan would change anything (resources or outputs).
    pub fn has_changes(&self) -> bool {
        !self.resource_changes().is_empty() || !self.output_changes().is_empty()
    }

    /// `sha256` (hex) of the planned changes: `resource_changes` and `output_changes` of the
    /// plan's JSON, keys sorted. Timestamps and the prior state's serial are left out, so the
    /// same source, state and variables give the same digest on every re-plan, while a new
    /// commit, a changed variable or drift gives another.
    pub fn digest(&self) -> String {
        let mut m = Map::new();
        for key in ["resource_changes", "output_changes"] {
            m.insert(
                key.to_string(),
                self.json.get(key).cloned().unwrap_or(Value::Null),
            );
        }
        let mut text = String::new();
        canonical_json(&Value::Object(m), &mut text);
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// Writes JSON with object keys sorted, whatever map type serde_json was built with.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The id an approval names: `plan-<ref>-<sha10>-<digest8>`.
///
/// `<ref>-<sha10>` follows tofu-controller (`plan-main-b8e362c206`): the branch or tag of the
/// source revision and the first 10 hex of its commit (or artifact digest). `<digest8>` is the
/// first 8 hex of [`Plan::digest`]: approving an id approves those exact changes.
pub fn plan_id(revision: &str, plan: &Plan) -> String {
    let digest = plan.digest();
    let (name, hash) = match revision.rsplit_once('@') {
        Some((name, hash)) => (name, hash),
        None if revision.contains(':') => ("", revision),
        None => (revision, ""),
    };
    let hash = hash.rsplit(':').next().unwrap_or_default();
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut id = String::from("plan");
    for part in [
        clean(name),
        clean(&hash.chars().take(10).collect::<String>()),
        digest[..8].to_string(),
    ] {
        if !part.is_empty() {
            id.push('-');
            id.push_str(&part);
        }
    }
    id
}

/// One output value (`output -json`).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputValue {
    pub value: Value,
    pub sensitive: bool,
}

/// Outputs by name.
pub type Outputs = BTreeMap<String, OutputValue>;

/// A failed step: `step` names the command (`terraform plan`), `message` says why (the CLI's
/// error, secrets redacted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct PlanError {
    pub step: String,
    pub message: String,
    /// The step ran out of time (or was cancelled) and was ended.
    pub timed_out: bool,
}

impl PlanError {
    pub fn new(step: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError {
            step: step.into(),
            message: message.into(),
            timed_out: false,
        }
    }
}

/// Runs OpenTofu/Terraform for one object at a time.
///
/// Implementations: `trueup_appliers::tofu::TofuRunner` (the CLI), and test fakes.
#[async_trait]
pub trait PlanRunner: Send + Sync {
    /// Prepares a working directory, initialises it, selects the workspace and plans (a destroy
    /// plan when `req.destroy`). The plan is saved, not applied.
    async fn plan(&self, req: &PlanRequest<'_>) -> Result<Plan, PlanError>;

    /// Applies exactly `plan` (its saved file) and returns the outputs afterwards. The CLI
    /// refuses a plan whose state has moved on since it was made ("stale").
    async fn apply(&self, req: &PlanRequest<'_>, plan: &Plan) -> Result<Outputs, PlanError>;

    /// The outputs of the current state.
    async fn outputs(&self, req: &PlanRequest<'_>) -> Result<Outputs, PlanError>;

    /// Destroys everything the state holds: a destroy plan, applied at once.
    async fn destroy(&self, req: &PlanRequest<'_>) -> Result<(), PlanError> {
        let req = PlanRequest {
            destroy: true,
            ..*req
        };
        let plan = self.plan(&req).await?;
        self.apply(&req, &plan).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(v: Value) -> Plan {
        Plan {
            json: v,
            ..Default::default()
        }
    }

    #[test]
    fn ids_bind_revision_and_changes() {
        let a = plan(json!({"timestamp": "t1", "resource_changes": [
            {"address": "terraform_data.a", "change": {"actions": ["create"], "after": {"input": "x"}}}],
            "output_changes": {}}));
        let mut b = a.clone();
        b.json["timestamp"] = json!("t2");
        let rev = "main@sha1:0123456789abcdef0123456789abcdef01234567";
        let id = plan_id(rev, &a);
        assert!(id.starts_with("plan-main-0123456789-"), "{id}");
        assert_eq!(id.len(), "plan-main-0123456789-".len() + 8);
        assert_eq!(id, plan_id(rev, &b), "timestamps do not change the id");
        let mut c = a.clone();
        c.json["resource_changes"][0]["change"]["after"]["input"] = json!("y");
        assert_ne!(id, plan_id(rev, &c), "other changes, other id");
        assert_ne!(
            id,
            plan_id("main@sha1:1111111111abcdef", &a),
            "other commit, other id"
        );
        assert!(plan_id("sha1:abcdef0123456789", &a).starts_with("plan-abcdef0123-"));
        assert!(plan_id("feature/x@sha1:abcdef0123456789", &a)
            .starts_with("plan-feature-x-abcdef0123-"));
        assert_eq!(
            a.summary(),
            PlanSummary {
                add: 1,
                change: 0,
                destroy: 0
            }
        );
        assert!(a.has_changes());
    }

    #[test]
    fn no_op_plans_have_no_changes() {
        let p = plan(json!({"resource_changes": [
            {"address": "terraform_data.a", "change": {"actions": ["no-op"]}},
            {"address": "data.x.y", "change": {"actions": ["read"]}}],
            "output_changes": {"o": {"actions": ["no-op"]}}}));
        assert!(!p.has_changes());
        let r = plan(json!({"resource_changes": [
            {"address": "terraform_data.a", "change": {"actions": ["delete", "create"]}}]}));
        assert_eq!(
            r.summary(),
            PlanSummary {
                add: 1,
                change: 0,
                destroy: 1
            }
        );
    }
}
