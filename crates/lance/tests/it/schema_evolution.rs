//! Schema evolution at put time: new fields, int-to-float widening, conflicts that
//! refuse a whole batch.

use futures::TryStreamExt;
use persisting_codec::{Record, Value, record};
use persisting_lance::{Error, LanceBucket, LanceOptions};

use crate::{open, rt};

#[test]
fn a_new_field_becomes_a_column_and_older_rows_lack_it() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![record! {"id" => "1"}]).unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![
            record! {"id" => "2", "score" => 0.5, "tags" => vec!["a"]},
        ])
        .unwrap();
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![
                record! {"id" => "1"},
                record! {"id" => "2", "score" => 0.5, "tags" => vec!["a"]}
            ]
        );
    });
}

#[test]
fn an_int_column_that_receives_a_float_widens_in_place_and_keeps_field_order() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"v" => 1, "id" => "a"},
            record! {"v" => 2, "id" => "b"},
        ])
        .unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![record! {"v" => 2.5, "id" => "c"}])
            .unwrap();
        // the buffered int rows are unchanged until they reach Lance
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        let got = b.read(0, 10).await.unwrap();
        assert_eq!(
            got,
            vec![
                record! {"v" => 1.0, "id" => "a"},
                record! {"v" => 2.0, "id" => "b"},
                record! {"v" => 2.5, "id" => "c"},
            ]
        );
        // an int into the float column is fine from now on
        let mut b = b;
        b.put_batch(vec![record! {"v" => 7, "id" => "d"}]).unwrap();
        b.flush().await.unwrap();
        assert_eq!(
            b.read(3, 1).await.unwrap(),
            vec![record! {"v" => 7.0, "id" => "d"}]
        );
    });
}

#[test]
fn a_conflict_refuses_the_whole_batch_and_names_the_field() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![record! {"id" => "1", "n" => 1}]).unwrap();
        b.flush().await.unwrap();
        let err = b
            .put_batch(vec![
                record! {"id" => "2", "fresh" => true},
                record! {"id" => 3},
            ])
            .unwrap_err();
        match &err {
            Error::SchemaConflict {
                field,
                existing,
                found,
            } => {
                assert_eq!(
                    (field.as_str(), existing.as_str(), found.as_str()),
                    ("id", "utf8", "int64")
                );
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("\"id\""), "{err}");
        assert_eq!(b.total_count(), 1, "nothing of the batch was buffered");
        // and the refused batch's new field did not leak into the schema
        b.put_batch(vec![record! {"id" => "2", "fresh" => "text now"}])
            .unwrap();
        b.flush().await.unwrap();
        assert_eq!(
            b.read(1, 1).await.unwrap(),
            vec![record! {"id" => "2", "fresh" => "text now"}]
        );
    });
}

#[test]
fn null_only_fields_get_no_column_until_typed() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"later" => Value::Null, "e" => Value::List(vec![])},
        ])
        .unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![record! {"later" => 5, "e" => vec![1.5f64]}])
            .unwrap();
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![
                record! {"later" => Value::Null, "e" => Value::List(vec![])},
                record! {"later" => 5, "e" => vec![1.5f64]},
            ]
        );
    });
}

fn map(r: persisting_codec::Record) -> Value {
    Value::Map(r)
}

/// The Arrow type of column `name` of the dataset in `dir`.
async fn column_type(dir: &std::path::Path, name: &str) -> arrow::datatypes::DataType {
    let ds = lance::Dataset::open(dir.join("data.lance").to_str().unwrap())
        .await
        .unwrap();
    let schema = arrow::datatypes::Schema::from(ds.schema());
    schema.field_with_name(name).unwrap().data_type().clone()
}

#[test]
fn nested_maps_are_struct_columns_and_read_back_exactly() {
    use arrow::datatypes::DataType;
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        let written = vec![
            record! {"id" => "1", "meta" => map(record! {"user" => "ann", "score" => 1.5, "geo" => map(record! {"lat" => 1.0, "tags" => vec!["x"]})})},
            record! {"id" => "2"},
            record! {"id" => "3", "meta" => Value::Null},
            record! {"id" => "4", "meta" => map(record! {})},
            record! {"id" => "5", "meta" => map(record! {"user" => Value::Null})},
            record! {"id" => "6", "meta" => map(record! {"score" => 2.5, "user" => "bob"})},
            record! {"id" => "7", "meta" => map(record! {"geo" => map(record! {})})},
            record! {"id" => "8", "meta" => map(record! {"a.b" => 1, "" => 2})},
            record! {"id" => "9", "meta" => map(record! {"score" => 3.0})},
        ];
        b.put_batch(written.clone()).unwrap();
        assert_eq!(b.read(0, 100).await.unwrap(), written, "from the buffer");
        b.flush().await.unwrap();
        assert_eq!(b.read(0, 100).await.unwrap(), written, "after the flush");
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(b.read(0, 100).await.unwrap(), written, "after a restart");
        let DataType::Struct(children) = column_type(dir.path(), "meta").await else {
            panic!("meta is not a struct column");
        };
        let names: Vec<&str> = children.iter().map(|c| c.name().as_str()).collect();
        assert_eq!(names, ["user", "score", "geo"], "children in order of first appearance");
        assert!(matches!(children[2].data_type(), DataType::Struct(_)));
    });
}

#[test]
fn a_struct_gains_children_and_widens_a_child_in_place() {
    use arrow::datatypes::DataType;
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![record! {"m" => map(record! {"n" => 1})}])
            .unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![
            record! {"m" => map(record! {"n" => 2, "s" => "new"})},
            record! {"m" => map(record! {"n" => 3, "deep" => map(record! {"k" => true})})},
        ])
        .unwrap();
        b.flush().await.unwrap();
        let DataType::Struct(children) = column_type(dir.path(), "m").await else {
            panic!("m is not a struct column");
        };
        assert_eq!(children.len(), 3, "{children:?}");
        assert_eq!(children[0].data_type(), &DataType::Int64);
        b.put_batch(vec![record! {"m" => map(record! {"n" => 4.5})}])
            .unwrap();
        b.flush().await.unwrap();
        let DataType::Struct(children) = column_type(dir.path(), "m").await else {
            panic!("m is not a struct column");
        };
        assert_eq!(children[0].data_type(), &DataType::Float64, "widened");
        assert_eq!(children.len(), 3, "children kept by the rewrite");
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![
                record! {"m" => map(record! {"n" => 1.0})},
                record! {"m" => map(record! {"n" => 2.0, "s" => "new"})},
                record! {"m" => map(record! {"n" => 3.0, "deep" => map(record! {"k" => true})})},
                record! {"m" => map(record! {"n" => 4.5})},
            ]
        );
    });
}

#[test]
fn a_nested_conflict_names_the_path_and_refuses_the_batch() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"m" => map(record! {"k" => map(record! {"v" => "text"})})},
        ])
        .unwrap();
        let err = b
            .put_batch(vec![
                record! {"m" => map(record! {"fresh" => 1})},
                record! {"m" => map(record! {"k" => map(record! {"v" => 7})})},
            ])
            .unwrap_err();
        match &err {
            Error::SchemaConflict {
                field,
                existing,
                found,
            } => assert_eq!(
                (field.as_str(), existing.as_str(), found.as_str()),
                ("m.k.v", "utf8", "int64")
            ),
            other => panic!("{other}"),
        }
        let err = b.put_batch(vec![record! {"m" => 1}]).unwrap_err();
        assert!(
            err.to_string().contains("struct<k: struct<v: utf8>>"),
            "{err}"
        );
        assert_eq!(b.total_count(), 1);
        b.flush().await.unwrap();
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![record! {"m" => map(record! {"k" => map(record! {"v" => "text"})})}]
        );
    });
}

#[test]
fn fields_added_and_widened_while_background_flushes_run_read_back_exactly() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 7,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open(dir.path(), opts.clone()).await.unwrap();
        let mut want: Vec<Record> = Vec::new();
        let mut read_while_flushing = 0;
        for i in 0..40i64 {
            // from batch 4 on a new field; from batch 8 on, "n" receives floats (its
            // earlier rows, some committed, some in a running flush, widen)
            let batch: Vec<Record> = (0..3)
                .map(|j| {
                    let k = i * 3 + j;
                    let mut r = if i >= 8 {
                        record! {"k" => k, "n" => k as f64 + 0.5}
                    } else {
                        record! {"k" => k, "n" => k}
                    };
                    if i >= 4 {
                        r.insert("late", format!("v{k}"));
                    }
                    r
                })
                .collect();
            want.extend(batch.iter().cloned());
            bucket.append(batch).await.unwrap();
            // buffered records read back as written, committed ones as their column
            // holds them (widened): compare "n" as a number
            let expected: Vec<Record> = want.iter().map(n_as_float).collect();
            read_while_flushing += u32::from(bucket.stats().flushing_count > 0);
            let got: Vec<Record> = bucket.read(0, 1000).await.unwrap();
            assert_eq!(bucket.total_count(), expected.len() as u64);
            assert_eq!(
                got.iter().map(n_as_float).collect::<Vec<_>>(),
                expected,
                "after batch {i}"
            );
        }
        assert!(read_while_flushing > 0, "no read ran beside a flush");
        bucket.flush().await.unwrap();
        assert_eq!(bucket.buffered_count(), 0);
        drop(bucket);
        let bucket = LanceBucket::open(dir.path(), opts).await.unwrap();
        let back = bucket.read(0, 1000).await.unwrap();
        assert_eq!(back.len(), 120);
        for (got, wrote) in back.iter().zip(&want) {
            assert_eq!(got.get("k"), wrote.get("k"));
            assert_eq!(got.get("late"), wrote.get("late"));
            let n = |v: Option<&Value>| match v {
                Some(Value::Int(n)) => *n as f64,
                Some(Value::Float(f)) => *f,
                other => panic!("n is {other:?}"),
            };
            assert_eq!(n(got.get("n")), n(wrote.get("n")));
            assert!(matches!(got.get("n"), Some(Value::Float(_))));
        }
    });
}

fn n_as_float(r: &Record) -> Record {
    let mut r = r.clone();
    if let Some(Value::Int(n)) = r.get("n").cloned() {
        r.insert("n", n as f64);
    }
    r
}

#[test]
fn batches_built_ahead_of_a_flush_follow_fields_added_and_widened_meanwhile() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = LanceOptions {
            flush_threshold: 8192,
            ..LanceOptions::default()
        };
        let mut bucket = LanceBucket::open(dir.path(), opts.clone()).await.unwrap();
        let mut want: Vec<Record> = Vec::new();
        // batches large enough to be converted while a flush runs; a field appears
        // in batch 5 and "n" widens in batch 9, both while batches built for the
        // schema before are waiting
        for i in 0..12i64 {
            let batch: Vec<Record> = (0..4096)
                .map(|j| {
                    let k = i * 4096 + j;
                    let mut r = record! {"k" => k};
                    if i >= 9 && j == 4095 {
                        r.insert("n", k as f64 + 0.5);
                    } else {
                        r.insert("n", k);
                    }
                    if i >= 5 {
                        r.insert("late", format!("v{k}"));
                    }
                    r
                })
                .collect();
            want.extend(batch.iter().cloned());
            bucket.append(batch).await.unwrap();
        }
        bucket.flush().await.unwrap();
        drop(bucket);
        let bucket = LanceBucket::open(dir.path(), opts).await.unwrap();
        let back = bucket.read(0, want.len()).await.unwrap();
        assert_eq!(back.len(), want.len());
        for (got, wrote) in back.iter().zip(&want) {
            assert_eq!(n_as_float(got), n_as_float(wrote));
        }
        // and they read back from their own columns: batches built before the field
        // or the widening were built anew for the columns the commit wrote
        let uri = dir.path().join("data.lance");
        let ds = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        let mut scan = ds.scan();
        scan.project(&["late", "n"]).unwrap();
        let batches: Vec<arrow::record_batch::RecordBatch> = scan
            .try_into_stream()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let late: usize = batches
            .iter()
            .map(|b| b.num_rows() - b.column(0).null_count())
            .sum();
        assert_eq!(late, 7 * 4096, "values of \"late\" in its column");
        assert!(batches.iter().all(|b| b.column(1).data_type()
            == &arrow::datatypes::DataType::Float64
            && b.column(1).null_count() == 0));
    });
}

#[test]
fn an_int_to_float_rewrite_cut_before_its_swap_is_undone_at_open() {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        for k in 0..3i64 {
            b.put_batch(vec![record! {"id" => k, "v" => k}]).unwrap();
            b.flush().await.unwrap();
        }
        drop(b);
        // a crash after the rewrite added its float column and before it replaced `v`
        let uri = dir.path().join("data.lance");
        let mut ds = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        let tmp = Field::new("_persisting_widen:v", DataType::Float64, true);
        ds.add_columns(
            lance::dataset::NewColumnTransform::AllNulls(Arc::new(ArrowSchema::new(vec![tmp]))),
            None,
            None,
        )
        .await
        .unwrap();
        // the open undoes it (a commit of its own, from the version it found)
        let mut b = open(dir.path()).await;
        let back = b.read(0, 10).await.unwrap();
        assert_eq!(
            back,
            (0..3i64)
                .map(|k| record! {"id" => k, "v" => k})
                .collect::<Vec<_>>()
        );
        b.put_batch(vec![record! {"id" => 3, "v" => 3.5}]).unwrap();
        b.flush().await.unwrap();
        let ds = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        assert!(ds.schema().field("_persisting_widen:v").is_none());
        assert_eq!(
            b.read(3, 1).await.unwrap(),
            vec![record! {"id" => 3, "v" => 3.5}]
        );
    });
}
