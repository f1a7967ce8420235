//! Dynamic Kubernetes objects and references to them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A Kubernetes object of any kind, kept as a JSON map so that renderers can transform it in
/// place. Keys are kept sorted (serde_json's default map), which is also the order in which
/// kustomize and `kubectl` print fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Object(pub Map<String, Value>);

/// Why a value cannot be an [`Object`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ObjectError {
    #[error("expected a mapping with apiVersion, kind and metadata.name, found {0}")]
    NotAMap(&'static str),
    #[error("missing or empty field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` must be a string")]
    NotAString { field: &'static str },
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Object {
    /// Wraps a JSON value, checking that it has `apiVersion`, `kind` and `metadata.name`.
    pub fn from_value(value: Value) -> Result<Self, ObjectError> {
        let map = match value {
            Value::Object(m) => m,
            other => return Err(ObjectError::NotAMap(type_name(&other))),
        };
        let obj = Object(map);
        for field in ["apiVersion", "kind"] {
            match obj.0.get(field) {
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(Value::String(_)) | None | Some(Value::Null) => {
                    return Err(ObjectError::MissingField(field))
                }
                Some(_) => return Err(ObjectError::NotAString { field }),
            }
        }
        match obj.0.get("metadata").and_then(|m| m.get("name")) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(ObjectError::MissingField("metadata.name"))
            }
            Some(_) => {
                return Err(ObjectError::NotAString {
                    field: "metadata.name",
                })
            }
        }
        Ok(obj)
    }

    /// Builds a minimal object.
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        let mut meta = Map::new();
        meta.insert("name".into(), Value::String(name.into()));
        if let Some(ns) = namespace {
            meta.insert("namespace".into(), Value::String(ns.into()));
        }
        let mut m = Map::new();
        m.insert("apiVersion".into(), Value::String(api_version.into()));
        m.insert("kind".into(), Value::String(kind.into()));
        m.insert("metadata".into(), Value::Object(meta));
        Object(m)
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn as_map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }

    fn str_field(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or("")
    }

    pub fn api_version(&self) -> &str {
        self.str_field("apiVersion")
    }

    pub fn kind(&self) -> &str {
        self.str_field("kind")
    }

    /// The API group: the part of apiVersion before `/`, empty for the core group.
    pub fn group(&self) -> &str {
        split_api_version(self.api_version()).0
    }

    pub fn version(&self) -> &str {
        split_api_version(self.api_version()).1
    }

    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.0.get("metadata").and_then(Value::as_object)
    }

    /// The metadata map, created when missing.
    pub fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        let entry = self
            .0
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry.as_object_mut().expect("metadata was just made a map")
    }

    pub fn name(&self) -> &str {
        self.metadata()
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata()
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn set_namespace(&mut self, ns: &str) {
        self.metadata_mut()
            .insert("namespace".into(), Value::String(ns.into()));
    }

    pub fn set_name(&mut self, name: &str) {
        self.metadata_mut()
            .insert("name".into(), Value::String(name.into()));
    }

    pub fn generation(&self) -> i64 {
        self.metadata()
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    fn string_map(&self, key: &str) -> Option<&Map<String, Value>> {
        self.metadata()
            .and_then(|m| m.get(key))
            .and_then(Value::as_object)
    }

    pub fn labels(&self) -> Option<&Map<String, Value>> {
        self.string_map("labels")
    }

    pub fn annotations(&self) -> Option<&Map<String, Value>> {
        self.string_map("annotations")
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels()
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations()
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
    }

    fn string_map_mut(&mut self, key: &str) -> &mut Map<String, Value> {
        let entry = self
            .metadata_mut()
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry.as_object_mut().expect("just made a map")
    }

    pub fn set_label(&mut self, key: &str, value: &str) {
        self.string_map_mut("labels")
            .insert(key.into(), Value::String(value.into()));
    }

    pub fn set_annotation(&mut self, key: &str, value: &str) {
        self.string_map_mut("annotations")
            .insert(key.into(), Value::String(value.into()));
    }

    pub fn spec(&self) -> Option<&Value> {
        self.0.get("spec")
    }

    pub fn status(&self) -> Option<&Value> {
        self.0.get("status")
    }

    /// The reference that identifies this object in a cluster.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            group: self.group().to_string(),
            kind: self.kind().to_string(),
            namespace: self.namespace().unwrap_or("").to_string(),
            name: self.name().to_string(),
        }
    }

    /// `Kind/namespace/name` (or `Kind/name`), the way Flux names objects in messages.
    pub fn display_name(&self) -> String {
        self.object_ref().to_string()
    }
}

/// Splits `group/version` into its parts; `v1` is the core group.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// An API group and kind: what a reconciler serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

impl GroupKind {
    pub fn new(group: &str, kind: &str) -> Self {
        GroupKind {
            group: group.into(),
            kind: kind.into(),
        }
    }
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// Identifies an object across API versions: group, kind, namespace (empty when
/// cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

/// Why an inventory id cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid inventory id `{0}`: expected <namespace>_<name>_<group>_<kind>")]
pub struct InventoryIdError(pub String);

impl ObjectRef {
    pub fn new(group: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Flux's inventory id: `<namespace>_<name>_<group>_<kind>`.
    pub fn inventory_id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.namespace, self.name, self.group, self.kind
        )
    }

    /// Parses an inventory id. Names, namespaces and groups never contain `_`, kinds never do
    /// either, so the split is unambiguous.
    pub fn from_inventory_id(id: &str) -> Result<Self, InventoryIdError> {
        let parts: Vec<&str> = id.split('_').collect();
        if parts.len() != 4 || parts[1].is_empty() || parts[3].is_empty() {
            return Err(InventoryIdError(id.to_string()));
        }
        Ok(ObjectRef::new(parts[2], parts[3], parts[0], parts[1]))
    }

    pub fn group_kind(&self) -> GroupKind {
        GroupKind::new(&self.group, &self.kind)
    }

    pub fn is_namespaced(&self) -> bool {
        !self.namespace.is_empty()
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inventory_id_round_trips_like_flux() {
        let r = ObjectRef::new("apps", "Deployment", "default", "podinfo");
        assert_eq!(r.inventory_id(), "default_podinfo_apps_Deployment");
        assert_eq!(
            ObjectRef::from_inventory_id("default_podinfo_apps_Deployment").unwrap(),
            r
        );
        let ns = ObjectRef::new("", "Namespace", "", "apps");
        assert_eq!(ns.inventory_id(), "_apps__Namespace");
        assert_eq!(
            ObjectRef::from_inventory_id("_apps__Namespace").unwrap(),
            ns
        );
        assert!(ObjectRef::from_inventory_id("nonsense").is_err());
    }

    #[test]
    fn from_value_names_what_is_missing() {
        let err =
            Object::from_value(json!({"apiVersion": "v1", "metadata": {"name": "x"}})).unwrap_err();
        assert_eq!(err, ObjectError::MissingField("kind"));
        let err = Object::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap_err();
        assert_eq!(err, ObjectError::MissingField("metadata.name"));
        let err = Object::from_value(json!([1])).unwrap_err();
        assert_eq!(err, ObjectError::NotAMap("a list"));
    }

    #[test]
    fn group_and_display() {
        let o = Object::new("apps/v1", "Deployment", Some("web"), "api");
        assert_eq!(o.group(), "apps");
        assert_eq!(o.version(), "v1");
        assert_eq!(o.display_name(), "Deployment/web/api");
        let ns = Object::new("v1", "Namespace", None, "web");
        assert_eq!(ns.group(), "");
        assert_eq!(ns.display_name(), "Namespace/web");
    }
}
