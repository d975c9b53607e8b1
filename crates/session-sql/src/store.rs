//! [`SqlStore`]: connecting, the schema, and what every call shares.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use session_core::backend::{decode_entry, Entry, Record};
use session_core::{Bytes, Error, KeyPrefix, Meta, Result, SessionKey, StoreOptions, Version};
use sqlx::Connection;

use crate::config::{Dialect, SqlConfig};
use crate::db::{on_db, Db};
use crate::error::from_sqlx;
use crate::statements::{migrations, schema_table, Statements, KIND_SESSION, KIND_TOMBSTONE, SCHEMA_VERSION};

/// Pause between two attempts to prepare the schema at connect.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A [`SessionStore`](session_core::SessionStore) on PostgreSQL or SQLite.
///
/// Make one with [`SqlStore::connect`]; share it as `Arc<SqlStore>` or
/// `Arc<dyn SessionStore>`. See the [crate documentation](crate) for the table, the clock
/// that judges expiry and what a timed-out write means.
pub struct SqlStore {
    pub(crate) inner: Arc<Inner>,
    sweeper: Option<tokio::task::AbortHandle>,
}

/// What the store and its sweeper share.
pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) dialect: Dialect,
    pub(crate) st: Statements,
    pub(crate) prefix: KeyPrefix,
    pub(crate) max_session_bytes: usize,
    pub(crate) config: SqlConfig,
    pub(crate) timeout: Duration,
    /// Expired rows the sweeper deleted.
    pub(crate) expired: AtomicU64,
    /// Set once the schema is known to be ready (at connect, or at first use when lazy).
    pub(crate) schema: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("config", &self.inner.config)
            .field("key_prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Opens a store on `config.url`, with the shared `options` (key prefix, size limit).
    /// Brings the table's schema up to date when `config.create_schema` is on (see the crate
    /// docs), else checks that it is; inside a Tokio runtime, starts the background reclaim of
    /// expired rows.
    ///
    /// # Errors
    /// [`Error::Config`] for a wrong setting or a URL this build has no driver for;
    /// [`Error::Unavailable`] when the database does not answer; [`Error::Backend`] when the
    /// schema cannot be created or is of another version.
    pub async fn connect(config: SqlConfig, options: StoreOptions) -> Result<SqlStore> {
        config.validate()?;
        let dialect = Dialect::of(&config.url)?;
        // Several processes starting on one SQLite file (or one database) contend for its lock
        // (SQLite's switch to WAL does not wait for it): a temporary error is tried again until
        // the connect deadline.
        let until = tokio::time::Instant::now() + config.connect_timeout() + config.timeout();
        let db = loop {
            match Db::open(&config, dialect).await {
                Err(e) if e.is_temporary() && tokio::time::Instant::now() + RETRY_PAUSE < until => {
                    tracing::debug!(error = %e, "sql: opening the database failed; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => break other?,
            }
        };
        let inner = Inner::new(config, dialect, db, &options);
        let schema = loop {
            let attempt = tokio::time::timeout_at(until, prepare_schema(&inner))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::unavailable(
                        crate::error::BACKEND,
                        "preparing the schema timed out",
                    ))
                });
            match attempt {
                Err(e) if e.is_temporary() && tokio::time::Instant::now() + RETRY_PAUSE < until => {
                    tracing::debug!(error = %e, "sql: preparing the schema failed; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => break other,
            }
        };
        if let Err(e) = schema {
            inner.db.close().await;
            return Err(e);
        }
        let _ = inner.schema.set(());
        let sweeper = crate::sweeper::start(&inner);
        Ok(SqlStore { inner, sweeper })
    }

    /// A store that opens no connection yet: the schema is prepared (or checked) by the first
    /// call, and every call fails with that call's error until the database answers. For a
    /// store that must not keep a service from starting — a backup whose database may be down.
    /// A SQLite file is opened at once all the same (a local file answers or is wrong).
    ///
    /// # Errors
    /// [`Error::Config`] for a wrong setting or a URL this build has no driver for; for SQLite,
    /// the errors of opening the file.
    pub async fn connect_lazy(config: SqlConfig, options: StoreOptions) -> Result<SqlStore> {
        config.validate()?;
        let dialect = Dialect::of(&config.url)?;
        let db = Db::open(&config, dialect).await?;
        let inner = Inner::new(config, dialect, db, &options);
        let sweeper = crate::sweeper::start(&inner);
        Ok(SqlStore { inner, sweeper })
    }

    /// The key prefix of every session this store writes.
    pub fn key_prefix(&self) -> &KeyPrefix {
        &self.inner.prefix
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &SqlConfig {
        &self.inner.config
    }

    /// Deletes expired rows now (what the background reclaim does every `sweep_interval_ms`),
    /// and answers how many.
    ///
    /// # Errors
    /// Temporary errors.
    pub async fn reclaim_expired(&self) -> Result<u64> {
        crate::sweeper::sweep(&self.inner).await
    }

    /// Stops the background reclaim and closes the pooled connections. Calls made afterwards
    /// reconnect (PostgreSQL) or fail (SQLite).
    pub async fn close(&self) {
        if let Some(sweeper) = &self.sweeper {
            sweeper.abort();
        }
        self.inner.db.close().await;
    }
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        if let Some(sweeper) = self.sweeper.take() {
            sweeper.abort();
        }
    }
}

/// Creates or checks the schema.
async fn prepare_schema(inner: &Inner) -> Result<()> {
    let table = &inner.config.table;
    let version_table = schema_table(table);
    let create = inner.config.create_schema;
    let steps = migrations(inner.dialect, table);
    let pg = inner.dialect == Dialect::Postgres;
    let begin = inner.db.begin();
    let found: i32 = on_db!(@any inner, "connect", Write, |c| {
        let mut tx = c.begin_with(begin).await.map_err(|e| from_sqlx("connect", e))?;
        if pg && create {
            // Instances starting together: one creates, the others wait and find it made.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(table.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| from_sqlx("connect", e))?;
        }
        if create {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL)"
            ))
            .execute(&mut *tx)
            .await
            .map_err(|e| schema_error(&version_table, e))?;
        }
        let current: Option<i32> = sqlx::query_scalar(&format!("SELECT max(version) FROM {version_table}"))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| schema_error(&version_table, e))?;
        let current = current.unwrap_or(0);
        if create && current < SCHEMA_VERSION {
            for step in steps.iter().skip(usize::try_from(current).unwrap_or(0)) {
                for statement in step {
                    sqlx::query(statement)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| schema_error(table, e))?;
                }
            }
            sqlx::query(&format!("DELETE FROM {version_table}"))
                .execute(&mut *tx)
                .await
                .map_err(|e| schema_error(&version_table, e))?;
            sqlx::query(&format!("INSERT INTO {version_table} (version) VALUES ($1)"))
                .bind(SCHEMA_VERSION)
                .execute(&mut *tx)
                .await
                .map_err(|e| schema_error(&version_table, e))?;
        }
        tx.commit().await.map_err(|e| from_sqlx("connect", e))?;
        Ok(if create {
            current.max(SCHEMA_VERSION)
        } else {
            current
        })
    })?;
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(Error::Backend {
            backend: crate::error::BACKEND,
            message: format!(
                "table {table} has schema version {found}, this build reads version {SCHEMA_VERSION}{}",
                if found < SCHEMA_VERSION {
                    "; turn sql.create_schema on once (or apply the crate's schema) to bring it up to date"
                } else {
                    "; a newer build made it: deploy that build"
                }
            ),
            source: None,
        })
    }
}

fn schema_error(table: &str, e: sqlx::Error) -> Error {
    Error::Backend {
        backend: crate::error::BACKEND,
        message: format!(
            "cannot prepare table {table}: {} (does the role may create tables? see sql.create_schema)",
            crate::error::clean(&e)
        ),
        source: Some(Box::new(e)),
    }
}

/// What a read-decide-write call finds under its key.
pub(crate) enum State {
    /// No row, or one past its deadline.
    Absent,
    /// A live session.
    Live(Record),
    /// A live tombstone.
    Tombstone(Meta),
    /// Live bytes that are not an envelope (with their deadline).
    Corrupt(Error, u64),
}

/// What a read-decide-write call does.
pub(crate) enum Act {
    /// Nothing.
    Keep,
    /// Stores this row.
    Put(Row),
    /// Removes the row.
    Remove,
}

/// A row to store.
pub(crate) struct Row {
    pub(crate) value: Bytes,
    pub(crate) expires_at: u64,
    pub(crate) version: Option<i64>,
    pub(crate) kind: i16,
}

impl Row {
    /// A session's row.
    pub(crate) fn session(value: Bytes, meta: &Meta) -> Row {
        Row {
            value,
            expires_at: meta.deadline(),
            version: Some(version_to_sql(meta.version)),
            kind: KIND_SESSION,
        }
    }

    /// A tombstone's row.
    pub(crate) fn tombstone(meta: &Meta) -> Row {
        Row {
            value: session_core::backend::encode_tombstone(meta),
            expires_at: meta.expires_at,
            version: Some(version_to_sql(meta.version)),
            kind: KIND_TOMBSTONE,
        }
    }

    #[cfg(feature = "testing")]
    /// The row for bytes as they are (tests' raw access): the envelope's version and kind when
    /// they are one.
    pub(crate) fn raw(value: Bytes, namespace: &str) -> Row {
        let (version, kind) = match decode_entry(&value, namespace) {
            Ok(Entry::Live(r)) => (Some(version_to_sql(r.meta.version)), KIND_SESSION),
            Ok(Entry::Tombstone(m)) => (Some(version_to_sql(m.version)), KIND_TOMBSTONE),
            Err(_) => (None, KIND_SESSION),
        };
        Row {
            value,
            expires_at: 0,
            version,
            kind,
        }
    }
}

/// A version token as stored: its bits as an `i64`.
pub(crate) fn version_to_sql(v: Version) -> i64 {
    i64::from_ne_bytes(v.as_u64().to_ne_bytes())
}

/// A deadline or a time as an SQL `BIGINT` (a `u64` past `i64::MAX` is "never").
pub(crate) fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A `BIGINT` time back to ms (a negative one is the epoch).
pub(crate) fn ms_from_sql(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// The state of a locked row: `now` the database's clock.
pub(crate) fn state_of(value: Option<Vec<u8>>, expires_at: Option<i64>, now: u64, namespace: &str) -> State {
    let (Some(value), Some(expires_at)) = (value, expires_at) else {
        return State::Absent;
    };
    let deadline = ms_from_sql(expires_at);
    if deadline <= now {
        return State::Absent;
    }
    match decode_entry(&Bytes::from(value), namespace) {
        Ok(Entry::Live(r)) => State::Live(r),
        Ok(Entry::Tombstone(m)) => State::Tombstone(m),
        Err(e) => State::Corrupt(e, deadline),
    }
}

impl Inner {
    /// The shared state of a store on `db`.
    fn new(config: SqlConfig, dialect: Dialect, db: Db, options: &StoreOptions) -> Arc<Inner> {
        Arc::new(Inner {
            st: Statements::new(dialect, &config.table),
            db,
            dialect,
            prefix: options.key_prefix().clone(),
            max_session_bytes: options.max_session_bytes(),
            timeout: config.timeout(),
            config,
            expired: AtomicU64::new(0),
            schema: tokio::sync::OnceCell::new(),
        })
    }

    /// Prepares the schema if no call has yet (a lazily opened store).
    pub(crate) async fn ready(&self) -> Result<()> {
        if self.schema.initialized() {
            return Ok(());
        }
        self.schema
            .get_or_try_init(|| async {
                tokio::time::timeout(self.config.connect_timeout() + self.timeout, prepare_schema(self))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::unavailable(
                            crate::error::BACKEND,
                            "preparing the schema timed out",
                        ))
                    })
            })
            .await
            .map(|_| ())
    }

    /// The backend key of a session.
    pub(crate) fn key(&self, key: &SessionKey) -> String {
        self.prefix.render(key)
    }
}
