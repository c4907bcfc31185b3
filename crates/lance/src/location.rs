//! Where a bucket's data is: a directory of the local file system, or a prefix of an
//! object store. Storage paths arrive as text (`impl AsRef<Path>`, Python `str`);
//! [`Location::of`] decides once, where a path enters, and the rest of the code asks
//! the value, never the text again.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use crate::error::{Error, Result};

/// A bucket's (or a topic's) storage location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory (a path, or a `file://` URI).
    Local(PathBuf),
    /// An object-store prefix (`s3://…`, `shared-memory://…`,
    /// `file-object-store://…`): no local directory of its own.
    Remote(Url),
}

impl Location {
    /// The location `path` names: an object store when it is a URI with a scheme
    /// other than `file`; a `file://` URI is its local path; anything else is a
    /// local path. A URI that does not parse is an error naming it.
    pub fn of(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let Some(text) = path.to_str().filter(|t| t.contains("://")) else {
            return Ok(Self::Local(path.to_path_buf()));
        };
        let invalid = |reason: String| Error::InvalidOption {
            name: "storage_path",
            value: text.to_owned(),
            reason,
        };
        let url = Url::parse(text).map_err(|e| invalid(format!("is not a valid URI: {e}")))?;
        if url.scheme() == "file" {
            return url
                .to_file_path()
                .map(Self::Local)
                .map_err(|()| invalid("is not a local path".to_owned()));
        }
        Ok(Self::Remote(url))
    }

    /// Whether the data is in an object store.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Remote(_))
    }

    /// The local directory, if the data is local.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Self::Local(p) => Some(p),
            Self::Remote(_) => None,
        }
    }

    /// The location of `name` inside this one (a bucket's directory in a topic's).
    pub fn join(&self, name: &str) -> Self {
        match self {
            Self::Local(p) => Self::Local(p.join(name)),
            Self::Remote(u) => {
                let mut u = u.clone();
                let path = format!("{}/{name}", u.path().trim_end_matches('/'));
                u.set_path(&path);
                Self::Remote(u)
            }
        }
    }

    /// The last part of the location (a bucket's `bucket_{id}`, a topic's name).
    pub fn file_name(&self) -> Option<String> {
        match self {
            Self::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            Self::Remote(u) => u
                .path_segments()
                .and_then(|mut s| s.rfind(|p| !p.is_empty()))
                .map(str::to_owned),
        }
    }

    /// The location as Lance and the storage-path APIs take it: the path, or the URI.
    pub fn to_path_buf(&self) -> PathBuf {
        match self {
            Self::Local(p) => p.clone(),
            Self::Remote(u) => PathBuf::from(u.as_str()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::Remote(u) => f.write_str(u.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decided_once_from_the_text() {
        let local = Location::of("/tmp/queue/bucket_0").unwrap();
        assert_eq!(local.local(), Some(Path::new("/tmp/queue/bucket_0")));
        assert_eq!(
            Location::of("file:///tmp/q").unwrap(),
            Location::Local("/tmp/q".into())
        );
        let remote = Location::of("s3://bucket/queue/").unwrap();
        assert!(remote.is_remote() && remote.local().is_none());
        let bucket = remote.join("bucket_3");
        assert_eq!(bucket.to_string(), "s3://bucket/queue/bucket_3");
        assert_eq!(bucket.file_name().as_deref(), Some("bucket_3"));
        assert_eq!(remote.file_name().as_deref(), Some("queue"));
        assert_eq!(
            Location::of(bucket.to_path_buf()).unwrap(),
            bucket,
            "a location's path reads back as the same location"
        );
        assert!(Location::of("shared-memory://x/y").unwrap().is_remote());
        let err = Location::of("s3://[bad").unwrap_err().to_string();
        assert!(
            err.contains("storage_path") && err.contains("s3://[bad"),
            "{err}"
        );
    }
}
