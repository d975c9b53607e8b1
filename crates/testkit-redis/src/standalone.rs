//! One server.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use crate::env::{Topology, REDIS_URL_ENV, TOPOLOGY_ENV};
use crate::options::TopologyOptions;
use crate::scratch::Scratch;
use crate::server::{stop_all, RedisServer};
use crate::topology::RedisTopology;

/// One `redis-server`; [`REDIS_URL_ENV`] points at it.
#[derive(Debug)]
pub struct Standalone {
    server: RedisServer,
    ready_after: Duration,
    root: Scratch,
}

impl Standalone {
    /// Starts it with the default [`TopologyOptions`].
    ///
    /// # Errors
    ///
    /// When the server does not start.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&TopologyOptions::new())
    }

    /// Starts it with `options`.
    ///
    /// # Errors
    ///
    /// When the server does not start.
    pub fn start_with(options: &TopologyOptions) -> io::Result<Self> {
        let began = Instant::now();
        let root = Scratch::new(options.base_dir.as_deref(), "standalone")?;
        let server = RedisServer::start_with(options.node(&root, "server"))?;
        Ok(Self {
            server,
            ready_after: began.elapsed(),
            root,
        })
    }

    /// The server.
    pub fn server(&self) -> &RedisServer {
        &self.server
    }

    /// The server, for fault injection.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        &mut self.server
    }

    /// `redis://127.0.0.1:P`.
    pub fn url(&self) -> String {
        self.server.url()
    }
}

impl RedisTopology for Standalone {
    fn topology(&self) -> Topology {
        Topology::Standalone
    }

    fn env(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (TOPOLOGY_ENV, Topology::Standalone.name().to_owned()),
            (REDIS_URL_ENV, self.url()),
        ])
    }

    fn servers(&self) -> Vec<&RedisServer> {
        vec![&self.server]
    }

    fn servers_mut(&mut self) -> Vec<&mut RedisServer> {
        vec![&mut self.server]
    }

    fn ready_after(&self) -> Duration {
        self.ready_after
    }

    fn detach(&mut self) {
        self.server.detach();
        self.root.keep();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        stop_all(self.servers_mut());
    }
}
