//! `session-bench`: the benchmark behind `cargo xtask bench` (SPEC §9). Run it through xtask,
//! which builds it in release mode, starts a throw-away `redis-server` and passes its address:
//!
//! ```text
//! session-bench run --redis-url redis://127.0.0.1:PORT [--quick] [--rounds N] [--doc PATH] [--command TEXT]
//! session-bench footprint memory|dashmap ENTRIES PAYLOAD_BYTES      (used by `run`, in a child process)
//! ```
//!
//! It measures, on one ~1 KiB session payload, a 100k-key space and 1 and 64 concurrent Tokio
//! tasks, the ops/s and p50/p99 latency of this workspace's stores and of their anchors (raw
//! fred, `redis-benchmark`, a `DashMap`, tower-sessions' stores), and from `INFO commandstats`
//! the server's time per `SET` and per `save_if` script call. Cases are interleaved and
//! repeated; medians of the rounds (and of the per-round ratios) are reported. It is a
//! benchmark, never a test: nothing here asserts a timing.

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
mod payload;
mod redis_benchmark;
mod report;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cases::{Case, Group, Keys};
use crate::harness::Plan;
use crate::report::{Results, Run};

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
}

const USAGE: &str = "usage: session-bench run --redis-url URL [--quick] [--rounds N] [--keys N] \
                     [--footprint-entries N] [--doc PATH] [--command TEXT] [--only PREFIX|…] [--no-footprint]\n       \
                     session-bench footprint memory|dashmap ENTRIES PAYLOAD_BYTES";

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
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if o.redis_url.is_empty() && !o.only.iter().all(|f| f.starts_with("mem:")) {
        return Err(format!(
            "--redis-url is required (unless every --only filter starts with mem:)\n{USAGE}"
        ));
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 1 } else { 3 };
    }
    if o.footprint_entries == 0 {
        o.footprint_entries = if o.quick { 200_000 } else { 1_000_000 };
    }
    o.keyspace = o.keyspace.max(cases::MANY);
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("footprint") => footprint_command(&args[1..]),
        Some("run") => parse(&args[1..]).and_then(run),
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
    };
    Plan {
        tasks: case.tasks,
        duration: Duration::from_secs_f64(secs),
        keyspace: options.keyspace,
        sample_every: if case.group == Group::Memory { 16 } else { 1 },
    }
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
    let (mut cases, redis_memory, server_stats) = runtime.block_on(async {
        let mut all = cases::memory_cases(&keys, &record, &task_counts).await;
        let mut memory = cases::RedisMemory::default();
        let mut stats = None;
        if with_redis {
            let (redis, m, s) = cases::redis_cases(&options.redis_url, &keys, &record, &task_counts).await;
            all.extend(redis);
            memory = m;
            stats = Some(s);
        }
        (all, memory, stats)
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
                results.record(case, cell);
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
    drop(probes);
    drop(server_stats);
    drop(cases);
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
    };
    print!("{}", run.console());
    if let Some(path) = options.doc.as_ref().filter(|_| options.only.is_empty()) {
        run.write_doc(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
