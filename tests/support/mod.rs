//! Real servers and repositories for the end-to-end tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs git with a fixed identity, panicking with git's stderr on failure (test setup only).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=trueup tests",
            "-c",
            "user.email=tests@trueup.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

/// A bare repository holding the bundled demo fleet, plus a work tree to commit from.
pub struct FleetRepo {
    pub base: PathBuf,
    pub work: PathBuf,
    pub bare: PathBuf,
}

impl FleetRepo {
    pub fn new(root: &Path) -> FleetRepo {
        let work = root.join("work");
        let base = root.join("repos");
        let bare = base.join("fleet.git");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet"),
            &work,
        );
        git(&work, &["init", "-q"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "Add the production fleet"]);
        std::fs::create_dir_all(&base).unwrap();
        git(
            &base,
            &["clone", "-q", "--bare", work.to_str().unwrap(), "fleet.git"],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        FleetRepo { base, work, bare }
    }

    /// Commits every change in the work tree and pushes it; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// `git daemon` serving a base path on a free port of 127.0.0.1; stopped on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let exec_path = String::from_utf8(
            Command::new("git")
                .arg("--exec-path")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        // The daemon binary itself, not the `git daemon` wrapper, so that kill() stops it.
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git-daemon starts (install git)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// The example operator binary, built by `cargo test` next to the test binaries.
pub fn trueup_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("trueup");
    assert!(bin.exists(), "{} is missing: run `cargo test --workspace` (it builds examples) or `cargo build --example trueup`", bin.display());
    bin
}

/// Debian's `docker-registry` (the CNCF distribution registry) on a free port of 127.0.0.1,
/// storing in a temp folder; stopped on drop. `None` (after saying so) when it is not
/// installed, except in CI (`TRUEUP_REQUIRE_ORACLES`), where that is a failure.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Option<Registry> {
        Registry::start_with_auth(None)
    }

    /// A registry with htpasswd basic auth for `user`/`password`.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Option<Registry> {
        Registry::start_with_auth(Some((user, password)))
    }

    fn start_with_auth(auth: Option<(&str, &str)>) -> Option<Registry> {
        let bin = Path::new("/usr/bin/docker-registry");
        if !bin.exists() {
            assert!(
                std::env::var_os("TRUEUP_REQUIRE_ORACLES").is_none(),
                "docker-registry is required: apt-get install docker-registry"
            );
            println!("SKIP: docker-registry is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: trueup-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Registry {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Helm chart packaged the way `helm package` lays it out: `<name>/Chart.yaml`, ... in a tgz.
pub fn package_chart(name: &str, version: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let chart_yaml =
        format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{version}\"\n");
    let mut all: Vec<(String, String)> = vec![("Chart.yaml".into(), chart_yaml)];
    all.extend(files.iter().map(|(p, c)| (p.to_string(), c.to_string())));
    for (path, content) in all {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("{name}/{path}"), content.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A Helm repository over HTTP on 127.0.0.1: `/index.yaml` and `/<name>-<version>.tgz`.
pub struct HelmRepo {
    pub url: String,
}

/// Standard base64 with padding (for a basic-auth header).
fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl HelmRepo {
    pub fn serve(charts: Vec<(String, String, Vec<u8>)>) -> HelmRepo {
        HelmRepo::serve_with_auth(charts, None)
    }

    /// A repository that answers 401 to requests without HTTP basic auth for `user`/`password`.
    pub fn serve_with_auth(
        charts: Vec<(String, String, Vec<u8>)>,
        auth: Option<(&str, &str)>,
    ) -> HelmRepo {
        let want = auth.map(|(u, p)| {
            format!(
                "authorization: basic {}",
                base64(format!("{u}:{p}").as_bytes())
            )
            .to_ascii_lowercase()
        });
        use sha2::Digest;
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut index = String::from("apiVersion: v1\nentries:\n");
        let mut files = std::collections::HashMap::new();
        let mut by_name: std::collections::BTreeMap<String, Vec<(String, Vec<u8>)>> =
            Default::default();
        for (name, version, tgz) in charts {
            by_name.entry(name).or_default().push((version, tgz));
        }
        for (name, versions) in by_name {
            index.push_str(&format!("  {name}:\n"));
            for (version, tgz) in versions {
                let file = format!("{name}-{version}.tgz");
                index.push_str(&format!(
                    "  - apiVersion: v2\n    name: {name}\n    version: {version}\n    digest: {}\n    urls:\n    - {url}/{file}\n",
                    hex::encode(sha2::Sha256::digest(&tgz))
                ));
                files.insert(format!("/{file}"), tgz);
            }
        }
        files.insert("/index.yaml".into(), index.into_bytes());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                let mut buf = [0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Some(want) = &want {
                    let lower = req.to_ascii_lowercase();
                    if !lower.lines().any(|l| l.trim() == want.as_str()) {
                        let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"charts\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        continue;
                    }
                }
                match files.get(&path) {
                    Some(body) => {
                        let _ = s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
                        let _ = s.write_all(body);
                    }
                    None => {
                        let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    }
                }
            }
        });
        HelmRepo { url }
    }
}

/// Pushes a packaged chart to `oci://<addr>/<repo>:<tag>` laid out as `helm push` does (Helm's
/// config and chart layer media types); returns the manifest digest.
pub async fn push_chart(
    addr: &str,
    repo: &str,
    version: &str,
    tgz: Vec<u8>,
    auth: Option<(&str, &str)>,
) -> String {
    use trueup::sources::oci::{
        manifest, BasicAuth, Blob, OciClient, OciClientOptions, Reference, RegistryAuths,
    };
    let client = OciClient::new(OciClientOptions {
        insecure: true,
        auths: auth
            .map(|(u, p)| RegistryAuths::single(addr, BasicAuth::new(u, p)))
            .unwrap_or_default(),
        ..Default::default()
    })
    .unwrap();
    let name = repo.rsplit('/').next().unwrap();
    let config = format!(r#"{{"apiVersion":"v2","name":"{name}","version":"{version}"}}"#);
    let r = Reference::parse(&format!("oci://{addr}/{repo}")).unwrap();
    client
        .push_manifest_with_blobs(
            &r,
            &version.replace('+', "_"),
            Blob::new(manifest::HELM_CONFIG, config.into_bytes()),
            vec![Blob::new(manifest::HELM_CHART, tgz)],
            Default::default(),
        )
        .await
        .unwrap()
}

/// A port nothing listens on right now (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1: the status code and the body, or `None` when nothing
/// answers on `addr`.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}
