//! Unit tests of the entry layout and its compact metadata.

use super::*;
use crate::compact::{decode_meta, encode_meta, MAX_META_LEN};
use session_core::Version;

/// A load's view of an entry: the session, or `None` for a tombstone.
trait ToRecord {
    fn to_record(&self, namespace: &str) -> Result<Option<Record>, Error>;
}

impl ToRecord for Entry {
    fn to_record(&self, namespace: &str) -> Result<Option<Record>, Error> {
        Ok(match self.to_entry(namespace)? {
            Envelope::Live(record) => Some(record),
            Envelope::Tombstone(_) => None,
        })
    }
}

fn meta(version: u64, created_at: u64, updated_at: u64, expires_at: u64, max_expires_at: u64) -> Meta {
    Meta {
        version: Version::from_u64(version),
        created_at,
        updated_at,
        expires_at,
        max_expires_at,
    }
}

#[test]
fn compact_metadata_round_trips_every_value() {
    let now = 1_764_000_000_000;
    for m in [
        meta(1, now, now, now + 3_600_000, 0),
        meta(7, now, now + 5, now + 3_600_000, now + 86_400_000),
        meta(0, 0, 0, 0, 0),
        meta(u64::MAX, u64::MAX, 0, u64::MAX, 1),
        meta(3, now, now - 10, now - 20, u64::MAX),
        meta(u64::MAX, 1, u64::MAX, 0, u64::MAX),
    ] {
        let mut buf = [0u8; MAX_META_LEN];
        let len = encode_meta(&m, &mut buf);
        assert_eq!(decode_meta(&buf[..len]), Some(m));
    }
    let mut buf = [0u8; MAX_META_LEN];
    let typical = encode_meta(&meta(1, now, now, now + 3_600_000, 0), &mut buf);
    assert!(
        typical <= 21,
        "a typical session's metadata takes {typical} bytes"
    );
}

#[test]
fn an_entry_keeps_key_metadata_and_payload() {
    let m = meta(2, 100, 200, 5_000, 4_000);
    let record = Record {
        meta: m,
        codec: CodecId::JSON,
        payload: Bytes::from_static(b"{\"a\":1}"),
    };
    let entry = Entry::new("task", "abcdefghijklmnop", &Value::record(m, &record));
    assert!(entry.is("task", "abcdefghijklmnop"));
    assert!(!entry.is("task", "abcdefghijklmnoq"));
    assert!(!entry.is("tas", "kabcdefghijklmnop"));
    assert_eq!(entry.parts(), ("task", "abcdefghijklmnop"));
    assert_eq!(entry.deadline(), 4_000);
    let loaded = entry.to_record("task").unwrap().unwrap();
    assert_eq!(loaded, record);
    assert!(matches!(entry.state("task", 3_999), State::Live(x) if x == m));
    assert!(matches!(entry.state("task", 4_000), State::Expired));
    let moved = entry.rebuilt("task", "qrstuvwxyz012345", None);
    assert!(moved.is("task", "qrstuvwxyz012345"));
    assert_eq!(moved.to_record("task").unwrap().unwrap(), record);
    let retimed = entry.rebuilt("task", "abcdefghijklmnop", Some(meta(2, 100, 200, 3_000, 4_000)));
    assert_eq!(retimed.deadline(), 3_000);
    assert_eq!(
        retimed.to_record("task").unwrap().unwrap().payload,
        record.payload
    );
    let empty = Record {
        payload: Bytes::new(),
        ..record
    };
    let entry = Entry::new("task", "abcdefghijklmnop", &Value::record(m, &empty));
    assert_eq!(entry.to_record("task").unwrap().unwrap(), empty);
}

#[test]
fn writes_in_place_only_when_unshared_and_fitting() {
    let m = meta(1, 100, 100, 5_000, 0);
    let rec = |payload: &'static [u8], m: Meta| Record {
        meta: m,
        codec: CodecId::RAW,
        payload: Bytes::from_static(payload),
    };
    let first = rec(b"0123456789abcdef0123456789", m);
    let mut entry = Entry::new("ns", "abcdefghijklmnop", &Value::record(m, &first));
    // Same size: in place.
    let m2 = meta(2, 100, 200, 6_000, 0);
    let second = rec(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", m2);
    assert!(entry.overwrite(&Value::record(m2, &second)));
    assert_eq!(entry.to_record("ns").unwrap().unwrap(), second);
    assert!(entry.is("ns", "abcdefghijklmnop"));
    // Smaller: in place, the padding grows.
    let third = rec(b"xyz", m2);
    assert!(entry.overwrite(&Value::record(m2, &third)));
    assert_eq!(entry.to_record("ns").unwrap().unwrap(), third);
    // Larger than the allocation: refused, unchanged.
    let big = rec(&[7u8; 200], m2);
    assert!(!entry.overwrite(&Value::record(m2, &big)));
    assert_eq!(entry.to_record("ns").unwrap().unwrap(), third);
    // A loaded record shares the allocation: refused, and the loaded payload stays as read.
    let loaded = entry.to_record("ns").unwrap().unwrap();
    assert!(!entry.overwrite(&Value::record(m2, &second)));
    let m3 = meta(2, 100, 200, 9_000, 0);
    assert!(!entry.retime(&m3));
    drop(loaded);
    assert!(entry.retime(&m3));
    assert_eq!(entry.deadline(), 9_000);
    assert_eq!(entry.to_record("ns").unwrap().unwrap(), rec(b"xyz", m3));
    // A retime that makes the metadata longer shifts the payload.
    let long = meta(u64::MAX, 100, 200, 9_000, u64::MAX);
    assert!(entry.retime(&long));
    assert_eq!(entry.to_record("ns").unwrap().unwrap(), rec(b"xyz", long));
}

#[test]
fn a_tombstone_round_trips_through_the_entry_layout() {
    let m = meta(9, 1_000, 1_000, 61_000, 0);
    let entry = Entry::new("task", "abcdefghijklmnopqrstuv", &Value::Tomb { meta: m });
    assert!(entry.is("task", "abcdefghijklmnopqrstuv"));
    assert_eq!(entry.parts(), ("task", "abcdefghijklmnopqrstuv"));
    assert_eq!(entry.deadline(), 61_000);
    assert!(entry.is_tombstone());
    assert!(matches!(entry.state("task", 60_999), State::Tombstone(x) if x == m));
    assert!(matches!(entry.state("task", 61_000), State::Expired));
    // Absent to a load; its envelope is the header-only, flagged one.
    assert_eq!(entry.to_record("task").unwrap(), None);
    let envelope = entry.envelope();
    assert_eq!(envelope, encode_tombstone(&m));
    assert_eq!(envelope.len(), HEADER_LEN);
    assert_eq!(decode_entry(&envelope, "task").unwrap(), Envelope::Tombstone(m));
    // Moved or retimed, it stays a tombstone.
    let moved = entry.rebuilt("task", "0123456789abcdefghijkl", None);
    assert!(matches!(moved.state("task", 0), State::Tombstone(x) if x == m));
    let later = Meta {
        expires_at: 99_000,
        ..m
    };
    let extended = entry.rebuilt("task", "abcdefghijklmnopqrstuv", Some(later));
    assert_eq!(extended.deadline(), 99_000);
    assert!(matches!(extended.state("task", 61_000), State::Tombstone(x) if x == later));
    // A session's entry written over with a tombstone: in place only when the allocation
    // is the size of a new tombstone's, so that it never keeps a larger one alive.
    let record = Record {
        meta: meta(1, 500, 500, 70_000, 0),
        codec: CodecId::JSON,
        payload: Bytes::from_static(&[b'x'; 100]),
    };
    let mut e = Entry::new(
        "task",
        "abcdefghijklmnopqrstuv",
        &Value::record(record.meta, &record),
    );
    assert!(!e.is_tombstone());
    assert!(
        !e.overwrite(&Value::Tomb { meta: m }),
        "100 bytes would be left unused"
    );
    let mut e = entry.rebuilt("task", "abcdefghijklmnopqrstuv", None);
    assert!(
        e.overwrite(&Value::Tomb { meta: later }),
        "a tombstone over a tombstone: in place"
    );
    assert!(matches!(e.state("task", 0), State::Tombstone(x) if x == later));
    assert_eq!(e.to_record("task").unwrap(), None);
    // A session may take its place: in a new allocation when it does not fit, else in place.
    assert!(!e.overwrite(&Value::record(record.meta, &record)));
    let small = Record {
        payload: Bytes::from_static(b"1"),
        ..record
    };
    assert!(e.overwrite(&Value::record(small.meta, &small)));
    assert_eq!(e.to_record("task").unwrap(), Some(small));
    // A tombstone's metadata is never retimed as a session's (touch).
    let mut t = Entry::new("task", "abcdefghijklmnopqrstuv", &Value::Tomb { meta: m });
    assert!(!t.retime(&later));
}

#[test]
fn a_tombstone_is_charged_as_its_header_only_envelope() {
    let now = 1_764_000_000_000;
    let m = meta(9, now, now, now + 3_600_000, 0);
    let (namespace, id) = ("task", "abcdefghijklmnopqrstuv");
    let key_len = namespace.len() + 1 + id.len();
    let value = Value::Tomb { meta: m };
    let expected = (8 + key_len + HEADER_LEN) as u64 + crate::config::ENTRY_OVERHEAD_BYTES;
    assert_eq!(charge(8, key_len, &value), expected);
    let entry = Entry::new(namespace, id, &value);
    assert_eq!(
        entry.charge(8),
        expected,
        "the entry charges what its write reserved"
    );
    // The same as a session with an empty payload.
    let empty = Record {
        meta: m,
        codec: CodecId::RAW,
        payload: Bytes::new(),
    };
    assert_eq!(charge(8, key_len, &Value::record(m, &empty)), expected);
    // What it really takes: the entry header, the key and the compact metadata (20 bytes),
    // in one 96-byte malloc chunk (the README's figure).
    let needed = AT_KEY + key_len + entry.meta_len();
    assert_eq!(needed, 13 + 27 + 20);
    assert_eq!((ARC_HEADER + entry.0.len() + 8 + 15) & !15, 96);
}

#[test]
fn a_planted_tombstone_envelope_reads_as_a_tombstone() {
    let m = meta(4, 1_000, 1_000, 61_000, 0);
    let bytes = encode_tombstone(&m);
    let raw = Entry::new(
        "task",
        "abcdefghijklmnop",
        &Value::Raw {
            bytes: &bytes,
            deadline: 100_000,
        },
    );
    assert!(raw.is_tombstone());
    assert!(matches!(raw.state("task", 0), State::Tombstone(x) if x == m));
    assert!(
        matches!(raw.state("task", 61_000), State::Expired),
        "its envelope's deadline"
    );
    assert_eq!(raw.to_record("task").unwrap(), None);
    assert_eq!(raw.envelope(), bytes);
    let foreign = Entry::new(
        "task",
        "abcdefghijklmnop",
        &Value::Raw {
            bytes: b"not an envelope",
            deadline: 100_000,
        },
    );
    assert!(!foreign.is_tombstone());
    assert!(matches!(
        foreign.state("task", 0),
        State::Corrupt(Error::Corrupt { .. })
    ));
}
