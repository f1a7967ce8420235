//! CustomResourceDefinitions for every kind trueup serves, generated from trueup-core's API types.
//!
//! The spec schema of each kind is traced from the serde type trueup parses that kind with
//! ([`trace`]): field names (renames included), nesting, lists, maps, free-form values,
//! required fields and durations all come from the type, so the CRD cannot accept or refuse
//! something the type does not. What the Rust types leave as plain strings but Flux's CRDs
//! restrict (enums) is listed per kind in [`refinements`]; every path listed there must exist
//! in the traced type or generation fails, so a renamed field cannot leave a stale rule behind.
//!
//! Names, short names, printer columns, served versions and the storage version are Flux's
//! (and tofu-controller's for Terraform). Every version trueup accepts is served, with the same
//! schema (trueup reads all versions with one type), the first as storage, older ones marked
//! deprecated as Flux marks them. Status is free-form (`x-kubernetes-preserve-unknown-fields`)
//! behind the status subresource.
//!
//! The YAML ships in `config/crd/`; `tests/crds.rs` fails when it differs from [`crd_yaml`] and
//! rewrites it with `TRUEUP_UPDATE_CRDS=1`.
//!
//! The schemas use only what apiextensions.k8s.io/v1 offered in Kubernetes 1.16 (no CEL
//! validation rules), so the CRDs install on v1.20 and on current servers alike.

pub mod trace;

use serde_json::{json, Map, Value};
use trueup_core::api::{helm, kustomize, notification, source, tofu, FluxKind};
use trueup_core::object::Object;

pub use trace::{Field, Shape, TraceError};

/// Flux's pattern for `metav1.Duration` fields (`interval`, `timeout`, ...).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Why a CRD could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("{kind}: tracing the spec type: {source}")]
    Trace {
        kind: FluxKind,
        #[source]
        source: TraceError,
    },
    #[error("{kind}: refinement of `spec.{path}`: {message}")]
    Refinement {
        kind: FluxKind,
        path: String,
        message: String,
    },
    #[error("{kind}: writing YAML: {source}")]
    Yaml {
        kind: FluxKind,
        #[source]
        source: trueup_core::yaml::YamlError,
    },
}

/// A printer column (`kubectl get` output).
struct Column {
    name: &'static str,
    json_path: &'static str,
    kind: &'static str,
}

const fn col(name: &'static str, json_path: &'static str, kind: &'static str) -> Column {
    Column {
        name,
        json_path,
        kind,
    }
}

const AGE: Column = col("Age", ".metadata.creationTimestamp", "date");
const READY: Column = col(
    "Ready",
    r#".status.conditions[?(@.type=="Ready")].status"#,
    "string",
);
const STATUS: Column = col(
    "Status",
    r#".status.conditions[?(@.type=="Ready")].message"#,
    "string",
);
const URL: Column = col("URL", ".spec.url", "string");

/// Flux's names of a kind.
pub struct Names {
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
}

pub fn names(kind: FluxKind) -> Names {
    let (plural, singular, short_names): (_, _, &'static [&'static str]) = match kind {
        FluxKind::GitRepository => ("gitrepositories", "gitrepository", &["gitrepo"]),
        FluxKind::HelmRepository => ("helmrepositories", "helmrepository", &["helmrepo"]),
        FluxKind::HelmChart => ("helmcharts", "helmchart", &["hc"]),
        FluxKind::OciRepository => ("ocirepositories", "ocirepository", &["ocirepo"]),
        FluxKind::Kustomization => ("kustomizations", "kustomization", &["ks"]),
        FluxKind::HelmRelease => ("helmreleases", "helmrelease", &["hr"]),
        FluxKind::Provider => ("providers", "provider", &[]),
        FluxKind::Alert => ("alerts", "alert", &[]),
        FluxKind::Receiver => ("receivers", "receiver", &[]),
        FluxKind::Terraform => ("terraforms", "terraform", &["tf"]),
    };
    Names {
        plural,
        singular,
        short_names,
    }
}

fn columns(kind: FluxKind, version: &str) -> Vec<&'static Column> {
    const HC: [Column; 4] = [
        col("Chart", ".spec.chart", "string"),
        col("Version", ".spec.version", "string"),
        col("Source Kind", ".spec.sourceRef.kind", "string"),
        col("Source Name", ".spec.sourceRef.name", "string"),
    ];
    match kind {
        FluxKind::GitRepository | FluxKind::HelmRepository => vec![&URL, &AGE, &READY, &STATUS],
        FluxKind::OciRepository => vec![&URL, &READY, &STATUS, &AGE],
        FluxKind::HelmChart => HC.iter().chain([&AGE, &READY, &STATUS]).collect(),
        FluxKind::Kustomization | FluxKind::HelmRelease | FluxKind::Receiver => {
            vec![&AGE, &READY, &STATUS]
        }
        // v1beta3 Alerts and Providers show no Ready column in Flux (they are not reconciled
        // there); v1beta2 did.
        FluxKind::Provider | FluxKind::Alert if version == "v1beta3" => vec![&AGE],
        FluxKind::Provider | FluxKind::Alert => vec![&AGE, &READY, &STATUS],
        FluxKind::Terraform => vec![&READY, &STATUS, &AGE],
    }
}

/// A restriction the Rust type does not express: the allowed values of a string field.
pub struct Refinement {
    /// Path under `spec`, `.`-separated, `[]` for list items (`sourceRef.kind`,
    /// `postBuild.substituteFrom[].kind`).
    pub path: &'static str,
    pub allowed: &'static [&'static str],
}

const fn one_of(path: &'static str, allowed: &'static [&'static str]) -> Refinement {
    Refinement { path, allowed }
}

const SECRET_OR_CONFIGMAP: &[&str] = &["Secret", "ConfigMap"];
const CLOUD_PROVIDERS: &[&str] = &["generic", "aws", "azure", "gcp"];
const VERIFY_PROVIDERS: &[&str] = &["cosign", "notation"];
const HELM_CRDS: &[&str] = &["Skip", "Create", "CreateReplace"];
/// Kinds an Alert or Receiver can point at: Flux's list, plus Terraform, which trueup serves
/// (the seed article's Alert watches Terraforms).
const EVENT_SOURCE_KINDS: &[&str] = &[
    "Bucket",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
    "HelmChart",
    "HelmRepository",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "OCIRepository",
    "ArtifactGenerator",
    "ExternalArtifact",
    "Terraform",
];

/// The enums of Flux's (and tofu-controller's) CRDs, per kind.
pub fn refinements(kind: FluxKind) -> Vec<Refinement> {
    match kind {
        FluxKind::GitRepository => vec![
            one_of("provider", &["generic", "azure", "github"]),
            one_of("verify.mode", &["head", "HEAD", "Tag", "TagAndHEAD"]),
        ],
        FluxKind::HelmRepository => vec![
            one_of("type", &["default", "oci"]),
            one_of("provider", CLOUD_PROVIDERS),
        ],
        FluxKind::HelmChart => vec![
            one_of(
                "sourceRef.kind",
                &["HelmRepository", "GitRepository", "Bucket"],
            ),
            one_of("reconcileStrategy", &["ChartVersion", "Revision"]),
            one_of("verify.provider", VERIFY_PROVIDERS),
        ],
        FluxKind::OciRepository => vec![
            one_of("provider", CLOUD_PROVIDERS),
            one_of("layerSelector.operation", &["extract", "copy"]),
            one_of("verify.provider", VERIFY_PROVIDERS),
        ],
        FluxKind::Kustomization => vec![
            one_of(
                "sourceRef.kind",
                &[
                    "OCIRepository",
                    "GitRepository",
                    "Bucket",
                    "ExternalArtifact",
                ],
            ),
            one_of(
                "deletionPolicy",
                &["MirrorPrune", "Delete", "WaitForTermination", "Orphan"],
            ),
            one_of("decryption.provider", &["sops"]),
            one_of("postBuild.substituteFrom[].kind", SECRET_OR_CONFIGMAP),
        ],
        FluxKind::HelmRelease => vec![
            one_of(
                "chart.spec.sourceRef.kind",
                &["HelmRepository", "GitRepository", "Bucket"],
            ),
            one_of(
                "chart.spec.reconcileStrategy",
                &["ChartVersion", "Revision"],
            ),
            one_of("chart.spec.verify.provider", VERIFY_PROVIDERS),
            one_of(
                "chartRef.kind",
                &["OCIRepository", "HelmChart", "ExternalArtifact"],
            ),
            one_of("driftDetection.mode", &["enabled", "warn", "disabled"]),
            one_of("install.crds", HELM_CRDS),
            one_of(
                "install.strategy.name",
                &["RemediateOnFailure", "RetryOnFailure"],
            ),
            one_of("upgrade.crds", HELM_CRDS),
            one_of(
                "upgrade.strategy.name",
                &["RemediateOnFailure", "RetryOnFailure"],
            ),
            one_of("upgrade.remediation.strategy", &["rollback", "uninstall"]),
            one_of(
                "uninstall.deletionPropagation",
                &["background", "foreground", "orphan"],
            ),
            one_of("valuesFrom[].kind", SECRET_OR_CONFIGMAP),
        ],
        FluxKind::Provider => vec![one_of(
            "type",
            &[
                "slack",
                "discord",
                "msteams",
                "rocket",
                "generic",
                "generic-hmac",
                "github",
                "gitlab",
                "gitea",
                "bitbucketserver",
                "bitbucket",
                "azuredevops",
                "googlechat",
                "googlepubsub",
                "webex",
                "sentry",
                "azureeventhub",
                "telegram",
                "lark",
                "matrix",
                "opsgenie",
                "alertmanager",
                "grafana",
                "githubdispatch",
                "pagerduty",
                "datadog",
                "nats",
                "zulip",
                "otel",
            ],
        )],
        FluxKind::Alert => vec![
            one_of("eventSeverity", &["info", "error"]),
            one_of("eventSources[].kind", EVENT_SOURCE_KINDS),
        ],
        FluxKind::Receiver => vec![
            one_of(
                "type",
                &[
                    "generic",
                    "generic-hmac",
                    "github",
                    "gitlab",
                    "bitbucket",
                    "harbor",
                    "dockerhub",
                    "quay",
                    "gcr",
                    "nexus",
                    "acr",
                    "cdevents",
                ],
            ),
            one_of("resources[].kind", EVENT_SOURCE_KINDS),
        ],
        FluxKind::Terraform => vec![
            one_of(
                "sourceRef.kind",
                &["GitRepository", "Bucket", "OCIRepository"],
            ),
            one_of("storeReadablePlan", &["none", "json", "human"]),
            one_of("backendConfigsFrom[].kind", SECRET_OR_CONFIGMAP),
            one_of("varsFrom[].kind", SECRET_OR_CONFIGMAP),
        ],
    }
}

/// The traced shape of a kind's `spec`.
pub fn spec_shape(kind: FluxKind) -> Result<Shape, CrdError> {
    use trace::trace;
    let shape = match kind {
        FluxKind::GitRepository => trace::<source::GitRepositorySpec>(),
        FluxKind::HelmRepository => trace::<source::HelmRepositorySpec>(),
        FluxKind::HelmChart => trace::<source::HelmChartSpec>(),
        FluxKind::OciRepository => trace::<source::OciRepositorySpec>(),
        FluxKind::Kustomization => trace::<kustomize::KustomizationSpec>(),
        FluxKind::HelmRelease => trace::<helm::HelmReleaseSpec>(),
        FluxKind::Provider => trace::<notification::ProviderSpec>(),
        FluxKind::Alert => trace::<notification::AlertSpec>(),
        FluxKind::Receiver => trace::<notification::ReceiverSpec>(),
        FluxKind::Terraform => trace::<tofu::TerraformSpec>(),
    };
    shape.map_err(|source| CrdError::Trace { kind, source })
}

/// The OpenAPI v3 schema of a shape (structural, as apiextensions.k8s.io/v1 requires).
pub fn schema_of(shape: &Shape) -> Value {
    match shape {
        Shape::Struct(fields) => {
            let mut props = Map::new();
            let mut required = Vec::new();
            for f in fields {
                props.insert(f.name.clone(), schema_of(&f.shape));
                if f.required {
                    required.push(Value::String(f.name.clone()));
                }
            }
            let mut s = json!({"type": "object", "properties": props});
            if !required.is_empty() {
                s["required"] = Value::Array(required);
            }
            s
        }
        Shape::Seq(item) => json!({"type": "array", "items": schema_of(item)}),
        Shape::Map(value) => json!({"type": "object", "additionalProperties": schema_of(value)}),
        Shape::String => json!({"type": "string"}),
        Shape::Duration => json!({"type": "string", "pattern": DURATION_PATTERN}),
        Shape::Bool => json!({"type": "boolean"}),
        Shape::Int => json!({"type": "integer", "format": "int64"}),
        Shape::Float => json!({"type": "number"}),
        Shape::Any => json!({"x-kubernetes-preserve-unknown-fields": true}),
    }
}

/// The node of `schema` at a refinement path, which must be a string.
fn refine(schema: &mut Value, r: &Refinement) -> Result<(), String> {
    let mut node = schema;
    for seg in r.path.split('.') {
        let (name, items) = match seg.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (seg, false),
        };
        node = node
            .get_mut("properties")
            .and_then(|p| p.get_mut(name))
            .ok_or_else(|| format!("the type has no field `{name}` there"))?;
        if items {
            node = node
                .get_mut("items")
                .ok_or_else(|| format!("`{name}` is not a list"))?;
        }
    }
    if node.get("type").and_then(Value::as_str) != Some("string") {
        return Err(format!("not a string field: {node}"));
    }
    node["enum"] = r.allowed.iter().map(|v| Value::from(*v)).collect();
    Ok(())
}

/// The complete spec schema of a kind: traced, then refined.
pub fn spec_schema(kind: FluxKind) -> Result<Value, CrdError> {
    let mut schema = schema_of(&spec_shape(kind)?);
    for r in &refinements(kind) {
        refine(&mut schema, r).map_err(|message| CrdError::Refinement {
            kind,
            path: r.path.to_string(),
            message,
        })?;
    }
    Ok(schema)
}

/// Why a version is deprecated, as Flux words it; `None` for the storage version.
fn deprecation(kind: FluxKind, version: &str) -> Option<String> {
    let storage = kind.versions()[0];
    (version != storage).then(|| {
        format!(
            "{version} {} is deprecated, upgrade to {storage}",
            kind.kind()
        )
    })
}

/// The CustomResourceDefinition of a kind.
pub fn crd(kind: FluxKind) -> Result<Object, CrdError> {
    let spec = spec_schema(kind)?;
    let names = names(kind);
    let schema = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
        "required": ["spec"],
    });
    let versions: Vec<Value> = kind
        .versions()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let cols: Vec<Value> = columns(kind, v)
                .into_iter()
                .map(|c| json!({"name": c.name, "jsonPath": c.json_path, "type": c.kind}))
                .collect();
            let mut version = json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": cols,
            });
            if let Some(warning) = deprecation(kind, v) {
                version["deprecated"] = Value::Bool(true);
                version["deprecationWarning"] = Value::String(warning);
            }
            version
        })
        .collect();
    let mut crd_names = json!({
        "kind": kind.kind(),
        "listKind": format!("{}List", kind.kind()),
        "plural": names.plural,
        "singular": names.singular,
    });
    if !names.short_names.is_empty() {
        crd_names["shortNames"] = json!(names.short_names);
    }
    let v = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", names.plural, kind.group()),
            "labels": {"app.kubernetes.io/part-of": "trueup"},
        },
        "spec": {
            "group": kind.group(),
            "names": crd_names,
            "scope": "Namespaced",
            "versions": versions,
        },
    });
    Ok(Object::from_value(v).expect("a CRD is a JSON object with apiVersion and kind"))
}

/// The file a kind's CRD ships in under `config/crd/`: `<group>_<plural>.yaml`, as Flux names
/// its own.
pub fn file_name(kind: FluxKind) -> String {
    format!("{}_{}.yaml", kind.group(), names(kind).plural)
}

const HEADER: &str = "# Generated from trueup-core's API types by trueup_kube::crd; do not edit.\n\
# Regenerate: TRUEUP_UPDATE_CRDS=1 cargo test -p trueup-kube --test crds\n";

/// The YAML of a kind's CRD, as committed under `config/crd/`.
pub fn crd_yaml(kind: FluxKind) -> Result<String, CrdError> {
    let obj = crd(kind)?;
    let body = trueup_core::yaml::to_string(&Value::Object(obj.0))
        .map_err(|source| CrdError::Yaml { kind, source })?;
    Ok(format!("{HEADER}---\n{body}"))
}

/// `config/crd/kustomization.yaml`: every CRD file.
pub fn kustomization_yaml() -> String {
    let mut s = String::from(HEADER);
    s.push_str("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n");
    for k in FluxKind::ALL {
        s.push_str(&format!("- {}\n", file_name(k)));
    }
    s
}

/// A value with every field a schema allows set to a valid sample: all properties, one list
/// item, one map entry, the first enum value, a duration for a duration. A spec made this way
/// exercises every field of a kind at once (tests apply it to a server and parse it back).
pub fn example(schema: &Value) -> Value {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.first().cloned().unwrap_or(Value::Null);
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        return Value::Object(props.iter().map(|(k, s)| (k.clone(), example(s))).collect());
    }
    if let Some(values) = schema.get("additionalProperties") {
        return json!({"key": example(values)});
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => json!([example(&schema["items"])]),
        Some("string") if schema.get("pattern").is_some() => json!("1m30s"),
        Some("string") => json!("text"),
        Some("boolean") => json!(true),
        Some("integer") => json!(3),
        Some("number") => json!(1.5),
        _ => json!({"free": ["form", 1]}),
    }
}

/// Every CRD, in [`FluxKind::ALL`] order.
pub fn crds() -> Result<Vec<Object>, CrdError> {
    FluxKind::ALL.into_iter().map(crd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
        path.iter().fold(v, |v, k| &v[*k])
    }

    #[test]
    fn every_kind_generates() {
        for k in FluxKind::ALL {
            let c = crd(k).unwrap_or_else(|e| panic!("{e}"));
            let versions = c.0["spec"]["versions"].as_array().unwrap();
            assert_eq!(versions.len(), k.versions().len(), "{k}");
            let storage: Vec<_> = versions.iter().filter(|v| v["storage"] == true).collect();
            assert_eq!(storage.len(), 1, "{k}: one storage version");
            assert_eq!(storage[0]["name"], k.versions()[0]);
        }
    }

    #[test]
    fn gitrepository_schema_follows_the_type() {
        let s = spec_schema(FluxKind::GitRepository).unwrap();
        let mut required: Vec<_> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort();
        assert_eq!(required, ["interval", "url"]);
        assert_eq!(s["properties"]["interval"]["pattern"], DURATION_PATTERN);
        assert_eq!(
            s["properties"]["ref"]["properties"]["branch"]["type"],
            "string"
        );
        assert_eq!(s["properties"]["suspend"]["type"], "boolean");
        assert_eq!(
            s["properties"]["provider"]["enum"],
            json!(["generic", "azure", "github"])
        );
        assert_eq!(
            at(&s, &["properties", "include", "items", "required"]),
            &json!(["repository"])
        );
    }

    #[test]
    fn free_form_values_are_preserved() {
        let s = spec_schema(FluxKind::HelmRelease).unwrap();
        assert_eq!(
            s["properties"]["values"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            s["properties"]["install"]["properties"]["remediation"]["properties"]["retries"]
                ["type"],
            "integer"
        );
        let t = spec_schema(FluxKind::Terraform).unwrap();
        assert_eq!(
            t["properties"]["vars"]["items"]["properties"]["value"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
    }

    #[test]
    fn a_spec_with_every_field_set_parses_as_the_kind() {
        for k in FluxKind::ALL {
            let spec = example(&spec_schema(k).unwrap());
            let obj = Object::from_value(json!({
                "apiVersion": k.api_version(),
                "kind": k.kind(),
                "metadata": {"name": "every-field", "namespace": "default"},
                "spec": spec,
            }))
            .unwrap();
            let typed = trueup_core::api::FluxObject::from_object(&obj)
                .unwrap_or_else(|e| panic!("{k}: {e}"))
                .expect("a Flux kind");
            assert_eq!(typed.kind(), k);
        }
    }

    #[test]
    fn a_refinement_of_a_missing_field_is_an_error() {
        let mut s = spec_schema(FluxKind::GitRepository).unwrap();
        let err = refine(&mut s, &one_of("ref.nope", &["a"])).unwrap_err();
        assert!(err.contains("no field `nope`"), "{err}");
        let err = refine(&mut s, &one_of("suspend", &["a"])).unwrap_err();
        assert!(err.contains("not a string"), "{err}");
    }
}
