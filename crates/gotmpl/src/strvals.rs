//! Helm's `--set` / `--set-string` syntax (Helm's `strvals` package):
//! `a.b=c`, `a[0]=x`, `a[0].b=y`, `a={x,y}`, several assignments separated
//! by `,`, `\` escaping the next character. With `--set`, values are typed
//! like Helm types them (`true`/`false`/`null` case-insensitively, integers
//! without a leading zero become int64, everything else stays a string);
//! `--set-string` keeps every value a string. The behaviour, including the
//! error texts, follows Helm so that the same command lines are accepted and
//! rejected.

use crate::value::Value;
use std::collections::BTreeMap;

/// Helm's limits (strvals `MaxIndex`, `MaxNestedNameLevel`).
const MAX_INDEX: usize = 65536;
const MAX_NESTED_NAME_LEVEL: usize = 30;

/// Why an assignment did not parse (Helm's text, without the
/// `failed parsing --set data:` prefix the caller adds).
#[derive(Debug, Clone, PartialEq)]
pub struct StrvalsError(pub String);

/// Internal parse outcome: either end of input or a real error.
enum Stop {
    Eof,
    Err(String),
}

fn err<T>(m: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Err(m.into()))
}

/// A mutable tree used while parsing (turned into [`Value`] at the end).
#[derive(Clone, Debug)]
enum Node {
    Map(BTreeMap<String, Node>),
    List(Vec<Node>),
    Leaf(Value),
}

impl Node {
    fn from_value(v: &Value) -> Node {
        match v {
            Value::Map(m) => Node::Map(
                m.borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), Node::from_value(v)))
                    .collect(),
            ),
            Value::List(l) => Node::List(l.iter().map(Node::from_value).collect()),
            other => Node::Leaf(other.clone()),
        }
    }
    fn into_value(self) -> Value {
        match self {
            Node::Map(m) => Value::map(m.into_iter().map(|(k, v)| (k, v.into_value())).collect()),
            Node::List(l) => Value::list(l.into_iter().map(Node::into_value).collect()),
            Node::Leaf(v) => v,
        }
    }
}

struct Parser<'a> {
    sc: &'a [char],
    pos: usize,
    string_only: bool,
}

/// Parses `s` (one `--set` argument) into `base`, as Helm's `ParseInto`
/// (`string_only` = `--set-string`, Helm's `ParseIntoString`).
pub fn parse_into(s: &str, base: &Value, string_only: bool) -> Result<Value, StrvalsError> {
    let chars: Vec<char> = s.chars().collect();
    let mut p = Parser {
        sc: &chars,
        pos: 0,
        string_only,
    };
    let mut data = match Node::from_value(base) {
        Node::Map(m) => m,
        _ => BTreeMap::new(),
    };
    loop {
        match p.key(&mut data, 0) {
            Ok(()) => continue,
            Err(Stop::Eof) => break,
            Err(Stop::Err(e)) => return Err(StrvalsError(e)),
        }
    }
    Ok(Node::Map(data).into_value())
}

impl Parser<'_> {
    fn read(&mut self) -> Option<char> {
        let c = self.sc.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }
    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    /// Reads up to one of `stop` (consumed and returned), honouring `\`
    /// escapes; `Eof` with the runes read so far at the end of input.
    fn runes_until(&mut self, stop: &[char]) -> (Vec<char>, Option<char>) {
        let mut v = Vec::new();
        loop {
            let Some(r) = self.read() else {
                return (v, None);
            };
            if r == '\\' {
                if let Some(n) = self.read() {
                    v.push(n);
                }
                continue;
            }
            if stop.contains(&r) {
                return (v, Some(r));
            }
            v.push(r);
        }
    }

    fn typed(&self, v: &[char]) -> Value {
        let s: String = v.iter().collect();
        if self.string_only {
            return Value::string(s);
        }
        if s.eq_ignore_ascii_case("true") {
            return Value::Bool(true);
        }
        if s.eq_ignore_ascii_case("false") {
            return Value::Bool(false);
        }
        if s.eq_ignore_ascii_case("null") {
            return Value::Nil;
        }
        if s == "0" {
            return Value::Int64(0);
        }
        // Go's strconv.ParseInt accepts a sign; a leading zero is kept a
        // string (Helm does not want octal surprises).
        if !s.is_empty() && !s.starts_with('0') {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(i) = s.parse::<i64>() {
                    return Value::Int64(i);
                }
            }
        }
        Value::string(s)
    }

    fn key(&mut self, data: &mut BTreeMap<String, Node>, level: usize) -> Result<(), Stop> {
        let (k, last) = self.runes_until(&['=', '[', ',', '.']);
        let key: String = k.iter().collect();
        match last {
            None => {
                if key.is_empty() {
                    Err(Stop::Eof)
                } else {
                    err(format!("key {key:?} has no value"))
                }
            }
            Some('[') => {
                let i = self.key_index()?;
                let list = match data.get(&key) {
                    Some(Node::List(l)) => l.clone(),
                    _ => Vec::new(),
                };
                let list = self.list_item(list, i, level)?;
                data.insert(key, Node::List(list));
                Ok(())
            }
            Some('=') => match self.val_list() {
                Ok(vl) => {
                    data.insert(key, Node::List(vl));
                    Ok(())
                }
                Err(ListErr::Eof) => {
                    data.insert(key, Node::Leaf(Value::str("")));
                    Err(Stop::Eof)
                }
                Err(ListErr::NotList) => {
                    let (rs, _) = self.runes_until(&[',']);
                    let v = self.typed(&rs);
                    data.insert(key, Node::Leaf(v));
                    Ok(())
                }
                Err(ListErr::Err(e)) => err(e),
            },
            Some(',') => {
                data.insert(key.clone(), Node::Leaf(Value::str("")));
                err(format!("key {key:?} has no value (cannot end with ,)"))
            }
            Some(_) => {
                // '.': a nested map.
                let level = level + 1;
                if level > MAX_NESTED_NAME_LEVEL {
                    return err(format!(
                        "value name nested level is greater than maximum supported nested level of {MAX_NESTED_NAME_LEVEL}"
                    ));
                }
                let mut inner = match data.get(&key) {
                    Some(Node::Map(m)) => m.clone(),
                    Some(_) => {
                        // Helm panics on a failed type assertion here; a
                        // clear error is the useful equivalent.
                        return err(format!("key {key:?} is not a map"));
                    }
                    None => BTreeMap::new(),
                };
                let e = self.key(&mut inner, level);
                if e.is_ok() && inner.is_empty() {
                    return err(format!("key map {key:?} has no value"));
                }
                if !inner.is_empty() {
                    data.insert(key, Node::Map(inner));
                }
                e
            }
        }
    }

    fn key_index(&mut self) -> Result<i64, Stop> {
        let (v, last) = self.runes_until(&[']']);
        if last.is_none() {
            return Err(Stop::Eof);
        }
        let s: String = v.iter().collect();
        s.parse::<i64>().or_else(|_| {
            err(format!(
                "error parsing index: strconv.Atoi: parsing {s:?}: invalid syntax"
            ))
        })
    }

    fn set_index(mut list: Vec<Node>, index: i64, val: Node) -> Result<Vec<Node>, Stop> {
        if index < 0 {
            return err(format!("negative {index} index not allowed"));
        }
        let index = index as usize;
        if index > MAX_INDEX {
            return err(format!(
                "index of {index} is greater than maximum supported index of {MAX_INDEX}"
            ));
        }
        if list.len() <= index {
            list.resize(index + 1, Node::Leaf(Value::Nil));
        }
        list[index] = val;
        Ok(list)
    }

    fn list_item(&mut self, list: Vec<Node>, i: i64, level: usize) -> Result<Vec<Node>, Stop> {
        if i < 0 {
            return err(format!("negative {i} index not allowed"));
        }
        let (rs, last) = self.runes_until(&['[', '.', '=']);
        if !rs.is_empty() {
            let s: String = rs.iter().collect();
            return err(format!("unexpected data at end of array index: {s:?}"));
        }
        match last {
            None => Err(Stop::Eof),
            Some('=') => match self.val_list() {
                Ok(vl) => Self::set_index(list, i, Node::List(vl)),
                Err(ListErr::Eof) => Self::set_index(list, i, Node::Leaf(Value::str(""))),
                Err(ListErr::NotList) => {
                    let (rs, _) = self.runes_until(&[',']);
                    let v = self.typed(&rs);
                    Self::set_index(list, i, Node::Leaf(v))
                }
                Err(ListErr::Err(e)) => err(e),
            },
            Some('[') => {
                let next = self.key_index()?;
                let cur = match list.get(i as usize) {
                    Some(Node::List(l)) => l.clone(),
                    _ => Vec::new(),
                };
                let inner = self.list_item(cur, next, level)?;
                Self::set_index(list, i, Node::List(inner))
            }
            Some(_) => {
                let mut inner = match list.get(i as usize) {
                    Some(Node::Map(m)) => m.clone(),
                    _ => BTreeMap::new(),
                };
                self.key(&mut inner, level)?;
                Self::set_index(list, i, Node::Map(inner))
            }
        }
    }

    fn val_list(&mut self) -> Result<Vec<Node>, ListErr> {
        match self.read() {
            None => return Err(ListErr::Eof),
            Some('{') => {}
            Some(_) => {
                self.unread();
                return Err(ListErr::NotList);
            }
        }
        let mut list = Vec::new();
        loop {
            let (rs, last) = self.runes_until(&[',', '}']);
            match last {
                None => return Err(ListErr::Err("list must terminate with '}'".into())),
                Some('}') => {
                    if let Some(r) = self.read() {
                        if r != ',' {
                            self.unread();
                        }
                    }
                    list.push(Node::Leaf(self.typed(&rs)));
                    return Ok(list);
                }
                Some(_) => list.push(Node::Leaf(self.typed(&rs))),
            }
        }
    }
}

enum ListErr {
    Eof,
    NotList,
    Err(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        match parse_into(s, &Value::empty_map(), false) {
            Ok(v) => serde_json::to_string(&v.to_json()).unwrap_or_default(),
            Err(e) => format!("ERR {}", e.0),
        }
    }

    #[test]
    fn helm_cases() {
        assert_eq!(p("a=b"), r#"{"a":"b"}"#);
        assert_eq!(
            p("a=1,b=true,c=null,d=0,e=012,f=1.5"),
            r#"{"a":1,"b":true,"c":null,"d":0,"e":"012","f":"1.5"}"#
        );
        assert_eq!(p("a.b.c=x"), r#"{"a":{"b":{"c":"x"}}}"#);
        assert_eq!(p("a[1]=x"), r#"{"a":[null,"x"]}"#);
        assert_eq!(p("a[0].b=x,a[0].c=y"), r#"{"a":[{"b":"x","c":"y"}]}"#);
        assert_eq!(p("a={x,y},b=z"), r#"{"a":["x","y"],"b":"z"}"#);
        assert_eq!(p(r"a=x\,y"), r#"{"a":"x,y"}"#);
        assert_eq!(p(r"a\.b=1"), r#"{"a.b":1}"#);
        assert_eq!(p("a="), r#"{"a":""}"#);
        assert_eq!(p("a"), r#"ERR key "a" has no value"#);
        assert_eq!(
            p("a,b=c"),
            r#"ERR key "a" has no value (cannot end with ,)"#
        );
        assert_eq!(p("a[0][1]=x"), r#"{"a":[[null,"x"]]}"#);
        assert_eq!(p("a={x"), r#"ERR list must terminate with '}'"#);
    }
}
