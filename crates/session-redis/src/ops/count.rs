//! Whole-keyspace operations: `count` by SCAN on one server, and per slot on a cluster,
//! exact while slots migrate.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, ClusterInterface, KeysInterface};
use fred::types::config::Server;
use fred::types::{ClusterHash, CustomCommand, Value};
use session_core::backend::{FLAGS_OFFSET, FLAG_TOMBSTONE, FORMAT_OFFSET, FORMAT_VERSION, MAGIC};
use session_core::{Error, Namespace, Result, SessionId};

use crate::cluster::Cluster;
use crate::node::Node;
use crate::replies::{parse_key_list, parse_scan_page};
use crate::slots::{Ids, Layout, NodeLine, NodesReply};
use crate::store::{NodeRef, RedisStore};
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

impl RedisStore {
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
    pub(super) async fn primaries(&self) -> Result<Vec<NodeRef<'_>>> {
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
    pub(super) async fn scan_count(&self, node: &Node, pattern: &str, chunk: usize) -> Result<u64> {
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
    pub(super) async fn count_cluster(&self, cluster: &Cluster, namespace: &Namespace) -> Result<u64> {
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
            let replies = futures::future::join_all(
                self.nodes[batch.clone()]
                    .iter()
                    .map(|(n, _)| ask_nodes(n, "count")),
            )
            .await;
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

/// `CLUSTER NODES` on `node`, parsed; `op` names the call in errors.
pub(super) async fn ask_nodes(node: &Node, op: &'static str) -> Result<NodesReply> {
    let (_, conn) = node.up()?;
    let text: String = conn.cluster_nodes().await.map_err(|e| node.err(e, op, None))?;
    let asked = node.server.clone().unwrap_or_else(|| Server::new("", 0));
    NodesReply::parse(&text, &asked).map_err(|e| Error::Backend {
        backend: BACKEND,
        message: format!("{op}: CLUSTER NODES answered something else: {e}"),
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
