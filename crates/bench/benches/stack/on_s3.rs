//! The rows of a bucket on the S3-compatible server `PERSISTING_TEST_S3` names:
//! ingest and reads against raw Lance and pylance on the same server.

use super::*;

/// Records of the s3 rows.
pub(crate) const S3_ROWS: u64 = 1_000_000;

/// The rows of a bucket on the S3-compatible server `PERSISTING_TEST_S3` names (its
/// endpoint and credentials in `AWS_*`, which pylance reads too; `cargo xtask bench`
/// starts `scripts/s3-server.sh` for them): ingest and random reads against pylance
/// on the same server, and the requests an ingest costs. Skipped without a server.
pub(crate) async fn s3_rows() {
    let Ok(root) = std::env::var("PERSISTING_TEST_S3") else {
        println!("s3 rows skipped: PERSISTING_TEST_S3 is not set (scripts/s3-server.sh)");
        return;
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let base = format!("{}/bench-{ms}", root.trim_end_matches('/'));
    let ours_uri = format!("{base}/bucket_0");
    let n = S3_ROWS.min(rows_big());
    let (ours, stats) = ingest_counted(Path::new(&ours_uri), n).await;
    let py_uri = format!("{base}/py.lance");
    let Some(py) = pylance(&["ingest", &py_uri, &n.to_string()]) else {
        return;
    };
    row(
        "s3",
        &format!(
            "ingest {n} records to s3:// (put_batch 10^4, flushes of 10^5) vs pylance \
             write_dataset append of batches of 10^4 to the same server"
        ),
        ours,
        py,
        "records/s",
        ours / py,
        ">=1.5",
    );
    let calls = stats.store_calls;
    let requests = calls.puts + calls.gets + calls.lists + calls.deletes;
    let commits = n.div_ceil(INGEST_FLUSH);
    row(
        "s3",
        &format!(
            "requests of the {n}-record ingest (puts {}, gets {}, lists {}, deletes {}) \
             vs its {commits} commits",
            calls.puts, calls.gets, calls.lists, calls.deletes
        ),
        requests as f64,
        commits as f64,
        "requests",
        requests as f64 / commits as f64,
        "-",
    );
    let b = LanceBucket::open(Path::new(&ours_uri), LanceOptions::default())
        .await
        .unwrap();
    assert_eq!(b.persisted_count(), n);
    let before = b.stats().store_calls;
    random_reads_seeded(&b, n, WARM_UP_SEED).await;
    let after = b.stats().store_calls;
    println!(
        "s3: {READS} random reads of 100 rows (first pass of a fresh handle): gets {}, lists {}",
        after.gets - before.gets,
        after.lists - before.lists
    );
    let data = format!("{ours_uri}/data.lance");
    if let Some((ours, py)) = random_vs_pylance(&b, &data, n).await {
        row(
            "s3",
            &format!(
                "random read(offset, 100) at {n} rows on s3:// vs pylance \
                 to_table(offset, limit) there, medians of {PY_ROUNDS} alternated rounds"
            ),
            1.0 / ours,
            1.0 / py,
            "reads/s",
            py / ours,
            ">=2",
        );
    }
    let last = b.stats().store_calls;
    println!(
        "s3: then {} random reads (warm): gets {}, lists {}",
        READS as u64 * (PY_ROUNDS + 1),
        last.gets - after.gets,
        last.lists - after.lists
    );
    // what the layer beneath gives: raw Lance's take, and one range GET of the server
    let ours = random_reads_ours(&b, n).await;
    let ds = Dataset::open(&data).await.unwrap();
    let take = random_reads_take(&ds, n).await;
    row(
        "s3",
        &format!(
            "random read(offset, 100) at {n} rows on s3:// vs raw Dataset::take there (reads/s)"
        ),
        1.0 / ours,
        1.0 / take,
        "reads/s",
        take / ours,
        "-",
    );
    let get = range_get_secs(&ds).await;
    row(
        "s3",
        &format!(
            "random read(offset, 100) at {n} rows on s3:// vs one range GET of 8 KiB of a data file \
             there (latency; a read makes ~6 GETs, issued together)"
        ),
        ours * 1e3,
        get * 1e3,
        "ms",
        ours / get,
        "-",
    );
}

/// Mean seconds of one range GET of 8 KiB at a random place of the dataset's largest
/// data file, through Lance's object store (its S3 client), one after another.
pub(crate) async fn range_get_secs(ds: &Dataset) -> f64 {
    use object_store::ObjectStoreExt;
    let store = ds.object_store(None).await.unwrap();
    let frag = &ds.manifest().fragments[0];
    let path = ds.data_dir().join(frag.files[0].path.as_str());
    let size = store.inner.head(&path).await.unwrap().size;
    let offs = offsets(size.saturating_sub(8192).max(101), READS, 5);
    let t = Instant::now();
    for o in offs {
        store.inner.get_range(&path, o..o + 8192).await.unwrap();
    }
    t.elapsed().as_secs_f64() / READS as f64
}
