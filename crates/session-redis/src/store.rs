//! [`RedisStore`]: construction, the connection pool and the fenced command path.
//! The [`SessionStore`](session_core::SessionStore) operations are in `ops.rs`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientInterface, ClientLike};
use fred::types::config::Options;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Key, Value};
use session_core::{Error, KeyPrefix, Result, SessionKey};

use crate::config::{Built, RedisConfig, Topology};
use crate::error::{map_command_error, map_connect_error};
use crate::fence::{outcome_unknown, Armed, Fence};
use crate::scripts::Scripts;
use crate::BACKEND;

/// Deadlines are sent to Lua as doubles; this keeps them exact (and Redis' PXAT in range).
pub(crate) const MAX_DEADLINE_MS: u64 = (1 << 53) - 1;
/// Most commands `load_many` and `save_many` send at once (at most half the client's queue).
const MAX_BATCH: usize = 1024;
/// How often `connect` looks whether the first connection is up.
const CONNECT_POLL: Duration = Duration::from_millis(5);

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
/// refuses writes until it can. The ACL user needs `CLIENT` (`+client|id +client|kill`).
/// Health checks (`health()`, a fallback's probes) also run on every pooled connection; a
/// connection whose check times out is fenced like one whose command did, is probed no more,
/// and is dropped by fred's unresponsive check (`redis.unresponsive_timeout_ms`).
///
/// **Expiry** is judged by the Redis server's clock only: a key that Redis still holds is a live
/// session, whatever the application's clock says. `reconcile` judges a replayed change's
/// deadlines by the same clock (`TIME` inside its script): one clock per backend.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

/// One write on pooled connection `$i` of `$store` under the fence, as a future of
/// `Result<T>`: [`RedisStore::begin_write`], the command `$call` (built inside the future, so
/// it is held once), [`RedisStore::end_write`].
macro_rules! fenced {
    ($store:expr, $i:expr, $op:expr, $ns:expr, $call:expr $(,)?) => {
        async {
            match $store.begin_write($i) {
                Err(e) => Err(e),
                Ok(armed) => {
                    let result = $call.await;
                    $store.end_write(armed, result, $op, $ns).await
                }
            }
        }
    };
}
pub(crate) use fenced;

pub(crate) struct Inner {
    /// The pooled clients, each wrapped with the per-command options (timeout, fail fast).
    pub(crate) conns: Vec<WithOptions<Client>>,
    /// The per-command options.
    pub(crate) options: Options,
    next: AtomicUsize,
    tasks: Mutex<Vec<ConnectHandle>>,
    pub(crate) prefix: KeyPrefix,
    pub(crate) max_bytes: usize,
    pub(crate) timeout: Duration,
    pub(crate) topology: Topology,
    tls: bool,
    pub(crate) scripts: Scripts,
    /// Commands `load_many` and `save_many` send at once.
    pub(crate) batch: usize,
    pub(crate) fence: Arc<Fence>,
    /// `redis.tombstone_ttl_ms`: `0` = tombstones off.
    pub(crate) tombstone_ttl_ms: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The connection tasks hold their own references; stop them with the last store handle.
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.inner.topology)
            .field("tls", &self.inner.tls)
            .field("pool_size", &self.inner.conns.len())
            .field("key_prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("tombstone_ttl_ms", &self.inner.tombstone_ttl_ms)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl RedisStore {
    /// Connects, waits for every pooled connection and the control connection (at most
    /// `redis.connect_timeout_ms`) and checks Redis with a `PING`. Later outages are handled in
    /// the background like [`connect_lazy`](Self::connect_lazy).
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
        let built = config.build(true)?;
        let connect_timeout = built.connect_timeout;
        let tls = built.tls;
        let servers = server_list(&built.fred.server);
        let store = RedisStore::from_built(built);
        let mut clients: Vec<Client> = store.inner.conns.iter().map(|c| (**c).clone()).collect();
        clients.push((**store.inner.fence.control()).clone());
        let waits = clients
            .into_iter()
            .map(|client| async move { connect_one(client, connect_timeout).await });
        let results = futures::future::join_all(waits).await;
        let mut first_error = None;
        {
            let mut tasks = store.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for result in results {
                match result {
                    Ok(handle) => tasks.push(handle),
                    Err(e) => {
                        if first_error.is_none() {
                            first_error = Some(e);
                        }
                    }
                }
            }
        }
        if let Some(e) = first_error {
            // Dropping the store stops the connections that did come up.
            return Err(naming(map_connect_error(e, tls, connect_timeout), &servers));
        }
        let started = Instant::now();
        let control = store.inner.fence.control();
        control
            .ping::<Value>(None)
            .await
            .map_err(|e| naming(map_connect_error(e, tls, connect_timeout), &servers))?;
        store.check_fencing().await?;
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
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "redis",
                "RedisStore::connect_lazy must be called from within a Tokio runtime",
            ));
        }
        let built = config.build(false)?;
        let store = RedisStore::from_built(built);
        {
            let mut tasks = store.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for conn in &store.inner.conns {
                tasks.push(conn.connect());
            }
            tasks.push(store.inner.fence.control().connect());
        }
        store.check_fencing_when_connected();
        Ok(store)
    }

    /// [`check_fencing`](Self::check_fencing) once the lazily started connections are up,
    /// logged as an error when it fails (writes are then refused: see `fenced`). Ends with
    /// the store.
    fn check_fencing_when_connected(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CONNECT_POLL).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = RedisStore { inner };
                let up = store.inner.conns.iter().all(|c| c.is_connected())
                    && store.inner.fence.control().is_connected();
                if !up {
                    continue;
                }
                if let Err(e) = store.check_fencing().await {
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
        let new_client = || {
            Client::new(
                built.fred.clone(),
                Some(built.perf.clone()),
                Some(built.connection.clone()),
                Some(built.policy.clone()),
            )
        };
        let conns: Vec<WithOptions<Client>> = (0..built.pool_size)
            .map(|_| new_client().with_options(&options))
            .collect();
        let control = new_client().with_options(&options);
        let fence = Fence::new(
            conns.iter().map(|c| (**c).clone()).collect(),
            control,
            built.topology,
            built.timeout,
        );
        RedisStore {
            inner: Arc::new(Inner {
                conns,
                options,
                next: AtomicUsize::new(0),
                tasks: Mutex::new(Vec::new()),
                prefix: built.key_prefix,
                max_bytes: built.max_session_bytes,
                timeout: built.timeout,
                topology: built.topology,
                tls: built.tls,
                scripts: Scripts::new(),
                batch: (built.max_pending_commands / 2).clamp(1, MAX_BATCH),
                fence,
                tombstone_ttl_ms: built.tombstone_ttl_ms,
            }),
        }
    }

    /// Checks that timed-out writes can be fenced: every pooled connection knows its
    /// `CLIENT ID`, and `CLIENT KILL` is allowed.
    async fn check_fencing(&self) -> Result<()> {
        if self.inner.conns.iter().any(|c| c.connection_ids().is_empty()) {
            return Err(Error::config(
                "redis.username",
                "Redis did not answer CLIENT ID for this user; the store needs CLIENT ID and CLIENT KILL \
                 to fence timed-out writes (ACL: +client|id +client|kill)",
            ));
        }
        let cmd = CustomCommand::new_static("CLIENT", ClusterHash::Custom(0), false);
        // No connection has this id: a permitted user gets 0 (or "No such client").
        let args = vec![Value::from("KILL"), Value::from("ID"), Value::Integer(i64::MAX)];
        match self.inner.fence.control().custom::<Value, Value>(cmd, args).await {
            Ok(_) => Ok(()),
            Err(e) if e.details().to_ascii_lowercase().contains("no such client") => Ok(()),
            Err(e) if e.details().starts_with("NOPERM") => Err(Error::Config {
                key: "redis.username".into(),
                message: "the ACL user may not run CLIENT KILL, which the store needs to fence timed-out \
                          writes; grant +client|id +client|kill"
                    .into(),
                source: Some(Box::new(e)),
            }),
            Err(e) => Err(map_command_error(e, "connect", None, self.inner.timeout)),
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

    /// Whether at least one pooled connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.conns.iter().any(|c| c.is_connected())
    }

    /// Connections this store has closed so that a write it gave up on could not land later.
    pub fn fenced_connections(&self) -> u64 {
        self.inner.fence.fenced.load(Ordering::Relaxed)
    }

    /// Whether writes are refused right now because a connection with a write in flight could
    /// not be closed yet (Redis unreachable).
    pub fn writes_fenced_off(&self) -> bool {
        !self.inner.fence.writable()
    }

    /// Waits until at least one pooled connection is up, for at most `timeout`. `true` if one is.
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

    /// The underlying fred clients (one per pooled connection), for commands this crate does
    /// not send. They carry the store's connection settings (timeouts, reconnection); the
    /// per-command `fail_fast` applies only through [`ClientLike::with_options`]. Writes sent
    /// through them are not fenced. They stop working when the last handle of this store is
    /// dropped.
    pub fn clients(&self) -> Vec<Client> {
        self.inner.conns.iter().map(|c| (**c).clone()).collect()
    }

    /// Closes every connection (`QUIT`). Calls made afterwards fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        for conn in &self.inner.conns {
            let client: &Client = conn;
            let _ = client.quit().await;
        }
        let control: &Client = self.inner.fence.control();
        let _ = control.quit().await;
    }

    /// The next usable pooled connection: its index, the client, and whether it is up.
    pub(crate) fn pick(&self) -> (usize, &WithOptions<Client>, bool) {
        let conns = &self.inner.conns;
        let fence = &self.inner.fence;
        let n = conns.len();
        if n == 1 {
            let only = &conns[0];
            return (0, only, only.is_connected() && fence.usable(0));
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| conns[i].is_connected() && fence.usable(i))
            .map_or((start, &conns[start], false), |i| (i, &conns[i], true))
    }

    pub(crate) fn key(&self, key: &SessionKey) -> Key {
        Key::from(self.inner.prefix.render(key))
    }

    /// The routing of a one-key custom command (a script) on a cluster: the key's slot.
    pub(crate) fn hash_of(&self, key: &Key) -> ClusterHash {
        if self.inner.topology == Topology::Cluster {
            ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()))
        } else {
            ClusterHash::Custom(0)
        }
    }

    pub(crate) fn err(&self, e: FredError, op: &'static str, namespace: &str) -> Error {
        let err = map_command_error(e, op, Some(namespace), self.inner.timeout);
        tracing::debug!(backend = BACKEND, op, namespace, error = %err, "redis command failed");
        err
    }

    pub(crate) fn err_global(&self, e: FredError, op: &'static str) -> Error {
        map_command_error(e, op, None, self.inner.timeout)
    }

    /// Arms the fence for one write about to be sent on pooled connection `i`: refused while
    /// an earlier write is not fenced, or when this connection's id is unknown. The caller
    /// awaits the command itself and hands its result to [`end_write`](Self::end_write).
    ///
    /// Two calls rather than one wrapping the command's future: a fred command future is
    /// several KiB, and an `async fn` taking one as an argument holds it twice (rustc keeps
    /// the argument and its moved copy), so every write's boxed future would double.
    pub(crate) fn begin_write(&self, i: usize) -> Result<Armed> {
        if !self.inner.fence.writable() {
            return Err(writes_fenced_off());
        }
        let armed = self.inner.fence.arm(i);
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
                let err = self.err(e, op, namespace);
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
                Err(self.err(e, op, namespace))
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
                drop(self.inner.fence.arm(i));
            }
            match namespace {
                Some(ns) => self.err(e, op, ns),
                None => self.err_global(e, op),
            }
        })
    }

    /// `EVALSHA`, and on `NOSCRIPT` (first use, restarted server, new master) `EVAL`, which
    /// also caches the script on that server. Routed by the first key's slot on a cluster.
    ///
    /// Sent as custom commands: fred 10.1 has no `LuaInterface` for `WithOptions`, so its
    /// `evalsha` would drop the per-command options (fail fast in particular).
    pub(crate) async fn run_script(
        &self,
        conn: &WithOptions<Client>,
        script: &Script,
        keys: &[Key],
        args: Vec<Value>,
    ) -> std::result::Result<Value, FredError> {
        let hash = keys.first().map_or(ClusterHash::Custom(0), |k| self.hash_of(k));
        let mut full = Vec::with_capacity(2 + keys.len() + args.len());
        full.push(Value::from(script.sha1().clone()));
        full.push(Value::Integer(keys.len() as i64));
        full.extend(keys.iter().cloned().map(Value::from));
        full.extend(args);
        match conn
            .custom::<Value, Value>(
                CustomCommand::new_static("EVALSHA", hash.clone(), false),
                full.clone(),
            )
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => match script.lua() {
                Some(body) => {
                    full[0] = Value::from(body.clone());
                    conn.custom::<Value, Value>(CustomCommand::new_static("EVAL", hash, false), full)
                        .await
                }
                None => Err(e),
            },
            other => other,
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

/// Waits for one client's first connection (`fail_fast` config: the task ends on the first
/// error), returning the task handle.
async fn connect_one(client: Client, timeout: Duration) -> std::result::Result<ConnectHandle, FredError> {
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

/// What a write gets while an earlier write's connection is not confirmed closed.
fn writes_fenced_off() -> Error {
    Error::unavailable(
        BACKEND,
        "writes are paused: an earlier write timed out and Redis has not yet confirmed that its \
         connection is closed (so that write cannot land after this one); they resume once it has",
    )
}

/// A deadline as sent with `PXAT`: at least 1 (a past deadline removes the key), exact in Lua.
pub(crate) fn pxat(ms: u64) -> i64 {
    i64::try_from(ms.clamp(1, MAX_DEADLINE_MS)).unwrap_or(i64::MAX)
}
