//! Which files of a source go into its artifact: Flux's default exclusions, `.sourceignore`
//! files (gitignore syntax, scoped to their directory) and `spec.ignore`, later rules winning.

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use std::path::{Path, PathBuf};

/// Patterns excluded from every artifact unless a later rule re-includes them.
pub const DEFAULT_PATTERNS: &[&str] = &[
    // version control
    ".git/",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    // binaries and archives
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    // CI configuration
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    // tool configuration that never belongs in a cluster
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];

pub const IGNORE_FILE: &str = ".sourceignore";

#[derive(Debug, thiserror::Error)]
#[error("{origin}: invalid ignore pattern: {source}")]
pub struct IgnoreError {
    pub origin: String,
    #[source]
    pub source: ignore::Error,
}

/// A set of ignore rules for one source directory.
pub struct SourceIgnore {
    root: PathBuf,
    /// In precedence order: a later matcher's verdict overrides an earlier one's.
    matchers: Vec<Gitignore>,
}

impl SourceIgnore {
    /// Rules for `root`: the defaults, every `.sourceignore` under it, then `spec_ignore`.
    pub fn load(root: &Path, spec_ignore: Option<&str>) -> Result<Self, IgnoreError> {
        let mut matchers = Vec::new();
        let mut b = GitignoreBuilder::new(root);
        for p in DEFAULT_PATTERNS {
            b.add_line(None, p).map_err(|source| IgnoreError {
                origin: "default patterns".into(),
                source,
            })?;
        }
        matchers.push(b.build().map_err(|source| IgnoreError {
            origin: "default patterns".into(),
            source,
        })?);
        let mut files = Vec::new();
        collect_ignore_files(root, &mut files);
        files.sort_by_key(|p| p.components().count());
        for file in files {
            let dir = file.parent().unwrap_or(root);
            let mut b = GitignoreBuilder::new(dir);
            if let Some(source) = b.add(&file) {
                return Err(IgnoreError {
                    origin: file.display().to_string(),
                    source,
                });
            }
            matchers.push(b.build().map_err(|source| IgnoreError {
                origin: file.display().to_string(),
                source,
            })?);
        }
        if let Some(text) = spec_ignore {
            let mut b = GitignoreBuilder::new(root);
            for line in text.lines() {
                b.add_line(None, line).map_err(|source| IgnoreError {
                    origin: "spec.ignore".into(),
                    source,
                })?;
            }
            matchers.push(b.build().map_err(|source| IgnoreError {
                origin: "spec.ignore".into(),
                source,
            })?);
        }
        Ok(SourceIgnore {
            root: root.to_path_buf(),
            matchers,
        })
    }

    /// Whether a path (relative to the root, `/`-separated) is excluded.
    pub fn is_excluded(&self, rel: &str, is_dir: bool) -> bool {
        let abs = self.root.join(rel);
        let mut excluded = false;
        for m in &self.matchers {
            if !abs.starts_with(m.path()) {
                continue;
            }
            match m.matched_path_or_any_parents(&abs, is_dir) {
                Match::Ignore(_) => excluded = true,
                Match::Whitelist(_) => excluded = false,
                Match::None => {}
            }
        }
        excluded
    }
}

impl crate::storage::PathFilter for SourceIgnore {
    fn excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        self.is_excluded(rel_path, is_dir)
    }
}

fn collect_ignore_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if e.file_name() != ".git" {
                collect_ignore_files(&e.path(), out);
            }
        } else if ft.is_file() && e.file_name() == IGNORE_FILE {
            out.push(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn defaults_sourceignore_files_and_spec_ignore_in_order() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("apps/dev")).unwrap();
        fs::create_dir_all(root.join(".github/workflows")).unwrap();
        fs::write(root.join(".sourceignore"), "*.md\n!KEEP.md\n").unwrap();
        fs::write(root.join("apps/.sourceignore"), "dev/\n").unwrap();
        let ig = SourceIgnore::load(root, Some("/terraform/\n!logo.png\n")).unwrap();
        assert!(ig.is_excluded(".git", true));
        assert!(ig.is_excluded(".github/workflows/ci.yaml", false));
        assert!(ig.is_excluded("docs/pic.jpg", false));
        assert!(ig.is_excluded("README.md", false));
        assert!(!ig.is_excluded("KEEP.md", false));
        assert!(ig.is_excluded("apps/dev", true));
        assert!(ig.is_excluded("apps/dev/x.yaml", false));
        assert!(
            !ig.is_excluded("dev/x.yaml", false),
            "apps/.sourceignore is scoped to apps/"
        );
        assert!(ig.is_excluded("terraform", true));
        assert!(
            !ig.is_excluded("logo.png", false),
            "spec.ignore can re-include defaults"
        );
        assert!(!ig.is_excluded("apps/deploy.yaml", false));
    }
}
