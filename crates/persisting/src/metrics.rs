//! Metrics of a bucket through the `metrics` facade, and a Prometheus HTTP endpoint.
//!
//! With `enable_metrics`, a [`crate::PersistingBackend`] records, labelled by `topic` and
//! `bucket`:
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `persisting_records_total` | counter | records acknowledged by `put` / `put_batch` |
//! | `persisting_buffer_size` | gauge | records buffered, not yet in a Lance commit |
//! | `persisting_flush_duration_seconds` | histogram | time of each flush (Lance commit, fsync, checkpoint) |
//! | `persisting_flushes_total` | counter | flushes that committed records |
//! | `persisting_wal_size_bytes` | gauge | bytes held in WAL segments |
//! | `persisting_wal_fsyncs_total` | counter | fsyncs of WAL data |
//! | `persisting_wal_fsync_duration_seconds` | histogram | time of each WAL write + fsync |
//! | `persisting_consumer_lag` | gauge (also labelled `group`) | `end - committed` of a consumer group, set at its commits, seeks and listings ([`crate::groups`]) |
//! | `persisting_group_commits_total` | counter (also labelled `group`) | commits and seeks of a consumer group |
//!
//! Invariants: nothing is recorded unless `enable_metrics` is set (the facade's calls
//! are then skipped, not sent to a no-op recorder); values are recorded after the
//! operation they describe succeeded, so `persisting_records_total` never counts a
//! record that was refused.
//!
//! [`serve_metrics`] installs the process-wide Prometheus recorder and serves the
//! exposition text over HTTP on a thread of its own, so it outlives any runtime of the
//! caller.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{Result, StorageError};

/// Histogram bucket bounds (seconds) of the duration metrics: 50 µs to 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    10.0,
];

/// The handles of one bucket's metrics.
#[derive(Clone, Debug)]
pub(crate) struct BucketMetrics {
    records: Counter,
    buffer: Gauge,
    flush_duration: Histogram,
    flushes: Counter,
    wal_size: Gauge,
    trimmed: Counter,
    log_start: Gauge,
}

/// Gives every metric its HELP text and unit (once per process).
fn describe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        describe_counter!(
            "persisting_records_total",
            "Records acknowledged by put and put_batch."
        );
        describe_gauge!(
            "persisting_buffer_size",
            "Records buffered in memory, not yet in a Lance commit."
        );
        describe_histogram!(
            "persisting_flush_duration_seconds",
            Unit::Seconds,
            "Duration of each flush: Lance commit, fsync of its files, WAL checkpoint."
        );
        describe_counter!(
            "persisting_flushes_total",
            "Flushes that committed records to Lance."
        );
        describe_gauge!(
            "persisting_wal_size_bytes",
            Unit::Bytes,
            "Bytes held in WAL segments."
        );
        describe_counter!("persisting_wal_fsyncs_total", "fsyncs of WAL data.");
        describe_counter!(
            "persisting_trimmed_records_total",
            "Records removed by trims (by hand or by the retention policies)."
        );
        describe_gauge!(
            "persisting_log_start_offset",
            "The first offset the bucket holds: records below it were trimmed."
        );
        describe_histogram!(
            "persisting_wal_fsync_duration_seconds",
            Unit::Seconds,
            "Duration of each WAL write and fsync."
        );
    });
}

impl BucketMetrics {
    pub(crate) fn new(topic: &str, bucket_id: u64) -> Self {
        describe();
        let labels = [
            ("topic", topic.to_owned()),
            ("bucket", bucket_id.to_string()),
        ];
        Self {
            records: counter!("persisting_records_total", &labels),
            buffer: gauge!("persisting_buffer_size", &labels),
            flush_duration: histogram!("persisting_flush_duration_seconds", &labels),
            flushes: counter!("persisting_flushes_total", &labels),
            wal_size: gauge!("persisting_wal_size_bytes", &labels),
            trimmed: counter!("persisting_trimmed_records_total", &labels),
            log_start: gauge!("persisting_log_start_offset", &labels),
        }
    }

    /// A callback for the WAL that records each fsync.
    pub(crate) fn fsync_observer(topic: &str, bucket_id: u64) -> persisting_wal::FsyncObserver {
        describe();
        let labels = [
            ("topic", topic.to_owned()),
            ("bucket", bucket_id.to_string()),
        ];
        let count = counter!("persisting_wal_fsyncs_total", &labels);
        let latency = histogram!("persisting_wal_fsync_duration_seconds", &labels);
        persisting_wal::FsyncObserver::new(move |d: Duration| {
            count.increment(1);
            latency.record(d.as_secs_f64());
        })
    }

    pub(crate) fn put(&self, records: u64, buffered: u64, wal_bytes: Option<u64>) {
        self.records.increment(records);
        self.buffer.set(buffered as f64);
        if let Some(bytes) = wal_bytes {
            self.wal_size.set(bytes as f64);
        }
    }

    pub(crate) fn trimmed(&self, records: u64, log_start: u64) {
        self.trimmed.increment(records);
        self.log_start.set(log_start as f64);
    }

    pub(crate) fn flushed(&self, took: Duration, buffered: u64, wal_bytes: Option<u64>) {
        self.flush_duration.record(took.as_secs_f64());
        self.flushes.increment(1);
        self.buffer.set(buffered as f64);
        if let Some(bytes) = wal_bytes {
            self.wal_size.set(bytes as f64);
        }
    }
}

/// A running Prometheus endpoint (see [`serve_metrics`]).
#[derive(Clone, Debug)]
pub struct MetricsEndpoint {
    addr: SocketAddr,
    handle: PrometheusHandle,
}

impl MetricsEndpoint {
    /// The address the endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The exposition text a scrape would return now.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Installs the process-wide `metrics` recorder and serves its Prometheus exposition at
/// `http://{addr}/metrics` (any path answers) from a background thread.
///
/// The address is the caller's choice; bind `127.0.0.1` unless the endpoint must be
/// reachable from other machines. Fails if the address cannot be bound or a recorder is
/// already installed in this process.
///
/// ```no_run
/// let endpoint = persisting::serve_metrics("127.0.0.1:9464".parse().unwrap()).unwrap();
/// println!("scrape http://{}/metrics", endpoint.addr());
/// ```
pub fn serve_metrics(addr: SocketAddr) -> Result<MetricsEndpoint> {
    let failed = |e: &dyn std::fmt::Display| StorageError::Metrics {
        endpoint: addr.to_string(),
        reason: e.to_string(),
    };
    // bind once ourselves first: the exporter binds inside its task, where a failure
    // would only be logged; this also turns port 0 into a free port
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|e| failed(&e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&e))?;
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            &DURATION_BUCKETS,
        )
        .map_err(|e| failed(&e))?;
    let (recorder, exporter) = {
        let _entered = runtime.enter();
        builder.build().map_err(|e| failed(&e))?
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| failed(&e))?;
    std::thread::Builder::new()
        .name("persisting-metrics".to_owned())
        .spawn(move || {
            if let Err(e) = runtime.block_on(exporter) {
                log::error!("the metrics endpoint on {addr} stopped: {e:?}");
            }
        })
        .map_err(|e| failed(&e))?;
    Ok(MetricsEndpoint { addr, handle })
}

/// The process-wide Prometheus recorder installed without an HTTP endpoint (see
/// [`install_metrics_recorder`]): its exposition text is read in-process.
#[derive(Clone, Debug)]
pub struct MetricsRecorder {
    handle: PrometheusHandle,
}

impl MetricsRecorder {
    /// The exposition text a scrape would return now.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Installs the process-wide `metrics` recorder, like [`serve_metrics`] but serving
/// nothing: for programs that read their metrics in-process (the Python package's
/// `get_metrics()`). Fails if a recorder is already installed in this process.
pub fn install_metrics_recorder() -> Result<MetricsRecorder> {
    let failed = |e: &dyn std::fmt::Display| StorageError::Metrics {
        endpoint: "in-process".to_owned(),
        reason: e.to_string(),
    };
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            &DURATION_BUCKETS,
        )
        .map_err(|e| failed(&e))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| failed(&e))?;
    Ok(MetricsRecorder { handle })
}
