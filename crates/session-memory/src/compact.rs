//! The compact metadata of an entry: a flags byte and the times as LEB128 varints, each
//! time a delta from the one before.

use session_core::{Meta, Version};

/// The longest compact metadata: a flags byte and five 10-byte varints.
pub(crate) const MAX_META_LEN: usize = 51;

/// Appends `v` as a LEB128 varint.
#[inline]
fn put_varint(buf: &mut [u8; MAX_META_LEN], at: &mut usize, mut v: u64) {
    while v >= 0x80 {
        buf[*at] = (v as u8) | 0x80;
        *at += 1;
        v >>= 7;
    }
    buf[*at] = v as u8;
    *at += 1;
}

/// Reads a LEB128 varint; `None` past the end or past 10 bytes.
#[inline]
fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// A difference of two times as a zigzag-encoded integer (exact for any two `u64`s).
#[inline]
fn delta(from: u64, to: u64) -> u64 {
    let d = to.wrapping_sub(from) as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

#[inline]
fn undelta(from: u64, z: u64) -> u64 {
    let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
    from.wrapping_add(d as u64)
}

/// Metadata in 17–28 bytes instead of 40: flags (bit 0: `max_expires_at` set), the version's 8
/// bytes, then varints of `created_at` and the other times as differences (`updated_at` − `created_at`,
/// `expires_at` − `updated_at`, `max_expires_at` − `created_at`). Exact for every value.
pub(crate) fn encode_meta(meta: &Meta, buf: &mut [u8; MAX_META_LEN]) -> usize {
    let mut at = 1;
    buf[0] = u8::from(meta.max_expires_at != 0);
    // A version is a random token: 8 fixed bytes beat a 10-byte varint.
    buf[at..at + 8].copy_from_slice(&meta.version.as_u64().to_le_bytes());
    at += 8;
    put_varint(buf, &mut at, meta.created_at);
    put_varint(buf, &mut at, delta(meta.created_at, meta.updated_at));
    put_varint(buf, &mut at, delta(meta.updated_at, meta.expires_at));
    if meta.max_expires_at != 0 {
        put_varint(buf, &mut at, delta(meta.created_at, meta.max_expires_at));
    }
    at
}

pub(crate) fn decode_meta(buf: &[u8]) -> Option<Meta> {
    let flags = *buf.first()?;
    let mut at = 1;
    let version = Version::from_u64(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?));
    at += 8;
    let created_at = get_varint(buf, &mut at)?;
    let updated_at = undelta(created_at, get_varint(buf, &mut at)?);
    let expires_at = undelta(updated_at, get_varint(buf, &mut at)?);
    let max_expires_at = if flags & 1 != 0 {
        undelta(created_at, get_varint(buf, &mut at)?)
    } else {
        0
    };
    Some(Meta {
        version,
        created_at,
        updated_at,
        expires_at,
        max_expires_at,
    })
}
