//! Which ref a `GitRepository.spec.ref` points at, and how its revision is written.

use crate::semver_constraint::Constraint;
use trueup_core::api::source::GitRepositoryRef;
use trueup_core::traits::source::{SourceError, SourceErrorKind};

/// Flux's default when `spec.ref` is absent or empty.
pub const DEFAULT_BRANCH: &str = "master";

/// The one ref selected from `spec.ref` by Flux's precedence: commit > name > semver > tag > branch.
#[derive(Debug, Clone)]
pub enum Target {
    /// A commit, optionally on a branch (which then names it in the revision and is fetched when the
    /// server refuses to hand out the commit by id).
    Commit {
        commit: String,
        branch: Option<String>,
    },
    /// A full ref name such as `refs/heads/main`, `refs/tags/v1`, `refs/pull/1/head`.
    Name(String),
    Semver(Constraint),
    Tag(String),
    Branch(String),
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Target {
    pub fn from_spec(r: Option<&GitRepositoryRef>) -> Result<Target, SourceError> {
        let Some(r) = r else {
            return Ok(Target::Branch(DEFAULT_BRANCH.to_string()));
        };
        let invalid = |m: String| SourceError::new(SourceErrorKind::InvalidSpec, m);
        if let Some(commit) = non_empty(&r.commit) {
            // A full id: it is fetched by id (a short one cannot be asked for) and written as is.
            if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "invalid commit {commit:?}: expected a full 40-character SHA-1"
                )));
            }
            return Ok(Target::Commit {
                commit: commit.to_ascii_lowercase(),
                branch: non_empty(&r.branch).map(str::to_string),
            });
        }
        if let Some(name) = non_empty(&r.name) {
            if !name.starts_with("refs/") || !valid_ref_name(name) {
                return Err(invalid(format!(
                    "invalid ref name {name:?}: expected a full name such as refs/heads/main or refs/tags/v1"
                )));
            }
            return Ok(Target::Name(name.to_string()));
        }
        if let Some(semver) = non_empty(&r.semver) {
            return Constraint::parse(semver)
                .map(Target::Semver)
                .map_err(|e| invalid(e.to_string()));
        }
        if let Some(tag) = non_empty(&r.tag) {
            if !valid_ref_name(tag) {
                return Err(invalid(format!("invalid tag name {tag:?}")));
            }
            return Ok(Target::Tag(tag.to_string()));
        }
        let branch = non_empty(&r.branch).unwrap_or(DEFAULT_BRANCH);
        if !valid_ref_name(branch) {
            return Err(invalid(format!("invalid branch name {branch:?}")));
        }
        Ok(Target::Branch(branch.to_string()))
    }

    /// The full remote ref to list and fetch, when it is known without listing (not for semver).
    pub fn full_ref(&self) -> Option<String> {
        match self {
            Target::Commit {
                branch: Some(b), ..
            } => Some(format!("refs/heads/{b}")),
            Target::Commit { branch: None, .. } => None,
            Target::Name(n) => Some(n.clone()),
            Target::Semver(_) => None,
            Target::Tag(t) => Some(format!("refs/tags/{t}")),
            Target::Branch(b) => Some(format!("refs/heads/{b}")),
        }
    }

    /// How the ref is named in messages, as Flux does (`branch 'main'`).
    pub fn describe(&self) -> String {
        match self {
            Target::Commit {
                commit,
                branch: Some(b),
            } => format!("commit '{commit}' on branch '{b}'"),
            Target::Commit {
                commit,
                branch: None,
            } => format!("commit '{commit}'"),
            Target::Name(n) => format!("ref '{n}'"),
            Target::Semver(c) => format!("semver '{c}'"),
            Target::Tag(t) => format!("tag '{t}'"),
            Target::Branch(b) => format!("branch '{b}'"),
        }
    }

    /// The revision in Flux's format for `commit` reached through `label` (the tag the semver
    /// constraint chose, or the ref itself).
    pub fn revision(&self, label: Option<&str>, commit: &str) -> String {
        match self {
            Target::Commit {
                branch: Some(b), ..
            } => format!("{b}@sha1:{commit}"),
            Target::Commit { branch: None, .. } => format!("sha1:{commit}"),
            Target::Name(n) => format!("{n}@sha1:{commit}"),
            Target::Semver(_) => format!("{}@sha1:{commit}", label.unwrap_or_default()),
            Target::Tag(t) => format!("{t}@sha1:{commit}"),
            Target::Branch(b) => format!("{b}@sha1:{commit}"),
        }
    }
}

/// A conservative subset of `git check-ref-format`: rejects what could change the meaning of a
/// refspec (`:`, `*`, `^`, `~`, `..`, spaces, control characters) rather than trusting the server.
pub fn valid_ref_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
}

/// Whether `tag` is a version that satisfies `c` (so a resolved semver tag can be reused).
pub fn parse_semver_tag(c: &Constraint, tag: &str) -> bool {
    crate::semver_constraint::parse_version(tag).is_some_and(|v| c.matches(&v))
}

/// Splits a revision `<label>@sha1:<hex>` or `sha1:<hex>` into its label and commit.
pub fn split_revision(revision: &str) -> (Option<&str>, Option<&str>) {
    let (label, id) = match revision.rsplit_once('@') {
        Some((l, id)) => (Some(l), id),
        None => (None, revision),
    };
    (label, id.strip_prefix("sha1:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(f: impl FnOnce(&mut GitRepositoryRef)) -> GitRepositoryRef {
        let mut r = GitRepositoryRef::default();
        f(&mut r);
        r
    }

    #[test]
    fn precedence_is_flux_s() {
        let c = "a".repeat(40);
        let all = r(|r| {
            r.branch = Some("dev".into());
            r.tag = Some("v1".into());
            r.semver = Some("1.x".into());
            r.name = Some("refs/pull/1/head".into());
            r.commit = Some(c.clone());
        });
        assert!(
            matches!(Target::from_spec(Some(&all)).unwrap(), Target::Commit { branch: Some(b), .. } if b == "dev")
        );
        let mut no_commit = all.clone();
        no_commit.commit = None;
        assert!(matches!(
            Target::from_spec(Some(&no_commit)).unwrap(),
            Target::Name(_)
        ));
        no_commit.name = None;
        assert!(matches!(
            Target::from_spec(Some(&no_commit)).unwrap(),
            Target::Semver(_)
        ));
        no_commit.semver = None;
        assert!(matches!(
            Target::from_spec(Some(&no_commit)).unwrap(),
            Target::Tag(_)
        ));
        no_commit.tag = None;
        assert!(
            matches!(Target::from_spec(Some(&no_commit)).unwrap(), Target::Branch(b) if b == "dev")
        );
        assert!(matches!(Target::from_spec(None).unwrap(), Target::Branch(b) if b == "master"));
        assert!(
            matches!(Target::from_spec(Some(&GitRepositoryRef::default())).unwrap(), Target::Branch(b) if b == "master")
        );
    }

    #[test]
    fn invalid_refs_are_invalid_spec() {
        for bad in [
            r(|r| r.commit = Some("abc".into())),
            r(|r| r.semver = Some(">= nope".into())),
            r(|r| r.name = Some("main".into())),
            r(|r| r.branch = Some("a:b".into())),
            r(|r| r.tag = Some("v1..2".into())),
        ] {
            let e = Target::from_spec(Some(&bad)).unwrap_err();
            assert_eq!(e.kind, SourceErrorKind::InvalidSpec, "{bad:?}");
        }
    }

    #[test]
    fn revisions_in_flux_format() {
        let h = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            Target::Branch("main".into()).revision(None, h),
            format!("main@sha1:{h}")
        );
        assert_eq!(
            Target::Name("refs/pull/1/head".into()).revision(None, h),
            format!("refs/pull/1/head@sha1:{h}")
        );
        assert_eq!(
            Target::Commit {
                commit: h.into(),
                branch: None
            }
            .revision(None, h),
            format!("sha1:{h}")
        );
        let s = Target::Semver(Constraint::parse("1.x").unwrap());
        assert_eq!(s.revision(Some("v1.2.0"), h), format!("v1.2.0@sha1:{h}"));
        assert_eq!(
            split_revision(&format!("v1@sha1:{h}")),
            (Some("v1"), Some(h))
        );
        assert_eq!(split_revision(&format!("sha1:{h}")), (None, Some(h)));
    }
}
