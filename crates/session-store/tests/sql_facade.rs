//! The SQL backend and the backup through the facade: `backend = "sql"` and the `[sql]`
//! section, `[backup]`, read from TOML and `SESSION_*` variables, their errors, and the stores
//! `build` makes — on SQLite here, and on PostgreSQL when the `sql` cell of `cargo xtask test`
//! sets `SESSION_TEST_POSTGRES_URL`.
//!
//! This crate's dev-dependencies turn on `sqlite`, `postgres` and `backup` for its tests, so
//! these run with every `cargo test -p session-store`.

#![cfg(all(
    feature = "memory",
    feature = "sqlite",
    feature = "postgres",
    feature = "backup"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]
#![allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use figment::Jail;
use session_store::sql::{SqlConfig, SqlStore};
use session_store::{build, Backend, Error, SessionStore, Settings};
use testkit_redis::{postgres_url, require_postgres, REQUIRE_POSTGRES_ENV};

fn config_key(e: Error) -> String {
    match e {
        Error::Config { key, .. } => key,
        other => panic!("expected a Config error, got {other}"),
    }
}

/// A SQLite file of this test's own in cargo's scratch directory, removed first and when
/// dropped (declared before the stores on it, it is dropped after them).
struct SqliteFile(PathBuf);

impl SqliteFile {
    fn new(name: &str) -> Self {
        let file = SqliteFile(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("facade-{name}-{}.db", std::process::id())),
        );
        file.remove();
        file
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A port nobody listens on: bound, then released.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `cart` sessions of the SQL database at `url`, read directly (not through the store
/// under test).
async fn carts_in_backup(s: &Settings, url: &str) -> session_store::Sessions<String> {
    let backup: Arc<dyn SessionStore> = Arc::new(
        SqlStore::connect(SqlConfig::new(url), s.core.store_options().unwrap())
            .await
            .unwrap(),
    );
    s.core.sessions::<String>(backup, "cart").unwrap()
}

/// Polls `check` until it holds, for at most 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn sql_and_backup_sections_from_toml() {
    let s = Settings::from_toml(
        r#"
        backend = "sql"
        key_prefix = "app:"
        [sql]
        url = "postgres://app:hunter2@db.internal:5432/app"
        table = "web_sessions"
        pool_size = 4
        timeout_ms = 800
        sweep_interval_ms = 0
        tombstone_ttl_ms = 60000
        create_schema = false
        "#,
    )
    .unwrap();
    assert_eq!(s.backend, Backend::Sql);
    assert_eq!(s.backend.as_str(), "sql");
    assert_eq!(s.sql.url, "postgres://app:hunter2@db.internal:5432/app");
    assert_eq!(s.sql.table, "web_sessions");
    assert_eq!(s.sql.pool_size, 4);
    assert_eq!(s.sql.timeout_ms, 800);
    assert_eq!(s.sql.sweep_interval_ms, 0);
    assert_eq!(s.sql.tombstone_ttl_ms, 60_000);
    assert!(!s.sql.create_schema);
    assert!(!s.backup.enabled, "the backup is off by default");
    let shown = format!("{s:?} {s}");
    assert!(!shown.contains("hunter2"), "{shown}");

    let s = Settings::from_toml(
        r#"
        backend = "memory"
        [sql]
        url = "sqlite://backup.db"
        [backup]
        enabled = true
        flush_interval_ms = 50
        batch_size = 100
        max_pending = 1000
        max_retry_ms = 2000
        read_through = false
        "#,
    )
    .unwrap();
    assert!(s.backup.enabled);
    assert_eq!(s.backup.flush_interval_ms, 50);
    assert_eq!(s.backup.batch_size, 100);
    assert_eq!(s.backup.max_pending, 1000);
    assert_eq!(s.backup.max_retry_ms, 2000);
    assert!(!s.backup.read_through);
    assert_eq!(s.sql.url, "sqlite://backup.db");
}

#[test]
fn sql_and_backup_sections_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "sessions.toml",
            "backend = \"memory\"\n[sql]\ntable = \"from_file\"",
        )?;
        jail.set_env("SESSION_BACKEND", "sql");
        jail.set_env(
            "SESSION_SQL__URL",
            "postgres://app:supersecret@127.0.0.1:5432/app",
        );
        jail.set_env("SESSION_SQL__POOL_SIZE", "3");
        let s = Settings::load(Some("sessions.toml".as_ref())).unwrap();
        assert_eq!(s.backend, Backend::Sql);
        assert_eq!(s.sql.url, "postgres://app:supersecret@127.0.0.1:5432/app");
        assert_eq!(s.sql.table, "from_file", "the file's keys stay");
        assert_eq!(s.sql.pool_size, 3);
        let shown = format!("{s:?} {s}");
        assert!(!shown.contains("supersecret"), "{shown}");

        jail.set_env("SESSION_BACKEND", "memory");
        jail.set_env("SESSION_SQL__URL", "sqlite://backup.db");
        jail.set_env("SESSION_BACKUP__ENABLED", "true");
        jail.set_env("SESSION_BACKUP__FLUSH_INTERVAL_MS", "25");
        let s = Settings::load(Some("sessions.toml".as_ref())).unwrap();
        assert_eq!(s.backend, Backend::Memory);
        assert!(s.backup.enabled);
        assert_eq!(s.backup.flush_interval_ms, 25);

        // A misspelt section is named with the one it probably means.
        jail.set_env("SESSION_SQLL__URL", "sqlite://x.db");
        let warnings = Settings::env_warnings("SESSION_");
        assert!(
            warnings.iter().any(|w| w.contains("SESSION_SQL__URL")),
            "{warnings:?}"
        );

        // Errors name the variable, never the URL's password.
        jail.set_env("SESSION_BACKUP__ENABLED", "yes");
        let e = Settings::load(None).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("SESSION_BACKUP__ENABLED"), "{text}");
        assert_eq!(config_key(e), "backup.enabled");
        Ok(())
    });
}

#[test]
fn bad_sql_and_backup_values_name_their_key() {
    let cases = [
        ("backend = \"sql\"", "sql.url"),
        (
            "backend = \"sql\"\n[sql]\nurl = \"mysql://u:hunter2@h/db\"",
            "sql.url",
        ),
        (
            "backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\ntable = \"Bad\"",
            "sql.table",
        ),
        (
            "backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\npool_size = 0",
            "sql.pool_size",
        ),
        (
            "backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\ntimeout_ms = 0",
            "sql.timeout_ms",
        ),
        (
            "backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\ntombstone_ttl_ms = 9999999999",
            "sql.tombstone_ttl_ms",
        ),
        ("[sql]\npoolsize = 3", "sql.poolsize"),
        ("[sql]\nurl = 5", "sql.url"),
        ("[sql]\npool_size = \"many\"", "sql.pool_size"),
        ("[backup]\nenabled = \"yes\"", "backup.enabled"),
        ("[backup]\nbatch_size = 0", "backup.batch_size"),
        ("[backup]\nflush_interval_ms = 0", "backup.flush_interval_ms"),
        ("[backup]\nflush_interval = 5", "backup.flush_interval"),
        // The backup writes to the [sql] store: it needs its URL.
        ("[backup]\nenabled = true", "sql.url"),
        // Backing the sql store up into itself.
        (
            "backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\n[backup]\nenabled = true",
            "backup.enabled",
        ),
    ];
    for (toml, key) in cases {
        let e = Settings::from_toml(toml).unwrap_err();
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(config_key(e), key, "{toml}");
    }
    let e = Settings::from_toml("[sql]\npoolsize = 3").unwrap_err();
    assert!(e.to_string().contains("did you mean pool_size"), "{e}");
    let e = Settings::from_toml("[backup]\nkey_prefix = \"app:\"").unwrap_err();
    assert!(e.to_string().contains("shared setting"), "{e}");
    let e = Settings::from_toml("[sql]\nttl_secs = 5").unwrap_err();
    assert!(e.to_string().contains("shared setting"), "{e}");
    // As with `[redis]`, the section is checked only when something uses it.
    Settings::from_toml("backend = \"memory\"\n[sql]\ntable = \"Bad\"").unwrap();
    Settings::from_toml("[backup]\nenabled = false").unwrap();
}

#[tokio::test]
async fn build_sql_on_sqlite_in_memory() {
    let s = Settings::from_toml(
        "backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\n[metrics]\nrefresh_secs = 0",
    )
    .unwrap();
    let built = build(&s).await.unwrap();
    assert_eq!(built.backend, Backend::Sql);
    assert_eq!(built.store.backend(), "sql");
    let carts = built.sessions::<Vec<String>>("cart").unwrap();
    let mut cart = carts.create(vec!["x".into()]).await.unwrap();
    assert_eq!(
        carts.load(&cart.id).await.unwrap().unwrap().value,
        vec!["x".to_string()]
    );
    cart.value.push("y".into());
    carts.save_if(&mut cart).await.unwrap();
    assert_eq!(carts.load(&cart.id).await.unwrap().unwrap().value.len(), 2);
    carts.delete(&cart.id).await.unwrap();
    assert!(carts.load(&cart.id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_url_that_is_not_sql_is_refused_before_any_io() {
    let mut s = Settings::default();
    s.backend = Backend::Sql;
    s.sql = SqlConfig::new("redis://127.0.0.1:6379");
    assert_eq!(config_key(build(&s).await.unwrap_err()), "sql.url");
}

/// With `backup.enabled`, the memory store's writes and deletes reach the `[sql]` store: read
/// here through a second `SqlStore` on the same SQLite file.
#[tokio::test]
async fn memory_backed_up_into_sqlite() {
    let file = SqliteFile::new("backup");
    let url = file.url();
    let s = Settings::from_toml(&format!(
        "backend = \"memory\"\nkey_prefix = \"backed:\"\n[sql]\nurl = \"{url}\"\n\
         [backup]\nenabled = true\nflush_interval_ms = 20\n[metrics]\nrefresh_secs = 0"
    ))
    .unwrap();
    let built = build(&s).await.unwrap();
    assert_eq!(built.backend, Backend::Memory);
    assert_eq!(
        built.store.backend(),
        "memory",
        "the backup serves from its primary"
    );

    let in_backup = carts_in_backup(&s, &url).await;
    let carts = built.sessions::<String>("cart").unwrap();

    let cart = carts.create("apples".to_owned()).await.unwrap();
    eventually("the session reaches the SQLite backup", || async {
        in_backup
            .load(&cart.id)
            .await
            .unwrap()
            .is_some_and(|c| c.value == "apples")
    })
    .await;
    // The flusher counts a batch once its write has returned, a moment after the row is visible.
    let written = || async {
        let stats = built.store.stats().await.unwrap();
        let written = stats
            .extra
            .iter()
            .find(|(name, _)| *name == "backup_written")
            .map(|(_, v)| *v);
        (written, stats.extra)
    };
    eventually("the flush is counted", || async {
        written().await.0.is_some_and(|w| w >= 1)
    })
    .await;
    let (count, extra) = written().await;
    assert!(
        count.is_some_and(|w| w >= 1),
        "the backup's figures come through the instrumented layer: {extra:?}"
    );

    carts.delete(&cart.id).await.unwrap();
    eventually("the delete reaches the SQLite backup", || async {
        in_backup.load(&cart.id).await.unwrap().is_none()
    })
    .await;
}

/// The fallback is backed up too: here started open (Redis unreachable), serving from memory,
/// and what it acknowledged reaches the SQLite backup.
#[cfg(feature = "fallback")]
#[tokio::test]
async fn fallback_backed_up_into_sqlite() {
    let port = unused_port();
    let file = SqliteFile::new("fallback-backup");
    let url = file.url();
    let s = Settings::from_toml(&format!(
        "backend = \"fallback\"\n[redis]\nurl = \"redis://127.0.0.1:{port}\"\n[sql]\nurl = \"{url}\"\n\
         [backup]\nenabled = true\nflush_interval_ms = 20\n[metrics]\nrefresh_secs = 0"
    ))
    .unwrap();
    let built = build(&s).await.unwrap();
    assert_eq!(built.store.backend(), "fallback");
    let in_backup = carts_in_backup(&s, &url).await;
    let carts = built.sessions::<String>("cart").unwrap();
    let cart = carts.create("pears".to_owned()).await.unwrap();
    eventually("the fallback's write reaches the SQLite backup", || async {
        in_backup.load(&cart.id).await.unwrap().is_some()
    })
    .await;
}

#[tokio::test]
async fn backing_sql_up_into_itself_is_refused() {
    let e =
        Settings::from_toml("backend = \"sql\"\n[sql]\nurl = \"sqlite::memory:\"\n[backup]\nenabled = true")
            .unwrap_err();
    let text = e.to_string();
    assert_eq!(config_key(e), "backup.enabled");
    assert!(text.contains("sql"), "{text}");
    // Settings made in code are checked by build too.
    let mut s = Settings::default();
    s.backend = Backend::Sql;
    s.sql = SqlConfig::new("sqlite::memory:");
    s.backup.enabled = true;
    assert_eq!(config_key(build(&s).await.unwrap_err()), "backup.enabled");
}

/// An unreachable backup database does not keep the service from starting: the store serves,
/// its changes queue for the backup, and the password appears nowhere.
#[tokio::test]
async fn an_unreachable_backup_database_does_not_keep_the_service_from_starting() {
    let port = unused_port();
    let s = Settings::from_toml(&format!(
        "[sql]\nurl = \"postgres://app:hunter2@127.0.0.1:{port}/app\"\nconnect_timeout_ms = 500\n\
         [backup]\nenabled = true\n[metrics]\nenabled = false"
    ))
    .unwrap();
    let built = build(&s).await.expect("starts without its backup database");
    let tasks = built.sessions::<String>("task").unwrap();
    let id = tasks.create("served".to_owned()).await.unwrap().id;
    assert_eq!(
        tasks.load(&id).await.unwrap().map(|s| s.value),
        Some("served".to_owned())
    );
    let stats = built.store.stats().await.unwrap();
    let pending = stats
        .extra
        .iter()
        .find(|(k, _)| *k == "backup_pending")
        .map(|(_, v)| *v);
    assert!(pending.is_some_and(|p| p >= 1), "{stats:?}");
    let health = built.store.health().await;
    assert!(!format!("{health:?}").contains("hunter2"), "{health:?}");
    let e = built.shutdown().await.unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// PostgreSQL: the server of the `sql` cell; without it these skip, unless the run requires it.
mod postgres {
    use super::*;

    fn url() -> Option<String> {
        let url = postgres_url();
        if url.is_none() {
            assert!(
                !require_postgres(),
                "{REQUIRE_POSTGRES_ENV}=1 but no PostgreSQL URL is set"
            );
        }
        url
    }

    /// A table of this test process's own.
    fn table(tag: &str) -> String {
        format!("facade_{tag}_{}", std::process::id())
    }

    #[tokio::test]
    async fn build_sql_on_postgres() {
        let Some(url) = url() else { return };
        let s = Settings::from_toml(&format!(
            "backend = \"sql\"\n[sql]\nurl = \"{url}\"\ntable = \"{}\"\n[metrics]\nrefresh_secs = 0",
            table("primary")
        ))
        .unwrap();
        let built = build(&s).await.unwrap();
        assert_eq!(built.store.backend(), "sql");
        let tasks = built.sessions::<String>("task").unwrap();
        let task = tasks.create("t1".to_owned()).await.unwrap();
        assert_eq!(tasks.load(&task.id).await.unwrap().unwrap().value, "t1");
    }

    #[tokio::test]
    async fn memory_backed_up_into_postgres() {
        let Some(url) = url() else { return };
        let table = table("backup");
        let s = Settings::from_toml(&format!(
            "[sql]\nurl = \"{url}\"\ntable = \"{table}\"\n[backup]\nenabled = true\nflush_interval_ms = 20\n\
             [metrics]\nrefresh_secs = 0"
        ))
        .unwrap();
        let built = build(&s).await.unwrap();
        let backup: Arc<dyn SessionStore> = Arc::new(
            SqlStore::connect(
                SqlConfig::new(&url).with_table(table),
                s.core.store_options().unwrap(),
            )
            .await
            .unwrap(),
        );
        let in_backup = s.core.sessions::<String>(backup, "task").unwrap();
        let tasks = built.sessions::<String>("task").unwrap();
        let task = tasks.create("t1".to_owned()).await.unwrap();
        eventually("the session reaches the PostgreSQL backup", || async {
            in_backup.load(&task.id).await.unwrap().is_some()
        })
        .await;
    }
}
