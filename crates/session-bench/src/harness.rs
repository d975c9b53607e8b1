//! Runs one cell: `tasks` Tokio tasks calling an operation on random keys for a fixed time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit_redis::stats::{nearest_rank, Rng};

/// One benchmarked operation. Each task owns its instance, so per-task state (a record to
/// mutate, a payload of its own) needs no lock and no reference counting per call.
pub(crate) trait Op: Send + 'static {
    /// Runs the operation on key number `idx` (below the key space); `false` on an error.
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_;
}

/// What one cell measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cell {
    /// Operations per second, all tasks together.
    pub(crate) ops_per_sec: f64,
    /// Median latency of one operation, microseconds.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub(crate) p99_us: f64,
    /// Operations that returned an error.
    pub(crate) errors: u64,
}

/// How a cell is run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Concurrent tasks.
    pub(crate) tasks: usize,
    /// How long the tasks run.
    pub(crate) duration: Duration,
    /// Keys are drawn uniformly from `0..keyspace`.
    pub(crate) keyspace: usize,
    /// Every `sample_every`-th operation of a task is timed (1 = all). In-memory operations
    /// take ~100 ns, so timing each would add two clock reads to what is measured.
    pub(crate) sample_every: u64,
}

/// A task gives the others a turn every this many operations (in-memory operations never wait,
/// so without it one task per worker thread would run the whole cell).
const YIELD_EVERY: u64 = 64;

/// Runs `plan.tasks` tasks, each with the op `make(task)`, until `plan.duration` is over.
pub(crate) async fn run_cell<O: Op>(plan: Plan, make: impl Fn(usize) -> O) -> Cell {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(tokio::sync::Barrier::new(plan.tasks + 1));
    let mut handles = Vec::with_capacity(plan.tasks);
    for task in 0..plan.tasks {
        let mut op = make(task);
        let stop = Arc::clone(&stop);
        let barrier = Arc::clone(&barrier);
        let keyspace = plan.keyspace.max(1) as u64;
        let sample_every = plan.sample_every.max(1);
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new((task as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut latencies: Vec<u32> = Vec::with_capacity(8192);
            let (mut n, mut errors) = (0u64, 0u64);
            barrier.wait().await;
            while !stop.load(Ordering::Relaxed) {
                let idx = (rng.next_u64() % keyspace) as usize;
                let ok = if n % sample_every == 0 {
                    let start = Instant::now();
                    let ok = op.call(idx).await;
                    latencies.push(u32::try_from(start.elapsed().as_nanos()).unwrap_or(u32::MAX));
                    ok
                } else {
                    op.call(idx).await
                };
                errors += u64::from(!ok);
                n += 1;
                if n % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (n, errors, latencies)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    tokio::time::sleep(plan.duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut errors) = (0u64, 0u64);
    let mut latencies = Vec::new();
    for handle in handles {
        match handle.await {
            Ok((n, e, l)) => {
                total += n;
                errors += e;
                latencies.extend(l);
            }
            Err(e) => panic!("a benchmark task panicked: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Cell {
        ops_per_sec: total as f64 / secs,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        errors,
    }
}

/// The `q` quantile of sorted nanoseconds, in microseconds.
fn percentile(sorted: &[u32], q: f64) -> f64 {
    nearest_rank(sorted, q).map_or(0.0, |ns| f64::from(ns) / 1000.0)
}

/// The median of some figures (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
