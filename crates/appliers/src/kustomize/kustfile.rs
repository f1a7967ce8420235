//! The kustomization file (`kustomize.config.k8s.io/v1beta1` Kustomization and
//! `v1alpha1` Component), read as strictly as kubectl reads it: unknown fields are an error,
//! and so is a number or bool where a string belongs (label values, image tags).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A label or annotation map: kustomize accepts any scalar and treats it as its text.
pub type StringMap = BTreeMap<String, String>;

fn string_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StringMap, D::Error> {
    let v: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    v.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| Ok((k, string_value(v)?)))
        .collect()
}

/// A string field of the kustomization: kubectl refuses a number or a bool there (quote it),
/// and reads null as empty.
fn string_value<E: serde::de::Error>(v: Value) -> Result<String, E> {
    match v {
        Value::String(s) => Ok(s),
        Value::Null => Ok(String::new()),
        Value::Number(n) => Err(E::custom(format!(
            "cannot unmarshal number {n} into a string field (quote it)"
        ))),
        Value::Bool(b) => Err(E::custom(format!(
            "cannot unmarshal bool {b} into a string field (quote it)"
        ))),
        other => Err(E::custom(format!("expected a string, found {other}"))),
    }
}

/// The text of a scalar as kustomize sees it (numbers and bools keep their spelling).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => super::emit::format_number(n),
        other => other.to_string(),
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Fields read only to be accepted (kustomize allows them) are kept for completeness.
#[allow(dead_code)]
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kustomization {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resources: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub bases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub components: Vec<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name_prefix: Option<String>,
    #[serde(default)]
    pub name_suffix: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    pub common_labels: StringMap,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<LabelSpec>,
    #[serde(default, deserialize_with = "string_map")]
    pub common_annotations: StringMap,
    #[serde(default, deserialize_with = "null_as_default")]
    pub images: Vec<ImageSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub replicas: Vec<ReplicaSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub patches: Vec<PatchSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub patches_strategic_merge: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub patches_json6902: Vec<PatchSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config_map_generator: Vec<GeneratorSpec>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub secret_generator: Vec<GeneratorSpec>,
    #[serde(default)]
    pub generator_options: Option<GeneratorOptions>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub replacements: Vec<ReplacementEntry>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub vars: Vec<VarSpec>,
    #[serde(default)]
    pub sort_options: Option<SortOptions>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub build_metadata: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub crds: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub configurations: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub generators: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub transformers: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub validators: Vec<String>,
    #[serde(default)]
    pub openapi: Option<Value>,
    #[serde(default)]
    pub helm_charts: Option<Value>,
    #[serde(default)]
    pub helm_globals: Option<Value>,
    #[serde(default)]
    pub helm_chart_inflation_generator: Option<Value>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSpec {
    #[serde(default, deserialize_with = "string_map")]
    pub pairs: StringMap,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub new_name: Option<String>,
    #[serde(default, deserialize_with = "opt_scalar")]
    pub new_tag: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub tag_suffix: Option<String>,
}

fn opt_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<Value> = Option::deserialize(d)?;
    v.filter(|v| !v.is_null()).map(string_value).transpose()
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSpec {
    pub name: String,
    #[serde(default)]
    pub count: i64,
}

/// Targets of patches: `name` and `namespace` are regular expressions anchored at both ends.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub label_selector: Option<String>,
    #[serde(default)]
    pub annotation_selector: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchSpec {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub target: Option<Target>,
    #[serde(default)]
    pub options: Option<PatchOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchOptions {
    #[serde(default)]
    pub allow_name_change: bool,
    #[serde(default)]
    pub allow_kind_change: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub behavior: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub files: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub literals: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub envs: Vec<String>,
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub options: Option<GeneratorOptions>,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorOptions {
    #[serde(default, deserialize_with = "string_map")]
    pub labels: StringMap,
    #[serde(default, deserialize_with = "string_map")]
    pub annotations: StringMap,
    #[serde(default)]
    pub disable_name_suffix_hash: Option<bool>,
    #[serde(default)]
    pub immutable: Option<bool>,
}

/// A `replacements` entry: either `path:` to a file of replacements or one inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ReplacementEntry {
    Path { path: String },
    Inline(Replacement),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replacement {
    #[serde(default)]
    pub source: Option<ReplSource>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub targets: Vec<ReplTarget>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplSource {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub field_path: Option<String>,
    #[serde(default)]
    pub options: Option<ReplOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplOptions {
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    pub index: i64,
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplTarget {
    #[serde(default)]
    pub select: Option<ReplSelector>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub reject: Vec<ReplSelector>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub field_paths: Vec<String>,
    #[serde(default)]
    pub options: Option<ReplOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplSelector {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub label_selector: Option<String>,
    #[serde(default)]
    pub annotation_selector: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VarSpec {
    pub name: String,
    #[serde(default, rename = "objref")]
    pub obj_ref: VarObjRef,
    #[serde(default, rename = "fieldref")]
    pub field_ref: Option<VarFieldRef>,
}

#[allow(dead_code)]
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VarObjRef {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VarFieldRef {
    #[serde(default, rename = "fieldpath")]
    pub field_path: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SortOptions {
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub legacy_sort_options: Option<LegacySortOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacySortOptions {
    #[serde(default, deserialize_with = "null_as_default")]
    pub order_first: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub order_last: Vec<String>,
}
