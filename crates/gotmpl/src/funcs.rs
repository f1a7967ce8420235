//! The function map: Go's builtins, Helm's functions and Sprig's.
//!
//! Argument handling follows Go: functions with typed parameters reject
//! values of other types ("wrong type for value; expected int; got
//! float64"), Sprig's `interface{}` functions coerce the way Sprig does.

use crate::exec::State;
use crate::gofmt;
use crate::value::Value;
use crate::yaml;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::OnceLock;

/// An error returned by a template function.
#[derive(Debug)]
pub enum FnError {
    /// Reported as `error calling NAME: MSG`.
    Call(String),
    /// Reported as is (argument type errors).
    Arg(String),
    /// An error from a nested template execution (`include`, `tpl`).
    Exec(crate::Error),
}

pub(crate) type PlainFn = fn(&[Value]) -> Result<Value, FnError>;
pub(crate) type CtxFn = fn(&mut State<'_>, &[Value]) -> Result<Value, FnError>;

#[derive(Clone, Copy)]
pub(crate) enum Func {
    And,
    Or,
    Plain(PlainFn),
    Ctx(CtxFn),
}

type R = Result<Value, FnError>;

fn call_err<T>(m: impl Into<String>) -> Result<T, FnError> {
    Err(FnError::Call(m.into()))
}

/// A function and its parameter signature (see [`signature`]), looked up
/// once per call.
pub(crate) fn lookup_with_signature(name: &str) -> Option<(Func, Option<&'static [u8]>)> {
    table().get(name).copied()
}

/// FNV-1a: function names are short and trusted, SipHash's cost is not
/// needed for them.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnTable =
    HashMap<&'static str, (Func, Option<&'static [u8]>), std::hash::BuildHasherDefault<Fnv>>;

/// Go parameter types of the functions with typed parameters: `i` int,
/// `s` string, `b` bool, `m` map, `a` anything; a trailing `*` repeats the
/// last one. Go checks these before the call, naming the offending argument.
pub(crate) fn signature(name: &str) -> Option<&'static str> {
    Some(match name {
        "indent" | "nindent" | "trunc" | "repeat" | "wrap" | "abbrev" => "is",
        "printf" => "sa*",
        "trimSuffix" | "trimPrefix" | "trimAll" | "contains" | "hasPrefix" | "hasSuffix"
        | "regexMatch" | "mustRegexMatch" | "regexFind" | "mustRegexFind" | "splitList"
        | "split" | "semverCompare" => "ss",
        "trim" | "upper" | "lower" | "title" | "untitle" | "nospace" | "b64enc" | "b64dec"
        | "b32enc" | "sha256sum" | "sha1sum" | "sha512sum" | "adler32sum" | "fromYaml"
        | "fromYamlArray" | "fromJson" | "fromJsonArray" | "fromToml" | "fail" | "snakecase"
        | "camelcase" | "kebabcase" | "swapcase" | "initials" | "atoi" | "regexQuoteMeta"
        | "semver" => "s",
        "replace"
        | "regexReplaceAll"
        | "mustRegexReplaceAll"
        | "regexReplaceAllLiteral"
        | "mustRegexReplaceAllLiteral" => "sss",
        "regexSplit" | "mustRegexSplit" | "regexFindAll" | "mustRegexFindAll" => "ssi",
        "substr" => "iis",
        "join" | "required" | "kindIs" | "typeIs" | "typeIsLike" | "include" => "sa",
        "tpl" => "sm",
        "ternary" => "aab",
        "until" | "randAlphaNum" | "randAlpha" | "randNumeric" | "randAscii" => "i",
        "untilStep" => "iii",
        "hasKey" | "get" | "unset" => "ms",
        "set" => "msa",
        "pick" | "omit" => "ms*",
        "merge" | "mustMerge" | "mergeOverwrite" | "mustMergeOverwrite" => "mm*",
        "plural" => "ssi",
        "splitn" => "sis",
        "wrapWith" => "iss",
        "lookup" => "ssss",
        "chunk" => "ia",
        _ => return crate::sprig_extra::signature(name),
    })
}

/// Checks one argument against a signature letter; the error text is Go's.
pub(crate) fn check_arg(kind: u8, v: &Value) -> Result<(), String> {
    let (ok, want) = match kind {
        b'i' => (matches!(v, Value::Int(_)), "int"),
        b's' => (matches!(v, Value::String(_)), "string"),
        b'b' => (matches!(v, Value::Bool(_)), "bool"),
        b'm' => (matches!(v, Value::Map(_)), "map[string]interface {}"),
        b't' => (crate::gotime::as_time(v).is_some(), "time.Time"),
        b'l' => (matches!(v, Value::List(_) | Value::Nil), "[]interface {}"),
        b'c' => (
            crate::crypto::as_certificate(v).is_some(),
            "sprig.certificate",
        ),
        _ => (true, ""),
    };
    if ok {
        return Ok(());
    }
    if v.is_nil() {
        // A nil that came out of a map is a nil interface{} value.
        return Err(format!(
            "wrong type for value; expected {want}; got interface {{}}"
        ));
    }
    Err(format!(
        "wrong type for value; expected {want}; got {}",
        v.type_name()
    ))
}

/// Whether `name` is a known function (the parser rejects unknown ones).
pub fn has_function(name: &str) -> bool {
    table().contains_key(name)
}

/// Names of all functions, sorted.
pub fn function_names() -> Vec<&'static str> {
    let mut v: Vec<_> = table().keys().copied().collect();
    v.sort_unstable();
    v
}

// ---- argument helpers ---------------------------------------------------

fn arity(name: &str, args: &[Value], min: usize, max: Option<usize>) -> Result<(), FnError> {
    let n = args.len();
    match max {
        Some(m) if m == min && n != m => Err(FnError::Arg(format!(
            "wrong number of args for {name}: want {m} got {n}"
        ))),
        Some(m) if n > m || n < min => Err(FnError::Arg(format!(
            "wrong number of args for {name}: want {m} got {n}"
        ))),
        None if n < min => Err(FnError::Arg(format!(
            "wrong number of args for {name}: want at least {min} got {n}"
        ))),
        _ => Ok(()),
    }
}

/// A Go `string` parameter.
fn s_arg(v: &Value) -> Result<Rc<str>, FnError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Nil => Err(FnError::Arg("invalid value; expected string".into())),
        other => Err(FnError::Arg(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        ))),
    }
}

/// A Go `int` parameter (untyped integer constants arrive as Int).
fn i_arg(v: &Value) -> Result<i64, FnError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Nil => Err(FnError::Arg("invalid value; expected int".into())),
        other => Err(FnError::Arg(format!(
            "wrong type for value; expected int; got {}",
            other.type_name()
        ))),
    }
}

/// A Go `bool` parameter.
fn b_arg(v: &Value) -> Result<bool, FnError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Nil => Err(FnError::Arg("invalid value; expected bool".into())),
        other => Err(FnError::Arg(format!(
            "wrong type for value; expected bool; got {}",
            other.type_name()
        ))),
    }
}

/// A Go `map[string]interface{}` parameter.
fn m_arg(v: &Value) -> Result<crate::value::MapRef, FnError> {
    match v {
        Value::Map(m) => Ok(m.clone()),
        Value::Nil => Err(FnError::Arg(
            "invalid value; expected map[string]interface {}".into(),
        )),
        other => Err(FnError::Arg(format!(
            "wrong type for value; expected map[string]interface {{}}; got {}",
            other.type_name()
        ))),
    }
}

/// Sprig's `strval`: strings as is, everything else through `%v`.
pub fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => gofmt::sprint_value(other),
    }
}

/// Sprig's `strslice`: a list's non-nil elements as strings.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l.iter().filter(|e| !e.is_nil()).map(strval).collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

/// `cast.ToInt64E`-like conversion Sprig uses for math (`toInt64`).
pub fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => parse_go_int(s).unwrap_or(0),
        _ => 0,
    }
}

fn parse_go_int(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(i);
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        None
    }?;
    Some(if neg { -v } else { v })
}

/// `cast.ToFloat64E`-like conversion.
pub fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn list_of(v: &Value, fname: &str) -> Result<Rc<Vec<Value>>, FnError> {
    match v {
        Value::List(l) => Ok(l.clone()),
        Value::Nil => call_err(format!("cannot {fname} on type <nil>")),
        other => call_err(format!("Cannot {fname} on type {}", other.type_name())),
    }
}

// ---- Go builtins -------------------------------------------------------

fn f_not(a: &[Value]) -> R {
    arity("not", a, 1, Some(1))?;
    Ok(Value::Bool(!a[0].truthy()))
}

fn f_len(a: &[Value]) -> R {
    arity("len", a, 1, Some(1))?;
    match &a[0] {
        Value::String(s) => Ok(Value::Int(s.len() as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        Value::Map(m) => Ok(Value::Int(m.borrow().len() as i64)),
        Value::Nil => call_err("len of nil pointer"),
        other => call_err(format!("len of type {}", other.type_name())),
    }
}

fn f_index(a: &[Value]) -> R {
    arity("index", a, 1, None)?;
    let mut item = a[0].clone();
    for ix in &a[1..] {
        item = match (&item, ix) {
            (Value::Nil, _) => return call_err("index of untyped nil"),
            (Value::List(l), Value::Int(i) | Value::Int64(i)) => {
                if *i < 0 || *i as usize >= l.len() {
                    return call_err(format!("index out of range: {i}"));
                }
                l[*i as usize].clone()
            }
            (Value::List(_), other) => {
                return call_err(format!(
                    "cannot index slice/array with type {}",
                    other.type_name()
                ))
            }
            (Value::String(s), Value::Int(i) | Value::Int64(i)) => {
                if *i < 0 || *i as usize >= s.len() {
                    return call_err(format!("index out of range: {i}"));
                }
                Value::Int(i64::from(s.as_bytes()[*i as usize]))
            }
            (Value::Map(m), Value::String(k)) => {
                m.borrow().get(&**k).cloned().unwrap_or(Value::Nil)
            }
            (Value::Map(_), Value::Nil) => Value::Nil,
            (Value::Map(_), other) => {
                return call_err(format!(
                    "value has type {}; should be string",
                    other.type_name()
                ))
            }
            (other, _) => {
                return call_err(format!("can't index item of type {}", other.type_name()))
            }
        };
    }
    Ok(item)
}

fn f_print(a: &[Value]) -> R {
    Ok(Value::string(gofmt::sprint(a)))
}

fn f_println(a: &[Value]) -> R {
    Ok(Value::string(gofmt::sprintln(a)))
}

fn f_printf(a: &[Value]) -> R {
    arity("printf", a, 1, None)?;
    let f = s_arg(&a[0])?;
    Ok(Value::string(gofmt::sprintf(&f, &a[1..])))
}

#[derive(PartialEq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Invalid,
    Other,
}

fn basic_kind(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) | Value::Int64(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::String(_) => Kind::Str,
        Value::Nil => Kind::Invalid,
        _ => Kind::Other,
    }
}

fn f_eq(a: &[Value]) -> R {
    if a.len() < 2 {
        if a.is_empty() {
            return Err(FnError::Arg(
                "wrong number of args for eq: want at least 1 got 0".into(),
            ));
        }
        return call_err("missing argument for comparison");
    }
    let a1 = &a[0];
    let k1 = basic_kind(a1);
    for b in &a[1..] {
        let k2 = basic_kind(b);
        let truth = if k1 != k2 {
            if !a1.is_nil() && !b.is_nil() {
                return call_err(format!(
                    "incompatible types for comparison: {} and {}",
                    a1.type_name(),
                    b.type_name()
                ));
            }
            false
        } else {
            match (a1, b) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => x == y,
                (Value::Float(x), Value::Float(y)) => x == y,
                (Value::String(x), Value::String(y)) => x == y,
                (Value::Nil, Value::Nil) => true,
                (Value::Map(_), _) | (Value::List(_), _) => {
                    return call_err(format!(
                        "non-comparable type {}: {}",
                        gofmt::sprint_value(a1),
                        a1.type_name()
                    ))
                }
                _ => a1 == b,
            }
        };
        if truth {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn f_ne(a: &[Value]) -> R {
    arity("ne", a, 2, Some(2))?;
    match f_eq(a)? {
        Value::Bool(b) => Ok(Value::Bool(!b)),
        other => Ok(other),
    }
}

fn less(a: &Value, b: &Value) -> Result<bool, FnError> {
    let (k1, k2) = (basic_kind(a), basic_kind(b));
    if matches!(k1, Kind::Invalid | Kind::Other) || matches!(k2, Kind::Invalid | Kind::Other) {
        return call_err("invalid type for comparison");
    }
    if k1 != k2 {
        return call_err(format!(
            "incompatible types for comparison: {} and {}",
            a.type_name(),
            b.type_name()
        ));
    }
    match (a, b) {
        (Value::Int(x) | Value::Int64(x), Value::Int(y) | Value::Int64(y)) => Ok(x < y),
        (Value::Float(x), Value::Float(y)) => Ok(x < y),
        (Value::String(x), Value::String(y)) => Ok(x < y),
        _ => call_err("invalid type for comparison"),
    }
}

fn f_lt(a: &[Value]) -> R {
    arity("lt", a, 2, Some(2))?;
    Ok(Value::Bool(less(&a[0], &a[1])?))
}
fn f_le(a: &[Value]) -> R {
    arity("le", a, 2, Some(2))?;
    let lt = less(&a[0], &a[1])?;
    Ok(Value::Bool(lt || f_eq(a)?.truthy()))
}
fn f_gt(a: &[Value]) -> R {
    arity("gt", a, 2, Some(2))?;
    let lt = less(&a[0], &a[1])?;
    Ok(Value::Bool(!lt && !f_eq(a)?.truthy()))
}
fn f_ge(a: &[Value]) -> R {
    arity("ge", a, 2, Some(2))?;
    Ok(Value::Bool(!less(&a[0], &a[1])?))
}

fn f_html(a: &[Value]) -> R {
    let s = gofmt::sprint(a);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("&#34;"),
            '\'' => o.push_str("&#39;"),
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '\0' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    Ok(Value::string(o))
}

fn f_js(a: &[Value]) -> R {
    let s = gofmt::sprint(a);
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\'' => o.push_str("\\'"),
            '"' => o.push_str("\\\""),
            '<' => o.push_str("\\u003C"),
            '>' => o.push_str("\\u003E"),
            '&' => o.push_str("\\u0026"),
            '=' => o.push_str("\\u003D"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    Ok(Value::string(o))
}

fn query_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            b' ' => o.push('+'),
            b => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

fn f_urlquery(a: &[Value]) -> R {
    Ok(Value::string(query_escape(&gofmt::sprint(a))))
}

fn f_call(a: &[Value]) -> R {
    arity("call", a, 1, None)?;
    call_err(format!(
        "non-function {} of type {}",
        gofmt::sprint_value(&a[0]),
        a[0].type_name()
    ))
}

// ---- Helm ----------------------------------------------------------------

fn f_include(st: &mut State<'_>, a: &[Value]) -> R {
    arity("include", a, 2, Some(2))?;
    let name = s_arg(&a[0])?;
    Ok(Value::string(st.exec_named(&name, &a[1])?))
}

fn f_tpl(st: &mut State<'_>, a: &[Value]) -> R {
    arity("tpl", a, 2, Some(2))?;
    let text = s_arg(&a[0])?;
    crate::tpl(st, &text, &a[1])
}

fn f_required(a: &[Value]) -> R {
    arity("required", a, 2, Some(2))?;
    let warn = s_arg(&a[0])?;
    match &a[1] {
        Value::Nil => call_err(warn.to_string()),
        Value::String(s) if s.is_empty() => call_err(warn.to_string()),
        v => Ok(v.clone()),
    }
}

fn f_fail(a: &[Value]) -> R {
    arity("fail", a, 1, Some(1))?;
    call_err(s_arg(&a[0])?.to_string())
}

fn f_to_yaml(a: &[Value]) -> R {
    arity("toYaml", a, 1, Some(1))?;
    Ok(Value::string(yaml::to_yaml(&a[0])))
}

fn f_to_yaml_pretty(a: &[Value]) -> R {
    arity("toYamlPretty", a, 1, Some(1))?;
    Ok(Value::string(yaml::to_yaml(&a[0])))
}

fn error_map(msg: String) -> Value {
    let mut m = BTreeMap::new();
    m.insert("Error".to_string(), Value::string(msg));
    Value::map(m)
}

/// `from_yaml_str_go` with a small per-thread memo: charts parse the same
/// `include` output with `fromYaml` for every resource. Hits return a deep
/// copy (maps are shared by reference), so cached values stay pristine.
fn from_yaml_cached(s: &str) -> Result<Value, String> {
    use std::cell::RefCell;
    const MAX_LEN: usize = 4096;
    const MAX_ENTRIES: usize = 256;
    thread_local! {
        static CACHE: RefCell<HashMap<String, Result<Value, String>>> = RefCell::new(HashMap::new());
    }
    if s.len() > MAX_LEN {
        return yaml::from_yaml_str_go(s);
    }
    if let Some(hit) = CACHE.with(|c| {
        c.borrow()
            .get(s)
            .map(|r| r.as_ref().map(Value::deep_copy).map_err(Clone::clone))
    }) {
        return hit;
    }
    let parsed = yaml::from_yaml_str_go(s);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.insert(
            s.to_string(),
            parsed.as_ref().map(Value::deep_copy).map_err(Clone::clone),
        );
    });
    parsed
}

fn f_from_yaml(a: &[Value]) -> R {
    arity("fromYaml", a, 1, Some(1))?;
    let s = s_arg(&a[0])?;
    Ok(match from_yaml_cached(&s) {
        Ok(Value::Map(m)) => Value::Map(m),
        Ok(Value::Nil) => Value::empty_map(),
        Ok(_) => error_map(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal non-object into Go value of type map[string]interface {}".into(),
        ),
        Err(e) => error_map(format!("error converting YAML to JSON: {e}")),
    })
}

fn f_from_yaml_array(a: &[Value]) -> R {
    arity("fromYamlArray", a, 1, Some(1))?;
    let s = s_arg(&a[0])?;
    Ok(match from_yaml_cached(&s) {
        Ok(Value::List(l)) => Value::List(l),
        Ok(Value::Nil) => Value::list(Vec::new()),
        Ok(_) => Value::list(vec![Value::str(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal object into Go value of type []interface {}",
        )]),
        Err(e) => Value::list(vec![Value::string(format!("error converting YAML to JSON: {e}"))]),
    })
}

/// Go's encoding/json encoding (HTML-escaped, sorted keys, Go float format).
pub fn to_json(v: &Value, out: &mut String, escape_html: bool) {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) | Value::Int64(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&json_float(*f)),
        Value::String(s) => json_string(s, out, escape_html),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                to_json(e, out, escape_html);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out, escape_html);
                out.push(':');
                to_json(e, out, escape_html);
            }
            out.push('}');
        }
        Value::Object(o) => to_json(&o.to_data(), out, escape_html),
    }
}

fn json_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = gofmt::format_float_e_shortest(f);
        // Go cleans e-09 to e-9.
        if let Some(pos) = s.find("e-0") {
            return format!("{}e-{}", &s[..pos], &s[pos + 3..]);
        }
        if let Some(pos) = s.find("e+0") {
            return format!("{}e+{}", &s[..pos], &s[pos + 3..]);
        }
        return s;
    }
    gofmt::format_float_f_shortest(f)
}

fn json_string(s: &str, out: &mut String, escape_html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if escape_html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_indent(v: &Value, out: &mut String, depth: usize, escape_html: bool) {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', d * 2));
    };
    match v {
        Value::List(l) if !l.is_empty() => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                json_indent(e, out, depth + 1, escape_html);
            }
            pad(out, depth);
            out.push(']');
        }
        Value::Map(m) if !m.borrow().is_empty() => {
            out.push('{');
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                json_string(k, out, escape_html);
                out.push_str(": ");
                json_indent(e, out, depth + 1, escape_html);
            }
            pad(out, depth);
            out.push('}');
        }
        Value::Object(o) => json_indent(&o.to_data(), out, depth, escape_html),
        other => to_json(other, out, escape_html),
    }
}

fn f_to_json(a: &[Value]) -> R {
    arity("toJson", a, 1, Some(1))?;
    let mut s = String::new();
    to_json(&a[0], &mut s, true);
    Ok(Value::string(s))
}

fn f_to_raw_json(a: &[Value]) -> R {
    arity("toRawJson", a, 1, Some(1))?;
    let mut s = String::new();
    to_json(&a[0], &mut s, false);
    Ok(Value::string(s))
}

fn f_to_pretty_json(a: &[Value]) -> R {
    arity("toPrettyJson", a, 1, Some(1))?;
    let mut s = String::new();
    json_indent(&a[0], &mut s, 0, true);
    Ok(Value::string(s))
}

fn f_from_json(a: &[Value]) -> R {
    arity("fromJson", a, 1, Some(1))?;
    let s = s_arg(&a[0])?;
    Ok(match serde_json::from_str::<serde_json::Value>(&s) {
        Ok(serde_json::Value::Object(o)) => Value::from_json(&serde_json::Value::Object(o)),
        Ok(serde_json::Value::Null) => Value::empty_map(),
        Ok(_) => error_map(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}"
                .into(),
        ),
        Err(e) => error_map(e.to_string()),
    })
}

fn f_from_json_array(a: &[Value]) -> R {
    arity("fromJsonArray", a, 1, Some(1))?;
    let s = s_arg(&a[0])?;
    Ok(match serde_json::from_str::<serde_json::Value>(&s) {
        Ok(v @ serde_json::Value::Array(_)) => Value::from_json(&v),
        Ok(_) => Value::list(vec![Value::str(
            "json: cannot unmarshal into Go value of type []interface {}",
        )]),
        Err(e) => Value::list(vec![Value::string(e.to_string())]),
    })
}

/// Helm's `fromToml` (BurntSushi/toml into a `map[string]interface{}`):
/// integers are `int64`, floats `float64`, date-times `time.Time` (local
/// ones in the zones "datetime-local", "date-local" and "time-local"); a
/// parse error comes back as the map's `Error` key.
fn f_from_toml(a: &[Value]) -> R {
    arity("fromToml", a, 1, Some(1))?;
    let s = s_arg(&a[0])?;
    Ok(match toml::from_str::<toml::Table>(&s) {
        Ok(t) => toml_table_value(t),
        Err(e) => {
            let line = e
                .span()
                .map_or(1, |sp| s[..sp.start.min(s.len())].matches('\n').count() + 1);
            let msg = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let msg = if msg.is_empty() {
                "invalid TOML".into()
            } else {
                msg
            };
            error_map(format!("toml: line {line}: {msg}"))
        }
    })
}

fn toml_table_value(t: toml::Table) -> Value {
    Value::map(t.into_iter().map(|(k, v)| (k, toml_value(v))).collect())
}

fn toml_value(v: toml::Value) -> Value {
    use toml::Value as T;
    match v {
        T::String(s) => Value::string(s),
        T::Integer(i) => Value::Int64(i),
        T::Float(f) => Value::Float(f),
        T::Boolean(b) => Value::Bool(b),
        T::Array(l) => Value::list(l.into_iter().map(toml_value).collect()),
        T::Table(t) => toml_table_value(t),
        T::Datetime(d) => {
            let (y, mo, day) = d.date.map_or((0, 1, 1), |x| {
                (i64::from(x.year), u32::from(x.month), u32::from(x.day))
            });
            let (h, mi, sec, ns) = d.time.map_or((0, 0, 0, 0), |x| {
                (
                    u32::from(x.hour),
                    u32::from(x.minute),
                    u32::from(x.second),
                    x.nanosecond,
                )
            });
            let (name, off) = match (d.offset, d.date, d.time) {
                (Some(toml::value::Offset::Z), ..) => ("UTC", 0),
                (Some(toml::value::Offset::Custom { minutes }), ..) => {
                    ("", i32::from(minutes) * 60)
                }
                (None, Some(_), Some(_)) => ("datetime-local", 0),
                (None, Some(_), None) => ("date-local", 0),
                (None, None, _) => ("time-local", 0),
            };
            let t = crate::gotime::Time::fixed_date(y, mo, day, h, mi, sec, ns, name, off);
            let t = if name == "UTC" {
                t.in_loc(crate::gotime::Loc::Utc)
            } else {
                t
            };
            Value::Object(Rc::new(t))
        }
    }
}

fn f_to_toml(a: &[Value]) -> R {
    arity("toToml", a, 1, Some(1))?;
    let mut out = String::new();
    if let Value::Map(m) = &a[0] {
        toml_table(&m.borrow(), &[], &mut out);
    }
    Ok(Value::string(out))
}

fn toml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => gofmt::go_quote(s),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", *f as i64)
            } else {
                gofmt::format_float_g_shortest(*f)
            }
        }
        Value::List(l) => format!(
            "[{}]",
            l.iter().map(toml_scalar).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(m) => format!(
            "{{{}}}",
            m.borrow()
                .iter()
                .filter(|(_, v)| !v.is_nil())
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_scalar(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => gofmt::sprint_value(other),
    }
}

/// A TOML key, bare when it can be (BurntSushi/toml's `maybeQuoted`).
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        k.to_string()
    } else {
        gofmt::go_quote(k)
    }
}

fn is_table_array(v: &Value) -> bool {
    matches!(v, Value::List(l) if !l.is_empty() && l.iter().all(|e| matches!(e, Value::Map(_))))
}

/// BurntSushi/toml's encoder: plain keys first, then tables and arrays of
/// tables, each level indented two spaces, a blank line before top-level
/// tables and before every `[[array]]` element.
fn toml_table(m: &BTreeMap<String, Value>, path: &[String], out: &mut String) {
    let pad = "  ".repeat(path.len());
    for (k, v) in m {
        if !matches!(v, Value::Map(_)) && !v.is_nil() && !is_table_array(v) {
            out.push_str(&format!(
                "{pad}{} = {}
",
                toml_key(k),
                toml_scalar(v)
            ));
        }
    }
    for (k, v) in m {
        let mut sub_path = path.to_vec();
        sub_path.push(toml_key(k));
        let name = sub_path.join(".");
        match v {
            Value::Map(sub) => {
                if path.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("{pad}[{name}]\n"));
                toml_table(&sub.borrow(), &sub_path, out);
            }
            Value::List(l) if is_table_array(v) => {
                for e in l.iter() {
                    if let Value::Map(sub) = e {
                        out.push_str(&format!("\n{pad}[[{name}]]\n"));
                        toml_table(&sub.borrow(), &sub_path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn f_lookup(a: &[Value]) -> R {
    arity("lookup", a, 4, Some(4))?;
    for v in a {
        s_arg(v)?;
    }
    Ok(Value::empty_map())
}

// ---- Sprig: strings --------------------------------------------------------

fn f_indent(a: &[Value]) -> R {
    arity("indent", a, 2, Some(2))?;
    let n = i_arg(&a[0])?;
    let s = s_arg(&a[1])?;
    Ok(Value::string(indent(&s, n)))
}

fn indent(s: &str, n: i64) -> String {
    let mut out = String::with_capacity(s.len() + (n.max(0) as usize) * 4);
    push_indented(&mut out, s, n);
    out
}

/// Appends `s` with `n` spaces before it and after every newline.
fn push_indented(out: &mut String, s: &str, n: i64) {
    let n = n.max(0) as usize;
    let mut lines = s.split('\n');
    if let Some(first) = lines.next() {
        out.extend(std::iter::repeat_n(' ', n));
        out.push_str(first);
    }
    for line in lines {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', n));
        out.push_str(line);
    }
}

fn f_nindent(a: &[Value]) -> R {
    arity("nindent", a, 2, Some(2))?;
    let n = i_arg(&a[0])?;
    let s = s_arg(&a[1])?;
    let mut out = String::with_capacity(s.len() + 1 + (n.max(0) as usize) * 8);
    out.push('\n');
    push_indented(&mut out, &s, n);
    Ok(Value::string(out))
}

fn f_quote(a: &[Value]) -> R {
    if let [Value::String(s)] = a {
        return Ok(Value::string(gofmt::go_quote(s)));
    }
    let parts: Vec<String> = a
        .iter()
        .filter(|v| !v.is_nil())
        .map(|v| gofmt::go_quote(&strval(v)))
        .collect();
    Ok(Value::string(parts.join(" ")))
}

fn f_squote(a: &[Value]) -> R {
    let parts: Vec<String> = a
        .iter()
        .filter(|v| !v.is_nil())
        .map(|v| format!("'{}'", strval(v)))
        .collect();
    Ok(Value::string(parts.join(" ")))
}

fn f_default(a: &[Value]) -> R {
    arity("default", a, 1, None)?;
    if a.len() < 2 || !a[1].truthy() {
        return Ok(a[0].clone());
    }
    Ok(a[1].clone())
}

fn f_empty(a: &[Value]) -> R {
    arity("empty", a, 1, Some(1))?;
    Ok(Value::Bool(!a[0].truthy()))
}

fn f_coalesce(a: &[Value]) -> R {
    Ok(a.iter().find(|v| v.truthy()).cloned().unwrap_or(Value::Nil))
}

fn f_all(a: &[Value]) -> R {
    Ok(Value::Bool(a.iter().all(Value::truthy)))
}

fn f_any(a: &[Value]) -> R {
    Ok(Value::Bool(a.iter().any(Value::truthy)))
}

fn f_ternary(a: &[Value]) -> R {
    arity("ternary", a, 3, Some(3))?;
    Ok(if b_arg(&a[2])? {
        a[0].clone()
    } else {
        a[1].clone()
    })
}

fn f_to_string(a: &[Value]) -> R {
    arity("toString", a, 1, Some(1))?;
    Ok(Value::string(strval(&a[0])))
}

fn f_trunc(a: &[Value]) -> R {
    arity("trunc", a, 2, Some(2))?;
    let n = i_arg(&a[0])?;
    let s = s_arg(&a[1])?;
    let len = s.len() as i64;
    if (n >= 0 && len <= n) || (n < 0 && len + n <= 0) {
        // Nothing to cut: the same string.
        return Ok(a[1].clone());
    }
    // Sprig slices bytes: negative counts keep the tail.
    let out = if n < 0 && len + n > 0 {
        s.get((len + n) as usize..).unwrap_or(&s).to_string()
    } else if n >= 0 && len > n {
        s.get(..n as usize).unwrap_or(&s).to_string()
    } else {
        s.to_string()
    };
    Ok(Value::string(out))
}

fn str1(name: &str, a: &[Value], f: impl Fn(&str) -> String) -> R {
    arity(name, a, 1, Some(1))?;
    Ok(Value::string(f(&s_arg(&a[0])?)))
}

fn f_trim(a: &[Value]) -> R {
    str1("trim", a, |s| {
        s.trim_matches(|c: char| c.is_whitespace()).to_string()
    })
}
fn f_upper(a: &[Value]) -> R {
    str1("upper", a, |s| s.to_uppercase())
}
fn f_lower(a: &[Value]) -> R {
    str1("lower", a, |s| s.to_lowercase())
}
fn f_title(a: &[Value]) -> R {
    str1("title", a, |s| {
        let mut out = String::with_capacity(s.len());
        let mut prev_letter = false;
        for c in s.chars() {
            if !prev_letter {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
        }
        out
    })
}
fn f_untitle(a: &[Value]) -> R {
    str1("untitle", a, |s| {
        let mut out = String::with_capacity(s.len());
        let mut prev_space = true;
        for c in s.chars() {
            if prev_space {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
            prev_space = c.is_whitespace();
        }
        out
    })
}

fn f_trim_suffix(a: &[Value]) -> R {
    arity("trimSuffix", a, 2, Some(2))?;
    let (suf, s) = (s_arg(&a[0])?, s_arg(&a[1])?);
    match s.strip_suffix(&*suf) {
        Some(t) => Ok(Value::str(t)),
        None => Ok(a[1].clone()),
    }
}
fn f_trim_prefix(a: &[Value]) -> R {
    arity("trimPrefix", a, 2, Some(2))?;
    let (pre, s) = (s_arg(&a[0])?, s_arg(&a[1])?);
    Ok(Value::str(s.strip_prefix(&*pre).unwrap_or(&s)))
}
fn f_trim_all(a: &[Value]) -> R {
    arity("trimAll", a, 2, Some(2))?;
    let (cut, s) = (s_arg(&a[0])?, s_arg(&a[1])?);
    Ok(Value::str(s.trim_matches(|c| cut.contains(c))))
}
fn f_contains(a: &[Value]) -> R {
    arity("contains", a, 2, Some(2))?;
    Ok(Value::Bool(s_arg(&a[1])?.contains(&*s_arg(&a[0])?)))
}
fn f_has_prefix(a: &[Value]) -> R {
    arity("hasPrefix", a, 2, Some(2))?;
    Ok(Value::Bool(s_arg(&a[1])?.starts_with(&*s_arg(&a[0])?)))
}
fn f_has_suffix(a: &[Value]) -> R {
    arity("hasSuffix", a, 2, Some(2))?;
    Ok(Value::Bool(s_arg(&a[1])?.ends_with(&*s_arg(&a[0])?)))
}
fn f_replace(a: &[Value]) -> R {
    arity("replace", a, 3, Some(3))?;
    let (old, new, s) = (s_arg(&a[0])?, s_arg(&a[1])?, s_arg(&a[2])?);
    if old.is_empty() {
        // Go's strings.Replace with empty old inserts between every rune.
        let mut out = String::from(&*new);
        for c in s.chars() {
            out.push(c);
            out.push_str(&new);
        }
        return Ok(Value::string(out));
    }
    Ok(Value::string(s.replace(&*old, &new)))
}
fn f_repeat(a: &[Value]) -> R {
    arity("repeat", a, 2, Some(2))?;
    let n = i_arg(&a[0])?;
    let s = s_arg(&a[1])?;
    if n < 0 {
        return call_err("strings: negative Repeat count");
    }
    Ok(Value::string(s.repeat(n as usize)))
}
fn f_substr(a: &[Value]) -> R {
    arity("substr", a, 3, Some(3))?;
    let (start, end, s) = (i_arg(&a[0])?, i_arg(&a[1])?, s_arg(&a[2])?);
    let len = s.len() as i64;
    let out = if start < 0 {
        s.get(..end.clamp(0, len) as usize).unwrap_or("")
    } else if end < 0 || end > len {
        s.get(start.min(len) as usize..).unwrap_or("")
    } else {
        s.get(start as usize..end.max(start) as usize).unwrap_or("")
    };
    Ok(Value::str(out))
}
fn f_nospace(a: &[Value]) -> R {
    str1("nospace", a, |s| {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    })
}
fn f_initials(a: &[Value]) -> R {
    str1("initials", a, |s| {
        s.split_whitespace()
            .filter_map(|w| w.chars().next())
            .collect()
    })
}
fn f_snakecase(a: &[Value]) -> R {
    str1("snakecase", a, |s| {
        let mut out = String::new();
        let chars: Vec<char> = s.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if c.is_uppercase() {
                if i > 0
                    && (chars[i - 1].is_lowercase()
                        || chars[i - 1].is_ascii_digit()
                        || (i + 1 < chars.len()
                            && chars[i + 1].is_lowercase()
                            && chars[i - 1].is_uppercase()))
                    && !out.ends_with('_')
                {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
            } else if *c == ' ' || *c == '-' {
                out.push('_');
            } else {
                out.push(*c);
            }
        }
        out
    })
}
fn f_camelcase(a: &[Value]) -> R {
    str1("camelcase", a, |s| {
        s.split(['_', ' ', '-'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                    None => String::new(),
                }
            })
            .collect()
    })
}
fn f_kebabcase(a: &[Value]) -> R {
    let s = f_snakecase(a)?;
    Ok(Value::string(strval(&s).replace('_', "-")))
}
fn f_swapcase(a: &[Value]) -> R {
    str1("swapcase", a, |s| {
        s.chars()
            .map(|c| {
                if c.is_uppercase() {
                    c.to_lowercase().collect::<String>()
                } else {
                    c.to_uppercase().collect::<String>()
                }
            })
            .collect()
    })
}
fn f_wrap(a: &[Value]) -> R {
    arity("wrap", a, 2, Some(2))?;
    let n = i_arg(&a[0])?.max(1) as usize;
    Ok(Value::string(wrap(&s_arg(&a[1])?, n, "\n")))
}
fn f_wrap_with(a: &[Value]) -> R {
    arity("wrapWith", a, 3, Some(3))?;
    let n = i_arg(&a[0])?.max(1) as usize;
    Ok(Value::string(wrap(&s_arg(&a[2])?, n, &s_arg(&a[1])?)))
}
fn wrap(s: &str, n: usize, nl: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for (i, w) in s.split(' ').enumerate() {
        if i > 0 {
            if line + 1 + w.len() > n {
                out.push_str(nl);
                line = 0;
            } else {
                out.push(' ');
                line += 1;
            }
        }
        out.push_str(w);
        line += w.len();
    }
    out
}
fn f_abbrev(a: &[Value]) -> R {
    arity("abbrev", a, 2, Some(2))?;
    let n = i_arg(&a[0])?;
    let s = s_arg(&a[1])?;
    if n < 4 || s.len() as i64 <= n {
        return Ok(Value::String(s));
    }
    // Byte-based like Sprig, but never split a UTF-8 sequence.
    let cut = s.get(..(n - 3) as usize).unwrap_or(&s);
    Ok(Value::string(format!("{cut}...")))
}
fn f_plural(a: &[Value]) -> R {
    arity("plural", a, 3, Some(3))?;
    let (one, many) = (s_arg(&a[0])?, s_arg(&a[1])?);
    Ok(Value::String(if i_arg(&a[2])? == 1 { one } else { many }))
}
fn f_cat(a: &[Value]) -> R {
    let parts: Vec<String> = a.iter().filter(|v| !v.is_nil()).map(strval).collect();
    Ok(Value::string(parts.join(" ")))
}
fn f_join(a: &[Value]) -> R {
    arity("join", a, 2, Some(2))?;
    let sep = s_arg(&a[0])?;
    Ok(Value::string(strslice(&a[1]).join(&sep)))
}
fn f_split_list(a: &[Value]) -> R {
    arity("splitList", a, 2, Some(2))?;
    let (sep, s) = (s_arg(&a[0])?, s_arg(&a[1])?);
    Ok(Value::list(
        go_split(&s, &sep).into_iter().map(Value::str).collect(),
    ))
}
fn go_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    if sep.is_empty() {
        let mut v = Vec::new();
        let mut idx: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
        idx.push(s.len());
        for w in idx.windows(2) {
            v.push(&s[w[0]..w[1]]);
        }
        return v;
    }
    s.split(sep).collect()
}
fn f_split(a: &[Value]) -> R {
    arity("split", a, 2, Some(2))?;
    let (sep, s) = (s_arg(&a[0])?, s_arg(&a[1])?);
    let mut m = BTreeMap::new();
    for (i, p) in go_split(&s, &sep).into_iter().enumerate() {
        m.insert(format!("_{i}"), Value::str(p));
    }
    Ok(Value::map(m))
}
fn f_splitn(a: &[Value]) -> R {
    arity("splitn", a, 3, Some(3))?;
    let (sep, n, s) = (s_arg(&a[0])?, i_arg(&a[1])?, s_arg(&a[2])?);
    let mut m = BTreeMap::new();
    let parts: Vec<&str> = if n < 0 {
        s.split(&*sep).collect()
    } else {
        s.splitn(n as usize, &*sep).collect()
    };
    for (i, p) in parts.into_iter().enumerate() {
        m.insert(format!("_{i}"), Value::str(p));
    }
    Ok(Value::map(m))
}
fn f_to_strings(a: &[Value]) -> R {
    arity("toStrings", a, 1, Some(1))?;
    Ok(Value::list(
        strslice(&a[0]).into_iter().map(Value::string).collect(),
    ))
}
fn f_b64enc(a: &[Value]) -> R {
    arity("b64enc", a, 1, Some(1))?;
    Ok(Value::string(crate::encoding::b64_encode(
        s_arg(&a[0])?.as_bytes(),
    )))
}
fn f_b64dec(a: &[Value]) -> R {
    arity("b64dec", a, 1, Some(1))?;
    Ok(Value::string(
        match crate::encoding::b64_decode(&s_arg(&a[0])?) {
            Some(b) => String::from_utf8_lossy(&b).into_owned(),
            None => "illegal base64 data at input byte 0".into(),
        },
    ))
}
fn f_b32enc(a: &[Value]) -> R {
    arity("b32enc", a, 1, Some(1))?;
    Ok(Value::string(crate::encoding::b32_encode(
        s_arg(&a[0])?.as_bytes(),
    )))
}
fn f_sha256sum(a: &[Value]) -> R {
    use sha2::Digest;
    arity("sha256sum", a, 1, Some(1))?;
    Ok(Value::string(hex::encode(sha2::Sha256::digest(
        s_arg(&a[0])?.as_bytes(),
    ))))
}
fn f_sha512sum(a: &[Value]) -> R {
    use sha2::Digest;
    arity("sha512sum", a, 1, Some(1))?;
    Ok(Value::string(hex::encode(sha2::Sha512::digest(
        s_arg(&a[0])?.as_bytes(),
    ))))
}
fn f_sha1sum(a: &[Value]) -> R {
    arity("sha1sum", a, 1, Some(1))?;
    Ok(Value::string(hex::encode(crate::encoding::sha1(
        s_arg(&a[0])?.as_bytes(),
    ))))
}
fn f_adler32sum(a: &[Value]) -> R {
    arity("adler32sum", a, 1, Some(1))?;
    let s = s_arg(&a[0])?;
    let (mut x, mut y) = (1u32, 0u32);
    for b in s.bytes() {
        x = (x + u32::from(b)) % 65521;
        y = (y + x) % 65521;
    }
    Ok(Value::string(((y << 16) | x).to_string()))
}

fn f_rand_alpha_num(a: &[Value]) -> R {
    rand_from(
        a,
        "randAlphaNum",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
}
fn f_rand_alpha(a: &[Value]) -> R {
    rand_from(
        a,
        "randAlpha",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    )
}
fn f_rand_numeric(a: &[Value]) -> R {
    rand_from(a, "randNumeric", b"0123456789")
}
fn f_rand_ascii(a: &[Value]) -> R {
    let chars: Vec<u8> = (32u8..127).collect();
    rand_from(a, "randAscii", &chars)
}
fn rand_from(a: &[Value], name: &str, alphabet: &[u8]) -> R {
    arity(name, a, 1, Some(1))?;
    let n = i_arg(&a[0])?.max(0) as usize;
    let mut out = String::with_capacity(n);
    // A cryptographic source: charts make passwords with these.
    let random = crate::crypto::random_bytes(n * 4);
    for c in random.chunks(4) {
        let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        out.push(alphabet[(r as usize) % alphabet.len()] as char);
    }
    Ok(Value::string(out))
}
fn f_uuidv4(_a: &[Value]) -> R {
    let mut b = [0u8; 16];
    b.copy_from_slice(&crate::crypto::random_bytes(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(Value::string(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )))
}

// ---- Sprig: regex ---------------------------------------------------------

fn re(pat: &str) -> Result<regex::Regex, FnError> {
    regex::Regex::new(&go_braces(pat))
        .map_err(|e| FnError::Call(format!("error parsing regexp: {e}")))
}

/// Go's regexp (RE2) reads a `{` that does not start a repetition `{n}`,
/// `{n,}` or `{n,m}` as a literal brace, and any other `}` too (as in
/// `{(v[0-9])*[^}]*}}$`); Rust's parser rejects them, so they are escaped.
fn go_braces(pat: &str) -> std::borrow::Cow<'_, str> {
    if !pat.contains(['{', '}']) {
        return std::borrow::Cow::Borrowed(pat);
    }
    let b = pat.as_bytes();
    // The length of a repetition `{n}`, `{n,}` or `{n,m}` at `i`, if any.
    let repeat_len = |i: usize| -> Option<usize> {
        let mut j = i + 1;
        let digits = |j: &mut usize| {
            let s = *j;
            while *j < b.len() && b[*j].is_ascii_digit() {
                *j += 1;
            }
            *j > s
        };
        if !digits(&mut j) {
            return None;
        }
        if b.get(j) == Some(&b',') {
            j += 1;
            digits(&mut j);
        }
        (b.get(j) == Some(&b'}')).then_some(j + 1 - i)
    };
    let mut out = String::with_capacity(pat.len() + 4);
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => {
                let n = pat[i + 1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&pat[i..i + 1 + n]);
                i += 1 + n;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                // A `]` (after an optional `^`) first in a class is literal.
                if b.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    out.push(']');
                    i += 1;
                }
                continue;
            }
            b']' if in_class => in_class = false,
            b'{' if !in_class => {
                if let Some(n) = repeat_len(i) {
                    out.push_str(&pat[i..i + n]);
                    i += n;
                    continue;
                }
                out.push_str("\\{");
                i += 1;
                continue;
            }
            b'}' if !in_class => {
                out.push_str("\\}");
                i += 1;
                continue;
            }
            _ => {}
        }
        let n = pat[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pat[i..i + n]);
        i += n;
    }
    std::borrow::Cow::Owned(out)
}
fn f_regex_match(a: &[Value]) -> R {
    arity("regexMatch", a, 2, Some(2))?;
    Ok(Value::Bool(re(&s_arg(&a[0])?)?.is_match(&s_arg(&a[1])?)))
}
fn f_regex_find(a: &[Value]) -> R {
    arity("regexFind", a, 2, Some(2))?;
    let r = re(&s_arg(&a[0])?)?;
    let s = s_arg(&a[1])?;
    Ok(Value::str(r.find(&s).map(|m| m.as_str()).unwrap_or("")))
}
fn f_regex_find_all(a: &[Value]) -> R {
    arity("regexFindAll", a, 3, Some(3))?;
    let r = re(&s_arg(&a[0])?)?;
    let s = s_arg(&a[1])?;
    let n = i_arg(&a[2])?;
    let it = r.find_iter(&s).map(|m| Value::str(m.as_str()));
    Ok(Value::list(if n < 0 {
        it.collect()
    } else {
        it.take(n as usize).collect()
    }))
}
/// Converts Go's `$1`/`${name}` expansion to the regex crate's syntax
/// (identical except that Go's `$1x` means group `1x`; both read it alike).
fn f_regex_replace_all(a: &[Value]) -> R {
    arity("regexReplaceAll", a, 3, Some(3))?;
    let r = re(&s_arg(&a[0])?)?;
    let (s, rep) = (s_arg(&a[1])?, s_arg(&a[2])?);
    Ok(Value::string(r.replace_all(&s, &*rep).into_owned()))
}
fn f_regex_replace_all_literal(a: &[Value]) -> R {
    arity("regexReplaceAllLiteral", a, 3, Some(3))?;
    let r = re(&s_arg(&a[0])?)?;
    let (s, rep) = (s_arg(&a[1])?, s_arg(&a[2])?);
    Ok(Value::string(
        r.replace_all(&s, regex::NoExpand(&rep)).into_owned(),
    ))
}
fn f_regex_split(a: &[Value]) -> R {
    arity("regexSplit", a, 3, Some(3))?;
    let r = re(&s_arg(&a[0])?)?;
    let s = s_arg(&a[1])?;
    let n = i_arg(&a[2])?;
    let parts: Vec<Value> = if n < 0 {
        r.split(&s).map(Value::str).collect()
    } else {
        r.splitn(&s, n as usize).map(Value::str).collect()
    };
    Ok(Value::list(parts))
}
fn f_regex_quote_meta(a: &[Value]) -> R {
    str1("regexQuoteMeta", a, regex::escape)
}

// ---- Sprig: conversion and math ---------------------------------------------

fn f_int(a: &[Value]) -> R {
    arity("int", a, 1, Some(1))?;
    Ok(Value::Int(to_i64(&a[0])))
}
fn f_int64(a: &[Value]) -> R {
    arity("int64", a, 1, Some(1))?;
    Ok(Value::Int64(to_i64(&a[0])))
}
fn f_float64(a: &[Value]) -> R {
    arity("float64", a, 1, Some(1))?;
    Ok(Value::Float(to_f64(&a[0])))
}
fn f_atoi(a: &[Value]) -> R {
    arity("atoi", a, 1, Some(1))?;
    Ok(Value::Int(s_arg(&a[0])?.trim().parse().unwrap_or(0)))
}
fn f_add(a: &[Value]) -> R {
    Ok(Value::Int64(
        a.iter().map(to_i64).fold(0i64, i64::wrapping_add),
    ))
}
fn f_add1(a: &[Value]) -> R {
    arity("add1", a, 1, Some(1))?;
    Ok(Value::Int64(to_i64(&a[0]).wrapping_add(1)))
}
fn f_sub(a: &[Value]) -> R {
    arity("sub", a, 2, Some(2))?;
    Ok(Value::Int64(to_i64(&a[0]).wrapping_sub(to_i64(&a[1]))))
}
fn f_mul(a: &[Value]) -> R {
    arity("mul", a, 1, None)?;
    Ok(Value::Int64(
        a.iter().map(to_i64).fold(1i64, i64::wrapping_mul),
    ))
}
fn f_div(a: &[Value]) -> R {
    arity("div", a, 2, Some(2))?;
    let d = to_i64(&a[1]);
    if d == 0 {
        return call_err("runtime error: integer divide by zero");
    }
    Ok(Value::Int64(to_i64(&a[0]).wrapping_div(d)))
}
fn f_mod(a: &[Value]) -> R {
    arity("mod", a, 2, Some(2))?;
    let d = to_i64(&a[1]);
    if d == 0 {
        return call_err("runtime error: integer divide by zero");
    }
    Ok(Value::Int64(to_i64(&a[0]).wrapping_rem(d)))
}
fn f_max(a: &[Value]) -> R {
    arity("max", a, 1, None)?;
    Ok(Value::Int64(a.iter().map(to_i64).max().unwrap_or(0)))
}
fn f_min(a: &[Value]) -> R {
    arity("min", a, 1, None)?;
    Ok(Value::Int64(a.iter().map(to_i64).min().unwrap_or(0)))
}
fn f_addf(a: &[Value]) -> R {
    Ok(Value::Float(crate::decimal::fold(
        0.0,
        a,
        crate::decimal::Op::Add,
    )))
}
fn f_add1f(a: &[Value]) -> R {
    arity("add1f", a, 1, Some(1))?;
    Ok(Value::Float(crate::decimal::fold(
        to_f64(&a[0]),
        &[Value::Float(1.0)],
        crate::decimal::Op::Add,
    )))
}
fn f_subf(a: &[Value]) -> R {
    arity("subf", a, 1, None)?;
    Ok(Value::Float(crate::decimal::fold(
        to_f64(&a[0]),
        &a[1..],
        crate::decimal::Op::Sub,
    )))
}
fn f_mulf(a: &[Value]) -> R {
    arity("mulf", a, 1, None)?;
    Ok(Value::Float(crate::decimal::fold(
        1.0,
        a,
        crate::decimal::Op::Mul,
    )))
}
fn f_divf(a: &[Value]) -> R {
    arity("divf", a, 1, None)?;
    Ok(Value::Float(crate::decimal::fold(
        to_f64(&a[0]),
        &a[1..],
        crate::decimal::Op::Div,
    )))
}
fn f_maxf(a: &[Value]) -> R {
    arity("maxf", a, 1, None)?;
    Ok(Value::Float(
        a.iter().map(to_f64).fold(f64::NEG_INFINITY, f64::max),
    ))
}
fn f_minf(a: &[Value]) -> R {
    arity("minf", a, 1, None)?;
    Ok(Value::Float(
        a.iter().map(to_f64).fold(f64::INFINITY, f64::min),
    ))
}
fn f_floor(a: &[Value]) -> R {
    arity("floor", a, 1, Some(1))?;
    Ok(Value::Float(to_f64(&a[0]).floor()))
}
fn f_ceil(a: &[Value]) -> R {
    arity("ceil", a, 1, Some(1))?;
    Ok(Value::Float(to_f64(&a[0]).ceil()))
}
fn f_round(a: &[Value]) -> R {
    arity("round", a, 2, Some(3))?;
    let x = to_f64(&a[0]);
    let p = to_i64(&a[1]);
    let half = if a.len() > 2 { to_f64(&a[2]) } else { 0.5 };
    let pow = 10f64.powi(p as i32);
    let digit = pow * x;
    let (int, frac) = (digit.trunc(), digit.fract());
    let r = if frac >= half { int + 1.0 } else { int };
    Ok(Value::Float(r / pow))
}
fn f_until(a: &[Value]) -> R {
    arity("until", a, 1, Some(1))?;
    let n = i_arg(&a[0])?;
    let step = if n < 0 { -1 } else { 1 };
    untilstep(0, n, step)
}
fn f_until_step(a: &[Value]) -> R {
    arity("untilStep", a, 3, Some(3))?;
    untilstep(i_arg(&a[0])?, i_arg(&a[1])?, i_arg(&a[2])?)
}
fn untilstep(start: i64, stop: i64, step: i64) -> R {
    let mut v = Vec::new();
    if step == 0 {
        return Ok(Value::list(v));
    }
    let mut i = start;
    // Bounded so a template cannot allocate without limit by mistake.
    while ((step > 0 && i < stop) || (step < 0 && i > stop)) && v.len() < 10_000_000 {
        v.push(Value::Int(i));
        i += step;
    }
    Ok(Value::list(v))
}
fn f_seq(a: &[Value]) -> R {
    let n: Vec<i64> = a.iter().map(to_i64).collect();
    let (start, step, end) = match n.as_slice() {
        [e] => (1, 1, *e),
        [s, e] => (*s, if s <= e { 1 } else { -1 }, *e),
        [s, st, e] => (*s, *st, *e),
        _ => return Ok(Value::str("")),
    };
    let mut out = Vec::new();
    if step == 0 || (step > 0 && start > end) || (step < 0 && start < end) {
        return Ok(Value::str(""));
    }
    let mut i = start;
    while (step > 0 && i <= end) || (step < 0 && i >= end) {
        out.push(i.to_string());
        i += step;
    }
    Ok(Value::string(out.join(" ")))
}

// ---- Sprig: type reflection ---------------------------------------------------

fn f_type_of(a: &[Value]) -> R {
    arity("typeOf", a, 1, Some(1))?;
    Ok(Value::string(a[0].type_name()))
}
fn f_kind_of(a: &[Value]) -> R {
    arity("kindOf", a, 1, Some(1))?;
    Ok(Value::str(a[0].kind_name()))
}
fn f_kind_is(a: &[Value]) -> R {
    arity("kindIs", a, 2, Some(2))?;
    Ok(Value::Bool(*s_arg(&a[0])? == *a[1].kind_name()))
}
fn f_type_is(a: &[Value]) -> R {
    arity("typeIs", a, 2, Some(2))?;
    Ok(Value::Bool(*s_arg(&a[0])? == a[1].type_name()))
}
fn f_deep_equal(a: &[Value]) -> R {
    arity("deepEqual", a, 2, Some(2))?;
    Ok(Value::Bool(a[0] == a[1]))
}

// ---- Sprig: dicts ----------------------------------------------------------------

fn f_dict(a: &[Value]) -> R {
    let mut m = BTreeMap::new();
    let mut i = 0;
    while i < a.len() {
        let k = strval(&a[i]);
        let v = a.get(i + 1).cloned().unwrap_or_else(|| Value::str(""));
        m.insert(k, v);
        i += 2;
    }
    Ok(Value::map(m))
}
fn f_has_key(a: &[Value]) -> R {
    arity("hasKey", a, 2, Some(2))?;
    let m = m_arg(&a[0])?;
    let k = s_arg(&a[1])?;
    let r = m.borrow().contains_key(&*k);
    Ok(Value::Bool(r))
}
fn f_get(a: &[Value]) -> R {
    arity("get", a, 2, Some(2))?;
    let m = m_arg(&a[0])?;
    let k = s_arg(&a[1])?;
    let r = m
        .borrow()
        .get(&*k)
        .cloned()
        .unwrap_or_else(|| Value::str(""));
    Ok(r)
}
fn f_set(a: &[Value]) -> R {
    arity("set", a, 3, Some(3))?;
    let m = m_arg(&a[0])?;
    let k = s_arg(&a[1])?;
    m.borrow_mut().insert(k.to_string(), a[2].clone());
    Ok(Value::Map(m))
}
fn f_unset(a: &[Value]) -> R {
    arity("unset", a, 2, Some(2))?;
    let m = m_arg(&a[0])?;
    let k = s_arg(&a[1])?;
    m.borrow_mut().remove(&*k);
    Ok(Value::Map(m))
}
fn f_keys(a: &[Value]) -> R {
    let mut out = Vec::new();
    for d in a {
        let m = m_arg(d)?;
        // Go map iteration order is random; most charts sort afterwards.
        out.extend(m.borrow().keys().map(|k| Value::str(k)));
    }
    Ok(Value::list(out))
}
fn f_values(a: &[Value]) -> R {
    arity("values", a, 1, Some(1))?;
    let m = m_arg(&a[0])?;
    let v: Vec<Value> = m.borrow().values().cloned().collect();
    Ok(Value::list(v))
}
fn f_pick(a: &[Value]) -> R {
    arity("pick", a, 1, None)?;
    let m = m_arg(&a[0])?;
    let src = m.borrow();
    let mut out = BTreeMap::new();
    for k in &a[1..] {
        let k = s_arg(k)?;
        if let Some(v) = src.get(&*k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Ok(Value::map(out))
}
fn f_omit(a: &[Value]) -> R {
    arity("omit", a, 1, None)?;
    let m = m_arg(&a[0])?;
    let mut drop = Vec::new();
    for k in &a[1..] {
        drop.push(s_arg(k)?);
    }
    let out: BTreeMap<String, Value> = m
        .borrow()
        .iter()
        .filter(|(k, _)| !drop.iter().any(|d| **d == ***k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Value::map(out))
}
fn f_pluck(a: &[Value]) -> R {
    arity("pluck", a, 1, None)?;
    let k = s_arg(&a[0])?;
    let mut out = Vec::new();
    for d in &a[1..] {
        if let Some(v) = m_arg(d)?.borrow().get(&*k) {
            out.push(v.clone());
        }
    }
    Ok(Value::list(out))
}
fn f_dig(a: &[Value]) -> R {
    arity("dig", a, 3, None)?;
    let n = a.len();
    let dict = m_arg(&a[n - 1])?;
    let default = &a[n - 2];
    let mut keys = Vec::new();
    for k in &a[..n - 2] {
        keys.push(s_arg(k)?);
    }
    let mut cur = Value::Map(dict);
    for (i, k) in keys.iter().enumerate() {
        let next = match &cur {
            Value::Map(m) => m.borrow().get(&**k).cloned(),
            _ => None,
        };
        match next {
            Some(v) if i + 1 == keys.len() => return Ok(v),
            Some(v @ Value::Map(_)) => cur = v,
            Some(_) => {
                return call_err(format!(
                    "interface conversion: interface {{}} is {}, not map[string]interface {{}}",
                    cur.type_name()
                ))
            }
            None => return Ok(default.clone()),
        }
    }
    Ok(default.clone())
}

/// mergo.Merge semantics: fill keys missing in `dst` (recursively for maps);
/// with `overwrite`, non-empty source values replace destination values.
fn merge_into(dst: &crate::value::MapRef, src: &BTreeMap<String, Value>, overwrite: bool) {
    for (k, sv) in src {
        let existing = dst.borrow().get(k).cloned();
        match existing {
            None => {
                dst.borrow_mut().insert(k.clone(), sv.deep_copy());
            }
            Some(Value::Map(dm)) => {
                if let Value::Map(sm) = sv {
                    if !Rc::ptr_eq(&dm, sm) {
                        let s = sm.borrow().clone();
                        merge_into(&dm, &s, overwrite);
                    }
                } else if overwrite && sv.truthy() {
                    dst.borrow_mut().insert(k.clone(), sv.clone());
                }
            }
            Some(dv) => {
                if (overwrite && sv.truthy())
                    || (!dv.truthy() && !overwrite && sv.truthy() && dv.is_nil())
                {
                    dst.borrow_mut().insert(k.clone(), sv.deep_copy());
                }
            }
        }
    }
}
fn f_merge(a: &[Value]) -> R {
    arity("merge", a, 1, None)?;
    let dst = m_arg(&a[0])?;
    for s in &a[1..] {
        let src = m_arg(s)?.borrow().clone();
        merge_into(&dst, &src, false);
    }
    Ok(Value::Map(dst))
}
fn f_merge_overwrite(a: &[Value]) -> R {
    arity("mergeOverwrite", a, 1, None)?;
    let dst = m_arg(&a[0])?;
    for s in &a[1..] {
        let src = m_arg(s)?.borrow().clone();
        merge_into(&dst, &src, true);
    }
    Ok(Value::Map(dst))
}
fn f_deep_copy(a: &[Value]) -> R {
    arity("deepCopy", a, 1, Some(1))?;
    Ok(a[0].deep_copy())
}

// ---- Sprig: lists -------------------------------------------------------------------

fn f_list(a: &[Value]) -> R {
    Ok(Value::list(a.to_vec()))
}
fn f_append(a: &[Value]) -> R {
    arity("append", a, 2, Some(2))?;
    let l = list_of(&a[0], "append")?;
    let mut v = (*l).clone();
    v.push(a[1].clone());
    Ok(Value::list(v))
}
fn f_prepend(a: &[Value]) -> R {
    arity("prepend", a, 2, Some(2))?;
    let l = list_of(&a[0], "prepend")?;
    let mut v = Vec::with_capacity(l.len() + 1);
    v.push(a[1].clone());
    v.extend(l.iter().cloned());
    Ok(Value::list(v))
}
fn f_concat(a: &[Value]) -> R {
    let mut v = Vec::new();
    for l in a {
        match l {
            Value::List(l) => v.extend(l.iter().cloned()),
            Value::Nil => {}
            other => return call_err(format!("Cannot concat type {} as list", other.type_name())),
        }
    }
    Ok(Value::list(v))
}
fn f_first(a: &[Value]) -> R {
    arity("first", a, 1, Some(1))?;
    let l = list_of(&a[0], "find first")?;
    Ok(l.first().cloned().unwrap_or(Value::Nil))
}
fn f_last(a: &[Value]) -> R {
    arity("last", a, 1, Some(1))?;
    let l = list_of(&a[0], "find last")?;
    Ok(l.last().cloned().unwrap_or(Value::Nil))
}
fn f_rest(a: &[Value]) -> R {
    arity("rest", a, 1, Some(1))?;
    let l = list_of(&a[0], "find rest")?;
    if l.is_empty() {
        return Ok(Value::Nil);
    }
    Ok(Value::list(l[1..].to_vec()))
}
fn f_initial(a: &[Value]) -> R {
    arity("initial", a, 1, Some(1))?;
    let l = list_of(&a[0], "find initial")?;
    if l.is_empty() {
        return Ok(Value::Nil);
    }
    Ok(Value::list(l[..l.len() - 1].to_vec()))
}
fn f_reverse(a: &[Value]) -> R {
    arity("reverse", a, 1, Some(1))?;
    let l = list_of(&a[0], "find reverse")?;
    Ok(Value::list(l.iter().rev().cloned().collect()))
}
fn f_uniq(a: &[Value]) -> R {
    arity("uniq", a, 1, Some(1))?;
    let l = list_of(&a[0], "find uniq")?;
    let mut out: Vec<Value> = Vec::new();
    for e in l.iter() {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(Value::list(out))
}
fn f_compact(a: &[Value]) -> R {
    arity("compact", a, 1, Some(1))?;
    let l = list_of(&a[0], "compact")?;
    Ok(Value::list(
        l.iter().filter(|v| v.truthy()).cloned().collect(),
    ))
}
fn f_without(a: &[Value]) -> R {
    arity("without", a, 1, None)?;
    let l = list_of(&a[0], "find without")?;
    Ok(Value::list(
        l.iter().filter(|v| !a[1..].contains(v)).cloned().collect(),
    ))
}
fn f_has(a: &[Value]) -> R {
    arity("has", a, 2, Some(2))?;
    match &a[1] {
        Value::List(l) => Ok(Value::Bool(l.contains(&a[0]))),
        Value::Nil => Ok(Value::Bool(false)),
        other => call_err(format!("Cannot find has on type {}", other.type_name())),
    }
}
fn f_slice(a: &[Value]) -> R {
    arity("slice", a, 1, None)?;
    match &a[0] {
        Value::List(l) => {
            if l.is_empty() {
                return Ok(Value::Nil);
            }
            let start = a.get(1).map(to_i64).unwrap_or(0);
            let end = a.get(2).map(to_i64).unwrap_or(l.len() as i64);
            if start < 0 || end < start || end as usize > l.len() {
                return call_err(format!(
                    "runtime error: slice bounds out of range [{start}:{end}]"
                ));
            }
            Ok(Value::list(l[start as usize..end as usize].to_vec()))
        }
        Value::String(s) => {
            let start = a.get(1).map(to_i64).unwrap_or(0);
            let end = a.get(2).map(to_i64).unwrap_or(s.len() as i64);
            match s.get(start.max(0) as usize..end.max(0) as usize) {
                Some(x) if start >= 0 && end >= start => Ok(Value::str(x)),
                _ => call_err(format!(
                    "runtime error: slice bounds out of range [{start}:{end}]"
                )),
            }
        }
        other => call_err(format!(
            "list should be type of slice or array but {}",
            other.kind_name()
        )),
    }
}
fn sort_alpha(a: &[Value]) -> R {
    arity("sortAlpha", a, 1, Some(1))?;
    let mut v = strslice(&a[0]);
    v.sort();
    Ok(Value::list(v.into_iter().map(Value::string).collect()))
}
fn f_chunk(a: &[Value]) -> R {
    arity("chunk", a, 2, Some(2))?;
    let n = i_arg(&a[0])?.max(1) as usize;
    let l = list_of(&a[1], "chunk")?;
    Ok(Value::list(
        l.chunks(n).map(|c| Value::list(c.to_vec())).collect(),
    ))
}

// ---- Sprig: semver -------------------------------------------------------------------

fn f_semver_compare(a: &[Value]) -> R {
    arity("semverCompare", a, 2, Some(2))?;
    let c = s_arg(&a[0])?;
    let v = s_arg(&a[1])?;
    crate::semver::semver_compare(&c, &v)
        .map(Value::Bool)
        .map_err(FnError::Call)
}
fn f_semver(a: &[Value]) -> R {
    arity("semver", a, 1, Some(1))?;
    crate::semver::semver_object(&s_arg(&a[0])?).map_err(FnError::Call)
}

// ---- Sprig: misc ------------------------------------------------------------------

fn table() -> &'static FnTable {
    static T: OnceLock<FnTable> = OnceLock::new();
    T.get_or_init(|| {
        let plain: &[(&str, PlainFn)] = &[
            // Go builtins ("slice" is Sprig's, which overrides Go's in Helm).
            ("not", f_not),
            ("len", f_len),
            ("index", f_index),
            ("print", f_print),
            ("printf", f_printf),
            ("println", f_println),
            ("eq", f_eq),
            ("ne", f_ne),
            ("lt", f_lt),
            ("le", f_le),
            ("gt", f_gt),
            ("ge", f_ge),
            ("html", f_html),
            ("js", f_js),
            ("urlquery", f_urlquery),
            ("call", f_call),
            // Helm
            ("required", f_required),
            ("fail", f_fail),
            ("toYaml", f_to_yaml),
            ("toYamlPretty", f_to_yaml_pretty),
            ("mustToYaml", f_to_yaml),
            ("fromYaml", f_from_yaml),
            ("fromYamlArray", f_from_yaml_array),
            ("toJson", f_to_json),
            ("mustToJson", f_to_json),
            ("toRawJson", f_to_raw_json),
            ("mustToRawJson", f_to_raw_json),
            ("toPrettyJson", f_to_pretty_json),
            ("mustToPrettyJson", f_to_pretty_json),
            ("fromJson", f_from_json),
            ("fromJsonArray", f_from_json_array),
            ("toToml", f_to_toml),
            ("fromToml", f_from_toml),
            ("mustToToml", f_to_toml),
            ("lookup", f_lookup),
            // Sprig strings
            ("indent", f_indent),
            ("nindent", f_nindent),
            ("quote", f_quote),
            ("squote", f_squote),
            ("default", f_default),
            ("empty", f_empty),
            ("coalesce", f_coalesce),
            ("all", f_all),
            ("any", f_any),
            ("ternary", f_ternary),
            ("toString", f_to_string),
            ("trunc", f_trunc),
            ("trim", f_trim),
            ("trimAll", f_trim_all),
            ("trimSuffix", f_trim_suffix),
            ("trimPrefix", f_trim_prefix),
            ("upper", f_upper),
            ("lower", f_lower),
            ("title", f_title),
            ("untitle", f_untitle),
            ("contains", f_contains),
            ("hasPrefix", f_has_prefix),
            ("hasSuffix", f_has_suffix),
            ("replace", f_replace),
            ("repeat", f_repeat),
            ("substr", f_substr),
            ("nospace", f_nospace),
            ("initials", f_initials),
            ("snakecase", f_snakecase),
            ("camelcase", f_camelcase),
            ("kebabcase", f_kebabcase),
            ("swapcase", f_swapcase),
            ("wrap", f_wrap),
            ("wrapWith", f_wrap_with),
            ("abbrev", f_abbrev),
            ("plural", f_plural),
            ("cat", f_cat),
            ("join", f_join),
            ("splitList", f_split_list),
            ("split", f_split),
            ("splitn", f_splitn),
            ("toStrings", f_to_strings),
            ("b64enc", f_b64enc),
            ("b64dec", f_b64dec),
            ("b32enc", f_b32enc),
            ("sha256sum", f_sha256sum),
            ("sha512sum", f_sha512sum),
            ("sha1sum", f_sha1sum),
            ("adler32sum", f_adler32sum),
            ("randAlphaNum", f_rand_alpha_num),
            ("randAlpha", f_rand_alpha),
            ("randNumeric", f_rand_numeric),
            ("randAscii", f_rand_ascii),
            ("uuidv4", f_uuidv4),
            ("regexMatch", f_regex_match),
            ("mustRegexMatch", f_regex_match),
            ("regexFind", f_regex_find),
            ("mustRegexFind", f_regex_find),
            ("regexFindAll", f_regex_find_all),
            ("mustRegexFindAll", f_regex_find_all),
            ("regexReplaceAll", f_regex_replace_all),
            ("mustRegexReplaceAll", f_regex_replace_all),
            ("regexReplaceAllLiteral", f_regex_replace_all_literal),
            ("mustRegexReplaceAllLiteral", f_regex_replace_all_literal),
            ("regexSplit", f_regex_split),
            ("mustRegexSplit", f_regex_split),
            ("regexQuoteMeta", f_regex_quote_meta),
            // conversion and math
            ("int", f_int),
            ("int64", f_int64),
            ("float64", f_float64),
            ("atoi", f_atoi),
            ("add", f_add),
            ("add1", f_add1),
            ("sub", f_sub),
            ("mul", f_mul),
            ("div", f_div),
            ("mod", f_mod),
            ("max", f_max),
            ("min", f_min),
            ("biggest", f_max),
            ("addf", f_addf),
            ("add1f", f_add1f),
            ("subf", f_subf),
            ("mulf", f_mulf),
            ("divf", f_divf),
            ("maxf", f_maxf),
            ("minf", f_minf),
            ("floor", f_floor),
            ("ceil", f_ceil),
            ("round", f_round),
            ("until", f_until),
            ("untilStep", f_until_step),
            ("seq", f_seq),
            // reflection
            ("typeOf", f_type_of),
            ("kindOf", f_kind_of),
            ("kindIs", f_kind_is),
            ("typeIs", f_type_is),
            ("typeIsLike", f_type_is),
            ("deepEqual", f_deep_equal),
            // dicts
            ("dict", f_dict),
            ("hasKey", f_has_key),
            ("get", f_get),
            ("set", f_set),
            ("unset", f_unset),
            ("keys", f_keys),
            ("values", f_values),
            ("pick", f_pick),
            ("omit", f_omit),
            ("pluck", f_pluck),
            ("dig", f_dig),
            ("merge", f_merge),
            ("mustMerge", f_merge),
            ("mergeOverwrite", f_merge_overwrite),
            ("mustMergeOverwrite", f_merge_overwrite),
            ("deepCopy", f_deep_copy),
            ("mustDeepCopy", f_deep_copy),
            // lists
            ("list", f_list),
            ("tuple", f_list),
            ("append", f_append),
            ("push", f_append),
            ("mustAppend", f_append),
            ("mustPush", f_append),
            ("prepend", f_prepend),
            ("mustPrepend", f_prepend),
            ("concat", f_concat),
            ("first", f_first),
            ("mustFirst", f_first),
            ("last", f_last),
            ("mustLast", f_last),
            ("rest", f_rest),
            ("mustRest", f_rest),
            ("initial", f_initial),
            ("mustInitial", f_initial),
            ("reverse", f_reverse),
            ("mustReverse", f_reverse),
            ("uniq", f_uniq),
            ("mustUniq", f_uniq),
            ("compact", f_compact),
            ("mustCompact", f_compact),
            ("without", f_without),
            ("mustWithout", f_without),
            ("has", f_has),
            ("mustHas", f_has),
            ("slice", f_slice),
            ("mustSlice", f_slice),
            ("sortAlpha", sort_alpha),
            ("chunk", f_chunk),
            ("mustChunk", f_chunk),
            // semver
            ("semverCompare", f_semver_compare),
            ("semver", f_semver),
            // misc
        ];
        let extra = crate::sprig_extra::functions();
        // Sized once: growing rehashes every name several times.
        let mut m =
            FnTable::with_capacity_and_hasher(plain.len() + extra.len() + 4, Default::default());
        let mut add = |n: &'static str, f: Func| {
            m.insert(n, (f, signature(n).map(str::as_bytes)));
        };
        for (n, f) in plain {
            add(n, Func::Plain(*f));
        }
        add("and", Func::And);
        add("or", Func::Or);
        add("include", Func::Ctx(f_include));
        add("tpl", Func::Ctx(f_tpl));
        for (n, f) in extra {
            add(n, Func::Plain(f));
        }
        m
    })
}
