//! The status model Flux objects report: conditions, artifacts, inventories, revisions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const ARTIFACT_IN_STORAGE: &str = "ArtifactInStorage";
pub const HEALTHY: &str = "Healthy";

/// Reasons used in conditions and events, as Flux names them.
pub mod reason {
    pub const SUCCEEDED: &str = "Succeeded";
    pub const RECONCILIATION_SUCCEEDED: &str = "ReconciliationSucceeded";
    pub const RECONCILIATION_FAILED: &str = "ReconciliationFailed";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    pub const ARTIFACT_FAILED: &str = "ArtifactFailed";
    pub const BUILD_FAILED: &str = "BuildFailed";
    pub const HEALTH_CHECK_FAILED: &str = "HealthCheckFailed";
    pub const PRUNE_FAILED: &str = "PruneFailed";
    pub const GIT_OPERATION_FAILED: &str = "GitOperationFailed";
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    pub const NEW_ARTIFACT: &str = "NewArtifact";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";
    pub const SUSPENDED: &str = "Suspended";
    pub const TIMEOUT: &str = "ReconciliationTimeout";
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
}

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// A status condition (metav1.Condition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub last_transition_time: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

impl Condition {
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status,
            observed_generation: 0,
            last_transition_time: String::new(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A stored artifact: what sources produce and appliers consume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Path relative to the artifact storage root.
    pub path: String,
    #[serde(default)]
    pub url: String,
    /// `main@sha1:<hex>`, `v1.2.3@sha1:<hex>`, `sha1:<hex>`, `6.1.0`, `latest@sha256:<hex>`.
    pub revision: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    #[serde(default)]
    pub last_update_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One entry of an inventory: Flux's `{id, v}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InventoryEntry {
    pub id: String,
    pub v: String,
}

/// What a Kustomization (or HelmRelease) applied, as Flux records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    #[serde(default)]
    pub entries: Vec<InventoryEntry>,
}

/// The status fields common to the kinds trueup reconciles. Kind-specific fields (a plan, a
/// release history) live in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_applied_revision: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_attempted_revision: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_handled_reconcile_at: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Status {
    /// Reads the status of an object; a missing or unreadable status is an empty one (status
    /// is ours to rewrite).
    pub fn from_value(v: Option<&Value>) -> Status {
        v.and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("status serializes")
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    pub fn is_ready(&self) -> bool {
        self.condition(READY)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// Ready, and for the generation the object has now.
    pub fn is_ready_for(&self, generation: i64) -> bool {
        self.condition(READY).is_some_and(|c| {
            c.status == ConditionStatus::True && c.observed_generation >= generation
        }) && self.observed_generation >= generation
    }

    /// Sets a condition, keeping its lastTransitionTime when the status did not change.
    pub fn set_condition(&mut self, mut cond: Condition, generation: i64, now: &str) {
        cond.observed_generation = generation;
        match self.conditions.iter_mut().find(|c| c.type_ == cond.type_) {
            Some(existing) => {
                cond.last_transition_time = if existing.status == cond.status
                    && !existing.last_transition_time.is_empty()
                {
                    existing.last_transition_time.clone()
                } else {
                    now.to_string()
                };
                *existing = cond;
            }
            None => {
                cond.last_transition_time = now.to_string();
                self.conditions.push(cond);
            }
        }
    }

    pub fn remove_condition(&mut self, type_: &str) {
        self.conditions.retain(|c| c.type_ != type_);
    }

    /// Marks the object Ready (True) and clears Reconciling/Stalled.
    pub fn mark_ready(
        &mut self,
        reason: &str,
        message: impl Into<String>,
        generation: i64,
        now: &str,
    ) {
        self.set_condition(
            Condition::new(READY, ConditionStatus::True, reason, message),
            generation,
            now,
        );
        self.remove_condition(RECONCILING);
        self.remove_condition(STALLED);
    }

    /// Marks the object not Ready. `stalled` says that retrying without a change cannot help.
    pub fn mark_failed(
        &mut self,
        reason: &str,
        message: impl Into<String>,
        stalled: bool,
        generation: i64,
        now: &str,
    ) {
        let message = message.into();
        self.set_condition(
            Condition::new(READY, ConditionStatus::False, reason, message.clone()),
            generation,
            now,
        );
        self.remove_condition(RECONCILING);
        if stalled {
            self.set_condition(
                Condition::new(STALLED, ConditionStatus::True, reason, message),
                generation,
                now,
            );
        } else {
            self.remove_condition(STALLED);
        }
    }

    /// Marks the object as in progress (Ready Unknown, Reconciling True).
    pub fn mark_reconciling(
        &mut self,
        reason: &str,
        message: impl Into<String>,
        generation: i64,
        now: &str,
    ) {
        let message = message.into();
        self.set_condition(
            Condition::new(READY, ConditionStatus::Unknown, reason, message.clone()),
            generation,
            now,
        );
        self.set_condition(
            Condition::new(RECONCILING, ConditionStatus::True, reason, message),
            generation,
            now,
        );
        self.remove_condition(STALLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut s = Status::default();
        s.mark_failed(reason::ARTIFACT_FAILED, "no artifact", false, 1, "t1");
        s.mark_failed(reason::ARTIFACT_FAILED, "still no artifact", false, 1, "t2");
        assert_eq!(s.condition(READY).unwrap().last_transition_time, "t1");
        assert_eq!(s.condition(READY).unwrap().message, "still no artifact");
        s.mark_ready(reason::SUCCEEDED, "ok", 2, "t3");
        let ready = s.condition(READY).unwrap();
        assert_eq!(
            (
                ready.last_transition_time.as_str(),
                ready.observed_generation
            ),
            ("t3", 2)
        );
        assert!(s.is_ready());
    }

    #[test]
    fn stalled_is_set_and_cleared() {
        let mut s = Status::default();
        s.mark_failed(reason::DEPENDENCY_CYCLE, "cycle a -> b -> a", true, 1, "t");
        assert!(s.condition(STALLED).is_some());
        s.mark_reconciling(reason::PROGRESSING, "retrying", 1, "t");
        assert!(s.condition(STALLED).is_none());
    }

    #[test]
    fn status_round_trips_through_json_with_extra_fields() {
        let v = serde_json::json!({
            "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok",
                            "observedGeneration": 3, "lastTransitionTime": "2024-01-01T00:00:00Z"}],
            "lastAppliedRevision": "main@sha1:abc",
            "plan": {"pending": "plan-main-abc"}
        });
        let s = Status::from_value(Some(&v));
        assert!(s.is_ready_for(3));
        assert!(!s.is_ready_for(4));
        assert_eq!(s.extra["plan"]["pending"], "plan-main-abc");
        assert_eq!(s.to_value(), v);
    }
}
