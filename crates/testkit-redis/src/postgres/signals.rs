//! Faults and stops: freezing (SIGSTOP/SIGCONT), killing (SIGKILL), a fast shutdown and a
//! restart.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use super::cleanup::await_orphans;
use super::Postgres;
use crate::process::{self, Signal};

/// How long a fast shutdown (SIGINT) may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Postgres {
    /// Freezes the whole server with SIGSTOP: the postmaster first (so it starts no more
    /// backends), then each of its processes (backends, checkpointer, WAL writer, …).
    /// Connections stay open and nothing answers; new connections wait in the listen queue.
    /// Returns once the kernel reports them stopped, or after about a second.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent to the postmaster.
    pub fn sigstop(&self) -> io::Result<()> {
        let pid = self.running_pid()?;
        process::signal(pid, Signal::Stop)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while !process::is_stopped(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        let children = process::children_of(pid);
        for &child in &children {
            let _ = process::signal(child, Signal::Stop);
        }
        for &child in &children {
            while process::is_alive(child) && !process::is_stopped(child) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// Resumes a server frozen by [`Self::sigstop`]: its processes, then the postmaster.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent to the postmaster.
    pub fn sigcont(&self) -> io::Result<()> {
        let pid = self.running_pid()?;
        for child in process::children_of(pid) {
            let _ = process::signal(child, Signal::Cont);
        }
        process::signal(pid, Signal::Cont)
    }

    /// Kills the postmaster with SIGKILL, as a crash would. Its processes notice and exit by
    /// themselves (resumed first if [stopped](Self::sigstop)); this returns once they are
    /// all gone (any still there after five seconds are SIGKILLed). Every acknowledged commit
    /// survives: [`Self::restart`] brings the server back on the same port, through crash
    /// recovery.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn kill9(&mut self) -> io::Result<()> {
        let pid = self.running_pid()?;
        let children = process::children_of(pid);
        if let Some(child) = self.child.as_mut() {
            child.kill()?;
        }
        process::wait_gone(pid, Duration::from_secs(5));
        self.reap();
        await_orphans(&children);
        Ok(())
    }

    /// Stops the server with a fast shutdown (SIGINT: open transactions are rolled back,
    /// then a shutdown checkpoint), SIGKILL after five seconds, and waits until its processes
    /// are gone. Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            let children = process::children_of(pid);
            // A frozen server shuts down only once its processes run again.
            for &child in &children {
                let _ = process::signal(child, Signal::Cont);
            }
            process::terminate_with(&[pid], Signal::Int, STOP_GRACE);
            await_orphans(&children);
        }
        self.reap();
        self.remove_stale_shared_memory();
    }

    /// Starts the server again on the same port with the same data directory, stopping it
    /// first if it runs (fast shutdown); after [`Self::kill9`] it goes through crash
    /// recovery. Waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// As [`Self::start`]; e.g. when another process took the port meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    fn running_pid(&self) -> io::Result<u32> {
        self.pid().filter(|&pid| process::is_alive(pid)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("postgres on port {} is not running", self.port),
            )
        })
    }
}
