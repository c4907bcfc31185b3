//! The facade's rows: `PersistingBackend` against the WAL alone and the Lance layer,
//! durable puts, and put-to-reader latency.

use super::*;

pub(crate) fn durable_record(i: u64) -> Record {
    let mut r = Record::with_capacity(3);
    r.insert("id", Value::from(format!("id-{i:012}")));
    r.insert("n", Value::from(i as i64));
    r.insert("text", Value::from(text_of(i)));
    r
}

/// Entries/s of 64 concurrent durable puts (WAL, interval 0) for `secs`.
pub(crate) async fn facade_64(dir: &Path, secs: f64) -> f64 {
    let opts = PersistingOptions {
        enable_wal: true,
        wal_sync_interval: Duration::ZERO,
        flush_threshold: 100_000_000,
        max_wal_size: 1 << 40,
        ..PersistingOptions::default()
    };
    let b = Arc::new(PersistingBackend::open(0, dir, opts).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let (b, stop, count) = (b.clone(), stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w << 32;
            while !stop.load(Ordering::Relaxed) {
                b.put(durable_record(i)).await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / secs
}

/// A WAL in `dir` that fsyncs before each append returns.
pub(crate) fn wal_always(dir: &Path) -> Wal {
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    };
    Wal::open(dir, opts).unwrap().0
}

/// Entries/s of 64 threads appending the same payloads to the WAL alone.
pub(crate) fn wal_64(dir: &Path, secs: f64) -> f64 {
    let payload = codec::encode_record(&durable_record(1));
    let wal = Arc::new(wal_always(dir));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (wal, stop, count, p) = (wal.clone(), stop.clone(), count.clone(), payload.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    wal.append(&p).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    threads.into_iter().for_each(|t| t.join().unwrap());
    count.load(Ordering::Relaxed) as f64 / secs
}

/// Records/s of `put_batch` ingest through a backend or the Lance layer.
pub(crate) async fn ingest_backend(b: &dyn StorageBackend, n: u64) -> f64 {
    // records built beforehand, as for the Lance layer (`ingest_ready`): a put's
    // flush commits in the background, which must not run on in untimed time
    let mut spent = Duration::ZERO;
    for batches in ready_chunks(n) {
        spent += put_chunk(b, batches).await;
    }
    n as f64 / spent.as_secs_f64()
}

/// p99 (and p50) of the time from `put` returning to each of 8 blocked readers
/// receiving the record. The puts are made by a task of the runtime, as application
/// code makes them (`on_main`: by the thread blocked in `Runtime::block_on` instead).
pub(crate) async fn tail_p99_us(dir: &Path, puts: u64, on_main: bool) -> (f64, f64) {
    let b = Arc::new(LanceBackend::open(0, dir, 100, 1_000_000).await.unwrap());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..puts).map(|_| AtomicU64::new(0)).collect());
    let origin = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let b = b.clone();
        readers.push(tokio::spawn(async move {
            let mut received = Vec::with_capacity(puts as usize);
            let mut s = b.get_stream(0, Some(puts as usize), true);
            while let Some(r) = s.next().await {
                r.unwrap();
                received.push(origin.elapsed().as_nanos() as u64);
            }
            received
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writer = {
        let (b, acked) = (b.clone(), acked.clone());
        async move {
            for i in 0..puts {
                b.put(durable_record(i)).await.unwrap();
                acked[i as usize].store(origin.elapsed().as_nanos() as u64, Ordering::Release);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    };
    if on_main {
        writer.await;
    } else {
        tokio::spawn(writer).await.unwrap();
    }
    let mut all = Vec::new();
    for r in readers {
        let received = r.await.unwrap();
        // every put has returned by now: received before put returned is no wait
        all.extend(
            received
                .iter()
                .enumerate()
                .map(|(i, &at)| at.saturating_sub(acked[i].load(Ordering::Acquire))),
        );
    }
    all.sort_unstable();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1e3;
    let over_1ms = all.iter().filter(|&&l| l > 1_000_000).count();
    println!(
        "  latency of {} receipts (puts {}): p90 {:.0} us, p99.9 {:.0} us, max {:.0} us, {over_1ms} over 1 ms",
        all.len(),
        if on_main {
            "on the block_on thread"
        } else {
            "by a runtime task"
        },
        p(0.9),
        p(0.999),
        p(1.0)
    );
    (p(0.99), p(0.5))
}

pub(crate) async fn facade_rows(root: &Path) {
    // latency first, on a settled machine: no writeback of earlier runs' dirty pages,
    // no background work of earlier backends
    settle();
    let (p99, p50) = tail_p99_us(&root.join("tail"), 5000, false).await;
    println!("put-to-reader latency, 8 blocked readers: p50 {p50:.0} us, p99 {p99:.0} us");
    row(
        "facade",
        "put-to-reader p99 with 8 blocked readers vs 1 ms (puts by a runtime task)",
        p99,
        1000.0,
        "us",
        p99 / 1000.0,
        "<=1",
    );
    // the same with the puts made outside the runtime's workers: every put wakes an
    // idle worker thread on another CPU, which a virtual machine can delay
    let (p99, _) = tail_p99_us(&root.join("tail-main"), 5000, true).await;
    row(
        "facade",
        "put-to-reader p99 with 8 blocked readers vs 1 ms (puts by the block_on thread)",
        p99,
        1000.0,
        "us",
        p99 / 1000.0,
        "-",
    );

    let secs = 3.0;
    let facade = facade_64(&root.join("facade64"), secs).await;
    let wal = tokio::task::spawn_blocking({
        let d = root.join("wal64");
        move || wal_64(&d, secs)
    })
    .await
    .unwrap();
    row(
        "facade",
        "PersistingBackend, WAL, interval 0, 64 concurrent puts vs the WAL alone, Always, 64 writers",
        facade,
        wal,
        "entries/s",
        facade / wal,
        ">=0.5",
    );

    let n = rows_big().min(1_000_000);
    // alternated, best of two each: neither side runs only on a machine still
    // writing back the other's data
    let (mut backend, mut layer) = (0.0f64, 0.0f64);
    for round in 0..2 {
        let lb = LanceBackend::open(
            0,
            root.join(format!("lance-backend-{round}")),
            100,
            INGEST_FLUSH as usize,
        )
        .await
        .unwrap();
        settle();
        backend = backend.max(ingest_backend(&lb, n).await);
        settle();
        layer = layer.max(ingest_ready(&root.join(format!("lance-layer-{round}")), n).await);
    }
    row(
        "facade",
        &format!("LanceBackend put_batch ingest vs persisting-lance ({n} records)"),
        backend,
        layer,
        "records/s",
        backend / layer,
        ">=0.9",
    );

    // the facade's flush owner: puts never wait for a commit, and the next commit
    // takes everything buffered meanwhile (commits grow under load)
    let n = rows_big();
    let b = LanceBackend::open(0, root.join("grouped"), 100, INGEST_FLUSH as usize)
        .await
        .unwrap();
    settle();
    let (ours, raw) = paired_with_raw(&root.join("grouped-raw"), n, Raw::Bare, async |batches| {
        put_chunk(&b, batches).await
    })
    .await;
    let flushes = b.stats().await.unwrap().flush_count;
    println!("facade ingest of {n} records: {flushes} commits");
    row(
        "facade",
        &format!(
            "ingest {n} records through LanceBackend, put_batch 10^4, flush_threshold 10^5 \
             (commits grow under load; {flushes} commits), vs raw Dataset::append of Arrow \
             batches of 10^5"
        ),
        ours,
        raw,
        "records/s",
        ours / raw,
        ">=0.8",
    );
}
