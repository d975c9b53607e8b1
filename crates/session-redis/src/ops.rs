//! The [`SessionStore`] operations of [`RedisStore`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, ClusterInterface, KeysInterface};
use fred::types::config::Server;
use fred::types::{ClusterHash, CustomCommand, InfoKind, Key, SetOptions, Value};
use session_core::backend::{
    check_size, decode_entry, encode_tombstone, now_ms, stamp, Change, Entry, Reconciled, Record, Tombstone,
    FLAGS_OFFSET, FLAG_TOMBSTONE, FORMAT_OFFSET, FORMAT_VERSION, MAGIC,
};
use session_core::{
    Error, Health, HealthStatus, Meta, Namespace, Result, SessionId, SessionKey, SessionStore, StoreStats,
    Version,
};

use crate::cluster::{Cluster, Cmd};
use crate::config::Topology;
use crate::node::{not_connected, Node};
use crate::replies::{parse_key_list, parse_scan_page, parse_used_memory, ScriptReply};
use crate::slots::{Ids, Layout, NodeLine, NodesReply};
use crate::store::{pxat, NodeRef, RedisStore, MAX_DEADLINE_MS};
use crate::BACKEND;

/// Keys asked for per SCAN step, and first per `CLUSTER GETKEYSINSLOT`.
const SCAN_COUNT: u32 = 1000;
/// A cluster `count`: rounds of recounting the slots that changed hands while they were
/// counted, before it gives up with `Unavailable`.
const COUNT_ROUNDS: usize = 20;
/// A cluster `count`: the pause before each round from the third on (a slot moved key by key
/// changes its markers a few times in a row; a pause lets its migration finish).
const COUNT_ROUND_PAUSE: Duration = Duration::from_millis(10);
/// A cluster `count`: slots recounted at once.
const SLOTS_AT_ONCE: usize = 8;
/// How often a cluster `rotate` starts over when the old id changed under it.
const ROTATE_ATTEMPTS: usize = 3;
/// First and longest delay between background retries of a rotate's undo.
const UNDO_RETRY_MIN: Duration = Duration::from_millis(50);
const UNDO_RETRY_MAX: Duration = Duration::from_secs(2);
/// A rotate's undo is retried at most this long (the copy's deadline usually ends it first).
const UNDO_RETRY_FOR: Duration = Duration::from_secs(600);

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
            let pipeline = client.pipeline();
            for key in batch {
                let queued: std::result::Result<(), FredError> = pipeline.get(self.key(key)).await;
                queued.map_err(|e| node.err(e, "load_many", Some(key.ns())))?;
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
                return node.read_result(i, "load_many", None, Err(e));
            }
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

    /// `rotate` on a cluster, where the two keys live in different slots: copy to the new key
    /// (unless it holds another session), then delete the old key if it still holds the
    /// version copied. If the old key changed or went away in between, the copy is undone.
    async fn rotate_in_two_steps(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        let (old_k, new_k) = (self.key(key), self.key(&new_key));
        let scripts = &self.inner.scripts;
        for _ in 0..ROTATE_ATTEMPTS {
            let get = Cmd::Get(old_k.clone());
            let value: Option<Bytes> = self.read(&old_k, "rotate", key.ns(), get).await?;
            let Some(bytes) = value else {
                return Err(Error::not_found(key.ns()));
            };
            let meta = match decode_entry(&bytes, key.ns())? {
                Entry::Live(record) => record.meta,
                // A deleted session's tombstone: nothing to move.
                Entry::Tombstone(_) => return Err(Error::not_found(key.ns())),
            };
            let version = Value::Bytes(Bytes::copy_from_slice(&meta.version.as_u64().to_be_bytes()));
            let copy_args = vec![
                Value::Bytes(bytes.clone()),
                version.clone(),
                Value::Integer(pxat(meta.deadline())),
            ];
            let copy_to = Cmd::Script(&scripts.copy_to, std::slice::from_ref(&new_k), copy_args);
            let copy: Value = self.write(&new_k, "rotate", key.ns(), copy_to).await?;
            match ScriptReply::of(copy) {
                ScriptReply::Code(1) => {}
                ScriptReply::Code(-2) => return Err(already_exists(key)),
                _ => return Err(unexpected("rotate", key.ns())),
            }
            let mut args = vec![version.clone()];
            args.extend(self.rotate_tombstone());
            let del_if = Cmd::Script(&scripts.del_if, std::slice::from_ref(&old_k), args);
            let removed: Value = self.write(&old_k, "rotate", key.ns(), del_if).await?;
            match ScriptReply::of(removed) {
                ScriptReply::Code(1) => return Ok(meta),
                // The old id was deleted (a logout) or rewritten meanwhile: the copy must not
                // outlive it. Undo it, then report the logout or start over with the new value.
                ScriptReply::Code(code @ (0 | -2)) => {
                    let undo = Cmd::Script(
                        &scripts.del_if,
                        std::slice::from_ref(&new_k),
                        vec![version.clone()],
                    );
                    let undone: Result<Value> = self.write(&new_k, "rotate", key.ns(), undo).await;
                    if let Err(e) = undone {
                        // The copy must not outlive the logout: keep trying in the background
                        // until Redis answers (or the copy's own deadline removes it).
                        self.undo_copy_later(new_k.clone(), version, meta.deadline());
                        return Err(e);
                    }
                    if code == 0 {
                        return Err(Error::not_found(key.ns()));
                    }
                }
                _ => return Err(unexpected("rotate", key.ns())),
            }
        }
        Err(Error::Conflict {
            namespace: key.ns().to_owned(),
            expected: Version::NONE,
            actual: Version::NONE,
        })
    }

    /// What a store that keeps tombstones leaves under a rotated session's old id: a tombstone
    /// header with a token of its own (not the session's: a replayed write based on the session
    /// as it was must lose to it, as to a logout), its deadline set by the script to the
    /// session's. `None` for a store without tombstones (the old key is deleted).
    fn rotate_tombstone(&self) -> Option<Value> {
        self.keeps_tombstones().then(|| {
            let now = session_core::backend::now_ms();
            Value::Bytes(encode_tombstone(&Tombstone::new(now, now).meta(0)))
        })
    }

    /// Deletes `key` if it still holds `version`, retried in the background until Redis
    /// answers or `deadline` (ms) has passed: the undo of a cluster rotate's copy whose old id
    /// was logged out meanwhile, when the first undo failed.
    fn undo_copy_later(&self, key: Key, version: Value, deadline: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let started = Instant::now();
        rt.spawn(async move {
            let mut delay = UNDO_RETRY_MIN;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(UNDO_RETRY_MAX);
                if session_core::backend::now_ms() >= deadline || started.elapsed() >= UNDO_RETRY_FOR {
                    return;
                }
                let Some(inner) = weak.upgrade() else { return };
                let store = RedisStore { inner };
                let script = &store.inner.scripts.del_if;
                let undo = Cmd::Script(script, std::slice::from_ref(&key), vec![version.clone()]);
                let undone: Result<Value> = store.write(&key, "rotate", "", undo).await;
                if undone.is_ok() {
                    tracing::debug!(backend = BACKEND, "redis: undid an interrupted rotate's copy");
                    return;
                }
            }
        });
    }

    /// Which of `keys` (full keys a SCAN listed) count: those holding something other than a
    /// tombstone, one `GETRANGE key 0 7` each (magic, format and flags), `chunk` at a time. A
    /// key gone meanwhile or holding another Redis type counts, as it did in the SCAN.
    async fn counted_heads(&self, node: &Node, keys: &[String], chunk: usize) -> Result<Vec<bool>> {
        let (_, conn) = node.up()?;
        let mut counted = Vec::with_capacity(keys.len());
        for batch in keys.chunks(chunk.max(1)) {
            let heads = futures::future::join_all(
                batch
                    .iter()
                    .map(|k| conn.getrange::<Value, _>(k.as_str(), 0, FLAGS_OFFSET + 1)),
            )
            .await;
            for head in heads {
                match head {
                    Ok(v) => counted.push(!v.as_bytes().is_some_and(tombstone_head)),
                    Err(e) if e.details().starts_with("WRONGTYPE") => counted.push(true),
                    // Moved to another node since the SCAN listed it: it counts, as a key gone
                    // meanwhile does (on a cluster, its slot is then counted again: see
                    // `count_cluster`).
                    Err(e) if e.details().starts_with("MOVED") || e.details().starts_with("ASK") => {
                        counted.push(true)
                    }
                    Err(e) => return Err(node.err(e, "count", None)),
                }
            }
        }
        Ok(counted)
    }

    /// The nodes to run a whole-keyspace command on: the one server, or every cluster primary
    /// after the slot map was read again (a store that only counts never sees a `MOVED`).
    async fn primaries(&self) -> Result<Vec<NodeRef<'_>>> {
        match self.cluster() {
            None => Ok(self.all_nodes()),
            Some(cluster) => {
                cluster.refresh_now(true).await?;
                Ok(cluster.primaries().into_iter().map(NodeRef::Shared).collect())
            }
        }
    }

    /// Counts the sessions of one namespace on one node. SCAN's pattern `{prefix}{ns}:*` also
    /// matches the keys of a store whose prefix is this one's plus the namespace (`p:` and
    /// `p:ns:`), so only keys whose rest is a session id are counted.
    ///
    /// `chunk`: how many keys it checks at once (every node's scan runs at the same time, and
    /// together they must stay within the client's command queue: a full queue stalls fred's
    /// cluster client until the commands time out).
    async fn scan_count(&self, node: &Node, pattern: &str, chunk: usize) -> Result<u64> {
        let mut count = 0u64;
        self.scan_sessions(node, pattern, chunk, |_| true, |_| count += 1)
            .await?;
        Ok(count)
    }

    /// SCANs `node` for `pattern` (`{prefix}{ns}:*`) and calls `found` with every key `keep`
    /// accepts that holds a session: its rest is a session id (see
    /// [`scan_count`](Self::scan_count)) and it is not a tombstone.
    async fn scan_sessions(
        &self,
        node: &Node,
        pattern: &str,
        chunk: usize,
        keep: impl Fn(&str) -> bool,
        mut found: impl FnMut(&str),
    ) -> Result<()> {
        let base = pattern.len() - 1;
        let mut cursor = String::from("0");
        loop {
            let (_, conn) = node.up()?;
            let page: Value = conn
                .scan_page(cursor.clone(), pattern.to_owned(), Some(SCAN_COUNT), None)
                .await
                .map_err(|e| node.err(e, "count", None))?;
            let (next, keys) = parse_scan_page(page).map_err(|e| node.err(e, "count", None))?;
            let sessions: Vec<String> = keys
                .into_iter()
                .filter(|k| k.get(base..).is_some_and(|id| SessionId::parse(id).is_ok()) && keep(k))
                .collect();
            let counted = self.counted_heads(node, &sessions, chunk).await?;
            for (key, counts) in sessions.iter().zip(counted) {
                if counts {
                    found(key);
                }
            }
            if next == "0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// `count` on a cluster: exact for the keys not written during the call, also while slots
    /// migrate between primaries (a reshard, a rebalance, a node added or drained).
    ///
    /// # Why scanning each primary is not enough
    ///
    /// While a slot migrates, `MIGRATE` moves its keys one by one from the source to the
    /// target. Scanned on their own, a key moved after the source's `SCAN` passed it and before
    /// the target's reached it is counted twice, and one moved the other way round not at all.
    ///
    /// # How
    ///
    /// The count is a sum over hash slots, and a key never changes slot. So each slot's keys
    /// may be counted at a moment of their own, as long as each slot is counted exactly once
    /// and exactly (the keys not written during the call are the same at every moment).
    ///
    /// 1. **Read the layout** (`CLUSTER NODES` on every primary, [`Members::read`]): which
    ///    slots each node serves and which it migrates (`[slot->-id]`) or imports
    ///    (`[slot-<-id]`), from each node's own `myself` line. Nodes named by a marker or
    ///    shown serving slots by another node's view (a new owner not in the slot map yet)
    ///    are asked too.
    /// 2. **Scan every primary** as before (`SCAN MATCH … COUNT 1000`, chunked `GETRANGE` to
    ///    leave tombstones out), keeping counts per slot and skipping the keys of the slots
    ///    that were migrating in 1.
    /// 3. **Read the layout again.** A slot's scanned count stands when the slot had no
    ///    marker in 1 and has the same claimants and markers in 3: it did not change hands
    ///    during the scan (below), so all its keys stayed on its owner, whose `SCAN` returned
    ///    each of them once (a key present for the whole `SCAN` is returned).
    /// 4. **Recount the other slots one by one** (pending: migrating in 1, or changed between
    ///    1 and 3), from the layout read last: list the slot's keys on its **sources** first
    ///    (the node migrating it; `CLUSTER GETKEYSINSLOT`, one atomic snapshot, with
    ///    `GETRANGE` on the same node), then on its **targets** (the node importing it), and
    ///    count the union by key name. A key on the source when listed is counted; a key not
    ///    there any more (listed but `ASK`ed, or not listed) has been moved, and `MIGRATE`
    ///    writes the target before it deletes the source, so it was on the target before the
    ///    target's listing began, and stays there: migration runs one way only. A key seen on
    ///    both is counted once. A slot without markers is listed on its owner alone.
    /// 5. **Read the layout again**: a recounted slot whose claimants and markers are the same
    ///    as in the layout it was recounted from stands; the others are recounted from the new
    ///    layout (step 4 again), for at most [`COUNT_ROUNDS`] rounds.
    ///
    /// **Why an unchanged entry means the slot did not change hands.** A key of a slot moves
    /// only by `MIGRATE` from a node that holds it to a node importing or serving the slot,
    /// and the procedure (`redis-cli --cluster`, the documented one) marks the slot first:
    /// `SETSLOT … IMPORTING` on the target, `MIGRATING` on the source, then the keys, then
    /// `SETSLOT … NODE` (which clears the markers and changes the claimants). Between two
    /// readings with the same entry, either no migration of the slot started (it would have
    /// left markers, or, finished, other claimants), or the same migration ran throughout,
    /// in the direction its markers give. Not detected: a slot migrated away *and back* (two
    /// complete migrations) between two readings, or a migration aborted with
    /// `SETSLOT … STABLE` after keys moved (those keys are orphaned on the target, where no
    /// client reads them either); and keys moved with `MIGRATE` by hand without the markers.
    ///
    /// **Tombstones** are left out on both paths (the same `GETRANGE key 0 7`); a key neither
    /// node could show (gone meanwhile: written or expired during the call) counts, as in
    /// the `SCAN` path.
    ///
    /// **Cost**: one `SCAN` pass over every primary as before, plus two `CLUSTER NODES` per
    /// primary, plus, per slot that was migrating or changed hands during the scan, one
    /// listing of that slot on each node involved (`CLUSTER GETKEYSINSLOT`, asked for 1000
    /// keys and four times as many while the reply is full, so its memory is one slot's keys)
    /// and one `GETRANGE` per listed session key. Never `KEYS`.
    ///
    /// **When it gives up**: slots that changed hands again during each of [`COUNT_ROUNDS`]
    /// recounts (a node whose markers flap) make it fail with `Unavailable` (temporary: try
    /// again) rather than answer a count it cannot vouch for. A primary that cannot be read
    /// fails the call, as before; one that answered holding nothing and then does not answer
    /// (a drained node being removed) is left out.
    async fn count_cluster(&self, cluster: &Cluster, namespace: &Namespace) -> Result<u64> {
        cluster.refresh_now(true).await?;
        let base = self.inner.prefix.namespace_prefix(namespace);
        let mut pattern = base.clone();
        pattern.push('*');
        let mut members = Members::new(cluster.primaries());
        let before = members.read(cluster).await?;
        let nodes = members.masters();
        let chunk = self.inner.batch.saturating_sub(nodes.len()) / nodes.len().max(1);
        let scans = futures::future::join_all(
            nodes
                .iter()
                .map(|node| self.scan_slots(node, &pattern, chunk, &before)),
        )
        .await;
        let mut per_slot: HashMap<u16, u64> = HashMap::new();
        for scan in scans {
            for (slot, n) in scan? {
                *per_slot.entry(slot).or_default() += n;
            }
        }
        let mut after = members.read(cluster).await?;
        let mut pending: BTreeSet<u16> = before.changed(&after);
        pending.extend(before.migrating_slots());
        let mut total: u64 = per_slot
            .iter()
            .filter(|(slot, _)| !pending.contains(slot))
            .map(|(_, n)| n)
            .sum();
        // Slots recounted at once, and keys per pipeline (`ASKING` + `GETRANGE` per key): within
        // the batch, so that the command queue of a node recounting several slots never fills.
        let at_once = (self.inner.batch / 4).clamp(1, SLOTS_AT_ONCE);
        let chunk = (self.inner.batch / (2 * at_once)).max(1);
        let mut recounted = 0usize;
        for round in 0..COUNT_ROUNDS {
            if pending.is_empty() {
                if recounted > 0 {
                    tracing::debug!(
                        backend = BACKEND,
                        recounted,
                        rounds = round,
                        "redis cluster: count recounted slots that were migrating"
                    );
                }
                return Ok(total);
            }
            recounted += pending.len();
            let from = if round < 2 {
                after
            } else {
                tokio::time::sleep(COUNT_ROUND_PAUSE).await;
                members.read(cluster).await?
            };
            let slots: Vec<u16> = pending.iter().copied().collect();
            let mut counts = Vec::with_capacity(slots.len());
            for group in slots.chunks(at_once) {
                let counted = futures::future::join_all(
                    group
                        .iter()
                        .map(|&slot| self.count_slot(&members, &from, slot, &base, chunk)),
                )
                .await;
                for (&slot, n) in group.iter().zip(counted) {
                    counts.push((slot, n?));
                }
            }
            after = members.read(cluster).await?;
            pending.clear();
            for (slot, n) in counts {
                if from.same(&after, slot) {
                    total += n;
                } else {
                    pending.insert(slot);
                }
            }
        }
        if pending.is_empty() {
            return Ok(total);
        }
        Err(Error::unavailable(
            BACKEND,
            format!(
                "count: {} hash slots changed hands during each of {COUNT_ROUNDS} recounts (the cluster is \
                 resharding); try again",
                pending.len()
            ),
        ))
    }

    /// Step 2 of [`count_cluster`](Self::count_cluster) on one primary: its sessions of the
    /// pattern's namespace per hash slot (tombstones left out), skipping the slots `layout`
    /// shows migrating.
    async fn scan_slots(
        &self,
        node: &Node,
        pattern: &str,
        chunk: usize,
        layout: &Layout,
    ) -> Result<HashMap<u16, u64>> {
        let mut per_slot: HashMap<u16, u64> = HashMap::new();
        let slot_of = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        self.scan_sessions(
            node,
            pattern,
            chunk,
            |k| !layout.migrating(slot_of(k)),
            |k| *per_slot.entry(slot_of(k)).or_default() += 1,
        )
        .await?;
        Ok(per_slot)
    }

    /// Step 4 of [`count_cluster`](Self::count_cluster): the sessions of namespace prefix
    /// `base` in `slot`, read as `layout` says: on the slot's sources (listing, then
    /// `GETRANGE` there), then on its targets (listing, then `GETRANGE` of the keys not
    /// decided yet), counted once per key name.
    async fn count_slot(
        &self,
        members: &Members,
        layout: &Layout,
        slot: u16,
        base: &str,
        chunk: usize,
    ) -> Result<u64> {
        let (sources, targets) = layout.waves(slot);
        // Per key: whether it counts (`None`: not shown by any node yet: gone, or moved on).
        let mut seen: HashMap<String, Option<bool>> = HashMap::new();
        for wave in [sources, targets] {
            let nodes = wave
                .iter()
                .map(|&n| members.node(n))
                .collect::<Result<Vec<_>>>()?;
            for node in nodes {
                let listed = self.slot_keys(node, slot, base).await?;
                let open: Vec<String> = listed
                    .into_iter()
                    .filter(|k| !matches!(seen.get(k), Some(Some(_))))
                    .collect();
                let heads = self.heads_asking(node, &open, chunk).await?;
                for (key, head) in open.into_iter().zip(heads) {
                    seen.insert(key, head);
                }
            }
        }
        // A key shown as a tombstone does not count; one no node could show counts, as a key
        // gone meanwhile does in the SCAN path.
        Ok(seen.values().filter(|&&c| c != Some(false)).count() as u64)
    }

    /// The session keys of namespace prefix `base` that `node` holds in `slot`: `CLUSTER
    /// GETKEYSINSLOT` (one atomic snapshot), asked for [`SCAN_COUNT`] keys and four times as
    /// many while the reply is full.
    async fn slot_keys(&self, node: &Node, slot: u16, base: &str) -> Result<Vec<String>> {
        let mut want = u64::from(SCAN_COUNT);
        loop {
            let (_, conn) = node.up()?;
            let reply: Value = conn
                .cluster_get_keys_in_slot(slot, want)
                .await
                .map_err(|e| node.err(e, "count", None))?;
            let full = matches!(&reply, Value::Array(keys) if keys.len() as u64 >= want);
            if full {
                want = want.saturating_mul(4);
                continue;
            }
            let keys = parse_key_list(reply).map_err(|e| node.err(e, "count", None))?;
            return Ok(keys
                .into_iter()
                .filter(|k| {
                    k.strip_prefix(base)
                        .is_some_and(|id| SessionId::parse(id).is_ok())
                })
                .collect());
        }
    }

    /// Per key of `keys` on `node`, whether it counts: `ASKING` + `GETRANGE key 0 7`,
    /// pipelined (`ASKING` so that a node importing the slot answers for it). `Some(false)`: a
    /// tombstone; `Some(true)`: anything else there (another Redis type too); `None`: not there
    /// (an empty value, or `ASK`/`MOVED`: moved on).
    async fn heads_asking(&self, node: &Node, keys: &[String], chunk: usize) -> Result<Vec<Option<bool>>> {
        let (_, conn) = node.up()?;
        let client: &Client = conn;
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(chunk.max(1)) {
            let pipeline = client.pipeline();
            for key in batch {
                let asking = CustomCommand::new_static("ASKING", ClusterHash::Custom(0), false);
                let queued: std::result::Result<(), FredError> =
                    pipeline.custom::<(), Value>(asking, Vec::new()).await;
                queued.map_err(|e| node.err(e, "count", None))?;
                let queued: std::result::Result<(), FredError> =
                    pipeline.getrange(key.as_str(), 0, FLAGS_OFFSET + 1).await;
                queued.map_err(|e| node.err(e, "count", None))?;
            }
            let replies: Vec<std::result::Result<Value, FredError>> = pipeline.try_all().await;
            if replies.len() != 2 * batch.len() {
                let e = replies
                    .into_iter()
                    .find_map(std::result::Result::err)
                    .unwrap_or_else(|| {
                        FredError::new(FredKind::Unknown, "a pipelined GETRANGE lost replies")
                    });
                return Err(node.err(e, "count", None));
            }
            for reply in replies.into_iter().skip(1).step_by(2) {
                out.push(match reply {
                    Ok(v) => match v.as_bytes() {
                        Some(head) if !head.is_empty() => Some(!tombstone_head(head)),
                        _ => None,
                    },
                    Err(e) if e.details().starts_with("WRONGTYPE") => Some(true),
                    Err(e) if e.details().starts_with("ASK") || e.details().starts_with("MOVED") => None,
                    Err(e) => return Err(node.err(e, "count", None)),
                });
            }
        }
        Ok(out)
    }
}

/// The primaries of a cluster as one `count` meets them: the slot map's, plus nodes found
/// through `CLUSTER NODES` (a migration's target, a slot's new owner).
struct Members {
    ids: Ids,
    /// Every node asked, with its id's number once it answered.
    nodes: Vec<(Arc<Node>, Option<u32>)>,
    /// Per id number: the node that answered for it in the latest reading.
    current: HashMap<u32, Arc<Node>>,
    /// Per id number: the line the node gave of itself in the latest reading it answered.
    last: HashMap<u32, NodeLine>,
}

impl Members {
    fn new(primaries: Vec<Arc<Node>>) -> Members {
        Members {
            ids: Ids::default(),
            nodes: primaries.into_iter().map(|n| (n, None)).collect(),
            current: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// Reads the layout: `CLUSTER NODES` on every node met so far, all at once, then on the
    /// nodes those answers name that were not asked yet (the other end of a marker, a master
    /// another node shows serving slots), until none is new. Each node counts once, by id (one
    /// node reached under two addresses is asked twice but added once).
    ///
    /// # Errors
    /// A node that does not answer, unless it held nothing at its last answer (a drained
    /// node being removed); a node named that has no address; a reply that is not one.
    async fn read(&mut self, cluster: &Cluster) -> Result<Layout> {
        let mut layout = Layout::default();
        let mut answered: HashSet<u32> = HashSet::new();
        let mut current = HashMap::new();
        let mut named: BTreeSet<u32> = BTreeSet::new();
        let mut addresses: HashMap<u32, Server> = HashMap::new();
        let mut added: HashSet<u32> = HashSet::new();
        let mut next = 0;
        while next < self.nodes.len() {
            let batch = next..self.nodes.len();
            next = self.nodes.len();
            let replies =
                futures::future::join_all(self.nodes[batch.clone()].iter().map(|(n, _)| ask_nodes(n))).await;
            for (i, reply) in batch.zip(replies) {
                let Some((node, known)) = self.nodes.get_mut(i) else {
                    continue;
                };
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        let held_nothing = known
                            .and_then(|n| self.last.get(&n))
                            .is_some_and(NodeLine::holds_nothing);
                        if held_nothing {
                            continue;
                        }
                        return Err(e);
                    }
                };
                let number = self.ids.number(&reply.me.id);
                *known = Some(number);
                if !answered.insert(number) {
                    continue;
                }
                current.insert(number, Arc::clone(node));
                for line in reply.others.iter().chain(std::iter::once(&reply.me)) {
                    if let Some(server) = &line.server {
                        addresses
                            .entry(self.ids.number(&line.id))
                            .or_insert_with(|| server.clone());
                    }
                }
                for (_, peer) in reply.me.migrating.iter().chain(&reply.me.importing) {
                    named.insert(self.ids.number(peer));
                }
                for line in &reply.others {
                    if line.master && line.usable && !line.slots.is_empty() {
                        named.insert(self.ids.number(&line.id));
                    }
                }
                layout.add(number, &reply.me, &mut self.ids);
                self.last.insert(number, reply.me);
            }
            let known: HashSet<u32> = self.nodes.iter().filter_map(|(_, n)| *n).collect();
            for &number in &named {
                if known.contains(&number) || !added.insert(number) {
                    continue;
                }
                let Some(server) = addresses.get(&number) else {
                    return Err(Error::unavailable(
                        BACKEND,
                        "count: a cluster node that takes part in a migration has no known address",
                    ));
                };
                let node = cluster.node_connected(server).await;
                self.nodes.push((node, None));
            }
        }
        self.current = current;
        Ok(layout)
    }

    /// The masters that answered the latest reading, each once.
    fn masters(&self) -> Vec<Arc<Node>> {
        self.current
            .iter()
            .filter(|(n, _)| self.last.get(n).is_some_and(|line| line.master))
            .map(|(_, node)| Arc::clone(node))
            .collect()
    }

    /// The node that answered for id number `number` in the latest reading.
    fn node(&self, number: u32) -> Result<&Node> {
        self.current.get(&number).map(|n| &**n).ok_or_else(|| {
            Error::unavailable(
                BACKEND,
                "count: a cluster node that holds keys of a migrating slot did not answer",
            )
        })
    }
}

/// `CLUSTER NODES` on `node`, parsed.
async fn ask_nodes(node: &Node) -> Result<NodesReply> {
    let (_, conn) = node.up()?;
    let text: String = conn
        .cluster_nodes()
        .await
        .map_err(|e| node.err(e, "count", None))?;
    let asked = node.server.clone().unwrap_or_else(|| Server::new("", 0));
    NodesReply::parse(&text, &asked).map_err(|e| Error::Backend {
        backend: BACKEND,
        message: format!("count: CLUSTER NODES answered something else: {e}"),
        source: None,
    })
}

/// Whether the first bytes of a value (`GETRANGE key 0 7`) are a tombstone's envelope header.
fn tombstone_head(head: &[u8]) -> bool {
    head.len() > FLAGS_OFFSET + 1
        && head[..MAGIC.len()] == MAGIC
        && head[FORMAT_OFFSET] == FORMAT_VERSION
        && u16::from_be_bytes([head[FLAGS_OFFSET], head[FLAGS_OFFSET + 1]]) & FLAG_TOMBSTONE != 0
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
        let k = self.key(key);
        let get = Cmd::Get(k.clone());
        let value: Option<Bytes> = self.read(&k, "load", key.ns(), get).await?;
        self.decode_loaded(value, key.ns())
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.plain(key, record, Plain::Save).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.plain(key, record, Plain::Create).await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.plain(key, record, Plain::Update).await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
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

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        if self.keeps_tombstones() {
            // A fresh token; `deleted_at` only orders it by updated-at.
            return self
                .delete_leaving_a_tombstone(key, Tombstone::new(now_ms(), 0))
                .await;
        }
        self.delete_plain(key).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        if self.keeps_tombstones() {
            return self.delete_leaving_a_tombstone(key, tombstone).await;
        }
        self.delete_plain(key).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
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

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
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
    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
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

    /// With `redis.tombstone_ttl_ms` above 0.
    fn keeps_tombstones(&self) -> bool {
        self.inner.tombstone_ttl_ms > 0
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
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

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
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
            return Health::new(BACKEND, HealthStatus::Up)
                .with_latency(latency)
                .with_detail(self.inner.topology.as_str());
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
                "{answered} of {} connections answered{fence_note}{slots_note}{}{first}",
                results.len(),
                if first.is_empty() { "" } else { "; " }
            ));
        health
            .extra
            .push(("fenced_connections", self.fenced_connections()));
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
