//! OCIRepository, artifact push and OCI Helm charts against a real registry (Debian's
//! `docker-registry`, the CNCF distribution registry), without auth, with htpasswd basic auth,
//! and behind a front proxy that adds Bearer token auth, redirects to blob storage on another
//! host and rate limiting. Artifacts are pushed by trueup and read back with plain HTTP, and
//! built byte by byte from the OCI spec (layouts trueup does not write) and pulled by trueup.

#[path = "support/registry.rs"]
mod registry;

use base64::Engine as _;
use registry::{Proxy, ProxyConfig, Registry, PASSWORD, USER};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use trueup_core::api::source::OciRepositorySpec;
use trueup_core::object::ObjectRef;
use trueup_core::traits::source::{
    Credentials, FetchedRevision, Source, SourceError, SourceErrorKind, SourceRequest,
};
use trueup_sources::oci::{manifest, BasicAuth, OciClient, OciClientOptions, RegistryAuths};
use trueup_sources::OciSource;

/// A plain reqwest client for reading back (the crate builds reqwest without a default TLS
/// provider; plain HTTP needs none, but the builder wants one installed).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn client(auth: Option<(&str, &str)>, host: &str) -> OciClient {
    let auths = auth
        .map(|(u, p)| RegistryAuths::single(host, BasicAuth::new(u, p)))
        .unwrap_or_default();
    OciClient::new(OciClientOptions {
        insecure: true,
        timeout: Duration::from_secs(20),
        auths,
        ..Default::default()
    })
    .expect("client")
}

fn spec(url: &str, extra: serde_json::Value) -> OciRepositorySpec {
    let mut v = serde_json::json!({"url": url, "interval": "1m", "insecure": true});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    serde_json::from_value(v).expect("spec")
}

fn object() -> ObjectRef {
    ObjectRef::new(
        "source.toolkit.fluxcd.io",
        "OCIRepository",
        "default",
        "app",
    )
}

fn docker_config(host: &str, user: &str, pass: &str) -> Credentials {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let json = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    Credentials(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        json.into_bytes(),
    )]))
}

async fn resolve(
    spec: &OciRepositorySpec,
    creds: Option<&Credentials>,
) -> Result<FetchedRevision, SourceError> {
    let o = object();
    let req = SourceRequest {
        object: &o,
        spec,
        credentials: creds,
        timeout: Duration::from_secs(30),
    };
    OciSource::new().resolve(&req).await
}

/// Resolves and fetches into a new temp dir.
async fn pull(
    spec: &OciRepositorySpec,
    creds: Option<&Credentials>,
) -> Result<(FetchedRevision, tempfile::TempDir), SourceError> {
    let o = object();
    let req = SourceRequest {
        object: &o,
        spec,
        credentials: creds,
        timeout: Duration::from_secs(30),
    };
    let src = OciSource::new();
    let rev = src.resolve(&req).await?;
    let dir = tempfile::tempdir().expect("tempdir");
    let fetched = src.fetch(&req, &rev, dir.path()).await?;
    assert_eq!(fetched.revision, rev.revision);
    Ok((fetched, dir))
}

fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
}

fn read(dir: &Path, p: &str) -> String {
    std::fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A tar.gz of `files`, built with the tar crate (not trueup's packer).
fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut t = tar::Builder::new(enc);
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, p, c.as_bytes()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

/// Plain HTTP, no trueup: pushes blobs (POST + PUT) and a manifest under `reference`.
async fn raw_push(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
    blobs: &[&[u8]],
    auth: Option<(&str, &str)>,
) -> String {
    let http = http();
    let with_auth = |rb: reqwest::RequestBuilder| match auth {
        Some((u, p)) => rb.basic_auth(u, Some(p)),
        None => rb,
    };
    for b in blobs {
        let resp = with_auth(http.post(format!("http://{addr}/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "start upload");
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let mut url = reqwest::Url::parse(&format!("http://{addr}"))
            .unwrap()
            .join(&loc)
            .unwrap();
        url.query_pairs_mut().append_pair("digest", &digest_of(b));
        let resp = with_auth(http.put(url))
            .header("content-type", "application/octet-stream")
            .body(b.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "put blob");
    }
    let resp = with_auth(http.put(format!("http://{addr}/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(manifest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "put manifest: {:?}", resp.text().await);
    digest_of(manifest)
}

fn desc(media_type: &str, b: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest_of(b), "size": b.len()})
}

/// A registry refusing the client's certificate (or its absence). In TLS 1.3 the server
/// checks it after the client has finished the handshake and sent its request, so on a busy
/// machine the server's reset can overtake its alert: then the failure is a reset connection,
/// still naming the registry, and the kind tells the two apart.
fn assert_tls_refusal(e: &SourceError, needles: &[&str]) {
    let reset = [
        "reset",
        "broken pipe",
        "closed",
        "unexpected eof",
        "unexpectedeof",
    ]
    .iter()
    .any(|w| e.message.to_ascii_lowercase().contains(w));
    if e.kind == SourceErrorKind::Auth || !reset {
        assert_err(e, SourceErrorKind::Auth, needles);
    } else {
        let addr = needles.last().copied().unwrap_or_default();
        assert!(e.message.contains(addr), "{}", e.message);
    }
}

fn assert_err(e: &SourceError, kind: SourceErrorKind, needles: &[&str]) {
    assert_eq!(e.kind, kind, "{}", e.message);
    for n in needles {
        assert!(e.message.contains(n), "'{n}' not in: {}", e.message);
    }
    assert!(
        !e.message.contains(PASSWORD),
        "password leaked: {}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_read_back_with_plain_http_and_pull() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let src_dir = tempfile::tempdir().unwrap();
    write_tree(
        src_dir.path(),
        &[
            ("deploy/app.yaml", "kind: ConfigMap\n"),
            ("README.md", "hi\n"),
            (".sourceignore", ""),
        ],
    );
    let c = client(None, &reg.addr);
    let url = reg.url("fleet/manifests");
    let digest = c
        .push_artifact(
            src_dir.path(),
            &format!("{url}:v1.0.0"),
            "https://github.com/org/fleet",
            "main@sha1:0123456789abcdef0123456789abcdef01234567",
        )
        .await
        .expect("push");
    assert!(manifest::is_sha256_digest(&digest), "{digest}");

    // Read back with plain HTTP: the layout `flux push artifact` writes.
    let http = http();
    let resp = http
        .get(reg.http("/v2/fleet/manifests/manifests/v1.0.0"))
        .header("accept", manifest::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(digest_of(&body), digest);
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], manifest::OCI_MANIFEST);
    assert_eq!(m["config"]["mediaType"], manifest::FLUX_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], manifest::FLUX_CONTENT);
    assert_eq!(
        m["annotations"][manifest::ANNOTATION_SOURCE],
        "https://github.com/org/fleet"
    );
    assert_eq!(
        m["annotations"][manifest::ANNOTATION_REVISION],
        "main@sha1:0123456789abcdef0123456789abcdef01234567"
    );
    assert!(m["annotations"][manifest::ANNOTATION_CREATED]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = http
        .get(reg.http(&format!("/v2/fleet/manifests/blobs/{config_digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&config[..], b"{}");
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap();
    let layer = http
        .get(reg.http(&format!("/v2/fleet/manifests/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(digest_of(&layer), layer_digest);
    let mut names: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec![".sourceignore", "README.md", "deploy/app.yaml"]);

    // A second push of the same content uploads no blob (HEAD says it is there) and gives the
    // same layer; pushing with a fixed creation time gives reproducible manifests.
    let d2 = c
        .push_artifact(src_dir.path(), &format!("{url}:v1.0.1"), "s", "r")
        .await
        .unwrap();
    assert_ne!(d2, digest);

    // Pull it with trueup: tag ref.
    let s = spec(&url, serde_json::json!({"ref": {"tag": "v1.0.0"}}));
    let (fetched, out) = pull(&s, None).await.expect("pull");
    assert_eq!(fetched.revision, format!("v1.0.0@{digest}"));
    assert_eq!(read(out.path(), "deploy/app.yaml"), "kind: ConfigMap\n");
    assert_eq!(read(out.path(), "README.md"), "hi\n");
    assert_eq!(
        fetched
            .metadata
            .get(manifest::ANNOTATION_SOURCE)
            .map(String::as_str),
        Some("https://github.com/org/fleet")
    );
    assert_eq!(
        fetched
            .metadata
            .get(manifest::ANNOTATION_REVISION)
            .map(String::as_str),
        Some("main@sha1:0123456789abcdef0123456789abcdef01234567")
    );

    // Tag and list; the default ref is `latest`.
    let tagged = c
        .tag(&format!("{url}:v1.0.0"), "latest")
        .await
        .expect("tag");
    assert_eq!(tagged, digest);
    let mut tags = c.list_tags(&url).await.expect("tags");
    tags.sort();
    assert_eq!(tags, vec!["latest", "v1.0.0", "v1.0.1"]);
    let rev = resolve(&spec(&url, serde_json::json!({})), None)
        .await
        .unwrap();
    assert_eq!(rev.revision, format!("latest@{digest}"));

    // Digest ref: the revision is the digest alone, and it pulls.
    let s = spec(
        &url,
        serde_json::json!({"ref": {"digest": digest, "tag": "v1.0.1"}}),
    );
    let (fetched, out) = pull(&s, None).await.expect("pull by digest");
    assert_eq!(fetched.revision, digest);
    assert_eq!(read(out.path(), "README.md"), "hi\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semver_filter_and_paginated_tags() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let c = client(None, &reg.addr);
    let url = reg.url("app");
    let dir = tempfile::tempdir().unwrap();
    let mut digests = BTreeMap::new();
    for (i, tag) in [
        "v0.9.0",
        "v1.0.0",
        "v1.2.0",
        "v1.3.0-rc.1",
        "v2.0.0",
        "latest",
        "1.2.5-dev",
    ]
    .iter()
    .enumerate()
    {
        write_tree(dir.path(), &[("version.txt", tag), ("n", &i.to_string())]);
        digests.insert(
            *tag,
            c.push_artifact(dir.path(), &format!("{url}:{tag}"), "s", tag)
                .await
                .unwrap(),
        );
    }
    // Pagination: 2 tags a page still gives them all.
    let small = OciClient::new(OciClientOptions {
        insecure: true,
        tag_page_size: 2,
        ..Default::default()
    })
    .unwrap();
    let mut tags = small.list_tags(&url).await.expect("paginated tags");
    tags.sort();
    assert_eq!(tags.len(), 7, "{tags:?}");

    let rev = resolve(
        &spec(
            &url,
            serde_json::json!({"ref": {"semver": ">=1.0.0 <2.0.0"}}),
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(rev.revision, format!("v1.2.0@{}", digests["v1.2.0"]));
    let rev = resolve(
        &spec(
            &url,
            serde_json::json!({"ref": {"semver": ">=1.0.0-0", "semverFilter": ".*-rc.*"}}),
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        rev.revision,
        format!("v1.3.0-rc.1@{}", digests["v1.3.0-rc.1"])
    );
    // Semver wins over tag.
    let (f, out) = pull(
        &spec(
            &url,
            serde_json::json!({"ref": {"semver": "*", "tag": "v0.9.0"}}),
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(f.revision, format!("v2.0.0@{}", digests["v2.0.0"]));
    assert_eq!(read(out.path(), "version.txt"), "v2.0.0");
    let e = resolve(
        &spec(&url, serde_json::json!({"ref": {"semver": ">=5"}})),
        None,
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &[&url, ">=5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_layouts_trueup_did_not_write() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let addr = reg.addr.clone();

    // Docker v2 schema 2 image: container config, a rootfs layer.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = tgz(&[("etc/app.conf", "docker=1\n")]);
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::DOCKER_MANIFEST,
        "config": desc("application/vnd.docker.container.image.v1+json", config),
        "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", &layer)],
    });
    let mb = serde_json::to_vec_pretty(&m).unwrap();
    let d = raw_push(
        &addr,
        "docker/img",
        "v1",
        manifest::DOCKER_MANIFEST,
        &mb,
        &[config, &layer],
        None,
    )
    .await;
    let (f, out) = pull(
        &spec(
            &reg.url("docker/img"),
            serde_json::json!({"ref": {"tag": "v1"}}),
        ),
        None,
    )
    .await
    .expect("docker v2 pull");
    assert_eq!(f.revision, format!("v1@{d}"));
    assert_eq!(read(out.path(), "etc/app.conf"), "docker=1\n");

    // An OCI image index with arm64 and amd64 manifests: amd64 is pulled; the revision is the
    // index digest (what the tag points at).
    let mut children = Vec::new();
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    for arch in ["arm64", "amd64"] {
        let cfg = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).into_bytes();
        let l = tgz(&[("arch.txt", arch)]);
        let cm = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": desc("application/vnd.oci.image.config.v1+json", &cfg),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &l)],
            "annotations": {"org.opencontainers.image.revision": format!("rev-{arch}")},
        }))
        .unwrap();
        let cd = raw_push(
            &addr,
            "multi",
            &digest_of(&cm),
            manifest::OCI_MANIFEST,
            &cm,
            &[&cfg, &l],
            None,
        )
        .await;
        children.push(serde_json::json!({
            "mediaType": manifest::OCI_MANIFEST, "digest": cd, "size": cm.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
        blobs.push(l);
    }
    let idx = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": children,
    }))
    .unwrap();
    let idx_digest = raw_push(&addr, "multi", "v2", manifest::OCI_INDEX, &idx, &[], None).await;
    let (f, out) = pull(
        &spec(&reg.url("multi"), serde_json::json!({"ref": {"tag": "v2"}})),
        None,
    )
    .await
    .expect("index pull");
    assert_eq!(f.revision, format!("v2@{idx_digest}"));
    assert_eq!(read(out.path(), "arch.txt"), "amd64");
    assert_eq!(
        f.metadata
            .get(manifest::ANNOTATION_REVISION)
            .map(String::as_str),
        Some("rev-amd64")
    );

    // Two layers of other media types; layerSelector picks one, copy keeps it as is.
    let cfg = b"{}";
    let yaml = b"apiVersion: v1\nkind: Namespace\n".to_vec();
    let other = tgz(&[("x", "y")]);
    let title = BTreeMap::from([(
        manifest::ANNOTATION_TITLE.to_string(),
        "ns.yaml".to_string(),
    )]);
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": desc("application/vnd.example.config+json", cfg),
        "layers": [
            desc("application/vnd.example.other.tar+gzip", &other),
            {"mediaType": "application/vnd.example.yaml", "digest": digest_of(&yaml), "size": yaml.len(), "annotations": title},
        ],
    }))
    .unwrap();
    raw_push(
        &addr,
        "custom",
        "v3",
        manifest::OCI_MANIFEST,
        &m,
        &[cfg, &other, &yaml],
        None,
    )
    .await;
    let s = spec(
        &reg.url("custom"),
        serde_json::json!({"ref": {"tag": "v3"}, "layerSelector": {"mediaType": "application/vnd.example.yaml", "operation": "copy"}}),
    );
    let (_, out) = pull(&s, None).await.expect("copy pull");
    assert_eq!(std::fs::read(out.path().join("ns.yaml")).unwrap(), yaml);
    // Extracting a layer that is not a tarball says what to do.
    let s = spec(
        &reg.url("custom"),
        serde_json::json!({"ref": {"tag": "v3"}, "layerSelector": {"mediaType": "application/vnd.example.yaml"}}),
    );
    let e = pull(&s, None).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::Other,
        &["not a gzip-compressed tarball", "copy"],
    );
    let s = spec(
        &reg.url("custom"),
        serde_json::json!({"ref": {"tag": "v3"}, "layerSelector": {"mediaType": "application/nope"}}),
    );
    let e = pull(&s, None).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::NotFound,
        &["application/nope", "application/vnd.example.yaml"],
    );

    // A Helm chart as `helm push` lays it out, tags with `_` for `+`.
    let c = client(None, &addr);
    let mut charts = BTreeMap::new();
    for version in ["1.0.0", "1.2.0+build.1", "2.0.0", "1.3.0-beta.1"] {
        let chart = tgz(&[(
            "podinfo/Chart.yaml",
            &format!("name: podinfo\nversion: {version}\n"),
        )]);
        let cfg =
            format!(r#"{{"name":"podinfo","version":"{version}","apiVersion":"v2"}}"#).into_bytes();
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": desc(manifest::HELM_CONFIG, &cfg),
            "layers": [desc(manifest::HELM_CHART, &chart)],
        }))
        .unwrap();
        let tag = version.replace('+', "_");
        raw_push(
            &addr,
            "charts/podinfo",
            &tag,
            manifest::OCI_MANIFEST,
            &m,
            &[&cfg, &chart],
            None,
        )
        .await;
        charts.insert(version, chart);
    }
    let chart_url = reg.url("charts/podinfo");
    let got = c
        .resolve_chart(&chart_url, Some("^1.0.0"))
        .await
        .expect("chart");
    assert_eq!(got.version.version, "1.2.0+build.1");
    assert_eq!(got.version.tag, "1.2.0_build.1");
    assert_eq!(got.tgz, charts["1.2.0+build.1"]);
    let got = c
        .resolve_chart(&chart_url, None)
        .await
        .expect("latest chart");
    assert_eq!(got.version.version, "2.0.0");
    let got = c
        .resolve_chart(&chart_url, Some("1.2.0+build.1"))
        .await
        .expect("exact chart");
    assert_eq!(got.tgz, charts["1.2.0+build.1"]);
    let e = c
        .resolve_chart(&chart_url, Some("9.9.9"))
        .await
        .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &[&chart_url, "9.9.9"]);
    let e = c
        .resolve_chart(&chart_url, Some(">= nope"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::InvalidSpec);
    // Not a chart: a Flux artifact has no chart layer.
    let e = c
        .resolve_chart(&reg.url("docker/img"), Some("*"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::NotFound, "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_missing_tags_and_tampered_blobs() {
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let url = reg.url("app");
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("a.yaml", "a: 1\n")]);
    let c = client(None, &reg.addr);
    let digest = c
        .push_artifact(dir.path(), &format!("{url}:v1"), "s", "r")
        .await
        .unwrap();

    let e = resolve(&spec(&url, serde_json::json!({"ref": {"tag": "v9"}})), None)
        .await
        .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &[&url, "tag 'v9'"]);
    let missing = reg.url("nope/nothing");
    let e = resolve(&spec(&missing, serde_json::json!({})), None)
        .await
        .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &[&missing, "latest"]);
    let e = resolve(
        &spec(&missing, serde_json::json!({"ref": {"semver": "*"}})),
        None,
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &[&missing]);
    let absent = format!("sha256:{}", "1".repeat(64));
    let e = pull(
        &spec(&url, serde_json::json!({"ref": {"digest": absent}})),
        None,
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &[&url, &absent]);
    for bad in [
        format!("https://{}/app", reg.addr),
        format!("oci://{}/App", reg.addr),
        format!("{url}:v1"),
        format!("oci://user:{PASSWORD}@{}/app", reg.addr),
    ] {
        let e = resolve(&spec(&bad, serde_json::json!({})), None)
            .await
            .unwrap_err();
        assert_err(&e, SourceErrorKind::InvalidSpec, &[]);
    }
    let e = resolve(
        &spec(&url, serde_json::json!({"verify": {"provider": "cosign"}})),
        None,
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::InvalidSpec, &["not supported yet"]);
    // Nothing listens there.
    let e = resolve(&spec("oci://127.0.0.1:1/app", serde_json::json!({})), None)
        .await
        .unwrap_err();
    assert_err(&e, SourceErrorKind::Unreachable, &["oci://127.0.0.1:1/app"]);

    // Tamper with the layer in the registry's storage (same size): the pull must refuse it.
    let m = c
        .get_manifest(&trueup_sources::oci::Reference::parse(&format!("{url}:v1")).unwrap())
        .await
        .unwrap();
    let manifest::Document::Manifest(m) = m.document else {
        panic!("manifest")
    };
    let layer = &m.layers[0];
    let path = reg.blob_path(&layer.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let e = pull(&spec(&url, serde_json::json!({"ref": {"tag": "v1"}})), None)
        .await
        .unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::Other,
        &["digest mismatch", &layer.digest, &url],
    );
    // A tampered manifest: this registry notices itself and answers 500; the error still
    // names the URL and the digest. (trueup hashes manifest bytes too; the registry refuses first.)
    let mpath = reg.blob_path(&digest);
    let mut mb = std::fs::read(&mpath).unwrap();
    let i = mb.len() - 2;
    mb[i] = b' ';
    std::fs::write(&mpath, &mb).unwrap();
    let e = pull(
        &spec(&url, serde_json::json!({"ref": {"digest": digest}})),
        None,
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::Unreachable, &[&url, &digest, "500"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_docker_config_secrets() {
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let url = reg.url("private/app");
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("k.yaml", "k: v\n")]);
    let c = client(Some((USER, PASSWORD)), &reg.addr);
    let digest = c
        .push_artifact(dir.path(), &format!("{url}:v1"), "s", "r")
        .await
        .expect("push with auth");
    // Plain HTTP without credentials is refused by the registry itself.
    let status = http()
        .get(reg.http("/v2/private/app/tags/list"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);

    let creds = docker_config(&reg.addr, USER, PASSWORD);
    let (f, out) = pull(
        &spec(&url, serde_json::json!({"ref": {"tag": "v1"}})),
        Some(&creds),
    )
    .await
    .expect("pull with dockerconfigjson");
    assert_eq!(f.revision, format!("v1@{digest}"));
    assert_eq!(read(out.path(), "k.yaml"), "k: v\n");
    // username/password form of the config entry.
    let json = format!(
        r#"{{"auths":{{"http://{}/v2/":{{"username":"{USER}","password":"{PASSWORD}"}}}}}}"#,
        reg.addr
    );
    let creds2 = Credentials(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        json.into_bytes(),
    )]));
    resolve(
        &spec(&url, serde_json::json!({"ref": {"tag": "v1"}})),
        Some(&creds2),
    )
    .await
    .expect("username/password entry");

    let wrong = docker_config(&reg.addr, USER, "wrong-password");
    let e = resolve(
        &spec(&url, serde_json::json!({"ref": {"tag": "v1"}})),
        Some(&wrong),
    )
    .await
    .unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::Auth,
        &[&url, "401", "check the credentials"],
    );
    assert!(!e.message.contains("wrong-password"), "{}", e.message);
    let e = resolve(&spec(&url, serde_json::json!({"ref": {"tag": "v1"}})), None)
        .await
        .unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::Auth,
        &[&url, "no credentials configured"],
    );
    // Credentials for another host are not sent here.
    let other = docker_config("ghcr.io", USER, PASSWORD);
    let e = resolve(&spec(&url, serde_json::json!({})), Some(&other))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Auth);
    let e = c
        .push_artifact(dir.path(), &format!("{url}:v2"), "s", "r")
        .await;
    assert!(e.is_ok());
    let e = client(Some((USER, "nope")), &reg.addr)
        .push_artifact(dir.path(), &format!("{url}:v3"), "s", "r")
        .await
        .unwrap_err();
    assert_err(&e, SourceErrorKind::Auth, &[&url]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_redirects_and_rate_limits_through_a_front_proxy() {
    let Some(reg) = Registry::start(true) else {
        return;
    };
    // The proxy checks Bearer tokens it issued against USER/PASSWORD and talks basic auth to
    // the registry behind it, redirects blob downloads to "storage" on another host name
    // (localhost instead of 127.0.0.1), and rate-limits the first two requests.
    let proxy = Proxy::start(
        &reg.addr,
        ProxyConfig {
            rate_limit_first: 2,
            redirect_blobs: true,
            bearer: true,
            upstream_basic: Some((USER.into(), PASSWORD.into())),
        },
    );
    let url = proxy.url("team/app");
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &[("t.yaml", "t: 1\n")]);
    let c = client(Some((USER, PASSWORD)), &proxy.addr);
    let digest = c
        .push_artifact(dir.path(), &format!("{url}:v1"), "s", "r")
        .await
        .expect("push via token flow");
    let seen = proxy.seen();
    assert!(
        seen.iter().filter(|s| s.path.starts_with("/token")).count() >= 1,
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))),
        "{seen:?}"
    );

    let creds = docker_config(&proxy.addr, USER, PASSWORD);
    let s = spec(&url, serde_json::json!({"ref": {"tag": "v1"}}));
    let o = object();
    let req = SourceRequest {
        object: &o,
        spec: &s,
        credentials: Some(&creds),
        timeout: Duration::from_secs(30),
    };
    let src = OciSource::new();
    proxy.clear();
    let rev = src.resolve(&req).await.expect("resolve via token");
    assert_eq!(rev.revision, format!("v1@{digest}"));
    let out = tempfile::tempdir().unwrap();
    src.fetch(&req, &rev, out.path())
        .await
        .expect("fetch via redirect");
    assert_eq!(read(out.path(), "t.yaml"), "t: 1\n");
    let seen = proxy.seen();
    // Blob storage on the other host got no credentials.
    let storage: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/storage/"))
        .collect();
    assert!(!storage.is_empty(), "{seen:?}");
    for s in &storage {
        assert!(s.host.starts_with("localhost:"), "{s:?}");
        assert_eq!(
            s.authorization, None,
            "credentials leaked to blob storage: {s:?}"
        );
    }
    // With the token cached by the source, an unchanged tag costs one HEAD request.
    proxy.clear();
    let again = src.resolve(&req).await.unwrap();
    assert_eq!(again, rev);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "HEAD");

    // Wrong password: the token service refuses, the error says so and names the URL.
    let wrong = docker_config(&proxy.addr, USER, "bad-pass");
    let e = resolve(&s, Some(&wrong)).await.unwrap_err();
    assert_err(&e, SourceErrorKind::Auth, &[&url, "token service"]);
    assert!(!e.message.contains("bad-pass"));

    // Rate limiting beyond the retry budget is reported as such.
    let limited = Proxy::start(
        &reg.addr,
        ProxyConfig {
            rate_limit_first: 100,
            ..Default::default()
        },
    );
    let fast = OciClient::new(OciClientOptions {
        insecure: true,
        max_retries: 2,
        max_retry_wait: Duration::from_millis(50),
        ..Default::default()
    })
    .unwrap();
    let e = fast.list_tags(&limited.url("team/app")).await.unwrap_err();
    assert_err(&e, SourceErrorKind::Unreachable, &["429", "team/app"]);
    assert_eq!(limited.seen().len(), 3);
}

fn helm_chart_spec(url: &str, chart: &str, version: &str) -> trueup_sources::helm::HelmChartSource {
    trueup_sources::helm::HelmChartSource {
        repository: serde_json::from_value(serde_json::json!({
            "url": url, "type": "oci", "insecure": true, "interval": "5m"
        }))
        .unwrap(),
        chart: serde_json::from_value(serde_json::json!({
            "chart": chart, "version": version,
            "sourceRef": {"kind": "HelmRepository", "name": "charts"}
        }))
        .unwrap(),
    }
}

async fn pull_helm_chart(
    spec: &trueup_sources::helm::HelmChartSource,
    creds: Option<&Credentials>,
) -> Result<(FetchedRevision, Vec<u8>), SourceError> {
    let o = object();
    let req = SourceRequest {
        object: &o,
        spec,
        credentials: creds,
        timeout: Duration::from_secs(30),
    };
    let src = trueup_sources::HelmSource::new();
    let rev = src.resolve(&req).await?;
    let dir = tempfile::tempdir().unwrap();
    let fetched = src.fetch(&req, &rev, dir.path()).await?;
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    Ok((fetched, std::fs::read(file).unwrap()))
}

/// The registry itself doing `auth: token` (no proxy): it sends clients to a token service
/// the test runs, which signs RS256 JWTs with an `x5c` certificate the registry trusts. Charts
/// are pushed and pulled through the Bearer challenge flow, by the OCI client and by a
/// HelmRepository `type: oci` with a dockerconfigjson Secret; a wrong password is a clear 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_of_the_registry_itself_for_charts() {
    let Some(openssl) = registry::openssl_bin() else {
        return;
    };
    let tokens = registry::TokenServer::start(&openssl);
    let Some(reg) = Registry::start_token(
        &tokens.realm,
        &tokens.service,
        &tokens.issuer,
        &tokens.cert_pem,
    ) else {
        return;
    };
    // Without a token the registry answers with its Bearer challenge.
    let resp = http()
        .get(reg.http("/v2/charts/podinfo/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&tokens.realm),
        "{challenge}"
    );

    let url = reg.url("charts/podinfo");
    let c = client(Some((USER, PASSWORD)), &reg.addr);
    let r = trueup_sources::oci::Reference::parse(&url).unwrap();
    let mut charts = BTreeMap::new();
    for version in ["1.0.0", "1.2.0+build.1", "2.0.0"] {
        let chart = tgz(&[
            (
                "podinfo/Chart.yaml",
                &format!("apiVersion: v2\nname: podinfo\nversion: {version}\n"),
            ),
            ("podinfo/values.yaml", "a: 1\n"),
        ]);
        c.push_manifest_with_blobs(
            &r,
            &version.replace('+', "_"),
            trueup_sources::oci::Blob::new(manifest::HELM_CONFIG, b"{}".to_vec()),
            vec![trueup_sources::oci::Blob::new(
                manifest::HELM_CHART,
                chart.clone(),
            )],
            BTreeMap::new(),
        )
        .await
        .expect("push through the token flow");
        charts.insert(version, chart);
    }
    let seen = tokens.requests.lock().unwrap().clone();
    // The registry names the actions in either order (it builds the scope from a Go map).
    let pull_and_push = |scope: &str| {
        scope
            .split_once("charts/podinfo:")
            .is_some_and(|(_, actions)| {
                let mut a: Vec<&str> = actions.split(',').collect();
                a.sort_unstable();
                a == ["pull", "push"]
            })
    };
    assert!(
        seen.iter()
            .any(|(scope, granted)| *granted && pull_and_push(scope)),
        "{seen:?}"
    );

    // A HelmRepository `type: oci` with a dockerconfigjson Secret: `^1.0` picks 1.2.0+build.1
    // (tagged 1.2.0_build.1), and the chart layer comes back byte for byte.
    let creds = docker_config(&reg.addr, USER, PASSWORD);
    let spec = helm_chart_spec(&reg.url("charts"), "podinfo", "^1.0");
    let (rev, bytes) = pull_helm_chart(&spec, Some(&creds))
        .await
        .expect("chart via token auth");
    assert_eq!(rev.revision, "1.2.0+build.1");
    assert_eq!(bytes, charts["1.2.0+build.1"]);
    let (rev, _) = pull_helm_chart(
        &helm_chart_spec(&reg.url("charts"), "podinfo", ""),
        Some(&creds),
    )
    .await
    .unwrap();
    assert_eq!(rev.revision, "2.0.0", "no version: the latest");

    // Wrong password: the token service's 401, named, with the password nowhere.
    let wrong = docker_config(&reg.addr, USER, "wr0ng-pa55");
    let e = pull_helm_chart(&spec, Some(&wrong)).await.unwrap_err();
    assert_err(&e, SourceErrorKind::Auth, &["token service", "401"]);
    assert!(!e.message.contains("wr0ng-pa55"), "{}", e.message);
    // No credentials at all.
    let e = pull_helm_chart(&spec, None).await.unwrap_err();
    assert_err(&e, SourceErrorKind::Auth, &["no credentials configured"]);
    assert!(tokens.requests.lock().unwrap().iter().any(|(_, g)| !g));

    // Helm's own client goes through the same registry and token service.
    if let Some(helm) = helm_bin() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("pulled")).unwrap();
        run_helm(
            &helm,
            home.path(),
            &[
                "pull",
                &url,
                "--version",
                "1.0.0",
                "--plain-http",
                "--username",
                USER,
                "--password",
                PASSWORD,
                "--destination",
                "pulled",
            ],
        );
        assert_eq!(
            std::fs::read(home.path().join("pulled/podinfo-1.0.0.tgz")).unwrap(),
            charts["1.0.0"]
        );
    }
}

/// A HelmRepository `type: oci` against htpasswd basic auth with a Secret holding
/// `username`/`password` keys; a version that does not exist and a chart that is not there
/// are named; a plain HelmRepository URL with `type: oci` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_repository_type_oci_with_basic_auth() {
    let Some(reg) = Registry::start(true) else {
        return;
    };
    let url = reg.url("team/charts/app");
    let c = client(Some((USER, PASSWORD)), &reg.addr);
    let r = trueup_sources::oci::Reference::parse(&url).unwrap();
    let chart = tgz(&[(
        "app/Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 0.3.0\n",
    )]);
    c.push_manifest_with_blobs(
        &r,
        "0.3.0",
        trueup_sources::oci::Blob::new(manifest::HELM_CONFIG, b"{}".to_vec()),
        vec![trueup_sources::oci::Blob::new(
            manifest::HELM_CHART,
            chart.clone(),
        )],
        BTreeMap::new(),
    )
    .await
    .unwrap();
    let creds = Credentials(BTreeMap::from([
        ("username".to_string(), USER.as_bytes().to_vec()),
        ("password".to_string(), PASSWORD.as_bytes().to_vec()),
    ]));
    let spec = helm_chart_spec(&reg.url("team/charts"), "app", "0.3.0");
    let (rev, bytes) = pull_helm_chart(&spec, Some(&creds))
        .await
        .expect("basic auth");
    assert_eq!(rev.revision, "0.3.0");
    assert_eq!(bytes, chart);

    let e = pull_helm_chart(
        &helm_chart_spec(&reg.url("team/charts"), "app", "0.4.0"),
        Some(&creds),
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &["0.4.0", "team/charts/app"]);
    let e = pull_helm_chart(
        &helm_chart_spec(&reg.url("team/charts"), "nope", ">=1"),
        Some(&creds),
    )
    .await
    .unwrap_err();
    assert_err(&e, SourceErrorKind::NotFound, &["team/charts/nope"]);
    let wrong = Credentials(BTreeMap::from([
        ("username".to_string(), USER.as_bytes().to_vec()),
        ("password".to_string(), b"bad-pa55word".to_vec()),
    ]));
    let e = pull_helm_chart(&spec, Some(&wrong)).await.unwrap_err();
    assert_err(&e, SourceErrorKind::Auth, &["401"]);
    assert!(!e.message.contains("bad-pa55word"));
    let mut http_url = spec.clone();
    http_url.repository.url = format!("http://{}/team/charts", reg.addr);
    let e = pull_helm_chart(&http_url, Some(&creds)).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::InvalidSpec,
        &["invalid OCI registry URL"],
    );
    let mut provider = spec.clone();
    provider.repository.provider = Some("aws".into());
    let e = pull_helm_chart(&provider, Some(&creds)).await.unwrap_err();
    assert_err(&e, SourceErrorKind::InvalidSpec, &["provider 'aws'"]);
}

/// Real Helm (`TRUEUP_HELM`, else the cached v4.3.1): `None` after saying SKIP, a failure under
/// `TRUEUP_REQUIRE_ORACLES=1`.
fn helm_bin() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var("TRUEUP_HELM").ok(),
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/trueup-tools/helm/helm")),
        Some("/work/tools/helm/helm".to_string()),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("TRUEUP_REQUIRE_ORACLES").is_none(),
            "helm is required (TRUEUP_REQUIRE_ORACLES is set): set TRUEUP_HELM"
        );
        println!("SKIP: no helm binary (set TRUEUP_HELM)");
    }
    found
}

fn run_helm(helm: &Path, home: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(helm)
        .args(args)
        .env("HOME", home)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(home)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Interoperability with real Helm: a chart packaged and pushed by `helm push` (tag with `_`
/// for `+`) is found and pulled byte for byte by a HelmRepository `type: oci`; a chart pushed
/// by trueup is pulled and read by `helm pull` / `helm show chart`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_pushed_by_helm_and_by_trueup_read_both_ways() {
    let Some(helm) = helm_bin() else {
        return;
    };
    let Some(reg) = Registry::start(false) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    write_tree(
        home.path(),
        &[
            (
                "src/web/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 2.1.0+build.7\n",
            ),
            ("src/web/values.yaml", "replicas: 2\n"),
            ("src/web/templates/cm.yaml", "kind: ConfigMap\n"),
        ],
    );
    run_helm(
        &helm,
        home.path(),
        &["package", "src/web", "--destination", "out"],
    );
    let packaged = std::fs::read(home.path().join("out/web-2.1.0+build.7.tgz")).unwrap();
    run_helm(
        &helm,
        home.path(),
        &[
            "push",
            "out/web-2.1.0+build.7.tgz",
            &format!("oci://{}/helm-charts", reg.addr),
            "--plain-http",
        ],
    );
    let tags = client(None, &reg.addr)
        .list_tags(&reg.url("helm-charts/web"))
        .await
        .unwrap();
    assert_eq!(tags, vec!["2.1.0_build.7"]);
    let (rev, bytes) = pull_helm_chart(
        &helm_chart_spec(&reg.url("helm-charts"), "web", ">=2.0.0"),
        None,
    )
    .await
    .expect("a chart helm pushed");
    assert_eq!(rev.revision, "2.1.0+build.7");
    assert_eq!(bytes, packaged, "the chart layer as helm packaged it");

    // The other way: trueup pushes with Helm's media types, helm pulls and reads it.
    let chart = tgz(&[
        (
            "api/Chart.yaml",
            "apiVersion: v2\nname: api\nversion: 0.5.0\ndescription: pushed by trueup\n",
        ),
        ("api/values.yaml", "port: 80\n"),
    ]);
    let r = trueup_sources::oci::Reference::parse(&reg.url("helm-charts/api")).unwrap();
    client(None, &reg.addr)
        .push_manifest_with_blobs(
            &r,
            "0.5.0",
            trueup_sources::oci::Blob::new(
                manifest::HELM_CONFIG,
                br#"{"apiVersion":"v2","name":"api","version":"0.5.0"}"#.to_vec(),
            ),
            vec![trueup_sources::oci::Blob::new(
                manifest::HELM_CHART,
                chart.clone(),
            )],
            BTreeMap::new(),
        )
        .await
        .unwrap();
    let shown = run_helm(
        &helm,
        home.path(),
        &[
            "show",
            "chart",
            &format!("oci://{}/helm-charts/api", reg.addr),
            "--version",
            "0.5.0",
            "--plain-http",
        ],
    );
    assert!(shown.contains("description: pushed by trueup"), "{shown}");
    std::fs::create_dir_all(home.path().join("pulled")).unwrap();
    run_helm(
        &helm,
        home.path(),
        &[
            "pull",
            &format!("oci://{}/helm-charts/api", reg.addr),
            "--version",
            "0.5.0",
            "--plain-http",
            "--destination",
            "pulled",
        ],
    );
    assert_eq!(
        std::fs::read(home.path().join("pulled/api-0.5.0.tgz")).unwrap(),
        chart
    );
}

/// A HelmRepository `type: oci` over HTTPS: the registry's certificate is signed by a CA the
/// `certSecretRef` Secret holds (`ca.crt`); without it the TLS failure is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_repository_type_oci_over_tls_with_a_ca_from_the_cert_secret() {
    let Some(openssl) = registry::openssl_bin() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = registry::tls_certificates(&openssl, certs.path());
    let Some(reg) = Registry::start_tls(&cert, &key) else {
        return;
    };
    let ca_pem = std::fs::read(&ca).unwrap();
    let c = OciClient::new(OciClientOptions {
        ca_pem: Some(ca_pem.clone()),
        timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .unwrap();
    let chart = tgz(&[(
        "db/Chart.yaml",
        "apiVersion: v2\nname: db\nversion: 3.0.0\n",
    )]);
    let r = trueup_sources::oci::Reference::parse(&reg.url("charts/db")).unwrap();
    c.push_manifest_with_blobs(
        &r,
        "3.0.0",
        trueup_sources::oci::Blob::new(manifest::HELM_CONFIG, b"{}".to_vec()),
        vec![trueup_sources::oci::Blob::new(
            manifest::HELM_CHART,
            chart.clone(),
        )],
        BTreeMap::new(),
    )
    .await
    .expect("push over TLS");
    let mut spec = helm_chart_spec(&reg.url("charts"), "db", "3.x");
    spec.repository.insecure = false;
    let certs_secret = Credentials(BTreeMap::from([("ca.crt".to_string(), ca_pem)]));
    let (rev, bytes) = pull_helm_chart(&spec, Some(&certs_secret))
        .await
        .expect("pull over TLS with the CA");
    assert_eq!(rev.revision, "3.0.0");
    assert_eq!(bytes, chart);
    let e = pull_helm_chart(&spec, None).await.unwrap_err();
    assert!(
        e.message.to_lowercase().contains("certificate") && e.message.contains("charts/db"),
        "{}",
        e.message
    );
}

/// The Secret of a `certSecretRef`, from files.
fn cert_secret(files: &[(&str, &Path)]) -> Credentials {
    Credentials(
        files
            .iter()
            .map(|(k, p)| (k.to_string(), std::fs::read(p).unwrap()))
            .collect(),
    )
}

/// A registry that requires a client certificate (`http.tls.clientcas`): pushed and pulled with
/// the `certSecretRef`'s `tls.crt`/`tls.key` (PKCS#1, PKCS#8 and SEC1 keys); without them, with
/// a certificate the registry does not trust, with a key of another pair, or with only one
/// half of the pair, the error says so and names the registry or the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_a_registry_that_requires_them() {
    let Some(openssl) = registry::openssl_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = registry::client_certificates(&openssl, dir.path());
    let Some(reg) = Registry::start_mtls(&c.server_crt, &c.server_key, &c.ca) else {
        return;
    };
    let ca_pem = std::fs::read(&c.ca).unwrap();
    let pusher = OciClient::new(OciClientOptions {
        ca_pem: Some(ca_pem.clone()),
        client_cert: Some(trueup_sources::tls::ClientCert::new(
            std::fs::read(&c.client_crt).unwrap(),
            std::fs::read(&c.client_key_pkcs1).unwrap(),
        )),
        timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .unwrap();
    let src_dir = tempfile::tempdir().unwrap();
    write_tree(src_dir.path(), &[("deploy/app.yaml", "kind: ConfigMap\n")]);
    let url = reg.url("fleet/mtls");
    let digest = pusher
        .push_artifact(src_dir.path(), &format!("{url}:v1"), "s", "r")
        .await
        .expect("push with a client certificate");

    let mut s = spec(
        &url,
        serde_json::json!({"ref": {"tag": "v1"}, "certSecretRef": {"name": "registry-tls"}}),
    );
    s.insecure = false;
    for (crt, key) in [
        (&c.client_crt, &c.client_key_pkcs1),
        (&c.client_crt, &c.client_key_pkcs8),
        (&c.ec_crt, &c.ec_key_sec1),
    ] {
        let secret = cert_secret(&[("ca.crt", &c.ca), ("tls.crt", crt), ("tls.key", key)]);
        let (fetched, out) = pull(&s, Some(&secret))
            .await
            .unwrap_or_else(|e| panic!("pull with {}: {}", key.display(), e.message));
        assert_eq!(fetched.revision, format!("v1@{digest}"));
        assert_eq!(read(out.path(), "deploy/app.yaml"), "kind: ConfigMap\n");
    }

    // No client certificate: the handshake fails, named as such, with the registry's address.
    let only_ca = cert_secret(&[("ca.crt", &c.ca)]);
    let e = resolve(&s, Some(&only_ca)).await.unwrap_err();
    assert_tls_refusal(
        &e,
        &[
            "TLS handshake failed",
            "requires a client certificate",
            &reg.addr,
        ],
    );

    // A certificate the registry does not trust.
    let stranger = cert_secret(&[
        ("ca.crt", &c.ca),
        ("tls.crt", &c.stranger_crt),
        ("tls.key", &c.stranger_key),
    ]);
    let e = resolve(&s, Some(&stranger)).await.unwrap_err();
    assert_tls_refusal(
        &e,
        &[
            "TLS handshake failed",
            "refused the client certificate",
            &reg.addr,
        ],
    );

    // The key of another pair: refused before connecting, naming the Secret and its keys.
    let mismatched = cert_secret(&[
        ("ca.crt", &c.ca),
        ("tls.crt", &c.client_crt),
        ("tls.key", &c.stranger_key),
    ]);
    let e = resolve(&s, Some(&mismatched)).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::InvalidSpec,
        &[
            "secret 'registry-tls' (certSecretRef)",
            "'tls.key'",
            "does not match",
        ],
    );
    let key_pem = std::fs::read_to_string(&c.stranger_key).unwrap();
    let key_body = key_pem.lines().nth(1).unwrap();
    assert!(!e.message.contains(key_body), "{}", e.message);

    // Half a pair, and a key that is not PEM.
    let half = cert_secret(&[("ca.crt", &c.ca), ("tls.crt", &c.client_crt)]);
    let e = resolve(&s, Some(&half)).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::InvalidSpec,
        &[
            "secret 'registry-tls' (certSecretRef)",
            "'tls.key' is missing",
        ],
    );
    let mut garbled = cert_secret(&[("ca.crt", &c.ca), ("tls.crt", &c.client_crt)]);
    garbled
        .0
        .insert("tls.key".into(), b"s3cret-not-a-pem-key".to_vec());
    let e = resolve(&s, Some(&garbled)).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::InvalidSpec,
        &[
            "secret 'registry-tls' (certSecretRef)",
            "'tls.key'",
            "no PEM private key",
        ],
    );
    assert!(!e.message.contains("s3cret"), "{}", e.message);

    // A HelmRepository `type: oci` on the same registry: the chart pulled with the client
    // certificate of its certSecretRef, and refused without one.
    let chart = tgz(&[(
        "db/Chart.yaml",
        "apiVersion: v2\nname: db\nversion: 2.0.0\n",
    )]);
    pusher
        .push_manifest_with_blobs(
            &trueup_sources::oci::Reference::parse(&reg.url("charts/db")).unwrap(),
            "2.0.0",
            trueup_sources::oci::Blob::new(manifest::HELM_CONFIG, b"{}".to_vec()),
            vec![trueup_sources::oci::Blob::new(
                manifest::HELM_CHART,
                chart.clone(),
            )],
            BTreeMap::new(),
        )
        .await
        .expect("push a chart with a client certificate");
    let mut hs = helm_chart_spec(&reg.url("charts"), "db", "2.x");
    hs.repository.insecure = false;
    hs.repository.cert_secret_ref =
        Some(serde_json::from_value(serde_json::json!({"name": "charts-tls"})).unwrap());
    let good = cert_secret(&[
        ("ca.crt", &c.ca),
        ("tls.crt", &c.client_crt),
        ("tls.key", &c.client_key_pkcs8),
    ]);
    let (rev, bytes) = pull_helm_chart(&hs, Some(&good))
        .await
        .expect("chart over mutual TLS");
    assert_eq!(rev.revision, "2.0.0");
    assert_eq!(bytes, chart);
    let e = pull_helm_chart(&hs, Some(&only_ca)).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::Auth,
        &["requires a client certificate", &reg.addr],
    );
    let e = pull_helm_chart(&hs, Some(&half)).await.unwrap_err();
    assert_err(
        &e,
        SourceErrorKind::InvalidSpec,
        &[
            "secret 'charts-tls' (certSecretRef)",
            "'tls.key' is missing",
        ],
    );

    // Through the OCIRepository reconciler: the certSecretRef Secret read from the backend.
    use trueup_core::reconcile::{OciRepositoryReconciler, Reconciler, Verdict};
    use trueup_core::traits::{ApplyOptions, Backend};
    let backend = trueup_core::memory::MemoryBackend::new();
    let store_dir = tempfile::tempdir().unwrap();
    let store = trueup_core::storage::ArtifactStore::new(store_dir.path()).unwrap();
    let reconciler = OciRepositoryReconciler::new(OciSource::new(), store);
    let secret = |name: &str, keys: &[(&str, &Path)]| {
        let data: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|(k, p)| (k.to_string(), std::fs::read_to_string(p).unwrap().into()))
            .collect();
        trueup_core::object::Object::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "flux-system"},
            "stringData": data,
        }))
        .unwrap()
    };
    let repo = |name: &str, secret: &str| {
        trueup_core::object::Object::from_value(serde_json::json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
            "metadata": {"name": name, "namespace": "flux-system"},
            "spec": {"interval": "5m", "url": url, "ref": {"tag": "v1"},
                     "certSecretRef": {"name": secret}},
        }))
        .unwrap()
    };
    for obj in [
        secret(
            "registry-tls",
            &[
                ("ca.crt", &c.ca),
                ("tls.crt", &c.ec_crt),
                ("tls.key", &c.ec_key_sec1),
            ],
        ),
        secret(
            "half-tls",
            &[("ca.crt", &c.ca), ("tls.key", &c.ec_key_sec1)],
        ),
    ] {
        backend.apply(&obj, &ApplyOptions::default()).await.unwrap();
    }
    let out = reconciler
        .reconcile(&repo("fleet", "registry-tls"), &backend)
        .await;
    assert_eq!(out.verdict, Verdict::Ready, "{:?}", out.status);
    let artifact = out.status.artifact.as_ref().expect("artifact");
    assert_eq!(artifact.revision, format!("v1@{digest}"));
    let out = reconciler
        .reconcile(&repo("half", "half-tls"), &backend)
        .await;
    assert_eq!(
        out.verdict,
        Verdict::Failed { stalled: true },
        "{:?}",
        out.status
    );
    let ready = out.status.condition("Ready").expect("Ready");
    assert!(
        ready.message.contains("secret 'half-tls' (certSecretRef)")
            && ready.message.contains("'tls.crt' is missing"),
        "{}",
        ready.message
    );
    let key_body = std::fs::read_to_string(&c.ec_key_sec1).unwrap();
    assert!(
        !ready.message.contains(key_body.lines().nth(1).unwrap()),
        "{}",
        ready.message
    );
}
