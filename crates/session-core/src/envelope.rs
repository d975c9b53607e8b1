//! The stored value: a fixed 52-byte header followed by the codec's payload.
//!
//! The layout is described byte by byte in `docs/format.md`. All integers are
//! big-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SESS` |
//! | 4 | 1 | format version, `1` |
//! | 5 | 1 | codec id (`0` raw, `1` JSON, `2` bincode, `3` sealed) |
//! | 6 | 2 | flags: `0`, or `1` for a tombstone (no payload) |
//! | 8 | 4 | payload length |
//! | 12 | 8 | version: an opaque write token (see [`Version`]) |
//! | 20 | 8 | created at, ms since the Unix epoch |
//! | 28 | 8 | updated at, ms |
//! | 36 | 8 | expires at, ms (absolute deadline) |
//! | 44 | 8 | max expires at, ms (`0`: no lifetime cap) |
//! | 52 | n | payload |

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::CodecId;
use crate::error::{Error, Result};
use crate::version::Version;

/// The four bytes every envelope starts with.
pub const MAGIC: [u8; 4] = *b"SESS";
/// The envelope format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 52;

/// Byte offset of the format version (1 byte).
pub const FORMAT_OFFSET: usize = 4;
/// Byte offset of the codec id (1 byte).
pub const CODEC_OFFSET: usize = 5;
/// Byte offset of the flags (2 bytes).
pub const FLAGS_OFFSET: usize = 6;
/// The flag of a tombstone: a deleted session's marker, header only.
pub const FLAG_TOMBSTONE: u16 = 1;
/// Every flag this build knows.
const KNOWN_FLAGS: u16 = FLAG_TOMBSTONE;
/// Byte offset of the payload length (4 bytes).
pub const PAYLOAD_LEN_OFFSET: usize = 8;
/// Byte offset of the version token (8 bytes), for scripts that compare it.
pub const VERSION_OFFSET: usize = 12;
/// Byte offset of the created-at field.
pub const CREATED_AT_OFFSET: usize = 20;
/// Byte offset of the updated-at field.
pub const UPDATED_AT_OFFSET: usize = 28;
/// Byte offset of the expires-at field.
pub const EXPIRES_AT_OFFSET: usize = 36;
/// Byte offset of the max-expires-at field.
pub const MAX_EXPIRES_AT_OFFSET: usize = 44;

/// The metadata every stored session carries.
///
/// All times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Meta {
    /// The token of the write that stored this value: new for every write.
    pub version: Version,
    /// When the session was first stored. Writers carry it over from the
    /// session they loaded ([`Sessions`](crate::Sessions) does).
    pub created_at: u64,
    /// When the session was last written.
    pub updated_at: u64,
    /// The absolute deadline after which the session no longer exists.
    pub expires_at: u64,
    /// The latest deadline the session may ever have (`created_at` +
    /// max lifetime), or `0` for none. Writers carry it over from the session
    /// they loaded; stores never set `expires_at` past it.
    pub max_expires_at: u64,
}

impl Meta {
    /// The deadline a store enforces: `expires_at`, capped at `max_expires_at`.
    #[inline]
    pub fn deadline(&self) -> u64 {
        cap_deadline(self.expires_at, self.max_expires_at)
    }

    /// Whether the session is expired at `now_ms`.
    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline() <= now_ms
    }
}

/// `deadline` capped at `max` unless `max` is `0`.
#[inline]
pub fn cap_deadline(deadline: u64, max: u64) -> u64 {
    if max == 0 {
        deadline
    } else {
        deadline.min(max)
    }
}

/// One stored session as stores see it: metadata, codec id and opaque payload.
///
/// Stores deal only in records; the typed layer ([`crate::Sessions`]) encodes
/// and decodes payloads. A wrapper store can copy a record between stores
/// without knowing its type.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Version, times and deadline.
    pub meta: Meta,
    /// How the payload is encoded.
    pub codec: CodecId,
    /// The encoded session value.
    pub payload: Bytes,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("meta", &self.meta)
            .field("codec", &self.codec)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Record {
    /// A new session's record written now, expiring at `expires_at` (ms
    /// since the Unix epoch), with no lifetime cap and [`Version::NONE`] (the
    /// store gives it a fresh token).
    pub fn new(codec: CodecId, payload: impl Into<Bytes>, expires_at: u64) -> Record {
        let now = crate::expiry::now_ms();
        Record {
            meta: Meta {
                version: Version::NONE,
                created_at: now,
                updated_at: now,
                expires_at,
                max_expires_at: 0,
            },
            codec,
            payload: payload.into(),
        }
    }

    /// The length of this record's envelope in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Encodes the record as an envelope.
    pub fn encode(&self) -> Bytes {
        self.encode_with(&self.meta)
    }

    /// Encodes the record's codec and payload with other metadata (a store
    /// that assigns the version or caps the deadline uses this).
    pub fn encode_with(&self, meta: &Meta) -> Bytes {
        encode_parts(self.codec, 0, meta, &self.payload)
    }

    /// Decodes an envelope. The payload shares `bytes`' buffer.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming `namespace` for foreign bytes, a truncated or
    /// over-long value, an unknown format version, codec id or flag, or a
    /// tombstone (read those with [`decode_entry`]).
    pub fn decode(bytes: &Bytes, namespace: &str) -> Result<Record> {
        match decode_entry(bytes, namespace)? {
            Entry::Live(record) => Ok(record),
            Entry::Tombstone(_) => Err(Error::corrupt(
                namespace,
                "a tombstone where a session was expected (a store must treat it as absent)",
            )),
        }
    }
}

/// What a stored value is: a session, or the tombstone a delete left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A session.
    Live(Record),
    /// A deleted session's tombstone: its delete's token and deadline.
    Tombstone(Meta),
}

/// The envelope of a tombstone: header only, flagged [`FLAG_TOMBSTONE`].
pub fn encode_tombstone(meta: &Meta) -> Bytes {
    encode_parts(CodecId::RAW, FLAG_TOMBSTONE, meta, &[])
}

/// Decodes a stored value, telling sessions from tombstones.
///
/// # Errors
/// As [`Record::decode`], except that a tombstone is an answer.
pub fn decode_entry(bytes: &Bytes, namespace: &str) -> Result<Entry> {
    let meta = decode_header(bytes, namespace)?;
    let flags = u16::from_be_bytes([bytes[FLAGS_OFFSET], bytes[FLAGS_OFFSET + 1]]);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::corrupt(
            namespace,
            format!("envelope flags {flags:#06x} are not supported by this build"),
        ));
    }
    if flags & FLAG_TOMBSTONE != 0 {
        return Ok(Entry::Tombstone(meta));
    }
    Ok(Entry::Live(Record {
        meta,
        codec: CodecId(bytes[CODEC_OFFSET]),
        payload: bytes.slice(HEADER_LEN..),
    }))
}

fn encode_parts(codec: CodecId, flags: u16, meta: &Meta, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + payload.len());
    b.put_slice(&MAGIC);
    b.put_u8(FORMAT_VERSION);
    b.put_u8(codec.0);
    b.put_u16(flags);
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_u64(meta.version.as_u64());
    b.put_u64(meta.created_at);
    b.put_u64(meta.updated_at);
    b.put_u64(meta.expires_at);
    b.put_u64(meta.max_expires_at);
    b.put_slice(payload);
    b.freeze()
}

/// Reads and checks only the header of an envelope.
///
/// # Errors
/// As [`Record::decode`].
pub fn decode_header(bytes: &[u8], namespace: &str) -> Result<Meta> {
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 4 && bytes[..4] == MAGIC {
            return Err(Error::corrupt(
                namespace,
                format!(
                    "truncated envelope: {} bytes, the header alone is {HEADER_LEN}",
                    bytes.len()
                ),
            ));
        }
        return Err(Error::corrupt(
            namespace,
            "not a session envelope (too short, no magic)",
        ));
    }
    if bytes[..4] != MAGIC {
        return Err(Error::corrupt(
            namespace,
            "not a session envelope (bad magic); was this key written by another program?",
        ));
    }
    if bytes[FORMAT_OFFSET] != FORMAT_VERSION {
        return Err(Error::corrupt(
            namespace,
            format!(
                "envelope format version {} is not supported by this build (it reads {FORMAT_VERSION})",
                bytes[4]
            ),
        ));
    }
    let codec = CodecId(bytes[5]);
    if !codec.is_known() {
        return Err(Error::corrupt(namespace, format!("unknown codec id {}", codec.0)));
    }
    let declared = u32_at(bytes, PAYLOAD_LEN_OFFSET) as usize;
    let actual = bytes.len() - HEADER_LEN;
    if declared != actual {
        return Err(Error::corrupt(
            namespace,
            format!("payload length mismatch: header says {declared} bytes, value has {actual} (truncated?)"),
        ));
    }
    Ok(Meta {
        version: Version::from_u64(u64_at(bytes, VERSION_OFFSET)),
        created_at: u64_at(bytes, CREATED_AT_OFFSET),
        updated_at: u64_at(bytes, UPDATED_AT_OFFSET),
        expires_at: u64_at(bytes, EXPIRES_AT_OFFSET),
        max_expires_at: u64_at(bytes, MAX_EXPIRES_AT_OFFSET),
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            meta: Meta {
                version: Version::from_u64(7),
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_000_500,
                expires_at: 1_700_003_600_000,
                max_expires_at: 0,
            },
            codec: CodecId::JSON,
            payload: Bytes::from_static(br#"{"a":1}"#),
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let bytes = r.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 7);
        assert_eq!(&bytes[..4], b"SESS");
        assert_eq!(Record::decode(&bytes, "task").unwrap(), r);
    }

    #[test]
    fn header_layout_is_fixed() {
        let b = sample().encode();
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 1);
        assert_eq!(&b[8..12], &7u32.to_be_bytes());
        assert_eq!(&b[12..20], &7u64.to_be_bytes());
        assert_eq!(&b[36..44], &1_700_003_600_000u64.to_be_bytes());
    }

    /// The example in docs/format.md, byte for byte.
    #[test]
    fn matches_the_documented_example() {
        let r = Record {
            meta: Meta {
                version: Version::from_u64(7),
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_000_500,
                expires_at: 1_700_003_600_000,
                max_expires_at: 0,
            },
            codec: CodecId::JSON,
            payload: Bytes::from_static(br#"{"a":1}"#),
        };
        let hex: Vec<String> = r.encode().iter().map(|b| format!("{b:02x}")).collect();
        let doc = "53 45 53 53 01 01 00 00 00 00 00 07 \
                   00 00 00 00 00 00 00 07 \
                   00 00 01 8b cf e5 68 00 \
                   00 00 01 8b cf e5 69 f4 \
                   00 00 01 8b d0 1c 56 80 \
                   00 00 00 00 00 00 00 00 \
                   7b 22 61 22 3a 31 7d";
        assert_eq!(
            hex.join(" "),
            doc.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn rejects_foreign_truncated_and_unknown() {
        let good = sample().encode();
        let cases: Vec<Bytes> = vec![
            Bytes::from_static(b"hello"),
            Bytes::from_static(b"{\"json\":\"not an envelope at all, long enough to pass the length\"}"),
            good.slice(..30),
            good.slice(..good.len() - 1),
            {
                let mut v = good.to_vec();
                v[4] = 9;
                Bytes::from(v)
            },
            {
                let mut v = good.to_vec();
                v[5] = 200;
                Bytes::from(v)
            },
            Bytes::new(),
        ];
        for c in cases {
            let e = Record::decode(&c, "task").unwrap_err();
            assert!(
                matches!(e, Error::Corrupt { ref namespace, .. } if namespace == "task"),
                "{e}"
            );
        }
    }

    #[test]
    fn deadline_is_capped() {
        let m = Meta {
            expires_at: 100,
            max_expires_at: 50,
            ..Meta::default()
        };
        assert_eq!(m.deadline(), 50);
        assert!(m.is_expired(50));
        assert!(!m.is_expired(49));
        assert_eq!(cap_deadline(100, 0), 100);
    }
}
