//! The programs the Redis cells need, installed with apt-get when missing, and those the
//! browser cell needs, found or named.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::exec;

/// Programs the Redis cells run, and the Debian package of each.
const PROGRAMS: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("openssl", "openssl"),
];

/// Makes sure `redis-server`, `redis-cli` and `openssl` are on `PATH`.
///
/// When some are missing: as root, says so and runs `apt-get update &&
/// apt-get install -y <packages>`; otherwise fails at once with that command.
pub(crate) fn ensure_redis_tools() -> crate::Result<()> {
    let absent = missing();
    if absent.is_empty() {
        return Ok(());
    }
    let programs: Vec<&str> = absent.iter().map(|(program, _)| *program).collect();
    let mut packages: Vec<&str> = absent.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    let install = format!("apt-get update && apt-get install -y {}", packages.join(" "));
    if !is_root() {
        return Err(format!(
            "{} not found on PATH; install as root with:\n  {install}",
            programs.join(", ")
        )
        .into());
    }
    println!(
        "{} not found on PATH; running as root, so installing: {install}",
        programs.join(", ")
    );
    let log = crate::target_dir().join("xtask-logs").join("apt.log");
    for args in [vec!["update"], [vec!["install", "-y"], packages.clone()].concat()] {
        let mut command = Command::new("apt-get");
        command.args(&args).env("DEBIAN_FRONTEND", "noninteractive");
        let outcome = exec::run_logged(&mut command, &log, |_| {})?;
        if !outcome.status.success() {
            let tail = outcome.lines[outcome.lines.len().saturating_sub(20)..].join("\n");
            return Err(format!(
                "apt-get {} failed ({}); log {}:\n{tail}",
                args.join(" "),
                outcome.status,
                log.display()
            )
            .into());
        }
    }
    let still_missing: Vec<&str> = missing().iter().map(|(program, _)| *program).collect();
    if !still_missing.is_empty() {
        return Err(format!(
            "{} still not on PATH after apt-get; see {}",
            still_missing.join(", "),
            log.display()
        )
        .into());
    }
    println!("installed {}", packages.join(" "));
    Ok(())
}

/// The browser cell's programs: the variable that points elsewhere (the browser test reads
/// the same), the default path, and the Debian package.
const BROWSER_PROGRAMS: [(&str, &str, &str); 2] = [
    ("SESSION_TEST_CHROMIUM", "/usr/bin/chromium", "chromium"),
    (
        "SESSION_TEST_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    ),
];

/// Chromium and chromedriver for the browser cell, as `(variable, path)` pairs to hand to
/// the browser test: each variable's value if set, else Debian's path.
///
/// Fails when either is missing, naming the packages to install (they are not installed from
/// here: `.ci/run` does that).
pub(crate) fn browser_programs() -> crate::Result<Vec<(&'static str, PathBuf)>> {
    let mut found = Vec::new();
    let mut absent = Vec::new();
    for (variable, default, _) in BROWSER_PROGRAMS {
        let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
        if path.is_file() {
            found.push((variable, path));
        } else {
            absent.push(format!("{} (set {variable} to use another)", path.display()));
        }
    }
    if absent.is_empty() {
        return Ok(found);
    }
    let packages: Vec<&str> = BROWSER_PROGRAMS.iter().map(|(_, _, package)| *package).collect();
    Err(format!(
        "not found: {}; the browser cell needs Debian's packages {}; install as root with:\n  \
         apt-get update && apt-get install -y {}",
        absent.join(", "),
        packages.join(" and "),
        packages.join(" ")
    )
    .into())
}

fn missing() -> Vec<(&'static str, &'static str)> {
    PROGRAMS
        .iter()
        .copied()
        .filter(|(program, _)| testkit_redis::find_program(program).is_none())
        .collect()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
