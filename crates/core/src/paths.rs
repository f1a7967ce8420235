//! Path handling for user-given relative paths (`spec.path`, include paths): they must stay
//! inside their root.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PathError {
    #[error("path `{0}` escapes the root directory")]
    Escapes(String),
    #[error("path `{0}` does not exist")]
    Missing(String),
}

/// `root` joined with a user-given relative path, resolving `.` and `..` lexically; `..` may not
/// climb above `root`.
fn lexical_join(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(rel.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => {
                out.push(p);
                depth += 1;
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return Err(PathError::Escapes(rel.to_string()));
                }
                out.pop();
                depth -= 1;
            }
            Component::Prefix(_) => return Err(PathError::Escapes(rel.to_string())),
        }
    }
    Ok(out)
}

/// Whether `existing` (a path that exists) resolves inside `root`, symlinks followed.
fn resolves_inside(root: &Path, existing: &Path, rel: &str) -> Result<(), PathError> {
    let real_root = root
        .canonicalize()
        .map_err(|_| PathError::Missing(root.display().to_string()))?;
    let real = existing
        .canonicalize()
        .map_err(|_| PathError::Missing(rel.to_string()))?;
    if real.starts_with(&real_root) {
        Ok(())
    } else {
        Err(PathError::Escapes(rel.to_string()))
    }
}

/// Joins a user-given relative path (`./apps/prod`, `apps`, `/apps`) to `root`, refusing `..`
/// that leaves the root and symlinks that point out of it. The path must exist.
pub fn join_inside(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let out = lexical_join(root, rel)?;
    if !out.exists() {
        return Err(PathError::Missing(rel.to_string()));
    }
    resolves_inside(root, &out, rel)?;
    Ok(out)
}

/// Joins a user-given relative path to `root` for a destination that may not exist yet: the
/// deepest existing ancestor must resolve inside the root, so a symlink cannot redirect the
/// write.
pub fn join_for_write(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let out = lexical_join(root, rel)?;
    let mut existing = out.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(root);
    }
    resolves_inside(root, existing, rel)?;
    Ok(out)
}

/// Copies a directory tree (or one file), skipping symlinks.
pub fn copy_tree(src: &Path, dest: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.is_file() {
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p)?;
        }
        fs::copy(src, dest)?;
        return Ok(());
    }
    fs::create_dir_all(dest)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        } else if ft.is_file() {
            fs::copy(e.path(), dest.join(e.file_name()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("apps/prod")).unwrap();
        assert_eq!(
            join_inside(d.path(), "./apps/prod").unwrap(),
            d.path().join("apps/prod")
        );
        assert_eq!(
            join_inside(d.path(), "apps/../apps").unwrap(),
            d.path().join("apps")
        );
        assert_eq!(join_inside(d.path(), "./").unwrap(), d.path().to_path_buf());
        assert_eq!(
            join_inside(d.path(), "../etc"),
            Err(PathError::Escapes("../etc".into()))
        );
        assert_eq!(
            join_inside(d.path(), "nope"),
            Err(PathError::Missing("nope".into()))
        );
        std::os::unix::fs::symlink("/etc", d.path().join("apps/out")).unwrap();
        assert_eq!(
            join_inside(d.path(), "apps/out"),
            Err(PathError::Escapes("apps/out".into()))
        );
    }
}
