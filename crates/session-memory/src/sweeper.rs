//! The background sweeper: reclaims expired entries shard by shard.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::store::Inner;

/// Runs until the store is gone: every `period`, sweeps each shard in turn
/// (one shard lock at a time, and only shards that may hold an expired entry).
///
/// Holds only a weak reference, upgraded for one shard at a time and never
/// across an await, so the store's memory is freed when its last handle
/// drops; the store also aborts this task in its `Drop`.
pub(crate) async fn run(inner: Weak<Inner>, period: Duration) {
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shards) = inner.upgrade().map(|i| i.shard_count()) else {
            return;
        };
        for i in 0..shards {
            let removed = match inner.upgrade() {
                Some(inner) => inner.sweep_shard(i, inner.clock.now_ms()),
                None => return,
            };
            if removed > 0 {
                // Let other tasks on this worker run between busy shards.
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{MemoryConfig, MemoryStore};

    /// Without the abort in `MemoryStore::drop`, the weak reference alone ends the task.
    #[tokio::test]
    async fn ends_when_only_its_weak_reference_is_left() {
        let store = MemoryStore::new_detached(MemoryConfig::default());
        let weak = Arc::downgrade(&store.inner_for_tests());
        let task = tokio::spawn(super::run(weak.clone(), Duration::from_millis(5)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "runs while the store lives");
        drop(store);
        assert!(weak.upgrade().is_none(), "the task holds no strong reference");
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the sweeper ends")
            .unwrap();
    }
}
