//! Ordered sets of objects, with the order in which they are applied and deleted.

use crate::object::{Object, ObjectRef};
use std::collections::HashMap;

/// Kinds applied before everything else, in this order. Namespaces and CRDs must exist before
/// the objects that live in them or are instances of them; the rest follows the order kustomize
/// and Flux use so that referenced objects (ServiceAccounts, ConfigMaps, Secrets) exist before
/// the workloads that mount them.
const ORDER_FIRST: &[&str] = &[
    "CustomResourceDefinition",
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];

/// Kinds applied after everything else: webhooks would otherwise intercept the very objects
/// whose servers are being installed alongside them.
const ORDER_LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The apply rank of a kind: lower first.
pub fn apply_rank(kind: &str) -> usize {
    if let Some(i) = ORDER_FIRST.iter().position(|k| *k == kind) {
        return i;
    }
    if let Some(i) = ORDER_LAST.iter().position(|k| *k == kind) {
        return ORDER_FIRST.len() + 1 + i;
    }
    ORDER_FIRST.len()
}

/// Whether objects of this kind must be established before others are applied (the first
/// stage of a staged apply).
pub fn is_cluster_definition(kind: &str) -> bool {
    matches!(kind, "CustomResourceDefinition" | "Namespace")
}

/// An ordered collection of objects with unique references.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    objects: Vec<Object>,
}

/// Two objects in one set with the same group, kind, namespace and name.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("duplicate object {0}: each object may appear only once")]
pub struct DuplicateObject(pub ObjectRef);

impl ResourceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set, rejecting duplicates.
    pub fn from_objects(objects: Vec<Object>) -> Result<Self, DuplicateObject> {
        let mut seen = HashMap::with_capacity(objects.len());
        for o in &objects {
            if seen.insert(o.object_ref(), ()).is_some() {
                return Err(DuplicateObject(o.object_ref()));
            }
        }
        Ok(ResourceSet { objects })
    }

    pub fn push(&mut self, obj: Object) -> Result<(), DuplicateObject> {
        let r = obj.object_ref();
        if self.objects.iter().any(|o| o.object_ref() == r) {
            return Err(DuplicateObject(r));
        }
        self.objects.push(obj);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Object> {
        self.objects.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Object> {
        self.objects.iter_mut()
    }

    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    pub fn into_objects(self) -> Vec<Object> {
        self.objects
    }

    /// The objects in apply order: by kind rank, then in their original order.
    pub fn in_apply_order(&self) -> Vec<&Object> {
        let mut v: Vec<&Object> = self.objects.iter().collect();
        v.sort_by_key(|o| apply_rank(o.kind()));
        v
    }

    /// Sorts the set itself into apply order.
    pub fn sort_for_apply(&mut self) {
        self.objects.sort_by_key(|o| apply_rank(o.kind()));
    }

    /// References in apply order.
    pub fn refs(&self) -> Vec<ObjectRef> {
        self.in_apply_order()
            .into_iter()
            .map(Object::object_ref)
            .collect()
    }
}

/// Sorts references into deletion order: the reverse of apply order, so workloads go before
/// the namespaces and definitions they live in.
pub fn sort_for_deletion(refs: &mut [ObjectRef]) {
    refs.sort_by(|a, b| {
        apply_rank(&b.kind)
            .cmp(&apply_rank(&a.kind))
            .then_with(|| a.cmp(b))
    });
}

impl IntoIterator for ResourceSet {
    type Item = Object;
    type IntoIter = std::vec::IntoIter<Object>;
    fn into_iter(self) -> Self::IntoIter {
        self.objects.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str) -> Object {
        Object::new("v1", kind, Some("default"), name)
    }

    #[test]
    fn namespaces_and_crds_first_webhooks_last_deletion_reversed() {
        let set = ResourceSet::from_objects(vec![
            obj("ValidatingWebhookConfiguration", "hook"),
            obj("Deployment", "web"),
            obj("Widget", "w"),
            obj("Namespace", "apps"),
            obj("CustomResourceDefinition", "widgets.example.com"),
            obj("ConfigMap", "cfg"),
        ])
        .unwrap();
        let kinds: Vec<_> = set
            .in_apply_order()
            .iter()
            .map(|o| o.kind().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "ConfigMap",
                "Deployment",
                "Widget",
                "ValidatingWebhookConfiguration"
            ]
        );
        let mut refs = set.refs();
        sort_for_deletion(&mut refs);
        let kinds: Vec<_> = refs.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ValidatingWebhookConfiguration",
                "Widget",
                "Deployment",
                "ConfigMap",
                "Namespace",
                "CustomResourceDefinition"
            ]
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let err = ResourceSet::from_objects(vec![obj("ConfigMap", "a"), obj("ConfigMap", "a")])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "duplicate object ConfigMap/default/a: each object may appear only once"
        );
    }
}
