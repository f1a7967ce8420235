//! Real Git servers for the tests, on 127.0.0.1 with ephemeral ports: `git daemon` (git://) and
//! `git http-backend` behind a small HTTP/1.1 server (optionally with basic or bearer auth), plus
//! repositories built with the `git` CLI. Every server is stopped by its Drop guard.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `git` with a fixed identity and no user/system configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A directory of repositories served by the servers below, each a normal (non-bare) repository.
pub struct Repos {
    pub root: tempfile::TempDir,
}

impl Repos {
    pub fn new() -> Repos {
        Repos {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Creates `<root>/<name>` with an initial commit on `main`.
    pub fn create(&self, name: &str) -> Repo {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        git(&dir, &["init", "-q", "-b", "main"]);
        // Let clients fetch any reachable commit by id over protocol v0 too.
        git(
            &dir,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        );
        Repo { dir }
    }
}

pub struct Repo {
    pub dir: PathBuf,
}

impl Repo {
    /// Writes files (path, content) and commits them; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let p = self.dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, content).expect("write");
        }
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn rm(&self, path: &str) {
        git(&self.dir, &["rm", "-q", path]);
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    pub fn rev(&self, what: &str) -> String {
        git(&self.dir, &["rev-parse", what])
    }

    pub fn run(&self, args: &[&str]) -> String {
        git(&self.dir, args)
    }
}

/// A free port: bound, read, released. Used right away, the race is harmless on loopback.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn wait_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("server on port {port} did not start");
}

/// `git daemon` serving a [`Repos`] root.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(root: &Path) -> GitDaemon {
        let port = free_port();
        // Run git-daemon itself, not `git daemon`: the `git` wrapper forks it as a child, and
        // killing the wrapper would leave the daemon running.
        let exec_path = git(root, &["--exec-path"]);
        let mut child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", root.display()))
            .arg(root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        wait_listening(port, &mut child);
        GitDaemon { child, port }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which credentials the HTTP server demands.
#[derive(Clone, Debug)]
pub enum HttpAuth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// One request the HTTP server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// For upload-pack POSTs: the protocol v2 command (`ls-refs`, `fetch`), or `fetch` for v0.
    pub command: Option<String>,
    /// The fetch asked for a shallow history of depth 1.
    pub deepen1: bool,
    pub status: u16,
}

/// `git http-backend` behind a minimal HTTP/1.1 server (one request per connection).
pub struct HttpGit {
    pub port: u16,
    scheme: &'static str,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// Test-only TLS material (a throwaway CA and a certificate for 127.0.0.1, valid until 2126).
pub const TEST_CA_PEM: &str = include_str!("tls/ca.crt");
const TEST_CERT_PEM: &str = include_str!("tls/server.crt");
const TEST_KEY_PEM: &str = include_str!("tls/server.key");

fn tls_server_config() -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(TEST_CERT_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    Arc::new(config)
}

/// [`tls_server_config`] that also requires a client certificate signed by `client_ca_pem`.
fn mtls_server_config(client_ca_pem: &[u8]) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem) {
        roots.add(ca.expect("client CA")).expect("client CA");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let certs = CertificateDer::pem_slice_iter(TEST_CERT_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY_PEM.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    Arc::new(config)
}

impl HttpGit {
    pub fn start(root: &Path, auth: HttpAuth) -> HttpGit {
        HttpGit::start_with(root, auth, None)
    }

    /// The same over HTTPS, with the certificate of [`TEST_CA_PEM`].
    pub fn start_tls(root: &Path, auth: HttpAuth) -> HttpGit {
        HttpGit::start_with(root, auth, Some(tls_server_config()))
    }

    /// Over HTTPS ([`TEST_CA_PEM`]), requiring a client certificate signed by `client_ca_pem`.
    pub fn start_mtls(root: &Path, auth: HttpAuth, client_ca_pem: &[u8]) -> HttpGit {
        HttpGit::start_with(root, auth, Some(mtls_server_config(client_ca_pem)))
    }

    fn start_with(root: &Path, auth: HttpAuth, tls: Option<Arc<rustls::ServerConfig>>) -> HttpGit {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (root, auth, seen, tls) =
                                (root.clone(), auth.clone(), seen.clone(), tls.clone());
                            thread::spawn(move || {
                                let _ = stream.set_nonblocking(false);
                                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                                match tls {
                                    None => {
                                        let _ = serve(stream, &root, &auth, &seen);
                                    }
                                    Some(config) => {
                                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                                            return;
                                        };
                                        let mut tls = rustls::StreamOwned::new(conn, stream);
                                        let _ = serve(&mut tls, &root, &auth, &seen);
                                        tls.conn.send_close_notify();
                                        let _ = tls.flush();
                                    }
                                }
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        HttpGit {
            port,
            scheme,
            stop,
            thread: Some(thread),
            seen,
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("{}://127.0.0.1:{}/{repo}", self.scheme, self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Upload-pack requests that asked for a pack (not just a ref listing).
    pub fn pack_requests(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.command.as_deref() == Some("fetch"))
            .count()
    }

    pub fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }
}

impl Drop for HttpGit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 || l == "\r\n" || l == "\n" {
                    break;
                }
            }
            return Ok(body);
        }
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk)?;
        body.extend_from_slice(&chunk);
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

fn respond(
    stream: &mut impl Write,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn serve(
    stream: impl Read + Write,
    root: &Path,
    auth: &HttpAuth,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        read_chunked(&mut reader)?
    } else {
        let len = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut b = vec![0; len];
        reader.read_exact(&mut b)?;
        b
    };
    if headers
        .get("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
    {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out)?;
        body = out;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let command = (method == "POST" && path.ends_with("/git-upload-pack")).then(|| {
        let text = String::from_utf8_lossy(&body);
        if text.contains("command=ls-refs") {
            "ls-refs".to_string()
        } else {
            "fetch".to_string()
        }
    });
    let deepen1 = String::from_utf8_lossy(&body).contains("deepen 1");
    let record = |status: u16| {
        seen.lock().expect("lock").push(Seen {
            method: method.clone(),
            path: path.to_string(),
            command: command.clone(),
            deepen1,
            status,
        })
    };

    let given = headers.get("authorization").cloned().unwrap_or_default();
    let (ok, user, challenge) = match auth {
        HttpAuth::None => (true, String::new(), String::new()),
        HttpAuth::Basic { user, password } => (
            given == format!("Basic {}", b64(&format!("{user}:{password}"))),
            user.clone(),
            "Basic realm=\"git\"".to_string(),
        ),
        HttpAuth::Bearer(token) => (
            given == format!("Bearer {token}"),
            "token".into(),
            "Bearer realm=\"git\"".to_string(),
        ),
    };
    if !ok {
        record(401);
        return respond(
            reader.get_mut(),
            401,
            "Unauthorized",
            &[("WWW-Authenticate".into(), challenge)],
            b"unauthorized\n",
        );
    }

    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = headers.get("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(p) = headers.get("git-protocol") {
        // http-backend turns this into GIT_PROTOCOL, which enables protocol v2.
        cmd.env("HTTP_GIT_PROTOCOL", p);
    }
    if !user.is_empty() {
        cmd.env("REMOTE_USER", &user);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut out)?;
    let _ = writer.join();
    let _ = child.wait();

    // CGI output: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        record(500);
        return respond(reader.get_mut(), 500, "Internal Server Error", &[], &out);
    };
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let mut status = 200;
    let mut reason = "OK".to_string();
    let mut resp_headers = Vec::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("status") {
            let v = v.trim();
            status = v
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
            reason = v
                .split_once(' ')
                .map(|(_, r)| r.to_string())
                .unwrap_or_default();
        } else {
            resp_headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    record(status);
    respond(
        reader.get_mut(),
        status,
        &reason,
        &resp_headers,
        &out[end + sep..],
    )
}

/// A TCP server that accepts connections and never answers: for timeouts.
pub struct Silent {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok((c, _)) = listener.accept() {
                    held.push(c);
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
