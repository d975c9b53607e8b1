//! [`BackupConfig`]: the settings of a [`BackupStore`](crate::BackupStore), under `backup.`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_core::{Error, Result};

/// Default pause between two flushes when fewer than a batch are waiting, ms.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 200;
/// Default number of changes one flush writes.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Default bound of the queue: keys with a change not yet in the backup.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// Default longest pause between two attempts while the backup fails, ms.
pub const DEFAULT_MAX_RETRY_MS: u64 = 5_000;
/// Default deadline of one flush's writes into the backup, ms.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;

/// Settings of a [`BackupStore`](crate::BackupStore). Field names are the configuration keys
/// under `backup.`; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackupConfig {
    /// Read by the session-store facade (`session_store::build`): wrap the configured backend
    /// with a `BackupStore` whose backup is the `[sql]` store. [`BackupStore::new`] itself
    /// ignores it. Default `false`.
    ///
    /// [`BackupStore::new`]: crate::BackupStore::new
    pub enabled: bool,
    /// How long a change may wait for a flush when fewer than `batch_size` are queued, ms.
    /// Default 200. At least 1.
    pub flush_interval_ms: u64,
    /// Most changes one flush writes (one `save_many` of the backup, plus its deletes).
    /// Default 500. At least 1.
    pub batch_size: usize,
    /// Most keys with a change not yet in the backup. A write beyond it is not queued (counted
    /// as `dropped_writes`; a delete is still queued up to twice the bound, then counted as
    /// `dropped_deletes`), and the backup is marked *incomplete* until
    /// [`resync`](crate::BackupStore::resync). Default 100 000. At least 1.
    pub max_pending: usize,
    /// Longest pause between two attempts while the backup fails, ms (the pause doubles from
    /// `flush_interval_ms`). Default 5000.
    pub max_retry_ms: u64,
    /// Deadline of one flush's writes into the backup, ms: a backup that does not answer by
    /// then gets the whole batch again later (its store's own timeouts usually act first).
    /// Default 10 000. At least 1.
    pub write_timeout_ms: u64,
    /// A `load` (or `load_many`) that misses in the primary looks in the backup, and a live
    /// session found there is restored into the primary with its own deadline (never over a
    /// tombstone or a newer session: `reconcile`). Off while the backup is incomplete.
    /// Default `true`.
    pub read_through: bool,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            enabled: false,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            batch_size: DEFAULT_BATCH_SIZE,
            max_pending: DEFAULT_MAX_PENDING,
            max_retry_ms: DEFAULT_MAX_RETRY_MS,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            read_through: true,
        }
    }
}

impl BackupConfig {
    /// Sets [`flush_interval_ms`](Self::flush_interval_ms).
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets [`batch_size`](Self::batch_size).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`max_pending`](Self::max_pending).
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// Sets [`write_timeout_ms`](Self::write_timeout_ms).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets [`read_through`](Self::read_through).
    pub fn with_read_through(mut self, read_through: bool) -> Self {
        self.read_through = read_through;
        self
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first wrong key.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("backup.flush_interval_ms", self.flush_interval_ms),
            ("backup.batch_size", self.batch_size as u64),
            ("backup.max_pending", self.max_pending as u64),
            ("backup.max_retry_ms", self.max_retry_ms),
            ("backup.write_timeout_ms", self.write_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub(crate) fn max_retry(&self) -> Duration {
        Duration::from_millis(self.max_retry_ms.max(self.flush_interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_value_names_its_key() {
        let d = BackupConfig::default;
        assert!(d().validate().is_ok());
        for (config, key) in [
            (d().with_batch_size(0), "backup.batch_size"),
            (d().with_max_pending(0), "backup.max_pending"),
            (
                d().with_flush_interval(Duration::ZERO),
                "backup.flush_interval_ms",
            ),
        ] {
            match config.validate() {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("expected a config error, got {other:?}"),
            }
        }
    }
}
