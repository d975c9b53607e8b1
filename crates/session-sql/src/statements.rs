//! The SQL this store runs, written once per table and dialect at connect.
//!
//! One table, five columns:
//!
//! | column | holds |
//! |---|---|
//! | `key` | `{key_prefix}{namespace}:{id}`, the primary key (byte order on PostgreSQL: `COLLATE "C"`) |
//! | `value` | the envelope, byte for byte as every backend stores it (docs/format.md) |
//! | `expires_at` | the deadline, ms since the Unix epoch; a row at or past it is never returned |
//! | `version` | the envelope's version token (a `u64` stored as its `i64` bit pattern); `NULL` for bytes that are not an envelope |
//! | `kind` | `0` a session (or bytes that are not an envelope), `1` a tombstone |
//!
//! `version` and `kind` repeat what the envelope says, so that `create`, `update` and
//! `save_if` are each one statement that compares them. Expiry is judged by the database's
//! clock (`{now}` below), as Redis judges it by the server's: every instance sharing the
//! database agrees on when a session ends.

use crate::config::Dialect;

/// The kind of a session row.
pub(crate) const KIND_SESSION: i16 = 0;
/// The kind of a tombstone row.
pub(crate) const KIND_TOMBSTONE: i16 = 1;

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// Every statement of one store.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `$1` key → the live value.
    pub(crate) load: String,
    /// `$1` keys (a PostgreSQL array) → `(key, value)` of the live ones.
    pub(crate) load_many: String,
    /// `$1..$4` key, value, deadline, version: a plain upsert.
    pub(crate) save: String,
    /// As `save`, only over nothing, an expired row or a tombstone.
    pub(crate) create: String,
    /// `$1..$4` as `save`: only over a live session.
    pub(crate) update: String,
    /// `$1..$5` as `update`, `$5` the expected version.
    pub(crate) save_if: String,
    /// `$1` key: removes a session row; returns whether it was live.
    pub(crate) delete: String,
    /// `$1` key → `now`, and the row's value and deadline (locked on PostgreSQL), if any.
    pub(crate) lock: String,
    /// `$1..$5` key, value, deadline, version, kind: inserts unless the key is taken.
    pub(crate) insert: String,
    /// `$1..$5` as `insert`: replaces the row.
    pub(crate) replace: String,
    /// `$1` key: removes the row, whatever it holds.
    pub(crate) remove: String,
    /// `$1`, `$2` the bounds of a key range, `$3` a `LIKE` pattern of keys to leave out (a
    /// nested prefix's), `$4` another (principal indexes) → live sessions in it.
    pub(crate) count: String,
    /// → bytes the table takes on disk.
    pub(crate) bytes: String,
    /// `$1` batch → deletes up to that many expired rows.
    pub(crate) sweep: String,
    /// `$1` after-key, `$2` upper bound, `$3` limit → `(key, value)` of live sessions in key
    /// order (a scan's pages).
    pub(crate) page: String,
    /// → the database's clock, ms.
    pub(crate) now: String,
    /// `$1..$5` key, value, ttl (ms from now), version, kind: an upsert of raw bytes (tests).
    #[cfg(feature = "testing")]
    pub(crate) put_raw: String,
}

impl Statements {
    /// The statements for `table` in `dialect`.
    pub(crate) fn new(dialect: Dialect, table: &str) -> Statements {
        let now = now_expr(dialect);
        let lock = match dialect {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let skip_locked = match dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let upsert = format!(
            "INSERT INTO {table} (key, value, expires_at, version, kind) VALUES ($1, $2, $3, $4, {KIND_SESSION}) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, \
             version = excluded.version, kind = excluded.kind"
        );
        let update = format!(
            "UPDATE {table} SET value = $2, expires_at = $3, version = $4, kind = {KIND_SESSION} \
             WHERE key = $1 AND expires_at > {now} AND kind = {KIND_SESSION}"
        );
        let load_many = match dialect {
            Dialect::Postgres => {
                format!("SELECT key, value FROM {table} WHERE key = ANY($1) AND expires_at > {now}")
            }
            // SQLite binds no arrays: the keys come as one JSON array.
            Dialect::Sqlite => format!(
                "SELECT key, value FROM {table} WHERE key IN (SELECT value FROM json_each($1)) AND expires_at > {now}"
            ),
        };
        let bytes = match dialect {
            Dialect::Postgres => format!("SELECT pg_total_relation_size('{table}')::BIGINT"),
            Dialect::Sqlite => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()".to_owned()
            }
        };
        Statements {
            load: format!("SELECT value FROM {table} WHERE key = $1 AND expires_at > {now}"),
            load_many,
            create: format!("{upsert} WHERE {table}.expires_at <= {now} OR {table}.kind = {KIND_TOMBSTONE}"),
            save: upsert,
            save_if: format!("{update} AND version = $5"),
            update,
            delete: format!(
                "DELETE FROM {table} WHERE key = $1 AND kind = {KIND_SESSION} \
                 RETURNING CASE WHEN expires_at > {now} THEN 1 ELSE 0 END"
            ),
            lock: format!(
                "WITH cur AS (SELECT value, expires_at FROM {table} WHERE key = $1{lock}) \
                 SELECT {now} AS now, cur.value, cur.expires_at FROM (SELECT 1 AS one) AS o LEFT JOIN cur ON 1 = 1"
            ),
            insert: format!(
                "INSERT INTO {table} (key, value, expires_at, version, kind) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (key) DO NOTHING"
            ),
            replace: format!(
                "UPDATE {table} SET value = $2, expires_at = $3, version = $4, kind = $5 WHERE key = $1"
            ),
            remove: format!("DELETE FROM {table} WHERE key = $1"),
            count: format!(
                "SELECT count(*) FROM {table} WHERE key >= $1 AND key < $2 AND key NOT LIKE $3 ESCAPE '\\' \
                 AND key NOT LIKE $4 ESCAPE '\\' AND expires_at > {now} AND kind = {KIND_SESSION}"
            ),
            bytes,
            sweep: format!(
                "DELETE FROM {table} WHERE key IN (SELECT key FROM {table} WHERE expires_at <= {now} \
                 ORDER BY expires_at LIMIT $1{skip_locked})"
            ),
            page: format!(
                "SELECT key, value FROM {table} WHERE key > $1 AND key < $2 AND expires_at > {now} \
                 AND kind = {KIND_SESSION} ORDER BY key LIMIT $3"
            ),
            now: format!("SELECT {now}"),
            #[cfg(feature = "testing")]
            put_raw: format!(
                "INSERT INTO {table} (key, value, expires_at, version, kind) VALUES ($1, $2, {now} + $3, $4, $5) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, \
                 version = excluded.version, kind = excluded.kind"
            ),
        }
    }
}

/// The database's clock in ms since the Unix epoch, as an SQL expression.
fn now_expr(dialect: Dialect) -> &'static str {
    match dialect {
        // `statement_timestamp()`, not `now()`: the time of the statement, not of its
        // transaction; and stable within the statement, so `expires_at <= {now}` can use the index.
        Dialect::Postgres => "(floor(extract(epoch FROM statement_timestamp()) * 1000))::BIGINT",
        // One value per statement (SQLite reads the clock once per `sqlite3_step` run).
        Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    }
}

/// The DDL of each schema version, in order: `MIGRATIONS[i]` brings version `i` to `i + 1`.
/// Each is a list of statements run in one transaction with the version's row.
pub(crate) fn migrations(dialect: Dialect, table: &str) -> Vec<Vec<String>> {
    let v1 = match dialect {
        Dialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                 key TEXT COLLATE \"C\" PRIMARY KEY, \
                 value BYTEA NOT NULL, \
                 expires_at BIGINT NOT NULL, \
                 version BIGINT, \
                 kind SMALLINT NOT NULL DEFAULT 0)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at)"),
        ],
        // A rowid table (its key in a unique index): `WITHOUT ROWID` keeps whole rows in the
        // key's B-tree, which slows it down with rows of a kilobyte and more.
        Dialect::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (\
                 key TEXT PRIMARY KEY NOT NULL, \
                 value BLOB NOT NULL, \
                 expires_at INTEGER NOT NULL, \
                 version INTEGER, \
                 kind INTEGER NOT NULL DEFAULT 0)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at)"),
        ],
    };
    vec![v1]
}

/// The table that records the schema version: `{table}_schema`.
pub(crate) fn schema_table(table: &str) -> String {
    format!("{table}_schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_brings_one_version() {
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            assert_eq!(migrations(dialect, "t").len(), SCHEMA_VERSION as usize);
        }
    }

    #[test]
    fn statements_name_the_table_and_the_dialects_clock() {
        let pg = Statements::new(Dialect::Postgres, "sessions_a");
        assert!(pg.load.contains("FROM sessions_a WHERE key = $1"));
        assert!(pg.lock.contains("FOR UPDATE"));
        assert!(pg.load.contains("statement_timestamp()"));
        let lite = Statements::new(Dialect::Sqlite, "sessions_a");
        assert!(!lite.lock.contains("FOR UPDATE"));
        assert!(lite.load.contains("unixepoch('subsec')"));
        assert!(lite.load_many.contains("json_each"));
    }
}
