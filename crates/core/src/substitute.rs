//! postBuild variable substitution, as Flux's kustomize-controller does it.
//!
//! Only the braced form is substituted: `${var}`, with bash-like operators (`${var:=default}`,
//! `${var:-default}`, `${var=default}`, `${var-default}`, `${var:offset}`,
//! `${var:offset:length}`, `${var/old/new}`, `${var//old/new}`, `${#var}`, `${var^}`,
//! `${var^^}`, `${var,}`, `${var,,}`). `$var` is left alone, so shell scripts in ConfigMaps
//! survive, and `$${var}` is an escape that leaves a literal `${var}`.
//!
//! Flux substitutes in the YAML text of each object, so a plain (unquoted) scalar takes the type
//! of what it becomes: `replicas: ${REPLICAS}` turns into a number. Here objects are values, and
//! the same effect is had by re-reading a substituted string as a YAML scalar when the string
//! would have been written as a plain scalar.

use crate::object::Object;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The annotation (or label) that turns substitution off for one object.
pub const SUBSTITUTE_KEY: &str = "kustomize.toolkit.fluxcd.io/substitute";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubstituteError {
    #[error("'{name}' var name is invalid, must match '^[_a-zA-Z][_a-zA-Z0-9]*$' (from {origin})")]
    InvalidName { name: String, origin: String },
    #[error("{object}: variable not set (strict mode): \"{name}\"")]
    Undefined { object: String, name: String },
    #[error("{object}: bad substitution `{expr}`: {problem}")]
    Syntax {
        object: String,
        expr: String,
        problem: String,
    },
}

fn name_re() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"^[_a-zA-Z][_a-zA-Z0-9]*$").expect("valid regex"))
}

/// Variables in force for one Kustomization, merged the way Flux merges them: the entries of
/// `substituteFrom` in order (later ones win), then the inline `substitute` map over them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    pub fn new() -> Self {
        Vars::default()
    }

    /// Adds a set of variables (from a ConfigMap, a Secret or the inline map), overriding
    /// earlier ones; `origin` names the set in errors.
    pub fn extend(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
        origin: &str,
    ) -> Result<(), SubstituteError> {
        for (k, v) in vars {
            if !name_re().is_match(&k) {
                return Err(SubstituteError::InvalidName {
                    name: k,
                    origin: origin.to_string(),
                });
            }
            self.0.insert(k, v);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values, for redacting Secret-provided ones from messages.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }
}

/// Substitutes variables in every object that has not opted out. `strict` fails on a variable
/// that is neither set nor given a default.
pub fn substitute_objects(
    objects: &mut [Object],
    vars: &Vars,
    strict: bool,
) -> Result<(), SubstituteError> {
    for obj in objects.iter_mut() {
        if obj.annotation(SUBSTITUTE_KEY) == Some("disabled")
            || obj.label(SUBSTITUTE_KEY) == Some("disabled")
        {
            continue;
        }
        let name = obj.display_name();
        let ctx = Ctx {
            vars,
            strict,
            object: &name,
        };
        substitute_map(&mut obj.0, &ctx)?;
    }
    Ok(())
}

struct Ctx<'a> {
    vars: &'a Vars,
    strict: bool,
    object: &'a str,
}

fn substitute_map(map: &mut Map<String, Value>, ctx: &Ctx) -> Result<(), SubstituteError> {
    if map.keys().any(|k| k.contains("${")) {
        let old = std::mem::take(map);
        for (k, mut v) in old {
            substitute_value(&mut v, ctx)?;
            let k = if k.contains("${") { eval(&k, ctx)? } else { k };
            map.insert(k, v);
        }
        return Ok(());
    }
    for v in map.values_mut() {
        substitute_value(v, ctx)?;
    }
    Ok(())
}

fn substitute_value(v: &mut Value, ctx: &Ctx) -> Result<(), SubstituteError> {
    match v {
        Value::String(s) if s.contains("${") => {
            let plain = would_be_plain(s);
            let out = eval(s, ctx)?;
            *v = if plain {
                reinterpret_plain(out)
            } else {
                Value::String(out)
            };
        }
        Value::Array(items) => {
            for item in items {
                substitute_value(item, ctx)?;
            }
        }
        Value::Object(m) => substitute_map(m, ctx)?,
        _ => {}
    }
    Ok(())
}

/// Whether a YAML emitter writes this string as a plain scalar (so that after substitution in
/// the text it would be re-read with its natural type).
fn would_be_plain(s: &str) -> bool {
    if s.is_empty() || s.contains('\n') || s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    let first = s.as_bytes()[0];
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first) && !s.starts_with("${") {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    // A string that already reads as another type is quoted by the emitter.
    matches!(reinterpret_plain(s.to_string()), Value::String(_))
}

/// Reads a plain scalar with YAML 1.2's core schema, as go-yaml v3 does.
fn reinterpret_plain(s: String) -> Value {
    match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if s.contains('\n') {
        return Value::String(s);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(&s);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::from(i);
        }
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::from(i);
        }
    }
    let looks_float = unsigned.bytes().any(|b| b.is_ascii_digit())
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && !unsigned.starts_with(['e', 'E']);
    if looks_float {
        if let Ok(f) = s.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(s)
}

/// Substitutes every `${...}` expression of a string.
pub fn substitute_str(
    s: &str,
    vars: &Vars,
    strict: bool,
    object: &str,
) -> Result<String, SubstituteError> {
    eval(
        s,
        &Ctx {
            vars,
            strict,
            object,
        },
    )
}

fn eval(s: &str, ctx: &Ctx) -> Result<String, SubstituteError> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            // `$${` is the escape for a literal `${`.
            out.push_str(&s[last..i]);
            out.push('$');
            i += 2;
            let end = find_close(bytes, i + 1).unwrap_or(bytes.len() - 1);
            out.push_str(&s[i..=end]);
            i = end + 1;
            last = i;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let Some(end) = find_close(bytes, i + 2) else {
                return Err(SubstituteError::Syntax {
                    object: ctx.object.to_string(),
                    expr: s[i..].to_string(),
                    problem: "missing closing brace".into(),
                });
            };
            out.push_str(&s[last..i]);
            out.push_str(&expand(&s[i + 2..end], ctx)?);
            i = end + 1;
            last = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    Ok(out)
}

/// The index of the `}` closing an expression whose body starts at `start`, minding nesting.
fn find_close(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 1;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(expr: &str, ctx: &Ctx) -> Result<String, SubstituteError> {
    let syntax = |problem: &str| SubstituteError::Syntax {
        object: ctx.object.to_string(),
        expr: format!("${{{expr}}}"),
        problem: problem.to_string(),
    };
    if let Some(name) = expr.strip_prefix('#') {
        return Ok(lookup(name, ctx)?
            .unwrap_or_default()
            .chars()
            .count()
            .to_string());
    }
    let name_len = expr
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let (name, op) = expr.split_at(name_len);
    if name.is_empty() || !name_re().is_match(name) {
        return Err(syntax("invalid variable name"));
    }
    let value = ctx.vars.get(name);
    let default = |d: &str| eval(d, ctx);
    Ok(match op {
        "" => match value {
            Some(v) => v.to_string(),
            None => undefined(name, ctx)?,
        },
        _ if op.starts_with(":=") || op.starts_with(":-") => match value {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => default(&op[2..])?,
        },
        _ if op.starts_with('=') || op.starts_with('-') => match value {
            Some(v) => v.to_string(),
            None => default(&op[1..])?,
        },
        _ if op.starts_with("//") || op.starts_with('/') => {
            let all = op.starts_with("//");
            let rest = &op[if all { 2 } else { 1 }..];
            let (from, to) = rest.split_once('/').unwrap_or((rest, ""));
            let v = match value {
                Some(v) => v.to_string(),
                None => undefined(name, ctx)?,
            };
            if from.is_empty() {
                v
            } else if all {
                v.replace(from, to)
            } else {
                v.replacen(from, to, 1)
            }
        }
        "^" | "^^" | "," | ",," => {
            let v = match value {
                Some(v) => v.to_string(),
                None => undefined(name, ctx)?,
            };
            let mut chars = v.chars();
            match op {
                "^^" => v.to_uppercase(),
                ",," => v.to_lowercase(),
                "^" => chars
                    .next()
                    .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
                    .unwrap_or_default(),
                _ => chars
                    .next()
                    .map(|c| c.to_lowercase().collect::<String>() + chars.as_str())
                    .unwrap_or_default(),
            }
        }
        _ if op.starts_with(':') => {
            let v: Vec<char> = match value {
                Some(v) => v.chars().collect(),
                None => undefined(name, ctx)?.chars().collect(),
            };
            let mut parts = op[1..].splitn(2, ':');
            let offset: i64 = parts
                .next()
                .unwrap_or("0")
                .trim()
                .parse()
                .map_err(|_| syntax("offset is not a number"))?;
            let start = if offset < 0 {
                (v.len() as i64 + offset).max(0) as usize
            } else {
                (offset as usize).min(v.len())
            };
            let end = match parts.next() {
                Some(l) => {
                    let len: usize = l
                        .trim()
                        .parse()
                        .map_err(|_| syntax("length is not a number"))?;
                    (start + len).min(v.len())
                }
                None => v.len(),
            };
            v[start..end].iter().collect()
        }
        _ => return Err(syntax("unsupported operator")),
    })
}

fn lookup<'a>(name: &str, ctx: &'a Ctx) -> Result<Option<&'a str>, SubstituteError> {
    Ok(ctx.vars.get(name))
}

fn undefined(name: &str, ctx: &Ctx) -> Result<String, SubstituteError> {
    if ctx.strict {
        Err(SubstituteError::Undefined {
            object: ctx.object.to_string(),
            name: name.to_string(),
        })
    } else {
        Ok(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_objects;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut v = Vars::new();
        v.extend(
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())),
            "test",
        )
        .unwrap();
        v
    }

    fn sub(text: &str, v: &Vars, strict: bool) -> Result<String, SubstituteError> {
        substitute_str(text, v, strict, "ConfigMap/default/x")
    }

    #[test]
    fn operators_behave_like_flux_envsubst() {
        let v = vars(&[
            ("region", "eu-central-1"),
            ("empty", ""),
            ("name", "podinfo"),
        ]);
        assert_eq!(sub("${region}", &v, false).unwrap(), "eu-central-1");
        assert_eq!(sub("a-${region}-b", &v, false).unwrap(), "a-eu-central-1-b");
        assert_eq!(sub("${missing:=fallback}", &v, false).unwrap(), "fallback");
        assert_eq!(sub("${empty:=fallback}", &v, false).unwrap(), "fallback");
        assert_eq!(sub("${empty=fallback}", &v, false).unwrap(), "");
        assert_eq!(sub("${missing:-${name}}", &v, false).unwrap(), "podinfo");
        assert_eq!(sub("${region:3}", &v, false).unwrap(), "central-1");
        assert_eq!(sub("${region:0:2}", &v, false).unwrap(), "eu");
        assert_eq!(sub("${region/-/_}", &v, false).unwrap(), "eu_central-1");
        assert_eq!(sub("${region//-/_}", &v, false).unwrap(), "eu_central_1");
        assert_eq!(sub("${#name}", &v, false).unwrap(), "7");
        assert_eq!(sub("${name^^}", &v, false).unwrap(), "PODINFO");
        assert_eq!(sub("${name^}", &v, false).unwrap(), "Podinfo");
        // $var is not substituted, and $${var} is an escape.
        assert_eq!(
            sub("echo $name $${name}", &v, false).unwrap(),
            "echo $name ${name}"
        );
        assert_eq!(sub("${missing}", &v, false).unwrap(), "");
    }

    #[test]
    fn strict_mode_names_the_variable_and_object() {
        let v = vars(&[]);
        let err = sub("${cluster_name}", &v, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ConfigMap/default/x: variable not set (strict mode): \"cluster_name\""
        );
        assert_eq!(sub("${cluster_name:=dev}", &v, true).unwrap(), "dev");
        assert!(sub("${unclosed", &v, false).is_err());
    }

    #[test]
    fn invalid_names_are_rejected_with_their_origin() {
        let mut v = Vars::new();
        let err = v
            .extend(
                [("my-var".to_string(), "x".to_string())],
                "ConfigMap/flux-system/vars",
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("'my-var' var name is invalid"),
            "{err}"
        );
        assert!(
            err.to_string().contains("ConfigMap/flux-system/vars"),
            "{err}"
        );
    }

    #[test]
    fn later_sources_win_and_inline_substitute_wins_over_all() {
        let mut v = Vars::new();
        v.extend(
            [
                ("a".into(), "from-cm".into()),
                ("b".into(), "from-cm".into()),
            ],
            "cm",
        )
        .unwrap();
        v.extend([("b".into(), "from-secret".into())], "secret")
            .unwrap();
        v.extend([("a".into(), "inline".into())], "substitute")
            .unwrap();
        assert_eq!(
            (v.get("a"), v.get("b")),
            (Some("inline"), Some("from-secret"))
        );
    }

    #[test]
    fn plain_scalars_take_the_type_of_their_value_and_opt_out_is_honoured() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {region: \"${region}\"}\nspec:\n  replicas: ${replicas}\n  paused: ${paused}\n  template:\n    spec:\n      containers:\n      - name: app\n        args: [\"--zone=${region}\", \"${region}: x\"]\n        command: |\n          echo ${region}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: script\n  annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}\ndata:\n  run.sh: echo ${HOME}\n";
        let mut objs = parse_objects(text, "t.yaml").unwrap();
        let v = vars(&[("replicas", "3"), ("paused", "false"), ("region", "eu")]);
        substitute_objects(&mut objs, &v, true).unwrap();
        let d = &objs[0].0;
        assert_eq!(d["spec"]["replicas"], serde_json::json!(3));
        assert_eq!(d["spec"]["paused"], serde_json::json!(false));
        assert_eq!(d["metadata"]["labels"]["region"], "eu");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][0], "--zone=eu");
        assert_eq!(c["args"][1], "eu: x");
        assert_eq!(c["command"], "echo eu\n");
        assert_eq!(objs[1].0["data"]["run.sh"], "echo ${HOME}");
    }
}
