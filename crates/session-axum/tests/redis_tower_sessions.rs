//! `TowerSessionsStore` over a `RedisStore`, per Redis topology: the core cases of
//! `tower_sessions_store.rs` (ported from upstream tower-sessions' store tests; see there).
//!
//! `cargo xtask test` runs this target once per topology with `SESSION_TEST_TOPOLOGY` and that
//! topology's URL set (see `testkit_redis::env`); the modules of the other topologies skip. With
//! `SESSION_TEST_REQUIRE_REDIS=1` a missing URL for the current topology fails instead of
//! skipping. By hand:
//! `SESSION_TEST_TOPOLOGY=standalone SESSION_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -p
//! session-axum --features tower-sessions --test redis_tower_sessions`.

#![cfg(feature = "tower-sessions")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::{json, Value};
use session_axum::TowerSessionsStore;
use session_core::backend::{now_ms, CodecId, Record};
use session_core::{KeyPrefix, Namespace, SessionId, SessionKey, SessionStore as _, StoreOptions};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::{topology_url, Topology};
use time::{Date, Duration, OffsetDateTime, Time};
use tower_sessions_core::session::{Id, Record as TowerRecord};
use tower_sessions_core::session_store::Error as TowerError;
use tower_sessions_core::{Expiry, Session, SessionStore};

/// The adapter over a Redis store of `topology`, under a key prefix of its own, or `None` to
/// skip (another topology under test, or no server configured and none required).
async fn open(topology: Topology) -> Option<TowerSessionsStore> {
    let target = topology_url(topology)?;
    let mut config = RedisConfig::new(target.url.clone());
    config.tls.ca_file = target.tls_ca.clone();
    config.tls.cert_file = target.tls_client_cert.clone();
    config.tls.key_file = target.tls_client_key.clone();
    // Generous for a loaded CI machine.
    config.timeout_ms = 2_000;
    config.unresponsive_timeout_ms = 5_000;
    config.connect_timeout_ms = 5_000;
    let store = RedisStore::builder(config)
        .options(StoreOptions::new(random_prefix()))
        .connect()
        .await
        .expect("Redis connects");
    Some(TowerSessionsStore::new(
        Arc::new(store),
        Namespace::new("tower").unwrap(),
    ))
}

/// A key prefix no other test run shares.
fn random_prefix() -> KeyPrefix {
    let id = SessionId::generate().unwrap();
    let tag: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    KeyPrefix::new(&format!("t{tag}:")).unwrap()
}

fn record(data: &[(&str, Value)], expiry_date: OffsetDateTime) -> TowerRecord {
    TowerRecord {
        id: Id::default(),
        data: data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        expiry_date,
    }
}

/// Long enough for any test, short enough not to litter a shared server for long.
fn soon() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::minutes(10)
}

/// `date` as the store keeps it: to the millisecond, rounded down.
fn to_ms(date: OffsetDateTime) -> OffsetDateTime {
    let ns = date.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(ns - ns.rem_euclid(1_000_000)).unwrap()
}

/// The cases, against the topology `$topology`.
macro_rules! cases {
    ($topology:expr) => {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn create_save_load_delete_round_trip() {
            let Some(store) = open($topology).await else {
                return;
            };
            let mut r = record(&[("foo", json!(42))], soon());
            let proposed = r.id;
            store.create(&mut r).await.unwrap();
            assert_eq!(r.id, proposed, "a free id is kept");
            let loaded = store.load(&r.id).await.unwrap().expect("created");
            assert_eq!((loaded.id, &loaded.data), (r.id, &r.data));
            assert_eq!(loaded.expiry_date, to_ms(r.expiry_date));

            r.data.insert("foo".into(), json!(43));
            r.expiry_date = soon() + Duration::minutes(1);
            store.save(&r).await.unwrap();
            let loaded = store.load(&r.id).await.unwrap().expect("saved");
            assert_eq!(loaded.data, r.data);
            assert_eq!(loaded.expiry_date, to_ms(r.expiry_date));

            store.delete(&r.id).await.unwrap();
            assert!(store.load(&r.id).await.unwrap().is_none());
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn save_upserts_a_session_never_created() {
            let Some(store) = open($topology).await else {
                return;
            };
            let r = record(&[("k", json!("v"))], soon());
            store.save(&r).await.unwrap();
            assert_eq!(store.load(&r.id).await.unwrap().unwrap().data, r.data);
            store.delete(&r.id).await.unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn create_never_overwrites_an_existing_id() {
            let Some(store) = open($topology).await else {
                return;
            };
            let mut first = record(&[("owner", json!("first"))], soon());
            store.create(&mut first).await.unwrap();
            let mut second = record(&[("owner", json!("second"))], soon());
            second.id = first.id;
            store.create(&mut second).await.unwrap();
            assert_ne!(first.id, second.id);
            assert_eq!(
                store.load(&first.id).await.unwrap().unwrap().data["owner"],
                json!("first")
            );
            assert_eq!(
                store.load(&second.id).await.unwrap().unwrap().data["owner"],
                json!("second")
            );
            store.delete(&first.id).await.unwrap();
            store.delete(&second.id).await.unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_creates_of_one_id_get_distinct_ids() {
            let Some(store) = open($topology).await else {
                return;
            };
            let id = Id::default();
            let tasks: Vec<_> = (0..16)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut r = record(&[("n", json!(n))], soon());
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
                let loaded = store.load(&got).await.unwrap().expect("stored");
                assert_eq!(loaded.data["n"], json!(n), "a create overwrote another");
                store.delete(&got).await.unwrap();
            }
            assert_eq!(kept, 1, "exactly one create keeps the proposed id");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn missing_ids_load_none_and_delete_ok() {
            let Some(store) = open($topology).await else {
                return;
            };
            assert!(store.load(&Id::default()).await.unwrap().is_none());
            assert!(store.load(&Id(0)).await.unwrap().is_none());
            store.delete(&Id::default()).await.unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn expiry_is_honoured_on_load() {
            let Some(store) = open($topology).await else {
                return;
            };
            let expiry = OffsetDateTime::now_utc() + Duration::milliseconds(500);
            let mut r = record(&[("k", json!(1))], expiry);
            store.create(&mut r).await.unwrap();
            assert!(store.load(&r.id).await.unwrap().is_some());
            tokio::time::sleep(StdDuration::from_millis(900)).await;
            assert!(store.load(&r.id).await.unwrap().is_none(), "loaded after its expiry");
            let mut again = record(&[], soon());
            again.id = r.id;
            store.create(&mut again).await.unwrap();
            assert_eq!(again.id, r.id, "the id is free again");
            store.delete(&r.id).await.unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn past_expiries_leave_no_session() {
            let Some(store) = open($topology).await else {
                return;
            };
            for past in [
                OffsetDateTime::now_utc() - Duration::seconds(5),
                OffsetDateTime::UNIX_EPOCH - Duration::days(365),
            ] {
                let mut r = record(&[("owner", json!("live"))], soon());
                store.create(&mut r).await.unwrap();
                // A create with a past expiry writes nothing, not even over a live session.
                let mut dead = record(&[("owner", json!("dead"))], past);
                dead.id = r.id;
                store.create(&mut dead).await.unwrap();
                assert_eq!(
                    store.load(&r.id).await.unwrap().unwrap().data["owner"],
                    json!("live")
                );
                // A save with a past expiry removes the session.
                r.expiry_date = past;
                store.save(&r).await.unwrap();
                assert!(store.load(&r.id).await.unwrap().is_none(), "{past}");
                let mut again = record(&[], soon());
                again.id = r.id;
                store.create(&mut again).await.unwrap();
                assert_eq!(again.id, r.id, "{past}: nothing left under the id");
                store.delete(&r.id).await.unwrap();
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn far_future_expiry_dates_are_kept() {
            let Some(store) = open($topology).await else {
                return;
            };
            for far in [
                OffsetDateTime::now_utc() + Duration::days(365 * 100),
                OffsetDateTime::new_utc(Date::MAX, Time::MAX),
            ] {
                let mut r = record(&[("k", json!(1))], far);
                store.create(&mut r).await.unwrap();
                let loaded = store.load(&r.id).await.unwrap().expect("alive");
                assert_eq!(loaded.expiry_date, to_ms(far));
                store.delete(&r.id).await.unwrap();
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn json_values_of_every_kind_survive() {
            let Some(store) = open($topology).await else {
                return;
            };
            let data = [
                ("null", Value::Null),
                ("bool", json!(true)),
                ("i64_min", json!(i64::MIN)),
                ("u64_max", json!(u64::MAX)),
                ("float", json!(0.1)),
                ("string", json!("ünïcödé \u{1f980} \"quoted\" \\ \n\t")),
                ("array", json!([1, "two", null, [3.5], {"four": 4}])),
                ("object", json!({"nested": {"deeper": [true, {"deepest": "x"}]}})),
                ("", json!("an empty key")),
            ];
            let mut r = record(&data, soon());
            store.create(&mut r).await.unwrap();
            assert_eq!(store.load(&r.id).await.unwrap().unwrap().data, r.data);
            store.delete(&r.id).await.unwrap();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn large_data_round_trips_and_over_the_limit_is_an_encode_error() {
            let Some(store) = open($topology).await else {
                return;
            };
            let mut r = record(&[("big", json!("x".repeat(512 * 1024)))], soon());
            store.create(&mut r).await.unwrap();
            assert_eq!(store.load(&r.id).await.unwrap().unwrap().data, r.data);
            store.delete(&r.id).await.unwrap();

            let mut over = record(&[("big", json!("y".repeat(2048)))], soon());
            let e = store.clone().with_max_bytes(1024).create(&mut over).await.unwrap_err();
            assert!(matches!(e, TowerError::Encode(_)), "{e}");
            // Over the store's own limit (1 MiB by default).
            let mut huge = record(&[("big", json!("z".repeat(2 * 1024 * 1024)))], soon());
            let e = store.clone().with_max_bytes(usize::MAX).save(&huge).await.unwrap_err();
            assert!(matches!(e, TowerError::Encode(_)), "{e}");
            let e = store.clone().with_max_bytes(usize::MAX).create(&mut huge).await.unwrap_err();
            assert!(matches!(e, TowerError::Encode(_)), "{e}");
            assert!(store.load(&over.id).await.unwrap().is_none(), "nothing written");
            assert!(store.load(&huge.id).await.unwrap().is_none(), "nothing written");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn undecodable_values_are_decode_errors_without_the_id() {
            let Some(store) = open($topology).await else {
                return;
            };
            let payloads: [(CodecId, &[u8]); 3] = [
                (CodecId::JSON, b"not json"),
                (CodecId::JSON, b"[1, 2, 3]"),
                (CodecId::RAW, br#"{"k": 1}"#),
            ];
            for (codec, payload) in payloads {
                let id = Id::default();
                let key = SessionKey::new(
                    store.namespace().clone(),
                    SessionId::parse(&id.to_string()).unwrap(),
                );
                let raw = Record::new(codec, payload.to_vec(), now_ms() + 60_000);
                store.store().save(&key, &raw).await.unwrap();
                let e = store.load(&id).await.unwrap_err();
                assert!(matches!(e, TowerError::Decode(_)), "{e}");
                assert!(!e.to_string().contains(&id.to_string()), "{e}");
                store.delete(&id).await.unwrap();
                assert!(store.load(&id).await.unwrap().is_none());
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_session_saves_loads_and_cycles_its_id() {
            let Some(store) = open($topology).await else {
                return;
            };
            let store = Arc::new(store);
            let expiry = Some(Expiry::OnInactivity(Duration::minutes(10)));
            let session = Session::new(None, store.clone(), expiry);
            session.insert("foo", 42).await.unwrap();
            session.save().await.unwrap();
            let first = session.id().unwrap();

            let again = Session::new(Some(first), store.clone(), expiry);
            assert_eq!(again.get::<usize>("foo").await.unwrap(), Some(42));
            again.cycle_id().await.unwrap();
            again.save().await.unwrap();
            let second = again.id().unwrap();
            assert_ne!(first, second);
            assert!(store.load(&first).await.unwrap().is_none(), "the old id is dead");

            let third = Session::new(Some(second), store.clone(), expiry);
            assert_eq!(third.get::<usize>("foo").await.unwrap(), Some(42));
            third.flush().await.unwrap();
            assert!(store.load(&second).await.unwrap().is_none());
        }
    };
}

mod standalone {
    cases!(Topology::Standalone);
}

mod cluster {
    cases!(Topology::Cluster);
}

mod sentinel {
    cases!(Topology::Sentinel);
}

mod tls {
    cases!(Topology::Tls);
}
