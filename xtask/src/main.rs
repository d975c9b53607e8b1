//! `cargo xtask`: project automation, run through the alias in `.cargo/config.toml`.
//!
//! ```text
//! cargo xtask test [--keep-going] [--skip-fmt] [--skip-clippy] [--only <cell>[,<cell>…]]
//! cargo xtask redis up <standalone|cluster|sentinel|tls> [--mtls]
//! cargo xtask redis down [<topology>|all]
//! cargo xtask bench [--quick] [--rounds N] [--no-cluster] [--no-scale] [--scale-sizes 10k,1M,5M] [--no-doc]
//! cargo xtask demo | load
//! ```
//!
//! Each command lives in its own module with a `run(args) -> Result<ExitCode>`;
//! adding one is a `mod` line and a row in [`COMMANDS`]. Arguments are parsed
//! by hand to keep this crate's dependencies to `testkit-redis` (which starts
//! and stops real `redis-server` and PostgreSQL processes) and `ctrlc`.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool reports to its user on stdout"
)]

mod bench;
mod demo;
mod exec;
mod load;
mod metadata;
mod redis;
mod serve;
mod test;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Errors end the command with a message on stderr and exit code 1.
pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A subcommand: its name, its entry point and a one-line description.
type Command = (&'static str, fn(&[String]) -> Result<ExitCode>, &'static str);

/// Every subcommand, in the order `cargo xtask help` lists them.
const COMMANDS: &[Command] = &[
    (
        "test",
        test::run,
        "fmt, clippy, doc, msrv, unit tests, feature combinations, packaging, then Redis \
         standalone/cluster/sentinel/tls, PostgreSQL (sql), browser and fault cells",
    ),
    (
        "redis",
        redis::run,
        "`redis up <topology>` starts a local topology in the background, `redis down` stops it",
    ),
    (
        "bench",
        bench::run,
        "stores against raw fred, redis-benchmark, DashMap, tower-sessions, on standalone and cluster, and a \
         cluster scale curve; writes docs/benchmarks.md: [--quick] [--no-scale] [--no-doc]",
    ),
    (
        "demo",
        demo::run,
        "the demo server driven by the chat simulator: [--backend memory|redis|fallback] [--chaos]",
    ),
    (
        "load",
        load::run,
        "N demo instances on one Redis, load across them: [--instances N]",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        print_usage();
        return ExitCode::from(2);
    };
    if matches!(name.as_str(), "help" | "-h" | "--help") {
        print_usage();
        return ExitCode::SUCCESS;
    }
    let Some((_, run, _)) = COMMANDS.iter().find(|(n, _, _)| n == name) else {
        eprintln!("xtask: unknown command `{name}`");
        print_usage();
        return ExitCode::from(2);
    };
    match run(rest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_usage() {
    println!("usage: cargo xtask <command> [args]\n\ncommands:");
    for (name, _, about) in COMMANDS {
        println!("  {name:<7} {about}");
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                project_root().join(dir)
            }
        })
        .unwrap_or_else(|| project_root().join("target"))
}
