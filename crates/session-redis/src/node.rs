//! One Redis server's connections: the pooled clients, the control connection and the fence
//! that closes a connection whose write was given up on. A standalone or sentinel store has
//! one node; a cluster store has one per primary (see `cluster.rs`), so that a node that is
//! down, or whose writes are paused by its fence, costs only the keys it serves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientInterface, ClientLike};
use fred::types::config::{Options, ReconnectError, Server, ServerConfig};
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Value};
use session_core::{Error, Result};

use crate::config::{Built, Topology};
use crate::error::map_command_error;
use crate::fence::{outcome_unknown, Armed, Fence};
use crate::near::tracker::{Target, Tracker};
use crate::near::Near;
use crate::sentinel::MasterView;
use crate::BACKEND;

/// How often a connect waits look whether the connection is up.
pub(crate) const CONNECT_POLL: Duration = Duration::from_millis(5);

/// The connections to one server (or to the master a sentinel names).
pub(crate) struct Node {
    /// The server, for a cluster node (`None`: the configured standalone or sentinel target).
    pub(crate) server: Option<Server>,
    /// The pooled clients, each wrapped with the per-command options (timeout, fail fast).
    pub(crate) conns: Vec<WithOptions<Client>>,
    next: AtomicUsize,
    tasks: Mutex<Vec<ConnectHandle>>,
    pub(crate) fence: Arc<Fence>,
    /// Sentinel only: the failover state the store's watcher keeps (`sentinel.rs`): writes
    /// paused while a failover is in progress, and the master connections must be on.
    pub(crate) view: Option<Arc<MasterView>>,
    timeout: Duration,
    /// The store's near cache and this node's tracker of it, when the store has one.
    near: Option<Box<NearNode>>,
}

/// A node's part in the near cache.
struct NearNode {
    near: Arc<Near>,
    /// Started with the connections.
    tracker: Mutex<Option<Tracker>>,
    /// Where the tracker connects: the cluster primary, or the configured standalone server
    /// (`None` for sentinel: the master the sentinels name).
    tracked: Option<Server>,
}

impl Drop for Node {
    fn drop(&mut self) {
        // The connection tasks hold their own references; stop them with the node.
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

impl Node {
    /// The clients of one node, not connected yet. `server`: a cluster primary to connect to
    /// directly (the configuration's cluster URL gives only the nodes to start from).
    pub(crate) fn new(built: &Built, options: &Options, server: Option<Server>) -> Node {
        let mut fred = built.fred.clone();
        let mut connection = built.connection.clone();
        if let Some(server) = &server {
            fred.server = ServerConfig::Centralized {
                server: server.clone(),
            };
            // A cluster node's refusals are the store's to act on (it reads the slot map
            // again); reconnecting to the same node would not change them.
            connection.reconnect_errors = vec![ReconnectError::Loading];
        }
        let new_client = || {
            Client::new(
                fred.clone(),
                Some(built.perf.clone()),
                Some(connection.clone()),
                Some(built.policy.clone()),
            )
        };
        let conns: Vec<WithOptions<Client>> = (0..built.pool_size)
            .map(|_| new_client().with_options(options))
            .collect();
        let control = new_client().with_options(options);
        let view = (built.topology == Topology::Sentinel && server.is_none()).then(MasterView::new);
        let fence = Fence::new(
            conns.iter().map(|c| (**c).clone()).collect(),
            control,
            built.timeout,
            view.clone(),
        );
        Node {
            server,
            conns,
            next: AtomicUsize::new(0),
            tasks: Mutex::new(Vec::new()),
            fence,
            view,
            timeout: built.timeout,
            near: built.near.as_ref().map(|near| {
                Box::new(NearNode {
                    near: Arc::clone(near),
                    tracker: Mutex::new(None),
                    tracked: match &fred.server {
                        ServerConfig::Centralized { server } => Some(server.clone()),
                        _ => None,
                    },
                })
            }),
        }
    }

    /// Starts this node's near-cache tracker, once, if the store has a near cache.
    fn start_tracking(&self) {
        let Some(near) = &self.near else { return };
        let mut tracker = near.tracker.lock().unwrap_or_else(|p| p.into_inner());
        if tracker.is_some() {
            return;
        }
        let control: Client = (**self.fence.control()).clone();
        let target = match (&self.view, &near.tracked) {
            (Some(view), _) => Target::Sentinel {
                view: Arc::clone(view),
                control,
            },
            (None, Some(server)) => Target::Fixed {
                server: server.clone(),
                // A cluster primary may be failed over: its role is checked on every heartbeat.
                control: self.server.is_some().then_some(control),
            },
            (None, None) => return,
        };
        *tracker = Some(near.near.track(target));
    }

    /// The near-cache tracker's reader while it is ready (see `near/tracker.rs`).
    pub(crate) fn near_reader(&self) -> Option<Client> {
        let near = self.near.as_ref()?;
        let tracker = near.tracker.lock().unwrap_or_else(|p| p.into_inner());
        tracker.as_ref()?.reader()
    }

    /// Waits until the near-cache tracker has applied every invalidation Redis sent it
    /// before now (at once without a near cache).
    pub(crate) async fn sync_tracker(&self) {
        let Some(near) = &self.near else { return };
        let tracker = near
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Tracker::syncer);
        if let Some(sync) = tracker {
            sync.sync().await;
        }
    }

    /// Every client of the node: the pooled ones, then the control connection.
    pub(crate) fn all_clients(&self) -> Vec<Client> {
        let mut clients: Vec<Client> = self.conns.iter().map(|c| (**c).clone()).collect();
        clients.push((**self.fence.control()).clone());
        clients
    }

    /// Starts every connection in the background (reconnecting for as long as it takes).
    pub(crate) fn connect_lazy(&self) {
        self.start_tracking();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for client in self.all_clients() {
            tasks.push(client.connect());
        }
    }

    /// Connects every client, waiting at most `timeout` for each; the first error otherwise.
    pub(crate) async fn connect(&self, timeout: Duration) -> std::result::Result<(), FredError> {
        self.start_tracking();
        let waits = self
            .all_clients()
            .into_iter()
            .map(|client| async move { connect_one(client, timeout).await });
        let results = futures::future::join_all(waits).await;
        let mut first_error = None;
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for result in results {
            match result {
                Ok(handle) => tasks.push(handle),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether every client of the node (control included) is connected.
    pub(crate) fn fully_connected(&self) -> bool {
        self.conns.iter().all(|c| c.is_connected()) && self.fence.control().is_connected()
    }

    /// Whether at least one pooled connection is up.
    pub(crate) fn is_connected(&self) -> bool {
        self.conns.iter().any(|c| c.is_connected())
    }

    /// Whether every pooled connection knows its `CLIENT ID` (needed to fence it).
    pub(crate) fn ids_known(&self) -> bool {
        self.conns.iter().all(|c| !c.connection_ids().is_empty())
    }

    /// The next usable pooled connection: its index, the client, and whether it is up.
    /// Usable: connected, not quarantined by the fence, and (sentinel) on the master the
    /// sentinels name — a connection still on a former master is being made again.
    pub(crate) fn pick(&self) -> (usize, &WithOptions<Client>, bool) {
        let conns = &self.conns;
        let fence = &self.fence;
        let usable = |i: usize, c: &WithOptions<Client>| {
            c.is_connected() && fence.usable(i) && self.view.as_ref().is_none_or(|v| v.serves(c))
        };
        let n = conns.len();
        if n == 1 {
            let only = &conns[0];
            return (0, only, usable(0, only));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| usable(i, &conns[i]))
            .map_or((start, &conns[start], false), |i| (i, &conns[i], true))
    }

    /// The next usable pooled connection, or [`Error::Unavailable`] when none is up.
    pub(crate) fn up(&self) -> Result<(usize, &WithOptions<Client>)> {
        match self.pick() {
            (i, conn, true) => Ok((i, conn)),
            _ => Err(not_connected()),
        }
    }

    pub(crate) fn err(&self, e: FredError, op: &'static str, namespace: Option<&str>) -> Error {
        let err = map_command_error(e, op, namespace, self.timeout);
        if let Some(ns) = namespace {
            tracing::debug!(backend = BACKEND, op, namespace = ns, error = %err, "redis command failed");
        }
        err
    }

    /// Arms the fence for one write about to be sent on pooled connection `i`: refused while
    /// an earlier write is not fenced, or when this connection's id is unknown. The caller
    /// awaits the command itself and hands its result to [`end_write`](Self::end_write).
    ///
    /// Two calls rather than one wrapping the command's future: a fred command future is
    /// several KiB, and an `async fn` taking one as an argument holds it twice (rustc keeps
    /// the argument and its moved copy), so every write's boxed future would double.
    pub(crate) fn begin_write(&self, i: usize) -> Result<Armed> {
        if self.view.as_ref().is_some_and(|v| v.paused()) {
            return Err(failover_in_progress());
        }
        if !self.fence.writable() {
            return Err(writes_fenced_off());
        }
        let armed = self.fence.arm(i);
        if armed.is_blind() {
            // Not sent: a write that could not be fenced if it timed out is not risked.
            armed.disarm();
            return Err(Error::Unavailable {
                backend: BACKEND,
                message: "the connection's CLIENT ID is unknown (the ACL user needs +client|id), so a \
                          timed-out write could not be fenced; writes are refused"
                    .into(),
                source: None,
            });
        }
        Ok(armed)
    }

    /// The outcome of a write armed by [`begin_write`](Self::begin_write): an unknown outcome
    /// is fenced before it is reported. (Dropped instead, the guard fences in the background.)
    pub(crate) async fn end_write<T>(
        &self,
        armed: Armed,
        result: std::result::Result<T, FredError>,
        op: &'static str,
        namespace: &str,
    ) -> Result<T> {
        match result {
            Ok(v) => {
                armed.disarm();
                Ok(v)
            }
            Err(e) if outcome_unknown(&e) => {
                // Boxed: the kill is a command future of its own, as large as the write's.
                let fenced = Box::pin(armed.fire()).await;
                let err = self.err(e, op, Some(namespace));
                if !fenced {
                    tracing::warn!(
                        backend = BACKEND,
                        op,
                        namespace,
                        "redis: a write's outcome is unknown and its connection could not be closed yet"
                    );
                }
                Err(err)
            }
            Err(e) => {
                armed.disarm();
                Err(self.err(e, op, Some(namespace)))
            }
        }
    }

    /// The result of a read on pooled connection `i`: a timeout or broken connection gets the
    /// connection replaced (fenced in the background), so a stuck connection does not stay in
    /// the pool. (A function of the result, not of the command's future: see `begin_write`.)
    pub(crate) fn read_result<T>(
        &self,
        i: usize,
        op: &'static str,
        namespace: Option<&str>,
        result: std::result::Result<T, FredError>,
    ) -> Result<T> {
        result.map_err(|e| {
            if outcome_unknown(&e) {
                // Dropped armed: the fence runs in the background; writes wait for it.
                drop(self.fence.arm(i));
            }
            self.err(e, op, namespace)
        })
    }

    /// Checks that timed-out writes can be fenced on this node: every pooled connection knows
    /// its `CLIENT ID`, and `CLIENT KILL` is allowed.
    pub(crate) async fn check_fencing(&self) -> Result<()> {
        if !self.ids_known() {
            return Err(Error::config(
                "redis.username",
                "Redis did not answer CLIENT ID for this user; the store needs CLIENT ID and CLIENT KILL \
                 to fence timed-out writes (ACL: +client|id +client|kill)",
            ));
        }
        let cmd = CustomCommand::new_static("CLIENT", ClusterHash::Custom(0), false);
        // No connection has this id: a permitted user gets 0 (or "No such client").
        let args = vec![Value::from("KILL"), Value::from("ID"), Value::Integer(i64::MAX)];
        match self.fence.control().custom::<Value, Value>(cmd, args).await {
            Ok(_) => Ok(()),
            Err(e) if e.details().to_ascii_lowercase().contains("no such client") => Ok(()),
            Err(e) if e.details().starts_with("NOPERM") => Err(Error::Config {
                key: "redis.username".into(),
                message: "the ACL user may not run CLIENT KILL, which the store needs to fence timed-out \
                          writes; grant +client|id +client|kill"
                    .into(),
                source: Some(Box::new(e)),
            }),
            Err(e) => Err(map_command_error(e, "connect", None, self.timeout)),
        }
    }

    /// Closes every connection of the node (`QUIT`).
    pub(crate) async fn close(&self) {
        // The tracker's connections go too (a closed store's cache must not answer).
        if let Some(near) = &self.near {
            let tracker = near.tracker.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(tracker);
        }
        for client in self.all_clients() {
            let _ = client.quit().await;
        }
    }

    /// `PING` on every pooled connection and on the control connection, at once: the pooled
    /// results (one per connection) and the control's. A pooled connection whose `PING` times
    /// out is fenced and replaced; a fenced one gets no probe (fred's unresponsive check
    /// measures from the last write, and only a silent connection is dropped).
    pub(crate) async fn ping_all(&self) -> (Vec<Result<()>>, Result<()>) {
        let pings = futures::future::join_all(self.conns.iter().enumerate().map(|(i, conn)| async move {
            if !conn.is_connected() || !self.fence.usable(i) {
                return Err(not_connected());
            }
            let pong = conn.ping::<Value>(None).await;
            self.read_result(i, "health", None, pong).map(drop)
        }));
        let control = async {
            self.fence
                .control()
                .ping::<Value>(None)
                .await
                .map(drop)
                .map_err(|e| self.err(e, "health", None))
        };
        futures::future::join(pings, control).await
    }
}

/// Waits for one client's first connection (`fail_fast` config: the task ends on the first
/// error), returning the task handle.
pub(crate) async fn connect_one(
    client: Client,
    timeout: Duration,
) -> std::result::Result<ConnectHandle, FredError> {
    let mut handle = client.connect();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        if client.is_connected() {
            return Ok(handle);
        }
        tokio::select! {
            ended = &mut handle => {
                return Err(match ended {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => FredError::new(FredKind::Canceled, "the connection task ended"),
                    Err(join) => FredError::new(FredKind::Unknown, format!("the connection task failed: {join}")),
                });
            }
            () = &mut deadline => {
                handle.abort();
                return Err(FredError::new(FredKind::Timeout, "Connection timed out."));
            }
            () = tokio::time::sleep(CONNECT_POLL) => {}
        }
    }
}

/// What a call gets while no pooled connection is up.
pub(crate) fn not_connected() -> Error {
    Error::unavailable(
        BACKEND,
        "not connected to Redis (the client reconnects in the background)",
    )
}

/// What a write gets while a sentinel failover of the master is in progress.
fn failover_in_progress() -> Error {
    Error::unavailable(
        BACKEND,
        "writes are paused: a sentinel failover of the master is in progress (a write to the old master \
         now could be discarded when it rejoins as a replica); they resume once the store is connected to \
         the new master, reads go on",
    )
}

/// What a write gets while an earlier write's connection is not confirmed closed.
fn writes_fenced_off() -> Error {
    Error::unavailable(
        BACKEND,
        "writes are paused: an earlier write timed out and Redis has not yet confirmed that its \
         connection is closed (so that write cannot land after this one); they resume once it has",
    )
}
