//! The standalone Redis subjects: `RedisStore`, `FallbackStore` and `Sessions<T>` over it,
//! beside raw fred and tower-sessions' Redis store, and Redis' memory per key.

use std::sync::Arc;

use session_core::backend::Record;
use session_core::{CodecKind, SessionStore, Sessions};
use session_fallback::{FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::fred::clients::{Client, Pool};
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::fred::types::{CustomCommand, SetOptions, Value};
use session_redis::{RedisConfig, RedisStore};
use tower_sessions_core::session::Id as TowerId;

use super::anchor_ops::{RawGet, RawSet, RawSetNx, TowerCreate, TowerLoad, TowerSave};
use super::setup::{check, ns, prefill, save_items, tower_prefill, tower_record, Keys};
use super::store_ops::{
    StoreCreate, StoreLoad, StoreLoadMany, StoreSave, StoreSaveIf, StoreSaveMany, StoreUpdate, TypedLoad,
    TypedSave,
};
use super::{
    case, Case, Cleanup, Group, CAS_NAMESPACE, CAS_VERSION, CREATE_DB, CREATE_NAMESPACE, MANY, NAMESPACE,
    POOL,
};
use crate::commandstats::ServerStats;
use crate::payload::TaskSession;

/// Redis figures that are not throughput: memory per key.
#[derive(Clone, Debug, Default)]
pub(crate) struct RedisMemory {
    /// `MEMORY USAGE key SAMPLES 0`, averaged over sampled keys.
    pub(crate) usage_per_key: f64,
    /// `used_memory` growth over the pre-fill, per key.
    pub(crate) used_memory_per_key: f64,
    /// The key's length in bytes.
    pub(crate) key_len: usize,
    /// The stored value's length (envelope: 52-byte header + payload).
    pub(crate) value_len: usize,
    /// The payload's length.
    pub(crate) payload_len: usize,
    /// `MEMORY USAGE` of a logged-out session's tombstone (tombstones on), averaged.
    pub(crate) tombstone_per_key: f64,
    /// The length of those tombstones' keys.
    pub(crate) tombstone_key_len: usize,
}

/// The Redis subjects, pre-filled, plus Redis' memory per key and a connection of its own for
/// reading the server's command statistics.
pub(crate) async fn redis_cases(
    url: &str,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> (Vec<Case>, RedisMemory, ServerStats) {
    let connect_with = |pool_size: usize, database: Option<u8>, tombstone_ttl_ms: u64| {
        let mut config = RedisConfig::new(url);
        config.pool_size = pool_size;
        config.database = database;
        config.tombstone_ttl_ms = tombstone_ttl_ms;
        async move { check("RedisStore::connect", RedisStore::connect(config).await) }
    };
    let connect = |pool_size: usize, database: Option<u8>| connect_with(pool_size, database, 0);
    // A fallback's primary keeps tombstones (an hour here), as the facade configures it.
    let connect_tombstoned = |database: Option<u8>| connect_with(POOL, database, 3_600_000);
    let fred_config = |database: Option<u8>| {
        let mut config = check("fred config", FredConfig::from_url(url));
        config.database = database;
        config
    };
    let raw_client = |database: Option<u8>| {
        let client = Client::new(fred_config(database), None, None, None);
        async move {
            check("fred connect", client.init().await);
            client
        }
    };
    let raw_pool = |database: Option<u8>| {
        let pool = check(
            "fred pool",
            Pool::new(fred_config(database), None, None, None, POOL),
        );
        async move {
            check("fred pool connect", pool.init().await);
            pool
        }
    };
    let fallback = |store: RedisStore| async move {
        // A fallback secondary must refuse at its bound (an evicting one could drop writes
        // acknowledged during an outage: `FallbackStore::new` refuses it).
        let config = MemoryConfig::default().with_at_capacity(AtCapacity::Reject);
        let secondary = check("MemoryStore", MemoryStore::new(config));
        let store = check(
            "FallbackStore::new",
            FallbackStore::new(store, secondary, FallbackConfig::default()).await,
        );
        Arc::new(store) as Arc<dyn SessionStore>
    };

    let single: Arc<dyn SessionStore> = Arc::new(connect(1, None).await);
    let pooled_store = connect(POOL, None).await;
    let pooled: Arc<dyn SessionStore> = Arc::new(pooled_store.clone());
    let fall = fallback(connect_tombstoned(None).await).await;
    let tombstoned: Arc<dyn SessionStore> = Arc::new(connect_tombstoned(None).await);
    let typed =
        Sessions::<TaskSession>::new(Arc::clone(&pooled), ns(NAMESPACE)).with_codec(CodecKind::Bincode);
    let raw1 = raw_client(None).await;
    let rawp = raw_pool(None).await;
    let tower_pool = raw_pool(None).await;
    let tower = tower_sessions_redis_store::RedisStore::new(tower_pool);

    let c_single: Arc<dyn SessionStore> = Arc::new(connect(1, Some(CREATE_DB)).await);
    let c_pooled: Arc<dyn SessionStore> = Arc::new(connect(POOL, Some(CREATE_DB)).await);
    let c_fall = fallback(connect_tombstoned(Some(CREATE_DB)).await).await;
    let c_raw1 = raw_client(Some(CREATE_DB)).await;
    let c_rawp = raw_pool(Some(CREATE_DB)).await;
    let c_tower = tower_sessions_redis_store::RedisStore::new(raw_pool(Some(CREATE_DB)).await);

    // Pre-fill, measuring Redis' memory per key on the way.
    let used_before = used_memory(&raw1).await;
    prefill(pooled.as_ref(), keys, record, false).await;
    let used_after = used_memory(&raw1).await;
    let tower_ids: Arc<[TowerId]> = tower_prefill(&tower, keys.len()).await.into();
    let value_len = record.encoded_len();
    let mut usage = Vec::new();
    for key in keys.redis.iter().step_by((keys.len() / 200).max(1)) {
        let args: Vec<Value> = vec!["USAGE".into(), key.clone().into(), "SAMPLES".into(), "0".into()];
        let reply: Result<i64, _> = raw1
            .custom(CustomCommand::new_static("MEMORY", None, false), args)
            .await;
        usage.push(check("MEMORY USAGE", reply) as f64);
    }
    // A logout's cost with tombstones on: sessions created and deleted through a store that
    // keeps tombstones, then each left key measured.
    let tomb_keys = Keys::in_namespace("bench_tomb", 200);
    prefill(tombstoned.as_ref(), &tomb_keys, record, false).await;
    let mut tomb_usage = Vec::new();
    for (key, full) in tomb_keys.keys.iter().zip(tomb_keys.redis.iter()) {
        check("deleting a session", tombstoned.delete(key).await);
        let args: Vec<Value> = vec!["USAGE".into(), full.clone().into(), "SAMPLES".into(), "0".into()];
        let reply: Result<i64, _> = raw1
            .custom(CustomCommand::new_static("MEMORY", None, false), args)
            .await;
        tomb_usage.push(check("MEMORY USAGE of a tombstone", reply) as f64);
    }
    let memory = RedisMemory {
        tombstone_per_key: tomb_usage.iter().sum::<f64>() / tomb_usage.len().max(1) as f64,
        tombstone_key_len: tomb_keys.redis.first().map_or(0, |k| k.as_bytes().len()),
        usage_per_key: usage.iter().sum::<f64>() / usage.len().max(1) as f64,
        used_memory_per_key: (used_after.saturating_sub(used_before)) as f64 / keys.len().max(1) as f64,
        key_len: keys.redis.first().map_or(0, |k| k.as_bytes().len()),
        value_len,
        payload_len: record.payload.len(),
    };

    // The save_if key space: every key at version CAS_VERSION (after the memory figures, which
    // are those of the main key space).
    let cas_keys = Keys::in_namespace(CAS_NAMESPACE, keys.len());
    let mut cas_record = record.clone();
    cas_record.meta.version = CAS_VERSION;
    prefill(pooled.as_ref(), &cas_keys, &cas_record, false).await;
    if let Some(key) = cas_keys.keys.first() {
        let stored = check("loading a save_if key", pooled.load(key).await);
        let version = stored.map(|r| r.meta.version);
        assert!(
            version == Some(CAS_VERSION),
            "the save_if key space was pre-filled with version {CAS_VERSION}, the store holds {version:?}"
        );
    }
    let stats = ServerStats::new(raw_client(None).await);

    let envelope = record.encode();
    let deadline = i64::try_from(record.meta.expires_at).unwrap_or(i64::MAX);
    // Not FLUSHDB: Redis tells every client-side cache of every database to drop everything on
    // a flush (its table of tracked keys is not per database), which would empty the near-cache
    // subjects (docs/architecture.md). The created keys are unlinked instead.
    let flush: Cleanup = {
        let client = c_raw1.clone();
        Arc::new(move || {
            let client = client.clone();
            Box::pin(async move { unlink_all(&client).await })
        })
    };
    let create_prefix = format!("session:{CREATE_NAMESPACE}:");
    let many_items = save_items(keys, record);

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Redis;
        // load
        let (c, k) = (raw1.clone(), Arc::clone(&keys.redis));
        cases.push(case("raw fred GET (1 connection)", "load", tasks, g, move |_| {
            RawGet {
                client: c.clone(),
                keys: Arc::clone(&k),
            }
        }));
        let (c, k) = (rawp.clone(), Arc::clone(&keys.redis));
        cases.push(case("raw fred GET (pool 2)", "load", tasks, g, move |_| RawGet {
            client: c.clone(),
            keys: Arc::clone(&k),
        }));
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k) = (Arc::clone(store), Arc::clone(&keys.keys));
            cases.push(case(subject, "load", tasks, g, move |_| StoreLoad {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }));
        }
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case(
            "Sessions<T> on RedisStore (pool 2)",
            "load",
            tasks,
            g,
            move |_| TypedLoad {
                sessions: s.clone(),
                ids: Arc::clone(&i),
            },
        ));
        let (s, i) = (tower.clone(), Arc::clone(&tower_ids));
        cases.push(case(
            "tower-sessions-redis-store (pool 2)",
            "load",
            tasks,
            g,
            move |_| TowerLoad {
                store: s.clone(),
                ids: Arc::clone(&i),
            },
        ));
        let (s, k) = (Arc::clone(&pooled), Arc::clone(&keys.keys));
        let mut many = case("RedisStore (pool 2)", "load_many(16)", tasks, g, move |_| {
            StoreLoadMany {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }
        });
        many.items = MANY as u32;
        cases.push(many);

        // save
        let (c, k, v) = (raw1.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(
            "raw fred SET PXAT (1 connection)",
            "save",
            tasks,
            g,
            move |_| RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: None,
            },
        ));
        let (c, k, v) = (rawp.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case("raw fred SET PXAT (pool 2)", "save", tasks, g, move |_| {
            RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: None,
            }
        }));
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k, r) = (Arc::clone(store), Arc::clone(&keys.keys), record.clone());
            cases.push(case(subject, "save", tasks, g, move |_| StoreSave {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
                fresh: None,
            }));
        }
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case(
            "Sessions<T> on RedisStore (pool 2)",
            "save",
            tasks,
            g,
            move |_| TypedSave::new(s.clone(), Arc::clone(&i)),
        ));
        let (s, i) = (tower.clone(), Arc::clone(&tower_ids));
        cases.push(case(
            "tower-sessions-redis-store (pool 2)",
            "save",
            tasks,
            g,
            move |_| TowerSave {
                store: s.clone(),
                ids: Arc::clone(&i),
                record: tower_record(3 * 3600),
            },
        ));

        // update (`SET … XX` on the pre-filled keys: each exists)
        let (c, k, v) = (raw1.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(
            "raw fred SET XX PXAT (1 connection)",
            "update",
            tasks,
            g,
            move |_| RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: Some(SetOptions::XX),
            },
        ));
        let (c, k, v) = (rawp.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(
            "raw fred SET XX PXAT (pool 2)",
            "update",
            tasks,
            g,
            move |_| RawSet {
                client: c.clone(),
                keys: Arc::clone(&k),
                value: v.clone(),
                deadline,
                options: Some(SetOptions::XX),
            },
        ));
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("RedisStore (pool 2, tombstones)", &tombstoned),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k, r) = (Arc::clone(store), Arc::clone(&keys.keys), record.clone());
            cases.push(case(subject, "update", tasks, g, move |_| StoreUpdate {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
            }));
        }

        // save_if (the fixed-version key space: every call finds its expected version)
        for (subject, store) in [
            ("RedisStore (1 connection)", &single),
            ("RedisStore (pool 2)", &pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &fall),
        ] {
            let (s, k, r) = (Arc::clone(store), Arc::clone(&cas_keys.keys), cas_record.clone());
            cases.push(case(subject, "save_if", tasks, g, move |_| StoreSaveIf {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
            }));
        }

        // save_many(16) (the main key space; 64 tasks only: the cluster's counterpart)
        if tasks > 1 {
            let (s, items) = (Arc::clone(&pooled), Arc::clone(&many_items));
            let mut many = case("RedisStore (pool 2)", "save_many(16)", tasks, g, move |_| {
                StoreSaveMany {
                    store: Arc::clone(&s),
                    items: Arc::clone(&items),
                }
            });
            many.items = MANY as u32;
            cases.push(many);
        }

        // create (database 1, flushed after each cell)
        let mut creates = Vec::new();
        let (c, p, v) = (c_raw1.clone(), create_prefix.clone(), envelope.clone());
        creates.push(case(
            "raw fred SET NX PXAT (1 connection)",
            "create",
            tasks,
            g,
            move |_| RawSetNx {
                client: c.clone(),
                prefix: p.clone(),
                value: v.clone(),
                deadline,
            },
        ));
        let (c, p, v) = (c_rawp.clone(), create_prefix.clone(), envelope.clone());
        creates.push(case(
            "raw fred SET NX PXAT (pool 2)",
            "create",
            tasks,
            g,
            move |_| RawSetNx {
                client: c.clone(),
                prefix: p.clone(),
                value: v.clone(),
                deadline,
            },
        ));
        for (subject, store) in [
            ("RedisStore (1 connection)", &c_single),
            ("RedisStore (pool 2)", &c_pooled),
            ("FallbackStore<RedisStore (pool 2), MemoryStore>", &c_fall),
        ] {
            let (s, r) = (Arc::clone(store), record.clone());
            creates.push(case(subject, "create", tasks, g, move |_| StoreCreate {
                store: Arc::clone(&s),
                namespace: ns(CREATE_NAMESPACE),
                record: r.clone(),
            }));
        }
        let s = c_tower.clone();
        creates.push(case(
            "tower-sessions-redis-store (pool 2)",
            "create",
            tasks,
            g,
            move |_| TowerCreate {
                store: s.clone(),
                record: tower_record(3 * 3600),
            },
        ));
        for mut c in creates {
            c.cleanup = Some(Arc::clone(&flush));
            cases.push(c);
        }
    }
    drop(pooled_store);
    (cases, memory, stats)
}

/// Unlinks every key of the client's database (the `create` cases' database), a `SCAN` page at
/// a time.
async fn unlink_all(client: &Client) {
    let mut cursor = String::from("0");
    loop {
        let args: Vec<Value> = vec![cursor.as_str().into(), "COUNT".into(), "10000".into()];
        let page: Value = check(
            "SCAN of the create database",
            client
                .custom(CustomCommand::new_static("SCAN", None, false), args)
                .await,
        );
        let Value::Array(mut parts) = page else {
            panic!("SCAN answered {page:?}")
        };
        let keys = parts.pop().unwrap_or(Value::Null);
        cursor = parts
            .pop()
            .and_then(|c| c.as_string())
            .unwrap_or_else(|| "0".to_owned());
        if let Value::Array(keys) = keys {
            if !keys.is_empty() {
                let unlinked: Result<Value, _> = client
                    .custom(CustomCommand::new_static("UNLINK", None, false), keys)
                    .await;
                check("UNLINK of created keys", unlinked);
            }
        }
        if cursor == "0" {
            return;
        }
    }
}

/// `used_memory` from `INFO memory`.
async fn used_memory(client: &Client) -> u64 {
    let reply: Result<String, _> = client
        .custom(CustomCommand::new_static("INFO", None, false), vec!["memory"])
        .await;
    let text = check("INFO memory", reply);
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
