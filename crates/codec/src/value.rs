//! The record model: [`Value`] and [`Record`].
//!
//! Invariants:
//! - a [`Record`] never holds the same field name twice; inserting an existing name
//!   replaces the value in place, so field order is the order of first insertion;
//! - equality is structural and exact: floats compare by their bit pattern, so `NaN`
//!   equals the same `NaN` and `0.0` differs from `-0.0`, and two records are equal
//!   only when they hold the same fields in the same order. This is the equality the
//!   round-trip guarantee ("a record read back equals the record written") is stated in;
//! - a name handed back by the per-thread name cache ([`IntoName`]) equals the name
//!   asked for, byte for byte: the cache only decides which allocation is shared.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use crate::text::Str;

/// One value of a record field: the JSON data model plus 64-bit integers, floats kept
/// apart from integers, and raw bytes.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// Explicit null (an absent field is not a null: it is absent).
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit IEEE-754 float, NaN and infinities included.
    Float(f64),
    /// A UTF-8 string (see [`Str`]: owned, or a range of a block shared by the
    /// records read together).
    String(Str),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An ordered list of values.
    List(Vec<Value>),
    /// A nested map, with the same ordering rules as a record.
    Map(Record),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Value {
    /// A short name of the value's kind, as used in error messages: `null`, `bool`,
    /// `int`, `float`, `string`, `bytes`, `list`, `map`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The integer, if this is an [`Value::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The number as a float, if this is an [`Value::Int`] or a [`Value::Float`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is a [`Value::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is a [`Value::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// The bytes, if this is a [`Value::Bytes`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// The list, if this is a [`Value::List`].
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// The map, if this is a [`Value::Map`].
    pub fn as_map(&self) -> Option<&Record> {
        match self {
            Value::Map(v) => Some(v),
            _ => None,
        }
    }
}

/// An ordered map of field name to [`Value`]: one queue record.
///
/// Field order is insertion order and is preserved by every codec and backend.
/// Lookups are linear, which is the fastest choice for the tens of fields a record
/// usually has. Field names are shared (`Arc<str>`): records decoded from one column
/// batch share one allocation per name, and cloning a record does not copy its names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    fields: Vec<(Arc<str>, Value)>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty record with room for `capacity` fields.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            fields: Vec::with_capacity(capacity),
        }
    }

    /// Sets `name` to `value`. An existing field keeps its position and its old value
    /// is returned; a new field goes last.
    pub fn insert(&mut self, name: impl IntoName, value: impl Into<Value>) -> Option<Value> {
        let name = name.into_name();
        let value = value.into();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.fields.push((name, value));
                None
            }
        }
    }

    /// Builder form of [`Record::insert`].
    #[must_use]
    pub fn with(mut self, name: impl IntoName, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }

    /// A mutable reference to the value of `name`, if present.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.fields
            .iter_mut()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }

    /// True when the record has a field `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Removes `name`, keeping the order of the other fields.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let idx = self.fields.iter().position(|(n, _)| &**n == name)?;
        Some(self.fields.remove(idx).1)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Fields in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(n, v)| (&**n, v))
    }

    /// Fields in order, with their shared names.
    pub fn iter_shared(&self) -> impl ExactSizeIterator<Item = (&Arc<str>, &Value)> {
        self.fields.iter().map(|(n, v)| (n, v))
    }

    /// Field names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.fields.iter().map(|(n, _)| &**n)
    }

    /// Appends a field the caller knows is not present yet (decoders check this
    /// themselves, so they skip the lookup).
    pub(crate) fn push_unchecked(&mut self, name: impl IntoName, value: Value) {
        self.fields.push((name.into_name(), value));
    }
}

/// A field name, as [`Record::insert`] takes it: `&str`, `String`, `Box<str>`,
/// `Cow<str>` or an `Arc<str>` the caller already shares.
///
/// Names given by value or by reference are interned per thread: a small cache of
/// recent names (at most [`INTERNED_NAMES`] names, each at most
/// [`INTERNED_NAME_BYTES_MAX`] bytes) hands back the `Arc<str>` it already holds for
/// an equal name. Records built one after another with the same field names then share
/// one allocation per name instead of allocating every name of every record, which
/// saves the allocations and keeps the names in cache for whatever walks the records
/// next (schema checks, conversion to columns). Sharing is invisible: names are
/// immutable and compare by content.
pub trait IntoName {
    /// The shared name.
    fn into_name(self) -> Arc<str>;
}

/// How many names each thread's cache holds (see [`IntoName`]).
pub const INTERNED_NAMES: usize = 64;

/// Longest name the cache holds, in bytes; longer names are allocated each time.
pub const INTERNED_NAME_BYTES_MAX: usize = 64;

thread_local! {
    /// Direct-mapped: a name lives in the slot its hash picks, replacing whatever
    /// name was there.
    static NAMES: RefCell<Vec<Option<Arc<str>>>> = RefCell::new(vec![None; INTERNED_NAMES]);
}

/// The cached `Arc<str>` equal to `name`, or a new one (then cached).
fn intern(name: &str) -> Arc<str> {
    if name.len() > INTERNED_NAME_BYTES_MAX {
        return Arc::from(name);
    }
    let bytes = name.as_bytes();
    // cheap and good enough for field names: length, first, middle and last bytes
    let pick = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let hash = [0, bytes.len() / 2, bytes.len().wrapping_sub(1)]
        .into_iter()
        .fold(bytes.len() as u64, |h, i| {
            (h.rotate_left(5) ^ pick(i) as u64).wrapping_mul(0x517c_c1b7_2722_0a95)
        });
    let slot = (hash >> 32) as usize % INTERNED_NAMES;
    NAMES
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            match &cache[slot] {
                Some(cached) if **cached == *name => Arc::clone(cached),
                _ => {
                    let fresh: Arc<str> = Arc::from(name);
                    cache[slot] = Some(Arc::clone(&fresh));
                    fresh
                }
            }
        })
        // the thread is exiting and its cache is gone
        .unwrap_or_else(|_| Arc::from(name))
}

impl IntoName for Arc<str> {
    fn into_name(self) -> Arc<str> {
        self
    }
}

impl IntoName for &Arc<str> {
    fn into_name(self) -> Arc<str> {
        Arc::clone(self)
    }
}

impl IntoName for &str {
    fn into_name(self) -> Arc<str> {
        intern(self)
    }
}

impl IntoName for String {
    fn into_name(self) -> Arc<str> {
        intern(&self)
    }
}

impl IntoName for &String {
    fn into_name(self) -> Arc<str> {
        intern(self)
    }
}

impl IntoName for Box<str> {
    fn into_name(self) -> Arc<str> {
        intern(&self)
    }
}

impl IntoName for Cow<'_, str> {
    fn into_name(self) -> Arc<str> {
        intern(&self)
    }
}

/// Field names checked once to be distinct: builds many records of the same fields
/// (the rows of a column batch) without [`Record::insert`]'s search per field.
///
/// Invariant: no name appears twice, so a record built from it holds each name once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistinctNames {
    names: Vec<Arc<str>>,
}

impl DistinctNames {
    /// The names in order, or [`crate::Error::DuplicateField`] naming the first one
    /// that repeats (its `offset` is the position of the repeat in `names`).
    pub fn new(names: Vec<Arc<str>>) -> crate::Result<Self> {
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(crate::Error::DuplicateField {
                    offset: i,
                    name: name.to_string(),
                });
            }
        }
        Ok(Self { names })
    }

    /// The names, in order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The record holding, for each name `i` in order, the value `value(i)` returns;
    /// a name whose value is `None` is absent from the record. The first error of
    /// `value` is returned.
    pub fn record<E>(
        &self,
        mut value: impl FnMut(usize) -> Result<Option<Value>, E>,
    ) -> Result<Record, E> {
        let mut fields = Vec::with_capacity(self.names.len());
        for (i, name) in self.names.iter().enumerate() {
            if let Some(v) = value(i)? {
                fields.push((Arc::clone(name), v));
            }
        }
        Ok(Record { fields })
    }

    /// Makes `record` the record [`DistinctNames::record`] would build, reusing the
    /// allocations `record` holds (its field list, and the strings, bytes and lists of
    /// its values): the way to read many records into the same memory.
    ///
    /// For each name `i` in order, `value(i, slot)` either writes name `i`'s value into
    /// `slot` and returns `true`, or returns `false` (the name is absent). `slot` holds
    /// a value left from earlier use (of any kind, [`Value::Null`] when fresh), which
    /// the callee may reuse, for example an owned string's buffer ([`Str::owned_mut`]).
    /// On an error `record` holds the fields written before it.
    pub fn refill<E>(
        &self,
        record: &mut Record,
        mut value: impl FnMut(usize, &mut Value) -> Result<bool, E>,
    ) -> Result<(), E> {
        let fields = &mut record.fields;
        fields.reserve(self.names.len().saturating_sub(fields.len()));
        let mut kept = 0;
        for (i, name) in self.names.iter().enumerate() {
            if kept == fields.len() {
                fields.push((Arc::clone(name), Value::Null));
            } else if !Arc::ptr_eq(&fields[kept].0, name) {
                fields[kept].0 = Arc::clone(name);
            }
            match value(i, &mut fields[kept].1) {
                Ok(true) => kept += 1,
                Ok(false) => {}
                Err(e) => {
                    fields.truncate(kept);
                    return Err(e);
                }
            }
        }
        fields.truncate(kept);
        Ok(())
    }
}

impl IntoIterator for Record {
    type Item = (Arc<str>, Value);
    type IntoIter = std::vec::IntoIter<(Arc<str>, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.into_iter()
    }
}

impl<'a> IntoIterator for &'a Record {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, Value)>,
        fn(&'a (Arc<str>, Value)) -> (&'a str, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter().map(|(n, v)| (&**n, v))
    }
}

impl<K: IntoName, V: Into<Value>> FromIterator<(K, V)> for Record {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut record = Record::new();
        for (k, v) in iter {
            record.insert(k, v);
        }
        record
    }
}

impl std::ops::Index<&str> for Record {
    type Output = Value;
    /// The value of a field; a missing field reads as [`Value::Null`].
    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

impl fmt::Display for Record {
    /// Formats the record as JSON, mapping what JSON cannot hold as
    /// [`Record::to_json_lossy`] does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json_lossy())
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.into())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v.into())
    }
}
impl From<Str> for Value {
    fn from(v: Str) -> Self {
        Value::String(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}
impl From<Vec<f64>> for Value {
    fn from(v: Vec<f64>) -> Self {
        Value::List(v.into_iter().map(Value::Float).collect())
    }
}
impl From<Vec<f32>> for Value {
    fn from(v: Vec<f32>) -> Self {
        Value::List(v.into_iter().map(Value::from).collect())
    }
}
impl From<Vec<i64>> for Value {
    fn from(v: Vec<i64>) -> Self {
        Value::List(v.into_iter().map(Value::Int).collect())
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::List(v.into_iter().map(Value::from).collect())
    }
}
impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Self {
        Value::List(v.into_iter().map(Value::from).collect())
    }
}
impl From<Record> for Value {
    fn from(v: Record) -> Self {
        Value::Map(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds a [`Record`] from `name => value` pairs, in order.
///
/// ```
/// use persisting_codec::{record, Value};
/// let r = record! { "id" => "1", "value" => 42, "tags" => vec!["a", "b"] };
/// assert_eq!(r.get("value"), Some(&Value::Int(42)));
/// assert_eq!(r.keys().collect::<Vec<_>>(), ["id", "value", "tags"]);
/// ```
#[macro_export]
macro_rules! record {
    () => { $crate::Record::new() };
    ($($name:expr => $value:expr),+ $(,)?) => {{
        let mut r = $crate::Record::new();
        $( r.insert($name, $value); )+
        r
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    fn shared_names(r: &Record) -> Vec<Arc<str>> {
        r.iter_shared().map(|(n, _)| Arc::clone(n)).collect()
    }

    #[test]
    fn records_built_with_the_same_names_share_one_allocation_per_name() {
        let build = |i: i64| {
            let mut r = Record::new();
            r.insert("id", i);
            r.insert(String::from("user"), "u");
            r.insert(Cow::Borrowed("text"), "t");
            r
        };
        let (a, b) = (shared_names(&build(1)), shared_names(&build(2)));
        assert_eq!(a.len(), 3);
        for (x, y) in a.iter().zip(&b) {
            assert!(Arc::ptr_eq(x, y), "{x} is allocated per record");
        }
        // an Arc the caller shares is kept as it is
        let own: Arc<str> = Arc::from("id");
        let r = Record::new().with(Arc::clone(&own), 1);
        assert!(Arc::ptr_eq(&shared_names(&r)[0], &own));
    }

    #[test]
    fn interned_names_are_exact_whatever_the_cache_holds() {
        // more distinct names than the cache has slots, twice over, so slots are
        // replaced; long names bypass the cache; every record keeps its own names
        let long = "n".repeat(INTERNED_NAME_BYTES_MAX + 1);
        let all: Vec<String> = (0..INTERNED_NAMES * 2)
            .map(|i| format!("field_{i}"))
            .chain([long.clone(), String::new(), "é".to_owned()])
            .collect();
        for _ in 0..2 {
            for name in &all {
                let r = Record::new().with(name.as_str(), 1);
                assert_eq!(r.keys().collect::<Vec<_>>(), [name.as_str()]);
            }
        }
        let (a, b) = (
            Record::new().with(long.as_str(), 1),
            Record::new().with(long.as_str(), 2),
        );
        assert_eq!(a.keys().next(), b.keys().next());
    }

    #[test]
    fn distinct_names_refuse_a_repeated_name_and_say_which() {
        let err = DistinctNames::new(names(&["a", "b", "a"])).unwrap_err();
        assert!(
            matches!(&err, crate::Error::DuplicateField { offset: 2, name } if name == "a"),
            "{err:?}"
        );
        assert!(DistinctNames::new(names(&["a", "b", "c"])).is_ok());
    }

    #[test]
    fn a_record_from_distinct_names_keeps_their_order_and_leaves_out_absent_values() {
        let shape = DistinctNames::new(names(&["a", "b", "c"])).unwrap();
        let values = [Some(Value::Int(1)), None, Some(Value::Null)];
        let record = shape.record(|i| Ok::<_, ()>(values[i].clone())).unwrap();
        assert_eq!(record, Record::new().with("a", 1i64).with("c", Value::Null));
        assert!(!record.contains_key("b"));
        // the record's names are the shape's own allocations
        let (first, _) = record.iter_shared().next().unwrap();
        assert!(Arc::ptr_eq(first, &shape.names()[0]));
        // the first error stops the build
        let failed = shape.record(|i| {
            if i == 1 {
                Err(i)
            } else {
                Ok(Some(Value::Bool(true)))
            }
        });
        assert_eq!(failed, Err(1));
    }

    /// Writes `values[i]` into the slot, reusing a string slot's buffer.
    fn fill(values: &[Option<Value>]) -> impl FnMut(usize, &mut Value) -> Result<bool, ()> + '_ {
        |i, slot| {
            Ok(match (&values[i], slot) {
                (None, _) => false,
                (Some(Value::String(new)), Value::String(old)) => {
                    match old.owned_mut() {
                        Some(buf) => {
                            buf.clear();
                            buf.push_str(new);
                        }
                        None => *old = new.clone(),
                    }
                    true
                }
                (Some(v), slot) => {
                    *slot = v.clone();
                    true
                }
            })
        }
    }

    #[test]
    fn a_refilled_record_equals_a_built_one_whatever_it_held_before() {
        let shape = DistinctNames::new(names(&["a", "b", "c"])).unwrap();
        let rows: Vec<Vec<Option<Value>>> = vec![
            vec![
                Some("x".into()),
                Some(Value::Int(2)),
                Some("long text".into()),
            ],
            vec![None, Some("y".into()), None],
            vec![
                Some(Value::Null),
                None,
                Some(Value::List(vec![Value::Int(1)])),
            ],
            vec![None, None, None],
            vec![Some("z".into()), Some(Value::Float(0.5)), Some("w".into())],
        ];
        // every order of refills over one record, and a record of other names before
        let mut record = Record::new().with("q", "old").with("a", 7i64);
        for round in 0..3 {
            for k in 0..rows.len() {
                let row = &rows[(k + round) % rows.len()];
                shape.refill(&mut record, fill(row)).unwrap();
                let built = shape.record(|i| Ok::<_, ()>(row[i].clone())).unwrap();
                assert_eq!(record, built, "round {round}, row {k}");
            }
        }
        // an error keeps only the fields written before it, all distinct
        let row = &rows[0];
        let err = shape.refill(&mut record, |i, slot| {
            if i == 2 { Err(()) } else { fill(row)(i, slot) }
        });
        assert_eq!(err, Err(()));
        assert_eq!(record, Record::new().with("a", "x").with("b", 2i64));
    }

    #[test]
    fn a_refill_reuses_the_string_buffers_it_finds() {
        let shape = DistinctNames::new(names(&["s"])).unwrap();
        let mut record = Record::new();
        shape
            .refill(&mut record, fill(&[Some("first, long enough".into())]))
            .unwrap();
        let before = record["s"].as_str().unwrap().as_ptr();
        shape
            .refill(&mut record, fill(&[Some("second".into())]))
            .unwrap();
        assert_eq!(record["s"].as_str(), Some("second"));
        assert_eq!(record["s"].as_str().unwrap().as_ptr(), before);
    }
}
