//! One change of a consumer group as stored: a fixed 40-byte record, checksummed
//! (`docs/groups-format.md` gives the grammar byte by byte).
//!
//! Invariants: every record is checked (magic, version, CRC-32) right after it is
//! read, and a record that fails is never taken for an offset; generations of one
//! group only grow.

/// Bytes of one record.
pub(crate) const RECORD_BYTES: usize = 40;

/// The first bytes of every record.
const MAGIC: [u8; 4] = *b"PGRP";

/// The format version this crate writes and reads.
const VERSION: u16 = 1;

/// What a record says: the group's committed offset after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// 1 for a group's first change, then one more per change.
    pub(crate) generation: u64,
    /// The committed offset: the next offset the group reads.
    pub(crate) offset: u64,
    /// Random per change: a retried write that finds a record with its own token
    /// finds its own change.
    pub(crate) token: u64,
}

impl Change {
    pub(crate) fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut out = [0u8; RECORD_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        // 6..8 reserved, zero
        out[8..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..24].copy_from_slice(&self.offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.token.to_le_bytes());
        // 32..36 reserved, zero
        let crc = crc32fast::hash(&out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The change `bytes` holds, or why they are not one.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != RECORD_BYTES {
            return Err(format!(
                "{} bytes where a record has {RECORD_BYTES}",
                bytes.len()
            ));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&bytes[36..40]);
        let stored = u32::from_le_bytes(crc);
        let computed = crc32fast::hash(&bytes[..36]);
        if stored != computed {
            return Err(format!(
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        if bytes[0..4] != MAGIC {
            return Err("not a consumer group record (bad magic)".to_owned());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(format!(
                "format version {version}; this build reads version {VERSION}"
            ));
        }
        let generation = u64_at(8);
        if generation == 0 {
            return Err("generation 0 (generations start at 1)".to_owned());
        }
        Ok(Self {
            generation,
            offset: u64_at(16),
            token: u64_at(24),
        })
    }
}

/// A new random token.
pub(crate) fn token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let state = std::collections::hash_map::RandomState::new();
    std::hash::BuildHasher::hash_one(
        &state,
        (
            nanos,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change() -> impl Strategy<Value = Change> {
        (
            prop_oneof![Just(1u64), Just(u64::MAX), 1..u64::MAX],
            prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
            any::<u64>(),
        )
            .prop_map(|(generation, offset, token)| Change {
                generation,
                offset,
                token,
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(c in change()) {
            prop_assert_eq!(Change::decode(&c.encode()), Ok(c));
        }

        #[test]
        fn a_flipped_byte_never_decodes(c in change(), at in 0..RECORD_BYTES, bit in 0u8..8) {
            let mut bytes = c.encode();
            bytes[at] ^= 1 << bit;
            prop_assert!(Change::decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_are_an_error_or_a_checked_record(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(c) = Change::decode(&bytes) {
                prop_assert_eq!(c.encode().to_vec(), bytes);
            }
        }
    }

    #[test]
    fn golden_bytes_of_version_1() {
        let c = Change {
            generation: 2,
            offset: 1000,
            token: 0x0102_0304_0506_0708,
        };
        let bytes = c.encode();
        assert_eq!(&bytes[0..8], b"PGRP\x01\x00\x00\x00");
        assert_eq!(&bytes[8..16], &2u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &1000u64.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]),
            crc32fast::hash(&bytes[..36])
        );
    }
}
