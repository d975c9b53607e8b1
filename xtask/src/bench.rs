//! `cargo xtask bench [--quick] [--rounds N] [--keys N] [--footprint-entries N] [--no-cluster]
//! [--no-postgres] [--no-scale] [--scale-sizes N,N,…] [--no-doc]`: side-by-side benchmarks of the
//! stores and their anchors.
//!
//! Builds `crates/session-bench` in release mode (it is not a default member, and `cargo xtask
//! test` never builds it), then starts, all on free loopback ports and without persistence:
//!
//! * a standalone `redis-server`, for every Redis subject and anchor;
//! * a Redis Cluster of 3 masters and 3 replicas (unless `--no-cluster`), for the `RedisStore`
//!   cluster subjects measured beside the standalone ones. Its nodes get
//!   `--cluster-node-timeout 15000` (a node starved of CPU on a busy machine is not failed
//!   over mid-run) and `--client-output-buffer-limit replica 0 0 0` (a replica lagging behind
//!   the pre-fill is not disconnected into a full resync, which forks the master);
//! * a cluster of 3 masters without replicas (unless `--no-scale`), empty, for the scale curve
//!   the binary takes after its rounds: `RedisStore` load and save at 10k, 1M and 5M sessions
//!   (`--quick`: 10k and 200k; `--scale-sizes` to choose). Without replicas, 5M sessions take
//!   ~7 GB instead of ~14; each master gets `--maxmemory` (60 % of the memory available at
//!   start over the three, at most 4 GiB) with `noeviction`, so a fill that outgrows the machine
//!   fails its writes instead of exhausting the memory other processes need;
//! * a PostgreSQL (`testkit_redis::Postgres`: `initdb` in a scratch directory, as an
//!   unprivileged user when root; unless `--no-postgres`), for `SqlStore` on PostgreSQL beside
//!   tower-sessions' `PostgresStore`, `RedisStore` saves with write-behind into it and the
//!   write-behind's throughput. The SQLite subjects need no server: the binary puts their files
//!   in a temporary directory.
//!
//! It runs the benchmark binary against them and stops every server by pid when the binary
//! ends, however it ends (an error, a failed run, Ctrl-C). The binary prints the ratios and
//! every case, and writes `docs/benchmarks.md` (the part between its markers) unless
//! `--no-doc`. A full run takes about 10 minutes after the build; `--quick` (one short round,
//! a small curve) about 2. A benchmark, never a test: it fails only if something could not be
//! run.

use std::fs;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use testkit_redis::{Cluster, RedisServer, RedisTopology, ServerOptions, TopologyOptions};

use crate::{exec, project_root, target_dir, tools};

const USAGE: &str = "usage: cargo xtask bench [--quick] [--rounds N] [--keys N] [--footprint-entries N] \
                     [--no-cluster] [--no-postgres] [--no-scale] [--scale-sizes N,N,…] [--no-doc]\n  \
                     --no-cluster         no Redis Cluster subjects (and no control for the scale curve)\n  \
                     --no-postgres        no PostgreSQL subjects (SqlStore on SQLite still runs)\n  \
                     --no-scale           no scale curve\n  \
                     --scale-sizes LIST   the curve's sizes, e.g. 10k,1M,5M (the default; --quick: 10k,200k)";

/// Masters of the scale curve's cluster.
const SCALE_MASTERS: usize = 3;
/// The most `maxmemory` a scale master gets.
const SCALE_MAXMEMORY_CAP: u64 = 4 << 30;

struct Args {
    /// Arguments passed on to the benchmark binary.
    forward: Vec<String>,
    doc: bool,
    /// Start the 3+3 cluster.
    cluster: bool,
    /// Start the scale curve's cluster.
    scale: bool,
    /// Start a PostgreSQL.
    postgres: bool,
}

/// A count as `--scale-sizes` takes it: `10000`, `10k`, `1M`.
fn valid_count(text: &str) -> bool {
    let digits = text.strip_suffix(['k', 'K', 'm', 'M']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn parse(args: &[String]) -> crate::Result<Args> {
    let mut parsed = Args {
        forward: Vec::new(),
        doc: true,
        cluster: true,
        scale: true,
        postgres: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => parsed.forward.push(flag.clone()),
            "--rounds" | "--keys" | "--footprint-entries" => {
                let value = it.next().ok_or_else(|| format!("{flag} needs a number"))?;
                value
                    .parse::<usize>()
                    .map_err(|e| format!("{flag} {value}: {e}"))?;
                parsed.forward.extend([flag.clone(), value.clone()]);
            }
            "--scale-sizes" => {
                let value = it.next().ok_or_else(|| format!("{flag} needs a list"))?;
                if !value.split(',').all(valid_count) {
                    return Err(format!("{flag} {value}: expected counts such as 10k,1M,5M").into());
                }
                parsed.forward.extend([flag.clone(), value.clone()]);
            }
            "--no-cluster" => parsed.cluster = false,
            "--no-postgres" => parsed.postgres = false,
            "--no-scale" => parsed.scale = false,
            "--no-doc" => parsed.doc = false,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    Ok(parsed)
}

pub(crate) fn run(args: &[String]) -> crate::Result<ExitCode> {
    let parsed = parse(args)?;
    tools::ensure_redis_tools()?;
    if parsed.postgres {
        tools::ensure_postgres()?;
    }
    if testkit_redis::find_program("redis-benchmark").is_none() {
        return Err("redis-benchmark not found on PATH; install it with:\n  \
                    apt-get update && apt-get install -y redis-tools"
            .into());
    }
    exec::install_interrupt_handler();
    let logs = target_dir().join("xtask-logs");
    fs::create_dir_all(&logs)?;

    let began = Instant::now();
    println!("bench: building session-bench (release)…");
    let build_log = logs.join("bench-build.log");
    let _ = fs::remove_file(&build_log);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(project_root())
        .args(["build", "--release", "-p", "session-bench"]);
    let outcome = exec::run_logged(&mut build, &build_log, |_| {})?;
    if !outcome.status.success() {
        for line in &outcome.lines[outcome.lines.len().saturating_sub(40)..] {
            println!("  | {line}");
        }
        return Err(format!("building session-bench failed; log {}", build_log.display()).into());
    }
    println!("bench: built in {:.0}s", began.elapsed().as_secs_f64());

    // Dropped in reverse order when this function returns, whichever way: each stops its
    // servers by pid (the interrupt handler stops them on Ctrl-C).
    let server = RedisServer::start_with(ServerOptions::new())?;
    println!(
        "bench: redis-server on 127.0.0.1:{} (no persistence), pid {}",
        server.port(),
        server.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
    );
    let cluster = if parsed.cluster {
        let cluster = Cluster::start_with(&cluster_options())?;
        println!(
            "bench: Redis Cluster, 3 masters + 3 replicas, on ports {:?} (ready in {:.1}s)",
            cluster.ports(),
            cluster.ready_after().as_secs_f64()
        );
        Some(cluster)
    } else {
        None
    };
    let postgres = if parsed.postgres {
        let postgres = testkit_redis::Postgres::start()?;
        println!(
            "bench: PostgreSQL on 127.0.0.1:{} (fsync off, scratch directory), pid {} (ready in {:.1}s)",
            postgres.port(),
            postgres.pid().map_or_else(|| "?".to_owned(), |p| p.to_string()),
            postgres.ready_after().as_secs_f64()
        );
        Some(postgres)
    } else {
        None
    };
    let scale = if parsed.scale {
        let maxmemory = scale_maxmemory();
        let cluster = Cluster::start_masters(&scale_options(maxmemory), SCALE_MASTERS)?;
        println!(
            "bench: scale-curve cluster, {SCALE_MASTERS} masters without replicas, on ports {:?} (maxmemory {:.1} GiB each)",
            cluster.ports(),
            maxmemory as f64 / f64::from(1u32 << 30)
        );
        Some(cluster)
    } else {
        None
    };

    let mut shown = vec!["cargo xtask bench".to_owned()];
    shown.extend(args.iter().cloned());
    let mut bench = Command::new(target_dir().join("release").join("session-bench"));
    bench
        .current_dir(project_root())
        .args(["run", "--redis-url", &server.url()]);
    if let Some(cluster) = &cluster {
        bench.args(["--cluster-url", &cluster.url()]);
    }
    if let Some(postgres) = &postgres {
        bench.args(["--postgres-url", &postgres.url()]);
    }
    if let Some(scale) = &scale {
        bench.args(["--scale-url", &scale.url()]);
    }
    bench.args(&parsed.forward).args(["--command", &shown.join(" ")]);
    if parsed.doc {
        bench
            .arg("--doc")
            .arg(project_root().join("docs").join("benchmarks.md"));
    }
    let log = logs.join("bench.log");
    let _ = fs::remove_file(&log);
    let outcome = exec::run_logged(&mut bench, &log, |line| println!("{line}"));
    drop(scale);
    drop(postgres);
    drop(cluster);
    drop(server);
    let outcome = outcome?;
    println!(
        "bench: {} in {:.0}s (build included); output in {}",
        if outcome.status.success() {
            "done"
        } else {
            "FAILED"
        },
        began.elapsed().as_secs_f64(),
        log.display()
    );
    Ok(if outcome.status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The 3+3 cluster's options: no failover of a node starved of CPU, no replica disconnected
/// for lagging behind a pre-fill.
fn cluster_options() -> TopologyOptions {
    TopologyOptions::new()
        .ready_timeout(Duration::from_secs(60))
        .arg("--cluster-node-timeout")
        .arg("15000")
        .arg("--client-output-buffer-limit")
        .arg("replica")
        .arg("0")
        .arg("0")
        .arg("0")
}

/// The scale cluster's options: as the 3+3 one, and a memory bound per master.
fn scale_options(maxmemory: u64) -> TopologyOptions {
    TopologyOptions::new()
        .ready_timeout(Duration::from_secs(60))
        .arg("--cluster-node-timeout")
        .arg("15000")
        .arg("--maxmemory")
        .arg(maxmemory.to_string())
        .arg("--maxmemory-policy")
        .arg("noeviction")
}

/// Each scale master's `maxmemory`: 60 % of the memory available now, shared by the masters,
/// at most [`SCALE_MAXMEMORY_CAP`] (and at least 256 MiB).
fn scale_maxmemory() -> u64 {
    let available = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024);
    (available / 10 * 6 / SCALE_MASTERS as u64).clamp(256 << 20, SCALE_MAXMEMORY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn forwards_known_flags_only() {
        let a = parse(&args(&["--quick", "--rounds", "5", "--no-doc"])).unwrap();
        assert_eq!(a.forward, ["--quick", "--rounds", "5"]);
        assert!(!a.doc);
        assert!(a.cluster && a.scale && a.postgres);
        let a = parse(&args(&[
            "--no-scale",
            "--no-cluster",
            "--scale-sizes",
            "10k,1M,5000000",
        ]))
        .unwrap();
        assert_eq!(a.forward, ["--scale-sizes", "10k,1M,5000000"]);
        assert!(!a.cluster && !a.scale && a.doc && a.postgres);
        let a = parse(&args(&["--no-postgres"])).unwrap();
        assert!(!a.postgres && a.cluster && a.forward.is_empty());
        assert!(parse(&args(&["--scale-sizes", "10x"])).is_err());
        assert!(parse(&args(&["--scale-sizes", "1M,"])).is_err());
        assert!(parse(&args(&["--rounds"])).is_err());
        assert!(parse(&args(&["--rounds", "x"])).is_err());
        assert!(parse(&args(&["--frobnicate"])).is_err());
    }
}
