//! `values.schema.json` validation: the JSON Schema subset charts use
//! (`type`, `required`, `properties`, `additionalProperties`,
//! `patternProperties`, `items`, `enum`, `const`, numeric and length
//! bounds, `pattern`, `allOf`/`anyOf`/`oneOf`/`not`, local `$ref`), with the
//! messages Helm v4 prints (its validator is santhosh-tekuri/jsonschema).
//! Helm lists several errors in a random order; here they follow the
//! schema's property order, so only single-error cases compare byte for byte.

use crate::loader::Chart;
use crate::value::Value;
use crate::Error;
use serde_json::Value as J;

/// Validates the values of `chart` and of each subchart against their
/// schemas; Helm's error text lists every failing chart.
pub(crate) fn validate_chart(chart: &Chart, values: &Value) -> Result<(), Error> {
    let mut report = String::new();
    walk(chart, values, &mut report)?;
    if report.is_empty() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "values don't meet the specifications of the schema(s) in the following chart(s):\n{report}"
        )))
    }
}

fn walk(chart: &Chart, values: &Value, report: &mut String) -> Result<(), Error> {
    if let Some(schema) = &chart.schema {
        let schema: J = serde_json::from_slice(schema).map_err(|e| {
            Error::Other(format!(
                "{}: values.schema.json: invalid JSON: {e}",
                chart.name
            ))
        })?;
        let inst = values.to_json();
        let mut errs = Vec::new();
        check(&schema, &schema, &inst, "", &mut errs);
        if !errs.is_empty() {
            report.push_str(&format!("{}:\n", chart.name));
            // Errors at the same place are grouped under "validation failed".
            let mut order: Vec<String> = Vec::new();
            for (loc, _) in &errs {
                if !order.contains(loc) {
                    order.push(loc.clone());
                }
            }
            for loc in order {
                let msgs: Vec<&String> = errs
                    .iter()
                    .filter(|(l, _)| *l == loc)
                    .map(|(_, m)| m)
                    .collect();
                if msgs.len() == 1 {
                    report.push_str(&format!("- at '{loc}': {}\n", msgs[0]));
                } else {
                    report.push_str(&format!("- at '{loc}': validation failed\n"));
                    for m in msgs {
                        report.push_str(&format!("  - at '{loc}': {m}\n"));
                    }
                }
            }
        }
    }
    for sub in &chart.subcharts {
        let sv = match values {
            Value::Map(m) => m
                .borrow()
                .get(&sub.name)
                .cloned()
                .unwrap_or_else(Value::empty_map),
            _ => Value::empty_map(),
        };
        walk(sub, &sv, report)?;
    }
    Ok(())
}

fn type_of(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "boolean",
        J::Number(_) => "number",
        J::String(_) => "string",
        J::Array(_) => "array",
        J::Object(_) => "object",
    }
}

fn is_integer(v: &J) -> bool {
    match v {
        J::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn type_ok(want: &str, v: &J) -> bool {
    match want {
        "integer" => is_integer(v),
        "number" => matches!(v, J::Number(_)),
        t => type_of(v) == t,
    }
}

fn num(v: &J) -> Option<f64> {
    v.as_f64()
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// santhosh-tekuri quotes JSON values with single quotes.
fn quote(v: &J) -> String {
    match v {
        J::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

fn resolve<'a>(root: &'a J, r: &str) -> Option<&'a J> {
    let ptr = r.strip_prefix('#')?;
    if ptr.is_empty() {
        return Some(root);
    }
    root.pointer(ptr)
}

fn check(root: &J, s: &J, v: &J, loc: &str, errs: &mut Vec<(String, String)>) {
    let J::Object(s) = s else {
        if s == &J::Bool(false) {
            errs.push((loc.to_string(), "false schema".into()));
        }
        return;
    };
    let mut err = |m: String| errs.push((loc.to_string(), m));
    if let Some(r) = s.get("$ref").and_then(J::as_str) {
        if let Some(target) = resolve(root, r) {
            check(root, target, v, loc, errs);
        }
        return;
    }
    if let Some(t) = s.get("type") {
        let wants: Vec<&str> = match t {
            J::String(t) => vec![t.as_str()],
            J::Array(a) => a.iter().filter_map(J::as_str).collect(),
            _ => Vec::new(),
        };
        if !wants.is_empty() && !wants.iter().any(|w| type_ok(w, v)) {
            err(format!("got {}, want {}", type_of(v), wants.join(" or ")));
            return;
        }
    }
    if let Some(J::Array(e)) = s.get("enum") {
        if !e.iter().any(|x| json_eq(x, v)) {
            let list: Vec<String> = e.iter().map(quote).collect();
            if list.len() == 1 {
                err(format!("value must be {}", list[0]));
            } else {
                err(format!("value must be one of {}", list.join(", ")));
            }
        }
    }
    if let Some(c) = s.get("const") {
        if !json_eq(c, v) {
            err(format!("value must be {}", quote(c)));
        }
    }
    if let Some(x) = num(v) {
        let bound = |k: &str| s.get(k).and_then(num);
        if let Some(m) = bound("minimum") {
            if x < m {
                err(format!("minimum: got {}, want {}", fmt_num(x), fmt_num(m)));
            }
        }
        if let Some(m) = bound("maximum") {
            if x > m {
                err(format!("maximum: got {}, want {}", fmt_num(x), fmt_num(m)));
            }
        }
        if let Some(m) = bound("exclusiveMinimum") {
            if x <= m {
                err(format!(
                    "exclusiveMinimum: got {}, want {}",
                    fmt_num(x),
                    fmt_num(m)
                ));
            }
        }
        if let Some(m) = bound("exclusiveMaximum") {
            if x >= m {
                err(format!(
                    "exclusiveMaximum: got {}, want {}",
                    fmt_num(x),
                    fmt_num(m)
                ));
            }
        }
        if let Some(m) = bound("multipleOf") {
            if m != 0.0 && (x / m).fract() != 0.0 {
                err(format!(
                    "multipleOf: got {}, want {}",
                    fmt_num(x),
                    fmt_num(m)
                ));
            }
        }
    }
    if let J::String(st) = v {
        let len = st.chars().count();
        if let Some(m) = s.get("minLength").and_then(J::as_u64) {
            if (len as u64) < m {
                err(format!("minLength: got {len}, want {m}"));
            }
        }
        if let Some(m) = s.get("maxLength").and_then(J::as_u64) {
            if (len as u64) > m {
                err(format!("maxLength: got {len}, want {m}"));
            }
        }
        if let Some(p) = s.get("pattern").and_then(J::as_str) {
            if let Ok(re) = regex::Regex::new(p) {
                if !re.is_match(st) {
                    err(format!("'{st}' does not match pattern '{p}'"));
                }
            }
        }
    }
    if let J::Array(items) = v {
        if let Some(m) = s.get("minItems").and_then(J::as_u64) {
            if (items.len() as u64) < m {
                err(format!("minItems: got {}, want {m}", items.len()));
            }
        }
        if let Some(m) = s.get("maxItems").and_then(J::as_u64) {
            if (items.len() as u64) > m {
                err(format!("maxItems: got {}, want {m}", items.len()));
            }
        }
        if s.get("uniqueItems") == Some(&J::Bool(true)) {
            'outer: for i in 0..items.len() {
                for j in i + 1..items.len() {
                    if json_eq(&items[i], &items[j]) {
                        err(format!("items at {i} and {j} are equal"));
                        break 'outer;
                    }
                }
            }
        }
        if let Some(is) = s.get("items") {
            for (i, it) in items.iter().enumerate() {
                check(root, is, it, &format!("{loc}/{i}"), errs);
            }
        }
    }
    if let J::Object(o) = v {
        if let Some(J::Array(req)) = s.get("required") {
            let missing: Vec<String> = req
                .iter()
                .filter_map(J::as_str)
                .filter(|k| !o.contains_key(*k))
                .map(|k| format!("'{k}'"))
                .collect();
            match missing.len() {
                0 => {}
                1 => errs.push((loc.to_string(), format!("missing property {}", missing[0]))),
                _ => errs.push((
                    loc.to_string(),
                    format!("missing properties {}", missing.join(", ")),
                )),
            }
        }
        let props = s.get("properties").and_then(J::as_object);
        let pprops = s.get("patternProperties").and_then(J::as_object);
        let mut extra = Vec::new();
        for (k, pv) in o {
            let mut known = false;
            if let Some(ps) = props.and_then(|p| p.get(k)) {
                known = true;
                check(root, ps, pv, &format!("{loc}/{}", escape_ptr(k)), errs);
            }
            if let Some(pp) = pprops {
                for (pat, ps) in pp {
                    if regex::Regex::new(pat).is_ok_and(|re| re.is_match(k)) {
                        known = true;
                        check(root, ps, pv, &format!("{loc}/{}", escape_ptr(k)), errs);
                    }
                }
            }
            if !known {
                match s.get("additionalProperties") {
                    Some(J::Bool(false)) => extra.push(format!("'{k}'")),
                    Some(ap @ J::Object(_)) => {
                        check(root, ap, pv, &format!("{loc}/{}", escape_ptr(k)), errs)
                    }
                    _ => {}
                }
            }
        }
        if !extra.is_empty() {
            errs.push((
                loc.to_string(),
                format!("additional properties {} not allowed", extra.join(", ")),
            ));
        }
    }
    if let Some(J::Array(all)) = s.get("allOf") {
        for sub in all {
            check(root, sub, v, loc, errs);
        }
    }
    let passes = |sub: &J| {
        let mut e = Vec::new();
        check(root, sub, v, loc, &mut e);
        e.is_empty()
    };
    if let Some(J::Array(any)) = s.get("anyOf") {
        if !any.iter().any(passes) {
            errs.push((loc.to_string(), "anyOf failed".into()));
        }
    }
    if let Some(J::Array(one)) = s.get("oneOf") {
        let n = one.iter().filter(|x| passes(x)).count();
        if n == 0 {
            errs.push((loc.to_string(), "oneOf failed, none matched".into()));
        } else if n > 1 {
            errs.push((
                loc.to_string(),
                "oneOf failed, more than one matched".into(),
            ));
        }
    }
    if let Some(n) = s.get("not") {
        if passes(n) {
            errs.push((loc.to_string(), "not failed".into()));
        }
    }
    if let Some(cond) = s.get("if") {
        let branch = if passes(cond) {
            s.get("then")
        } else {
            s.get("else")
        };
        if let Some(b) = branch {
            check(root, b, v, loc, errs);
        }
    }
}

fn escape_ptr(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// JSON equality with numbers compared by value (1 == 1.0).
fn json_eq(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
