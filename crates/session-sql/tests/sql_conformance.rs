//! The session-core conformance suite against `SqlStore`: on PostgreSQL (the server
//! `cargo xtask test` starts: `SESSION_TEST_POSTGRES_URL`) and on a SQLite file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{Harness, TestStore};
use session_core::{KeyPrefix, StoreOptions};
use session_sql::{SqlConfig, SqlStore};

/// Opens stores on one database URL.
struct SqlHarness {
    url: String,
}

impl SqlHarness {
    async fn store(&self, config: SqlConfig, prefix: KeyPrefix) -> TestStore {
        let store = SqlStore::connect(config, StoreOptions::new(prefix))
            .await
            .expect("connect");
        let store = Arc::new(store);
        TestStore {
            store: store.clone(),
            raw: store,
        }
    }
}

#[session_core::async_trait]
impl Harness for SqlHarness {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        self.store(SqlConfig::new(&self.url), prefix).await
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        self.store(SqlConfig::new(&self.url).with_tombstones(ttl), prefix)
            .await
    }
}

mod postgres {
    use super::SqlHarness;

    /// The server of the `sql` cell; without it the tests skip, unless the run requires it.
    async fn harness() -> Option<SqlHarness> {
        match std::env::var("SESSION_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(SqlHarness { url }),
            _ => {
                assert!(
                    std::env::var_os("SESSION_TEST_REQUIRE_POSTGRES").is_none(),
                    "SESSION_TEST_REQUIRE_POSTGRES is set but SESSION_TEST_POSTGRES_URL is not"
                );
                None
            }
        }
    }

    session_core::conformance_tests!(harness);
}

mod sqlite {
    use super::SqlHarness;

    /// One database file per test process, in cargo's scratch directory for tests.
    async fn harness() -> Option<SqlHarness> {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sql-conformance-{}.db", std::process::id()));
        Some(SqlHarness {
            url: format!("sqlite://{}", path.display()),
        })
    }

    session_core::conformance_tests!(harness);
}
