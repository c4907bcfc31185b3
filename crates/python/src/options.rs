//! Constructor options from Python values to the facade's option map.
//!
//! Invariant: every option value is checked at construction; a value of a type no
//! option takes raises `InvalidOptionError` naming the option, before anything is
//! opened or created.

use persisting::PersistingOptions;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use serde_json::Value as Json;

use crate::errors;

fn invalid(name: &str, value: &Bound<'_, PyAny>, reason: &str) -> PyErr {
    let shown = value
        .repr()
        .map_or_else(|_| "?".to_owned(), |r| r.to_string());
    errors::invalid(name, shown, reason)
}

/// One option value as JSON: None, bool, int, float or str.
fn json(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Json> {
    if v.is_none() {
        return Ok(Json::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if v.is_instance_of::<PyInt>() {
        return match v.extract::<i64>() {
            Ok(i) => Ok(Json::from(i)),
            Err(_) => Err(invalid(name, v, "is too large")),
        };
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(Json::Number)
            .ok_or_else(|| invalid(name, v, "must be a finite number"));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Json::String(s.to_str()?.to_owned()));
    }
    Err(invalid(name, v, "must be None, a bool, a number or a str"))
}

/// What the Python constructor asked for.
#[derive(Debug)]
pub(crate) struct Asked {
    /// The facade's options.
    pub(crate) opts: PersistingOptions,
    /// `metrics_addr`: where to serve Prometheus metrics, if anywhere.
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// Builds the options from `options`, a dict of known option names (the Python side
/// drops and warns about unknown ones).
pub(crate) fn parse(options: &Bound<'_, PyDict>, topic: String) -> PyResult<Asked> {
    let mut map = serde_json::Map::new();
    let mut metrics_addr = None;
    for (k, v) in options.iter() {
        let name: String = k.extract()?;
        if name == "metrics_addr" {
            if v.is_none() {
                continue;
            }
            let text: String = v
                .extract()
                .map_err(|_| invalid(&name, &v, "must be a str such as \"127.0.0.1:9464\""))?;
            metrics_addr = Some(text.parse().map_err(|_| {
                invalid(&name, &v, "must be an address such as \"127.0.0.1:9464\"")
            })?);
            continue;
        }
        if name == "storage_options" && !v.is_none() {
            let entries = v
                .cast::<PyDict>()
                .map_err(|_| invalid(&name, &v, "must be a dict of option names to str"))?;
            let mut object = serde_json::Map::new();
            for (key, value) in entries.iter() {
                let key: String = key
                    .extract()
                    .map_err(|_| invalid(&name, &v, "must have str keys"))?;
                object.insert(
                    key.clone(),
                    json(&format!("storage_options.{key}"), &value)?,
                );
            }
            map.insert(name, Json::Object(object));
            continue;
        }
        map.insert(name.clone(), json(&name, &v)?);
    }
    let (mut opts, _ignored) = PersistingOptions::from_map(&map).map_err(errors::storage)?;
    opts.metrics_topic = topic;
    Ok(Asked { opts, metrics_addr })
}
