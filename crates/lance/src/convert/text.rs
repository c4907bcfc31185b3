//! Text blocks: strings read from a string column share one allocation per block
//! of rows (at most [`TEXT_BLOCK_ROWS`] rows, [`TEXT_BLOCK_BYTES`] unless a row is longer).

use std::sync::Arc;

use arrow::array::Array;
use persisting_codec::Str;

/// Rows of text a block holds at most (see [`TextBlocks`]).
pub const TEXT_BLOCK_ROWS: usize = 64;
/// Bytes of text a block holds at most, unless one row's text alone is longer.
pub const TEXT_BLOCK_BYTES: usize = 16 << 10;

/// The text of a batch's string columns, copied out of the batch in blocks: each
/// block holds the text of up to [`TEXT_BLOCK_ROWS`] consecutive rows of one column
/// (at most [`TEXT_BLOCK_BYTES`], or one row's text when that is longer), in one
/// shared `String`, and the strings of those rows are ranges of it ([`Str::in_block`]).
/// Reading so allocates once per block instead of once per string, and a record kept
/// on its own keeps at most its blocks alive, never the batch.
pub(crate) struct TextBlocks {
    blocks: Vec<Option<TextBlock>>,
}

pub(crate) struct TextBlock {
    rows: std::ops::Range<usize>,
    /// Offset in the column's value data where the block's text starts.
    base: usize,
    text: Arc<String>,
}

impl TextBlocks {
    pub(crate) fn new(columns: usize) -> Self {
        Self {
            blocks: (0..columns).map(|_| None).collect(),
        }
    }

    /// The text of row `row` (not null) of string column `i`, `a`.
    pub(crate) fn text(&mut self, i: usize, a: &arrow::array::StringArray, row: usize) -> Str {
        let offsets = a.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let slot = &mut self.blocks[i];
        if !slot.as_ref().is_some_and(|b| b.rows.contains(&row)) {
            *slot = TextBlock::starting_at(a, row);
        }
        slot.as_ref()
            .and_then(|b| {
                Str::in_block(
                    &b.text,
                    start.checked_sub(b.base)?..end.checked_sub(b.base)?,
                )
            })
            // a block that could not be made: the row's text on its own
            .unwrap_or_else(|| Str::from(a.value(row)))
    }
}

impl TextBlock {
    /// The block of rows from `row` on; `None` when their text is not one valid
    /// string (text of null rows may be anything), so rows are copied one by one.
    pub(crate) fn starting_at(a: &arrow::array::StringArray, row: usize) -> Option<Self> {
        let offsets = a.value_offsets();
        let base = offsets[row] as usize;
        let last = (row + TEXT_BLOCK_ROWS).min(a.len());
        let mut end_row = row + 1;
        while end_row < last
            && (offsets[end_row + 1] as usize).saturating_sub(base) <= TEXT_BLOCK_BYTES
        {
            end_row += 1;
        }
        let bytes = a.value_data().get(base..offsets[end_row] as usize)?;
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Self {
            rows: row..end_row,
            base,
            text: Arc::new(text.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
    use arrow::record_batch::RecordBatch;
    use persisting_codec::{DistinctNames, Record, Value};

    use crate::convert::from_arrow::Columns;
    use arrow::array::StringArray;

    /// Reads every row of `a` through one `TextBlocks`, checking each text against
    /// the array and each block against its bounds; returns the distinct blocks.
    fn read_all(a: &StringArray) -> Vec<Arc<String>> {
        let mut blocks = TextBlocks::new(1);
        let mut seen: Vec<Arc<String>> = Vec::new();
        for row in 0..a.len() {
            if !a.is_valid(row) {
                continue;
            }
            let text = blocks.text(0, a, row);
            assert_eq!(&*text, a.value(row), "row {row}");
            assert!(text.is_shared(), "row {row}");
            let block = blocks.blocks[0].as_ref().unwrap();
            assert!(block.rows.contains(&row));
            assert!(block.rows.len() <= TEXT_BLOCK_ROWS);
            assert!(block.rows.len() == 1 || block.text.len() <= TEXT_BLOCK_BYTES);
            if !seen.iter().any(|b| Arc::ptr_eq(b, &block.text)) {
                seen.push(Arc::clone(&block.text));
            }
        }
        seen
    }

    #[test]
    fn text_blocks_give_every_row_its_text_and_stay_within_their_bounds() {
        let rows: Vec<Option<String>> = (0..300)
            .map(|i| match i % 7 {
                0 => None,
                1 => Some(String::new()),
                2 => Some(format!("é{i}ü")),
                // longer than a block on its own
                3 if i % 50 == 3 => Some("x".repeat(TEXT_BLOCK_BYTES + i)),
                _ => Some(format!("row {i} ").repeat(i % 40)),
            })
            .collect();
        let a = StringArray::from(rows);
        let blocks = read_all(&a);
        assert!(blocks.len() < a.len() / 4, "{} blocks", blocks.len());
        // an array sliced from the middle: offsets do not start at zero
        let sliced = a.slice(101, 150);
        read_all(sliced.as_any().downcast_ref().unwrap());
    }

    #[test]
    fn copied_text_reuses_the_slot_and_shares_nothing() {
        let a = StringArray::from(vec!["first", "second"]);
        let names = DistinctNames::new(vec![Arc::from("s")]).unwrap();
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "s",
            DataType::Utf8,
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(a)]).unwrap();
        let cols = Columns::of(&batch, &["s".to_owned()]).unwrap();
        let mut record = Record::new();
        names
            .refill(&mut record, |i, slot| cols.fill(i, 0, 0, slot, None))
            .unwrap();
        let before = record["s"].as_str().unwrap().as_ptr();
        names
            .refill(&mut record, |i, slot| cols.fill(i, 1, 1, slot, None))
            .unwrap();
        assert_eq!(record["s"], Value::from("second"));
        assert!(matches!(&record["s"], Value::String(s) if !s.is_shared()));
        assert_eq!(record["s"].as_str().unwrap().as_ptr(), before);
        let mut share = TextBlocks::new(1);
        names
            .refill(&mut record, |i, slot| {
                cols.fill(i, 0, 0, slot, Some(&mut share))
            })
            .unwrap();
        assert!(matches!(&record["s"], Value::String(s) if s.is_shared() && *s == "first"));
    }
}
