//! `TowerSessionsStore` against the memory store and against a fallback of two memory stores:
//! the cases of `tower_cases/mod.rs` (ported from upstream tower-sessions; see there).

#![cfg(feature = "tower-sessions")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

#[macro_use]
mod tower_cases;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use session_axum::TowerSessionsStore;
use session_core::{Namespace, StoreOptions};
use session_fallback::{FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};

async fn open_memory() -> Option<TowerSessionsStore> {
    Some(TowerSessionsStore::new(
        Arc::new(MemoryStore::new(MemoryConfig::default()).unwrap()),
        Namespace::new("tower").unwrap(),
    ))
}

async fn open_fallback() -> Option<TowerSessionsStore> {
    let options = StoreOptions::default();
    let primary = MemoryStore::with_options(
        MemoryConfig::default().with_tombstones(StdDuration::from_secs(3600)),
        options.clone(),
    )
    .unwrap();
    let secondary = MemoryStore::with_options(
        MemoryConfig::default().with_at_capacity(AtCapacity::Reject),
        options,
    )
    .unwrap();
    let store = FallbackStore::new(primary, secondary, FallbackConfig::default())
        .await
        .unwrap();
    Some(TowerSessionsStore::new(
        Arc::new(store),
        Namespace::new("tower").unwrap(),
    ))
}

mod memory {
    tower_cases!(crate::open_memory());

    #[test]
    fn debug_names_the_backend_and_namespace() {
        let store = TowerSessionsStore::new(
            Arc::new(super::MemoryStore::new_default()),
            Namespace::new("tower").unwrap(),
        );
        let text = format!("{store:?}");
        assert!(text.contains("memory") && text.contains("tower"), "{text}");
    }
}

mod fallback {
    tower_cases!(crate::open_fallback());
}
