//! The seam for signature verification (cosign, notation): called after the manifest is
//! resolved and before any layer is downloaded.

use super::client::OciClient;
use super::manifest::Manifest;
use super::reference::Reference;
use async_trait::async_trait;
use trueup_core::api::meta::VerificationSpec;
use trueup_core::traits::source::{Credentials, SourceError};

/// What a verifier is asked to check.
#[derive(Debug)]
pub struct VerifyRequest<'a> {
    /// The client, to fetch signatures (`sha256-<hex>.sig` tags, referrers) from the registry.
    pub client: &'a OciClient,
    pub reference: &'a Reference,
    /// The digest the ref resolved to (what signatures are made over).
    pub digest: &'a str,
    pub manifest: &'a Manifest,
    /// `spec.verify`.
    pub spec: &'a VerificationSpec,
    /// `spec.verify.secretRef`'s data, when the embedder read it.
    pub keys: Option<&'a Credentials>,
}

/// Verifies an artifact's signatures. An error stops the fetch; return
/// `SourceErrorKind::Auth`-like kinds as fits (e.g. `InvalidSpec` for a bad key).
#[async_trait]
pub trait Verifier: Send + Sync {
    async fn verify(&self, req: &VerifyRequest<'_>) -> Result<(), SourceError>;
}
