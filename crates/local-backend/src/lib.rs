#![forbid(unsafe_code)]
// `BackendError` (core's, returned by the trait) is 128 bytes; boxing it is core's call.
#![allow(clippy::result_large_err)]
//! # trueup-local
//!
//! The embedded backend: a [`Backend`] over a directory, so trueup reconciles with no cluster.
//! Applied objects are plain YAML files, which also makes the directory the "rendered
//! manifests" folder users commit to a branch.
//!
//! ## Layout
//!
//! ```text
//! <root>/<namespace>/<group>_<kind>/<name>.yaml    applied objects (core group: `_<Kind>`)
//! <root>/_cluster/<group>_<kind>/<name>.yaml       cluster-scoped objects
//! <root>/.trueup/status/<ns|_cluster>/<group>_<kind>/<name>.json
//!                                                  the object's record: uid, creationTimestamp,
//!                                                  resourceVersion, generation, status
//! <root>/.trueup/events.jsonl                      the event log, one JSON event per line
//! <root>/.trueup/lock                              the operator's advisory lock
//! ```
//!
//! Object files hold clean manifests: keys sorted, no status, no system metadata (those live in
//! the record, so committing the folder gives diffs of what was applied and nothing else).
//! [`LocalBackend::state_dir`] is the `.trueup` folder; other parts keep their own folders there
//! (`artifacts/`, Helm release records, tofu state).
//!
//! ## Semantics
//!
//! - **Apply** is server-side apply with a single field manager: the applied object replaces
//!   the stored manifest (labels and annotations included, nothing is merged), while the
//!   backend keeps `uid` and `creationTimestamp` from creation, bumps `resourceVersion` on every
//!   change (spec, metadata or status) and `generation` only when something other than
//!   metadata and status changed, as Kubernetes does. `status` in an applied object is ignored:
//!   it is written with [`Backend::update_status`] only.
//! - **Health**: nothing runs here, so an object that exists is `Current`
//!   ([`Backend::runs_workloads`] is false).
//! - **Delete** removes the object at once. Nothing here has dependents (no garbage collector
//!   follows `ownerReferences`), so every propagation of [`Backend::delete_with`]
//!   (background, foreground, orphan) means the same and the default method serves it.
//! - **Watch** sees changes made through this instance at once, and changes made by other
//!   processes or by editing files through a cheap polling scan
//!   ([`LocalOptions::poll_interval`]). Delivery is at least once: an event may repeat.
//! - **Errors**: a file someone edited into something unreadable is an error naming the file,
//!   from `get` and from `list` alike (a list does not silently skip it: the user should fix or
//!   delete the file). Names must be DNS-1123, so no name can escape the root.
//!
//! ## Crash safety
//!
//! Every file is replaced atomically ([`atomic_write`]). An object file and its record are two
//! files; the record carries hashes of the manifest it describes, so after a crash between the
//! two writes (or after a hand edit) the next read brings the record up to date exactly as the
//! interrupted apply would have. Stray temp files are hidden, never listed, and swept on open.
//!
//! ## Processes
//!
//! Many tasks may share one instance (`&self` methods; clone it, it is an `Arc` inside).
//! Several processes may share a root (the operator and a CLI), with writes still atomic; the
//! operator takes [`LocalBackend::acquire_exclusive`] so that two operators never run on one
//! root.
//!
//! ```
//! use trueup_core::traits::{ApplyAction, ApplyOptions, Backend, ListParams};
//! use trueup_core::Object;
//! use trueup_local::LocalBackend;
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! rt.block_on(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let backend = LocalBackend::open(dir.path()).unwrap();
//!
//!     let mut cm = Object::new("v1", "ConfigMap", Some("default"), "app");
//!     cm.as_map_mut().insert("data".into(), serde_json::json!({"greeting": "hello"}));
//!     let (action, stored) = backend.apply(&cm, &ApplyOptions::default()).await.unwrap();
//!     assert_eq!(action, ApplyAction::Created);
//!     assert_eq!(stored.generation(), 1);
//!     assert!(dir.path().join("default/_ConfigMap/app.yaml").is_file());
//!
//!     let (action, _) = backend.apply(&cm, &ApplyOptions::default()).await.unwrap();
//!     assert_eq!(action, ApplyAction::Unchanged);
//!
//!     let all = backend.list(&ListParams::kind("", "ConfigMap")).await.unwrap();
//!     assert_eq!(all.len(), 1);
//! });
//! ```

mod atomic;
mod events;
mod layout;
mod record;

pub use atomic::atomic_write;
pub use events::EventPage;
pub use layout::{CLUSTER_DIR, STATE_DIR};

use async_trait::async_trait;
use futures::StreamExt;
use record::{full_object, manifest_of, sorted, Record};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;
use trueup_core::traits::{
    ApplyAction, ApplyOptions, Backend, BackendError, Health, ListParams, WatchEvent, WatchStream,
};
use trueup_core::{Event, Object, ObjectRef};

/// Errors of the local backend outside the [`Backend`] trait; every one names its file.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file in the directory does not hold what it should (usually after a hand edit).
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    /// A file holds a different object than its path says.
    #[error("{}: holds {found}, but its path is that of {expected}; move the file or fix its apiVersion, kind or metadata", path.display())]
    Misplaced {
        path: PathBuf,
        expected: Box<ObjectRef>,
        found: Box<ObjectRef>,
    },
    /// Another process holds the operator lock.
    #[error("{}: another trueup operator ({holder}) already works on this directory", path.display())]
    Locked { path: PathBuf, holder: String },
    /// A file system error; the message names the file.
    #[error(transparent)]
    Io(io::Error),
}

impl LocalError {
    fn io(e: io::Error, what: &str, path: &Path) -> Self {
        LocalError::Io(atomic::named_error(e, what, path))
    }
}

impl From<LocalError> for BackendError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Io(source) => BackendError::Io {
                context: "local backend".into(),
                source,
            },
            other => BackendError::Other {
                context: "local backend".into(),
                source: Box::new(other),
            },
        }
    }
}

/// How a [`LocalBackend`] behaves.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// How often a watch rescans the directory for changes made by other processes or by hand
    /// (default 2s). Changes made through this instance are seen at once.
    pub poll_interval: Duration,
    /// Fsync files and directories on every write (default true). Without it writes are still
    /// atomic against a process crash, but not against a power loss; useful for tests and
    /// throw-away demo directories.
    pub durable: bool,
    /// Temp files at least this old are removed on open (default 60s). Younger ones may belong
    /// to another process writing right now. Temp files are never listed either way.
    pub stale_temp_age: Duration,
    /// Watch events buffered per watcher before a slow one misses some (default 4096).
    pub watch_capacity: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            poll_interval: Duration::from_secs(2),
            durable: true,
            stale_temp_age: Duration::from_secs(60),
            watch_capacity: 4096,
        }
    }
}

/// The embedded backend over a directory. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("root", &self.inner.root)
            .finish()
    }
}

/// Number of lock stripes: read-modify-write of one object holds the stripe its reference
/// hashes to, so different objects mostly proceed in parallel.
const STRIPES: usize = 64;

struct Inner {
    root: PathBuf,
    state: PathBuf,
    opts: LocalOptions,
    stripes: Vec<Mutex<()>>,
    events_lock: Mutex<()>,
    watch_tx: broadcast::Sender<WatchEvent>,
    event_tx: broadcast::Sender<Event>,
    watch: Mutex<WatchState>,
}

/// What the polling scan compares: a changed inode (every atomic write is a rename), size or
/// modification time means the file changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let ino = 0;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            ino,
        }
    }
}

#[derive(Default)]
struct WatchState {
    /// Whether the polling task runs; it stops when the last watch stream is dropped.
    running: bool,
    snapshot: HashMap<PathBuf, Stamp>,
}

/// An object file and its record as found on disk, the record brought up to date with the file.
struct Current {
    manifest: Map<String, Value>,
    record: Record,
    /// The record on disk is missing or stale and should be rewritten.
    dirty: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked (files are the truth).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalBackend {
    /// Opens (creating if needed) a backend rooted at `root`, with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LocalError> {
        Self::open_with(root, LocalOptions::default())
    }

    /// Opens a backend rooted at `root`: creates the state folder, sweeps stale temp files and
    /// records left by a crash, and seals a torn event log. Blocking (short) file system work.
    pub fn open_with(root: impl Into<PathBuf>, opts: LocalOptions) -> Result<Self, LocalError> {
        let root = root.into();
        let state = root.join(layout::STATE_DIR);
        let status = state.join(layout::STATUS_DIR);
        fs::create_dir_all(&status).map_err(|e| LocalError::io(e, "creating", &status))?;
        let capacity = opts.watch_capacity.max(16);
        let inner = Inner {
            root,
            state,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            events_lock: Mutex::new(()),
            watch_tx: broadcast::channel(capacity).0,
            event_tx: broadcast::channel(capacity).0,
            watch: Mutex::new(WatchState::default()),
            opts,
        };
        inner.recover()?;
        Ok(LocalBackend {
            inner: Arc::new(inner),
        })
    }

    /// The directory holding the applied objects.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The state folder (`<root>/.trueup`). Other parts keep their folders here: artifact
    /// storage (`artifacts/`), Helm release records, tofu state. Names already taken:
    /// `status/`, `events.jsonl`, `lock`.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state
    }

    /// Where an object's file is, or would be. Errors when the reference is not a valid name.
    pub fn object_path(&self, r: &ObjectRef) -> Result<PathBuf, BackendError> {
        validate(r)?;
        Ok(layout::object_path(&self.inner.root, r))
    }

    /// Where an object's record (system metadata and status) is, or would be.
    pub fn status_path(&self, r: &ObjectRef) -> Result<PathBuf, BackendError> {
        validate(r)?;
        Ok(layout::record_path(&self.inner.root, r))
    }

    /// Reads the event log from byte `offset` (0 for the beginning). Tail it by passing the
    /// returned [`EventPage::next_offset`] to the next call. Unreadable lines (a torn write) are
    /// skipped with a warning. Blocking file I/O.
    pub fn read_events(&self, offset: u64) -> Result<EventPage, LocalError> {
        events::read_from(&self.inner.events_path(), offset)
    }

    /// Every logged event, or those with a timestamp at or after `since` (RFC 3339, as events
    /// carry them). Blocking file I/O.
    pub fn events(&self, since: Option<&str>) -> Result<Vec<Event>, LocalError> {
        let mut all = self.read_events(0)?.events;
        if let Some(since) = since {
            // Timestamps are all `YYYY-MM-DDTHH:MM:SSZ`, so text order is time order.
            all.retain(|e| e.timestamp.as_str() >= since);
        }
        Ok(all)
    }

    /// Events recorded through this instance from now on, for showing them as they happen.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.inner.event_tx.subscribe()
    }

    /// Takes the operator's advisory lock `<root>/.trueup/lock`, without waiting: fails with
    /// [`LocalError::Locked`] when another process holds it. Held until the guard is dropped;
    /// the OS releases it when the process dies, so a crash never leaves it stuck. Only
    /// operators need it; one-shot commands (apply, get) work alongside a running operator.
    pub fn acquire_exclusive(&self) -> Result<ExclusiveLock, LocalError> {
        let path = self.inner.state.join(layout::LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LocalError::io(e, "opening", &path))?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the other process's message. Not needed for correctness.
                let _ = file.set_len(0).and_then(|_| {
                    file.write_all(format!("pid {}\n", std::process::id()).as_bytes())
                });
                Ok(ExclusiveLock { file, path })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                Err(LocalError::Locked {
                    holder: if holder.is_empty() {
                        "unknown process".into()
                    } else {
                        holder.into()
                    },
                    path,
                })
            }
            Err(fs::TryLockError::Error(e)) => Err(LocalError::io(e, "locking", &path)),
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, BackendError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| BackendError::Other {
                context: "local backend task".into(),
                source: Box::new(e),
            })?
    }
}

/// The operator's lock on a directory; released when dropped.
#[derive(Debug)]
pub struct ExclusiveLock {
    file: File,
    path: PathBuf,
}

impl ExclusiveLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ExclusiveLock {
    fn drop(&mut self) {
        // Closing the file releases it too; unlocking first makes the release immediate even
        // if a duplicate of the handle lives on somewhere.
        let _ = self.file.unlock();
    }
}

fn validate(r: &ObjectRef) -> Result<(), BackendError> {
    layout::validate_ref(r).map_err(|message| BackendError::Invalid {
        object: r.clone(),
        message,
    })
}

fn invalid_params(params: &ListParams, message: String) -> BackendError {
    BackendError::Invalid {
        object: ObjectRef::new(
            &params.group,
            &params.kind,
            params.namespace.as_deref().unwrap_or(""),
            "*",
        ),
        message,
    }
}

fn labels_match(obj: &Map<String, Value>, want: &BTreeMap<String, String>) -> bool {
    if want.is_empty() {
        return true;
    }
    let labels = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    want.iter().all(|(k, v)| {
        labels
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .is_some_and(|have| have == v)
    })
}

impl Inner {
    fn events_path(&self) -> PathBuf {
        self.state.join(layout::EVENTS_FILE)
    }

    fn status_root(&self) -> PathBuf {
        self.state.join(layout::STATUS_DIR)
    }

    fn stripe(&self, r: &ObjectRef) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        r.hash(&mut h);
        lock(&self.stripes[(h.finish() as usize) % STRIPES])
    }

    /// Every `(namespace, group, kind, directory)` under `base` laid out as
    /// `<ns>/<group>_<kind>/`. Directories that do not follow the layout (`.git`, `docs`
    /// sub-folders...) are ignored: the root may be a Git checkout with other files in it.
    fn kind_dirs(base: &Path, only_ns: Option<&str>) -> Vec<(String, String, String, PathBuf)> {
        let mut out = Vec::new();
        let ns_dirs: Vec<(String, PathBuf)> = match only_ns {
            Some(ns) => vec![(ns.to_string(), base.join(layout::namespace_dir(ns)))],
            None => fs::read_dir(base)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let ns = layout::parse_namespace_dir(name.to_str()?)?;
                    Some((ns, e.path()))
                })
                .collect(),
        };
        for (ns, ns_path) in ns_dirs {
            for e in fs::read_dir(&ns_path).into_iter().flatten().flatten() {
                let name = e.file_name();
                if let Some((group, kind)) = name.to_str().and_then(layout::parse_kind_dir) {
                    out.push((ns.clone(), group, kind, e.path()));
                }
            }
        }
        out
    }

    /// Open-time recovery after a crash: remove stale temp files and records whose object file
    /// is gone (a delete interrupted between its two unlinks), and seal a torn event log.
    fn recover(&self) -> Result<(), LocalError> {
        let age = self.opts.stale_temp_age;
        atomic::sweep_temp_files(&self.state, age);
        for (_, _, _, dir) in Self::kind_dirs(&self.root, None) {
            atomic::sweep_temp_files(&dir, age);
        }
        for (ns, group, kind, dir) in Self::kind_dirs(&self.status_root(), None) {
            atomic::sweep_temp_files(&dir, age);
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let file_name = e.file_name();
                let Some(name) = file_name
                    .to_str()
                    .and_then(|n| layout::parse_file_name(n, "json"))
                else {
                    continue;
                };
                let r = ObjectRef::new(&group, &kind, &ns, &name);
                if !layout::object_path(&self.root, &r).exists() {
                    // Object files are written before records and removed before them, so a
                    // record without its object is a delete that did not finish.
                    let _ = atomic::remove_file(&e.path(), self.opts.durable);
                }
            }
        }
        events::seal_torn_tail(&self.events_path())
    }

    /// Reads an object file and its record. `None` when the object file does not exist.
    fn load(&self, r: &ObjectRef) -> Result<Option<Current>, BackendError> {
        let opath = layout::object_path(&self.root, r);
        let bytes = match fs::read(&opath) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LocalError::io(e, "reading", &opath).into()),
        };
        let manifest = parse_object_file(&opath, &bytes, r)?;
        let rpath = layout::record_path(&self.root, r);
        let record = match fs::read(&rpath) {
            Ok(b) => Some(serde_json::from_slice::<Record>(&b).map_err(|e| LocalError::Malformed {
                path: rpath.clone(),
                message: format!("unreadable object record ({e}); delete the file to reset the object's status"),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LocalError::io(e, "reading", &rpath).into()),
        };
        let (record, dirty) = match record {
            // Created by hand, or a create interrupted between its two writes.
            None => (Record::new(&manifest), true),
            Some(mut rec) => {
                let changed = rec.advance_to(&manifest);
                (rec, changed)
            }
        };
        Ok(Some(Current {
            manifest,
            record,
            dirty,
        }))
    }

    fn write_object(
        &self,
        r: &ObjectRef,
        manifest: &Map<String, Value>,
    ) -> Result<(), BackendError> {
        let path = layout::object_path(&self.root, r);
        let text = trueup_core::yaml::to_string(&Value::Object(manifest.clone())).map_err(|e| {
            BackendError::Invalid {
                object: r.clone(),
                message: e.to_string(),
            }
        })?;
        atomic::write_file(&path, text.as_bytes(), self.opts.durable).map_err(LocalError::Io)?;
        self.note_written(&path);
        Ok(())
    }

    fn write_record(&self, r: &ObjectRef, rec: &Record) -> Result<(), BackendError> {
        let path = layout::record_path(&self.root, r);
        let mut bytes = serde_json::to_vec_pretty(rec).map_err(|e| LocalError::Malformed {
            path: path.clone(),
            message: format!("cannot encode the record: {e}"),
        })?;
        bytes.push(b'\n');
        atomic::write_file(&path, &bytes, self.opts.durable).map_err(LocalError::Io)?;
        self.note_written(&path);
        Ok(())
    }

    fn publish(&self, ev: WatchEvent) {
        // No receivers is fine: nobody watches.
        let _ = self.watch_tx.send(ev);
    }

    fn apply(&self, obj: Object, dry_run: bool) -> Result<(ApplyAction, Object), BackendError> {
        let r = obj.object_ref();
        validate(&r)?;
        let manifest = manifest_of(&obj.0);
        let _guard = self.stripe(&r);
        let (action, rec) = match self.load(&r)? {
            None => {
                let rec = Record::new(&manifest);
                if !dry_run {
                    // Object first: a record without its object would look like a deleted one.
                    self.write_object(&r, &manifest)?;
                    self.write_record(&r, &rec)?;
                }
                (ApplyAction::Created, rec)
            }
            Some(cur) if cur.manifest == manifest => {
                if cur.dirty && !dry_run {
                    self.write_record(&r, &cur.record)?;
                }
                return Ok((
                    ApplyAction::Unchanged,
                    Object(full_object(&cur.manifest, &cur.record)),
                ));
            }
            Some(cur) => {
                let mut rec = cur.record;
                rec.advance_to(&manifest);
                if !dry_run {
                    self.write_object(&r, &manifest)?;
                    self.write_record(&r, &rec)?;
                }
                (ApplyAction::Configured, rec)
            }
        };
        let stored = Object(full_object(&manifest, &rec));
        if !dry_run {
            self.publish(WatchEvent::Applied(stored.clone()));
        }
        Ok((action, stored))
    }

    /// Reads an object, repairing its record when it is stale. Callers hold no stripe.
    fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError> {
        validate(r)?;
        let _guard = self.stripe(r);
        let Some(cur) = self.load(r)? else {
            return Ok(None);
        };
        if cur.dirty {
            self.write_record(r, &cur.record)?;
        }
        Ok(Some(Object(full_object(&cur.manifest, &cur.record))))
    }

    fn list(&self, params: &ListParams) -> Result<Vec<Object>, BackendError> {
        if !params.group.is_empty() {
            layout::check_subdomain(&params.group)
                .map_err(|m| invalid_params(params, format!("invalid API group: {m}")))?;
        }
        layout::check_kind(&params.kind)
            .map_err(|m| invalid_params(params, format!("invalid kind: {m}")))?;
        let ns = params.namespace.as_deref().filter(|ns| !ns.is_empty());
        if let Some(ns) = ns {
            layout::check_label(ns)
                .map_err(|m| invalid_params(params, format!("invalid namespace: {m}")))?;
        }
        let wanted = layout::kind_dir(&params.group, &params.kind);
        let mut out = Vec::new();
        let ns_dirs: Vec<String> = match ns {
            Some(ns) => vec![ns.to_string()],
            None => fs::read_dir(&self.root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| layout::parse_namespace_dir(e.file_name().to_str()?))
                .collect(),
        };
        for ns in ns_dirs {
            let dir = self.root.join(layout::namespace_dir(&ns)).join(&wanted);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LocalError::io(e, "listing", &dir).into()),
            };
            for e in entries.flatten() {
                let file_name = e.file_name();
                // Temp files and anything else not named `<name>.yaml` are not objects.
                let Some(name) = file_name
                    .to_str()
                    .and_then(|n| layout::parse_file_name(n, "yaml"))
                else {
                    continue;
                };
                let r = ObjectRef::new(&params.group, &params.kind, &ns, &name);
                // `None`: deleted since the directory was read.
                if let Some(obj) = self.get(&r)? {
                    if labels_match(&obj.0, &params.labels) {
                        out.push(obj);
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
        Ok(out)
    }

    fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError> {
        validate(r)?;
        let _guard = self.stripe(r);
        let opath = layout::object_path(&self.root, r);
        let rpath = layout::record_path(&self.root, r);
        // Object first, record second: see `recover`.
        let existed = atomic::remove_file(&opath, self.opts.durable).map_err(LocalError::Io)?;
        atomic::remove_file(&rpath, self.opts.durable).map_err(LocalError::Io)?;
        self.note_removed(&opath);
        self.note_removed(&rpath);
        remove_empty_dirs(&opath, 2);
        remove_empty_dirs(&rpath, 2);
        if existed {
            self.publish(WatchEvent::Deleted(r.clone()));
        }
        Ok(existed)
    }

    fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError> {
        validate(r)?;
        let _guard = self.stripe(r);
        let Some(cur) = self.load(r)? else {
            return Err(BackendError::NotFound(r.clone()));
        };
        let mut rec = cur.record;
        let status = (!status.is_null()).then(|| sorted(status));
        if rec.status == status && !cur.dirty {
            // Same status: no write, no new resourceVersion, no watch event (a no-op
            // reconcile costs no fsync).
            return Ok(());
        }
        if rec.status != status {
            rec.status = status;
            rec.resource_version += 1;
        }
        self.write_record(r, &rec)?;
        self.publish(WatchEvent::Applied(Object(full_object(
            &cur.manifest,
            &rec,
        ))));
        Ok(())
    }

    fn record_event(&self, event: &Event) -> Result<(), BackendError> {
        {
            let _guard = lock(&self.events_lock);
            events::append(&self.events_path(), event)?;
        }
        let _ = self.event_tx.send(event.clone());
        Ok(())
    }

    // ---- watching ----

    fn note_written(&self, path: &Path) {
        let mut w = lock(&self.watch);
        if w.running {
            if let Ok(meta) = fs::metadata(path) {
                w.snapshot.insert(path.to_path_buf(), Stamp::of(&meta));
            }
        }
    }

    fn note_removed(&self, path: &Path) {
        let mut w = lock(&self.watch);
        if w.running {
            w.snapshot.remove(path);
        }
    }

    /// Stamps of every object file and record.
    fn scan(&self) -> HashMap<PathBuf, Stamp> {
        let mut out = HashMap::new();
        for (base, ext) in [(self.root.clone(), "yaml"), (self.status_root(), "json")] {
            for (_, _, _, dir) in Self::kind_dirs(&base, None) {
                for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = e.file_name();
                    if name
                        .to_str()
                        .and_then(|n| layout::parse_file_name(n, ext))
                        .is_none()
                    {
                        continue;
                    }
                    if let Ok(meta) = e.metadata() {
                        out.insert(e.path(), Stamp::of(&meta));
                    }
                }
            }
        }
        out
    }

    /// Which object a scanned path belongs to, and whether it is the object file (vs. record).
    fn ref_of_path(&self, path: &Path) -> Option<(ObjectRef, bool)> {
        let (is_object, rel) = match path.strip_prefix(self.status_root()) {
            Ok(rel) => (false, rel),
            Err(_) => (true, path.strip_prefix(&self.root).ok()?),
        };
        let mut parts = rel.iter().map(|p| p.to_str());
        let ns = layout::parse_namespace_dir(parts.next()??)?;
        let (group, kind) = layout::parse_kind_dir(parts.next()??)?;
        let name =
            layout::parse_file_name(parts.next()??, if is_object { "yaml" } else { "json" })?;
        Some((ObjectRef::new(&group, &kind, &ns, &name), is_object))
    }

    /// One polling round: diff the directory against the last scan and publish what changed.
    fn poll_once(&self) {
        let now = self.scan();
        let mut changed: BTreeMap<ObjectRef, bool> = BTreeMap::new();
        {
            let mut w = lock(&self.watch);
            let mut paths: BTreeSet<&PathBuf> = BTreeSet::new();
            for (p, s) in &now {
                if w.snapshot.get(p) != Some(s) {
                    paths.insert(p);
                }
            }
            for p in w.snapshot.keys() {
                if !now.contains_key(p) {
                    paths.insert(p);
                }
            }
            for p in paths {
                if let Some((r, is_object)) = self.ref_of_path(p) {
                    *changed.entry(r).or_default() |= is_object;
                }
            }
            w.snapshot = now;
        }
        for (r, object_changed) in changed {
            match self.get(&r) {
                Ok(Some(obj)) => self.publish(WatchEvent::Applied(obj)),
                // Only an object file that went away is a deletion; a record without its object
                // is the tail of a delete.
                Ok(None) if object_changed => self.publish(WatchEvent::Deleted(r)),
                Ok(None) => {}
                Err(e) => tracing::warn!("watch: {e}"),
            }
        }
    }
}

/// Removes the now-empty `<group>_<kind>` and namespace directories above a removed file.
/// `remove_dir` refuses non-empty directories, so a concurrent writer keeps its directory (and
/// one that finds it gone recreates it, see `atomic::create_temp`).
fn remove_empty_dirs(file: &Path, levels: usize) {
    let mut dir = file.parent();
    for _ in 0..levels {
        let Some(d) = dir else { return };
        if fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

/// Parses an object file: exactly one object, the one its path names.
fn parse_object_file(
    path: &Path,
    bytes: &[u8],
    r: &ObjectRef,
) -> Result<Map<String, Value>, LocalError> {
    let text = std::str::from_utf8(bytes).map_err(|e| LocalError::Malformed {
        path: path.to_path_buf(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    let origin = path.display().to_string();
    let mut objects =
        trueup_core::yaml::parse_objects(text, &origin).map_err(|e| LocalError::Malformed {
            path: path.to_path_buf(),
            // The YAML error already starts with the file name.
            message: e
                .to_string()
                .strip_prefix(&format!("{origin}: "))
                .unwrap_or(&e.to_string())
                .to_string(),
        })?;
    if objects.len() != 1 {
        return Err(LocalError::Malformed {
            path: path.to_path_buf(),
            message: format!("expected exactly one object, found {}", objects.len()),
        });
    }
    let mut obj = objects.remove(0);
    // A hand-written file may leave the namespace to its directory, as `kubectl apply -n` does.
    if obj.namespace().is_none() && !r.namespace.is_empty() {
        obj.set_namespace(&r.namespace);
    }
    let found = obj.object_ref();
    if &found != r {
        return Err(LocalError::Misplaced {
            path: path.to_path_buf(),
            expected: Box::new(r.clone()),
            found: Box::new(found),
        });
    }
    Ok(manifest_of(&obj.0))
}

#[async_trait]
impl Backend for LocalBackend {
    async fn apply(
        &self,
        obj: &Object,
        opts: &ApplyOptions,
    ) -> Result<(ApplyAction, Object), BackendError> {
        let obj = obj.clone();
        let dry_run = opts.dry_run;
        self.blocking(move |i| i.apply(obj, dry_run)).await
    }

    async fn get(&self, r: &ObjectRef) -> Result<Option<Object>, BackendError> {
        let r = r.clone();
        self.blocking(move |i| i.get(&r)).await
    }

    async fn list(&self, params: &ListParams) -> Result<Vec<Object>, BackendError> {
        let params = params.clone();
        self.blocking(move |i| i.list(&params)).await
    }

    async fn delete(&self, r: &ObjectRef) -> Result<bool, BackendError> {
        let r = r.clone();
        self.blocking(move |i| i.delete(&r)).await
    }

    async fn update_status(&self, r: &ObjectRef, status: &Value) -> Result<(), BackendError> {
        let r = r.clone();
        let status = status.clone();
        self.blocking(move |i| i.update_status(&r, &status)).await
    }

    async fn record_event(&self, event: &Event) -> Result<(), BackendError> {
        let event = event.clone();
        self.blocking(move |i| i.record_event(&event)).await
    }

    async fn health(&self, r: &ObjectRef) -> Result<Health, BackendError> {
        let r = r.clone();
        self.blocking(move |i| {
            validate(&r)?;
            // Nothing runs here: an object that was written is as healthy as it gets.
            let path = layout::object_path(&i.root, &r);
            Ok(if path.is_file() {
                Health::Current
            } else {
                Health::NotFound
            })
        })
        .await
    }

    /// Empty `kinds` watches everything.
    async fn watch(&self, kinds: &[(String, String)]) -> Result<WatchStream, BackendError> {
        let rx = self.inner.watch_tx.subscribe();
        let start = {
            let mut w = lock(&self.inner.watch);
            !std::mem::replace(&mut w.running, true)
        };
        if start {
            // The baseline the poller diffs against: changes from now on.
            let snapshot = match self.blocking(|i| Ok(i.scan())).await {
                Ok(s) => s,
                Err(e) => {
                    // No poller was started; let the next watch try again.
                    lock(&self.inner.watch).running = false;
                    return Err(e);
                }
            };
            let mut w = lock(&self.inner.watch);
            for (path, stamp) in snapshot {
                // A stamp noted by one of our own writes during the scan is the newer one.
                w.snapshot.entry(path).or_insert(stamp);
            }
            drop(w);
            tokio::spawn(poll_loop(
                Arc::downgrade(&self.inner),
                self.inner.opts.poll_interval,
            ));
        }
        let kinds: Vec<(String, String)> = kinds.to_vec();
        let stream = futures::stream::unfold((rx, kinds), |(mut rx, kinds)| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let (group, kind) = match &ev {
                            WatchEvent::Applied(o) => (o.group().to_string(), o.kind().to_string()),
                            WatchEvent::Deleted(r) => (r.group.clone(), r.kind.clone()),
                        };
                        if kinds.is_empty() || kinds.iter().any(|(g, k)| *g == group && *k == kind)
                        {
                            return Some((ev, (rx, kinds)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("local backend watch fell behind and missed {n} events; periodic reconciles will catch up");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }

    fn runs_workloads(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.inner.root.display())
    }
}

/// Rescans the directory every `interval` while someone watches. Holds the backend weakly, so
/// dropping the backend ends it.
async fn poll_loop(weak: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else { return };
        {
            let mut w = lock(&inner.watch);
            if inner.watch_tx.receiver_count() == 0 {
                // `watch` subscribes before it checks `running` under this lock, so a watcher
                // arriving now either is counted here or starts a new poller.
                w.running = false;
                w.snapshot.clear();
                return;
            }
        }
        let _ = tokio::task::spawn_blocking(move || inner.poll_once()).await;
    }
}
