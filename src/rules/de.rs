//! A serde deserializer over the positioned tree: errors carry the position of the node
//! they concern, and unknown struct fields are collected (with a suggestion) instead of
//! stopping, so one pass reports every unknown key.

use super::diagnostic::unknown_message;
use super::yaml::{Kind, Node, Pos, Problem};
use saphyr_parser::ScalarStyle;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::fmt;

#[derive(Debug)]
pub(crate) struct DeError {
    pub(crate) pos: Option<Pos>,
    pub(crate) message: String,
    /// The keys from the deserialized root down to the value that failed.
    pub(crate) path: Vec<String>,
    /// The field, when the error is a missing field.
    pub(crate) missing: Option<&'static str>,
}

impl DeError {
    pub(crate) fn at(mut self, pos: Pos) -> DeError {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
            path: Vec::new(),
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field),
            ..<DeError as de::Error>::custom(format!("missing field {field:?}"))
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::custom(format!("duplicate field {field:?}"))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(unknown_message("field", field, expected))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(unknown_message("value", variant, expected))
    }
}

/// Problems found while deserializing that do not stop it (unknown keys).
pub(crate) type Sink = RefCell<Vec<Problem>>;

#[derive(Clone, Copy)]
pub(crate) struct De<'a> {
    pub(crate) node: &'a Node,
    /// The key this node is the value of, for messages.
    pub(crate) key: Option<&'a str>,
    pub(crate) sink: &'a Sink,
}

impl<'a> De<'a> {
    pub(crate) fn child(&self, node: &'a Node, key: Option<&'a str>) -> De<'a> {
        De {
            node,
            key,
            sink: self.sink,
        }
    }

    pub(crate) fn expected(&self, what: &str) -> DeError {
        let found = self.node.describe();
        let message = match self.key {
            Some(k) => format!("{k}: expected {what}, found {found}"),
            None => format!("expected {what}, found {found}"),
        };
        DeError {
            pos: Some(self.node.pos),
            ..<DeError as de::Error>::custom(message)
        }
    }

    /// The text of a plain (unquoted) scalar, the only kind that can be a number or bool.
    pub(crate) fn plain(&self) -> Option<&'a str> {
        match &self.node.kind {
            Kind::Scalar {
                value,
                style: ScalarStyle::Plain,
            } => Some(value),
            _ => None,
        }
    }
}

pub(crate) fn parse_yaml_float(s: &str) -> Option<f64> {
    match s {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let numeric = !s.is_empty()
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if numeric { s.parse().ok() } else { None }
}

impl<'de, 'a> de::Deserializer<'de> for De<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let pos = self.node.pos;
        let r = match &self.node.kind {
            Kind::Seq(_) => return self.deserialize_seq(visitor),
            Kind::Map(_) => return self.deserialize_map(visitor),
            Kind::Scalar { value, .. } => match self.plain() {
                Some(_) if self.node.is_null() => visitor.visit_unit(),
                Some("true" | "True" | "TRUE") => visitor.visit_bool(true),
                Some("false" | "False" | "FALSE") => visitor.visit_bool(false),
                Some(s) => {
                    if let Ok(u) = s.parse::<u64>() {
                        visitor.visit_u64(u)
                    } else if let Ok(i) = s.parse::<i64>() {
                        visitor.visit_i64(i)
                    } else if let Some(f) = parse_yaml_float(s) {
                        visitor.visit_f64(f)
                    } else {
                        visitor.visit_str(s)
                    }
                }
                None => visitor.visit_str(value),
            },
        };
        r.map_err(|e: DeError| e.at(pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain() {
            Some("true" | "True" | "TRUE") => visitor.visit_bool(true),
            Some("false" | "False" | "FALSE") => visitor.visit_bool(false),
            _ => Err(self.expected("true or false")),
        }
        .map_err(|e: DeError| e.at(self.node.pos))
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().and_then(|s| s.parse::<i64>().ok()) {
            Some(i) => visitor
                .visit_i64(i)
                .map_err(|e: DeError| e.at(self.node.pos)),
            None => Err(self.expected("an integer")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().and_then(|s| s.parse::<u64>().ok()) {
            Some(u) => visitor
                .visit_u64(u)
                .map_err(|e: DeError| e.at(self.node.pos)),
            None => Err(self.expected("a whole number")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.plain().and_then(parse_yaml_float) {
            Some(f) => visitor
                .visit_f64(f)
                .map_err(|e: DeError| e.at(self.node.pos)),
            None => Err(self.expected("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Scalar { value, .. } => visitor
                .visit_str(value)
                .map_err(|e: DeError| e.at(self.node.pos)),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
        .map_err(|e: DeError| e.at(self.node.pos))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor
                .visit_unit()
                .map_err(|e: DeError| e.at(self.node.pos))
        } else {
            Err(self.expected("nothing"))
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Seq(items) => visitor
                .visit_seq(SeqAcc {
                    de: self,
                    items: items.iter(),
                })
                .map_err(|e: DeError| e.at(self.node.pos)),
            _ => Err(self.expected("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Map(entries) => visitor
                .visit_map(MapAcc {
                    de: self,
                    entries: entries.iter().collect::<Vec<_>>().into_iter(),
                    value: None,
                })
                .map_err(|e: DeError| e.at(self.node.pos)),
            _ => Err(self.expected("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Kind::Map(entries) = &self.node.kind else {
            return Err(self.expected("a mapping"));
        };
        let mut known = Vec::new();
        for entry in entries {
            let key = entry.0.as_str().unwrap_or_default();
            if fields.contains(&key) {
                known.push(entry);
            } else {
                self.sink
                    .borrow_mut()
                    .push((entry.0.pos, unknown_message("field", key, fields)));
            }
        }
        visitor
            .visit_map(MapAcc {
                de: self,
                entries: known.into_iter(),
                value: None,
            })
            .map_err(|e: DeError| e.at(self.node.pos))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.node.as_str() {
            Some(v) if variants.contains(&v) => visitor
                .visit_enum(v.into_deserializer())
                .map_err(|e: DeError| e.at(self.node.pos)),
            Some(v) => Err(DeError {
                pos: Some(self.node.pos),
                ..<DeError as de::Error>::custom(unknown_message(
                    self.key.unwrap_or("value"),
                    v,
                    variants,
                ))
            }),
            None => Err(self.expected("a name")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit_struct tuple
        tuple_struct
    }
}

pub(crate) struct SeqAcc<'a> {
    pub(crate) de: De<'a>,
    pub(crate) items: std::slice::Iter<'a, Node>,
}

impl<'de, 'a> SeqAccess<'de> for SeqAcc<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(item) => seed.deserialize(self.de.child(item, self.de.key)).map(Some),
            None => Ok(None),
        }
    }
}

pub(crate) struct MapAcc<'a> {
    pub(crate) de: De<'a>,
    pub(crate) entries: std::vec::IntoIter<&'a (Node, Node)>,
    pub(crate) value: Option<(&'a Node, Option<&'a str>)>,
}

impl<'de, 'a> MapAccess<'de> for MapAcc<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some((v, k.as_str()));
                seed.deserialize(self.de.child(k, None)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((v, key)) => seed.deserialize(self.de.child(v, key)).map_err(|mut e| {
                if let Some(k) = key {
                    e.path.insert(0, k.to_string());
                }
                e
            }),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }
}
