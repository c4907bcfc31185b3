//! Rust errors as the Python exceptions of `persisting.errors`.
//!
//! The exception classes are defined in Python (so `WALError` subclasses
//! `StorageError` and `InvalidOptionError` is also a `ValueError`); this module looks
//! them up once and raises them with the Rust error's message, which names what failed.

use persisting::{BucketError, StorageError};
use pyo3::PyErrArguments;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The Python exception classes, by name in `persisting.errors`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// `StorageError`: any storage failure.
    Storage,
    /// `WALError(StorageError)`: the write-ahead log failed or is damaged.
    Wal,
    /// `InvalidOptionError(StorageError, ValueError)`: a bad option value.
    InvalidOption,
    /// `SchemaError(StorageError, TypeError)`: a batch conflicts with the bucket's
    /// schema.
    Schema,
    /// `BucketLockedError(StorageError)`: another handle or process writes the bucket.
    Locked,
    /// `StoreUnavailableError(StorageError, TimeoutError)`: no room for a put within
    /// `put_timeout` while the store does not take commits.
    Unavailable,
    /// `LogStartError(StorageError, LookupError)`: a read below the bucket's log
    /// start; carries `offset` and `log_start`.
    LogStart,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Storage => "StorageError",
            Kind::Wal => "WALError",
            Kind::InvalidOption => "InvalidOptionError",
            Kind::Schema => "SchemaError",
            Kind::Locked => "BucketLockedError",
            Kind::Unavailable => "StoreUnavailableError",
            Kind::LogStart => "LogStartError",
        }
    }

    /// The exception class, looked up in `persisting.errors` once per process.
    fn class(self, py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
        static CLASSES: [PyOnceLock<Py<PyType>>; 7] = [
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
            PyOnceLock::new(),
        ];
        let cell = &CLASSES[self as usize];
        let class = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
            let module = py.import("persisting.errors")?;
            Ok(module.getattr(self.name())?.cast_into::<PyType>()?.unbind())
        })?;
        Ok(class.bind(py).clone())
    }

    /// An exception of this class with `message`.
    pub(crate) fn err(self, message: impl Into<String>) -> PyErr {
        let message = message.into();
        self.err_with(message.clone(), message)
    }

    /// An exception of this class with `args` (its message first); `message` alone
    /// when the class cannot be loaded.
    pub(crate) fn err_with<A>(self, message: String, args: A) -> PyErr
    where
        A: PyErrArguments + Send + Sync + 'static,
    {
        let name = self.name();
        crate::bridge::with_python(|py| match self.class(py) {
            Ok(class) => PyErr::from_type(class, args),
            Err(e) => PyRuntimeError::new_err(format!(
                "{message} (and persisting.errors.{name} could not be loaded: {e})"
            )),
        })
        // the interpreter is shutting down: no class to look up, and no one to raise to
        .unwrap_or_else(|| PyRuntimeError::new_err(message))
    }
}

/// The kind of Python exception a storage error is raised as.
fn kind_of(e: &StorageError) -> Kind {
    match e {
        e if e.is_invalid_option() => Kind::InvalidOption,
        StorageError::Lance(
            persisting::lance::Error::InvalidGroup { .. }
            | persisting::lance::Error::InvalidSnapshot { .. },
        ) => Kind::InvalidOption,
        StorageError::Wal(_) | StorageError::Bucket(BucketError::WalGap { .. }) => Kind::Wal,
        StorageError::Lance(persisting::lance::Error::SchemaConflict { .. }) => Kind::Schema,
        StorageError::Bucket(BucketError::Locked { .. }) => Kind::Locked,
        StorageError::Bucket(BucketError::StoreUnavailable(_)) => Kind::Unavailable,
        _ => Kind::Storage,
    }
}

/// A storage error as its Python exception, with the Rust message.
pub(crate) fn storage(e: StorageError) -> PyErr {
    let message = e.to_string();
    match e {
        // `LogStartError(message, offset, log_start)`
        StorageError::Lance(persisting::lance::Error::BelowLogStart {
            offset, log_start, ..
        }) => Kind::LogStart.err_with(message.clone(), (message, offset, log_start)),
        e => kind_of(&e).err(message),
    }
}

/// A bad option value, raised as `InvalidOptionError` with the facade's own message for
/// it (`invalid option {name} = {value}: {reason}`).
pub(crate) fn invalid(name: &str, value: impl ToString, reason: impl ToString) -> PyErr {
    storage(StorageError::invalid(name, value, reason))
}
