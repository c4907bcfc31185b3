//! Consumer groups from Python: the methods of `Bucket` that commit and read group
//! offsets (checked against the open bucket's acknowledged count), and
//! `persisting._native.Groups`, a bucket's groups opened by path without its writer
//! (checked against what its storage holds).
//!
//! Invariants: every call is an awaitable whose work runs in Rust; a commit is a
//! write, run to its end even when its awaitable is cancelled (a cancelled commit may
//! have landed: it is durable or refused, never half-written).

use std::collections::HashMap;
use std::path::PathBuf;

use persisting::{BucketGroups, GroupLag, GroupOffset};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::bridge::{Cancel, awaitable, runtime};
use crate::errors;

/// A group's committed state as a dict: `group`, `offset`, `generation`.
pub(crate) struct Committed(pub(crate) Option<GroupOffset>);

impl<'py> IntoPyObject<'py> for Committed {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some(c) = self.0 else {
            return Ok(py.None().into_bound(py));
        };
        let dict = PyDict::new(py);
        dict.set_item("group", c.group)?;
        dict.set_item("offset", c.offset)?;
        dict.set_item("generation", c.generation)?;
        Ok(dict.into_any())
    }
}

/// Listed groups as a list of dicts: `group`, `committed`, `end`, `lag`.
pub(crate) struct Lags(pub(crate) Vec<GroupLag>);

impl<'py> IntoPyObject<'py> for Lags {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = pyo3::types::PyList::empty(py);
        for l in self.0 {
            let dict = PyDict::new(py);
            dict.set_item("group", l.group)?;
            dict.set_item("committed", l.committed)?;
            dict.set_item("end", l.end)?;
            dict.set_item("lag", l.lag)?;
            list.append(dict)?;
        }
        Ok(list.into_any())
    }
}

/// The `seen` state a conditional commit is made from.
pub(crate) fn seen(
    group: &str,
    offset: Option<u64>,
    generation: Option<u64>,
) -> Option<GroupOffset> {
    match (offset, generation) {
        (Some(offset), Some(generation)) => Some(GroupOffset {
            group: group.to_owned(),
            offset,
            generation,
        }),
        _ => None,
    }
}

/// The group calls shared by `Bucket` and `Groups`, on a handle's groups.
pub(crate) fn commit<'py>(
    py: Python<'py>,
    groups: BucketGroups,
    group: String,
    offset: u64,
    from: Option<Option<GroupOffset>>,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, Cancel::RunToEnd, async move {
        let done = match from {
            Some(seen) => groups.commit_from(&group, seen.as_ref(), offset).await,
            None => groups.commit(&group, offset).await,
        };
        done.map(|c| Committed(Some(c))).map_err(errors::storage)
    })
}

pub(crate) fn committed<'py>(
    py: Python<'py>,
    groups: BucketGroups,
    group: String,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, Cancel::Drop, async move {
        groups
            .committed(&group)
            .await
            .map(Committed)
            .map_err(errors::storage)
    })
}

pub(crate) fn seek<'py>(
    py: Python<'py>,
    groups: BucketGroups,
    group: String,
    offset: u64,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, Cancel::RunToEnd, async move {
        groups
            .seek(&group, offset)
            .await
            .map(|c| Committed(Some(c)))
            .map_err(errors::storage)
    })
}

pub(crate) fn delete<'py>(
    py: Python<'py>,
    groups: BucketGroups,
    group: String,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, Cancel::RunToEnd, async move {
        groups.delete(&group).await.map_err(errors::storage)
    })
}

pub(crate) fn list<'py>(py: Python<'py>, groups: BucketGroups) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, Cancel::Drop, async move {
        groups.list().await.map(Lags).map_err(errors::storage)
    })
}

/// The consumer groups of the bucket at `storage_path`, opened without its writer.
#[pyclass(module = "persisting._native", frozen)]
pub(crate) struct Groups {
    groups: BucketGroups,
}

#[pymethods]
impl Groups {
    /// Opens the groups of the bucket at `storage_path` (a directory or a URI);
    /// `wal_dir` is its local directory when the data is at a URI;
    /// `storage_options` reach the object store.
    #[new]
    #[pyo3(signature = (storage_path, wal_dir=None, storage_options=None))]
    fn new(
        py: Python<'_>,
        storage_path: PathBuf,
        wal_dir: Option<PathBuf>,
        storage_options: Option<HashMap<String, String>>,
    ) -> PyResult<Self> {
        let options = storage_options.unwrap_or_default();
        let runtime = runtime()?;
        let groups = py
            .detach(|| {
                runtime.block_on(BucketGroups::open(
                    &storage_path,
                    wal_dir.as_deref(),
                    &options,
                ))
            })
            .map_err(errors::storage)?;
        Ok(Self { groups })
    }

    /// Commits `offset` for `group` (forward only, within the bucket); with
    /// `seen_offset` and `seen_generation`, only if the group is still as read then
    /// (`from_none=True`: only if it had no committed offset). An awaitable of the
    /// committed state.
    #[pyo3(signature = (group, offset, seen_offset=None, seen_generation=None, conditional=false))]
    fn commit<'py>(
        &self,
        py: Python<'py>,
        group: String,
        offset: u64,
        seen_offset: Option<u64>,
        seen_generation: Option<u64>,
        conditional: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let from = conditional.then(|| seen(&group, seen_offset, seen_generation));
        commit(py, self.groups.clone(), group, offset, from)
    }

    /// The committed state of `group` (a dict) or None; an awaitable.
    fn committed<'py>(&self, py: Python<'py>, group: String) -> PyResult<Bound<'py, PyAny>> {
        committed(py, self.groups.clone(), group)
    }

    /// Moves `group` to `offset`; an awaitable.
    fn seek<'py>(
        &self,
        py: Python<'py>,
        group: String,
        offset: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        seek(py, self.groups.clone(), group, offset)
    }

    /// Deletes `group`; an awaitable of whether it had a committed offset.
    fn delete<'py>(&self, py: Python<'py>, group: String) -> PyResult<Bound<'py, PyAny>> {
        delete(py, self.groups.clone(), group)
    }

    /// Every group with `committed`, `end` and `lag`; an awaitable of a list of dicts.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        list(py, self.groups.clone())
    }
}
