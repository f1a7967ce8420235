//! Tokenizer for Go's text/template syntax (`{{ }}` delimiters, trim markers,
//! comments), producing the token stream the parser consumes.

/// Token kinds; `Space` is kept because `$x .y` (with a space) is two operands
/// while `$x.y` is a chain.
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Text(Rc<str>),
    LeftDelim,
    RightDelim,
    Space,
    Identifier(Rc<str>),
    Keyword(&'static str),
    Field(Rc<str>),
    Variable(Rc<str>),
    /// A quoted or raw string: (source text, decoded value).
    Str(Rc<str>, Rc<str>),
    /// A character constant: (source text, code point).
    Char(Rc<str>, i64),
    Number(Rc<str>),
    Bool(bool),
    Nil,
    Dot,
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    Comma,
    Eof,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// A lexing error with the byte offset where it happened.
#[derive(Debug)]
pub struct LexError {
    pub pos: usize,
    pub msg: String,
}

const KEYWORDS: &[&str] = &[
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits `src` into tokens.
pub fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer {
        src,
        b: src.as_bytes(),
        pos: 0,
        // About one token per six bytes of template source: growing the
        // vector by doubling would copy it several times.
        toks: Vec::with_capacity(src.len() / 6 + 16),
        paren_depth: 0,
    };
    lx.run()?;
    Ok(lx.toks)
}

struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    toks: Vec<Token>,
    paren_depth: usize,
}

impl<'a> Lexer<'a> {
    fn err<T>(&self, pos: usize, msg: impl Into<String>) -> Result<T, LexError> {
        Err(LexError {
            pos,
            msg: msg.into(),
        })
    }

    fn emit(&mut self, tok: Tok, pos: usize) {
        self.toks.push(Token { tok, pos });
    }

    fn run(&mut self) -> Result<(), LexError> {
        let mut trim_leading = false;
        loop {
            let rest = &self.src[self.pos..];
            let next = rest.find("{{");
            let text_end = next.map(|n| self.pos + n).unwrap_or(self.src.len());
            let mut text = &self.src[self.pos..text_end];
            let text_pos = self.pos;
            let mut text_start = text_pos;
            if trim_leading {
                let t = text.trim_start_matches([' ', '\t', '\r', '\n']);
                text_start += text.len() - t.len();
                text = t;
            }
            let left_trim = next.is_some()
                && self.b.len() > text_end + 3
                && self.b[text_end + 2] == b'-'
                && is_space(self.b[text_end + 3]);
            if left_trim {
                text = text.trim_end_matches([' ', '\t', '\r', '\n']);
            }
            if !text.is_empty() {
                self.emit(Tok::Text(text.into()), text_start);
            }
            let Some(_) = next else {
                self.emit(Tok::Eof, self.src.len());
                return Ok(());
            };
            // Inside an action.
            let delim_pos = text_end;
            self.pos = text_end + 2;
            if left_trim {
                self.pos += 2; // "- " (the space is consumed; more spaces are lexed later)
            }
            // Comment?
            if self.src[self.pos..].starts_with("/*") {
                let Some(end) = self.src[self.pos + 2..].find("*/") else {
                    return self.err(delim_pos, "unclosed comment");
                };
                let after = self.pos + 2 + end + 2;
                let rest = &self.src[after..];
                if rest.starts_with("}}") {
                    self.pos = after + 2;
                    trim_leading = false;
                } else if rest.len() >= 4
                    && is_space(rest.as_bytes()[0])
                    && rest[1..].starts_with("-}}")
                {
                    self.pos = after + 4;
                    trim_leading = true;
                } else {
                    return self.err(delim_pos, "comment ends before closing delimiter");
                }
                continue;
            }
            self.emit(Tok::LeftDelim, delim_pos);
            trim_leading = self.lex_action()?;
        }
    }

    /// Lexes until the closing delimiter; returns whether it had a trim marker.
    fn lex_action(&mut self) -> Result<bool, LexError> {
        loop {
            let rest = &self.src[self.pos..];
            if rest.is_empty() {
                return self.err(self.pos, "unclosed action");
            }
            // Right delimiter, with or without trim marker.
            if rest.len() >= 4 && is_space(self.b[self.pos]) && rest[1..].starts_with("-}}") {
                if self.paren_depth > 0 {
                    return self.err(self.pos, "unclosed left paren");
                }
                self.emit(Tok::RightDelim, self.pos + 1);
                self.pos += 4;
                return Ok(true);
            }
            if rest.starts_with("}}") {
                if self.paren_depth > 0 {
                    return self.err(self.pos, "unclosed left paren");
                }
                self.emit(Tok::RightDelim, self.pos);
                self.pos += 2;
                return Ok(false);
            }
            let c = rest.chars().next().unwrap_or('\0');
            let start = self.pos;
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    while self.pos < self.b.len() && is_space(self.b[self.pos]) {
                        // Stop before a " -}}" so it is seen as a trim marker.
                        if self.src[self.pos..].len() >= 4
                            && self.src[self.pos + 1..].starts_with("-}}")
                        {
                            break;
                        }
                        self.pos += 1;
                    }
                    if self.pos > start {
                        self.emit(Tok::Space, start);
                    } else {
                        // Lone space directly before "-}}": handled at loop top.
                        continue;
                    }
                }
                '=' => {
                    self.pos += 1;
                    self.emit(Tok::Assign, start);
                }
                ':' => {
                    if rest.starts_with(":=") {
                        self.pos += 2;
                        self.emit(Tok::Declare, start);
                    } else {
                        return self.err(start, "expected :=");
                    }
                }
                '|' => {
                    self.pos += 1;
                    self.emit(Tok::Pipe, start);
                }
                ',' => {
                    self.pos += 1;
                    self.emit(Tok::Comma, start);
                }
                '(' => {
                    self.pos += 1;
                    self.paren_depth += 1;
                    self.emit(Tok::LeftParen, start);
                }
                ')' => {
                    self.pos += 1;
                    if self.paren_depth == 0 {
                        return self.err(start, "unexpected right paren");
                    }
                    self.paren_depth -= 1;
                    self.emit(Tok::RightParen, start);
                }
                '"' => self.lex_quote()?,
                '`' => {
                    let Some(end) = rest[1..].find('`') else {
                        return self.err(start, "unterminated raw quoted string");
                    };
                    let raw = &rest[1..1 + end];
                    self.pos += end + 2;
                    self.emit(Tok::Str(rest[..end + 2].into(), raw.into()), start);
                }
                '\'' => self.lex_char()?,
                '$' => {
                    self.pos += 1;
                    self.scan_alnum();
                    let name = self.src[start..self.pos].to_string();
                    self.check_terminator()?;
                    self.emit(Tok::Variable(name.into()), start);
                }
                '.' => {
                    if rest.len() > 1 && rest.as_bytes()[1].is_ascii_digit() {
                        self.lex_number()?;
                    } else {
                        self.pos += 1;
                        let s = self.pos;
                        self.scan_alnum();
                        if self.pos == s {
                            self.emit(Tok::Dot, start);
                        } else {
                            let name = self.src[s..self.pos].to_string();
                            self.check_terminator()?;
                            self.emit(Tok::Field(name.into()), start);
                        }
                    }
                }
                '+' | '-' | '0'..='9' => self.lex_number()?,
                c if is_alnum(c) => {
                    self.scan_alnum();
                    let word = &self.src[start..self.pos];
                    self.check_terminator()?;
                    let tok = if let Some(k) = KEYWORDS.iter().find(|k| **k == word) {
                        Tok::Keyword(k)
                    } else if word == "true" || word == "false" {
                        Tok::Bool(word == "true")
                    } else if word == "nil" {
                        Tok::Nil
                    } else {
                        Tok::Identifier(word.into())
                    };
                    self.emit(tok, start);
                }
                c => return self.err(start, format!("unrecognized character in action: {c:?}")),
            }
        }
    }

    fn scan_alnum(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if is_alnum(c) {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn check_terminator(&self) -> Result<(), LexError> {
        let rest = &self.src[self.pos..];
        let ok = match rest.chars().next() {
            None => true,
            Some(c) => {
                matches!(
                    c,
                    ' ' | '\t' | '\r' | '\n' | '.' | ',' | '|' | ':' | ')' | '(' | '='
                ) || rest.starts_with("}}")
            }
        };
        if ok {
            Ok(())
        } else {
            self.err(
                self.pos,
                format!("bad character {:?}", rest.chars().next().unwrap_or(' ')),
            )
        }
    }

    fn lex_number(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let b = self.b;
        let mut i = self.pos;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        if i + 1 < b.len() && b[i] == b'0' {
            match b[i + 1] {
                b'x' | b'X' => {
                    i += 2;
                    digits = b"0123456789abcdefABCDEF_";
                }
                b'o' | b'O' => {
                    i += 2;
                    digits = b"01234567_";
                }
                b'b' | b'B' => {
                    i += 2;
                    digits = b"01_";
                }
                _ => {}
            }
        }
        while i < b.len() && digits.contains(&b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && digits.contains(&b[i]) {
                i += 1;
            }
        }
        let hex = digits.len() > 12;
        if i < b.len()
            && ((!hex && (b[i] == b'e' || b[i] == b'E')) || (hex && (b[i] == b'p' || b[i] == b'P')))
        {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        if i < b.len() && b[i] == b'i' {
            i += 1;
        }
        if i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_')
            || i == start + 1 && matches!(b[start], b'+' | b'-')
        {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
                j += 1;
            }
            return self.err(
                start,
                format!("bad number syntax: {:?}", &self.src[start..j.max(i)]),
            );
        }
        self.pos = i;
        self.emit(Tok::Number(self.src[start..i].into()), start);
        Ok(())
    }

    fn lex_quote(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let mut i = self.pos + 1;
        let b = self.b;
        loop {
            if i >= b.len() || b[i] == b'\n' {
                return self.err(start, "unterminated quoted string");
            }
            match b[i] {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        let raw = &self.src[start..=i];
        let val = unquote(&raw[1..raw.len() - 1]).map_err(|m| LexError { pos: start, msg: m })?;
        self.pos = i + 1;
        self.emit(Tok::Str(raw.into(), val.into()), start);
        Ok(())
    }

    fn lex_char(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let mut i = self.pos + 1;
        let b = self.b;
        loop {
            if i >= b.len() || b[i] == b'\n' {
                return self.err(start, "unterminated character constant");
            }
            match b[i] {
                b'\\' => i += 2,
                b'\'' => break,
                _ => i += 1,
            }
        }
        let raw = &self.src[start..=i];
        let inner = &raw[1..raw.len() - 1];
        let val = if inner == "\"" {
            "\"".to_string()
        } else if inner == "\\'" {
            "'".to_string()
        } else {
            unquote(inner).map_err(|m| LexError { pos: start, msg: m })?
        };
        let mut chars = val.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return self.err(start, format!("malformed character constant: {raw}"));
        };
        self.pos = i + 1;
        self.emit(Tok::Char(raw.into(), c as i64), start);
        Ok(())
    }
}

/// Decodes Go string-literal escapes.
pub fn unquote(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    let mut bytes: Vec<u8> = Vec::new();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some(c) = it.next() {
        if c != '\\' {
            flush(&mut bytes, &mut out);
            out.push(c);
            continue;
        }
        let Some(e) = it.next() else {
            return Err("invalid syntax".into());
        };
        if !matches!(e, 'x' | '0'..='7') {
            flush(&mut bytes, &mut out);
        }
        let hex =
            |it: &mut std::iter::Peekable<std::str::Chars>, n: usize| -> Result<u32, String> {
                let mut v = 0u32;
                for _ in 0..n {
                    let d = it
                        .next()
                        .and_then(|c| c.to_digit(16))
                        .ok_or_else(|| "invalid syntax".to_string())?;
                    v = v * 16 + d;
                }
                Ok(v)
            };
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'x' => {
                bytes.push(hex(&mut it, 2)? as u8);
                continue;
            }
            'u' => out.push(char::from_u32(hex(&mut it, 4)?).ok_or("invalid syntax")?),
            'U' => out.push(char::from_u32(hex(&mut it, 8)?).ok_or("invalid syntax")?),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    v = v * 8
                        + it.next()
                            .and_then(|c| c.to_digit(8))
                            .ok_or_else(|| "invalid syntax".to_string())?;
                }
                bytes.push(v as u8);
                continue;
            }
            _ => return Err("invalid syntax".into()),
        }
    }
    flush(&mut bytes, &mut out);
    Ok(out)
}
