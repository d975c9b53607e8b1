//! `cargo xtask test`: the whole matrix, one line per step, then a summary.
//!
//! Steps, in order: `fmt`, `clippy` and `doc` (cell `lint`), `unit` (`cargo test
//! --workspace` without Redis), one cell per topology (`standalone`,
//! `cluster`, `sentinel`, `tls`) and `faults`.
//!
//! A topology cell starts that topology, then runs every test target named
//! `redis*` (`crates/*/tests/redis*.rs`) with the topology's variables,
//! `SESSION_TEST_TOPOLOGY` and `SESSION_TEST_REQUIRE_REDIS=1` set (see
//! `testkit_redis::env`). The `faults` cell runs every `faults*` target with
//! `SESSION_TEST_FAULTS=1`, one test at a time and `--nocapture`, and
//! forwards the lines those tests print starting with `SCENARIO` or
//! `FIGURES`. Full output goes to `target/xtask-logs/<step>.log`; on a
//! failure the command and the last 60 lines are shown.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use testkit_redis::{Topology, TopologyOptions, FAULTS_ENV, REQUIRE_REDIS_ENV};

use crate::exec::{self, Counts};
use crate::{project_root, target_dir, tools};

/// The benchmark crate: built only by `cargo xtask bench`, never by a test step, so its anchors
/// (tower-sessions, dashmap) are never compiled here.
const BENCH_PACKAGE: &str = "session-bench";

/// Lines of output shown when a step fails.
const TAIL_LINES: usize = 60;

/// One step of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Fmt,
    Clippy,
    Doc,
    Unit,
    Redis(Topology),
    Faults,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::Fmt,
        Step::Clippy,
        Step::Doc,
        Step::Unit,
        Step::Redis(Topology::Standalone),
        Step::Redis(Topology::Cluster),
        Step::Redis(Topology::Sentinel),
        Step::Redis(Topology::Tls),
        Step::Faults,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Doc => "doc",
            Step::Unit => "unit",
            Step::Redis(topology) => topology.name(),
            Step::Faults => "faults",
        }
    }

    /// Whether the step starts redis-server (or runs tests that may).
    fn needs_redis(self) -> bool {
        !matches!(self, Step::Fmt | Step::Clippy | Step::Doc)
    }
}

/// The steps a `--only` name selects (`lint` is fmt and clippy).
fn cell(name: &str) -> Option<Vec<Step>> {
    match name {
        "lint" => Some(vec![Step::Fmt, Step::Clippy, Step::Doc]),
        "redis" => Some(Topology::ALL.into_iter().map(Step::Redis).collect()),
        _ => Step::ALL.into_iter().find(|s| s.name() == name).map(|s| vec![s]),
    }
}

const CELLS: &str = "lint, fmt, clippy, doc, unit, standalone, cluster, sentinel, tls, faults, redis";

struct Options {
    keep_going: bool,
    steps: BTreeSet<Step>,
}

fn parse(args: &[String]) -> crate::Result<Options> {
    let mut keep_going = false;
    let mut skip = BTreeSet::new();
    let mut only: Option<BTreeSet<Step>> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keep-going" => keep_going = true,
            "--skip-fmt" => {
                skip.insert(Step::Fmt);
            }
            "--skip-clippy" => {
                skip.insert(Step::Clippy);
            }
            "--only" => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("--only needs a cell: {CELLS}"))?;
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let steps = cell(name).ok_or_else(|| format!("unknown cell `{name}`; cells: {CELLS}"))?;
                    only.get_or_insert_with(BTreeSet::new).extend(steps);
                }
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: cargo xtask test [--keep-going] [--skip-fmt] [--skip-clippy] \
                     [--only <cell>[,<cell>…]]\ncells: {CELLS}"
                )
                .into())
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let steps = only
        .unwrap_or_else(|| Step::ALL.into_iter().collect())
        .into_iter()
        .filter(|s| !skip.contains(s))
        .collect();
    Ok(Options { keep_going, steps })
}

/// What one step did.
struct Report {
    ok: bool,
    counts: Option<Counts>,
    note: String,
    failure: Option<Failure>,
}

/// What to show when a step failed.
struct Failure {
    command: Option<String>,
    log: PathBuf,
    tail: Vec<String>,
}

pub(crate) fn run(args: &[String]) -> crate::Result<ExitCode> {
    let options = parse(args)?;
    if options.steps.iter().any(|s| s.needs_redis()) {
        tools::ensure_redis_tools()?;
    }
    exec::install_interrupt_handler();
    let logs = target_dir().join("xtask-logs");
    fs::create_dir_all(&logs)?;

    let began = Instant::now();
    let mut total = Counts::default();
    let mut failed = Vec::new();
    let mut ran = 0;
    for &step in &options.steps {
        let started = Instant::now();
        let log = logs.join(format!("{}.log", step.name()));
        let _ = fs::remove_file(&log);
        let report = run_step(step, &log);
        ran += 1;
        print_report(step, &report, started.elapsed());
        if let Some(counts) = report.counts {
            total.add(counts);
        }
        if !report.ok {
            failed.push(step.name());
            if !options.keep_going {
                println!("stopping at the first failure (--keep-going runs the rest)");
                break;
            }
        }
    }

    let elapsed = began.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!("xtask test: {ran} steps ok in {elapsed:.1}s");
    } else {
        println!(
            "xtask test: {} of {ran} steps FAILED ({}) in {elapsed:.1}s; logs in {}",
            failed.len(),
            failed.join(", "),
            logs.display()
        );
    }
    let skipped = if total.ignored > 0 {
        format!(", {} skipped", total.ignored)
    } else {
        String::new()
    };
    println!("tests: {} passed, {} failed{skipped}", total.passed, total.failed);
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(step: Step, report: &Report, elapsed: Duration) {
    let mut line = format!(
        "{:<11}{:<7}{:>7.1}s",
        step.name(),
        if report.ok { "ok" } else { "FAILED" },
        elapsed.as_secs_f64()
    );
    if let Some(c) = report.counts {
        let _ = write!(line, "  {} passed, {} failed", c.passed, c.failed);
        if c.ignored > 0 {
            let _ = write!(line, ", {} ignored", c.ignored);
        }
    }
    if !report.note.is_empty() {
        let _ = write!(line, "  ({})", report.note);
    }
    println!("{line}");
    if let Some(failure) = &report.failure {
        if let Some(command) = &failure.command {
            println!("  command: {command}");
        }
        println!("  log: {}", failure.log.display());
        for text in &failure.tail {
            println!("  | {text}");
        }
    }
}

fn run_step(step: Step, log: &Path) -> Report {
    match step {
        Step::Fmt => cargo_step(cargo(&["fmt", "--all", "--", "--check"]), log, false, |_| {}),
        Step::Clippy => cargo_step(
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                BENCH_PACKAGE,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            log,
            false,
            |_| {},
        ),
        Step::Doc => {
            let mut command = cargo(&["doc", "--workspace", "--exclude", BENCH_PACKAGE, "--no-deps"]);
            command.env("RUSTDOCFLAGS", "-D warnings");
            cargo_step(command, log, false, |_| {})
        }
        Step::Unit => {
            let mut command = test_command(&["test", "--workspace", "--exclude", BENCH_PACKAGE]);
            command.env(REQUIRE_REDIS_ENV, "1");
            // The per-topology suites (modules `standalone::`, `cluster::`, …) run in their cells.
            command.arg("--").args(skip_topologies(None));
            cargo_step(command, log, true, |_| {})
        }
        Step::Redis(topology) => redis_step(topology, log),
        Step::Faults => faults_step(log),
    }
}

fn redis_step(topology: Topology, log: &Path) -> Report {
    let targets = match test_targets("redis") {
        Ok(targets) => targets,
        Err(e) => return error_report(format!("cannot list test targets: {e}"), log),
    };
    let server = match testkit_redis::start(topology, &TopologyOptions::new()) {
        Ok(server) => server,
        Err(e) => {
            let _ = fs::write(log, format!("starting {topology} failed: {e}\n"));
            return error_report(format!("starting {topology} failed: {e}"), log);
        }
    };
    let ready = format!("ready in {:.1}s", server.ready_after().as_secs_f64());
    if targets.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: format!("{ready}; no redis* test targets yet"),
            failure: None,
        };
    }
    let mut command = test_command(&["test"]);
    add_targets(&mut command, &targets);
    command.envs(server.env()).env(REQUIRE_REDIS_ENV, "1");
    // Only this topology's suites, so the counts are of tests that ran against it.
    command.arg("--").args(skip_topologies(Some(topology)));
    let mut report = cargo_step(command, log, true, |_| {});
    report.note = if report.note.is_empty() {
        ready
    } else {
        format!("{ready}; {}", report.note)
    };
    drop(server);
    report
}

fn faults_step(log: &Path) -> Report {
    let targets = match test_targets("faults") {
        Ok(targets) => targets,
        Err(e) => return error_report(format!("cannot list test targets: {e}"), log),
    };
    if targets.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: "no faults* test targets yet".to_owned(),
            failure: None,
        };
    }
    let mut command = test_command(&["test"]);
    add_targets(&mut command, &targets);
    command.args(["--", "--test-threads=1", "--nocapture"]);
    command.env(FAULTS_ENV, "1").env(REQUIRE_REDIS_ENV, "1");
    cargo_step(command, log, true, |line| {
        if let Some(figures) = figure_line(line) {
            println!("{figures}");
        }
    })
}

/// A `SCENARIO …` or `FIGURES …` line a fault test printed. With
/// `--nocapture` the first line a test prints follows libtest's
/// `test name ... ` on the same line, so that prefix is dropped.
fn figure_line(line: &str) -> Option<&str> {
    let text = match line.strip_prefix("test ") {
        Some(rest) => rest.split_once(" ... ").map_or(line, |(_, after)| after),
        None => line,
    };
    (text.starts_with("SCENARIO") || text.starts_with("FIGURES")).then_some(text)
}

/// Runs a cargo command to completion and judges it by its exit status.
fn cargo_step(mut command: Command, log: &Path, tests: bool, on_line: impl FnMut(&str)) -> Report {
    match exec::run_logged(&mut command, log, on_line) {
        Ok(outcome) => {
            let ok = outcome.status.success();
            Report {
                ok,
                counts: tests.then(|| Counts::parse(&outcome.lines)),
                note: if tests {
                    conformance_note(&outcome.lines)
                } else {
                    String::new()
                },
                failure: (!ok).then(|| Failure {
                    command: Some(exec::display(&command)),
                    log: log.to_path_buf(),
                    tail: outcome.lines[outcome.lines.len().saturating_sub(TAIL_LINES)..].to_vec(),
                }),
            }
        }
        Err(e) => error_report(e.to_string(), log),
    }
}

/// libtest arguments that skip the per-topology test modules of every
/// topology but `keep`.
fn skip_topologies(keep: Option<Topology>) -> Vec<String> {
    Topology::ALL
        .into_iter()
        .filter(|t| Some(*t) != keep)
        .flat_map(|t| ["--skip".to_owned(), format!("{}::", t.name())])
        .collect()
}

/// `conformance: memory_conformance 56 passed, …` for every test target whose
/// name holds `conformance`, from cargo's `Running tests/…` and `test result:` lines.
fn conformance_note(lines: &[String]) -> String {
    let mut current: Option<String> = None;
    let mut parts = Vec::new();
    for line in lines {
        let text = line.trim();
        if let Some(rest) = text.strip_prefix("Running ") {
            current = rest
                .split_whitespace()
                .next()
                .and_then(|path| path.rsplit('/').next())
                .and_then(|file| file.strip_suffix(".rs"))
                .filter(|stem| stem.contains("conformance"))
                .map(str::to_owned);
        } else if text.starts_with("test result:") {
            if let Some(stem) = current.take() {
                let counts = Counts::parse(std::slice::from_ref(line));
                if counts.passed + counts.failed > 0 {
                    parts.push(format!(
                        "{stem} {} passed, {} failed",
                        counts.passed, counts.failed
                    ));
                }
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("conformance: {}", parts.join("; "))
    }
}

fn error_report(message: String, log: &Path) -> Report {
    Report {
        ok: false,
        counts: None,
        note: String::new(),
        failure: Some(Failure {
            command: None,
            log: log.to_path_buf(),
            tail: message.lines().map(str::to_owned).collect(),
        }),
    }
}

/// `cargo <args>` in the project root.
fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(project_root());
    command
}

/// A `cargo test` command whose environment has no `SESSION_*` variable
/// (neither Redis URLs nor store configuration) unless the step sets it.
fn test_command(args: &[&str]) -> Command {
    let mut command = cargo(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SESSION_") {
            command.env_remove(key);
        }
    }
    command
}

fn add_targets(command: &mut Command, targets: &[(String, String)]) {
    for (package, target) in targets {
        command.args(["-p", package, "--test", target]);
    }
}

/// `(package, test target)` for every `crates/*/tests/<prefix>*.rs` file or
/// `crates/*/tests/<prefix>*/main.rs` directory, sorted.
fn test_targets(prefix: &str) -> std::io::Result<Vec<(String, String)>> {
    let mut targets = Vec::new();
    for krate in fs::read_dir(project_root().join("crates"))? {
        let krate = krate?.path();
        let Ok(tests) = fs::read_dir(krate.join("tests")) else {
            continue;
        };
        let package = package_name(&krate);
        if package == BENCH_PACKAGE {
            continue;
        }
        for entry in tests {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let target = if path.is_dir() && path.join("main.rs").is_file() {
                name.to_owned()
            } else if let Some(stem) = name.strip_suffix(".rs").filter(|_| path.is_file()) {
                stem.to_owned()
            } else {
                continue;
            };
            if target.starts_with(prefix) {
                targets.push((package.clone(), target));
            }
        }
    }
    targets.sort();
    Ok(targets)
}

/// The `name` under `[package]` in `<dir>/Cargo.toml`, or the folder name.
fn package_name(dir: &Path) -> String {
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else {
        return folder;
    };
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
            {
                return value.trim().trim_matches('"').to_owned();
            }
        }
    }
    folder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn only_selects_cells_and_skips_apply() {
        let all = parse(&[]).unwrap();
        assert_eq!(all.steps.len(), 9);
        let lint = parse(&args(&["--only", "lint", "--skip-fmt"])).unwrap();
        assert_eq!(
            lint.steps.into_iter().collect::<Vec<_>>(),
            [Step::Clippy, Step::Doc]
        );
        let some = parse(&args(&["--only", "tls,faults", "--only", "unit"])).unwrap();
        assert_eq!(
            some.steps.into_iter().collect::<Vec<_>>(),
            [Step::Unit, Step::Redis(Topology::Tls), Step::Faults]
        );
        assert!(parse(&args(&["--only", "nope"])).is_err());
        assert!(parse(&args(&["--only"])).is_err());
        assert!(parse(&args(&["--frobnicate"])).is_err());
    }

    #[test]
    fn forwards_figure_lines_only() {
        assert_eq!(figure_line("FIGURES acked=5"), Some("FIGURES acked=5"));
        assert_eq!(
            figure_line("test kill::under_load ... SCENARIO kill9: ok"),
            Some("SCENARIO kill9: ok")
        );
        assert_eq!(figure_line("test kill::under_load ... ok"), None);
        assert_eq!(figure_line("running 3 tests"), None);
    }

    #[test]
    fn finds_this_workspace_packages() {
        assert_eq!(
            package_name(&project_root().join("crates/testkit-redis")),
            "testkit-redis"
        );
        let targets = test_targets("topolog").unwrap();
        assert!(targets.contains(&("testkit-redis".to_owned(), "topologies".to_owned())));
    }
}
