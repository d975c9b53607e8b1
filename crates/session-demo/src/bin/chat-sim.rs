//! The chat simulator: `chat-sim --target URL [--target URL …] [--users N]
//! [--turns N] [--concurrency N] [--delete-every N] [--pause-ms N]
//! [--wait-recovered-secs N] [--outage]`. Prints a short report; exits 1 if a
//! session was lost or resurrected, or (without `--outage`) any request failed
//! or a live session was missing.

#![allow(clippy::print_stdout, reason = "a command-line tool prints its report")]

use std::process::ExitCode;
use std::time::Duration;

use session_demo::simulator::{run, SimConfig};

fn parse(args: &[String]) -> Result<SimConfig, String> {
    let mut c = SimConfig {
        targets: Vec::new(),
        ..SimConfig::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--target" => c.targets.push(value()?.trim_end_matches('/').to_owned()),
            "--users" => c.users = num(value()?)?,
            "--turns" => c.turns = num(value()?)?,
            "--concurrency" => c.concurrency = num(value()?)?,
            "--delete-every" => c.delete_every = num(value()?)?,
            "--pause-ms" => c.pause = Duration::from_millis(num(value()?)? as u64),
            "--wait-recovered-secs" => c.wait_recovered = Some(Duration::from_secs(num(value()?)? as u64)),
            "--outage" => c.outage = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if c.targets.is_empty() {
        c.targets.push("http://127.0.0.1:8080".into());
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("chat-sim: {e}");
            }
            eprintln!(
                "usage: chat-sim --target URL [--target URL …] [--users N] [--turns N] [--concurrency N] \
                 [--delete-every N] [--pause-ms N] [--wait-recovered-secs N] [--outage]"
            );
            return ExitCode::from(2);
        }
    };
    match run(config.clone()).await {
        Ok(report) => {
            for line in report.lines(&config) {
                println!("{line}");
            }
            if report.is_clean(&config) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chat-sim: {e}");
            ExitCode::from(2)
        }
    }
}
