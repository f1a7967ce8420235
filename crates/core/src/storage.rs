//! Artifact storage: tar.gz archives named by their sha256 digest.
//!
//! Archives are deterministic (sorted entries, zeroed times and owners), so the same content
//! always has the same digest and is stored once. Extraction is defensive: it rejects absolute
//! paths, `..`, links that point outside the destination, special files, and archives whose
//! compressed or unpacked size exceeds the configured limits.

use crate::object::ObjectRef;
use crate::status::Artifact;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive}: entry `{entry}` {problem}")]
    UnsafeEntry {
        archive: String,
        entry: String,
        problem: &'static str,
    },
    #[error("archive {archive}: {what} size exceeds the limit of {limit} bytes")]
    TooLarge {
        archive: String,
        what: &'static str,
        limit: u64,
    },
    #[error("artifact {path}: digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        path: String,
        expected: String,
        found: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StorageError {
    let context = context.into();
    move |source| StorageError::Io { context, source }
}

/// Limits applied when unpacking archives.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest compressed archive accepted.
    pub max_archive_bytes: u64,
    /// Largest total unpacked size accepted.
    pub max_unpacked_bytes: u64,
    /// Largest number of entries accepted.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_archive_bytes: 100 << 20,
            max_unpacked_bytes: 1 << 30,
            max_entries: 200_000,
        }
    }
}

/// Where artifacts live: `<root>/<kind>/<namespace>/<name>/<digest>.tar.gz`, and their unpacked
/// copies under `<root>/unpacked/<digest>/`.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    limits: Limits,
    /// How many archives to keep per source when collecting garbage.
    keep: usize,
}

/// Writes bytes to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. A crash leaves either the old file or the new one.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Decides which files of a directory go into an archive; paths are relative, `/`-separated.
pub trait PathFilter {
    fn excluded(&self, rel_path: &str, is_dir: bool) -> bool;
}

impl<F: Fn(&str, bool) -> bool> PathFilter for F {
    fn excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        self(rel_path, is_dir)
    }
}

/// A filter that keeps everything.
pub fn keep_all(_: &str, _: bool) -> bool {
    false
}

impl ArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_err(format!(
            "creating artifact storage {}",
            root.display()
        )))?;
        Ok(ArtifactStore {
            root,
            limits: Limits::default(),
            keep: 3,
        })
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn owner_dir(owner: &ObjectRef) -> PathBuf {
        let kind = owner.kind.to_lowercase();
        let ns = if owner.namespace.is_empty() {
            "_cluster"
        } else {
            owner.namespace.as_str()
        };
        PathBuf::from(kind).join(ns).join(&owner.name)
    }

    /// The absolute path of a stored artifact.
    pub fn path_of(&self, artifact: &Artifact) -> PathBuf {
        self.root.join(&artifact.path)
    }

    /// Whether the archive of an artifact is present and has the recorded size.
    pub fn contains(&self, artifact: &Artifact) -> bool {
        match fs::metadata(self.path_of(artifact)) {
            Ok(m) => artifact.size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Packs `dir` (minus what `filter` excludes) into a stored artifact for `owner`.
    pub fn archive_dir(
        &self,
        owner: &ObjectRef,
        dir: &Path,
        revision: &str,
        filter: &dyn PathFilter,
    ) -> Result<Artifact, StorageError> {
        let bytes = pack_dir(dir, filter)?;
        self.store_bytes(owner, &bytes, revision)
    }

    /// Stores an already packed tar.gz for `owner`.
    pub fn store_bytes(
        &self,
        owner: &ObjectRef,
        bytes: &[u8],
        revision: &str,
    ) -> Result<Artifact, StorageError> {
        let hex = hex::encode(Sha256::digest(bytes));
        let rel = Self::owner_dir(owner).join(format!("{hex}.tar.gz"));
        let abs = self.root.join(&rel);
        if fs::metadata(&abs)
            .map(|m| m.len() != bytes.len() as u64)
            .unwrap_or(true)
        {
            atomic_write(&abs, bytes)
                .map_err(io_err(format!("writing artifact {}", abs.display())))?;
        }
        let rel_str = rel.to_string_lossy().replace('\\', "/");
        Ok(Artifact {
            url: format!("file://{}", abs.display()),
            path: rel_str,
            revision: revision.to_string(),
            digest: format!("sha256:{hex}"),
            last_update_time: crate::time::now_rfc3339(),
            size: Some(bytes.len() as u64),
            metadata: Default::default(),
        })
    }

    /// The unpacked content of an artifact, extracted once and shared by everything that reads
    /// the same digest. Verifies the digest before extracting.
    pub fn unpacked(&self, artifact: &Artifact) -> Result<PathBuf, StorageError> {
        let hex = artifact
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&artifact.digest);
        let dest = self.root.join("unpacked").join(hex);
        if dest.join(".complete").exists() {
            return Ok(dest);
        }
        let archive = self.path_of(artifact);
        let bytes = fs::read(&archive)
            .map_err(io_err(format!("reading artifact {}", archive.display())))?;
        let found = hex::encode(Sha256::digest(&bytes));
        if found != hex {
            return Err(StorageError::DigestMismatch {
                path: archive.display().to_string(),
                expected: artifact.digest.clone(),
                found: format!("sha256:{found}"),
            });
        }
        // Extract into a private directory, then rename: concurrent readers never see a
        // half-extracted tree, and a crash leaves only a temp dir that the next call ignores.
        let parent = self.root.join("unpacked");
        fs::create_dir_all(&parent).map_err(io_err(format!("creating {}", parent.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix(".extract-")
            .tempdir_in(&parent)
            .map_err(io_err(format!(
                "creating a temp dir in {}",
                parent.display()
            )))?;
        extract(
            &bytes[..],
            tmp.path(),
            &archive.display().to_string(),
            &self.limits,
        )?;
        File::create(tmp.path().join(".complete"))
            .map_err(io_err("marking extraction complete"))?;
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &dest) {
            Ok(()) => {}
            Err(_) if dest.join(".complete").exists() => {
                let _ = fs::remove_dir_all(&tmp_path);
            }
            Err(e) => {
                return Err(io_err(format!(
                    "moving extracted artifact to {}",
                    dest.display()
                ))(e))
            }
        }
        Ok(dest)
    }

    /// Removes all but the newest `keep` archives of `owner`, never the one in use, and
    /// unpacked trees no archive refers to any more.
    pub fn gc(&self, owner: &ObjectRef, in_use: &Artifact) -> Result<usize, StorageError> {
        let dir = self.root.join(Self::owner_dir(owner));
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let keep_path = self.path_of(in_use);
        let mut removed = 0;
        for (_, path) in files.into_iter().skip(self.keep) {
            if path == keep_path {
                continue;
            }
            if let Some(hex) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".tar.gz"))
            {
                let _ = fs::remove_dir_all(self.root.join("unpacked").join(hex));
            }
            if fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Packs a directory into a deterministic tar.gz: entries sorted by path, modes normalised to
/// 0644/0755, times and owners zeroed. Symlinks are stored as links when they stay inside
/// `dir`, and skipped otherwise.
pub fn pack_dir(dir: &Path, filter: &dyn PathFilter) -> Result<Vec<u8>, StorageError> {
    let enc = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let mut stack = vec![PathBuf::new()];
    let mut files = Vec::new();
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&abs)
            .map_err(io_err(format!("reading {}", abs.display())))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let rel_child = rel.join(&name);
            let rel_str = rel_child.to_string_lossy().replace('\\', "/");
            let ft = e
                .file_type()
                .map_err(io_err(format!("reading {}", e.path().display())))?;
            if filter.excluded(&rel_str, ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                stack.push(rel_child);
            } else if ft.is_file() || ft.is_symlink() {
                files.push((rel_str, e.path(), ft.is_symlink()));
            }
        }
    }
    files.sort();
    for (rel, abs, is_link) in files {
        if is_link {
            let target =
                fs::read_link(&abs).map_err(io_err(format!("reading link {}", abs.display())))?;
            if !link_stays_inside(Path::new(&rel), &target) {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_mtime(0);
            tar.append_link(&mut h, &rel, &target)
                .map_err(io_err(format!("archiving {}", abs.display())))?;
            continue;
        }
        let mut f = File::open(&abs).map_err(io_err(format!("reading {}", abs.display())))?;
        tar.append_file(&rel, &mut f)
            .map_err(io_err(format!("archiving {}", abs.display())))?;
    }
    let enc = tar.into_inner().map_err(io_err("finishing archive"))?;
    enc.finish().map_err(io_err("compressing archive"))
}

/// Whether a symlink at `rel` (relative to the root) pointing at `target` resolves inside the root.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// The entry path made safe: relative, no `..`, no root or prefix components.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Unpacks a tar.gz stream into `dest` under `limits`; `name` is used in errors.
pub fn extract<R: Read>(
    reader: R,
    dest: &Path,
    name: &str,
    limits: &Limits,
) -> Result<(), StorageError> {
    let counted = LimitedReader {
        inner: reader,
        left: limits.max_archive_bytes,
        name,
    };
    let mut archive = tar::Archive::new(GzDecoder::new(counted));
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    let entries = archive.entries().map_err(|e| read_error(name, e, limits))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(name, e, limits))?;
        count += 1;
        if count > limits.max_entries {
            return Err(StorageError::TooLarge {
                archive: name.into(),
                what: "entry count",
                limit: limits.max_entries,
            });
        }
        let raw_path = entry
            .path()
            .map_err(|e| read_error(name, e, limits))?
            .into_owned();
        let shown = raw_path.to_string_lossy().to_string();
        let unsafe_entry = |problem| StorageError::UnsafeEntry {
            archive: name.into(),
            entry: shown.clone(),
            problem,
        };
        if raw_path.is_absolute() {
            return Err(unsafe_entry("has an absolute path"));
        }
        let Some(rel) = safe_relative(&raw_path) else {
            return Err(unsafe_entry("escapes the destination with `..`"));
        };
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                total = total.saturating_add(entry.header().size().unwrap_or(0));
                if total > limits.max_unpacked_bytes {
                    return Err(StorageError::TooLarge {
                        archive: name.into(),
                        what: "unpacked",
                        limit: limits.max_unpacked_bytes,
                    });
                }
                ensure_parent_inside(dest, &rel)
                    .map_err(|_| unsafe_entry("is written through a link"))?;
                let mut out = File::create(&target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
                // Copy at most the declared size, so a lying header cannot exceed the limit.
                io::copy(&mut (&mut entry).take(limits.max_unpacked_bytes), &mut out)
                    .map_err(|e| read_error(name, e, limits))?;
                let mode = entry.header().mode().unwrap_or(0o644);
                set_mode(&target, if mode & 0o111 != 0 { 0o755 } else { 0o644 });
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| read_error(name, e, limits))?
                    .ok_or_else(|| unsafe_entry("is a link without a target"))?
                    .into_owned();
                if !link_stays_inside(&rel, &link) {
                    return Err(unsafe_entry(
                        "is a link that points outside the destination",
                    ));
                }
                ensure_parent_inside(dest, &rel)
                    .map_err(|_| unsafe_entry("is written through a link"))?;
                symlink(&link, &target)
                    .map_err(io_err(format!("creating link {}", target.display())))?;
            }
            tar::EntryType::Link => {
                return Err(unsafe_entry("is a hard link, which is not accepted"))
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => {
                return Err(unsafe_entry(
                    "is a special file (device, fifo), which is not accepted",
                ))
            }
        }
    }
    Ok(())
}

fn read_error(name: &str, e: io::Error, limits: &Limits) -> StorageError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        return StorageError::TooLarge {
            archive: name.into(),
            what: "compressed",
            limit: limits.max_archive_bytes,
        };
    }
    StorageError::Io {
        context: format!("reading archive {name}"),
        source: e,
    }
}

/// Creates the parent directories of `rel` under `dest`, refusing to go through symlinks (an
/// earlier entry could have planted a link to escape the destination).
fn ensure_parent_inside(dest: &Path, rel: &Path) -> io::Result<()> {
    let mut cur = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(io::Error::other("path goes through a symlink"));
                }
                Ok(_) => {}
                Err(_) => fs::create_dir(&cur)?,
            }
        }
    }
    if let Ok(m) = fs::symlink_metadata(dest.join(rel)) {
        if m.file_type().is_symlink() {
            return Err(io::Error::other("target is a symlink"));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::other(
        "symlinks are not supported on this platform",
    ))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) {}

/// Fails reads past a byte budget, so an oversized archive is refused while streaming.
struct LimitedReader<'a, R> {
    inner: R,
    left: u64,
    name: &'a str,
}

impl<R: Read> Read for LimitedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("archive {} is larger than the limit", self.name),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
