//! Crash-safe file replacement: temp file in the same directory, fsync, rename, fsync the
//! directory.
//!
//! `rename` within one directory is atomic on every file system we care about, so a reader (or
//! a process restarted after `kill -9` or a power loss) sees either the old or the new content,
//! never a mix. The fsyncs order the steps for power loss: the data is on disk before the name
//! points at it, and the rename itself is on disk before we report success.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Temp files are hidden (leading `.`) and end in this suffix, so listings skip them and the
/// open-time sweep recognises them.
const TEMP_SUFFIX: &str = ".tmp";

/// Atomically replaces `path` with `bytes`, creating parent directories as needed.
///
/// Writes a hidden temp file next to `path`, fsyncs it, renames it over `path` and fsyncs the
/// directory. After a crash at any point `path` holds either its old content or `bytes`; a
/// stray temp file may be left behind, which [`LocalBackend`](crate::LocalBackend) sweeps on
/// open and never lists. Errors name the file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(path, bytes, true)
}

/// [`atomic_write`], with the fsyncs optional: without them the replacement is still atomic
/// for a process crash (the page cache survives `kill -9`), only not across a power loss.
pub(crate) fn write_file(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let named = |e: io::Error, what: &str| named_error(e, what, path);
    let parent = path.parent().ok_or_else(|| {
        named(
            io::Error::from(io::ErrorKind::InvalidInput),
            "no parent directory for",
        )
    })?;
    let file_name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        named(
            io::Error::from(io::ErrorKind::InvalidInput),
            "no file name in",
        )
    })?;

    let (tmp_path, mut tmp) =
        create_temp(parent, file_name).map_err(|e| named(e, "creating a temp file for"))?;
    let result = (|| {
        tmp.write_all(bytes)?;
        if durable {
            tmp.sync_all()?;
        }
        drop(tmp);
        fs::rename(&tmp_path, path)
    })();
    if let Err(e) = result {
        // Best effort: the sweep on open removes it otherwise.
        let _ = fs::remove_file(&tmp_path);
        return Err(named(e, "writing"));
    }
    if durable {
        sync_dir(parent).map_err(|e| named(e, "syncing the directory of"))?;
    }
    Ok(())
}

/// Creates the temp file, creating the directory first. A concurrent delete may remove the
/// directory between `create_dir_all` and `open` (it removes directories once empty), so a
/// missing directory is retried a few times.
fn create_temp(dir: &Path, file_name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..5 {
        fs::create_dir_all(dir)?;
        let tmp_path = dir.join(format!(
            ".{file_name}.{}.{:016x}{TEMP_SUFFIX}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
        {
            Ok(f) => return Ok((tmp_path, f)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) =>
            {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not create a temp file")))
}

/// Removes a file durably; `Ok(false)` when it did not exist.
pub(crate) fn remove_file(path: &Path, durable: bool) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(named_error(e, "removing", path)),
    }
    if durable {
        if let Some(parent) = path.parent() {
            sync_dir(parent).map_err(|e| named_error(e, "syncing the directory of", path))?;
        }
    }
    Ok(true)
}

/// Makes a rename or unlink in `dir` durable. Directories cannot be opened for fsync on
/// Windows; there NTFS journals the rename itself.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Whether a file name is one of our temp files.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// Removes our temp files directly inside `dir` that are at least `min_age` old. Younger ones
/// may belong to another process writing right now (the CLI next to the operator), whose
/// rename would fail if we took the file away.
pub(crate) fn sweep_temp_files(dir: &Path, min_age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_temp_name(name) {
            continue;
        }
        let old_enough = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO) >= min_age)
            .unwrap_or(true);
        if old_enough && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

pub(crate) fn named_error(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c.yaml");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.yaml")]);
    }

    #[test]
    fn sweep_respects_age() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".x.yaml.1.2.tmp"), b"half").unwrap();
        fs::write(dir.path().join("x.yaml"), b"whole").unwrap();
        assert_eq!(sweep_temp_files(dir.path(), Duration::from_secs(3600)), 0);
        assert_eq!(sweep_temp_files(dir.path(), Duration::ZERO), 1);
        assert!(dir.path().join("x.yaml").exists());
    }
}
