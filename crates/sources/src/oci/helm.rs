//! Helm charts stored in OCI registries (`helm push`, HelmRepository `type: oci`).
//!
//! Charts live at `oci://<host>/<path>/<chart name>`, one tag per chart version. OCI tags cannot
//! hold `+`, so Helm writes a version's build metadata with `_` (`1.2.3+build.1` is tagged
//! `1.2.3_build.1`), and reads it back the same way.

use super::client::OciClient;
use super::manifest::{self, Descriptor};
use super::reference::Reference;
use crate::semver_constraint::{parse_version, Constraint};
use trueup_core::traits::source::{SourceError, SourceErrorKind};

/// The chart layer media type Helm 3.8+ writes, and the one Helm 3.0–3.7 wrote.
const LEGACY_HELM_CHART: &str = "application/tar+gzip";

/// A chart version resolved in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartVersion {
    /// The chart version (`1.2.3+build.1`).
    pub version: String,
    /// The tag it is stored under (`1.2.3_build.1`).
    pub tag: String,
    /// The manifest digest (`sha256:<hex>`).
    pub digest: String,
}

/// A chart pulled from a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciChart {
    pub version: ChartVersion,
    /// The chart archive (`<name>-<version>.tgz` as `helm package` wrote it), digest-verified.
    pub tgz: Vec<u8>,
    /// The manifest's annotations.
    pub annotations: std::collections::BTreeMap<String, String>,
}

fn tag_of(version: &str) -> String {
    version.replace('+', "_")
}

impl OciClient {
    /// The chart version a constraint selects, without downloading anything: an exact version
    /// (`1.2.3`, `1.2.3+b`) is looked up by its tag with one HEAD request, as Helm does; a
    /// constraint (`^1.2`, `>=1.0.0 <2`) or no version (the latest stable one, as `*`) lists the
    /// repository's tags and picks the highest match. Use it as the cheap `resolve` step.
    pub async fn resolve_chart_version(
        &self,
        url: &str,
        version: Option<&str>,
    ) -> Result<ChartVersion, SourceError> {
        let r = Reference::parse(url)?;
        let version = version.map(str::trim).filter(|v| !v.is_empty());
        if let Some(v) = version.filter(|v| semver::Version::parse(v).is_ok()) {
            let tag = tag_of(v);
            let digest = self
                .head_manifest(&r.with_tag(&tag))
                .await
                .map_err(|mut e| {
                    if e.kind == SourceErrorKind::NotFound {
                        e.message = format!(
                            "chart '{}' version '{v}' not found: {}",
                            r.repo_url(),
                            e.message
                        );
                    }
                    e
                })?;
            return Ok(ChartVersion {
                version: v.to_string(),
                tag,
                digest,
            });
        }
        let constraint = Constraint::parse(version.unwrap_or("*")).map_err(|e| {
            SourceError::new(
                SourceErrorKind::InvalidSpec,
                format!("chart '{}': {e}", r.repo_url()),
            )
        })?;
        let tags = self.tags(&r).await?;
        // Helm's `_` for `+`, undone before comparing versions.
        let versions: Vec<String> = tags.iter().map(|t| t.replace('_', "+")).collect();
        let best = constraint
            .best(versions.iter().map(String::as_str))
            .ok_or_else(|| {
                SourceError::new(
                    SourceErrorKind::NotFound,
                    format!(
                        "chart '{}': no version matches '{}' among {} tags",
                        r.repo_url(),
                        constraint,
                        tags.len()
                    ),
                )
            })?;
        let idx = versions.iter().position(|v| v == best).unwrap_or(0);
        let tag = tags.get(idx).cloned().unwrap_or_else(|| tag_of(best));
        let digest = self.head_manifest(&r.with_tag(&tag)).await?;
        let version = parse_version(best)
            .map(|v| v.to_string())
            .unwrap_or_else(|| best.to_string());
        Ok(ChartVersion {
            version,
            tag,
            digest,
        })
    }

    /// Resolves a chart version in an OCI registry and downloads it.
    ///
    /// `url` is the chart's repository, `oci://<host>/<path>/<chart name>` (a HelmRepository
    /// `type: oci` URL joined with the chart name); `version` is a Helm version constraint
    /// (`None` or empty: the latest stable version). Tags follow Helm's `+` → `_` convention.
    /// The manifest's chart layer (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`, or
    /// Helm 3.0–3.7's `application/tar+gzip`) is returned as the chart `.tgz` bytes, verified
    /// against its digest and the client's blob size limit.
    ///
    /// Errors: `NotFound` for a missing repository, version or chart layer; `Auth` for
    /// credentials; `InvalidSpec` for a bad URL or constraint.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use trueup_sources::oci::{OciClient, OciClientOptions};
    /// let client = OciClient::new(OciClientOptions::default())?;
    /// let chart = client.resolve_chart("oci://ghcr.io/stefanprodan/charts/podinfo", Some("6.x")).await?;
    /// println!("{} ({} bytes)", chart.version.version, chart.tgz.len());
    /// # Ok(()) }
    /// ```
    pub async fn resolve_chart(
        &self,
        url: &str,
        version: Option<&str>,
    ) -> Result<OciChart, SourceError> {
        let resolved = self.resolve_chart_version(url, version).await?;
        self.pull_chart(url, resolved).await
    }

    /// Downloads the chart archive of a version found by [`OciClient::resolve_chart_version`].
    pub async fn pull_chart(
        &self,
        url: &str,
        version: ChartVersion,
    ) -> Result<OciChart, SourceError> {
        let r = Reference::parse(url)?
            .with_tag(&version.tag)
            .with_digest(&version.digest);
        let (_, _, m) = self.resolve_image(&r).await?;
        let layer: &Descriptor = m
            .layers
            .iter()
            .find(|l| l.media_type == manifest::HELM_CHART)
            .or_else(|| m.layers.iter().find(|l| l.media_type == LEGACY_HELM_CHART))
            .ok_or_else(|| {
                SourceError::new(
                    SourceErrorKind::NotFound,
                    format!(
                        "chart '{}' version '{}': not a Helm chart, no layer of media type '{}'",
                        r.repo_url(),
                        version.version,
                        manifest::HELM_CHART
                    ),
                )
            })?;
        let tgz = self.get_blob(&r, layer).await?;
        Ok(OciChart {
            version,
            tgz,
            annotations: m.annotations,
        })
    }
}
