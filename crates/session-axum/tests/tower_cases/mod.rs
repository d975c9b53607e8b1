//! The cases of `TowerSessionsStore`, shared by `tower_sessions_store.rs` (memory, a fallback of
//! two memory stores) and `redis_tower_sessions.rs` (each Redis topology).
//!
//! Ported from upstream (github.com/maxcountryman/tower-sessions, v0.14.0 and main):
//! * `memory-store/src/lib.rs`: `test_create`, `test_save`, `test_load`, `test_delete`
//!   (`create_save_load_delete_round_trip`, `save_upserts_a_session_never_created`) and
//!   `test_create_id_collision` (`create_never_overwrites_an_existing_id`, and concurrently:
//!   `concurrent_creates_of_one_id_get_distinct_ids`);
//! * `tower-sessions-core/src/session_store.rs`: the same four store cases (there against a
//!   mock); its `CachingSessionStore` cases test the caching wrapper, not a store;
//! * `tower-sessions-core/src/session.rs`: `test_cycle_id` (`session_cycle_id_keeps_the_data`);
//! * `tests/common/mod.rs` (`route_tests!`, run by `tests/integration-tests.rs`), at the level of
//!   `tower_sessions_core::Session` instead of HTTP: `insert_session` + `get_session`
//!   (`session_insert_save_and_get`), `bogus_session_cookie` (`missing_ids_load_none`: the
//!   all-zero id `AAAAAAAAAAAAAAAAAAAAAA`), `remove_last_value` (`session_remove_last_value`),
//!   `cycle_session_id`, `flush_session` (`session_flush_deletes`). The cookie attributes those
//!   tests check (`Max-Age`, `SameSite`, domain) are the layer's, not the store's.
//!
//! Upstream's tests cannot be run from outside as they are: the store cases are `#[cfg(test)]`
//! unit tests hard-wired to upstream's own `MemoryStore` (or a mockall mock), and the route
//! tests need the full `tower-sessions` crate, `tower-cookies` and upstream's `common` module.

#![allow(
    dead_code,
    unused_imports,
    reason = "each including test target uses its own part"
)]

pub(crate) use std::collections::{HashMap, HashSet};
pub(crate) use std::sync::Arc;
pub(crate) use std::time::Duration as StdDuration;

pub(crate) use serde_json::{json, Value};
pub(crate) use session_axum::TowerSessionsStore;
pub(crate) use session_core::backend::{now_ms, CodecId, Record};
pub(crate) use session_core::{Namespace, SessionId, SessionKey, SessionStore as _};
pub(crate) use time::{Date, Duration, OffsetDateTime, Time};
pub(crate) use tower_sessions_core::session::{Id, Record as TowerRecord};
pub(crate) use tower_sessions_core::session_store::Error as TowerError;
pub(crate) use tower_sessions_core::{Expiry, Session, SessionStore};

pub(crate) fn record(data: &[(&str, Value)], expiry_date: OffsetDateTime) -> TowerRecord {
    TowerRecord {
        id: Id::default(),
        data: data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        expiry_date,
    }
}

pub(crate) fn in_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::hours(1)
}

/// `date` as the store keeps it: to the millisecond, rounded down.
pub(crate) fn to_ms(date: OffsetDateTime) -> OffsetDateTime {
    let ns = date.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(ns - ns.rem_euclid(1_000_000)).unwrap()
}

pub(crate) fn key_of(store: &TowerSessionsStore, id: &Id) -> SessionKey {
    SessionKey::new(
        store.namespace().clone(),
        SessionId::parse(&id.to_string()).unwrap(),
    )
}

/// Every case, as one test each, against the store `$open` (a future of
/// `Option<TowerSessionsStore>`; `None` skips the case) gives.
macro_rules! tower_cases {
    ($open:expr) => {
        use $crate::tower_cases::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn create_save_load_delete_round_trip() {
            let Some(store) = $open.await else {
                return;
            };
            let mut r = record(&[("foo", json!(42))], in_an_hour());
            let proposed = r.id;
            store.create(&mut r).await.unwrap();
            assert_eq!(r.id, proposed, "a free id is kept");

            let loaded = store.load(&r.id).await.unwrap().expect("created");
            assert_eq!(loaded.id, r.id);
            assert_eq!(loaded.data, r.data);
            assert_eq!(loaded.expiry_date, to_ms(r.expiry_date), "expiry to the millisecond");

            r.data.insert("foo".into(), json!(43));
            r.data.insert("bar".into(), json!("baz"));
            r.expiry_date = in_an_hour() + Duration::minutes(30);
            store.save(&r).await.unwrap();
            let loaded = store.load(&r.id).await.unwrap().expect("saved");
            assert_eq!(loaded.data, r.data);
            assert_eq!(loaded.expiry_date, to_ms(r.expiry_date));

            store.delete(&r.id).await.unwrap();
            assert!(store.load(&r.id).await.unwrap().is_none());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn save_upserts_a_session_never_created() {
            let Some(store) = $open.await else {
                return;
            };
            let r = record(&[("k", json!("v"))], in_an_hour());
            store.save(&r).await.unwrap();
            assert_eq!(store.load(&r.id).await.unwrap().unwrap().data, r.data);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn create_never_overwrites_an_existing_id() {
            let Some(store) = $open.await else {
                return;
            };
            let mut first = record(&[("owner", json!("first"))], in_an_hour());
            store.create(&mut first).await.unwrap();
            let mut second = record(&[("owner", json!("second"))], in_an_hour());
            second.id = first.id;
            store.create(&mut second).await.unwrap();
            assert_ne!(first.id, second.id, "the colliding create got a new id");
            assert_eq!(
                store.load(&first.id).await.unwrap().unwrap().data["owner"],
                json!("first")
            );
            assert_eq!(
                store.load(&second.id).await.unwrap().unwrap().data["owner"],
                json!("second")
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_creates_of_one_id_get_distinct_ids() {
            let Some(store) = $open.await else {
                return;
            };
            let id = Id::default();
            let tasks: Vec<_> = (0..16)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut r = record(&[("n", json!(n))], in_an_hour());
                        r.id = id;
                        store.create(&mut r).await.unwrap();
                        (n, r.id)
                    })
                })
                .collect();
            // Every create first: a delete below while a create of the same id is still running
            // would free the id for it.
            let mut created = Vec::new();
            for task in tasks {
                created.push(task.await.unwrap());
            }
            let mut ids = HashSet::new();
            let mut kept = 0;
            for (n, got) in created {
                assert!(ids.insert(got), "two creates share an id");
                kept += usize::from(got == id);
                let loaded = store.load(&got).await.unwrap().expect("each create stored its session");
                assert_eq!(loaded.data["n"], json!(n), "a create overwrote another");
            }
            assert_eq!(kept, 1, "exactly one create keeps the proposed id");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn missing_ids_load_none() {
            let Some(store) = $open.await else {
                return;
            };
            assert!(store.load(&Id::default()).await.unwrap().is_none());
            // Upstream's `bogus_session_cookie`: `AAAAAAAAAAAAAAAAAAAAAA`.
            assert_eq!(Id(0).to_string(), "AAAAAAAAAAAAAAAAAAAAAA");
            assert!(store.load(&Id(0)).await.unwrap().is_none());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn deleting_a_missing_id_is_ok() {
            let Some(store) = $open.await else {
                return;
            };
            store.delete(&Id::default()).await.unwrap();
            let mut r = record(&[], in_an_hour());
            store.create(&mut r).await.unwrap();
            store.delete(&r.id).await.unwrap();
            store.delete(&r.id).await.unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn expiry_is_honoured_on_load() {
            let Some(store) = $open.await else {
                return;
            };
            let mut r = record(&[("k", json!(1))], OffsetDateTime::now_utc() + Duration::milliseconds(400));
            store.create(&mut r).await.unwrap();
            assert!(store.load(&r.id).await.unwrap().is_some());
            tokio::time::sleep(StdDuration::from_millis(700)).await;
            assert!(store.load(&r.id).await.unwrap().is_none(), "loaded after its expiry");
            // Its id is free again.
            let mut again = record(&[], in_an_hour());
            again.id = r.id;
            store.create(&mut again).await.unwrap();
            assert_eq!(again.id, r.id);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_save_with_a_past_expiry_leaves_no_session() {
            let Some(store) = $open.await else {
                return;
            };
            for past in [
                OffsetDateTime::now_utc() - Duration::seconds(5),
                OffsetDateTime::UNIX_EPOCH,
                OffsetDateTime::UNIX_EPOCH - Duration::days(365),
                OffsetDateTime::new_utc(Date::MIN, Time::MIDNIGHT),
            ] {
                let mut r = record(&[("k", json!(1))], in_an_hour());
                store.create(&mut r).await.unwrap();
                r.expiry_date = past;
                store.save(&r).await.unwrap();
                assert!(store.load(&r.id).await.unwrap().is_none(), "{past}");
                // Nothing is left under the id: a create keeps it.
                let mut again = record(&[], in_an_hour());
                again.id = r.id;
                store.create(&mut again).await.unwrap();
                assert_eq!(again.id, r.id, "{past}");
            }
            // Saving an already-expired session that was never stored is fine too.
            let r = record(&[], OffsetDateTime::now_utc() - Duration::seconds(1));
            store.save(&r).await.unwrap();
            assert!(store.load(&r.id).await.unwrap().is_none());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_create_with_a_past_expiry_writes_nothing() {
            let Some(store) = $open.await else {
                return;
            };
            let mut live = record(&[("owner", json!("live"))], in_an_hour());
            store.create(&mut live).await.unwrap();
            for past in [OffsetDateTime::now_utc() - Duration::seconds(1), OffsetDateTime::UNIX_EPOCH] {
                let mut dead = record(&[("owner", json!("dead"))], past);
                store.create(&mut dead).await.unwrap();
                assert!(store.load(&dead.id).await.unwrap().is_none());
                // Not even over a live session under the same id.
                dead.id = live.id;
                store.create(&mut dead).await.unwrap();
                assert_eq!(
                    store.load(&live.id).await.unwrap().unwrap().data["owner"],
                    json!("live")
                );
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn far_future_expiry_dates_are_kept() {
            let Some(store) = $open.await else {
                return;
            };
            for far in [
                OffsetDateTime::now_utc() + Duration::days(365 * 100),
                OffsetDateTime::new_utc(Date::MAX, Time::MAX),
            ] {
                let mut r = record(&[("k", json!(1))], far);
                store.create(&mut r).await.unwrap();
                let loaded = store.load(&r.id).await.unwrap().expect("a far deadline is alive");
                assert_eq!(loaded.expiry_date, to_ms(far));
                store.save(&r).await.unwrap();
                assert!(store.load(&r.id).await.unwrap().is_some());
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn json_values_of_every_kind_survive() {
            let Some(store) = $open.await else {
                return;
            };
            let data = [
                ("null", Value::Null),
                ("true", json!(true)),
                ("false", json!(false)),
                ("i64_min", json!(i64::MIN)),
                ("i64_max", json!(i64::MAX)),
                ("u64_max", json!(u64::MAX)),
                ("float", json!(0.1)),
                ("pi", json!(std::f64::consts::PI)),
                ("tiny", json!(f64::MIN_POSITIVE)),
                ("huge", json!(f64::MAX)),
                ("negative_zero", json!(-0.0)),
                ("string", json!("ünïcödé \u{1f980} \"quoted\" \\ \n\t")),
                ("empty_string", json!("")),
                ("array", json!([1, "two", null, [3.5], {"four": 4}])),
                ("object", json!({"nested": {"deeper": [true, {"deepest": "x"}]}})),
                ("empty_object", json!({})),
                ("", json!("an empty key")),
                ("key with spaces and ünïcödé", json!(7)),
            ];
            let mut r = record(&data, in_an_hour());
            store.create(&mut r).await.unwrap();
            let loaded = store.load(&r.id).await.unwrap().unwrap();
            assert_eq!(loaded.data, r.data);
            // An empty map too.
            let mut empty = record(&[], in_an_hour());
            store.create(&mut empty).await.unwrap();
            assert!(store.load(&empty.id).await.unwrap().unwrap().data.is_empty());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn floats_round_trip_exactly() {
            // The crate turns on serde_json's `float_roundtrip`: without it 1.5e-300 would read
            // back as 1.4999999999999998e-300.
            let Some(store) = $open.await else {
                return;
            };
            let floats: [f64; 5] = [1.5e-300, 0.1 + 0.2, 1.0 / 3.0, -2.718281828459045e123, 5e-324];
            let data: Vec<(String, Value)> = floats.iter().enumerate().map(|(i, f)| (i.to_string(), json!(f))).collect();
            let mut r = TowerRecord { id: Id::default(), data: data.into_iter().collect(), expiry_date: in_an_hour() };
            store.create(&mut r).await.unwrap();
            let loaded = store.load(&r.id).await.unwrap().unwrap();
            for (i, f) in floats.iter().enumerate() {
                let got = loaded.data[&i.to_string()].as_f64().unwrap();
                assert_eq!(got.to_bits(), f.to_bits(), "{f:e} came back as {got:e}");
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn large_data_round_trips_and_over_the_limit_is_an_encode_error() {
            let Some(store) = $open.await else {
                return;
            };
            let big = "x".repeat(512 * 1024);
            let mut r = record(&[("big", json!(big))], in_an_hour());
            store.create(&mut r).await.unwrap();
            assert_eq!(store.load(&r.id).await.unwrap().unwrap().data, r.data);

            let small = store.clone().with_max_bytes(1024);
            let mut over = record(&[("big", json!("y".repeat(2048)))], in_an_hour());
            let e = small.create(&mut over).await.unwrap_err();
            assert!(matches!(e, TowerError::Encode(_)), "{e}");
            assert!(store.load(&over.id).await.unwrap().is_none(), "nothing written");
            let e = small.save(&over).await.unwrap_err();
            assert!(matches!(e, TowerError::Encode(_)), "{e}");
            assert!(store.load(&over.id).await.unwrap().is_none(), "nothing written");
            // Over the store's own limit (1 MiB by default) as well.
            let mut huge = record(&[("big", json!("z".repeat(2 * 1024 * 1024)))], in_an_hour());
            let e = store.clone().with_max_bytes(usize::MAX).create(&mut huge).await.unwrap_err();
            assert!(matches!(e, TowerError::Encode(_)), "{e}");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn undecodable_values_are_decode_errors_without_the_id() {
            let Some(store) = $open.await else {
                return;
            };
            let payloads: [(CodecId, &[u8]); 4] = [
                (CodecId::JSON, b"not json"),
                (CodecId::JSON, b"[1, 2, 3]"),
                (CodecId::JSON, br#"{"k": 1"#),
                (CodecId::RAW, br#"{"k": 1}"#),
            ];
            for (codec, payload) in payloads {
                let id = Id::default();
                let raw = Record::new(codec, payload.to_vec(), now_ms() + 60_000);
                store.store().save(&key_of(&store, &id), &raw).await.unwrap();
                let e = store.load(&id).await.unwrap_err();
                assert!(matches!(e, TowerError::Decode(_)), "{e}");
                assert!(!e.to_string().contains(&id.to_string()), "{e}");
                // A write replaces it; a delete removes it.
                let mut r = record(&[("k", json!(1))], in_an_hour());
                r.id = id;
                store.save(&r).await.unwrap();
                assert_eq!(store.load(&id).await.unwrap().unwrap().data, r.data);
                store.delete(&id).await.unwrap();
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn namespaces_do_not_share_sessions() {
            let Some(store) = $open.await else {
                return;
            };
            let other = TowerSessionsStore::new(store.store().clone(), Namespace::new("other").unwrap());
            let mut r = record(&[("k", json!(1))], in_an_hour());
            store.create(&mut r).await.unwrap();
            assert!(other.load(&r.id).await.unwrap().is_none());
            let mut same_id = record(&[("k", json!(2))], in_an_hour());
            same_id.id = r.id;
            other.create(&mut same_id).await.unwrap();
            assert_eq!(same_id.id, r.id, "another namespace's id is free here");
            other.delete(&r.id).await.unwrap();
            assert_eq!(store.load(&r.id).await.unwrap().unwrap().data["k"], json!(1));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn session_insert_save_and_get() {
            let Some(store) = $open.await else {
                return;
            };
            let store = Arc::new(store);
            let expiry = Some(Expiry::OnInactivity(Duration::hours(1)));
            let session = Session::new(None, store.clone(), expiry);
            session.insert("foo", 42).await.unwrap();
            session.insert("user", HashMap::from([("name", "ada")])).await.unwrap();
            session.save().await.unwrap();
            let id = session.id().expect("saved: an id");

            let again = Session::new(Some(id), store.clone(), expiry);
            assert_eq!(again.get::<usize>("foo").await.unwrap(), Some(42));
            assert_eq!(
                again.get::<HashMap<String, String>>("user").await.unwrap().unwrap()["name"],
                "ada"
            );
            assert_eq!(again.get_value("missing").await.unwrap(), None);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn session_remove_last_value() {
            let Some(store) = $open.await else {
                return;
            };
            let store = Arc::new(store);
            let session = Session::new(None, store.clone(), None);
            session.insert("foo", 42).await.unwrap();
            session.save().await.unwrap();
            let id = session.id().unwrap();

            let again = Session::new(Some(id), store.clone(), None);
            again.remove_value("foo").await.unwrap();
            again.save().await.unwrap();
            let third = Session::new(Some(id), store, None);
            assert_eq!(third.get_value("foo").await.unwrap(), None);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn session_cycle_id_keeps_the_data() {
            let Some(store) = $open.await else {
                return;
            };
            let store = Arc::new(store);
            let session = Session::new(None, store.clone(), None);
            session.insert("foo", 42).await.unwrap();
            session.save().await.unwrap();
            let first = session.id().unwrap();

            let again = Session::new(Some(first), store.clone(), None);
            again.cycle_id().await.unwrap();
            again.save().await.unwrap();
            let second = again.id().unwrap();
            assert_ne!(first, second);
            assert!(store.load(&first).await.unwrap().is_none(), "the old id is dead");
            let third = Session::new(Some(second), store, None);
            assert_eq!(third.get::<usize>("foo").await.unwrap(), Some(42));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn session_flush_deletes() {
            let Some(store) = $open.await else {
                return;
            };
            let store = Arc::new(store);
            let session = Session::new(None, store.clone(), None);
            session.insert("foo", 42).await.unwrap();
            session.save().await.unwrap();
            let id = session.id().unwrap();
            session.flush().await.unwrap();
            assert!(session.id().is_none());
            assert!(store.load(&id).await.unwrap().is_none());
            // A later request with the old cookie starts afresh.
            let stale = Session::new(Some(id), store, None);
            assert_eq!(stale.get_value("foo").await.unwrap(), None);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_unknown_id_from_a_cookie_becomes_a_new_session() {
            let Some(store) = $open.await else {
                return;
            };
            let store = Arc::new(store);
            let session = Session::new(Some(Id(0)), store.clone(), None);
            session.insert("foo", 1).await.unwrap();
            session.save().await.unwrap();
            let id = session.id().unwrap();
            assert_ne!(id, Id(0), "a new id, not the client's");
            assert!(store.load(&Id(0)).await.unwrap().is_none());
            assert!(store.load(&id).await.unwrap().is_some());
        }
    };
}
