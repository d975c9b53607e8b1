//! `cargo xtask bench [--quick] [--rounds N] [--keys N] [--footprint-entries N] [--no-doc]`:
//! side-by-side benchmarks of the stores and their anchors (SPEC §9).
//!
//! Builds `crates/session-bench` in release mode (it is not a default member, and `cargo xtask
//! test` never builds it), starts a throw-away `redis-server` on a free loopback port (no
//! persistence), runs the benchmark binary against it and stops the server by pid. The binary
//! prints the ratios and every case, and writes `docs/benchmarks.md` (the part between its
//! markers) unless `--no-doc`. A full run takes 3–5 minutes after the build; `--quick` (one
//! short round) under a minute. A benchmark, never a test: it fails only if something could
//! not be run.

use std::fs;
use std::process::{Command, ExitCode};
use std::time::Instant;

use testkit_redis::{RedisServer, ServerOptions};

use crate::{exec, project_root, target_dir, tools};

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--rounds N] [--keys N] [--footprint-entries N] [--no-doc]";

struct Args {
    /// Arguments passed on to the benchmark binary.
    forward: Vec<String>,
    doc: bool,
}

fn parse(args: &[String]) -> crate::Result<Args> {
    let mut parsed = Args {
        forward: Vec::new(),
        doc: true,
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

    let server = RedisServer::start_with(ServerOptions::new())?;
    println!(
        "bench: redis-server on 127.0.0.1:{} (no persistence), pid {}",
        server.port(),
        server.pid().map_or_else(|| "?".to_owned(), |p| p.to_string())
    );

    let mut shown = vec!["cargo xtask bench".to_owned()];
    shown.extend(args.iter().cloned());
    let mut bench = Command::new(target_dir().join("release").join("session-bench"));
    bench
        .current_dir(project_root())
        .args(["run", "--redis-url", &server.url()])
        .args(&parsed.forward)
        .args(["--command", &shown.join(" ")]);
    if parsed.doc {
        bench
            .arg("--doc")
            .arg(project_root().join("docs").join("benchmarks.md"));
    }
    let log = logs.join("bench.log");
    let _ = fs::remove_file(&log);
    let outcome = exec::run_logged(&mut bench, &log, |line| println!("{line}"));
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
        assert!(parse(&args(&["--rounds"])).is_err());
        assert!(parse(&args(&["--rounds", "x"])).is_err());
        assert!(parse(&args(&["--frobnicate"])).is_err());
    }
}
