//! Publishing: `flux push artifact`-compatible artifacts from a directory, tagging, listing.

use super::client::OciClient;
use super::manifest::{self, Descriptor, Manifest};
use super::reference::{valid_tag, Reference};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::Path;
use trueup_core::traits::source::{SourceError, SourceErrorKind};

/// What goes with a pushed artifact besides its content.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// `org.opencontainers.image.source`, e.g. the Git URL the content came from.
    pub source: String,
    /// `org.opencontainers.image.revision`, e.g. `main@sha1:<commit>`.
    pub revision: String,
    /// `org.opencontainers.image.created`; default: now, in RFC 3339 (as `flux push artifact`).
    /// Set a fixed value for reproducible manifest digests.
    pub created: Option<String>,
    /// More manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// One layer of a manifest pushed with [`OciClient::push_manifest_with_blobs`].
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Bytes,
    pub annotations: BTreeMap<String, String>,
}

impl Blob {
    pub fn new(media_type: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Blob {
            media_type: media_type.into(),
            bytes: bytes.into(),
            annotations: BTreeMap::new(),
        }
    }
}

fn invalid(msg: String) -> SourceError {
    SourceError::new(SourceErrorKind::InvalidSpec, msg)
}

fn tagged(url: &str) -> Result<(Reference, String), SourceError> {
    let r = Reference::parse(url)?;
    let Some(tag) = r.tag.clone() else {
        return Err(invalid(format!(
            "'{}': a tag is required to push (oci://host/repo:tag)",
            r.repo_url()
        )));
    };
    if r.digest.is_some() {
        return Err(invalid(format!(
            "'{}': cannot push to a digest, give a tag",
            r.repo_url()
        )));
    }
    Ok((r, tag))
}

impl OciClient {
    /// Packs `dir` into a deterministic tar.gz and pushes it as `url` (`oci://host/repo:tag`)
    /// the way `flux push artifact` does: config `application/vnd.cncf.flux.config.v1+json`,
    /// one layer `application/vnd.cncf.flux.content.v1.tar+gzip`, annotations for the source,
    /// the revision and the creation time. Returns the manifest digest (`sha256:<hex>`), so an
    /// OCIRepository then resolves to `<tag>@<digest>`.
    pub async fn push_artifact(
        &self,
        dir: &Path,
        url: &str,
        source: &str,
        revision: &str,
    ) -> Result<String, SourceError> {
        let opts = PushOptions {
            source: source.to_string(),
            revision: revision.to_string(),
            ..Default::default()
        };
        self.push_artifact_with(dir, url, &opts).await
    }

    /// [`OciClient::push_artifact`] with every option.
    pub async fn push_artifact_with(
        &self,
        dir: &Path,
        url: &str,
        opts: &PushOptions,
    ) -> Result<String, SourceError> {
        let (r, tag) = tagged(url)?;
        let dir_owned = dir.to_path_buf();
        // Packing reads the whole tree: off the async threads.
        let layer = tokio::task::spawn_blocking(move || {
            trueup_core::storage::pack_dir(&dir_owned, &trueup_core::storage::keep_all)
        })
        .await
        .map_err(|e| SourceError::new(SourceErrorKind::Other, format!("packing failed: {e}")))?
        .map_err(|e| {
            SourceError::new(
                SourceErrorKind::Other,
                format!("failed to pack '{}': {e}", dir.display()),
            )
        })?;
        let mut annotations = opts.annotations.clone();
        annotations.insert(
            manifest::ANNOTATION_CREATED.into(),
            opts.created
                .clone()
                .unwrap_or_else(trueup_core::time::now_rfc3339),
        );
        if !opts.source.is_empty() {
            annotations.insert(manifest::ANNOTATION_SOURCE.into(), opts.source.clone());
        }
        if !opts.revision.is_empty() {
            annotations.insert(manifest::ANNOTATION_REVISION.into(), opts.revision.clone());
        }
        self.push_manifest_with_blobs(
            &r,
            &tag,
            Blob::new(manifest::FLUX_CONFIG, Bytes::from_static(b"{}")),
            vec![Blob::new(manifest::FLUX_CONTENT, layer)],
            annotations,
        )
        .await
    }

    /// Pushes an OCI image manifest with the given config and layers under `tag`: each blob is
    /// uploaded unless the registry has it already. Returns the manifest digest. The building
    /// block for artifacts of any kind (Helm charts, plain tarballs).
    pub async fn push_manifest_with_blobs(
        &self,
        r: &Reference,
        tag: &str,
        config: Blob,
        layers: Vec<Blob>,
        annotations: BTreeMap<String, String>,
    ) -> Result<String, SourceError> {
        if !valid_tag(tag) {
            return Err(invalid(format!("'{}': invalid tag '{tag}'", r.repo_url())));
        }
        let config_desc = self
            .push_blob(r, &config.media_type, config.bytes.clone())
            .await?;
        let mut layer_descs: Vec<Descriptor> = Vec::new();
        for l in layers {
            let mut d = self.push_blob(r, &l.media_type, l.bytes.clone()).await?;
            d.annotations = l.annotations;
            layer_descs.push(d);
        }
        let m = Manifest {
            schema_version: 2,
            media_type: Some(manifest::OCI_MANIFEST.to_string()),
            config: config_desc,
            layers: layer_descs,
            annotations,
        };
        let raw = serde_json::to_vec(&m).map_err(|e| {
            SourceError::new(SourceErrorKind::Other, format!("encoding manifest: {e}"))
        })?;
        self.put_manifest(r, Some(tag), manifest::OCI_MANIFEST, Bytes::from(raw))
            .await
    }

    /// Points `new_tag` at what `url` (`oci://host/repo:tag` or `@sha256:…`) points at, by
    /// putting the very same manifest bytes under the new tag. Returns the digest.
    pub async fn tag(&self, url: &str, new_tag: &str) -> Result<String, SourceError> {
        let r = Reference::parse(url)?;
        let m = self.get_manifest(&r).await?;
        self.put_manifest(&r, Some(new_tag), &m.media_type, m.raw)
            .await
    }

    /// The tags of `url`'s repository (any tag or digest in the URL is ignored), in the
    /// registry's order (lexical for the distribution registry), all pages.
    pub async fn list_tags(&self, url: &str) -> Result<Vec<String>, SourceError> {
        let r = Reference::parse(url)?;
        self.tags(&r).await
    }
}
