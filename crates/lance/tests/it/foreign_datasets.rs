//! Datasets this crate did not write: the layout the Python Persisting package writes
//! (plain int64 / float64 / bool / string columns at `{storage_path}/data.lance`).

use std::sync::Arc;

use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchIterator};
use persisting_codec::{Value, record};

use crate::{open, rt};

#[test]
fn a_python_persisting_dataset_opens_reads_and_accepts_appends() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("value", DataType::Int64, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("1"), Some("2")])),
                Arc::new(Int64Array::from(vec![Some(42), None])),
                Arc::new(Float64Array::from(vec![Some(0.5), Some(1.5)])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
            ],
        )
        .unwrap();
        let uri = dir.path().join("data.lance");
        lance::Dataset::write(
            RecordBatchIterator::new(vec![Ok(batch)].into_iter(), schema),
            uri.to_str().unwrap(),
            None,
        )
        .await
        .unwrap();

        let mut b = open(dir.path()).await;
        assert_eq!(b.persisted_count(), 2);
        assert_eq!(
            b.read(0, 10).await.unwrap(),
            vec![
                record! {"id" => "1", "value" => 42, "score" => 0.5, "ok" => true},
                record! {"id" => "2", "score" => 1.5, "ok" => false},
            ]
        );
        b.put_batch(vec![record! {"id" => "3", "value" => 7, "extra" => "new"}])
            .unwrap();
        b.flush().await.unwrap();
        drop(b);
        let b = open(dir.path()).await;
        assert_eq!(b.persisted_count(), 3);
        assert_eq!(
            b.read(2, 1).await.unwrap(),
            vec![record! {"id" => "3", "value" => 7, "extra" => "new"}]
        );
        assert_eq!(b.read(1, 1).await.unwrap()[0].get("value"), None::<&Value>);
    });
}

/// Rows another tool deleted (a Lance deletion file: the fragment keeps its id and its
/// data files) are skipped by every read of a handle that refreshed, small reads
/// through the fragment readers kept open included.
#[test]
fn rows_another_tool_deleted_are_skipped_after_a_refresh() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = crate::open_without_auto_flush(dir.path()).await;
        for part in 0..3i64 {
            let records = (part * 50..part * 50 + 50)
                .map(|i| record! {"id" => i, "s" => format!("r{i}")})
                .collect();
            writer.append(records).await.unwrap();
            writer.flush().await.unwrap();
        }
        let mut reader = open(dir.path()).await;
        let ids = |records: Vec<persisting_codec::Record>| -> Vec<i64> {
            records.iter().map(|r| r["id"].as_i64().unwrap()).collect()
        };
        assert_eq!(ids(reader.read(50, 5).await.unwrap()), [50, 51, 52, 53, 54]);
        assert_eq!(ids(reader.read(0, 3).await.unwrap()), [0, 1, 2]);

        let uri = dir.path().join("data.lance");
        let mut ds = lance::Dataset::open(uri.to_str().unwrap()).await.unwrap();
        ds.delete("id = 52").await.unwrap();
        reader.refresh().await.unwrap();
        assert_eq!(reader.total_count(), 149);
        assert_eq!(ids(reader.read(50, 5).await.unwrap()), [50, 51, 53, 54, 55]);
        assert_eq!(ids(reader.read(98, 2).await.unwrap()), [99, 100]);
        let all = ids(reader.read(0, 200).await.unwrap());
        assert_eq!(all.len(), 149);
        assert!(!all.contains(&52));
    });
}
