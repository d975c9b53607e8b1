//! The Redis Cluster subjects: `RedisStore` on a 3+3 cluster beside fred's cluster client.

use std::sync::Arc;

use session_core::backend::Record;
use session_core::SessionStore;
use session_redis::fred::clients::Pool;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::{RedisConfig, RedisStore};

use super::anchor_ops::{RawGet, RawSet};
use super::setup::{check, prefill, save_items, Keys};
use super::store_ops::{StoreLoad, StoreLoadMany, StoreSave, StoreSaveIf, StoreSaveMany};
use super::{case, Case, Group, CAS_NAMESPACE, CAS_VERSION, MANY, POOL};

/// The subject of the Redis Cluster cases.
pub(crate) const CLUSTER_SUBJECT: &str = "RedisStore cluster (pool 2)";
/// The cluster's raw anchors: fred's cluster client.
pub(crate) const CLUSTER_RAW_GET: &str = "raw fred cluster GET (pool 2)";
pub(crate) const CLUSTER_RAW_SET: &str = "raw fred cluster SET PXAT (pool 2)";

/// The subjects on a Redis Cluster: `RedisStore` given the cluster's URL, with a pool of
/// [`POOL`] connections per primary (its own router: each command goes to its key's slot
/// owner), its key spaces pre-filled as the standalone ones: the same keys and records, on
/// other servers. `load` and `save` at every task count; `save_if`, `save_many(16)` and
/// `load_many(16)` at 64 tasks.
pub(crate) async fn cluster_cases(
    url: &str,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> Vec<Case> {
    let mut config = RedisConfig::new(url);
    config.pool_size = POOL;
    let store: Arc<dyn SessionStore> = Arc::new(check(
        "RedisStore::connect (cluster)",
        RedisStore::connect(config).await,
    ));
    prefill(store.as_ref(), keys, record, false).await;
    let cas_keys = Keys::in_namespace(CAS_NAMESPACE, keys.len());
    let mut cas_record = record.clone();
    cas_record.meta.version = CAS_VERSION;
    prefill(store.as_ref(), &cas_keys, &cas_record, false).await;
    if let Some(key) = cas_keys.keys.first() {
        let stored = check("loading a save_if key (cluster)", store.load(key).await);
        let version = stored.map(|r| r.meta.version);
        assert!(
            version == Some(CAS_VERSION),
            "the cluster's save_if key space was pre-filled with version {CAS_VERSION}, it holds {version:?}"
        );
    }
    let many_items = save_items(keys, record);
    // The anchor: fred's own cluster client (its router: one connection per node), a pool of
    // POOL of them, sending the store's commands with the same bytes.
    let raw = check(
        "fred cluster pool",
        Pool::new(
            check("fred cluster config", FredConfig::from_url(url)),
            None,
            None,
            None,
            POOL,
        ),
    );
    check("fred cluster pool connect", raw.init().await);
    let envelope = record.encode();
    let deadline = i64::try_from(record.meta.expires_at).unwrap_or(i64::MAX);

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Redis;
        let (c, k) = (raw.clone(), Arc::clone(&keys.redis));
        cases.push(case(CLUSTER_RAW_GET, "load", tasks, g, move |_| RawGet {
            client: c.clone(),
            keys: Arc::clone(&k),
        }));
        let (c, k, v) = (raw.clone(), Arc::clone(&keys.redis), envelope.clone());
        cases.push(case(CLUSTER_RAW_SET, "save", tasks, g, move |_| RawSet {
            client: c.clone(),
            keys: Arc::clone(&k),
            value: v.clone(),
            deadline,
            options: None,
        }));
        let (s, k) = (Arc::clone(&store), Arc::clone(&keys.keys));
        cases.push(case(CLUSTER_SUBJECT, "load", tasks, g, move |_| StoreLoad {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
        }));
        let (s, k, r) = (Arc::clone(&store), Arc::clone(&keys.keys), record.clone());
        cases.push(case(CLUSTER_SUBJECT, "save", tasks, g, move |_| StoreSave {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: r.clone(),
            fresh: None,
        }));
        if tasks == 1 {
            continue;
        }
        let (s, k, r) = (Arc::clone(&store), Arc::clone(&cas_keys.keys), cas_record.clone());
        cases.push(case(CLUSTER_SUBJECT, "save_if", tasks, g, move |_| StoreSaveIf {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: r.clone(),
        }));
        let (s, items) = (Arc::clone(&store), Arc::clone(&many_items));
        let mut many = case(CLUSTER_SUBJECT, "save_many(16)", tasks, g, move |_| {
            StoreSaveMany {
                store: Arc::clone(&s),
                items: Arc::clone(&items),
            }
        });
        many.items = MANY as u32;
        cases.push(many);
        let (s, k) = (Arc::clone(&store), Arc::clone(&keys.keys));
        let mut many = case(CLUSTER_SUBJECT, "load_many(16)", tasks, g, move |_| {
            StoreLoadMany {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }
        });
        many.items = MANY as u32;
        cases.push(many);
    }
    cases
}
