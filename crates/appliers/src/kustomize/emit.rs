//! A YAML emitter that writes exactly what `kubectl kustomize` (Kustomize v5) prints.
//!
//! Kustomize turns every resource into JSON and then marshals a Go `map[string]interface{}`
//! with go-yaml v3, so the output style is go-yaml's "Go value" path:
//! - keys sorted bytewise (serde_json's map order is the same),
//! - block mappings indented by two, block sequences *not* indented under their key,
//! - empty collections in flow style (`{}` / `[]`),
//! - a string is plain unless it would read back as something else (a number, a bool, null,
//!   a timestamp, or a YAML 1.1 bool such as `yes`/`n`, or a base-60 number like `1:20`), in
//!   which case it is double-quoted; strings with newlines become literal blocks;
//! - libyaml's scalar analysis then downgrades plain to single-quoted (indicators, leading or
//!   trailing spaces) and anything to double-quoted (tabs, control characters, characters
//!   outside the BMP, spaces before line breaks);
//! - long plain and quoted scalars are folded at spaces once past column 80.
//!
//! Numbers come from JSON, so they print the way Go's `encoding/json` prints a float64 or an
//! integer: `1.5`, `1000`, `1e+21`.

use serde_json::{Map, Number, Value};

/// go-yaml's `best_width`: folding starts at a space once the column is past this.
const BEST_WIDTH: usize = 80;

/// Writes a stream of documents separated by `---`, like `kubectl kustomize`.
pub fn documents_to_string<'a>(docs: impl IntoIterator<Item = &'a Map<String, Value>>) -> String {
    let mut e = Emitter::default();
    for (i, doc) in docs.into_iter().enumerate() {
        if i > 0 {
            e.raw("---\n");
        }
        e.document(doc);
    }
    e.out
}

/// `documents_to_string` for owned documents: each is dropped right after it is written,
/// while its memory is still in cache.
pub fn documents_into_string(docs: impl IntoIterator<Item = Map<String, Value>>) -> String {
    let mut e = Emitter::default();
    for (i, doc) in docs.into_iter().enumerate() {
        if i > 0 {
            e.raw("---\n");
        }
        e.document(&doc);
    }
    e.out
}

/// Writes one mapping as a YAML document.
pub fn map_to_string(doc: &Map<String, Value>) -> String {
    let mut e = Emitter::default();
    e.document(doc);
    e.out
}

#[derive(Default)]
struct Emitter {
    out: String,
    /// Column in characters (not bytes) of the write position, as libyaml counts it.
    column: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

impl Emitter {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
        match s.rfind('\n') {
            Some(i) => self.column = char_count(&s[i + 1..]),
            None => self.column += char_count(s),
        }
    }

    fn push(&mut self, c: char) {
        self.out.push(c);
        if c == '\n' {
            self.column = 0;
        } else {
            self.column += 1;
        }
    }

    fn spaces(&mut self, n: usize) {
        push_spaces(&mut self.out, n);
        self.column += n;
    }

    fn newline_indent(&mut self, indent: usize) {
        self.out.push('\n');
        self.column = 0;
        self.spaces(indent);
    }

    fn document(&mut self, doc: &Map<String, Value>) {
        if doc.is_empty() {
            self.raw("{}\n");
        } else {
            self.mapping(doc, 0, true);
        }
    }

    /// A block mapping whose keys sit at `indent`. With `first_inline`, the cursor is already
    /// at the place of the first key (after `- ` or at the start of a document).
    fn mapping(&mut self, map: &Map<String, Value>, indent: usize, first_inline: bool) {
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 || !first_inline {
                self.spaces(indent.saturating_sub(self.column));
            }
            self.key(k);
            self.push(':');
            self.value_after_indicator(v, indent, true);
        }
    }

    /// A block sequence with its dashes at `indent`.
    fn sequence(&mut self, seq: &[Value], indent: usize, first_inline: bool) {
        for (i, v) in seq.iter().enumerate() {
            if i > 0 || !first_inline {
                self.spaces(indent.saturating_sub(self.column));
            }
            self.raw("- ");
            match v {
                Value::Object(m) if !m.is_empty() => self.mapping(m, indent + 2, true),
                Value::Array(a) if !a.is_empty() => self.sequence(a, indent + 2, true),
                _ => {
                    self.scalar_value(v, indent + 2);
                    self.end_line();
                }
            }
        }
    }

    /// The value of a mapping entry, written after `key:`; `indent` is the key's indent.
    fn value_after_indicator(&mut self, v: &Value, indent: usize, _in_map: bool) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                self.push('\n');
                self.mapping(m, indent + 2, false);
            }
            // go-yaml writes sequences in a mapping "indentless": dashes under the key.
            Value::Array(a) if !a.is_empty() => {
                self.push('\n');
                self.sequence(a, indent, false);
            }
            _ => {
                self.push(' ');
                self.scalar_value(v, indent + 2);
                self.end_line();
            }
        }
    }

    fn end_line(&mut self) {
        if self.column != 0 || !self.out.ends_with('\n') {
            self.push('\n');
        }
    }

    fn scalar_value(&mut self, v: &Value, indent: usize) {
        match v {
            Value::Null => self.raw("null"),
            Value::Bool(true) => self.raw("true"),
            Value::Bool(false) => self.raw("false"),
            Value::Number(n) => {
                let s = format_number(n);
                self.raw(&s)
            }
            Value::String(s) => self.string(s, indent, false),
            Value::Object(_) => self.raw("{}"),
            Value::Array(_) => self.raw("[]"),
        }
    }

    fn key(&mut self, k: &str) {
        self.string(k, 0, true);
    }

    fn string(&mut self, s: &str, indent: usize, simple_key: bool) {
        let style = choose_style(s, simple_key);
        match style {
            Style::Plain => self.plain(s, indent, !simple_key),
            Style::Single => self.single_quoted(s, indent, !simple_key),
            Style::Double => self.double_quoted(s, indent, !simple_key),
            Style::Literal => self.literal(s, indent),
        }
    }

    fn plain(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        // Nearly every plain scalar ends before the folding column: then no break can happen
        // and the text goes out in one copy. A plain scalar has no line breaks: the column
        // moves by its length in characters.
        let width = char_count(s);
        if !allow_breaks || self.column + width <= BEST_WIDTH {
            self.out.push_str(s);
            self.column += width;
        } else {
            self.plain_runs(s, indent);
        }
    }

    /// Folds a long plain scalar at spaces past the folding column, copying the runs between
    /// fold points. Columns count characters (UTF-8 continuation bytes add none).
    fn plain_runs(&mut self, s: &str, indent: usize) {
        let b = s.as_bytes();
        let mut col = self.column;
        let mut start = 0;
        let mut spaces = false;
        for i in 0..b.len() {
            if b[i] == b' ' {
                if !spaces && col > BEST_WIDTH && b.get(i + 1) != Some(&b' ') {
                    self.out.push_str(&s[start..i]);
                    self.out.push('\n');
                    push_spaces(&mut self.out, indent);
                    col = indent;
                    start = i + 1;
                } else {
                    col += 1;
                }
                spaces = true;
            } else {
                col += usize::from(b[i] & 0xC0 != 0x80);
                spaces = false;
            }
        }
        self.out.push_str(&s[start..]);
        self.column = col;
    }

    /// `single_quoted` for ASCII text without line breaks.
    fn single_quoted_ascii(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        let b = s.as_bytes();
        let n = b.len();
        self.out.push('\'');
        let mut col = self.column + 1;
        let mut start = 0;
        let mut spaces = false;
        for i in 0..n {
            match b[i] {
                b' ' => {
                    if allow_breaks
                        && !spaces
                        && col > BEST_WIDTH
                        && i > 0
                        && i + 1 < n
                        && b[i + 1] != b' '
                    {
                        self.out.push_str(&s[start..i]);
                        self.out.push('\n');
                        push_spaces(&mut self.out, indent);
                        col = indent;
                        start = i + 1;
                    } else {
                        col += 1;
                    }
                    spaces = true;
                }
                b'\'' => {
                    self.out.push_str(&s[start..i]);
                    self.out.push('\'');
                    start = i;
                    col += 2;
                    spaces = false;
                }
                _ => {
                    col += 1;
                    spaces = false;
                }
            }
        }
        self.out.push_str(&s[start..]);
        self.out.push('\'');
        self.column = col + 1;
    }

    fn single_quoted(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        if s.is_ascii() && !s.bytes().any(|c| c == b'\n' || c == b'\r') {
            self.single_quoted_ascii(s, indent, allow_breaks);
            return;
        }
        self.push('\'');
        let mut spaces = false;
        let mut breaks = false;
        let n = s.chars().count();
        let mut chars = s.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            if c == ' ' {
                let next_is_space = chars.peek().map(|(_, c)| *c) == Some(' ');
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i + 1 < n
                    && !next_is_space
                {
                    self.newline_indent(indent);
                } else {
                    self.push(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.push('\n');
                }
                if c == '\n' {
                    self.push('\n');
                } else {
                    self.out.push(c);
                    self.column = 0;
                }
                breaks = true;
            } else {
                if breaks {
                    self.spaces(indent);
                }
                if c == '\'' {
                    self.push('\'');
                }
                self.push(c);
                spaces = false;
                breaks = false;
            }
        }
        self.push('\'');
    }

    fn double_quoted(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        self.push('"');
        let mut spaces = false;
        let n = s.chars().count();
        let mut chars = s.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            if !is_printable(c) || c == '\u{FEFF}' || is_break(c) || c == '"' || c == '\\' {
                self.push('\\');
                let esc = match c {
                    '\0' => Some('0'),
                    '\u{7}' => Some('a'),
                    '\u{8}' => Some('b'),
                    '\t' => Some('t'),
                    '\n' => Some('n'),
                    '\u{b}' => Some('v'),
                    '\u{c}' => Some('f'),
                    '\r' => Some('r'),
                    '\u{1b}' => Some('e'),
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '\u{85}' => Some('N'),
                    '\u{a0}' => Some('_'),
                    '\u{2028}' => Some('L'),
                    '\u{2029}' => Some('P'),
                    _ => None,
                };
                match esc {
                    Some(e) => self.push(e),
                    None => {
                        let v = c as u32;
                        let s = if v <= 0xFF {
                            format!("x{v:02X}")
                        } else if v <= 0xFFFF {
                            format!("u{v:04X}")
                        } else {
                            format!("U{v:08X}")
                        };
                        self.raw(&s);
                    }
                }
                spaces = false;
            } else if c == ' ' {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i != 0 && i + 1 != n {
                    self.newline_indent(indent);
                    if chars.peek().map(|(_, c)| *c) == Some(' ') {
                        self.push('\\');
                    }
                } else {
                    self.push(c);
                }
                spaces = true;
            } else {
                self.push(c);
                spaces = false;
            }
        }
        self.push('"');
    }

    fn literal(&mut self, s: &str, indent: usize) {
        self.push('|');
        let first = s.chars().next();
        if first.is_some_and(|c| c == ' ' || is_break(c)) {
            self.push('2');
        }
        // Chomping: `-` strips a missing final newline, nothing keeps exactly one, `+` keeps
        // several.
        let mut rev = s.chars().rev();
        match (rev.next(), rev.next()) {
            (None, _) => self.push('-'),
            (Some(last), _) if !is_break(last) => self.push('-'),
            (Some(_), None) => self.push('+'),
            (Some(_), Some(prev)) if is_break(prev) => self.push('+'),
            _ => {}
        }
        self.push('\n');
        // Only `\n` breaks (nearly always): whole lines are copied, empty ones unindented.
        // (Literal style was chosen, so the text has no `\r`: libyaml counts it special.)
        let only_lf = if s.is_ascii() {
            !s.as_bytes().contains(&b'\r')
        } else {
            !s.contains(|c: char| c != '\n' && is_break(c))
        };
        if only_lf {
            let mut lines = s.split('\n').peekable();
            while let Some(line) = lines.next() {
                let last = lines.peek().is_none();
                if !line.is_empty() {
                    push_spaces(&mut self.out, indent);
                    self.out.push_str(line);
                    if last {
                        self.out.push('\n');
                    }
                }
                if !last {
                    self.out.push('\n');
                }
            }
            self.column = 0;
            return;
        }
        let mut at_line_start = true;
        for c in s.chars() {
            if c == '\n' {
                self.push('\n');
                at_line_start = true;
            } else if is_break(c) {
                self.out.push(c);
                self.column = 0;
                at_line_start = true;
            } else {
                if at_line_start {
                    self.spaces(indent);
                    at_line_start = false;
                }
                self.push(c);
            }
        }
        if !at_line_start {
            self.push('\n');
        }
    }
}

fn push_spaces(out: &mut String, n: usize) {
    const SPACES: &str = "                                                                ";
    let mut n = n;
    while n > SPACES.len() {
        out.push_str(SPACES);
        n -= SPACES.len();
    }
    out.push_str(&SPACES[..n]);
}

fn char_count(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Go's `encoding/json` number text, which is what kustomize's JSON round trip leaves.
pub(crate) fn format_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    format_go_float(f)
}

pub(crate) fn format_go_float(f: f64) -> String {
    // kustomize round-trips through JSON and back through go-yaml: a whole float of JSON
    // (`1000`) reads back as an integer; anything else is a float64 printed by go-yaml with
    // `strconv.FormatFloat(f, 'g', -1, 64)`.
    if f.fract() == 0.0 && f.abs() < 1.8446744073709552e19 {
        if f == 0.0 {
            return "0".into();
        }
        return format!("{f:.0}");
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}` (same digits as
    // Go's shortest formatting).
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let es = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{es}{:02}", exp.abs())
    } else {
        format!("{sign}{}", f.abs())
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// libyaml's `is_printable` (which, notably, excludes tab and everything beyond the BMP).
fn is_printable(c: char) -> bool {
    let v = c as u32;
    v == 0x0A
        || (0x20..=0x7E).contains(&v)
        || (0xA0..=0xD7FF).contains(&v)
        || ((0xE000..=0xFFFD).contains(&v) && v != 0xFEFF)
}

/// What a string's characters allow, as libyaml's `yaml_emitter_analyze_scalar` works it out.
#[derive(Debug, PartialEq, Eq)]
struct Analysis {
    multiline: bool,
    block_plain: bool,
    single_quoted: bool,
    block: bool,
}

fn analyze(s: &str) -> Analysis {
    if s.is_ascii() {
        return analyze_ascii(s.as_bytes());
    }
    analyze_chars(s)
}

fn analyze_chars(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain: true,
            single_quoted: true,
            block: false,
        };
    }
    let mut block_indicators = false;
    let mut line_breaks = false;
    let mut special = false;
    let mut leading_space = false;
    let mut leading_break = false;
    let mut trailing_space = false;
    let mut trailing_break = false;
    let mut break_space = false;
    let mut space_break = false;
    let mut previous_space = false;
    let mut previous_break = false;

    if s.starts_with("---") || s.starts_with("...") {
        block_indicators = true;
    }
    // One pass with a one-character lookahead: this runs for every key and string emitted,
    // so it must not allocate.
    let mut chars = s.chars().peekable();
    let mut preceded_by_ws = true;
    let mut i = 0usize;
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        let last = next.is_none();
        let followed_by_ws = next.is_none_or(|c| c == ' ' || c == '\t' || is_break(c));
        // Indicators that make a plain scalar unreadable in block context.
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_indicators = true,
                '#' if preceded_by_ws => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(c) {
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
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain: true,
        single_quoted: true,
        block: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.block_plain = false;
        a.single_quoted = false;
    }
    if space_break || special {
        a.block_plain = false;
        a.single_quoted = false;
        a.block = false;
    }
    if line_breaks {
        a.block_plain = false;
    }
    if block_indicators {
        a.block_plain = false;
    }
    a
}

/// The bytes `analyze_ascii` stops at: breaks, `:`, `#`, and the non-printable ones.
const INTERESTING: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i == 0x7f || i == b':' as usize || i == b'#' as usize;
        i += 1;
    }
    t
};

/// `analyze` for ASCII text, byte by byte (the same rules: for ASCII, the breaks are `\n` and
/// `\r`, and the printable characters `\n` and 0x20..=0x7E).
fn analyze_ascii(b: &[u8]) -> Analysis {
    let n = b.len();
    if n == 0 {
        return Analysis {
            multiline: false,
            block_plain: true,
            single_quoted: true,
            block: false,
        };
    }
    let brk = |c: u8| c == b'\n' || c == b'\r';
    let ws = |c: u8| c == b' ' || c == b'\t' || brk(c);
    let mut block_indicators = b.starts_with(b"---") || b.starts_with(b"...");
    let mut line_breaks = false;
    let mut special = false;
    let mut break_space = false;
    let mut space_break = false;
    let followed_by_ws = |i: usize| i + 1 >= n || ws(b[i + 1]);
    match b[0] {
        b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' => block_indicators = true,
        b'?' | b':' | b'-' if followed_by_ws(0) => block_indicators = true,
        _ => {}
    }
    // Only breaks, `:`, `#` and non-printable bytes matter inside the text; the spaces
    // around a break are looked at from the break.
    for (i, &c) in b.iter().enumerate() {
        if !INTERESTING[c as usize] {
            continue;
        }
        match c {
            b'\n' | b'\r' => {
                line_breaks = true;
                if c == b'\r' {
                    special = true;
                }
                if i > 0 && b[i - 1] == b' ' {
                    space_break = true;
                }
                if i + 1 < n && b[i + 1] == b' ' {
                    break_space = true;
                }
            }
            b':' if i > 0 && followed_by_ws(i) => block_indicators = true,
            b'#' if i > 0 && ws(b[i - 1]) => block_indicators = true,
            b':' | b'#' => {}
            _ => special = true,
        }
    }
    let leading_space = b[0] == b' ';
    let leading_break = brk(b[0]);
    let trailing_space = b[n - 1] == b' ';
    let trailing_break = brk(b[n - 1]);
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain: true,
        single_quoted: true,
        block: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.block_plain = false;
        a.single_quoted = false;
    }
    if space_break || special {
        a.block_plain = false;
        a.single_quoted = false;
        a.block = false;
    }
    if line_breaks {
        a.block_plain = false;
    }
    if block_indicators {
        a.block_plain = false;
    }
    a
}

/// Bytes of a "word" (`metadata`, `x-kubernetes-list-type`, `apps/v1`): none is an indicator,
/// a space, a break or special, so such a text is plain unless it reads back as something else.
const WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.' || c == b'/';
        i += 1;
    }
    t
};

fn choose_style(s: &str, simple_key: bool) -> Style {
    // Most keys and many values are words starting with a letter: no indicator, no number,
    // timestamp or base-60 form; only the keyword spellings need quotes.
    let b = s.as_bytes();
    if b.first().is_some_and(u8::is_ascii_alphabetic) && b.iter().all(|&c| WORD[c as usize]) {
        return if resolves_to_str(s) && !is_old_bool(s) {
            Style::Plain
        } else {
            Style::Double
        };
    }
    // go-yaml's `stringv`: quote whatever would not read back as this very string.
    let can_plain = resolves_to_str(s) && !is_base60_float(s) && !is_old_bool(s);
    let mut style = if s.contains('\n') && !simple_key {
        Style::Literal
    } else if can_plain {
        Style::Plain
    } else {
        Style::Double
    };
    let a = analyze(s);
    if simple_key && a.multiline {
        style = Style::Double;
    }
    if style == Style::Plain {
        if !a.block_plain {
            style = Style::Single;
        }
        if s.is_empty() && simple_key {
            style = Style::Single;
        }
    }
    if style == Style::Single && !a.single_quoted {
        style = Style::Double;
    }
    if style == Style::Literal && (!a.block || simple_key) {
        style = Style::Double;
    }
    style
}

fn is_old_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`, YAML 1.1's sexagesimal numbers.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(&c) = b.first() else { return false };
    if !(c == b'+' || c == b'-' || c.is_ascii_digit()) || !s.contains(':') {
        return false;
    }
    let mut i = 0;
    if b[i] == b'+' || b[i] == b'-' {
        i += 1;
    }
    if i >= b.len() || !b[i].is_ascii_digit() {
        return false;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while i < b.len() && b[i] == b':' {
        i += 1;
        // [0-5]?[0-9]
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
            i += 1;
        }
        match i - start {
            0 => return false,
            2 if b[start] > b'5' => {
                // backtrack: only one digit belongs to this group
                i = start + 1;
            }
            _ => {}
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// Whether go-yaml v3's resolver reads this plain text as a string.
fn resolves_to_str(s: &str) -> bool {
    if matches!(
        s,
        "" | "~"
            | "null"
            | "Null"
            | "NULL"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | "<<"
    ) {
        return false;
    }
    let first = s.as_bytes()[0];
    match first {
        b'.' => !go_parse_float(s),
        b'+' | b'-' | b'0'..=b'9' => {
            if is_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|c| *c != '_').collect();
            if go_parse_int_base0(&plain) || is_yaml_style_float(&plain) {
                return false;
            }
            let unsigned = plain.strip_prefix('-').unwrap_or(&plain);
            if let Some(d) = unsigned.strip_prefix("0b") {
                if !d.is_empty() && d.bytes().all(|c| c == b'0' || c == b'1') {
                    return false;
                }
            }
            if let Some(d) = unsigned.strip_prefix("0o") {
                if !d.is_empty() && d.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
                    return false;
                }
            }
            true
        }
        _ => true,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` / `ParseUint` acceptance (ignoring range: an
/// out-of-range integer still reads back as a number, a float).
fn go_parse_int_base0(s: &str) -> bool {
    let body = s
        .strip_prefix('+')
        .or_else(|| s.strip_prefix('-'))
        .unwrap_or(s);
    if body.is_empty() {
        return false;
    }
    let (digits, radix) = if let Some(d) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (d, 16)
    } else if let Some(d) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (d, 2)
    } else if let Some(d) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (d, 8)
    } else if body.len() > 1 && body.starts_with('0') {
        (&body[1..], 8)
    } else {
        (body, 10)
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
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

/// Go's `strconv.ParseFloat` for text starting with `.` (the only case the resolver asks).
fn go_parse_float(s: &str) -> bool {
    s.parse::<f64>().is_ok() && !s.contains('_')
}

/// go-yaml's timestamp check: `YYYY-M-D`, optionally with a time part.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i != 4 || i == b.len() || b[i] != b'-' {
        return false;
    }
    let num = |i: &mut usize, max_len: usize| -> Option<u32> {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - st < max_len {
            *i += 1;
        }
        if *i == st {
            None
        } else {
            s[st..*i].parse().ok()
        }
    };
    i += 1;
    let Some(month) = num(&mut i, 2) else {
        return false;
    };
    if !(1..=12).contains(&month) || i >= b.len() || b[i] != b'-' {
        return false;
    }
    i += 1;
    let Some(day) = num(&mut i, 2) else {
        return false;
    };
    if !(1..=31).contains(&day) {
        return false;
    }
    if i == b.len() {
        return true;
    }
    // time part: [Tt ]H:M:S(.frac)?(Z|±hh:mm)?
    if !matches!(b[i], b'T' | b't' | b' ') {
        return false;
    }
    let space_sep = b[i] == b' ';
    i += 1;
    for (k, max) in [(0, 23), (1, 59), (2, 59)] {
        let Some(v) = num(&mut i, 2) else {
            return false;
        };
        if v > max {
            return false;
        }
        if k < 2 {
            if i >= b.len() || b[i] != b':' {
                return false;
            }
            i += 1;
        }
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == st {
            return false;
        }
    }
    if i == b.len() {
        return space_sep;
    }
    if space_sep {
        return false;
    }
    if b[i] == b'Z' {
        return i + 1 == b.len();
    }
    if b[i] == b'+' || b[i] == b'-' {
        let rest = &s[i + 1..];
        let ok = rest.len() == 5
            && rest.as_bytes()[2] == b':'
            && rest[..2].bytes().all(|c| c.is_ascii_digit())
            && rest[3..].bytes().all(|c| c.is_ascii_digit());
        return ok;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn emit(v: Value) -> String {
        match v {
            Value::Object(m) => map_to_string(&m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn quotes_what_would_read_back_differently() {
        let out = emit(
            json!({"a": "yes", "b": "123", "c": "n", "d": "1:20", "e": "x", "f": "",
            "g": "2024-01-01", "h": "NaN", "i": ".inf", "j": "1_000", "k": "0b101", "n": "x"}),
        );
        assert_eq!(
            out,
            "a: \"yes\"\nb: \"123\"\nc: \"n\"\nd: \"1:20\"\ne: x\nf: \"\"\ng: \"2024-01-01\"\nh: NaN\ni: \".inf\"\nj: \"1_000\"\nk: \"0b101\"\n\"n\": x\n"
        );
    }

    #[test]
    fn indicators_and_blocks() {
        let out = emit(
            json!({"a": "*x", "b": "a: b", "c": "multi\nline", "d": "  lead\nx\n",
            "e": "line\n\n", "f": "x\ty", "g": "it's", "h": "trailing ", "l": [1, "two", {"x": 1}, {}, []]}),
        );
        assert_eq!(
            out,
            "a: '*x'\nb: 'a: b'\nc: |-\n  multi\n  line\nd: |2\n    lead\n  x\ne: |+\n  line\n\nf: \"x\\ty\"\ng: it's\nh: 'trailing '\nl:\n- 1\n- two\n- x: 1\n- {}\n- []\n"
        );
    }

    #[test]
    fn ascii_analysis_agrees_with_the_general_one() {
        let alphabet = b" \t\n\rab:#-?'\"|>,[]{}&*!%@`.\x01";
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 7) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (8 + 5 * i)) % alphabet.len() as u64) as usize] as char)
                .collect();
            assert_eq!(analyze_ascii(s.as_bytes()), analyze_chars(&s), "{s:?}");
        }
        for s in [
            "---x", "...", "a: b", "a #b", "a#b", "- x", "-x", "x\n y", "x \ny", "x\t",
        ] {
            assert_eq!(analyze_ascii(s.as_bytes()), analyze_chars(s), "{s:?}");
        }
    }

    #[test]
    fn words_take_the_same_style_as_any_text() {
        for w in [
            "metadata", "yes", "Yes", "n", "null", "True", "a.b", "a/b-c_d", "x1", "NaN", "y",
            "off", "e1", "Inf",
        ] {
            let general = {
                let can_plain = resolves_to_str(w) && !is_base60_float(w) && !is_old_bool(w);
                let a = analyze_chars(w);
                if can_plain && a.block_plain {
                    Style::Plain
                } else {
                    Style::Double
                }
            };
            assert_eq!(choose_style(w, false), general, "{w}");
            assert_eq!(choose_style(w, true), general, "{w}");
        }
    }

    #[test]
    fn folds_long_plain_scalars_counting_characters() {
        let long = "wörd ".repeat(30);
        let long = long.trim_end();
        let out = emit(json!({ "k": long }));
        // Folding happens at the first space past column 80, counted in characters.
        let first = out.lines().next().unwrap();
        assert_eq!(first.chars().count(), 82, "{out}");
        assert_eq!(
            out,
            format!(
                "k: {}\n  {}\n",
                "wörd ".repeat(16).trim_end(),
                "wörd ".repeat(14).trim_end()
            )
        );
    }

    #[test]
    fn numbers_print_like_go_json() {
        assert_eq!(format_go_float(1000.0), "1000");
        assert_eq!(format_go_float(1.5), "1.5");
        assert_eq!(format_go_float(1e25), "1e+25");
        assert_eq!(format_go_float(1e-7), "1e-07");
        assert_eq!(format_go_float(0.000001), "1e-06");
        assert_eq!(format_go_float(0.0001), "0.0001");
        assert_eq!(format_go_float(1234567.5), "1.2345675e+06");
    }

    #[test]
    fn folds_long_plain_scalars() {
        let long = "long long long long long long long long long long long long long long long long long long long long long long long long long long long long";
        let out = emit(json!({"metadata": {"annotations": {"bl": long}}}));
        assert_eq!(out, "metadata:\n  annotations:\n    bl: long long long long long long long long long long long long long long long\n      long long long long long long long long long long long long long\n");
    }
}
