//! The outage rows: an ingest to the S3 server through a relay that hangs for a
//! while in the middle, against the same ingest without.

use super::*;

/// How long the store hangs in the middle of [`outage_rows`]' ingest.
pub(crate) const HANG: Duration = Duration::from_secs(20);

/// One ingest of `n` records to `uri` through `relay` (WAL on, flushes of 10^5),
/// with the store hanging for [`HANG`] from the middle when `hang`. Returns the
/// wall time (to a flush of everything), the records acknowledged while the store
/// hung, and the peak RSS (MiB).
pub(crate) async fn ingest_through(
    relay: &Relay,
    uri: &str,
    wal: &Path,
    n: u64,
    hang: bool,
) -> (f64, u64, f64) {
    let opts = PersistingOptions {
        enable_wal: true,
        flush_threshold: INGEST_FLUSH as usize,
        wal_dir: Some(wal.to_path_buf()),
        storage_options: [("aws_endpoint".to_owned(), relay.endpoint())].into(),
        ..PersistingOptions::default()
    };
    let b = PersistingBackend::open(0, uri, opts).await.unwrap();
    let pool = Pool::new(n);
    settle();
    reset_peak_rss();
    let t = Instant::now();
    // the hang ends by itself: a put blocked at the bound does not prolong it
    let mut hung_until: Option<Instant> = None;
    let mut during = 0;
    let mut refused = 0;
    for start in (0..n).step_by(BATCH as usize) {
        if hang && hung_until.is_none() && start >= n / 2 {
            relay.set_for(Outage::Hang, HANG);
            hung_until = Some(Instant::now() + HANG);
        }
        // a put refused at the bound (`put_timeout` passed before the store took a
        // commit) stored nothing: a producer retries it
        while let Err(e) = b.put_batch(pool.batch(start, n)).await {
            refused += 1;
            println!("put at {start} refused, retried: {e}");
        }
        if hung_until.is_some_and(|until| Instant::now() < until) {
            during += BATCH.min(n - start);
        }
    }
    if let Some(until) = hung_until {
        // every record was acknowledged within the hang: it ends as it would have
        tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    }
    b.flush().await.unwrap();
    let wall = t.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    b.close().await.unwrap();
    println!("ingest through the relay (hang: {hang}): {refused} puts refused and retried");
    (wall, during, peak)
}

/// An ingest to the S3 server with a store hang of [`HANG`] in the middle vs the same
/// without (both through the same relay): what was acknowledged meanwhile, the time,
/// and the memory.
pub(crate) async fn outage_rows(root: &Path) {
    let (Ok(bucket), Ok(endpoint)) = (
        std::env::var("PERSISTING_TEST_S3"),
        std::env::var("AWS_ENDPOINT"),
    ) else {
        println!("outage rows skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return;
    };
    let upstream = endpoint.trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(upstream).unwrap();
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let n = S3_ROWS.min(rows_big());
    let mut runs = Vec::new();
    for hang in [false, true] {
        let uri = format!(
            "{}/bench-outage-{ms}-{hang}/bucket_0",
            bucket.trim_end_matches('/')
        );
        let wal = root.join(format!("outage-wal-{hang}"));
        runs.push(ingest_through(&relay, &uri, &wal, n, hang).await);
    }
    let ((calm, _, calm_rss), (stormy, during, stormy_rss)) = (runs[0], runs[1]);
    println!(
        "ingest of {n} records to s3://: {calm:.1} s; with a {} s hang from the middle {stormy:.1} s, {during} records acknowledged during the hang; peak RSS {calm_rss:.0} / {stormy_rss:.0} MiB",
        HANG.as_secs()
    );
    row(
        "s3",
        &format!(
            "records acknowledged during a {} s store hang in the middle of a {n}-record ingest (WAL on, default bounds) vs the records put after its start",
            HANG.as_secs()
        ),
        during as f64,
        (n - n / 2) as f64,
        "records",
        during as f64 / (n - n / 2) as f64,
        "-",
    );
    row(
        "s3",
        "wall time of that ingest (to a flush of all) vs the same without the hang",
        stormy,
        calm,
        "s",
        stormy / calm,
        "-",
    );
    row(
        "s3",
        "peak RSS of the ingest with the hang vs without",
        stormy_rss,
        calm_rss,
        "MiB",
        stormy_rss / calm_rss,
        "-",
    );
}
