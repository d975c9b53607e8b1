//! The stored form of a principal index: its key and id, and the bytes of its entry list.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::CodecId;
use crate::envelope::Record;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::principal::Principal;

/// The start of a principal index's id.
const INDEX_ID_PREFIX: &str = "p.";
/// The index value's format: 2 (each entry with its first binding time and a revoke's flag);
/// 1, read only, had neither.
const INDEX_FORMAT: u8 = 2;

/// Whether `key` is a principal index (`{ns}:p.…`) rather than a session. Stores leave these
/// out of [`count`](crate::SessionStore::count).
pub fn is_principal_index(key: &SessionKey) -> bool {
    key.id.as_str().starts_with(INDEX_ID_PREFIX)
}

/// Whether `id` (the id part of a backend key) names a principal index: `p.` and base64url
/// (the principal), or `p..` and base64url (an id a store derived from one, see
/// [`principal_index_id`]).
pub(super) fn is_index_id(id: &str) -> bool {
    id.strip_prefix(INDEX_ID_PREFIX).is_some_and(|rest| {
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        !rest.is_empty()
            && id.len() <= crate::id::MAX_ID_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The id of a principal index whose id a store derives from the original one (a store that
/// hashes ids keeps an index an index): `p..` followed by `suffix`, which must be 1 to 125
/// characters of `[A-Za-z0-9_-]`; `None` otherwise. The second `.` keeps it apart from every
/// principal's own index id (`p.` and base64url), so neither can be read as the other.
pub fn principal_index_id(suffix: &str) -> Option<SessionId> {
    let id = format!("{INDEX_ID_PREFIX}.{suffix}");
    is_index_id(&id).then(|| SessionId::index(id))
}

/// A stored key's id: a session id, or a principal index's (what copies and snapshots carry).
pub fn parse_stored_id(id: &str) -> Option<SessionId> {
    match SessionId::parse(id) {
        Ok(id) => Some(id),
        Err(_) if is_index_id(id) => Some(SessionId::index(id.to_owned())),
        Err(_) => None,
    }
}

/// The key of `principal`'s index in `namespace`.
pub(super) fn index_key(namespace: &Namespace, principal: &Principal) -> SessionKey {
    let id = format!(
        "{INDEX_ID_PREFIX}{}",
        crate::id::encode_b64url(principal.as_str().as_bytes())
    );
    SessionKey::new(namespace.clone(), SessionId::index(id))
}

/// One bound session in an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bound {
    pub(super) id: SessionId,
    /// The session's lifetime cap, ms.
    pub(super) until: u64,
    /// When the entry was made, ms.
    pub(super) at: u64,
    /// When the session was first bound to the principal, ms: kept by a `rotate` (the entry
    /// of the new id) and by binding it again, so that a kept revocation ends the sessions
    /// bound before it whatever happened to them since.
    pub(super) bound_at: u64,
    /// Flagged by a revoke before it reads the entries it ends: the session may not be
    /// rotated any more (its `rotate` answers `NotFound`), so that a session rotated again
    /// and again cannot outrun the revoke's rounds.
    pub(super) revoking: bool,
    /// The id the session had before a `rotate` (so that a revoke that ended that id follows
    /// it to this one).
    pub(super) from: Option<SessionId>,
}

/// One principal's bound sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    pub(super) entries: Vec<Bound>,
}

pub(super) fn put_id(b: &mut BytesMut, id: Option<&SessionId>) {
    let text = id.map_or(&b""[..], |id| id.as_str().as_bytes());
    // Ids are at most 128 bytes.
    b.put_u8(u8::try_from(text.len()).unwrap_or(u8::MAX));
    b.put_slice(text);
}

impl Index {
    pub(super) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(3 + self.entries.len() * 72);
        b.put_u8(INDEX_FORMAT);
        // At most MAX_ENTRIES (checked before every write).
        b.put_u16(u16::try_from(self.entries.len()).unwrap_or(u16::MAX));
        for e in &self.entries {
            put_id(&mut b, Some(&e.id));
            b.put_u64(e.until);
            b.put_u64(e.at);
            b.put_u64(e.bound_at);
            b.put_u8(u8::from(e.revoking));
            put_id(&mut b, e.from.as_ref());
        }
        b.freeze()
    }

    pub(super) fn decode(record: &Record, namespace: &str) -> Result<Index> {
        let bad = || Error::corrupt(namespace, "a principal index that does not parse");
        if record.codec != CodecId::RAW {
            return Err(bad());
        }
        let mut r = Reader(&record.payload);
        let format = r.u8().ok_or_else(bad)?;
        if format != INDEX_FORMAT && format != 1 {
            return Err(bad());
        }
        let count = usize::from(r.u16().ok_or_else(bad)?);
        // Each entry takes at least 19 bytes: no allocation beyond what the bytes can hold.
        let mut entries = Vec::with_capacity(count.min(r.0.len() / 19));
        for _ in 0..count {
            let id = r.id().ok_or_else(bad)?.ok_or_else(bad)?;
            let until = r.u64().ok_or_else(bad)?;
            let at = r.u64().ok_or_else(bad)?;
            let (bound_at, revoking) = if format == 1 {
                (at, false)
            } else {
                let bound_at = r.u64().ok_or_else(bad)?;
                match r.u8().ok_or_else(bad)? {
                    0 => (bound_at, false),
                    1 => (bound_at, true),
                    _ => return Err(bad()),
                }
            };
            let from = r.id().ok_or_else(bad)?;
            entries.push(Bound {
                id,
                until,
                at,
                bound_at,
                revoking,
                from,
            });
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(Index { entries })
    }

    /// The latest cap, the index's own deadline.
    pub(super) fn deadline(&self) -> u64 {
        self.entries.iter().map(|e| e.until).max().unwrap_or(0)
    }

    pub(super) fn ids(&self) -> Vec<SessionId> {
        self.entries.iter().map(|e| e.id.clone()).collect()
    }
}

/// Reads an index's bytes front to back; `None` when they run out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Some(u64::from_be_bytes(buf))
    }
    /// An id (`Some(None)` for an empty one).
    fn id(&mut self) -> Option<Option<SessionId>> {
        let len = usize::from(self.u8()?);
        if len == 0 {
            return Some(None);
        }
        let text = std::str::from_utf8(self.take(len)?).ok()?;
        Some(Some(SessionId::parse(text).ok()?))
    }
}
