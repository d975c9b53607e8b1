//! The scale curve: `RedisStore` on a Redis Cluster holding 10k, 1M and 5M sessions.
//!
//! The cluster grows in steps: filled to the first size, measured, filled on to the next,
//! measured, and so on (a fill never starts over). A fill writes the benchmark's record under
//! keys derived from their index (`session:bench:{22-character id}`, as long as the main key
//! space's) as raw `SET key envelope PXAT deadline` commands — the command and the bytes a
//! `RedisStore::save` sends — in fred pipelines of [`CHUNK`] on [`FILL_TASKS`] tasks of a fred
//! cluster client (which sends each command to its key's node). That is ~2.5 × faster than
//! the store's own `save_many`, which sends one command future per key (a 5M fill takes about a
//! minute instead of several); a few sessions of each fill are then loaded through the store,
//! which must decode them.
//!
//! Each size is measured with `load` and `save` at 64 tasks on keys drawn uniformly from all
//! the sessions filled so far, in short slices; each slice is paired with one of a **control**
//! (the same operation on the 3+3 cluster's fixed 100k-key space, when the run has one), in
//! the order A B B A A B B A …, so that a slow moment of the shared machine shows in the
//! control as well. The figures are the medians over the slices; the control-relative figure is
//! the ratio of the summed rates.
//!
//! Memory per session is the growth of each master's `used_memory` since the cluster was empty,
//! over the keys that master holds (`DBSIZE`). A fill that the machine's free memory (less a
//! reserve) or the nodes' `maxmemory` could not hold is not started; one that runs the
//! machine's free memory down to the reserve stops.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use session_core::backend::Record;
use session_core::{Namespace, SessionId, SessionKey, SessionStore};
use session_redis::fred::clients::Client;
use session_redis::fred::interfaces::{ClientLike, KeysInterface};
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::fred::types::{Expiration, Value};
use session_redis::{RedisConfig, RedisStore};

use crate::cases::{Case, NAMESPACE, POOL};
use crate::harness::{median, run_cell, Cell, Op, Plan};
use crate::nodes::NodeConn;

/// Commands per pipeline of a fill.
const CHUNK: usize = 256;
/// Tasks filling at once.
const FILL_TASKS: usize = 16;
/// Tasks of a measured slice.
const TASKS: usize = 64;
/// Free memory a fill leaves the machine (it stops when `MemAvailable` falls to this).
const RESERVE: u64 = 3 << 30;
/// What a session is assumed to cost a node before one was measured (bytes).
const FIRST_GUESS: f64 = 1_600.0;
/// The flatness target: each figure's smallest over its largest across sizes.
pub(crate) const FLAT: f64 = 0.90;

/// How the curve is taken.
#[derive(Clone, Debug)]
pub(crate) struct ScaleOptions {
    /// Sessions at each step, ascending.
    pub(crate) sizes: Vec<usize>,
    /// Slices per operation and size (each paired with a control slice).
    pub(crate) slices: usize,
    /// Length of one slice.
    pub(crate) slice: Duration,
}

/// One operation's figures at one size, per slice.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpCurve {
    pub(crate) ops: Vec<f64>,
    pub(crate) p99: Vec<f64>,
    pub(crate) errors: u64,
    /// The control's ops/s in the slices paired with these.
    pub(crate) control_ops: Vec<f64>,
}

impl OpCurve {
    fn push(&mut self, cell: Cell) {
        self.ops.push(cell.ops_per_sec);
        self.p99.push(cell.p99_us);
        self.errors += cell.errors;
    }

    pub(crate) fn ops_median(&self) -> f64 {
        median(&self.ops)
    }

    pub(crate) fn p99_median(&self) -> f64 {
        median(&self.p99)
    }

    /// Summed ops/s over the control's summed ops/s in the paired slices (NaN without a control).
    pub(crate) fn vs_control(&self) -> f64 {
        if self.control_ops.is_empty() {
            return f64::NAN;
        }
        self.ops.iter().sum::<f64>() / self.control_ops.iter().sum::<f64>()
    }
}

/// One master at one size.
#[derive(Clone, Debug)]
pub(crate) struct NodePoint {
    pub(crate) dbsize: u64,
    /// `used_memory` now less `used_memory` of the empty node.
    pub(crate) growth: u64,
}

impl NodePoint {
    pub(crate) fn per_session(&self) -> f64 {
        self.growth as f64 / self.dbsize.max(1) as f64
    }
}

/// One step of the curve.
#[derive(Clone, Debug)]
pub(crate) struct ScalePoint {
    /// Sessions in the cluster.
    pub(crate) sessions: usize,
    /// Sessions written by the fill up to this step, and how long it took.
    pub(crate) filled: usize,
    pub(crate) fill_secs: f64,
    pub(crate) load: OpCurve,
    pub(crate) save: OpCurve,
    pub(crate) nodes: Vec<NodePoint>,
}

impl ScalePoint {
    /// Bytes per session, averaged over the masters (each its growth over its keys).
    pub(crate) fn per_session(&self) -> f64 {
        let v: Vec<f64> = self.nodes.iter().map(NodePoint::per_session).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

/// The whole curve.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScaleReport {
    pub(crate) points: Vec<ScalePoint>,
    /// Why the curve stopped before its last size, if it did.
    pub(crate) stopped: Option<String>,
    pub(crate) masters: usize,
    pub(crate) maxmemory: u64,
    pub(crate) slices: usize,
    pub(crate) slice: Duration,
    /// The control's case ids (load, save), when there was one.
    pub(crate) control: Option<(String, String)>,
}

// ---------------------------------------------------------------- keys

const SEED: u64 = 0x5345_5353_494f_4e53;
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The id of session number `i`: 128 bits derived from `i` (distinct for every `i`: the first
/// 64 are a bijection of it), in base64url without padding, 22 characters as a generated id.
fn id_for(i: usize) -> SessionId {
    let a = splitmix(SEED ^ i as u64);
    let b = splitmix(a ^ SEED.rotate_left(17));
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&a.to_le_bytes());
    raw[8..].copy_from_slice(&b.to_le_bytes());
    let mut id = String::with_capacity(22);
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            id.push(char::from(B64URL[((n >> (18 - 6 * k)) & 0x3f) as usize]));
        }
    }
    SessionId::parse(&id).unwrap_or_else(|e| panic!("a derived id is invalid: {e}"))
}

fn key_for(namespace: &Namespace, i: usize) -> SessionKey {
    SessionKey::new(namespace.clone(), id_for(i))
}

// ---------------------------------------------------------------- operations

/// `load` of session number `idx` (its key made per call: the same small cost at every size).
struct ScaleLoad {
    store: Arc<dyn SessionStore>,
    namespace: Namespace,
}

impl Op for ScaleLoad {
    fn call(&mut self, idx: usize) -> impl std::future::Future<Output = bool> + Send + '_ {
        let key = key_for(&self.namespace, idx);
        async move { matches!(self.store.load(&key).await, Ok(Some(_))) }
    }
}

/// `save` of session number `idx` (it exists: the value is replaced by one of the same size).
struct ScaleSave {
    store: Arc<dyn SessionStore>,
    namespace: Namespace,
    record: Record,
}

impl Op for ScaleSave {
    fn call(&mut self, idx: usize) -> impl std::future::Future<Output = bool> + Send + '_ {
        let key = key_for(&self.namespace, idx);
        async move { self.store.save(&key, &self.record).await.is_ok() }
    }
}

// ---------------------------------------------------------------- memory

/// `MemAvailable` of /proc/meminfo, bytes (`u64::MAX` when unknown).
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

// ---------------------------------------------------------------- the curve

/// What a fill did.
struct Filled {
    written: usize,
    errors: usize,
    first_error: Option<String>,
    /// Set when the machine's free memory fell to the reserve.
    aborted: Option<String>,
}

/// What a fill writes: the record's envelope under each key, with its deadline.
struct Filler {
    client: Client,
    namespace: Namespace,
    envelope: Bytes,
    deadline: i64,
}

impl Filler {
    /// A fred cluster client (it routes each command of a pipeline to its key's node).
    async fn connect(url: &str, namespace: &Namespace, record: &Record) -> Result<Self, String> {
        let config = FredConfig::from_url(url).map_err(|e| format!("fred config for {url}: {e}"))?;
        let client = Client::new(config, None, None, None);
        client
            .init()
            .await
            .map_err(|e| format!("fred cluster client for {url}: {e}"))?;
        Ok(Filler {
            client,
            namespace: namespace.clone(),
            envelope: record.encode(),
            deadline: i64::try_from(record.meta.expires_at).unwrap_or(i64::MAX),
        })
    }

    /// Sends `SET key envelope PXAT deadline` for sessions `range` as one pipeline; the
    /// sessions written, and the first error.
    async fn chunk(&self, range: std::ops::Range<usize>) -> (usize, Option<String>) {
        let pipeline = self.client.pipeline();
        let n = range.len();
        for i in range {
            let key = format!("session:{}:{}", self.namespace.as_str(), id_for(i).as_str());
            // Queued, not sent: a pipeline's calls only record their command.
            let queued: Result<(), _> = pipeline
                .set(
                    key,
                    self.envelope.clone(),
                    Some(Expiration::PXAT(self.deadline)),
                    None,
                    false,
                )
                .await;
            if let Err(e) = queued {
                return (0, Some(e.to_string()));
            }
        }
        let replies: Vec<Result<Value, _>> = pipeline.try_all().await;
        let first = replies
            .iter()
            .find_map(|r| r.as_ref().err())
            .map(ToString::to_string);
        let ok = replies.iter().filter(|r| r.is_ok()).count();
        let first = first.or_else(|| (replies.len() != n).then(|| "a pipeline lost replies".to_owned()));
        (ok, first)
    }
}

/// Saves sessions `from..to`: pipelines of [`CHUNK`] `SET key envelope PXAT deadline` (the
/// command and bytes a `save` sends) on [`FILL_TASKS`] tasks; a pipeline with a failed
/// command is sent again once (a `SET` can be repeated).
async fn fill(filler: &Arc<Filler>, from: usize, to: usize) -> Filled {
    let next = Arc::new(AtomicUsize::new(from));
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let aborted: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut handles = Vec::new();
    for _ in 0..FILL_TASKS {
        let (filler, next, written, stop, first_error) = (
            Arc::clone(filler),
            Arc::clone(&next),
            Arc::clone(&written),
            Arc::clone(&stop),
            Arc::clone(&first_error),
        );
        handles.push(tokio::spawn(async move {
            let mut errors = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                if start >= to {
                    break;
                }
                let range = start..(start + CHUNK).min(to);
                let mut outcome = filler.chunk(range.clone()).await;
                if outcome.1.is_some() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    outcome = filler.chunk(range.clone()).await;
                }
                let (ok, error) = outcome;
                written.fetch_add(ok as u64, Ordering::Relaxed);
                if let Some(e) = error {
                    errors += range.len().saturating_sub(ok).max(1);
                    let mut first = first_error.lock().unwrap_or_else(PoisonError::into_inner);
                    first.get_or_insert(e);
                }
            }
            errors
        }));
    }
    // Progress, and the memory guard.
    let monitor = {
        let (written, stop, done, aborted) = (
            Arc::clone(&written),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&aborted),
        );
        tokio::spawn(async move {
            let began = Instant::now();
            let mut last_print = Instant::now();
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let available = mem_available();
                if available < RESERVE {
                    *aborted.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                        "the machine's available memory fell to {} during the fill to {to} sessions",
                        gib(available as f64)
                    ));
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    let w = written.load(Ordering::Relaxed);
                    println!(
                        "  scale: {} / {to} sessions ({:.0}/s, {} available)",
                        from as u64 + w,
                        w as f64 / began.elapsed().as_secs_f64(),
                        gib(available as f64)
                    );
                }
            }
        })
    };
    let mut errors = 0;
    for handle in handles {
        errors += handle
            .await
            .unwrap_or_else(|e| panic!("a fill task panicked: {e}"));
    }
    done.store(true, Ordering::Relaxed);
    let _ = monitor.await;
    let first_error = first_error.lock().unwrap_or_else(PoisonError::into_inner).take();
    let aborted = aborted.lock().unwrap_or_else(PoisonError::into_inner).take();
    Filled {
        written: written.load(Ordering::Relaxed) as usize,
        errors,
        first_error,
        aborted,
    }
}

/// Runs `slices` slices of `op` on `n` sessions, each paired with a slice of `control` (A B B A …).
async fn measure<O: Op>(
    make: impl Fn() -> O + Copy,
    n: usize,
    control: Option<(&Case, Plan)>,
    options: &ScaleOptions,
) -> OpCurve {
    let plan = Plan {
        tasks: TASKS,
        duration: options.slice,
        keyspace: n,
        sample_every: 1,
    };
    let mut curve = OpCurve::default();
    for i in 0..options.slices {
        let a_first = matches!(i % 4, 0 | 3);
        let run_control = |curve: &mut OpCurve, cell: Cell| curve.control_ops.push(cell.ops_per_sec);
        match control {
            Some((case, control_plan)) if !a_first => {
                let cell = case.run(control_plan).await;
                run_control(&mut curve, cell);
                curve.push(run_cell(plan, |_| make()).await);
            }
            Some((case, control_plan)) => {
                curve.push(run_cell(plan, |_| make()).await);
                let cell = case.run(control_plan).await;
                run_control(&mut curve, cell);
            }
            None => curve.push(run_cell(plan, |_| make()).await),
        }
    }
    curve
}

/// Takes the curve on the cluster at `url` (its masters hold nothing yet). `control` holds
/// the control cases for load and save with the plan of one slice of theirs.
pub(crate) async fn run(
    url: &str,
    record: &Record,
    options: &ScaleOptions,
    control: Option<[(&Case, Plan); 2]>,
) -> Result<ScaleReport, String> {
    let mut nodes = Vec::new();
    for node in NodeConn::connect_all(url).await? {
        if node.is_master().await? {
            nodes.push(node);
        }
    }
    if nodes.is_empty() {
        return Err(format!("no master answers at {url}"));
    }
    let namespace = Namespace::new(NAMESPACE).map_err(|e| e.to_string())?;
    // The measured store: as a user configures one (default timeouts), a pool of 2 per node.
    let mut config = RedisConfig::new(url);
    config.pool_size = POOL;
    let store: Arc<dyn SessionStore> = Arc::new(
        RedisStore::connect(config)
            .await
            .map_err(|e| format!("RedisStore::connect (scale cluster): {e}"))?,
    );
    let filler = Arc::new(Filler::connect(url, &namespace, record).await?);
    let mut base = Vec::new();
    for node in &nodes {
        let keys = node.dbsize().await?;
        if keys > 0 {
            return Err(format!(
                "the scale cluster's node {} is not empty ({keys} keys)",
                node.addr
            ));
        }
        base.push(node.used_memory().await?);
    }
    let maxmemory = nodes[0].maxmemory().await?;
    let mut report = ScaleReport {
        masters: nodes.len(),
        maxmemory,
        slices: options.slices,
        slice: options.slice,
        control: control.as_ref().map(|[l, s]| (l.0.id(), s.0.id())),
        ..ScaleReport::default()
    };

    let mut current = 0usize;
    let mut per_session = FIRST_GUESS;
    for &size in &options.sizes {
        if size <= current {
            continue;
        }
        // Will it fit? In the machine (less the reserve), and under the nodes' maxmemory.
        let need = (size - current) as f64 * per_session * 1.15;
        let available = mem_available() as f64;
        let used: f64 = {
            let mut total = 0.0;
            for node in &nodes {
                total += node.used_memory().await? as f64;
            }
            total
        };
        let cap = maxmemory as f64 * nodes.len() as f64;
        if need > available - RESERVE as f64 || (maxmemory > 0 && used + need > 0.95 * cap) {
            report.stopped = Some(format!(
                "{size} sessions not filled: about {} more needed, {} available on the machine (keeping {} free){}",
                gib(need),
                gib(available),
                gib(RESERVE as f64),
                if maxmemory > 0 {
                    format!(", the masters' maxmemory {} in all", gib(cap))
                } else {
                    String::new()
                }
            ));
            break;
        }
        println!("  scale: filling {current} → {size} sessions…");
        let began = Instant::now();
        let filled = fill(&filler, current, size).await;
        let fill_secs = began.elapsed().as_secs_f64();
        if let Some(reason) = filled.aborted {
            report.stopped = Some(reason);
            break;
        }
        if filled.errors > 0 {
            report.stopped = Some(format!(
                "{} of {} sessions failed to save while filling to {size}: {}",
                filled.errors,
                size - current,
                filled.first_error.unwrap_or_default()
            ));
            break;
        }
        // The store reads what the fill wrote.
        for i in (current..size).step_by(((size - current) / 16).max(1)) {
            let key = key_for(&namespace, i);
            match store.load(&key).await {
                Ok(Some(r)) if r.payload == record.payload => {}
                other => return Err(format!("session {i} of the fill does not load back: {other:?}")),
            }
        }
        current = size;
        // Let the nodes finish what the fill started (incremental rehashing, freed buffers).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut points = Vec::new();
        for (node, base) in nodes.iter().zip(&base) {
            points.push(NodePoint {
                dbsize: node.dbsize().await?,
                growth: node.used_memory().await?.saturating_sub(*base),
            });
        }
        let keys: u64 = points.iter().map(|p| p.dbsize).sum();
        if keys != size as u64 {
            return Err(format!("the scale cluster holds {keys} keys, {size} were saved"));
        }
        println!(
            "  scale: {size} sessions filled in {fill_secs:.1}s ({:.0}/s); measuring…",
            filled.written as f64 / fill_secs.max(1e-9)
        );
        let load_store = Arc::clone(&store);
        let ns = namespace.clone();
        let load = measure(
            || ScaleLoad {
                store: Arc::clone(&load_store),
                namespace: ns.clone(),
            },
            size,
            control.as_ref().map(|c| c[0]),
            options,
        );
        let load = load.await;
        let save_store = Arc::clone(&store);
        let ns = namespace.clone();
        let save = measure(
            || ScaleSave {
                store: Arc::clone(&save_store),
                namespace: ns.clone(),
                record: record.clone(),
            },
            size,
            control.as_ref().map(|c| c[1]),
            options,
        )
        .await;
        let point = ScalePoint {
            sessions: size,
            filled: filled.written,
            fill_secs,
            load,
            save,
            nodes: points,
        };
        per_session = point.per_session().max(256.0);
        println!("{}", point_line(&point));
        report.points.push(point);
    }
    Ok(report)
}

// ---------------------------------------------------------------- the report

fn fmt_int(v: f64) -> String {
    crate::report::fmt_ops(v)
}

fn point_line(p: &ScalePoint) -> String {
    format!(
        "  {:>10} sessions  load {:>9} ops/s p99 {:>6.0} µs  save {:>9} ops/s p99 {:>6.0} µs  {:.0} bytes/session per node",
        fmt_int(p.sessions as f64),
        fmt_int(p.load.ops_median()),
        p.load.p99_median(),
        fmt_int(p.save.ops_median()),
        p.save.p99_median(),
        p.per_session()
    )
}

/// The smallest over the largest of `values` (NaN for none).
fn min_over_max(values: &[f64]) -> f64 {
    let v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    min / max
}

/// A row of the flatness verdict: label, the figures per size, min/max, whether it has a target.
struct Flatness {
    label: &'static str,
    values: Vec<f64>,
    target: bool,
}

impl ScaleReport {
    fn flatness(&self) -> Vec<Flatness> {
        let col = |f: &dyn Fn(&ScalePoint) -> f64| self.points.iter().map(f).collect::<Vec<f64>>();
        let mut rows = vec![
            Flatness {
                label: "load ops/s",
                values: col(&|p| p.load.ops_median()),
                target: true,
            },
            Flatness {
                label: "save ops/s",
                values: col(&|p| p.save.ops_median()),
                target: true,
            },
            Flatness {
                label: "load p99",
                values: col(&|p| p.load.p99_median()),
                target: true,
            },
            Flatness {
                label: "save p99",
                values: col(&|p| p.save.p99_median()),
                target: true,
            },
            Flatness {
                label: "bytes per session per node (mean of the masters)",
                values: col(&|p| p.per_session()),
                target: true,
            },
        ];
        if self.control.is_some() {
            rows.push(Flatness {
                label: "load ops/s ÷ control's (paired slices)",
                values: col(&|p| p.load.vs_control()),
                target: false,
            });
            rows.push(Flatness {
                label: "save ops/s ÷ control's (paired slices)",
                values: col(&|p| p.save.vs_control()),
                target: false,
            });
        }
        rows
    }

    /// `met` / `missed` of the whole curve (every row with a target), for the ratio table.
    pub(crate) fn verdict(&self) -> (f64, bool) {
        let worst = self
            .flatness()
            .iter()
            .filter(|r| r.target)
            .map(|r| min_over_max(&r.values))
            .fold(f64::INFINITY, f64::min);
        (worst, worst >= FLAT && self.points.len() >= 2)
    }

    fn status(value: f64) -> String {
        if !value.is_finite() {
            "not measured".to_owned()
        } else if value >= FLAT {
            "met".to_owned()
        } else {
            let short = (FLAT - value) / FLAT * 100.0;
            if short < 1.0 {
                format!("**missed** by {short:.1} %")
            } else {
                format!("**missed** by {short:.0} %")
            }
        }
    }

    /// The console or Markdown tables: one row per size, then the flatness verdict.
    pub(crate) fn table(&self, markdown: bool) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let control = self.control.is_some();
        if markdown {
            out.push_str(
                "| sessions | filled in | load ops/s | load p99 µs | load ÷ control | save ops/s | save p99 µs | save ÷ control | bytes per session per master | keys per master (DBSIZE) |\n",
            );
            out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---|---|\n");
        }
        for p in &self.points {
            let per_node: Vec<String> = p
                .nodes
                .iter()
                .map(|n| format!("{:.0}", n.per_session()))
                .collect();
            let keys: Vec<String> = p.nodes.iter().map(|n| fmt_int(n.dbsize as f64)).collect();
            let vs = |c: &OpCurve| {
                if control {
                    format!("{:.2}", c.vs_control())
                } else {
                    "–".to_owned()
                }
            };
            let errors = |c: &OpCurve| {
                if c.errors > 0 {
                    format!(" ({} errors)", c.errors)
                } else {
                    String::new()
                }
            };
            let fill = format!(
                "{:.1} s ({} /s)",
                p.fill_secs,
                fmt_int(p.filled as f64 / p.fill_secs.max(1e-9))
            );
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {fill} | {}{} | {:.0} | {} | {}{} | {:.0} | {} | {:.0} ({}) | {} |",
                    fmt_int(p.sessions as f64),
                    fmt_int(p.load.ops_median()),
                    errors(&p.load),
                    p.load.p99_median(),
                    vs(&p.load),
                    fmt_int(p.save.ops_median()),
                    errors(&p.save),
                    p.save.p99_median(),
                    vs(&p.save),
                    p.per_session(),
                    per_node.join(" / "),
                    keys.join(" / ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:>10} filled in {fill:<20} load {:>8}{} p99 {:>5.0} µs ({} × control)  save {:>8}{} p99 {:>5.0} µs ({} × control)  {:.0} B/session [{}]  keys [{}]",
                    fmt_int(p.sessions as f64),
                    fmt_int(p.load.ops_median()),
                    errors(&p.load),
                    p.load.p99_median(),
                    vs(&p.load),
                    fmt_int(p.save.ops_median()),
                    errors(&p.save),
                    p.save.p99_median(),
                    vs(&p.save),
                    p.per_session(),
                    per_node.join(" "),
                    keys.join(" ")
                );
            }
        }
        if markdown {
            out.push_str(
                "\n| flat within 10 % across sizes | per size | smallest / largest | target | status |\n|---|---|---:|---:|---|\n",
            );
        } else {
            out.push_str("  flatness across sizes (smallest / largest):\n");
        }
        for row in self.flatness() {
            let value = min_over_max(&row.values);
            let per_size: Vec<String> = row
                .values
                .iter()
                .map(|v| {
                    if *v >= 100.0 {
                        fmt_int(*v)
                    } else {
                        format!("{v:.2}")
                    }
                })
                .collect();
            let (target, status) = if row.target {
                (format!("≥ {FLAT:.2}"), Self::status(value))
            } else {
                (String::new(), String::new())
            };
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {} | {value:.2} | {target} | {status} |",
                    row.label,
                    per_size.join(" / ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "    {:<52} {value:>5.2}  [{}] {target} {}",
                    row.label,
                    per_size.join(" / "),
                    status.replace("**", "")
                );
            }
        }
        if let Some(reason) = &self.stopped {
            let _ = writeln!(
                out,
                "{}the curve stopped early: {reason}",
                if markdown { "\n" } else { "  " }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{id_for, min_over_max};

    #[test]
    fn derived_ids_are_valid_distinct_and_stable() {
        let a: Vec<String> = (0..1000).map(|i| id_for(i).as_str().to_owned()).collect();
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert!(a.iter().all(|id| id.len() == 22));
        assert_eq!(id_for(7).as_str(), a[7]);
    }

    #[test]
    fn flatness_is_smallest_over_largest() {
        assert!((min_over_max(&[90.0, 100.0, 95.0]) - 0.9).abs() < 1e-9);
        assert!(min_over_max(&[]).is_nan());
    }
}
