//! Rust futures as asyncio futures: run on the extension's tokio runtime, completed on
//! the event loop that awaited them.
//!
//! Why not `pyo3-async-runtimes`: an await of a no-op future took 150 µs through it
//! and takes 105 µs through this module (measured side by side on the same 2-core
//! machine when this module replaced it). Every `put`, `get` and `flush` pays that
//! round trip; `cargo xtask bench --python-only` keeps
//! measuring it ("an empty await of the storage runtime vs asyncio
//! `run_in_executor` of a no-op": 1.14x, 9,666 vs 8,512 calls/s).
//!
//! Invariants:
//! - the future is created on, and completed through `call_soon_threadsafe` of, the
//!   running loop of the caller; a result is set only if the future is not done (a
//!   cancelled future stays cancelled);
//! - a [`Cancel::Drop`] task is aborted when its future is cancelled (its Rust future
//!   dropped: nothing of it keeps running); a [`Cancel::RunToEnd`] task finishes
//!   whatever happens to the future, so a write is never cut short;
//! - the runtime's thread takes the GIL once per result, to hand it over unbuilt, and
//!   only through [`with_python`]; the loop's thread builds the Python object (a list
//!   of dicts, say) as it completes the future. A runtime worker so never holds the
//!   GIL for a conversion, which holds up the tasks queued behind it on that worker
//!   (the scan that decodes ahead, other buckets' flushes and lease renewals), and
//!   the objects are made on the thread that uses and frees them: an awaited
//!   `get(5000)` took 8.0–8.4 ms against 8.6–8.7 ms building on the worker, with
//!   3–4% less CPU (three alternated runs of 200 gets each, `perf stat`);
//! - once the interpreter starts to exit ([`close_gate`], run by `atexit`), no
//!   runtime thread takes the GIL again. (A thread that asks for the GIL while the
//!   interpreter finalizes is ended by CPython with a forced unwind, which aborts the
//!   process through Rust frames; running Python code, as `call_soon_threadsafe`
//!   does, can hand the GIL to the main thread at any time.)

use std::future::Future;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use pyo3::BoundObject;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;

/// The runtime every bucket of the process runs on, started by the first use.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("persisting")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("the storage runtime cannot start: {e}")))
}

/// Whether the interpreter is exiting, and how many runtime threads hold the GIL.
#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    inside: usize,
}

static GATE: Mutex<GateState> = Mutex::new(GateState {
    closed: false,
    inside: 0,
});
static GATE_LEFT: Condvar = Condvar::new();

/// Runs `f` with the GIL, unless the interpreter is exiting (then `None`).
pub(crate) fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    {
        let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        if gate.closed {
            return None;
        }
        gate.inside += 1;
    }
    let result = Python::try_attach(f);
    let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
    gate.inside -= 1;
    if gate.inside == 0 {
        GATE_LEFT.notify_all();
    }
    result
}

/// Stops runtime threads from taking the GIL and waits (GIL released) for those that
/// hold it. Registered with `atexit` by the package: it runs before finalization.
#[pyfunction]
pub(crate) fn close_gate(py: Python<'_>) {
    py.detach(|| {
        let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        gate.closed = true;
        while gate.inside > 0 {
            gate = GATE_LEFT.wait(gate).unwrap_or_else(PoisonError::into_inner);
        }
    });
}

/// What cancelling the asyncio future does to the Rust task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// Drop the task (reads, waits).
    Drop,
    /// Let it finish (writes).
    RunToEnd,
}

/// A result on its way to the event loop, built into a Python object there: the
/// value, or the error to raise.
type Build = Box<dyn for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>> + Send>;

/// A result the runtime hands over unbuilt: the loop's thread builds it (see the
/// module doc).
#[pyclass(frozen)]
struct Unbuilt(Mutex<Option<Build>>);

/// Sets `fut`'s result or exception, built from `value`, unless it is done already
/// (a result no one awaits any more is dropped unbuilt). `value` is an [`Unbuilt`],
/// or the exception of one that could not be made.
#[pyfunction]
fn complete(fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let py = value.py();
    let built = match value.cast::<Unbuilt>() {
        Ok(unbuilt) => {
            let build = unbuilt
                .get()
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match build {
                Some(build) => build(py),
                // built already: this future was completed then
                None => return Ok(()),
            }
        }
        Err(_) => Err(PyErr::from_value(value.clone())),
    };
    match built {
        Ok(result) => fut.call_method1("set_result", (result,))?,
        Err(e) => fut.call_method1("set_exception", (e.into_value(py),))?,
    };
    Ok(())
}

/// A done-callback that aborts a task when its future was cancelled.
#[pyclass(frozen)]
struct AbortOnCancel(tokio::task::AbortHandle);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

fn get_running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?
    .bind(py)
    .call0()
}

fn completer(py: Python<'_>) -> PyResult<&Bound<'_, PyCFunction>> {
    static COMPLETE: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    Ok(COMPLETE
        .get_or_try_init(py, || -> PyResult<Py<PyCFunction>> {
            Ok(wrap_pyfunction!(complete, py)?.unbind())
        })?
        .bind(py))
}

/// An asyncio future of the caller's running loop, resolved with what `fut` gives.
pub(crate) fn awaitable<'py, F, T>(
    py: Python<'py>,
    cancel: Cancel,
    fut: F,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = get_running_loop(py)?;
    let future = event_loop.call_method0("create_future")?;
    let (target, on_loop) = (future.clone().unbind(), event_loop.unbind());
    let task = runtime()?.spawn(async move {
        let result = fut.await;
        // an exiting interpreter has no one left to give the result to
        with_python(|py| {
            let build: Build = Box::new(move |py| {
                result.and_then(|v| {
                    v.into_pyobject(py)
                        .map(|b| b.into_bound().into_any())
                        .map_err(Into::into)
                })
            });
            let value = match Py::new(py, Unbuilt(Mutex::new(Some(build)))) {
                Ok(unbuilt) => unbuilt.into_any(),
                Err(e) => e.into_value(py).into_any(),
            };
            let handed = completer(py).and_then(|complete| {
                on_loop
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (complete, target.bind(py), value))
            });
            // a loop closed before the result came has no one left to give it to
            drop(handed);
        });
    });
    if cancel == Cancel::Drop {
        future.call_method1("add_done_callback", (AbortOnCancel(task.abort_handle()),))?;
    }
    Ok(future)
}
