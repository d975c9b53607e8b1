//! Signals, liveness and the registry of every server this process started.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Pids of the servers this process started and has not yet seen exit.
static REGISTRY: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// How long a graceful stop waits after SIGTERM before sending SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_millis(1500);

/// A signal this crate sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Term,
    /// SIGINT: PostgreSQL's "fast shutdown" (SIGTERM is its slow "smart" one).
    Int,
    Kill,
    Stop,
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Kill => "KILL",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// Sends `signal` to `pid` with the shell's `kill` builtin (`sh` is always
/// present on Debian; `/bin/kill` is not, and `libc::kill` would need unsafe).
pub(crate) fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let status = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal.name()])
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -s {} {pid} failed ({status})",
            signal.name()
        )))
    }
}

/// Whether `pid` is a process that has not exited (a zombie counts as exited).
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z" | "X" | "x"))
}

/// Whether `pid` is in the stopped state (after SIGSTOP).
pub(crate) fn is_stopped(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let i = stat.rfind(')')?;
            stat[i + 1..]
                .split_whitespace()
                .next()
                .map(|s| s == "T" || s == "t")
        })
        .unwrap_or(false)
}

/// Polls until `pid` has exited or `timeout` passes; returns whether it exited.
pub(crate) fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` runs `redis-server` (guards against a recycled pid).
pub(crate) fn is_redis_server(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("redis-server"))
}

/// Whether `pid` runs `postgres` (the postmaster or one of its processes; guards against a
/// recycled pid).
pub(crate) fn is_postgres(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "postgres")
}

/// The live processes whose parent is `pid` (read from `/proc`).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            fs::read_to_string(format!("/proc/{candidate}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid …`; comm may itself contain ')'.
                let mut fields = stat
                    .rfind(')')
                    .map(|i| stat[i + 1..].split_whitespace())
                    .into_iter()
                    .flatten();
                let state = fields.next();
                let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
                ppid == Some(pid) && !matches!(state, None | Some("Z" | "X" | "x"))
            })
        })
        .collect()
}

/// Sends SIGTERM (and SIGCONT, in case they are stopped) to every pid, waits
/// up to [`TERM_GRACE`] in all, then SIGKILLs what is left. Returns the pids
/// that were still alive at the start.
pub(crate) fn terminate_all(pids: &[u32]) -> Vec<u32> {
    terminate_with(pids, Signal::Term, TERM_GRACE)
}

/// Sends `first` (and SIGCONT, in case they are stopped) to every pid, waits
/// up to `grace` in all, then SIGKILLs what is left. Returns the pids that
/// were still alive at the start.
pub(crate) fn terminate_with(pids: &[u32], first: Signal, grace: Duration) -> Vec<u32> {
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    for &pid in &alive {
        let _ = signal(pid, first);
        let _ = signal(pid, Signal::Cont);
    }
    let deadline = Instant::now() + grace;
    for &pid in &alive {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_gone(pid, left) {
            let _ = signal(pid, Signal::Kill);
            wait_gone(pid, Duration::from_secs(2));
        }
    }
    alive
}

pub(crate) fn register(pid: u32) {
    REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pid);
}

pub(crate) fn unregister(pid: u32) {
    REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&pid);
}

/// Pids of every server this process started and has not stopped or detached.
pub fn registered_pids() -> Vec<u32> {
    REGISTRY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect()
}

/// SIGKILLs every server in [`registered_pids`] (`redis-server`s and
/// PostgreSQL postmasters) and their child processes, removes the scratch
/// directories not yet removed, and returns how many servers were alive.
///
/// For a Ctrl-C handler (guards will not be dropped when the process exits
/// from a signal): stopped processes die too, and nothing waits for a
/// graceful shutdown. Detached servers are not affected.
pub fn kill_registered() -> usize {
    let pids = registered_pids();
    let mut killed = Vec::new();
    for pid in pids {
        if is_alive(pid) && (is_redis_server(pid) || is_postgres(pid)) {
            // A PostgreSQL backend would exit by itself once its postmaster is gone, but not
            // while it is stopped (`Postgres::sigstop`): its children die with it.
            let children = children_of(pid);
            if signal(pid, Signal::Kill).is_ok() {
                killed.push(pid);
            }
            for child in children {
                let _ = signal(child, Signal::Kill);
            }
        }
        unregister(pid);
    }
    for &pid in &killed {
        wait_gone(pid, Duration::from_secs(2));
    }
    for dir in crate::scratch::registered() {
        crate::postgres::remove_stale_segment(&dir.join("data"));
    }
    crate::scratch::remove_registered();
    killed.len()
}

/// Starts a watchdog that SIGKILLs `child` and its child processes if this
/// process dies without stopping it (SIGKILL, abort, a test harness
/// timeout), and then removes a PostgreSQL's shared memory segment and
/// `dir` if given. The caller kills the watchdog when it stops `child`
/// itself, so the watchdog never outlives the server it guards.
pub(crate) fn spawn_watchdog(child: u32, dir: Option<&Path>) -> io::Result<std::process::Child> {
    // The children of `c` die with it: a stopped PostgreSQL backend (each runs in a session
    // of its own, so no orphaned-group SIGCONT reaches it) would otherwise stay stopped for
    // ever, and a forked redis-server saves no more for anyone.
    const SCRIPT: &str = r#"p=$1; c=$2; d=$3
while kill -0 "$p" 2>/dev/null && kill -0 "$c" 2>/dev/null; do sleep 1; done
if ! kill -0 "$p" 2>/dev/null; then
  kids=
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null <"$f" || continue
    s=${s##*") "}
    set -- $s
    if [ "$2" = "$c" ]; then k=${f%/stat}; kids="$kids ${k#/proc/}"; fi
  done
  kill -s KILL "$c" $kids 2>/dev/null
  if [ -n "$d" ]; then
    sleep 1
    # A killed PostgreSQL leaves its System V segment: postmaster.pid names the postmaster
    # (line 1) and the segment (the id ending line 7); removed if that postmaster created it.
    if [ -r "$d/data/postmaster.pid" ]; then
      n=0; pm=; id=
      while read -r a b; do
        n=$((n + 1))
        if [ "$n" = 1 ]; then pm=$a; fi
        if [ "$n" = 7 ]; then id=$b; break; fi
      done <"$d/data/postmaster.pid"
      while read -r key shmid perms size cpid rest; do
        if [ "$shmid" = "$id" ] && [ "$cpid" = "$pm" ]; then ipcrm -m "$id" 2>/dev/null; fi
      done </proc/sysvipc/shm
    fi
    rm -rf "$d"
  fi
fi"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "sh"])
        .arg(std::process::id().to_string())
        .arg(child.to_string())
        .arg(dir.map(Path::as_os_str).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Stops the servers whose pidfiles (`*.pid`) lie anywhere under `dir`.
///
/// For servers started detached ([`crate::TopologyOptions::daemonize`]) by
/// another process, e.g. `cargo xtask redis up`. A pid is signalled only if
/// it is alive and runs `redis-server`, so a stale pidfile whose pid was
/// reused by another program is ignored. SIGTERM first, SIGKILL after a
/// grace period. Returns the pids that were running.
///
/// # Errors
///
/// When `dir` cannot be read. A missing `dir` is not an error (nothing runs).
pub fn stop_pidfiles(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pidfiles = Vec::new();
    collect_pidfiles(dir, &mut pidfiles)?;
    let pids: Vec<u32> = pidfiles
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .filter_map(|text| text.trim().parse().ok())
        .filter(|&pid| is_redis_server(pid))
        .collect();
    Ok(terminate_all(&pids))
}

fn collect_pidfiles(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect_pidfiles(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "pid") {
            out.push(path);
        }
    }
    Ok(())
}

/// The first executable called `name` on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `command` to completion, killing it after `timeout`.
///
/// # Errors
///
/// When it cannot be spawned, or it runs longer than `timeout`.
pub(crate) fn output_with_timeout(
    command: &mut Command,
    timeout: Duration,
) -> io::Result<std::process::Output> {
    use std::io::Read;

    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not finish within {timeout:?}",
                    command.get_program().to_string_lossy()
                ),
            ));
        }
        thread::sleep(Duration::from_millis(2));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}
