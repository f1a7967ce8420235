//! The dynamic value model templates operate on.
//!
//! Go templates see `interface{}` values; Helm's values are what
//! `sigs.k8s.io/yaml` produces (numbers are `float64`, maps are
//! `map[string]interface{}`), while literals and Sprig functions produce Go
//! `int`s, `[]interface{}` and so on. [`Value`] keeps exactly the distinctions
//! that change observable output: `int` vs `float64` (printing, `typeOf`,
//! comparisons) and map identity (Sprig's `set`/`merge` mutate in place, and
//! charts rely on that through `$_ := set $d "k" v`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

/// A map with Go reference semantics: clones share the same storage, so a
/// mutation through `set` is seen by every holder, like a Go map.
pub type MapRef = Rc<RefCell<BTreeMap<String, Value>>>;

/// A template value.
#[derive(Clone, Default)]
pub enum Value {
    /// Go's `nil` (also a missing map key, which Helm turns into a zero value).
    #[default]
    Nil,
    /// `bool`.
    Bool(bool),
    /// Go `int` (template literals, `len`, `int`, `until`, ...).
    Int(i64),
    /// Go `int64` (Sprig's `int64`, `atoi`-family results keep `int`).
    Int64(i64),
    /// `float64` (every number that came from YAML or JSON).
    Float(f64),
    /// `string`.
    String(Rc<str>),
    /// `[]interface{}` (lists are immutable: Sprig's list functions copy).
    List(Rc<Vec<Value>>),
    /// `map[string]interface{}` with shared, mutable storage; keys stay sorted
    /// because Go prints, ranges and serializes maps in key order.
    Map(MapRef),
    /// A host object with fields and methods (`.Files`, `.Capabilities`).
    Object(Rc<dyn Object>),
}

/// Host objects exposed to templates: `.Name` looks up a field or calls a
/// method without arguments, `.Get "x"` calls a method with arguments.
pub trait Object {
    /// Go type name, for `typeOf` and error messages.
    fn type_name(&self) -> &str;
    /// A field or zero-argument method; `None` if there is no such member.
    fn field(&self, name: &str) -> Option<Value>;
    /// Calls method `name`; `None` if there is no such method.
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>>;
    /// Whether `name` is a method (methods accept arguments, fields do not).
    fn has_method(&self, name: &str) -> bool;
    /// How the object prints with `%v`.
    fn display(&self) -> String {
        format!("{{{}}}", self.type_name())
    }
    /// How the object prints in a template action, where Go takes the
    /// address of a struct field and so finds a pointer `String` method.
    fn action_display(&self) -> Option<String> {
        None
    }
    /// The object as plain data, for `toYaml` / `toJson`.
    fn to_data(&self) -> Value {
        Value::Nil
    }
    /// Go's reflect kind (`kindOf`): `ptr` for the engine's objects.
    fn kind_name(&self) -> &'static str {
        "ptr"
    }
    /// The object as `Any`, for functions that accept one concrete type.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

impl Value {
    /// Builds a string value.
    pub fn str(s: &str) -> Value {
        Value::String(Rc::from(s))
    }

    /// Builds a string value from an owned string.
    pub fn string(s: String) -> Value {
        Value::String(Rc::from(s))
    }

    /// Builds a list value.
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }

    /// Builds a map value.
    pub fn map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(RefCell::new(m)))
    }

    /// An empty map.
    pub fn empty_map() -> Value {
        Value::map(BTreeMap::new())
    }

    /// Go's type name as `%T` / Sprig's `typeOf` print it.
    pub fn type_name(&self) -> String {
        match self {
            Value::Nil => "<nil>".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Int64(_) => "int64".into(),
            Value::Float(_) => "float64".into(),
            Value::String(_) => "string".into(),
            Value::List(_) => "[]interface {}".into(),
            Value::Map(_) => "map[string]interface {}".into(),
            Value::Object(o) => o.type_name().into(),
        }
    }

    /// Go's reflect kind name, as Sprig's `kindOf` / `kindIs` use it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Nil => "invalid",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Int64(_) => "int64",
            Value::Float(_) => "float64",
            Value::String(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
            Value::Object(o) => o.kind_name(),
        }
    }

    /// Go template truthiness: false, 0, nil and empty string/list/map are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) | Value::Int64(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.borrow().is_empty(),
            Value::Object(_) => true,
        }
    }

    /// The string inside a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is `nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// Identity comparison for maps (Go compares map headers only by pointer).
    pub fn same_map(a: &MapRef, b: &MapRef) -> bool {
        Rc::ptr_eq(a, b)
    }

    /// A deep copy: maps get fresh storage (Sprig's `deepCopy`).
    pub fn deep_copy(&self) -> Value {
        match self {
            Value::List(l) => Value::list(l.iter().map(Value::deep_copy).collect()),
            Value::Map(m) => Value::map(
                m.borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.deep_copy()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Converts from JSON data, the way Helm's values arrive (numbers become
    /// `float64`, as Go's `encoding/json` decodes them into `interface{}`).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::str(s),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to JSON data (objects turn into their data form).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) | Value::Int64(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    serde_json::Value::from(*f as i64)
                } else {
                    serde_json::Number::from_f64(*f)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null)
                }
            }
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => serde_json::Value::Object(
                m.borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            Value::Object(o) => o.to_data().to_json(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::str(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::string(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::list(v)
    }
}
impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Self {
        Value::from_json(v)
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}({})",
            self.type_name(),
            crate::gofmt::sprint_value(self)
        )
    }
}

impl PartialEq for Value {
    /// Go's `reflect.DeepEqual`-like equality (used by Sprig's `has`, `uniq`).
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) | (Value::Int64(a), Value::Int64(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => Rc::ptr_eq(a, b) || *a.borrow() == *b.borrow(),
            (Value::Object(a), Value::Object(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }
}
