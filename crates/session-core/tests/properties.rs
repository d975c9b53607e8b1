//! Property tests: decoding arbitrary bytes and parsing arbitrary strings never panics.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use bytes::Bytes;
use proptest::prelude::*;
use session_core::backend::{decode_header, decode_payload, CodecId, Record, HEADER_LEN};
use session_core::{Error, KeyPrefix, Meta, Namespace, SessionId, Version};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let b = Bytes::from(bytes);
        match Record::decode(&b, "task") {
            Ok(r) => prop_assert_eq!(r.encode(), b),
            Err(e) => { let ok = matches!(e, Error::Corrupt { .. }); prop_assert!(ok); }
        }
    }

    #[test]
    fn decoding_mutated_envelopes_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        flips in proptest::collection::vec((0usize..128, any::<u8>()), 0..4),
        cut in 0usize..140,
    ) {
        let r = Record { meta: Meta { version: Version::from_u64(3), created_at: 1, updated_at: 2, expires_at: 9, max_expires_at: 0 },
                         codec: CodecId::JSON, payload: Bytes::from(payload) };
        let mut v = r.encode().to_vec();
        for (at, x) in flips {
            if at < v.len() { v[at] ^= x; }
        }
        v.truncate(cut);
        let b = Bytes::from(v);
        let _ = Record::decode(&b, "task");
        let _ = decode_header(&b, "task");
    }

    #[test]
    fn typed_decoding_arbitrary_payloads_never_panics(codec in 0u8..4, payload in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_payload::<std::collections::BTreeMap<String, Vec<u32>>>(CodecId(codec), &payload, "task");
        let _ = decode_payload::<(String, u64, Option<bool>)>(CodecId(codec), &payload, "task");
    }

    #[test]
    fn parsing_arbitrary_strings_never_panics(s in ".{0,200}") {
        match SessionId::parse(&s) {
            Ok(id) => {
                prop_assert!(id.as_str().len() >= 16 && id.as_str().len() <= 128);
                prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            }
            Err(e) => { let ok = matches!(e, Error::InvalidId { .. }); prop_assert!(ok); }
        }
        let _ = Namespace::new(&s);
        let _ = KeyPrefix::new(&s);
    }

    #[test]
    fn valid_ids_round_trip(s in "[A-Za-z0-9_-]{16,128}") {
        let id = SessionId::parse(&s).unwrap();
        prop_assert_eq!(id.as_str(), s.as_str());
    }

    #[test]
    fn header_round_trips(version: u64, created: u64, updated: u64, expires: u64, max: u64) {
        let meta = Meta { version: Version::from_u64(version), created_at: created, updated_at: updated, expires_at: expires, max_expires_at: max };
        let r = Record { meta, codec: CodecId::BINCODE, payload: Bytes::from_static(b"p") };
        let b = r.encode();
        prop_assert_eq!(b.len(), HEADER_LEN + 1);
        prop_assert_eq!(decode_header(&b, "x").unwrap(), meta);
    }
}
