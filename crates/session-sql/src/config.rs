//! [`SqlConfig`]: the settings of a [`SqlStore`](crate::SqlStore), under `sql.` in configuration.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_core::backend::redact_url;
use session_core::{Error, Result};

/// Default table name.
pub const DEFAULT_TABLE: &str = "session_store";
/// Default number of pooled connections.
pub const DEFAULT_POOL_SIZE: u32 = 8;
/// Default deadline of one call, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Default deadline for opening a connection, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Default interval of the background reclaim of expired rows, in milliseconds.
pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 30_000;
/// Default number of expired rows one reclaim statement removes.
pub const DEFAULT_SWEEP_BATCH: u32 = 1_000;
/// Largest `tombstone_ttl_ms`: 30 days.
pub const MAX_TOMBSTONE_TTL_MS: u64 = 30 * 24 * 3_600_000;
/// Longest table name (PostgreSQL's identifier limit, less room for index names).
pub const MAX_TABLE_LEN: usize = 48;

/// Settings of a [`SqlStore`](crate::SqlStore). Field names are the configuration keys under
/// `sql.`; every field but `url` has a default.
///
/// `Debug` hides the password of the URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SqlConfig {
    /// Where the sessions live:
    /// * `postgres://user:password@host:port/database` (feature `postgres`);
    /// * `sqlite://path/to/file.db` (created if missing) or `sqlite::memory:` (one process,
    ///   gone when the store is dropped) (feature `sqlite`).
    pub url: String,
    /// The table holding the sessions: `[a-z_][a-z0-9_]*`, at most 48 characters. Created (with
    /// its index and a schema-version table named `{table}_schema`) on connect when
    /// `create_schema` is on. Default `session_store`.
    pub table: String,
    /// Pooled connections. Default 8. At least 1. (A SQLite file is written by one connection
    /// at a time whatever this says; reads share the pool.)
    pub pool_size: u32,
    /// Deadline of one call, in milliseconds, waiting for a pooled connection included.
    /// Default 1000. At least 1. See the crate docs for what a write that misses it means.
    pub timeout_ms: u64,
    /// Deadline for opening one connection, in milliseconds. Default 3000. At least 1.
    pub connect_timeout_ms: u64,
    /// How often expired rows are deleted in the background, in milliseconds; `0` turns the
    /// reclaim off (expired rows are still never returned). Default 30 000.
    pub sweep_interval_ms: u64,
    /// Most expired rows one reclaim statement deletes (it repeats until none is left).
    /// Default 1000. At least 1.
    pub sweep_batch: u32,
    /// Tombstone mode, in milliseconds; `0` (the default) turns it off. When on, `delete`
    /// leaves a tombstone (the deleted session's deadline, or this long for a key that held
    /// none) so that another instance's replayed write cannot bring the session back
    /// (`SessionStore::reconcile`). At most 30 days.
    pub tombstone_ttl_ms: u64,
    /// Create the table and bring its schema to this version on connect. Default `true`; turn
    /// it off where the application's role may not run DDL (then apply the crate's schema
    /// yourself: see the crate docs).
    pub create_schema: bool,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            url: String::new(),
            table: DEFAULT_TABLE.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            sweep_interval_ms: DEFAULT_SWEEP_INTERVAL_MS,
            sweep_batch: DEFAULT_SWEEP_BATCH,
            tombstone_ttl_ms: 0,
            create_schema: true,
        }
    }
}

impl fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConfig")
            .field("url", &redact_url(&self.url))
            .field("table", &self.table)
            .field("pool_size", &self.pool_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("sweep_interval_ms", &self.sweep_interval_ms)
            .field("sweep_batch", &self.sweep_batch)
            .field("tombstone_ttl_ms", &self.tombstone_ttl_ms)
            .field("create_schema", &self.create_schema)
            .finish()
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of `url`, from its scheme.
    pub(crate) fn of(url: &str) -> Result<Dialect> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme {
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "sqlite" => Ok(Dialect::Sqlite),
            "" => Err(Error::config(
                "sql.url",
                "is empty or has no scheme; expected postgres://… or sqlite://…",
            )),
            other => Err(Error::config(
                "sql.url",
                format!(
                    "has scheme {:?}; expected postgres://… or sqlite://…",
                    session_core::backend::clip(other)
                ),
            )),
        }
    }
}

impl SqlConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        SqlConfig {
            url: url.into(),
            ..SqlConfig::default()
        }
    }

    /// Sets [`table`](Self::table).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Sets [`pool_size`](Self::pool_size).
    pub fn with_pool_size(mut self, pool_size: u32) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Sets [`timeout_ms`](Self::timeout_ms).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = millis(timeout);
        self
    }

    /// Sets [`sweep_interval_ms`](Self::sweep_interval_ms); [`Duration::ZERO`] turns the
    /// reclaim off.
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval_ms = millis(interval);
        self
    }

    /// Turns tombstone mode on, a delete of a key holding no session leaving a tombstone that
    /// lasts `ttl` (see [`tombstone_ttl_ms`](Self::tombstone_ttl_ms)); [`Duration::ZERO`] turns
    /// it off, a non-zero `ttl` under a millisecond counts as one.
    pub fn with_tombstones(mut self, ttl: Duration) -> Self {
        let ms = millis(ttl);
        self.tombstone_ttl_ms = if ms == 0 && !ttl.is_zero() { 1 } else { ms };
        self
    }

    /// Sets [`create_schema`](Self::create_schema).
    pub fn with_create_schema(mut self, create_schema: bool) -> Self {
        self.create_schema = create_schema;
        self
    }

    /// Whether tombstone mode is on.
    pub fn keeps_tombstones(&self) -> bool {
        self.tombstone_ttl_ms > 0
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first wrong key (`sql.url`, `sql.table`, …).
    pub fn validate(&self) -> Result<()> {
        Dialect::of(&self.url)?;
        check_table(&self.table)?;
        let positive: [(&str, u64); 4] = [
            ("sql.pool_size", u64::from(self.pool_size)),
            ("sql.timeout_ms", self.timeout_ms),
            ("sql.connect_timeout_ms", self.connect_timeout_ms),
            ("sql.sweep_batch", u64::from(self.sweep_batch)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        if self.tombstone_ttl_ms > MAX_TOMBSTONE_TTL_MS {
            return Err(Error::config(
                "sql.tombstone_ttl_ms",
                format!(
                    "is {} but must be at most {MAX_TOMBSTONE_TTL_MS} (30 days), or 0 to keep no tombstones",
                    self.tombstone_ttl_ms
                ),
            ));
        }
        Ok(())
    }

    /// [`timeout_ms`](Self::timeout_ms) as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`connect_timeout_ms`](Self::connect_timeout_ms) as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// A table name is spliced into SQL text, so it is held to plain lowercase identifiers.
fn check_table(table: &str) -> Result<()> {
    let mut bytes = table.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !first_ok || !rest_ok || table.len() > MAX_TABLE_LEN {
        return Err(Error::config(
            "sql.table",
            format!(
                "{:?} is not a table name this store accepts: [a-z_][a-z0-9_]*, at most {MAX_TABLE_LEN} characters",
                session_core::backend::clip(table)
            ),
        ));
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn key_of(e: Error) -> String {
        match e {
            Error::Config { key, .. } => key,
            other => panic!("expected Config, got {other}"),
        }
    }

    #[test]
    fn defaults_with_a_url_are_valid() {
        SqlConfig::new("postgres://u@127.0.0.1/db").validate().unwrap();
        SqlConfig::new("sqlite::memory:").validate().unwrap();
        SqlConfig::new("sqlite://sessions.db").validate().unwrap();
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let d = || SqlConfig::new("sqlite::memory:");
        let cases = [
            (SqlConfig::default(), "sql.url"),
            (SqlConfig::new("mysql://x"), "sql.url"),
            (d().with_table("Sessions"), "sql.table"),
            (d().with_table("s; drop table x"), "sql.table"),
            (d().with_table(""), "sql.table"),
            (d().with_table("a".repeat(49)), "sql.table"),
            (d().with_pool_size(0), "sql.pool_size"),
            (d().with_timeout(Duration::ZERO), "sql.timeout_ms"),
            (
                d().with_tombstones(Duration::from_millis(MAX_TOMBSTONE_TTL_MS + 1)),
                "sql.tombstone_ttl_ms",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(key_of(config.validate().unwrap_err()), key, "{config:?}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = SqlConfig::new("postgres://app:s3cret@db.internal:5432/app?sslmode=require");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:<redacted>@db.internal:5432/app"),
            "{shown}"
        );
        let c = SqlConfig::new("postgres://h/app?user=app&password=s3cret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("user=app&password=<redacted>"), "{shown}");
    }

    #[test]
    fn tombstones_are_off_by_default() {
        assert!(!SqlConfig::default().keeps_tombstones());
        assert_eq!(
            SqlConfig::default()
                .with_tombstones(Duration::from_micros(3))
                .tombstone_ttl_ms,
            1
        );
    }
}
