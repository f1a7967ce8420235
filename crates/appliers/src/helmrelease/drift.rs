//! Drift detection: what the cluster holds against what the release manifest says, as the
//! backend would apply it (a dry-run server-side apply), minus `spec.driftDetection.ignore`.

use serde_json::Value;
use trueup_core::api::helm::IgnoreRule;
use trueup_core::api::meta::Selector;
use trueup_core::object::Object;

/// Fields the server owns: never drift.
const VOLATILE: &[&str] = &[
    "/metadata/managedFields",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/creationTimestamp",
    "/metadata/uid",
    "/metadata/selfLink",
    "/status",
];

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers where `live` and `want` differ (a key missing on one side is a difference at
/// that key).
pub fn diff(live: &Value, want: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(live, want, String::new(), &mut out);
    out.retain(|p| !VOLATILE.iter().any(|v| covers(v, p)));
    out
}

fn walk(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{at}/{}", escape(k));
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => walk(u, v, p, out),
                    _ => out.push(p),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                walk(u, v, format!("{at}/{i}"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(if at.is_empty() { "/".into() } else { at }),
    }
}

/// Whether `rule` (a JSON pointer) covers `path` (the same field or one below it).
fn covers(rule: &str, path: &str) -> bool {
    let rule = rule.trim_end_matches('/');
    path == rule || path.starts_with(&format!("{rule}/"))
}

fn anchored(pattern: &str, value: &str) -> bool {
    match regex::Regex::new(&format!("^(?:{pattern})$")) {
        Ok(re) => re.is_match(value),
        Err(_) => pattern == value,
    }
}

fn map_selects(selector: &str, map: Option<&serde_json::Map<String, Value>>) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|req| {
            let get = |k: &str| map.and_then(|m| m.get(k)).and_then(|v| v.as_str());
            if let Some((k, v)) = req.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = req.split_once('=') {
                get(k.trim().trim_end_matches('=')) == Some(v.trim())
            } else if let Some(k) = req.strip_prefix('!') {
                get(k.trim()).is_none()
            } else {
                get(req).is_some()
            }
        })
}

/// Kustomize's selector: group, version, kind, name and namespace as anchored regular
/// expressions, label and annotation selectors as `k=v` / `k!=v` / `k` / `!k` lists.
pub fn selects(sel: &Selector, o: &Object) -> bool {
    let fields = [
        (&sel.group, o.group()),
        (&sel.version, o.version()),
        (&sel.kind, o.kind()),
        (&sel.name, o.name()),
        (&sel.namespace, o.namespace().unwrap_or_default()),
    ];
    fields
        .iter()
        .all(|(want, have)| want.as_deref().is_none_or(|w| anchored(w, have)))
        && sel
            .label_selector
            .as_deref()
            .is_none_or(|s| map_selects(s, o.labels()))
        && sel
            .annotation_selector
            .as_deref()
            .is_none_or(|s| map_selects(s, o.annotations()))
}

/// The ignore paths that apply to `o`.
pub fn ignored_paths<'a>(rules: &'a [IgnoreRule], o: &Object) -> Vec<&'a str> {
    rules
        .iter()
        .filter(|r| r.target.as_ref().is_none_or(|t| selects(t, o)))
        .flat_map(|r| r.paths.iter().map(String::as_str))
        .collect()
}

/// Drops the paths an ignore rule covers.
pub fn without_ignored(paths: Vec<String>, ignore: &[&str]) -> Vec<String> {
    paths
        .into_iter()
        .filter(|p| !ignore.iter().any(|r| covers(r, p)))
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn pointer_parts(p: &str) -> Vec<String> {
    p.trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(unescape)
        .collect()
}

/// Sets the ignored fields of `desired` to what `live` has (or drops them when live has none),
/// so that correcting drift leaves them as they are in the cluster.
pub fn keep_live(desired: &mut Object, live: &Object, ignore: &[&str]) {
    for rule in ignore {
        let parts = pointer_parts(rule);
        if parts.is_empty() {
            continue;
        }
        let live_v = live.0.get(&parts[0]).and_then(|v| {
            parts[1..].iter().try_fold(v, |cur, k| match cur {
                Value::Object(m) => m.get(k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            })
        });
        set_at(&mut desired.0, &parts, live_v);
    }
}

/// Sets (or removes, with `None`) the field at `parts`, creating maps only to set a value.
fn set_at(node: &mut serde_json::Map<String, Value>, parts: &[String], v: Option<&Value>) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        match v {
            Some(v) => {
                node.insert(first.clone(), v.clone());
            }
            None => {
                node.remove(first);
            }
        }
        return;
    }
    if !node.contains_key(first) {
        if v.is_none() {
            return;
        }
        node.insert(first.clone(), Value::Object(Default::default()));
    }
    if let Some(Value::Object(m)) = node.get_mut(first) {
        set_at(m, rest, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        Object::from_value(v).unwrap()
    }

    #[test]
    fn diffs_ignores_and_keeps_live() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "9", "labels": {"x": "1"}},
            "data": {"a": "changed", "b": "2", "c/d": "3"}});
        let want = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "1"}},
            "data": {"a": "1", "b": "2", "c/d": "4"}});
        assert_eq!(diff(&live, &want), ["/data/a", "/data/c~1d"]);
        let rules = vec![IgnoreRule {
            paths: vec!["/data/c~1d".into()],
            target: Some(Selector {
                kind: Some("Config.*".into()),
                label_selector: Some("x=1".into()),
                ..Default::default()
            }),
        }];
        let o = obj(want.clone());
        let ign = ignored_paths(&rules, &o);
        assert_eq!(without_ignored(diff(&live, &want), &ign), ["/data/a"]);
        let mut d = obj(want);
        keep_live(&mut d, &obj(live), &ign);
        assert_eq!(d.0["data"]["c/d"], "3");
        assert_eq!(d.0["data"]["a"], "1");
        let other = obj(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}}));
        assert!(ignored_paths(&rules, &other).is_empty());
    }
}
