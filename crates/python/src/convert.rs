//! Python objects to records and back, in Rust, without a JSON detour.
//!
//! | Python | record value |
//! |---|---|
//! | `None` | `Null` |
//! | `bool` (checked before `int`) | `Bool` |
//! | `int` within 64 bits | `Int` (a larger one raises `OverflowError`) |
//! | `float` | `Float` (NaN and infinities kept) |
//! | `str` | `String` |
//! | `bytes` | `Bytes` |
//! | `list` | `List` |
//! | `dict` with `str` keys | `Map` |
//!
//! Invariants:
//! - every type above converts back to the same Python type and value, so a dict
//!   written reads back equal (field order kept);
//! - anything else (a tuple, a set, a `datetime`, a non-`str` key, …) raises
//!   `TypeError` naming the record's index in its batch and the field path
//!   (`meta.tags[2]`); a batch converts whole or not at all;
//! - field names are interned per thread on the way in (records of one batch share one
//!   allocation per name) and each distinct name object is made once per batch on the
//!   way out.

use std::sync::Arc;

use persisting::codec::{DistinctNames, IntoName};
use persisting::lance::{Cell, Row};
use persisting::{Record, Value};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

/// What a value of a field could not be.
enum Refusal {
    /// A type with no record value.
    Type(String),
    /// An `int` outside 64 bits.
    Overflow(String),
    /// A dict key that is not a `str`.
    Key(String),
}

/// A refusal and the path to the value refused, innermost step first.
struct Refused {
    why: Refusal,
    path: Vec<String>,
}

impl Refused {
    fn at(mut self, step: String) -> Self {
        self.path.push(step);
        self
    }

    fn into_err(self, record: usize) -> PyErr {
        let mut path = String::new();
        for step in self.path.iter().rev() {
            if !step.starts_with('[') && !path.is_empty() {
                path.push('.');
            }
            path.push_str(step);
        }
        let place = if path.is_empty() {
            format!("record {record}")
        } else {
            format!("record {record}, field '{path}'")
        };
        match self.why {
            Refusal::Type(t) => PyTypeError::new_err(format!(
                "{place}: a value of type {t} cannot be stored (supported: None, bool, int, float, str, bytes, list, dict with str keys)"
            )),
            Refusal::Overflow(v) => PyOverflowError::new_err(format!(
                "{place}: the integer {v} does not fit in 64 bits (from -2**63 to 2**63-1)"
            )),
            Refusal::Key(t) => {
                PyTypeError::new_err(format!("{place}: a field name must be a str, not {t}"))
            }
        }
    }
}

fn type_name(ob: &Bound<'_, PyAny>) -> String {
    ob.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn refuse(why: Refusal) -> Refused {
    Refused {
        why,
        path: Vec::new(),
    }
}

fn value(ob: &Bound<'_, PyAny>) -> Result<Value, Refused> {
    if ob.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = ob.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = ob.cast::<PyString>() {
        let text = s
            .to_str()
            .map_err(|_| refuse(Refusal::Type("str with lone surrogates".to_owned())))?;
        return Ok(Value::String(text.into()));
    }
    if ob.is_instance_of::<PyInt>() {
        return ob
            .extract::<i64>()
            .map(Value::Int)
            .map_err(|_| refuse(Refusal::Overflow(ob.to_string())));
    }
    if let Ok(f) = ob.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(b) = ob.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(list) = ob.cast::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            items.push(value(&item).map_err(|r| r.at(format!("[{i}]")))?);
        }
        return Ok(Value::List(items));
    }
    if let Ok(dict) = ob.cast::<PyDict>() {
        return map(dict).map(Value::Map);
    }
    Err(refuse(Refusal::Type(type_name(ob))))
}

/// A dict key as a field name: a `str` of valid UTF-8.
fn key_name<'a>(k: &'a Bound<'_, PyAny>) -> Result<&'a str, Refused> {
    let Ok(key) = k.cast::<PyString>() else {
        return Err(refuse(Refusal::Key(type_name(k))));
    };
    key.to_str()
        .map_err(|_| refuse(Refusal::Key("str with lone surrogates".to_owned())))
}

fn map(dict: &Bound<'_, PyDict>) -> Result<Record, Refused> {
    let mut record = Record::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let name = key_name(&k)?;
        let v = value(&v).map_err(|r| r.at(name.to_owned()))?;
        record.insert(name, v);
    }
    Ok(record)
}

/// `ob` as the dict of record `index`, or a `TypeError` naming it.
fn as_record_dict<'a, 'py>(
    ob: &'a Bound<'py, PyAny>,
    index: usize,
) -> PyResult<&'a Bound<'py, PyDict>> {
    ob.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "record {index}: a record must be a dict, not {}",
            type_name(ob)
        ))
    })
}

/// One record from a dict; `index` names it in errors.
pub(crate) fn record(ob: &Bound<'_, PyAny>, index: usize) -> PyResult<Record> {
    map(as_record_dict(ob, index)?).map_err(|r| r.into_err(index))
}

/// The keys of the last record converted, and their names: the next record with the
/// very same key objects in the same order (the common case: dicts built by one
/// piece of code) reuses the names without reading, interning or checking its keys.
/// The key objects are held, so their addresses cannot be reused while compared.
struct Shape<'py> {
    keys: Vec<Bound<'py, PyAny>>,
    names: DistinctNames,
}

/// The shape of a record with these fields: their names, read and interned.
fn new_shape<'py>(
    fields: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)],
) -> Result<Shape<'py>, Refused> {
    let mut names = Vec::with_capacity(fields.len());
    for (k, _) in fields {
        names.push(key_name(k)?.into_name());
    }
    // a dict's keys are distinct objects, and two str objects with equal text are
    // equal keys: the names are distinct
    let names = DistinctNames::new(names)
        .map_err(|e| refuse(Refusal::Key(format!("a repeated name ({e})"))))?;
    Ok(Shape {
        keys: fields.iter().map(|(k, _)| k.clone()).collect(),
        names,
    })
}

/// One record from a dict, through `shape` when its keys are the shape's.
fn record_shaped<'py>(
    dict: &Bound<'py, PyDict>,
    shape: &mut Option<Shape<'py>>,
    fields: &mut Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> Result<Record, Refused> {
    fields.clear();
    fields.extend(dict.iter());
    let same = |s: &Shape<'py>| {
        s.keys.len() == fields.len() && s.keys.iter().zip(fields.iter()).all(|(a, (b, _))| a.is(b))
    };
    let shape = match shape {
        Some(s) if same(s) => s,
        slot => slot.insert(new_shape(fields)?),
    };
    shape.names.record(|j| {
        value(&fields[j].1)
            .map(Some)
            .map_err(|r| r.at(shape.names.names()[j].to_string()))
    })
}

/// A batch of records from a list of dicts, whole or not at all.
pub(crate) fn records(ob: &Bound<'_, PyAny>) -> PyResult<Vec<Record>> {
    let list = ob.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!(
            "records must be a list of dicts, not {}",
            type_name(ob)
        ))
    })?;
    let mut out = Vec::with_capacity(list.len());
    let mut shape = None;
    let mut fields = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let dict = as_record_dict(&item, i)?;
        out.push(record_shaped(dict, &mut shape, &mut fields).map_err(|r| r.into_err(i))?);
    }
    Ok(out)
}

/// The Python `str` of each field name met while building one result, so each
/// distinct name is made once (records read together share their names' `Arc`).
/// Records of one batch have their fields in the same order: the name at position
/// `j` of the record before is tried first, by pointer, so a name costs no search.
#[derive(Default)]
struct Names {
    seen: Vec<(Arc<str>, Py<PyString>)>,
    /// index into `seen` of the name last met at each field position
    at: Vec<usize>,
}

/// Distinct names remembered per result; past this, names are made per field.
const NAMES_MAX: usize = 256;

impl Names {
    /// The `str` of `name`, met at field position `j` of a record.
    fn get<'py>(&mut self, py: Python<'py>, j: usize, name: &Arc<str>) -> Bound<'py, PyString> {
        if let Some(&k) = self.at.get(j)
            && Arc::ptr_eq(&self.seen[k].0, name)
        {
            return self.seen[k].1.bind(py).clone();
        }
        let found = self
            .seen
            .iter()
            .position(|(n, _)| Arc::ptr_eq(n, name) || **n == **name);
        let k = match found {
            Some(k) => k,
            None if self.seen.len() < NAMES_MAX => {
                let s = PyString::new(py, name);
                self.seen.push((Arc::clone(name), s.unbind()));
                self.seen.len() - 1
            }
            None => return PyString::new(py, name),
        };
        if j < self.at.len() {
            self.at[j] = k;
        } else if j == self.at.len() {
            self.at.push(k);
        }
        self.seen[k].1.bind(py).clone()
    }
}

fn value_to_py<'py>(py: Python<'py>, v: &Value, names: &mut Names) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item, names)?)?;
            }
            list.into_any()
        }
        Value::Map(r) => record_to_py(py, r, names)?.into_any(),
    })
}

fn record_to_py<'py>(
    py: Python<'py>,
    r: &Record,
    names: &mut Names,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (j, (name, v)) in r.iter_shared().enumerate() {
        dict.set_item(names.get(py, j, name), value_to_py(py, v, names)?)?;
    }
    Ok(dict)
}

/// A read on its way to Python, unbuilt (checked batches and buffered records): a
/// `list` of `dict`s built straight from the columns when the result is handed to the
/// event loop, so no record is built on the runtime's thread nor freed on the loop's.
pub(crate) struct Rows(pub(crate) persisting::lance::Rows);

/// An error while walking rows: Python's, or the storage layer's (a layout value
/// that does not decode).
struct WalkError(PyErr);

impl From<PyErr> for WalkError {
    fn from(e: PyErr) -> Self {
        Self(e)
    }
}

impl From<persisting::lance::Error> for WalkError {
    fn from(e: persisting::lance::Error) -> Self {
        Self(crate::errors::storage(e.into()))
    }
}

fn cell_to_py<'py>(
    py: Python<'py>,
    cell: Cell<'_>,
    names: &mut Names,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match cell {
        Cell::Int(i) => i.into_pyobject(py)?.into_any(),
        Cell::Float(f) => PyFloat::new(py, f).into_any(),
        Cell::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Cell::Str(s) => PyString::new(py, s).into_any(),
        Cell::Value(v) => value_to_py(py, &v, names)?,
    })
}

impl<'py> IntoPyObject<'py> for Rows {
    type Target = PyList;
    type Output = Bound<'py, PyList>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut names = Names::default();
        let mut dicts = Vec::with_capacity(self.0.len());
        self.0
            .for_each(|row| {
                let dict = match row {
                    Row::Record(r) => record_to_py(py, r, &mut names)?,
                    Row::Fields(fields) => {
                        let dict = PyDict::new(py);
                        let mut j = 0;
                        fields.for_each(|name, cell| {
                            let value = cell_to_py(py, cell, &mut names)?;
                            dict.set_item(names.get(py, j, name), value)?;
                            j += 1;
                            Ok::<_, WalkError>(())
                        })?;
                        dict
                    }
                };
                dicts.push(dict);
                Ok::<_, WalkError>(())
            })
            .map_err(|WalkError(e)| e)?;
        PyList::new(py, dicts)
    }
}

/// Converts `records` (a list of dicts) to records and back: what a put and a read
/// do to a batch at the boundary, without storage. For tests and benchmarks.
#[pyfunction]
pub(crate) fn round_trip<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    Rows(persisting::lance::Rows::from_records(self::records(
        records,
    )?))
    .into_pyobject(py)
}
