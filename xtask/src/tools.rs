//! The programs the Redis cells need and PostgreSQL, installed with apt-get when missing,
//! and those the browser cell needs, found or named.

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
    let log = apt_get_install(&packages)?;
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

/// Debian's setting that keeps the `postgresql` package from creating (and starting) a
/// cluster of its own: the tests start theirs with `initdb`.
const CREATECLUSTER_CONF: &str = "/etc/postgresql-common/createcluster.conf";

/// Makes sure PostgreSQL's `initdb` and `postgres` are there (see
/// [`testkit_redis::find_postgres_bindir`]).
///
/// When they are missing: as root, says so, writes `create_main_cluster = false` to
/// [`CREATECLUSTER_CONF`] if that file does not exist, and installs Debian's `postgresql`;
/// otherwise fails at once with those commands.
pub(crate) fn ensure_postgres() -> crate::Result<()> {
    let Err(absent) = testkit_redis::find_postgres_bindir() else {
        return Ok(());
    };
    if std::env::var_os(testkit_redis::PG_BINDIR_ENV).is_some() {
        // Pointed elsewhere on purpose: installing Debian's would not help.
        return Err(absent.to_string().into());
    }
    let install = "apt-get update && apt-get install -y postgresql";
    let no_cluster = format!(
        "mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > {CREATECLUSTER_CONF}"
    );
    if !is_root() {
        return Err(format!(
            "PostgreSQL not found (initdb and postgres); install as root with:\n  \
             [ -e {CREATECLUSTER_CONF} ] || {{ {no_cluster}; }}\n  {install}"
        )
        .into());
    }
    println!("PostgreSQL not found; running as root, so installing: {install}");
    let conf = std::path::Path::new(CREATECLUSTER_CONF);
    if !conf.exists() {
        let written = conf
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(conf, "create_main_cluster = false\n"));
        if let Err(e) = written {
            return Err(format!("cannot write {CREATECLUSTER_CONF}: {e}").into());
        }
        println!("wrote `create_main_cluster = false` to {CREATECLUSTER_CONF}: no cluster of Debian's own");
    }
    let log = apt_get_install(&["postgresql"])?;
    if let Err(e) = testkit_redis::find_postgres_bindir() {
        return Err(format!("{e}\n(after apt-get; see {})", log.display()).into());
    }
    println!("installed postgresql");
    Ok(())
}

/// `apt-get update`, then `apt-get install -y <packages>`, logged to `xtask-logs/apt.log`;
/// returns the log's path.
fn apt_get_install(packages: &[&str]) -> crate::Result<PathBuf> {
    let log = crate::target_dir().join("xtask-logs").join("apt.log");
    for args in [vec!["update"], [&["install", "-y"][..], packages].concat()] {
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
    Ok(log)
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
