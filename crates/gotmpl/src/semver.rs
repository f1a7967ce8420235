//! Masterminds/semver v3 constraint checking, as Sprig's `semverCompare`
//! uses it: `>=1.19-0`, `~1.2`, `^1.2.3`, `1.2.x`, `||`, hyphen ranges, and
//! the rule that pre-release versions only match constraints that have one.

use crate::value::{Object, Value};
use std::cmp::Ordering;
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: String,
    pub meta: String,
    pub original: String,
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for i in 0..pa.len().max(pb.len()) {
        let (Some(x), Some(y)) = (pa.get(i), pb.get(i)) else {
            return pa.len().cmp(&pb.len());
        };
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

impl Version {
    pub fn cmp(&self, o: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            .then_with(|| cmp_pre(&self.pre, &o.pre))
    }
}

/// Parses a version leniently (leading `v`, missing minor/patch), as
/// Masterminds' NewVersion does.
pub fn parse_version(s: &str) -> Result<Version, String> {
    let orig = s;
    let s = s.trim();
    let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
    let (s, meta) = match s.split_once('+') {
        Some((a, m)) => (a, m.to_string()),
        None => (s, String::new()),
    };
    let (core, pre) = match s.split_once('-') {
        Some((a, p)) => (a, p.to_string()),
        None => (s, String::new()),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("invalid semantic version".into());
    }
    let num = |i: usize| {
        parts
            .get(i)
            .map(|p| {
                p.parse::<u64>()
                    .map_err(|_| "invalid semantic version".to_string())
            })
            .unwrap_or(Ok(0))
    };
    Ok(Version {
        major: num(0)?,
        minor: num(1)?,
        patch: num(2)?,
        pre,
        meta,
        original: orig.to_string(),
    })
}

struct Constraint {
    op: String,
    v: Version,
    /// How many leading components were given (wildcards stop the count).
    given: usize,
    wildcard: bool,
}

fn parse_constraint(s: &str) -> Result<Constraint, String> {
    let s = s.trim();
    let op_len = s
        .find(|c: char| c.is_ascii_alphanumeric() || c == '*')
        .unwrap_or(s.len());
    let op = s[..op_len].trim().to_string();
    let ver = s[op_len..].trim();
    if !matches!(
        op.as_str(),
        "" | "=" | "!=" | ">" | "<" | ">=" | "=>" | "<=" | "=<" | "~" | "~>" | "^"
    ) {
        return Err(format!("improper constraint: {s}"));
    }
    let ver = ver.strip_prefix(['v', 'V']).unwrap_or(ver);
    let (core, rest) = match ver.find(['-', '+']) {
        Some(i) => (&ver[..i], &ver[i..]),
        None => (ver, ""),
    };
    let mut given = 0;
    let mut wildcard = false;
    let mut nums = Vec::new();
    if core.split('.').count() > 3 {
        return Err(format!("improper constraint: {s}"));
    }
    for p in core.split('.') {
        if wildcard || matches!(p, "x" | "X" | "*") {
            // Masterminds accepts only digits and wildcards after one.
            if p.is_empty() || !p.bytes().all(|b| b"0123456789xX*|".contains(&b)) {
                return Err(format!("improper constraint: {s}"));
            }
            wildcard = true;
            continue;
        }
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("improper constraint: {s}"));
        }
        nums.push(p);
        given += 1;
    }
    if given > 3 {
        return Err(format!("improper constraint: {s}"));
    }
    if given < 3 {
        wildcard = true;
    }
    let mut text = if nums.is_empty() {
        "0".to_string()
    } else {
        nums.join(".")
    };
    text.push_str(rest);
    let v = parse_version(&text).map_err(|_| format!("improper constraint: {s}"))?;
    Ok(Constraint {
        op,
        v,
        given,
        wildcard,
    })
}

fn bump(v: &Version, at: usize) -> Version {
    let mut n = Version {
        major: v.major,
        minor: v.minor,
        patch: v.patch,
        pre: String::new(),
        meta: String::new(),
        original: String::new(),
    };
    match at {
        0 => {
            n.major += 1;
            n.minor = 0;
            n.patch = 0;
        }
        1 => {
            n.minor += 1;
            n.patch = 0;
        }
        _ => n.patch += 1,
    }
    n
}

fn check(c: &Constraint, v: &Version) -> bool {
    if !v.pre.is_empty() && c.v.pre.is_empty() && c.op != "!=" {
        return false;
    }
    let cmp = v.cmp(&c.v);
    match c.op.as_str() {
        "" | "=" => {
            if c.wildcard {
                if c.given == 0 {
                    return true;
                }
                cmp != Ordering::Less && v.cmp(&bump(&c.v, c.given - 1)) == Ordering::Less
            } else {
                cmp == Ordering::Equal
            }
        }
        "!=" => {
            if c.wildcard {
                if c.given == 0 {
                    return false;
                }
                !(cmp != Ordering::Less && v.cmp(&bump(&c.v, c.given - 1)) == Ordering::Less)
            } else {
                cmp != Ordering::Equal
            }
        }
        ">" => {
            if c.wildcard && c.given > 0 {
                v.cmp(&bump(&c.v, c.given - 1)) != Ordering::Less
            } else if c.wildcard {
                false
            } else {
                cmp == Ordering::Greater
            }
        }
        "<" => cmp == Ordering::Less,
        ">=" | "=>" => cmp != Ordering::Less,
        "<=" | "=<" => {
            if c.wildcard && c.given > 0 {
                v.cmp(&bump(&c.v, c.given - 1)) == Ordering::Less
            } else if c.wildcard {
                true
            } else {
                cmp != Ordering::Greater
            }
        }
        "~" | "~>" => {
            if cmp == Ordering::Less {
                return false;
            }
            let upper = if c.given <= 1 {
                bump(&c.v, 0)
            } else {
                bump(&c.v, 1)
            };
            v.cmp(&upper) == Ordering::Less
        }
        "^" => {
            if cmp == Ordering::Less {
                return false;
            }
            let upper = if c.v.major > 0 || c.given <= 1 {
                bump(&c.v, 0)
            } else if c.v.minor > 0 || c.given <= 2 {
                bump(&c.v, 1)
            } else {
                bump(&c.v, 2)
            };
            v.cmp(&upper) == Ordering::Less
        }
        _ => false,
    }
}

/// Splits an AND group into single constraints, joining operators that are
/// separated from their version by spaces and expanding hyphen ranges.
fn and_group(g: &str) -> Result<Vec<Constraint>, String> {
    let g = g.replace(',', " ");
    let toks: Vec<&str> = g.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        if i + 2 < toks.len() && toks[i + 1] == "-" {
            out.push(parse_constraint(&format!(">={t}"))?);
            out.push(parse_constraint(&format!("<={}", toks[i + 2]))?);
            i += 3;
            continue;
        }
        if t.chars().all(|c| "=!<>~^".contains(c)) && i + 1 < toks.len() {
            out.push(parse_constraint(&format!("{t}{}", toks[i + 1]))?);
            i += 2;
            continue;
        }
        out.push(parse_constraint(t)?);
        i += 1;
    }
    if out.is_empty() {
        return Err(format!("improper constraint: {g}"));
    }
    Ok(out)
}

/// `semverCompare constraint version`.
pub fn semver_compare(constraint: &str, version: &str) -> Result<bool, String> {
    let mut groups = Vec::new();
    for g in constraint.split("||") {
        // Masterminds names the whole `||` part, Go-quoted.
        groups.push(
            and_group(g)
                .map_err(|_| format!("improper constraint: {}", crate::gofmt::go_quote(g)))?,
        );
    }
    let v = parse_version(version)?;
    Ok(groups.iter().any(|g| g.iter().all(|c| check(c, &v))))
}

struct SemverObj(Version);

impl Object for SemverObj {
    fn type_name(&self) -> &str {
        "*semver.Version"
    }
    fn field(&self, name: &str) -> Option<Value> {
        let v = &self.0;
        Some(match name {
            "Major" => Value::Int64(v.major as i64),
            "Minor" => Value::Int64(v.minor as i64),
            "Patch" => Value::Int64(v.patch as i64),
            "Prerelease" => Value::str(&v.pre),
            "Metadata" => Value::str(&v.meta),
            "Original" => Value::str(&v.original),
            "String" => Value::string(self.display()),
            _ => return None,
        })
    }
    fn call(&self, name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        self.field(name).map(Ok)
    }
    fn has_method(&self, name: &str) -> bool {
        matches!(
            name,
            "Major" | "Minor" | "Patch" | "Prerelease" | "Metadata" | "Original" | "String"
        )
    }
    fn display(&self) -> String {
        let v = &self.0;
        let mut s = format!("{}.{}.{}", v.major, v.minor, v.patch);
        if !v.pre.is_empty() {
            s.push('-');
            s.push_str(&v.pre);
        }
        if !v.meta.is_empty() {
            s.push('+');
            s.push_str(&v.meta);
        }
        s
    }
}

/// `semver "1.2.3"`: a version object with Major/Minor/... fields.
pub fn semver_object(s: &str) -> Result<Value, String> {
    Ok(Value::Object(Rc::new(SemverObj(parse_version(s)?))))
}

#[cfg(test)]
mod tests {
    use super::semver_compare as sc;

    #[test]
    fn constraints_match_masterminds() {
        assert!(sc(">=1.19-0", "v1.37.0").unwrap());
        assert!(sc(">=1.19-0", "1.20.0-gke.1").unwrap());
        assert!(!sc(">=1.19", "1.20.0-gke.1").unwrap());
        assert!(sc("~1.2", "1.2.9").unwrap());
        assert!(!sc("~1.2", "1.3.0").unwrap());
        assert!(sc("^1.2.3", "1.9.0").unwrap());
        assert!(!sc("^0.2.3", "0.3.0").unwrap());
        assert!(sc("1.2.x", "1.2.7").unwrap());
        assert!(sc("<1.0 || >=2.0", "2.1.0").unwrap());
        assert!(sc(">= 1.2, < 1.4", "1.3.0").unwrap());
        assert!(sc("1.2 - 1.4.5", "1.4.5").unwrap());
        assert!(sc("*", "3.0.0").unwrap());
        assert!(sc("<1.25.0-0", "1.24.3").unwrap());
        assert!(sc("abc", "1.0.0").is_err());
    }
}
