//! `get_arrow`: the acknowledged records of a bucket as Arrow batches, across Lance
//! and the buffer.

use arrow::array::{Array, AsArray};
use persisting::{PersistingBackend, PersistingOptions, StorageBackend, record};

use crate::rt;

#[test]
fn get_arrow_spans_lance_and_the_buffer_and_clips_to_what_is_acknowledged() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = PersistingOptions {
            enable_wal: true,
            ..PersistingOptions::default()
        };
        let b = PersistingBackend::open(0, dir.path(), opts).await.unwrap();
        let rec = |i: i64| record! {"id" => format!("r{i}"), "n" => i};
        b.put_batch((0..5).map(rec).collect()).await.unwrap();
        b.flush().await.unwrap();
        b.put_batch((5..8).map(rec).collect()).await.unwrap();

        let batches = b.get_arrow(2, None).await.unwrap();
        let ids: Vec<String> = batches
            .iter()
            .flat_map(|batch| {
                let col = batch.column_by_name("id").unwrap().as_string::<i32>();
                (0..col.len())
                    .map(|i| col.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids, ["r2", "r3", "r4", "r5", "r6", "r7"]);
        assert!(
            batches
                .iter()
                .all(|batch| batch.schema_ref().fields().len() == 2),
            "record fields only"
        );
        let rows = |batches: Vec<persisting::lance::RecordBatch>| -> usize {
            batches.iter().map(|b| b.num_rows()).sum()
        };
        assert_eq!(rows(b.get_arrow(6, Some(100)).await.unwrap()), 2);
        assert_eq!(rows(b.get_arrow(8, None).await.unwrap()), 0);
        b.close().await.unwrap();
    });
}
