//! Arbitrary and mutated bytes decode to an error, never a panic or a huge allocation.

use persisting_codec::{
    Limits, decode_batch_with, decode_record_with, encode_batch, encode_record,
};
use proptest::prelude::*;

use crate::strategies::record;

fn tight() -> Limits {
    Limits {
        input_bytes_max: 1 << 16,
        nesting_depth_max: 16,
        string_bytes_max: 1 << 12,
        collection_len_max: 1 << 12,
        batch_records_max: 1 << 10,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_record_with(&bytes, &tight());
        let _ = decode_batch_with(&bytes, &tight());
    }

    #[test]
    fn mutated_records_never_panic(
        r in record(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_record(&r);
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        let _ = decode_record_with(&bytes, &tight());
        let end = cut.index(bytes.len() + 1);
        let truncated = &encode_record(&r)[..end];
        if end < encode_record(&r).len() {
            prop_assert!(decode_record_with(truncated, &Limits::default()).is_err());
        }
    }

    #[test]
    fn mutated_batches_never_panic(
        batch in proptest::collection::vec(record(), 1..4),
        at in any::<prop::sample::Index>(),
        x in 1u8..,
    ) {
        let mut bytes = encode_batch(&batch);
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let _ = decode_batch_with(&bytes, &tight());
    }
}

#[test]
fn input_over_the_limit_is_refused_up_front() {
    let bytes = vec![0u8; (1 << 16) + 1];
    let err = decode_record_with(&bytes, &tight()).unwrap_err();
    assert!(err.to_string().contains("input_bytes_max"), "{err}");
}
