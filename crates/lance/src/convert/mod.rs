//! Records to Arrow record batches and back.
//!
//! Invariants: a batch built here has exactly the dataset's columns, in the dataset's
//! order; a row whose typed columns cannot reproduce its record exactly carries the
//! record's codec encoding in the layout column, and reading prefers that encoding, so
//! every record reads back equal to the one written (up to int-to-float widening).
//! Every row written here carries a checksum of its record ([`row_checksum`]); a row
//! read back whose values do not match it is refused, never returned.

mod checksum;
mod from_arrow;
mod text;
mod to_arrow;

pub use checksum::row_checksum;
pub use from_arrow::Cell;
pub(crate) use from_arrow::{
    Columns, IntoRecords, Strings, from_batch, record_columns, verify_rows,
};
pub use text::{TEXT_BLOCK_BYTES, TEXT_BLOCK_ROWS};
pub(crate) use to_arrow::{to_batch, to_batches};
