//! Secrets at rest: load and save through `SecureStore` — ids hashed, payloads sealed, both —
//! on `MemoryStore` and on `RedisStore` (pool 2), beside the plain stores on the same payload.
//!
//! Each subject has a store (memory) or a namespace (Redis) of its own, prefilled through it.

use std::sync::Arc;

use session_core::backend::Record;
use session_core::SessionStore;
use session_memory::{MemoryConfig, MemoryStore};
use session_redis::{RedisConfig, RedisStore};
use session_secure::{SecureConfig, SecureStore};

use crate::cases::{case, check, prefill, Case, Group, Keys, StoreLoad, StoreSave, POOL};

// Fixed test secrets: a benchmark protects nothing.
const SECRET_A: &str = "YmVuY2gtc2VjcmV0LWEtYmVuY2gtc2VjcmV0LWEtYmU=";
const SECRET_B: &str = "YmVuY2gtc2VjcmV0LWItYmVuY2gtc2VjcmV0LWItYmU=";
const KEY: &str = "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktYmU=";

/// Each configuration with its subjects' names: on memory, on Redis.
fn configs() -> [(&'static str, &'static str, SecureConfig); 3] {
    [
        (
            "SecureStore (hashed ids) on MemoryStore",
            "SecureStore (hashed ids) on RedisStore (pool 2)",
            SecureConfig::new().with_hashed_ids(SECRET_A),
        ),
        (
            "SecureStore (encryption) on MemoryStore",
            "SecureStore (encryption) on RedisStore (pool 2)",
            SecureConfig::new().with_encryption([(1, KEY)]),
        ),
        (
            "SecureStore (hashed ids + encryption) on MemoryStore",
            "SecureStore (hashed ids + encryption) on RedisStore (pool 2)",
            SecureConfig::new()
                .with_hashed_ids(SECRET_B)
                .with_encryption([(1, KEY)]),
        ),
    ]
}

/// The load and save cases of every configuration, on memory and (with `redis_url`) on Redis.
pub(crate) async fn secure_cases(
    redis_url: Option<&str>,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> Vec<Case> {
    let mut subjects: Vec<(&'static str, Group, Arc<dyn SessionStore>, Keys)> = Vec::new();
    for (subject, _, config) in configs() {
        let memory = check("MemoryStore", MemoryStore::new(MemoryConfig::default()));
        let store: Arc<dyn SessionStore> = Arc::new(check("SecureStore", SecureStore::new(memory, &config)));
        prefill(store.as_ref(), keys, record, true).await;
        subjects.push((subject, Group::Memory, store, keys.clone()));
    }
    if let Some(url) = redis_url {
        let mut config = RedisConfig::new(url);
        config.pool_size = POOL;
        let redis = check("RedisStore::connect", RedisStore::connect(config).await);
        for (i, (_, subject, config)) in configs().into_iter().enumerate() {
            let store: Arc<dyn SessionStore> =
                Arc::new(check("SecureStore", SecureStore::new(redis.clone(), &config)));
            let own = Keys::in_namespace(&format!("bench_secure{i}"), keys.len());
            prefill(store.as_ref(), &own, record, false).await;
            subjects.push((subject, Group::Redis, store, own));
        }
    }
    let mut cases = Vec::new();
    for &tasks in task_counts {
        for &(subject, group, ref store, ref keys) in &subjects {
            let (s, k) = (Arc::clone(store), Arc::clone(&keys.keys));
            cases.push(case(subject, "load", tasks, group, move |_| StoreLoad {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }));
            let (s, k, r) = (Arc::clone(store), Arc::clone(&keys.keys), record.clone());
            cases.push(case(subject, "save", tasks, group, move |_| StoreSave {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
                record: r.clone(),
                fresh: None,
            }));
        }
    }
    cases
}
