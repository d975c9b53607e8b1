//! [`RedisStore`]: construction, the connection pool and the fenced command path.
//! The [`SessionStore`](session_core::SessionStore) operations are in `ops.rs`.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::config::Config as FredConfig;
use fred::types::config::Options;
use fred::types::{FromValue, Key, Value};
use session_core::{Error, KeyPrefix, Result, SessionKey, StoreOptions};

use crate::cluster::{Cluster, Cmd};
use crate::config::{Built, RedisConfig, Topology};
use crate::error::map_connect_error;
use crate::near::{Near, NearCacheStats};
use crate::node::{Node, CONNECT_POLL};
use crate::scripts::Scripts;
use crate::BACKEND;

/// Deadlines are sent to Lua as doubles; this keeps them exact (and Redis' PXAT in range).
pub(crate) const MAX_DEADLINE_MS: u64 = (1 << 53) - 1;
/// Most commands `load_many` and `save_many` send at once (at most half the client's queue).
const MAX_BATCH: usize = 1024;

/// A [`SessionStore`](session_core::SessionStore) on Redis: standalone, sentinel or cluster,
/// with TLS and ACL users.
///
/// Cheap to clone (an `Arc`); clones share the connections. Build it with
/// [`connect`](Self::connect) (waits for Redis and checks it) or
/// [`connect_lazy`](Self::connect_lazy) (returns at once; connects in the background).
///
/// Plain writes are one native command each (`SET … PXAT`, with `NX` for `create` and `XX`
/// for `update`); `save_if`, `touch`, `rotate` and `reconcile` are Lua scripts. With
/// tombstones on (`redis.tombstone_ttl_ms`), `delete` leaves a tombstone and `update` is a
/// script that treats one as missing (see the crate's README, *Tombstones*). Every command has the
/// configured timeout (`redis.timeout_ms`); while a connection is down calls fail at once with
/// [`Error::Unavailable`] instead of queueing, and the client reconnects in the background.
///
/// **Fencing.** A write that timed out or whose connection broke is never reported until the
/// connection it went out on has been closed by Redis (`CLIENT KILL ID`, sent on a separate
/// control connection), so it cannot land later; if Redis cannot confirm that, the store
/// refuses writes until it can (on a cluster: writes to that node only). The ACL user needs
/// `CLIENT` (`+client|id +client|kill`).
/// Health checks (`health()`, a fallback's probes) also run on every pooled connection; a
/// connection whose check times out is fenced like one whose command did, is probed no more,
/// and is dropped by fred's unresponsive check (`redis.unresponsive_timeout_ms`).
///
/// **Expiry** is judged by the Redis server's clock only: a key that Redis still holds is a live
/// session, whatever the application's clock says. `reconcile` judges a replayed change's
/// deadlines by the same clock (`TIME` inside its script): one clock per backend.
///
/// **Cluster.** The store keeps its own connections to every primary and its own slot map
/// (read with `CLUSTER SLOTS`), sends each command to its key's slot owner, and follows `MOVED`
/// and `ASK` itself: a primary that is down or failing over costs only the keys of its slots.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

/// Builds a [`RedisStore`] ([`RedisStore::builder`]).
///
/// ```no_run
/// # async fn demo() -> session_core::Result<()> {
/// use session_core::{KeyPrefix, StoreOptions};
/// use session_redis::{RedisConfig, RedisStore};
///
/// // The application already has a fred client (or pool: pass `pool.next()`).
/// let client = session_redis::fred::prelude::Builder::default_centralized().build()
///     .map_err(|e| session_core::Error::config("redis", e.to_string()))?;
/// let store = RedisStore::builder(RedisConfig::default())
///     .options(StoreOptions::new(KeyPrefix::new("app:session:")?))
///     .fred_client(&client)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until connect or connect_lazy"]
pub struct RedisStoreBuilder {
    config: RedisConfig,
    options: StoreOptions,
    fred: Option<FredConfig>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("config", &self.config)
            .field("options", &self.options)
            .field("fred_client", &self.fred.is_some())
            .finish()
    }
}

impl RedisStoreBuilder {
    /// The key prefix and the largest session accepted (default `session:` and 1 MiB).
    pub fn options(mut self, options: StoreOptions) -> Self {
        self.options = options;
        self
    }

    /// Takes the connection settings — servers, topology (standalone, sentinel, cluster),
    /// credentials, database, TLS — from an application's fred client (for a fred `Pool`,
    /// `pool.next()`), so Redis is described once. The store still opens its own connections
    /// with them: it closes a connection whose write timed out (fencing, see [`RedisStore`]),
    /// which must never be one the application's other commands use. Timeouts, pool size,
    /// reconnection and tombstones come from the [`RedisConfig`]; its connection keys (`url`,
    /// `username`, `password`, `database`, `tls`, `sentinel`) must be left unset.
    pub fn fred_client<C: ClientLike>(mut self, client: &C) -> Self {
        self.fred = Some(client.client_config());
        self
    }

    fn built(&self, verify: bool) -> Result<Built> {
        match &self.fred {
            Some(fred) => self.config.build_from_fred(fred.clone(), &self.options, verify),
            None => self.config.build(&self.options, verify),
        }
    }

    /// Connects as [`RedisStore::connect`] does.
    ///
    /// # Errors
    /// As [`RedisStore::connect`]; [`Error::Config`] naming a connection key that is set
    /// together with [`fred_client`](Self::fred_client).
    pub async fn connect(self) -> Result<RedisStore> {
        RedisStore::connect_built(self.built(true)?).await
    }

    /// Returns at once and connects in the background, as [`RedisStore::connect_lazy`] does.
    ///
    /// # Errors
    /// As [`RedisStore::connect_lazy`].
    pub fn connect_lazy(self) -> Result<RedisStore> {
        RedisStore::connect_lazy_built(self.built(false)?)
    }
}

/// One write on pooled connection `$i` of node `$node` under the fence, as a future of
/// `Result<T>`: [`Node::begin_write`], the command `$call` (built inside the future, so it is
/// held once), [`Node::end_write`].
macro_rules! fenced {
    ($node:expr, $i:expr, $op:expr, $ns:expr, $call:expr $(,)?) => {
        async {
            match $node.begin_write($i) {
                Err(e) => Err(e),
                Ok(armed) => {
                    let result = $call.await;
                    $node.end_write(armed, result, $op, $ns).await
                }
            }
        }
    };
}

/// The connections of a store: one node (standalone, sentinel) or a cluster's primaries.
pub(crate) enum Nodes {
    /// The one server (for sentinel: the master the sentinels name).
    One(Node),
    /// One node per primary, routed by slot.
    Cluster(Arc<Cluster>),
}

pub(crate) struct Inner {
    pub(crate) nodes: Nodes,
    pub(crate) prefix: KeyPrefix,
    pub(crate) max_bytes: usize,
    pub(crate) timeout: Duration,
    pub(crate) topology: Topology,
    tls: bool,
    pub(crate) scripts: Scripts,
    /// Commands `load_many` and `save_many` send at once.
    pub(crate) batch: usize,
    /// `redis.tombstone_ttl_ms`: `0` = tombstones off.
    pub(crate) tombstone_ttl_ms: u64,
    /// The near cache (`redis.near_cache.enabled`).
    pub(crate) near: Option<Arc<Near>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.inner.topology)
            .field("tls", &self.inner.tls)
            .field("key_prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("tombstone_ttl_ms", &self.inner.tombstone_ttl_ms)
            .field("near_cache", &self.inner.near.is_some())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects, waits for every pooled connection and the control connection (at most
    /// `redis.connect_timeout_ms`) and checks Redis with a `PING`. On a cluster it reads the
    /// slot map from the configured nodes first and connects to every primary. Later outages
    /// are handled in the background like [`connect_lazy`](Self::connect_lazy).
    ///
    /// # Errors
    /// * [`Error::Config`] naming the key for a bad value, wrong credentials (`redis.password`),
    ///   a TLS failure (`redis.tls`), a missing database (`redis.database`), a cluster URL
    ///   against a standalone server (`redis.url`), or an ACL user that may not run
    ///   `CLIENT ID`/`CLIENT KILL` (`redis.username`);
    /// * [`Error::Unavailable`] when Redis is unreachable, refuses the connection, or does not
    ///   answer in time (including a TLS client on a plaintext port: "TLS handshake did not
    ///   complete: is the server TLS?").
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        RedisStore::builder(config).connect().await
    }

    /// A builder: the shared key prefix and size limit ([`StoreOptions`]), or the connection
    /// settings of an application's own fred client.
    pub fn builder(config: RedisConfig) -> RedisStoreBuilder {
        RedisStoreBuilder {
            config,
            options: StoreOptions::default(),
            fred: None,
        }
    }

    async fn connect_built(built: Built) -> Result<Self> {
        let connect_timeout = built.connect_timeout;
        let tls = built.tls;
        let servers = server_list(&built.fred.server);
        let store = RedisStore::from_built(built.clone());
        let started = Instant::now();
        match &store.inner.nodes {
            Nodes::One(node) => {
                // Dropping the store stops the connections that did come up.
                node.connect(connect_timeout)
                    .await
                    .map_err(|e| naming(map_connect_error(e, tls, connect_timeout), &servers))?;
                node.fence
                    .control()
                    .ping::<Value>(None)
                    .await
                    .map_err(|e| naming(map_connect_error(e, tls, connect_timeout), &servers))?;
                node.check_fencing().await?;
                crate::sentinel::spawn_watch(&store.inner, &built);
            }
            Nodes::Cluster(cluster) => {
                cluster
                    .connect(connect_timeout)
                    .await
                    .map_err(|e| naming(e, &servers))?;
            }
        }
        tracing::debug!(
            backend = BACKEND,
            topology = store.inner.topology.as_str(),
            ping_us = started.elapsed().as_micros() as u64,
            "connected to Redis"
        );
        Ok(store)
    }

    /// Returns at once and connects in the background, retrying with exponential backoff
    /// (`redis.reconnect.*`) for as long as it takes. Until a connection is up every call fails
    /// at once with [`Error::Unavailable`], so a service can start while Redis is down (a
    /// fallback store serves meanwhile). [`wait_connected`](Self::wait_connected) waits for
    /// the first connection.
    ///
    /// Must be called from within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration value (nothing is connected then), or when
    /// called outside a Tokio runtime.
    pub fn connect_lazy(config: RedisConfig) -> Result<Self> {
        RedisStore::builder(config).connect_lazy()
    }

    fn connect_lazy_built(built: Built) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "redis",
                "RedisStore::connect_lazy must be called from within a Tokio runtime",
            ));
        }
        let store = RedisStore::from_built(built.clone());
        match &store.inner.nodes {
            Nodes::One(node) => {
                node.connect_lazy();
                store.check_fencing_when_connected();
                crate::sentinel::spawn_watch(&store.inner, &built);
            }
            Nodes::Cluster(cluster) => cluster.connect_lazy(),
        }
        Ok(store)
    }

    /// [`Node::check_fencing`] once the lazily started connections are up, logged as an error
    /// when it fails (writes are then refused: see `fenced`). Ends with the store.
    fn check_fencing_when_connected(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CONNECT_POLL).await;
                let Some(inner) = weak.upgrade() else { return };
                let Nodes::One(node) = &inner.nodes else { return };
                if !node.fully_connected() {
                    continue;
                }
                if let Err(e) = node.check_fencing().await {
                    if e.is_temporary() {
                        continue;
                    }
                    tracing::error!(
                        backend = BACKEND,
                        error = %e,
                        "redis: timed-out writes cannot be fenced with this connection; writes are refused"
                    );
                }
                return;
            }
        });
    }

    fn from_built(built: Built) -> Self {
        let options = Options {
            timeout: Some(built.timeout),
            max_attempts: Some(crate::config::COMMAND_ATTEMPTS),
            fail_fast: true,
            ..Options::default()
        };
        let nodes = if built.topology == Topology::Cluster {
            Nodes::Cluster(Cluster::new(built.clone(), options.clone()))
        } else {
            Nodes::One(Node::new(&built, &options, None))
        };
        RedisStore {
            inner: Arc::new(Inner {
                nodes,
                prefix: built.key_prefix,
                max_bytes: built.max_session_bytes,
                timeout: built.timeout,
                topology: built.topology,
                tls: built.tls,
                scripts: Scripts::new(),
                batch: (built.max_pending_commands / 2).clamp(1, MAX_BATCH),
                tombstone_ttl_ms: built.tombstone_ttl_ms,
                near: built.near.clone(),
            }),
        }
    }

    /// The deployment the store talks to.
    pub fn topology(&self) -> Topology {
        self.inner.topology
    }

    /// The key prefix of this store.
    pub fn key_prefix(&self) -> &KeyPrefix {
        &self.inner.prefix
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How long a tombstone lasts when `delete` finds no session (`redis.tombstone_ttl_ms`), or
    /// `None` when tombstones are off.
    pub fn tombstone_ttl(&self) -> Option<Duration> {
        (self.inner.tombstone_ttl_ms > 0).then(|| Duration::from_millis(self.inner.tombstone_ttl_ms))
    }

    /// The near cache's counters and size, or `None` when `redis.near_cache.enabled` is off.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.inner.near.as_ref().map(|near| near.stats())
    }

    /// Waits until the near cache has applied every invalidation for writes Redis acknowledged
    /// before this call — including writes by other processes and clients — so a load that
    /// follows sees them. Each tracking connection is pinged, and the invalidations that came
    /// before its answer are applied; a connection that does not answer within
    /// `redis.near_cache.max_stale_ms` makes the cache stop serving instead. Returns at once
    /// without a near cache. Normal operation does not need it (an invalidation is applied as
    /// soon as it arrives); it is for a caller that learns of another process's write out of
    /// band and must not read the copy it replaced.
    pub async fn sync_near_cache(&self) {
        if self.inner.near.is_none() {
            return;
        }
        let nodes = self.all_nodes();
        futures::future::join_all(nodes.iter().map(|n| n.sync_tracker())).await;
    }

    /// Every node's connections: the one server's, or each cluster primary's (and each node
    /// an `ASK` sent it to).
    pub(crate) fn all_nodes(&self) -> Vec<NodeRef<'_>> {
        match &self.inner.nodes {
            Nodes::One(node) => vec![NodeRef::Borrowed(node)],
            Nodes::Cluster(cluster) => cluster.nodes().into_iter().map(NodeRef::Shared).collect(),
        }
    }

    /// Whether at least one pooled connection is up right now (on a cluster: to every primary
    /// the slot map names, and the map covers every slot).
    pub fn is_connected(&self) -> bool {
        match &self.inner.nodes {
            Nodes::One(node) => node.is_connected(),
            Nodes::Cluster(cluster) => {
                let primaries = cluster.primaries();
                !primaries.is_empty()
                    && cluster.uncovered() == 0
                    && primaries.iter().all(|n| n.is_connected())
            }
        }
    }

    /// Connections this store has closed so that a write it gave up on could not land later.
    pub fn fenced_connections(&self) -> u64 {
        self.all_nodes()
            .iter()
            .map(|n| n.fence.fenced.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether writes are refused right now (on some node, for a cluster) because a
    /// connection with a write in flight could not be closed yet (Redis unreachable).
    pub fn writes_fenced_off(&self) -> bool {
        self.all_nodes().iter().any(|n| !n.fence.writable())
    }

    /// Waits until [`is_connected`](Self::is_connected), for at most `timeout`. `true` if so.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_connected() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(CONNECT_POLL).await;
        }
    }

    /// The underlying fred clients, for commands this crate does not send: one per pooled
    /// connection; on a cluster, one fred cluster client with the store's settings (the store
    /// itself keeps connections per primary). They carry the store's connection settings
    /// (timeouts, reconnection); the per-command `fail_fast` applies only through
    /// [`ClientLike::with_options`]. Writes sent through them are not fenced. They stop
    /// working when the last handle of this store is dropped.
    pub fn clients(&self) -> Vec<Client> {
        match &self.inner.nodes {
            Nodes::One(node) => node.conns.iter().map(|c| (**c).clone()).collect(),
            Nodes::Cluster(cluster) => vec![cluster.admin().clone()],
        }
    }

    /// Closes every connection (`QUIT`). Calls made afterwards fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        match &self.inner.nodes {
            Nodes::One(node) => node.close().await,
            Nodes::Cluster(cluster) => cluster.close().await,
        }
    }

    pub(crate) fn key(&self, key: &SessionKey) -> Key {
        Key::from(self.inner.prefix.render(key))
    }

    /// The one node of a standalone or sentinel store (`None` on a cluster).
    pub(crate) fn single(&self) -> Option<&Node> {
        match &self.inner.nodes {
            Nodes::One(node) => Some(node),
            Nodes::Cluster(_) => None,
        }
    }

    /// The cluster of a cluster store.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.inner.nodes {
            Nodes::One(_) => None,
            Nodes::Cluster(cluster) => Some(cluster),
        }
    }

    /// One write for `key` (its node's fence armed around it), routed to the key's slot on a
    /// cluster. `namespace` names the session in errors.
    pub(crate) async fn write<R: FromValue>(
        &self,
        key: &Key,
        op: &'static str,
        namespace: &str,
        cmd: Cmd<'_>,
    ) -> Result<R> {
        match &self.inner.nodes {
            Nodes::One(node) => {
                let (i, conn) = node.up()?;
                fenced!(node, i, op, namespace, cmd.send_once::<R>(conn)).await
            }
            Nodes::Cluster(cluster) => Box::pin(cluster.send(key, true, op, namespace, &cmd)).await,
        }
    }

    /// One read for `key`, routed like [`write`](Self::write). A read that times out gets its
    /// connection replaced, as a write's does, but nothing waits for that.
    pub(crate) async fn read<R: FromValue>(
        &self,
        key: &Key,
        op: &'static str,
        namespace: &str,
        cmd: Cmd<'_>,
    ) -> Result<R> {
        match &self.inner.nodes {
            Nodes::One(node) => {
                let (i, conn) = node.up()?;
                let result = cmd.send_once::<R>(conn).await;
                node.read_result(i, op, Some(namespace), result)
            }
            Nodes::Cluster(cluster) => Box::pin(cluster.send(key, false, op, namespace, &cmd)).await,
        }
    }
}

/// A node of the store: borrowed from a single-node store, or shared out of a cluster's view.
pub(crate) enum NodeRef<'a> {
    Borrowed(&'a Node),
    Shared(Arc<Node>),
}

impl std::ops::Deref for NodeRef<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        match self {
            NodeRef::Borrowed(node) => node,
            NodeRef::Shared(node) => node,
        }
    }
}

/// The servers a configuration names, as `host:port, …` (never credentials).
fn server_list(server: &fred::types::config::ServerConfig) -> String {
    server
        .hosts()
        .iter()
        .map(|s| format!("{}:{}", s.host, s.port))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A connect failure that names the servers tried, so "unavailable" says where.
fn naming(e: Error, servers: &str) -> Error {
    match e {
        Error::Unavailable {
            backend,
            message,
            source,
        } => Error::Unavailable {
            backend,
            message: format!("{servers}: {message}"),
            source,
        },
        other => other,
    }
}

/// A deadline as sent with `PXAT`: at least 1 (a past deadline removes the key), exact in Lua.
pub(crate) fn pxat(ms: u64) -> i64 {
    i64::try_from(ms.clamp(1, MAX_DEADLINE_MS)).unwrap_or(i64::MAX)
}
