//! Corrupted frames decode to an error (or, where a codec cannot tell, to the declared
//! length exactly), never a panic and never more than the limit.

use persisting_compress::{Compressor, decompress};
use proptest::prelude::*;

use crate::{codec, data};

const LIMIT: u64 = 1 << 20;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(out) = decompress(&bytes, LIMIT) {
            prop_assert!(out.len() as u64 <= LIMIT);
        }
    }

    #[test]
    fn flipped_or_truncated_frames_never_panic(
        codec in codec(),
        data in data(),
        at in any::<prop::sample::Index>(),
        x in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let frame = Compressor::new(codec).unwrap().compress(&data).unwrap();
        let mut flipped = frame.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= x;
        if let Ok(out) = decompress(&flipped, LIMIT) {
            // a flip the codec cannot detect still yields exactly the declared length
            let declared = u32::from_le_bytes([flipped[1], flipped[2], flipped[3], flipped[4]]);
            prop_assert_eq!(out.len() as u64, u64::from(declared));
        }
        let end = cut.index(frame.len());
        if end < frame.len() && !data.is_empty() {
            prop_assert!(decompress(&frame[..end], LIMIT).is_err());
        }
    }
}
