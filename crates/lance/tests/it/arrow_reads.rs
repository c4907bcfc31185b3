//! `read_arrow`: the columnar read of a range, across the dataset and the buffer,
//! checked row by row like `read`.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use persisting_codec::{Value, record};
use proptest::prelude::*;

use crate::{open, rt};

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()))
        .as_ref()
}

#[test]
fn batches_span_dataset_and_buffer_in_field_order_without_internal_columns() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path()).await;
        b.put_batch(vec![
            record! {"id" => "a", "n" => 1},
            record! {"id" => "b", "n" => Value::Null, "m" => Value::Map(record! {"k" => 7})},
            record! {"n" => 2, "id" => "c"},
        ])
        .unwrap();
        b.flush().await.unwrap();
        b.put_batch(vec![record! {"id" => "d", "n" => 4.5, "new" => true}])
            .unwrap();

        let batches = b.read_arrow(1, 10).await.unwrap();
        assert_eq!(
            batches.len(),
            2,
            "one from the dataset, one from the buffer"
        );
        let (stored, buffered) = (&batches[0], &batches[1]);
        assert_eq!(stored.num_rows(), 2);
        let names: Vec<&str> = stored
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["id", "n", "m"], "field order, no internal columns");
        let ids = column(stored, "id").as_string::<i32>();
        assert_eq!((ids.value(0), ids.value(1)), ("b", "c"));
        let n = column(stored, "n").as_primitive::<Int64Type>();
        assert!(n.is_null(0), "an explicit null reads as null");
        assert_eq!(n.value(1), 2);
        let m = column(stored, "m").as_struct();
        assert_eq!(m.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert!(m.is_null(1));

        assert_eq!(buffered.num_rows(), 1);
        assert_eq!(
            buffered
                .schema_ref()
                .field_with_name("n")
                .unwrap()
                .data_type(),
            &DataType::Float64
        );
        assert_eq!(
            column(buffered, "n").as_primitive::<Float64Type>().value(0),
            4.5
        );
        assert!(column(buffered, "new").as_boolean().value(0));

        // clipped like read
        assert!(b.read_arrow(4, 10).await.unwrap().is_empty());
        let rows: usize = b
            .read_arrow(0, 3)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A scalar column of the Arrow view holds what `read` returns for the same rows.
    #[test]
    fn arrow_view_agrees_with_records(
        rows in proptest::collection::vec((any::<i64>(), "\\PC{0,8}", proptest::option::of(any::<bool>())), 1..60),
        start in 0usize..60,
        flush_at in 0usize..60,
    ) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut b = open(dir.path()).await;
            let records: Vec<_> = rows
                .iter()
                .map(|(i, s, ok)| {
                    let mut r = record! {"i" => *i, "s" => s.as_str()};
                    if let Some(ok) = ok {
                        r.insert("ok", *ok);
                    }
                    r
                })
                .collect();
            let cut = flush_at.min(records.len());
            b.put_batch(records[..cut].to_vec()).unwrap();
            b.flush().await.unwrap();
            b.put_batch(records[cut..].to_vec()).unwrap();
            let start = start.min(records.len());
            let want = b.read(start as u64, 100).await.unwrap();
            let batches = b.read_arrow(start as u64, 100).await.unwrap();
            let mut k = 0;
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    let r = &want[k];
                    let i = column(batch, "i").as_primitive::<Int64Type>().value(row);
                    assert_eq!(Some(i), r.get("i").and_then(Value::as_i64));
                    let s = column(batch, "s").as_string::<i32>().value(row);
                    assert_eq!(Some(s), r.get("s").and_then(Value::as_str));
                    let ok = batch
                        .column_by_name("ok")
                        .map(|c| c.as_boolean())
                        .filter(|c| c.is_valid(row))
                        .map(|c| c.value(row));
                    assert_eq!(ok, r.get("ok").and_then(Value::as_bool));
                    k += 1;
                }
            }
            assert_eq!(k, want.len());
        });
    }
}
