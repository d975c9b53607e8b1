//! The connection pools, one per database kind, and the macros that run one call's statements on
//! whichever the store has: the call's body is written once and compiled for each driver.

#[cfg(feature = "sqlite")]
use std::time::Duration;

use session_core::{Error, Result};

use crate::config::{Dialect, SqlConfig};

/// The pool of one store.
pub(crate) enum Db {
    /// PostgreSQL: this crate's pool, whose connections know their server process (fencing).
    #[cfg(feature = "postgres")]
    Pg(Box<crate::pg::PgPool>),
    /// SQLite: sqlx's pool.
    #[cfg(feature = "sqlite")]
    Lite(sqlx::SqlitePool),
}

impl Db {
    /// The pool for `config` (its URL's dialect). Opens nothing on PostgreSQL until the first
    /// call; on SQLite opens the file (created if missing).
    pub(crate) async fn open(config: &SqlConfig, dialect: Dialect) -> Result<Db> {
        match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => Ok(Db::Pg(Box::new(crate::pg::PgPool::new(
                &config.url,
                config.pool_size,
                config.connect_timeout(),
            )?))),
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => open_sqlite(config).await.map(Db::Lite),
            #[allow(unreachable_patterns, reason = "reached only by a build without that driver")]
            other => Err(Error::config(
                "sql.url",
                format!(
                    "names {} but session-sql was built without its feature; enable feature `{}`",
                    match other {
                        Dialect::Postgres => "PostgreSQL",
                        Dialect::Sqlite => "SQLite",
                    },
                    match other {
                        Dialect::Postgres => "postgres",
                        Dialect::Sqlite => "sqlite",
                    }
                ),
            )),
        }
    }

    /// The statement that opens a read-decide-write transaction: SQLite takes its write lock
    /// at once (`IMMEDIATE`), so two such transactions never deadlock on the upgrade.
    pub(crate) fn begin(&self) -> &'static str {
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(_) => "BEGIN",
            #[cfg(feature = "sqlite")]
            Db::Lite(_) => "BEGIN IMMEDIATE",
        }
    }

    /// Closes idle connections.
    pub(crate) async fn close(&self) {
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool) => pool.close_idle(),
            #[cfg(feature = "sqlite")]
            Db::Lite(pool) => pool.close().await,
        }
    }

    /// Whether writes wait for the fence (PostgreSQL only).
    pub(crate) fn writes_fenced_off(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Db::Pg(pool) => pool.writes_fenced_off(),
            #[cfg(feature = "sqlite")]
            Db::Lite(_) => false,
        }
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(config: &SqlConfig) -> Result<sqlx::SqlitePool> {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
    use sqlx::ConnectOptions;

    let options = SqliteConnectOptions::from_str(&config.url)
        .map_err(|e| {
            Error::config(
                "sql.url",
                format!("is not a SQLite URL: {}", crate::error::clean(&e)),
            )
        })?
        .create_if_missing(true)
        .busy_timeout(config.timeout())
        .disable_statement_logging();
    let in_memory = config.url.contains(":memory:") || config.url.contains("mode=memory");
    // WAL lets reads go on beside the one writer; NORMAL syncs at checkpoints (a crash of the
    // process loses nothing committed; a power cut may lose the last commits).
    let options = if in_memory {
        options
    } else {
        options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    };
    SqlitePoolOptions::new()
        .max_connections(config.pool_size)
        // An in-memory database lives as long as one of its connections.
        .min_connections(u32::from(in_memory))
        .idle_timeout(if in_memory {
            None
        } else {
            Some(Duration::from_secs(600))
        })
        .max_lifetime(None)
        .acquire_timeout(config.timeout())
        .connect_with(options)
        .await
        .map_err(|e| crate::error::from_sqlx("connect", e))
}

/// Runs `$body` with `$c` bound to a `&mut` connection of the store's pool, by the store's
/// deadline, once the schema is ready; `?` in `$body` ends the call. (`@any` skips the schema
/// check: preparing the schema runs through it.) `$use` is `Read` or `Write` ([`Use`](crate::pg::Use)):
/// on PostgreSQL a write's connection abandoned by the deadline (or broken) is fenced. On SQLite
/// the deadline bounds the wait for a connection and for the file's lock (`busy_timeout`); a
/// statement that started runs to its end, so its answer is final.
macro_rules! on_db {
    ($inner:expr, $op:expr, $use:ident, |$c:ident| $body:expr) => {{
        let inner = &$inner;
        // A store opened lazily prepares its schema on first use.
        match inner.ready().await {
            Err(e) => Err(e),
            Ok(()) => $crate::db::on_db!(@any inner, $op, $use, |$c| $body),
        }
    }};
    (@any $inner:expr, $op:expr, $use:ident, |$c:ident| $body:expr) => {{
        let inner = $inner;
        match &inner.db {
            #[cfg(feature = "postgres")]
            $crate::db::Db::Pg(pool) => $crate::db::on_db!(@pg inner, pool, $op, $use, |$c| $body),
            #[cfg(feature = "sqlite")]
            $crate::db::Db::Lite(pool) => $crate::db::on_db!(@lite pool, $op, |$c| $body),
        }
    }};
    (@pg $inner:expr, $pool:expr, $op:expr, $use:ident, |$c:ident| $body:expr) => {{
        let deadline = ::tokio::time::Instant::now() + $inner.timeout;
        let work = async {
            let mut lease = $pool.lease($crate::pg::Use::$use, deadline).await?;
            let result = async {
                let $c: &mut ::sqlx::PgConnection = lease.conn()?;
                $body
            }
            .await;
            let ok = match &result {
                Ok(_) => true,
                Err(e) => $crate::error::connection_ok(e),
            };
            lease.finish(ok);
            result
        };
        let result = match ::tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(::session_core::Error::Timeout {
                backend: $crate::error::BACKEND,
                op: $op,
                after: $inner.timeout,
            }),
        };
        // A write given up on (timed out, or its connection broke) is answered only once its
        // server process is gone, if that can be confirmed within one more deadline; otherwise
        // it stays pending and this store's later writes wait for it.
        if result.is_err() && $crate::pg::Use::$use == $crate::pg::Use::Write && $pool.writes_fenced_off() {
            $pool.settle_fence(::tokio::time::Instant::now() + $inner.timeout).await;
        }
        result
    }};
    (@lite $pool:expr, $op:expr, |$c:ident| $body:expr) => {
        async {
            let mut conn = $pool
                .acquire()
                .await
                .map_err(|e| $crate::error::from_sqlx($op, e))?;
            let $c: &mut ::sqlx::SqliteConnection = &mut conn;
            $body
        }
        .await
    };
}
pub(crate) use on_db;

/// [`on_db!`] for a statement only PostgreSQL runs (arrays); called only when the store's
/// dialect is PostgreSQL.
#[cfg(feature = "postgres")]
macro_rules! on_pg {
    ($inner:expr, $op:expr, $use:ident, |$c:ident| $body:expr) => {{
        let inner = &$inner;
        match (inner.ready().await, &inner.db) {
            (Err(e), _) => Err(e),
            (Ok(()), $crate::db::Db::Pg(pool)) => $crate::db::on_db!(@pg inner, pool, $op, $use, |$c| $body),
            #[allow(unreachable_patterns, reason = "only with another driver built in")]
            _ => Err(::session_core::Error::Backend {
                backend: $crate::error::BACKEND,
                message: format!("{}: a PostgreSQL statement on another database", $op),
                source: None,
            }),
        }
    }};
}
#[cfg(feature = "postgres")]
pub(crate) use on_pg;
