//! A quick reading of a rendered manifest's `kind` and hook flag for the
//! plain block YAML that templates almost always produce, so that most
//! documents skip the full YAML parser (see [`crate::yaml::manifest_head`]).
//!
//! It accepts only a conservative subset: block mappings and sequences
//! indented with spaces, plain keys, one-line plain or quoted scalars,
//! literal/folded block scalars without an indentation indicator, and
//! one-line flow collections of such scalars. A document it accepts is one
//! the full parse accepts as a mapping with the same kind and hook flag;
//! anything else (tabs, anchors, tags, multi-line flow or quoted scalars,
//! numbers that might overflow, comments after values, ...) gets `None`
//! and goes the slow way, which also produces Helm's errors.

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
}

enum Val<'a> {
    Plain(&'a str),
    /// A mapping: whether it holds (at the annotations level) `helm.sh/hook`.
    Map(bool),
    Null,
    Other,
}

struct Scanner<'a> {
    lines: Vec<Line<'a>>,
    i: usize,
}

/// `Some((kind, hook))` when `doc` is in the accepted subset and is a
/// mapping; `None` when the full parse has to decide.
pub(crate) fn scan(doc: &str) -> Option<(String, bool)> {
    if !chars_ok(doc) {
        return None;
    }
    let mut lines = Vec::with_capacity(doc.len() / 24 + 1);
    for raw in doc.split('\n') {
        let body = raw.trim_start_matches(' ');
        let indent = raw.len() - body.len();
        let text = body.trim_end_matches(' ');
        // Document markers and directives end or start documents.
        if indent == 0
            && (text.starts_with("---") || text.starts_with("...") || text.starts_with('%'))
        {
            return None;
        }
        lines.push(Line { indent, text });
    }
    let mut s = Scanner { lines, i: 0 };
    let first = s.peek()?;
    if first.indent != 0 || is_seq_line(first.text) {
        return None;
    }
    let (kind, hook) = s.mapping(0, Level::Top)?;
    if s.peek().is_some() {
        return None;
    }
    Some((kind?, hook))
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

/// A plain key that reads back as a non-null string or a small integer.
fn key_ok(k: &str) -> bool {
    let b = k.as_bytes();
    if b[0].is_ascii_alphabetic() || b[0] == b'_' {
        !matches!(k, "null" | "Null" | "NULL")
    } else {
        b.len() <= 18 && b.iter().all(u8::is_ascii_digit)
    }
}

/// `key:` or `key: rest` with a plain key of safe characters.
fn split_key(t: &str) -> Option<(&str, &str)> {
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
    key_ok(key).then(|| (key, &t[j + 1..]))
}

/// A plain scalar (already trimmed) that cannot be a number JSON rejects
/// (`.inf`, `.nan`, an overflowing exponent) nor anything but one scalar.
fn plain_ok(s: &str, flow: bool) -> bool {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first)
        && !(first == b'-' && b.get(1).is_some_and(u8::is_ascii_digit))
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

fn skip_spaces(s: &[u8], mut j: usize) -> usize {
    while j < s.len() && s[j] == b' ' {
        j += 1;
    }
    j
}

/// End (exclusive) of a one-line flow collection starting at `s[j]`.
fn flow(s: &[u8], j: usize, depth: usize) -> Option<usize> {
    if depth > 8 {
        return None;
    }
    let (close, is_map) = match s[j] {
        b'[' => (b']', false),
        b'{' => (b'}', true),
        _ => return None,
    };
    let mut j = skip_spaces(s, j + 1);
    if s.get(j) == Some(&close) {
        return Some(j + 1);
    }
    loop {
        if is_map {
            let start = j;
            while j < s.len() && is_key_byte(s[j]) {
                j += 1;
            }
            if j == start || s.get(j) != Some(&b':') || s.get(j + 1) != Some(&b' ') {
                return None;
            }
            if !key_ok(std::str::from_utf8(&s[start..j]).ok()?) {
                return None;
            }
            j = skip_spaces(s, j + 2);
        }
        j = flow_item(s, j, depth)?;
        j = skip_spaces(s, j);
        match s.get(j) {
            Some(b',') => {
                j = skip_spaces(s, j + 1);
                // A trailing comma: rare, left to the full parse.
                if s.get(j) == Some(&close) {
                    return None;
                }
            }
            Some(&c) if c == close => return Some(j + 1),
            _ => return None,
        }
    }
}

fn flow_item(s: &[u8], j: usize, depth: usize) -> Option<usize> {
    match *s.get(j)? {
        b'"' => Some(j + double_quoted(&s[j..])?),
        b'\'' => Some(j + single_quoted(&s[j..])?),
        b'[' | b'{' => flow(s, j, depth + 1),
        _ => {
            let mut e = j;
            while e < s.len() && !b",]}".contains(&s[e]) {
                e += 1;
            }
            let tok = std::str::from_utf8(&s[j..e]).ok()?.trim_end_matches(' ');
            plain_ok(tok, true).then_some(e)
        }
    }
}

impl<'a> Scanner<'a> {
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

    /// A block mapping at column `n`: (kind if a plain word, hook flag).
    /// The kind is `None` when present but not a plain word.
    fn mapping(&mut self, n: usize, level: Level) -> Option<(Option<String>, bool)> {
        let (mut kind, mut hook) = (Some(String::new()), false);
        while let Some(line) = self.peek() {
            if line.indent < n {
                break;
            }
            if line.indent > n || is_seq_line(line.text) {
                return None;
            }
            let (key, rest) = split_key(line.text)?;
            self.i += 1;
            let next = match (level, key) {
                (Level::Top, "metadata") => Level::Metadata,
                (Level::Metadata, "annotations") => Level::Annotations,
                _ => Level::Skip,
            };
            if level == Level::Annotations && key == "helm.sh/hook" {
                hook = true;
            }
            let v = self.value(rest, n, true, next)?;
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
        }
        Some((kind, hook))
    }

    /// The value after `key:` or `-` (`rest`, untrimmed), in a collection
    /// at column `n`.
    fn value(
        &mut self,
        rest: &'a str,
        n: usize,
        indentless: bool,
        level: Level,
    ) -> Option<Val<'a>> {
        let rest = rest.trim_start_matches(' ');
        if rest.is_empty() || rest.starts_with('#') {
            return match self.peek() {
                Some(l) if l.indent > n => self.block(l.indent, level),
                Some(l) if l.indent == n && indentless && is_seq_line(l.text) => {
                    self.sequence(n, true)?;
                    Some(Val::Other)
                }
                _ => Some(Val::Null),
            };
        }
        let b = rest.as_bytes();
        let end = match b[0] {
            b'|' | b'>' => {
                let h = b[1..]
                    .strip_prefix(b"-")
                    .or(b[1..].strip_prefix(b"+"))
                    .unwrap_or(&b[1..]);
                let after = skip_spaces(h, 0);
                if !(after == h.len() || (after > 0 && h[after] == b'#')) {
                    return None;
                }
                self.block_scalar(n)?;
                return Some(Val::Other);
            }
            b'"' => double_quoted(b)?,
            b'\'' => single_quoted(b)?,
            b'[' | b'{' => flow(b, 0, 0)?,
            _ => {
                return plain_ok(rest, false).then_some(Val::Plain(rest));
            }
        };
        (end == b.len()).then_some(Val::Other)
    }

    /// A block collection whose first line is at column `m`.
    fn block(&mut self, m: usize, level: Level) -> Option<Val<'a>> {
        let first = self.peek()?;
        if is_seq_line(first.text) {
            self.sequence(m, false)?;
            return Some(Val::Other);
        }
        let (_, hook) = self.mapping(m, level)?;
        Some(Val::Map(hook))
    }

    /// A block sequence at column `n`; `indentless` when it is a mapping
    /// value at the mapping's own column (it then ends at the next key).
    fn sequence(&mut self, n: usize, indentless: bool) -> Option<()> {
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
            if item.is_empty() || item.starts_with('#') {
                self.i += 1;
                self.value("", n, false, Level::Skip)?;
            } else if is_seq_line(item) || split_key(item).is_some() {
                // `- key: v` / `- - x`: a collection starting on this line,
                // at the column of its first item.
                let c = n + 1 + (after.len() - item.len());
                self.lines[self.i] = Line {
                    indent: c,
                    text: item,
                };
                self.block(c, Level::Skip)?;
            } else {
                self.i += 1;
                self.value(item, n, false, Level::Skip)?;
            }
        }
        Some(())
    }

    /// Skips a literal or folded scalar's lines (the header is consumed),
    /// in a collection at column `n`.
    fn block_scalar(&mut self, n: usize) -> Option<()> {
        let mut j = self.i;
        let mut max_blank = 0;
        while j < self.lines.len() && self.lines[j].text.is_empty() {
            max_blank = max_blank.max(self.lines[j].indent);
            j += 1;
        }
        let Some(first) = self.lines.get(j) else {
            self.i = j;
            return Some(());
        };
        let m = first.indent;
        if m <= n {
            // Empty scalar; the line belongs to the enclosing collection.
            self.i = j;
            return Some(());
        }
        // Leading blank lines wider than the content set the indentation.
        if max_blank > m {
            return None;
        }
        while let Some(l) = self.lines.get(j) {
            if !l.text.is_empty() && l.indent < m {
                break;
            }
            j += 1;
        }
        self.i = j;
        Some(())
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
            "kind: A\nx: a # c\n",
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
        }
        assert!(accepted > 1500, "only {accepted} accepted");
    }
}
