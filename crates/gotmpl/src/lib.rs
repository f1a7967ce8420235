//! A Go `text/template` engine with Helm's and Sprig's functions.
//!
//! trueup renders Helm charts without the helm binary; this crate is the
//! template half of that: Go's template language with its exact semantics
//! (pipelines, variables, `range`/`with`/`define`/`block`, whitespace
//! trimming, Go's truthiness, `printf` verbs, comparison rules, error
//! messages with `template:line:col`), Helm's functions (`include`, `tpl`,
//! `toYaml`, `required`, ...) and the Sprig library.
//!
//! ```
//! use trueup_gotmpl::{Templates, Value};
//!
//! let mut t = Templates::new();
//! t.add("mychart/templates/cm.yaml", r#"
//! {{- define "name" }}{{ .Release.Name }}-{{ .Chart.Name }}{{ end -}}
//! name: {{ include "name" . | trunc 63 | quote }}
//! data:
//!   {{- toYaml .Values.data | nindent 2 }}
//! "#).unwrap();
//! let values = serde_json::json!({
//!     "Release": {"Name": "web"},
//!     "Chart": {"Name": "nginx"},
//!     "Values": {"data": {"b": "yes", "a": 1}},
//! });
//! let out = t.render("mychart/templates/cm.yaml", &Value::from(&values)).unwrap();
//! assert_eq!(out, "name: \"web-nginx\"\ndata:\n  a: 1\n  b: \"yes\"\n");
//! ```
#![forbid(unsafe_code)]

mod crypto;
mod decimal;
mod encoding;
mod exec;
pub mod funcs;
pub mod gofmt;
mod gotime;
mod head_scan;
mod lex;
pub mod parse;
mod semver;
mod sprig_extra;
pub mod value;
pub mod yaml;

pub mod chart;
mod loader;
mod schema;
pub mod strvals;
pub mod template_cmd;

use exec::{State, TplCache, TreeMap};
use funcs::FnError;
use parse::{ParseError, Tree};
use std::fmt;
use std::rc::Rc;

pub use chart::{format_manifests, render_chart, render_templates, ChartOptions, RenderedFile};
pub use template_cmd::{template, TemplateOptions};
pub use value::{Object, Value};

/// A template error, formatted the way Go's text/template formats it.
#[derive(Debug, Clone)]
pub enum Error {
    /// The template text does not parse.
    Parse(ParseError),
    /// Execution failed at a node.
    Exec {
        /// `file:line:col` of the node.
        location: String,
        /// The template (or `define`) being executed.
        name: String,
        /// The node's text, as Go prints it between `<` and `>`.
        context: Option<String>,
        /// What went wrong.
        message: String,
        /// For errors inside `include`/`tpl`: the nested error.
        source: Option<Box<Error>>,
    },
    /// No template with that name.
    NoTemplate(String),
    /// Anything else (chart loading).
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(p) => write!(f, "{p}"),
            Error::Exec {
                location,
                name,
                context,
                message,
                ..
            } => match context {
                Some(c) => write!(
                    f,
                    "template: {location}: executing {name:?} at <{c}>: {message}"
                ),
                None => write!(f, "template: {name}: {message}"),
            },
            Error::NoTemplate(n) => write!(
                f,
                "template: no template {n:?} associated with template \"gotpl\""
            ),
            Error::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The innermost error of an `include`/`tpl` chain.
    pub fn root_cause(&self) -> &Error {
        match self {
            Error::Exec {
                source: Some(s), ..
            } => s.root_cause(),
            other => other,
        }
    }

    /// The message as `helm template` (v4) prints it: `fail`/`required`
    /// become `execution error at (file:line:col): msg`; execution errors
    /// are split over lines (`loc`, `executing ... at <...>:`, message).
    pub fn helm_message(&self) -> String {
        let text = self.to_string();
        for marker in ["error calling required: ", "error calling fail: "] {
            if let Some(pos) = text.rfind(marker) {
                let msg = &text[pos + marker.len()..];
                let loc = match self {
                    Error::Exec { location, .. } => location.clone(),
                    _ => String::new(),
                };
                return format!("execution error at ({loc}): {msg}");
            }
        }
        match self {
            Error::Parse(p) => format!("parse error at ({}:{}): {}", p.name, p.line, p.msg),
            _ => helm_v4_format(&text),
        }
    }
}

/// Helm v4 reformats Go's one-line execution errors:
/// `template: LOC: executing "N" at <C>: MSG` becomes
/// `LOC\n  executing "N" at <C>:\n    MSG`, recursively through
/// `error calling include: ...`.
fn helm_v4_format(text: &str) -> String {
    let Some(rest) = text.strip_prefix("template: ") else {
        return text.to_string();
    };
    let Some(ex) = rest.find(": executing \"") else {
        return text.to_string();
    };
    let loc = &rest[..ex];
    let after = &rest[ex + 2..];
    // The context ends at ">: " following "at <".
    let Some(at) = after.find(" at <") else {
        return text.to_string();
    };
    let Some(close) = after[at..].find(">: ") else {
        return text.to_string();
    };
    let head = &after[..at + close + 1];
    let msg = &after[at + close + 3..];
    // Only `include` errors are unwrapped; other function errors keep Go's
    // one-line text (observed with helm v4.3.1).
    let msg = if let Some(inner) = msg.strip_prefix("error calling include: ") {
        format!("error calling include:\n{}", helm_v4_format(inner))
    } else if msg.starts_with("error calling ") {
        return text.to_string();
    } else {
        msg.to_string()
    };
    format!("{loc}\n  {head}:\n    {msg}")
}

/// A set of named templates, like Go's `*template.Template` with Helm's
/// function map and options (`missingkey=zero`, `<no value>` blanked).
#[derive(Default)]
pub struct Templates {
    trees: TreeMap,
    /// Go's default prints missing values as `<no value>`; Helm removes that
    /// text from the output. On by default.
    keep_no_value: bool,
    tpl_cache: TplCache,
}

impl Templates {
    /// An empty set in Helm mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plain Go behaviour: keep `<no value>` in the output.
    pub fn keep_no_value(mut self, keep: bool) -> Self {
        self.keep_no_value = keep;
        self
    }

    /// Parses `src` as template `name`; its `define`s join the set. A later
    /// non-empty definition replaces an earlier one of the same name, as in Go.
    pub fn add(&mut self, name: &str, src: &str) -> Result<(), Error> {
        let trees = parse::parse(name, src, &funcs::has_function).map_err(Error::Parse)?;
        for t in trees {
            self.insert(t);
        }
        Ok(())
    }

    fn insert(&mut self, t: Tree) {
        if let Some(old) = self.trees.get(&t.name) {
            if t.is_empty() && !old.is_empty() {
                return;
            }
        }
        self.trees.insert(t.name.clone(), Rc::new(t));
    }

    /// Whether a template of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.trees.contains_key(name)
    }

    /// Names of all templates (files and defines), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.trees.keys().cloned().collect();
        v.sort();
        v
    }

    /// Executes template `name` with `data` as dot.
    pub fn render(&self, name: &str, data: &Value) -> Result<String, Error> {
        let tree = self
            .trees
            .get(name)
            .ok_or_else(|| Error::NoTemplate(name.to_string()))?;
        let mut st = State::new(&self.trees, tree, data, &self.tpl_cache);
        let mut out = String::new();
        st.run(data, &mut out)?;
        if !self.keep_no_value && out.contains("<no value>") {
            out = out.replace("<no value>", "");
        }
        Ok(out)
    }

    /// Parses and renders a one-off template text (no `define`s are kept).
    pub fn render_str(&self, name: &str, src: &str, data: &Value) -> Result<String, Error> {
        let trees = parse::parse(name, src, &funcs::has_function).map_err(Error::Parse)?;
        let trees: Vec<Rc<Tree>> = trees.into_iter().map(Rc::new).collect();
        let main = trees[0].clone();
        let mut st = State::new(&self.trees, &main, data, &self.tpl_cache);
        st.overlay.push(Rc::new(trees));
        let mut out = String::new();
        st.run(data, &mut out)?;
        if !self.keep_no_value && out.contains("<no value>") {
            out = out.replace("<no value>", "");
        }
        Ok(out)
    }
}

/// Helm's `tpl`: parses `text` as a template named like the calling one,
/// with access to every define, and renders it with `data`.
pub(crate) fn tpl(st: &mut State<'_>, text: &str, data: &Value) -> Result<Value, FnError> {
    // Helm v4 parses tpl text as a template named "gotpl".
    let cached = st.tpl_cache.borrow().get(text).cloned();
    let trees = match cached {
        Some(t) => t,
        None => {
            let parsed = parse::parse("gotpl", text, &funcs::has_function)
                .map_err(|e| FnError::Call(format!("cannot parse template {text:?}: {e}")))?;
            let t: Rc<Vec<Rc<Tree>>> = Rc::new(parsed.into_iter().map(Rc::new).collect());
            st.tpl_cache
                .borrow_mut()
                .insert(text.to_string(), t.clone());
            t
        }
    };
    let main = trees[0].clone();
    let mut sub = State::new(st.trees, &main, data, st.tpl_cache);
    sub.overlay = st.overlay.clone();
    sub.overlay.push(trees);
    sub.includes = st.includes.clone();
    let mut out = String::new();
    sub.run(data, &mut out).map_err(|e| {
        FnError::Call(format!(
            "error during tpl function execution for {text:?}: {e}"
        ))
    })?;
    if out.contains("<no value>") {
        out = out.replace("<no value>", "");
    }
    Ok(Value::string(out))
}

/// Renders a standalone template text with `data` (convenience for tests and
/// one-off uses).
pub fn render_template(src: &str, data: &Value) -> Result<String, Error> {
    let mut t = Templates::new();
    t.add("gotpl", src)?;
    t.render("gotpl", data)
}
