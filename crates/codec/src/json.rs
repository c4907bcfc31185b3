//! Conversions between records and JSON (`serde_json::Value`) or any serde type.
//!
//! Invariants:
//! - JSON → record is exact: integers that fit `i64` become [`Value::Int`], other
//!   numbers [`Value::Float`]; an unsigned integer above `i64::MAX` is an error, never
//!   silently rounded;
//! - record → JSON ([`Record::to_json`]) is exact or fails: NaN, infinities and raw
//!   bytes have no JSON form and give [`Error::NotRepresentable`] with the path of the
//!   value. [`Record::to_json_lossy`] is for display only.

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::value::{Record, Value};

impl Value {
    /// Converts a JSON value.
    pub fn from_json(json: &serde_json::Value) -> Result<Value> {
        from_json_at(json, &mut String::from("$"))
    }

    /// Converts to JSON exactly, or fails naming the first value JSON cannot hold.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_json_at(self, &mut String::from("$"), false)
    }

    /// Converts to JSON for display: non-finite floats become the strings `"NaN"`,
    /// `"inf"`, `"-inf"` and bytes become lists of integers.
    pub fn to_json_lossy(&self) -> serde_json::Value {
        to_json_at(self, &mut String::from("$"), true).unwrap_or(serde_json::Value::Null)
    }
}

impl Record {
    /// Converts a JSON object into a record, keeping the object's field order.
    pub fn from_json(json: &serde_json::Value) -> Result<Record> {
        match Value::from_json(json)? {
            Value::Map(record) => Ok(record),
            _ => Err(Error::NotAnObject {
                found: json_kind(json),
            }),
        }
    }

    /// Parses one JSON object from text.
    ///
    /// ```
    /// use persisting_codec::Record;
    /// let r = Record::from_json_str(r#"{"id": "1", "value": 42}"#).unwrap();
    /// assert_eq!(r["value"].as_i64(), Some(42));
    /// ```
    pub fn from_json_str(text: &str) -> Result<Record> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Serde(e.to_string()))?;
        Record::from_json(&json)
    }

    /// Converts to a JSON object exactly, or fails naming the first value JSON cannot
    /// hold.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Value::Map(self.clone()).to_json()
    }

    /// Converts to JSON for display (see [`Value::to_json_lossy`]).
    pub fn to_json_lossy(&self) -> serde_json::Value {
        let mut path = String::from("$");
        let mut out = serde_json::Map::with_capacity(self.len());
        for (name, value) in self.iter() {
            let v = to_json_at(value, &mut path, true).unwrap_or(serde_json::Value::Null);
            out.insert(name.to_owned(), v);
        }
        serde_json::Value::Object(out)
    }

    /// Builds a record from any serializable struct or map.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Event { id: String, value: i64 }
    /// let r = persisting_codec::Record::from_serialize(&Event { id: "1".into(), value: 42 }).unwrap();
    /// assert_eq!(r.keys().collect::<Vec<_>>(), ["id", "value"]);
    /// ```
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Record> {
        let json = serde_json::to_value(value).map_err(|e| Error::Serde(e.to_string()))?;
        Record::from_json(&json)
    }

    /// Deserializes a record into any deserializable type.
    pub fn to_deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(Value::Map(self.clone())).map_err(|e| Error::Serde(e.to_string()))
    }
}

fn json_kind(json: &serde_json::Value) -> &'static str {
    match json {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn from_json_at(json: &serde_json::Value, path: &mut String) -> Result<Value> {
    Ok(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_u64() {
                return Err(Error::NotRepresentable {
                    path: path.clone(),
                    reason: format!("integer {n} is larger than the largest i64"),
                });
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(from_json_at(item, path)?);
                path.truncate(len);
            }
            Value::List(out)
        }
        serde_json::Value::Object(map) => {
            let mut record = Record::with_capacity(map.len());
            for (name, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(name);
                record.push_unchecked(name.as_str(), from_json_at(item, path)?);
                path.truncate(len);
            }
            Value::Map(record)
        }
    })
}

fn to_json_at(value: &Value, path: &mut String, lossy: bool) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => J::Number(n),
            None if lossy => J::String(
                if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                }
                .to_owned(),
            ),
            None => {
                return Err(Error::NotRepresentable {
                    path: path.clone(),
                    reason: format!("{f} is not a finite number"),
                });
            }
        },
        Value::String(s) => J::String(s.to_string()),
        Value::Bytes(b) if lossy => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        Value::Bytes(_) => {
            return Err(Error::NotRepresentable {
                path: path.clone(),
                reason: "JSON has no byte strings".to_owned(),
            });
        }
        Value::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push(to_json_at(item, path, lossy)?);
                path.truncate(len);
            }
            J::Array(out)
        }
        Value::Map(record) => {
            let mut out = serde_json::Map::with_capacity(record.len());
            for (name, item) in record.iter() {
                let len = path.len();
                path.push('.');
                path.push_str(name);
                out.insert(name.to_owned(), to_json_at(item, path, lossy)?);
                path.truncate(len);
            }
            J::Object(out)
        }
    })
}

impl TryFrom<serde_json::Value> for Record {
    type Error = Error;
    fn try_from(json: serde_json::Value) -> Result<Record> {
        Record::from_json(&json)
    }
}

impl TryFrom<&Record> for serde_json::Value {
    type Error = Error;
    fn try_from(record: &Record) -> Result<serde_json::Value> {
        record.to_json()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(record) => record.serialize(s),
        }
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} is larger than the largest i64")))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.into()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v.into()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> std::result::Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut record = Record::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some((name, value)) = map.next_entry::<String, Value>()? {
            if record.contains_key(&name) {
                return Err(de::Error::custom(format!("duplicate field {name:?}")));
            }
            record.push_unchecked(name, value);
        }
        Ok(Value::Map(record))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Record, D::Error> {
        match Value::deserialize(d)? {
            Value::Map(record) => Ok(record),
            other => Err(de::Error::custom(format!(
                "a record must be a map, found {}",
                other.kind()
            ))),
        }
    }
}

/// Lets a [`Value`] be deserialized into any Rust type (used by
/// [`Record::to_deserialize`]).
impl<'de> Deserializer<'de> for Value {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        use serde::de::IntoDeserializer;
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => visitor.visit_i64(i),
            Value::Float(f) => visitor.visit_f64(f),
            Value::String(s) => visitor.visit_string(s.into_string()),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::List(items) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
            }
            Value::Map(record) => visitor.visit_map(de::value::MapDeserializer::new(
                record
                    .into_iter()
                    .map(|(k, v)| (String::from(&*k).into_deserializer(), v)),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        match self {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> de::IntoDeserializer<'de, de::value::Error> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record;

    #[test]
    fn json_keeps_field_order_and_int_float_split() {
        let r = Record::from_json_str(r#"{"z": 1, "a": 1.0, "m": [1, 2.5, "x"]}"#).unwrap();
        assert_eq!(r.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(r["z"], Value::Int(1));
        assert_eq!(r["a"], Value::Float(1.0));
        assert_eq!(
            r["m"],
            Value::List(vec![Value::Int(1), Value::Float(2.5), "x".into()])
        );
        assert_eq!(Record::from_json(&r.to_json().unwrap()).unwrap(), r);
    }

    #[test]
    fn huge_unsigned_is_refused_with_path() {
        let err = Record::from_json_str(r#"{"a": {"b": [18446744073709551615]}}"#).unwrap_err();
        assert!(
            matches!(err, Error::NotRepresentable { ref path, .. } if path == "$.a.b[0]"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_and_bytes_are_not_json() {
        let r = record! {"x" => f64::NAN};
        assert!(
            matches!(r.to_json(), Err(Error::NotRepresentable { ref path, .. }) if path == "$.x")
        );
        let r = record! {"b" => vec![1u8, 2]};
        assert!(r.to_json().is_err());
        assert_eq!(r.to_json_lossy(), serde_json::json!({"b": [1, 2]}));
        assert_eq!(
            record! {"x" => f64::NEG_INFINITY}.to_string(),
            r#"{"x":"-inf"}"#
        );
    }

    #[test]
    fn non_object_is_not_a_record() {
        assert_eq!(
            Record::from_json_str("[1]").unwrap_err(),
            Error::NotAnObject { found: "an array" }
        );
    }

    #[test]
    fn serde_round_trip_through_a_struct() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Event {
            id: String,
            value: i64,
            score: Option<f64>,
            tags: Vec<String>,
        }
        let e = Event {
            id: "1".into(),
            value: 42,
            score: None,
            tags: vec!["a".into()],
        };
        let r = Record::from_serialize(&e).unwrap();
        assert_eq!(r["score"], Value::Null);
        assert_eq!(r.to_deserialize::<Event>().unwrap(), e);
    }
}
