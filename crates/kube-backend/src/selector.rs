//! Kubernetes label selectors in their string form (`--watch-label-selector`), parsed and
//! validated the way the API server does, so that a typo is reported when the operator starts,
//! naming the requirement, instead of as an HTTP 400 from every list and watch.
//!
//! Supported: `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`,
//! `key` (exists) and `!key` (does not exist), joined by commas (all must hold). The empty
//! selector selects everything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A parsed label selector; `Display` gives the canonical string sent to the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector '{selector}': {message}")]
pub struct SelectorError {
    pub selector: String,
    pub message: String,
}

impl LabelSelector {
    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = labels.get(&r.key);
            match r.op {
                Op::Equals => v == r.values.first(),
                // Like the API server: `!=` and `notin` also select objects without the key.
                Op::NotEquals => v != r.values.first(),
                Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }

    /// This selector and another, both required.
    pub fn and(&self, other: &LabelSelector) -> LabelSelector {
        let mut requirements = self.requirements.clone();
        requirements.extend(other.requirements.iter().cloned());
        LabelSelector { requirements }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r.op {
                Op::Equals => write!(f, "{}={}", r.key, r.values[0])?,
                Op::NotEquals => write!(f, "{}!={}", r.key, r.values[0])?,
                Op::In => write!(f, "{} in ({})", r.key, r.values.join(","))?,
                Op::NotIn => write!(f, "{} notin ({})", r.key, r.values.join(","))?,
                Op::Exists => write!(f, "{}", r.key)?,
                Op::DoesNotExist => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        let err = |message: String| SelectorError {
            selector: s.to_string(),
            message,
        };
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for term in split_terms(s).map_err(&err)? {
            let term = term.trim();
            if term.is_empty() {
                return Err(err("empty requirement (a stray comma?)".into()));
            }
            requirements.push(parse_requirement(term).map_err(|m| err(format!("'{term}': {m}")))?);
        }
        Ok(LabelSelector { requirements })
    }
}

/// Splits on the commas between requirements, not those inside `( )`.
fn split_terms(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => {
                if depth > 0 {
                    return Err("nested '('".into());
                }
                depth += 1;
            }
            ')' => {
                if depth == 0 {
                    return Err("')' without '('".into());
                }
                depth -= 1;
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("'(' without ')'".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::DoesNotExist,
            values: Vec::new(),
        });
    }
    if let Some(open) = term.find('(') {
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let (key, op) = match head.as_slice() {
            [key, "in"] => (*key, Op::In),
            [key, "notin"] => (*key, Op::NotIn),
            _ => return Err("expected 'key in (values)' or 'key notin (values)'".into()),
        };
        validate_key(key)?;
        let rest = term[open + 1..].trim_end();
        let Some(inner) = rest.strip_suffix(')') else {
            return Err("nothing may follow ')'".into());
        };
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().all(String::is_empty) {
            return Err("'in' and 'notin' need at least one value".into());
        }
        for v in &values {
            validate_value(v)?;
        }
        return Ok(Requirement {
            key: key.into(),
            op,
            values,
        });
    }
    for (sep, op) in [("!=", Op::NotEquals), ("==", Op::Equals), ("=", Op::Equals)] {
        if let Some((key, value)) = term.split_once(sep) {
            let (key, value) = (key.trim(), value.trim());
            validate_key(key)?;
            if value.contains(['=', '!']) {
                return Err(format!("unexpected operator in value '{value}'"));
            }
            validate_value(value)?;
            return Ok(Requirement {
                key: key.into(),
                op,
                values: vec![value.into()],
            });
        }
    }
    if term.split_whitespace().count() > 1 {
        return Err("expected an operator (=, ==, !=, in, notin) after the key".into());
    }
    validate_key(term)?;
    Ok(Requirement {
        key: term.into(),
        op: Op::Exists,
        values: Vec::new(),
    })
}

/// A name part: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS subdomain: at most 253 characters, dot-separated lowercase labels.
fn valid_prefix(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty label key".into());
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !valid_prefix(p) {
            return Err(format!(
                "label key '{key}': prefix '{p}' must be a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ));
        }
    }
    if !valid_name(name) {
        return Err(format!(
            "label key '{key}': name '{name}' must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), String> {
    if v.is_empty() || valid_name(v) {
        Ok(())
    } else {
        Err(format!(
            "label value '{v}' must be at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flux_sharding_selectors() {
        let main: LabelSelector = "sharding.fluxcd.io/key notin (shard1, shard2)"
            .parse()
            .unwrap();
        assert_eq!(
            main.to_string(),
            "sharding.fluxcd.io/key notin (shard1,shard2)"
        );
        assert!(main.matches(&labels(&[])));
        assert!(main.matches(&labels(&[("sharding.fluxcd.io/key", "shard3")])));
        assert!(!main.matches(&labels(&[("sharding.fluxcd.io/key", "shard1")])));

        let shard1: LabelSelector = "sharding.fluxcd.io/key=shard1".parse().unwrap();
        assert!(shard1.matches(&labels(&[("sharding.fluxcd.io/key", "shard1")])));
        assert!(!shard1.matches(&labels(&[])));
        let eq2: LabelSelector = "sharding.fluxcd.io/key==shard1".parse().unwrap();
        assert_eq!(eq2, shard1);
    }

    #[test]
    fn every_operator() {
        let s: LabelSelector = "a, !b, c!=x, d in (1,2), e notin (3), f=".parse().unwrap();
        assert_eq!(s.to_string(), "a,!b,c!=x,d in (1,2),e notin (3),f=");
        let ok = labels(&[("a", ""), ("d", "2"), ("e", "4"), ("f", "")]);
        assert!(s.matches(&ok));
        let mut bad = ok.clone();
        bad.insert("b".into(), "1".into());
        assert!(!s.matches(&bad));
        let mut bad = ok.clone();
        bad.insert("c".into(), "x".into());
        assert!(!s.matches(&bad));
        let mut bad = ok.clone();
        bad.remove("a");
        assert!(!s.matches(&bad));
        assert!("".parse::<LabelSelector>().unwrap().is_empty());
        // Round trip of the canonical form.
        assert_eq!(s.to_string().parse::<LabelSelector>().unwrap(), s);
    }

    #[test]
    fn errors_name_the_requirement() {
        for (input, want) in [
            ("app in ()", "at least one value"),
            ("app in (a", "'(' without ')'"),
            ("app in a)", "')' without '('"),
            ("app=a,,b=c", "empty requirement"),
            ("-bad=x", "label key '-bad'"),
            ("Bad.Prefix/x=y", "prefix 'Bad.Prefix'"),
            ("app=no spaces", "label value 'no spaces'"),
            ("app between (a)", "expected 'key in (values)'"),
            ("app x", "expected an operator"),
            ("app=a=b", "unexpected operator"),
            (&format!("k={}", "v".repeat(64)), "at most 63"),
        ] {
            let e = input.parse::<LabelSelector>().unwrap_err();
            assert_eq!(e.selector, input);
            assert!(e.to_string().contains(want), "{input}: {e}");
        }
    }
}
