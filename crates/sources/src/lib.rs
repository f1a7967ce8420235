//! trueup's sources: they turn a Flux source spec into a revision and its content.
//!
//! [`GitSource`] (`GitRepository`, over the pure-Rust `gix`), [`OciSource`] (`OCIRepository`, and
//! [`OciClient`] to push artifacts and pull Helm charts from OCI registries), [`HelmSource`]
//! (charts from HTTP Helm repositories, with a streaming index reader). Each source implements
//! [`trueup_core::traits::source::Source`]: `resolve` is the cheap check reconcilers run every
//! interval (one round trip, no download), `fetch` writes the content of a revision into a
//! directory that the caller turns into an artifact.
//!
//! Authentication: basic and bearer credentials (Git over HTTP(S)), basic auth (Helm HTTP
//! repositories), dockerconfigjson Secrets with basic and Bearer-token flows (OCI registries and
//! `type: oci` Helm repositories). TLS is rustls with ring everywhere ([`tls`]): a Secret's
//! `ca.crt` is trusted on top of the platform roots, and its `tls.crt`/`tls.key` are presented as
//! a client certificate to servers that require one (mutual TLS) — `certSecretRef` for
//! OCIRepository and HelmRepository, `secretRef` for GitRepository, as in Flux.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use trueup_core::traits::source::{Source, SourceRequest};
//! use trueup_sources::GitSource;
//!
//! let spec: trueup_core::api::source::GitRepositorySpec = serde_yaml::from_str(
//!     "url: https://github.com/stefanprodan/podinfo\ninterval: 1m\nref: {branch: master}",
//! )?;
//! let object = trueup_core::api::FluxKind::GitRepository.ref_to("flux-system", "podinfo");
//! let req = SourceRequest { object: &object, spec: &spec, credentials: None, timeout: Duration::from_secs(60) };
//! let git = GitSource::new();
//! let rev = git.resolve(&req).await?; // e.g. "master@sha1:0123…"
//! let dir = tempfile::tempdir()?;
//! let fetched = git.fetch(&req, &rev, dir.path()).await?;
//! println!("{} -> {}", fetched.revision, dir.path().display());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod git;
pub mod helm;
pub mod oci;
pub mod semver_constraint;
pub mod tls;

pub use git::GitSource;
pub use helm::HelmSource;
pub use oci::{OciClient, OciSource};
