//! Writes a commit's tree into a directory (no `.git`), reading objects straight from the
//! fetched pack. This replaces a worktree checkout, whose gix feature pulls in the status and
//! diff machinery we don't need: there is no index, no filters, nothing to compare against.

use gix::objs::tree::EntryKind;
use gix::ObjectId;
use std::path::Path;

/// Why a tree could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("object {id} is missing or unreadable: {message}")]
    Object { id: ObjectId, message: String },
    #[error("refusing unsafe path component {name:?} in {parent:?}")]
    UnsafePath { parent: String, name: String },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("sparse checkout directory {0:?} does not exist in the commit")]
    SparseDirMissing(String),
    #[error("the commit has submodules ({0}), and recurseSubmodules is not supported yet")]
    Submodules(String),
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    pub files: usize,
    /// Gitlink paths (submodules): written as empty directories, as `git clone` without
    /// `--recurse-submodules` does.
    pub submodules: Vec<String>,
}

struct Walk<'a> {
    repo: &'a gix::Repository,
    /// Normalised sparse directories (`a/b`), empty = everything.
    sparse: Vec<String>,
    out: Written,
}

/// Writes `tree` into `dir`, restricted to `sparse` directories when not empty.
pub fn write_tree(
    repo: &gix::Repository,
    tree: ObjectId,
    dir: &Path,
    sparse: &[String],
    recurse_submodules: bool,
) -> Result<Written, CheckoutError> {
    let sparse: Vec<String> = sparse
        .iter()
        .map(|s| {
            s.trim()
                .trim_start_matches("./")
                .trim_matches('/')
                .to_string()
        })
        .filter(|s| !s.is_empty() && s != ".")
        .collect();
    let mut walk = Walk {
        repo,
        sparse,
        out: Written::default(),
    };
    walk.tree(tree, dir, "")?;
    for s in &walk.sparse {
        if !dir.join(s).is_dir() {
            return Err(CheckoutError::SparseDirMissing(s.clone()));
        }
    }
    if recurse_submodules && !walk.out.submodules.is_empty() {
        return Err(CheckoutError::Submodules(walk.out.submodules.join(", ")));
    }
    Ok(walk.out)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckoutError + '_ {
    move |source| CheckoutError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Walk<'_> {
    /// Whether `rel` (a path in the tree) is inside a sparse directory (`inside`) or on the way to
    /// one (`descend`).
    fn sparse_state(&self, rel: &str) -> (bool, bool) {
        if self.sparse.is_empty() {
            return (true, true);
        }
        let inside = self
            .sparse
            .iter()
            .any(|s| rel == s || rel.starts_with(&format!("{s}/")));
        let ancestor = self
            .sparse
            .iter()
            .any(|s| s.starts_with(&format!("{rel}/")));
        (inside, inside || ancestor)
    }

    fn tree(&mut self, id: ObjectId, dir: &Path, rel: &str) -> Result<(), CheckoutError> {
        let obj_err = |id: ObjectId| {
            move |e: gix::Error| CheckoutError::Object {
                id,
                message: e.to_string(),
            }
        };
        let tree = self.repo.find_tree(id).map_err(obj_err(id))?;
        // Owned copy: the decoded entries borrow the tree's buffer, and we recurse.
        let entries: Vec<(String, EntryKind, ObjectId)> = tree
            .decode()
            .map_err(obj_err(id))?
            .entries
            .iter()
            .map(|e| (e.filename.to_string(), e.mode.kind(), e.oid.to_owned()))
            .collect();
        for (name, kind, oid) in entries {
            // The server sends the tree: never let a name climb out of `dir` or into `.git`.
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains(['/', '\\', '\0'])
                || name.eq_ignore_ascii_case(".git")
            {
                return Err(CheckoutError::UnsafePath {
                    parent: rel.to_string(),
                    name,
                });
            }
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let (inside, descend) = self.sparse_state(&child_rel);
            let path = dir.join(&name);
            match kind {
                EntryKind::Tree if descend => {
                    std::fs::create_dir_all(&path).map_err(io_err(&path))?;
                    self.tree(oid, &path, &child_rel)?;
                }
                EntryKind::Blob | EntryKind::BlobExecutable if inside => {
                    let blob = self.repo.find_blob(oid).map_err(obj_err(oid))?;
                    std::fs::write(&path, &blob.data).map_err(io_err(&path))?;
                    #[cfg(unix)]
                    if kind == EntryKind::BlobExecutable {
                        use std::os::unix::fs::PermissionsExt as _;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                            .map_err(io_err(&path))?;
                    }
                    self.out.files += 1;
                }
                EntryKind::Link if inside => {
                    let blob = self.repo.find_blob(oid).map_err(obj_err(oid))?;
                    let target = String::from_utf8_lossy(&blob.data).into_owned();
                    // Links are kept as links; the artifact packer rejects ones that escape.
                    #[cfg(unix)]
                    std::os::unix::fs::symlink(&target, &path).map_err(io_err(&path))?;
                    #[cfg(not(unix))]
                    std::fs::write(&path, target.as_bytes()).map_err(io_err(&path))?;
                    self.out.files += 1;
                }
                EntryKind::Commit if inside => {
                    std::fs::create_dir_all(&path).map_err(io_err(&path))?;
                    self.out.submodules.push(child_rel);
                }
                _ => {}
            }
        }
        Ok(())
    }
}
