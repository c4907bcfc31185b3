//! The [`Codec`] choice and its parsing from user option strings.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Default zstd level: fast, with most of the ratio of higher levels on record data.
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// Stored as is.
    #[default]
    None,
    /// Zstandard at a level from 1 to 22.
    Zstd {
        /// Compression level.
        level: i32,
    },
    /// LZ4 block format (lz4_flex).
    Lz4,
    /// Snappy raw format.
    Snappy,
}

impl Codec {
    /// zstd at [`ZSTD_LEVEL_DEFAULT`].
    pub const ZSTD: Codec = Codec::Zstd {
        level: ZSTD_LEVEL_DEFAULT,
    };

    /// The codec's name as users write it: `none`, `zstd`, `lz4`, `snappy`.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd { .. } => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Snappy => "snappy",
        }
    }

    /// The tag that identifies the codec in a frame header.
    pub fn tag(&self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Zstd { .. } => 1,
            Codec::Lz4 => 2,
            Codec::Snappy => 3,
        }
    }

    /// A zstd codec with a checked level.
    pub fn zstd(level: i32) -> Result<Codec> {
        if (1..=22).contains(&level) {
            Ok(Codec::Zstd { level })
        } else {
            Err(Error::InvalidLevel { level })
        }
    }

    /// Parses an optional option value: `None` (the option unset) means no compression.
    pub fn from_option(value: Option<&str>) -> Result<Codec> {
        value.map_or(Ok(Codec::None), str::parse)
    }
}

impl FromStr for Codec {
    type Err = Error;

    /// Parses `none`, `zstd`, `zstd:<level>`, `lz4`, `snappy` (case-insensitive,
    /// surrounding spaces ignored).
    ///
    /// ```
    /// use persisting_compress::Codec;
    /// assert_eq!("ZSTD".parse::<Codec>().unwrap(), Codec::ZSTD);
    /// assert_eq!("zstd:9".parse::<Codec>().unwrap(), Codec::Zstd { level: 9 });
    /// assert!("gzip".parse::<Codec>().unwrap_err().to_string().contains("lz4"));
    /// ```
    fn from_str(s: &str) -> Result<Codec> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "none" | "" => Ok(Codec::None),
            "zstd" => Ok(Codec::ZSTD),
            "lz4" => Ok(Codec::Lz4),
            "snappy" => Ok(Codec::Snappy),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) => Codec::zstd(level),
                _ => Err(Error::UnknownCodec { name: s.to_owned() }),
            },
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::Zstd { level } if *level != ZSTD_LEVEL_DEFAULT => write!(f, "zstd:{level}"),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_name_case_insensitively() {
        for (s, c) in [
            ("none", Codec::None),
            ("Zstd", Codec::ZSTD),
            (" lz4 ", Codec::Lz4),
            ("SNAPPY", Codec::Snappy),
            ("zstd:1", Codec::Zstd { level: 1 }),
        ] {
            assert_eq!(s.parse::<Codec>().unwrap(), c);
            assert_eq!(c.to_string().parse::<Codec>().unwrap(), c);
        }
    }

    #[test]
    fn bad_names_and_levels_say_what_is_valid() {
        let err = "gzip".parse::<Codec>().unwrap_err();
        assert_eq!(
            err,
            Error::UnknownCodec {
                name: "gzip".into()
            }
        );
        assert!(err.to_string().contains("none, zstd"));
        assert_eq!(
            "zstd:23".parse::<Codec>().unwrap_err(),
            Error::InvalidLevel { level: 23 }
        );
        assert!(matches!(
            "zstd:x".parse::<Codec>(),
            Err(Error::UnknownCodec { .. })
        ));
    }
}
