//! The SQL subjects: PostgreSQL at `--postgres-url`, SQLite in files of a temporary directory.
//!
//! * `SqlStore` `load` and `save` beside tower-sessions' sqlx stores (`PostgresStore`,
//!   `SqliteStore`, after their `migrate()`): key spaces of the same size, pre-filled with the
//!   same payload, pools of the same size ([`SQL_POOL`]) and, on SQLite, the journal settings
//!   `SqlStore` opens its file with (WAL, `synchronous = NORMAL`, its busy timeout);
//! * `RedisStore` (pool 2) `save` with write-behind into PostgreSQL (`BackupStore`, the default
//!   `BackupConfig`), beside plain `RedisStore` saves. The queue is drained after each cell and
//!   each paired slice, outside the measured time, so that no case pays for another's backlog;
//! * the write-behind's throughput: [`FLUSH_SESSIONS`] saves of distinct sessions through a
//!   `BackupStore` over a `MemoryStore`, timed from the first save until the backup's counter
//!   says every one of them is written (its flusher and `flush()` moving batches of
//!   `batch_size`), into an emptied table of PostgreSQL and of SQLite.
//!
//! Each subject has a table (PostgreSQL) or a file (SQLite) of its own; the tables are dropped
//! at set-up (a previous run's) and at the end of the run, the directory removed.

#![allow(
    clippy::manual_async_fn,
    reason = "the ops spell out the `Send` future the harness needs, as in `cases`"
)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_backup::{BackupConfig, BackupStore};
use session_core::backend::Record;
use session_core::{SessionKey, SessionStore, StoreOptions};
use session_memory::{MemoryConfig, MemoryStore};
use session_redis::{RedisConfig, RedisStore};
use session_sql::{SqlConfig, SqlStore};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tower_sessions_core::session::Id as TowerId;
use tower_sessions_core::SessionStore as TowerStore;
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::cases::{
    case, check, prefill, tower_record, Case, Cleanup, Group, Keys, StoreLoad, StoreSave, TowerLoad,
    TowerSave, POOL,
};

/// Pooled connections of every SQL subject and anchor (`SqlStore`'s default).
pub(crate) const SQL_POOL: u32 = 8;
/// Subjects, as the report names them.
pub(crate) const PG_OURS: &str = "SqlStore PostgreSQL (pool 8)";
pub(crate) const PG_TOWER: &str = "tower-sessions-sqlx-store PostgresStore (pool 8)";
pub(crate) const LITE_OURS: &str = "SqlStore SQLite (pool 8)";
pub(crate) const LITE_TOWER: &str = "tower-sessions-sqlx-store SqliteStore (pool 8)";
pub(crate) const WRITE_BEHIND: &str = "BackupStore<RedisStore (pool 2), SqlStore PostgreSQL>";
/// The write-behind throughput figures, as the report (and `--only`) names them.
pub(crate) const FLUSH_PG: &str = "write-behind into SqlStore PostgreSQL (pool 8)";
pub(crate) const FLUSH_LITE: &str = "write-behind into SqlStore SQLite (pool 8)";
/// Sessions queued per throughput measurement.
pub(crate) const FLUSH_SESSIONS: usize = 20_000;

/// `SqlStore`'s table (PostgreSQL; on SQLite, in its own file).
const OURS_TABLE: &str = "bench_sqlstore";
/// tower-sessions' PostgreSQL schema (its table is `session` there) and SQLite table.
const TOWER_SCHEMA: &str = "bench_tower";
/// The write-behind save cases' backup table.
const WRITE_BEHIND_TABLE: &str = "bench_backup_save";
/// The throughput measurements' backup table.
const FLUSH_TABLE: &str = "bench_backup_flush";
/// How long a throughput measurement may take before it counts as failed.
const FLUSH_DEADLINE: Duration = Duration::from_secs(120);

/// Concurrent writes of the tower-sessions pre-fills.
const TOWER_FILL_PG: usize = 32;
/// SQLite has one writer; concurrent writers would only wait on its lock.
const TOWER_FILL_LITE: usize = 1;

/// Whether a subject is asked for: no `--only`, or a filter that is a prefix of the subject's
/// case ids (or names one of them). `mem:` filters select in-memory cases only.
pub(crate) fn wanted(only: &[String], subject: &str) -> bool {
    only.is_empty()
        || only
            .iter()
            .filter(|f| !f.starts_with("mem:"))
            .any(|f| subject.starts_with(f.as_str()) || f.starts_with(subject))
}

/// What the SQL set-up made: the cases, the throughput measurements and what the end of the
/// run reads and removes.
#[derive(Default)]
pub(crate) struct SqlSubjects {
    pub(crate) cases: Vec<Case>,
    pub(crate) flushes: Vec<Flush>,
    /// `SHOW server_version` of the PostgreSQL, when there is one.
    pub(crate) postgres_version: Option<String>,
    /// `sqlite_version()` of the built-in SQLite, when a SQLite subject ran.
    pub(crate) sqlite_version: Option<String>,
    write_behind: Option<Arc<BackupStore<RedisStore, SqlStore>>>,
    admin: Option<PgPool>,
    dir: Option<TempDir>,
}

impl SqlSubjects {
    /// Lines for the report: what the write-behind did during the save cells.
    pub(crate) fn lines(&self) -> Vec<String> {
        let Some(store) = &self.write_behind else {
            return Vec::new();
        };
        let s = store.backup_stats();
        vec![format!(
            "Write-behind of the `{WRITE_BEHIND}` save cells and slices (warm-up included): {} \
             sessions written into PostgreSQL, {} writes dropped (queue full), {} flushes failed; \
             lag from a change to its flush p50 {} ms, p99 {} ms (the queue is drained after each \
             cell and slice, outside the measured time).",
            crate::report::fmt_ops(s.written as f64),
            s.dropped_writes,
            s.failed_flushes,
            s.lag_p50_ms,
            s.lag_p99_ms
        )]
    }

    /// Drops the tables of the run, closes the pools and removes the SQLite files.
    pub(crate) async fn teardown(mut self) {
        self.cases.clear();
        if let Some(store) = self.write_behind.take() {
            drain(&store).await;
            store.backup().close().await;
        }
        for flush in self.flushes.drain(..) {
            flush.store.backup().close().await;
        }
        if let Some(admin) = self.admin.take() {
            drop_pg_tables(&admin).await;
            admin.close().await;
        }
        drop(self.dir.take());
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("session-bench-{}-{nanos}", std::process::id()));
        check("creating the SQLite directory", std::fs::create_dir_all(&path));
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets up the SQL subjects the filters ask for: PostgreSQL ones with `postgres_url`, the
/// write-behind save cases with Redis as well, SQLite ones always.
pub(crate) async fn sql_cases(
    postgres_url: Option<&str>,
    redis_url: Option<&str>,
    only: &[String],
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> SqlSubjects {
    let mut out = SqlSubjects::default();
    let want = |subject: &str| wanted(only, subject);
    if let Some(url) = postgres_url.filter(|_| {
        [PG_OURS, PG_TOWER, WRITE_BEHIND, FLUSH_PG]
            .iter()
            .any(|s| want(s))
    }) {
        // Warnings only: no notice for each `DROP … IF EXISTS` of a table that is not there.
        let options = check("a PostgreSQL URL", PgConnectOptions::from_str(url))
            .options([("client_min_messages", "warning")]);
        let admin = check(
            "connecting to PostgreSQL",
            PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await,
        );
        let mut settings = Vec::new();
        for name in [
            "server_version",
            "fsync",
            "full_page_writes",
            "synchronous_commit",
            "shared_buffers",
        ] {
            let value: String = check(
                "SHOW a PostgreSQL setting",
                sqlx::query_scalar(&format!("SHOW {name}"))
                    .fetch_one(&admin)
                    .await,
            );
            settings.push((name, value));
        }
        let version = settings.first().map(|(_, v)| v.clone()).unwrap_or_default();
        let rest: Vec<String> = settings[1..].iter().map(|(n, v)| format!("`{n}` {v}")).collect();
        out.postgres_version = Some(format!("{version} ({})", rest.join(", ")));
        drop_pg_tables(&admin).await;
        if want(PG_OURS) || want(PG_TOWER) {
            println!(
                "  PostgreSQL: SqlStore and tower-sessions' PostgresStore, {} sessions each…",
                keys.len()
            );
            let started = Instant::now();
            let ours = sql_store(SqlConfig::new(url).with_table(OURS_TABLE)).await;
            prefill(ours.as_ref(), keys, record, false).await;
            let pool = check(
                "tower-sessions' PostgreSQL pool",
                PgPoolOptions::new().max_connections(SQL_POOL).connect(url).await,
            );
            let tower = check(
                "PostgresStore::with_schema_name",
                PostgresStore::new(pool).with_schema_name(TOWER_SCHEMA),
            );
            check("PostgresStore::migrate", tower.migrate().await);
            let ids = tower_fill(&tower, keys.len(), TOWER_FILL_PG).await;
            println!(
                "  PostgreSQL pre-filled in {:.0}s",
                started.elapsed().as_secs_f64()
            );
            out.cases.extend(pair_cases(
                (PG_OURS, ours),
                (PG_TOWER, tower),
                &ids,
                keys,
                record,
                task_counts,
            ));
        }
        if let Some(redis_url) = redis_url.filter(|_| want(WRITE_BEHIND)) {
            let mut config = RedisConfig::new(redis_url);
            config.pool_size = POOL;
            let primary = check("RedisStore::connect", RedisStore::connect(config).await);
            let backup = sql_store_concrete(SqlConfig::new(url).with_table(WRITE_BEHIND_TABLE)).await;
            let store = Arc::new(check(
                "BackupStore::new",
                BackupStore::new(primary, backup, BackupConfig::default()),
            ));
            let drained: Cleanup = {
                let store = Arc::clone(&store);
                Arc::new(move || {
                    let store = Arc::clone(&store);
                    Box::pin(async move { drain(&store).await })
                })
            };
            let dyn_store: Arc<dyn SessionStore> = Arc::clone(&store) as Arc<dyn SessionStore>;
            for &tasks in task_counts {
                let (s, k, r) = (Arc::clone(&dyn_store), Arc::clone(&keys.keys), record.clone());
                out.cases.push(
                    case(WRITE_BEHIND, "save", tasks, Group::Redis, move |_| StoreSave {
                        store: Arc::clone(&s),
                        keys: Arc::clone(&k),
                        record: r.clone(),
                        fresh: None,
                    })
                    .with_cleanup(Arc::clone(&drained)),
                );
            }
            out.write_behind = Some(store);
        }
        if want(FLUSH_PG) {
            let backup = sql_store_concrete(SqlConfig::new(url).with_table(FLUSH_TABLE)).await;
            let clear = Clear::Pg(admin.clone());
            out.flushes
                .push(Flush::new(FLUSH_PG, backup, clear, keys, record).await);
        }
        out.admin = Some(admin);
    }

    if [LITE_OURS, LITE_TOWER, FLUSH_LITE].iter().any(|s| want(s)) {
        let dir = TempDir::new();
        if want(LITE_OURS) || want(LITE_TOWER) {
            println!(
                "  SQLite ({}): SqlStore and tower-sessions' SqliteStore, {} sessions each…",
                dir.0.display(),
                keys.len()
            );
            let started = Instant::now();
            let ours =
                sql_store(SqlConfig::new(sqlite_url(&dir.file("sqlstore.db"))).with_table(OURS_TABLE)).await;
            prefill(ours.as_ref(), keys, record, false).await;
            let pool = sqlite_pool(&dir.file("tower.db"), SQL_POOL).await;
            let tower = check(
                "SqliteStore::with_table_name",
                SqliteStore::new(pool).with_table_name(TOWER_SCHEMA),
            );
            check("SqliteStore::migrate", tower.migrate().await);
            let ids = tower_fill(&tower, keys.len(), TOWER_FILL_LITE).await;
            println!("  SQLite pre-filled in {:.0}s", started.elapsed().as_secs_f64());
            out.cases.extend(pair_cases(
                (LITE_OURS, ours),
                (LITE_TOWER, tower),
                &ids,
                keys,
                record,
                task_counts,
            ));
        }
        if want(FLUSH_LITE) {
            let path = dir.file("backup.db");
            let backup = sql_store_concrete(SqlConfig::new(sqlite_url(&path)).with_table(FLUSH_TABLE)).await;
            let clear = Clear::Lite(sqlite_pool(&path, 1).await);
            out.flushes
                .push(Flush::new(FLUSH_LITE, backup, clear, keys, record).await);
        }
        let version_pool = check(
            "opening SQLite in memory",
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect("sqlite::memory:")
                .await,
        );
        let version: String = check(
            "sqlite_version()",
            sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(&version_pool)
                .await,
        );
        version_pool.close().await;
        out.sqlite_version = Some(version);
        out.dir = Some(dir);
    }
    out
}

/// `load` and `save` of `SqlStore` and of its tower-sessions anchor, at every task count.
fn pair_cases<T: TowerStore + Clone>(
    (ours_subject, ours): (&'static str, Arc<dyn SessionStore>),
    (tower_subject, tower): (&'static str, T),
    tower_ids: &Arc<[TowerId]>,
    keys: &Keys,
    record: &Record,
    task_counts: &[usize],
) -> Vec<Case> {
    let mut cases = Vec::new();
    let g = Group::Sql;
    for &tasks in task_counts {
        let (s, k) = (Arc::clone(&ours), Arc::clone(&keys.keys));
        cases.push(case(ours_subject, "load", tasks, g, move |_| StoreLoad {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
        }));
        let (s, i) = (tower.clone(), Arc::clone(tower_ids));
        cases.push(case(tower_subject, "load", tasks, g, move |_| TowerLoad {
            store: s.clone(),
            ids: Arc::clone(&i),
        }));
        let (s, k, r) = (Arc::clone(&ours), Arc::clone(&keys.keys), record.clone());
        cases.push(case(ours_subject, "save", tasks, g, move |_| StoreSave {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: r.clone(),
            fresh: None,
        }));
        let (s, i) = (tower.clone(), Arc::clone(tower_ids));
        cases.push(case(tower_subject, "save", tasks, g, move |_| TowerSave {
            store: s.clone(),
            ids: Arc::clone(&i),
            record: tower_record(3 * 3600),
        }));
    }
    cases
}

/// `sqlite:///abs/path.db`.
fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A `SqlStore` with [`SQL_POOL`] connections and the default key prefix.
async fn sql_store_concrete(config: SqlConfig) -> SqlStore {
    check(
        "SqlStore::connect",
        SqlStore::connect(config.with_pool_size(SQL_POOL), StoreOptions::default()).await,
    )
}

async fn sql_store(config: SqlConfig) -> Arc<dyn SessionStore> {
    Arc::new(sql_store_concrete(config).await)
}

/// A pool on the SQLite file `path` as `SqlStore` opens its own: created if missing, WAL,
/// `synchronous = NORMAL`, the busy timeout of its call deadline.
async fn sqlite_pool(path: &Path, connections: u32) -> SqlitePool {
    let timeout = Duration::from_millis(session_sql::DEFAULT_TIMEOUT_MS);
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(timeout)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    check(
        "opening a SQLite pool",
        SqlitePoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await,
    )
}

/// Saves `n` tower-sessions records under fresh ids, `concurrency` at a time (its `save` is an
/// upsert: one statement, where its `create` is a transaction that looks for the id first).
async fn tower_fill<S: TowerStore + Clone>(store: &S, n: usize, concurrency: usize) -> Arc<[TowerId]> {
    let template = tower_record(3 * 3600);
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch = (n - ids.len()).min(concurrency.max(1));
        let saves = (0..batch).map(|_| {
            let store = store.clone();
            let mut record = template.clone();
            async move {
                record.id = TowerId::default();
                check(
                    "pre-filling tower-sessions' sqlx store",
                    store.save(&record).await,
                );
                record.id
            }
        });
        ids.extend(futures::future::join_all(saves).await);
    }
    ids.into()
}

/// Drops every table (and schema) the run creates on PostgreSQL.
async fn drop_pg_tables(admin: &PgPool) {
    let mut statements = vec![format!("DROP SCHEMA IF EXISTS {TOWER_SCHEMA} CASCADE")];
    for table in [OURS_TABLE, WRITE_BEHIND_TABLE, FLUSH_TABLE] {
        statements.push(format!("DROP TABLE IF EXISTS {table}, {table}_schema"));
    }
    for statement in statements {
        if let Err(e) = sqlx::query(&statement).execute(admin).await {
            eprintln!("session-bench: {statement}: {e}");
        }
    }
}

/// Writes what a `BackupStore` has queued into its backup (`flush()`), then waits until nothing
/// is pending and the written count has stopped moving (no batch of its flusher in flight).
/// Gives up after a minute (a backup that fails throughout).
async fn drain<P: SessionStore, B: SessionStore>(store: &BackupStore<P, B>) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Err(e) = store.flush().await {
            eprintln!("session-bench: draining the write-behind: {e}");
        }
        let before = store.backup_stats().written;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = store.backup_stats();
        if now.pending == 0 && now.written == before {
            return;
        }
        if Instant::now() > until {
            eprintln!(
                "session-bench: the write-behind still has {} changes pending after a minute",
                now.pending
            );
            return;
        }
    }
}

/// Empties a throughput measurement's backup table.
enum Clear {
    Pg(PgPool),
    Lite(SqlitePool),
}

impl Clear {
    async fn run(&self) {
        let done = match self {
            Clear::Pg(pool) => sqlx::query(&format!("TRUNCATE {FLUSH_TABLE}"))
                .execute(pool)
                .await
                .map(|_| ()),
            Clear::Lite(pool) => sqlx::query(&format!("DELETE FROM {FLUSH_TABLE}"))
                .execute(pool)
                .await
                .map(|_| ()),
        };
        check("emptying the write-behind's table", done);
    }
}

/// One figure of the write-behind's throughput.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlushCell {
    /// Sessions per second from the first save until the last is in the backup (NaN when they
    /// were not all written within [`FLUSH_DEADLINE`]).
    pub(crate) sessions_per_sec: f64,
    /// Sessions queued.
    pub(crate) sessions: usize,
    /// The `BackupConfig::batch_size` the flushes used.
    pub(crate) batch_size: usize,
    /// Flush attempts that failed meanwhile (each retried).
    pub(crate) failed_flushes: u64,
}

/// The write-behind's throughput into one backup: [`FLUSH_SESSIONS`] saves of distinct
/// sessions through a `BackupStore` over a `MemoryStore`.
pub(crate) struct Flush {
    pub(crate) label: &'static str,
    store: BackupStore<MemoryStore, SqlStore>,
    clear: Clear,
    keys: Vec<SessionKey>,
    record: Record,
}

impl Flush {
    /// Sets up the measurement, and runs it once (not recorded: connections opened, the
    /// table's pages allocated).
    async fn new(label: &'static str, backup: SqlStore, clear: Clear, keys: &Keys, record: &Record) -> Flush {
        let primary = check("MemoryStore", MemoryStore::new(MemoryConfig::default()));
        let store = check(
            "BackupStore::new",
            BackupStore::new(primary, backup, BackupConfig::default()),
        );
        let flush = Flush {
            label,
            store,
            clear,
            keys: keys.keys.iter().take(FLUSH_SESSIONS).cloned().collect(),
            record: record.clone(),
        };
        flush.measure().await;
        flush
    }

    /// Empties the backup's table, then saves every key and waits until each is in the backup.
    pub(crate) async fn measure(&self) -> FlushCell {
        drain(&self.store).await;
        self.clear.run().await;
        let before = self.store.backup_stats();
        let n = self.keys.len();
        let started = Instant::now();
        for key in &self.keys {
            check(
                "saving into the write-behind's primary",
                self.store.save(key, &self.record).await,
            );
        }
        let _ = self.store.flush().await;
        let deadline = started + FLUSH_DEADLINE;
        let mut now = self.store.backup_stats();
        while now.written.saturating_sub(before.written) < n as u64 && Instant::now() < deadline {
            if now.pending > 0 {
                let _ = self.store.flush().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            now = self.store.backup_stats();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let all = now.written.saturating_sub(before.written) >= n as u64;
        FlushCell {
            sessions_per_sec: if all { n as f64 / elapsed } else { f64::NAN },
            sessions: n,
            batch_size: BackupConfig::default().batch_size,
            failed_flushes: now.failed_flushes - before.failed_flushes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn filters_select_subjects_by_prefix() {
        assert!(wanted(&[], PG_OURS));
        assert!(wanted(&only(&["SqlStore"]), PG_OURS));
        assert!(wanted(&only(&["SqlStore"]), LITE_OURS));
        assert!(!wanted(&only(&["SqlStore"]), PG_TOWER));
        assert!(wanted(&only(&["SqlStore PostgreSQL (pool 8) load @64"]), PG_OURS));
        assert!(!wanted(
            &only(&["SqlStore PostgreSQL (pool 8) load @64"]),
            LITE_OURS
        ));
        assert!(wanted(&only(&["write-behind"]), FLUSH_PG));
        assert!(wanted(&only(&["BackupStore"]), WRITE_BEHIND));
        assert!(!wanted(&only(&["mem:"]), LITE_OURS));
        assert!(!wanted(&only(&["RedisStore (pool 2)"]), WRITE_BEHIND));
    }

    #[test]
    fn subjects_name_the_pool_they_have() {
        assert_eq!(SQL_POOL, session_sql::DEFAULT_POOL_SIZE);
        for subject in [PG_OURS, PG_TOWER, LITE_OURS, LITE_TOWER, FLUSH_PG, FLUSH_LITE] {
            assert!(subject.ends_with(&format!("(pool {SQL_POOL})")), "{subject}");
        }
    }
}
