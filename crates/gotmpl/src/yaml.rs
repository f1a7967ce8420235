//! YAML in and out the way Helm does it.
//!
//! `toYaml` is `sigs.k8s.io/yaml.Marshal`: the value goes through JSON (maps
//! sorted, every number a JSON number) and then go-yaml v2's emitter, whose
//! choices are reproduced here: block style, 2-space indent, sequences not
//! indented under a key, YAML 1.1 quoting (`"yes"`, `"012"`), `'single'`
//! quotes for indicator characters, literal `|` blocks for multi-line text,
//! and folding of long lines past column 80.

use crate::gofmt;
use crate::value::Value;
use std::collections::BTreeMap;

/// `toYaml`: marshals `v` and trims the final newline, as Helm does.
pub fn to_yaml(v: &Value) -> String {
    let mut e = Emitter {
        out: String::new(),
        column: 0,
    };
    e.node(v, 0, Ctx::Top);
    // go-yaml ends the document with a newline that Helm trims again
    // (strings.TrimSuffix(string(data), "\n")), so the buffer is the answer.
    e.out
}

/// Marshals `v` as a full YAML document (with trailing newline).
pub fn to_yaml_document(v: &Value) -> String {
    let mut s = to_yaml(v);
    s.push('\n');
    s
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    MapValue,
    SeqItem,
}

struct Emitter {
    out: String,
    column: usize,
}

const BEST_WIDTH: usize = 80;

impl Emitter {
    fn write(&mut self, s: &str) {
        match s.rfind('\n') {
            Some(nl) => self.column = s[nl + 1..].chars().count(),
            None if s.is_ascii() => self.column += s.len(),
            None => self.column += s.chars().count(),
        }
        self.out.push_str(s);
    }

    fn newline_indent(&mut self, indent: usize) {
        self.out.push('\n');
        self.out.extend(std::iter::repeat_n(' ', indent));
        self.column = indent;
    }

    /// Emits a node whose first line continues the current line.
    /// `indent` is the block indentation of this node's content.
    fn node(&mut self, v: &Value, indent: usize, ctx: Ctx) {
        match v {
            Value::Map(m) => {
                let m = m.borrow();
                if m.is_empty() {
                    self.inline_prefix(ctx);
                    self.write("{}");
                    return;
                }
                self.mapping(&m, indent, ctx);
            }
            Value::List(l) => {
                if l.is_empty() {
                    self.inline_prefix(ctx);
                    self.write("[]");
                    return;
                }
                self.sequence(l, indent, ctx);
            }
            Value::Object(o) => {
                let d = o.to_data();
                self.node(&d, indent, ctx)
            }
            scalar => {
                self.inline_prefix(ctx);
                self.scalar(scalar, indent, false);
            }
        }
    }

    /// For scalars and flow collections after `key:` there is a space.
    fn inline_prefix(&mut self, ctx: Ctx) {
        if ctx == Ctx::MapValue {
            self.write(" ");
        }
    }

    fn mapping(&mut self, m: &BTreeMap<String, Value>, indent: usize, ctx: Ctx) {
        let mut first = true;
        let mut entries: Vec<(&String, &Value)> = m.iter().collect();
        if entries.windows(2).any(|w| !key_less(w[0].0, w[1].0)) {
            entries.sort_by(|a, b| {
                if key_less(a.0, b.0) {
                    std::cmp::Ordering::Less
                } else if key_less(b.0, a.0) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            });
        }
        for (k, v) in entries {
            match (ctx, first) {
                (Ctx::Top, true) => {}
                (Ctx::SeqItem, true) => {}
                (Ctx::MapValue, true) => self.newline_indent(indent),
                _ => self.newline_indent(indent),
            }
            first = false;
            self.string(k, indent, true);
            self.write(":");
            match v {
                Value::Map(sub) if !sub.borrow().is_empty() => {
                    self.node(v, indent + 2, Ctx::MapValue)
                }
                // go-yaml v2 does not indent a sequence under a mapping key.
                Value::List(l) if !l.is_empty() => self.node(v, indent, Ctx::MapValue),
                _ => self.node(v, indent + 2, Ctx::MapValue),
            }
        }
    }

    fn sequence(&mut self, items: &[Value], indent: usize, ctx: Ctx) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 || ctx == Ctx::MapValue {
                self.newline_indent(indent);
            }
            self.write("- ");
            self.node(item, indent + 2, Ctx::SeqItem);
        }
    }

    fn scalar(&mut self, v: &Value, indent: usize, key: bool) {
        match v {
            Value::Nil => self.write("null"),
            Value::Bool(b) => self.write(if *b { "true" } else { "false" }),
            Value::Int(i) | Value::Int64(i) => self.write(&i.to_string()),
            Value::Float(f) => self.write(&yaml_float(*f)),
            Value::String(s) => self.string(s, indent, key),
            other => {
                let s = gofmt::sprint_value(other);
                self.string(&s, indent, key)
            }
        }
    }

    fn string(&mut self, s: &str, indent: usize, key: bool) {
        let a = analyze(s);
        let can_plain = !resolves_non_string(s) && !is_base60_float(s);
        let style = if s.contains('\n') && !key {
            if a.block_allowed {
                Style::Literal
            } else {
                Style::Double
            }
        } else if s.contains('\n') {
            Style::Double
        } else if can_plain && a.plain_allowed && !(key && a.multiline) {
            Style::Plain
        } else if !can_plain {
            Style::Double
        } else if a.single_allowed {
            Style::Single
        } else {
            Style::Double
        };
        let allow_breaks = !key;
        match style {
            Style::Plain => self.write_folded(s, indent, allow_breaks, Style::Plain),
            Style::Single => {
                self.write("'");
                self.write_folded(s, indent, allow_breaks, Style::Single);
                self.write("'");
            }
            Style::Double => {
                self.write("\"");
                self.write_folded(s, indent, allow_breaks, Style::Double);
                self.write("\"");
            }
            Style::Literal => self.literal(s, indent),
        }
    }

    /// Writes plain / single / double quoted text, folding at spaces once the
    /// line is past the best width (libyaml's writer loops).
    fn write_folded(&mut self, s: &str, indent: usize, allow_breaks: bool, style: Style) {
        // Breaks only happen at a space past the best width: text that ends
        // before it (its bytes bound its characters), or that cannot break,
        // is written as it is.
        let whole: std::borrow::Cow<str> = match style {
            Style::Single if s.contains('\'') => s.replace('\'', "''").into(),
            Style::Double
                if s.bytes()
                    .any(|b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\') =>
            {
                s.chars().map(double_escape).collect::<String>().into()
            }
            _ => s.into(),
        };
        if self.column + whole.len() <= BEST_WIDTH || !allow_breaks || !s.contains(' ') {
            self.write(&whole);
            return;
        }
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let mut spaces = false;
        let mut i = 0;
        while i < n {
            let c = chars[i];
            if c == ' ' {
                let next_space = i + 1 < n && chars[i + 1] == ' ';
                let can_break = match style {
                    Style::Plain => {
                        allow_breaks && !spaces && self.column > BEST_WIDTH && !next_space
                    }
                    Style::Single => {
                        allow_breaks
                            && !spaces
                            && self.column > BEST_WIDTH
                            && i != 0
                            && i != n - 1
                            && !next_space
                    }
                    _ => {
                        allow_breaks && !spaces && self.column > BEST_WIDTH && i != 0 && i != n - 1
                    }
                };
                if can_break {
                    self.newline_indent(indent);
                    if style == Style::Double && next_space {
                        self.write("\\");
                    }
                } else {
                    self.write(" ");
                }
                spaces = true;
            } else {
                spaces = false;
                match style {
                    Style::Single if c == '\'' => self.write("''"),
                    Style::Double => self.write(&double_escape(c)),
                    _ => {
                        let mut b = [0u8; 4];
                        self.write(c.encode_utf8(&mut b));
                    }
                }
            }
            i += 1;
        }
    }

    fn literal(&mut self, s: &str, indent: usize) {
        self.write("|");
        if s.starts_with(' ') || s.starts_with('\n') {
            self.write("2");
        }
        let chomp = if !s.ends_with('\n') {
            "-"
        } else if s.len() == 1 || s[..s.len() - 1].ends_with('\n') {
            "+"
        } else {
            ""
        };
        self.write(chomp);
        let body = s.strip_suffix('\n').unwrap_or(s);
        for line in body.split('\n') {
            if line.is_empty() {
                self.out.push('\n');
                self.column = 0;
            } else {
                self.newline_indent(indent);
                self.write(line);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

struct Analysis {
    plain_allowed: bool,
    single_allowed: bool,
    block_allowed: bool,
    multiline: bool,
}

fn is_printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0a
        || (0x20..=0x7e).contains(&u)
        || (0xa0..=0xd7ff).contains(&u)
        || ((0xe000..=0xfffd).contains(&u) && u != 0xfeff)
        || (0x10000..=0x10ffff).contains(&u)
        || u == 0x85
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// libyaml's yaml_emitter_analyze_scalar, for the block context.
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            plain_allowed: false,
            single_allowed: true,
            block_allowed: false,
            multiline: false,
        };
    }
    let mut block_indicators = false;
    let mut leading_space = false;
    let mut leading_break = false;
    let mut trailing_space = false;
    let mut trailing_break = false;
    let mut break_space = false;
    let mut space_break = false;
    let mut previous_space = false;
    let mut previous_break = false;
    let mut line_breaks = false;
    let mut special = false;
    if s.starts_with("---") || s.starts_with("...") {
        block_indicators = true;
    }
    let mut chars = s.chars().peekable();
    let mut preceded_by_ws = true;
    let mut i = 0;
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        let last = next.is_none();
        let followed_by_ws = next.is_none_or(|c| c == ' ' || c == '\t' || is_break(c));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => {
                    block_indicators = true;
                }
                '?' | ':' | '-' if followed_by_ws => {
                    block_indicators = true;
                }
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => {
                    block_indicators = true;
                }
                '#' if preceded_by_ws => {
                    block_indicators = true;
                }
                _ => {}
            }
        }
        if !is_printable(c) || c == '\u{feff}' {
            special = true;
        }
        if is_break(c) {
            line_breaks = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if last {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            if i == 0 {
                leading_break = true;
            }
            if last {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = c == ' ' || c == '\t' || is_break(c);
        i += 1;
    }
    let mut plain = !block_indicators;
    let mut single = true;
    let mut block = true;
    if leading_space || leading_break || trailing_space || trailing_break {
        plain = false;
    }
    if trailing_space {
        block = false;
    }
    if break_space {
        plain = false;
        single = false;
    }
    if space_break || special {
        plain = false;
        single = false;
        block = false;
    }
    if line_breaks {
        plain = false;
    }
    Analysis {
        plain_allowed: plain,
        single_allowed: single,
        block_allowed: block,
        multiline: line_breaks,
    }
}

fn double_escape(c: char) -> String {
    match c {
        '\0' => "\\0".into(),
        '\x07' => "\\a".into(),
        '\x08' => "\\b".into(),
        '\t' => "\\t".into(),
        '\n' => "\\n".into(),
        '\x0b' => "\\v".into(),
        '\x0c' => "\\f".into(),
        '\r' => "\\r".into(),
        '\x1b' => "\\e".into(),
        '"' => "\\\"".into(),
        '\\' => "\\\\".into(),
        '\u{85}' => "\\N".into(),
        '\u{a0}' => "\u{a0}".into(),
        '\u{2028}' => "\\L".into(),
        '\u{2029}' => "\\P".into(),
        c if !is_printable(c) || c == '\u{feff}' => {
            let u = c as u32;
            if u <= 0xff {
                format!("\\x{u:02X}")
            } else if u <= 0xffff {
                format!("\\u{u:04X}")
            } else {
                format!("\\U{u:08X}")
            }
        }
        c => c.to_string(),
    }
}

/// go-yaml v2's order of mapping keys: letters compare as characters, a
/// non-letter sorts before a letter, and runs of digits compare as numbers
/// (`a2` before `a10`).
fn key_less(a: &str, b: &str) -> bool {
    // Most keys are ASCII: compare their bytes without collecting chars.
    if a.is_ascii() && b.is_ascii() {
        return key_less_in(a.as_bytes(), b.as_bytes());
    }
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    key_less_in(&ar, &br)
}

/// A character of a mapping key, for [`key_less`].
trait KeyChar: Copy + Ord {
    fn alphabetic(self) -> bool;
    /// The value of an ASCII digit.
    fn digit(self) -> Option<u8>;
}

impl KeyChar for u8 {
    fn alphabetic(self) -> bool {
        self.is_ascii_alphabetic()
    }
    fn digit(self) -> Option<u8> {
        self.is_ascii_digit().then(|| self - b'0')
    }
}

impl KeyChar for char {
    fn alphabetic(self) -> bool {
        self.is_alphabetic()
    }
    fn digit(self) -> Option<u8> {
        self.is_ascii_digit().then(|| self as u8 - b'0')
    }
}

fn key_less_in<C: KeyChar>(ar: &[C], br: &[C]) -> bool {
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            continue;
        }
        let (al, bl) = (ar[i].alphabetic(), br[i].alphabetic());
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i].digit() == Some(0) || br[i].digit() == Some(0) {
            // Inside a number that already has a non-zero digit, zeros count.
            for j in (0..i).rev() {
                match ar[j].digit() {
                    None => break,
                    Some(0) => {}
                    Some(_) => {
                        an = 1;
                        bn = 1;
                        break;
                    }
                }
            }
        }
        let mut ai = i;
        while let Some(d) = ar.get(ai).and_then(|c| c.digit()) {
            an = an.wrapping_mul(10).wrapping_add(i64::from(d));
            ai += 1;
        }
        let mut bi = i;
        while let Some(d) = br.get(bi).and_then(|c| c.digit()) {
            bn = bn.wrapping_mul(10).wrapping_add(i64::from(d));
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// How go-yaml v2 resolves a plain scalar: true if it would not read back
/// as a string (so it must be quoted). YAML 1.1 rules: yes/no/on/off,
/// octal `012`, `0x`/`0o`/`0b`, underscores, timestamps, `.inf`.
pub fn resolves_non_string(s: &str) -> bool {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return true,
        "y" | "Y" | "yes" | "Yes" | "YES" | "n" | "N" | "no" | "No" | "NO" | "true" | "True"
        | "TRUE" | "false" | "False" | "FALSE" | "on" | "On" | "ON" | "off" | "Off" | "OFF"
        | "<<" => return true,
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return true,
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return false;
    }
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    if go_parse_int(&plain) {
        return true;
    }
    if is_yaml_float(&plain) {
        return true;
    }
    is_go_timestamp(s)
}

/// Go's strconv.ParseInt/ParseUint with base 0 (accepts sign, 0x, 0o, 0b, 0 octal).
fn go_parse_int(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body.is_empty() {
        return false;
    }
    let lower = body.to_ascii_lowercase();
    let (digits, radix) = if let Some(h) = lower.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (o, 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (b, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    !digits.is_empty() && u128::from_str_radix(digits, radix).is_ok_and(|v| v <= u64::MAX as u128)
}

/// go-yaml v2's float pattern: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - s
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
fn is_base60_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (main, frac) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    if let Some(f) = frac {
        if !f.bytes().all(|c| c.is_ascii_digit() || c == b'_') {
            return false;
        }
    }
    let mut parts = main.split(':');
    let Some(first) = parts.next() else {
        return false;
    };
    if first.is_empty()
        || !first.as_bytes()[0].is_ascii_digit()
        || !first.bytes().all(|c| c.is_ascii_digit() || c == b'_')
    {
        return false;
    }
    let mut count = 0;
    for p in parts {
        count += 1;
        let ok = match p.len() {
            1 => p.as_bytes()[0].is_ascii_digit(),
            2 => (b'0'..=b'5').contains(&p.as_bytes()[0]) && p.as_bytes()[1].is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    count > 0
}

/// A float64 as it comes out of JSON then YAML: integral values print as
/// integers (JSON writes them without exponent below 1e21), others with
/// Go's shortest `%g`.
pub fn yaml_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        let s = gofmt::format_float_f_shortest(f);
        if s.parse::<i64>().is_ok() || s.parse::<u64>().is_ok() {
            return s;
        }
    }
    gofmt::format_float_g_shortest(f)
}

/// Parses one YAML document into a [`Value`] the way `sigs.k8s.io/yaml`
/// does (numbers become float64, keys become strings).
pub fn from_yaml_str(s: &str) -> Result<Value, String> {
    match crate::head_scan::parse_map_core(s) {
        Some(v) => Ok(v),
        None => from_yaml_str_full(s),
    }
}

/// [`from_yaml_str`] without the quick path for plain block mappings.
pub(crate) fn from_yaml_str_full(s: &str) -> Result<Value, String> {
    let v: serde_yaml::Value = serde_yaml::from_str(s).map_err(|e| e.to_string())?;
    Ok(from_serde_yaml(&v))
}

/// Parses a multi-document YAML stream.
pub fn from_yaml_documents(s: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(s) {
        let v = serde_yaml::Value::deserialize(doc).map_err(|e| e.to_string())?;
        out.push(from_serde_yaml(&v));
    }
    Ok(out)
}

fn yaml_key(k: &serde_yaml::Value) -> String {
    match k {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Null => "null".into(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => gofmt::sprint_value(&from_serde_yaml(other)),
    }
}

/// Converts a parsed YAML value.
pub fn from_serde_yaml(v: &serde_yaml::Value) -> Value {
    match v {
        serde_yaml::Value::Null => Value::Nil,
        serde_yaml::Value::Bool(b) => Value::Bool(*b),
        serde_yaml::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_yaml::Value::String(s) => Value::str(s),
        serde_yaml::Value::Sequence(seq) => Value::list(seq.iter().map(from_serde_yaml).collect()),
        serde_yaml::Value::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                out.insert(yaml_key(k), from_serde_yaml(v));
            }
            Value::map(out)
        }
        serde_yaml::Value::Tagged(t) => from_serde_yaml(&t.value),
    }
}

/// Parses one YAML document the way `sigs.k8s.io/yaml` (go-yaml v2 under
/// it) accepts it: duplicate keys are allowed (the last one wins), `<<`
/// merge keys are applied, tags are ignored, and errors read like
/// go-yaml's (`yaml: line N: message`).
pub fn from_yaml_str_go(s: &str) -> Result<Value, String> {
    match crate::head_scan::parse_map(s) {
        Some(v) => Ok(v),
        None => from_yaml_str_go_full(s),
    }
}

/// [`from_yaml_str_go`] without the quick path for plain block mappings.
pub(crate) fn from_yaml_str_go_full(s: &str) -> Result<Value, String> {
    let mut docs = serde_yaml::Deserializer::from_str(s);
    let Some(doc) = docs.next() else {
        return Ok(Value::Nil);
    };
    match serde::de::DeserializeSeed::deserialize(GoYaml(s), doc) {
        Ok(v) => Ok(v),
        Err(e) => {
            let text = e.to_string();
            match text
                .find(UNSUPPORTED)
                .or_else(|| text.find(UNSUPPORTED_KEY))
            {
                Some(i) => Err(text[i..]
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string()),
                None => Err(go_yaml_error(&e)),
            }
        }
    }
}

/// Rewrites a libyaml error from yaml_serde into go-yaml v2's wording:
/// scanner errors report the 1-based line of the problem, parser errors
/// (go-yaml quirk) the 0-based one.
fn go_yaml_error(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    let msg = match text.find(" at line ") {
        Some(i) => &text[..i],
        None => text.as_str(),
    };
    let msg = msg.split(": ").last().unwrap_or(msg);
    // Only the problem, not libyaml's context (`, while scanning ...`).
    let msg = msg.split(", while ").next().unwrap_or(msg);
    const SCANNER: &[&str] = &[
        "mapping values are not allowed in this context",
        "found character that cannot start any token",
        "could not find expected ':'",
        "found unexpected end of stream",
        "found unknown escape character while parsing a quoted scalar",
        "block sequence entries are not allowed in this context",
        "found a tab character that violates indentation",
        "found unexpected ':'",
        "found undefined tag handle",
    ];
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    let line = if SCANNER.iter().any(|m| msg.contains(m)) {
        // go-yaml adds one to a scanner error's 0-based line, but prints
        // no line at all for the first one.
        if line == 1 {
            0
        } else {
            line
        }
    } else {
        line.saturating_sub(1)
    };
    if line == 0 {
        format!("yaml: {msg}")
    } else {
        format!("yaml: line {line}: {msg}")
    }
}

/// Deserializes one go-yaml value; `src` is the document text, so a
/// borrowed scalar can be told plain (resolved with YAML 1.1 rules) from
/// quoted (always a string).
#[derive(Clone, Copy)]
struct GoYaml<'s>(&'s str);

impl<'de, 's> serde::de::DeserializeSeed<'de> for GoYaml<'s> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// go-yaml v2's resolution of a plain scalar that YAML 1.2 (yaml_serde)
/// left a string: `yes/no/on/off/y/n` and case variants are booleans,
/// `0755` is octal, `1_000` drops its underscores, `0b101` is binary. The
/// numbers end up float64, as sigs.k8s.io/yaml's JSON step makes them.
pub fn resolve_yaml11(s: &str) -> Option<Value> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(Value::Bool(true)),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(Value::Bool(false)),
        _ => {}
    }
    let first = *s.as_bytes().first()?;
    if !(first.is_ascii_digit() || first == b'-' || first == b'+') {
        return None;
    }
    if is_go_timestamp(s) {
        return None;
    }
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    if let Some(v) = go_int_value(&plain) {
        return Some(Value::Float(v));
    }
    if is_yaml_float(&plain) {
        return plain.parse::<f64>().ok().map(Value::Float);
    }
    None
}

/// The value of Go's `strconv.ParseInt`/`ParseUint` with base 0, then
/// go-yaml's own `0b`/`-0b` binary forms.
fn go_int_value(s: &str) -> Option<f64> {
    if !go_parse_int(s) {
        return None;
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (digits, radix) = if let Some(h) = lower.strip_prefix("0x") {
        (h.to_string(), 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        (o.to_string(), 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (b.to_string(), 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (lower[1..].to_string(), 8)
    } else {
        (lower, 10)
    };
    let v = u128::from_str_radix(&digits, radix).ok()? as f64;
    Some(if neg { -v } else { v })
}

/// go-yaml v2's `parseTimestamp`: `YYYY-` then one of its four layouts.
fn is_go_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    [
        "2006-1-2T15:4:5.999999999Z07:00",
        "2006-1-2t15:4:5.999999999Z07:00",
        "2006-1-2 15:4:5.999999999",
        "2006-1-2",
    ]
    .iter()
    .any(|l| crate::gotime::Time::parse(l, s, crate::gotime::Loc::Utc).is_ok())
}

fn is_plain(src: &str, v: &str) -> bool {
    let (base, p) = (src.as_ptr() as usize, v.as_ptr() as usize);
    if p < base || p + v.len() > base + src.len() {
        return false;
    }
    let at = p - base;
    if at > 0 && matches!(src.as_bytes()[at - 1], b'\'' | b'"') {
        return false;
    }
    // `!!str yes` is a string whatever it reads like.
    let before = src[..at].trim_end_matches([' ', '\t']);
    let tag = before.rsplit([' ', '\t', '\n']).next().unwrap_or_default();
    !(tag == "!!str" || tag == "!<tag:yaml.org,2002:str>")
}

impl<'de, 's> serde::de::Visitor<'de> for GoYaml<'s> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Float(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Float(v as f64))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no infinities or NaN: sigs.k8s.io/yaml fails on them.
        if !v.is_finite() {
            let shown = if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "+Inf"
            } else {
                "-Inf"
            };
            return Err(E::custom(format!("{UNSUPPORTED}{shown}")));
        }
        Ok(Value::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        if is_plain(self.0, v) {
            if let Some(r) = resolve_yaml11(v) {
                return Ok(r);
            }
        }
        Ok(Value::str(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::str(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::string(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element_seed(self)? {
            v.push(x);
        }
        Ok(Value::list(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut m = BTreeMap::new();
        let mut merges = Vec::new();
        while let Some(k) = a.next_key_seed(self)? {
            let v = a.next_value_seed(self)?;
            if k.is_nil() {
                return Err(serde::de::Error::custom(format!(
                    "{UNSUPPORTED_KEY}%!s(<nil>), key: <nil>, value: {}",
                    gofmt::sprint_value(&v)
                )));
            }
            let key = match &k {
                Value::String(s) => s.to_string(),
                Value::Nil => "null".into(),
                Value::Float(f) => yaml_float(*f),
                other => gofmt::sprint_value(other),
            };
            if key == "<<" && matches!(k, Value::String(_)) {
                merges.push(v);
                continue;
            }
            m.insert(key, v);
        }
        // Merge keys: explicit keys win, then earlier merged maps.
        for merged in merges {
            let maps = match merged {
                Value::List(l) => l.iter().cloned().collect(),
                other => vec![other],
            };
            for mm in maps {
                if let Value::Map(mm) = mm {
                    for (k, v) in mm.borrow().iter() {
                        m.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
        Ok(Value::map(m))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<Value, A::Error> {
        use serde::de::VariantAccess;
        // A tagged node (`!!binary ...`, `!custom ...`): keep its value.
        let (_tag, variant): (serde::de::IgnoredAny, _) = a.variant()?;
        variant.newtype_variant_seed(self)
    }
}

/// What Helm reads of a rendered manifest (`SimpleHead`): the top-level
/// shape, `kind`, and whether `metadata.annotations` has `helm.sh/hook`.
pub(crate) enum Head {
    Map {
        kind: String,
        hook: bool,
    },
    Nil,
    /// A non-map document: `array`, `string`, `bool` or `number`.
    Other(&'static str),
}

/// Reads a manifest's [`Head`] with the checks of the full parse (syntax,
/// JSON-incompatible values, null keys) but without building the document.
pub(crate) fn manifest_head(s: &str) -> Result<Head, String> {
    let mut docs = serde_yaml::Deserializer::from_str(s);
    let Some(doc) = docs.next() else {
        return Ok(Head::Nil);
    };
    let seed = HeadSeed {
        src: s,
        level: Level::Top,
    };
    match serde::de::DeserializeSeed::deserialize(seed, doc) {
        Ok(HeadOut::Head(h)) => Ok(h),
        // Merge keys or other rare shapes: the full parse decides.
        Ok(_) => match from_yaml_str_go(s)? {
            Value::Map(m) => {
                let m = m.borrow();
                let kind = m.get("kind").and_then(|v| v.as_str()).unwrap_or_default();
                let hook = match m.get("metadata") {
                    Some(Value::Map(md)) => match md.borrow().get("annotations") {
                        Some(Value::Map(a)) => a.borrow().contains_key("helm.sh/hook"),
                        _ => false,
                    },
                    _ => false,
                };
                Ok(Head::Map {
                    kind: kind.to_string(),
                    hook,
                })
            }
            Value::Nil => Ok(Head::Nil),
            Value::List(_) => Ok(Head::Other("array")),
            Value::String(_) => Ok(Head::Other("string")),
            Value::Bool(_) => Ok(Head::Other("bool")),
            _ => Ok(Head::Other("number")),
        },
        Err(e) => {
            let text = e.to_string();
            match text
                .find(UNSUPPORTED)
                .or_else(|| text.find(UNSUPPORTED_KEY))
            {
                Some(i) => Err(text[i..]
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string()),
                None => Err(go_yaml_error(&e)),
            }
        }
    }
}

/// The heads of many manifests with one parser: the documents joined as a
/// stream. `None` when any document is not a plain mapping (or the stream
/// does not parse): the caller then reads each document on its own.
pub(crate) fn manifest_heads<'a>(docs: impl Iterator<Item = &'a str> + Clone) -> Option<Vec<Head>> {
    // Setting up the parser costs more than the rest for nothing to parse.
    if docs.clone().next().is_none() {
        return Some(Vec::new());
    }
    let mut stream = String::with_capacity(docs.clone().map(|d| d.len() + 5).sum());
    let mut n = 0;
    for d in docs {
        stream.push_str("---\n");
        stream.push_str(d);
        stream.push('\n');
        n += 1;
    }
    let mut out = Vec::with_capacity(n);
    for doc in serde_yaml::Deserializer::from_str(&stream) {
        let seed = HeadSeed {
            src: &stream,
            level: Level::Top,
        };
        match serde::de::DeserializeSeed::deserialize(seed, doc) {
            Ok(HeadOut::Head(h @ Head::Map { .. })) => out.push(h),
            _ => return None,
        }
    }
    (out.len() == n).then_some(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    Metadata,
    Annotations,
    /// Anything else: validated, not kept.
    Skip,
}

#[derive(Clone, Copy)]
struct HeadSeed<'s> {
    src: &'s str,
    level: Level,
}

enum HeadOut {
    Head(Head),
    /// `metadata` / `annotations` results.
    Found(bool),
    Scalar(Option<String>),
    Null,
    /// A `<<` merge key: fall back to the full parse.
    Merge,
    Ignored,
}

impl<'de, 's> serde::de::DeserializeSeed<'de> for HeadSeed<'s> {
    type Value = HeadOut;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<HeadOut, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'s> HeadSeed<'s> {
    fn scalar<E>(self, top: &'static str, v: Option<String>) -> Result<HeadOut, E> {
        Ok(if self.level == Level::Top {
            if top.is_empty() {
                HeadOut::Head(Head::Nil)
            } else {
                HeadOut::Head(Head::Other(top))
            }
        } else {
            HeadOut::Scalar(v)
        })
    }
}

impl<'de, 's> serde::de::Visitor<'de> for HeadSeed<'s> {
    type Value = HeadOut;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _v: bool) -> Result<HeadOut, E> {
        self.scalar("bool", None)
    }
    fn visit_i64<E>(self, _v: i64) -> Result<HeadOut, E> {
        self.scalar("number", None)
    }
    fn visit_u64<E>(self, _v: u64) -> Result<HeadOut, E> {
        self.scalar("number", None)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HeadOut, E> {
        GoYaml(self.src).visit_f64::<E>(v)?;
        self.scalar("number", None)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<HeadOut, E> {
        match GoYaml(self.src).visit_borrowed_str::<E>(v)? {
            Value::String(s) => self.scalar("string", Some(s.to_string())),
            Value::Bool(_) => self.scalar("bool", None),
            _ => self.scalar("number", None),
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<HeadOut, E> {
        self.scalar("string", Some(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<HeadOut, E> {
        if self.level == Level::Top {
            return Ok(HeadOut::Head(Head::Nil));
        }
        Ok(HeadOut::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<HeadOut, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<HeadOut, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<HeadOut, A::Error> {
        let skip = HeadSeed {
            src: self.src,
            level: Level::Skip,
        };
        let mut merge = false;
        while let Some(e) = a.next_element_seed(skip)? {
            merge |= matches!(e, HeadOut::Merge);
        }
        if merge {
            return Ok(HeadOut::Merge);
        }
        if self.level == Level::Top {
            return Ok(HeadOut::Head(Head::Other("array")));
        }
        Ok(HeadOut::Ignored)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<HeadOut, A::Error> {
        let key_seed = HeadSeed {
            src: self.src,
            level: Level::Skip,
        };
        let (mut kind, mut hook, mut merge) = (String::new(), false, false);
        while let Some(k) = a.next_key_seed(key_seed)? {
            let key = match k {
                HeadOut::Scalar(Some(s)) => s,
                HeadOut::Null => {
                    // A null key: the full parse reports it.
                    merge = true;
                    a.next_value_seed(key_seed)?;
                    continue;
                }
                _ => String::new(),
            };
            let next = match (self.level, key.as_str()) {
                (Level::Top, "metadata") => Level::Metadata,
                (Level::Metadata, "annotations") => Level::Annotations,
                _ => Level::Skip,
            };
            if key == "<<" {
                merge = true;
            }
            if self.level == Level::Annotations && key == "helm.sh/hook" {
                hook = true;
            }
            let v = a.next_value_seed(HeadSeed {
                src: self.src,
                level: next,
            })?;
            match (self.level, key.as_str(), v) {
                (_, _, HeadOut::Merge) => merge = true,
                (Level::Top, "kind", HeadOut::Scalar(Some(s))) => kind = s,
                (Level::Top, "kind", _) => kind.clear(),
                (Level::Top, "metadata", HeadOut::Found(h)) => hook = h,
                (Level::Top, "metadata", _) => hook = false,
                (Level::Metadata, "annotations", HeadOut::Found(h)) => hook = h,
                (Level::Metadata, "annotations", _) => hook = false,
                _ => {}
            }
        }
        if merge {
            return Ok(HeadOut::Merge);
        }
        Ok(match self.level {
            Level::Top => HeadOut::Head(Head::Map { kind, hook }),
            Level::Metadata | Level::Annotations => HeadOut::Found(hook),
            Level::Skip => HeadOut::Ignored,
        })
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<HeadOut, A::Error> {
        use serde::de::VariantAccess;
        let (_tag, variant): (serde::de::IgnoredAny, _) = a.variant()?;
        variant.newtype_variant_seed(self)
    }
}

/// Prefix of the error for values JSON cannot hold (`.inf`, `.nan`).
const UNSUPPORTED: &str = "json: unsupported value: ";
/// Prefix of the error for a null map key.
const UNSUPPORTED_KEY: &str = "unsupported map key of type: ";

#[cfg(test)]
mod yaml11_tests {
    use crate::gofmt::sprint_value;

    #[test]
    fn plain_scalars_resolve_as_yaml_1_1_quoted_and_str_tagged_do_not() {
        let v =
            super::from_yaml_str_go("a: yes\nb: 'yes'\nc: !!str yes\nd: 0755\ne: 1_000\n").unwrap();
        assert_eq!(sprint_value(&v), "map[a:true b:yes c:yes d:493 e:1000]");
    }

    #[test]
    fn manifest_head_reads_kind_and_hook_and_checks_like_the_full_parse() {
        use super::{manifest_head, Head};
        let head = |s: &str| match manifest_head(s) {
            Ok(Head::Map { kind, hook }) => format!("{kind} {hook}"),
            Ok(Head::Nil) => "nil".into(),
            Ok(Head::Other(w)) => w.into(),
            Err(e) => format!("error: {e}"),
        };
        let hooked = "kind: Job\nmetadata:\n  annotations:\n    helm.sh/hook: pre-install\n";
        assert_eq!(head(hooked), "Job true");
        assert_eq!(
            head("kind: A\nmetadata: {<<: {annotations: {helm.sh/hook: x}}}"),
            "A true"
        );
        assert_eq!(head("kind: yes\nspec: {a: [1, {b: c}]}"), " false");
        assert_eq!(head("- a"), "array");
        assert_eq!(head("yes"), "bool");
        assert_eq!(head("# only a comment"), "nil");
        assert_eq!(
            head("a: [1, {b: .inf}]"),
            "error: json: unsupported value: +Inf"
        );
        assert!(head("a: [1, {~: 2}]").starts_with("error: unsupported map key"));
    }

    #[test]
    fn keys_sort_like_go_yaml() {
        assert!(super::key_less("a2", "a10"));
        assert!(super::key_less("a_", "aZ"));
        assert!(!super::key_less("b", "a"));
    }
}
