//! Events: what a reconcile tells people (Kubernetes Events, notifications, the CLI).

use crate::object::ObjectRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Error => "error",
        }
    }
}

/// An event about one object, shaped like Flux's event payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub involved_object: ObjectRef,
    pub severity: Severity,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub timestamp: String,
    pub reporting_controller: String,
}

impl Event {
    pub fn new(
        object: ObjectRef,
        severity: Severity,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Event {
            involved_object: object,
            severity,
            reason: reason.into(),
            message: message.into(),
            metadata: BTreeMap::new(),
            revision: None,
            timestamp: crate::time::now_rfc3339(),
            reporting_controller: "trueup".into(),
        }
    }

    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        let r = revision.into();
        if !r.is_empty() {
            self.metadata.insert("revision".into(), r.clone());
            self.revision = Some(r);
        }
        self
    }
}
