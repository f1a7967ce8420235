//! Semantic-version constraints with the syntax and semantics of Masterminds/semver v3, the
//! library Flux (GitRepository `ref.semver`, OCIRepository `ref.semver`) and Helm (chart
//! `version`) use, so that the constraints Flux users already wrote select the same versions here.
//!
//! Supported: comparisons (`=`, `!=`, `>`, `<`, `>=`, `=>`, `<=`, `=<`), tilde (`~`, `~>`),
//! caret (`^`), wildcards (`1.2.x`, `1.*`, `*`), missing parts (`1.2` = `1.2.x` for most
//! operators), hyphen ranges (`1.2 - 1.4.5`), AND by space or comma, OR by `||`, and an optional
//! `v` prefix. As in Masterminds, a pre-release version only matches a constraint whose own
//! version carries a pre-release (`>=1.0.0-0` matches `1.2.0-rc.1`, `>=1.0.0` does not).
//!
//! Versions (tags) are parsed leniently as Masterminds' `NewVersion` does: `v1.2.3`, `1.2`, `1`.
//!
//! ```
//! use trueup_sources::semver_constraint::Constraint;
//! let c = Constraint::parse(">=1.0.0 <2.0.0").unwrap();
//! assert_eq!(c.best(["v0.9.0", "v1.4.0", "v1.10.1", "v2.0.0", "latest"]), Some("v1.10.1"));
//! ```

use regex::Regex;
use semver::{BuildMetadata, Prerelease, Version};
use std::cmp::Ordering;
use std::sync::OnceLock;

/// Why a constraint could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid semver constraint {input:?}: {reason}")]
pub struct ConstraintError {
    pub input: String,
    pub reason: String,
}

/// A parsed constraint: OR of ANDs of single comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    source: String,
    ors: Vec<Vec<Single>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// No operator or `=`: equality, or tilde when the version has wildcards / missing parts.
    TildeOrEqual,
    NotEqual,
    Greater,
    Less,
    GreaterEqual,
    LessEqual,
    Tilde,
    Caret,
}

/// One comparison such as `>= 1.2` (stored as 1.2.0 with `patch_dirty`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Single {
    op: Op,
    version: Version,
    /// Any part was a wildcard or missing.
    dirty: bool,
    /// The minor part (and so the patch) was a wildcard or missing: `1`, `1.x`.
    minor_dirty: bool,
    /// Only the patch part was a wildcard or missing: `1.2`, `1.2.x`.
    patch_dirty: bool,
}

// The version part of a constraint, as Masterminds writes it (including its quirk of `|` inside
// the character class, kept so that the same inputs are accepted and rejected).
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
// The empty alternative is the "no operator" case.
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";

struct Regexes {
    single: Regex,
    range: Regex,
    find: Regex,
    valid: Regex,
    version: Regex,
}

fn regexes() -> &'static Regexes {
    static RE: OnceLock<Regexes> = OnceLock::new();
    RE.get_or_init(|| {
        // The patterns are constants; failing to compile them is a bug caught by every test.
        let re = |p: String| Regex::new(&p).expect("constant regex");
        Regexes {
            single: re(format!(r"^\s*({OPS})\s*({CV})\s*$")),
            range: re(format!(r"\s*({CV})\s+-\s+({CV})\s*")),
            find: re(format!(r"({OPS})\s*({CV})")),
            valid: re(format!(r"^(\s*({OPS})\s*({CV})\s*)((?:\s+|,\s*)({OPS})\s*({CV})\s*)*$")),
            version: re(r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?$".to_string()),
        }
    })
}

/// Parses a version leniently, as Masterminds' `NewVersion`: optional `v`, missing minor/patch
/// are 0. Returns `None` for anything else (e.g. `latest`, `1.2.3.4`).
pub fn parse_version(s: &str) -> Option<Version> {
    let caps = regexes().version.captures(s)?;
    let num = |i: usize| -> Option<u64> {
        match caps.get(i) {
            None => Some(0),
            Some(m) => m.as_str().trim_start_matches('.').parse().ok(),
        }
    };
    let mut v = Version::new(num(1)?, num(2)?, num(3)?);
    if let Some(pre) = caps.get(5) {
        // semver's Prerelease rejects leading zeros in numeric identifiers, as Masterminds does.
        v.pre = Prerelease::new(pre.as_str()).ok()?;
    }
    if let Some(build) = caps.get(8) {
        v.build = BuildMetadata::new(build.as_str()).ok()?;
    }
    Some(v)
}

fn is_x(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

fn rewrite_range(input: &str) -> String {
    let re = &regexes().range;
    let mut out = input.to_string();
    for caps in re.captures_iter(input) {
        let (Some(whole), Some(lo), Some(hi)) = (caps.get(0), caps.get(1), caps.get(11)) else {
            continue;
        };
        out = out.replacen(
            whole.as_str(),
            &format!(">= {}, <= {}", lo.as_str(), hi.as_str()),
            1,
        );
    }
    out
}

fn parse_single(s: &str, whole: &str) -> Result<Single, ConstraintError> {
    let err = |reason: &str| ConstraintError {
        input: whole.to_string(),
        reason: reason.to_string(),
    };
    let caps = regexes()
        .single
        .captures(s)
        .ok_or_else(|| err(&format!("improper constraint: {s}")))?;
    let op = match caps.get(1).map_or("", |m| m.as_str()) {
        "" | "=" => Op::TildeOrEqual,
        "!=" => Op::NotEqual,
        ">" => Op::Greater,
        "<" => Op::Less,
        ">=" | "=>" => Op::GreaterEqual,
        "<=" | "=<" => Op::LessEqual,
        "~" | "~>" => Op::Tilde,
        "^" => Op::Caret,
        other => return Err(err(&format!("unknown operator {other:?}"))),
    };
    let g = |i: usize| caps.get(i).map_or("", |m| m.as_str());
    let (major, minor, patch) = (
        g(3),
        g(4).trim_start_matches('.'),
        g(5).trim_start_matches('.'),
    );
    // Group 6 is the pre-release with its dash (e.g. `-alpha.1`); build metadata is ignored.
    let pre = g(6);
    let (mut dirty, mut minor_dirty, mut patch_dirty) = (false, false, false);
    let text = if is_x(major) || major.is_empty() {
        dirty = true;
        format!("0.0.0{pre}")
    } else if is_x(minor) || minor.is_empty() {
        dirty = true;
        minor_dirty = true;
        format!("{major}.0.0{pre}")
    } else if is_x(patch) || patch.is_empty() {
        dirty = true;
        patch_dirty = true;
        format!("{major}.{minor}.0{pre}")
    } else {
        g(2).to_string()
    };
    let version =
        parse_version(&text).ok_or_else(|| err(&format!("invalid version {:?}", g(2))))?;
    Ok(Single {
        op,
        version,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

impl Constraint {
    /// Parses a constraint string such as `>=1.0.0 <2.0.0 || ^3.1`.
    pub fn parse(input: &str) -> Result<Constraint, ConstraintError> {
        let rewritten = rewrite_range(input);
        let mut ors = Vec::new();
        for part in rewritten.split("||") {
            if !regexes().valid.is_match(part) {
                return Err(ConstraintError {
                    input: input.to_string(),
                    reason: format!("improper constraint: {}", part.trim()),
                });
            }
            let mut ands = Vec::new();
            for m in regexes().find.find_iter(part) {
                ands.push(parse_single(m.as_str(), input)?);
            }
            if ands.is_empty() {
                ands.push(parse_single(part, input)?);
            }
            ors.push(ands);
        }
        Ok(Constraint {
            source: input.to_string(),
            ors,
        })
    }

    /// Whether `v` satisfies the constraint.
    pub fn matches(&self, v: &Version) -> bool {
        self.ors.iter().any(|ands| ands.iter().all(|c| c.check(v)))
    }

    /// The tag whose (leniently parsed) version is the highest one matching, if any. Tags that
    /// are not versions are skipped. On equal versions (`v1.0.0` and `1.0.0`) the first wins.
    pub fn best<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        let mut best: Option<(&'a str, Version)> = None;
        for tag in tags {
            let Some(v) = parse_version(tag) else {
                continue;
            };
            if !self.matches(&v) {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(_, b)| v.cmp_precedence(b) == Ordering::Greater)
            {
                best = Some((tag, v));
            }
        }
        best.map(|(t, _)| t)
    }

    /// The constraint as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Constraint {
    type Err = ConstraintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

/// Masterminds' `Compare`: precedence, build metadata ignored.
fn cmp(a: &Version, b: &Version) -> Ordering {
    a.cmp_precedence(b)
}

impl Single {
    fn check(&self, v: &Version) -> bool {
        let c = &self.version;
        // Masterminds issue 21: a pre-release version only matches constraints that ask for
        // pre-releases (every operator applies this first).
        if !v.pre.is_empty() && c.pre.is_empty() {
            return false;
        }
        match self.op {
            Op::TildeOrEqual => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    cmp(v, c) == Ordering::Equal
                }
            }
            Op::NotEqual => self.not_equal(v),
            Op::Greater => {
                if !self.dirty {
                    return cmp(v, c) == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                if self.minor_dirty {
                    // `>11` needs 12 or higher.
                    return false;
                }
                if self.patch_dirty {
                    // `>11.1` needs 11.2 or higher.
                    return v.minor > c.minor;
                }
                cmp(v, c) == Ordering::Greater
            }
            Op::Less => cmp(v, c) == Ordering::Less,
            Op::GreaterEqual => cmp(v, c) != Ordering::Less,
            Op::LessEqual => {
                if !self.dirty {
                    return cmp(v, c) != Ordering::Greater;
                }
                // `<=1.1` includes every 1.1.x, `<=1` every 1.x.
                !(v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => self.caret(v),
        }
    }

    fn not_equal(&self, v: &Version) -> bool {
        let c = &self.version;
        if self.dirty {
            if c.major != v.major {
                return true;
            }
            if c.minor != v.minor && !self.minor_dirty {
                return true;
            } else if self.minor_dirty {
                return false;
            } else if c.patch != v.patch && !self.patch_dirty {
                return true;
            } else if self.patch_dirty {
                if !v.pre.is_empty() || !c.pre.is_empty() {
                    return v.pre != c.pre;
                }
                return false;
            }
        }
        cmp(v, c) != Ordering::Equal
    }

    fn tilde(&self, v: &Version) -> bool {
        let c = &self.version;
        if cmp(v, c) == Ordering::Less {
            return false;
        }
        // `~0.0.0` and `~*` accept everything.
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.minor_dirty
    }

    fn caret(&self, v: &Version) -> bool {
        let c = &self.version;
        if cmp(v, c) == Ordering::Less {
            return false;
        }
        if c.major > 0 || self.minor_dirty {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.patch_dirty {
            return v.minor == c.minor;
        }
        if v.minor > 0 {
            return false;
        }
        v.patch == c.patch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: &str, v: &str) -> bool {
        let c = Constraint::parse(c).unwrap_or_else(|e| panic!("{e}"));
        let v = parse_version(v).unwrap_or_else(|| panic!("bad version {v}"));
        c.matches(&v)
    }

    /// Cases from Masterminds/semver v3's documentation and its `TestConstraintsCheck` table.
    #[test]
    fn masterminds_constraints_check() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "1.2.3", true),
            ("~0.0.0", "1.2.3", true),
            ("0.x.x", "1.2.3", false),
            ("0.0.x", "1.2.3", false),
            ("0.0.0", "1.2.3", false),
            ("^0.0.0", "1.2.3", false),
            ("= 2.0", "1.2.3", false),
            ("= 2.0", "2.0.0", true),
            ("4.1", "4.1.0", true),
            ("4.1.x", "4.1.3", true),
            ("1.x", "1.4", true),
            ("!=4.1", "4.1.0", false),
            ("!=4.1-alpha", "4.1.0-alpha", false),
            ("!=4.1-alpha", "4.1.1-alpha", false),
            ("!=4.1-alpha", "4.1.0", true),
            ("!=4.1", "5.1.0", true),
            ("!=4.x", "5.1.0", true),
            ("!=4.x", "4.1.0", false),
            ("!=4.1.x", "4.2.0", true),
            ("!=4.2.x", "4.2.3", false),
            (">1.1", "4.1.0", true),
            (">1.1", "1.1.0", false),
            ("<1.1", "0.1.0", true),
            ("<1.1", "1.1.0", false),
            ("<1.1", "1.1.1", false),
            ("<1.x", "1.1.1", false),
            ("<1.x", "0.1.1", true),
            ("<1.x", "2.0.0", false),
            ("<1.1.x", "1.2.1", false),
            ("<1.1.x", "1.1.500", false),
            ("<1.1.x", "1.0.500", true),
            ("<1.2.x", "1.1.1", true),
            (">=1.1", "4.1.0", true),
            (">=1.1", "4.1.0-beta", false),
            (">=1.1", "1.1.0", true),
            (">=1.1", "0.0.9", false),
            ("<=1.1", "0.1.0", true),
            ("<=1.1", "0.1.0-alpha", false),
            ("<=1.1-a", "0.1.0-alpha", true),
            ("<=1.1", "1.1.0", true),
            ("<=1.x", "1.1.0", true),
            ("<=2.x", "3.0.0", false),
            ("<=1.1", "1.1.1", true),
            ("<=1.1.x", "1.2.500", false),
            ("<=4.5", "3.4.0", true),
            ("<=4.5", "3.7.0", true),
            ("<=4.5", "4.6.3", false),
            (">1.1, <2", "1.1.1", false),
            (">1.1, <2", "1.2.1", true),
            (">1.1, <3", "4.3.2", false),
            (">=1.1, <2, !=1.2.3", "1.2.3", false),
            (">1.1 <2", "1.1.1", false),
            (">1.1 <2", "1.2.1", true),
            (">1.1    <3", "4.3.2", false),
            (">=1.1    <2    !=1.2.3", "1.2.3", false),
            (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
            (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
            (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
            (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", true),
            ("> 1.1, <     2", "1.1.1", false),
            ("1.1 - 2", "1.1.1", true),
            ("1.5.0 - 4.5", "3.7.0", true),
            ("1.1-3", "4.3.2", false),
            ("^1.1", "1.1.1", true),
            ("^1.1", "4.3.2", false),
            ("^1.x", "1.1.1", true),
            ("^2.x", "1.1.1", false),
            ("^1.x", "2.1.1", false),
            ("^1.x", "1.1.1-beta1", false),
            ("^1.1.2-alpha", "1.2.1-beta1", true),
            ("^1.2.x-alpha", "1.1.1-beta1", false),
            ("^0.0.1", "0.0.1", true),
            ("^0.0.1", "0.3.1", false),
            ("~*", "2.1.1", true),
            ("~1", "2.1.1", false),
            ("~1", "1.3.5", true),
            ("~1", "1.4", true),
            ("~1.x", "2.1.1", false),
            ("~1.x", "1.3.5", true),
            ("~1.1", "1.1.1", true),
            ("~1.1", "1.1.1-alpha", false),
            ("~1.1-alpha", "1.1.1-beta", true),
            ("~1.1.1-beta", "1.1.1-alpha", false),
            ("~1.1.1-beta", "1.1.1", true),
            ("~1.2.3", "1.2.5", true),
            ("~1.2.3", "1.2.2", false),
            ("~1.2.3", "1.3.2", false),
            ("~1.1", "1.2.3", false),
            ("~1.3", "2.4.5", false),
        ];
        for (c, v, want) in cases {
            assert_eq!(check(c, v), *want, "{c:?} against {v:?}");
        }
    }

    /// Masterminds' single-constraint table (`TestConstraintCheck`), incl. pre-release rules.
    #[test]
    fn masterminds_single_constraint_check() {
        let cases: &[(&str, &str, bool)] = &[
            ("=2.0.0", "1.2.3", false),
            ("=2.0.0", "2.0.0", true),
            ("=2.0", "2.0.1", true),
            ("!=4.1.0", "4.1.1", true),
            ("!=4.1", "4.1.1", false),
            ("!=4.1", "5.1.0-alpha.1", false),
            ("<11", "0.1.0", true),
            ("<11", "11.1.0", false),
            ("<=11", "11.2.3", true),
            ("<=11", "12.2.3", false),
            (">0", "0", false),
            (">0", "1", true),
            (">0", "0.0.1-alpha", false),
            (">0-0", "0.0.1-alpha", false),
            (">0.0.0-0", "0.0.0-alpha", true),
            (">1.2.3-alpha.1", "1.2.3-alpha.2", true),
            (">1.2.3-alpha.1", "1.3.3-alpha.2", true),
            (">11", "11.1.0", false),
            (">11.1", "11.1.1", false),
            (">11.1", "11.2.1", true),
            (">=0", "0.0.1-alpha", false),
            (">=0-0", "0.0.1-alpha", true),
            (">=0.0.0-0", "1.2.3", true),
            (">=0.0.0-0", "3.4.5-beta.1", true),
            ("<0", "0.0.0-alpha", false),
            ("<0-z", "0.0.0-alpha", true),
            ("*", "1.2.3-alpha.1", false),
            ("*-0", "1.2.3-alpha.1", true),
            ("2.*", "3.4.5", false),
            ("2.1.*", "2.1.1", true),
            ("2.1.*", "2.2.1", false),
            ("~1.2.3-beta.2", "1.2.4-beta.2", true),
            ("~1.2.3-beta.2", "1.3.4-beta.2", false),
            ("^1.2.3", "1.8.9", true),
            ("^1.2.3", "2.8.9", false),
            ("^1.2.3", "1.2.1", false),
            ("^1.2.0", "1.2.1-alpha.1", false),
            ("^1.2.0-alpha.0", "1.2.1-alpha.1", true),
            ("^1.2.0-alpha.2", "1.2.0-alpha.1", false),
            ("^0.2.3", "0.2.5", true),
            ("^0.2.3", "0.5.6", false),
            ("^0.0.3", "0.0.4", false),
            ("^0.0", "0.0.3", true),
            ("^0.0", "0.1.4", false),
            ("^0", "0.2.3", true),
            ("^0", "1.1.4", false),
            ("^0.2.3-beta.2", "0.3.4-beta.2", false),
            ("v1.2", "1.2.7", true),
        ];
        for (c, v, want) in cases {
            assert_eq!(check(c, v), *want, "{c:?} against {v:?}");
        }
    }

    #[test]
    fn parse_errors_and_structure() {
        for bad in [
            ">= bar",
            "BAR >= 1.2.3",
            "12.3.4.1234",
            "12.3.34~ 1.2.3",
            "",
            "foo",
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad:?} should not parse");
        }
        for good in [
            ">40.50.60, < 50.70",
            "v2.3.5-20161202202307-sha.e8fc5e5",
            ">= 1.2.3 < 2.0 || => 3.0 < 4",
            "3 - 4 || => 3.0, < 4",
            "12.3.34 ~1.2.3",
        ] {
            assert!(Constraint::parse(good).is_ok(), "{good:?} should parse");
        }
        let c = Constraint::parse(">= 1.2.3 < 2.0 || => 3.0 < 4").unwrap();
        assert_eq!(c.ors.len(), 2);
        assert_eq!(c.ors[0].len(), 2);
        assert_eq!(
            rewrite_range("2 - 3, 4.0.0 - 5.1"),
            ">= 2, <= 3,>= 4.0.0, <= 5.1"
        );
    }

    #[test]
    fn lenient_versions() {
        assert_eq!(parse_version("v1.2.3"), Some(Version::new(1, 2, 3)));
        assert_eq!(parse_version("1.2"), Some(Version::new(1, 2, 0)));
        assert_eq!(parse_version("3"), Some(Version::new(3, 0, 0)));
        assert!(parse_version("latest").is_none());
        assert!(parse_version("1.2.3.4").is_none());
        assert!(
            parse_version("1.2.3-01").is_none(),
            "leading zero in numeric pre-release"
        );
        assert_eq!(
            parse_version("1.2.3-rc.1+build.5").map(|v| v.pre.to_string()),
            Some("rc.1".into())
        );
    }

    #[test]
    fn best_picks_highest_matching_tag() {
        let tags = [
            "v1.0.0",
            "v1.2.0",
            "v1.10.0",
            "v2.0.0",
            "v1.11.0-rc.1",
            "main",
            "1.9",
        ];
        let c = Constraint::parse("~1").unwrap();
        assert_eq!(c.best(tags), Some("v1.10.0"));
        // As in Masterminds, every part of an AND must allow pre-releases for one to match.
        let c = Constraint::parse(">=1.0.0-0 <2.0.0").unwrap();
        assert_eq!(c.best(tags), Some("v1.10.0"));
        let c = Constraint::parse(">=1.0.0-0 <2.0.0-0").unwrap();
        assert_eq!(c.best(tags), Some("v1.11.0-rc.1"));
        let c = Constraint::parse("^3").unwrap();
        assert_eq!(c.best(tags), None);
        let c = Constraint::parse("1.2.x || 1.9.x").unwrap();
        assert_eq!(c.best(tags), Some("1.9"));
        let c = Constraint::parse("*").unwrap();
        assert_eq!(c.best(tags), Some("v2.0.0"));
        // Equal versions: the first listed wins; build metadata does not count.
        let c = Constraint::parse("1.0.0").unwrap();
        assert_eq!(c.best(["1.0.0+b", "v1.0.0"]), Some("1.0.0+b"));
    }
}
