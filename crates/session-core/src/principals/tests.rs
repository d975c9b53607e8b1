//! Unit tests of the principal index: its stored bytes, its ids and the order a revoke ends
//! sessions in.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::CodecId;
use crate::envelope::Record;
use crate::id::SessionId;
use crate::principal::Principal;

use super::index::{index_key, is_index_id, put_id, Bound, Index};
use super::revoke::sources_first;
use super::{is_principal_index, parse_stored_id, principal_index_id};

fn id(s: &str) -> SessionId {
    SessionId::parse(s).unwrap_or_else(|_| unreachable!())
}

#[test]
fn an_index_round_trips_and_bad_bytes_are_corrupt() {
    let index = Index {
        entries: vec![
            Bound {
                id: id("aaaaaaaaaaaaaaaaaaaaaa"),
                until: 5,
                at: 1,
                bound_at: 1,
                revoking: true,
                from: None,
            },
            Bound {
                id: id(&"b".repeat(128)),
                until: u64::MAX,
                at: 2,
                bound_at: 1,
                revoking: false,
                from: Some(id("cccccccccccccccccccccc")),
            },
        ],
    };
    let record = |payload: Bytes| Record::new(CodecId::RAW, payload, 10);
    let bytes = index.encode();
    assert_eq!(
        Index::decode(&record(bytes.clone()), "t").ok(),
        Some(index.clone())
    );
    assert_eq!(index.deadline(), u64::MAX);
    for cut in 0..bytes.len() {
        assert!(Index::decode(&record(bytes.slice(..cut)), "t").is_err(), "{cut}");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(
        Index::decode(&record(Bytes::from(longer)), "t").is_err(),
        "trailing bytes"
    );
    let sealed = Record::new(CodecId::SEALED, bytes, 10);
    assert!(Index::decode(&sealed, "t").is_err(), "not raw");
    let huge = Bytes::from_static(&[1, 0xff, 0xff]);
    assert!(Index::decode(&record(huge), "t").is_err());
}

#[test]
fn a_format_1_index_reads_with_its_entry_times_as_binding_times() {
    let mut b = BytesMut::new();
    b.put_u8(1);
    b.put_u16(1);
    put_id(&mut b, Some(&id("aaaaaaaaaaaaaaaaaaaaaa")));
    b.put_u64(9);
    b.put_u64(7);
    put_id(&mut b, None);
    let index = Index::decode(&Record::new(CodecId::RAW, b.freeze(), 10), "t").unwrap();
    assert_eq!(index.entries.len(), 1);
    assert_eq!((index.entries[0].at, index.entries[0].bound_at), (7, 7));
    assert!(Index::decode(
        &Record::new(CodecId::RAW, Bytes::from_static(&[3, 0, 0]), 10),
        "t"
    )
    .is_err());
}

#[test]
fn sources_come_before_the_sessions_rotated_from_them() {
    let entry = |name: &str, from: Option<&str>| Bound {
        id: id(&name.repeat(22)),
        until: 9,
        at: 1,
        bound_at: 1,
        revoking: false,
        from: from.map(|f| id(&f.repeat(22))),
    };
    // c was rotated from b, b from a; d stands alone; e comes from an id not listed.
    let order = sources_first(vec![
        entry("c", Some("b")),
        entry("d", None),
        entry("b", Some("a")),
        entry("e", Some("z")),
        entry("a", None),
    ]);
    let names: Vec<char> = order
        .iter()
        .map(|e| e.id.as_str().chars().next().unwrap_or('?'))
        .collect();
    assert_eq!(names, vec!['d', 'e', 'a', 'b', 'c']);
    // A cycle (not made by this code) ends.
    let cycle = sources_first(vec![entry("a", Some("b")), entry("b", Some("a"))]);
    assert_eq!(cycle.len(), 2);
}

#[test]
fn index_ids_are_told_from_session_ids() {
    let p = Principal::new("alice@example.com").unwrap_or_else(|_| unreachable!());
    let key = index_key(
        &crate::key::Namespace::new("task").unwrap_or_else(|_| unreachable!()),
        &p,
    );
    assert!(is_principal_index(&key) && is_index_id(key.id.as_str()));
    assert!(!is_index_id("aaaaaaaaaaaaaaaaaaaaaa") && !is_index_id("p.") && !is_index_id("p.a:b"));
    assert!(!is_index_id("p..") && !is_index_id("p...a") && !is_index_id("p.a.b"));
    let derived = principal_index_id("abc").unwrap_or_else(|| unreachable!());
    assert_eq!(derived.as_str(), "p..abc");
    assert!(is_index_id(derived.as_str()) && principal_index_id("a.b").is_none());
    assert_eq!(parse_stored_id(key.id.as_str()), Some(key.id.clone()));
    assert_eq!(parse_stored_id("p.a:b"), None);
}
