//! Three masters, each with one replica.

use std::collections::BTreeMap;
use std::io;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::env::{Topology, CLUSTER_URL_ENV, TOPOLOGY_ENV};
use crate::options::TopologyOptions;
use crate::process::output_with_timeout;
use crate::resp::{info_field, Reply};
use crate::scratch::Scratch;
use crate::server::{stop_all, RedisServer};
use crate::topology::{left, node_list, poll_until, RedisTopology};

/// Number of nodes: 3 masters + 3 replicas.
const NODES: usize = 6;
/// Number of hash slots Redis Cluster has.
const SLOTS: &str = "16384";

/// The replication role of a node right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Serves writes (for its slots, in a cluster).
    Master,
    /// Replicates a master.
    Replica,
}

/// A Redis Cluster of 3 masters and 3 replicas (`--cluster-node-timeout 1000`),
/// created with `redis-cli --cluster create … --cluster-replicas 1`.
///
/// Ready when every node reports `cluster_state:ok` with all 16384 slots
/// covered and every replica's link to its master is up.
/// [`CLUSTER_URL_ENV`] lists all six nodes.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<RedisServer>,
    ready_after: Duration,
    root: Scratch,
    options: TopologyOptions,
}

impl Cluster {
    /// Starts it with the default [`TopologyOptions`].
    ///
    /// # Errors
    ///
    /// When a node does not start, `redis-cli --cluster create` fails, or
    /// the cluster is not ready in time.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&TopologyOptions::new())
    }

    /// `n` cluster-enabled servers in a fresh scratch directory, not yet joined into a cluster.
    fn start_nodes(options: &TopologyOptions, n: usize, deadline: Instant) -> io::Result<Self> {
        let root = Scratch::new(options.base_dir.as_deref(), "cluster")?;
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
            ready_after: Duration::ZERO,
            root,
            options: options.clone(),
        };
        for i in 1..=n {
            let node = options
                .node(&cluster.root, &format!("node-{i}"))
                .cluster(true)
                .ready_timeout(left(deadline));
            cluster.nodes.push(RedisServer::start_with(node)?);
        }
        Ok(cluster)
    }

    /// Starts it with `options`.
    ///
    /// # Errors
    ///
    /// As [`Self::start`].
    pub fn start_with(options: &TopologyOptions) -> io::Result<Self> {
        let began = Instant::now();
        let deadline = began + options.ready_timeout;
        let mut cluster = Cluster::start_nodes(options, NODES, deadline)?;
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = output_with_timeout(&mut create, left(deadline))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        poll_until(
            "every cluster node to report cluster_state:ok and 3 linked replicas",
            left(deadline),
            || cluster.is_complete(),
        )?;
        cluster.ready_after = began.elapsed();
        Ok(cluster)
    }

    /// All six nodes, in start order (roles change after a failover).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// All six nodes, for fault injection.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|n| n.port() == port)
    }

    /// The node listening on `port`, for fault injection.
    pub fn node_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }

    /// The ports of all six nodes.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&…` with all six nodes.
    pub fn url(&self) -> String {
        format!("redis-cluster://{}", node_list(&self.ports()))
    }

    /// The current role of every node that runs and is not paused, asked with `ROLE`.
    ///
    /// # Errors
    ///
    /// When a running node does not answer.
    pub fn roles(&self) -> io::Result<Vec<(u16, Role)>> {
        self.answering()
            .map(|node| Ok((node.port(), role_of(node)?.0)))
            .collect()
    }

    /// The ports of the current masters (among nodes that answer).
    ///
    /// # Errors
    ///
    /// As [`Self::roles`].
    pub fn masters(&self) -> io::Result<Vec<u16>> {
        self.ports_with(Role::Master)
    }

    /// The ports of the current replicas (among nodes that answer).
    ///
    /// # Errors
    ///
    /// As [`Self::roles`].
    pub fn replicas(&self) -> io::Result<Vec<u16>> {
        self.ports_with(Role::Replica)
    }

    /// The port of the replica that replicates the master on `master_port`.
    ///
    /// Still works after that master was killed or paused, until the
    /// replica is promoted.
    ///
    /// # Errors
    ///
    /// When no answering node replicates `master_port`.
    pub fn replica_of(&self, master_port: u16) -> io::Result<u16> {
        for node in self.answering() {
            if let Ok((Role::Replica, Some(master))) = role_of(node) {
                if master == master_port {
                    return Ok(node.port());
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no node replicates 127.0.0.1:{master_port}"),
        ))
    }

    /// After the master on `old_master` was killed or paused: waits until its
    /// replica is promoted and the cluster is healthy again; returns the new
    /// master's port. Call it before the promotion can happen (the node
    /// timeout is 1 s), e.g. right after [`RedisServer::kill9`].
    ///
    /// # Errors
    ///
    /// When `old_master` has no replica, or the failover does not complete in `timeout`.
    pub fn wait_for_failover(&self, old_master: u16, timeout: Duration) -> io::Result<u16> {
        let deadline = Instant::now() + timeout;
        let replica = self.replica_of(old_master)?;
        let promoted = self
            .node(replica)
            .ok_or_else(|| io::Error::other("replica vanished"))?;
        poll_until(
            &format!("replica 127.0.0.1:{replica} to be promoted"),
            left(deadline),
            || Ok(role_of(promoted)?.0 == Role::Master),
        )?;
        self.wait_healthy(left(deadline))?;
        Ok(replica)
    }

    /// Waits until every node that runs and is not paused reports
    /// `cluster_state:ok` with all slots served.
    ///
    /// # Errors
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) -> io::Result<()> {
        poll_until("cluster_state:ok on every answering node", timeout, || {
            for node in self.answering() {
                if !state_ok(node)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// The cluster node id of the node on `port` (`CLUSTER MYID`).
    ///
    /// # Errors
    ///
    /// When the node does not answer.
    pub fn node_id(&self, port: u16) -> io::Result<String> {
        let node = self
            .node(port)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no node on port {port}")))?;
        node.cmd(&["CLUSTER", "MYID"])?
            .into_result()?
            .text()
            .ok_or_else(|| io::Error::other("CLUSTER MYID returned no text"))
    }

    /// Starts one more node and adds it as a master without slots (`redis-cli --cluster
    /// add-node`); returns its port once every answering node knows it.
    ///
    /// # Errors
    ///
    /// When the node does not start or is not known everywhere within the ready timeout.
    pub fn add_master(&mut self) -> io::Result<u16> {
        let deadline = Instant::now() + self.options.ready_timeout;
        let name = format!("node-{}", self.nodes.len() + 1);
        let node = self
            .options
            .node(&self.root, &name)
            .cluster(true)
            .ready_timeout(left(deadline));
        let node = RedisServer::start_with(node)?;
        let port = node.port();
        let existing = self
            .answering()
            .next()
            .map(RedisServer::port)
            .ok_or_else(|| io::Error::other("no answering node to join"))?;
        self.nodes.push(node);
        self.cluster_cli(
            &[
                "add-node",
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{existing}"),
            ],
            left(deadline),
        )?;
        let id = self.node_id(port)?;
        poll_until(
            &format!("every node to know 127.0.0.1:{port}"),
            left(deadline),
            || {
                for node in self.answering() {
                    let nodes = node
                        .cmd(&["CLUSTER", "NODES"])?
                        .into_result()?
                        .text()
                        .unwrap_or_default();
                    if !nodes.lines().any(|l| l.starts_with(&id)) {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        // A new master reports `cluster_state:fail` for its first seconds (it waits before it
        // accepts writes): wait until it has said ok for a while.
        let steady = Duration::from_secs(2);
        let mut ok_since: Option<Instant> = None;
        poll_until(
            &format!("127.0.0.1:{port} to stay healthy"),
            left(deadline),
            || {
                let ok = self.node(port).map_or(Ok(false), state_ok)?;
                ok_since = if ok {
                    ok_since.or(Some(Instant::now()))
                } else {
                    None
                };
                Ok(ok_since.is_some_and(|at| at.elapsed() >= steady))
            },
        )?;
        self.wait_healthy(left(deadline))?;
        Ok(port)
    }

    /// Moves slots until the masters hold about as many each (`redis-cli --cluster rebalance
    /// --cluster-use-empty-masters`), then waits until the cluster is healthy. Keys move
    /// with their slots (`MIGRATE`), while clients keep working.
    ///
    /// # Errors
    ///
    /// When `redis-cli` fails or the cluster is not healthy within `timeout`.
    pub fn rebalance(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let any = self.any_master()?;
        self.cluster_cli(
            &[
                "rebalance",
                &format!("127.0.0.1:{any}"),
                "--cluster-use-empty-masters",
            ],
            left(deadline),
        )?;
        self.wait_healthy(left(deadline))
    }

    /// Moves every slot of the master on `port` to the other masters (`rebalance` with its
    /// weight 0), then removes it from the cluster (`del-node`, which shuts it down).
    ///
    /// # Errors
    ///
    /// When `redis-cli` fails or the cluster is not healthy within `timeout`.
    pub fn remove_master(&mut self, port: u16, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let id = self.node_id(port)?;
        let other = self
            .answering()
            .map(RedisServer::port)
            .find(|&p| p != port)
            .ok_or_else(|| io::Error::other("no other node"))?;
        self.cluster_cli(
            &[
                "rebalance",
                &format!("127.0.0.1:{other}"),
                "--cluster-weight",
                &format!("{id}=0"),
            ],
            left(deadline),
        )?;
        self.cluster_cli(&["del-node", &format!("127.0.0.1:{other}"), &id], left(deadline))?;
        if let Some(i) = self.nodes.iter().position(|n| n.port() == port) {
            let mut node = self.nodes.remove(i);
            node.stop();
        }
        self.wait_healthy(left(deadline))
    }

    /// A graceful failover (`CLUSTER FAILOVER` on the replica on `replica_port`): the replica
    /// catches up with its master, then takes over; waits until it is master and the cluster
    /// is healthy.
    ///
    /// # Errors
    ///
    /// When the command fails or the takeover does not complete within `timeout`.
    pub fn failover(&self, replica_port: u16, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let replica = self
            .node(replica_port)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such replica"))?;
        replica.cmd(&["CLUSTER", "FAILOVER"])?.into_result()?;
        poll_until(
            &format!("127.0.0.1:{replica_port} to take over"),
            left(deadline),
            || Ok(role_of(replica)?.0 == Role::Master),
        )?;
        self.wait_healthy(left(deadline))
    }

    fn any_master(&self) -> io::Result<u16> {
        self.masters()?
            .first()
            .copied()
            .ok_or_else(|| io::Error::other("no master answers"))
    }

    /// `redis-cli --cluster <args…> --cluster-yes`, judged by its exit status.
    fn cluster_cli(&self, args: &[&str], timeout: Duration) -> io::Result<()> {
        let mut cli = Command::new("redis-cli");
        cli.arg("--cluster").args(args).arg("--cluster-yes");
        let output = output_with_timeout(&mut cli, timeout)?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    fn ports_with(&self, role: Role) -> io::Result<Vec<u16>> {
        Ok(self
            .roles()?
            .into_iter()
            .filter(|&(_, r)| r == role)
            .map(|(port, _)| port)
            .collect())
    }

    fn answering(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running() && !n.is_paused())
    }

    /// Whether every node sees a healthy cluster of six and 3 replicas are linked.
    fn is_complete(&self) -> io::Result<bool> {
        let mut linked_replicas = 0;
        for node in &self.nodes {
            let info = cluster_info(node)?;
            if info_field(&info, "cluster_known_nodes").as_deref() != Some("6") || !state_ok(node)? {
                return Ok(false);
            }
            let reply = node.cmd(&["ROLE"])?.into_result()?;
            let items = reply.items();
            if role_from(items) == Some(Role::Replica)
                && items.get(3).and_then(Reply::text).as_deref() == Some("connected")
            {
                linked_replicas += 1;
            }
        }
        Ok(linked_replicas == NODES / 2)
    }
}

impl RedisTopology for Cluster {
    fn topology(&self) -> Topology {
        Topology::Cluster
    }

    fn env(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            (TOPOLOGY_ENV, Topology::Cluster.name().to_owned()),
            (CLUSTER_URL_ENV, self.url()),
        ])
    }

    fn servers(&self) -> Vec<&RedisServer> {
        self.nodes.iter().collect()
    }

    fn servers_mut(&mut self) -> Vec<&mut RedisServer> {
        self.nodes.iter_mut().collect()
    }

    fn ready_after(&self) -> Duration {
        self.ready_after
    }

    fn detach(&mut self) {
        self.nodes.iter_mut().for_each(RedisServer::detach);
        self.root.keep();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_all(self.nodes.iter_mut());
    }
}

fn cluster_info(node: &RedisServer) -> io::Result<String> {
    node.cmd(&["CLUSTER", "INFO"])?
        .into_result()?
        .text()
        .ok_or_else(|| io::Error::other("CLUSTER INFO returned no text"))
}

fn state_ok(node: &RedisServer) -> io::Result<bool> {
    let info = cluster_info(node)?;
    Ok(info_field(&info, "cluster_state").as_deref() == Some("ok")
        && info_field(&info, "cluster_slots_ok").as_deref() == Some(SLOTS))
}

/// The node's role and, for a replica, its master's port.
pub(crate) fn role_of(node: &RedisServer) -> io::Result<(Role, Option<u16>)> {
    let reply = node.cmd(&["ROLE"])?.into_result()?;
    let items = reply.items();
    let role =
        role_from(items).ok_or_else(|| io::Error::other(format!("unexpected ROLE reply {reply:?}")))?;
    let master = match role {
        Role::Replica => items
            .get(2)
            .and_then(Reply::integer)
            .and_then(|p| u16::try_from(p).ok()),
        Role::Master => None,
    };
    Ok((role, master))
}

pub(crate) fn role_from(items: &[Reply]) -> Option<Role> {
    match items.first()?.text()?.as_str() {
        "master" => Some(Role::Master),
        "slave" => Some(Role::Replica),
        _ => None,
    }
}

impl Cluster {
    /// Starts a cluster of `masters` masters and no replicas (`redis-cli --cluster create …
    /// --cluster-replicas 0`), for measurements where replicas would only double the memory
    /// (`cargo xtask bench`'s scale curve). At least 3 masters, as `redis-cli` requires.
    ///
    /// Ready when every node reports `cluster_state:ok` with all 16384 slots covered and knows
    /// all `masters` nodes. The failover helpers have nothing to promote on it.
    ///
    /// # Errors
    ///
    /// When `masters` is below 3, a node does not start, `redis-cli --cluster create` fails,
    /// or the cluster is not ready in time.
    pub fn start_masters(options: &TopologyOptions, masters: usize) -> io::Result<Self> {
        if masters < 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a Redis Cluster needs at least 3 masters, not {masters}"),
            ));
        }
        let began = Instant::now();
        let deadline = began + options.ready_timeout;
        let mut cluster = Cluster::start_nodes(options, masters, deadline)?;
        cluster.cluster_cli_create_masters(left(deadline))?;
        let known = masters.to_string();
        poll_until(
            &format!("every cluster node to report cluster_state:ok and know {masters} nodes"),
            left(deadline),
            || {
                for node in &cluster.nodes {
                    let info = cluster_info(node)?;
                    if info_field(&info, "cluster_known_nodes").as_deref() != Some(known.as_str())
                        || !state_ok(node)?
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )?;
        cluster.ready_after = began.elapsed();
        Ok(cluster)
    }

    /// `redis-cli --cluster create <every node> --cluster-replicas 0 --cluster-yes`.
    fn cluster_cli_create_masters(&self, timeout: Duration) -> io::Result<()> {
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(self.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = output_with_timeout(&mut create, timeout)?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}
