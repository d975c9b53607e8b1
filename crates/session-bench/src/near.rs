//! The near cache's cases: a load answered from it (beside raw fred GET and the memory store),
//! a load that always misses it (beside a plain `RedisStore` load), a save through it (beside a
//! plain save), and a mixed workload — 90 % loads and 10 % saves over a hot set, from two
//! instances — beside two plain `RedisStore`s and two tower-sessions `CachingSessionStore`s
//! (moka in front of tower-sessions-redis-store), with each side's hit ratio.
//!
//! Each subject has key prefixes of its own, so that no other case's writes invalidate it.

#![allow(
    clippy::manual_async_fn,
    reason = "the ops spell out the `Send` future the harness needs, as in `cases`"
)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_core::async_trait;
use session_core::backend::Record;
use session_core::{KeyPrefix, SessionKey, SessionStore, StoreOptions};
use session_redis::fred::clients::Pool;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::{NearCacheConfig, RedisConfig, RedisStore};
use tower_sessions_core::session::{Id as TowerId, Record as TowerRecord};
use tower_sessions_core::session_store::{self, CachingSessionStore};
use tower_sessions_core::SessionStore as TowerStore;
use tower_sessions_moka_store::MokaStore;

use crate::cases::{
    case, check, prefill, tower_prefill, tower_record, Case, Group, Keys, StoreLoad, StoreSave, POOL,
};
use crate::harness::Op;

/// The hot set of the mixed workload.
const HOT: usize = 1_000;
/// Subjects and operations, as the report names them.
pub(crate) const CACHED: &str = "RedisStore near cache (pool 2)";
pub(crate) const MISSING: &str = "RedisStore near cache, every load a miss (pool 2)";
pub(crate) const MIXED_NEAR: &str = "2 × RedisStore near cache (pool 2)";
pub(crate) const MIXED_PLAIN: &str = "2 × RedisStore (pool 2)";
pub(crate) const MIXED_TOWER: &str = "2 × tower-sessions CachingSessionStore<moka, redis-store> (pool 2)";
pub(crate) const MIXED: &str = "mixed 90/10";

/// What the report prints beside the near cache's ratios, read at its end.
pub(crate) struct NearFigures {
    cached: RedisStore,
    mixed: [RedisStore; 2],
    tower_loads: Arc<AtomicU64>,
    tower_hits: Arc<AtomicU64>,
    /// Growth of the process's resident memory while the cache filled, per cached session.
    rss_per_entry: f64,
}

impl NearFigures {
    /// Lines for the report: memory per cached session and the mixed workload's hit ratios.
    pub(crate) fn lines(&self) -> Vec<String> {
        let cached = self.cached.near_cache_stats().unwrap_or_default();
        let (mut hits, mut misses) = (0u64, 0u64);
        for store in &self.mixed {
            let s = store.near_cache_stats().unwrap_or_default();
            hits += s.hits;
            misses += s.misses;
        }
        let tower_loads = self.tower_loads.load(Ordering::Relaxed);
        let tower_hits = self.tower_hits.load(Ordering::Relaxed);
        vec![
            format!(
                "Near cache memory per cached session: {:.0} bytes by the cache's own accounting \
                 (key, payload and a fixed 160-byte overhead; {} sessions, {} bytes), {:.0} bytes \
                 of resident memory growth while it filled.",
                cached.bytes as f64 / cached.entries.max(1) as f64,
                cached.entries,
                cached.bytes,
                self.rss_per_entry
            ),
            format!(
                "Mixed workload hit ratio: near cache {:.3} ({hits} hits, {misses} misses, {} resets); \
                 tower-sessions CachingSessionStore (moka) {:.3} ({tower_hits} of {tower_loads} loads) — \
                 which no write by the other instance invalidates.",
                hits as f64 / (hits + misses).max(1) as f64,
                self.mixed
                    .iter()
                    .map(|s| s.near_cache_stats().unwrap_or_default().resets)
                    .sum::<u64>(),
                tower_hits as f64 / tower_loads.max(1) as f64,
            ),
        ]
    }
}

fn near_config(url: &str, max_entries: usize) -> RedisConfig {
    let mut config = RedisConfig::new(url);
    config.pool_size = POOL;
    config.near_cache = NearCacheConfig::enabled();
    config.near_cache.max_entries = max_entries;
    config.near_cache.max_bytes = 1 << 30;
    config
}

async fn connect(config: RedisConfig, prefix: &str) -> RedisStore {
    let options = StoreOptions::new(check("key prefix", KeyPrefix::new(prefix)));
    let store = check(
        "RedisStore::connect",
        RedisStore::builder(config).options(options).connect().await,
    );
    // Tracking set up on the server before anything is cached.
    for _ in 0..1_000 {
        if store.near_cache_stats().is_none_or(|s| s.serving) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
}

/// Resident memory of this process, in bytes (0 where `/proc` cannot say).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The near cache's cases and the figures the report prints beside them.
pub(crate) async fn near_cases(
    url: &str,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> (Vec<Case>, NearFigures) {
    let n = keys.len();
    // Reads only: the cached subject and the one that always misses share a prefix nothing writes.
    let cached = connect(near_config(url, 2 * n), "nearc:").await;
    let missing = connect(near_config(url, 1), "nearc:").await;
    let writer = connect(near_config(url, 2 * n), "nearw:").await;
    prefill(&cached, keys, record, false).await;
    prefill(&writer, keys, record, false).await;
    cached.sync_near_cache().await;
    let rss_before = rss_bytes();
    // One load each (what a load finds is kept; a `load_many` keeps nothing).
    for chunk in keys.keys.chunks(500) {
        let loads = chunk.iter().map(|k| cached.load(k));
        for loaded in futures::future::join_all(loads).await {
            check("warming the near cache", loaded);
        }
    }
    let filled = cached.near_cache_stats().unwrap_or_default().entries.max(1);
    let rss_per_entry = rss_bytes().saturating_sub(rss_before) as f64 / filled as f64;

    // The mixed workload: two instances of each subject on one hot set.
    let hot = Keys::in_namespace("hot", HOT);
    let mixed = [
        connect(near_config(url, 2 * HOT), "nearx:").await,
        connect(near_config(url, 2 * HOT), "nearx:").await,
    ];
    let mut plain_config = RedisConfig::new(url);
    plain_config.pool_size = POOL;
    let plain = [
        connect(plain_config.clone(), "plainx:").await,
        connect(plain_config, "plainx:").await,
    ];
    prefill(&mixed[0], &hot, record, false).await;
    prefill(&plain[0], &hot, record, false).await;
    let (tower_loads, tower_hits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let towers = {
        let mut out = Vec::new();
        for _ in 0..2 {
            let pool = check(
                "fred pool",
                Pool::new(
                    check("fred config", FredConfig::from_url(url)),
                    None,
                    None,
                    None,
                    POOL,
                ),
            );
            check("fred pool connect", pool.init().await);
            let cache = Counting {
                inner: MokaStore::new(Some(2 * HOT as u64)),
                loads: Arc::clone(&tower_loads),
                hits: Arc::clone(&tower_hits),
            };
            out.push(CachingSessionStore::new(
                cache,
                tower_sessions_redis_store::RedisStore::new(pool),
            ));
        }
        out
    };
    let tower_ids: Arc<[TowerId]> = tower_prefill(&towers[0], HOT).await.into();

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Redis;
        let (s, k) = (
            Arc::new(cached.clone()) as Arc<dyn SessionStore>,
            Arc::clone(&keys.keys),
        );
        cases.push(case(CACHED, "load", tasks, g, move |_| StoreLoad {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
        }));
        let (s, k) = (
            Arc::new(missing.clone()) as Arc<dyn SessionStore>,
            Arc::clone(&keys.keys),
        );
        cases.push(case(MISSING, "load", tasks, g, move |_| StoreLoad {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
        }));
        let (s, k, r) = (
            Arc::new(writer.clone()) as Arc<dyn SessionStore>,
            Arc::clone(&keys.keys),
            record.clone(),
        );
        cases.push(case(CACHED, "save", tasks, g, move |_| StoreSave {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: r.clone(),
            fresh: None,
        }));
        if tasks > 1 {
            for (subject, pair) in [(MIXED_NEAR, &mixed), (MIXED_PLAIN, &plain)] {
                let (pair, k, r) = (pair.clone(), Arc::clone(&hot.keys), record.clone());
                cases.push(case(subject, MIXED, tasks, g, move |task| StoreMixed {
                    store: pair[task % 2].clone(),
                    keys: Arc::clone(&k),
                    record: r.clone(),
                }));
            }
            let (pair, ids) = (towers.clone(), Arc::clone(&tower_ids));
            cases.push(case(MIXED_TOWER, MIXED, tasks, g, move |task| TowerMixed {
                store: pair[task % 2].clone(),
                ids: Arc::clone(&ids),
                record: tower_record(3 * 3600),
            }));
        }
    }
    let figures = NearFigures {
        cached,
        mixed,
        tower_loads,
        tower_hits,
        rss_per_entry,
    };
    (cases, figures)
}

/// Whether draw `idx` (uniform over the key space) is a write: one in ten, independent of the
/// hot key `idx % HOT` it names.
fn is_write(idx: usize) -> bool {
    (idx / HOT).is_multiple_of(10)
}

/// 90 % `load`, 10 % `save` of one of the hot sessions.
struct StoreMixed {
    store: RedisStore,
    keys: Arc<[SessionKey]>,
    record: Record,
}

impl Op for StoreMixed {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let key = &self.keys[idx % HOT];
            if is_write(idx) {
                self.store.save(key, &self.record).await.is_ok()
            } else {
                matches!(self.store.load(key).await, Ok(Some(_)))
            }
        }
    }
}

/// The same mix through tower-sessions.
struct TowerMixed<S> {
    store: S,
    ids: Arc<[TowerId]>,
    record: TowerRecord,
}

impl<S: TowerStore + Clone> Op for TowerMixed<S> {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        async move {
            let id = self.ids[idx % HOT];
            if is_write(idx) {
                self.record.id = id;
                self.store.save(&self.record).await.is_ok()
            } else {
                matches!(self.store.load(&id).await, Ok(Some(_)))
            }
        }
    }
}

/// A tower-sessions store that counts its loads and the ones that found a record (the moka
/// cache's hits).
#[derive(Debug, Clone)]
struct Counting<S> {
    inner: S,
    loads: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
}

#[async_trait]
impl<S: TowerStore + Clone> TowerStore for Counting<S> {
    async fn create(&self, record: &mut TowerRecord) -> session_store::Result<()> {
        self.inner.create(record).await
    }

    async fn save(&self, record: &TowerRecord) -> session_store::Result<()> {
        self.inner.save(record).await
    }

    async fn load(&self, id: &TowerId) -> session_store::Result<Option<TowerRecord>> {
        let found = self.inner.load(id).await?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }

    async fn delete(&self, id: &TowerId) -> session_store::Result<()> {
        self.inner.delete(id).await
    }
}
