//! Which bucket a record goes to, the way the Python queue picks it:
//! `int(md5(str(value)).hexdigest(), 16) % num_buckets`. MD5 is used for that
//! agreement only, nothing security-related.

use md5::{Digest, Md5};

/// `int(md5(text).hexdigest(), 16) % n`, as Python computes it (`n = 0` counts as 1).
pub fn bucket_of(text: &str, n: u32) -> u32 {
    let digest: [u8; 16] = Md5::digest(text.as_bytes()).into();
    let value = u128::from_be_bytes(digest);
    (value % u128::from(n.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_matches_python() {
        // python3 -c "import hashlib; print(int(hashlib.md5(b'1').hexdigest(), 16) % 4)"
        assert_eq!(
            bucket_of("1", 4),
            (0xc4ca4238a0b923820dcc509a6f75849bu128 % 4) as u32
        );
        assert_eq!(
            bucket_of("abc", 7),
            (0x900150983cd24fb0d6963f7d28e17f72u128 % 7) as u32
        );
        // RFC 1321's longest test vector, whole
        let long = "1234567890".repeat(8);
        assert_eq!(
            bucket_of(&long, u32::MAX),
            (0x57edf4a22be3c955ac49da2e2107b67au128 % u128::from(u32::MAX)) as u32
        );
        assert_eq!(bucket_of("", 0), 0);
    }
}
