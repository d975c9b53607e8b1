//! Session storage for Rust services: pick backends with cargo features,
//! pick one at run time with configuration.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`MemoryStore`](memory::MemoryStore) |
//! | `redis` | no | `RedisStore` on fred (standalone, sentinel, cluster, ACL) and `pub use fred` |
//! | `tls` | no | TLS (rustls) for Redis |
//! | `fallback` | no | `FallbackStore`: Redis, and memory through an outage (implies `redis`, `memory`) |
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
//! Switching from memory to Redis — and back — is a change of `backend` in
//! the configuration; no code changes.

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

/// A store built from [`Settings`], with the settings typed handles need.
#[derive(Clone)]
pub struct Built {
    /// The store, instrumented when `metrics.enabled`.
    pub store: Arc<dyn SessionStore>,
    /// Codec, TTLs, key prefix and size limit.
    pub core: CoreConfig,
    /// Which backend this is.
    pub backend: Backend,
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
/// With `metrics.enabled` (and the `instrument` feature) the store wears
/// [`Instrumented`](session_core::instrument::Instrumented) and, when
/// `metrics.refresh_secs > 0` and a tokio runtime is running, gauges are
/// refreshed in the background.
///
/// # Errors
/// [`Error::Config`] for bad settings; [`Error::Unavailable`] when Redis
/// cannot be reached (backend `redis` only; `fallback` then starts serving
/// from memory); for `fallback` as for `redis`, [`Error::Config`] naming the
/// key when Redis refuses the credentials, the ACL, the TLS settings or the
/// database.
#[cfg_attr(
    not(any(feature = "memory", feature = "redis")),
    allow(
        unreachable_code,
        unused_variables,
        reason = "a build without a backend can only refuse"
    )
)]
pub async fn build(settings: &Settings) -> Result<Built> {
    settings.validate()?;
    let core = settings.core.clone();
    let options = core.store_options()?;
    let store: Arc<dyn SessionStore> = match settings.backend {
        #[cfg(feature = "memory")]
        Backend::Memory => Arc::new(session_memory::MemoryStore::with_options(
            settings.memory.clone(),
            options,
        )?),
        #[cfg(feature = "redis")]
        Backend::Redis => Arc::new(
            session_redis::RedisStore::builder(settings.redis.clone())
                .options(options)
                .connect()
                .await?,
        ),
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
        #[allow(unreachable_patterns, reason = "reachable when a backend feature is off")]
        other => {
            return Err(Error::config(
                "backend",
                format!("backend {other} is not built into this binary"),
            ))
        }
    };
    let store = instrument(store, settings);
    Ok(Built {
        store,
        core,
        backend: settings.backend,
    })
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
