//! Every codec round-trips every input, and the frame header tells the truth.

use persisting_compress::{Compressor, FRAME_HEADER_BYTES, decompress, frame_info};
use proptest::prelude::*;

use crate::{codec, data};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compress_then_decompress_is_identity(codec in codec(), data in data()) {
        let mut c = Compressor::new(codec).unwrap();
        let frame = c.compress(&data).unwrap();
        let (tag_codec, declared) = frame_info(&frame).unwrap();
        prop_assert_eq!(tag_codec.tag(), codec.tag());
        prop_assert_eq!(declared, data.len() as u64);
        prop_assert_eq!(decompress(&frame, data.len() as u64).unwrap(), data.clone());
        // the limit is inclusive and checked: one byte less is refused
        if !data.is_empty() {
            prop_assert!(decompress(&frame, data.len() as u64 - 1).is_err());
        }
        // a reused compressor gives the same frame
        prop_assert_eq!(c.compress(&data).unwrap(), frame);
    }

    #[test]
    fn frames_concatenate_in_one_buffer(codec in codec(), a in data(), b in data()) {
        let mut c = Compressor::new(codec).unwrap();
        let mut out = Vec::new();
        c.compress_into(&a, &mut out).unwrap();
        let first = out.len();
        c.compress_into(&b, &mut out).unwrap();
        prop_assert_eq!(decompress(&out[..first], 1 << 20).unwrap(), a);
        prop_assert_eq!(decompress(&out[first..], 1 << 20).unwrap(), b);
        prop_assert!(first >= FRAME_HEADER_BYTES);
    }
}
