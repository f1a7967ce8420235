//! The OCI image-spec and Docker v2 schema 2 documents trueup reads and writes: manifests,
//! indexes (manifest lists) and descriptors. Unknown fields are ignored (registries and tools
//! add their own); only what trueup needs is typed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What `flux push artifact` writes.
pub const FLUX_CONFIG: &str = "application/vnd.cncf.flux.config.v1+json";
pub const FLUX_CONTENT: &str = "application/vnd.cncf.flux.content.v1.tar+gzip";

/// What `helm push` writes.
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Annotations `flux push artifact` sets and Flux keeps in the artifact metadata.
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// The `Accept` header for manifest requests: every manifest kind trueup can read. Schema 1 is
/// left out on purpose: it is deprecated and registries convert on the fly when it is not asked.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI image manifest or a Docker v2 schema 2 manifest (same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index or a Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest document as read from a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Parses a manifest body. The media type comes from the `Content-Type` header or, when the
/// registry sent a generic one, from the document's own `mediaType`; as a last resort the shape
/// decides (an index has `manifests`, a manifest has `config`).
pub fn parse_document(content_type: Option<&str>, body: &[u8]) -> Result<Document, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| is_manifest_type(c) || is_index_type(c))
        .or_else(|| {
            value
                .get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        });
    let is_index = match ct.as_deref() {
        Some(c) if is_index_type(c) => true,
        Some(c) if is_manifest_type(c) => false,
        Some("application/vnd.docker.distribution.manifest.v1+json")
        | Some("application/vnd.docker.distribution.manifest.v1+prettyjws") => {
            return Err("Docker schema 1 manifests are not supported".into())
        }
        _ => value.get("manifests").is_some(),
    };
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err("unsupported manifest schemaVersion (want 2)".into());
    }
    if is_index {
        serde_json::from_value(value)
            .map(Document::Index)
            .map_err(|e| format!("invalid image index: {e}"))
    } else {
        serde_json::from_value(value)
            .map(Document::Manifest)
            .map_err(|e| format!("invalid image manifest: {e}"))
    }
}

pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Picks the manifest of an index that trueup pulls: linux/amd64 (what Flux's controllers run
/// on and what multi-arch artifacts are most often built for), or the only one.
pub fn pick_from_index(index: &Index) -> Option<&Descriptor> {
    let manifests: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type.is_empty() || is_manifest_type(&d.media_type))
        .collect();
    if let Some(d) = manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    }) {
        return Some(d);
    }
    if manifests.len() == 1 {
        return Some(manifests[0]);
    }
    None
}

/// Whether `digest` is a well-formed `sha256:<64 lowercase hex>` (the only algorithm trueup
/// verifies; accepting others would mean skipping verification).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_content_type_and_shape() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":2},"layers":[]}"#;
        assert!(matches!(
            parse_document(Some(OCI_MANIFEST), m),
            Ok(Document::Manifest(_))
        ));
        assert!(matches!(
            parse_document(Some("application/json"), m),
            Ok(Document::Manifest(_))
        ));
        let i = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:01","size":3,"platform":{"os":"linux","architecture":"arm64"}}]}"#;
        let Ok(Document::Index(idx)) = parse_document(None, i) else {
            panic!("index")
        };
        assert_eq!(
            pick_from_index(&idx).map(|d| d.digest.as_str()),
            Some("sha256:01")
        );
        assert!(parse_document(None, b"not json").is_err());
        assert!(parse_document(None, br#"{"schemaVersion":1}"#).is_err());
    }

    #[test]
    fn picks_linux_amd64() {
        let d = |digest: &str, arch: &str| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            }),
            annotations: BTreeMap::new(),
        };
        let idx = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![d("sha256:a", "arm64"), d("sha256:b", "amd64")],
            annotations: BTreeMap::new(),
        };
        assert_eq!(pick_from_index(&idx).unwrap().digest, "sha256:b");
        let idx = Index {
            manifests: vec![d("sha256:a", "arm64"), d("sha256:c", "s390x")],
            ..idx
        };
        assert!(pick_from_index(&idx).is_none());
    }

    #[test]
    fn digests() {
        assert!(is_sha256_digest(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_sha256_digest("sha512:00"));
        assert!(!is_sha256_digest("sha256:../../etc"));
    }
}
