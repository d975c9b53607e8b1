//! Listing a store's sessions a page at a time: what copying between stores, a backup's resync
//! and a bulk restore read with.

use std::fmt;

use crate::envelope::Record;
use crate::key::{KeyPrefix, Namespace, SessionKey};

/// Where a [`scan`](crate::SessionStore::scan) resumes: opaque text that stays valid across
/// processes, so a long copy saved with its cursor can be resumed by another run.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ScanCursor(String);

impl ScanCursor {
    /// A cursor from its text (as [`as_str`](Self::as_str) gave it).
    pub fn new(text: impl Into<String>) -> Self {
        ScanCursor(text.into())
    }

    /// The cursor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ScanCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A cursor may name the last key it passed: show its length only.
        write!(f, "ScanCursor({} chars)", self.0.len())
    }
}

/// One page of a scan.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ScanPage {
    /// Live sessions, each with its record (its deadline in the metadata).
    pub sessions: Vec<(SessionKey, Record)>,
    /// Where the next page starts; `None` when the scan is complete.
    pub next: Option<ScanCursor>,
    /// Keys passed over: bytes that are not an envelope (`Corrupt` on load), or keys under the
    /// prefix that are not `{namespace}:{id}` (another store's, with a longer prefix).
    pub skipped: u64,
}

impl ScanPage {
    /// A page of these sessions, continuing at `next`.
    pub fn new(sessions: Vec<(SessionKey, Record)>, next: Option<ScanCursor>, skipped: u64) -> Self {
        ScanPage {
            sessions,
            next,
            skipped,
        }
    }
}

/// The session key of a backend key `{prefix}{namespace}:{id}`, or `None` for a key that is not
/// one of this prefix's sessions (another prefix, a longer prefix's key, a bad id).
pub fn parse_backend_key(prefix: &KeyPrefix, key: &str) -> Option<SessionKey> {
    let rest = key.strip_prefix(prefix.as_str())?;
    let (namespace, id) = rest.split_once(':')?;
    let namespace = Namespace::new(namespace).ok()?;
    // A principal index is listed too, so that copies and restores carry it.
    let id = crate::principals::parse_stored_id(id)?;
    Some(SessionKey::new(namespace, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_keys_parse_back() {
        let p = KeyPrefix::new("app:s:").unwrap_or_default();
        let k = parse_backend_key(&p, "app:s:task:0123456789abcdef").map(|k| (k.ns().to_owned(), k.id));
        assert_eq!(k.as_ref().map(|(ns, _)| ns.as_str()), Some("task"));
        for not_ours in [
            "other:task:0123456789abcdef",
            "app:s:task:task:0123456789abcdef",
            "app:s:Task:0123456789abcdef",
            "app:s:task:short",
            "app:s:task",
        ] {
            assert!(parse_backend_key(&p, not_ours).is_none(), "{not_ours}");
        }
    }

    #[test]
    fn cursors_hide_their_text() {
        let c = ScanCursor::new("app:s:task:0123456789abcdef");
        assert!(!format!("{c:?}").contains("0123"));
        assert_eq!(ScanCursor::new(c.as_str()), c);
    }
}
