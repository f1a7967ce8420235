//! Flux-compatible API types.
//!
//! They accept the YAML Flux users already keep in Git, unchanged: the same groups, versions,
//! kinds and fields. Unknown or mistyped fields are errors that name the field path
//! (`spec.ref.branch`), never silently dropped.

pub mod duration;
pub mod helm;
pub mod kustomize;
pub mod meta;
pub mod notification;
pub mod source;
pub mod tofu;

pub use duration::GoDuration;
pub use meta::ObjectMeta;

use crate::object::{Object, ObjectRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A typed Flux object: the common envelope around a kind's spec. Status is written by trueup
/// and kept as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl<S> Resource<S> {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn object_ref(&self) -> ObjectRef {
        let group = crate::object::split_api_version(&self.api_version).0;
        ObjectRef::new(group, &self.kind, self.namespace(), &self.metadata.name)
    }
}

pub type GitRepository = Resource<source::GitRepositorySpec>;
pub type HelmRepository = Resource<source::HelmRepositorySpec>;
pub type HelmChart = Resource<source::HelmChartSpec>;
pub type OciRepository = Resource<source::OciRepositorySpec>;
pub type Kustomization = Resource<kustomize::KustomizationSpec>;
pub type HelmRelease = Resource<helm::HelmReleaseSpec>;
pub type Provider = Resource<notification::ProviderSpec>;
pub type Alert = Resource<notification::AlertSpec>;
pub type Receiver = Resource<notification::ReceiverSpec>;
pub type Terraform = Resource<tofu::TerraformSpec>;

pub const SOURCE_GROUP: &str = "source.toolkit.fluxcd.io";
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";
pub const HELM_GROUP: &str = "helm.toolkit.fluxcd.io";
pub const NOTIFICATION_GROUP: &str = "notification.toolkit.fluxcd.io";
pub const INFRA_GROUP: &str = "infra.contrib.fluxcd.io";

/// The kinds trueup reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FluxKind {
    GitRepository,
    HelmRepository,
    HelmChart,
    OciRepository,
    Kustomization,
    HelmRelease,
    Provider,
    Alert,
    Receiver,
    Terraform,
}

impl FluxKind {
    pub const ALL: [FluxKind; 10] = [
        FluxKind::GitRepository,
        FluxKind::HelmRepository,
        FluxKind::HelmChart,
        FluxKind::OciRepository,
        FluxKind::Kustomization,
        FluxKind::HelmRelease,
        FluxKind::Provider,
        FluxKind::Alert,
        FluxKind::Receiver,
        FluxKind::Terraform,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            FluxKind::GitRepository => "GitRepository",
            FluxKind::HelmRepository => "HelmRepository",
            FluxKind::HelmChart => "HelmChart",
            FluxKind::OciRepository => "OCIRepository",
            FluxKind::Kustomization => "Kustomization",
            FluxKind::HelmRelease => "HelmRelease",
            FluxKind::Provider => "Provider",
            FluxKind::Alert => "Alert",
            FluxKind::Receiver => "Receiver",
            FluxKind::Terraform => "Terraform",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            FluxKind::GitRepository
            | FluxKind::HelmRepository
            | FluxKind::HelmChart
            | FluxKind::OciRepository => SOURCE_GROUP,
            FluxKind::Kustomization => KUSTOMIZE_GROUP,
            FluxKind::HelmRelease => HELM_GROUP,
            FluxKind::Provider | FluxKind::Alert | FluxKind::Receiver => NOTIFICATION_GROUP,
            FluxKind::Terraform => INFRA_GROUP,
        }
    }

    /// The versions accepted for this kind; the first is the one trueup writes.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            FluxKind::GitRepository | FluxKind::HelmRepository | FluxKind::HelmChart => {
                &["v1", "v1beta2"]
            }
            FluxKind::OciRepository => &["v1", "v1beta2"],
            FluxKind::Kustomization => &["v1", "v1beta2"],
            FluxKind::HelmRelease => &["v2", "v2beta2", "v2beta1"],
            FluxKind::Provider | FluxKind::Alert => &["v1beta3", "v1beta2"],
            FluxKind::Receiver => &["v1", "v1beta3", "v1beta2"],
            FluxKind::Terraform => &["v1alpha2"],
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.versions()[0])
    }

    /// Whether this kind produces artifacts that other objects consume.
    pub fn is_source(self) -> bool {
        self.group() == SOURCE_GROUP
    }

    /// Recognises a Flux kind by group and kind (any version).
    pub fn from_group_kind(group: &str, kind: &str) -> Option<FluxKind> {
        FluxKind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.kind() == kind)
    }

    pub fn ref_to(self, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef::new(self.group(), self.kind(), namespace, name)
    }
}

impl From<FluxKind> for crate::object::GroupKind {
    fn from(k: FluxKind) -> Self {
        crate::object::GroupKind::new(k.group(), k.kind())
    }
}

impl fmt::Display for FluxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// Any of the objects trueup reconciles, typed. Variants differ in size (a HelmRelease spec is
/// large); values are short-lived parse results, so they are not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum FluxObject {
    GitRepository(GitRepository),
    HelmRepository(HelmRepository),
    HelmChart(HelmChart),
    OciRepository(OciRepository),
    Kustomization(Kustomization),
    HelmRelease(HelmRelease),
    Provider(Provider),
    Alert(Alert),
    Receiver(Receiver),
    Terraform(Terraform),
}

/// Why an object is not a valid Flux object.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error(
        "{object}: unsupported apiVersion `{api_version}` for kind {kind} (supported: {supported})"
    )]
    UnsupportedVersion {
        object: String,
        api_version: String,
        kind: String,
        supported: String,
    },
    #[error("{object}: field `{path}`: {message}")]
    Field {
        object: String,
        path: String,
        message: String,
    },
}

impl ApiError {
    /// The field path the error is about, when it is about one.
    pub fn field_path(&self) -> Option<&str> {
        match self {
            ApiError::Field { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Deserializes a typed view of an object, naming the field path of the first problem.
pub fn from_object<T: DeserializeOwned>(obj: &Object) -> Result<T, ApiError> {
    let value = Value::Object(obj.0.clone());
    from_value(&value, &obj.display_name())
}

fn from_value<T: DeserializeOwned>(value: &Value, object: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Field {
            object: object.to_string(),
            path: if path == "." { "(root)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

impl FluxObject {
    /// Reads an object as a Flux object. `Ok(None)` when its group and kind are not one of the
    /// kinds trueup reconciles (a ConfigMap, a Deployment, ...).
    pub fn from_object(obj: &Object) -> Result<Option<FluxObject>, ApiError> {
        let Some(kind) = FluxKind::from_group_kind(obj.group(), obj.kind()) else {
            return Ok(None);
        };
        if !kind.versions().contains(&obj.version()) {
            return Err(ApiError::UnsupportedVersion {
                object: obj.display_name(),
                api_version: obj.api_version().to_string(),
                kind: obj.kind().to_string(),
                supported: kind
                    .versions()
                    .iter()
                    .map(|v| format!("{}/{}", kind.group(), v))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let value = Value::Object(obj.0.clone());
        let name = obj.display_name();
        let typed = match kind {
            FluxKind::GitRepository => FluxObject::GitRepository(from_value(&value, &name)?),
            FluxKind::HelmRepository => FluxObject::HelmRepository(from_value(&value, &name)?),
            FluxKind::HelmChart => FluxObject::HelmChart(from_value(&value, &name)?),
            FluxKind::OciRepository => FluxObject::OciRepository(from_value(&value, &name)?),
            FluxKind::Kustomization => FluxObject::Kustomization(from_value(&value, &name)?),
            FluxKind::HelmRelease => FluxObject::HelmRelease(from_value(&value, &name)?),
            FluxKind::Provider => FluxObject::Provider(from_value(&value, &name)?),
            FluxKind::Alert => FluxObject::Alert(from_value(&value, &name)?),
            FluxKind::Receiver => FluxObject::Receiver(from_value(&value, &name)?),
            FluxKind::Terraform => FluxObject::Terraform(from_value(&value, &name)?),
        };
        Ok(Some(typed))
    }

    pub fn kind(&self) -> FluxKind {
        match self {
            FluxObject::GitRepository(_) => FluxKind::GitRepository,
            FluxObject::HelmRepository(_) => FluxKind::HelmRepository,
            FluxObject::HelmChart(_) => FluxKind::HelmChart,
            FluxObject::OciRepository(_) => FluxKind::OciRepository,
            FluxObject::Kustomization(_) => FluxKind::Kustomization,
            FluxObject::HelmRelease(_) => FluxKind::HelmRelease,
            FluxObject::Provider(_) => FluxKind::Provider,
            FluxObject::Alert(_) => FluxKind::Alert,
            FluxObject::Receiver(_) => FluxKind::Receiver,
            FluxObject::Terraform(_) => FluxKind::Terraform,
        }
    }
}

#[cfg(test)]
mod tests;
