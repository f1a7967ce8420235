//! The OCIRepository reconciler: resolve the ref cheaply (one HEAD for a tag), pull only on a new
//! digest, apply ignore rules, store a content-addressed artifact with the manifest's
//! annotations as metadata.

use super::git::read_credentials;
use super::{invalid_spec, Outcome, Reconciler, Schedule, Verdict};
use crate::api::source::OciRepositorySpec;
use crate::api::{from_object, ApiError, FluxKind, OciRepository};
use crate::event::{Event, Severity};
use crate::object::Object;
use crate::status::{reason, Condition, ConditionStatus, Status, ARTIFACT_IN_STORAGE};
use crate::storage::ArtifactStore;
use crate::traits::source::{Credentials, SourceErrorKind, SourceRequest};
use crate::traits::{Backend, Source};
use async_trait::async_trait;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Flux's condition reason for a failed pull (`sourcev1.OCIPullFailedReason`).
pub const OCI_PULL_FAILED: &str = "OCIArtifactPullFailed";

/// The annotations Flux quotes in its events.
const ORIGIN_SOURCE: &str = "org.opencontainers.image.source";
const ORIGIN_REVISION: &str = "org.opencontainers.image.revision";

/// Reconciles OCIRepository objects with any [`Source`] that reads an `OciRepositorySpec`.
pub struct OciRepositoryReconciler<S> {
    source: S,
    store: ArtifactStore,
}

impl<S> OciRepositoryReconciler<S> {
    pub fn new(source: S, store: ArtifactStore) -> Self {
        OciRepositoryReconciler { source, store }
    }
}

/// `secretRef` (registry credentials) and `certSecretRef` (`ca.crt`, `tls.crt`, `tls.key`)
/// merged into the one set of credentials a source request carries. The cert Secret's keys are
/// disjoint from a dockerconfigjson Secret's, so nothing is shadowed in practice; on a clash the
/// credentials Secret wins.
pub async fn read_oci_credentials(
    backend: &dyn Backend,
    namespace: &str,
    spec: &OciRepositorySpec,
) -> Result<Option<Credentials>, String> {
    let creds = read_credentials(backend, namespace, spec.secret_ref.as_ref()).await?;
    let certs = read_credentials(backend, namespace, spec.cert_secret_ref.as_ref()).await?;
    Ok(match (creds, certs) {
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => Some(c),
        (Some(mut c), Some(certs)) => {
            for (k, v) in certs.0 {
                c.0.entry(k).or_insert(v);
            }
            Some(c)
        }
    })
}

fn timeout_of(spec: &OciRepositorySpec) -> Duration {
    spec.timeout
        .as_ref()
        .map(|t| t.duration())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT)
}

#[async_trait]
impl<S> Reconciler for OciRepositoryReconciler<S>
where
    S: Source<Spec = OciRepositorySpec>,
{
    fn kind(&self) -> crate::object::GroupKind {
        FluxKind::OciRepository.into()
    }

    fn schedule(&self, obj: &Object) -> Result<Schedule, ApiError> {
        let repo: OciRepository = from_object(obj)?;
        let interval = repo.spec.interval.duration().max(Duration::from_secs(1));
        Ok(Schedule {
            interval,
            retry_interval: interval.min(Duration::from_secs(30)),
            timeout: timeout_of(&repo.spec),
            suspend: repo.spec.suspend,
            depends_on: Vec::new(),
            watches: Vec::new(),
        })
    }

    async fn reconcile(&self, obj: &Object, backend: &dyn Backend) -> Outcome {
        let repo: OciRepository = match from_object(obj) {
            Ok(r) => r,
            Err(e) => return invalid_spec(obj, &e),
        };
        let status = Status::from_value(obj.status());
        let me = obj.object_ref();
        let ns = repo.namespace().to_string();
        let creds = match read_oci_credentials(backend, &ns, &repo.spec).await {
            Ok(c) => c,
            Err(msg) => {
                return Outcome::failed(obj, status, reason::AUTHENTICATION_FAILED, msg, false)
            }
        };
        let req = SourceRequest {
            object: &me,
            spec: &repo.spec,
            credentials: creds.as_ref(),
            timeout: timeout_of(&repo.spec),
        };
        let fail = |status: Status, kind: SourceErrorKind, msg: String| {
            let why = match kind {
                SourceErrorKind::Auth => reason::AUTHENTICATION_FAILED,
                SourceErrorKind::InvalidSpec => reason::INVALID_SPEC,
                _ => OCI_PULL_FAILED,
            };
            // Belt and braces: sources redact already, but the Secret's values never leave.
            let msg = super::helmchart::redact_credentials(creds.as_ref(), &msg);
            Outcome::failed(obj, status, why, msg, kind == SourceErrorKind::InvalidSpec)
        };
        let resolved = match self.source.resolve(&req).await {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    status,
                    e.kind,
                    format!("failed to determine artifact digest: {}", e.message),
                )
            }
        };

        // Unchanged digest and the archive still in storage: nothing to download.
        if let Some(current) = &status.artifact {
            if current.revision == resolved.revision && self.store.contains(current) {
                let message = format!("stored artifact for digest '{}'", resolved.revision);
                return Outcome::unchanged(obj, status, message);
            }
        }

        let tmp = match tempfile::Builder::new().prefix("trueup-oci-").tempdir() {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    status,
                    SourceErrorKind::Other,
                    format!("failed to create a working directory: {e}"),
                )
            }
        };
        let fetched = match self.source.fetch(&req, &resolved, tmp.path()).await {
            Ok(f) => f,
            Err(e) => {
                return fail(
                    status,
                    e.kind,
                    format!("failed to pull artifact: {}", e.message),
                )
            }
        };
        let archived = super::archive_fetched(
            &self.store,
            &me,
            tmp.path(),
            &fetched.revision,
            repo.spec.ignore.as_deref(),
        )
        .await;
        let mut artifact = match archived {
            Ok(a) => a,
            Err(msg) => return fail(status, SourceErrorKind::Other, msg),
        };
        artifact.metadata = fetched.metadata.clone();

        let mut status = status;
        let now = crate::time::now_rfc3339();
        let changed = status.artifact.as_ref().map(|a| &a.digest) != Some(&artifact.digest)
            || status.artifact.as_ref().map(|a| &a.revision) != Some(&artifact.revision);
        let message = format!("stored artifact for digest '{}'", artifact.revision);
        status.artifact = Some(artifact.clone());
        status.observed_generation = obj.generation();
        status.mark_ready(reason::SUCCEEDED, message.clone(), obj.generation(), &now);
        status.set_condition(
            Condition::new(
                ARTIFACT_IN_STORAGE,
                ConditionStatus::True,
                reason::SUCCEEDED,
                message,
            ),
            obj.generation(),
            &now,
        );
        let mut out = Outcome::new(Verdict::Ready, status);
        if changed {
            // Flux's event: the revision, the URL, and where the content came from when the
            // publisher said so (`flux push artifact --source --revision`).
            let mut text = format!(
                "stored artifact with revision '{}' from '{}'",
                artifact.revision, repo.spec.url
            );
            if let Some(s) = fetched.metadata.get(ORIGIN_SOURCE) {
                text.push_str(&format!(", origin source '{s}'"));
            }
            if let Some(r) = fetched.metadata.get(ORIGIN_REVISION) {
                text.push_str(&format!(", origin revision '{r}'"));
            }
            out.events.push(
                Event::new(me, Severity::Info, reason::NEW_ARTIFACT, text)
                    .with_revision(artifact.revision),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::traits::source::{FetchedRevision, SourceError};
    use crate::traits::ApplyOptions;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;

    type Tags = BTreeMap<String, (String, Vec<(String, String)>)>;

    /// A registry in memory: tag → (digest, files); counts resolves and fetches, records the
    /// credentials it was given.
    #[derive(Default)]
    struct FakeRegistry {
        tags: Mutex<Tags>,
        resolves: Mutex<usize>,
        fetches: Mutex<usize>,
        seen_creds: Mutex<Option<Credentials>>,
        fail: Mutex<Option<SourceError>>,
    }

    impl FakeRegistry {
        fn push(&self, tag: &str, digest_hex: char, files: &[(&str, &str)]) {
            self.tags.lock().unwrap().insert(
                tag.into(),
                (
                    format!("sha256:{}", digest_hex.to_string().repeat(64)),
                    files
                        .iter()
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect(),
                ),
            );
        }
    }

    fn tag_of(spec: &OciRepositorySpec) -> String {
        spec.reference
            .as_ref()
            .and_then(|r| r.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    #[async_trait]
    impl Source for FakeRegistry {
        type Spec = OciRepositorySpec;

        async fn resolve(
            &self,
            req: &SourceRequest<'_, OciRepositorySpec>,
        ) -> Result<FetchedRevision, SourceError> {
            *self.resolves.lock().unwrap() += 1;
            *self.seen_creds.lock().unwrap() = req.credentials.cloned();
            if let Some(e) = self.fail.lock().unwrap().take() {
                return Err(e);
            }
            let tag = tag_of(req.spec);
            let tags = self.tags.lock().unwrap();
            let (digest, _) = tags.get(&tag).ok_or_else(|| {
                SourceError::new(
                    SourceErrorKind::NotFound,
                    format!("tag '{tag}' not found in '{}'", req.spec.url),
                )
            })?;
            Ok(FetchedRevision {
                revision: format!("{tag}@{digest}"),
                metadata: BTreeMap::new(),
            })
        }

        async fn fetch(
            &self,
            req: &SourceRequest<'_, OciRepositorySpec>,
            revision: &FetchedRevision,
            dir: &Path,
        ) -> Result<FetchedRevision, SourceError> {
            *self.fetches.lock().unwrap() += 1;
            let tag = tag_of(req.spec);
            let files = self.tags.lock().unwrap()[&tag].1.clone();
            for (p, c) in files {
                let p = dir.join(p);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, c).unwrap();
            }
            Ok(FetchedRevision {
                revision: revision.revision.clone(),
                metadata: BTreeMap::from([
                    (
                        ORIGIN_SOURCE.to_string(),
                        "https://github.com/org/fleet".to_string(),
                    ),
                    (ORIGIN_REVISION.to_string(), "main@sha1:abc".to_string()),
                ]),
            })
        }
    }

    fn repo(spec: serde_json::Value) -> Object {
        Object::from_value(json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": {"name": "app", "namespace": "flux-system", "generation": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    fn with_status(obj: &Object, status: &Status) -> Object {
        let mut o = obj.clone();
        o.0.insert("status".into(), status.to_value());
        o
    }

    #[tokio::test]
    async fn stores_artifact_then_skips_unchanged_digest() {
        let storage = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(storage.path()).unwrap();
        let fake = FakeRegistry::default();
        fake.push("v1", 'a', &[("app.yaml", "a: 1\n"), ("secret.env", "x")]);
        let r = OciRepositoryReconciler::new(fake, store.clone());
        let backend = MemoryBackend::new();
        let obj = repo(
            json!({"url": "oci://r.example/app", "interval": "5m", "ref": {"tag": "v1"}, "ignore": "*.env"}),
        );
        assert_eq!(r.schedule(&obj).unwrap().interval, Duration::from_secs(300));

        let out = r.reconcile(&obj, &backend).await;
        assert_eq!(out.verdict, Verdict::Ready);
        let rev = format!("v1@sha256:{}", "a".repeat(64));
        let ready = out.status.condition(crate::status::READY).unwrap();
        assert_eq!(ready.message, format!("stored artifact for digest '{rev}'"));
        assert!(out.status.condition(ARTIFACT_IN_STORAGE).is_some());
        let artifact = out.status.artifact.clone().unwrap();
        assert_eq!(artifact.revision, rev);
        assert_eq!(
            artifact.metadata.get(ORIGIN_REVISION).map(String::as_str),
            Some("main@sha1:abc")
        );
        let unpacked = store.unpacked(&artifact).unwrap();
        assert_eq!(
            std::fs::read_to_string(unpacked.join("app.yaml")).unwrap(),
            "a: 1\n"
        );
        assert!(!unpacked.join("secret.env").exists(), "ignore applies");
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].reason, reason::NEW_ARTIFACT);
        assert!(out.events[0].message.contains(&rev));
        assert!(out.events[0]
            .message
            .contains("origin revision 'main@sha1:abc'"));

        // Same digest: resolve only, no fetch, no event.
        let obj2 = with_status(&obj, &out.status);
        let out2 = r.reconcile(&obj2, &backend).await;
        assert_eq!(out2.verdict, Verdict::Ready);
        assert!(out2.events.is_empty());
        assert_eq!(*r.source.resolves.lock().unwrap(), 2);
        assert_eq!(*r.source.fetches.lock().unwrap(), 1);

        // New digest under the same tag: pulled again, new event.
        r.source.push("v1", 'b', &[("app.yaml", "a: 2\n")]);
        let out3 = r.reconcile(&obj2, &backend).await;
        assert_eq!(out3.verdict, Verdict::Ready);
        assert_eq!(*r.source.fetches.lock().unwrap(), 2);
        assert_eq!(out3.events.len(), 1);
        assert_ne!(out3.status.artifact.unwrap().digest, artifact.digest);
    }

    #[tokio::test]
    async fn failures_map_to_conditions() {
        let storage = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(storage.path()).unwrap();
        let r = OciRepositoryReconciler::new(FakeRegistry::default(), store);
        let backend = MemoryBackend::new();
        let obj =
            repo(json!({"url": "oci://r.example/app", "interval": "1m", "ref": {"tag": "v9"}}));
        let out = r.reconcile(&obj, &backend).await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: false });
        let ready = out.status.condition(crate::status::READY).unwrap();
        assert_eq!(ready.reason, OCI_PULL_FAILED);
        assert!(
            ready.message.contains("tag 'v9' not found"),
            "{}",
            ready.message
        );
        assert_eq!(out.events[0].severity, Severity::Error);

        *r.source.fail.lock().unwrap() = Some(SourceError::new(
            SourceErrorKind::Auth,
            "authentication failed for hunter22",
        ));
        let secret = Object::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "regcred", "namespace": "flux-system"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{\"auths\":{\"r.example\":{\"username\":\"u\",\"password\":\"hunter22\"}}}"}}))
        .unwrap();
        backend
            .apply(&secret, &ApplyOptions::default())
            .await
            .unwrap();
        let ca = Object::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "ca", "namespace": "flux-system"},
            "stringData": {"ca.crt": "PEM"}}))
        .unwrap();
        backend.apply(&ca, &ApplyOptions::default()).await.unwrap();
        let obj = repo(json!({"url": "oci://r.example/app", "interval": "1m",
            "secretRef": {"name": "regcred"}, "certSecretRef": {"name": "ca"}}));
        let out = r.reconcile(&obj, &backend).await;
        let ready = out.status.condition(crate::status::READY).unwrap();
        assert_eq!(ready.reason, reason::AUTHENTICATION_FAILED);
        // The password inside the dockerconfigjson is redacted, not only the whole value.
        assert!(!ready.message.contains("hunter22"), "{}", ready.message);
        assert!(ready.message.contains("*****"), "{}", ready.message);
        let seen = r.source.seen_creds.lock().unwrap().clone().unwrap();
        assert!(seen.0.contains_key(".dockerconfigjson"));
        assert_eq!(seen.get_str("ca.crt"), Some("PEM"));

        *r.source.fail.lock().unwrap() = Some(SourceError::new(
            SourceErrorKind::InvalidSpec,
            "spec.verify is not supported yet",
        ));
        let out = r.reconcile(&obj, &backend).await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: true });
        assert_eq!(
            out.status.condition(crate::status::READY).unwrap().reason,
            reason::INVALID_SPEC
        );

        let obj = repo(
            json!({"url": "oci://r.example/app", "interval": "1m", "secretRef": {"name": "missing"}}),
        );
        let out = r.reconcile(&obj, &backend).await;
        let ready = out.status.condition(crate::status::READY).unwrap();
        assert_eq!(ready.reason, reason::AUTHENTICATION_FAILED);
        assert!(ready.message.contains("missing"), "{}", ready.message);

        let bad = repo(json!({"url": "oci://r.example/app"}));
        let out = r.reconcile(&bad, &backend).await;
        assert_eq!(out.verdict, Verdict::Failed { stalled: true });
    }
}
