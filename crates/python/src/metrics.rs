//! The process's one Prometheus recorder, shared by every bucket that enables metrics.
//!
//! Invariant: the first bucket with `enable_metrics` installs it, serving it over HTTP
//! when it gives `metrics_addr`; a later bucket asking for a different address gets an
//! `InvalidOptionError` rather than silently recording elsewhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use persisting::{MetricsEndpoint, MetricsRecorder};
use pyo3::PyResult;

use crate::errors;

/// The recorder of this process.
#[derive(Clone, Debug)]
enum Installed {
    /// Served over HTTP at an address.
    Served(MetricsEndpoint),
    /// Recorded only, read by `get_metrics()`.
    Recorded(MetricsRecorder),
}

static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

/// Makes sure a recorder is installed (serving at `addr` when given).
pub(crate) fn ensure(addr: Option<SocketAddr>) -> PyResult<()> {
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (&*installed, addr) {
        (Some(Installed::Served(e)), Some(a)) if e.addr() != a && a.port() != 0 => {
            Err(errors::invalid(
                "metrics_addr",
                a,
                format!("this process already serves its metrics on {}", e.addr()),
            ))
        }
        (Some(Installed::Recorded(_)), Some(a)) => Err(errors::invalid(
            "metrics_addr",
            a,
            "this process already records metrics without an endpoint (give metrics_addr to the first backend that enables metrics)",
        )),
        (Some(_), _) => Ok(()),
        (None, Some(a)) => {
            *installed = Some(Installed::Served(
                persisting::serve_metrics(a).map_err(errors::storage)?,
            ));
            Ok(())
        }
        (None, None) => {
            *installed = Some(Installed::Recorded(
                persisting::install_metrics_recorder().map_err(errors::storage)?,
            ));
            Ok(())
        }
    }
}

/// The address metrics are served on, if they are.
pub(crate) fn served_on() -> Option<SocketAddr> {
    match &*INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(Installed::Served(e)) => Some(e.addr()),
        _ => None,
    }
}

/// The samples of one bucket (`topic`, `bucket` labels) in the exposition text, by
/// metric name (histogram buckets keep their `le` label: `name{le="0.1"}`).
pub(crate) fn samples(topic: &str, bucket: u64) -> BTreeMap<String, f64> {
    let text = match &*INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(Installed::Served(e)) => e.render(),
        Some(Installed::Recorded(r)) => r.render(),
        None => return BTreeMap::new(),
    };
    let topic_label = format!("topic=\"{}\"", escape(topic));
    let bucket_label = format!("bucket=\"{bucket}\"");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => continue,
        };
        let labels: Vec<&str> = split_labels(labels);
        if !labels.contains(&topic_label.as_str()) || !labels.contains(&bucket_label.as_str()) {
            continue;
        }
        let others: Vec<&str> = labels
            .into_iter()
            .filter(|l| *l != topic_label && *l != bucket_label)
            .collect();
        let key = if others.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", others.join(","))
        };
        out.insert(key, value);
    }
    out
}

/// A label value as the exposition format writes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `a="x",b="y"` split at the commas between labels (not those inside values).
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}
