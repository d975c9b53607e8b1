//! Which ratios the report shows, each a case over another, and the targets among them.

/// The targets whose two sides are both cases: `(label, numerator case id, denominator case id)`.
/// Each round measures them once more in alternating slices (A B B A …), so that both sides
/// see the same state of a noisy machine; the report takes their ratio from those slices.
pub(crate) fn paired_defs() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    RATIOS
        .iter()
        .filter(|d| d.target.is_some())
        .map(|d| (d.label, d.num, d.den))
}

/// A ratio the report shows; a target when the issue sets one.
pub(super) struct RatioDef {
    pub(super) label: &'static str,
    pub(super) num: &'static str,
    pub(super) den: &'static str,
    pub(super) target: Option<f64>,
}

const fn target(label: &'static str, num: &'static str, den: &'static str, t: f64) -> RatioDef {
    RatioDef {
        label,
        num,
        den,
        target: Some(t),
    }
}

const fn info(label: &'static str, num: &'static str, den: &'static str) -> RatioDef {
    RatioDef {
        label,
        num,
        den,
        target: None,
    }
}

pub(super) const RATIOS: &[RatioDef] = &[
    target(
        "RedisStore load / raw fred GET (pool 2, 64 tasks)",
        "RedisStore (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
        0.9,
    ),
    target(
        "RedisStore save / raw fred SET PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) save @64",
        "raw fred SET PXAT (pool 2) save @64",
        0.9,
    ),
    target(
        "RedisStore save / tower-sessions-redis-store save (pool 2, 64 tasks)",
        "RedisStore (pool 2) save @64",
        "tower-sessions-redis-store (pool 2) save @64",
        1.2,
    ),
    target(
        "RedisStore update / raw fred SET XX PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) update @64",
        "raw fred SET XX PXAT (pool 2) update @64",
        0.9,
    ),
    target(
        "RedisStore create / raw fred SET NX PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) create @64",
        "raw fred SET NX PXAT (pool 2) create @64",
        0.9,
    ),
    target(
        "RedisStore load_many(16) keys/s / redis-benchmark -c 50 -P 16 GET",
        "RedisStore (pool 2) load_many(16) @64",
        "redis-benchmark -c 50 -P 16 GET",
        0.7,
    ),
    target(
        "FallbackStore load / RedisStore load (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> load @64",
        "RedisStore (pool 2) load @64",
        0.95,
    ),
    target(
        "FallbackStore save / RedisStore save (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> save @64",
        "RedisStore (pool 2) save @64",
        0.95,
    ),
    target(
        "FallbackStore create / RedisStore create (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> create @64",
        "RedisStore (pool 2) create @64",
        0.95,
    ),
    target(
        "FallbackStore update / RedisStore update, both keeping tombstones (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> update @64",
        "RedisStore (pool 2, tombstones) update @64",
        0.95,
    ),
    target(
        "FallbackStore save_if / RedisStore save_if (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> save_if @64",
        "RedisStore (pool 2) save_if @64",
        0.95,
    ),
    target(
        "RedisStore save with write-behind into PostgreSQL / RedisStore save (pool 2, 64 tasks)",
        "BackupStore<RedisStore (pool 2), SqlStore PostgreSQL> save @64",
        "RedisStore (pool 2) save @64",
        0.95,
    ),
    target(
        "RedisStore cluster load / standalone load (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) load @64",
        "RedisStore (pool 2) load @64",
        0.8,
    ),
    target(
        "RedisStore cluster save / standalone save (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save @64",
        "RedisStore (pool 2) save @64",
        0.8,
    ),
    target(
        "RedisStore cluster save_if / standalone save_if (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save_if @64",
        "RedisStore (pool 2) save_if @64",
        0.8,
    ),
    target(
        "RedisStore cluster save_many(16) / standalone save_many(16) (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save_many(16) @64",
        "RedisStore (pool 2) save_many(16) @64",
        0.8,
    ),
    target(
        "RedisStore near cache load, cached / raw fred GET (pool 2, 64 tasks)",
        "RedisStore near cache (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
        5.0,
    ),
    target(
        "RedisStore near cache load, every load a miss / RedisStore load (pool 2, 64 tasks; a miss costs at most 1.1×)",
        "RedisStore near cache, every load a miss (pool 2) load @64",
        "RedisStore (pool 2) load @64",
        0.91,
    ),
    target(
        "RedisStore near cache save / RedisStore save (pool 2, 64 tasks)",
        "RedisStore near cache (pool 2) save @64",
        "RedisStore (pool 2) save @64",
        0.95,
    ),
    info(
        "RedisStore near cache load, cached / MemoryStore load (64 tasks; goal: within 2×)",
        "RedisStore near cache (pool 2) load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (hashed ids) load / RedisStore load (pool 2, 64 tasks)",
        "SecureStore (hashed ids) on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "SecureStore (hashed ids) on MemoryStore load / MemoryStore load (64 tasks)",
        "SecureStore (hashed ids) on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (hashed ids) save / RedisStore save (pool 2, 64 tasks)",
        "SecureStore (hashed ids) on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "SecureStore (hashed ids) on MemoryStore save / MemoryStore save (64 tasks)",
        "SecureStore (hashed ids) on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "SecureStore (encryption) load / RedisStore load (pool 2, 64 tasks)",
        "SecureStore (encryption) on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "SecureStore (encryption) on MemoryStore load / MemoryStore load (64 tasks)",
        "SecureStore (encryption) on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (encryption) save / RedisStore save (pool 2, 64 tasks)",
        "SecureStore (encryption) on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "SecureStore (encryption) on MemoryStore save / MemoryStore save (64 tasks)",
        "SecureStore (encryption) on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) load / RedisStore load (pool 2, 64 tasks)",
        "SecureStore (hashed ids + encryption) on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) on MemoryStore load / MemoryStore load (64 tasks)",
        "SecureStore (hashed ids + encryption) on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) save / RedisStore save (pool 2, 64 tasks)",
        "SecureStore (hashed ids + encryption) on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) on MemoryStore save / MemoryStore save (64 tasks)",
        "SecureStore (hashed ids + encryption) on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "MemoryStore: create + bind / create (64 tasks)",
        "Sessions<T> on MemoryStore create + bind @64",
        "Sessions<T> on MemoryStore create @64",
    ),
    info(
        "MemoryStore: 4 × (create + bind) + revoke_all / 4 × (create + bind) + 4 × delete (64 tasks)",
        "Sessions<T> on MemoryStore 4 × (create + bind) + revoke_all @64",
        "Sessions<T> on MemoryStore 4 × (create + bind) + 4 × delete @64",
    ),
    info(
        "RedisStore: create + bind / create (64 tasks)",
        "Sessions<T> on RedisStore (pool 2) create + bind @64",
        "Sessions<T> on RedisStore (pool 2) create @64",
    ),
    info(
        "RedisStore: 4 × (create + bind) + revoke_all / 4 × (create + bind) + 4 × delete (64 tasks)",
        "Sessions<T> on RedisStore (pool 2) 4 × (create + bind) + revoke_all @64",
        "Sessions<T> on RedisStore (pool 2) 4 × (create + bind) + 4 × delete @64",
    ),
    info(
        "near cache mixed 90/10, two instances / tower-sessions CachingSessionStore (moka), two instances (64 tasks)",
        "2 × RedisStore near cache (pool 2) mixed 90/10 @64",
        "2 × tower-sessions CachingSessionStore<moka, redis-store> (pool 2) mixed 90/10 @64",
    ),
    info(
        "near cache mixed 90/10, two instances / RedisStore without it, two instances (64 tasks)",
        "2 × RedisStore near cache (pool 2) mixed 90/10 @64",
        "2 × RedisStore (pool 2) mixed 90/10 @64",
    ),
    target(
        "MemoryStore load / DashMap get (64 tasks)",
        "MemoryStore load @64",
        "DashMap<String, Bytes> load @64",
        0.7,
    ),
    target(
        "MemoryStore save / DashMap upsert, a fresh buffer each (64 tasks)",
        "MemoryStore save @64",
        "DashMap<String, Bytes>, fresh buffer save @64",
        0.7,
    ),
    target(
        "SessionLayer request / tower-sessions SessionManagerLayer request (same MemoryStore, 64 tasks)",
        "web: SessionLayer, MemoryStore request @64",
        "web: tower-sessions SessionManagerLayer, MemoryStore request @64",
        1.0,
    ),
    info(
        "RedisStore load / raw fred GET (1 connection, 64 tasks)",
        "RedisStore (1 connection) load @64",
        "raw fred GET (1 connection) load @64",
    ),
    info(
        "RedisStore save / raw fred SET PXAT (1 connection, 64 tasks)",
        "RedisStore (1 connection) save @64",
        "raw fred SET PXAT (1 connection) save @64",
    ),
    info(
        "RedisStore update / raw fred SET XX PXAT (1 connection, 64 tasks)",
        "RedisStore (1 connection) update @64",
        "raw fred SET XX PXAT (1 connection) update @64",
    ),
    info(
        "RedisStore update keeping tombstones (a script) / raw fred SET XX PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2, tombstones) update @64",
        "raw fred SET XX PXAT (pool 2) update @64",
    ),
    info(
        "RedisStore save_if / raw fred SET PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) save_if @64",
        "raw fred SET PXAT (pool 2) save @64",
    ),
    info(
        "RedisStore create / raw fred SET NX PXAT (1 connection, 64 tasks)",
        "RedisStore (1 connection) create @64",
        "raw fred SET NX PXAT (1 connection) create @64",
    ),
    info(
        "RedisStore load / raw fred GET (pool 2, 1 task)",
        "RedisStore (pool 2) load @1",
        "raw fred GET (pool 2) load @1",
    ),
    info(
        "RedisStore save / raw fred SET PXAT (pool 2, 1 task)",
        "RedisStore (pool 2) save @1",
        "raw fred SET PXAT (pool 2) save @1",
    ),
    info(
        "RedisStore cluster load / raw fred cluster GET (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) load @64",
        "raw fred cluster GET (pool 2) load @64",
    ),
    info(
        "RedisStore cluster save / raw fred cluster SET PXAT (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save @64",
        "raw fred cluster SET PXAT (pool 2) save @64",
    ),
    info(
        "RedisStore cluster load / raw fred cluster GET (pool 2, 1 task)",
        "RedisStore cluster (pool 2) load @1",
        "raw fred cluster GET (pool 2) load @1",
    ),
    info(
        "raw fred cluster GET / raw fred GET, standalone (pool 2, 64 tasks)",
        "raw fred cluster GET (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
    ),
    info(
        "raw fred cluster SET PXAT / raw fred SET PXAT, standalone (pool 2, 64 tasks)",
        "raw fred cluster SET PXAT (pool 2) save @64",
        "raw fred SET PXAT (pool 2) save @64",
    ),
    info(
        "RedisStore cluster load / standalone load (pool 2, 1 task)",
        "RedisStore cluster (pool 2) load @1",
        "RedisStore (pool 2) load @1",
    ),
    info(
        "RedisStore cluster save / standalone save (pool 2, 1 task)",
        "RedisStore cluster (pool 2) save @1",
        "RedisStore (pool 2) save @1",
    ),
    info(
        "RedisStore cluster load_many(16) / standalone load_many(16) (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) load_many(16) @64",
        "RedisStore (pool 2) load_many(16) @64",
    ),
    info(
        "tower-sessions-redis-store load / raw fred GET (pool 2, 64 tasks)",
        "tower-sessions-redis-store (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
    ),
    info(
        "tower-sessions-redis-store save / raw fred SET PXAT (pool 2, 64 tasks)",
        "tower-sessions-redis-store (pool 2) save @64",
        "raw fred SET PXAT (pool 2) save @64",
    ),
    info(
        "tower-sessions-redis-store create / raw fred SET NX PXAT (pool 2, 64 tasks)",
        "tower-sessions-redis-store (pool 2) create @64",
        "raw fred SET NX PXAT (pool 2) create @64",
    ),
    info(
        "SqlStore load / tower-sessions-sqlx-store PostgresStore load (PostgreSQL, pool 8, 64 tasks)",
        "SqlStore PostgreSQL (pool 8) load @64",
        "tower-sessions-sqlx-store PostgresStore (pool 8) load @64",
    ),
    info(
        "SqlStore save / tower-sessions-sqlx-store PostgresStore save (PostgreSQL, pool 8, 64 tasks)",
        "SqlStore PostgreSQL (pool 8) save @64",
        "tower-sessions-sqlx-store PostgresStore (pool 8) save @64",
    ),
    info(
        "SqlStore load / tower-sessions-sqlx-store SqliteStore load (SQLite, pool 8, 64 tasks)",
        "SqlStore SQLite (pool 8) load @64",
        "tower-sessions-sqlx-store SqliteStore (pool 8) load @64",
    ),
    info(
        "SqlStore save / tower-sessions-sqlx-store SqliteStore save (SQLite, pool 8, 64 tasks)",
        "SqlStore SQLite (pool 8) save @64",
        "tower-sessions-sqlx-store SqliteStore (pool 8) save @64",
    ),
    info(
        "RedisStore save with write-behind into PostgreSQL / RedisStore save (pool 2, 1 task)",
        "BackupStore<RedisStore (pool 2), SqlStore PostgreSQL> save @1",
        "RedisStore (pool 2) save @1",
    ),
    info(
        "raw fred GET (pool 2, 64 tasks) / redis-benchmark -c 50 GET",
        "raw fred GET (pool 2) load @64",
        "redis-benchmark -c 50 GET",
    ),
    info(
        "raw fred SET PXAT (pool 2, 64 tasks) / redis-benchmark -c 50 SET",
        "raw fred SET PXAT (pool 2) save @64",
        "redis-benchmark -c 50 SET",
    ),
    info(
        "Sessions<T> load / RedisStore load (pool 2, 64 tasks)",
        "Sessions<T> on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "Sessions<T> save / RedisStore save (pool 2, 64 tasks)",
        "Sessions<T> on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "MemoryStore save / DashMap upsert of one shared buffer (64 tasks)",
        "MemoryStore save @64",
        "DashMap<String, Bytes>, shared buffer save @64",
    ),
    info(
        "MemoryStore load / DashMap get (1 task)",
        "MemoryStore load @1",
        "DashMap<String, Bytes> load @1",
    ),
    info(
        "MemoryStore save / DashMap upsert, a fresh buffer each (1 task)",
        "MemoryStore save @1",
        "DashMap<String, Bytes>, fresh buffer save @1",
    ),
    info(
        "tower-sessions MemoryStore load / DashMap get (64 tasks)",
        "tower-sessions MemoryStore load @64",
        "DashMap<String, Bytes> load @64",
    ),
    info(
        "tower-sessions MemoryStore save / DashMap upsert, a fresh buffer each (64 tasks)",
        "tower-sessions MemoryStore save @64",
        "DashMap<String, Bytes>, fresh buffer save @64",
    ),
    info(
        "Sessions<T> load / MemoryStore load (64 tasks)",
        "Sessions<T> on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "Sessions<T> save / MemoryStore save (64 tasks)",
        "Sessions<T> on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "SessionLayer read request / tower-sessions SessionManagerLayer read request (same MemoryStore, 64 tasks)",
        "web: SessionLayer, MemoryStore read request @64",
        "web: tower-sessions SessionManagerLayer, MemoryStore read request @64",
    ),
    info(
        "SessionLayer request / tower-sessions SessionManagerLayer request (same MemoryStore, 1 task)",
        "web: SessionLayer, MemoryStore request @1",
        "web: tower-sessions SessionManagerLayer, MemoryStore request @1",
    ),
    info(
        "SessionLayer read request / tower-sessions SessionManagerLayer read request (same MemoryStore, 1 task)",
        "web: SessionLayer, MemoryStore read request @1",
        "web: tower-sessions SessionManagerLayer, MemoryStore read request @1",
    ),
    info(
        "Instrumented<MemoryStore> load, no recorder / bare (1 task)",
        "Instrumented<MemoryStore>, no recorder load @1",
        "MemoryStore load @1",
    ),
    info(
        "Instrumented<MemoryStore> load, Prometheus / bare (1 task)",
        "Instrumented<MemoryStore>, Prometheus load @1",
        "MemoryStore load @1",
    ),
    info(
        "Instrumented<MemoryStore> load, no recorder / bare (64 tasks)",
        "Instrumented<MemoryStore>, no recorder load @64",
        "MemoryStore load @64",
    ),
    info(
        "Instrumented<MemoryStore> load, Prometheus / bare (64 tasks)",
        "Instrumented<MemoryStore>, Prometheus load @64",
        "MemoryStore load @64",
    ),
];

#[cfg(test)]
mod tests {
    use super::RATIOS;
    use crate::web::{OURS, READ, TOWER, UPDATE};

    #[test]
    fn the_web_ratios_name_the_web_cases() {
        let mut ids = Vec::new();
        for subject in [OURS, TOWER] {
            for op in [UPDATE, READ] {
                for tasks in [1, 64] {
                    ids.push(format!("{subject} {op} @{tasks}"));
                }
            }
        }
        let web: Vec<_> = RATIOS.iter().filter(|d| d.num.starts_with("web: ")).collect();
        assert_eq!(web.len(), 4);
        for def in web {
            assert!(ids.iter().any(|id| id == def.num), "{}", def.num);
            assert!(ids.iter().any(|id| id == def.den), "{}", def.den);
        }
    }
}
