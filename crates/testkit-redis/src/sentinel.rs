//! A master, a replica and three sentinels.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use crate::cluster::{role_from, role_of, Role};
use crate::env::{Topology, SENTINEL_SERVICE_NAME, SENTINEL_URL_ENV, TOPOLOGY_ENV};
use crate::options::{ServerOptions, TopologyOptions};
use crate::resp::Reply;
use crate::scratch::Scratch;
use crate::server::{stop_all, RedisServer};
use crate::topology::{left, node_list, poll_until, RedisTopology};

/// Number of sentinels.
const SENTINELS: usize = 3;

/// A master, one replica and three sentinels monitoring [`SENTINEL_SERVICE_NAME`]
/// with quorum 2, `down-after-milliseconds 1000` and `failover-timeout 5000`.
///
/// Ready when the replica's link is up and every sentinel sees the master
/// with 2 other sentinels and 1 replica. [`SENTINEL_URL_ENV`] lists the
/// three sentinels.
#[derive(Debug)]
pub struct Sentinel {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
    ready_after: Duration,
    root: Scratch,
}

impl Sentinel {
    /// Starts it with the default [`TopologyOptions`].
    ///
    /// # Errors
    ///
    /// When a process does not start or the sentinels do not agree in time.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&TopologyOptions::new())
    }

    /// Starts it with `options` (which apply to the master and the replica).
    ///
    /// # Errors
    ///
    /// As [`Self::start`].
    pub fn start_with(options: &TopologyOptions) -> io::Result<Self> {
        let began = Instant::now();
        let deadline = began + options.ready_timeout;
        let root = Scratch::new(options.base_dir.as_deref(), "sentinel")?;
        let master = RedisServer::start_with(options.node(&root, "master").ready_timeout(left(deadline)))?;
        let replica = RedisServer::start_with(
            options
                .node(&root, "replica")
                .replica_of(master.port())
                .ready_timeout(left(deadline)),
        )?;
        let mut topology = Sentinel {
            master,
            replica,
            sentinels: Vec::with_capacity(SENTINELS),
            ready_after: Duration::ZERO,
            root,
        };
        let name = SENTINEL_SERVICE_NAME;
        for i in 1..=SENTINELS {
            let sentinel = ServerOptions::new()
                .in_topology(&topology.root, &format!("sentinel-{i}"))
                .sentinel(true)
                .daemonize(options.daemonize)
                .ready_timeout(left(deadline))
                .config_line(format!(
                    "sentinel monitor {name} 127.0.0.1 {} 2",
                    topology.master.port()
                ))
                .config_line(format!("sentinel down-after-milliseconds {name} 1000"))
                .config_line(format!("sentinel failover-timeout {name} 5000"))
                .config_line(format!("sentinel parallel-syncs {name} 1"));
            topology.sentinels.push(RedisServer::start_with(sentinel)?);
        }
        poll_until(
            "the replica's link and every sentinel to see 2 other sentinels and 1 replica",
            left(deadline),
            || topology.is_complete(),
        )?;
        topology.ready_after = began.elapsed();
        Ok(topology)
    }

    /// The server started as master (it may be a replica after a failover).
    pub fn master(&self) -> &RedisServer {
        &self.master
    }

    /// The server started as master, for fault injection.
    pub fn master_mut(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    /// The server started as replica (it may be the master after a failover).
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The server started as replica, for fault injection.
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// The data node (master or replica) listening on `port`, for fault injection.
    pub fn data_node_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        [&mut self.master, &mut self.replica]
            .into_iter()
            .find(|n| n.port() == port)
    }

    /// The three sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The three sentinels, for fault injection.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// The ports of the three sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(RedisServer::port).collect()
    }

    /// `redis-sentinel://127.0.0.1:S1?node=127.0.0.1:S2&node=127.0.0.1:S3&sentinelServiceName=mymaster`.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://{}&sentinelServiceName={SENTINEL_SERVICE_NAME}",
            node_list(&self.sentinel_ports())
        )
    }

    /// The master's port according to the first sentinel that answers
    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`.
    ///
    /// # Errors
    ///
    /// When no sentinel answers.
    pub fn current_master(&self) -> io::Result<u16> {
        let mut last = io::Error::other("no sentinel is running");
        for sentinel in self.answering_sentinels() {
            match master_addr(sentinel) {
                Ok(port) => return Ok(port),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// After the master on `old_master` was killed or paused: waits until
    /// every answering sentinel names another master and that server says it
    /// is a master; returns its port.
    ///
    /// # Errors
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_for_failover(&self, old_master: u16, timeout: Duration) -> io::Result<u16> {
        let mut promoted = None;
        poll_until(
            &format!("the sentinels to fail over from 127.0.0.1:{old_master}"),
            timeout,
            || {
                let mut ports = Vec::new();
                for sentinel in self.answering_sentinels() {
                    ports.push(master_addr(sentinel)?);
                }
                let Some(&port) = ports.first() else {
                    return Ok(false);
                };
                if port == old_master || ports.iter().any(|&p| p != port) {
                    return Ok(false);
                }
                let Some(node) = [&self.master, &self.replica]
                    .into_iter()
                    .find(|n| n.port() == port)
                else {
                    return Ok(false);
                };
                promoted = Some(port);
                Ok(role_of(node)?.0 == Role::Master)
            },
        )?;
        promoted.ok_or_else(|| io::Error::other("no master after failover"))
    }

    /// The ports of the two data nodes: the server started as master, then the one started
    /// as replica (roles change after a failover; see [`Self::current_master`]).
    pub fn data_ports(&self) -> [u16; 2] {
        [self.master.port(), self.replica.port()]
    }

    /// The data node other than the one on `port` (the replica of a master, the master of a
    /// replica, in a topology of two data nodes).
    ///
    /// # Errors
    ///
    /// When `port` is not one of the two data nodes.
    pub fn other_data_node(&self, port: u16) -> io::Result<u16> {
        match self.data_ports() {
            [a, b] if a == port => Ok(b),
            [a, b] if b == port => Ok(a),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no data node on port {port}"),
            )),
        }
    }

    /// The replication role of the data node on `port`, asked with `ROLE`, and for a replica
    /// the port of its master.
    ///
    /// # Errors
    ///
    /// When `port` is not a data node or it does not answer (killed, paused).
    pub fn role(&self, port: u16) -> io::Result<(Role, Option<u16>)> {
        let node = self.data_node(port)?;
        role_of(node)
    }

    /// Kills (SIGKILL) the master the sentinels name and returns its port. Without AOF its
    /// data is gone; the sentinels promote the replica (see [`Self::wait_for_failover`]).
    ///
    /// # Errors
    ///
    /// When no sentinel answers, or the master is not running.
    pub fn kill_master(&mut self) -> io::Result<u16> {
        let port = self.current_master()?;
        self.data_node_mut(port)
            .ok_or_else(|| io::Error::other(format!("the sentinels name an unknown master on port {port}")))?
            .kill9()?;
        Ok(port)
    }

    /// A graceful failover: `SENTINEL FAILOVER` on the first answering sentinel (retried while
    /// the sentinels answer `NOGOODSLAVE`, i.e. have not yet seen the replica as fit), then
    /// [`Self::wait_for_failover`]. Returns the new master's port.
    ///
    /// The sentinels do not wait for the replica to catch up, and the old master stays a
    /// writable master until they reconfigure it as a replica (seconds later): writes it takes
    /// meanwhile are discarded by its resync, unless `min-replicas-to-write` refuses them.
    ///
    /// # Errors
    ///
    /// When the command fails otherwise, or the failover does not complete within `timeout`.
    pub fn failover(&self, timeout: Duration) -> io::Result<u16> {
        let deadline = Instant::now() + timeout;
        let old = self.current_master()?;
        let sentinel = self
            .answering_sentinels()
            .next()
            .ok_or_else(|| io::Error::other("no sentinel answers"))?;
        poll_until(
            "a sentinel to accept SENTINEL FAILOVER",
            left(deadline),
            || match sentinel.cmd(&["SENTINEL", "FAILOVER", SENTINEL_SERVICE_NAME])? {
                Reply::Error(e) if e.starts_with("NOGOODSLAVE") => Ok(false),
                Reply::Error(e) => Err(io::Error::other(format!("SENTINEL FAILOVER: {e}"))),
                _ => Ok(true),
            },
        )?;
        self.wait_for_failover(old, left(deadline))
    }

    /// Starts the data node on `port` again (same port, directory and arguments), e.g. the
    /// old master after [`Self::kill_master`]. Without AOF it comes back empty; a former
    /// master comes back as a master, which the sentinels turn into a replica of the current
    /// master after a few seconds (see [`Self::wait_replica_of`]).
    ///
    /// # Errors
    ///
    /// When `port` is not a data node, or the server does not start.
    pub fn restart_data_node(&mut self, port: u16) -> io::Result<()> {
        self.data_node_mut(port)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no data node on port {port}")))?
            .restart()
    }

    /// Waits until the data node on `port` says (`ROLE`) it is a replica of the master on
    /// `master` with its replication link up (`connected`: the initial sync is done).
    ///
    /// # Errors
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_replica_of(&self, port: u16, master: u16, timeout: Duration) -> io::Result<()> {
        let node = self.data_node(port)?;
        poll_until(
            &format!("127.0.0.1:{port} to replicate 127.0.0.1:{master} with its link up"),
            timeout,
            || {
                let reply = node.cmd(&["ROLE"])?.into_result()?;
                let items = reply.items();
                Ok(role_from(items) == Some(Role::Replica)
                    && items.get(2).and_then(Reply::integer) == Some(i64::from(master))
                    && items.get(3).and_then(Reply::text).as_deref() == Some("connected"))
            },
        )
    }

    fn data_node(&self, port: u16) -> io::Result<&RedisServer> {
        [&self.master, &self.replica]
            .into_iter()
            .find(|n| n.port() == port)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no data node on port {port}")))
    }

    fn answering_sentinels(&self) -> impl Iterator<Item = &RedisServer> {
        self.sentinels.iter().filter(|s| s.is_running() && !s.is_paused())
    }

    fn is_complete(&self) -> io::Result<bool> {
        let role = self.replica.cmd(&["ROLE"])?.into_result()?;
        if role.items().get(3).and_then(Reply::text).as_deref() != Some("connected") {
            return Ok(false);
        }
        for sentinel in &self.sentinels {
            let reply = sentinel
                .cmd(&["SENTINEL", "MASTER", SENTINEL_SERVICE_NAME])?
                .into_result()?;
            let field = |name: &str| {
                reply
                    .items()
                    .chunks(2)
                    .find(|pair| pair[0].text().as_deref() == Some(name))
                    .and_then(|pair| pair.get(1)?.text())
            };
            if field("flags").as_deref() != Some("master")
                || field("num-other-sentinels").as_deref() != Some("2")
                || field("num-slaves").as_deref() != Some("1")
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl RedisTopology for Sentinel {
    fn topology(&self) -> Topology {
        Topology::Sentinel
    }

    fn env(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (TOPOLOGY_ENV, Topology::Sentinel.name().to_owned()),
            (SENTINEL_URL_ENV, self.url()),
        ])
    }

    fn servers(&self) -> Vec<&RedisServer> {
        let mut servers = vec![&self.master, &self.replica];
        servers.extend(self.sentinels.iter());
        servers
    }

    fn servers_mut(&mut self) -> Vec<&mut RedisServer> {
        let mut servers = vec![&mut self.master, &mut self.replica];
        servers.extend(self.sentinels.iter_mut());
        servers
    }

    fn ready_after(&self) -> Duration {
        self.ready_after
    }

    fn detach(&mut self) {
        self.servers_mut().into_iter().for_each(RedisServer::detach);
        self.root.keep();
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        stop_all(self.servers_mut());
    }
}

/// The master port a sentinel reports.
fn master_addr(sentinel: &RedisServer) -> io::Result<u16> {
    let reply = sentinel
        .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE_NAME])?
        .into_result()?;
    reply
        .items()
        .get(1)
        .and_then(Reply::integer)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| io::Error::other(format!("unexpected master address {reply:?}")))
}
