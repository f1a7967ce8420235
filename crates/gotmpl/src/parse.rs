//! Parser for Go's text/template: builds the trees of one source file (its
//! body plus every `define`/`block` in it), with byte positions kept on every
//! node so that errors can name `template:line:col` like Go does.

use crate::lex::{lex, Tok, Token};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// One parsed template (a file body or a `define`).
#[derive(Debug)]
pub struct Tree {
    /// The template's name (`define` name or file name).
    pub name: String,
    /// The file it was parsed from (Go's ParseName), used in error locations.
    pub parse_name: Arc<str>,
    /// The whole source text of that file, for line/column computation.
    pub src: Arc<str>,
    pub root: Vec<Node>,
}

impl Tree {
    /// Go's ErrorContext location: `name:line:col` where col is the byte offset
    /// in the line (0-based on the first line, as Go computes it).
    pub fn location(&self, pos: usize) -> String {
        let pos = pos.min(self.src.len());
        let text = &self.src[..pos];
        let (line, col) = match text.rfind('\n') {
            None => (1, pos),
            Some(nl) => (1 + text.matches('\n').count(), pos - (nl + 1)),
        };
        format!("{}:{}:{}", self.parse_name, line, col)
    }

    /// Go's IsEmptyTree: only whitespace text and comments. An empty
    /// redefinition does not replace an existing template.
    pub fn is_empty(&self) -> bool {
        self.root.iter().all(|n| match n {
            Node::Text(t) => t.trim().is_empty(),
            _ => false,
        })
    }
}

#[derive(Debug)]
pub enum Node {
    Text(Rc<str>),
    Action(Pipe),
    If(Control),
    Range(Control),
    With(Control),
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break(usize),
    Continue(usize),
}

#[derive(Debug)]
pub struct Control {
    pub pos: usize,
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

#[derive(Debug)]
pub struct Pipe {
    pub pos: usize,
    pub is_assign: bool,
    pub decl: Vec<String>,
    pub cmds: Vec<Command>,
}

#[derive(Debug)]
pub struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

/// A numeric constant: Go keeps ints as `int` and anything written with a
/// decimal point or exponent as `float64`.
#[derive(Debug, Clone)]
pub enum Number {
    Int(i64),
    Float(f64),
}

#[derive(Debug)]
pub enum Arg {
    Field {
        pos: usize,
        idents: Vec<Rc<str>>,
    },
    Variable {
        pos: usize,
        name: Rc<str>,
        idents: Vec<Rc<str>>,
    },
    Chain {
        pos: usize,
        node: Box<Arg>,
        idents: Vec<Rc<str>>,
    },
    Identifier {
        pos: usize,
        name: Rc<str>,
    },
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    Number {
        pos: usize,
        text: Rc<str>,
        value: Number,
    },
    String {
        pos: usize,
        quoted: Rc<str>,
        value: Rc<str>,
    },
    Pipe(Box<Pipe>),
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Chain { pos, .. }
            | Arg::Identifier { pos, .. }
            | Arg::Dot(pos)
            | Arg::Nil(pos)
            | Arg::Bool(pos, _)
            | Arg::Number { pos, .. }
            | Arg::String { pos, .. } => *pos,
            Arg::Pipe(p) => p.pos,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field { idents, .. } => {
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Variable { name, idents, .. } => {
                write!(f, "{name}")?;
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Chain { node, idents, .. } => {
                if let Arg::Pipe(_) = **node {
                    write!(f, "({node})")?;
                } else {
                    write!(f, "{node}")?;
                }
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Identifier { name, .. } => write!(f, "{name}"),
            Arg::Dot(_) => write!(f, "."),
            Arg::Nil(_) => write!(f, "nil"),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Number { text, .. } => write!(f, "{text}"),
            Arg::String { quoted, .. } => write!(f, "{quoted}"),
            Arg::Pipe(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            if let Arg::Pipe(_) = a {
                write!(f, "({a})")?;
            } else {
                write!(f, "{a}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(f, "{}", self.decl.join(", "))?;
            write!(f, "{}", if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                write!(f, " | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// A parse error, formatted like Go's: `template: NAME:LINE: MSG`.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub name: String,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template: {}:{}: {}", self.name, self.line, self.msg)
    }
}

enum Item {
    Node(Node),
    End(usize),
    Else(usize),
}

struct Parser<'a> {
    toks: Vec<Token>,
    i: usize,
    name: Arc<str>,
    src: Arc<str>,
    vars: Vec<String>,
    range_depth: usize,
    has_func: &'a dyn Fn(&str) -> bool,
    defs: Vec<Tree>,
}

/// Parses a template file: returns its main tree (named `name`) followed by
/// every tree it defines, in source order.
pub fn parse(
    name: &str,
    src: &str,
    has_func: &dyn Fn(&str) -> bool,
) -> Result<Vec<Tree>, ParseError> {
    let src: Arc<str> = Arc::from(src);
    let toks = lex(&src).map_err(|e| ParseError {
        name: name.to_string(),
        line: 1 + src[..e.pos.min(src.len())].matches('\n').count(),
        msg: e.msg,
    })?;
    let mut p = Parser {
        toks,
        i: 0,
        name: Arc::from(name),
        src: src.clone(),
        vars: vec!["$".into()],
        range_depth: 0,
        has_func,
        defs: Vec::new(),
    };
    let root = p.parse_top()?;
    let mut out = vec![Tree {
        name: name.to_string(),
        parse_name: p.name.clone(),
        src,
        root,
    }];
    out.append(&mut p.defs);
    Ok(out)
}

impl<'a> Parser<'a> {
    fn err<T>(&self, pos: usize, msg: impl Into<String>) -> Result<T, ParseError> {
        let pos = pos.min(self.src.len());
        Err(ParseError {
            name: self.name.to_string(),
            line: 1 + self.src[..pos].matches('\n').count(),
            msg: msg.into(),
        })
    }

    fn peek(&self) -> &Token {
        // The lexer always ends with Eof, so the last token is a safe default.
        self.toks
            .get(self.i)
            .unwrap_or_else(|| &self.toks[self.toks.len() - 1])
    }

    /// Steps past the current token (never past the final Eof).
    fn advance(&mut self) {
        if self.i < self.toks.len() {
            self.i += 1;
        }
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn skip_space(&mut self) {
        while matches!(self.peek().tok, Tok::Space) {
            self.i += 1;
        }
    }

    fn peek_non_space(&mut self) -> &Token {
        self.skip_space();
        self.peek()
    }

    fn next_non_space(&mut self) -> Token {
        self.skip_space();
        self.next()
    }

    /// [`Parser::next_non_space`] for a token the parser never looks at
    /// again (text, and the operands of a command): it is moved out of the
    /// token list rather than copied.
    fn take_non_space(&mut self) -> Token {
        self.skip_space();
        match self.toks.get_mut(self.i) {
            Some(t)
                if matches!(
                    t.tok,
                    Tok::Text(_)
                        | Tok::Identifier(_)
                        | Tok::Field(_)
                        | Tok::Variable(_)
                        | Tok::Str(..)
                        | Tok::Char(..)
                        | Tok::Number(_)
                ) =>
            {
                let pos = t.pos;
                let taken = std::mem::replace(
                    t,
                    Token {
                        tok: Tok::Space,
                        pos,
                    },
                );
                self.i += 1;
                taken
            }
            _ => self.next(),
        }
    }

    fn describe(t: &Tok) -> String {
        match t {
            Tok::Text(s) => format!("{s:?}"),
            Tok::LeftDelim => "<left delim>".into(),
            Tok::RightDelim => "<right delim>".into(),
            Tok::Space => "space".into(),
            Tok::Identifier(s) | Tok::Number(s) => format!("{s:?}"),
            Tok::Keyword(k) => format!("<{k}>"),
            Tok::Field(s) => format!("\".{s}\""),
            Tok::Variable(s) => format!("{s:?}"),
            Tok::Str(q, _) | Tok::Char(q, _) => q.to_string(),
            Tok::Bool(b) => format!("\"{b}\""),
            Tok::Nil => "nil".into(),
            Tok::Dot => "\".\"".into(),
            Tok::Pipe => "\"|\"".into(),
            Tok::LeftParen => "\"(\"".into(),
            Tok::RightParen => "\")\"".into(),
            Tok::Declare => "\":=\"".into(),
            Tok::Assign => "\"=\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Eof => "EOF".into(),
        }
    }

    fn unexpected<T>(&self, t: &Token, context: &str) -> Result<T, ParseError> {
        if let Tok::Eof = t.tok {
            return self.err(t.pos, "unexpected EOF");
        }
        self.err(
            t.pos,
            format!("unexpected {} in {}", Self::describe(&t.tok), context),
        )
    }

    fn parse_top(&mut self) -> Result<Vec<Node>, ParseError> {
        let mut root = Vec::new();
        loop {
            match self.peek().tok {
                Tok::Eof => return Ok(root),
                Tok::LeftDelim => {
                    let save = self.i;
                    self.advance();
                    if let Tok::Keyword("define") = self.next_non_space().tok {
                        self.parse_definition()?;
                        continue;
                    }
                    self.i = save;
                }
                _ => {}
            }
            match self.text_or_action()? {
                Item::Node(n) => root.push(n),
                Item::End(p) => return self.err(p, "unexpected {{end}}"),
                Item::Else(p) => return self.err(p, "unexpected {{else}}"),
            }
        }
    }

    fn template_name(&mut self, context: &str) -> Result<String, ParseError> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Str(_, v) => Ok(v.to_string()),
            _ => self.unexpected(&t, context),
        }
    }

    fn parse_definition(&mut self) -> Result<(), ParseError> {
        let context = "define clause";
        let name = self.template_name(context)?;
        let t = self.next_non_space();
        if t.tok != Tok::RightDelim {
            return self.unexpected(&t, context);
        }
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = self.item_list()?;
        self.vars = saved_vars;
        self.range_depth = saved_depth;
        if let Item::Else(p) = end {
            return self.err(p, format!("unexpected {{{{else}}}} in {context}"));
        }
        self.defs.push(Tree {
            name,
            parse_name: self.name.clone(),
            src: self.src.clone(),
            root: list,
        });
        Ok(())
    }

    /// Parses until `{{end}}` or `{{else}}` (returned as the second value).
    fn item_list(&mut self) -> Result<(Vec<Node>, Item), ParseError> {
        let mut list = Vec::new();
        loop {
            if let Tok::Eof = self.peek_non_space().tok {
                let p = self.peek().pos;
                return self.err(p, "unexpected EOF");
            }
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                end => return Ok((list, end)),
            }
        }
    }

    fn text_or_action(&mut self) -> Result<Item, ParseError> {
        let t = self.take_non_space();
        match t.tok {
            Tok::Text(s) => Ok(Item::Node(Node::Text(s))),
            Tok::LeftDelim => self.action(),
            _ => self.unexpected(&t, "input"),
        }
    }

    fn expect_right_delim(&mut self, context: &str) -> Result<Token, ParseError> {
        let t = self.next_non_space();
        if t.tok != Tok::RightDelim {
            return self.unexpected(&t, context);
        }
        Ok(t)
    }

    fn action(&mut self) -> Result<Item, ParseError> {
        let t = self.peek_non_space().clone();
        if let Tok::Keyword(k) = t.tok {
            self.advance();
            return match k {
                "block" => self.block_control(),
                "break" => {
                    if self.range_depth == 0 {
                        return self.err(t.pos, "{{break}} outside {{range}}");
                    }
                    self.expect_right_delim("{{break}}")?;
                    Ok(Item::Node(Node::Break(t.pos)))
                }
                "continue" => {
                    if self.range_depth == 0 {
                        return self.err(t.pos, "{{continue}} outside {{range}}");
                    }
                    self.expect_right_delim("{{continue}}")?;
                    Ok(Item::Node(Node::Continue(t.pos)))
                }
                "else" => {
                    let p = self.peek_non_space().clone();
                    if matches!(p.tok, Tok::Keyword("if") | Tok::Keyword("with")) {
                        return Ok(Item::Else(p.pos));
                    }
                    let d = self.expect_right_delim("else")?;
                    Ok(Item::Else(d.pos))
                }
                "end" => {
                    let d = self.expect_right_delim("end")?;
                    Ok(Item::End(d.pos))
                }
                "if" => Ok(Item::Node(Node::If(self.control("if")?))),
                "range" => Ok(Item::Node(Node::Range(self.control("range")?))),
                "with" => Ok(Item::Node(Node::With(self.control("with")?))),
                "template" => {
                    let context = "template clause";
                    let name_tok = self.peek_non_space().clone();
                    let name = self.template_name(context)?;
                    let pipe = if self.peek_non_space().tok == Tok::RightDelim {
                        self.advance();
                        None
                    } else {
                        Some(self.pipeline(context, &Tok::RightDelim)?)
                    };
                    Ok(Item::Node(Node::Template {
                        pos: name_tok.pos,
                        name,
                        pipe,
                    }))
                }
                _ => self.unexpected(&t, "command"),
            };
        }
        Ok(Item::Node(Node::Action(
            self.pipeline("command", &Tok::RightDelim)?,
        )))
    }

    fn block_control(&mut self) -> Result<Item, ParseError> {
        let context = "block clause";
        let name_tok = self.peek_non_space().clone();
        let name = self.template_name(context)?;
        let pipe = self.pipeline(context, &Tok::RightDelim)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = self.item_list()?;
        self.vars = saved_vars;
        self.range_depth = saved_depth;
        if let Item::Else(p) = end {
            return self.err(p, format!("unexpected {{{{else}}}} in {context}"));
        }
        self.defs.push(Tree {
            name: name.clone(),
            parse_name: self.name.clone(),
            src: self.src.clone(),
            root: list,
        });
        Ok(Item::Node(Node::Template {
            pos: name_tok.pos,
            name,
            pipe: Some(pipe),
        }))
    }

    fn control(&mut self, context: &'static str) -> Result<Control, ParseError> {
        let nvars = self.vars.len();
        let pipe = self.pipeline(context, &Tok::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let else_list = match next {
            Item::End(_) => None,
            Item::Else(_) => {
                let kw = match self.peek_non_space().tok {
                    Tok::Keyword(k) => Some(k),
                    _ => None,
                };
                if context == "if" && kw == Some("if") {
                    self.advance();
                    Some(vec![Node::If(self.control("if")?)])
                } else if context == "with" && kw == Some("with") {
                    self.advance();
                    Some(vec![Node::With(self.control("with")?)])
                } else {
                    let (l, end) = self.item_list()?;
                    if let Item::Else(p) = end {
                        return self.err(p, "expected end; found {{else}}");
                    }
                    Some(l)
                }
            }
            Item::Node(_) => None,
        };
        self.vars.truncate(nvars);
        Ok(Control {
            pos: pipe.pos,
            pipe,
            list,
            else_list,
        })
    }

    fn pipeline(&mut self, context: &str, end: &Tok) -> Result<Pipe, ParseError> {
        let pos = self.peek_non_space().pos;
        let mut pipe = Pipe {
            pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        // Declarations: `$x :=`, `$x =`, `$i, $v :=` (range only).
        loop {
            let save = self.i;
            let (vpos, name) = match self.peek_non_space() {
                Token {
                    tok: Tok::Variable(name),
                    pos,
                } => (*pos, name.clone()),
                _ => break,
            };
            self.advance();
            match self.peek_non_space().tok {
                Tok::Declare | Tok::Assign => {
                    pipe.is_assign = self.peek().tok == Tok::Assign;
                    self.advance();
                    pipe.decl.push(name.to_string());
                    self.vars.push(name.to_string());
                    break;
                }
                Tok::Comma => {
                    self.advance();
                    pipe.decl.push(name.to_string());
                    self.vars.push(name.to_string());
                    if context == "range" && pipe.decl.len() < 2 {
                        match self.peek_non_space().tok {
                            Tok::Variable(_) | Tok::RightDelim | Tok::RightParen => continue,
                            _ => return self.err(vpos, "range can only initialize variables"),
                        }
                    }
                    return self.err(vpos, format!("too many declarations in {context}"));
                }
                _ => {
                    self.i = save;
                    break;
                }
            }
        }
        loop {
            let (at_end, end_pos) = {
                let t = self.peek_non_space();
                (&t.tok == end, t.pos)
            };
            if at_end {
                self.advance();
                if pipe.cmds.is_empty() {
                    return self.err(end_pos, format!("missing value for {context}"));
                }
                for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
                    if matches!(
                        c.args.first(),
                        Some(
                            Arg::Bool(..)
                                | Arg::Dot(_)
                                | Arg::Nil(_)
                                | Arg::Number { .. }
                                | Arg::String { .. }
                        )
                    ) {
                        return self.err(
                            end_pos,
                            format!("non executable command in pipeline stage {}", i + 1),
                        );
                    }
                }
                return Ok(pipe);
            }
            match self.peek().tok {
                Tok::Bool(_)
                | Tok::Char(..)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Identifier(_)
                | Tok::Number(_)
                | Tok::Nil
                | Tok::Str(..)
                | Tok::Variable(_)
                | Tok::LeftParen => pipe.cmds.push(self.command()?),
                _ => return self.unexpected(self.peek(), context),
            }
        }
    }

    fn command(&mut self) -> Result<Command, ParseError> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Command {
            pos,
            args: Vec::new(),
        };
        loop {
            self.skip_space();
            if let Some(op) = self.operand()? {
                cmd.args.push(op);
            }
            match self.peek().tok {
                Tok::Space => {
                    self.advance();
                    continue;
                }
                Tok::RightDelim | Tok::RightParen => {}
                Tok::Pipe => self.advance(),
                _ => return self.unexpected(self.peek(), "operand"),
            }
            break;
        }
        if cmd.args.is_empty() {
            return self.err(pos, "empty command");
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> Result<Option<Arg>, ParseError> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if let Tok::Field(_) = self.peek().tok {
            let chain_pos = self.peek().pos;
            let mut idents = Vec::new();
            while let Tok::Field(f) = &self.peek().tok {
                idents.push(f.clone());
                self.advance();
            }
            return Ok(Some(match node {
                Arg::Field {
                    idents: mut first, ..
                } => {
                    first.extend(idents);
                    Arg::Field {
                        pos: chain_pos,
                        idents: first,
                    }
                }
                Arg::Variable {
                    name,
                    idents: mut first,
                    ..
                } => {
                    first.extend(idents);
                    Arg::Variable {
                        pos: chain_pos,
                        name,
                        idents: first,
                    }
                }
                Arg::Bool(..)
                | Arg::String { .. }
                | Arg::Number { .. }
                | Arg::Nil(_)
                | Arg::Dot(_) => {
                    return self.err(
                        chain_pos,
                        format!("unexpected . after term {:?}", node.to_string()),
                    );
                }
                other => Arg::Chain {
                    pos: chain_pos,
                    node: Box::new(other),
                    idents,
                },
            }));
        }
        Ok(Some(node))
    }

    fn term(&mut self) -> Result<Option<Arg>, ParseError> {
        let t = self.take_non_space();
        let pos = t.pos;
        Ok(Some(match t.tok {
            Tok::Identifier(name) => {
                if !(self.has_func)(&name) {
                    return self.err(pos, format!("function {name:?} not defined"));
                }
                Arg::Identifier { pos, name }
            }
            Tok::Dot => Arg::Dot(pos),
            Tok::Nil => Arg::Nil(pos),
            Tok::Variable(name) => {
                if !self.vars.iter().any(|v| **v == *name) {
                    return self.err(pos, format!("undefined variable {name:?}"));
                }
                Arg::Variable {
                    pos,
                    name,
                    idents: Vec::new(),
                }
            }
            Tok::Field(f) => Arg::Field {
                pos,
                idents: vec![f],
            },
            Tok::Bool(b) => Arg::Bool(pos, b),
            Tok::Char(text, c) => Arg::Number {
                pos,
                text,
                value: Number::Int(c),
            },
            Tok::Number(text) => match parse_number(&text) {
                Some(value) => Arg::Number { pos, text, value },
                None => return self.err(pos, format!("illegal number syntax: {text:?}")),
            },
            Tok::LeftParen => Arg::Pipe(Box::new(
                self.pipeline("parenthesized pipeline", &Tok::RightParen)?,
            )),
            Tok::Str(quoted, value) => Arg::String { pos, quoted, value },
            _ => {
                self.i -= 1;
                return Ok(None);
            }
        }))
    }
}

/// Go's number-literal rules: integers (with 0x/0o/0b prefixes and `_`
/// separators) are `int`; a decimal point or exponent makes a `float64`.
fn parse_number(text: &str) -> Option<Number> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        if h.contains(['.', 'p']) {
            None
        } else {
            i64::from_str_radix(h, 16).ok()
        }
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else if lower.bytes().all(|b| b.is_ascii_digit()) {
        lower.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(Number::Int(if neg { -i } else { i }));
    }
    let f: f64 = lower.parse().ok()?;
    let f = if neg { -f } else { f };
    if !lower.contains(['.', 'e']) && f.fract() == 0.0 {
        return Some(Number::Int(f as i64));
    }
    Some(Number::Float(f))
}
