//! An append written by several tasks at once, committed as one transaction with its
//! fragments in row order: offsets are as one writer would have made them.

use std::sync::Arc;

use arrow::record_batch::{RecordBatch, RecordBatchIterator};
use lance::Dataset;
use lance::dataset::WriteParams;

/// Appends `batches` to `ds` as one commit whose data files are written by `parts`
/// tasks at once, each taking a run of consecutive rows (Lance writes one stream's
/// files one after another, on about one core): the fragments are committed in row
/// order, so offsets are as one writer would have made them. A part that fails fails
/// the append, after every part has ended; the files the others wrote are in no
/// version (Lance's cleanup removes such files).
pub(crate) async fn append_in_parts(
    mut ds: Dataset,
    batches: Vec<RecordBatch>,
    params: WriteParams,
    parts: usize,
) -> lance::Result<Dataset> {
    use lance::dataset::transaction::{Operation, TransactionBuilder};
    use lance::dataset::{CommitBuilder, InsertBuilder};
    if parts <= 1 {
        ds.append(reader(batches), Some(params)).await?;
        return Ok(ds);
    }
    let base = Arc::new(ds);
    let tasks: Vec<_> = split_rows(batches, parts)
        .into_iter()
        .map(|part| {
            let (base, params) = (Arc::clone(&base), params.clone());
            tokio::spawn(async move {
                InsertBuilder::new(base)
                    .with_params(&params)
                    .execute_uncommitted(part)
                    .await
            })
        })
        .collect();
    let mut fragments = Vec::new();
    let mut failure = None;
    for task in tasks {
        let written = task.await.unwrap_or_else(|e| {
            Err(lance::Error::io(format!(
                "a part of the append stopped: {e}"
            )))
        });
        match written.map(|t| t.operation) {
            Ok(Operation::Append { fragments: f }) => fragments.extend(f),
            Ok(_) => {
                failure.get_or_insert(lance::Error::internal(
                    "a part of the append made another kind of transaction",
                ));
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let transaction =
        TransactionBuilder::new(base.manifest.version, Operation::Append { fragments }).build();
    CommitBuilder::new(base).execute(transaction).await
}

/// `batches` cut into `parts` runs of consecutive rows, as even as the rows allow
/// (a batch is sliced where a run ends inside it); none empty.
pub(crate) fn split_rows(batches: Vec<RecordBatch>, parts: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let parts = parts.clamp(1, total.max(1));
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
    // run `k` takes rows [k * total / parts, (k + 1) * total / parts)
    let end = |k: usize| (k + 1) * total / parts;
    let (mut at, mut k) = (0, 0); // rows placed so far, the run taking row `at`
    for batch in batches {
        let mut from = 0;
        while from < batch.num_rows() {
            while end(k) <= at {
                k += 1;
            }
            let take = (end(k) - at).min(batch.num_rows() - from);
            out[k].push(batch.slice(from, take));
            from += take;
            at += take;
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

pub(crate) fn reader(
    batches: Vec<RecordBatch>,
) -> RecordBatchIterator<
    std::vec::IntoIter<std::result::Result<RecordBatch, arrow::error::ArrowError>>,
> {
    let schema = batches[0].schema();
    RecordBatchIterator::new(
        batches.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
        schema,
    )
}
