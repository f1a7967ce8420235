//! A fast YAML reader for the subset of YAML that Kubernetes manifests use.
//!
//! The render hot path spends most of its time turning YAML into `serde_json::Value`.
//! `yaml_serde` goes through libyaml's event stream and serde's generic visitors, which
//! allocates per event and per scalar; this reader walks the bytes once and builds the
//! `Value` directly.
//!
//! It never decides anything `yaml_serde` would decide differently: whenever the text leaves
//! the subset it understands (anchors, aliases, tags, complex keys, merge keys, multi-line
//! plain or quoted scalars, tabs or CRs in structure, directives, unusual flow forms,
//! duplicate keys, deep nesting, any syntax error) it gives up with [`Fallback`] and the
//! callers re-read the whole text with `yaml_serde`. Errors are therefore always the slow
//! path's errors, and a successful fast read is checked against `yaml_serde` by the
//! differential tests below.

use serde_json::{Map, Number, Value};
use trueup_core::yaml::YamlError;

/// The text is outside the subset this reader handles; use `yaml_serde` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback;

type R<T> = Result<T, Fallback>;

/// `yaml_serde` stops at 128 nested collections; stay well below so we never accept a text
/// it would reject.
const MAX_DEPTH: usize = 100;

/// libyaml refuses simple keys longer than 1024 characters; stay below that.
const MAX_KEY_LEN: usize = 1000;

/// Drop-in for `trueup_core::yaml::parse_documents`: same result, same errors.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<Value>, YamlError> {
    match parse_stream(text) {
        Ok(docs) => Ok(docs.into_iter().filter(|d| !d.is_null()).collect()),
        Err(Fallback) => trueup_core::yaml::parse_documents(text, origin),
    }
}

/// Drop-in for `trueup_core::yaml::parse_objects` returning the objects' maps. Any document
/// that is not a valid object sends the whole text to the slow path, so its error (with the
/// document index) is exactly the one the slow path reports.
pub fn parse_objects(text: &str, origin: &str) -> Result<Vec<Map<String, Value>>, YamlError> {
    let slow = || {
        trueup_core::yaml::parse_objects(text, origin)
            .map(|objs| objs.into_iter().map(|o| o.0).collect())
    };
    let Ok(docs) = parse_stream(text) else {
        return slow();
    };
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        if doc.is_null() {
            continue;
        }
        if is_list(&doc) {
            let Value::Object(mut m) = doc else {
                return slow();
            };
            if let Some(Value::Array(items)) = m.remove("items") {
                for item in items {
                    match trueup_core::object::Object::from_value(item) {
                        Ok(o) => out.push(o.0),
                        Err(_) => return slow(),
                    }
                }
            }
            continue;
        }
        match trueup_core::object::Object::from_value(doc) {
            Ok(o) => out.push(o.0),
            Err(_) => return slow(),
        }
    }
    Ok(out)
}

/// Same test as `trueup_core::yaml`'s private `is_list`.
fn is_list(v: &Value) -> bool {
    v.get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array)
}

/// `TRUEUP_FASTYAML=0` turns the fast reader off (read once): a kill switch, and a way to
/// measure the `yaml_serde` path with the same binary.
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TRUEUP_FASTYAML").map_or(true, |v| v != "0"))
}

/// Parses every document of the stream (empty ones as `Value::Null`), or gives up.
pub fn parse_stream(text: &str) -> R<Vec<Value>> {
    if !enabled() {
        return Err(Fallback);
    }
    check_chars(text)?;
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
        depth: 0,
    };
    p.stream()
}

/// Characters whose handling in libyaml we do not reproduce: CR (line breaks other than LF),
/// control characters (libyaml rejects them), and among non-ASCII the C1 controls, NEL,
/// LS/PS (YAML 1.1 line breaks), BOMs and non-characters.
fn check_chars(text: &str) -> R<()> {
    // Branch-free over 64-byte blocks, so the compiler can vectorize the scan.
    let bad = |b: u8| ((b < 0x20) & (b != b'\n') & (b != b'\t')) | (b == 0x7f);
    if text
        .as_bytes()
        .chunks(64)
        .any(|block| block.iter().fold(false, |acc, &b| acc | bad(b)))
    {
        return Err(Fallback);
    }
    if !text.is_ascii() && has_unusual_chars(text.as_bytes()) {
        return Err(Fallback);
    }
    Ok(())
}

/// Whether UTF-8 text holds U+0080..U+009F, U+2028, U+2029, U+FEFF, U+FFFE or U+FFFF. Their
/// encodings start with 0xC2, 0xE2 or 0xEF: blocks without those bytes are skipped
/// branch-free, the others looked at byte by byte.
fn has_unusual_chars(b: &[u8]) -> bool {
    let lead = |c: u8| (c == 0xC2) | (c == 0xE2) | (c == 0xEF);
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    for (k, block) in b.chunks(64).enumerate() {
        if !block.iter().fold(false, |acc, &c| acc | lead(c)) {
            continue;
        }
        for (j, &c) in block.iter().enumerate() {
            let i = k * 64 + j;
            let hit = match c {
                0xC2 => (0x80..=0x9F).contains(&at(i + 1)),
                0xE2 => at(i + 1) == 0x80 && matches!(at(i + 2), 0xA8 | 0xA9),
                0xEF => matches!((at(i + 1), at(i + 2)), (0xBB, 0xBF) | (0xBF, 0xBE | 0xBF)),
                _ => false,
            };
            if hit {
                return true;
            }
        }
    }
    false
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    /// Between nodes this is always the start of a line.
    pos: usize,
    depth: usize,
}

fn is_ws_or_end(b: Option<&u8>) -> bool {
    matches!(b, None | Some(b'\n') | Some(b' ') | Some(b'\t'))
}

impl<'a> Parser<'a> {
    fn at(&self, i: usize) -> Option<&u8> {
        self.s.get(i)
    }

    fn line_end(&self, from: usize) -> usize {
        // `str::find` of an ASCII byte is a memchr.
        match self.text.get(from..) {
            Some(t) => t.find('\n').map_or(self.s.len(), |i| from + i),
            None => self.s[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.s.len(), |i| from + i),
        }
    }

    fn next_line(&self, from: usize) -> usize {
        let e = self.line_end(from);
        if e < self.s.len() {
            e + 1
        } else {
            e
        }
    }

    /// Whether a line starting at `ls` is a `---` or `...` marker.
    fn marker_at(&self, ls: usize) -> Option<u8> {
        let m = self.s.get(ls..ls + 3)?;
        if (m == b"---" || m == b"...") && is_ws_or_end(self.at(ls + 3)) {
            Some(m[0])
        } else {
            None
        }
    }

    /// Skips blank and comment lines. Returns the next content line as (column, content
    /// position), leaving `pos` at its line start; `None` at the end of the stream or at a
    /// document marker.
    fn peek(&mut self) -> R<Option<(usize, usize)>> {
        loop {
            let ls = self.pos;
            if ls >= self.s.len() {
                return Ok(None);
            }
            if self.marker_at(ls).is_some() {
                return Ok(None);
            }
            let mut i = ls;
            while self.at(i) == Some(&b' ') {
                i += 1;
            }
            match self.at(i) {
                None => {
                    self.pos = i;
                    return Ok(None);
                }
                Some(b'\n') | Some(b'#') => {
                    self.pos = self.next_line(i);
                }
                // Tabs in indentation are outside the subset (and often an error).
                Some(b'\t') => return Err(Fallback),
                Some(_) => return Ok(Some((i - ls, i))),
            }
        }
    }

    /// After a node on a line: only spaces and a comment may follow; moves to the next line.
    fn finish_line(&mut self, mut i: usize) -> R<()> {
        let had_space = i < self.s.len() && self.s[i] == b' ';
        while self.at(i) == Some(&b' ') {
            i += 1;
        }
        match self.at(i) {
            None => {
                self.pos = i;
                Ok(())
            }
            Some(b'\n') => {
                self.pos = i + 1;
                Ok(())
            }
            Some(b'#') if had_space => {
                self.pos = self.next_line(i);
                Ok(())
            }
            _ => Err(Fallback),
        }
    }

    fn stream(&mut self) -> R<Vec<Value>> {
        let mut docs = Vec::new();
        // After `...`, only `---` or the end may follow: a bare document there is a corner
        // we leave to libyaml. The same for `...` before any document.
        let mut closed = false;
        loop {
            self.peek()?;
            if self.pos >= self.s.len() {
                return Ok(docs);
            }
            match self.marker_at(self.pos) {
                Some(b'-') => {
                    self.finish_line(self.pos + 3)?;
                    docs.push(self.document()?);
                    closed = false;
                }
                Some(_) => {
                    if closed || docs.is_empty() {
                        return Err(Fallback);
                    }
                    self.finish_line(self.pos + 3)?;
                    closed = true;
                }
                // Content without `---` starts the first document only: after a document,
                // `peek` stops at markers, so content here means the start of the stream.
                None => {
                    if closed || !docs.is_empty() {
                        return Err(Fallback);
                    }
                    docs.push(self.document()?);
                }
            }
        }
    }

    /// One document's content, up to the next marker or the end.
    fn document(&mut self) -> R<Value> {
        let Some((col, p)) = self.peek()? else {
            return Ok(Value::Null);
        };
        let v = self.node_at(col, p, -1)?;
        if self.peek()?.is_some() {
            return Err(Fallback);
        }
        Ok(v)
    }

    /// A block node whose first character is at `p` (column `col`) on the current line.
    /// `parent` is the indentation of the enclosing collection (-1 at the top).
    fn node_at(&mut self, col: usize, p: usize, parent: isize) -> R<Value> {
        if self.s[p] == b'-' && is_ws_or_end(self.at(p + 1)) {
            return self.seq(col, p);
        }
        if let Some(first) = self.key_at(p)? {
            return self.map(col, first);
        }
        let (v, end) = self.inline_value(p, parent)?;
        if let Some(end) = end {
            self.finish_line(end)?;
        }
        // A more indented line now would continue a multi-line plain scalar.
        if let Some((c, _)) = self.peek()? {
            if c as isize > parent && c >= col {
                return Err(Fallback);
            }
        }
        Ok(v)
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Fallback);
        }
        Ok(())
    }

    /// A block sequence at column `col`; the first `-` is at `p`.
    fn seq(&mut self, col: usize, mut p: usize) -> R<Value> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            // `p` is at a `-` followed by whitespace or the end.
            let mut i = p + 1;
            while self.at(i) == Some(&b' ') {
                i += 1;
            }
            match self.at(i) {
                None | Some(b'\n') | Some(b'#') => {
                    if self.at(i) == Some(&b'#') && self.s[i - 1] != b' ' {
                        return Err(Fallback);
                    }
                    self.pos = self.next_line(i);
                    match self.peek()? {
                        Some((c, q)) if c > col => items.push(self.node_at(c, q, col as isize)?),
                        _ => items.push(Value::Null),
                    }
                }
                Some(b'\t') => return Err(Fallback),
                Some(_) => {
                    let c = col + (i - p);
                    items.push(self.node_at(c, i, col as isize)?);
                }
            }
            match self.peek()? {
                Some((c, q)) if c == col && self.s[q] == b'-' && is_ws_or_end(self.at(q + 1)) => {
                    p = q;
                }
                Some((c, _)) if c > col => return Err(Fallback),
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    /// If a mapping key starts at `p`, returns (key, position just after the `:`).
    fn key_at(&self, p: usize) -> R<Option<(String, usize)>> {
        let b = self.s[p];
        let (key, mut i) = match b {
            // A flow collection: a value (as a key it would be a complex key, and the line's
            // leftover `:` sends the text to the slow path).
            b'[' | b'{' => return Ok(None),
            b'"' | b'\'' => {
                let Ok((k, e)) = self.quoted(p) else {
                    // A quoted scalar that does not close on its line: not a key we handle.
                    return Err(Fallback);
                };
                (k, e)
            }
            _ => {
                // A plain key ends at `:` followed by whitespace or the end of the line, and
                // cannot cross a comment.
                // One pass to the colon, a comment or the end of the line.
                let mut j = p;
                let mut found = None;
                while j < self.s.len() {
                    match self.s[j] {
                        b'\n' => break,
                        b':' if is_ws_or_end(self.at(j + 1)) => {
                            found = Some(j);
                            break;
                        }
                        b'#' if j > p && self.s[j - 1] == b' ' => break,
                        _ => {}
                    }
                    j += 1;
                }
                let Some(colon) = found else {
                    return Ok(None);
                };
                let raw = self.text[p..colon].trim_end_matches(' ');
                if raw.is_empty()
                    || !plain_start_ok(raw.as_bytes(), false)
                    || raw.contains('\t')
                    || raw == "<<"
                    || raw.len() > MAX_KEY_LEN
                {
                    return Err(Fallback);
                }
                return Ok(Some((raw.to_string(), colon + 1)));
            }
        };
        while self.at(i) == Some(&b' ') {
            i += 1;
        }
        if self.at(i) == Some(&b':') && is_ws_or_end(self.at(i + 1)) {
            if key.len() > MAX_KEY_LEN {
                return Err(Fallback);
            }
            Ok(Some((key, i + 1)))
        } else {
            Ok(None)
        }
    }

    /// A block mapping at column `col`, whose first key the caller has read already.
    fn map(&mut self, col: usize, first: (String, usize)) -> R<Value> {
        self.enter()?;
        let mut m = Map::new();
        let mut next = Some(first);
        loop {
            let Some((key, after)) = next.take() else {
                return Err(Fallback);
            };
            let mut i = after;
            while self.at(i) == Some(&b' ') {
                i += 1;
            }
            let value = match self.at(i) {
                None | Some(b'\n') => {
                    self.pos = self.next_line(i);
                    self.block_value(col)?
                }
                Some(b'#') if self.s[i - 1] == b' ' => {
                    self.pos = self.next_line(i);
                    self.block_value(col)?
                }
                Some(b'\t') => return Err(Fallback),
                Some(_) => {
                    let (v, end) = self.inline_value(i, col as isize)?;
                    if let Some(end) = end {
                        self.finish_line(end)?;
                    }
                    v
                }
            };
            // yaml_serde into a serde_json map: do not guess how duplicates resolve.
            if m.insert(key, value).is_some() {
                return Err(Fallback);
            }
            match self.peek()? {
                Some((c, q)) if c == col => {
                    if self.s[q] == b'-' && is_ws_or_end(self.at(q + 1)) {
                        return Err(Fallback);
                    }
                    next = self.key_at(q)?;
                }
                Some((c, _)) if c > col => return Err(Fallback),
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(Value::Object(m))
    }

    /// The value of `key:` with nothing after the colon: a more indented node on the next
    /// lines, a sequence at the key's own column ("indentless"), or null.
    fn block_value(&mut self, key_col: usize) -> R<Value> {
        match self.peek()? {
            Some((c, q)) if c > key_col => self.node_at(c, q, key_col as isize),
            Some((c, q)) if c == key_col && self.s[q] == b'-' && is_ws_or_end(self.at(q + 1)) => {
                self.seq(c, q)
            }
            _ => Ok(Value::Null),
        }
    }

    /// A value that starts on the current line at `p`: a scalar, a flow collection or a
    /// block scalar. Returns the value and, unless the value consumed its lines itself (block
    /// scalars), the position right after it on the line.
    fn inline_value(&mut self, p: usize, parent: isize) -> R<(Value, Option<usize>)> {
        match self.s[p] {
            b'"' | b'\'' => {
                let (s, e) = self.quoted_folding(p, parent)?;
                Ok((Value::String(s), Some(e)))
            }
            b'[' | b'{' => {
                self.enter()?;
                let (v, e) = self.flow(p)?;
                self.depth -= 1;
                Ok((v, Some(e)))
            }
            b'|' | b'>' => Ok((Value::String(self.block_scalar(p, parent)?), None)),
            _ => {
                // One pass to a comment or the end of the line.
                let mut j = p;
                while j < self.s.len() {
                    match self.s[j] {
                        b'\n' => break,
                        b'#' if self.s[j - 1] == b' ' => break,
                        _ => j += 1,
                    }
                }
                let end = if j < self.s.len() && self.s[j] == b'#' {
                    usize::MAX
                } else {
                    j
                };
                let raw = self.text[p..j].trim_end_matches(' ');
                let rb = raw.as_bytes();
                if !plain_start_ok(rb, false)
                    || raw.contains('\t')
                    || raw.contains(": ")
                    || raw.ends_with(':')
                {
                    return Err(Fallback);
                }
                if j == end && parent >= 0 {
                    if let Some((folded, e)) = self.plain_continuation(raw, end, parent)? {
                        return Ok((resolve_plain(&folded)?, Some(e)));
                    }
                }
                Ok((resolve_plain(raw)?, Some(p + raw.len())))
            }
        }
    }

    /// The continuation lines of a plain scalar whose first line ends at `end` (a line break
    /// or the end): lines indented past `parent` fold into it as libyaml folds them (one
    /// break is a space, each further empty line a `\n`). Returns the folded text and the
    /// position after its last character, or `None` when the scalar is a single line.
    fn plain_continuation(
        &self,
        first: &str,
        end: usize,
        parent: isize,
    ) -> R<Option<(String, usize)>> {
        let mut folded: Option<String> = None;
        let mut last = end;
        let mut breaks = 0usize;
        let mut ls = end + 1;
        while ls < self.s.len() {
            let mut i = ls;
            while self.at(i) == Some(&b' ') {
                i += 1;
            }
            match self.at(i) {
                None => break,
                Some(b'\n') => {
                    breaks += 1;
                    ls = i + 1;
                    continue;
                }
                Some(b'\t') => return Err(Fallback),
                Some(b'#') => break,
                Some(_) => {}
            }
            if (i - ls) as isize <= parent {
                break;
            }
            let e = self.line_end(i);
            let line = self.text[i..e].trim_end_matches(' ');
            if line.contains(": ")
                || line.ends_with(':')
                || line.contains(" #")
                || line.contains('\t')
            {
                return Err(Fallback);
            }
            let t = folded.get_or_insert_with(|| first.to_string());
            if breaks == 0 {
                t.push(' ');
            }
            for _ in 0..breaks {
                t.push('\n');
            }
            breaks = 0;
            t.push_str(line);
            last = i + line.len();
            ls = e + 1;
        }
        Ok(folded.map(|t| (t, last)))
    }

    /// A quoted scalar in block context: a single-quoted one may span lines indented past
    /// `parent` (folded as libyaml folds them); anything else must close on its line.
    fn quoted_folding(&self, p: usize, parent: isize) -> R<(String, usize)> {
        if self.s[p] != b'\'' || parent < 0 {
            return self.quoted(p);
        }
        let mut out = String::new();
        let mut i = p + 1;
        let mut run = i;
        loop {
            let Some(&b) = self.at(i) else {
                return Err(Fallback);
            };
            match b {
                b'\'' => {
                    out.push_str(&self.text[run..i]);
                    if self.at(i + 1) == Some(&b'\'') {
                        out.push('\'');
                        i += 2;
                        run = i;
                    } else {
                        return Ok((out, i + 1));
                    }
                }
                b'\n' => {
                    out.push_str(&self.text[run..i]);
                    // Spaces before a break are dropped; one break folds to a space, each
                    // further (empty) line to a `\n`; the next line's indentation is dropped.
                    let kept = out.trim_end_matches([' ', '\t']).len();
                    out.truncate(kept);
                    let mut breaks = 0usize;
                    let mut ls = i + 1;
                    loop {
                        let mut j = ls;
                        while self.at(j) == Some(&b' ') {
                            j += 1;
                        }
                        match self.at(j) {
                            None | Some(b'\t') => return Err(Fallback),
                            Some(b'\n') => {
                                breaks += 1;
                                ls = j + 1;
                            }
                            Some(_) => {
                                if (j - ls) as isize <= parent {
                                    return Err(Fallback);
                                }
                                i = j;
                                break;
                            }
                        }
                    }
                    if breaks == 0 {
                        out.push(' ');
                    }
                    for _ in 0..breaks {
                        out.push('\n');
                    }
                    run = i;
                }
                _ => i += 1,
            }
        }
    }

    /// A single- or double-quoted scalar closed on the same line. Returns the text and the
    /// position after the closing quote.
    fn quoted(&self, p: usize) -> R<(String, usize)> {
        let q = self.s[p];
        let mut out = String::new();
        let mut i = p + 1;
        let mut run = i;
        loop {
            let Some(&b) = self.at(i) else {
                return Err(Fallback);
            };
            match b {
                b'\n' => return Err(Fallback),
                b'\'' if q == b'\'' => {
                    out.push_str(&self.text[run..i]);
                    if self.at(i + 1) == Some(&b'\'') {
                        out.push('\'');
                        i += 2;
                        run = i;
                    } else {
                        return Ok((out, i + 1));
                    }
                }
                b'"' if q == b'"' => {
                    out.push_str(&self.text[run..i]);
                    return Ok((out, i + 1));
                }
                b'\\' if q == b'"' => {
                    out.push_str(&self.text[run..i]);
                    let Some(&e) = self.at(i + 1) else {
                        return Err(Fallback);
                    };
                    let mut hex = 0;
                    match e {
                        b'0' => out.push('\0'),
                        b'a' => out.push('\u{07}'),
                        b'b' => out.push('\u{08}'),
                        b't' | b'\t' => out.push('\t'),
                        b'n' => out.push('\n'),
                        b'v' => out.push('\u{0b}'),
                        b'f' => out.push('\u{0c}'),
                        b'r' => out.push('\r'),
                        b'e' => out.push('\u{1b}'),
                        b' ' => out.push(' '),
                        b'"' => out.push('"'),
                        b'/' => out.push('/'),
                        b'\\' => out.push('\\'),
                        b'N' => out.push('\u{85}'),
                        b'_' => out.push('\u{a0}'),
                        b'L' => out.push('\u{2028}'),
                        b'P' => out.push('\u{2029}'),
                        b'x' => hex = 2,
                        b'u' => hex = 4,
                        b'U' => hex = 8,
                        // Line continuations and unknown escapes: the slow path decides.
                        _ => return Err(Fallback),
                    }
                    i += 2;
                    if hex > 0 {
                        let digits = self.s.get(i..i + hex).ok_or(Fallback)?;
                        if !digits.iter().all(u8::is_ascii_hexdigit) {
                            return Err(Fallback);
                        }
                        let code = u32::from_str_radix(&self.text[i..i + hex], 16)
                            .map_err(|_| Fallback)?;
                        out.push(char::from_u32(code).ok_or(Fallback)?);
                        i += hex;
                    }
                    run = i;
                }
                _ => i += 1,
            }
        }
    }

    /// A simple flow collection on one line: `[a, "b", {c: d}]`, `{a: 1, b: [x]}`.
    fn flow(&mut self, p: usize) -> R<(Value, usize)> {
        let close = if self.s[p] == b'[' { b']' } else { b'}' };
        let is_map = close == b'}';
        let mut i = self.flow_ws(p + 1)?;
        let mut arr = Vec::new();
        let mut m = Map::new();
        loop {
            if self.at(i) == Some(&close) {
                break;
            }
            if is_map {
                let (k, e) = self.flow_scalar_text(i)?;
                let mut j = self.flow_ws(e)?;
                if self.at(j) != Some(&b':') || !matches!(self.at(j + 1), Some(b' ')) {
                    return Err(Fallback);
                }
                j = self.flow_ws(j + 1)?;
                let (v, e) = self.flow_node(j)?;
                if k.len() > MAX_KEY_LEN || k == "<<" || m.insert(k, v).is_some() {
                    return Err(Fallback);
                }
                i = self.flow_ws(e)?;
            } else {
                let (v, e) = self.flow_node(i)?;
                arr.push(v);
                i = self.flow_ws(e)?;
            }
            match self.at(i) {
                Some(b',') => i = self.flow_ws(i + 1)?,
                Some(&c) if c == close => break,
                _ => return Err(Fallback),
            }
        }
        let v = if is_map {
            Value::Object(m)
        } else {
            Value::Array(arr)
        };
        Ok((v, i + 1))
    }

    /// Spaces inside a flow collection; a line break or comment there is outside the subset.
    fn flow_ws(&self, mut i: usize) -> R<usize> {
        while self.at(i) == Some(&b' ') {
            i += 1;
        }
        match self.at(i) {
            None | Some(b'\n') | Some(b'#') | Some(b'\t') => Err(Fallback),
            _ => Ok(i),
        }
    }

    fn flow_node(&mut self, i: usize) -> R<(Value, usize)> {
        match self.s[i] {
            b'[' | b'{' => {
                self.enter()?;
                let r = self.flow(i)?;
                self.depth -= 1;
                Ok(r)
            }
            b'"' | b'\'' => {
                let (s, e) = self.quoted(i)?;
                Ok((Value::String(s), e))
            }
            _ => {
                let (raw, e) = self.flow_plain(i, false)?;
                Ok((resolve_plain(raw)?, e))
            }
        }
    }

    /// A flow map key: its text as yaml_serde gives it to a string key.
    fn flow_scalar_text(&self, i: usize) -> R<(String, usize)> {
        match self.s[i] {
            b'"' | b'\'' => self.quoted(i),
            b'[' | b'{' => Err(Fallback),
            _ => {
                let (raw, e) = self.flow_plain(i, true)?;
                Ok((raw.to_string(), e))
            }
        }
    }

    /// A plain scalar inside a flow collection. Conservative: no `:` or `#` at all, except
    /// the `: ` that ends a key (`key` set).
    fn flow_plain(&self, i: usize, key: bool) -> R<(&'a str, usize)> {
        let mut j = i;
        while let Some(&b) = self.at(j) {
            match b {
                b',' | b']' | b'}' | b'\n' => break,
                b':' if key && self.at(j + 1) == Some(&b' ') => break,
                b':' | b'#' | b'[' | b'{' | b'\t' => return Err(Fallback),
                _ => j += 1,
            }
        }
        let raw = self.text[i..j].trim_end_matches(' ');
        // In flow context libyaml reads a leading `?` or `:` as an indicator even without
        // a following space.
        if raw.is_empty() || !plain_start_ok(raw.as_bytes(), true) || raw.starts_with(['?', ':']) {
            return Err(Fallback);
        }
        Ok((raw, i + raw.len()))
    }

    /// A block scalar whose indicator (`|` or `>`) is at `p`, following libyaml's
    /// `yaml_parser_scan_block_scalar`. Leaves `pos` at the line that ends it.
    fn block_scalar(&mut self, p: usize, parent: isize) -> R<String> {
        let literal = self.s[p] == b'|';
        let mut i = p + 1;
        let mut chomp = 0i8; // -1 strip, 0 clip, +1 keep
        let mut increment = 0usize;
        for _ in 0..2 {
            match self.at(i) {
                Some(b'+') if chomp == 0 => chomp = 1,
                Some(b'-') if chomp == 0 => chomp = -1,
                Some(&d @ b'1'..=b'9') if increment == 0 => increment = (d - b'0') as usize,
                _ => break,
            }
            i += 1;
        }
        // The rest of the header line: spaces and a comment only.
        let had_space = self.at(i) == Some(&b' ');
        while self.at(i) == Some(&b' ') {
            i += 1;
        }
        match self.at(i) {
            None | Some(b'\n') => {}
            Some(b'#') if had_space => {}
            _ => return Err(Fallback),
        }
        i = self.next_line(i);
        let min = if parent >= 0 { parent as usize + 1 } else { 1 };
        let mut indent = if increment > 0 {
            if parent >= 0 {
                parent as usize + increment
            } else {
                increment
            }
        } else {
            0
        };

        let mut out = String::new();
        let mut trailing_breaks = String::new();
        // Leading breaks, and the indentation when it is not given.
        let (mut col, mut j) = self.block_breaks(i, &mut indent, min, &mut trailing_breaks)?;
        let mut leading_break = false;
        let mut leading_blank = false;
        while col == indent && j < self.s.len() {
            let trailing_blank = matches!(self.s[j], b' ' | b'\t');
            if !literal && leading_break && !leading_blank && !trailing_blank {
                if trailing_breaks.is_empty() {
                    out.push(' ');
                }
            } else if leading_break {
                out.push('\n');
            }
            leading_break = false;
            out.push_str(&trailing_breaks);
            trailing_breaks.clear();
            leading_blank = trailing_blank;
            let e = self.line_end(j);
            out.push_str(&self.text[j..e]);
            if e < self.s.len() {
                leading_break = true;
                j = e + 1;
            } else {
                j = e;
                col = 0;
                break;
            }
            (col, j) = self.block_breaks(j, &mut indent, min, &mut trailing_breaks)?;
        }
        let _ = col;
        if chomp != -1 && leading_break {
            out.push('\n');
        }
        if chomp == 1 {
            out.push_str(&trailing_breaks);
        }
        // `j` is inside the line that ended the scalar, after its indentation: go back to
        // its start so block parsing resumes there.
        let ls = self.s[..j]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |k| k + 1);
        self.pos = ls.max(i.min(self.s.len()));
        if self.pos > j {
            self.pos = j;
        }
        Ok(out)
    }

    /// libyaml's `yaml_parser_scan_block_scalar_breaks`: eats indentation and empty lines,
    /// recording a `\n` per empty line; sets `indent` if it is still unknown. Returns the
    /// column and position reached on the first line that has content (or the end).
    fn block_breaks(
        &self,
        mut j: usize,
        indent: &mut usize,
        min: usize,
        breaks: &mut String,
    ) -> R<(usize, usize)> {
        let mut max_indent = 0usize;
        loop {
            let ls = j;
            while self.at(j) == Some(&b' ') && (*indent == 0 || j - ls < *indent) {
                j += 1;
            }
            let col = j - ls;
            max_indent = max_indent.max(col);
            match self.at(j) {
                Some(b'\t') if col < *indent || *indent == 0 => return Err(Fallback),
                Some(b'\n') => {
                    breaks.push('\n');
                    j += 1;
                }
                None => {
                    if *indent == 0 {
                        *indent = max_indent.max(min);
                    }
                    return Ok((col, j));
                }
                Some(_) => {
                    if *indent == 0 {
                        // Leading empty lines indented past the first content line: libyaml
                        // keeps their spaces; leave that to it.
                        if max_indent > col {
                            return Err(Fallback);
                        }
                        *indent = col.max(min);
                    }
                    return Ok((col, j));
                }
            }
        }
    }
}

/// Whether a plain scalar may start like this (YAML's indicator rules, conservatively).
fn plain_start_ok(s: &[u8], flow: bool) -> bool {
    let Some(&c) = s.first() else {
        return false;
    };
    match c {
        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' => false,
        b'-' | b'?' | b':' => {
            let next = s.get(1);
            let ends = flow && matches!(next, Some(b',' | b']' | b'}'));
            let marker = c == b'-' && s.starts_with(b"---");
            !(is_ws_or_end(next) || ends || marker)
        }
        _ => true,
    }
}

/// Resolves a plain scalar into a `serde_json::Value` the way kustomize sees it: go-yaml v3
/// resolution, which kustomize's JSON round trip turns into the printed value. It is
/// yaml_serde's except for integers: underscores are dropped and Go's integer syntax applies,
/// so `0755` is octal (493), `0X1F` and `0B101` are numbers, and `08` or `012e1` are floats.
fn resolve_plain(v: &str) -> R<Value> {
    if v.is_empty() || matches!(v, "null" | "Null" | "NULL" | "~") {
        return Ok(Value::Null);
    }
    match v {
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    // Most scalars are words: skip the number attempts unless the first byte could start one.
    let b0 = v.as_bytes()[0];
    if !(b0.is_ascii_digit() || matches!(b0, b'+' | b'-' | b'.')) {
        return Ok(Value::String(v.to_string()));
    }
    let plain: std::borrow::Cow<str> = if v.contains('_') {
        v.replace('_', "").into()
    } else {
        v.into()
    };
    if let Some(n) = go_parse_int(&plain) {
        return Ok(Value::Number(n));
    }
    // Beyond 64 bits the value depends on float formatting: leave it to yaml_serde.
    if parse_unsigned_int(&plain, u128::from_str_radix).is_some()
        || parse_negative_int(&plain, i128::from_str_radix).is_some()
    {
        return Err(Fallback);
    }
    if go_style_float(&plain) {
        if let Ok(f) = plain.parse::<f64>() {
            if f.is_finite() {
                return Ok(Number::from_f64(f).map_or(Value::Null, Value::Number));
            }
        }
        return Ok(Value::String(v.to_string()));
    }
    if let Some(f) = parse_f64(v) {
        // `.inf`, `.nan` and friends: serde_json's visitor turns non-finite floats into null.
        if !f.is_finite() {
            return Ok(Value::Null);
        }
    }
    Ok(Value::String(v.to_string()))
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`: an optional sign, then a
/// `0x`/`0o`/`0b` prefix (either case) or a leading `0` for octal, else decimal.
fn go_parse_int(s: &str) -> Option<Number> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let b = body.as_bytes();
    let (radix, digits) = if b.len() > 1 && b[0] == b'0' {
        match b[1] {
            b'x' | b'X' => (16, &body[2..]),
            b'o' | b'O' => (8, &body[2..]),
            b'b' | b'B' => (2, &body[2..]),
            _ => (8, &body[1..]),
        }
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let mag = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        if mag <= i64::MAX as u64 {
            Some(Number::from(-(mag as i64)))
        } else if mag == i64::MAX as u64 + 1 {
            Some(Number::from(i64::MIN))
        } else {
            None
        }
    } else if mag <= i64::MAX as u64 {
        Some(Number::from(mag as i64))
    } else if s.as_bytes()[0] == b'+' {
        // ParseUint takes no sign.
        None
    } else {
        Some(Number::from(mag))
    }
}

/// go-yaml's float syntax: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn go_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && matches!(b[i], b'+' | b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    } else {
        if !digits(&mut i) {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

// The four functions below are yaml_serde 0.10's (de.rs), copied so resolution matches bit
// for bit.

fn parse_unsigned_int<T>(
    scalar: &str,
    from_str_radix: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Option<T> {
    let unpositive = scalar.strip_prefix('+').unwrap_or(scalar);
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = unpositive.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(int) = from_str_radix(rest, radix) {
                return Some(int);
            }
        }
    }
    if unpositive.starts_with(['+', '-']) {
        return None;
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(unpositive, 10).ok()
}

fn parse_negative_int<T>(
    scalar: &str,
    from_str_radix: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Option<T> {
    for (prefix, radix) in [("-0x", 16), ("-0o", 8), ("-0b", 2)] {
        if let Some(rest) = scalar.strip_prefix(prefix) {
            let negative = format!("-{rest}");
            if let Ok(int) = from_str_radix(&negative, radix) {
                return Some(int);
            }
        }
    }
    if digits_but_not_number(scalar) {
        return None;
    }
    from_str_radix(scalar, 10).ok()
}

fn parse_f64(scalar: &str) -> Option<f64> {
    let unpositive = if let Some(unpositive) = scalar.strip_prefix('+') {
        if unpositive.starts_with(['+', '-']) {
            return None;
        }
        unpositive
    } else {
        scalar
    };
    if let ".inf" | ".Inf" | ".INF" = unpositive {
        return Some(f64::INFINITY);
    }
    if let "-.inf" | "-.Inf" | "-.INF" = scalar {
        return Some(f64::NEG_INFINITY);
    }
    if let ".nan" | ".NaN" | ".NAN" = scalar {
        return Some(f64::NAN.copysign(1.0));
    }
    if let Ok(float) = unpositive.parse::<f64>() {
        if float.is_finite() {
            return Some(float);
        }
    }
    None
}

fn digits_but_not_number(scalar: &str) -> bool {
    let scalar = scalar.strip_prefix(['-', '+']).unwrap_or(scalar);
    scalar.len() > 1 && scalar.starts_with('0') && scalar[1..].bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// What yaml_serde makes of a text: its non-null documents, or None on an error.
    fn slow(text: &str) -> Option<Vec<Value>> {
        trueup_core::yaml::parse_documents(text, "t").ok()
    }

    /// The fast reader must agree with yaml_serde or fall back. Returns whether it agreed
    /// (rather than fell back).
    fn check(text: &str) -> bool {
        let fast = parse_stream(text);
        let Ok(fast) = fast else { return false };
        let fast: Vec<Value> = fast.into_iter().filter(|d| !d.is_null()).collect();
        match slow(text) {
            Some(s) => assert!(
                fast.len() == s.len() && fast.iter().zip(&s).all(|(f, s)| agree(f, s)),
                "fast and yaml_serde differ on {text:?}: {fast:?} vs {s:?}"
            ),
            None => panic!("fast reader accepted what yaml_serde rejects: {text:?} -> {fast:?}"),
        }
        true
    }

    /// Equal, except where a plain scalar is a number for go-yaml (so for kustomize) but a
    /// string for yaml_serde: `012`, `1_000`, `0X1F`, `08`.
    fn agree(fast: &Value, slow: &Value) -> bool {
        match (fast, slow) {
            (Value::Array(f), Value::Array(s)) => {
                f.len() == s.len() && f.iter().zip(s).all(|(f, s)| agree(f, s))
            }
            (Value::Object(f), Value::Object(s)) => {
                f.len() == s.len()
                    && f.iter()
                        .all(|(k, fv)| s.get(k).is_some_and(|sv| agree(fv, sv)))
            }
            (Value::Number(_), Value::String(text)) => {
                resolve_plain(text.trim()).ok().as_ref() == Some(fast)
            }
            _ => fast == slow,
        }
    }

    #[test]
    fn integers_resolve_like_go_yaml() {
        for (text, want) in [
            ("k: 0755\n", serde_json::json!({"k": 493})),
            ("k: 00\n", serde_json::json!({"k": 0})),
            ("k: -012\n", serde_json::json!({"k": -10})),
            ("k: +012\n", serde_json::json!({"k": 10})),
            ("k: 1_000\n", serde_json::json!({"k": 1000})),
            ("k: 0X1F\n", serde_json::json!({"k": 31})),
            ("k: 0B101\n", serde_json::json!({"k": 5})),
            ("k: 0x_1F\n", serde_json::json!({"k": 31})),
            ("k: 08\n", serde_json::json!({"k": 8.0})),
            ("k: 012e1\n", serde_json::json!({"k": 120.0})),
            ("k: 1_0.5\n", serde_json::json!({"k": 10.5})),
            ("k: \"0755\"\n", serde_json::json!({"k": "0755"})),
            ("k: '1_000'\n", serde_json::json!({"k": "1_000"})),
            ("k: 0o8\n", serde_json::json!({"k": "0o8"})),
            ("k: 0x\n", serde_json::json!({"k": "0x"})),
        ] {
            assert_eq!(parse_stream(text).unwrap(), vec![want], "{text:?}");
        }
    }

    fn fast_ok(text: &str) {
        assert!(check(text), "expected the fast path for {text:?}");
    }

    fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                yaml_files(&p, out);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                let _ = t;
                out.push(p);
            }
        }
    }

    fn fixture_texts() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize");
        let mut files = Vec::new();
        yaml_files(&root, &mut files);
        files.sort();
        files
            .into_iter()
            .filter_map(|p| Some((p.display().to_string(), std::fs::read_to_string(&p).ok()?)))
            .collect()
    }

    #[test]
    fn unusual_characters_are_found_byte_wise() {
        let chars = [
            'a',
            ' ',
            '\n',
            'é',
            '\u{7f}',
            '\u{80}',
            '\u{9f}',
            '\u{a0}',
            '\u{2027}',
            '\u{2028}',
            '\u{2029}',
            '\u{202a}',
            '\u{feff}',
            '\u{fefe}',
            '\u{fffd}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{10000}',
            '’',
            '—',
            '€',
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 90) as usize;
            let text: String = (0..len)
                .map(|i| chars[((x >> (i % 50)) as usize + i * 7) % chars.len()])
                .collect();
            let expected = text.chars().any(|c| {
                matches!(
                    c,
                    '\u{80}'
                        ..='\u{9f}'
                            | '\u{2028}'
                            | '\u{2029}'
                            | '\u{feff}'
                            | '\u{fffe}'
                            | '\u{ffff}'
                )
            });
            assert_eq!(has_unusual_chars(text.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn agrees_with_yaml_serde_on_every_fixture() {
        let texts = fixture_texts();
        assert!(texts.len() > 50, "fixtures not found");
        let mut fast = 0;
        let mut fellback = Vec::new();
        for (name, text) in &texts {
            if check(text) {
                fast += 1;
            } else {
                fellback.push(name.as_str());
            }
        }
        eprintln!(
            "fast path on {fast}/{} fixture files; fell back on: {fellback:#?}",
            texts.len()
        );
        // Most fixtures are ordinary manifests: the fast path must take them.
        assert!(
            fast * 10 >= texts.len() * 8,
            "too many fallbacks: {fellback:?}"
        );
    }

    #[test]
    fn scalars_resolve_like_yaml_serde() {
        let scalars = [
            "1e3",
            "1E3",
            "1e+3",
            "1.5e-3",
            "0x1F",
            "0x1f",
            "-0x1F",
            "+0x1F",
            "0x",
            "0xg",
            "0o17",
            "-0o17",
            "0b101",
            "-0b101",
            "012",
            "-012",
            "+012",
            "0",
            "-0",
            "+0",
            "00",
            "0.0",
            "-0.0",
            "+1",
            "+-1",
            "-+1",
            "--1",
            ".5",
            "-.5",
            "+.5",
            "5.",
            "1_000",
            "1__0",
            "1.0_0",
            ".inf",
            ".Inf",
            ".INF",
            "-.inf",
            "+.inf",
            ".nan",
            ".NaN",
            ".NAN",
            "-.nan",
            "inf",
            "nan",
            "Infinity",
            "-Infinity",
            "NaN",
            "1e400",
            "-1e400",
            "1e-400",
            "~",
            "null",
            "Null",
            "NULL",
            "nULL",
            "true",
            "True",
            "TRUE",
            "tRUE",
            "false",
            "False",
            "FALSE",
            "yes",
            "no",
            "on",
            "off",
            "y",
            "n",
            "1:2",
            "12:30:00",
            "2001-12-14",
            "2001-12-14T21:59:43.10-05:00",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "340282366920938463463374607431768211456",
            "0x7FFFFFFFFFFFFFFF",
            "0xFFFFFFFFFFFFFFFF",
            "0x10000000000000000",
            "1.7976931348623157e308",
            "4.9e-324",
            "0.1",
            "3.14159",
            "1.",
            "1.e5",
            "e5",
            "1e",
            "-",
            "-a",
            "a-",
            "+",
            ".",
            "..",
            "1.2.3",
            "0x_1",
            "0b",
            "0o",
            "0o8",
            "0b2",
            "١٢",
            "１２",
            "12abc",
            "v1",
            "1.0.0",
            "1 2",
            "a b c",
            "http://x:80/y",
            "a:b",
            "?a",
            ":a",
            "-1",
            "- ",
            "'",
            "%x",
            "@x",
            "`x",
            "a#b",
            "a # b",
            "a  ",
            "100m",
            "1Gi",
            "0.5Gi",
            "1e3Mi",
            "+1e3",
            "-1e3",
            "0e0",
            "0.e0",
        ];
        let mut n_fast = 0;
        for s in scalars {
            for text in [
                format!("k: {s}\n"),
                format!("- {s}\n"),
                format!("k: [{s}]\n"),
                format!("k: {{a: {s}}}\n"),
                format!("{s}: v\n"),
                format!("k: '{s}'\n"),
                format!("k: \"{s}\"\n"),
                format!("k: |\n  {s}\n"),
                format!("k: >-\n  {s}\n"),
            ] {
                if check(&text) {
                    n_fast += 1;
                }
            }
        }
        assert!(n_fast > scalars.len() * 5, "{n_fast}");
        // The common forms must not fall back.
        for s in [
            "1e3", "0x1F", "012", "+1", ".5", "1_000", ".inf", ".nan", "~", "true",
        ] {
            fast_ok(&format!("k: {s}\n"));
        }
    }

    #[test]
    fn quoting_escapes_and_block_scalars() {
        let cases = [
            "k: 'it''s'\n",
            "k: ''\n",
            "k: \"\"\n",
            "k: \"a\\tb\\n\\\"q\\\" \\\\ \\/ \\x41 \\u00e9 \\U0001F600 \\0 \\e \\N \\_ \\L \\P\"\n",
            "k: \"\\ud800\"\n",
            "k: \"\\q\"\n",
            "k: \"a\\\n  b\"\n",
            "k: 'a\n  b'\n",
            "k: \"a # b\" # c\n",
            "k: 'x'#c\n",
            "k: |\n  a\n  b\n",
            "k: |-\n  a\n  b\n",
            "k: |+\n  a\n  b\n\n\n",
            "k: |\n  a\n\n  b\n\n",
            "k: >\n  a\n  b\n\n  c\n   d\n  e\n",
            "k: >-\n  a\n  b\n",
            "k: >+\n  a\n\n",
            "k: |2\n    a\n   b\n",
            "k: |1-\n  a\n",
            "k: |-2\n   a\n",
            "k: |\n\n\n  a\n",
            "k: |\n    \n  a\n",
            "k: |\n  a\n b\n",
            "k: |\nx: 1\n",
            "k: |\n",
            "k: |+\n\n\n",
            "k: |\n  a\n# c\nj: 1\n",
            "k: |\n  a\tb\n\t\n",
            "k: | # c\n  a\n",
            "k: |x\n  a\n",
            "- |\n  a\n- >\n  b\n  c\n",
            "- - |\n    a\n  - b\n",
            "k: |\n  a\n  b",
            "k: >\n  a\n  b",
            "|\n a\n",
            "k: >\n\n  a\n\n\n  b\n  \n",
            "k: >\n  a\n   more\n  b\n",
            "k:\n  - a: |\n      x\n    b: 1\n",
        ];
        for c in cases {
            check(c);
        }
        fast_ok("k: 'it''s'\n");
        // Long strings folded over several lines, as older CRD generators write them.
        fast_ok("a:\n  description: one two\n    three\n\n    four  \n      five\n  type: x\n");
        fast_ok("- a b\n  c\n- d\n");
        fast_ok("k:\n  x y\n  z\nn: 1\n");
        fast_ok("a:\n  d: 'it''s a\n    long one ''q''  \n\n\n    end'\n  t: 1\n");
        fast_ok("d: '  lead\n  x'\n");
        for c in [
            "a: b\n  c: d\n",
            "a: b\n  c # x\n",
            "a: b\n# c\n  d\n",
            "a: 'b\nc'\n",
            "a: 'b\n\tc'\n",
            "- 'a\n  b'\n",
            "a: 'b\n---\n  c'\n",
            "a: b\n  c:\n",
        ] {
            check(c);
        }
        fast_ok("k: |+\n  a\n  b\n\n\n");
        fast_ok("k: >\n  a\n  b\n\n  c\n   d\n  e\n");
    }

    #[test]
    fn structure() {
        let cases = [
            "a: 1\nb:\n  c: 2\n  d:\n  - x\n  - y\n  e: [1, 2]\n",
            "a:\n- 1\n- 2\nb: 3\n",
            "a:\n  - 1\n  - 2\nb: 3\n",
            "- a: 1\n  b: 2\n- c: 3\n",
            "- - a\n  - b\n- - c\n",
            "-\n- a\n-\n",
            "a:\nb:\n",
            "a: 1\na: 2\n",
            "a: 1\n  b: 2\n",
            "a: b\n  c\n",
            "- a\n  b\n",
            "a: b: c\n",
            "a: - b\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "? a\n: b\n",
            "<<: {a: 1}\n",
            "a: {b: 1, c: [x, 'y', \"z\"], d: {}}\n",
            "a: [a, b,]\n",
            "a: [a,,b]\n",
            "a: [a: b]\n",
            "a: {a}\n",
            "a: [\n  b]\n",
            "a: {\"b\": 1}\n",
            "a: [http://x]\n",
            "---\na: 1\n---\nb: 2\n",
            "---\n---\n",
            "a: 1\n...\n---\nb: 2\n...\n",
            "a: 1\n...\nb: 2\n",
            "--- a\n",
            "--- # c\na: 1\n",
            "%YAML 1.2\n---\na: 1\n",
            "",
            "\n\n# c\n",
            "# c\na: 1 # c\n# d\nb: 2\n",
            "  a: 1\n  b: 2\n",
            "a:\n\tb: 1\n",
            "a:\tb\n",
            "a: 1\r\nb: 2\r\n",
            "\u{feff}a: 1\n",
            "a: 1\u{85}\n",
            "\"a b\": 1\n'c': 2\n1: 3\nnull: 4\ntrue: 5\n~: 6\n",
            ": a\n",
            "a :b\n",
            "a : b\n",
            "- [a, b]\n- {c: d}\n",
            "[a, b]\n",
            "{a: b}\n",
            "a\n",
            "a\nb\n",
            "'a'\n",
            "-1\n",
            "a: b\n- c\n",
            "- a\nb: c\n",
            "a:\n  b: 1\n c: 2\n",
            "a:\n    - 1\n  - 2\n",
            "a: é\nb: 日本\n",
            "a: --- \n",
            "a: ---\n",
            "---a: 1\n",
            "a:\n  - b\n  -\n  - c\n",
            "a:   \n  b\n",
            "key: value with spaces   \n",
            "a: 'x' 'y'\n",
            "a: [b] c\n",
            "a: {b: 1} # c\n",
        ];
        for c in cases {
            check(c);
        }
        fast_ok("a: 1\nb:\n  c: 2\n  d:\n  - x\n  - y\n  e: [1, 2]\n");
        fast_ok("---\na: 1\n---\nb: 2\n");
        fast_ok("- [a, b]\n- {c: d}\n");
    }

    /// A tiny deterministic generator (no extra dependency for tests).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const WORDS: &[&str] = &[
        "a",
        "name",
        "app",
        "1",
        "0x1F",
        "012",
        "1e3",
        "true",
        "no",
        "null",
        "~",
        "",
        " ",
        "a b",
        "a: b",
        "a #b",
        "- x",
        "'q'",
        "\"d\"",
        "\\",
        "\t",
        "\n",
        "multi\nline\n",
        "trail\n\n",
        " lead",
        "é",
        "1.5",
        "-1",
        ".inf",
        "{x}",
        "[y]",
        "*a",
        "&b",
        "!c",
        "%",
        "@",
        "`",
        "?",
        ":",
        "-",
        "---",
        "...",
        "#",
        "long long long long long long long long long long long",
    ];

    fn gen_value(r: &mut Rng, depth: usize) -> Value {
        match if depth > 3 { r.below(4) } else { r.below(7) } {
            0 => Value::String(WORDS[r.below(WORDS.len())].to_string()),
            1 => Value::from(r.next() as i64 >> r.below(64)),
            2 => Value::from((r.next() % 100_000) as f64 / 7.0),
            3 => [Value::Null, Value::Bool(true), Value::Bool(false)][r.below(3)].clone(),
            4 | 5 => {
                let mut m = Map::new();
                for _ in 0..r.below(5) {
                    m.insert(
                        WORDS[r.below(WORDS.len())].to_string(),
                        gen_value(r, depth + 1),
                    );
                }
                Value::Object(m)
            }
            _ => Value::Array((0..r.below(4)).map(|_| gen_value(r, depth + 1)).collect()),
        }
    }

    #[test]
    fn generated_documents_round_trip_through_both_emitters() {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let mut fast = 0;
        for _ in 0..3000 {
            let mut m = Map::new();
            for _ in 0..1 + r.below(4) {
                m.insert(
                    WORDS[r.below(WORDS.len())].to_string(),
                    gen_value(&mut r, 0),
                );
            }
            let ours = super::super::emit::map_to_string(&m);
            let theirs = serde_yaml::to_string(&Value::Object(m.clone())).unwrap();
            for text in [&ours, &theirs] {
                if check(text) {
                    fast += 1;
                }
            }
        }
        assert!(fast > 3000, "{fast}");
    }

    #[test]
    fn random_bytes_and_mutations_never_panic_and_never_disagree() {
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        let alphabet = b"ab1 :-#'\"|>[]{},.\n\n  \t\\&*!?~0x";
        for _ in 0..20_000 {
            let len = r.below(40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[r.below(alphabet.len())])
                .collect();
            check(&String::from_utf8_lossy(&bytes));
        }
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..r.below(30)).map(|_| r.next() as u8).collect();
            check(&String::from_utf8_lossy(&bytes));
        }
        let texts = fixture_texts();
        for (_, text) in texts.iter().filter(|(_, t)| t.len() < 4000) {
            for _ in 0..60 {
                let mut b = text.as_bytes().to_vec();
                for _ in 0..1 + r.below(3) {
                    if b.is_empty() {
                        break;
                    }
                    let i = r.below(b.len());
                    match r.below(3) {
                        0 => {
                            b.remove(i);
                        }
                        1 => b.insert(i, alphabet[r.below(alphabet.len())]),
                        _ => b[i] = alphabet[r.below(alphabet.len())],
                    }
                }
                check(&String::from_utf8_lossy(&b));
            }
        }
    }
}
