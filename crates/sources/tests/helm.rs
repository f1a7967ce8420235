//! HelmRepository source against a repository served on 127.0.0.1 by the
//! test: a generated index.yaml with ETag support, charts packaged here with
//! tar + flate2, basic auth on demand.
use sha2::Digest;
use std::io::{BufRead, BufReader, Read, Write};
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
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let path = first.split(' ').nth(1).unwrap_or("/").to_string();
            let mut headers = Vec::new();
            loop {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                if l.trim().is_empty() {
                    break;
                }
                headers.push(l.trim().to_lowercase());
            }
            let reply = |s: &mut std::net::TcpStream, code: &str, extra: &str, body: &[u8]| {
                let _ = write!(
                    s,
                    "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                    body.len()
                );
                let _ = s.write_all(body);
            };
            if let Some(a) = auth {
                let want = format!("authorization: basic {}", base64_encode(a)).to_lowercase();
                if !headers.contains(&want) {
                    reply(&mut s, "401 Unauthorized", "", b"");
                    continue;
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
                        reply(&mut s, "304 Not Modified", "", b"");
                    } else {
                        reply(&mut s, "200 OK", &format!("ETag: {etag}\r\n"), body);
                    }
                }
                None => reply(&mut s, "404 Not Found", "", b""),
            }
            let _ = r.read(&mut [0u8; 0]);
        }
    });
    Repo { url, hits }
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
