//! The evaluator: walks parsed trees against a [`Value`], following Go's
//! text/template execution rules (exec.go) and Helm's engine settings.

use crate::funcs::{self, FnError, Func};
use crate::gofmt;
use crate::parse::{Arg, Command, Control, Node, Number, Pipe, Tree};
use crate::value::Value;
use crate::Error;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Go's maxExecDepth: deeper `template` nesting is an error, not a stack overflow.
const MAX_EXEC_DEPTH: usize = 10_000;
/// Helm's recursionMaxNums for `include` of the same name.
const MAX_INCLUDE_NESTING: usize = 1000;

/// The set of named templates visible during one execution.
pub(crate) type TreeMap = HashMap<String, Rc<Tree>, FnvBuild>;

/// Template names are short and trusted: FNV rather than SipHash.
pub(crate) type FnvBuild = std::hash::BuildHasherDefault<funcs::Fnv>;

/// Cache of templates parsed by `tpl`, keyed by text (every `tpl` template
/// is named "gotpl", as in Helm v4).
pub(crate) type TplCache = RefCell<HashMap<String, Rc<Vec<Rc<Tree>>>>>;

enum Flow {
    Break,
    Continue,
    Err(Error),
}

impl From<Error> for Flow {
    fn from(e: Error) -> Self {
        Flow::Err(e)
    }
}

/// Execution state of one template invocation chain.
pub struct State<'e> {
    pub(crate) trees: &'e TreeMap,
    /// Templates defined by `tpl` strings, visible only inside that `tpl` call.
    pub(crate) overlay: Vec<Rc<Vec<Rc<Tree>>>>,
    pub(crate) tree: &'e Rc<Tree>,
    vars: Vec<(&'e str, Value)>,
    depth: usize,
    pub(crate) includes: Rc<RefCell<HashMap<String, usize, FnvBuild>>>,
    pub(crate) tpl_cache: &'e TplCache,
    /// Position and node being evaluated, for error context (formatted only
    /// when an error is actually built).
    at: (usize, Ctx<'e>),
}

/// The node whose text an error names (Go's ErrorContext), kept by reference
/// so that evaluation never formats it unless an error needs it.
#[derive(Clone, Copy)]
enum Ctx<'e> {
    None,
    Arg(&'e Arg),
    Cmd(&'e Command),
    Name(&'e str),
    Template(&'e str, Option<&'e Pipe>),
}

impl Ctx<'_> {
    fn render(self) -> Option<String> {
        match self {
            Ctx::None => None,
            Ctx::Arg(a) => Some(a.to_string()),
            Ctx::Cmd(c) => Some(c.to_string()),
            Ctx::Name(n) => Some(n.to_string()),
            Ctx::Template(name, pipe) => Some(node_template_string(name, pipe)),
        }
    }
}

impl<'e> State<'e> {
    pub(crate) fn new(
        trees: &'e TreeMap,
        tree: &'e Rc<Tree>,
        dot: &Value,
        tpl_cache: &'e TplCache,
    ) -> Self {
        State {
            trees,
            overlay: Vec::new(),
            tree,
            vars: vec![("$", dot.clone())],
            depth: 0,
            includes: Rc::new(RefCell::new(HashMap::default())),
            tpl_cache,
            at: (0, Ctx::None),
        }
    }

    /// Runs the current tree with `dot`, appending output to `out`.
    pub(crate) fn run(&mut self, dot: &Value, out: &mut String) -> Result<(), Error> {
        let tree = self.tree;
        match self.walk_list(dot, &tree.root, out) {
            Ok(()) => Ok(()),
            Err(Flow::Err(e)) => Err(e),
            // The parser only allows break/continue inside range.
            Err(_) => Ok(()),
        }
    }

    /// Looks a template up by name (tpl overlays first).
    pub(crate) fn lookup(&self, name: &str) -> Option<Rc<Tree>> {
        for layer in self.overlay.iter().rev() {
            if let Some(t) = layer.iter().rev().find(|t| t.name == name) {
                return Some(t.clone());
            }
        }
        self.trees.get(name).cloned()
    }

    /// Executes template `name` with `dot` into a fresh string (Helm's `include`).
    pub(crate) fn exec_named(&mut self, name: &str, dot: &Value) -> Result<String, FnError> {
        let Some(tree) = self.lookup(name) else {
            return Err(FnError::Call(format!(
                "template: no template {name:?} associated with template \"gotpl\""
            )));
        };
        {
            let mut inc = self.includes.borrow_mut();
            let n = match inc.get_mut(name) {
                Some(n) => n,
                None => inc.entry(name.to_string()).or_insert(0),
            };
            if *n > MAX_INCLUDE_NESTING {
                return Err(FnError::Call(format!(
                    "rendering template has a nested reference name: {name}: unable to execute template"
                )));
            }
            *n += 1;
        }
        if self.depth >= MAX_EXEC_DEPTH {
            return Err(FnError::Call(format!(
                "template: {}: exceeded maximum template depth ({MAX_EXEC_DEPTH})",
                tree.name
            )));
        }
        let mut sub = State {
            trees: self.trees,
            overlay: self.overlay.clone(),
            tree: &tree,
            vars: vec![("$", dot.clone())],
            depth: self.depth + 1,
            includes: self.includes.clone(),
            tpl_cache: self.tpl_cache,
            at: (0, Ctx::None),
        };
        let mut out = String::new();
        let r = sub.run(dot, &mut out);
        if let Some(n) = self.includes.borrow_mut().get_mut(name) {
            *n = n.saturating_sub(1);
        }
        r.map_err(FnError::Exec)?;
        Ok(out)
    }

    fn error(&self, msg: impl Into<String>) -> Error {
        let (pos, ctx) = self.at;
        Error::Exec {
            location: self.tree.location(pos),
            name: self.tree.name.clone(),
            context: ctx.render(),
            message: msg.into(),
            source: None,
        }
    }

    fn at(&mut self, pos: usize, ctx: Ctx<'e>) {
        self.at = (pos, ctx);
    }

    fn walk_list(&mut self, dot: &Value, list: &'e [Node], out: &mut String) -> Result<(), Flow> {
        for n in list {
            self.walk(dot, n, out)?;
        }
        Ok(())
    }

    fn walk(&mut self, dot: &Value, node: &'e Node, out: &mut String) -> Result<(), Flow> {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(pipe) => {
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    print_value(out, &v);
                }
            }
            Node::If(c) => self.walk_if_with(dot, c, false, out)?,
            Node::With(c) => self.walk_if_with(dot, c, true, out)?,
            Node::Range(c) => self.walk_range(dot, c, out)?,
            Node::Break(_) => return Err(Flow::Break),
            Node::Continue(_) => return Err(Flow::Continue),
            Node::Template { pos, name, pipe } => {
                self.at(*pos, Ctx::Template(name, pipe.as_ref()));
                let Some(tree) = self.lookup(name) else {
                    return Err(self.error(format!("template {name:?} not defined")).into());
                };
                if self.depth >= MAX_EXEC_DEPTH {
                    return Err(self
                        .error(format!(
                            "exceeded maximum template depth ({MAX_EXEC_DEPTH})"
                        ))
                        .into());
                }
                let new_dot = match pipe {
                    Some(p) => self.eval_pipeline(dot, p)?,
                    None => Value::Nil,
                };
                let mut sub = State {
                    trees: self.trees,
                    overlay: self.overlay.clone(),
                    tree: &tree,
                    vars: vec![("$", new_dot.clone())],
                    depth: self.depth + 1,
                    includes: self.includes.clone(),
                    tpl_cache: self.tpl_cache,
                    at: (0, Ctx::None),
                };
                if let Err(Flow::Err(e)) = sub.walk_list(&new_dot, &tree.root, out) {
                    return Err(Flow::Err(e));
                }
            }
        }
        Ok(())
    }

    fn walk_if_with(
        &mut self,
        dot: &Value,
        c: &'e Control,
        with: bool,
        out: &mut String,
    ) -> Result<(), Flow> {
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &c.pipe)?;
        let r = if val.truthy() {
            if with {
                self.walk_list(&val, &c.list, out)
            } else {
                self.walk_list(dot, &c.list, out)
            }
        } else if let Some(e) = &c.else_list {
            self.walk_list(dot, e, out)
        } else {
            Ok(())
        };
        self.vars.truncate(mark);
        r
    }

    fn walk_range(&mut self, dot: &Value, c: &'e Control, out: &mut String) -> Result<(), Flow> {
        let outer = self.vars.len();
        let val = self.eval_pipeline(dot, &c.pipe)?;
        // Host objects that are Go maps underneath (`.Files`) range as maps.
        let val = match &val {
            Value::Object(o) => match o.to_data() {
                Value::Nil => val,
                data => data,
            },
            _ => val,
        };
        let mark = self.vars.len();
        let ndecl = c.pipe.decl.len();
        let one =
            |this: &mut Self, index: Value, elem: Value, out: &mut String| -> Result<bool, Flow> {
                if ndecl > 0 {
                    if c.pipe.is_assign {
                        let (name, v) = if ndecl > 1 {
                            (&c.pipe.decl[0], index.clone())
                        } else {
                            (&c.pipe.decl[0], elem.clone())
                        };
                        this.set_var(name, v)?;
                    } else if let Some(top) = this.vars.len().checked_sub(1) {
                        this.vars[top].1 = elem.clone();
                    }
                }
                if ndecl > 1 {
                    if c.pipe.is_assign {
                        this.set_var(&c.pipe.decl[1], elem.clone())?;
                    } else if let Some(i) = this.vars.len().checked_sub(2) {
                        this.vars[i].1 = index;
                    }
                }
                let r = this.walk_list(&elem, &c.list, out);
                this.vars.truncate(mark);
                match r {
                    Ok(()) | Err(Flow::Continue) => Ok(true),
                    Err(Flow::Break) => Ok(false),
                    Err(e) => Err(e),
                }
            };
        let mut ran = false;
        let r: Result<(), Flow> = (|| {
            match &val {
                Value::List(l) => {
                    for (i, e) in l.iter().enumerate() {
                        ran = true;
                        if !one(self, Value::Int(i as i64), e.clone(), out)? {
                            break;
                        }
                    }
                }
                Value::Map(m) => {
                    // Snapshot so the body may mutate the map (Go iterates a
                    // sorted copy of the keys too).
                    let entries: Vec<(Value, Value)> = m
                        .borrow()
                        .iter()
                        .map(|(k, v)| (Value::str(k), v.clone()))
                        .collect();
                    for (k, v) in entries {
                        ran = true;
                        if !one(self, k, v, out)? {
                            break;
                        }
                    }
                }
                Value::Int(n) | Value::Int64(n) => {
                    if ndecl > 1 {
                        return Err(self
                            .error(format!(
                                "can't use {n} to iterate over more than one variable"
                            ))
                            .into());
                    }
                    for i in 0..*n {
                        ran = true;
                        if !one(self, Value::Int(i), Value::Int(i), out)? {
                            break;
                        }
                    }
                }
                Value::Nil => {}
                other => {
                    return Err(self
                        .error(format!(
                            "range can't iterate over {}",
                            gofmt::sprint_value(other)
                        ))
                        .into())
                }
            }
            Ok(())
        })();
        r?;
        if !ran {
            if let Some(e) = &c.else_list {
                self.vars.truncate(mark);
                let r = self.walk_list(dot, e, out);
                self.vars.truncate(outer);
                return r;
            }
        }
        self.vars.truncate(outer);
        Ok(())
    }

    fn set_var(&mut self, name: &str, v: Value) -> Result<(), Error> {
        for (n, slot) in self.vars.iter_mut().rev() {
            if *n == name {
                *slot = v;
                return Ok(());
            }
        }
        Err(self.error(format!("undefined variable: {name}")))
    }

    fn var_value(&self, name: &str) -> Result<Value, Error> {
        for (n, v) in self.vars.iter().rev() {
            if *n == name {
                return Ok(v.clone());
            }
        }
        Err(self.error(format!("undefined variable: {name}")))
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &'e Pipe) -> Result<Value, Error> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or_default();
        for name in &pipe.decl {
            if pipe.is_assign {
                self.set_var(name, value.clone())?;
            } else {
                self.vars.push((name.as_str(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&mut self, cmd: &'e Command, final_: &Option<Value>) -> Result<(), Error> {
        if cmd.args.len() > 1 || final_.is_some() {
            return Err(self.error(format!(
                "can't give argument to non-function {}",
                cmd.args[0]
            )));
        }
        Ok(())
    }

    fn eval_command(
        &mut self,
        dot: &Value,
        cmd: &'e Command,
        final_: Option<Value>,
    ) -> Result<Value, Error> {
        let first = &cmd.args[0];
        match first {
            Arg::Field { pos, idents } => {
                self.at(*pos, Ctx::Arg(first));
                self.eval_field_chain(dot, dot.clone(), first, idents, cmd, final_)
            }
            Arg::Chain { pos, node, idents } => {
                self.at(*pos, Ctx::Arg(first));
                if let Arg::Nil(_) = **node {
                    return Err(self.error(format!("indirection through explicit nil in {first}")));
                }
                let recv = self.eval_arg(dot, node)?;
                self.eval_field_chain(dot, recv, first, idents, cmd, final_)
            }
            Arg::Identifier { name, .. } => self.eval_function(
                dot,
                name,
                cmd.pos,
                first.pos(),
                &cmd.args[1..],
                Ctx::Cmd(cmd),
                final_,
            ),
            Arg::Pipe(p) => {
                self.not_a_function(cmd, &final_)?;
                self.eval_pipeline(dot, p)
            }
            Arg::Variable { pos, name, idents } => {
                self.at(*pos, Ctx::Arg(first));
                let v = self.var_value(name)?;
                if idents.is_empty() {
                    self.not_a_function(cmd, &final_)?;
                    return Ok(v);
                }
                self.eval_field_chain(dot, v, first, idents, cmd, final_)
            }
            _ => {
                self.at(first.pos(), Ctx::Arg(first));
                self.not_a_function(cmd, &final_)?;
                match first {
                    Arg::Bool(_, b) => Ok(Value::Bool(*b)),
                    Arg::Dot(_) => Ok(dot.clone()),
                    Arg::Nil(_) => Err(self.error("nil is not a command")),
                    Arg::Number { value, .. } => Ok(number_value(value)),
                    Arg::String { value, .. } => Ok(Value::String(value.clone())),
                    _ => Ok(Value::Nil),
                }
            }
        }
    }

    /// Evaluates an argument (not in command position).
    fn eval_arg(&mut self, dot: &Value, arg: &'e Arg) -> Result<Value, Error> {
        self.at(arg.pos(), Ctx::Arg(arg));
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Value::Nil),
            Arg::Bool(_, b) => Ok(Value::Bool(*b)),
            Arg::Number { value, .. } => Ok(number_value(value)),
            Arg::String { value, .. } => Ok(Value::String(value.clone())),
            Arg::Field { idents, .. } => {
                let mut recv = dot.clone();
                for (i, id) in idents.iter().enumerate() {
                    recv = self.eval_field(id, &[], None, recv, i == 0)?;
                }
                Ok(recv)
            }
            Arg::Variable { name, idents, .. } => {
                let mut recv = self.var_value(name)?;
                for id in idents {
                    recv = self.eval_field(id, &[], None, recv, false)?;
                }
                Ok(recv)
            }
            Arg::Chain { node, idents, .. } => {
                if let Arg::Nil(_) = **node {
                    return Err(self.error(format!("indirection through explicit nil in {arg}")));
                }
                let mut recv = self.eval_arg(dot, node)?;
                self.at(arg.pos(), Ctx::Arg(arg));
                for id in idents {
                    recv = self.eval_field(id, &[], None, recv, false)?;
                }
                Ok(recv)
            }
            Arg::Pipe(p) => self.eval_pipeline(dot, p),
            Arg::Identifier { name, pos } => {
                // A function used as an argument is called with no arguments
                // (a one-word command, which prints as just its name).
                self.eval_function(dot, name, *pos, *pos, &[], Ctx::Name(name), None)
            }
        }
    }

    fn eval_field_chain(
        &mut self,
        dot: &Value,
        mut recv: Value,
        node: &'e Arg,
        idents: &'e [Rc<str>],
        cmd: &'e Command,
        final_: Option<Value>,
    ) -> Result<Value, Error> {
        let n = idents.len();
        let from_dot = matches!(node, Arg::Field { .. });
        for (i, id) in idents[..n - 1].iter().enumerate() {
            recv = self.eval_field(id, &[], None, recv, from_dot && i == 0)?;
        }
        // Arguments to a method call: the command's remaining words, then final.
        let mut args = Vec::new();
        for a in &cmd.args[1..] {
            args.push(self.eval_arg(dot, a)?);
        }
        self.at(node.pos(), Ctx::Arg(node));
        self.eval_field(&idents[n - 1], &args, final_, recv, from_dot && n == 1)
    }

    fn eval_field(
        &mut self,
        name: &str,
        args: &[Value],
        final_: Option<Value>,
        recv: Value,
        _is_dot: bool,
    ) -> Result<Value, Error> {
        let has_args = !args.is_empty() || final_.is_some();
        match &recv {
            Value::Map(m) => {
                if has_args {
                    return Err(self.error(format!("{name} is not a method but has arguments")));
                }
                // missingkey=zero: a missing key is the zero value of
                // interface{}, i.e. nil.
                Ok(m.borrow().get(name).cloned().unwrap_or(Value::Nil))
            }
            Value::Object(o) => {
                if o.has_method(name) {
                    let mut all = args.to_vec();
                    if let Some(f) = final_ {
                        all.push(f);
                    }
                    return match o.call(name, &all) {
                        Some(Ok(v)) => Ok(v),
                        Some(Err(e)) => Err(self.error(format!("error calling {name}: {e}"))),
                        None => Err(self.error(format!(
                            "can't evaluate field {name} in type {}",
                            o.type_name()
                        ))),
                    };
                }
                if has_args {
                    return Err(self.error(format!(
                        "{name} has arguments but cannot be invoked as function"
                    )));
                }
                match o.field(name) {
                    Some(v) => Ok(v),
                    None => Err(self.error(format!(
                        "can't evaluate field {name} in type {}",
                        o.type_name()
                    ))),
                }
            }
            Value::Nil => Err(self.error(format!("nil pointer evaluating interface {{}}.{name}"))),
            _ => Err(self.error(format!(
                "can't evaluate field {name} in type interface {{}}"
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn eval_function(
        &mut self,
        dot: &Value,
        name: &'e str,
        cmd_pos: usize,
        first_pos: usize,
        rest: &'e [Arg],
        ctx: Ctx<'e>,
        final_: Option<Value>,
    ) -> Result<Value, Error> {
        let Some((func, sig)) = funcs::lookup_with_signature(name) else {
            self.at(cmd_pos, ctx);
            return Err(self.error(format!("{name:?} is not a defined function")));
        };
        let nargs = rest.len() + usize::from(final_.is_some());
        match func {
            Func::And | Func::Or => {
                if nargs == 0 {
                    self.at(cmd_pos, ctx);
                    return Err(self.error(format!(
                        "wrong number of args for {name}: want at least 1 got 0"
                    )));
                }
                let is_and = matches!(func, Func::And);
                let mut last = Value::Nil;
                for a in rest {
                    last = self.eval_arg(dot, a)?;
                    if last.truthy() != is_and {
                        return Ok(last);
                    }
                }
                if let Some(f) = final_ {
                    last = f;
                }
                Ok(last)
            }
            Func::Plain(_) | Func::Ctx(_) => {
                if let Some(sig) = sig {
                    let variadic = sig.last() == Some(&b'*');
                    let fixed = if variadic { sig.len() - 1 } else { sig.len() };
                    let bad = if variadic {
                        nargs < fixed - 1
                    } else {
                        nargs != fixed
                    };
                    if bad {
                        self.at(first_pos, Ctx::Name(name));
                        return Err(self.error(if variadic {
                            format!(
                                "wrong number of args for {name}: want at least {} got {nargs}",
                                fixed - 1
                            )
                        } else {
                            format!("wrong number of args for {name}: want {fixed} got {nargs}")
                        }));
                    }
                }
                let kind_at = |i: usize| -> u8 {
                    match sig {
                        None => b'a',
                        Some(s) if s.last() == Some(&b'*') => {
                            let fixed = s.len() - 1;
                            if i < fixed {
                                s[i]
                            } else {
                                s[fixed - 1]
                            }
                        }
                        Some(s) => s.get(i).copied().unwrap_or(b'a'),
                    }
                };
                let mut args = Vec::with_capacity(nargs);
                for (i, a) in rest.iter().enumerate() {
                    let v = self.eval_arg(dot, a)?;
                    if let Err(m) = funcs::check_arg(kind_at(i), &v) {
                        self.at(a.pos(), Ctx::Arg(a));
                        let m = literal_arg_error(kind_at(i), a).unwrap_or(m);
                        return Err(self.error(m));
                    }
                    args.push(v);
                }
                if let Some(v) = final_ {
                    if let Err(m) = funcs::check_arg(kind_at(args.len()), &v) {
                        return Err(self.error(m));
                    }
                    args.push(v);
                }
                self.at(cmd_pos, ctx);
                let r = match func {
                    Func::Plain(f) => f(&args),
                    Func::Ctx(g) => g(self, &args),
                    Func::And | Func::Or => Ok(Value::Nil),
                };
                match r {
                    Ok(v) => Ok(v),
                    Err(FnError::Call(m)) => Err(self.error(format!("error calling {name}: {m}"))),
                    Err(FnError::Arg(m)) => Err(self.error(m)),
                    Err(FnError::Exec(inner)) => {
                        let mut e = self.error(format!("error calling {name}: {inner}"));
                        if let Error::Exec { source, .. } = &mut e {
                            *source = Some(Box::new(inner));
                        }
                        Err(e)
                    }
                }
            }
        }
    }
}

fn number_value(n: &Number) -> Value {
    match n {
        Number::Int(i) => Value::Int(*i),
        Number::Float(f) => Value::Float(*f),
    }
}

fn node_template_string(name: &str, pipe: Option<&Pipe>) -> String {
    match pipe {
        Some(p) => format!("{{{{template {} {}}}}}", gofmt::go_quote(name), p),
        None => format!("{{{{template {}}}}}", gofmt::go_quote(name)),
    }
}

/// Go's printValue: nil prints as `<no value>` (Helm later blanks it out).
fn print_value(out: &mut String, v: &Value) {
    match v {
        Value::Nil => out.push_str("<no value>"),
        // Go dereferences a pointer before printing it (no `&`).
        Value::Object(o) => match o.action_display() {
            Some(s) => out.push_str(&s),
            None => {
                let d = o.display();
                out.push_str(d.strip_prefix('&').unwrap_or(&d));
            }
        },
        other => gofmt::write_value(out, other, 'v', false),
    }
}

/// Go's error for a constant (or `nil`) passed to a typed parameter it cannot
/// convert to: constants are checked against the parameter's kind before
/// any call, with the node's text in the message.
fn literal_arg_error(kind: u8, a: &Arg) -> Option<String> {
    let ty = match kind {
        b's' => "string",
        b'i' => "int",
        b'b' => "bool",
        b'm' => "map[string]interface {}",
        b't' => "time.Time",
        b'l' => "[]interface {}",
        b'c' => "sprig.certificate",
        _ => return None,
    };
    match a {
        Arg::Nil(_) if kind == b'm' || kind == b'l' => None,
        Arg::Nil(_) => Some(format!("cannot assign nil to {ty}")),
        Arg::Bool(..) | Arg::Number { .. } | Arg::String { .. } => Some(match kind {
            b's' => format!("expected string; found {a}"),
            b'i' => format!("expected integer; found {a}"),
            b'b' => format!("expected bool; found {a}"),
            _ => format!("can't handle {a} for arg of type {ty}"),
        }),
        _ => None,
    }
}
