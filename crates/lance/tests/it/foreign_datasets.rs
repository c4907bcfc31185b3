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
