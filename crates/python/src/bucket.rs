//! `persisting._native.Bucket`: one bucket's facade backend behind asyncio awaitables.
//!
//! Invariants (see the crate docs for the runtime's): writes run as tasks of the
//! runtime and finish even when their awaitable is cancelled; reads and waits are
//! plain futures, dropped with their awaitable; a waiting read is woken by the
//! bucket's count channel (a put publishes to it), never by polling.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use persisting::{BucketError, PersistingBackend, StorageBackend, StorageError};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::bridge::{Cancel, awaitable, runtime};
use crate::convert::{self, Rows};
use crate::errors;
use crate::groups;
use crate::metrics;
use crate::options;

/// One bucket of a queue topic, opened for writing (holds the bucket's lock).
#[pyclass(module = "persisting._native", frozen)]
pub(crate) struct Bucket {
    /// The open backend; `None` once closed (the handle is dropped then, so the
    /// bucket's lock is released when the last running call ends).
    backend: Mutex<Option<PersistingBackend>>,
    bucket_id: u64,
    topic: String,
    kind: String,
    metrics: bool,
}

impl Bucket {
    /// Takes the backend out: later calls raise `StorageError` (closed).
    fn take(&self) -> Option<PersistingBackend> {
        self.backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The open backend, or `StorageError` once closed.
    fn open(&self) -> PyResult<PersistingBackend> {
        self.backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                errors::storage(StorageError::from(BucketError::Closed {
                    bucket_id: self.bucket_id,
                }))
            })
    }
}

#[pymethods]
impl Bucket {
    /// Opens (creating if needed, recovering the WAL) the bucket at `storage_path`
    /// with `options` (known option names only). `kind` is `"lance"` or
    /// `"persisting"`, reported by `stats()`.
    #[new]
    #[pyo3(signature = (bucket_id, storage_path, options, kind))]
    fn new(
        py: Python<'_>,
        bucket_id: u64,
        storage_path: PathBuf,
        options: &Bound<'_, PyDict>,
        kind: String,
    ) -> PyResult<Self> {
        let text = storage_path.to_string_lossy();
        if text.is_empty() {
            return Err(errors::invalid(
                "storage_path",
                "''",
                "must name a directory",
            ));
        }
        // the metrics label: the bucket's parent directory, the topic in Pulsing's
        // default layout ({base}/{topic}/bucket_{id})
        let topic = storage_path
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(
                || "default".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
        let asked = options::parse(options, topic.clone())?;
        let metrics = asked.opts.enable_metrics;
        if metrics {
            metrics::ensure(asked.metrics_addr)?;
        } else if let Some(addr) = asked.metrics_addr {
            return Err(errors::invalid(
                "metrics_addr",
                addr,
                "metrics are off (enable_metrics=False)",
            ));
        }
        let opts = asked.opts;
        let runtime = runtime()?;
        let backend = py
            .detach(|| runtime.block_on(PersistingBackend::open(bucket_id, &storage_path, opts)))
            .map_err(errors::storage)?;
        Ok(Self {
            backend: Mutex::new(Some(backend)),
            bucket_id,
            topic,
            kind,
            metrics,
        })
    }

    /// Acknowledged records (buffer + persisted). Cheap: called before every put.
    fn total_count(&self) -> PyResult<u64> {
        Ok(self.open()?.total_count())
    }

    /// Stores `records` (a list of dicts) as one unit; an awaitable. The batch is
    /// converted before anything is stored: a bad value raises and stores nothing.
    fn put_batch<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let records = convert::records(records)?;
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            backend.put_batch(records).await.map_err(errors::storage)
        })
    }

    /// Stores one record (a dict); an awaitable.
    fn put<'py>(&self, py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let record = convert::record(record, 0)?;
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            backend.put(record).await.map_err(errors::storage)
        })
    }

    /// Records `[offset, offset + limit)` clipped to what exists (`limit=None`: to the
    /// end); an awaitable of a list of dicts.
    /// With `snapshot`, of the snapshot of that name: the bucket as it was.
    #[pyo3(signature = (offset, limit=None, snapshot=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        limit: Option<usize>,
        snapshot: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::Drop, async move {
            let rows = match snapshot {
                Some(name) => backend
                    .get_snapshot(&name, offset, limit)
                    .await
                    .map(persisting::lance::Rows::from_records),
                None => backend.get_rows(offset, limit).await,
            };
            rows.map(Rows).map_err(errors::storage)
        })
    }

    /// Removes the records below `before` by whole fragments (see the facade's
    /// `trim`); an awaitable of a dict (`log_start`, `records`, `fragments`,
    /// `files_removed`, `bytes_removed`, `duration_seconds`).
    fn trim<'py>(&self, py: Python<'py>, before: u64) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            let r = backend.trim(before).await.map_err(errors::storage)?;
            Ok(Json(serde_json::json!({
                "log_start": r.log_start,
                "records": r.records,
                "fragments": r.fragments,
                "files_removed": r.files_removed,
                "bytes_removed": r.bytes_removed,
                "duration_seconds": r.duration.as_secs_f64(),
            })))
        })
    }

    /// Pins every acknowledged record under `name`; an awaitable of the snapshot's
    /// dict (`name`, `version`, `log_start`, `end_offset`, `created_at`).
    fn snapshot<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            let s = backend.snapshot(&name).await.map_err(errors::storage)?;
            Ok(Json(snapshot_json(&s)))
        })
    }

    /// The bucket's snapshots; an awaitable of a list of dicts.
    fn snapshots<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::Drop, async move {
            let all = backend.snapshots().await.map_err(errors::storage)?;
            Ok(Json(serde_json::Value::Array(
                all.iter().map(snapshot_json).collect(),
            )))
        })
    }

    /// Deletes the snapshot `name`; an awaitable.
    fn delete_snapshot<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            backend
                .delete_snapshot(&name)
                .await
                .map_err(errors::storage)
        })
    }

    /// Up to `limit` records from `offset`; when there are none yet and `wait` is
    /// true, waits until a put makes one visible (at most `timeout` seconds when it is
    /// given and positive), then reads. An empty list means nothing came.
    #[pyo3(signature = (offset, limit, wait=false, timeout=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        limit: usize,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bound = match timeout {
            Some(t) if t.is_nan() || t < 0.0 => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a number of seconds of at least 0, not {t}"
                )));
            }
            Some(t) if t > 0.0 => Some(Duration::try_from_secs_f64(t).map_err(|e| {
                PyValueError::new_err(format!("timeout {t} is not a duration: {e}"))
            })?),
            _ => None,
        };
        let backend = self.open()?;
        awaitable(py, Cancel::Drop, async move {
            let first = backend
                .get_rows(offset, Some(limit))
                .await
                .map_err(errors::storage)?;
            if !first.is_empty() || !wait || limit == 0 {
                return Ok(Rows(first));
            }
            let mut count = backend.subscribe();
            // true once a put made a record at `offset` visible; false if the bucket
            // closed (the guard the wait returns is not kept across an await)
            let arrived = async { count.wait_for(|c| *c > offset).await.is_ok() };
            let arrived = match bound {
                Some(d) => tokio::time::timeout(d, arrived).await.unwrap_or(false),
                None => arrived.await,
            };
            if !arrived {
                return Ok(Rows(persisting::lance::Rows::default()));
            }
            backend
                .get_rows(offset, Some(limit))
                .await
                .map(Rows)
                .map_err(errors::storage)
        })
    }

    /// Makes the buffered records a durable Lance commit; an awaitable.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            backend.flush().await.map_err(errors::storage)
        })
    }

    /// Flushes, then merges small Lance fragments; an awaitable.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        awaitable(py, Cancel::RunToEnd, async move {
            backend.compact().await.map_err(errors::storage)
        })
    }

    /// Flushes and closes: waiting reads end, later calls raise, and the bucket's
    /// lock is released once no call is running; an awaitable.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let taken = self.take();
        awaitable(py, Cancel::RunToEnd, async move {
            match taken {
                Some(backend) => backend.close().await.map_err(errors::storage),
                None => Ok(()),
            }
        })
    }

    /// `get(offset, limit)` in its two parts, timed apart, for benchmarks: blocks on
    /// the read (GIL released), then builds the dicts. Returns the list, the read's
    /// seconds and the conversion's; what `await get` costs beyond their sum is the
    /// hop between the event loop and the runtime.
    #[pyo3(name = "_get_timed")]
    fn get_timed<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        limit: usize,
    ) -> PyResult<(Bound<'py, PyList>, f64, f64)> {
        let backend = self.open()?;
        let started = std::time::Instant::now();
        let records = py
            .detach(|| runtime().map(|rt| rt.block_on(backend.get_rows(offset, Some(limit)))))?
            .map_err(errors::storage)?;
        let read = started.elapsed().as_secs_f64();
        let started = std::time::Instant::now();
        let list = Rows(records).into_pyobject(py)?;
        Ok((list, read, started.elapsed().as_secs_f64()))
    }

    /// [`Bucket::close`] for code without an event loop: blocks, GIL released.
    fn close_sync(&self, py: Python<'_>) -> PyResult<()> {
        match self.take() {
            Some(backend) => py
                .detach(|| runtime().map(|rt| rt.block_on(async move { backend.close().await })))?
                .map_err(errors::storage),
            None => Ok(()),
        }
    }

    /// Statistics as plain Python values; an awaitable of a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let backend = self.open()?;
        let kind = self.kind.clone();
        awaitable(py, Cancel::Drop, async move {
            let stats = backend.stats().await.map_err(errors::storage)?;
            let mut json = serde_json::to_value(&stats)
                .map_err(|e| PyRuntimeError::new_err(format!("stats: {e}")))?;
            if let Some(map) = json.as_object_mut() {
                // the keys of Pulsing's memory backend beside the seed's
                map.insert("buffer_size".to_owned(), stats.buffer_count.into());
                map.insert("backend".to_owned(), kind.into());
            }
            Ok(Json(json))
        })
    }

    /// This bucket's Prometheus samples by metric name (empty without
    /// `enable_metrics`), plus where they are served.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        if !self.metrics {
            return Ok(dict);
        }
        for (name, value) in metrics::samples(&self.topic, self.bucket_id) {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    /// The address the process serves Prometheus metrics on, if it does.
    #[staticmethod]
    fn metrics_addr() -> Option<String> {
        metrics::served_on().map(|a| a.to_string())
    }

    /// The `topic` label of this bucket's metrics.
    #[getter]
    fn metrics_topic(&self) -> &str {
        &self.topic
    }

    /// Commits `offset` for consumer group `group` (forward only, within the
    /// acknowledged records); with `conditional`, only if the group is still as read
    /// (`seen_offset`/`seen_generation`; both None: it had none). An awaitable of the
    /// committed state (a dict).
    #[pyo3(signature = (group, offset, seen_offset=None, seen_generation=None, conditional=false))]
    fn commit_offset<'py>(
        &self,
        py: Python<'py>,
        group: String,
        offset: u64,
        seen_offset: Option<u64>,
        seen_generation: Option<u64>,
        conditional: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let groups = self.open()?.consumer_groups().map_err(errors::storage)?;
        let from = conditional.then(|| groups::seen(&group, seen_offset, seen_generation));
        groups::commit(py, groups, group, offset, from)
    }

    /// The committed state of `group` (a dict) or None; an awaitable.
    fn committed_offset<'py>(&self, py: Python<'py>, group: String) -> PyResult<Bound<'py, PyAny>> {
        let groups = self.open()?.consumer_groups().map_err(errors::storage)?;
        groups::committed(py, groups, group)
    }

    /// Moves `group` to `offset`, back or forward; an awaitable.
    fn seek_group<'py>(
        &self,
        py: Python<'py>,
        group: String,
        offset: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let groups = self.open()?.consumer_groups().map_err(errors::storage)?;
        groups::seek(py, groups, group, offset)
    }

    /// Deletes `group`; an awaitable of whether it had a committed offset.
    fn delete_group<'py>(&self, py: Python<'py>, group: String) -> PyResult<Bound<'py, PyAny>> {
        let groups = self.open()?.consumer_groups().map_err(errors::storage)?;
        groups::delete(py, groups, group)
    }

    /// Every group with `committed`, `end` and `lag`; an awaitable of a list of dicts.
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let groups = self.open()?.consumer_groups().map_err(errors::storage)?;
        groups::list(py, groups)
    }

    /// The options in force, by name.
    fn options<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let backend = self.open()?;
        let o = backend.options();
        let dict = PyDict::new(py);
        dict.set_item("batch_size", o.batch_size)?;
        dict.set_item("flush_threshold", o.flush_threshold)?;
        dict.set_item("enable_wal", o.enable_wal)?;
        dict.set_item("compression", o.compression.name())?;
        dict.set_item("enable_metrics", o.enable_metrics)?;
        dict.set_item("wal_sync_interval", o.wal_sync_interval.as_secs_f64())?;
        dict.set_item("max_wal_size", o.max_wal_size)?;
        dict.set_item("target_rows_per_fragment", o.target_rows_per_fragment)?;
        dict.set_item("max_unflushed_bytes", o.max_unflushed_bytes)?;
        dict.set_item("put_timeout", o.put_timeout.as_secs_f64())?;
        Ok(dict)
    }
}

/// A JSON value on its way to Python (dicts, lists, numbers, strings, None).
struct Json(serde_json::Value);

/// A snapshot as JSON (`created_at` in seconds since the Unix epoch).
fn snapshot_json(s: &persisting::lance::Snapshot) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "version": s.version,
        "log_start": s.log_start,
        "end_offset": s.end_offset,
        "created_at": s.created_unix_seconds(),
    })
}

fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        J::String(s) => s.into_pyobject(py)?.into_any(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        J::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.0)
    }
}
