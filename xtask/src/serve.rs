//! Shared by `demo` and `load`: build the demo binaries, start demo servers
//! on free loopback ports, talk to them with a minimal HTTP GET, run the chat
//! simulator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A demo server process, stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct DemoServer {
    child: Child,
    port: u16,
}

impl DemoServer {
    /// Starts `session-demo` on a free port with `env` (SESSION_* settings)
    /// and waits until `/health` answers.
    pub(crate) fn start(bin_dir: &std::path::Path, env: &[(String, String)]) -> crate::Result<Self> {
        let port = testkit_redis::find_free_port()?;
        let mut command = Command::new(bin_dir.join("session-demo"));
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in std::env::vars() {
            if k.starts_with("SESSION_") {
                command.env_remove(k);
            }
            let _ = v;
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start session-demo: {e}"))?;
        let mut server = DemoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get(port, "/health") {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("session-demo exited at start-up: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("session-demo did not answer /health within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking `GET` on 127.0.0.1: status and body.
pub(crate) fn http_get(port: u16, path: &str) -> crate::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Builds `session-demo` and `chat-sim` and returns the directory holding them.
pub(crate) fn build_demo(release: bool) -> crate::Result<PathBuf> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(crate::project_root())
        .args(["build", "-p", "session-demo", "--bins"]);
    if release {
        command.arg("--release");
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("building session-demo failed: {status}").into());
    }
    Ok(crate::target_dir().join(if release { "release" } else { "debug" }))
}

/// Runs `chat-sim` with `args`, its report printed as it comes.
pub(crate) fn run_simulator(bin_dir: &std::path::Path, args: &[String]) -> crate::Result<ExitStatus> {
    Ok(Command::new(bin_dir.join("chat-sim"))
        .args(args)
        .stdin(Stdio::null())
        .status()?)
}

/// Pulls the value of a metric (summed over label sets matching `filter`)
/// out of Prometheus text.
pub(crate) fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}
