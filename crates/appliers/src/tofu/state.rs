//! trueup's state store for the CLI: Terraform's `http` backend, served on 127.0.0.1 by the
//! runner for the length of one call, with the state kept in the backend.
//!
//! Protocol (Terraform's http backend): `GET` returns the state (200) or none (404); `POST`
//! stores it (`?ID=<lock id>` while locked); `DELETE` removes it; `LOCK`/`UNLOCK` take a lock-info
//! JSON body with an `ID`, and a held lock answers 423 with the holder's lock info.
//!
//! Storage: a Secret `tfstate-<workspace>-<suffix>` in the object's namespace (tofu-controller's
//! name; suffix defaults to the object's name), `data.tfstate` = base64 of the gzipped state JSON,
//! as the Kubernetes backend writes it. Plain (not gzipped) state is read too, so a state copied
//! in by hand works. Each POST replaces the Secret in one apply: a state is written whole or not
//! at all, and only after it parsed as a JSON object.
//!
//! Locks are held in the runner's memory (shared by all its calls), not in the backend: the
//! [`Backend`] trait has no compare-and-swap, so a lock written there could not be taken
//! atomically. One trueup process owns its objects, so this is where concurrent runs meet. A
//! lock taken by a CLI process is released when that process ends, however it ends: a killed run
//! never leaves the state locked.

use base64::Engine;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use trueup_core::object::{Object, ObjectRef};
use trueup_core::traits::{ApplyOptions, Backend};

/// Locks held, by state Secret (`namespace/name`) -> lock info JSON.
pub(crate) type LockTable = Arc<Mutex<HashMap<String, String>>>;

/// Largest state accepted (the backend stores it in one Secret; the CLI never sends more than
/// its state).
const MAX_BODY: usize = 64 << 20;

pub(crate) fn state_secret_name(workspace: &str, suffix: &str) -> String {
    format!("tfstate-{workspace}-{suffix}")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Decodes a stored state: gzip (by its magic bytes) or plain JSON.
pub fn decode_state(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("state is not valid gzip: {e}"))?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// The state Secret for `state` (already validated JSON).
pub fn state_secret(namespace: &str, workspace: &str, suffix: &str, state: &[u8]) -> Object {
    let mut o = Object::new(
        "v1",
        "Secret",
        Some(namespace),
        &state_secret_name(workspace, suffix),
    );
    let mut data = serde_json::Map::new();
    data.insert(
        "tfstate".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(gzip(state))),
    );
    o.as_map_mut().insert("data".into(), Value::Object(data));
    o.as_map_mut()
        .insert("type".into(), Value::String("Opaque".into()));
    o.set_label("app.kubernetes.io/managed-by", "trueup");
    o.set_label("tfstate", "true");
    o.set_label("tfstateSecretSuffix", suffix);
    o.set_label("tfstateWorkspace", workspace);
    o
}

/// Reads the state JSON from its Secret, `None` when there is none yet.
pub async fn read_state(
    backend: &dyn Backend,
    secret: &ObjectRef,
) -> Result<Option<Vec<u8>>, String> {
    let Some(o) = backend.get(secret).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let data = trueup_core::reconcile::object_data(&o)?;
    match data.get("tfstate") {
        Some(b) if !b.is_empty() => decode_state(b).map(Some),
        _ => Ok(None),
    }
}

/// One call's state server.
pub(crate) struct StateServer {
    listener: TcpListener,
    pub(crate) url: String,
    pub(crate) token: String,
    namespace: String,
    workspace: String,
    suffix: String,
    locks: LockTable,
    /// Lock ids granted to the CLI process running now; released when it ends.
    granted: Arc<Mutex<Vec<String>>>,
}

/// Releases the locks a CLI process took, when the process is gone (also when the future that
/// ran it is dropped).
pub(crate) struct LockRelease {
    locks: LockTable,
    key: String,
    granted: Arc<Mutex<Vec<String>>>,
}

impl Drop for LockRelease {
    fn drop(&mut self) {
        let ids: Vec<String> =
            std::mem::take(&mut *self.granted.lock().unwrap_or_else(|e| e.into_inner()));
        if ids.is_empty() {
            return;
        }
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&self.key)
            .is_some_and(|info| ids.iter().any(|id| lock_id(info.as_bytes()) == *id))
        {
            locks.remove(&self.key);
        }
    }
}

fn lock_id(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("ID").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

struct Request {
    method: String,
    query: BTreeMap<String, String>,
    authorized: bool,
    body: Vec<u8>,
}

impl StateServer {
    pub(crate) async fn start(
        namespace: &str,
        workspace: &str,
        suffix: &str,
        locks: LockTable,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        // A per-call password: the port is reachable by any local process, the state is not.
        let token = random_token();
        Ok(StateServer {
            listener,
            url: format!("http://127.0.0.1:{port}/state"),
            token,
            namespace: namespace.into(),
            workspace: workspace.into(),
            suffix: suffix.into(),
            locks,
            granted: Arc::new(Mutex::new(Vec::new())),
        })
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace,
            state_secret_name(&self.workspace, &self.suffix)
        )
    }

    fn secret_ref(&self) -> ObjectRef {
        ObjectRef::new(
            "",
            "Secret",
            &self.namespace,
            &state_secret_name(&self.workspace, &self.suffix),
        )
    }

    /// The environment that points the CLI's http backend here.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("TF_HTTP_ADDRESS", self.url.as_str()),
            ("TF_HTTP_LOCK_ADDRESS", self.url.as_str()),
            ("TF_HTTP_UNLOCK_ADDRESS", self.url.as_str()),
            ("TF_HTTP_LOCK_METHOD", "LOCK"),
            ("TF_HTTP_UNLOCK_METHOD", "UNLOCK"),
            ("TF_HTTP_USERNAME", "trueup"),
            ("TF_HTTP_PASSWORD", self.token.as_str()),
            ("TF_HTTP_RETRY_MAX", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Call before starting a CLI process: its locks go when the guard goes.
    pub(crate) fn release_guard(&self) -> LockRelease {
        LockRelease {
            locks: self.locks.clone(),
            key: self.key(),
            granted: self.granted.clone(),
        }
    }

    /// Waits for the next connection.
    pub(crate) async fn accept(&self) -> std::io::Result<TcpStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    /// Serves one connection (one request: answers close the connection).
    pub(crate) async fn serve(&self, stream: TcpStream, backend: &dyn Backend) {
        let mut stream = BufReader::new(stream);
        let served = tokio::time::timeout(Duration::from_secs(60), async {
            let req = match read_request(&mut stream, &self.token).await {
                Ok(r) => r,
                Err(e) => return respond(stream.get_mut(), 400, e.as_bytes()).await,
            };
            let (code, body) = if req.authorized {
                self.handle(req, backend).await
            } else {
                (401, b"unauthorized".to_vec())
            };
            respond(stream.get_mut(), code, &body).await
        })
        .await;
        let _ = served;
    }

    async fn handle(&self, req: Request, backend: &dyn Backend) -> (u16, Vec<u8>) {
        let key = self.key();
        let held = || {
            self.locks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned()
        };
        match req.method.as_str() {
            "GET" => match read_state(backend, &self.secret_ref()).await {
                Ok(Some(s)) => (200, s),
                Ok(None) => (404, Vec::new()),
                Err(e) => (500, e.into_bytes()),
            },
            "POST" | "DELETE" => {
                // A write while someone else holds the lock is refused.
                if let Some(info) = held() {
                    let id = req.query.get("ID").cloned().unwrap_or_default();
                    if lock_id(info.as_bytes()) != id {
                        return (423, info.into_bytes());
                    }
                }
                if req.method == "DELETE" {
                    return match backend.delete(&self.secret_ref()).await {
                        Ok(_) => (200, Vec::new()),
                        Err(e) => (500, e.to_string().into_bytes()),
                    };
                }
                if !matches!(
                    serde_json::from_slice::<Value>(&req.body),
                    Ok(Value::Object(_))
                ) {
                    return (400, b"state is not a JSON object".to_vec());
                }
                let o = state_secret(&self.namespace, &self.workspace, &self.suffix, &req.body);
                match backend.apply(&o, &ApplyOptions::default()).await {
                    Ok(_) => (200, Vec::new()),
                    Err(e) => (500, e.to_string().into_bytes()),
                }
            }
            "LOCK" => {
                let id = lock_id(&req.body);
                if id.is_empty() {
                    return (400, b"lock info without ID".to_vec());
                }
                let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(info) = locks.get(&key) {
                    return (423, info.clone().into_bytes());
                }
                locks.insert(key, String::from_utf8_lossy(&req.body).into_owned());
                self.granted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id);
                (200, Vec::new())
            }
            "UNLOCK" => {
                let id = lock_id(&req.body);
                let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
                match locks.get(&key) {
                    Some(info) if !id.is_empty() && lock_id(info.as_bytes()) != id => {
                        (409, info.clone().into_bytes())
                    }
                    _ => {
                        locks.remove(&key);
                        (200, Vec::new())
                    }
                }
            }
            _ => (405, Vec::new()),
        }
    }
}

/// 32 hex characters from the OS's randomness (std's hasher keys as a fallback).
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn read_request(stream: &mut BufReader<TcpStream>, token: &str) -> Result<Request, String> {
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut query = BTreeMap::new();
    if let Some((_, q)) = target.split_once('?') {
        for kv in q.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            query.insert(k.to_string(), percent_decode(v));
        }
    }
    let mut length = 0usize;
    let mut chunked = false;
    let mut authorized = false;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("trueup:{token}"))
    );
    loop {
        let mut h = String::new();
        let n = stream.read_line(&mut h).await.map_err(|e| e.to_string())?;
        let h = h.trim_end();
        if n == 0 || h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value
                    .parse()
                    .map_err(|_| "bad Content-Length".to_string())?
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "authorization" => authorized = value == expected,
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            stream
                .read_line(&mut size)
                .await
                .map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| "bad chunk size".to_string())?;
            if n == 0 || body.len() + n > MAX_BODY {
                break;
            }
            let mut chunk = vec![0; n + 2];
            stream
                .read_exact(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        if length > MAX_BODY {
            return Err("body too large".into());
        }
        body.resize(length, 0);
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Request {
        method,
        query,
        authorized,
        body,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn respond(stream: &mut TcpStream, code: u16, body: &[u8]) {
    let text = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        423 => "Locked",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {text}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}
