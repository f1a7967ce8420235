//! A quick reading of the plain block YAML that templates and values files
//! almost always are, so that most documents skip the full YAML parser:
//! [`scan`] reads a rendered manifest's `kind` and hook flag (see
//! [`crate::yaml::manifest_head`]), [`parse_map`] builds a mapping
//! document's value (see [`crate::yaml::from_yaml_str_go`]).
//!
//! Both accept only a conservative subset: block mappings and sequences
//! indented with spaces, plain keys, one-line plain or quoted scalars,
//! block scalars without an indentation indicator, and one-line flow
//! collections of such scalars. A document they accept is one the full
//! parse accepts as a mapping, read the same way; anything else (tabs,
//! anchors, tags, multi-line flow or quoted scalars, numbers that might
//! overflow or resolve differently, ...) gets `None` and goes the slow
//! way, which also produces Helm's errors.

use crate::value::Value;
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Top,
    Metadata,
    Annotations,
    Skip,
}

#[derive(Clone, Copy)]
struct Line<'a> {
    /// Leading spaces (for a blank line: all of its spaces).
    indent: usize,
    /// The rest, trailing spaces removed.
    text: &'a str,
    /// The rest with its trailing spaces (block scalar content keeps them).
    raw: &'a str,
}

enum Val<'a> {
    Plain(&'a str),
    /// A mapping: whether it holds (at the annotations level) `helm.sh/hook`.
    Map(bool),
    Null,
    Other,
}

/// What the scan is for.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Only the head ([`scan`]).
    Head,
    /// Values as go-yaml v2 reads them ([`parse_map`]).
    Go,
    /// Values as the YAML 1.2 parser reads them ([`parse_map_core`]):
    /// `yes`/`no`/`on`/`off` stay strings, a duplicate key is an error.
    Core,
}

impl Mode {
    fn build(self) -> bool {
        self != Mode::Head
    }
}

struct Scanner<'a> {
    lines: Vec<Line<'a>>,
    i: usize,
    mode: Mode,
    /// Whether the last line ends with a newline.
    ends_with_newline: bool,
}

/// `Some((kind, hook))` when `doc` is in the accepted subset and is a
/// mapping; `None` when the full parse has to decide.
pub(crate) fn scan(doc: &str) -> Option<(String, bool)> {
    let mut s = Scanner::new(doc, Mode::Head)?;
    let (kind, hook, _) = s.root()?;
    Some((kind?, hook))
}

/// The value of a mapping document in the accepted subset, as go-yaml v2
/// under `sigs.k8s.io/yaml` reads it; `None` when the full parse has to
/// decide.
pub(crate) fn parse_map(doc: &str) -> Option<Value> {
    let mut s = Scanner::new(doc, Mode::Go)?;
    let (_, _, v) = s.root()?;
    Some(v)
}

/// [`parse_map`] for YAML 1.2 (see [`crate::yaml::from_yaml_str`]).
pub(crate) fn parse_map_core(doc: &str) -> Option<Value> {
    let mut s = Scanner::new(doc, Mode::Core)?;
    let (_, _, v) = s.root()?;
    Some(v)
}

/// Only newlines and printable characters that are not YAML line breaks
/// (NEL, LS, PS) or a byte-order mark.
fn chars_ok(doc: &str) -> bool {
    if doc.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)) {
        return true;
    }
    doc.chars().all(|c| match c {
        '\n' | ' '..='~' => true,
        '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => false,
        c => c >= '\u{a0}',
    })
}

fn is_seq_line(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// A plain key that reads back as a non-null string or a small integer
/// (when building: as a string).
fn key_ok(k: &str, mode: Mode) -> bool {
    let b = k.as_bytes();
    if mode.build() {
        return (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && !crate::yaml::resolves_non_string(k);
    }
    if b[0].is_ascii_alphabetic() || b[0] == b'_' {
        !matches!(k, "null" | "Null" | "NULL")
    } else {
        b.len() <= 18 && b.iter().all(u8::is_ascii_digit)
    }
}

/// `key:` or `key: rest` with a plain key of safe characters.
fn split_key(t: &str, mode: Mode) -> Option<(&str, &str)> {
    let b = t.as_bytes();
    let mut j = 0;
    while j < b.len() && is_key_byte(b[j]) {
        j += 1;
    }
    if j == 0 || j >= b.len() || j >= 1024 || b[j] != b':' {
        return None;
    }
    if j + 1 < b.len() && b[j + 1] != b' ' {
        return None;
    }
    let key = &t[..j];
    key_ok(key, mode).then(|| (key, &t[j + 1..]))
}

/// A plain scalar (already trimmed) that cannot be a number JSON rejects
/// (`.inf`, `.nan`, an overflowing exponent) nor anything but one scalar.
fn plain_ok(s: &str, flow: bool) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    // `-x` is a plain scalar, `- x` a sequence entry.
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first)
        && !(first == b'-' && b.get(1).is_some_and(|c| *c != b' '))
    {
        return false;
    }
    if s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if flow && b.iter().any(|c| b",[]{}:".contains(c)) {
        return false;
    }
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return true;
    }
    simple_number(s) || !crate::yaml::resolves_non_string(s)
}

/// `[-+]?[0-9]+(\.[0-9]*)?` with few enough digits to stay finite.
fn simple_number(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !int.is_empty()
        && int.len() + frac.len() <= 15
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit())
}

/// The value of a plain scalar that passed [`plain_ok`], or `None` where
/// YAML 1.1 (go-yaml) and 1.2 (the parser under the slow path) could
/// disagree.
fn plain_value(s: &str, mode: Mode) -> Option<Value> {
    let first = s.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        // Decimal numbers without a sign, leading zero or trailing dot
        // read the same in both.
        let body = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = body.split_once('.').unwrap_or((body, "1"));
        if simple_number(s)
            && !s.starts_with('+')
            && !(int.starts_with('0') && (int.len() > 1 || s.starts_with('-')))
            && !frac.is_empty()
        {
            return s.parse().ok().map(Value::Float);
        }
        return (!crate::yaml::resolves_non_string(s)).then(|| Value::str(s));
    }
    Some(match s {
        "~" | "null" | "Null" | "NULL" => Value::Nil,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ if mode == Mode::Core => Value::str(s),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Value::Bool(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Value::Bool(false),
        _ => Value::str(s),
    })
}

/// End (exclusive) of a one-line double-quoted scalar starting at `s[0]`,
/// with only the common escapes.
fn double_quoted(s: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' => {
                if !b"\\\"/ntr0abefv".contains(s.get(j + 1)?) {
                    return None;
                }
                j += 2;
            }
            _ => j += 1,
        }
    }
    None
}

/// The text of a double-quoted scalar [`double_quoted`] accepted.
fn double_quoted_value(q: &str) -> Value {
    let inner = &q[1..q.len() - 1];
    if !inner.contains('\\') {
        return Value::str(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next().unwrap_or('\\') {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            'a' => '\x07',
            'b' => '\x08',
            'e' => '\x1b',
            'f' => '\x0c',
            'v' => '\x0b',
            c => c,
        });
    }
    Value::string(out)
}

/// End (exclusive) of a one-line single-quoted scalar starting at `s[0]`.
fn single_quoted(s: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < s.len() {
        if s[j] == b'\'' {
            if s.get(j + 1) == Some(&b'\'') {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

fn single_quoted_value(q: &str) -> Value {
    let inner = &q[1..q.len() - 1];
    if inner.contains('\'') {
        Value::string(inner.replace("''", "'"))
    } else {
        Value::str(inner)
    }
}

fn skip_spaces(s: &[u8], mut j: usize) -> usize {
    while j < s.len() && s[j] == b' ' {
        j += 1;
    }
    j
}

/// Whether only spaces, or spaces then a comment, follow `s[j..]`.
fn rest_blank(s: &[u8], j: usize) -> bool {
    let k = skip_spaces(s, j);
    k == s.len() || (k > j && s[k] == b'#')
}

/// End (exclusive) and value (when building) of a one-line flow collection
/// starting at `s[j]`.
fn flow(s: &[u8], j: usize, depth: usize, mode: Mode) -> Option<(usize, Value)> {
    let build = mode.build();
    if depth > 8 {
        return None;
    }
    let (close, is_map) = match s[j] {
        b'[' => (b']', false),
        b'{' => (b'}', true),
        _ => return None,
    };
    let mut items = Vec::new();
    let mut map = BTreeMap::new();
    let done = |items: Vec<Value>, map: BTreeMap<String, Value>| match (build, is_map) {
        (false, _) => Value::Nil,
        (true, false) => Value::list(items),
        (true, true) => Value::map(map),
    };
    let mut j = skip_spaces(s, j + 1);
    if s.get(j) == Some(&close) {
        return Some((j + 1, done(items, map)));
    }
    loop {
        let mut key = "";
        if is_map {
            let start = j;
            while j < s.len() && is_key_byte(s[j]) {
                j += 1;
            }
            if j == start || s.get(j) != Some(&b':') || s.get(j + 1) != Some(&b' ') {
                return None;
            }
            key = std::str::from_utf8(&s[start..j]).ok()?;
            if !key_ok(key, mode) {
                return None;
            }
            j = skip_spaces(s, j + 2);
        }
        let (end, v) = flow_item(s, j, depth, mode)?;
        if build {
            if is_map {
                if map.insert(key.to_string(), v).is_some() && mode == Mode::Core {
                    return None;
                }
            } else {
                items.push(v);
            }
        }
        j = skip_spaces(s, end);
        match s.get(j) {
            Some(b',') => {
                j = skip_spaces(s, j + 1);
                // A trailing comma: rare, left to the full parse.
                if s.get(j) == Some(&close) {
                    return None;
                }
            }
            Some(&c) if c == close => return Some((j + 1, done(items, map))),
            _ => return None,
        }
    }
}

fn flow_item(s: &[u8], j: usize, depth: usize, mode: Mode) -> Option<(usize, Value)> {
    let build = mode.build();
    let text = |a: usize, b: usize| std::str::from_utf8(&s[a..b]).ok();
    match *s.get(j)? {
        b'"' => {
            let e = j + double_quoted(&s[j..])?;
            Some((
                e,
                if build {
                    double_quoted_value(text(j, e)?)
                } else {
                    Value::Nil
                },
            ))
        }
        b'\'' => {
            let e = j + single_quoted(&s[j..])?;
            Some((
                e,
                if build {
                    single_quoted_value(text(j, e)?)
                } else {
                    Value::Nil
                },
            ))
        }
        b'[' | b'{' => flow(s, j, depth + 1, mode),
        _ => {
            let mut e = j;
            while e < s.len() && !b",]}".contains(&s[e]) {
                e += 1;
            }
            let tok = text(j, e)?.trim_end_matches(' ');
            if !plain_ok(tok, true) {
                return None;
            }
            Some((
                e,
                if build {
                    plain_value(tok, mode)?
                } else {
                    Value::Nil
                },
            ))
        }
    }
}

impl<'a> Scanner<'a> {
    fn new(doc: &'a str, mode: Mode) -> Option<Scanner<'a>> {
        if !chars_ok(doc) {
            return None;
        }
        let ends_with_newline = doc.ends_with('\n');
        let body = doc.strip_suffix('\n').unwrap_or(doc);
        let mut lines = Vec::with_capacity(body.len() / 24 + 1);
        for line in body.split('\n') {
            let raw = line.trim_start_matches(' ');
            let indent = line.len() - raw.len();
            let text = raw.trim_end_matches(' ');
            // Document markers and directives end or start documents.
            if indent == 0
                && (text.starts_with("---") || text.starts_with("...") || text.starts_with('%'))
            {
                return None;
            }
            lines.push(Line { indent, text, raw });
        }
        Some(Scanner {
            lines,
            i: 0,
            mode,
            ends_with_newline,
        })
    }

    /// The document: a mapping at column 0 and nothing after it.
    fn root(&mut self) -> Option<(Option<String>, bool, Value)> {
        let first = self.peek()?;
        if first.indent != 0 || is_seq_line(first.text) {
            return None;
        }
        let out = self.mapping(0, Level::Top)?;
        if self.peek().is_some() {
            return None;
        }
        Some(out)
    }

    /// The next line that is neither blank nor a comment.
    fn peek(&mut self) -> Option<Line<'a>> {
        while let Some(l) = self.lines.get(self.i) {
            if !l.text.is_empty() && !l.text.starts_with('#') {
                return Some(*l);
            }
            self.i += 1;
        }
        None
    }

    /// A block mapping at column `n`: (kind if a plain word, hook flag,
    /// value when building). The kind is `None` when present but not a
    /// plain word.
    fn mapping(&mut self, n: usize, level: Level) -> Option<(Option<String>, bool, Value)> {
        let (mut kind, mut hook) = (Some(String::new()), false);
        let mut map = BTreeMap::new();
        while let Some(line) = self.peek() {
            if line.indent < n {
                break;
            }
            if line.indent > n || is_seq_line(line.text) {
                return None;
            }
            let (key, rest) = split_key(line.text, self.mode)?;
            self.i += 1;
            let next = match (level, key) {
                (Level::Top, "metadata") => Level::Metadata,
                (Level::Metadata, "annotations") => Level::Annotations,
                _ => Level::Skip,
            };
            if level == Level::Annotations && key == "helm.sh/hook" {
                hook = true;
            }
            let (v, value) = self.value(rest, n, true, next)?;
            match (level, key) {
                (Level::Top, "kind") => {
                    kind = match v {
                        Val::Plain(s) if is_kind_word(s) => Some(s.to_string()),
                        _ => None,
                    }
                }
                (Level::Top, "metadata") | (Level::Metadata, "annotations") => {
                    hook = matches!(v, Val::Map(true));
                }
                _ => {}
            }
            // Duplicate keys: the last one wins in go-yaml v2.
            if self.mode.build()
                && map.insert(key.to_string(), value).is_some()
                && self.mode == Mode::Core
            {
                return None;
            }
        }
        let value = if self.mode.build() {
            Value::map(map)
        } else {
            Value::Nil
        };
        Some((kind, hook, value))
    }

    /// The value after `key:` or `-` (`rest`, untrimmed), in a collection
    /// at column `n`.
    fn value(
        &mut self,
        rest: &'a str,
        n: usize,
        indentless: bool,
        level: Level,
    ) -> Option<(Val<'a>, Value)> {
        let rest = rest.trim_start_matches(' ');
        if rest.is_empty() || rest.starts_with('#') {
            return match self.peek() {
                Some(l) if l.indent > n => self.block(l.indent, level),
                Some(l) if l.indent == n && indentless && is_seq_line(l.text) => {
                    Some((Val::Other, self.sequence(n, true)?))
                }
                _ => Some((Val::Null, Value::Nil)),
            };
        }
        let b = rest.as_bytes();
        let (end, value) = match b[0] {
            b'|' | b'>' => {
                let (keep, strip) = (b.get(1) == Some(&b'+'), b.get(1) == Some(&b'-'));
                let h = if keep || strip { 2 } else { 1 };
                if !rest_blank(b, h) {
                    return None;
                }
                let v = self.block_scalar(n, b[0] == b'|', keep, strip)?;
                return Some((Val::Other, v));
            }
            b'"' => {
                let e = double_quoted(b)?;
                (
                    e,
                    self.mode.build().then(|| double_quoted_value(&rest[..e])),
                )
            }
            b'\'' => {
                let e = single_quoted(b)?;
                (
                    e,
                    self.mode.build().then(|| single_quoted_value(&rest[..e])),
                )
            }
            b'[' | b'{' => {
                let (e, v) = flow(b, 0, 0, self.mode)?;
                (e, Some(v))
            }
            _ => {
                // A comment ends a plain scalar.
                let plain = match rest.find(" #") {
                    Some(c) => rest[..c].trim_end_matches(' '),
                    None => rest,
                };
                if !plain_ok(plain, false) {
                    return None;
                }
                let v = if self.mode.build() {
                    plain_value(plain, self.mode)?
                } else {
                    Value::Nil
                };
                return Some((Val::Plain(plain), v));
            }
        };
        rest_blank(b, end).then(|| (Val::Other, value.unwrap_or_default()))
    }

    /// A block collection whose first line is at column `m`.
    fn block(&mut self, m: usize, level: Level) -> Option<(Val<'a>, Value)> {
        let first = self.peek()?;
        if is_seq_line(first.text) {
            return Some((Val::Other, self.sequence(m, false)?));
        }
        let (_, hook, value) = self.mapping(m, level)?;
        Some((Val::Map(hook), value))
    }

    /// A block sequence at column `n`; `indentless` when it is a mapping
    /// value at the mapping's own column (it then ends at the next key).
    fn sequence(&mut self, n: usize, indentless: bool) -> Option<Value> {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < n {
                break;
            }
            if line.indent > n {
                return None;
            }
            if !is_seq_line(line.text) {
                if indentless {
                    break;
                }
                return None;
            }
            let after = &line.text[1..];
            let item = after.trim_start_matches(' ');
            let (_, v) = if item.is_empty() || item.starts_with('#') {
                self.i += 1;
                self.value("", n, false, Level::Skip)?
            } else if is_seq_line(item) || split_key(item, self.mode).is_some() {
                // `- key: v` / `- - x`: a collection starting on this line,
                // at the column of its first item.
                let off = 1 + (after.len() - item.len());
                let c = n + off;
                let raw = &line.raw[off..];
                self.lines[self.i] = Line {
                    indent: c,
                    text: item,
                    raw,
                };
                self.block(c, Level::Skip)?
            } else {
                self.i += 1;
                self.value(item, n, false, Level::Skip)?
            };
            if self.mode.build() {
                items.push(v);
            }
        }
        Some(if self.mode.build() {
            Value::list(items)
        } else {
            Value::Nil
        })
    }

    /// A literal (`|`) or folded (`>`) scalar whose header is consumed, in
    /// a collection at column `n`. Only literal ones are built.
    fn block_scalar(&mut self, n: usize, literal: bool, keep: bool, strip: bool) -> Option<Value> {
        let start = self.i;
        let mut j = start;
        let mut max_blank = 0;
        while j < self.lines.len() && self.lines[j].text.is_empty() {
            max_blank = max_blank.max(self.lines[j].indent);
            j += 1;
        }
        if self.mode.build() && (j > start || !literal) {
            return None;
        }
        let m = match self.lines.get(j) {
            Some(first) if first.indent > n => first.indent,
            // Empty scalar; the line belongs to the enclosing collection.
            _ => {
                self.i = j;
                return Some(if self.mode.build() {
                    Value::str("")
                } else {
                    Value::Nil
                });
            }
        };
        // Leading blank lines wider than the content set the indentation.
        if max_blank > m {
            return None;
        }
        let mut end = j;
        while let Some(l) = self.lines.get(j) {
            if !l.text.is_empty() && l.indent < m {
                break;
            }
            j += 1;
            if !l.text.is_empty() {
                end = j;
            }
        }
        self.i = j;
        if !self.mode.build() {
            return Some(Value::Nil);
        }
        // The last line without its newline changes the chomping.
        if j == self.lines.len() && !self.ends_with_newline {
            return None;
        }
        let mut out = String::new();
        for (k, l) in self.lines[start..end].iter().enumerate() {
            if k > 0 {
                out.push('\n');
            }
            if l.text.is_empty() {
                // Spaces past the indentation would be content.
                if l.indent > m {
                    return None;
                }
                continue;
            }
            out.extend(std::iter::repeat_n(' ', l.indent - m));
            out.push_str(l.raw);
        }
        for l in &self.lines[end..j] {
            if l.indent > m {
                return None;
            }
        }
        if !strip {
            out.push('\n');
        }
        if keep {
            out.extend(std::iter::repeat_n('\n', j - end));
        }
        Some(Value::string(out))
    }
}

/// A kind as manifests spell it: a plain word that YAML reads as a string.
fn is_kind_word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter().all(u8::is_ascii_alphanumeric)
        && !crate::yaml::resolves_non_string(s)
}

#[cfg(test)]
mod tests {
    use super::scan;
    use crate::yaml::{manifest_head, Head};

    /// Whatever `scan` accepts, the full parse reads the same way.
    fn agrees(doc: &str) -> bool {
        let Some((kind, hook)) = scan(doc) else {
            return false;
        };
        match manifest_head(doc) {
            Ok(Head::Map { kind: k, hook: h }) => {
                assert_eq!((kind.as_str(), hook), (k.as_str(), h), "{doc:?}");
            }
            Ok(_) => panic!("scan accepted a non-map: {doc:?}"),
            Err(e) => panic!("scan accepted what the parse rejects ({e}): {doc:?}"),
        }
        true
    }

    #[test]
    fn reads_common_manifests() {
        for doc in [
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels:\n    app: \"y\"\ndata:\n  a: |\n    line\n\n      more\n  b: 'q''s'\n",
            "kind: Job\nmetadata:\n  annotations:\n    helm.sh/hook: pre-install\n    x: \"1\"\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        args: [\"--x\", 'y', z]\n        ports:\n          - containerPort: 80\n            protocol: TCP\n        probe: {path: /healthz, port: http}\n",
            "kind: Role\nrules:\n- apiGroups: [\"\"]\n  resources: [\"pods\",\"services\"]\n  verbs:\n  - get\n- - nested\n  - 2\n",
            "kind: A\n# comment\nmetadata:\n  annotations: {}\n  labels: []\nspec:\n  replicas: 3\n  ratio: 1.5\n  on: yes\n  empty:\n  x: -1\n",
            "kind: A\nmetadata:\n  annotations:\n    helm.sh/hook: x\n  annotations: {}\n",
            "kind: A\nmetadata:\n  annotations:\n    helm.sh/hook: x\nmetadata: null\n",
            "kind: A\nkind: B\n",
            "kind: A\ndata:\n  f: >-\n    folded\n    text\n  g: |+\n\n    x\n\n",
            "kind: A\nx: |\n  a\n # between\ny: 1\n",
            "kind: A\nx: héllo wörld\n",
        ] {
            assert!(agrees(doc), "not accepted: {doc:?}");
        }
    }

    #[test]
    fn leaves_hard_cases_to_the_parser() {
        for doc in [
            "kind: A\nx: .inf\n",
            "kind: A\nx: [.nan]\n",
            "kind: A\nx: 1e999\n",
            "kind: A\nnull: 1\n",
            "kind: A\n<<: {a: 1}\n",
            "kind: A\nx: &a 1\ny: *a\n",
            "kind: A\nx: !!str 1\n",
            "kind: A\nx: a: b\n",
            "kind: A\nx: y\n  z\n",
            "kind: A\nx:\n- a\n b: c\n",
            "kind: A\nx:\n  - a\n  b: c\n",
            "kind: A\n  y: 1\n",
            "kind: A\nx: \"multi\n  line\"\n",
            "kind: A\nx: [a,\n  b]\n",
            "kind: A\nx: |\n\n     \n  a\n",
            "kind: A\nx: |2\n   a\n",
            "kind: A\nx:\ty\n",
            "kind: 1\n",
            "kind: \"A\"\n",
            "- a\n",
            "a\n",
            "kind: A\n---\nkind: B\n",
            "kind: A\nx: \"\\x41\"\n",
            "kind: A\nx: [a, b,]\n",
            "kind: A\nx: {a:b}\n",
            "kind: A\nx: [a: b]\n",
            "kind: A\nx: y\u{85}z\n",
            "kind: Job\nmetadata:\n  annotations:\n    \"x\": y\n",
        ] {
            assert!(scan(doc).is_none(), "accepted: {doc:?}");
        }
    }

    /// Whatever `parse_map` accepts, the full parse reads the same way.
    fn same_value(doc: &str) -> bool {
        let Some(v) = super::parse_map(doc) else {
            return false;
        };
        match crate::yaml::from_yaml_str_go_full(doc) {
            Ok(full) => {
                assert!(v == full, "{doc:?}: {v:?} != {full:?}");
                assert_eq!(format!("{v:?}"), format!("{full:?}"), "{doc:?}");
            }
            Err(e) => panic!("parse_map accepted what the parse rejects ({e}): {doc:?}"),
        }
        true
    }

    #[test]
    fn builds_values_like_the_full_parse() {
        for doc in [
            "a: 1\nb: -2\nc: 1.50\nd: 0\ne: 0.5\nf: yes\ng: Off\nh: ~\ni: null\nj: true\nk: x y\nl: -x\nm: --name={{ .R }}-c\n",
            "a: \"q\\n\\\"x\\\" \\/ \\t\"\nb: 'it''s'\nc: [a, \"b\", 'c', 1, yes, [x], {k: v}]\nd: {a: 1, b: [2]}\ne: []\nf: {}\n",
            "# head\na: # c\n  b: 1 # c\n  c: \"x\" # c\n  d: [1] # c\nl:\n- a\n- b: 1\n  c: 2\n-\n  - x\n- - y\n  - z\nm:\n  - 1\n",
            "a: |\n  line 1\n    more\n\n  end\nb: |-\n  x\n\nc: |+\n  y\n\n\nd: 1\n",
            "a: |\n  x  \n  y\ne: |+\n  z\n",
            "a: |\n  x\n",
            "a:\nb:\n  c:\n",
            "a: 1\na: 2\n",
            "a: 123456789012345\nb: 2024-01-01x\nc: 1.2.3\nd: 10Gi\ne: 500m\nf: héllo\n",
        ] {
            assert!(same_value(doc), "not accepted: {doc:?}");
        }
        for doc in [
            "a: |\n  x",
            "a: >\n  x\n",
            "a: |\n\n  x\n",
            "a: |\n  x\n   \nb: 1\n",
            "on: 1\n",
            "1: x\n",
            "a: 0755\n",
            "a: +1\n",
            "a: -0\n",
            "a: 1.\n",
            "a: 1e3\n",
            "a: 2024-01-01\n",
            "a: 1_000\n",
            "a: 0x1f\n",
            "a: \"\\x41\"\n",
            "- a\n",
            "",
            "# only\n",
        ] {
            assert!(super::parse_map(doc).is_none(), "accepted: {doc:?}");
        }
    }

    /// Whatever `parse_map_core` accepts, the YAML 1.2 parse reads the same.
    fn same_core_value(doc: &str) -> bool {
        let Some(v) = super::parse_map_core(doc) else {
            return false;
        };
        match crate::yaml::from_yaml_str_full(doc) {
            Ok(full) => {
                assert!(v == full, "{doc:?}: {v:?} != {full:?}");
                assert_eq!(format!("{v:?}"), format!("{full:?}"), "{doc:?}");
            }
            Err(e) => panic!("parse_map_core accepted what the parse rejects ({e}): {doc:?}"),
        }
        true
    }

    #[test]
    fn builds_core_values_like_the_yaml_1_2_parse() {
        for doc in [
            "apiVersion: v2\nname: x\nversion: 0.1.0\nappVersion: \"1.0\"\nkubeVersion: \">=1.20\"\ndependencies:\n  - name: common\n    version: 2.x.x\n    repository: file://../common\n    condition: common.enabled\n    tags: [a, b]\n",
            "a: yes\nb: on\nc: true\nd: ~\ne: 1\nf: 1.5\ng: [no, y]\n",
        ] {
            assert!(same_core_value(doc), "not accepted: {doc:?}");
        }
        for doc in ["a: 1\na: 2\n", "a: {b: 1, b: 2}\n"] {
            assert!(super::parse_map_core(doc).is_none(), "accepted: {doc:?}");
        }
    }

    #[test]
    fn builds_the_fixture_values_like_the_full_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut stack = vec![root];
        let mut accepted = 0;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    if same_value(&text) {
                        accepted += 1;
                    }
                    same_core_value(&text);
                }
            }
        }
        assert!(accepted > 10, "only {accepted} accepted");
    }

    /// Random documents from YAML-ish pieces: never accepted unless the
    /// full parse agrees.
    #[test]
    fn never_disagrees_with_the_full_parse() {
        const PIECES: &[&str] = &[
            "kind: Deployment",
            "kind: x",
            "metadata:",
            "annotations:",
            "helm.sh/hook: a",
            "a: b",
            "a:",
            "- a",
            "-",
            "- a: 1",
            "- - b",
            "x: |",
            "x: >-",
            "x: |-",
            "x: |+",
            "  text  ",
            "x: a # c",
            "x: \"q\" # c",
            "x: -a",
            "x: 007",
            "x: 0.5",
            "x: [yes, 1, {a: b}]",
            "text",
            "# c",
            "",
            "  ",
            "x: [a, \"b\"]",
            "x: {a: 1}",
            "x: 'q'",
            "x: \"q\\n\"",
            "x: 1.5",
            "x: .inf",
            "x: 0x1F",
            "- |",
            "b: 2",
            "c: -",
            "d: :x",
            "e: ?x",
            "f: a:b",
            "1: x",
            "x: [",
            "x: 1:2",
            "y: 2024-01-01",
            "z: ~",
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..50000 {
            let mut doc = String::from("kind: A\n");
            for _ in 0..next(8) + 1 {
                let indent = [0, 0, 1, 2, 2, 4, 6][next(7)];
                doc.push_str(&" ".repeat(indent));
                doc.push_str(PIECES[next(PIECES.len())]);
                doc.push('\n');
            }
            if agrees(&doc) {
                accepted += 1;
            }
            let values = doc.replacen("kind: A\n", "", 1);
            same_value(&values);
            same_core_value(&values);
        }
        assert!(accepted > 1500, "only {accepted} accepted");
    }
}
