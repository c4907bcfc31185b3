//! Column types inferred from records, and the schema of a bucket as it evolves.
//!
//! Invariants:
//! - the field registry only grows: a field keeps its position in the order of first
//!   appearance for the life of the dataset, even when its column is rewritten;
//! - a column type changes only by widening `int64` to `float64`; every other change is
//!   a [`Error::SchemaConflict`], found before anything of the batch is buffered;
//! - no column is ever created for a field that has only held nulls or empty lists
//!   (there is no Arrow `Null` column): such fields live in the record layout column
//!   until a typed value arrives.

use std::collections::HashMap;
use std::fmt;

use arrow::datatypes::{DataType, Field};
use persisting_codec::{Record, Value};

use crate::error::{Error, Result};

/// Schema metadata key holding the field registry (a JSON array of names).
pub const REGISTRY_KEY: &str = "persisting:fields";
/// Field metadata key marking a binary column of codec-encoded values.
pub const ENCODING_KEY: &str = "persisting:encoding";
/// The value of [`ENCODING_KEY`] for codec-encoded values.
pub const ENCODING_CODEC_V1: &str = "codec-v1";
/// Name of the column holding the exact encoding of records the typed columns cannot
/// reproduce exactly (explicit nulls, unusual field order, fields without a column).
pub const LAYOUT_COLUMN: &str = "_persisting_record";
/// Name of the column holding each row's checksum ([`crate::row_checksum`]): Lance
/// files carry no checksums of their own, so a damaged data file could otherwise be
/// read back as a different, valid-looking record.
pub const CHECKSUM_COLUMN: &str = "_persisting_crc";

/// Whether `name` is one of this crate's own columns rather than a record field.
pub fn is_internal_column(name: &str) -> bool {
    name == LAYOUT_COLUMN || name == CHECKSUM_COLUMN
}

/// Element type of a list column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// `bool`
    Bool,
    /// `int64`
    Int,
    /// `float64`
    Float,
    /// `utf8`
    Str,
}

/// The type of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColType {
    /// Arrow `Boolean`.
    Bool,
    /// Arrow `Int64`.
    Int,
    /// Arrow `Float64`.
    Float,
    /// Arrow `Utf8`.
    Str,
    /// Arrow `Binary`.
    Bytes,
    /// Arrow `List` of a scalar.
    List(Scalar),
    /// Arrow `Binary` of codec-encoded values: nested maps, mixed or nested lists.
    Encoded,
    /// A column of a foreign dataset with a type this crate does not write.
    Foreign(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scalar::Bool => "bool",
            Scalar::Int => "int64",
            Scalar::Float => "float64",
            Scalar::Str => "utf8",
        })
    }
}

impl fmt::Display for ColType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColType::Bool => f.write_str("bool"),
            ColType::Int => f.write_str("int64"),
            ColType::Float => f.write_str("float64"),
            ColType::Str => f.write_str("utf8"),
            ColType::Bytes => f.write_str("binary"),
            ColType::List(s) => write!(f, "list<{s}>"),
            ColType::Encoded => f.write_str("encoded values"),
            ColType::Foreign(t) => write!(f, "{t} (not writable)"),
        }
    }
}

/// What a value says about its column's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inferred {
    /// Null: fits any column.
    Null,
    /// An empty list, or a list of nulls: fits any list column.
    AnyList,
    /// A definite type.
    Type(ColType),
}

fn scalar_of(v: &Value) -> Option<Scalar> {
    match v {
        Value::Bool(_) => Some(Scalar::Bool),
        Value::Int(_) => Some(Scalar::Int),
        Value::Float(_) => Some(Scalar::Float),
        Value::String(_) => Some(Scalar::Str),
        _ => None,
    }
}

pub(crate) fn infer(value: &Value) -> Inferred {
    match value {
        Value::Null => Inferred::Null,
        Value::Bool(_) => Inferred::Type(ColType::Bool),
        Value::Int(_) => Inferred::Type(ColType::Int),
        Value::Float(_) => Inferred::Type(ColType::Float),
        Value::String(_) => Inferred::Type(ColType::Str),
        Value::Bytes(_) => Inferred::Type(ColType::Bytes),
        Value::Map(_) => Inferred::Type(ColType::Encoded),
        Value::List(items) => {
            let mut kind: Option<Scalar> = None;
            for item in items.iter().filter(|v| !v.is_null()) {
                match (kind, scalar_of(item)) {
                    (_, None) => return Inferred::Type(ColType::Encoded),
                    (None, Some(s)) => kind = Some(s),
                    (Some(k), Some(s)) if k == s => {}
                    _ => return Inferred::Type(ColType::Encoded),
                }
            }
            kind.map_or(Inferred::AnyList, |k| Inferred::Type(ColType::List(k)))
        }
    }
}

/// True when `value`, stored in a column of type `ty`, reads back equal (or differs
/// only by the int-to-float widening).
pub(crate) fn reads_back_exactly(ty: &ColType, value: &Value) -> bool {
    match (ty, value) {
        (_, Value::Null) => false,
        (ColType::Encoded, _) => true,
        (ColType::Bool, Value::Bool(_))
        | (ColType::Int, Value::Int(_))
        | (ColType::Float, Value::Float(_) | Value::Int(_))
        | (ColType::Str, Value::String(_))
        | (ColType::Bytes, Value::Bytes(_)) => true,
        (ColType::List(k), Value::List(items)) => items.iter().all(|v| match (k, v) {
            (_, Value::Null) => true,
            (Scalar::Float, Value::Int(_)) => true,
            (k, v) => scalar_of(v) == Some(*k),
        }),
        _ => false,
    }
}

/// One field of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldState {
    pub name: String,
    /// `None` while the field has only held nulls or empty lists.
    pub ty: Option<ColType>,
    /// The column exists in the dataset with this type.
    pub in_lance: bool,
    /// The column exists as `int64` and must be rewritten as `float64`.
    pub widen: bool,
}

/// The registry of fields in order of first appearance, with their column types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SchemaState {
    pub fields: Vec<FieldState>,
    index: HashMap<String, usize>,
}

impl SchemaState {
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(crate) fn push(&mut self, field: FieldState) {
        self.index.insert(field.name.clone(), self.fields.len());
        self.fields.push(field);
    }

    /// Admits a batch: new fields, new column types, widenings. On a conflict the
    /// state is left as it was and the error names the first bad field.
    pub(crate) fn admit(&mut self, records: &[Record]) -> Result<()> {
        *self = self.admitted(records)?;
        Ok(())
    }

    /// The state after admitting a batch, leaving this one as it is.
    pub(crate) fn admitted(&self, records: &[Record]) -> Result<SchemaState> {
        let mut next = self.clone();
        for record in records {
            for (name, value) in record.iter() {
                next.admit_value(name, value)?;
            }
        }
        Ok(next)
    }

    fn admit_value(&mut self, name: &str, value: &Value) -> Result<()> {
        let inferred = infer(value);
        let i = match self.position(name) {
            Some(i) => i,
            None => {
                self.push(FieldState {
                    name: name.to_owned(),
                    ty: None,
                    in_lance: false,
                    widen: false,
                });
                self.fields.len() - 1
            }
        };
        let field = &mut self.fields[i];
        let conflict = |existing: &ColType, found: String| Error::SchemaConflict {
            field: name.to_owned(),
            existing: existing.to_string(),
            found,
        };
        match (&field.ty, inferred) {
            (_, Inferred::Null) => {}
            (None, Inferred::AnyList) => {}
            (Some(ColType::List(_) | ColType::Encoded), Inferred::AnyList) => {}
            (Some(existing), Inferred::AnyList) => {
                return Err(conflict(existing, "an empty list".to_owned()));
            }
            (None, Inferred::Type(t)) => field.ty = Some(t),
            (Some(existing), Inferred::Type(t)) => match (existing, &t) {
                (e, t) if e == t => {}
                (ColType::Encoded, _) => {}
                (ColType::Int, ColType::Float) => {
                    field.ty = Some(ColType::Float);
                    field.widen = field.in_lance;
                }
                (ColType::Float, ColType::Int) => {}
                (ColType::List(Scalar::Float), ColType::List(Scalar::Int)) => {}
                (existing, t) => return Err(conflict(existing, t.to_string())),
            },
        }
        Ok(())
    }

    /// True when the typed columns reproduce `record` exactly (up to widening): every
    /// field has a column, appears in registry order, and holds no explicit null.
    pub(crate) fn is_canonical(&self, record: &Record) -> bool {
        let mut last = None;
        for (name, value) in record.iter() {
            let Some(i) = self.position(name) else {
                return false;
            };
            if last.is_some_and(|l| l >= i) {
                return false;
            }
            last = Some(i);
            match &self.fields[i].ty {
                Some(ty) if reads_back_exactly(ty, value) => {}
                _ => return false,
            }
        }
        true
    }

    /// The registry as stored in the schema metadata.
    pub(crate) fn registry_json(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned())
    }

    /// The registry names, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.clone()).collect()
    }
}

/// The Arrow type of a column type.
pub(crate) fn arrow_type(ty: &ColType) -> DataType {
    let scalar = |s: &Scalar| match s {
        Scalar::Bool => DataType::Boolean,
        Scalar::Int => DataType::Int64,
        Scalar::Float => DataType::Float64,
        Scalar::Str => DataType::Utf8,
    };
    match ty {
        ColType::Bool => DataType::Boolean,
        ColType::Int => DataType::Int64,
        ColType::Float => DataType::Float64,
        ColType::Str => DataType::Utf8,
        ColType::Bytes | ColType::Encoded | ColType::Foreign(_) => DataType::Binary,
        ColType::List(s) => {
            DataType::List(std::sync::Arc::new(Field::new("item", scalar(s), true)))
        }
    }
}

/// The column type of an Arrow field (of a dataset this crate wrote, or a foreign one).
pub(crate) fn col_type(field: &Field) -> ColType {
    if field.metadata().get(ENCODING_KEY).map(String::as_str) == Some(ENCODING_CODEC_V1) {
        return ColType::Encoded;
    }
    let scalar = |t: &DataType| match t {
        DataType::Boolean => Some(Scalar::Bool),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(Scalar::Int),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(Scalar::Float),
        DataType::Utf8 | DataType::LargeUtf8 => Some(Scalar::Str),
        _ => None,
    };
    match field.data_type() {
        DataType::Binary | DataType::LargeBinary => ColType::Bytes,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match scalar(f.data_type()) {
                Some(s) => ColType::List(s),
                None => ColType::Foreign(field.data_type().to_string()),
            }
        }
        t => match scalar(t) {
            Some(Scalar::Bool) => ColType::Bool,
            Some(Scalar::Int) => ColType::Int,
            Some(Scalar::Float) => ColType::Float,
            Some(Scalar::Str) => ColType::Str,
            None => ColType::Foreign(t.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persisting_codec::record;

    #[test]
    fn inference_of_lists() {
        assert_eq!(
            infer(&Value::from(vec![1.0f64, 2.0])),
            Inferred::Type(ColType::List(Scalar::Float))
        );
        assert_eq!(infer(&Value::List(vec![])), Inferred::AnyList);
        assert_eq!(infer(&Value::List(vec![Value::Null])), Inferred::AnyList);
        assert_eq!(
            infer(&Value::List(vec![Value::Int(1), Value::Float(1.0)])),
            Inferred::Type(ColType::Encoded)
        );
        assert_eq!(
            infer(&Value::Map(record! {"a" => 1})),
            Inferred::Type(ColType::Encoded)
        );
    }

    #[test]
    fn int_widens_to_float_and_conflicts_leave_state_untouched() {
        let mut s = SchemaState::default();
        s.admit(&[record! {"x" => 1, "y" => "a"}]).unwrap();
        s.fields[0].in_lance = true;
        s.admit(&[record! {"x" => 2.5}]).unwrap();
        assert_eq!(s.fields[0].ty, Some(ColType::Float));
        assert!(s.fields[0].widen);
        let before = s.clone();
        let err = s
            .admit(&[record! {"z" => 1}, record! {"y" => 3}])
            .unwrap_err();
        assert!(
            matches!(&err, Error::SchemaConflict { field, existing, found } if field == "y" && existing == "utf8" && found == "int64"),
            "{err}"
        );
        assert_eq!(
            s, before,
            "a rejected batch changes nothing, not even new fields"
        );
    }

    #[test]
    fn canonical_records() {
        let mut s = SchemaState::default();
        s.admit(&[record! {"a" => 1, "b" => "x", "n" => Value::Null}])
            .unwrap();
        assert!(s.is_canonical(&record! {"a" => 1, "b" => "x"}));
        assert!(s.is_canonical(&record! {"b" => "x"}));
        assert!(!s.is_canonical(&record! {"b" => "x", "a" => 1}), "order");
        assert!(
            !s.is_canonical(&record! {"a" => Value::Null}),
            "explicit null"
        );
        assert!(!s.is_canonical(&record! {"n" => Value::Null}), "no column");
    }
}
