//! The case, one thing measured (a subject, an operation, a task count), and what the cases
//! share; the files below build them: the operations, the set-up, and the subjects per backend.

#![allow(
    clippy::manual_async_fn,
    reason = "the ops spell out the `Send` future the harness needs; the in-memory anchors do \
              their work before returning a ready future"
)]

mod anchor_ops;
mod cluster;
mod memory;
mod redis;
mod setup;
mod store_ops;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use session_core::Version;

use crate::harness::{run_cell, Cell, Op, Plan};

pub(crate) use anchor_ops::{TowerLoad, TowerSave};
pub(crate) use cluster::{cluster_cases, CLUSTER_RAW_GET, CLUSTER_RAW_SET, CLUSTER_SUBJECT};
pub(crate) use memory::memory_cases;
pub(crate) use redis::{redis_cases, RedisMemory};
pub(crate) use setup::{check, ns, prefill, tower_prefill, tower_record, Keys};
pub(crate) use store_ops::{StoreLoad, StoreSave};

/// The namespace of the pre-filled key space.
pub(crate) const NAMESPACE: &str = "bench";
/// The namespace of the `save_if` cases' key space, pre-filled with records of version
/// [`CAS_VERSION`] (the other writes would give the keys fresh versions).
const CAS_NAMESPACE: &str = "bench_cas";
/// The fixed version token of every record in [`CAS_NAMESPACE`] (`SESSION1` in ASCII: not
/// [`Version::NONE`], so the stores keep it).
const CAS_VERSION: Version = Version::from_u64(0x5345_5353_494f_4e31);
/// The namespace `create` cases write to (in Redis database 1, emptied after each cell).
const CREATE_NAMESPACE: &str = "new";
/// The Redis database of the `create` cases.
const CREATE_DB: u8 = 1;
/// Keys per `load_many` and `save_many` call.
pub(crate) const MANY: usize = 16;
/// Connections of the `(pool 2)` subjects: fred's `Pool` of the raw anchors, and
/// `redis.pool_size` of the stores (per node on a cluster). The store's default is 1
/// (`session_redis::DEFAULT_POOL_SIZE`), which the `(1 connection)` subjects measure.
pub(crate) const POOL: usize = 2;

/// Where a case runs, which decides its cell length and latency sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Group {
    /// In-process stores.
    Memory,
    /// Redis, over loopback.
    Redis,
    /// PostgreSQL over loopback, or a SQLite file.
    Sql,
}

type CellFuture = Pin<Box<dyn Future<Output = Cell> + Send>>;
type Runner = Box<dyn Fn(Plan) -> CellFuture + Send + Sync>;
/// Run after each cell (outside the measured time).
pub(crate) type Cleanup = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One thing measured: a subject, an operation, a task count.
pub(crate) struct Case {
    /// What is measured, e.g. `RedisStore (pool 2)`.
    pub(crate) subject: &'static str,
    /// The operation, e.g. `load`.
    pub(crate) op: &'static str,
    /// Concurrent tasks.
    pub(crate) tasks: usize,
    /// Memory or Redis.
    pub(crate) group: Group,
    /// Sessions per operation (16 for `load_many`), for keys per second.
    pub(crate) items: u32,
    run: Runner,
    cleanup: Option<Cleanup>,
}

impl Case {
    /// Runs one cell of this case, then its clean-up (outside the measured time).
    pub(crate) async fn run(&self, plan: Plan) -> Cell {
        let cell = (self.run)(plan).await;
        if let Some(cleanup) = &self.cleanup {
            cleanup().await;
        }
        cell
    }

    /// This case with no rate for a cell in which any operation failed: its ops/s is then NaN
    /// (shown as "–" beside the failure count), and so is a paired ratio it takes part in, which
    /// the report shows as not measured. For cases whose failures mean the cell measured something
    /// else than it says (a request answered with an error page skips the work a success does).
    pub(crate) fn without_rate_on_failure(mut self) -> Self {
        let run = self.run;
        self.run = Box::new(move |plan| {
            let cell = run(plan);
            Box::pin(async move {
                let mut cell = cell.await;
                if cell.errors > 0 {
                    cell.ops_per_sec = f64::NAN;
                }
                cell
            })
        });
        self
    }

    /// This case with `cleanup` run after each of its cells and paired slices, outside the
    /// measured time.
    pub(crate) fn with_cleanup(mut self, cleanup: Cleanup) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// `subject op @tasks`, the case's name in tables.
    pub(crate) fn id(&self) -> String {
        format!("{} {} @{}", self.subject, self.op, self.tasks)
    }
}

/// Builds a case from a per-task op factory.
pub(crate) fn case<O: Op, F>(
    subject: &'static str,
    op: &'static str,
    tasks: usize,
    group: Group,
    make: F,
) -> Case
where
    F: Fn(usize) -> O + Send + Sync + 'static,
{
    let make = Arc::new(make);
    Case {
        subject,
        op,
        tasks,
        group,
        items: 1,
        run: Box::new(move |plan| {
            let make = Arc::clone(&make);
            Box::pin(async move { run_cell(plan, |t| make(t)).await })
        }),
        cleanup: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Fails on odd keys.
    struct HalfFails;

    impl Op for HalfFails {
        fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
            async move { idx.is_multiple_of(2) }
        }
    }

    #[tokio::test]
    async fn a_cell_with_failures_reports_no_rate() {
        let plan = Plan {
            tasks: 2,
            duration: Duration::from_millis(20),
            keyspace: 10,
            sample_every: 1,
        };
        let failing = case("x", "op", 2, Group::Memory, |_| HalfFails).without_rate_on_failure();
        let cell = failing.run(plan).await;
        assert!(cell.errors > 0 && cell.ops_per_sec.is_nan(), "{cell:?}");
        let counted = case("x", "op", 2, Group::Memory, |_| HalfFails);
        let cell = counted.run(plan).await;
        assert!(cell.errors > 0 && cell.ops_per_sec > 0.0, "{cell:?}");
    }
}
