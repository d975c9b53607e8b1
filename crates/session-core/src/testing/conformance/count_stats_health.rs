//! The conformance suite's part on `count`, `stats`, `health` and the health of partitions.

use std::time::Duration;

use crate::key::SessionKey;
use crate::store::HealthStatus;
use crate::testing::Harness;

use super::{new_key, ns, open, rec, HOUR_MS};

/// `count` counts live sessions of one namespace: not deleted, not expired.
pub async fn count_counts_live_sessions(h: &dyn Harness) {
    let t = open(h).await;
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 0);
    let keys: Vec<SessionKey> = (0..25).map(|_| new_key("task")).collect();
    for k in &keys {
        t.store.save(k, &rec(b"x", HOUR_MS)).await.unwrap();
    }
    t.store.save(&new_key("task"), &rec(b"short", 200)).await.unwrap();
    t.store
        .save(&new_key("other"), &rec(b"x", HOUR_MS))
        .await
        .unwrap();
    t.store.delete(&keys[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 24);
    assert_eq!(t.store.count(&ns("other")).await.unwrap(), 1);
}

/// `stats` names the backend and, where it knows them, counts entries and bytes.
pub async fn stats_report(h: &dyn Harness) {
    let t = open(h).await;
    for _ in 0..3 {
        t.store
            .save(&new_key("task"), &rec(&[0u8; 100], HOUR_MS))
            .await
            .unwrap();
    }
    let st = t.store.stats().await.unwrap();
    assert_eq!(st.backend, t.store.backend());
    if let Some(n) = st.entries {
        assert!(n >= 3, "entries {n}");
    }
    if let Some(b) = st.bytes {
        assert!(b >= 300, "bytes {b}");
    }
}

/// `health` of a working store is up.
pub async fn health_is_up(h: &dyn Harness) {
    let t = open(h).await;
    let health = t.store.health().await;
    assert_eq!(health.backend, t.store.backend());
    assert!(matches!(health.status, HealthStatus::Up), "{health:?}");
}

/// `partition` of a key is stable while nothing changes, and the probe of a working store's
/// partitions answers up: the key's own, and [`Partition::WHOLE`](crate::backend::Partition::WHOLE)
/// (the store as a whole, as `health`). A store of one partition answers `WHOLE` for every key.
pub async fn partitions_answer_when_healthy(h: &dyn Harness) {
    let t = open(h).await;
    for _ in 0..8 {
        let k = new_key("task");
        let p = t.store.partition(&k);
        assert_eq!(t.store.partition(&k), p, "no change, no new partition");
        let probe = t.store.partition_health(p).await;
        assert!(matches!(probe.status, HealthStatus::Up), "{p}: {probe:?}");
    }
    let whole = t.store.partition_health(crate::backend::Partition::WHOLE).await;
    assert_eq!(whole.status, t.store.health().await.status, "{whole:?}");
}
