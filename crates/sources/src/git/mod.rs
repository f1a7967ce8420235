//! `GitRepository` over gix (pure Rust).
//!
//! * [`GitSource::resolve`]: one connection, a handshake and an `ls-refs` limited to the ref asked
//!   for (all tags for semver): no objects are downloaded. A commit ref resolves without any
//!   network access, since the revision is the commit itself.
//! * [`GitSource::fetch`]: a new temporary bare repository, a depth-1 fetch of just that ref
//!   (or of the commit by id, falling back to the branch's full history on servers that refuse
//!   ids), then the commit's tree is written into the target directory.
//!
//! The blocking gix work runs on tokio's blocking pool under the request's timeout; HTTP
//! requests and `git://` sockets carry the same timeout so a stalled server frees the thread too.
//! Nothing reads the user's or system's git configuration (credential helpers, URL rewrites,
//! proxies): the spec and its Secret are the whole input.

mod checkout;
mod reference;
mod transport;

pub use checkout::CheckoutError;
pub use reference::{Target, DEFAULT_BRANCH};
pub use transport::display_url;

use async_trait::async_trait;
use gix::protocol::handshake::Ref;
use gix::remote::Direction;
use gix::ObjectId;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use transport::{Auth, Scheme};
use trueup_core::api::source::GitRepositorySpec;
use trueup_core::traits::source::{
    Credentials, FetchedRevision, Source, SourceError, SourceErrorKind, SourceRequest,
};

/// Flux's default `spec.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Metadata keys of a fetched revision.
pub const META_COMMIT: &str = "git.commit";
pub const META_SUBJECT: &str = "git.subject";
pub const META_AUTHOR: &str = "git.author";
pub const META_SUBMODULES: &str = "git.submodules";

/// The Git source. Stateless: every call starts from a fresh temporary repository.
#[derive(Debug, Clone, Default)]
pub struct GitSource {
    _private: (),
}

impl GitSource {
    pub fn new() -> Self {
        GitSource::default()
    }

    /// The timeout for `spec`: its `timeout`, or Flux's default of 60s.
    pub fn timeout_for(spec: &GitRepositorySpec) -> Duration {
        spec.timeout
            .as_ref()
            .map(|t| t.duration())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// Everything the blocking part needs, owned (it moves to another thread).
struct Job {
    shown_url: String,
    scheme: Scheme,
    parsed: gix::Url,
    target: Target,
    auth: Auth,
    timeout: Duration,
    sparse: Vec<String>,
    recurse_submodules: bool,
    interrupt: Arc<AtomicBool>,
}

impl Job {
    fn new(req: &SourceRequest<'_, GitRepositorySpec>) -> Result<Job, SourceError> {
        let spec = req.spec;
        let (scheme, parsed) = transport::check_url(&spec.url)?;
        unsupported(spec)?;
        let target = Target::from_spec(spec.reference.as_ref())?;
        let auth = Auth::from_credentials(
            req.credentials,
            spec.secret_ref.as_ref().map(|r| r.name.as_str()),
        )?;
        let timeout = if req.timeout.is_zero() {
            GitSource::timeout_for(spec)
        } else {
            req.timeout
        };
        Ok(Job {
            shown_url: transport::display_url(&spec.url),
            scheme,
            parsed,
            target,
            auth,
            timeout,
            sparse: spec.sparse_checkout.clone(),
            recurse_submodules: spec.recurse_submodules,
            interrupt: Arc::new(AtomicBool::new(false)),
        })
    }

    fn err(
        &self,
        kind: SourceErrorKind,
        what: &str,
        detail: impl std::fmt::Display,
    ) -> SourceError {
        // Lower layers quote URLs in their errors, and a URL may carry credentials.
        let detail = transport::scrub_userinfo(&detail.to_string());
        SourceError::new(kind, format!("{what} '{}': {detail}", self.shown_url))
    }
}

/// Runs `work` on the blocking pool under the job's timeout; on timeout the work is told to stop.
async fn run_blocking<T: Send + 'static>(
    job: Job,
    creds: Option<&Credentials>,
    work: impl FnOnce(&Job) -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    let timeout = job.timeout;
    let interrupt = job.interrupt.clone();
    let shown = job.shown_url.clone();
    let what = job.target.describe();
    let handle = tokio::task::spawn_blocking(move || work(&job));
    let result = match tokio::time::timeout(timeout, handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(SourceError::new(
            SourceErrorKind::Other,
            format!("git worker failed: {join}"),
        )),
        Err(_) => {
            interrupt.store(true, Ordering::Relaxed);
            Err(SourceError::new(
                SourceErrorKind::Timeout,
                format!("timed out after {timeout:?} on '{shown}' ({what})"),
            ))
        }
    };
    // Belt and braces: whatever a lower layer put in a message, the Secret's values never leave.
    result.map_err(|mut e| {
        if let Some(c) = creds {
            e.message = c.redact(&e.message);
        }
        e
    })
}

#[async_trait]
impl Source for GitSource {
    type Spec = GitRepositorySpec;

    async fn resolve(
        &self,
        req: &SourceRequest<'_, GitRepositorySpec>,
    ) -> Result<FetchedRevision, SourceError> {
        let job = Job::new(req)?;
        if let Target::Commit { commit, .. } = &job.target {
            // The revision of a commit is the commit: nothing to ask the server.
            return Ok(FetchedRevision {
                revision: job.target.revision(None, commit),
                metadata: BTreeMap::new(),
            });
        }
        run_blocking(job, req.credentials, |job| {
            let (label, commit) = resolve_blocking(job)?;
            Ok(FetchedRevision {
                revision: job.target.revision(label.as_deref(), &commit.to_string()),
                metadata: BTreeMap::new(),
            })
        })
        .await
    }

    async fn fetch(
        &self,
        req: &SourceRequest<'_, GitRepositorySpec>,
        revision: &FetchedRevision,
        dir: &Path,
    ) -> Result<FetchedRevision, SourceError> {
        let job = Job::new(req)?;
        let dir = dir.to_path_buf();
        let resolved = revision.revision.clone();
        run_blocking(job, req.credentials, move |job| {
            fetch_blocking(job, &resolved, &dir)
        })
        .await
    }
}

/// A fresh bare repository that reads no configuration but its own.
fn temp_repo() -> Result<(tempfile::TempDir, gix::Repository), SourceError> {
    let other = |e: &dyn std::fmt::Display| {
        SourceError::new(SourceErrorKind::Other, format!("temporary repository: {e}"))
    };
    let tmp = tempfile::Builder::new()
        .prefix("trueup-git-")
        .tempdir()
        .map_err(|e| other(&e))?;
    let repo = gix::ThreadSafeRepository::init_opts(
        tmp.path(),
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .map_err(|e| other(&e))?
    .to_thread_local();
    Ok((tmp, repo))
}

type Conn<'r> = gix::remote::Connection<
    'r,
    'static,
    'r,
    Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
>;

/// Opens a connection to the remote, configured for the job (auth, TLS, timeouts, no prompts).
fn connect<'r>(job: &Job, remote: &'r gix::Remote<'r>) -> Result<Conn<'r>, SourceError> {
    let conn = match job.scheme {
        Scheme::Git => {
            let t = transport::git_daemon_transport(&job.parsed, job.timeout).map_err(|e| {
                classify_io(job, &e).unwrap_or_else(|| {
                    job.err(SourceErrorKind::Unreachable, "unable to connect to", e)
                })
            })?;
            remote.to_connection_with_transport(t)
        }
        _ => remote
            .connect(Direction::Fetch)
            .map_err(|e| classify(job, "unable to connect to", &e))?,
    };
    let conn = match job.scheme {
        Scheme::Http | Scheme::Https => {
            let opts = transport::http_options(&job.auth, job.timeout)?;
            conn.with_transport_options(Box::new(opts))
        }
        _ => conn,
    };
    // Never run credential helpers or prompt: the Secret, sent pre-emptively, is the only source.
    Ok(conn.with_credentials(|_| Ok(None)))
}

fn make_remote<'r>(
    job: &Job,
    repo: &'r gix::Repository,
    refspecs: &[String],
) -> Result<gix::Remote<'r>, SourceError> {
    let invalid = |e: gix::Error| job.err(SourceErrorKind::InvalidSpec, "invalid remote", e);
    repo.remote_at_without_url_rewrite(job.parsed.clone())
        .map_err(invalid)?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(refspecs.iter().map(String::as_str), Direction::Fetch)
        .map_err(invalid)
}

/// The commit a listed ref points at (peeled through annotated tags).
fn ref_commit(r: &Ref) -> Option<(&str, ObjectId)> {
    let (name, target, peeled) = r.unpack();
    let name = std::str::from_utf8(name.as_ref()).ok()?;
    Some((name, peeled.or(target)?.to_owned()))
}

/// The refspecs to list for the job's target.
fn list_specs(target: &Target) -> Vec<String> {
    match target {
        Target::Semver(_) => vec!["refs/tags/*:refs/tags/*".to_string()],
        other => other.full_ref().into_iter().collect(),
    }
}

/// Picks the ref for the target from a listing: (label for the revision, full ref, commit).
fn select(job: &Job, refs: &[Ref]) -> Result<(Option<String>, String, ObjectId), SourceError> {
    let listed = refs.iter().filter_map(ref_commit);
    match &job.target {
        Target::Semver(c) => {
            let tags: BTreeMap<&str, ObjectId> = listed
                .filter_map(|(n, id)| n.strip_prefix("refs/tags/").map(|t| (t, id)))
                .collect();
            let best = c.best(tags.keys().copied()).ok_or_else(|| {
                job.err(
                    SourceErrorKind::NotFound,
                    "unable to resolve",
                    format!(
                        "no tag matches semver constraint '{c}' (among {} tags)",
                        tags.len()
                    ),
                )
            })?;
            Ok((
                Some(best.to_string()),
                format!("refs/tags/{best}"),
                tags[best],
            ))
        }
        target => {
            let want = target.full_ref().unwrap_or_default();
            let found = listed
                .into_iter()
                .find(|(n, _)| *n == want)
                .map(|(_, id)| id);
            found.map(|id| (None, want.clone(), id)).ok_or_else(|| {
                job.err(
                    SourceErrorKind::NotFound,
                    "unable to clone",
                    format!(
                        "couldn't find remote ref \"{want}\" ({})",
                        target.describe()
                    ),
                )
            })
        }
    }
}

/// The cheap check: handshake and `ls-refs`, nothing downloaded.
fn resolve_blocking(job: &Job) -> Result<(Option<String>, ObjectId), SourceError> {
    let (_tmp, repo) = temp_repo()?;
    let remote = make_remote(job, &repo, &list_specs(&job.target))?;
    let conn = connect(job, &remote)?;
    let (map, _) = conn
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| classify(job, "unable to list refs of", &e))?;
    let (label, _, id) = select(job, &map.remote_refs)?;
    Ok((label, id))
}

fn depth1() -> gix::remote::fetch::Shallow {
    gix::remote::fetch::Shallow::DepthAtRemote(std::num::NonZeroU32::MIN)
}

/// Fetches with `refspecs` into `repo`; returns the listing the fetch was based on.
fn fetch_into(
    job: &Job,
    repo: &gix::Repository,
    refspecs: &[String],
    shallow: gix::remote::fetch::Shallow,
    check: impl FnOnce(&[Ref]) -> Result<(), SourceError>,
) -> Result<Vec<Ref>, SourceError> {
    let remote = make_remote(job, repo, refspecs)?;
    let conn = connect(job, &remote)?;
    let prepare = conn
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| classify(job, "unable to list refs of", &e))?;
    check(&prepare.ref_map().remote_refs)?;
    let outcome = prepare
        .with_shallow(shallow)
        .receive(gix::progress::Discard, &job.interrupt)
        .map_err(|e| classify(job, "unable to fetch from", &e))?;
    Ok(outcome.ref_map.remote_refs)
}

fn fetch_blocking(job: &Job, resolved: &str, dir: &Path) -> Result<FetchedRevision, SourceError> {
    let (_tmp, repo) = temp_repo()?;
    let (label, commit) = match &job.target {
        Target::Commit { commit, branch } => {
            let id = ObjectId::from_hex(commit.as_bytes())
                .map_err(|e| job.err(SourceErrorKind::InvalidSpec, "invalid commit for", e))?;
            // Protocol v2 servers hand out any object by id: one shallow fetch of just the commit.
            let by_id = fetch_into(job, &repo, std::slice::from_ref(commit), depth1(), |_| {
                Ok(())
            });
            let have = |repo: &gix::Repository| repo.find_commit(id).is_ok();
            if let Err(e) = by_id {
                // Auth and reachability won't get better by asking differently.
                if matches!(
                    e.kind,
                    SourceErrorKind::Auth | SourceErrorKind::Unreachable | SourceErrorKind::Timeout
                ) {
                    return Err(e);
                }
                tracing::debug!(url = %job.shown_url, error = %e, "fetch by commit id refused, fetching history");
            }
            if !have(&repo) {
                let spec = match branch {
                    Some(b) => format!("refs/heads/{b}"),
                    None => "refs/heads/*:refs/heads/*".to_string(),
                };
                fetch_into(
                    job,
                    &repo,
                    &[spec],
                    gix::remote::fetch::Shallow::NoChange,
                    |refs| {
                        if branch.is_some() {
                            select(job, refs).map(|_| ())
                        } else {
                            Ok(())
                        }
                    },
                )?;
                if !have(&repo) {
                    return Err(job.err(
                        SourceErrorKind::NotFound,
                        "unable to clone",
                        format!("couldn't find {}", job.target.describe()),
                    ));
                }
            }
            (None, id)
        }
        Target::Semver(c) => {
            // Fetch the tag resolve chose when it still satisfies the constraint (the usual case:
            // one listing less); otherwise list again.
            let (label, _) = reference::split_revision(resolved);
            let tag = match label.filter(|t| reference::parse_semver_tag(c, t)) {
                Some(t) => t.to_string(),
                None => resolve_blocking(job)?.0.unwrap_or_default(),
            };
            let want = format!("refs/tags/{tag}");
            let refs = fetch_into(job, &repo, std::slice::from_ref(&want), depth1(), |refs| {
                ensure_listed(job, refs, &want)
            })?;
            let id = refs
                .iter()
                .filter_map(ref_commit)
                .find(|(n, _)| *n == want)
                .map(|(_, id)| id)
                .ok_or_else(|| {
                    job.err(
                        SourceErrorKind::NotFound,
                        "unable to clone",
                        format!("couldn't find remote ref \"{want}\""),
                    )
                })?;
            (Some(tag), id)
        }
        target => {
            let want = target.full_ref().unwrap_or_default();
            let refs = fetch_into(job, &repo, std::slice::from_ref(&want), depth1(), |refs| {
                select(job, refs).map(|_| ())
            })?;
            let (label, _, id) = select(job, &refs)?;
            (label, id)
        }
    };
    let commit_obj = repo.find_commit(commit).map_err(|e| {
        job.err(
            SourceErrorKind::Other,
            "fetched data is incomplete from",
            format!("commit {commit}: {e}"),
        )
    })?;
    let tree = commit_obj
        .tree_id()
        .map_err(|e| job.err(SourceErrorKind::Other, "unreadable commit from", e))?
        .detach();
    let mut metadata = BTreeMap::new();
    metadata.insert(META_COMMIT.to_string(), commit.to_string());
    if let Ok(msg) = commit_obj.message() {
        metadata.insert(META_SUBJECT.to_string(), msg.summary().to_string());
    }
    if let Ok(author) = commit_obj.author() {
        metadata.insert(
            META_AUTHOR.to_string(),
            format!("{} <{}>", author.name, author.email),
        );
    }
    let written = checkout::write_tree(&repo, tree, dir, &job.sparse, job.recurse_submodules)
        .map_err(|e| {
            let kind = match e {
                CheckoutError::SparseDirMissing(_) => SourceErrorKind::NotFound,
                CheckoutError::Submodules(_) => SourceErrorKind::InvalidSpec,
                _ => SourceErrorKind::Other,
            };
            job.err(kind, "unable to check out", e)
        })?;
    if !written.submodules.is_empty() {
        metadata.insert(META_SUBMODULES.to_string(), written.submodules.join(","));
    }
    Ok(FetchedRevision {
        revision: job.target.revision(label.as_deref(), &commit.to_string()),
        metadata,
    })
}

fn ensure_listed(job: &Job, refs: &[Ref], want: &str) -> Result<(), SourceError> {
    if refs.iter().filter_map(ref_commit).any(|(n, _)| n == want) {
        Ok(())
    } else {
        Err(job.err(
            SourceErrorKind::NotFound,
            "unable to clone",
            format!("couldn't find remote ref \"{want}\""),
        ))
    }
}

/// Maps an I/O error to a kind when the kind is certain.
fn classify_io(job: &Job, e: &std::io::Error) -> Option<SourceError> {
    use std::io::ErrorKind as K;
    let kind = match e.kind() {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::AddrNotAvailable => SourceErrorKind::Unreachable,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => SourceErrorKind::Unreachable,
        K::TimedOut | K::WouldBlock => SourceErrorKind::Timeout,
        // DNS failures surface as uncategorised errors from the resolver.
        _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => {
            SourceErrorKind::Unreachable
        }
        _ => return None,
    };
    let what = match kind {
        SourceErrorKind::Timeout => "timed out talking to",
        _ => "unable to reach",
    };
    Some(job.err(kind, what, e))
}

/// Maps a gix error to a kind and a message naming the URL (never the credentials).
fn classify(job: &Job, what: &str, e: &gix::Error) -> SourceError {
    let chain: Vec<String> = e.iter_errors().map(|e| e.to_string()).collect();
    let mut detail = String::new();
    for m in &chain {
        // Layers often repeat their cause; keep each distinct message once.
        if !m.is_empty() && !detail.contains(m.as_str()) {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(m);
        }
    }
    let text = detail.to_ascii_lowercase();
    if text.contains("credentials in clear text") {
        return job.err(
            SourceErrorKind::InvalidSpec,
            "refusing credentials in the URL of",
            &detail,
        );
    }
    if let Some(hint) = crate::tls::handshake_hint(&detail, job.auth.client_cert.is_some()) {
        return job.err(
            SourceErrorKind::Auth,
            &format!("TLS handshake failed ({hint}) for"),
            &detail,
        );
    }
    if text.contains("invalid peer certificate") || text.contains("certificate verify") {
        // Not a reachability problem: retrying won't help until the CA is configured.
        return job.err(
            SourceErrorKind::Other,
            "TLS verification failed (the server's certificate is not trusted; set ca.crt in the secretRef) for",
            &detail,
        );
    }
    for err in e.iter_errors() {
        if let Some(re) = err.downcast_ref::<reqwest::Error>() {
            if re.is_timeout() {
                return job.err(SourceErrorKind::Timeout, "timed out talking to", &detail);
            }
            if re.is_connect() {
                return job.err(SourceErrorKind::Unreachable, "unable to reach", &detail);
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return auth_error(job, &detail);
            }
            if let Some(c) = classify_io(job, io) {
                return SourceError::new(c.kind, format!("{what} '{}': {detail}", job.shown_url));
            }
        }
    }
    if e.classify().is_unauthenticated()
        || e.classify().is_permission_denied()
        || text.contains("status 401")
        || text.contains("status 403")
    {
        return auth_error(job, &detail);
    }
    if text.contains("status 404")
        || text.contains("repository not found")
        || text.contains("not exported")
        || text.contains("does not appear to be a git repository")
    {
        return job.err(
            SourceErrorKind::NotFound,
            what,
            format!("repository not found: {detail}"),
        );
    }
    if job.interrupt.load(Ordering::Relaxed)
        || text.contains("timed out")
        || text.contains("operation would block")
    {
        return job.err(SourceErrorKind::Timeout, "timed out talking to", &detail);
    }
    if text.contains("connection refused")
        || text.contains("could not resolve")
        || text.contains("dns error")
    {
        return job.err(SourceErrorKind::Unreachable, "unable to reach", &detail);
    }
    job.err(SourceErrorKind::Other, what, &detail)
}

fn auth_error(job: &Job, detail: &str) -> SourceError {
    // Our credential callback declines on purpose (no helpers, no prompts); gix then reports that
    // no credentials were returned, which would only confuse: the server refused the request.
    let detail = if detail.contains("No credentials were returned") {
        "the server answered 401 Unauthorized"
    } else {
        detail
    };
    let hint = if job.auth.headers.is_empty() {
        "authentication required (no secretRef credentials were given)"
    } else {
        "authentication failed (the secretRef credentials were rejected)"
    };
    let detail = transport::scrub_userinfo(detail);
    SourceError::new(
        SourceErrorKind::Auth,
        format!("{hint} for '{}': {detail}", job.shown_url),
    )
}

/// Checks a spec without any network access: URL scheme, ref, and fields this source does not
/// implement. For admission-style validation before the first reconcile.
pub fn validate_spec(spec: &GitRepositorySpec) -> Result<(), SourceError> {
    transport::check_url(&spec.url)?;
    unsupported(spec)?;
    Target::from_spec(spec.reference.as_ref()).map(|_| ())
}

/// Fields that change what is trusted fail closed: pretending to verify signatures, or to
/// authenticate through a cloud provider, would be worse than refusing.
fn unsupported(spec: &GitRepositorySpec) -> Result<(), SourceError> {
    let no = |what: &str| {
        SourceError::new(
            SourceErrorKind::InvalidSpec,
            format!("{what} is not supported yet by trueup's Git source"),
        )
    };
    if spec.verify.is_some() {
        return Err(no("spec.verify (commit signature verification)"));
    }
    match spec.provider.as_deref() {
        None | Some("") | Some("generic") => Ok(()),
        Some(p) => Err(no(&format!("spec.provider '{p}'"))),
    }
}
