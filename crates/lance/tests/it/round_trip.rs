//! A record read back equals the record written: from the buffer, after a flush, and
//! after a restart.

use persisting_codec::{Record, Value, record};
use persisting_lance::{Error, LanceBucket, LanceOptions};
use proptest::prelude::*;

use crate::{open, open_without_auto_flush, rt};

fn value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(-0.0),
            Just(f64::INFINITY)
        ]
        .prop_map(Value::Float),
        "\\PC{0,12}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
    ];
    let map = |inner: BoxedStrategy<Value>| {
        // keys include ones a struct child cannot carry ("" and dotted)
        proptest::collection::vec(
            (
                prop_oneof![8 => "[a-c]", 1 => Just(String::new()), 1 => Just("a.b".to_owned())],
                inner,
            ),
            0..3,
        )
        .prop_map(|f| Value::Map(f.into_iter().collect()))
    };
    let nested = prop_oneof![
        3 => scalar.clone(),
        1 => proptest::collection::vec(any::<i32>().prop_map(i64::from), 0..3).prop_map(Value::from),
        1 => map(scalar.clone().boxed()),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => proptest::collection::vec(any::<f64>(), 0..6).prop_map(Value::from),
        1 => proptest::collection::vec(scalar.clone(), 0..4).prop_map(Value::List),
        2 => map(nested.boxed()),
    ]
}

/// Records over a small set of field names, so that fields recur (and sometimes
/// conflict) across records.
fn record() -> impl Strategy<Value = Record> {
    proptest::collection::vec((prop_oneof!["id", "v", "x", "y", "名前"], value()), 0..5)
        .prop_map(|f| f.into_iter().collect())
}

/// Equality up to the documented widening: an int may read back as a float.
fn same(written: &Record, read: &Record) -> bool {
    fn v(w: &Value, r: &Value) -> bool {
        match (w, r) {
            (Value::Int(i), Value::Float(f)) => (*i as f64).to_bits() == f.to_bits(),
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| v(x, y))
            }
            (Value::Map(a), Value::Map(b)) => same(a, b),
            (w, r) => w == r,
        }
    }
    written.len() == read.len()
        && written
            .iter()
            .zip(read.iter())
            .all(|((n1, v1), (n2, v2))| n1 == n2 && v(v1, v2))
}

fn check(expected: &[Record], got: &[Record], when: &str) {
    assert_eq!(expected.len(), got.len(), "{when}: count");
    for (i, (w, r)) in expected.iter().zip(got).enumerate() {
        assert!(
            same(w, r),
            "{when}: offset {i}\nwritten {w:?}\nread    {r:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn records_round_trip_through_buffer_flush_and_restart(
        batches in proptest::collection::vec(proptest::collection::vec(record(), 1..6), 1..5)
    ) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut bucket = open(dir.path()).await;
            let mut accepted: Vec<Record> = Vec::new();
            for batch in batches {
                let before = bucket.total_count();
                match bucket.put_batch(batch.clone()) {
                    Ok(range) => {
                        assert_eq!(range.start, before);
                        accepted.extend(batch);
                    }
                    Err(Error::SchemaConflict { .. }) => {
                        assert_eq!(bucket.total_count(), before, "a refused batch buffers nothing");
                    }
                    Err(e) => panic!("{e}"),
                }
                check(&accepted, &bucket.read(0, usize::MAX).await.unwrap(), "buffer");
                bucket.flush().await.unwrap();
                check(&accepted, &bucket.read(0, usize::MAX).await.unwrap(), "after flush");
            }
            drop(bucket);
            let bucket = open(dir.path()).await;
            assert_eq!(bucket.persisted_count(), accepted.len() as u64);
            check(&accepted, &bucket.read(0, usize::MAX).await.unwrap(), "after restart");
        });
    }
}

#[test]
fn reads_span_dataset_and_buffer_and_clip() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut bucket = open(dir.path()).await;
        let rec = |i: i64| record! {"id" => format!("r{i}"), "n" => i};
        bucket.put_batch((0..10).map(rec).collect()).unwrap();
        bucket.flush().await.unwrap();
        bucket.put_batch((10..15).map(rec).collect()).unwrap();
        assert_eq!((bucket.persisted_count(), bucket.buffered_count()), (10, 5));
        let got = bucket.read(8, 4).await.unwrap();
        assert_eq!(got, (8..12).map(rec).collect::<Vec<_>>());
        assert_eq!(
            bucket.read(13, 100).await.unwrap(),
            (13..15).map(rec).collect::<Vec<_>>()
        );
        assert!(bucket.read(15, 10).await.unwrap().is_empty());
        assert!(bucket.read(99, 10).await.unwrap().is_empty());
    });
}

#[test]
fn explicit_nulls_absent_fields_and_field_order_survive() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut bucket = open(dir.path()).await;
        let records = vec![
            record! {"a" => 1, "b" => "x"},
            record! {"b" => "y", "a" => 2},
            record! {"a" => Value::Null},
            record! {"c" => Value::List(vec![])},
            record! {},
            record! {"nested" => record! {"z" => 1, "a" => Value::Null}},
        ];
        bucket.put_batch(records.clone()).unwrap();
        bucket.flush().await.unwrap();
        drop(bucket);
        let bucket = open(dir.path()).await;
        assert_eq!(bucket.read(0, 100).await.unwrap(), records);
    });
}

#[test]
fn automatic_flush_at_threshold() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 5,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open(dir.path(), opts).await.unwrap();
        bucket
            .append((0..4).map(|i| record! {"i" => i}).collect())
            .await
            .unwrap();
        assert_eq!(bucket.persisted_count(), 0);
        // the flush this append starts runs on in the background: meanwhile every
        // record is read back once, from the buffer or from Lance
        bucket.append(vec![record! {"i" => 4}]).await.unwrap();
        let all: Vec<_> = (0..5).map(|i| record! {"i" => i}).collect();
        assert_eq!(bucket.total_count(), 5);
        assert_eq!(bucket.read(0, 10).await.unwrap(), all);
        // flush waits for it and reports what it made durable
        let report = bucket.flush().await.unwrap();
        assert_eq!((report.records, report.persisted_count), (5, 5));
        assert_eq!((bucket.persisted_count(), bucket.buffered_count()), (5, 0));
        assert_eq!(bucket.stats().flushes, 1);
        assert_eq!(bucket.read(0, 10).await.unwrap(), all);
    });
}

#[test]
fn an_append_that_cannot_flush_buffers_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 3,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open(dir.path(), opts).await.unwrap();
        bucket
            .append(vec![record! {"i" => 0}, record! {"i" => 1}])
            .await
            .unwrap();
        // the dataset's place is taken by a file: every flush fails
        std::fs::write(dir.path().join("data.lance"), b"not a dataset").unwrap();
        // this batch is buffered, then its flush fails: still Ok (it was taken)
        assert_eq!(bucket.append(vec![record! {"i" => 2}]).await.unwrap(), 2..3);
        assert_eq!(bucket.persisted_count(), 0);
        // a flush waits for the one the append started, and reports its failure
        let err = bucket.flush().await.unwrap_err();
        assert!(err.to_string().contains("data.lance"), "{err}");
        assert_eq!(bucket.total_count(), 3, "a failed flush keeps every record");
        // the next append makes the due flush first: its failure refuses the batch
        let err = bucket.append(vec![record! {"i" => 3}]).await.unwrap_err();
        assert!(err.to_string().contains("data.lance"), "{err}");
        assert_eq!(bucket.total_count(), 3, "the refused batch is not buffered");
        std::fs::remove_file(dir.path().join("data.lance")).unwrap();
        bucket.append(vec![record! {"i" => 3}]).await.unwrap();
        bucket.flush().await.unwrap();
        let all: Vec<_> = (0..4).map(|i| record! {"i" => i}).collect();
        assert_eq!(bucket.read(0, 10).await.unwrap(), all);
    });
}

#[test]
fn a_second_handle_reads_committed_records_and_refreshes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = open(dir.path()).await;
        writer.put_batch(vec![record! {"k" => 1}]).unwrap();
        writer.flush().await.unwrap();
        let mut reader = open(dir.path()).await;
        assert_eq!(reader.read(0, 10).await.unwrap(), vec![record! {"k" => 1}]);
        writer
            .put_batch(vec![record! {"k" => 2, "new" => true}])
            .unwrap();
        writer.flush().await.unwrap();
        assert_eq!(reader.total_count(), 1);
        reader.refresh().await.unwrap();
        assert_eq!(
            reader.read(0, 10).await.unwrap(),
            vec![record! {"k" => 1}, record! {"k" => 2, "new" => true}]
        );
    });
}

#[test]
fn a_large_flush_keeps_every_offset_and_checksum() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut bucket = open_without_auto_flush(dir.path()).await;
        let n = 70_000i64;
        let records: Vec<Record> = (0..n)
            .map(|i| {
                if i % 1000 == 7 {
                    record! {"s" => format!("odd {i}"), "i" => i} // an unusual field order
                } else {
                    record! {"i" => i, "s" => format!("s{i}")}
                }
            })
            .collect();
        bucket.put_batch(records.clone()).unwrap();
        bucket.flush().await.unwrap();
        drop(bucket);
        let bucket = open(dir.path()).await;
        assert_eq!(bucket.persisted_count(), n as u64);
        // every row is checked against its checksum on the way
        let mut seen = 0i64;
        for batch in bucket.read_arrow(0, n as usize).await.unwrap() {
            use arrow::array::AsArray;
            let col = batch
                .column_by_name("i")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>();
            for v in col.iter() {
                assert_eq!(v, Some(seen));
                seen += 1;
            }
        }
        assert_eq!(seen, n);
        for at in [0, 7, 34_999, 35_000, 35_007, 69_999] {
            assert_eq!(
                bucket.read(at, 1).await.unwrap(),
                vec![records[at as usize].clone()]
            );
        }
    });
}

/// A flush into an existing dataset of at least twice `target_rows_per_fragment / 32`
/// records is written in parts at once, one per core, each a fragment of consecutive
/// rows committed in row order: every offset reads its own record, from either side of
/// a part boundary, after the flush and after a restart, and the version count is one
/// commit per flush.
#[test]
fn a_flush_written_in_parts_keeps_every_offset() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 0,
            target_rows_per_fragment: 32 * 1000, // parts of at least 1000 rows
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open(dir.path(), opts.clone()).await.unwrap();
        let record = |i: i64| record! {"i" => i, "s" => format!("s{i}")};
        bucket.put_batch((0..10).map(record).collect()).unwrap();
        bucket.flush().await.unwrap(); // creates the dataset: one fragment
        let before = bucket.stats();
        let n = 10_000i64;
        bucket
            .put_batch((10..10 + n).map(record).collect())
            .unwrap();
        bucket.flush().await.unwrap();
        let after = bucket.stats();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(after.fragments - before.fragments, cores.min(10));
        assert_eq!(after.version, before.version + 1, "one commit");
        let all: Vec<Record> = (0..10 + n).map(record).collect();
        check(
            &all,
            &bucket.read(0, usize::MAX).await.unwrap(),
            "after flush",
        );
        drop(bucket);
        let bucket = LanceBucket::open(dir.path(), opts).await.unwrap();
        assert_eq!(bucket.persisted_count(), (10 + n) as u64);
        check(
            &all,
            &bucket.read(0, usize::MAX).await.unwrap(),
            "after restart",
        );
        for at in [0, 9, 10, 11, 5_009, 5_010, 5_011, 10 + n - 1] {
            assert_eq!(
                bucket.read(at as u64, 2).await.unwrap(),
                all[at as usize..(at as usize + 2).min(all.len())].to_vec(),
                "offset {at}"
            );
        }
    });
}

/// A flush of this size converts its records in parts, on as many threads as the
/// machine has cores: every kind of record reads back equal on both sides of every
/// part boundary (absent fields, explicit nulls, lists, maps, records in another field
/// order, and a field that first appears late in the buffer).
#[test]
fn a_flush_converted_in_parts_reads_back_every_kind_of_record() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut bucket = open_without_auto_flush(dir.path()).await;
        let n = 50_000i64;
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut r = Record::new();
                if i % 97 == 3 {
                    r.insert("s", format!("first {i}")); // another field order
                }
                if i % 5 != 0 {
                    r.insert("i", i);
                }
                r.insert("f", i as f64 * 0.5);
                if i % 7 == 0 {
                    r.insert("s", Value::Null);
                } else if !r.contains_key("s") {
                    r.insert("s", format!("s{i}"));
                }
                if i % 3 == 0 {
                    r.insert("l", vec![i as f64, 1.0, 2.0]);
                }
                if i % 11 == 0 {
                    r.insert("m", record! {"a" => i, "b" => format!("b{i}")});
                }
                if i >= 30_000 && i % 2 == 0 {
                    r.insert("late", format!("late {i}"));
                }
                r
            })
            .collect();
        bucket.put_batch(records.clone()).unwrap();
        bucket.flush().await.unwrap();
        check(
            &records,
            &bucket.read(0, usize::MAX).await.unwrap(),
            "after flush",
        );
        drop(bucket);
        let bucket = open(dir.path()).await;
        check(
            &records,
            &bucket.read(0, usize::MAX).await.unwrap(),
            "after restart",
        );
    });
}
