//! The programs the Redis cells need, installed with apt-get when missing.

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
