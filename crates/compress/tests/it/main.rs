//! Integration tests of persisting-compress, one module per behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod corrupted_frames;
mod round_trip;

use persisting_compress::Codec;
use proptest::prelude::*;

/// Every codec, zstd at a few levels.
pub fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::None),
        Just(Codec::ZSTD),
        (1i32..=19).prop_map(|level| Codec::Zstd { level }),
        Just(Codec::Lz4),
        Just(Codec::Snappy),
    ]
}

/// Inputs weighted toward edges: empty, one byte, incompressible, highly repetitive.
pub fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        1 => any::<u8>().prop_map(|b| vec![b]),
        3 => proptest::collection::vec(any::<u8>(), 0..4096),
        2 => (any::<u8>(), 0usize..70_000).prop_map(|(b, n)| vec![b; n]),
        2 => ("[a-c ]{1,16}", 1usize..500).prop_map(|(s, n)| s.repeat(n).into_bytes()),
    ]
}
