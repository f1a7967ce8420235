//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! registry v2) on 127.0.0.1 with a free port and a temporary storage folder, optionally with
//! htpasswd basic auth; plus a small HTTP front proxy that adds what the registry cannot be
//! told to do (rate limiting, redirects to blob storage on another host, Bearer token auth) and
//! records the requests it saw. Everything is stopped by its Drop guard.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const USER: &str = "ci-bot";
pub const PASSWORD: &str = "s3cret-pa55";

/// The registry binary, or `None` after printing SKIP. With `TRUEUP_REQUIRE_ORACLES=1` (CI) a
/// missing binary fails the test instead: a green run must have exercised the real registry.
pub fn registry_bin() -> Option<PathBuf> {
    let bin = std::env::var("TRUEUP_DOCKER_REGISTRY").unwrap_or_else(|_| REGISTRY_BIN.into());
    if Path::new(&bin).exists() {
        return Some(PathBuf::from(bin));
    }
    if std::env::var("TRUEUP_REQUIRE_ORACLES").as_deref() == Ok("1") {
        panic!("{bin} is missing (apt-get install docker-registry) and TRUEUP_REQUIRE_ORACLES=1");
    }
    eprintln!("SKIP: {bin} not found (apt-get install docker-registry)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `docker-registry serve`.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub basic_auth: bool,
}

impl Registry {
    /// Starts a registry; `basic_auth` adds htpasswd auth for [`USER`]/[`PASSWORD`].
    pub fn start(basic_auth: bool) -> Option<Registry> {
        Registry::start_with(basic_auth, None)
    }

    /// Starts a registry with `auth: token`: it trusts JWTs signed by the key of `cert_pem`
    /// (its `rootcertbundle`) for `service`, issued by `issuer`, and sends clients to `realm`.
    pub fn start_token(
        realm: &str,
        service: &str,
        issuer: &str,
        cert_pem: &Path,
    ) -> Option<Registry> {
        let auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            cert_pem.display()
        );
        Registry::start_with(false, Some(auth))
    }

    /// Starts a registry serving HTTPS with `cert`/`key` (no auth).
    pub fn start_tls(cert: &Path, key: &Path) -> Option<Registry> {
        // Nested under `http:`, which the config ends with.
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        Registry::start_with(false, Some(tls))
    }

    /// Starts a registry serving HTTPS with `cert`/`key` that requires a client certificate
    /// signed by `client_ca` (`http.tls.clientcas`: Go's `RequireAndVerifyClientCert`).
    pub fn start_mtls(cert: &Path, key: &Path, client_ca: &Path) -> Option<Registry> {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
            cert.display(),
            key.display(),
            client_ca.display()
        );
        Registry::start_with(false, Some(tls))
    }

    fn start_with(basic_auth: bool, token_auth: Option<String>) -> Option<Registry> {
        let bin = registry_bin()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("mkdir");
        let mut auth = token_auth.unwrap_or_default();
        if basic_auth {
            let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).expect("htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: trueup-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        // The port is free now; a race with another process is possible but the start below
        // would then fail loudly rather than talk to a stranger (we check our storage works).
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n  secret: trueup-test-secret\n{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            addr,
            dir,
            basic_auth,
        };
        reg.wait_ready();
        Some(reg)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                // A TLS listener answers plain HTTP with a 400.
                if buf.starts_with("HTTP/1.1 200")
                    || buf.starts_with("HTTP/1.1 401")
                    || buf.starts_with("HTTP/1.0 400")
                {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not come up on {}: {log}", self.addr);
    }

    pub fn url(&self, repo: &str) -> String {
        format!("oci://{}/{repo}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The file holding a blob in the filesystem storage driver.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the front proxy does besides forwarding.
#[derive(Clone, Default)]
pub struct ProxyConfig {
    /// Answer this many requests with `429 Too Many Requests` and `Retry-After: 1` first.
    pub rate_limit_first: usize,
    /// Answer blob GETs with a 307 to `http://localhost:<port>/storage/...` (another host name
    /// for the same proxy), which serves the blob without asking for credentials.
    pub redirect_blobs: bool,
    /// Require `Authorization: Bearer <token>`; tokens come from `/token` for
    /// [`USER`]/[`PASSWORD`] by basic auth.
    pub bearer: bool,
    /// With `bearer`: the basic credentials the upstream registry itself wants, added when
    /// forwarding (the proxy plays the registry's token-checking front).
    pub upstream_basic: Option<(String, String)>,
}

/// A request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub host: String,
    pub authorization: Option<String>,
}

pub struct Proxy {
    pub addr: String,
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, config: ProxyConfig) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let limited = Arc::new(AtomicUsize::new(0));
        let tokens: Arc<Mutex<HashMap<String, ()>>> = Arc::default();
        let upstream = upstream.to_string();
        let (seen2, stop2) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, config, seen, limited, tokens) = (
                    upstream.clone(),
                    config.clone(),
                    seen2.clone(),
                    limited.clone(),
                    tokens.clone(),
                );
                thread::spawn(move || {
                    let _ = handle(conn, port, &upstream, &config, &seen, &limited, &tokens);
                });
            }
        });
        Proxy {
            addr: format!("127.0.0.1:{port}"),
            port,
            seen,
            stop,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("oci://{}/{repo}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.write_all(body);
}

fn handle(
    mut conn: TcpStream,
    port: u16,
    upstream: &str,
    config: &ProxyConfig,
    seen: &Mutex<Vec<Seen>>,
    limited: &AtomicUsize,
    tokens: &Mutex<HashMap<String, ()>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let len: usize = get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let host = get("host").unwrap_or_default();
    let authorization = get("authorization");
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        host: host.clone(),
        authorization: authorization.clone(),
    });

    // "Blob storage": served on another host name, with no credentials asked or wanted.
    if let Some(rest) = path.strip_prefix("/storage/") {
        let target = rest.split('?').next().unwrap_or_default();
        // The signed query stands for the storage's own credentials: the proxy's to the registry.
        let mut h = Vec::new();
        if let Some((u, p)) = &config.upstream_basic {
            use base64::Engine as _;
            h.push((
                "authorization".to_string(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ),
            ));
        }
        return forward(
            &mut conn,
            upstream,
            upstream,
            "GET",
            &format!("/v2/{target}"),
            &h,
            &[],
        );
    }
    if limited.load(Ordering::SeqCst) < config.rate_limit_first {
        limited.fetch_add(1, Ordering::SeqCst);
        respond(
            &mut conn,
            "429 Too Many Requests",
            &[("Retry-After", "1".into())],
            br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        );
        return Ok(());
    }
    if config.bearer {
        if path.starts_with("/token") {
            use base64::Engine as _;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            );
            if authorization.as_deref() != Some(want.as_str()) {
                respond(&mut conn, "401 Unauthorized", &[], b"{}");
                return Ok(());
            }
            let token = format!("tok-{}", tokens.lock().unwrap().len());
            tokens.lock().unwrap().insert(token.clone(), ());
            let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
            respond(
                &mut conn,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                body.as_bytes(),
            );
            return Ok(());
        }
        let ok = authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| tokens.lock().unwrap().contains_key(t));
        if !ok {
            let repo = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split("/manifests/").next())
                .and_then(|p| p.split("/blobs/").next())
                .and_then(|p| p.split("/tags/").next())
                .unwrap_or_default();
            let action = if method == "GET" || method == "HEAD" {
                "pull"
            } else {
                "pull,push"
            };
            respond(
                &mut conn,
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    format!(
                        r#"Bearer realm="http://127.0.0.1:{port}/token",service="trueup-test",scope="repository:{repo}:{action}""#
                    ),
                )],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
            return Ok(());
        }
    }
    if config.redirect_blobs && method == "GET" && path.contains("/blobs/sha256:") {
        let target = path.trim_start_matches("/v2/");
        respond(
            &mut conn,
            "307 Temporary Redirect",
            &[(
                "Location",
                format!("http://localhost:{port}/storage/{target}?X-Signature=abc"),
            )],
            b"",
        );
        return Ok(());
    }
    let mut fwd_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k != "host" && k != "connection" && k != "authorization")
        .cloned()
        .collect();
    if config.bearer {
        if let Some((u, p)) = &config.upstream_basic {
            use base64::Engine as _;
            fwd_headers.push((
                "authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ),
            ));
        }
    } else if let Some(a) = authorization {
        fwd_headers.push(("authorization".into(), a));
    }
    // The client's Host goes upstream, so that the registry's upload Locations point back at
    // the proxy.
    forward(
        &mut conn,
        upstream,
        &host,
        &method,
        &path,
        &fwd_headers,
        &body,
    )
}

/// Sends the request upstream with `Connection: close` and relays the raw response.
fn forward(
    conn: &mut TcpStream,
    upstream: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        if k == "content-length" {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" || method == "PATCH" {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    conn.write_all(&resp)?;
    Ok(())
}

/// The `openssl` CLI, or `None` after printing SKIP (a failure with `TRUEUP_REQUIRE_ORACLES=1`).
pub fn openssl_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("openssl"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("TRUEUP_REQUIRE_ORACLES").as_deref() == Ok("1") {
            panic!("openssl is missing (apt-get install openssl) and TRUEUP_REQUIRE_ORACLES=1");
        }
        eprintln!("SKIP: openssl not found (apt-get install openssl)");
    }
    found
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token service for the registry's `auth: token`, as Docker's distribution documents it: a
/// signing key and self-signed certificate made with `openssl` (the certificate is the
/// registry's `rootcertbundle`), `GET /token?service=..&scope=..` answered for
/// [`USER`]/[`PASSWORD`] by basic auth with an RS256 JWT carrying the certificate in its `x5c`
/// header and the requested repository actions as `access` claims; anything else is a 401.
pub struct TokenServer {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert_pem: PathBuf,
    /// Token requests seen: (scope, granted).
    pub requests: Arc<Mutex<Vec<(String, bool)>>>,
    stop: Arc<AtomicBool>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(openssl: &Path) -> TokenServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=trueup-token-issuer",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // x5c holds the DER certificate in standard base64: the PEM body.
        let pem = std::fs::read_to_string(&cert).unwrap();
        let x5c: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let service = "trueup-registry".to_string();
        let issuer = "trueup-token-issuer".to_string();
        let requests: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let (service2, issuer2, key2, openssl2) = (
            service.clone(),
            issuer.clone(),
            key.clone(),
            openssl.to_path_buf(),
        );
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = serve_token(
                    &mut conn, &openssl2, &key2, &x5c, &service2, &issuer2, &requests2,
                );
            }
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            service,
            issuer,
            cert_pem: cert,
            requests,
            stop,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    conn: &mut TcpStream,
    openssl: &Path,
    key: &Path,
    x5c: &str,
    service: &str,
    issuer: &str,
    requests: &Mutex<Vec<(String, bool)>>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut scopes = Vec::new();
    let mut asked_service = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "scope" => scopes.push(url_decode(v)),
            "service" => asked_service = url_decode(v),
            _ => {}
        }
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let granted = path == "/token"
        && asked_service == service
        && authorization.as_deref() == Some(want.as_str());
    requests.lock().unwrap().push((scopes.join(" "), granted));
    if !granted {
        respond(
            conn,
            "401 Unauthorized",
            &[("Content-Type", "application/json".into())],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        return Ok(());
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": issuer, "sub": USER, "aud": service,
        "exp": now + 300, "nbf": now - 60, "iat": now - 60,
        "jti": format!("{now}-{}", requests.lock().unwrap().len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new(openssl)
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = format!("{signing_input}.{}", b64url(&out.stdout));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
    respond(
        conn,
        "200 OK",
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
    );
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with `openssl` in `dir`:
/// returns (ca.crt, server.crt, server.key).
pub fn tls_certificates(openssl: &Path, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new(openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=trueup-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// Client certificates for mutual TLS, made with `openssl` next to [`tls_certificates`]'s CA.
pub struct ClientCerts {
    /// The CA that signed the server's and the clients' certificates.
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    /// An RSA client certificate signed by the CA, its key as PKCS#1 (`RSA PRIVATE KEY`).
    pub client_crt: PathBuf,
    pub client_key_pkcs1: PathBuf,
    /// The same key as PKCS#8 (`PRIVATE KEY`).
    pub client_key_pkcs8: PathBuf,
    /// A P-256 client certificate signed by the CA, its key as SEC1 (`EC PRIVATE KEY`).
    pub ec_crt: PathBuf,
    pub ec_key_sec1: PathBuf,
    /// A self-signed client certificate the server does not trust, and its key.
    pub stranger_crt: PathBuf,
    pub stranger_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and client certificates (see [`ClientCerts`]).
pub fn client_certificates(openssl: &Path, dir: &Path) -> ClientCerts {
    let (ca, server_crt, server_key) = tls_certificates(openssl, dir);
    let run = |args: &[&str]| {
        let out = Command::new(openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("client-ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let sign = |name: &str| {
        run(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN=trueup-{name}"),
            "-out",
            &format!("{name}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client-ext.cnf",
            "-out",
            &format!("{name}.crt"),
        ]);
    };
    run(&["genrsa", "-traditional", "-out", "client.key", "2048"]);
    sign("client");
    run(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        "client.key",
        "-out",
        "client-pkcs8.key",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.key",
    ]);
    sign("ec");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=trueup-stranger",
        "-addext",
        "extendedKeyUsage=clientAuth",
        "-keyout",
        "stranger.key",
        "-out",
        "stranger.crt",
    ]);
    ClientCerts {
        ca,
        server_crt,
        server_key,
        client_crt: dir.join("client.crt"),
        client_key_pkcs1: dir.join("client.key"),
        client_key_pkcs8: dir.join("client-pkcs8.key"),
        ec_crt: dir.join("ec.crt"),
        ec_key_sec1: dir.join("ec.key"),
        stranger_crt: dir.join("stranger.crt"),
        stranger_key: dir.join("stranger.key"),
    }
}
