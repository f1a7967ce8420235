//! The shape of a serde type, found by deserializing it from a probe.
//!
//! A derived `Deserialize` tells its deserializer what it expects: `deserialize_struct` with the
//! (renamed) field names, `deserialize_option`, `deserialize_seq`, `deserialize_map`,
//! `deserialize_string`, `deserialize_bool`, `deserialize_any` (a free-form
//! `serde_json::Value`), ... The probe answers each request with a small valid value and
//! records what was asked at which path. Two refinements need more runs:
//!
//! - a string field that rejects `x` but accepts `1m` is a duration ([`GoDuration`]);
//! - a field is required when leaving it out makes deserialization fail.
//!
//! So the schema comes from the very types trueup parses objects with, with no derive macro and
//! no dependency.
//!
//! [`GoDuration`]: trueup_core::api::GoDuration

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What a type accepts at one place.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// An object with known fields (serde's `deny_unknown_fields` structs).
    Struct(Vec<Field>),
    /// A list of one shape.
    Seq(Box<Shape>),
    /// An object with arbitrary keys and values of one shape.
    Map(Box<Shape>),
    String,
    /// A string holding a Go duration (`1m`, `1h30m`).
    Duration,
    Bool,
    Int,
    Float,
    /// Any JSON value (kept as written).
    Any,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub shape: Shape,
    pub required: bool,
}

/// Why a type could not be traced: a shape the probe does not know (a Rust enum, a tuple).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct TraceError(String);

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Struct(Vec<&'static str>),
    Seq,
    Map,
    String,
    Bool,
    Int,
    Float,
    Any,
}

#[derive(Default)]
struct Ctx {
    /// Paths fed a duration instead of a plain string.
    durations: BTreeSet<String>,
    /// A path left out of its struct.
    omit: Option<String>,
    seen: BTreeMap<String, Node>,
    last_string: Option<String>,
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_string()
    } else {
        format!("{path}.{seg}")
    }
}

/// The shape of `T`.
pub fn trace<T: DeserializeOwned>() -> Result<Shape, TraceError> {
    let mut durations = BTreeSet::new();
    let seen = loop {
        let ctx = RefCell::new(Ctx {
            durations: durations.clone(),
            ..Ctx::default()
        });
        let result = T::deserialize(Probe {
            ctx: &ctx,
            path: String::new(),
        });
        let ctx = ctx.into_inner();
        match result {
            Ok(_) => break ctx.seen,
            Err(e) => match ctx.last_string {
                // A string value was refused: retry that field with a duration.
                Some(p) if !durations.contains(&p) => {
                    durations.insert(p);
                }
                _ => return Err(e),
            },
        }
    };
    let mut required = BTreeSet::new();
    for (path, node) in &seen {
        if let Node::Struct(fields) = node {
            for f in fields {
                let p = join(path, f);
                let ctx = RefCell::new(Ctx {
                    durations: durations.clone(),
                    omit: Some(p.clone()),
                    ..Ctx::default()
                });
                let left_out = T::deserialize(Probe {
                    ctx: &ctx,
                    path: String::new(),
                });
                if left_out.is_err() {
                    required.insert(p);
                }
            }
        }
    }
    build("", &seen, &durations, &required)
}

fn build(
    path: &str,
    seen: &BTreeMap<String, Node>,
    durations: &BTreeSet<String>,
    required: &BTreeSet<String>,
) -> Result<Shape, TraceError> {
    let node = seen
        .get(path)
        .ok_or_else(|| TraceError(format!("`{path}`: nothing was deserialized here")))?;
    Ok(match node {
        Node::Struct(fields) => Shape::Struct(
            fields
                .iter()
                .map(|f| {
                    let p = join(path, f);
                    Ok(Field {
                        name: f.to_string(),
                        shape: build(&p, seen, durations, required)?,
                        required: required.contains(&p),
                    })
                })
                .collect::<Result<_, TraceError>>()?,
        ),
        Node::Seq => Shape::Seq(Box::new(build(
            &join(path, "[]"),
            seen,
            durations,
            required,
        )?)),
        Node::Map => Shape::Map(Box::new(build(
            &join(path, "{}"),
            seen,
            durations,
            required,
        )?)),
        Node::String if durations.contains(path) => Shape::Duration,
        Node::String => Shape::String,
        Node::Bool => Shape::Bool,
        Node::Int => Shape::Int,
        Node::Float => Shape::Float,
        Node::Any => Shape::Any,
    })
}

struct Probe<'a> {
    ctx: &'a RefCell<Ctx>,
    path: String,
}

impl Probe<'_> {
    fn record(&self, node: Node) {
        self.ctx.borrow_mut().seen.insert(self.path.clone(), node);
    }

    fn unsupported(&self, what: &str) -> TraceError {
        TraceError(format!(
            "`{}`: {what} cannot be described as an OpenAPI schema",
            self.path
        ))
    }
}

macro_rules! ints {
    ($($method:ident => $visit:ident($v:expr)),* $(,)?) => {$(
        fn $method<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
            self.record(Node::Int);
            v.$visit($v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = TraceError;

    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::Any);
        v.visit_unit()
    }

    fn deserialize_bool<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::Bool);
        v.visit_bool(false)
    }

    ints! {
        deserialize_i8 => visit_i8(1),
        deserialize_i16 => visit_i16(1),
        deserialize_i32 => visit_i32(1),
        deserialize_i64 => visit_i64(1),
        deserialize_u8 => visit_u8(1),
        deserialize_u16 => visit_u16(1),
        deserialize_u32 => visit_u32(1),
        deserialize_u64 => visit_u64(1),
    }

    fn deserialize_f32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::Float);
        v.visit_f32(1.0)
    }

    fn deserialize_f64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::Float);
        v.visit_f64(1.0)
    }

    fn deserialize_char<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(self.unsupported("a char"))
    }

    fn deserialize_str<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.deserialize_string(v)
    }

    fn deserialize_string<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::String);
        let duration = {
            let mut c = self.ctx.borrow_mut();
            c.last_string = Some(self.path.clone());
            c.durations.contains(&self.path)
        };
        v.visit_str(if duration { "1m" } else { "x" })
    }

    fn deserialize_bytes<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(self.unsupported("bytes"))
    }

    fn deserialize_byte_buf<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(self.unsupported("bytes"))
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_some(self)
    }

    fn deserialize_unit<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(self.unsupported("a unit"))
    }

    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(self.unsupported("a unit struct"))
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, TraceError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::Seq);
        v.visit_seq(OneElement {
            ctx: self.ctx,
            path: Some(join(&self.path, "[]")),
        })
    }

    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        _: usize,
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(self.unsupported("a tuple"))
    }

    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(self.unsupported("a tuple struct"))
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        self.record(Node::Map);
        v.visit_map(Entries {
            ctx: self.ctx,
            path: self.path.clone(),
            keys: vec![("k", "{}")],
            next_value: None,
        })
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        self.record(Node::Struct(fields.to_vec()));
        let omit = self.ctx.borrow().omit.clone();
        let keys = fields
            .iter()
            .filter(|f| omit.as_deref() != Some(join(&self.path, f).as_str()))
            .map(|f| (*f, *f))
            .collect();
        v.visit_map(Entries {
            ctx: self.ctx,
            path: self.path.clone(),
            keys,
            next_value: None,
        })
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, TraceError> {
        Err(self.unsupported("a Rust enum"))
    }

    fn deserialize_identifier<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(self.unsupported("an identifier"))
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_unit()
    }
}

/// A sequence of exactly one element.
struct OneElement<'a> {
    ctx: &'a RefCell<Ctx>,
    path: Option<String>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        match self.path.take() {
            Some(path) => seed
                .deserialize(Probe {
                    ctx: self.ctx,
                    path,
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

/// The entries of a struct (every field, less the omitted one) or of a map (one entry).
struct Entries<'a> {
    ctx: &'a RefCell<Ctx>,
    path: String,
    /// (key, path segment of its value), consumed from the front.
    keys: Vec<(&'static str, &'static str)>,
    next_value: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let (key, segment) = self.keys.remove(0);
        self.next_value = Some(segment);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let segment = self
            .next_value
            .take()
            .ok_or_else(|| TraceError(format!("`{}`: a value before its key", self.path)))?;
        seed.deserialize(Probe {
            ctx: self.ctx,
            path: join(&self.path, segment),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use trueup_core::api::GoDuration;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        name: String,
        #[serde(default)]
        optional: bool,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        interval: GoDuration,
        timeout: Option<GoDuration>,
        #[serde(rename = "ref")]
        reference: Option<Inner>,
        items: Vec<Inner>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        values: Option<serde_json::Value>,
        retries: Option<i64>,
    }

    fn field<'a>(s: &'a Shape, name: &str) -> &'a Field {
        match s {
            Shape::Struct(fs) => fs.iter().find(|f| f.name == name).expect(name),
            other => panic!("not a struct: {other:?}"),
        }
    }

    #[test]
    fn traces_fields_renames_requiredness_and_durations() {
        let s = trace::<Outer>().unwrap();
        let interval = field(&s, "interval");
        assert_eq!(
            (&interval.shape, interval.required),
            (&Shape::Duration, true)
        );
        let timeout = field(&s, "timeout");
        assert_eq!(
            (&timeout.shape, timeout.required),
            (&Shape::Duration, false)
        );
        let r = field(&s, "ref");
        assert!(!r.required);
        assert_eq!(
            field(&r.shape, "name"),
            &Field {
                name: "name".into(),
                shape: Shape::String,
                required: true
            }
        );
        assert!(!field(&r.shape, "optional").required);
        let items = field(&s, "items");
        assert!(items.required, "a Vec without default is required");
        assert!(matches!(&items.shape, Shape::Seq(inner) if matches!(**inner, Shape::Struct(_))));
        assert_eq!(
            field(&s, "labels").shape,
            Shape::Map(Box::new(Shape::String))
        );
        assert_eq!(field(&s, "values").shape, Shape::Any);
        assert_eq!(field(&s, "retries").shape, Shape::Int);
    }

    #[test]
    fn rust_enums_are_refused_with_the_path() {
        #[allow(dead_code)]
        #[derive(Deserialize)]
        enum Mode {
            A,
            B,
        }
        #[allow(dead_code)]
        #[derive(Deserialize)]
        struct WithEnum {
            mode: Mode,
        }
        let err = trace::<WithEnum>().unwrap_err();
        assert!(err.to_string().contains("`mode`: a Rust enum"), "{err}");
    }
}
