//! [`RedisStore`]: the [`SessionStore`] on Redis.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::config::{Options, Server};
use fred::types::scripts::Script;
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Expiration, InfoKind, Key, SetOptions, Value};
use session_core::{
    cap_deadline, check_size, next_meta, now_ms, Error, Health, HealthStatus, KeyPrefix, Meta, Namespace,
    Record, Result, SessionId, SessionKey, SessionStore, StoreStats, EXPIRES_AT_OFFSET, HEADER_LEN,
    MAX_EXPIRES_AT_OFFSET,
};

use crate::config::{Built, RedisConfig, Topology};
use crate::error::{map_command_error, map_connect_error};
use crate::scripts::Scripts;
use crate::BACKEND;

/// Deadlines are sent to Lua as doubles; this keeps them exact (and Redis' PXAT in range).
const MAX_DEADLINE_MS: u64 = (1 << 53) - 1;
/// Most commands `load_many` and `save_many` send at once (at most half the client's queue).
const MAX_BATCH: usize = 1024;
/// Keys asked for per SCAN step.
const SCAN_COUNT: u32 = 1000;
/// How often `connect` looks whether the first connection is up.
const CONNECT_POLL: Duration = Duration::from_millis(5);

/// A [`SessionStore`] on Redis: standalone, sentinel or cluster, with TLS and ACL users.
///
/// Cheap to clone (an `Arc`); clones share the connections. Build it with
/// [`connect`](Self::connect) (waits for Redis and checks it) or
/// [`connect_lazy`](Self::connect_lazy) (returns at once; connects in the background).
///
/// Every command has the configured timeout (`redis.timeout_ms`); while a connection is down
/// calls fail at once with [`Error::Unavailable`] instead of queueing, and the client reconnects
/// in the background with exponential backoff. A command that timed out is never sent again by
/// the client (its outcome is unknown: it may still land).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The pooled clients, each wrapped with the per-command options (timeout, fail fast, one attempt).
    conns: Vec<WithOptions<Client>>,
    /// The per-command options.
    options: Options,
    next: AtomicUsize,
    tasks: Mutex<Vec<ConnectHandle>>,
    prefix: KeyPrefix,
    max_bytes: usize,
    timeout: Duration,
    topology: Topology,
    tls: bool,
    scripts: Scripts,
    /// Commands `load_many` and `save_many` send at once.
    batch: usize,
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
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// What a write script reported.
enum WriteOutcome {
    /// Stored as a new session: the metadata is the caller's.
    New,
    /// Overwrote a session: version, created_at, expires_at, max_expires_at as stored.
    Existing(u64, u64, u64, u64),
    Missing,
    NotEnvelope,
    Conflict(u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    Save,
    Update,
    SaveIf(u64),
}

impl RedisStore {
    /// Connects, waits for every pooled connection (at most `redis.connect_timeout_ms`) and
    /// checks Redis with a `PING`. Later outages are handled in the background like
    /// [`connect_lazy`](Self::connect_lazy).
    ///
    /// # Errors
    /// * [`Error::Config`] naming the key for a bad value, wrong credentials (`redis.password`),
    ///   a TLS failure (`redis.tls`), a missing database (`redis.database`), or a cluster URL
    ///   against a standalone server (`redis.url`);
    /// * [`Error::Unavailable`] when Redis is unreachable, refuses the connection, or does not
    ///   answer in time (including a TLS client on a plaintext port: "TLS handshake did not
    ///   complete: is the server TLS?").
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let built = config.build(true)?;
        let connect_timeout = built.connect_timeout;
        let tls = built.tls;
        let store = RedisStore::from_built(built);
        let waits = store.inner.conns.iter().map(|conn| {
            let client: Client = (**conn).clone();
            async move { connect_one(client, connect_timeout).await }
        });
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
            return Err(map_connect_error(e, tls, connect_timeout));
        }
        let conn = store.conn();
        let started = Instant::now();
        conn.ping::<Value>(None)
            .await
            .map_err(|e| map_connect_error(e, tls, connect_timeout))?;
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
    /// fallback store serves meanwhile).
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
        }
        Ok(store)
    }

    fn from_built(built: Built) -> Self {
        let options = Options {
            timeout: Some(built.timeout),
            max_attempts: Some(crate::config::COMMAND_ATTEMPTS),
            fail_fast: true,
            ..Options::default()
        };
        let conns = (0..built.pool_size)
            .map(|_| {
                let client = Client::new(
                    built.fred.clone(),
                    Some(built.perf.clone()),
                    Some(built.connection.clone()),
                    Some(built.policy.clone()),
                );
                client.with_options(&options)
            })
            .collect();
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

    /// Whether at least one pooled connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.conns.iter().any(|c| c.is_connected())
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
    /// per-command `fail_fast` applies only through [`ClientLike::with_options`]. They stop
    /// working when the last handle of this store is dropped.
    pub fn clients(&self) -> Vec<Client> {
        self.inner.conns.iter().map(|c| (**c).clone()).collect()
    }

    /// Closes every connection (`QUIT`). Calls made afterwards fail with [`Error::Unavailable`].
    pub async fn close(&self) {
        for conn in &self.inner.conns {
            let client: &Client = conn;
            let _ = client.quit().await;
        }
    }

    /// The next pooled connection, preferring one that is up.
    fn conn(&self) -> &WithOptions<Client> {
        self.pick().0
    }

    /// The next pooled connection, preferring one that is up, and whether it is up.
    fn pick(&self) -> (&WithOptions<Client>, bool) {
        let conns = &self.inner.conns;
        let n = conns.len();
        if n == 1 {
            let only = &conns[0];
            return (only, only.is_connected());
        }
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n)
            .map(|i| &conns[(start + i) % n])
            .find(|c| c.is_connected())
            .map_or((&conns[start], false), |c| (c, true))
    }

    fn key(&self, key: &SessionKey) -> Key {
        Key::from(self.inner.prefix.render(key))
    }

    fn err(&self, e: FredError, namespace: &str) -> Error {
        let err = map_command_error(e, Some(namespace), self.inner.timeout);
        tracing::debug!(backend = BACKEND, namespace, error = %err, "redis command failed");
        err
    }

    fn err_global(&self, e: FredError) -> Error {
        map_command_error(e, None, self.inner.timeout)
    }

    /// `EVALSHA`, and on `NOSCRIPT` (first use, restarted server, new master) `EVAL`, which
    /// also caches the script on that server.
    ///
    /// Sent as custom commands: fred 10.1 has no `LuaInterface` for `WithOptions`, so its
    /// `evalsha` would drop the per-command options (fail fast in particular).
    async fn run_script(
        &self,
        conn: &WithOptions<Client>,
        script: &Script,
        key: Key,
        args: Vec<Value>,
    ) -> std::result::Result<Value, FredError> {
        let mut full = Vec::with_capacity(3 + args.len());
        full.push(Value::from(script.sha1().clone()));
        full.push(Value::Integer(1));
        full.push(Value::from(key));
        full.extend(args);
        match conn.custom::<Value, Value>(evalsha_cmd(), full.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => match script.lua() {
                Some(body) => {
                    full[0] = Value::from(body.clone());
                    conn.custom::<Value, Value>(eval_cmd(), full).await
                }
                None => Err(e),
            },
            other => other,
        }
    }

    async fn write(
        &self,
        conn: &WithOptions<Client>,
        key: &SessionKey,
        record: &Record,
        mode: WriteMode,
    ) -> Result<Meta> {
        check_size(key, record, self.inner.max_bytes)?;
        let mut fresh = next_meta(None, record);
        fresh.expires_at = clamp_deadline(fresh.expires_at);
        let requested = clamp_deadline(record.meta.expires_at);
        let value = record.encode_with(&fresh);
        let (mode_arg, expected): (&'static str, Bytes) = match mode {
            WriteMode::Save => ("0", Bytes::new()),
            WriteMode::Update => ("1", Bytes::new()),
            WriteMode::SaveIf(v) => ("2", Bytes::copy_from_slice(&v.to_be_bytes())),
        };
        let args = vec![
            Value::Bytes(value),
            Value::from(mode_arg),
            Value::Bytes(expected),
            // Sent as integers (no string to allocate): deadlines are clamped below 2^53.
            Value::Integer(i64::try_from(requested).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(fresh.expires_at).unwrap_or(i64::MAX)),
        ];
        let reply = self
            .run_script(conn, &self.inner.scripts.write, self.key(key), args)
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        match parse_write_reply(reply).map_err(|e| self.err(e, key.ns()))? {
            WriteOutcome::New => Ok(fresh),
            WriteOutcome::Existing(version, created_at, expires_at, max_expires_at) => Ok(Meta {
                version,
                created_at,
                updated_at: record.meta.updated_at,
                expires_at,
                max_expires_at,
            }),
            WriteOutcome::Missing => Err(Error::not_found(key.ns())),
            WriteOutcome::NotEnvelope => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; it was left as is (save overwrites it)",
            )),
            WriteOutcome::Conflict(actual) => match mode {
                WriteMode::SaveIf(expected) => Err(Error::Conflict {
                    namespace: key.ns().to_owned(),
                    expected,
                    actual,
                }),
                _ => Err(Error::Backend {
                    backend: BACKEND,
                    message: "the write script reported a conflict for a write without a version".into(),
                    source: None,
                }),
            },
        }
    }

    fn decode_loaded(&self, value: Option<Bytes>, namespace: &str, now: u64) -> Result<Option<Record>> {
        match value {
            None => Ok(None),
            Some(bytes) => {
                let record = Record::decode(&bytes, namespace)?;
                if record.meta.is_expired(now) {
                    Ok(None)
                } else {
                    Ok(Some(record))
                }
            }
        }
    }

    /// `load_many` on one server (standalone, sentinel): each batch of GETs goes as one fred
    /// pipeline — one message to the connection task, one reply buffer, one timeout — instead
    /// of a command future per key (less than half the client's work per key). A key of another
    /// Redis type still fails alone (`Corrupt`), as with `load`. Sent like `load`, without the
    /// per-command options (the client-wide timeout applies).
    async fn load_many_pipelined(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let (conn, up) = self.pick();
        if !up {
            return Err(not_connected());
        }
        let client: &Client = conn;
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(self.inner.batch) {
            let pipeline = client.pipeline();
            for key in batch {
                let queued: std::result::Result<(), FredError> = pipeline.get(self.key(key)).await;
                queued.map_err(|e| self.err(e, key.ns()))?;
            }
            let replies: Vec<std::result::Result<Option<Bytes>, FredError>> = pipeline.try_all().await;
            if replies.len() != batch.len() {
                // The pipeline as a whole failed (not sent, timed out): one error for the batch.
                let e = replies
                    .into_iter()
                    .find_map(std::result::Result::err)
                    .unwrap_or_else(|| {
                        FredError::new(FredKind::Unknown, "a pipelined batch of GETs lost replies")
                    });
                return Err(self.err_global(e));
            }
            let now = now_ms();
            for (key, reply) in batch.iter().zip(replies) {
                match reply {
                    Ok(value) => out.push(self.decode_loaded(value, key.ns(), now)),
                    Err(e) => match self.err(e, key.ns()) {
                        e @ Error::Corrupt { .. } => out.push(Err(e)),
                        e => return Err(e),
                    },
                }
            }
        }
        Ok(out)
    }

    /// `SET key value NX PXAT deadline`: `true` if it was set.
    async fn set_nx(
        &self,
        conn: &WithOptions<Client>,
        key: Key,
        value: Bytes,
        deadline: u64,
    ) -> Result<bool, FredError> {
        let deadline = i64::try_from(clamp_deadline(deadline).max(1)).unwrap_or(i64::MAX);
        let reply: Value = conn
            .set(
                key,
                value,
                Some(Expiration::PXAT(deadline)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(!reply.is_null())
    }

    /// The primary nodes to run a whole-keyspace command on: every cluster primary, or the one server.
    fn primaries(&self, conn: &WithOptions<Client>) -> Vec<Option<Server>> {
        if self.inner.topology == Topology::Cluster {
            let client: &Client = conn;
            match fred::interfaces::ClusterInterface::cached_cluster_state(client) {
                Some(state) => state.unique_primary_nodes().into_iter().map(Some).collect(),
                None => vec![None],
            }
        } else {
            vec![None]
        }
    }

    fn on_node(&self, conn: &WithOptions<Client>, node: Option<Server>) -> WithOptions<Client> {
        let client: &Client = conn;
        client.with_options(&Options {
            cluster_node: node,
            ..self.inner.options.clone()
        })
    }

    async fn scan_count(
        &self,
        conn: &WithOptions<Client>,
        node: Option<Server>,
        pattern: &str,
    ) -> Result<u64> {
        let target = self.on_node(conn, node);
        let mut cursor = String::from("0");
        let mut count = 0u64;
        loop {
            let page: Value = target
                .scan_page(cursor.clone(), pattern.to_owned(), Some(SCAN_COUNT), None)
                .await
                .map_err(|e| self.err_global(e))?;
            let (next, keys) = parse_scan_page(page).map_err(|e| self.err_global(e))?;
            count += keys;
            if next == "0" {
                return Ok(count);
            }
            cursor = next;
        }
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
fn not_connected() -> Error {
    Error::unavailable(
        BACKEND,
        "not connected to Redis (the client reconnects in the background)",
    )
}

/// `EVALSHA sha 1 key args...`, routed by the key (argument 2) on a cluster.
fn evalsha_cmd() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
}

/// `EVAL body 1 key args...`, routed by the key (argument 2) on a cluster.
fn eval_cmd() -> CustomCommand {
    CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false)
}

fn clamp_deadline(ms: u64) -> u64 {
    ms.min(MAX_DEADLINE_MS)
}

fn int_at(items: &[Value], i: usize) -> std::result::Result<u64, FredError> {
    items
        .get(i)
        .and_then(Value::as_i64)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| FredError::new(FredKind::Parse, "the write script returned an unexpected reply"))
}

fn parse_write_reply(reply: Value) -> std::result::Result<WriteOutcome, FredError> {
    let bad = || FredError::new(FredKind::Parse, "the write script returned an unexpected reply");
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    let code = items.first().and_then(Value::as_i64).ok_or_else(bad)?;
    Ok(match code {
        1 => WriteOutcome::New,
        2 => WriteOutcome::Existing(
            int_at(&items, 1)?,
            int_at(&items, 2)?,
            int_at(&items, 3)?,
            int_at(&items, 4)?,
        ),
        0 => WriteOutcome::Missing,
        -1 => WriteOutcome::NotEnvelope,
        -2 => WriteOutcome::Conflict(int_at(&items, 1)?),
        _ => return Err(bad()),
    })
}

/// `[cursor, [keys...]]` → (cursor, number of keys).
fn parse_scan_page(page: Value) -> std::result::Result<(String, u64), FredError> {
    let bad = || FredError::new(FredKind::Parse, "SCAN returned an unexpected reply");
    let Value::Array(mut parts) = page else {
        return Err(bad());
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let keys = match parts.pop() {
        Some(Value::Array(keys)) => keys.len() as u64,
        Some(Value::Null) => 0,
        _ => return Err(bad()),
    };
    let cursor = parts
        .pop()
        .and_then(|c| c.as_str().map(|s| s.into_owned()))
        .ok_or_else(bad)?;
    Ok((cursor, keys))
}

/// `used_memory` from an `INFO memory` reply.
fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The deadline in an envelope header, capped at its max lifetime (for putting a value back).
fn header_deadline(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let read = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Some(cap_deadline(read(EXPIRES_AT_OFFSET), read(MAX_EXPIRES_AT_OFFSET)))
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let (conn, up) = self.pick();
        if !up {
            return Err(not_connected());
        }
        // A read is sent without the per-command options (the client-wide timeout still
        // applies): fred's fail-fast check repeats the one above, and replaying a GET that was
        // in flight when a connection broke is harmless.
        let client: &Client = conn;
        let value: Option<Bytes> = client
            .get(self.key(key))
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        self.decode_loaded(value, key.ns(), now_ms())
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write(self.conn(), key, record, WriteMode::Save).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_bytes)?;
        let mut meta = next_meta(None, record);
        meta.expires_at = clamp_deadline(meta.expires_at);
        let value = record.encode_with(&meta);
        let set = self
            .set_nx(self.conn(), self.key(key), value, meta.expires_at)
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        if set {
            Ok(meta)
        } else {
            Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            })
        }
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write(self.conn(), key, record, WriteMode::Update).await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: u64, record: &Record) -> Result<Meta> {
        self.write(self.conn(), key, record, WriteMode::SaveIf(expected_version))
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let n: i64 = self
            .conn()
            .del(self.key(key))
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        Ok(n > 0)
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        let conn = self.conn();
        let args = vec![Value::from(clamp_deadline(expires_at).max(1).to_string())];
        let reply = self
            .run_script(conn, &self.inner.scripts.touch, self.key(key), args)
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        match reply.as_i64() {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            Some(-1) => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; its deadline was not moved",
            )),
            _ => Err(self.err(
                FredError::new(FredKind::Parse, "the touch script returned an unexpected reply"),
                key.ns(),
            )),
        }
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let conn = self.conn();
        let old_key = self.key(key);
        let taken = self
            .run_script(conn, &self.inner.scripts.take, old_key.clone(), Vec::new())
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        let bytes = match taken {
            Value::Null => return Err(Error::not_found(key.ns())),
            Value::Integer(-1) => {
                return Err(Error::corrupt(
                    key.ns(),
                    "the stored value is not a session envelope; it was not rotated",
                ))
            }
            other => other.into_bytes().ok_or_else(|| {
                self.err(
                    FredError::new(FredKind::Parse, "the take script returned an unexpected reply"),
                    key.ns(),
                )
            })?,
        };
        let record = match Record::decode(&bytes, key.ns()) {
            Ok(r) => r,
            Err(e) => {
                // An envelope this build cannot read (unknown codec): put it back as it was.
                let deadline = header_deadline(&bytes).unwrap_or_else(now_ms);
                let _ = self.set_nx(conn, old_key, bytes, deadline).await;
                return Err(e);
            }
        };
        let deadline = record.meta.deadline();
        let new_key = self.key(&SessionKey::new(key.namespace.clone(), new_id.clone()));
        // If this fails the session is gone (fails closed): a timed-out SET may still land, and
        // putting the old one back could then leave two.
        let moved = self
            .set_nx(conn, new_key, bytes.clone(), deadline)
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        if moved {
            return Ok(record.meta);
        }
        self.set_nx(conn, old_key, bytes, deadline)
            .await
            .map_err(|e| self.err(e, key.ns()))?;
        Err(Error::AlreadyExists {
            namespace: key.ns().to_owned(),
        })
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        if self.inner.topology != Topology::Cluster {
            return self.load_many_pipelined(keys).await;
        }
        let conn = self.conn();
        let mut out = Vec::with_capacity(keys.len());
        // Each batch is sent together over one multiplexed connection: fred pipelines the
        // commands and routes each to its node on a cluster. Batches keep the client's command
        // queue (redis.max_pending_commands) from overflowing on huge calls.
        for batch in keys.chunks(self.inner.batch) {
            let replies =
                futures::future::join_all(batch.iter().map(|k| conn.get::<Option<Bytes>, _>(self.key(k))))
                    .await;
            let now = now_ms();
            for (key, reply) in batch.iter().zip(replies) {
                match reply {
                    Ok(value) => out.push(self.decode_loaded(value, key.ns(), now)),
                    Err(e) => match self.err(e, key.ns()) {
                        e @ Error::Corrupt { .. } => out.push(Err(e)),
                        e => return Err(e),
                    },
                }
            }
        }
        Ok(out)
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        for (key, record) in items {
            check_size(key, record, self.inner.max_bytes)?;
        }
        let conn = self.conn();
        let mut out = Vec::with_capacity(items.len());
        for batch in items.chunks(self.inner.batch) {
            let results = futures::future::join_all(
                batch
                    .iter()
                    .map(|(key, record)| self.write(conn, key, record, WriteMode::Save)),
            )
            .await;
            for result in results {
                out.push(result?);
            }
        }
        Ok(out)
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        let conn = self.conn();
        let mut pattern = self.inner.prefix.namespace_prefix(namespace);
        pattern.push('*');
        let counts = futures::future::join_all(
            self.primaries(conn)
                .into_iter()
                .map(|node| self.scan_count(conn, node, &pattern)),
        )
        .await;
        counts.into_iter().sum()
    }

    async fn stats(&self) -> Result<StoreStats> {
        let conn = self.conn();
        let nodes = self.primaries(conn);
        let mut stats = StoreStats::new(BACKEND);
        let mut bytes = 0u64;
        let mut known = false;
        for node in &nodes {
            let info: String = self
                .on_node(conn, node.clone())
                .info(Some(InfoKind::Memory))
                .await
                .map_err(|e| self.err_global(e))?;
            if let Some(used) = parse_used_memory(&info) {
                bytes += used;
                known = true;
            }
        }
        if known {
            stats.bytes = Some(bytes);
        }
        stats.extra.push(("nodes", nodes.len() as u64));
        Ok(stats)
    }

    async fn health(&self) -> Health {
        let started = Instant::now();
        let conn = self.conn();
        match conn.ping::<Value>(None).await {
            Ok(_) => Health::new(BACKEND, HealthStatus::Up)
                .with_latency(started.elapsed())
                .with_detail(self.inner.topology.as_str()),
            Err(e) => {
                let e = self.err_global(e);
                Health::new(BACKEND, HealthStatus::Down)
                    .with_latency(started.elapsed())
                    .with_detail(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parses_script_replies() {
        let arr = |v: Vec<i64>| Value::Array(v.into_iter().map(Value::Integer).collect());
        assert!(matches!(
            parse_write_reply(arr(vec![1])).unwrap(),
            WriteOutcome::New
        ));
        assert!(matches!(
            parse_write_reply(arr(vec![2, 3, 10, 20, 0])).unwrap(),
            WriteOutcome::Existing(3, 10, 20, 0)
        ));
        assert!(matches!(
            parse_write_reply(arr(vec![0])).unwrap(),
            WriteOutcome::Missing
        ));
        assert!(matches!(
            parse_write_reply(arr(vec![-1])).unwrap(),
            WriteOutcome::NotEnvelope
        ));
        assert!(matches!(
            parse_write_reply(arr(vec![-2, 7])).unwrap(),
            WriteOutcome::Conflict(7)
        ));
        assert!(parse_write_reply(arr(vec![9])).is_err());
        assert!(parse_write_reply(arr(vec![2, 1])).is_err());
        assert!(parse_write_reply(Value::Null).is_err());
    }

    #[test]
    fn parses_scan_pages_and_info() {
        let page = Value::Array(vec![
            Value::from("17"),
            Value::Array(vec![Value::from("a"), Value::from("b")]),
        ]);
        assert_eq!(parse_scan_page(page).unwrap(), ("17".to_owned(), 2));
        assert!(parse_scan_page(Value::Null).is_err());
        assert_eq!(
            parse_used_memory("# Memory\r\nused_memory:12345\r\nused_memory_human:12K\r\n"),
            Some(12345)
        );
        assert_eq!(parse_used_memory("nothing"), None);
    }

    #[test]
    fn header_deadline_is_capped() {
        let r = Record {
            meta: Meta {
                version: 1,
                created_at: 1,
                updated_at: 1,
                expires_at: 500,
                max_expires_at: 300,
            },
            codec: session_core::CodecId::RAW,
            payload: Bytes::from_static(b"x"),
        };
        assert_eq!(header_deadline(&r.encode()), Some(300));
        assert_eq!(header_deadline(b"short"), None);
    }
}
