//! `session-bench`: the benchmark behind `cargo xtask bench`. Run it through xtask,
//! which builds it in release mode, starts a throw-away `redis-server`, a 3+3 Redis Cluster and
//! an empty cluster of 3 masters, and passes their addresses:
//!
//! ```text
//! session-bench run --redis-url redis://127.0.0.1:PORT [--cluster-url redis-cluster://…]
//!                   [--postgres-url postgres://…] [--scale-url redis-cluster://…] [--no-scale]
//!                   [--scale-sizes 10k,1M,5M] [--quick] [--rounds N] [--doc PATH] [--command TEXT]
//! session-bench footprint memory|dashmap ENTRIES PAYLOAD_BYTES      (used by `run`, in a child process)
//! ```
//!
//! With `--cluster-url` (a 3+3 Redis Cluster) it adds `RedisStore` cluster subjects, measured
//! beside the standalone ones; with `--scale-url` (an empty cluster of masters) it takes, after
//! the rounds, the scale curve: load and save at 10k, 1M and 5M sessions (`scale/`). With
//! `--postgres-url` it adds `SqlStore` on PostgreSQL beside tower-sessions' `PostgresStore`,
//! `RedisStore` saves with write-behind into PostgreSQL and the write-behind's throughput; the
//! SQLite subjects (`SqlStore` beside tower-sessions' `SqliteStore`, the write-behind into
//! SQLite) run on files in a temporary directory (`sql.rs`).
//!
//! It measures, on one ~1 KiB session payload, a 100k-key space and 1 and 64 concurrent Tokio
//! tasks, the ops/s and p50/p99 latency of this workspace's stores and of their anchors (raw
//! fred, `redis-benchmark`, a `DashMap`, tower-sessions' stores), and from `INFO commandstats`
//! the server's time per `SET` and per `save_if` script call; and the web layer: a request
//! through `SessionLayer` against one through tower-sessions' `SessionManagerLayer`, over one
//! `MemoryStore` (`web.rs`). Cases are interleaved and repeated; medians of the rounds (and of
//! the per-round ratios) are reported. It is a benchmark, never a test: nothing here asserts a
//! timing.

#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary: a failed set-up ends the run with its message"
)]

mod cases;
mod codec;
mod commandstats;
mod footprint;
mod harness;
mod near;
mod nodes;
mod payload;
mod principals;
mod redis_benchmark;
mod report;
mod scale;
mod secure;
mod sql;
mod web;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cases::{Case, Group, Keys};
use crate::harness::Plan;
use crate::report::{ClusterCheck, Results, Run};
use crate::scale::ScaleOptions;

/// Options of `run`.
#[derive(Debug, Clone)]
struct Options {
    redis_url: String,
    quick: bool,
    rounds: usize,
    keyspace: usize,
    footprint_entries: usize,
    doc: Option<std::path::PathBuf>,
    command: String,
    /// Only cases whose name contains one of these (for working on one store); no report file.
    only: Vec<String>,
    footprint: bool,
    /// A 3+3 Redis Cluster for the cluster subjects.
    cluster_url: Option<String>,
    /// A PostgreSQL for the PostgreSQL subjects (`sql.rs`).
    postgres_url: Option<String>,
    /// An empty cluster of masters for the scale curve.
    scale_url: Option<String>,
    /// Take the scale curve (when there is a `scale_url`).
    scale: bool,
    /// Its sizes; empty: 10k, 1M, 5M (`--quick`: 10k, 200k).
    scale_sizes: Vec<usize>,
}

const USAGE: &str = "usage: session-bench run --redis-url URL [--cluster-url URL] [--postgres-url URL] [--scale-url URL] [--no-scale] \
                     [--scale-sizes N,N,…] [--quick] [--rounds N] [--keys N] [--footprint-entries N] [--doc PATH] \
                     [--command TEXT] [--only PREFIX|…] [--no-footprint]\n       \
                     session-bench scale --scale-url URL [--scale-sizes N,N,…] [--quick]\n       \
                     session-bench footprint memory|dashmap ENTRIES PAYLOAD_BYTES";

/// `10000`, `10k`, `1M`.
fn parse_count(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, factor) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        _ => (t, 1),
    };
    digits
        .parse::<usize>()
        .map(|n| n * factor)
        .map_err(|e| format!("`{text}`: {e}"))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        redis_url: String::new(),
        quick: false,
        rounds: 0,
        keyspace: 100_000,
        footprint_entries: 0,
        doc: None,
        command: "session-bench run".to_owned(),
        only: Vec::new(),
        footprint: true,
        cluster_url: None,
        postgres_url: None,
        scale_url: None,
        scale: true,
        scale_sizes: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis-url" => o.redis_url = value()?,
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--keys" => o.keyspace = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--footprint-entries" => {
                o.footprint_entries = value()?
                    .parse()
                    .map_err(|e| format!("--footprint-entries: {e}"))?
            }
            "--doc" => o.doc = Some(value()?.into()),
            "--command" => o.command = value()?,
            "--only" => o.only.extend(value()?.split('|').map(str::to_owned)),
            "--no-footprint" => o.footprint = false,
            "--cluster-url" => o.cluster_url = Some(value()?),
            "--postgres-url" => o.postgres_url = Some(value()?),
            "--scale-url" => o.scale_url = Some(value()?),
            "--no-scale" => o.scale = false,
            "--scale-sizes" => {
                o.scale_sizes = value()?
                    .split(',')
                    .map(parse_count)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--scale-sizes: {e}"))?;
                o.scale_sizes.sort_unstable();
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if o.redis_url.is_empty() && o.scale_url.is_none() && !o.only.iter().all(|f| f.starts_with("mem:")) {
        return Err(format!(
            "--redis-url is required (unless every --only filter starts with mem:, or for `scale`)\n{USAGE}"
        ));
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 1 } else { 3 };
    }
    if o.footprint_entries == 0 {
        o.footprint_entries = if o.quick { 200_000 } else { 1_000_000 };
    }
    if o.scale_sizes.is_empty() {
        o.scale_sizes = if o.quick {
            vec![10_000, 200_000]
        } else {
            vec![10_000, 1_000_000, 5_000_000]
        };
    }
    o.keyspace = o.keyspace.max(cases::MANY);
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("footprint") => footprint_command(&args[1..]),
        Some("run") => parse(&args[1..]).and_then(run),
        Some("scale") => parse(&args[1..]).and_then(scale_command),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `scale --scale-url URL [--scale-sizes LIST] [--quick]`: the scale curve alone, without a
/// control (for working on it; nothing else runs and no report file is written).
fn scale_command(options: Options) -> Result<(), String> {
    let url = options
        .scale_url
        .clone()
        .ok_or_else(|| format!("scale needs --scale-url\n{USAGE}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let record = payload::record(payload::payload());
    let report = runtime.block_on(scale::run(&url, &record, &scale_options(&options), None))?;
    print!("{}", report.table(false));
    Ok(())
}

/// The scale curve's sizes and slices.
fn scale_options(options: &Options) -> ScaleOptions {
    let (slices, slice) = if options.quick {
        (4, Duration::from_millis(300))
    } else {
        (6, Duration::from_millis(500))
    };
    ScaleOptions {
        sizes: options.scale_sizes.clone(),
        slices,
        slice,
    }
}

fn footprint_command(args: &[String]) -> Result<(), String> {
    let [subject, n, len] = args else {
        return Err(USAGE.to_owned());
    };
    let n: usize = n.parse().map_err(|e| format!("entries: {e}"))?;
    let len: usize = len.parse().map_err(|e| format!("payload bytes: {e}"))?;
    footprint::child(subject, n, len)
}

/// How long each cell runs.
fn plan(case: &Case, options: &Options, warmup: bool) -> Plan {
    let secs = match (warmup, options.quick, case.group, case.tasks > 1) {
        (true, true, _, _) => 0.05,
        (true, false, _, _) => 0.1,
        (false, true, Group::Memory, _) => 0.15,
        (false, true, Group::Redis, false) => 0.15,
        (false, true, Group::Redis, true) => 0.3,
        (false, false, Group::Memory, _) => 0.5,
        (false, false, Group::Redis, false) => 0.5,
        (false, false, Group::Redis, true) => 1.0,
        (false, true, Group::Sql, false) => 0.15,
        (false, true, Group::Sql, true) => 0.3,
        (false, false, Group::Sql, false) => 0.5,
        (false, false, Group::Sql, true) => 1.0,
    };
    Plan {
        tasks: case.tasks,
        duration: Duration::from_secs_f64(secs),
        keyspace: options.keyspace,
        sample_every: if case.group == Group::Memory { 16 } else { 1 },
    }
}

/// Slices per side of a paired ratio, and how long each runs.
fn slicing(options: &Options) -> (usize, Duration) {
    if options.quick {
        (4, Duration::from_millis(150))
    } else {
        (8, Duration::from_millis(250))
    }
}

/// One round's figure of a target ratio: its two cases run in alternating slices (A B B A A B B
/// A …), so that slow and fast moments of a shared machine fall on both sides alike; the ratio
/// of their summed rates (items per second of `a` over those of `b`).
async fn paired(a: &Case, b: &Case, options: &Options) -> f64 {
    let (slices, length) = slicing(options);
    let slice = |case: &Case| Plan {
        duration: length,
        ..plan(case, options, false)
    };
    let (mut sum_a, mut sum_b) = (0.0, 0.0);
    for i in 0..slices {
        let a_first = matches!(i % 4, 0 | 3);
        let (first, second) = if a_first { (a, b) } else { (b, a) };
        let x = first.run(slice(first)).await.ops_per_sec;
        let y = second.run(slice(second)).await.ops_per_sec;
        let (ra, rb) = if a_first { (x, y) } else { (y, x) };
        sum_a += ra;
        sum_b += rb;
    }
    sum_a * f64::from(a.items) / (sum_b * f64::from(b.items))
}

fn run(options: Options) -> Result<(), String> {
    let began = Instant::now();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let payload = payload::payload();
    let record = payload::record(payload.clone());
    println!(
        "session-bench: payload {} bytes (bincode; envelope {}), {} keys, tasks 1 and 64, {} round(s){}",
        payload.len(),
        record.encoded_len(),
        options.keyspace,
        options.rounds,
        if options.quick { ", --quick" } else { "" }
    );

    // Memory per session first, in child processes, before this one holds gigabytes.
    println!(
        "memory per session: {} entries in a child process…",
        options.footprint_entries
    );
    let (memory_footprint, dashmap_footprint) = if options.footprint {
        (
            footprint::measure("memory", options.footprint_entries, payload.len())?,
            footprint::measure("dashmap", options.footprint_entries, payload.len())?,
        )
    } else {
        Default::default()
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let task_counts = [1usize, 64];
    let keys = Keys::new(options.keyspace);
    println!("pre-filling the in-memory subjects and Redis…");
    let with_redis = !options.redis_url.is_empty();
    let (mut cases, redis_memory, server_stats, near_figures, sql) = runtime.block_on(async {
        let mut all = cases::memory_cases(&keys, &record, &task_counts).await;
        all.extend(web::web_cases(keys.len(), &task_counts).await);
        let mut memory = cases::RedisMemory::default();
        let mut stats = None;
        let mut near = None;
        if with_redis {
            let (redis, m, s) = cases::redis_cases(&options.redis_url, &keys, &record, &task_counts).await;
            all.extend(redis);
            memory = m;
            stats = Some(s);
            let (cases, figures) = near::near_cases(&options.redis_url, &keys, &record, &task_counts).await;
            all.extend(cases);
            near = Some(figures);
        }
        if let Some(url) = &options.cluster_url {
            all.extend(cases::cluster_cases(url, &keys, &record, &task_counts).await);
        }
        let url = with_redis.then_some(options.redis_url.as_str());
        all.extend(secure::secure_cases(url, &keys, &record, &task_counts).await);
        all.extend(principals::principal_cases(url, &task_counts).await);
        let mut sql = sql::sql_cases(
            options.postgres_url.as_deref(),
            with_redis.then_some(options.redis_url.as_str()),
            &options.only,
            &keys,
            &record,
            &task_counts,
        )
        .await;
        all.append(&mut sql.cases);
        (all, memory, stats, near, sql)
    });
    if !options.only.is_empty() {
        // `mem:` selects in-memory cases only (no Redis needed).
        cases.retain(|c| {
            options
                .only
                .iter()
                .any(|f| c.id().starts_with(f.strip_prefix("mem:").unwrap_or(f)))
        });
    }
    let bench = if with_redis && options.only.is_empty() {
        Some(redis_benchmark::Target::from_url(
            &options.redis_url,
            record.encoded_len(),
        )?)
    } else {
        None
    };
    // The cells whose server-side cost is read (those the filter kept).
    let probes: Vec<(&commandstats::Probe, &Case)> = match &server_stats {
        Some(_) => commandstats::PROBES
            .iter()
            .filter_map(|p| Some((p, cases.iter().find(|c| c.id() == p.case)?)))
            .collect(),
        None => Vec::new(),
    };
    let mut results = Results::default();
    println!(
        "{} cases × {} round(s) (+ INFO commandstats cells, redis-benchmark and codecs each round); set-up took {:.0}s",
        cases.len(),
        options.rounds,
        began.elapsed().as_secs_f64()
    );

    // Warm-up pass, not recorded: connections, scripts cached, allocator and tables settled.
    runtime.block_on(async {
        for case in &cases {
            case.run(plan(case, &options, true)).await;
        }
    });

    let mut bench_sizes = redis_benchmark::Sizes::new(options.quick);
    for round in 0..options.rounds {
        let started = Instant::now();
        // Interleaved: every case once per round; odd rounds run the list backwards.
        let order: Vec<&Case> = if round % 2 == 0 {
            cases.iter().collect()
        } else {
            cases.iter().rev().collect()
        };
        runtime.block_on(async {
            for case in order {
                let cell = case.run(plan(case, &options, false)).await;
                if !options.only.is_empty() {
                    // Working on a few cases: each cell as it is measured (the report has medians).
                    println!(
                        "  {}: {} ops/s, p99 {:.1} µs{}",
                        case.id(),
                        report::fmt_ops(cell.ops_per_sec),
                        cell.p99_us,
                        if cell.errors > 0 {
                            format!(" ({} errors)", cell.errors)
                        } else {
                            String::new()
                        }
                    );
                }
                results.record(case, cell);
            }
            for (label, num, den) in report::paired_defs() {
                let find = |id: &str| cases.iter().find(|c| c.id() == id);
                if let (Some(a), Some(b)) = (find(num), find(den)) {
                    let ratio = paired(a, b, &options).await;
                    if !options.only.is_empty() {
                        println!("  paired: {label}: {ratio:.2}");
                    }
                    results.record_paired(label, ratio);
                }
            }
            for flush in &sql.flushes {
                let cell = flush.measure().await;
                if !options.only.is_empty() {
                    println!(
                        "  {}: {} sessions/s ({} sessions, batch {}{})",
                        flush.label,
                        report::fmt_ops(cell.sessions_per_sec),
                        cell.sessions,
                        cell.batch_size,
                        if cell.failed_flushes > 0 {
                            format!(", {} failed flushes", cell.failed_flushes)
                        } else {
                            String::new()
                        }
                    );
                }
                results.record_flush(flush.label, cell);
            }
        });
        if let Some(stats) = &server_stats {
            for &(probe, case) in &probes {
                let (cell, stat) =
                    runtime.block_on(stats.measure(case, plan(case, &options, false), probe.command))?;
                results.record_server(probe.label, stat, cell.errors);
            }
        }
        if let Some(bench) = &bench {
            for (name, cell) in bench.run(&mut bench_sizes)? {
                results.record_named(&name, "redis-benchmark", 50, 1, cell);
            }
        }
        let codec_time = Duration::from_millis(if options.quick { 100 } else { 300 });
        for (name, kind) in codec::CODECS {
            results.record_codec(name, codec::measure(kind, codec_time));
        }
        println!(
            "round {}/{} done in {:.0}s",
            round + 1,
            options.rounds,
            started.elapsed().as_secs_f64()
        );
    }
    // The scale curve, after the rounds, with the 3+3 cluster's load and save as its control.
    let scale = match (&options.scale_url, options.scale && options.only.is_empty()) {
        (Some(url), true) => {
            let scale_options = scale_options(&options);
            let slice = scale_options.slice;
            let control_of = |op: &str| {
                let case = cases
                    .iter()
                    .find(|c| c.id() == format!("{} {op} @64", cases::CLUSTER_SUBJECT))?;
                let plan = Plan {
                    duration: slice,
                    ..plan(case, &options, false)
                };
                Some((case, plan))
            };
            let control = control_of("load").zip(control_of("save")).map(|(l, s)| [l, s]);
            println!("scale curve: {:?} sessions on {url}…", scale_options.sizes);
            let started = Instant::now();
            let report = runtime.block_on(scale::run(url, &record, &scale_options, control));
            println!("scale curve took {:.0}s", started.elapsed().as_secs_f64());
            Some(report)
        }
        _ => None,
    };
    // What the cluster's nodes say after all that: keys per master, redirections answered.
    let cluster = options
        .cluster_url
        .as_ref()
        .and_then(|url| match runtime.block_on(cluster_check(url)) {
            Ok(check) => Some(check),
            Err(e) => {
                eprintln!("session-bench: reading the cluster's nodes after the run: {e}");
                None
            }
        });
    let near = near_figures.map(|f| f.lines()).unwrap_or_default();
    for line in &near {
        println!("{line}");
    }
    let sql_lines = sql.lines();
    for line in &sql_lines {
        println!("{line}");
    }
    let (postgres_version, sqlite_version) = (sql.postgres_version.clone(), sql.sqlite_version.clone());
    drop(probes);
    drop(server_stats);
    drop(cases);
    // The SQL subjects' tables dropped, their files removed.
    runtime.block_on(sql.teardown());
    runtime.shutdown_timeout(Duration::from_secs(2));

    let run = Run {
        results,
        rounds: options.rounds,
        quick: options.quick,
        keyspace: options.keyspace,
        payload_len: payload.len(),
        envelope_len: record.encoded_len(),
        memory_footprint,
        dashmap_footprint,
        redis_memory,
        command: options.command.clone(),
        elapsed: began.elapsed(),
        slices: slicing(&options),
        cluster,
        scale,
        near,
        sql: sql_lines,
        postgres_version,
        sqlite_version,
    };
    print!("{}", run.console());
    if let Some(path) = options.doc.as_ref().filter(|_| options.only.is_empty()) {
        run.write_doc(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Keys per master and the `MOVED`/`ASK` errors every node of the cluster at `url` answered.
async fn cluster_check(url: &str) -> Result<ClusterCheck, String> {
    let mut check = ClusterCheck::default();
    for node in nodes::NodeConn::connect_all(url).await? {
        let (moved, ask) = node.redirections().await?;
        check.moved += moved;
        check.ask += ask;
        if node.is_master().await? {
            check.masters.push((node.addr.clone(), node.dbsize().await?));
        } else {
            check.replicas += 1;
        }
    }
    Ok(check)
}
