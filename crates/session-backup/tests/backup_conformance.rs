//! The session-core conformance suite against `BackupStore`: a memory primary backed up into a
//! SQLite file. Write-behind and read-through must not change what any call answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use session_backup::{BackupConfig, BackupStore};
use session_core::testing::{Harness, TestStore};
use session_core::{KeyPrefix, StoreOptions};
use session_memory::{MemoryConfig, MemoryStore};
use session_sql::{SqlConfig, SqlStore};

struct BackupHarness;

async fn open(memory: MemoryConfig, prefix: KeyPrefix) -> TestStore {
    let options = StoreOptions::new(prefix);
    let primary = Arc::new(MemoryStore::with_options(memory, options.clone()).unwrap());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("backup-conformance-{}.db", std::process::id()));
    let backup = SqlStore::connect(SqlConfig::new(format!("sqlite://{}", path.display())), options)
        .await
        .expect("sqlite backup");
    let config = BackupConfig::default().with_flush_interval(Duration::from_millis(20));
    let store = BackupStore::new(Arc::clone(&primary), backup, config).unwrap();
    TestStore {
        store: Arc::new(store),
        raw: primary,
    }
}

#[session_core::async_trait]
impl Harness for BackupHarness {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        open(MemoryConfig::default(), prefix).await
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        open(MemoryConfig::default().with_tombstones(ttl), prefix).await
    }
}

async fn harness() -> Option<BackupHarness> {
    Some(BackupHarness)
}

session_core::conformance_tests!(harness);
