//! Multi-document YAML reading and writing for manifests.
//!
//! Every document becomes a `serde_json::Value`: Kubernetes manifests are JSON-compatible, and a
//! single value model keeps renderers simple. Errors name the file and the document index.

use crate::object::{Object, ObjectError};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// Where a YAML text came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin(pub String);

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{origin}: document {index}: invalid YAML: {source}")]
    Syntax {
        origin: String,
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{origin}: document {index}: {source}")]
    NotAnObject {
        origin: String,
        index: usize,
        #[source]
        source: ObjectError,
    },
    #[error("cannot write YAML: {0}")]
    Emit(#[source] serde_yaml::Error),
}

/// Parses every document of a multi-document YAML text. Empty documents (a lone `---`, or only
/// comments) are skipped, as kubectl does. Document indexes in errors count from 0 and include
/// the empty ones, so they match what an editor shows between separators.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>, YamlError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| YamlError::Syntax {
            origin: origin.to_string(),
            index,
            source,
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Parses manifests: every non-empty document must be an object with apiVersion, kind and
/// metadata.name. A `kind: List` document is flattened into its items.
pub fn parse_objects(text: &str, origin: &str) -> Result<Vec<Object>, YamlError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| YamlError::Syntax {
            origin: origin.to_string(),
            index,
            source,
        })?;
        if value.is_null() {
            continue;
        }
        let not_obj = |source| YamlError::NotAnObject {
            origin: origin.to_string(),
            index,
            source,
        };
        if is_list(&value) {
            if let Some(Value::Array(items)) = value.get("items") {
                for item in items {
                    out.push(Object::from_value(item.clone()).map_err(not_obj)?);
                }
            }
            continue;
        }
        out.push(Object::from_value(value).map_err(not_obj)?);
    }
    Ok(out)
}

fn is_list(v: &Value) -> bool {
    v.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array)
}

/// Writes one value as a YAML document (no leading `---`).
pub fn to_string(value: &Value) -> Result<String, YamlError> {
    serde_yaml::to_string(value).map_err(YamlError::Emit)
}

/// Writes objects as a multi-document stream separated by `---`, the way `kubectl kustomize`
/// prints them.
pub fn objects_to_string<'a>(
    objects: impl IntoIterator<Item = &'a Object>,
) -> Result<String, YamlError> {
    let mut out = String::new();
    for (i, obj) in objects.into_iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(&obj.0).map_err(YamlError::Emit)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_and_document() {
        let text =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\nkind: [unclosed\n";
        let err = parse_documents(text, "apps/cm.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("apps/cm.yaml: document 2: invalid YAML"),
            "{err}"
        );
    }

    #[test]
    fn skips_empty_documents_and_flattens_lists() {
        let text = "---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n";
        let objs = parse_objects(text, "x.yaml").unwrap();
        assert_eq!(
            objs.iter().map(|o| o.name()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn non_objects_are_reported_with_their_index() {
        let err = parse_objects(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nfoo: bar\n",
            "x.yaml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "x.yaml: document 1: missing or empty field `apiVersion`"
        );
    }
}
