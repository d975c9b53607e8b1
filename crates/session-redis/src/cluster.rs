//! Redis Cluster: one [`Node`] per primary, the slot map, and the routing of each command to
//! its key's slot, following `MOVED` and `ASK` here rather than in the client.
//!
//! Why not fred's cluster client: it reconnects all nodes as one (while one master is down,
//! every command waits or fails, on healthy shards too), and its `ASK` handling reads one
//! reply directly off a shared connection (another command's reply can be consumed). Here
//! each primary has its own connections and fence, so a node that is down or paused costs
//! only its own slots; `ASK` is answered with `ASKING` and the command pipelined together on
//! the target's connection, and a `MOVED` updates the map and re-sends.
//!
//! The map is read with `CLUSTER SLOTS` at start, after a `MOVED`, while a node is
//! unreachable (so a failover's new master is found) and every [`REFRESH_EVERY`] otherwise;
//! whole-keyspace calls (`count`, `stats`) read it first.
//!
//! # Partitions: one per node
//!
//! [`SessionStore::partition`](session_core::SessionStore::partition) of a key is the primary
//! serving its slot in the map as this store knows it now (an id hashed from the node's
//! address), and [`Partition::WHOLE`] for a slot no known node serves. A fallback keeps one
//! circuit per partition, so this choice decides what one failure opens and what is probed.
//!
//! Per node rather than per slot, because a node is what fails: a master killed, paused or
//! cut off takes all its slots with it, and only it. One failure on any of its keys opens all
//! of them at once, so with a node that hangs one call waits for the timeout, not one per slot
//! (up to 5461 of them on a three-master cluster), and one probe per node answers for all its
//! keys. Slots would be stable ids, but would mean up to 16384 circuits, each opened by a
//! failure of its own and probed on its own.
//!
//! The price is that a node's identity changes at a failover: the promoted replica is
//! another node, so the old master's keys move to another partition (its, closed) once the
//! map shows the promotion. So a partition must be able to end. [`Cluster::partition_health`]
//! probes the node named by the partition if it still serves slots, reads the map again when
//! that node does not answer, and answers *up* for a node that serves no slot any more (failed
//! over or removed): nothing waits on it, so a fallback ends that circuit and replays the keys
//! journaled meanwhile under their current partition — the new master's. Live calls route by
//! the current map too: a key of the old master is served by the new one as soon as the map
//! says so, with no probe in between. A key whose slot no node serves is [`Partition::WHOLE`]
//! (probed by `health()`), so keys are never stranded on a partition nobody probes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, ClusterInterface, KeysInterface};
use fred::types::config::{Options, Server, ServerConfig};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Expiration, FromValue, Key, SetOptions, Value};
use session_core::backend::Partition;
use session_core::{Error, Health, HealthStatus, Result};

use crate::config::Built;
use crate::error::map_connect_error;
use crate::node::{connect_one, Node};
use crate::slots::{Redirect, SlotMap};
use crate::BACKEND;

/// How often the map is read again when nothing asked for it.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// At most this often when something asked (a `MOVED`, an unreachable node).
const REFRESH_MIN_GAP: Duration = Duration::from_millis(100);
/// How often the background task looks whether a refresh is due.
const REFRESH_POLL: Duration = Duration::from_millis(50);
/// The first pause before a command refused with `CLUSTERDOWN`/`TRYAGAIN` is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Redirections one command follows before its error is returned.
const MAX_REDIRECTS: usize = 5;

/// One command for a key: `GET`, `SET`, `DEL`, or a script (`EVALSHA`, then `EVAL` on
/// `NOSCRIPT`).
///
/// The plain commands go through fred's typed interface, not as custom commands: fred flushes
/// its socket after every custom command (and every script), while typed commands sent
/// together share one write (measured: one `writev` per `GET` as a custom command, one per
/// ~20 as a typed one, at 64 tasks).
pub(crate) enum Cmd<'a> {
    /// `GET key`.
    Get(Key),
    /// `SET key value PXAT deadline [NX|XX]`.
    Set(Key, Bytes, i64, Option<SetOptions>),
    /// `DEL key`.
    Del(Key),
    /// A script on `keys` with `args`.
    Script(&'a Script, &'a [Key], Vec<Value>),
}

impl Cmd<'_> {
    /// `name` and the arguments as sent (a script's SHA-1, or its body for `EVAL`).
    fn parts(&self, body: bool) -> (&'static str, Vec<Value>) {
        match self {
            Cmd::Get(key) => ("GET", vec![Value::from(key.clone())]),
            Cmd::Del(key) => ("DEL", vec![Value::from(key.clone())]),
            Cmd::Set(key, value, at, condition) => {
                let mut args = Vec::with_capacity(5);
                args.push(Value::from(key.clone()));
                args.push(Value::Bytes(value.clone()));
                args.push(Value::from_static_str("PXAT"));
                args.push(Value::Integer(*at));
                match condition {
                    Some(SetOptions::NX) => args.push(Value::from_static_str("NX")),
                    Some(SetOptions::XX) => args.push(Value::from_static_str("XX")),
                    None => {}
                }
                ("SET", args)
            }
            Cmd::Script(script, keys, args) => {
                let mut full = Vec::with_capacity(2 + keys.len() + args.len());
                let (name, head) = match (body, script.lua()) {
                    (true, Some(lua)) => ("EVAL", Value::from(lua.clone())),
                    _ => ("EVALSHA", Value::from(script.sha1().clone())),
                };
                full.push(head);
                full.push(Value::Integer(keys.len() as i64));
                full.extend(keys.iter().cloned().map(Value::from));
                full.extend(args.iter().cloned());
                (name, full)
            }
        }
    }

    /// [`send_on`](Self::send_on) without `ASKING`, for a command sent once: a plain command's
    /// arguments are moved, not copied.
    pub(crate) async fn send_once<R: FromValue>(
        self,
        conn: &WithOptions<Client>,
    ) -> std::result::Result<R, FredError> {
        match self {
            Cmd::Get(key) => conn.get(key).await,
            Cmd::Set(key, value, at, condition) => {
                conn.set(key, value, Some(Expiration::PXAT(at)), condition, false)
                    .await
            }
            Cmd::Del(key) => conn.del(key).await,
            script => script.send_on(conn, false).await,
        }
    }

    /// Sends the command on `conn` (after `ASKING`, when `asking`): a script as `EVALSHA`, and
    /// as `EVAL` if the server does not have it cached.
    pub(crate) async fn send_on<R: FromValue>(
        &self,
        conn: &WithOptions<Client>,
        asking: bool,
    ) -> std::result::Result<R, FredError> {
        if !asking {
            match self {
                Cmd::Get(key) => return conn.get(key.clone()).await,
                Cmd::Set(key, value, at, condition) => {
                    return conn
                        .set(
                            key.clone(),
                            value.clone(),
                            Some(Expiration::PXAT(*at)),
                            condition.clone(),
                            false,
                        )
                        .await
                }
                Cmd::Del(key) => return conn.del(key.clone()).await,
                Cmd::Script(..) => {}
            }
        }
        let (name, args) = self.parts(false);
        let first = send_one(conn, asking, name, args).await;
        match first {
            Err(e) if e.details().starts_with("NOSCRIPT") && matches!(self, Cmd::Script(..)) => {
                let (name, args) = self.parts(true);
                send_one(conn, asking, name, args).await
            }
            other => other,
        }
    }
}

async fn send_one<R: FromValue>(
    conn: &WithOptions<Client>,
    asking: bool,
    name: &'static str,
    args: Vec<Value>,
) -> std::result::Result<R, FredError> {
    let cmd = CustomCommand::new_static(name, ClusterHash::Custom(0), false);
    if !asking {
        return conn.custom::<R, Value>(cmd, args).await;
    }
    // `ASKING` applies to the next command on the connection: the two go as one pipeline,
    // so nothing is sent between them.
    let client: &Client = conn;
    Box::pin(async move {
        let pipeline = client.pipeline();
        let asking = CustomCommand::new_static("ASKING", ClusterHash::Custom(0), false);
        pipeline.custom::<(), Value>(asking, Vec::new()).await?;
        pipeline.custom::<(), Value>(cmd, args).await?;
        let mut replies: Vec<std::result::Result<Value, FredError>> = pipeline.try_all().await;
        match replies.pop() {
            Some(last) if replies.len() == 1 => R::from_value(last?),
            Some(Err(e)) => Err(e),
            _ => Err(FredError::new(FredKind::Unknown, "ASKING pipeline lost a reply")),
        }
    })
    .await
}

/// The nodes and the map they serve, swapped whole when either changes.
struct View {
    map: SlotMap,
    nodes: HashMap<Server, Arc<Node>>,
}

/// The connections of a cluster store.
pub(crate) struct Cluster {
    built: Built,
    options: Options,
    seeds: Vec<Server>,
    view: RwLock<Arc<View>>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// A refresh was asked for (a `MOVED`, an unreachable node, a slot nobody serves).
    wanted: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    /// A cluster client for [`RedisStore::clients`](crate::RedisStore::clients).
    admin: Client,
    admin_task: Mutex<Option<ConnectHandle>>,
    me: Weak<Cluster>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let task = self
            .admin_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Cluster {
    pub(crate) fn new(built: Built, options: Options) -> Arc<Cluster> {
        let seeds = built.fred.server.hosts();
        let admin = Client::new(
            built.fred.clone(),
            Some(built.perf.clone()),
            Some(built.connection.clone()),
            Some(built.policy.clone()),
        );
        Arc::new_cyclic(|me| Cluster {
            built,
            options,
            seeds,
            view: RwLock::new(Arc::new(View {
                map: SlotMap::empty(),
                nodes: HashMap::new(),
            })),
            refreshing: tokio::sync::Mutex::new(()),
            wanted: AtomicBool::new(true),
            last_refresh: Mutex::new(None),
            admin,
            admin_task: Mutex::new(None),
            me: me.clone(),
        })
    }

    fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The cluster client handed out by `clients()`.
    pub(crate) fn admin(&self) -> &Client {
        &self.admin
    }

    /// Every primary's node, as the map has them.
    pub(crate) fn primaries(&self) -> Vec<Arc<Node>> {
        let view = self.view();
        view.map
            .primaries()
            .iter()
            .filter_map(|s| view.nodes.get(s).cloned())
            .collect()
    }

    /// Every node this store has connections to (primaries, and `ASK` targets not yet in the map).
    pub(crate) fn nodes(&self) -> Vec<Arc<Node>> {
        self.view().nodes.values().cloned().collect()
    }

    /// Slots no node serves in the map as this store last read it.
    pub(crate) fn uncovered(&self) -> usize {
        self.view().map.uncovered()
    }

    /// Connects: reads the map from the configured nodes, connects every primary and waits for them (at
    /// most `timeout` each), and starts the background refresh.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<()> {
        let admin = connect_one(self.admin.clone(), timeout)
            .await
            .map_err(|e| map_connect_error(e, self.built.tls, timeout))?;
        *self.admin_task.lock().unwrap_or_else(PoisonError::into_inner) = Some(admin);
        self.refresh_now(false).await?;
        let nodes = self.nodes();
        let results = futures::future::join_all(nodes.iter().map(|n| n.connect(timeout))).await;
        for result in results {
            result.map_err(|e| map_connect_error(e, self.built.tls, timeout))?;
        }
        for node in &nodes {
            node.check_fencing().await?;
        }
        self.start_refresher();
        Ok(())
    }

    /// Starts everything in the background: the map is read (and retried) by the refresher.
    pub(crate) fn connect_lazy(&self) {
        *self.admin_task.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.admin.connect());
        self.start_refresher();
    }

    /// Closes every connection.
    pub(crate) async fn close(&self) {
        for node in self.nodes() {
            node.close().await;
        }
        let _ = self.admin.quit().await;
    }

    /// Asks the refresher to read the map soon.
    pub(crate) fn request_refresh(&self) {
        self.wanted.store(true, Ordering::Release);
    }

    /// The node serving `slot`; a slot nobody serves (yet) is `Unavailable`, and asks for a
    /// refresh.
    pub(crate) fn node_for(&self, slot: u16) -> Result<Arc<Node>> {
        let view = self.view();
        match view.map.owner(slot).and_then(|s| view.nodes.get(s)) {
            Some(node) => Ok(Arc::clone(node)),
            None => {
                self.request_refresh();
                Err(Error::unavailable(
                    BACKEND,
                    format!(
                        "no cluster node is known to serve hash slot {slot} (the slot map is being read \
                         again)"
                    ),
                ))
            }
        }
    }

    /// The partition of the key `key` (rendered with the store's prefix): the primary serving
    /// its slot in the map as known now, or [`Partition::WHOLE`] when no known node serves it.
    /// No I/O.
    pub(crate) fn partition(&self, key: &[u8]) -> Partition {
        let slot = fred::util::redis_keyslot(key);
        self.view()
            .map
            .owner(slot)
            .map_or(Partition::WHOLE, node_partition)
    }

    /// The primary the map names for `partition` now, with its node (`None` when this store
    /// has no connections to it yet); `None` when no primary of the map has that partition.
    fn serving(&self, partition: Partition) -> Option<(Server, Option<Arc<Node>>)> {
        let view = self.view();
        let server = view
            .map
            .primaries()
            .iter()
            .find(|s| node_partition(s) == partition)?;
        Some((server.clone(), view.nodes.get(server).cloned()))
    }

    /// The probe of one node's partition: `PING` on the node serving it (every pooled
    /// connection and the control connection). A node that does not answer may have been
    /// failed over: the map is read again, and a partition whose node serves no slot any more
    /// answers up ("serves no slot": its keys belong to another node's partition now).
    /// Down while the node's writes are paused by its fence (a replay could not write there).
    pub(crate) async fn partition_health(&self, partition: Partition) -> Health {
        let started = Instant::now();
        let Some((server, node)) = self.serving(partition) else {
            return ended(partition, started);
        };
        let (status, detail) = match &node {
            Some(node) => probe_node(node).await,
            None => (
                HealthStatus::Down,
                "no connection to it yet (the slot map is being read again)".to_owned(),
            ),
        };
        if status != HealthStatus::Down {
            return Health::new(BACKEND, status)
                .with_latency(started.elapsed())
                .with_detail(format!("cluster node {}:{}: {detail}", server.host, server.port));
        }
        // Failed over or removed? Then the map says so now.
        if self.refresh_now(true).await.is_ok() && self.serving(partition).is_none() {
            return ended(partition, started);
        }
        Health::new(BACKEND, HealthStatus::Down)
            .with_latency(started.elapsed())
            .with_detail(format!("cluster node {}:{}: {detail}", server.host, server.port))
    }

    /// The node at `server`, connected in the background if it is new (an `ASK` target, or a
    /// `MOVED` to a node not in the map yet).
    fn node_at(&self, server: &Server) -> Arc<Node> {
        if let Some(node) = self.view().nodes.get(server) {
            return Arc::clone(node);
        }
        let mut guard = self.view.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(node) = guard.nodes.get(server) {
            return Arc::clone(node);
        }
        let node = Arc::new(Node::new(&self.built, &self.options, Some(server.clone())));
        node.connect_lazy();
        let mut nodes = guard.nodes.clone();
        nodes.insert(server.clone(), Arc::clone(&node));
        *guard = Arc::new(View {
            map: guard.map.clone(),
            nodes,
        });
        node
    }

    /// The node at `server` for a whole-keyspace call (a node the slot map does not list yet:
    /// the target of a migration, the new owner of a slot moved since the map was read): this
    /// store's node for it, else a new one, waited for until connected (at most the connect
    /// timeout; one still down then fails the call's first command on it).
    pub(crate) async fn node_connected(&self, server: &Server) -> Arc<Node> {
        let node = self.node_at(server);
        let deadline = Instant::now() + self.built.connect_timeout;
        while !node.is_connected() && Instant::now() < deadline {
            tokio::time::sleep(crate::node::CONNECT_POLL).await;
        }
        node
    }

    /// A `MOVED slot server`: the map says so from now on, and is read again soon.
    fn moved(&self, slot: u16, server: &Server) {
        let node = self.node_at(server);
        drop(node);
        let mut guard = self.view.write().unwrap_or_else(PoisonError::into_inner);
        let mut map = guard.map.clone();
        map.assign(slot, slot, server.clone());
        *guard = Arc::new(View {
            map,
            nodes: guard.nodes.clone(),
        });
        drop(guard);
        self.request_refresh();
    }

    /// Sends `cmd` for `key` to the node serving its slot, following `MOVED` and `ASK`; a
    /// write under that node's fence. `namespace` names the session in errors.
    pub(crate) async fn send<R: FromValue>(
        &self,
        key: &Key,
        write: bool,
        op: &'static str,
        namespace: &str,
        cmd: &Cmd<'_>,
    ) -> Result<R> {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let mut asking: Option<Server> = None;
        let mut last = None;
        for attempt in 0..MAX_REDIRECTS {
            let node = match asking.take() {
                Some(server) => (self.node_at(&server), true),
                None => (self.node_for(slot)?, false),
            };
            let (node, ask) = node;
            if attempt > 0 && !node.is_connected() {
                // Redirected to a node this store has just met: give its connections the
                // command's own timeout to come up rather than failing a call Redis would serve.
                self.wait_up(&node).await;
            }
            let (i, conn) = match node.up() {
                Ok(up) => up,
                Err(e) => {
                    // Down, or gone (drained and removed, failed over): read the map again,
                    // and try the slot's owner if it is another node now.
                    if !ask && attempt + 1 < MAX_REDIRECTS && self.refresh_now(true).await.is_ok() {
                        if let Ok(owner) = self.node_for(slot) {
                            if !Arc::ptr_eq(&owner, &node) {
                                continue;
                            }
                        }
                    }
                    self.request_refresh();
                    return Err(e);
                }
            };
            let armed = if write { Some(node.begin_write(i)?) } else { None };
            let result: std::result::Result<Value, FredError> = cmd.send_on(conn, ask).await;
            let redirect = match &result {
                Err(e) => {
                    let asked = node.server.clone().unwrap_or_else(|| Server::new("", 0));
                    Redirect::parse(e.details(), &asked)
                }
                Ok(_) => None,
            };
            match redirect {
                Some(Redirect::Moved { slot: moved, server }) => {
                    // Not run: the node refused it.
                    if let Some(armed) = armed {
                        armed.disarm();
                    }
                    self.moved(moved, &server);
                    last = result.err();
                }
                Some(Redirect::Ask { server }) => {
                    if let Some(armed) = armed {
                        armed.disarm();
                    }
                    asking = Some(server);
                    last = result.err();
                }
                None if result.as_ref().err().is_some_and(refused_for_now) && attempt + 1 < MAX_REDIRECTS => {
                    // `CLUSTERDOWN Hash slot not served` / `TRYAGAIN`: refused before running,
                    // while slots change hands. Read the map again and retry after a pause.
                    if let Some(armed) = armed {
                        armed.disarm();
                    }
                    last = result.err();
                    let _ = self.refresh_now(true).await;
                    tokio::time::sleep(RETRY_PAUSE * (attempt as u32 + 1)).await;
                }
                None => {
                    let result = result.and_then(R::from_value);
                    if let Err(e) = &result {
                        if is_unreachable(e) {
                            self.request_refresh();
                        }
                    }
                    return match armed {
                        Some(armed) => node.end_write(armed, result, op, namespace).await,
                        None => node.read_result(i, op, Some(namespace), result),
                    };
                }
            }
        }
        let detail = last.map_or_else(String::new, |e| format!(" (last: {})", e.details()));
        Err(Error::unavailable(
            BACKEND,
            format!("the cluster redirected an {op} more than {MAX_REDIRECTS} times{detail}; the slot map is being read again"),
        ))
    }

    /// Waits until `node` has a connection up, for at most the command timeout.
    async fn wait_up(&self, node: &Node) {
        let deadline = Instant::now() + self.built.timeout;
        while !node.is_connected() && Instant::now() < deadline {
            tokio::time::sleep(crate::node::CONNECT_POLL).await;
        }
    }

    /// Reads the map now (waiting for a refresh already running, and skipping one if it ended
    /// after this call began).
    pub(crate) async fn refresh_now(&self, lazy: bool) -> Result<()> {
        let asked_at = Instant::now();
        let _one = self.refreshing.lock().await;
        let fresh = self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at >= asked_at);
        if fresh {
            return Ok(());
        }
        self.wanted.store(false, Ordering::Release);
        let result = self.read_map().await;
        *self.last_refresh.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let map = match result {
            Ok(map) => map,
            Err(e) => {
                self.wanted.store(true, Ordering::Release);
                return Err(e);
            }
        };
        let old = self.view();
        let mut nodes = HashMap::with_capacity(map.primaries().len());
        let mut new = Vec::new();
        for server in map.primaries() {
            let node = match old.nodes.get(server) {
                Some(node) => Arc::clone(node),
                None => {
                    let node = Arc::new(Node::new(&self.built, &self.options, Some(server.clone())));
                    if lazy {
                        node.connect_lazy();
                        new.push(Arc::clone(&node));
                    }
                    node
                }
            };
            nodes.insert(server.clone(), node);
        }
        // A primary met now gets its connections before commands are routed to it (for at
        // most the connect timeout: one that does not come up is routed to, and fails fast).
        let deadline = Instant::now() + self.built.connect_timeout;
        while new.iter().any(|n| !n.is_connected()) && Instant::now() < deadline {
            tokio::time::sleep(crate::node::CONNECT_POLL).await;
        }
        if map.primaries() != old.map.primaries() {
            tracing::info!(
                backend = BACKEND,
                primaries = map.primaries().len(),
                uncovered_slots = map.uncovered(),
                "redis cluster: slot map changed"
            );
        }
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(View { map, nodes });
        Ok(())
    }

    /// `CLUSTER SLOTS` from a connected primary, else from each seed in turn.
    async fn read_map(&self) -> Result<SlotMap> {
        let mut last_error = None;
        for node in self.nodes() {
            let control = node.fence.control();
            if !control.is_connected() {
                continue;
            }
            let asked = node.server.clone().unwrap_or_else(|| Server::new("", 0));
            match control.cluster_slots::<Value>().await {
                Ok(reply) => match SlotMap::from_cluster_slots(reply, &asked) {
                    Ok(map) if map.uncovered() < crate::slots::SLOTS => return Ok(map),
                    Ok(_) => {
                        last_error = Some("a node answered CLUSTER SLOTS with no slot served".to_owned())
                    }
                    Err(e) => last_error = Some(e),
                },
                Err(e) => last_error = Some(e.details().to_owned()),
            }
        }
        for seed in &self.seeds {
            match self.ask_seed(seed).await {
                Ok(map) if map.uncovered() < crate::slots::SLOTS => return Ok(map),
                Ok(_) => last_error = Some("a seed answered CLUSTER SLOTS with no slot served".to_owned()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(Error::unavailable(
            BACKEND,
            format!(
                "could not read the cluster's slot map from any node{}",
                last_error.map_or_else(String::new, |e| format!(" (last: {e})"))
            ),
        ))
    }

    /// `CLUSTER SLOTS` on a short-lived connection to `seed`.
    async fn ask_seed(&self, seed: &Server) -> std::result::Result<SlotMap, String> {
        let mut fred = self.built.fred.clone();
        fred.server = ServerConfig::Centralized { server: seed.clone() };
        fred.fail_fast = true;
        let client = Client::new(
            fred,
            Some(self.built.perf.clone()),
            Some(self.built.connection.clone()),
            None,
        );
        let timeout = self.built.connect_timeout;
        let answer = async {
            let handle = connect_one(client.clone(), timeout).await?;
            let reply = client
                .with_options(&Options {
                    timeout: Some(self.built.timeout),
                    ..Options::default()
                })
                .cluster_slots::<Value>()
                .await;
            let _ = client.quit().await;
            handle.abort();
            reply
        };
        let reply = answer.await.map_err(|e| {
            let e = map_connect_error(e, self.built.tls, timeout);
            format!("{}:{}: {e}", seed.host, seed.port)
        })?;
        SlotMap::from_cluster_slots(reply, seed)
    }

    /// The background refresher: ends with the store.
    fn start_refresher(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_POLL).await;
                let Some(cluster) = me.upgrade() else { return };
                if cluster.refresh_due() {
                    if let Err(e) = cluster.refresh_now(true).await {
                        tracing::debug!(backend = BACKEND, error = %e, "redis cluster: slot map not read");
                    }
                }
            }
        });
    }

    fn refresh_due(&self) -> bool {
        let since = self
            .last_refresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|at| at.elapsed());
        let Some(since) = since else { return true };
        if since >= REFRESH_EVERY {
            return true;
        }
        if since < REFRESH_MIN_GAP {
            return false;
        }
        self.wanted.load(Ordering::Acquire)
            || self.uncovered() > 0
            || self.primaries().iter().any(|n| !n.fully_connected())
    }
}

/// The partition of the node at `server`: FNV-1a of its host and port (never
/// [`Partition::WHOLE`]). The same address is the same partition, across map reads.
fn node_partition(server: &Server) -> Partition {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in server
        .host
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(&server.port.to_be_bytes())
    {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    Partition::new(hash.max(1))
}

/// The health of a partition whose node serves no slot (any more): nothing to wait for.
fn ended(partition: Partition, started: Instant) -> Health {
    Health::new(BACKEND, HealthStatus::Up)
        .with_latency(started.elapsed())
        .with_detail(format!(
            "partition {partition}: its node serves no slot in the current map (failed over or removed); \
             its keys belong to their new node's partition"
        ))
}

/// `PING` on every connection of `node`: up when all answer, degraded when some pooled ones
/// do, down when none does or while its writes are paused by its fence.
async fn probe_node(node: &Node) -> (HealthStatus, String) {
    let (pooled, control) = node.ping_all().await;
    let answered = pooled.iter().filter(|r| r.is_ok()).count();
    let first_error = pooled
        .iter()
        .find_map(|r| r.as_ref().err())
        .map(ToString::to_string)
        .or_else(|| control.as_ref().err().map(|e| format!("control connection: {e}")));
    let summary = format!("{answered} of {} connections answered", pooled.len());
    let detail = match first_error {
        Some(e) => format!("{summary}; {e}"),
        None => summary,
    };
    if answered == 0 {
        (HealthStatus::Down, detail)
    } else if !node.fence.writable() {
        (
            HealthStatus::Down,
            format!("{detail}; writes paused until a timed-out write's connection is confirmed closed"),
        )
    } else if answered == pooled.len() && control.is_ok() {
        (HealthStatus::Up, detail)
    } else {
        (HealthStatus::Degraded, detail)
    }
}

/// A refusal that a moment later, or on the slot's next owner, may not be repeated: the
/// command did not run.
fn refused_for_now(e: &FredError) -> bool {
    let d = e.details();
    d.starts_with("CLUSTERDOWN") || d.starts_with("TRYAGAIN")
}

/// An error that says the node could not be reached (the map may be out of date).
fn is_unreachable(e: &FredError) -> bool {
    matches!(e.kind(), FredKind::IO | FredKind::Canceled | FredKind::Timeout)
        || e.details().starts_with("CLUSTERDOWN")
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn a_node_is_one_partition_and_never_whole() {
        let a = Server::new("127.0.0.1", 7000);
        let b = Server::new("127.0.0.1", 7001);
        assert_eq!(
            node_partition(&a),
            node_partition(&Server::new("127.0.0.1", 7000))
        );
        assert_ne!(node_partition(&a), node_partition(&b));
        assert!(!node_partition(&a).is_whole() && !node_partition(&b).is_whole());
        assert_eq!(ended(node_partition(&a), Instant::now()).status, HealthStatus::Up);
    }
}
