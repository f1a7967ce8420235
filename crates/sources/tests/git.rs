//! GitSource against real servers on 127.0.0.1: `git daemon` and `git http-backend`.

#[path = "support/registry.rs"]
mod registry;
mod support;

use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{GitDaemon, HttpAuth, HttpGit, Repo, Repos, Silent};
use trueup_core::api::source::GitRepositorySpec;
use trueup_core::object::ObjectRef;
use trueup_core::traits::source::{
    Credentials, FetchedRevision, Source, SourceErrorKind, SourceRequest,
};
use trueup_sources::GitSource;

const T: Duration = Duration::from_secs(30);

fn object() -> ObjectRef {
    ObjectRef {
        group: "source.toolkit.fluxcd.io".into(),
        kind: "GitRepository".into(),
        namespace: "flux-system".into(),
        name: "test".into(),
    }
}

fn spec(url: &str, r: serde_json::Value) -> GitRepositorySpec {
    serde_json::from_value(json!({"url": url, "interval": "1m", "ref": r})).expect("spec")
}

fn creds(kv: &[(&str, &str)]) -> Credentials {
    Credentials(
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    )
}

async fn resolve_with(
    spec: &GitRepositorySpec,
    c: Option<&Credentials>,
    timeout: Duration,
) -> Result<FetchedRevision, trueup_core::traits::source::SourceError> {
    let o = object();
    let req = SourceRequest {
        object: &o,
        spec,
        credentials: c,
        timeout,
    };
    GitSource::new().resolve(&req).await
}

async fn resolve(
    spec: &GitRepositorySpec,
) -> Result<FetchedRevision, trueup_core::traits::source::SourceError> {
    resolve_with(spec, None, T).await
}

async fn fetch_with(
    spec: &GitRepositorySpec,
    c: Option<&Credentials>,
    dir: &Path,
) -> Result<FetchedRevision, trueup_core::traits::source::SourceError> {
    let o = object();
    let req = SourceRequest {
        object: &o,
        spec,
        credentials: c,
        timeout: T,
    };
    let src = GitSource::new();
    let rev = src.resolve(&req).await?;
    let fetched = src.fetch(&req, &rev, dir).await?;
    assert_eq!(
        fetched.revision, rev.revision,
        "fetch returns the resolved revision"
    );
    Ok(fetched)
}

fn read(dir: &Path, p: &str) -> String {
    std::fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The fixture: history on main with lightweight, annotated and pre-release tags, a `dev` branch
/// and a pull-request ref.
struct Fixture {
    repos: Repos,
    c1: String,
    c2: String,
    c3: String,
    dev: String,
}

fn fixture() -> Fixture {
    let repos = Repos::new();
    let repo = repos.create("app.git");
    let c1 = repo.commit(
        &[
            ("README.md", "v1\n"),
            ("deploy/app.yaml", "kind: ConfigMap\n"),
            ("old.txt", "old\n"),
            ("bin/run.sh", "#!/bin/sh\n"),
        ],
        "first",
    );
    set_exec(&repo, "bin/run.sh");
    let c1 = if repo.run(&["status", "--porcelain"]).is_empty() {
        c1
    } else {
        repo.commit(&[], "exec")
    };
    repo.run(&["tag", "v1.0.0"]);
    let c2 = repo.commit(&[("README.md", "v2\n")], "second");
    repo.run(&["tag", "-a", "v1.1.0", "-m", "release 1.1.0"]);
    repo.run(&["checkout", "-q", "-b", "dev"]);
    let dev = repo.commit(&[("README.md", "dev\n")], "on dev");
    repo.run(&["update-ref", "refs/pull/1/head", &dev]);
    repo.run(&["checkout", "-q", "main"]);
    repo.rm("old.txt");
    let c3 = repo.commit(
        &[("README.md", "v3\n")],
        "third: remove old.txt\n\nbody line",
    );
    repo.run(&["tag", "v2.0.0-rc.1"]);
    repo.run(&["tag", "latest"]);
    Fixture {
        repos,
        c1,
        c2,
        c3,
        dev,
    }
}

fn set_exec(repo: &Repo, p: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(repo.dir.join(p), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    repo.run(&["add", p]);
}

fn repo(f: &Fixture) -> Repo {
    Repo {
        dir: f.repos.root.path().join("app.git"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_resolves_every_ref_kind() {
    let f = fixture();
    let d = GitDaemon::start(f.repos.root.path());
    let url = d.url("app.git");

    let cases = [
        (json!({"branch": "main"}), format!("main@sha1:{}", f.c3)),
        (json!({"branch": "dev"}), format!("dev@sha1:{}", f.dev)),
        (json!({"tag": "v1.0.0"}), format!("v1.0.0@sha1:{}", f.c1)),
        // Annotated: peeled to the commit, as Flux writes it.
        (json!({"tag": "v1.1.0"}), format!("v1.1.0@sha1:{}", f.c2)),
        (
            json!({"semver": ">=1.0.0 <2.0.0"}),
            format!("v1.1.0@sha1:{}", f.c2),
        ),
        (json!({"semver": "~1.0"}), format!("v1.0.0@sha1:{}", f.c1)),
        (
            json!({"semver": ">=2.0.0-0"}),
            format!("v2.0.0-rc.1@sha1:{}", f.c3),
        ),
        (
            json!({"name": "refs/heads/dev"}),
            format!("refs/heads/dev@sha1:{}", f.dev),
        ),
        (
            json!({"name": "refs/tags/v1.1.0"}),
            format!("refs/tags/v1.1.0@sha1:{}", f.c2),
        ),
        (
            json!({"name": "refs/pull/1/head"}),
            format!("refs/pull/1/head@sha1:{}", f.dev),
        ),
        (json!({"commit": f.c2}), format!("sha1:{}", f.c2)),
        (
            json!({"commit": f.c2, "branch": "main"}),
            format!("main@sha1:{}", f.c2),
        ),
        // Precedence: commit > name > semver > tag > branch.
        (
            json!({"branch": "dev", "tag": "v1.0.0", "semver": "1.1.x"}),
            format!("v1.1.0@sha1:{}", f.c2),
        ),
        (
            json!({"branch": "dev", "tag": "v1.0.0"}),
            format!("v1.0.0@sha1:{}", f.c1),
        ),
        (
            json!({"tag": "v1.0.0", "name": "refs/heads/main"}),
            format!("refs/heads/main@sha1:{}", f.c3),
        ),
    ];
    for (r, want) in cases {
        let got = resolve(&spec(&url, r.clone()))
            .await
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(got.revision, want, "{r}");
    }

    // No ref: Flux's default branch is master, which this repository does not have.
    let e = resolve(&spec(&url, json!(null))).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::NotFound);
    assert!(e.message.contains("refs/heads/master"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_fetches_each_ref_kind_shallow() {
    let f = fixture();
    let d = GitDaemon::start(f.repos.root.path());
    let url = d.url("app.git");

    let cases = [
        (json!({"branch": "main"}), "v3\n", f.c3.clone()),
        (json!({"tag": "v1.0.0"}), "v1\n", f.c1.clone()),
        (json!({"tag": "v1.1.0"}), "v2\n", f.c2.clone()),
        (json!({"semver": "1.x"}), "v2\n", f.c2.clone()),
        (json!({"name": "refs/pull/1/head"}), "dev\n", f.dev.clone()),
        (json!({"commit": f.c1}), "v1\n", f.c1.clone()),
        (
            json!({"commit": f.c2, "branch": "main"}),
            "v2\n",
            f.c2.clone(),
        ),
    ];
    for (r, readme, commit) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let got = fetch_with(&spec(&url, r.clone()), None, dir.path())
            .await
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(read(dir.path(), "README.md"), readme, "{r}");
        assert_eq!(got.metadata.get("git.commit"), Some(&commit), "{r}");
        assert!(
            !dir.path().join(".git").exists(),
            "no .git in the artifact dir"
        );
    }

    // Contents of main: the deleted file is gone, nested dirs and the exec bit are there.
    let dir = tempfile::tempdir().expect("tempdir");
    let got = fetch_with(&spec(&url, json!({"branch": "main"})), None, dir.path())
        .await
        .expect("fetch");
    assert_eq!(
        got.metadata.get("git.subject").map(String::as_str),
        Some("third: remove old.txt")
    );
    assert_eq!(
        got.metadata.get("git.author").map(String::as_str),
        Some("Test <test@example.com>")
    );
    assert!(!dir.path().join("old.txt").exists());
    assert_eq!(read(dir.path(), "deploy/app.yaml"), "kind: ConfigMap\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("bin/run.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable bit kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_checkout_keeps_only_listed_dirs() {
    let f = fixture();
    let d = GitDaemon::start(f.repos.root.path());
    let mut s = spec(&d.url("app.git"), json!({"branch": "main"}));
    s.sparse_checkout = vec!["./deploy/".into()];
    let dir = tempfile::tempdir().expect("tempdir");
    fetch_with(&s, None, dir.path()).await.expect("fetch");
    assert!(dir.path().join("deploy/app.yaml").exists());
    assert!(!dir.path().join("README.md").exists());
    assert!(!dir.path().join("bin").exists());

    s.sparse_checkout = vec!["nope".into()];
    let dir = tempfile::tempdir().expect("tempdir");
    let e = fetch_with(&s, None, dir.path()).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::NotFound);
    assert!(e.message.contains("nope"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fetch_and_cheap_unchanged_check() {
    let f = fixture();
    let h = HttpGit::start(f.repos.root.path(), HttpAuth::None);
    let s = spec(&h.url("app.git"), json!({"branch": "main"}));

    let dir = tempfile::tempdir().expect("tempdir");
    let got = fetch_with(&s, None, dir.path())
        .await
        .expect("fetch over http");
    assert_eq!(got.revision, format!("main@sha1:{}", f.c3));
    assert_eq!(read(dir.path(), "README.md"), "v3\n");
    assert_eq!(
        h.pack_requests(),
        1,
        "one pack for the fetch: {:?}",
        h.seen()
    );
    assert!(
        h.seen()
            .iter()
            .any(|s| s.command.as_deref() == Some("fetch") && s.deepen1),
        "shallow: {:?}",
        h.seen()
    );

    // An unchanged remote: the same revision, and no pack requested.
    h.clear();
    let a = resolve(&s).await.expect("resolve");
    let b = resolve(&s).await.expect("resolve");
    assert_eq!(a.revision, b.revision);
    assert_eq!(a.revision, got.revision);
    let seen = h.seen();
    assert_eq!(
        h.pack_requests(),
        0,
        "resolve must not fetch a pack: {seen:?}"
    );
    let info_refs = seen
        .iter()
        .filter(|s| s.method == "GET" && s.path.ends_with("/info/refs"))
        .count();
    assert_eq!(info_refs, 2, "one advertisement per check: {seen:?}");
    assert!(seen.len() <= 4, "at most two requests per check: {seen:?}");

    // A new commit is seen by the next check.
    let c4 = repo(&f).commit(&[("README.md", "v4\n")], "fourth");
    let c = resolve(&s).await.expect("resolve");
    assert_eq!(c.revision, format!("main@sha1:{c4}"));

    // Semver over HTTP.
    let r = resolve(&spec(&h.url("app.git"), json!({"semver": "^1.0.0"})))
        .await
        .expect("semver");
    assert_eq!(r.revision, format!("v1.1.0@sha1:{}", f.c2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_auth() {
    let f = fixture();
    let h = HttpGit::start(
        f.repos.root.path(),
        HttpAuth::Basic {
            user: "flux".into(),
            password: "s3cr3t-pw".into(),
        },
    );
    let s = spec(&h.url("app.git"), json!({"tag": "v1.1.0"}));

    let good = creds(&[("username", "flux"), ("password", "s3cr3t-pw")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let got = fetch_with(&s, Some(&good), dir.path())
        .await
        .expect("authenticated fetch");
    assert_eq!(got.revision, format!("v1.1.0@sha1:{}", f.c2));
    assert_eq!(read(dir.path(), "README.md"), "v2\n");

    let wrong = creds(&[("username", "flux"), ("password", "wrong-password")]);
    let e = resolve_with(&s, Some(&wrong), T).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{}", e.message);
    assert!(e.message.contains("authentication failed"), "{}", e.message);
    assert!(
        e.message.contains(&h.url("app.git")),
        "names the URL: {}",
        e.message
    );
    assert!(!e.message.contains("wrong-password"), "{}", e.message);

    let e = resolve(&s).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{}", e.message);
    assert!(
        e.message.contains("authentication required"),
        "{}",
        e.message
    );
    assert!(e.message.contains("401"), "{}", e.message);

    // Credentials in the URL never show in messages either.
    let s2 = spec(
        &h.url("app.git")
            .replace("http://", "http://flux:leaked-pw@"),
        json!({"branch": "nope"}),
    );
    let e = resolve_with(&s2, Some(&good), T).await.unwrap_err();
    assert!(
        !e.message.contains("leaked-pw") && !e.message.contains("s3cr3t-pw"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bearer_token() {
    let f = fixture();
    let h = HttpGit::start(f.repos.root.path(), HttpAuth::Bearer("tok-123456".into()));
    let s = spec(&h.url("app.git"), json!({"branch": "dev"}));
    let got = resolve_with(&s, Some(&creds(&[("bearerToken", "tok-123456")])), T)
        .await
        .expect("bearer");
    assert_eq!(got.revision, format!("dev@sha1:{}", f.dev));
    let e = resolve_with(&s, Some(&creds(&[("bearerToken", "other-token")])), T)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{}", e.message);
    assert!(!e.message.contains("other-token"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_refs_are_not_found_and_named() {
    let f = fixture();
    let d = GitDaemon::start(f.repos.root.path());
    let h = HttpGit::start(f.repos.root.path(), HttpAuth::None);
    for url in [d.url("app.git"), h.url("app.git")] {
        let e = resolve(&spec(&url, json!({"branch": "nope"})))
            .await
            .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::NotFound, "{}", e.message);
        assert!(
            e.message.contains("refs/heads/nope") && e.message.contains(&url),
            "{}",
            e.message
        );

        let e = resolve(&spec(&url, json!({"tag": "v9"})))
            .await
            .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::NotFound);
        assert!(e.message.contains("refs/tags/v9"), "{}", e.message);

        let e = resolve(&spec(&url, json!({"semver": ">=5.0.0"})))
            .await
            .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::NotFound);
        assert!(e.message.contains(">=5.0.0"), "{}", e.message);

        let dir = tempfile::tempdir().expect("tempdir");
        let e = fetch_with(
            &spec(
                &url,
                json!({"commit": "0123456789012345678901234567890123456789"}),
            ),
            None,
            dir.path(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::NotFound, "{}", e.message);
        assert!(
            e.message
                .contains("0123456789012345678901234567890123456789"),
            "{}",
            e.message
        );
    }
    for url in [h.url("missing.git"), d.url("missing.git")] {
        let e = resolve(&spec(&url, json!({"branch": "main"})))
            .await
            .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::NotFound, "{}", e.message);
        assert!(e.message.contains("repository not found"), "{}", e.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hosts_fail_fast() {
    let port = support::free_port(); // nothing listens there any more
    for url in [
        format!("git://127.0.0.1:{port}/app.git"),
        format!("http://127.0.0.1:{port}/app.git"),
    ] {
        let start = Instant::now();
        let e = resolve(&spec(&url, json!({"branch": "main"})))
            .await
            .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::Unreachable, "{url}: {}", e.message);
        assert!(e.message.contains(&url), "{}", e.message);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
    }
    // The lower layers' messages quote the URL: credentials in it must not come along.
    let url = format!("https://flux:url-secret@127.0.0.1:{port}/app.git");
    let e = resolve(&spec(&url, json!({"branch": "main"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Unreachable, "{}", e.message);
    assert!(!e.message.contains("url-secret"), "{}", e.message);
    // gix refuses to send a URL's password over plain http: a spec problem.
    let url = format!("http://flux:url-secret@127.0.0.1:{port}/app.git");
    let e = resolve(&spec(&url, json!({"branch": "main"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::InvalidSpec, "{}", e.message);
    assert!(!e.message.contains("url-secret"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_respected() {
    let silent = Silent::start();
    for url in [
        format!("git://127.0.0.1:{}/app.git", silent.port),
        format!("http://127.0.0.1:{}/app.git", silent.port),
    ] {
        let start = Instant::now();
        let e = resolve_with(
            &spec(&url, json!({"branch": "main"})),
            None,
            Duration::from_millis(800),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, SourceErrorKind::Timeout, "{url}: {}", e.message);
        assert!(e.message.contains(&url), "{}", e.message);
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs() {
    for (url, r) in [
        ("ftp://127.0.0.1/app.git", json!({"branch": "main"})),
        ("ssh://git@127.0.0.1/app.git", json!({"branch": "main"})),
        ("http://127.0.0.1:1/app.git", json!({"semver": ">= nope"})),
        ("http://127.0.0.1:1/app.git", json!({"commit": "abc"})),
        ("http://127.0.0.1:1/app.git", json!({"name": "main"})),
    ] {
        let e = resolve(&spec(url, r.clone())).await.unwrap_err();
        assert_eq!(
            e.kind,
            SourceErrorKind::InvalidSpec,
            "{url} {r}: {}",
            e.message
        );
    }
    // What changes trust fails closed instead of being ignored.
    let mut s = spec("http://127.0.0.1:1/app.git", json!({"branch": "main"}));
    s.verify = Some(serde_json::from_value(json!({"mode": "HEAD"})).expect("verify"));
    let e = resolve(&s).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::InvalidSpec, "{}", e.message);
    assert!(e.message.contains("verify"), "{}", e.message);
    let mut s = spec("http://127.0.0.1:1/app.git", json!({"branch": "main"}));
    s.provider = Some("azure".into());
    assert_eq!(
        resolve(&s).await.unwrap_err().kind,
        SourceErrorKind::InvalidSpec
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_work_for_local_repositories() {
    let f = fixture();
    let url = format!("file://{}", repo(&f).dir.display());
    let r = resolve(&spec(&url, json!({"branch": "main"})))
        .await
        .expect("resolve");
    assert_eq!(r.revision, format!("main@sha1:{}", f.c3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_from_the_secret() {
    let f = fixture();
    let h = HttpGit::start_tls(
        f.repos.root.path(),
        HttpAuth::Basic {
            user: "flux".into(),
            password: "tls-pw".into(),
        },
    );
    let s = spec(&h.url("app.git"), json!({"branch": "main"}));
    assert!(s.url.starts_with("https://"));

    let good = creds(&[
        ("username", "flux"),
        ("password", "tls-pw"),
        ("ca.crt", support::TEST_CA_PEM),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let got = fetch_with(&s, Some(&good), dir.path())
        .await
        .expect("https fetch with the secret's CA");
    assert_eq!(got.revision, format!("main@sha1:{}", f.c3));
    assert_eq!(read(dir.path(), "README.md"), "v3\n");

    // Without the CA the server is not trusted: a clear TLS error, not an auth one.
    let no_ca = creds(&[("username", "flux"), ("password", "tls-pw")]);
    let e = resolve_with(&s, Some(&no_ca), T).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Other, "{}", e.message);
    assert!(
        e.message.contains("TLS verification failed") && e.message.contains("ca.crt"),
        "{}",
        e.message
    );
}

/// HTTPS with a client certificate: `tls.crt`/`tls.key` of the `secretRef` (next to basic auth
/// and `ca.crt`), made with `openssl`; without it the handshake failure is named, half a pair
/// names the Secret and the missing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_client_certificate_from_the_secret() {
    let Some(openssl) = registry::openssl_bin() else {
        return;
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let c = registry::client_certificates(&openssl, certs.path());
    let read_pem = |p: &Path| std::fs::read_to_string(p).expect("pem");
    let f = fixture();
    let h = HttpGit::start_mtls(
        f.repos.root.path(),
        HttpAuth::Basic {
            user: "flux".into(),
            password: "tls-pw".into(),
        },
        read_pem(&c.ca).as_bytes(),
    );
    let mut s = spec(&h.url("app.git"), json!({"branch": "main"}));
    s.secret_ref = Some(serde_json::from_value(json!({"name": "git-https"})).expect("ref"));

    let (crt, key) = (read_pem(&c.client_crt), read_pem(&c.client_key_pkcs1));
    let good = creds(&[
        ("username", "flux"),
        ("password", "tls-pw"),
        ("ca.crt", support::TEST_CA_PEM),
        ("tls.crt", &crt),
        ("tls.key", &key),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let got = fetch_with(&s, Some(&good), dir.path())
        .await
        .expect("https fetch with a client certificate");
    assert_eq!(got.revision, format!("main@sha1:{}", f.c3));
    assert_eq!(read(dir.path(), "README.md"), "v3\n");

    let no_cert = creds(&[
        ("username", "flux"),
        ("password", "tls-pw"),
        ("ca.crt", support::TEST_CA_PEM),
    ]);
    let e = resolve_with(&s, Some(&no_cert), T).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{}", e.message);
    assert!(
        e.message.contains("TLS handshake failed")
            && e.message.contains("requires a client certificate")
            && e.message.contains(&h.url("app.git")),
        "{}",
        e.message
    );

    let half = creds(&[("ca.crt", support::TEST_CA_PEM), ("tls.crt", &crt)]);
    let e = resolve_with(&s, Some(&half), T).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::InvalidSpec, "{}", e.message);
    assert!(
        e.message.contains("secret 'git-https' (secretRef)")
            && e.message.contains("'tls.key' is missing"),
        "{}",
        e.message
    );
}
