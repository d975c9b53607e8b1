//! `cargo xtask test`: the whole matrix, one line per step, then a summary.
//!
//! Steps, in order: `fmt`, `clippy`, `doc` and `msrv` (cell `lint`), `unit`
//! (`cargo test --workspace` without Redis), `features` (every feature
//! combination of each published crate, alone), `package` (`cargo package`
//! of the published crates), one cell per topology (`standalone`, `cluster`,
//! `sentinel`, `tls`), `sql`, `browser` and `faults`.
//!
//! `msrv` fails when a dependency in `Cargo.lock` that a workspace member
//! builds (its normal, build and dev dependencies, for the platforms in
//! [`metadata::PLATFORMS`]) declares a newer `rust-version` than the member.
//!
//! `features` takes every library crate that is published (no `publish =
//! false`) and, for `--no-default-features`, each feature alone on top of it,
//! and the default features: `cargo clippy --lib` (what a user builds: no
//! dev-dependency adds features), `cargo clippy --all-targets` (tests and
//! examples under the same features), both `-D warnings`, then `cargo test
//! --lib` and `cargo test --doc`. No Redis is needed. It goes through every
//! combination and lists each that failed.
//!
//! `package` runs `cargo package` for the published crates in one command,
//! so crates that depend on each other are verified against each other's
//! packaged sources (cargo puts them in a temporary local registry) before
//! any is on crates.io.
//!
//! A topology cell starts that topology, then runs every test target named
//! `redis*` (`crates/*/tests/redis*.rs`) with the topology's variables,
//! `SESSION_TEST_TOPOLOGY` and `SESSION_TEST_REQUIRE_REDIS=1` set (see
//! `testkit_redis::env`). The `sql` cell starts one PostgreSQL
//! (`testkit_redis::Postgres`), then runs every test target named `sql*`
//! (`crates/*/tests/sql*.rs`) with `SESSION_TEST_POSTGRES_URL` and
//! `SESSION_TEST_REQUIRE_POSTGRES=1` set. The `faults` cell runs every
//! `faults*` target with `SESSION_TEST_FAULTS=1`,
//! `SESSION_TEST_REQUIRE_REDIS=1` and `SESSION_TEST_REQUIRE_POSTGRES=1` (the
//! scenarios start their own servers), one test at a time and `--nocapture`,
//! and forwards the lines those tests print starting with `SCENARIO` or
//! `FIGURES`. Before the cells that need them, missing `redis-server` (and
//! friends) and PostgreSQL are installed with apt-get as root, or named with
//! the command to run. The `browser` cell checks that Debian's `chromium` and
//! `chromium-driver` are installed (`/usr/bin/chromium`, `/usr/bin/chromedriver`,
//! or `SESSION_TEST_CHROMIUM` / `SESSION_TEST_CHROMEDRIVER`), then runs
//! session-axum's `browser` test with `SESSION_TEST_BROWSER=1`: the example app
//! in headless Chromium through chromedriver, on the fallback over a Redis the test
//! kills and restarts; its `FIGURES browser:` line is forwarded. With `CI` set, cargo builds without incremental caches
//! (`CARGO_INCREMENTAL=0`, unless set otherwise). Full output goes to `target/xtask-logs/<step>.log`; on a
//! failure the command and the last 60 lines are shown.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use testkit_redis::{
    Postgres, Topology, TopologyOptions, FAULTS_ENV, PG_BINDIR_ENV, POSTGRES_URL_ENV, REQUIRE_POSTGRES_ENV,
    REQUIRE_REDIS_ENV,
};

use crate::exec::{self, Counts};
use crate::metadata::{self, Metadata};
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
    Msrv,
    Unit,
    Features,
    Package,
    Redis(Topology),
    Sql,
    Browser,
    Faults,
}

impl Step {
    const ALL: [Step; 14] = [
        Step::Fmt,
        Step::Clippy,
        Step::Doc,
        Step::Msrv,
        Step::Unit,
        Step::Features,
        Step::Package,
        Step::Redis(Topology::Standalone),
        Step::Redis(Topology::Cluster),
        Step::Redis(Topology::Sentinel),
        Step::Redis(Topology::Tls),
        Step::Sql,
        Step::Browser,
        Step::Faults,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Doc => "doc",
            Step::Msrv => "msrv",
            Step::Unit => "unit",
            Step::Features => "features",
            Step::Package => "package",
            Step::Redis(topology) => topology.name(),
            Step::Sql => "sql",
            Step::Browser => "browser",
            Step::Faults => "faults",
        }
    }

    /// Whether the step starts redis-server (or runs tests that may).
    fn needs_redis(self) -> bool {
        !matches!(
            self,
            Step::Fmt | Step::Clippy | Step::Doc | Step::Msrv | Step::Features | Step::Package | Step::Sql
        )
    }

    /// Whether the step starts PostgreSQL (or runs tests that must).
    fn needs_postgres(self) -> bool {
        matches!(self, Step::Sql | Step::Faults)
    }
}

/// The steps a `--only` name selects (`lint` is fmt, clippy, doc and msrv).
fn cell(name: &str) -> Option<Vec<Step>> {
    match name {
        "lint" => Some(vec![Step::Fmt, Step::Clippy, Step::Doc, Step::Msrv]),
        "redis" => Some(Topology::ALL.into_iter().map(Step::Redis).collect()),
        _ => Step::ALL.into_iter().find(|s| s.name() == name).map(|s| vec![s]),
    }
}

const CELLS: &str =
    "lint, fmt, clippy, doc, msrv, unit, features, package, standalone, cluster, sentinel, tls, sql, \
     browser, faults, redis";

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
    if options.steps.iter().any(|s| s.needs_postgres()) {
        tools::ensure_postgres()?;
    }
    exec::install_interrupt_handler();
    let logs = target_dir().join("xtask-logs");
    fs::create_dir_all(&logs)?;

    println!(
        "xtask test: {} steps. Each prints one line: step, ok or FAILED, seconds, tests passed / failed / \
         skipped (#[ignore]d), notes. FIGURES and SCENARIO lines are measurements the fault tests print \
         (lost, resurrected, wrong: must be 0) and the browser test's. Logs: {}",
        options.steps.len(),
        logs.display()
    );
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
    println!("{}", if failed.is_empty() { "PASS" } else { "FAIL" });
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
            let _ = write!(line, ", {} skipped", c.ignored);
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
        Step::Msrv => msrv_step(log),
        Step::Unit => {
            let mut command = test_command(&["test", "--workspace", "--exclude", BENCH_PACKAGE]);
            command.env(REQUIRE_REDIS_ENV, "1");
            // The per-topology suites (modules `standalone::`, `cluster::`, …) and the browser
            // test run in their cells.
            command
                .arg("--")
                .args(skip_topologies(None))
                .args(["--skip", BROWSER_TEST]);
            cargo_step(command, log, true, |_| {})
        }
        Step::Features => features_step(log),
        Step::Package => package_step(log),
        Step::Redis(topology) => redis_step(topology, log),
        Step::Sql => sql_step(log),
        Step::Browser => browser_step(log),
        Step::Faults => faults_step(log),
    }
}

/// Every locked dependency a member builds needs at most the member's `rust-version`.
fn msrv_step(log: &Path) -> Report {
    let metadata = match Metadata::load() {
        Ok(metadata) => metadata,
        Err(e) => return error_report(e.to_string(), log),
    };
    let metadata::MsrvCheck {
        mut lines,
        too_new,
        highest,
    } = metadata.msrv_check();
    lines.extend(too_new.iter().map(|line| format!("TOO NEW: {line}")));
    let _ = fs::write(log, lines.join("\n") + "\n");
    let note = highest.map_or_else(String::new, |(v, chain)| format!("highest need {v}: {chain}"));
    if too_new.is_empty() {
        Report {
            ok: true,
            counts: None,
            note,
            failure: None,
        }
    } else {
        let mut tail = too_new;
        tail.push(
            "raise `rust-version` in the root Cargo.toml, or pin the dependency to an older version \
             (`cargo update -p <name> --precise <version>`)"
                .to_owned(),
        );
        Report {
            ok: false,
            counts: None,
            note,
            failure: Some(Failure {
                command: None,
                log: log.to_path_buf(),
                tail,
            }),
        }
    }
}

/// `--no-default-features`, then each feature alone on top of it, then the defaults; a set that
/// turns on the same as an earlier one (say `default = ["tls"]` and `tls`) is left out.
fn feature_sets(package: &metadata::Package) -> Vec<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut sets = Vec::new();
    let no_default = "--no-default-features".to_owned();
    if seen.insert(package.enabled(&[], false)) {
        sets.push(vec![no_default.clone()]);
    }
    for feature in &package.features {
        if seen.insert(package.enabled(std::slice::from_ref(feature), false)) {
            sets.push(vec![no_default.clone(), "--features".to_owned(), feature.clone()]);
        }
    }
    if package.has_default && seen.insert(package.enabled(&[], true)) {
        sets.push(Vec::new());
    }
    sets
}

/// Clippy and the unit and doc tests of every published library crate, under every feature set.
fn features_step(log: &Path) -> Report {
    let metadata = match Metadata::load() {
        Ok(metadata) => metadata,
        Err(e) => return error_report(e.to_string(), log),
    };
    let mut counts = Counts::default();
    let mut combinations = 0;
    let mut failed: Vec<String> = Vec::new();
    let mut first_failure: Option<Failure> = None;
    let mut timings = Vec::new();
    for package in metadata.members().filter(|p| p.publishable && p.has_lib) {
        for set in feature_sets(package) {
            combinations += 1;
            let label = if set.is_empty() {
                format!("{} (default)", package.name)
            } else {
                format!("{} {}", package.name, set.join(" "))
            };
            let select = |args: &[&str]| {
                let mut command = test_command(args);
                command.args(["-p", &package.name]).args(&set);
                command
            };
            for what in ["clippy --lib", "clippy --all-targets", "test --lib", "test --doc"] {
                let args: Vec<&str> = what.split(' ').collect();
                let mut command = select(&args);
                let tests = args[0] == "test";
                if !tests {
                    command.args(["--", "-D", "warnings"]);
                }
                let started = Instant::now();
                let report = cargo_step(command, log, tests, |_| {});
                timings.push(format!(
                    "{:>7.1}s  {:<6}  {label}: {what}",
                    started.elapsed().as_secs_f64(),
                    if report.ok { "ok" } else { "FAILED" }
                ));
                if let Some(c) = report.counts {
                    counts.add(c);
                }
                if !report.ok {
                    failed.push(format!("{label}: {what}"));
                    if first_failure.is_none() {
                        first_failure = report.failure;
                    }
                }
            }
        }
    }
    append_lines(log, "# time per command", &timings);
    let note = format!("{combinations} feature sets");
    match first_failure {
        None => Report {
            ok: true,
            counts: Some(counts),
            note,
            failure: None,
        },
        Some(mut failure) => {
            failure.tail.push(format!("{} command(s) failed:", failed.len()));
            failure.tail.extend(failed.into_iter().map(|f| format!("  {f}")));
            Report {
                ok: false,
                counts: Some(counts),
                note,
                failure: Some(failure),
            }
        }
    }
}

/// Appends a `heading` line and `lines` to the log.
fn append_lines(log: &Path, heading: &str, lines: &[String]) {
    use std::io::Write as _;
    if let Ok(mut file) = fs::File::options().create(true).append(true).open(log) {
        let _ = writeln!(file, "{heading}");
        for line in lines {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// `cargo package` of every published crate, in one command.
fn package_step(log: &Path) -> Report {
    let metadata = match Metadata::load() {
        Ok(metadata) => metadata,
        Err(e) => return error_report(e.to_string(), log),
    };
    let published: Vec<&metadata::Package> = metadata.members().filter(|p| p.publishable).collect();
    if published.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: "no published crates".to_owned(),
            failure: None,
        };
    }
    // The verification builds go to a target directory of their own, where only they build
    // these packages from the temporary registry; their dependencies stay built between runs.
    let verify_dir = target_dir().join("package-verify");
    let removed = forget_unpacked_packages(&published) + forget_built_packages(&verify_dir, &published);
    // --allow-dirty: the check is of the working tree, committed or not.
    let mut command = cargo(&["package", "--locked", "--allow-dirty", "--target-dir"]);
    command.arg(&verify_dir);
    for package in &published {
        command.args(["-p", &package.name]);
    }
    let mut report = cargo_step(command, log, false, |_| {});
    if let Some(failure) = &mut report.failure {
        // Cargo names every test target left out of a package (`include` keeps tests in the
        // repository); on a failure those lines would only push the error out of view.
        failure
            .tail
            .retain(|line| !line.contains("warning: ignoring test"));
    }
    let names: Vec<&str> = published.iter().map(|p| p.name.as_str()).collect();
    report.note = format!("{} crates: {}", names.len(), names.join(", "));
    if removed > 0 {
        let _ = write!(report.note, "; {removed} stale copies removed first");
    }
    report
}

/// Removes what an earlier verification built of `packages` in `verify_dir`.
///
/// Cargo fingerprints a registry crate by name, version and features, not by its files, so a
/// verification build would otherwise link a workspace dependency as it was at the previous
/// run. Only `packages` are removed (their `.fingerprint` entries and `deps` files); the
/// dependencies from crates.io stay built. Returns how many entries were removed.
fn forget_built_packages(verify_dir: &Path, packages: &[&metadata::Package]) -> usize {
    let Ok(profiles) = fs::read_dir(verify_dir) else {
        return 0;
    };
    let ours = |file: &str| {
        // `<name>-<hash>` in .fingerprint; `lib<name>-<hash>.rlib`, `.rmeta`, `<name>-<hash>.d` in deps.
        let stem = file.split('.').next().unwrap_or(file);
        let Some((name, _hash)) = stem.rsplit_once('-') else {
            return false;
        };
        let name = name
            .strip_prefix("lib")
            .filter(|_| file.contains('.'))
            .unwrap_or(name);
        packages
            .iter()
            .any(|p| p.name == name || p.name.replace('-', "_") == name)
    };
    let mut removed = 0;
    for profile in profiles.flatten().map(|entry| entry.path()) {
        for folder in [".fingerprint", "deps"] {
            let Ok(entries) = fs::read_dir(profile.join(folder)) else {
                continue;
            };
            for entry in entries.flatten() {
                if !ours(&entry.file_name().to_string_lossy()) {
                    continue;
                }
                let path = entry.path();
                let gone = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed += usize::from(gone.is_ok());
            }
        }
    }
    removed
}

/// Removes the copies of `packages` that an earlier `cargo package` unpacked from its temporary
/// local registry into `$CARGO_HOME/registry/src/-<hash>/<name>-<version>`.
///
/// Cargo unpacks a registry crate once and then trusts the directory, so without this the
/// verification build of a crate would compile against the sources its workspace dependencies
/// had at the previous run (same name and version, older contents). Registries reached through
/// a `file://` URL, like that temporary one, are the source directories named `-<hash>`; crates
/// from crates.io (`index.crates.io-<hash>`) are never touched. Returns how many were removed.
fn forget_unpacked_packages(packages: &[&metadata::Package]) -> usize {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(Ok(registries)) = cargo_home.map(|home| fs::read_dir(home.join("registry").join("src"))) else {
        return 0;
    };
    let mut removed = 0;
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for package in packages {
            let unpacked = registry
                .path()
                .join(format!("{}-{}", package.name, package.version));
            if unpacked.is_dir() && fs::remove_dir_all(&unpacked).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

fn redis_step(topology: Topology, log: &Path) -> Report {
    let server = match testkit_redis::start(topology, &TopologyOptions::new()) {
        Ok(server) => server,
        Err(e) => {
            let _ = fs::write(log, format!("starting {topology} failed: {e}\n"));
            return error_report(format!("starting {topology} failed: {e}"), log);
        }
    };
    let ready = format!("ready in {:.1}s", server.ready_after().as_secs_f64());
    targets_against_server("redis", ready, log, |command| {
        command.envs(server.env()).env(REQUIRE_REDIS_ENV, "1");
        // Only this topology's suites, so the counts are of tests that ran against it.
        command.arg("--").args(skip_topologies(Some(topology)));
    })
}

/// Runs every test target named `{prefix}*` with `configure`'s environment (a server started
/// by the caller, which stops it afterwards); `ready` opens the step's note.
fn targets_against_server(
    prefix: &str,
    ready: String,
    log: &Path,
    configure: impl FnOnce(&mut Command),
) -> Report {
    let targets = match test_targets(prefix) {
        Ok(targets) => targets,
        Err(e) => return error_report(format!("cannot list test targets: {e}"), log),
    };
    if targets.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: format!("{ready}; no {prefix}* test targets yet"),
            failure: None,
        };
    }
    let mut command = test_command(&["test"]);
    add_targets(&mut command, &targets);
    configure(&mut command);
    let mut report = cargo_step(command, log, true, |_| {});
    report.note = if report.note.is_empty() {
        ready
    } else {
        format!("{ready}; {}", report.note)
    };
    report
}

/// One PostgreSQL, then every `sql*` test target against it.
fn sql_step(log: &Path) -> Report {
    let server = match Postgres::start() {
        Ok(server) => server,
        Err(e) => {
            let _ = fs::write(log, format!("starting PostgreSQL failed: {e}\n"));
            return error_report(format!("starting PostgreSQL failed: {e}"), log);
        }
    };
    let version = postgres_version(server.bindir())
        .map(|v| format!("{v}, "))
        .unwrap_or_default();
    let ready = format!("{version}ready in {:.1}s", server.ready_after().as_secs_f64());
    targets_against_server("sql", ready, log, |command| {
        command
            .env(POSTGRES_URL_ENV, server.url())
            .env(REQUIRE_POSTGRES_ENV, "1");
    })
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
    command
        .env(FAULTS_ENV, "1")
        .env(REQUIRE_REDIS_ENV, "1")
        .env(REQUIRE_POSTGRES_ENV, "1");
    cargo_step(command, log, true, |line| {
        if let Some(figures) = figure_line(line) {
            println!("{figures}");
        }
    })
}

/// The variable that turns the browser test on.
const BROWSER_ENV: &str = "SESSION_TEST_BROWSER";
/// The browser test's name (skipped by the `unit` step, where it could only skip itself).
const BROWSER_TEST: &str = "the_example_app_in_chromium";
/// What the browser test prints when it ran to the end.
const BROWSER_FIGURES: &str = "FIGURES browser:";

/// session-axum's `browser` test: the example app in headless Chromium, driven through
/// chromedriver, on the fallback over a Redis the test kills and restarts.
fn browser_step(log: &Path) -> Report {
    let programs = match tools::browser_programs() {
        Ok(programs) => programs,
        Err(e) => {
            let _ = fs::write(log, format!("{e}\n"));
            return error_report(e.to_string(), log);
        }
    };
    let mut command = test_command(&["test", "-p", "session-axum", "--test", "browser"]);
    command.args(["--", "--nocapture"]);
    command
        .env(BROWSER_ENV, "1")
        .envs(programs.iter().map(|(var, path)| (*var, path)));
    let mut figures = 0;
    let mut report = cargo_step(command, log, true, |line| {
        if let Some(text) = figure_line(line) {
            figures += usize::from(text.starts_with(BROWSER_FIGURES));
            println!("{text}");
        }
    });
    let chromium = programs.first().map(|(_, path)| path.as_path());
    report.note = chromium.and_then(browser_version).unwrap_or_default();
    if report.ok && figures == 0 {
        // Passed without its summary line: the test returned early (gated off) or changed.
        report.ok = false;
        report.failure = Some(Failure {
            command: None,
            log: log.to_path_buf(),
            tail: vec![format!(
                "the browser test passed without printing its `{BROWSER_FIGURES}` line: it did not run"
            )],
        });
    }
    report
}

/// `Chromium 1.2.3.4`, from `chromium --version`.
fn browser_version(chromium: &Path) -> Option<String> {
    let output = Command::new(chromium)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}

/// `PostgreSQL 15.18`, from `postgres --version` (`postgres (PostgreSQL) 15.18 (Debian …)`).
fn postgres_version(bindir: &Path) -> Option<String> {
    let output = Command::new(bindir.join("postgres"))
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().nth(2)?;
    Some(format!("PostgreSQL {version}"))
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
    let parts: Vec<String> = Counts::per_binary(lines)
        .into_iter()
        .filter(|(name, counts)| name.contains("conformance") && counts.passed + counts.failed > 0)
        .map(|(name, counts)| format!("{name} {} passed, {} failed", counts.passed, counts.failed))
        .collect();
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
    // A CI machine builds once: incremental caches would only take disk (about a third of a
    // fresh matrix build). Locally they stay, for the next edit.
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
}

/// A `cargo test` command whose environment has no `SESSION_*` variable
/// (neither server URLs nor store configuration) unless the step sets it — but
/// for `SESSION_TEST_PG_BINDIR`, which says where this machine's PostgreSQL is.
fn test_command(args: &[&str]) -> Command {
    let mut command = cargo(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SESSION_") && key != PG_BINDIR_ENV {
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
        assert_eq!(all.steps.len(), 14);
        let lint = parse(&args(&["--only", "lint", "--skip-fmt"])).unwrap();
        assert_eq!(
            lint.steps.into_iter().collect::<Vec<_>>(),
            [Step::Clippy, Step::Doc, Step::Msrv]
        );
        let publish = parse(&args(&["--only", "features,package"])).unwrap();
        assert_eq!(
            publish.steps.into_iter().collect::<Vec<_>>(),
            [Step::Features, Step::Package]
        );
        assert!(!Step::Features.needs_redis() && !Step::Package.needs_redis());
        let some = parse(&args(&["--only", "tls,faults", "--only", "unit"])).unwrap();
        assert_eq!(
            some.steps.into_iter().collect::<Vec<_>>(),
            [Step::Unit, Step::Redis(Topology::Tls), Step::Faults]
        );
        let browser = parse(&args(&["--only", "faults,browser,tls"])).unwrap();
        assert_eq!(
            browser.steps.into_iter().collect::<Vec<_>>(),
            [Step::Redis(Topology::Tls), Step::Browser, Step::Faults],
            "browser runs after tls and before faults"
        );
        assert!(Step::Browser.needs_redis());
        let sql = parse(&args(&["--only", "browser,sql,tls"])).unwrap();
        assert_eq!(
            sql.steps.into_iter().collect::<Vec<_>>(),
            [Step::Redis(Topology::Tls), Step::Sql, Step::Browser],
            "sql runs after tls and before browser"
        );
        assert!(Step::Sql.needs_postgres() && !Step::Sql.needs_redis());
        assert!(Step::Faults.needs_postgres() && Step::Faults.needs_redis());
        assert!(!Step::Unit.needs_postgres());
        assert_eq!(
            parse(&args(&["--only", "redis"])).unwrap().steps.len(),
            4,
            "the redis group is the four topologies"
        );
        assert!(parse(&args(&["--only", "nope"])).is_err());
        assert!(parse(&args(&["--only"])).is_err());
        assert!(parse(&args(&["--frobnicate"])).is_err());
    }

    /// Test binaries' output as cargo prints it, with a fault test's figures glued to the
    /// results line and per-test lines of another binary around: each count goes to its own
    /// binary.
    #[test]
    fn counts_are_parsed_per_binary_from_interleaved_output() {
        let lines = args(&[
            "     Running tests/memory_conformance.rs (target/debug/deps/memory_conformance-0a1b)",
            "running 85 tests",
            "test round_trip_json ... ok",
            "test result: ok. 85 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 5.1s",
            "     Running tests/faults_many.rs (target/debug/deps/faults_many-2c3d)",
            "running 13 tests",
            "test many::a ... FIGURES many-a: lost=0",
            "ok",
            "FIGURES many-b: lost=0 test result: FAILED. 12 passed; 1 failed; 0 ignored; 0 measured",
            "     Running tests/redis_conformance.rs (target/debug/deps/redis_conformance-4e5f)",
            "test result: ok. 85 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out",
        ]);
        let per = Counts::per_binary(&lines);
        let names: Vec<&str> = per.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["memory_conformance", "faults_many", "redis_conformance"]);
        assert_eq!((per[1].1.passed, per[1].1.failed), (12, 1));
        let total = Counts::parse(&lines);
        assert_eq!((total.passed, total.failed, total.ignored), (182, 1, 1));
        assert_eq!(
            conformance_note(&lines),
            "conformance: memory_conformance 85 passed, 0 failed; redis_conformance 85 passed, 0 failed"
        );
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
    fn feature_sets_of_session_core() {
        let metadata = Metadata::load().unwrap();
        let core = metadata.members().find(|p| p.name == "session-core").unwrap();
        let sets: Vec<String> = feature_sets(core).iter().map(|set| set.join(" ")).collect();
        assert_eq!(sets.first().map(String::as_str), Some("--no-default-features"));
        assert!(sets.contains(&"--no-default-features --features json".to_owned()));
        assert_eq!(
            sets.last().map(String::as_str),
            Some(""),
            "the defaults come last"
        );
        assert_eq!(sets.len(), core.features.len() + 2);
    }

    #[test]
    fn forgets_only_the_packaged_crates_builds() {
        let dir = std::env::temp_dir().join(format!("xtask-forget-{}", std::process::id()));
        let files = [
            ("debug/.fingerprint/session-core-0123abcd", true),
            ("debug/.fingerprint/session-core-fred-0123abcd", false),
            ("debug/.fingerprint/tokio-0123abcd", false),
            ("debug/deps/libsession_core-0123abcd.rlib", true),
            ("debug/deps/libsession_core-0123abcd.rmeta", true),
            ("debug/deps/session_core-0123abcd.d", true),
            ("debug/deps/libtokio-0123abcd.rlib", false),
        ];
        for (file, _) in files {
            let path = dir.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if file.contains("/.fingerprint/") {
                fs::create_dir_all(&path).unwrap();
            } else {
                fs::write(&path, b"").unwrap();
            }
        }
        let metadata = Metadata::load().unwrap();
        let core = metadata.members().find(|p| p.name == "session-core").unwrap();
        assert_eq!(forget_built_packages(&dir, &[core]), 4);
        for (file, removed) in files {
            assert_eq!(!dir.join(file).exists(), removed, "{file}");
        }
        fs::remove_dir_all(&dir).unwrap();
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
