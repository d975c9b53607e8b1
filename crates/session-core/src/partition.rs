//! [`Partition`]: the part of a store a key lives on, for circuits kept per part.

use std::fmt;

/// The part of a store that serves a key: a unit that fails and recovers as one (a Redis
/// Cluster node, say), so that a wrapper such as a fallback can keep one circuit per part
/// instead of one for the whole store.
///
/// An opaque id: two partitions are the same part exactly when they compare equal. A store
/// that is one unit (a single server, an in-process map) has one partition,
/// [`Partition::WHOLE`], for every key; that is what
/// [`SessionStore::partition`](crate::SessionStore::partition) answers by default.
/// [`Partition::WHOLE`] also names the store as a whole: failures of calls that have no key
/// (`count`, `stats`) are attributed to it, and its probe is the store's own
/// [`health`](crate::SessionStore::health).
///
/// ```
/// use session_core::backend::Partition;
///
/// let node = Partition::new(0x5eed);
/// assert_ne!(node, Partition::WHOLE);
/// assert_eq!(node.id(), 0x5eed);
/// assert!(Partition::WHOLE.is_whole());
/// assert_eq!(Partition::WHOLE.to_string(), "whole");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Partition(u64);

impl Partition {
    /// The whole store: the one partition of a store that is one unit, and the partition a
    /// partitioned store gives a key it cannot place (no known node serves it yet).
    pub const WHOLE: Partition = Partition(0);

    /// A partition with the store's own id for it. `0` is [`WHOLE`](Self::WHOLE); a
    /// partitioned store uses other ids for its parts.
    pub const fn new(id: u64) -> Partition {
        Partition(id)
    }

    /// The id given to [`new`](Self::new).
    pub const fn id(self) -> u64 {
        self.0
    }

    /// Whether this is [`WHOLE`](Self::WHOLE).
    pub const fn is_whole(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `whole`, or the id in hex (`p:5eed`).
impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_whole() {
            f.write_str("whole")
        } else {
            write!(f, "p:{:x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_is_the_default_and_prints_as_such() {
        assert_eq!(Partition::default(), Partition::WHOLE);
        assert!(Partition::new(0).is_whole());
        assert!(!Partition::new(1).is_whole());
        assert_eq!(format!("{:?}", Partition::new(255)), "p:ff");
    }
}
