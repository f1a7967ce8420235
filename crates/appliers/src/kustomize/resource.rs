//! A resource during a render: the object plus the history kustomize keeps to fix references
//! (every name and namespace it had) and what a generator asked for.

use serde_json::{Map, Value};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Res {
    pub obj: Map<String, Value>,
    /// Earlier (name, namespace) pairs, oldest first. Name references written against any of
    /// them are rewritten to the current name.
    pub prev: Vec<(String, String)>,
    /// Generated ConfigMap/Secret that still needs its content-hash suffix.
    pub needs_hash: bool,
    /// Where the resource came from, for errors.
    pub origin: Arc<str>,
    /// The name prefixes and suffixes applied to it, innermost first (kustomize uses them to
    /// choose between several resources that had the same name).
    pub prefixes: Vec<Arc<str>>,
    pub suffixes: Vec<Arc<str>>,
}

impl Res {
    pub fn new(obj: Map<String, Value>, origin: Arc<str>) -> Self {
        Res {
            obj,
            prev: Vec::new(),
            needs_hash: false,
            origin,
            prefixes: Vec::new(),
            suffixes: Vec::new(),
        }
    }

    pub fn str_at<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
        m.get(k).and_then(Value::as_str).unwrap_or("")
    }

    pub fn api_version(&self) -> &str {
        Self::str_at(&self.obj, "apiVersion")
    }

    pub fn kind(&self) -> &str {
        Self::str_at(&self.obj, "kind")
    }

    pub fn group(&self) -> &str {
        split_gv(self.api_version()).0
    }

    pub fn version(&self) -> &str {
        split_gv(self.api_version()).1
    }

    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.obj.get("metadata").and_then(Value::as_object)
    }

    pub fn meta_mut(&mut self) -> &mut Map<String, Value> {
        let m = self
            .obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !m.is_object() {
            *m = Value::Object(Map::new());
        }
        match m {
            Value::Object(m) => m,
            _ => unreachable!("metadata was just made a map"),
        }
    }

    pub fn name(&self) -> &str {
        self.meta().map(|m| Self::str_at(m, "name")).unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.meta()
            .map(|m| Self::str_at(m, "namespace"))
            .unwrap_or("")
    }

    /// Renames, remembering the old id.
    pub fn set_name(&mut self, name: String) {
        let old = (self.name().to_string(), self.namespace().to_string());
        if old.0 == name {
            return;
        }
        self.prev.push(old);
        self.meta_mut().insert("name".into(), Value::String(name));
    }

    pub fn set_namespace(&mut self, ns: &str) {
        let old = (self.name().to_string(), self.namespace().to_string());
        if old.1 == ns {
            return;
        }
        self.prev.push(old);
        self.meta_mut()
            .insert("namespace".into(), Value::String(ns.into()));
    }

    /// Whether this resource ever had the name `name` (including now).
    pub fn had_name(&self, name: &str) -> bool {
        self.name() == name || self.prev.iter().any(|(n, _)| n == name)
    }

    /// Whether some id (current or earlier) has this name and namespace; an empty namespace
    /// means `default`, as kustomize's effective namespace does.
    pub fn had_id(&self, name: &str, ns: &str) -> bool {
        let eq = |a: &str, b: &str| effective_ns(a) == effective_ns(b);
        (self.name() == name && eq(self.namespace(), ns))
            || self.prev.iter().any(|(n, s)| n == name && eq(s, ns))
    }

    pub fn is_cluster_scoped(&self) -> bool {
        is_cluster_scoped(self.kind())
    }

    pub fn display(&self) -> String {
        let ns = self.namespace();
        if ns.is_empty() {
            format!("{}/{}", self.kind(), self.name())
        } else {
            format!("{}/{}/{}", self.kind(), ns, self.name())
        }
    }
}

pub fn effective_ns(ns: &str) -> &str {
    if ns.is_empty() {
        "default"
    } else {
        ns
    }
}

pub fn split_gv(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Built-in kinds that live outside namespaces. Custom kinds are treated as namespaced, like
/// kustomize does without their CRD.
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "PersistentVolume"
            | "StorageClass"
            | "PriorityClass"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "MutatingAdmissionPolicy"
            | "MutatingAdmissionPolicyBinding"
            | "APIService"
            | "Node"
            | "CSIDriver"
            | "CSINode"
            | "IngressClass"
            | "RuntimeClass"
            | "PodSecurityPolicy"
            | "VolumeAttachment"
            | "CertificateSigningRequest"
            | "ComponentStatus"
            | "TokenReview"
            | "SelfSubjectAccessReview"
            | "SelfSubjectRulesReview"
            | "SubjectAccessReview"
            | "FlowSchema"
            | "PriorityLevelConfiguration"
            | "ClusterTrustBundle"
            | "DeviceClass"
            | "StorageVersionMigration"
            | "IPAddress"
            | "ServiceCIDR"
    )
}
