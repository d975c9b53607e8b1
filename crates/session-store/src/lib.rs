//! Session storage for Rust services: pick backends with cargo features,
//! pick one at run time with configuration.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`MemoryStore`](memory::MemoryStore) |
//! | `redis` | no | `RedisStore` on fred (standalone, sentinel, cluster, ACL) and `pub use fred` |
//! | `tls` | no | TLS (rustls) for Redis |
//! | `fallback` | no | `FallbackStore`: Redis, and memory through an outage (implies `redis`, `memory`) |
//! | `postgres` | no | `SqlStore` on PostgreSQL (`backend = "sql"`, the `[sql]` section) |
//! | `sqlite` | no | `SqlStore` on SQLite, built in (`sqlite://file.db`, `sqlite::memory:`) |
//! | `backup` | no | `BackupStore`: a write-behind backup of the backend into the `[sql]` store (`backup.enabled`; needs `postgres` or `sqlite`) |
//! | `secure` | no | `SecureStore`: ids stored as keyed hashes, payloads sealed under a keyring (`[security]`) |
//! | `bincode` | yes | the bincode codec |
//! | `json` | yes | the JSON codec |
//! | `instrument` | yes | metrics and tracing for every store |
//!
//! # Example
//!
//! ```no_run
//! use session_store::{Settings, Backend};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct TaskSession { task_id: String, state: String }
//!
//! # async fn run() -> session_store::Result<()> {
//! // config/sessions.toml, overridden by SESSION_* environment variables:
//! //   backend = "redis"
//! //   key_prefix = "omnia:session:"
//! //   [redis]
//! //   url = "localhost:6379"
//! let settings = Settings::load(Some("config/sessions.toml".as_ref()))?;
//! let built = session_store::build(&settings).await?;
//! let tasks = built.sessions::<TaskSession>("task")?;
//! let mut task = tasks.create(TaskSession { task_id: "t1".into(), state: "new".into() }).await?;
//! task.value.state = "running".into();
//! tasks.save_if(&mut task).await?; // compare-and-set on the version just stored
//! # Ok(()) }
//! ```
//!
//! Switching from memory to Redis or SQL — and back — is a change of `backend`
//! in the configuration; no code changes.

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use session_core::*;

mod settings;

pub use settings::{Backend, Loader, MetricsSettings, Settings, ENV_PREFIX};

/// The in-memory backend.
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use session_memory as memory;

/// The Redis backend.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use session_redis as redis;

/// The fred client, so users name the version this crate was built with.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use session_redis::fred;

/// The fallback store.
#[cfg(feature = "fallback")]
#[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
pub use session_fallback as fallback;

/// The SQL backend (PostgreSQL, SQLite).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub use session_sql as sql;

/// The write-behind backup, read-through restore and copying between stores.
#[cfg(feature = "backup")]
#[cfg_attr(docsrs, doc(cfg(feature = "backup")))]
pub use session_backup as backup;

/// Secrets at rest: ids stored as keyed hashes, payloads sealed with an AEAD.
#[cfg(feature = "secure")]
#[cfg_attr(docsrs, doc(cfg(feature = "secure")))]
pub use session_secure as secure;

/// A store built from [`Settings`], with the settings typed handles need.
#[derive(Clone)]
pub struct Built {
    /// The store: wrapped in the backup when `backup.enabled`, then in `SecureStore` when
    /// `security.hashed_ids` or `security.encryption` is enabled, then instrumented when
    /// `metrics.enabled`.
    pub store: Arc<dyn SessionStore>,
    /// Codec, TTLs, key prefix and size limit.
    pub core: CoreConfig,
    /// Which backend this is.
    pub backend: Backend,
    /// What [`shutdown`](Self::shutdown) must finish: the backup's queue.
    drain: Option<Arc<dyn Drain>>,
}

/// Work a store leaves for a graceful shutdown.
trait Drain: Send + Sync {
    fn drain(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>>;
}

#[cfg(all(feature = "backup", any(feature = "postgres", feature = "sqlite")))]
impl Drain for session_backup::BackupStore<Arc<dyn SessionStore>, session_sql::SqlStore> {
    fn drain(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.flush())
    }
}

impl Built {
    /// Finishes what the store has left to do before the process exits: with `backup.enabled`,
    /// writes every queued change into the backup database. Call it after the server stopped
    /// taking requests. Nothing to do otherwise.
    ///
    /// # Errors
    /// The backup database's error (the changes still queued are lost with the process).
    pub async fn shutdown(&self) -> Result<()> {
        match &self.drain {
            Some(drain) => drain.drain().await,
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("backend", &self.backend)
            .field("store", &self.store.backend())
            .field("core", &self.core)
            .finish()
    }
}

impl Built {
    /// A typed handle on a namespace with the configured codec, expiry and limit.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`].
    pub fn sessions<T>(&self, namespace: &str) -> Result<Sessions<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync,
    {
        self.core.sessions(Arc::clone(&self.store), namespace)
    }
}

/// Builds the store the settings describe.
///
/// * `memory`: a [`MemoryStore`](session_memory::MemoryStore).
/// * `redis`: connects and verifies (PING) within `redis.connect_timeout_ms`;
///   fails with a clear error if Redis is unreachable, refuses the password
///   or speaks another protocol (TLS mismatch).
/// * `fallback`: Redis connected as for `redis` — a permanent error (wrong
///   credentials, a missing ACL permission, a TLS mismatch, a bad database)
///   fails start-up with the same message — except that an *unreachable*
///   Redis does not: the store then starts serving from memory and uses
///   Redis as soon as it answers. The memory store refuses writes at its
///   bound rather than evicting acknowledged ones.
///
/// * `sql` (feature `postgres` or `sqlite`): an `SqlStore` on `sql.url`,
///   connected as `SqlStore::connect` does: the table is created or checked
///   at start-up; an unreachable database, a refused login or a schema of
///   another version fails start-up. A URL naming a driver this build lacks is
///   an [`Error::Config`] naming `sql.url`.
///
/// With `backup.enabled` (feature `backup`, and `postgres` or `sqlite`), the
/// `memory`, `redis` or `fallback` store is wrapped in a `BackupStore` whose
/// backup is an `SqlStore` on the `[sql]` section: every write and delete the
/// store acknowledged is copied into the database behind the request
/// (write-behind), and a miss may read through from it
/// (`backup.read_through`). The backup database is connected at start-up: a
/// permanent error (a refused login, a schema of another version) fails
/// start-up; an unreachable database does not — the service starts, changes
/// queue (within `backup.max_pending`) and reach the database once it answers.
/// `backend =
/// "sql"` with `backup.enabled` is an [`Error::Config`] naming
/// `backup.enabled` (the store would back up into itself).
///
/// With `metrics.enabled` (and the `instrument` feature) the store wears
/// [`Instrumented`](session_core::instrument::Instrumented), outside the
/// backup, and, when `metrics.refresh_secs > 0` and a tokio runtime is
/// running, gauges are refreshed in the background.
///
/// # Errors
/// [`Error::Config`] for bad settings; [`Error::Unavailable`] when Redis
/// cannot be reached (backend `redis` only; `fallback` then starts serving
/// from memory), or the SQL database (backend `sql`, or the backup's); for
/// `fallback` as for `redis`, [`Error::Config`] naming the key when Redis
/// refuses the credentials, the ACL, the TLS settings or the database; the
/// SQL store's own errors (`Config`, `Refused`, `Backend`) when the database
/// refuses the login or the schema.
#[cfg_attr(
    not(any(
        feature = "memory",
        feature = "redis",
        feature = "postgres",
        feature = "sqlite"
    )),
    allow(
        unreachable_code,
        unused_variables,
        reason = "a build without a backend can only refuse"
    )
)]
pub async fn build(settings: &Settings) -> Result<Built> {
    settings.validate()?;
    let core = settings.core.clone();
    let options = inner_options(core.store_options()?, settings)?;
    let store: Arc<dyn SessionStore> = match settings.backend {
        #[cfg(feature = "memory")]
        Backend::Memory => Arc::new(session_memory::MemoryStore::with_options(
            settings.memory.clone(),
            options.clone(),
        )?),
        #[cfg(feature = "redis")]
        Backend::Redis => {
            // Several instances on one Redis with a backup that reads through: a logout leaves a
            // tombstone, so that another instance's read-through — whose backup may still hold
            // the session until the logout's instance flushes — cannot restore it.
            let mut redis = settings.redis.clone();
            if settings.backup_reads_through() && redis.tombstone_ttl_ms == 0 {
                redis.tombstone_ttl_ms =
                    u64::try_from(core.longest_lifetime().as_millis()).unwrap_or(u64::MAX);
            }
            Arc::new(
                session_redis::RedisStore::builder(redis)
                    .options(options.clone())
                    .connect()
                    .await?,
            )
        }
        #[cfg(all(feature = "fallback", feature = "redis", feature = "memory"))]
        Backend::Fallback => {
            // Connected first, so that a healthy Redis serves the first request and a permanent
            // error (credentials, ACL, TLS, database) fails start-up with its own message, as
            // with `backend = "redis"`. Only an unreachable Redis starts the fallback open.
            // Several instances share the Redis: deletes leave tombstones that outlive every
            // write another instance might still replay.
            let longest = u64::try_from(core.longest_lifetime().as_millis()).unwrap_or(u64::MAX);
            let mut redis = settings.redis.clone();
            if redis.tombstone_ttl_ms == 0 {
                redis.tombstone_ttl_ms = longest;
            }
            let mut fallback = settings.fallback.clone();
            fallback.tombstone_ttl_ms = redis.tombstone_ttl_ms;
            if let Some(name) = &settings.metrics.name {
                fallback = fallback.with_name(name.clone());
            }
            let builder = |redis| session_redis::RedisStore::builder(redis).options(options.clone());
            let primary = match builder(redis.clone()).connect().await {
                Ok(store) => store,
                Err(e) if e.is_temporary() => {
                    tracing::warn!(
                        error = %e,
                        "session store: Redis is unreachable at start-up; serving from memory until it answers"
                    );
                    builder(redis).connect_lazy()?
                }
                Err(e) => return Err(e),
            };
            let secondary = session_memory::MemoryStore::with_options(
                settings
                    .memory
                    .clone()
                    .with_at_capacity(session_memory::AtCapacity::Reject),
                options.clone(),
            )?;
            Arc::new(session_fallback::FallbackStore::new(primary, secondary, fallback).await?)
        }
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        Backend::Sql => {
            Arc::new(session_sql::SqlStore::connect(settings.sql.clone(), options.clone()).await?)
        }
        #[allow(unreachable_patterns, reason = "reachable when a backend feature is off")]
        other => {
            return Err(Error::config(
                "backend",
                format!("backend {other} is not built into this binary"),
            ))
        }
    };
    let (store, drain) = backup(store, settings, options).await?;
    let store = secure(store, settings, core.store_options()?.max_session_bytes())?;
    let store = instrument(store, settings);
    Ok(Built {
        store,
        core,
        backend: settings.backend,
        drain,
    })
}

/// `store` wrapped in a `BackupStore` into the `[sql]` store when `backup.enabled`.
#[cfg(all(feature = "backup", any(feature = "postgres", feature = "sqlite")))]
async fn backup(
    store: Arc<dyn SessionStore>,
    settings: &Settings,
    options: StoreOptions,
) -> Result<(Arc<dyn SessionStore>, Option<Arc<dyn Drain>>)> {
    if !settings.backup.enabled {
        return Ok((store, None));
    }
    if settings.backend == Backend::Sql {
        // `validate` refuses it first; kept here so that no path backs the store into itself.
        return Err(Error::config(
            "backup.enabled",
            "backend = \"sql\" cannot be backed up into the [sql] store it already is",
        ));
    }
    let backup = match session_sql::SqlStore::connect(settings.sql.clone(), options.clone()).await {
        Ok(backup) => backup,
        // The backup is not on the request path: a database that is down at start-up does not
        // keep the service from starting. Changes queue (within backup.max_pending) and reach it
        // once it answers; the table is prepared then.
        Err(e) if e.is_temporary() => {
            tracing::warn!(
                error = %e,
                "session store: the backup database ([sql]) is unreachable at start-up; serving without it \
                 until it answers (changes are queued)"
            );
            session_sql::SqlStore::connect_lazy(settings.sql.clone(), options).await?
        }
        Err(e) => return Err(e),
    };
    let wrapped = Arc::new(session_backup::BackupStore::new(
        store,
        backup,
        settings.backup.clone(),
    )?);
    Ok((wrapped.clone(), Some(wrapped)))
}

/// Without an SQL driver `validate` refuses `backup.enabled`, so there is nothing to wrap.
#[cfg(not(all(feature = "backup", any(feature = "postgres", feature = "sqlite"))))]
#[allow(clippy::unused_async, reason = "the same call as with the backup")]
async fn backup(
    store: Arc<dyn SessionStore>,
    settings: &Settings,
    _options: StoreOptions,
) -> Result<(Arc<dyn SessionStore>, Option<Arc<dyn Drain>>)> {
    if settings.backup_enabled() {
        return Err(Error::config(
            "backup.enabled",
            "this binary is built without the backup feature or an SQL driver; enable the cargo features \
             \"backup\" and \"postgres\" or \"sqlite\" of session-store",
        ));
    }
    Ok((store, None))
}

/// The options of the stores `SecureStore` wraps: room for the seal when encryption is on.
#[cfg(feature = "secure")]
fn inner_options(options: StoreOptions, settings: &Settings) -> Result<StoreOptions> {
    let limit = settings.security.inner_limit(options.max_session_bytes());
    options.with_max_session_bytes(limit)
}

/// Without the `secure` feature the stores take the options as configured.
#[cfg(not(feature = "secure"))]
#[allow(clippy::unnecessary_wraps, reason = "the same call as with the feature")]
fn inner_options(options: StoreOptions, _settings: &Settings) -> Result<StoreOptions> {
    Ok(options)
}

/// `store` wrapped in a `SecureStore` when `security` enables anything, with the configured
/// size limit on what the application writes.
#[cfg(feature = "secure")]
fn secure(
    store: Arc<dyn SessionStore>,
    settings: &Settings,
    max_session_bytes: usize,
) -> Result<Arc<dyn SessionStore>> {
    if !settings.security.is_enabled() {
        return Ok(store);
    }
    let secured = session_secure::SecureStore::new(store, &settings.security)?;
    Ok(Arc::new(secured.with_max_session_bytes(max_session_bytes)))
}

/// Without the `secure` feature there is nothing to wrap (`[security]` is refused when read).
#[cfg(not(feature = "secure"))]
#[allow(clippy::unnecessary_wraps, reason = "the same call as with the feature")]
fn secure(
    store: Arc<dyn SessionStore>,
    _settings: &Settings,
    _max_session_bytes: usize,
) -> Result<Arc<dyn SessionStore>> {
    Ok(store)
}

#[cfg(feature = "instrument")]
fn instrument(store: Arc<dyn SessionStore>, settings: &Settings) -> Arc<dyn SessionStore> {
    if !settings.metrics.enabled {
        return store;
    }
    let mut layer = session_core::instrument::Instrumented::new(store);
    if let Some(name) = &settings.metrics.name {
        layer = layer.with_name(name.clone());
    }
    let layer = Arc::new(layer);
    if settings.metrics.refresh_secs > 0 && tokio::runtime::Handle::try_current().is_ok() {
        let mut namespaces: Vec<Namespace> = settings
            .core
            .namespaces
            .keys()
            .chain(&settings.metrics.namespaces)
            .filter_map(|n| Namespace::new(n).ok())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        let _reporter = layer.spawn_stats_reporter(
            namespaces,
            std::time::Duration::from_secs(settings.metrics.refresh_secs),
        );
    }
    layer
}

#[cfg(not(feature = "instrument"))]
fn instrument(store: Arc<dyn SessionStore>, _settings: &Settings) -> Arc<dyn SessionStore> {
    store
}
