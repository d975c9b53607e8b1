//! The [`SessionStore`] operations of [`RedisStore`]: plain and scripted writes, loads,
//! batches, health. A cluster's two-step `rotate` is in `rotate`, `count` in `count`, `scan`
//! in `scan`.

mod count;
mod near;
mod rotate;
mod scan;

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::{InfoKind, SetOptions, Value};
use session_core::backend::{
    check_size, decode_entry, encode_tombstone, is_principal_index, now_ms, stamp, Change, Entry, Reconciled,
    Record, Tombstone,
};
use session_core::{
    Error, Health, HealthStatus, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId, SessionKey,
    SessionStore, StoreStats, Version,
};

use crate::cluster::Cmd;
use crate::config::Topology;
use crate::node::{not_connected, Node};
use crate::replies::{parse_used_memory, ScriptReply};
use crate::store::{pxat, RedisStore, MAX_DEADLINE_MS};
use crate::BACKEND;

/// How a plain write treats an existing key.
#[derive(Clone, Copy)]
enum Plain {
    /// `SET … PXAT`: whether or not it exists.
    Save,
    /// `SET … NX PXAT`: only if absent.
    Create,
    /// `SET … XX PXAT`: only if present.
    Update,
}

impl Plain {
    fn op(self) -> &'static str {
        match self {
            Plain::Save => "save",
            Plain::Create => "create",
            Plain::Update => "update",
        }
    }
}

/// The metadata stored for a record, its deadline kept exact for Lua and `PXAT`.
fn stored_meta(record: &Record) -> Meta {
    let mut meta = stamp(record);
    meta.expires_at = meta.expires_at.min(MAX_DEADLINE_MS);
    meta
}

impl RedisStore {
    /// One plain write: a single `SET` with the absolute deadline. Two exceptions, both about
    /// tombstones: a `create` whose `SET NX` found the key taken runs the `create_over` script,
    /// which replaces a tombstone; an `update` of a store that keeps tombstones is the
    /// `update_live` script, which treats one as missing.
    async fn plain(&self, key: &SessionKey, record: &Record, how: Plain) -> Result<Meta> {
        check_size(key, record, self.inner.max_bytes)?;
        let meta = stored_meta(record);
        let value = record.encode_with(&meta);
        let options = match how {
            Plain::Save => None,
            Plain::Create => Some(SetOptions::NX),
            Plain::Update if self.keeps_tombstones() => {
                let script = &self.inner.scripts.update_live;
                return self.written_if(key, how, script, value, meta).await;
            }
            Plain::Update => Some(SetOptions::XX),
        };
        // Kept for a `create` that finds the key taken (a refcount, not a copy).
        let again = matches!(how, Plain::Create).then(|| value.clone());
        let written = self.set(key, how, value, meta, options).await?;
        match (how, written, again) {
            (_, true, _) | (Plain::Save, false, _) => Ok(meta),
            // Taken: by a session, or by a tombstone, which a new session may replace.
            (Plain::Create, false, Some(value)) => {
                let script = &self.inner.scripts.create_over;
                self.written_if(key, how, script, value, meta).await
            }
            (Plain::Create, false, None) => Err(already_exists(key)),
            (Plain::Update, false, _) => Err(Error::not_found(key.ns())),
        }
    }

    /// The `SET` of a plain write under the fence; whether it wrote (a `NX`/`XX` that did not
    /// apply answers nil).
    async fn set(
        &self,
        key: &SessionKey,
        how: Plain,
        value: Bytes,
        meta: Meta,
        condition: Option<SetOptions>,
    ) -> Result<bool> {
        let k = self.key(key);
        let set = Cmd::Set(k.clone(), value, pxat(meta.expires_at), condition);
        let reply: Value = self.write(&k, how.op(), key.ns(), set).await?;
        Ok(!reply.is_null())
    }

    /// A write by one of the scripts that answer 1 (written) or 0 (not: `create` finds the key
    /// taken, `update` finds no session).
    async fn written_if(
        &self,
        key: &SessionKey,
        how: Plain,
        script: &fred::types::scripts::Script,
        value: Bytes,
        meta: Meta,
    ) -> Result<Meta> {
        let args = vec![Value::Bytes(value), Value::Integer(pxat(meta.expires_at))];
        let reply = self.script(key, how.op(), script, args).await?;
        match (ScriptReply::of(reply), how) {
            (ScriptReply::Code(1), _) => Ok(meta),
            (ScriptReply::Code(0), Plain::Create) => Err(already_exists(key)),
            (ScriptReply::Code(0), _) => Err(Error::not_found(key.ns())),
            _ => Err(unexpected(how.op(), key.ns())),
        }
    }

    /// `delete` of a store that keeps no tombstones: `DEL`.
    async fn delete_plain(&self, key: &SessionKey) -> Result<bool> {
        let k = self.key(key);
        let n: i64 = self.write(&k, "delete", key.ns(), Cmd::Del(k.clone())).await?;
        Ok(n > 0)
    }

    /// A one-key script on `key`, as a write.
    async fn script(
        &self,
        key: &SessionKey,
        op: &'static str,
        script: &fred::types::scripts::Script,
        args: Vec<Value>,
    ) -> Result<Value> {
        let k = self.key(key);
        let keys = std::slice::from_ref(&k);
        self.write(&k, op, key.ns(), Cmd::Script(script, keys, args))
            .await
    }

    /// `delete` of a store that keeps tombstones: one script that leaves a tombstone with
    /// `tombstone`'s version and time; its deadline is the script's to set (the session's, or
    /// the lifetime from the server's clock).
    async fn delete_leaving_a_tombstone(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        let args = vec![
            Value::Bytes(encode_tombstone(&tombstone.meta(0))),
            Value::Integer(pxat(self.inner.tombstone_ttl_ms)),
        ];
        let reply = self
            .script(key, "delete", &self.inner.scripts.delete_tomb, args)
            .await?;
        match ScriptReply::of(reply) {
            ScriptReply::Code(1) => Ok(true),
            ScriptReply::Code(0) => Ok(false),
            ScriptReply::Code(-1) => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; it was left as is (save overwrites it)",
            )),
            _ => Err(unexpected("delete", key.ns())),
        }
    }

    fn decode_loaded(&self, value: Option<Bytes>, namespace: &str) -> Result<Option<Record>> {
        // Expiry is Redis's to judge: a key it still holds is live. A tombstone is no session.
        match value {
            None => Ok(None),
            Some(bytes) => match decode_entry(&bytes, namespace)? {
                Entry::Live(record) => Ok(Some(record)),
                Entry::Tombstone(_) => Ok(None),
            },
        }
    }

    /// `load_many` on one server (standalone, sentinel): each batch of GETs goes as one fred
    /// pipeline — one message to the connection task, one reply buffer, one timeout — instead
    /// of a command future per key. A key of another Redis type still fails alone (`Corrupt`).
    async fn load_many_pipelined(
        &self,
        node: &Node,
        keys: &[SessionKey],
    ) -> Result<Vec<Result<Option<Record>>>> {
        let (i, conn) = node.up()?;
        let client: &Client = conn;
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(self.inner.batch) {
            let names: Vec<_> = batch.iter().map(|key| (self.key(key), Some(key.ns()))).collect();
            let replies = pipelined_gets(node, i, client, names, "load_many").await?;
            for (key, reply) in batch.iter().zip(replies) {
                match reply {
                    Ok(value) => out.push(self.decode_loaded(value, key.ns())),
                    Err(e) => match node.err(e, "load_many", Some(key.ns())) {
                        e @ Error::Corrupt { .. } => out.push(Err(e)),
                        e => return Err(e),
                    },
                }
            }
        }
        Ok(out)
    }
}

/// One `GET` per key in one fred pipeline on `client` (pooled connection `i` of `node`):
/// one message to the connection task, one reply buffer, one timeout. One reply per key — a
/// key of another Redis type fails alone — or the batch's error when the pipeline as a whole
/// failed (not sent, timed out). Each key comes with the namespace its errors name.
pub(super) async fn pipelined_gets(
    node: &Node,
    i: usize,
    client: &Client,
    keys: Vec<(fred::types::Key, Option<&str>)>,
    op: &'static str,
) -> Result<Vec<std::result::Result<Option<Bytes>, FredError>>> {
    let pipeline = client.pipeline();
    let mut sent = 0usize;
    for (key, namespace) in keys {
        let queued: std::result::Result<(), FredError> = pipeline.get(key).await;
        queued.map_err(|e| node.err(e, op, namespace))?;
        sent += 1;
    }
    let replies: Vec<std::result::Result<Option<Bytes>, FredError>> = pipeline.try_all().await;
    if replies.len() != sent {
        let e = replies
            .into_iter()
            .find_map(std::result::Result::err)
            .unwrap_or_else(|| FredError::new(FredKind::Unknown, "a pipelined batch of GETs lost replies"));
        return node.read_result(i, op, None, Err(e));
    }
    Ok(replies)
}

/// The near cache's figures as `stats()`/`health()` extras (`near_cache_*`).
fn near_extras(near: &crate::NearCacheStats) -> [(&'static str, u64); 8] {
    [
        ("near_cache_hits", near.hits),
        ("near_cache_misses", near.misses),
        ("near_cache_invalidations", near.invalidations),
        ("near_cache_evictions", near.evictions),
        ("near_cache_resets", near.resets),
        ("near_cache_entries", near.entries),
        ("near_cache_bytes", near.bytes),
        ("near_cache_serving", u64::from(near.serving)),
    ]
}

impl RedisStore {
    /// `; near cache serving, N sessions` for `health()`'s detail (empty without one).
    fn near_line(&self) -> String {
        match self.near_cache_stats() {
            None => String::new(),
            Some(near) => format!(
                "; near cache {}, {} sessions, {} bytes",
                if near.serving {
                    "serving"
                } else {
                    "not serving (tracking not confirmed)"
                },
                near.entries,
                near.bytes
            ),
        }
    }
}

fn already_exists(key: &SessionKey) -> Error {
    Error::AlreadyExists {
        namespace: key.ns().to_owned(),
    }
}

fn unexpected(op: &'static str, namespace: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("the {op} script returned an unexpected reply (namespace {namespace:?})"),
        source: None,
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        // A principal's index is read from Redis every time: a revoke must see every bind
        // already acknowledged, not wait for an invalidation.
        if let Some(near) = self.inner.near.as_ref().filter(|_| !is_principal_index(key)) {
            return Ok(match self.load_entry_near(near, key).await? {
                Some(Entry::Live(record)) => Some(record),
                _ => None,
            });
        }
        let k = self.key(key);
        let get = Cmd::Get(k.clone());
        let value: Option<Bytes> = self.read(&k, "load", key.ns(), get).await?;
        self.decode_loaded(value, key.ns())
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        if let Some(near) = self.inner.near.as_ref().filter(|_| !is_principal_index(key)) {
            return self.load_entry_near(near, key).await;
        }
        let k = self.key(key);
        let get = Cmd::Get(k.clone());
        let value: Option<Bytes> = self.read(&k, "load", key.ns(), get).await?;
        value.map(|bytes| decode_entry(&bytes, key.ns())).transpose()
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.own_write(&[key], self.plain(key, record, Plain::Save)).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.own_write(&[key], self.plain(key, record, Plain::Create))
            .await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.own_write(&[key], self.plain(key, record, Plain::Update))
            .await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.own_write(&[key], self.save_if_uncached(key, expected_version, record))
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.own_write(&[key], self.delete_uncached(key)).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.own_write(&[key], self.delete_leaving_uncached(key, tombstone))
            .await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.own_write(&[key], self.touch_uncached(key, expires_at)).await
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        self.own_write(&[key, &new_key], self.rotate_uncached(key, new_id))
            .await
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.own_write(&[key], self.reconcile_uncached(key, base, change))
            .await
    }

    /// With `redis.tombstone_ttl_ms` above 0.
    fn keeps_tombstones(&self) -> bool {
        self.inner.tombstone_ttl_ms > 0
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        match &self.inner.near {
            Some(near) => self.load_many_near(near, keys).await,
            None => self.load_many_uncached(keys).await,
        }
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let keys: Vec<&SessionKey> = items.iter().map(|(k, _)| k).collect();
        self.own_write(&keys, self.save_many_uncached(items)).await
    }
    /// Standalone and sentinel: `SCAN` of the one server. Cluster: exact while slots migrate,
    /// see `count_cluster`.
    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        if let Some(cluster) = self.cluster() {
            return self.count_cluster(cluster, namespace).await;
        }
        let mut pattern = self.inner.prefix.namespace_prefix(namespace);
        pattern.push('*');
        let nodes = self.primaries().await?;
        // One SCAN per node in flight, and the rest of the batch shared between the nodes.
        let chunk = self.inner.batch.saturating_sub(nodes.len()) / nodes.len().max(1);
        let counts =
            futures::future::join_all(nodes.iter().map(|node| self.scan_count(node, &pattern, chunk))).await;
        counts.into_iter().sum()
    }

    /// `SCAN MATCH {prefix}*` on the one server, or on each cluster primary in turn, then the
    /// listed keys' values by pipelined `GET`s; read from Redis, never from the near cache. The
    /// cursor names the primary and the server process Redis's cursor is from; a cluster whose
    /// slots moved, or a server restarted or failed over, since the previous page is
    /// `Error::Backend` (start again). See `ops/scan.rs`.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.scan_page(cursor, limit).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let nodes = self.primaries().await?;
        let mut stats = StoreStats::new(BACKEND);
        let mut bytes = 0u64;
        let mut known = false;
        for node in &nodes {
            let (_, conn) = node.up()?;
            let info: String = conn
                .info(Some(InfoKind::Memory))
                .await
                .map_err(|e| node.err(e, "stats", None))?;
            if let Some(used) = parse_used_memory(&info) {
                bytes += used;
                known = true;
            }
        }
        if known {
            stats.bytes = Some(bytes);
        }
        stats.extra.push(("nodes", nodes.len() as u64));
        stats
            .extra
            .push(("fenced_connections", self.fenced_connections()));
        if let Some(near) = self.near_cache_stats() {
            stats.extra.extend(near_extras(&near));
        }
        Ok(stats)
    }

    /// `PING` on every pooled connection and control connection (of every node, on a cluster),
    /// at once. A connection whose `PING` times out is fenced and replaced (a health probe never
    /// keeps a stuck connection in the pool). Up when all answer, degraded when some do; on a
    /// cluster, also degraded while a slot has no known node.
    async fn health(&self) -> Health {
        let started = Instant::now();
        let nodes = self.all_nodes();
        let answers = futures::future::join_all(nodes.iter().map(|n| n.ping_all())).await;
        let mut results = Vec::new();
        let mut control_error = None;
        for (pooled, control) in answers {
            results.extend(pooled);
            if let Err(e) = control {
                control_error.get_or_insert(e);
            }
        }
        let uncovered = self.cluster().map_or(0, |c| c.uncovered());
        let failed: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let latency = started.elapsed();
        let fence_note = if self.writes_fenced_off() {
            "; writes paused until a timed-out write's connection is confirmed closed"
        } else {
            ""
        };
        let slots_note = if uncovered > 0 {
            format!("; {uncovered} hash slots have no known node")
        } else {
            String::new()
        };
        if !results.is_empty()
            && failed.is_empty()
            && control_error.is_none()
            && fence_note.is_empty()
            && slots_note.is_empty()
        {
            let mut health = Health::new(BACKEND, HealthStatus::Up)
                .with_latency(latency)
                .with_detail(format!("{}{}", self.inner.topology.as_str(), self.near_line()));
            if let Some(near) = self.near_cache_stats() {
                health.extra.extend(near_extras(&near));
            }
            return health;
        }
        let answered = results.len() - failed.len();
        let status = if answered == 0 {
            HealthStatus::Down
        } else {
            HealthStatus::Degraded
        };
        let first = failed
            .first()
            .map(|e| e.to_string())
            .or_else(|| control_error.map(|e| format!("control connection: {e}")))
            .unwrap_or_else(|| {
                if results.is_empty() {
                    not_connected().to_string()
                } else {
                    String::new()
                }
            });
        let mut health = Health::new(BACKEND, status)
            .with_latency(latency)
            .with_detail(format!(
                "{answered} of {} connections answered{fence_note}{slots_note}{}{first}{}",
                results.len(),
                if first.is_empty() { "" } else { "; " },
                self.near_line()
            ));
        health
            .extra
            .push(("fenced_connections", self.fenced_connections()));
        if let Some(near) = self.near_cache_stats() {
            health.extra.extend(near_extras(&near));
        }
        health
    }

    /// Standalone and sentinel: one partition, `WHOLE`. Cluster: the primary serving the key's
    /// slot in the map as known now (one partition per node; see `cluster.rs`). No I/O.
    fn partition(&self, key: &SessionKey) -> session_core::backend::Partition {
        match self.cluster() {
            Some(cluster) => cluster.partition(self.inner.prefix.render(key).as_bytes()),
            None => session_core::backend::Partition::WHOLE,
        }
    }

    /// Cluster: `PING` on the node serving `partition` now (the map read again when it does not
    /// answer; up for a node that serves no slot any more). Otherwise, and for `WHOLE`: `health()`.
    async fn partition_health(&self, partition: session_core::backend::Partition) -> Health {
        match self.cluster() {
            Some(cluster) if !partition.is_whole() => cluster.partition_health(partition).await,
            _ => self.health().await,
        }
    }
}

/// The calls as they go to Redis, around which the trait's methods keep the near cache.
impl RedisStore {
    async fn save_if_uncached(
        &self,
        key: &SessionKey,
        expected_version: Version,
        record: &Record,
    ) -> Result<Meta> {
        check_size(key, record, self.inner.max_bytes)?;
        let meta = stored_meta(record);
        let args = vec![
            Value::Bytes(record.encode_with(&meta)),
            Value::Bytes(Bytes::copy_from_slice(&expected_version.as_u64().to_be_bytes())),
            Value::Integer(pxat(meta.expires_at)),
        ];
        let reply = self
            .script(key, "save_if", &self.inner.scripts.save_if, args)
            .await?;
        match ScriptReply::of(reply) {
            ScriptReply::Code(1) => Ok(meta),
            ScriptReply::Code(0) => Err(Error::not_found(key.ns())),
            ScriptReply::Code(-1) => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; it was left as is (save overwrites it)",
            )),
            ScriptReply::Conflict(actual) => Err(Error::Conflict {
                namespace: key.ns().to_owned(),
                expected: expected_version,
                actual,
            }),
            _ => Err(unexpected("save_if", key.ns())),
        }
    }

    async fn delete_uncached(&self, key: &SessionKey) -> Result<bool> {
        if self.keeps_tombstones() {
            // A fresh token; `deleted_at` only orders it by updated-at.
            return self
                .delete_leaving_a_tombstone(key, Tombstone::new(now_ms(), 0))
                .await;
        }
        self.delete_plain(key).await
    }

    async fn delete_leaving_uncached(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        if self.keeps_tombstones() {
            return self.delete_leaving_a_tombstone(key, tombstone).await;
        }
        self.delete_plain(key).await
    }

    async fn touch_uncached(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        let args = vec![Value::Integer(pxat(expires_at))];
        let reply = self.script(key, "touch", &self.inner.scripts.touch, args).await?;
        match ScriptReply::of(reply) {
            ScriptReply::Code(1) => Ok(true),
            ScriptReply::Code(0) => Ok(false),
            ScriptReply::Code(-1) => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; its deadline was not moved",
            )),
            _ => Err(unexpected("touch", key.ns())),
        }
    }

    async fn rotate_uncached(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        if new_id == &key.id {
            // Nothing to move (and the scripts must never take the key for its own copy).
            return match self.load(key).await? {
                Some(record) => Ok(record.meta),
                None => Err(Error::not_found(key.ns())),
            };
        }
        if self.inner.topology == Topology::Cluster {
            return self.rotate_in_two_steps(key, new_id).await;
        }
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        let keys = [self.key(key), self.key(&new_key)];
        let args: Vec<Value> = self.rotate_tombstone().into_iter().collect();
        let rotate = Cmd::Script(&self.inner.scripts.rotate, &keys, args);
        let reply: Value = self.write(&keys[0], "rotate", key.ns(), rotate).await?;
        match ScriptReply::of(reply) {
            ScriptReply::Bytes(bytes) => match Record::decode(&bytes, key.ns()) {
                Ok(record) => Ok(record.meta),
                Err(e) => {
                    // An envelope this build cannot read (an unknown codec): move it back.
                    let back = [keys[1].clone(), keys[0].clone()];
                    let undo = Cmd::Script(&self.inner.scripts.rotate, &back, Vec::new());
                    let _: Value = self.write(&back[0], "rotate", key.ns(), undo).await?;
                    Err(e)
                }
            },
            ScriptReply::Code(0) => Err(Error::not_found(key.ns())),
            ScriptReply::Code(-1) => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; it was not rotated",
            )),
            ScriptReply::Code(-2) => Err(already_exists(key)),
            _ => Err(unexpected("rotate", key.ns())),
        }
    }

    /// One script on the key (`reconcile` in the crate's scripts), mirroring
    /// [`decide`](session_core::backend::decide) case for case, atomically: no read followed by a
    /// blind write. Deadlines are judged by the Redis server's clock (`TIME` in the script), and
    /// a key Redis holds is there, as for every other call. Fenced like any write; routed by the
    /// key's slot on a cluster.
    async fn reconcile_uncached(
        &self,
        key: &SessionKey,
        base: Version,
        change: Change<'_>,
    ) -> Result<Reconciled> {
        let base = Value::Bytes(Bytes::copy_from_slice(&base.as_u64().to_be_bytes()));
        let args = match change {
            Change::Write(record) => {
                check_size(key, record, self.inner.max_bytes)?;
                let meta = stored_meta(record);
                vec![
                    base,
                    Value::from("w"),
                    Value::Bytes(record.encode_with(&meta)),
                    Value::Integer(pxat(meta.expires_at)),
                    Value::Bytes(Bytes::copy_from_slice(&record.meta.updated_at.to_be_bytes())),
                    // The order of two writes is decided by the record's own token, as `decide` does.
                    Value::Bytes(Bytes::copy_from_slice(
                        &record.meta.version.as_u64().to_be_bytes(),
                    )),
                ]
            }
            Change::Delete(tombstone) => vec![
                base,
                Value::from("d"),
                // The deadline is the script's to set: the session's, or `until`.
                Value::Bytes(encode_tombstone(&tombstone.meta(0))),
                Value::Integer(pxat(tombstone.until)),
            ],
            Change::Expire => vec![base, Value::from("e")],
        };
        let reply = self
            .script(key, "reconcile", &self.inner.scripts.reconcile, args)
            .await?;
        match ScriptReply::of(reply) {
            ScriptReply::Code(1) => Ok(Reconciled::Applied),
            ScriptReply::Code(2) => Ok(Reconciled::Won),
            ScriptReply::Code(3) => Ok(Reconciled::Kept),
            ScriptReply::Code(4) => Ok(Reconciled::Expired),
            ScriptReply::Code(-1) => Err(Error::corrupt(
                key.ns(),
                "the stored value is not a session envelope; it was left as is (save overwrites it)",
            )),
            _ => Err(unexpected("reconcile", key.ns())),
        }
    }

    async fn load_many_uncached(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        if let Some(node) = self.single() {
            return self.load_many_pipelined(node, keys).await;
        }
        let mut out = Vec::with_capacity(keys.len());
        // Each batch goes out together, each key to its slot's node (where its node's
        // connection pipelines them). Batches keep each client's command queue
        // (redis.max_pending_commands) from overflowing on huge calls.
        for batch in keys.chunks(self.inner.batch) {
            let replies = futures::future::join_all(batch.iter().map(|key| async move {
                let k = self.key(key);
                let get = Cmd::Get(k.clone());
                let value: Result<Option<Bytes>> = self.read(&k, "load_many", key.ns(), get).await;
                value
            }))
            .await;
            for (key, reply) in batch.iter().zip(replies) {
                match reply {
                    Ok(value) => out.push(self.decode_loaded(value, key.ns())),
                    Err(e @ Error::Corrupt { .. }) => out.push(Err(e)),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    async fn save_many_uncached(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        for (key, record) in items {
            check_size(key, record, self.inner.max_bytes)?;
        }
        let mut out = Vec::with_capacity(items.len());
        for batch in items.chunks(self.inner.batch) {
            let results = futures::future::join_all(
                batch
                    .iter()
                    .map(|(key, record)| self.plain(key, record, Plain::Save)),
            )
            .await;
            for result in results {
                out.push(result?);
            }
        }
        Ok(out)
    }
}
