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

mod curve;
mod fill;
mod keys;
mod memory;
mod ops;
mod table;

use std::time::Duration;

use crate::harness::{median, Cell};

pub(crate) use curve::run;

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
