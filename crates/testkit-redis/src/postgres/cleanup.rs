//! Cleaning up after a postmaster: reaping it, waiting out its orphaned processes, and
//! removing the shared memory segment a killed one left.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Postgres;
use crate::process::{self, Signal};

/// How long the processes of a killed postmaster may take to notice and exit.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

impl Postgres {
    /// Forgets the postmaster after it exited (reaping it so no zombie stays) and stops its
    /// watchdog.
    pub(super) fn reap(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            if process::is_alive(pid) {
                let _ = child.kill();
            }
            let _ = child.wait();
            process::unregister(pid);
        }
    }

    /// Removes the System V shared memory segment a killed postmaster left (see
    /// [`remove_stale_segment`]).
    pub(super) fn remove_stale_shared_memory(&self) {
        remove_stale_segment(&self.data_dir());
    }
}

/// Removes the System V shared memory segment that a killed postmaster of `data_dir` left
/// (a clean shutdown removes it; a new postmaster would too, but none may come).
///
/// `postmaster.pid` names the postmaster (line 1) and the segment (the id ending line 7);
/// the segment is removed only when that postmaster is gone and created it (its `cpid` in
/// `/proc/sysvipc/shm`), so a recycled id is left alone.
pub(crate) fn remove_stale_segment(data_dir: &Path) {
    let Ok(lockfile) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let mut lines = lockfile.lines();
    let Some(owner) = lines.next().and_then(|line| line.trim().parse::<u32>().ok()) else {
        return;
    };
    if process::is_alive(owner) {
        return;
    }
    let Some(shmid) = lines.nth(5).and_then(|line| line.split_whitespace().nth(1)) else {
        return;
    };
    let ours = fs::read_to_string("/proc/sysvipc/shm").is_ok_and(|table| {
        // `key shmid perms size cpid lpid nattch …`
        table.lines().skip(1).any(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.get(1) == Some(&shmid) && fields.get(4).and_then(|p| p.parse().ok()) == Some(owner)
        })
    });
    if !ours {
        return;
    }
    if let Some(ipcrm) = process::find_program("ipcrm") {
        let _ = process::output_with_timeout(Command::new(ipcrm).args(["-m", shmid]), Duration::from_secs(5));
    }
}

/// Waits until the processes of a dead postmaster have exited (resuming them first, in case
/// they are stopped: a stopped process notices nothing); SIGKILLs those still there after
/// [`ORPHAN_GRACE`].
pub(super) fn await_orphans(children: &[u32]) {
    for &child in children {
        let _ = process::signal(child, Signal::Cont);
    }
    let deadline = Instant::now() + ORPHAN_GRACE;
    for &child in children {
        let left = deadline.saturating_duration_since(Instant::now());
        if !process::wait_gone(child, left) && process::is_postgres(child) {
            let _ = process::signal(child, Signal::Kill);
            process::wait_gone(child, Duration::from_secs(2));
        }
    }
}
