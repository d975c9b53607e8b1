//! `cargo xtask redis up|down`: local topologies that outlive the command.
//!
//! `up` starts the topology daemonized under `<root>/.xtask/redis/<topology>/`
//! (each server writes its pidfile there), saves the variables to export in
//! `env.sh` beside them and prints them. `down` stops the servers named by
//! those pidfiles and removes the directory.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use testkit_redis::{Topology, TopologyOptions};

use crate::{exec, project_root, tools};

const USAGE: &str = "usage: cargo xtask redis up <standalone|cluster|sentinel|tls> [--mtls]\n       \
                     cargo xtask redis down [<standalone|cluster|sentinel|tls>|all]";

pub(crate) fn run(args: &[String]) -> crate::Result<ExitCode> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["up", topology, rest @ ..] => {
            let mutual_tls = match rest {
                [] => false,
                ["--mtls"] => true,
                _ => return Err(USAGE.into()),
            };
            up(topology.parse()?, mutual_tls)
        }
        ["down"] | ["down", "all"] => down(&Topology::ALL),
        ["down", topology] => down(&[topology.parse()?]),
        _ => Err(USAGE.into()),
    }
}

fn state_dir(topology: Topology) -> PathBuf {
    project_root().join(".xtask").join("redis").join(topology.name())
}

fn up(topology: Topology, mutual_tls: bool) -> crate::Result<ExitCode> {
    let dir = state_dir(topology);
    let env_file = dir.join("env.sh");
    if dir.exists() {
        if let Ok(saved) = fs::read_to_string(&env_file) {
            if pidfiles_alive(&dir) {
                println!("{topology} is already up; to use it:\n{saved}");
                return Ok(ExitCode::SUCCESS);
            }
        }
        // Left over from a crash or a reboot: clear it (and anything still running from it).
        testkit_redis::stop_pidfiles(&dir)?;
        fs::remove_dir_all(&dir)?;
    }
    tools::ensure_redis_tools()?;
    exec::install_interrupt_handler();
    let options = TopologyOptions::new()
        .daemonize(true)
        .base_dir(&dir)
        .mutual_tls(mutual_tls);
    let mut running = match testkit_redis::start(topology, &options) {
        Ok(running) => running,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(format!("starting {topology} failed: {e}").into());
        }
    };
    running.detach();
    let mut exports = String::new();
    for (key, value) in running.env() {
        let _ = writeln!(exports, "export {key}='{value}'");
    }
    fs::write(&env_file, &exports)?;
    let pids: Vec<String> = running.pids().iter().map(u32::to_string).collect();
    println!(
        "{topology} up in {:.1}s (pids {}); to use it:\n{exports}\n\
         or: source {}\nstop it with: cargo xtask redis down {topology}",
        running.ready_after().as_secs_f64(),
        pids.join(" "),
        env_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn down(topologies: &[Topology]) -> crate::Result<ExitCode> {
    for &topology in topologies {
        let dir = state_dir(topology);
        if !dir.exists() {
            if topologies.len() == 1 {
                println!("{topology}: not up");
            }
            continue;
        }
        let stopped = testkit_redis::stop_pidfiles(&dir)?;
        fs::remove_dir_all(&dir)?;
        let pids: Vec<String> = stopped.iter().map(u32::to_string).collect();
        println!(
            "{topology}: stopped {} process(es){}",
            stopped.len(),
            if pids.is_empty() {
                String::new()
            } else {
                format!(" (pids {})", pids.join(" "))
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether every pidfile under `dir` names a running process.
fn pidfiles_alive(dir: &std::path::Path) -> bool {
    let mut pids = Vec::new();
    collect_pids(dir, &mut pids);
    !pids.is_empty()
        && pids.iter().all(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
        })
}

fn collect_pids(dir: &std::path::Path, pids: &mut Vec<u32>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            collect_pids(&path, pids);
        } else if path.extension().is_some_and(|ext| ext == "pid") {
            if let Some(pid) = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
    }
}
