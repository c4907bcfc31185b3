//! Integration tests of persisting-codec, one module per behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod golden;
mod round_trip;
mod strategies;
mod untrusted_bytes;
