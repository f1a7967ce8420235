//! HelmRepository source against a repository served on 127.0.0.1 by the
//! test: a generated index.yaml with ETag support, charts packaged here with
//! tar + flate2, basic auth on demand, and over HTTPS requiring a client
//! certificate made with `openssl`.

#[path = "support/registry.rs"]
mod registry;

use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use trueup_core::traits::source::{Credentials, Source, SourceErrorKind, SourceRequest};
use trueup_sources::helm::{index, HelmChartSource};
use trueup_sources::HelmSource;

fn package(name: &str, version: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let chart = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(chart.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, format!("{name}/Chart.yaml"), chart.as_bytes())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

struct Repo {
    url: String,
    hits: Arc<AtomicUsize>,
}

/// Serves `files` (path -> body); index.yaml carries an ETag and answers 304
/// to a matching If-None-Match. With `auth`, requires that basic auth.
fn serve(files: Vec<(String, Vec<u8>)>, auth: Option<&'static str>) -> Repo {
    serve_with(files, auth, None)
}

/// The same over HTTPS with a rustls server `config` (one connection at a time).
fn serve_with(
    files: Vec<(String, Vec<u8>)>,
    auth: Option<&'static str>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Repo {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            h.fetch_add(1, Ordering::SeqCst);
            match &tls {
                None => {
                    let mut s = s;
                    let _ = handle(&mut s, &files, auth);
                }
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    let mut t = rustls::StreamOwned::new(conn, s);
                    // A failed handshake (no or an untrusted client certificate) ends here;
                    // rustls sends the alert before returning the error.
                    if handle(&mut t, &files, auth).is_ok() {
                        t.conn.send_close_notify();
                        let _ = t.flush();
                    }
                }
            }
        }
    });
    Repo { url, hits }
}

/// One request on `s`: the head read byte by byte (no buffering past it), then the reply.
fn handle(
    s: &mut (impl Read + Write),
    files: &[(String, Vec<u8>)],
    auth: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let path = first.split(' ').nth(1).unwrap_or("/").to_string();
    let headers: Vec<String> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_lowercase())
        .collect();
    let mut reply = |code: &str, extra: &str, body: &[u8]| -> std::io::Result<()> {
        write!(
            s,
            "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        s.flush()
    };
    if let Some(a) = auth {
        let want = format!("authorization: basic {}", base64_encode(a)).to_lowercase();
        if !headers.contains(&want) {
            return reply("401 Unauthorized", "", b"");
        }
    }
    match files.iter().find(|(p, _)| *p == path) {
        Some((p, body)) => {
            let etag = format!("\"{}\"", &hex::encode(sha2::Sha256::digest(body))[..16]);
            if p.ends_with("index.yaml")
                && headers
                    .iter()
                    .any(|h| *h == format!("if-none-match: {etag}"))
            {
                reply("304 Not Modified", "", b"")
            } else {
                reply("200 OK", &format!("ETag: {etag}\r\n"), body)
            }
        }
        None => reply("404 Not Found", "", b""),
    }
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn repo_with(versions: &[&str], corrupt: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut idx = String::from("apiVersion: v1\nentries:\n  other:\n  - name: other\n    version: 9.9.9\n    urls: [other-9.9.9.tgz]\n  podinfo:\n");
    for v in versions {
        let tgz = package("podinfo", v);
        let mut digest = hex::encode(sha2::Sha256::digest(&tgz));
        if corrupt == Some(*v) {
            digest = "0".repeat(64);
        }
        idx.push_str(&format!("  - apiVersion: v2\n    name: podinfo\n    version: {v}\n    digest: {digest}\n    urls:\n    - charts/podinfo-{v}.tgz\n"));
        files.push((format!("/charts/podinfo-{v}.tgz"), tgz));
    }
    idx.push_str("generated: \"2024-01-01T00:00:00Z\"\n");
    files.push(("/index.yaml".into(), idx.into_bytes()));
    files
}

fn spec(url: &str, version: Option<&str>) -> HelmChartSource {
    let repository = serde_yaml::from_str(&format!("url: {url}\n")).unwrap();
    let mut chart: trueup_core::api::source::HelmChartSpec =
        serde_yaml::from_str("chart: podinfo\nsourceRef: {kind: HelmRepository, name: r}\n")
            .unwrap();
    chart.version = version.map(str::to_string);
    HelmChartSource { repository, chart }
}

fn object() -> trueup_core::object::ObjectRef {
    serde_json::from_value(serde_json::json!({"group": "source.toolkit.fluxcd.io", "kind": "HelmChart", "namespace": "default", "name": "podinfo"}))
        .expect("ObjectRef from JSON")
}

#[tokio::test]
async fn resolves_fetches_and_caches() {
    let repo = serve(
        repo_with(&["6.0.0", "6.1.0", "6.2.0-rc.1", "7.0.0"], None),
        None,
    );
    let src = HelmSource::new();
    let obj = object();
    let s = spec(&repo.url, Some(">=6.0.0 <7.0.0"));
    let req = SourceRequest {
        object: &obj,
        spec: &s,
        credentials: None,
        timeout: Duration::from_secs(10),
    };
    let rev = src.resolve(&req).await.unwrap();
    assert_eq!(rev.revision, "6.1.0");
    let before = repo.hits.load(Ordering::SeqCst);
    let rev2 = src.resolve(&req).await.unwrap();
    assert_eq!(rev2.revision, "6.1.0");
    assert_eq!(
        repo.hits.load(Ordering::SeqCst) - before,
        1,
        "unchanged index costs one request"
    );
    let dir = tempfile::tempdir().unwrap();
    let got = src.fetch(&req, &rev, dir.path()).await.unwrap();
    assert_eq!(got.revision, "6.1.0");
    assert!(dir.path().join("podinfo-6.1.0.tgz").exists());
    // No version: the latest stable.
    let s = spec(&repo.url, None);
    let req = SourceRequest {
        object: &obj,
        spec: &s,
        credentials: None,
        timeout: Duration::from_secs(10),
    };
    assert_eq!(src.resolve(&req).await.unwrap().revision, "7.0.0");
    let s = spec(&repo.url, Some("^8"));
    let req = SourceRequest {
        object: &obj,
        spec: &s,
        credentials: None,
        timeout: Duration::from_secs(10),
    };
    assert_eq!(
        src.resolve(&req).await.unwrap_err().kind,
        SourceErrorKind::NotFound
    );
}

#[tokio::test]
async fn digest_mismatch_and_auth() {
    let repo = serve(repo_with(&["1.0.0"], Some("1.0.0")), Some("user:pass"));
    let src = HelmSource::new();
    let obj = object();
    let s = spec(&repo.url, Some("1.0.0"));
    let req = SourceRequest {
        object: &obj,
        spec: &s,
        credentials: None,
        timeout: Duration::from_secs(10),
    };
    assert_eq!(
        src.resolve(&req).await.unwrap_err().kind,
        SourceErrorKind::Auth
    );
    let mut m = std::collections::BTreeMap::new();
    m.insert("username".to_string(), b"user".to_vec());
    m.insert("password".to_string(), b"pass".to_vec());
    let creds = Credentials(m);
    let req = SourceRequest {
        object: &obj,
        spec: &s,
        credentials: Some(&creds),
        timeout: Duration::from_secs(10),
    };
    let rev = src.resolve(&req).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = src.fetch(&req, &rev, dir.path()).await.unwrap_err();
    assert!(e.message.contains("digest mismatch"), "{}", e.message);
}

#[test]
fn streaming_index_keeps_one_chart() {
    let text = "apiVersion: v1\nentries:\n  a:\n  - name: a\n    version: 1.0.0\n  \"b\":\n    - name: b\n      version: 2.0.0\n      urls:\n        - x.tgz\n    # comment\n    - name: b\n      version: 2.1.0\n  c:\n  - name: c\n    version: 3.0.0\ngenerated: now\n";
    let b = index::read_chart_entries(text.as_bytes(), "b").unwrap();
    assert_eq!(
        b.iter().map(|e| e.version.as_str()).collect::<Vec<_>>(),
        ["2.0.0", "2.1.0"]
    );
    assert_eq!(b[0].urls, ["x.tgz"]);
    assert!(index::read_chart_entries(text.as_bytes(), "zz")
        .unwrap()
        .is_empty());
    let json = r#"{"apiVersion":"v1","entries":{"b":[{"name":"b","version":"1.0.0"}]}}"#;
    assert_eq!(
        index::read_chart_entries(json.as_bytes(), "b")
            .unwrap()
            .len(),
        1
    );
}

/// A rustls server config for `c`'s server certificate that requires a client certificate
/// signed by `c`'s CA.
fn mtls_server(c: &registry::ClientCerts) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&c.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = CertificateDer::pem_file_iter(&c.server_crt)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&c.server_key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

fn secret(files: &[(&str, &std::path::Path)]) -> Credentials {
    Credentials(
        files
            .iter()
            .map(|(k, p)| (k.to_string(), std::fs::read(p).unwrap()))
            .collect(),
    )
}

/// An HTTPS Helm repository that requires a client certificate: index and chart fetched with
/// `certSecretRef`'s `tls.crt`/`tls.key` (or the deprecated `certFile`/`keyFile` of
/// `secretRef`); without one the handshake failure is named with the repository's address;
/// half a pair names the Secret and the missing key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_repository_requiring_a_client_certificate() {
    let Some(openssl) = registry::openssl_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = registry::client_certificates(&openssl, dir.path());
    let repo = serve_with(
        repo_with(&["1.0.0", "1.1.0"], None),
        None,
        Some(mtls_server(&c)),
    );
    let src = HelmSource::new();
    let obj = object();
    let mut s = spec(&repo.url, Some("1.x"));
    s.repository.cert_secret_ref =
        Some(serde_json::from_value(serde_json::json!({"name": "helm-tls"})).unwrap());
    let run = |creds: Credentials, s: HelmChartSource| {
        let src = src.clone();
        let obj = obj.clone();
        async move {
            let req = SourceRequest {
                object: &obj,
                spec: &s,
                credentials: Some(&creds),
                timeout: Duration::from_secs(10),
            };
            let rev = src.resolve(&req).await?;
            let dir = tempfile::tempdir().unwrap();
            let got = src.fetch(&req, &rev, dir.path()).await?;
            let tgz =
                std::fs::read(dir.path().join(format!("podinfo-{}.tgz", got.revision))).unwrap();
            Ok::<_, trueup_core::traits::source::SourceError>((got.revision, tgz))
        }
    };

    let good = secret(&[
        ("ca.crt", &c.ca),
        ("tls.crt", &c.client_crt),
        ("tls.key", &c.client_key_pkcs8),
    ]);
    let (version, tgz) = run(good, s.clone())
        .await
        .expect("with the client certificate");
    assert_eq!(version, "1.1.0");
    assert_eq!(tgz, package("podinfo", "1.1.0"));

    let e = run(secret(&[("ca.crt", &c.ca)]), s.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{}", e.message);
    let addr = repo.url.trim_start_matches("https://");
    assert!(
        e.message.contains("TLS handshake failed")
            && e.message.contains("requires a client certificate")
            && e.message.contains(addr),
        "{}",
        e.message
    );

    let stranger = secret(&[
        ("ca.crt", &c.ca),
        ("tls.crt", &c.stranger_crt),
        ("tls.key", &c.stranger_key),
    ]);
    let e = run(stranger, s.clone()).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{}", e.message);
    assert!(
        e.message.contains("refused the client certificate") && e.message.contains(addr),
        "{}",
        e.message
    );

    let half = secret(&[("ca.crt", &c.ca), ("tls.key", &c.client_key_pkcs8)]);
    let e = run(half, s.clone()).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::InvalidSpec, "{}", e.message);
    assert!(
        e.message.contains("secret 'helm-tls' (certSecretRef)")
            && e.message.contains("'tls.crt' is missing"),
        "{}",
        e.message
    );

    // The deprecated keys of secretRef, when there is no certSecretRef.
    let mut legacy_spec = s.clone();
    legacy_spec.repository.cert_secret_ref = None;
    legacy_spec.repository.secret_ref =
        Some(serde_json::from_value(serde_json::json!({"name": "helm-auth"})).unwrap());
    let legacy = secret(&[
        ("caFile", &c.ca),
        ("certFile", &c.ec_crt),
        ("keyFile", &c.ec_key_sec1),
    ]);
    let (version, _) = run(legacy, legacy_spec.clone())
        .await
        .expect("with certFile/keyFile");
    assert_eq!(version, "1.1.0");
    let legacy_half = secret(&[("caFile", &c.ca), ("certFile", &c.ec_crt)]);
    let e = run(legacy_half, legacy_spec).await.unwrap_err();
    assert!(
        e.message.contains("secret 'helm-auth' (secretRef)")
            && e.message.contains("'keyFile' is missing"),
        "{}",
        e.message
    );
}

/// Chart dependencies (of charts from Git) through the same index code: Helm's constraint
/// syntax picks the newest match, the index digest is checked, the size is bounded, and a wrong
/// password is an authentication error that does not repeat it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_dependencies_from_an_http_repository() {
    use trueup_core::traits::source::{ChartDependencyFetcher, ChartDependencyRequest};
    let repo = serve(
        repo_with(&["1.0.0", "1.2.0", "1.10.0", "2.0.0"], Some("1.2.0")),
        Some("bot:s3cret-pass"),
    );
    let src = HelmSource::new();
    let repository: trueup_core::api::source::HelmRepositorySpec =
        serde_json::from_value(serde_json::json!({"url": format!("{}/", repo.url)})).unwrap();
    let creds = |p: &str| {
        Credentials(
            [("username", "bot"), ("password", p)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    };
    let good = creds("s3cret-pass");
    let fetch = |version: &'static str, creds: Credentials, max_bytes: u64| {
        let (src, repository, url) = (src.clone(), repository.clone(), repo.url.clone());
        async move {
            let req = ChartDependencyRequest {
                repository: &url,
                chart: "podinfo",
                version,
                repository_spec: &repository,
                credentials: Some(&creds),
                timeout: Duration::from_secs(10),
                max_bytes,
            };
            src.fetch_dependency(&req).await
        }
    };
    let got = fetch("^1.0.0", good.clone(), 1 << 20).await.unwrap();
    assert_eq!(got.version, "1.10.0", "the newest 1.x, by semver");
    assert_eq!(got.tgz, package("podinfo", "1.10.0"));
    let e = fetch("~1.2.0", good.clone(), 1 << 20).await.unwrap_err();
    assert!(e.message.contains("digest mismatch"), "{e}");
    let e = fetch("1.0.0", good.clone(), 16).await.unwrap_err();
    assert!(
        e.message.contains("larger than the limit of 16 bytes"),
        "{e}"
    );
    let e = fetch("^3.0.0", good.clone(), 1 << 20).await.unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::NotFound, "{e}");
    let e = fetch("^1.0.0", creds("wrong-pass"), 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth, "{e}");
    assert!(
        e.message.contains("401") && !e.message.contains("wrong-pass"),
        "{e}"
    );
}
