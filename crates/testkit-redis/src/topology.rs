//! What every topology offers, and starting one by name.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::env::Topology;
use crate::options::TopologyOptions;
use crate::server::RedisServer;
use crate::{Cluster, Sentinel, Standalone, Tls};

/// A running topology: a guard that owns its servers and stops them on drop.
pub trait RedisTopology: fmt::Debug + Send {
    /// Which topology this is.
    fn topology(&self) -> Topology;

    /// The variables a test run needs (see [`crate::env`]), including
    /// [`crate::TOPOLOGY_ENV`]. For TLS the URL holds the password.
    fn env(&self) -> BTreeMap<&'static str, String>;

    /// Every process of the topology: data nodes first, then sentinels.
    fn servers(&self) -> Vec<&RedisServer>;

    /// Every process of the topology, for fault injection.
    fn servers_mut(&mut self) -> Vec<&mut RedisServer>;

    /// How long start-up took until the topology was ready.
    fn ready_after(&self) -> Duration;

    /// Lets the servers outlive the guard (see [`RedisServer::detach`]); the
    /// topology's directory is kept too.
    fn detach(&mut self);

    /// The pids of the running processes.
    fn pids(&self) -> Vec<u32> {
        self.servers().iter().filter_map(|s| s.pid()).collect()
    }
}

/// Starts `topology` with `options`.
///
/// # Errors
///
/// When a server cannot be started or the topology is not ready within
/// [`TopologyOptions::ready_timeout`].
pub fn start(topology: Topology, options: &TopologyOptions) -> io::Result<Box<dyn RedisTopology>> {
    Ok(match topology {
        Topology::Standalone => Box::new(Standalone::start_with(options)?),
        Topology::Cluster => Box::new(Cluster::start_with(options)?),
        Topology::Sentinel => Box::new(Sentinel::start_with(options)?),
        Topology::Tls => Box::new(Tls::start_with(options)?),
    })
}

/// Polls `check` every 20 ms until it returns `Ok(true)` or `timeout` passes.
///
/// # Errors
///
/// On timeout: says what was awaited and the last error `check` returned.
pub(crate) fn poll_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let detail = last_error.map(|e| format!(" (last error: {e})"));
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {timeout:?} waiting for {what}{}",
                    detail.unwrap_or_default()
                ),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The time left until `deadline` (zero when it passed).
pub(crate) fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// `127.0.0.1:P1?node=127.0.0.1:P2&node=…` for the given ports.
pub(crate) fn node_list(ports: &[u16]) -> String {
    let mut text = String::new();
    for (i, port) in ports.iter().enumerate() {
        text.push_str(match i {
            0 => "",
            1 => "?node=",
            _ => "&node=",
        });
        text.push_str(&format!("127.0.0.1:{port}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_nodes_as_query_parameters() {
        assert_eq!(node_list(&[1]), "127.0.0.1:1");
        assert_eq!(
            node_list(&[1, 2, 3]),
            "127.0.0.1:1?node=127.0.0.1:2&node=127.0.0.1:3"
        );
    }
}
