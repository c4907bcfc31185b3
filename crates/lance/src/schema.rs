//! Column types inferred from records, and the schema of a bucket as it evolves.
//!
//! Invariants:
//! - the field registry only grows: a field keeps its position in the order of first
//!   appearance for the life of the dataset, even when its column is rewritten;
//! - a column type changes only by widening `int64` to `float64` (also inside lists and
//!   structs) and by a struct gaining children; every other change is a
//!   [`Error::SchemaConflict`], found before anything of the batch is buffered;
//! - a nested map is a struct column whose children follow the order of first
//!   appearance; a map with an empty or dotted key cannot be a struct child name and is
//!   kept whole in the record layout column;
//! - no column (nor struct child) is ever created for a field that has only held nulls,
//!   empty lists or empty maps (there is no Arrow `Null` column): such fields live in the
//!   record layout column until a typed value arrives.

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

/// One child of a struct column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubField {
    /// The map key.
    pub name: String,
    /// `None` while the child has only held nulls, empty lists or empty maps.
    pub ty: Option<ColType>,
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
    /// Arrow `Struct`: a nested map.
    Struct(Vec<SubField>),
    /// Arrow `Binary` of codec-encoded values: mixed or nested lists, lists of maps
    /// (and nested maps in datasets written before struct columns).
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
            ColType::Struct(children) => {
                f.write_str("struct<")?;
                let typed = children
                    .iter()
                    .filter_map(|c| c.ty.as_ref().map(|t| (c, t)));
                for (i, (c, t)) in typed.enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}: {t}", c.name)?;
                }
                f.write_str(">")
            }
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
    /// A map with a key no struct child can carry: fits a struct column (kept whole in
    /// the layout column), else makes an encoded column.
    OddMap,
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
        Value::Map(m) if m.iter().any(|(k, _)| !struct_child_name(k)) => Inferred::OddMap,
        Value::Map(m) => Inferred::Type(ColType::Struct(
            m.iter()
                .map(|(name, v)| SubField {
                    name: name.to_owned(),
                    ty: match infer(v) {
                        Inferred::Type(t) => Some(t),
                        Inferred::OddMap => Some(ColType::Encoded),
                        Inferred::Null | Inferred::AnyList => None,
                    },
                })
                .collect(),
        )),
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

/// Whether a map key can name a struct child (Lance addresses nested columns by
/// dotted paths).
fn struct_child_name(key: &str) -> bool {
    !key.is_empty() && !key.contains('.')
}

/// True when a column of type `ty` exists in Arrow: a struct needs at least one child
/// that exists.
pub(crate) fn materialized(ty: &ColType) -> bool {
    match ty {
        ColType::Struct(children) => children
            .iter()
            .any(|c| c.ty.as_ref().is_some_and(materialized)),
        _ => true,
    }
}

/// True when `value`, stored in a column of type `ty`, reads back equal (or differs
/// only by the int-to-float widening).
pub(crate) fn reads_back_exactly(ty: &ColType, value: &Value) -> bool {
    match (ty, value) {
        (_, Value::Null) => false,
        (ColType::Encoded, _) => true,
        // a struct row whose children are all null reads back as absent: an empty map
        // (or one with a null child) keeps its exact form in the layout column
        (ColType::Struct(children), Value::Map(m)) => {
            !m.is_empty()
                && fields_read_back(
                    m,
                    |key, _| children.iter().position(|c| c.name == key),
                    |i| children[i].ty.as_ref(),
                )
        }
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

/// True when columns reproduce the fields of `map` exactly, for a record or a struct
/// alike: every field has a position (`position(name, hint)`, `hint` being the one
/// after the previous field's), the positions increase, and the column type at each
/// (`type_at`) exists and reads its value back exactly.
fn fields_read_back<'t>(
    map: &Record,
    position: impl FnMut(&str, usize) -> Option<usize>,
    type_at: impl Fn(usize) -> Option<&'t ColType>,
) -> bool {
    walk_fields(map, position, type_at, |_, _| {})
}

/// [`fields_read_back`], also calling `place(position, value)` for every field that
/// has a position, in the record's order (one walk where a row is built and checked).
fn walk_fields<'t, 'r>(
    map: &'r Record,
    mut position: impl FnMut(&str, usize) -> Option<usize>,
    type_at: impl Fn(usize) -> Option<&'t ColType>,
    mut place: impl FnMut(usize, &'r Value),
) -> bool {
    let mut last: Option<usize> = None;
    let mut exact = true;
    for (name, value) in map.iter() {
        let Some(i) = position(name, last.map_or(0, |l| l + 1)) else {
            exact = false;
            continue;
        };
        exact = exact
            && last.is_none_or(|l| l < i)
            && type_at(i).is_some_and(|t| materialized(t) && reads_back_exactly(t, value));
        last = Some(i);
        place(i, value);
    }
    exact
}

/// One field of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldState {
    pub name: String,
    /// `None` while the field has only held nulls or empty lists.
    pub ty: Option<ColType>,
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

    /// [`SchemaState::position`], trying `hint` first: records mostly hold their fields
    /// in registry order, so the next field is usually the one after the last.
    pub(crate) fn position_after(&self, name: &str, hint: usize) -> Option<usize> {
        match self.fields.get(hint) {
            Some(f) if f.name == name => Some(hint),
            _ => self.position(name),
        }
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
            let mut hint = 0;
            for (name, value) in record.iter() {
                hint = next.admit_value(name, value, hint)? + 1;
            }
        }
        Ok(next)
    }

    /// Admits one value; returns the field's position.
    fn admit_value(&mut self, name: &str, value: &Value, hint: usize) -> Result<usize> {
        let i = match self.position_after(name, hint) {
            Some(i) => i,
            None => {
                self.push(FieldState {
                    name: name.to_owned(),
                    ty: None,
                });
                self.fields.len() - 1
            }
        };
        let field = &mut self.fields[i];
        match (&field.ty, value) {
            // the common case, without building the inferred type
            (Some(ColType::Int), Value::Int(_))
            | (Some(ColType::Float), Value::Float(_) | Value::Int(_))
            | (Some(ColType::Str), Value::String(_))
            | (Some(ColType::Bool), Value::Bool(_))
            | (Some(ColType::Bytes), Value::Bytes(_))
            | (_, Value::Null) => {}
            _ => field.ty = merge(name, &field.ty, infer(value))?,
        }
        Ok(i)
    }

    /// True when columns of the types `columns` (by registry position; `None`: no
    /// column) reproduce `record` exactly (up to widening): every field has a column,
    /// appears in registry order, and holds no explicit null.
    #[cfg(test)]
    pub(crate) fn is_canonical(&self, columns: &[Option<ColType>], record: &Record) -> bool {
        self.place_fields(columns, record, |_, _| {})
    }

    /// Calls `place(position, value)` for each field of `record` the registry holds, in
    /// the record's order, and returns whether `record` is canonical for `columns`
    /// (see `is_canonical`): what building a row needs, in one walk of its fields.
    pub(crate) fn place_fields<'r>(
        &self,
        columns: &[Option<ColType>],
        record: &'r Record,
        place: impl FnMut(usize, &'r Value),
    ) -> bool {
        walk_fields(
            record,
            |name, hint| self.position_after(name, hint),
            |i| columns.get(i).and_then(Option::as_ref),
            place,
        )
    }

    /// The column types of the registry's fields as they stand in this state.
    #[cfg(test)]
    pub(crate) fn column_types(&self) -> Vec<Option<ColType>> {
        self.fields.iter().map(|f| f.ty.clone()).collect()
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

/// The type of field `path` once a value of kind `inferred` has been admitted to it.
fn merge(path: &str, existing: &Option<ColType>, inferred: Inferred) -> Result<Option<ColType>> {
    let conflict = |existing: &ColType, found: String| Error::SchemaConflict {
        field: path.to_owned(),
        existing: existing.to_string(),
        found,
    };
    Ok(match (existing, inferred) {
        (_, Inferred::Null) | (None, Inferred::AnyList) => existing.clone(),
        (Some(ColType::List(_) | ColType::Encoded), Inferred::AnyList) => existing.clone(),
        (Some(existing), Inferred::AnyList) => {
            return Err(conflict(existing, "an empty list".to_owned()));
        }
        (None, Inferred::OddMap) => Some(ColType::Encoded),
        (Some(ColType::Struct(_) | ColType::Encoded), Inferred::OddMap) => existing.clone(),
        (Some(existing), Inferred::OddMap) => {
            return Err(conflict(existing, "a map".to_owned()));
        }
        (None, Inferred::Type(t)) => Some(t),
        (Some(existing), Inferred::Type(t)) => Some(match (existing, t) {
            (e, t) if *e == t => t,
            (ColType::Encoded, _) => ColType::Encoded,
            (ColType::Int | ColType::Float, ColType::Int | ColType::Float) => ColType::Float,
            (
                ColType::List(Scalar::Int | Scalar::Float),
                ColType::List(Scalar::Int | Scalar::Float),
            ) => ColType::List(Scalar::Float),
            (ColType::Struct(have), ColType::Struct(found)) => {
                let mut children = have.clone();
                for sub in found {
                    let inferred = sub.ty.map_or(Inferred::Null, Inferred::Type);
                    match children.iter_mut().find(|c| c.name == sub.name) {
                        Some(child) => {
                            let child_path = format!("{path}.{}", sub.name);
                            child.ty = merge(&child_path, &child.ty, inferred)?;
                        }
                        None => children.push(SubField {
                            name: sub.name,
                            ty: merge("", &None, inferred)?,
                        }),
                    }
                }
                ColType::Struct(children)
            }
            (existing, t) => return Err(conflict(existing, t.to_string())),
        }),
    })
}

/// The Arrow field of a column named `name` of type `ty`; `meta` (compression
/// settings) is set on it and on every struct child.
pub(crate) fn arrow_field(name: &str, ty: &ColType, meta: &HashMap<String, String>) -> Field {
    let mut meta = meta.clone();
    if *ty == ColType::Encoded {
        meta.insert(ENCODING_KEY.to_owned(), ENCODING_CODEC_V1.to_owned());
    }
    let data_type = match ty {
        ColType::Struct(children) => DataType::Struct(
            children
                .iter()
                .filter_map(|c| c.ty.as_ref().filter(|t| materialized(t)).map(|t| (c, t)))
                .map(|(c, t)| arrow_field(&c.name, t, &meta))
                .collect(),
        ),
        ty => arrow_type(ty),
    };
    Field::new(name, data_type, true).with_metadata(meta)
}

/// The Arrow type of a column type (struct children without metadata: see
/// [`arrow_field`]).
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
        ColType::Struct(_) => arrow_field("", ty, &HashMap::new()).data_type().clone(),
    }
}

/// True when a column of Arrow type `have` must be rewritten to hold `want`: an
/// integer leaf (top level, list item or struct child) that must become `float64`.
pub(crate) fn needs_rewrite(have: &DataType, want: &DataType) -> bool {
    match (have, want) {
        (h, DataType::Float64) => h.is_integer(),
        (
            DataType::List(h) | DataType::LargeList(h) | DataType::FixedSizeList(h, _),
            DataType::List(w),
        ) => needs_rewrite(h.data_type(), w.data_type()),
        (DataType::Struct(h), DataType::Struct(w)) => w.iter().any(|w| {
            h.find(w.name())
                .is_some_and(|(_, h)| needs_rewrite(h.data_type(), w.data_type()))
        }),
        _ => false,
    }
}

/// The struct children `want` has and `have` lacks, as a field of the same name
/// holding only those (the form Lance adds nested columns in); `None` when there are
/// none.
pub(crate) fn missing_children(have: &Field, want: &Field) -> Option<Field> {
    let (DataType::Struct(h), DataType::Struct(w)) = (have.data_type(), want.data_type()) else {
        return None;
    };
    let missing: Vec<Field> = w
        .iter()
        .filter_map(|w| match h.find(w.name()) {
            None => Some(w.as_ref().clone()),
            Some((_, h)) => missing_children(h, w),
        })
        .collect();
    (!missing.is_empty()).then(|| {
        Field::new(want.name(), DataType::Struct(missing.into()), true)
            .with_metadata(want.metadata().clone())
    })
}

/// `array` as Arrow type `target`: scalar and list casts by Arrow, structs child by
/// child (by name; a child `array` lacks is all null).
pub(crate) fn cast_to(
    array: &arrow::array::ArrayRef,
    target: &DataType,
) -> std::result::Result<arrow::array::ArrayRef, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, StructArray, new_null_array};
    let (DataType::Struct(want), DataType::Struct(_)) = (target, array.data_type()) else {
        return arrow::compute::cast(array, target);
    };
    let s = array.as_struct();
    let columns = want
        .iter()
        .map(|f| match s.column_by_name(f.name()) {
            Some(c) => cast_to(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), s.len())),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(std::sync::Arc::new(StructArray::try_new(
        want.clone(),
        columns,
        s.nulls().cloned(),
    )?))
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
        DataType::Struct(children) => {
            let children: Vec<SubField> = children
                .iter()
                .map(|c| SubField {
                    name: c.name().clone(),
                    ty: Some(col_type(c)),
                })
                .collect();
            let foreign = children
                .iter()
                .any(|c| matches!(c.ty, Some(ColType::Foreign(_))));
            if foreign || children.is_empty() {
                ColType::Foreign(field.data_type().to_string())
            } else {
                ColType::Struct(children)
            }
        }
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
    }

    fn child(name: &str, ty: Option<ColType>) -> SubField {
        SubField {
            name: name.to_owned(),
            ty,
        }
    }

    #[test]
    fn inference_of_maps() {
        assert_eq!(
            infer(&Value::Map(record! {"a" => 1, "n" => Value::Null})),
            Inferred::Type(ColType::Struct(vec![
                child("a", Some(ColType::Int)),
                child("n", None)
            ]))
        );
        assert_eq!(infer(&Value::Map(record! {"a.b" => 1})), Inferred::OddMap);
        assert_eq!(infer(&Value::Map(record! {"" => 1})), Inferred::OddMap);
        assert!(!materialized(&ColType::Struct(vec![child("n", None)])));
        assert!(!materialized(&ColType::Struct(vec![child(
            "e",
            Some(ColType::Struct(vec![]))
        )])));
    }

    #[test]
    fn struct_children_grow_widen_and_conflict_by_path() {
        let mut s = SchemaState::default();
        s.admit(&[record! {"m" => Value::Map(record! {"a" => 1})}])
            .unwrap();
        s.admit(&[
            record! {"m" => Value::Map(record! {"b" => "x", "a" => 2.5})},
            record! {"m" => Value::Map(record! {"c.d" => 1})},
        ])
        .unwrap();
        assert_eq!(
            s.fields[0].ty,
            Some(ColType::Struct(vec![
                child("a", Some(ColType::Float)),
                child("b", Some(ColType::Str))
            ]))
        );
        assert_eq!(
            s.fields[0].ty.as_ref().unwrap().to_string(),
            "struct<a: float64, b: utf8>"
        );
        let before = s.clone();
        let err = s
            .admit(&[record! {"m" => Value::Map(record! {"b" => 1})}])
            .unwrap_err();
        assert!(
            matches!(&err, Error::SchemaConflict { field, existing, found } if field == "m.b" && existing == "utf8" && found == "int64"),
            "{err}"
        );
        let err = s.admit(&[record! {"m" => 1}]).unwrap_err();
        assert!(
            matches!(&err, Error::SchemaConflict { field, found, .. } if field == "m" && found == "int64"),
            "{err}"
        );
        assert_eq!(s, before);
    }

    #[test]
    fn int_widens_to_float_and_conflicts_leave_state_untouched() {
        let mut s = SchemaState::default();
        s.admit(&[record! {"x" => 1, "y" => "a"}]).unwrap();
        s.admit(&[record! {"x" => 2.5}]).unwrap();
        assert_eq!(s.fields[0].ty, Some(ColType::Float));
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
        let cols = s.column_types();
        assert!(s.is_canonical(&cols, &record! {"a" => 1, "b" => "x"}));
        assert!(s.is_canonical(&cols, &record! {"b" => "x"}));
        assert!(
            !s.is_canonical(&cols, &record! {"b" => "x", "a" => 1}),
            "order"
        );
        assert!(
            !s.is_canonical(&cols, &record! {"a" => Value::Null}),
            "explicit null"
        );
        assert!(
            !s.is_canonical(&cols, &record! {"n" => Value::Null}),
            "no column"
        );
        s.admit(&[record! {"m" => Value::Map(record! {"p" => 1, "q" => "x"})}])
            .unwrap();
        let cols = s.column_types();
        let map = |r| record! {"m" => Value::Map(r)};
        assert!(s.is_canonical(&cols, &map(record! {"p" => 1, "q" => "y"})));
        assert!(s.is_canonical(&cols, &map(record! {"q" => "y"})));
        assert!(
            !s.is_canonical(&cols, &map(record! {"q" => "y", "p" => 1})),
            "child order"
        );
        assert!(
            !s.is_canonical(&cols, &map(record! {})),
            "empty map reads as absent"
        );
        assert!(
            !s.is_canonical(&cols, &map(record! {"p" => Value::Null})),
            "null child"
        );
        assert!(
            !s.is_canonical(&cols, &map(record! {"z" => 1})),
            "unknown child"
        );
    }
}
