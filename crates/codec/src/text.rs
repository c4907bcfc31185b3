//! [`Str`]: the text of a [`Value::String`](crate::Value::String).
//!
//! Invariants:
//! - a `Str` is valid UTF-8; it derefs to `&str`, and its equality,
//!   order, hash, `Display` and `Debug` are those of that `&str`, however it is held;
//! - a `Str` either owns its text (what `From<String>` and `From<&str>` make: no
//!   copy from a `String`) or is a range of a shared block ([`Str::in_block`]): records
//!   read together can share a few blocks of text instead of allocating every string.
//!   A `Str` in a block keeps the whole block alive until it is dropped or
//!   [`Str::detach`]ed; a block's range is checked (char boundaries included) when the
//!   `Str` is made, so reading it back never fails. A block never changes; an owned
//!   `Str` changes only through [`Str::owned_mut`].

use std::borrow::{Borrow, Cow};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// UTF-8 text: an owned `String`, or a range of a shared block (an `Arc<String>`: a
/// thin pointer, so that a `Str` is no larger than a `String`). Use it as a `&str` (it
/// derefs to one); build it with `From`/`Into` from `&str`, `String`, `Box<str>` or
/// `Cow<str>`.
///
/// ```
/// use std::sync::Arc;
/// use persisting_codec::Str;
///
/// let owned = Str::from("alpha");
/// let block = Arc::new(String::from("alphabeta"));
/// let shared = Str::in_block(&block, 0..5).unwrap();
/// assert_eq!(owned, shared);
/// assert_eq!(&*shared, "alpha");
/// assert!(shared.is_shared() && !owned.is_shared());
/// assert!(Str::in_block(&block, 3..12).is_none());
/// ```
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    Owned(String),
    Shared {
        block: Arc<String>,
        start: u32,
        end: u32,
    },
}

impl Str {
    /// The text `block[range]`, sharing `block`. `None` when `range` is not within
    /// `block`, does not fall on char boundaries, or ends past `u32::MAX`.
    pub fn in_block(block: &Arc<String>, range: Range<usize>) -> Option<Str> {
        block.get(range.clone())?;
        let start = u32::try_from(range.start).ok()?;
        let end = u32::try_from(range.end).ok()?;
        Some(Str(Repr::Shared {
            block: Arc::clone(block),
            start,
            end,
        }))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(s) => s,
            // the range was checked when the `Str` was made and `block` never changes
            Repr::Shared { block, start, end } => block
                .get(*start as usize..*end as usize)
                .unwrap_or_default(),
        }
    }

    /// True when the text is a range of a shared block.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }

    /// Copies the text out of its shared block, if it is in one, so that it no longer
    /// keeps the block alive.
    pub fn detach(&mut self) {
        if let Repr::Shared { .. } = self.0 {
            self.0 = Repr::Owned(self.as_str().to_owned());
        }
    }

    /// The owned `String`, to change or reuse its buffer; `None` for a range of a
    /// shared block.
    pub fn owned_mut(&mut self) -> Option<&mut String> {
        match &mut self.0 {
            Repr::Owned(s) => Some(s),
            Repr::Shared { .. } => None,
        }
    }

    /// The text as a `String` (no copy when it owns its text).
    pub fn into_string(self) -> String {
        match self.0 {
            Repr::Owned(s) => s,
            Repr::Shared { .. } => self.as_str().to_owned(),
        }
    }
}

impl Default for Str {
    fn default() -> Self {
        Str(Repr::Owned(String::new()))
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Str {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Str {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

macro_rules! eq_with {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Str {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == AsRef::<str>::as_ref(other)
            }
        }
        impl PartialEq<Str> for $t {
            fn eq(&self, other: &Str) -> bool {
                AsRef::<str>::as_ref(self) == other.as_str()
            }
        }
    )*};
}
eq_with!(str, &str, String);

impl From<String> for Str {
    fn from(s: String) -> Self {
        Str(Repr::Owned(s))
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str(Repr::Owned(s.to_owned()))
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Self {
        Str(Repr::Owned(s.clone()))
    }
}

impl From<Box<str>> for Str {
    fn from(s: Box<str>) -> Self {
        Str(Repr::Owned(s.into_string()))
    }
}

impl From<Cow<'_, str>> for Str {
    fn from(s: Cow<'_, str>) -> Self {
        Str(Repr::Owned(s.into_owned()))
    }
}

impl From<Str> for String {
    fn from(s: Str) -> Self {
        s.into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(v: &impl Hash) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn shared_and_owned_text_are_the_same_value() {
        let block = Arc::new(String::from("héllo world"));
        let shared = Str::in_block(&block, 0..6).unwrap();
        let owned = Str::from("héllo");
        assert_eq!(shared, owned);
        assert_eq!(shared.cmp(&owned), Ordering::Equal);
        assert_eq!(hash_of(&shared), hash_of(&owned));
        assert_eq!(hash_of(&shared), hash_of(&"héllo"));
        assert_eq!(format!("{shared} {shared:?}"), "héllo \"héllo\"");
        assert_eq!(shared, "héllo");
        assert_eq!("héllo", shared);
        assert_eq!(String::from("héllo"), shared);
        let (a, w) = (Str::from("a"), Str::in_block(&block, 7..8).unwrap());
        assert_eq!(a.cmp(&w), Ordering::Less);
    }

    #[test]
    fn a_block_range_off_a_char_boundary_or_outside_the_block_is_refused() {
        let block = Arc::new(String::from("héllo"));
        // 'é' takes bytes 1..3
        assert!(Str::in_block(&block, 0..2).is_none());
        assert!(Str::in_block(&block, 2..4).is_none());
        assert!(Str::in_block(&block, 0..7).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 4..3;
        assert!(Str::in_block(&block, reversed).is_none());
        assert_eq!(Str::in_block(&block, 6..6).unwrap(), "");
        assert_eq!(Str::in_block(&block, 1..3).unwrap(), "é");
    }

    #[test]
    fn detaching_copies_the_text_and_releases_the_block() {
        let block = Arc::new(String::from("one two"));
        let mut s = Str::in_block(&block, 4..7).unwrap();
        assert_eq!(Arc::strong_count(&block), 2);
        s.detach();
        assert!(!s.is_shared());
        assert_eq!(s, "two");
        assert_eq!(Arc::strong_count(&block), 1);
        assert_eq!(Str::in_block(&block, 0..3).unwrap().into_string(), "one");
    }

    #[test]
    fn only_owned_text_can_be_changed_in_place() {
        let block = Arc::new(String::from("one"));
        let mut shared = Str::in_block(&block, 0..3).unwrap();
        assert!(shared.owned_mut().is_none());
        let mut owned = Str::from("one");
        owned.owned_mut().unwrap().push_str(" more");
        assert_eq!(owned, "one more");
    }

    #[test]
    fn str_is_no_larger_than_a_string() {
        assert_eq!(std::mem::size_of::<Str>(), std::mem::size_of::<String>());
        assert_eq!(
            std::mem::size_of::<crate::Value>(),
            std::mem::size_of::<String>() + 8,
            "a Value is a String and its tag"
        );
    }
}
