//! One stored entry: the key, compact metadata and payload in one allocation (layout below),
//! and the values and states the write path hands it.

use std::sync::Arc;

use session_core::backend::{decode_entry, encode_tombstone, CodecId, Entry as Envelope, Record, HEADER_LEN};
use session_core::{Bytes, Error, Meta};

use crate::compact::{decode_meta, encode_meta, MAX_META_LEN};

/// `Meta::deadline`, inlined: `expires_at` capped at `max_expires_at` unless that is `0`.
#[inline]
pub(crate) fn deadline(meta: &Meta) -> u64 {
    if meta.max_expires_at == 0 {
        meta.expires_at
    } else {
        meta.expires_at.min(meta.max_expires_at)
    }
}

/// What a write stores under a key: a session's parts, a tombstone, or raw bytes. Borrowed from
/// the caller; [`Entry::new`] copies it into the entry's one allocation.
pub(crate) enum Value<'a> {
    /// A session written through the store.
    Rec {
        /// Version, times and deadline.
        meta: Meta,
        /// The payload's codec.
        codec: CodecId,
        /// The payload.
        payload: &'a [u8],
    },
    /// A deleted session's tombstone: metadata only (its delete's token, when it was made, its
    /// deadline), read as absent by every live call.
    Tomb {
        /// The tombstone's metadata (see `session_core::backend::Tombstone::meta`).
        meta: Meta,
    },
    /// Bytes planted by `RawAccess` (tests): decoded on every load.
    #[cfg_attr(
        not(feature = "testing"),
        allow(dead_code, reason = "built only by RawAccess")
    )]
    Raw {
        /// The bytes as given.
        bytes: &'a [u8],
        /// When the key expires, ms since the epoch.
        deadline: u64,
    },
}

impl<'a> Value<'a> {
    /// A session value: `meta` (as the store decided it) with the record's codec and payload.
    pub(crate) fn record(meta: Meta, record: &'a Record) -> Value<'a> {
        Value::Rec {
            meta,
            codec: record.codec,
            payload: &record.payload,
        }
    }

    /// The payload or raw bytes (none for a tombstone).
    fn body(&self) -> &'a [u8] {
        match self {
            Value::Rec { payload, .. } => payload,
            Value::Tomb { .. } => &[],
            Value::Raw { bytes, .. } => bytes,
        }
    }

    /// The envelope length (a tombstone's is the header alone), or the raw length.
    fn stored_len(&self) -> usize {
        match self {
            Value::Rec { payload, .. } => HEADER_LEN + payload.len(),
            Value::Tomb { .. } => HEADER_LEN,
            Value::Raw { bytes, .. } => bytes.len(),
        }
    }

    /// The deadline after which the entry no longer exists.
    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        match self {
            Value::Rec { meta, .. } | Value::Tomb { meta } => deadline(meta),
            Value::Raw { deadline, .. } => *deadline,
        }
    }
}

/// What a write operation finds under its key.
pub(crate) enum State {
    /// Nothing.
    Absent,
    /// An entry past its deadline: treated as absent, and reclaimed.
    Expired,
    /// A live session with this metadata.
    Live(Meta),
    /// A live tombstone with this metadata: absent to every live call.
    Tombstone(Meta),
    /// Live bytes that are not an envelope.
    Corrupt(Error),
}

// Layout of an entry's single allocation (an `Arc<[u8]>`, so that a load can hand out the
// payload without copying it):
//
//   [0]            kind: KIND_REC, KIND_TOMB or KIND_RAW
//   [1]            codec id (KIND_REC; 0 otherwise)
//   [2..10]        the deadline, u64 little-endian (`expires_at` capped at `max_expires_at`)
//   [10]           key length k (a namespace of at most 32 bytes, ':', an id of at most 128)
//   [11]           metadata length m (KIND_REC and KIND_TOMB; 0 for raw bytes)
//   [12]           padding p: unused bytes at the end
//   [13..13+k]     the key `{namespace}:{id}` (the store's prefix is not stored)
//   [13+k..13+k+m] the metadata, compact (see `encode_meta`)
//   [13+k+m..n-p]  the payload (KIND_REC), nothing (KIND_TOMB) or the raw bytes (KIND_RAW)
//
// The length n is rounded so that the allocation fills its malloc chunk (glibc rounds every
// chunk to 16 bytes anyway): the padding costs nothing, and lets a later write of a session
// of the same size or a little smaller reuse the allocation in place (when no loaded record
// still shares it) instead of a malloc, a copy into new memory and a free — which also avoids
// glibc's arena lock, taken when a thread frees a chunk of this size another thread allocated.
//
// Against a table slot of metadata, codec, `Bytes` handle and boxed key (96 bytes, plus the
// key's allocation and the `Bytes` shared header), an entry costs a 16-byte slot, one
// allocation header and ~30 bytes of fields: see the README's figures.
//
// A tombstone is the same layout with no payload: header, key and ~20 bytes of metadata (60
// bytes with a 27-byte key `task:{22-character id}`: one 96-byte malloc chunk). It is charged
// as the header-only envelope it stands for (see `charge`), like a session with no payload.
const KIND_REC: u8 = 0;
const KIND_RAW: u8 = 1;
const KIND_TOMB: u8 = 2;
const AT_CODEC: usize = 1;
const AT_DEADLINE: usize = 2;
const AT_KEY_LEN: usize = 10;
const AT_META_LEN: usize = 11;
const AT_PAD: usize = 12;
const AT_KEY: usize = 13;
/// `Arc<[u8]>`'s counters before the bytes.
const ARC_HEADER: usize = 16;
/// The most padding a new entry gets: its malloc chunk rounded up to 16 bytes.
const MAX_CHUNK_ROUNDING: usize = 15;

/// The payload of an entry, shared with the `Bytes` a load hands out.
struct Payload {
    buf: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }
}

/// A value's metadata, encoded, and its body: what `write_value` lays out.
struct Encoded<'a> {
    kind: u8,
    codec: u8,
    deadline: u64,
    meta: [u8; MAX_META_LEN],
    meta_len: usize,
    body: &'a [u8],
}

impl<'a> Encoded<'a> {
    fn new(value: &Value<'a>) -> Self {
        let mut meta = [0u8; MAX_META_LEN];
        let (kind, codec, meta_len) = match value {
            Value::Rec { meta: m, codec, .. } => (KIND_REC, codec.0, encode_meta(m, &mut meta)),
            Value::Tomb { meta: m } => (KIND_TOMB, 0, encode_meta(m, &mut meta)),
            Value::Raw { .. } => (KIND_RAW, 0, 0),
        };
        Encoded {
            kind,
            codec,
            deadline: value.deadline(),
            meta,
            meta_len,
            body: value.body(),
        }
    }

    /// Bytes after the key.
    fn len(&self) -> usize {
        self.meta_len + self.body.len()
    }

    /// Whether it fits a buffer of `buf_len` bytes whose key ends at `meta_at`, leaving at
    /// most 255 unused bytes (the padding byte's range). A tombstone fits only a buffer of the
    /// size a new entry would get: it never keeps a deleted session's larger allocation
    /// alive until its deadline, and is rarely written over by a session of that size.
    fn fits(&self, buf_len: usize, meta_at: usize) -> bool {
        let max_pad = if self.kind == KIND_TOMB {
            MAX_CHUNK_ROUNDING
        } else {
            usize::from(u8::MAX)
        };
        buf_len >= meta_at + self.len() && buf_len - (meta_at + self.len()) <= max_pad
    }

    /// Writes kind, codec, deadline, metadata, body and padding into `b`, whose key ends at
    /// `meta_at` (checked with `fits`).
    fn write(&self, b: &mut [u8], meta_at: usize) {
        let body_at = meta_at + self.meta_len;
        let end = body_at + self.body.len();
        b[0] = self.kind;
        b[AT_CODEC] = self.codec;
        b[AT_DEADLINE..AT_KEY_LEN].copy_from_slice(&self.deadline.to_le_bytes());
        b[AT_META_LEN] = self.meta_len as u8;
        b[AT_PAD] = u8::try_from(b.len() - end).unwrap_or(u8::MAX);
        b[meta_at..body_at].copy_from_slice(&self.meta[..self.meta_len]);
        b[body_at..end].copy_from_slice(self.body);
    }
}

/// One stored session: its key without the store's prefix, its metadata and its payload, in
/// one allocation (layout above).
pub(crate) struct Entry(Arc<[u8]>);

impl Entry {
    /// Builds the entry of `value` under `{namespace}:{id}`.
    pub(crate) fn new(namespace: &str, id: &str, value: &Value<'_>) -> Entry {
        let encoded = Encoded::new(value);
        let key_len = namespace.len() + 1 + id.len();
        let needed = AT_KEY + key_len + encoded.len();
        // The whole malloc chunk: glibc's chunk is the request + 8, rounded up to 16.
        let chunk = (ARC_HEADER + needed + 8 + 15) & !15;
        let len = chunk - ARC_HEADER - 8;
        // One zeroed allocation (a memset), filled in place below: the payload is copied once.
        let mut buf: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
        if let Some(b) = Arc::get_mut(&mut buf) {
            // Ids and namespaces are validated: at most 128 and 32 bytes.
            b[AT_KEY_LEN] = u8::try_from(key_len).unwrap_or(u8::MAX);
            b[AT_KEY..AT_KEY + namespace.len()].copy_from_slice(namespace.as_bytes());
            b[AT_KEY + namespace.len()] = b':';
            b[AT_KEY + namespace.len() + 1..AT_KEY + key_len].copy_from_slice(id.as_bytes());
            encoded.write(b, AT_KEY + key_len);
        }
        Entry(buf)
    }

    /// Writes `value` over this entry's value in place, keeping the key, if no loaded record
    /// shares the allocation and the value fits. `false` (nothing changed) otherwise.
    pub(crate) fn overwrite(&mut self, value: &Value<'_>) -> bool {
        let meta_at = self.meta_at();
        let encoded = Encoded::new(value);
        match Arc::get_mut(&mut self.0) {
            Some(b) if encoded.fits(b.len(), meta_at) => {
                encoded.write(b, meta_at);
                true
            }
            _ => false,
        }
    }

    /// Replaces the metadata in place (touch), if no loaded record shares the allocation and
    /// it fits. `false` (nothing changed) otherwise.
    pub(crate) fn retime(&mut self, meta: &Meta) -> bool {
        if self.kind() != KIND_REC {
            return false;
        }
        let (meta_at, body_at, end) = (self.meta_at(), self.body_at(), self.body_end());
        let mut meta_buf = [0u8; MAX_META_LEN];
        let meta_len = encode_meta(meta, &mut meta_buf);
        let new_end = meta_at + meta_len + (end - body_at);
        match Arc::get_mut(&mut self.0) {
            Some(b) if new_end <= b.len() && b.len() - new_end <= usize::from(u8::MAX) => {
                let new_body_at = meta_at + meta_len;
                b.copy_within(body_at..end, new_body_at);
                b[meta_at..new_body_at].copy_from_slice(&meta_buf[..meta_len]);
                b[AT_DEADLINE..AT_KEY_LEN].copy_from_slice(&deadline(meta).to_le_bytes());
                b[AT_META_LEN] = meta_len as u8;
                b[AT_PAD] = u8::try_from(b.len() - new_end).unwrap_or(u8::MAX);
                true
            }
            _ => false,
        }
    }

    /// The same session under another id (rotate), or with new metadata (touch).
    pub(crate) fn rebuilt(&self, namespace: &str, id: &str, meta: Option<Meta>) -> Entry {
        match (self.kind(), meta.or_else(|| self.meta())) {
            (KIND_REC, Some(meta)) => Entry::new(
                namespace,
                id,
                &Value::Rec {
                    meta,
                    codec: self.codec(),
                    payload: self.body(),
                },
            ),
            (KIND_TOMB, Some(meta)) => Entry::new(namespace, id, &Value::Tomb { meta }),
            _ => Entry::new(
                namespace,
                id,
                &Value::Raw {
                    bytes: self.body(),
                    deadline: self.deadline(),
                },
            ),
        }
    }

    #[inline]
    fn kind(&self) -> u8 {
        self.0.first().copied().unwrap_or(KIND_RAW)
    }

    #[inline]
    fn codec(&self) -> CodecId {
        CodecId(self.0.get(AT_CODEC).copied().unwrap_or(0))
    }

    #[inline]
    fn key_len(&self) -> usize {
        usize::from(self.0.get(AT_KEY_LEN).copied().unwrap_or(0))
    }

    #[inline]
    fn meta_at(&self) -> usize {
        AT_KEY + self.key_len()
    }

    #[inline]
    fn meta_len(&self) -> usize {
        usize::from(self.0.get(AT_META_LEN).copied().unwrap_or(0))
    }

    #[inline]
    fn body_at(&self) -> usize {
        self.meta_at() + self.meta_len()
    }

    #[inline]
    fn body_end(&self) -> usize {
        self.0
            .len()
            .saturating_sub(usize::from(self.0.get(AT_PAD).copied().unwrap_or(0)))
    }

    /// The key bytes `{namespace}:{id}`.
    #[inline]
    fn key(&self) -> &[u8] {
        self.0.get(AT_KEY..self.meta_at()).unwrap_or_default()
    }

    /// The payload (or raw bytes).
    fn body(&self) -> &[u8] {
        self.0.get(self.body_at()..self.body_end()).unwrap_or_default()
    }

    /// The stored metadata of a session or tombstone (`None` for raw bytes).
    #[inline]
    fn meta(&self) -> Option<Meta> {
        if !matches!(self.kind(), KIND_REC | KIND_TOMB) {
            return None;
        }
        decode_meta(self.0.get(self.meta_at()..self.body_at())?)
    }

    /// The deadline after which the entry no longer exists.
    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        let mut b = [0u8; 8];
        if let Some(d) = self.0.get(AT_DEADLINE..AT_KEY_LEN) {
            b.copy_from_slice(d);
        }
        u64::from_le_bytes(b)
    }

    /// Whether this entry is the session `namespace`/`id`.
    #[inline]
    pub(crate) fn is(&self, namespace: &str, id: &str) -> bool {
        let key = self.key();
        key.len() == namespace.len() + 1 + id.len()
            && key[namespace.len() + 1..] == *id.as_bytes()
            && key[..namespace.len()] == *namespace.as_bytes()
            && key[namespace.len()] == b':'
    }

    /// The namespace and id of the key.
    pub(crate) fn parts(&self) -> (&str, &str) {
        let key = std::str::from_utf8(self.key()).unwrap_or_default();
        key.split_once(':').unwrap_or((key, ""))
    }

    /// The envelope length (a tombstone's is the header alone), or the raw length.
    fn stored_len(&self) -> usize {
        let body = self.body_end().saturating_sub(self.body_at());
        match self.kind() {
            KIND_REC | KIND_TOMB => HEADER_LEN + body,
            _ => body,
        }
    }

    /// Bytes charged for this entry (see `MemoryConfig::max_bytes`).
    pub(crate) fn charge(&self, prefix_len: usize) -> u64 {
        (prefix_len + self.key_len() + self.stored_len()) as u64 + crate::config::ENTRY_OVERHEAD_BYTES
    }

    /// The payload as `Bytes` sharing the entry's allocation (no copy).
    pub(crate) fn payload_bytes(&self) -> Bytes {
        let (start, end) = (self.body_at(), self.body_end());
        if start >= end {
            return Bytes::new();
        }
        Bytes::from_owner(Payload {
            buf: Arc::clone(&self.0),
            start,
            end,
        })
    }

    /// The value as a session or a tombstone (which a load answers as absent). Raw bytes are
    /// decoded.
    pub(crate) fn to_entry(&self, namespace: &str) -> Result<Envelope, Error> {
        match (self.kind(), self.meta()) {
            (KIND_REC, Some(meta)) => Ok(Envelope::Live(Record {
                meta,
                codec: self.codec(),
                payload: self.payload_bytes(),
            })),
            (KIND_TOMB, Some(meta)) => Ok(Envelope::Tombstone(meta)),
            (KIND_RAW, _) => decode_entry(&self.payload_bytes(), namespace),
            _ => Err(damaged(namespace)),
        }
    }

    /// The value as an envelope, as another backend would store it (`RawAccess::get_raw`):
    /// a session's, a tombstone's (header only, flagged), or the raw bytes as planted.
    #[cfg_attr(not(feature = "testing"), allow(dead_code, reason = "read only by RawAccess"))]
    pub(crate) fn envelope(&self) -> Bytes {
        match (self.kind(), self.meta()) {
            (KIND_REC, Some(meta)) => Record {
                meta,
                codec: self.codec(),
                payload: self.payload_bytes(),
            }
            .encode(),
            (KIND_TOMB, Some(meta)) => encode_tombstone(&meta),
            _ => self.payload_bytes(),
        }
    }

    /// Whether the value is live at `now`, and its metadata.
    pub(crate) fn state(&self, namespace: &str, now: u64) -> State {
        if self.deadline() <= now {
            return State::Expired;
        }
        match (self.kind(), self.meta()) {
            (KIND_REC, Some(meta)) => State::Live(meta),
            (KIND_TOMB, Some(meta)) => State::Tombstone(meta),
            (KIND_RAW, _) => match decode_entry(&self.payload_bytes(), namespace) {
                Ok(Envelope::Live(r)) if deadline(&r.meta) <= now => State::Expired,
                Ok(Envelope::Tombstone(meta)) if deadline(&meta) <= now => State::Expired,
                Ok(Envelope::Live(r)) => State::Live(r.meta),
                Ok(Envelope::Tombstone(meta)) => State::Tombstone(meta),
                Err(e) => State::Corrupt(e),
            },
            _ => State::Corrupt(damaged(namespace)),
        }
    }

    /// Whether the value is a tombstone (one planted as raw bytes included), whatever its
    /// deadline.
    pub(crate) fn is_tombstone(&self) -> bool {
        match self.kind() {
            KIND_TOMB => true,
            KIND_RAW => matches!(
                decode_entry(&self.payload_bytes(), ""),
                Ok(Envelope::Tombstone(_))
            ),
            _ => false,
        }
    }
}

/// The error of an entry whose own layout does not decode (never written by this crate).
fn damaged(namespace: &str) -> Error {
    Error::corrupt(namespace, "damaged in-memory entry")
}

/// Bytes charged for a value under a key of `key_len` bytes (without prefix).
pub(crate) fn charge(prefix_len: usize, key_len: usize, value: &Value<'_>) -> u64 {
    (prefix_len + key_len + value.stored_len()) as u64 + crate::config::ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests;
