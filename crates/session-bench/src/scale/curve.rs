//! Taking the curve: the cluster filled size after size, each size measured in slices paired
//! with the control's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::Record;
use session_core::{Namespace, SessionStore};
use session_redis::{RedisConfig, RedisStore};

use super::fill::{fill, Filler};
use super::keys::key_for;
use super::memory::{gib, mem_available};
use super::ops::{ScaleLoad, ScaleSave};
use super::table::point_line;
use super::{NodePoint, OpCurve, ScaleOptions, ScalePoint, ScaleReport, FIRST_GUESS, RESERVE, TASKS};
use crate::cases::{Case, NAMESPACE, POOL};
use crate::harness::{run_cell, Cell, Op, Plan};
use crate::nodes::NodeConn;

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
