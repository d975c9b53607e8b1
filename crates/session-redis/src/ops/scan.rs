//! `scan`: the sessions under the store's key prefix, a page at a time, by `SCAN MATCH
//! {prefix}*` on the one server or on each cluster primary in turn, resumable from a cursor
//! another process can use.
//!
//! # The cursor
//!
//! `r1.<prefix>.<layout>.<node>.<server>.<redis cursor>`: a hash of the store's key prefix (a
//! cursor of another prefix is refused); on a cluster, a hash of how the hash slots are grouped
//! into primaries (`0` on one server); which primary, in the walk's order (by the lowest slot
//! each serves, the same in every process); a hash of the `run_id` of the server process the
//! Redis cursor belongs to (`-` at a primary's start); and Redis's own `SCAN` cursor there.
//!
//! # Why each piece
//!
//! A `SCAN` cursor means something only to the process that gave it: Redis seeds its hash
//! function anew at every start, so after a restart, or on a failover's new master, the same
//! number points somewhere else in the keyspace. Each `SCAN` is therefore pipelined with `INFO
//! server` on the same connection, and a page whose server's `run_id` is not the cursor's is
//! refused (`Error::Backend`: start the scan again).
//!
//! On a cluster, a session is listed once if it stays on one primary for the whole scan. Before
//! every page (and after the last one) the store reads its slot map again and `CLUSTER NODES`
//! on every primary: the slots each claims as its own, and the `[slot->-id]` / `[slot-<-id]`
//! markers of a migration (set before the first key moves, cleared when the slot has changed
//! hands). A cursor stands while no marker was seen and the grouping of slots is the one it
//! was made with; a failover keeps the grouping (the promoted replica serves the same slots),
//! so only a scan on the primary failed over, whose server changed, has to start again (an old
//! master that has not heard of its replacement yet still serves from the process the cursor
//! names, with the keys it had: the scan may go on there until it is a replica). A migration
//! seen at any check, or a grouping changed, means keys may have moved between a primary
//! scanned and one not yet scanned: `Error::Backend`, start the scan again. Not detected, as for
//! `count`: a migration aborted with `SETSLOT STABLE` after keys moved, keys moved by hand.
//! While a marker is seen a new scan is `Error::Unavailable` (try later); while the primaries'
//! claims do not cover each slot once (a failover under way) a page is `Error::Unavailable`,
//! and may be asked for again with the same cursor.
//!
//! `SCAN` itself may return a key twice when Redis shrinks its table between two calls:
//! repeats are dropped within a page, not across pages.

use std::sync::Arc;

use fred::clients::Client;
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, KeysInterface};
use fred::types::{InfoKind, Value};
use session_core::backend::{decode_entry, parse_backend_key, Entry, Record};
use session_core::{Error, Result, ScanCursor, ScanPage, SessionKey};

use super::count::ask_nodes;
use crate::cluster::Cluster;
use crate::node::Node;
use crate::replies::{parse_run_id, parse_scan_keys};
use crate::slots::SLOTS;
use crate::store::{Nodes, RedisStore};
use crate::BACKEND;

/// The most keys one `SCAN` call is asked to look at.
const MAX_COUNT: u32 = 1000;
/// `SCAN` calls one page makes at most: with `MATCH`, a call may find nothing (the prefix's keys
/// are few among many), so a page goes on until it has about `limit` keys, its primary is
/// done, or this many calls were made (each asking for twice as many keys as the one before,
/// up to [`MAX_COUNT`]).
const CALLS_PER_PAGE: usize = 32;

/// Where a scan resumes (the cursor's text is described in the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    /// Hash of the store's key prefix.
    prefix: u64,
    /// Cluster: hash of the grouping of the slots into primaries (never 0). One server: 0.
    layout: u64,
    /// The primary, in the walk's order (0 on one server).
    node: usize,
    /// Hash of the `run_id` of the server the Redis cursor is from; `None` at its start.
    server: Option<u64>,
    /// Redis's `SCAN` cursor on that server (0: its start).
    redis: u64,
}

impl Position {
    fn start(prefix: u64, layout: u64) -> Position {
        Position {
            prefix,
            layout,
            node: 0,
            server: None,
            redis: 0,
        }
    }

    fn cursor(&self) -> ScanCursor {
        let server = self
            .server
            .map_or_else(|| "-".to_owned(), |s| format!("{s:016x}"));
        ScanCursor::new(format!(
            "r1.{:016x}.{:016x}.{}.{server}.{}",
            self.prefix, self.layout, self.node, self.redis
        ))
    }

    /// The position a cursor's text names, if it is one this code makes.
    fn parse(text: &str) -> Option<Position> {
        let mut parts = text.split('.');
        let (Some("r1"), Some(prefix), Some(layout), Some(node), Some(server), Some(redis), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let server = match server {
            "-" => None,
            hex => Some(parse_hash(hex)?),
        };
        let redis = parse_decimal(redis)?;
        // A server is named exactly when the Redis cursor is inside its keyspace.
        if server.is_some() != (redis != 0) {
            return None;
        }
        Some(Position {
            prefix: parse_hash(prefix)?,
            layout: parse_hash(layout)?,
            node: usize::try_from(parse_decimal(node)?).ok()?,
            server,
            redis,
        })
    }
}

/// Sixteen lowercase hex digits.
fn parse_hash(text: &str) -> Option<u64> {
    let hex = text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| u64::from_str_radix(text, 16).ok()).flatten()
}

/// A decimal number without sign, leading zeros or anything else.
fn parse_decimal(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let canonical = text == "0" || !text.starts_with('0');
    (digits && canonical).then(|| text.parse().ok()).flatten()
}

/// FNV-1a, 64 bits: stable across builds and processes (unlike `std`'s hasher).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(mut self, bytes: &[u8]) -> Fnv {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
}

/// One page's work on one primary.
struct Step {
    sessions: Vec<(SessionKey, Record)>,
    skipped: u64,
    /// Where the primary's scan goes on (its server's hash and Redis's cursor); `None`: done.
    next: Option<(u64, u64)>,
}

/// A cluster as one page of a scan meets it.
struct Shape {
    /// The hash of the grouping of the slots into primaries (never 0).
    layout: u64,
    /// The primaries serving slots, by the lowest slot each serves.
    nodes: Vec<Arc<Node>>,
    /// A node shows a migration marker.
    moving: bool,
    /// Why the nodes' claims are not one primary per slot, if they are not.
    unsettled: Option<&'static str>,
}

impl Shape {
    /// Reads the slot map again, then `CLUSTER NODES` on every primary it names, at once.
    async fn read(cluster: &Cluster) -> Result<Shape> {
        cluster.refresh_now(true).await?;
        let primaries = cluster.primaries();
        let replies = futures::future::join_all(primaries.iter().map(|n| ask_nodes(n, "scan"))).await;
        let mut claimed = vec![false; SLOTS];
        let mut groups: Vec<(Ranges, Arc<Node>)> = Vec::with_capacity(primaries.len());
        let mut moving = false;
        let mut unsettled = None;
        for (node, reply) in primaries.into_iter().zip(replies) {
            let me = reply?.me;
            moving |= !me.migrating.is_empty() || !me.importing.is_empty();
            if !me.master {
                unsettled
                    .get_or_insert("a node the slot map names as a primary is a replica now (a failover)");
                continue;
            }
            for &(a, b) in &me.slots {
                for slot in a..=b {
                    if let Some(taken) = claimed.get_mut(usize::from(slot)) {
                        if *taken {
                            unsettled.get_or_insert("two primaries claim the same hash slot");
                        }
                        *taken = true;
                    }
                }
            }
            if !me.slots.is_empty() {
                groups.push((merged(me.slots), node));
            }
        }
        if claimed.contains(&false) {
            unsettled
                .get_or_insert("some hash slots have no primary this store knows (a failover or a new node)");
        }
        groups.sort_by_key(|(ranges, _)| ranges.first().map(|r| r.0));
        let mut hash = Fnv::new();
        for (ranges, _) in &groups {
            for (a, b) in ranges {
                hash = hash.write(&a.to_be_bytes()).write(&b.to_be_bytes());
            }
            // Not a slot: ends the group.
            hash = hash.write(&[0xff, 0xff]);
        }
        Ok(Shape {
            layout: hash.0.max(1),
            nodes: groups.into_iter().map(|(_, node)| node).collect(),
            moving,
            unsettled,
        })
    }

    /// Whether a scan may go on from `at` (made with this store's prefix) in this shape, or
    /// begin in it (`None`).
    fn check(&self, at: Option<&Position>) -> Result<()> {
        if self.moving {
            return Err(match at {
                None => Error::unavailable(
                    BACKEND,
                    "scan: hash slots are migrating between cluster primaries (a reshard); a scan begun now \
                     could list a moving session twice or miss it; try again once the migration is done",
                ),
                Some(_) => restart("hash slots began migrating between cluster primaries (a reshard)"),
            });
        }
        if let Some(why) = self.unsettled {
            return Err(Error::unavailable(
                BACKEND,
                format!("scan: {why}; try again (with the same cursor) once the cluster has settled"),
            ));
        }
        match at {
            Some(at) if at.layout != self.layout => Err(restart(
                "the cluster's hash slots were regrouped among its primaries (a reshard, a node added or \
                 removed)",
            )),
            _ => Ok(()),
        }
    }
}

/// Hash slot ranges, `(first, last)`.
type Ranges = Vec<(u16, u16)>;

/// Sorted, adjacent ranges joined.
fn merged(mut ranges: Ranges) -> Ranges {
    ranges.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// A cursor this store cannot resume from: not one of its own.
fn not_ours() -> Error {
    Error::Backend {
        backend: BACKEND,
        message: "scan: not a scan cursor of this store (another key prefix, topology or backend, or not a \
                  cursor); start the scan again"
            .to_owned(),
        source: None,
    }
}

/// A cursor made before `what` happened: it no longer says which sessions are left.
fn restart(what: &str) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!(
            "scan: {what} during the scan; its cursor no longer says which sessions are left, start the \
             scan again"
        ),
        source: None,
    }
}

impl RedisStore {
    /// [`SessionStore::scan`](session_core::SessionStore::scan) (see the module's documentation).
    pub(super) async fn scan_page(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let prefix = Fnv::new().write(self.inner.prefix.as_str().as_bytes()).0;
        let at = match cursor {
            None => None,
            Some(c) => Some(
                Position::parse(c.as_str())
                    .filter(|p| p.prefix == prefix)
                    .ok_or_else(not_ours)?,
            ),
        };
        let limit = limit.max(1);
        match &self.inner.nodes {
            Nodes::One(node) => {
                let at = at.unwrap_or_else(|| Position::start(prefix, 0));
                if at.layout != 0 || at.node != 0 {
                    return Err(not_ours());
                }
                let step = self.scan_step(node, &at, limit).await?;
                let next = step.next.map(|(server, redis)| Position {
                    server: Some(server),
                    redis,
                    ..at
                });
                Ok(ScanPage::new(
                    step.sessions,
                    next.map(|p| p.cursor()),
                    step.skipped,
                ))
            }
            Nodes::Cluster(cluster) => self.scan_cluster(cluster, prefix, at, limit).await,
        }
    }

    /// One page on a cluster: on the primary the cursor names, after checking that the
    /// cluster's slots stayed where they were (and, after the last page, once more).
    async fn scan_cluster(
        &self,
        cluster: &Cluster,
        prefix: u64,
        at: Option<Position>,
        limit: usize,
    ) -> Result<ScanPage> {
        let shape = Shape::read(cluster).await?;
        shape.check(at.as_ref())?;
        let at = at.unwrap_or_else(|| Position::start(prefix, shape.layout));
        let node = shape.nodes.get(at.node).ok_or_else(not_ours)?;
        let step = self.scan_step(node, &at, limit).await?;
        let next = match step.next {
            Some((server, redis)) => Some(Position {
                server: Some(server),
                redis,
                ..at
            }),
            None if at.node + 1 < shape.nodes.len() => Some(Position {
                node: at.node + 1,
                server: None,
                redis: 0,
                ..at
            }),
            None => None,
        };
        if next.is_none() {
            // No later page will check that no key moved during this one.
            Shape::read(cluster).await?.check(Some(&at))?;
        }
        Ok(ScanPage::new(
            step.sessions,
            next.map(|p| p.cursor()),
            step.skipped,
        ))
    }

    /// `SCAN` calls on `node` from `at` until about `limit` keys were found, the node is done or
    /// [`CALLS_PER_PAGE`] calls were made; then the keys' values.
    async fn scan_step(&self, node: &Node, at: &Position, limit: usize) -> Result<Step> {
        let pattern = format!("{}*", self.inner.prefix.as_str());
        let mut count = u32::try_from(limit).unwrap_or(MAX_COUNT).clamp(1, MAX_COUNT);
        let mut redis = at.redis;
        let mut server = at.server;
        let mut keys = Vec::new();
        let mut skipped = 0u64;
        for _ in 0..CALLS_PER_PAGE {
            let (run, next, listed, unreadable) = self.scan_call(node, redis, &pattern, count).await?;
            if server.is_some_and(|s| s != run) {
                return Err(restart(
                    "the Redis server being scanned was restarted or replaced by a failover",
                ));
            }
            server = Some(run);
            skipped += unreadable;
            keys.extend(listed);
            redis = next;
            if redis == 0 || keys.len() >= limit {
                break;
            }
            count = count.saturating_mul(2).min(MAX_COUNT);
        }
        // SCAN may return a key twice (while Redis resizes its table): once per page.
        keys.sort_unstable();
        keys.dedup();
        let (sessions, unreadable) = self.scan_values(node, &keys).await?;
        Ok(Step {
            sessions,
            skipped: skipped + unreadable,
            next: server.filter(|_| redis != 0).map(|s| (s, redis)),
        })
    }

    /// One `SCAN cursor MATCH pattern COUNT count`, pipelined after `INFO server` on the same
    /// connection: the server's `run_id` hash, the next cursor, the UTF-8 keys and how many
    /// were not.
    async fn scan_call(
        &self,
        node: &Node,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<(u64, u64, Vec<String>, u64)> {
        let (i, conn) = node.up()?;
        let client: &Client = conn;
        let pipeline = client.pipeline();
        let queued: std::result::Result<(), FredError> = pipeline.info(Some(InfoKind::Server)).await;
        queued.map_err(|e| node.err(e, "scan", None))?;
        let queued: std::result::Result<(), FredError> = pipeline
            .scan_page(cursor.to_string(), pattern.to_owned(), Some(count), None)
            .await;
        queued.map_err(|e| node.err(e, "scan", None))?;
        let mut replies: Vec<std::result::Result<Value, FredError>> = pipeline.try_all().await;
        let (Some(page), Some(info), None) = (replies.pop(), replies.pop(), replies.pop()) else {
            // The pipeline as a whole failed (not sent, timed out).
            let e = replies
                .into_iter()
                .find_map(std::result::Result::err)
                .unwrap_or_else(|| FredError::new(FredKind::Unknown, "a pipelined SCAN lost replies"));
            return node.read_result(i, "scan", None, Err(e));
        };
        let info = node.read_result(i, "scan", None, info)?;
        let page = node.read_result(i, "scan", None, page)?;
        // A server that does not tell its run id (not Redis itself) is taken to be the same one.
        let run = info
            .as_str()
            .and_then(|text| parse_run_id(&text).map(|id| Fnv::new().write(id.as_bytes()).0))
            .unwrap_or(0);
        let (next, keys, unreadable) = parse_scan_keys(page).map_err(|e| node.err(e, "scan", None))?;
        let next = parse_decimal(&next).ok_or_else(|| Error::Backend {
            backend: BACKEND,
            message: "scan: SCAN answered a cursor that is not a number".to_owned(),
            source: None,
        })?;
        Ok((run, next, keys, unreadable))
    }

    /// The sessions held by `keys` (keys `node` listed): one pipelined `GET` per key of this
    /// prefix's form, in batches. Tombstones and keys gone meanwhile (or moved to another
    /// cluster node) are left out; keys not of the form, values that are not envelopes and keys
    /// of another Redis type are counted.
    async fn scan_values(&self, node: &Node, keys: &[String]) -> Result<(Vec<(SessionKey, Record)>, u64)> {
        let mut skipped = 0u64;
        let parsed: Vec<(&String, SessionKey)> = keys
            .iter()
            .filter_map(|k| {
                let key = parse_backend_key(&self.inner.prefix, k);
                if key.is_none() {
                    skipped += 1;
                }
                key.map(|key| (k, key))
            })
            .collect();
        let mut sessions = Vec::with_capacity(parsed.len());
        for batch in parsed.chunks(self.inner.batch.max(1)) {
            let (i, conn) = node.up()?;
            let client: &Client = conn;
            let names = batch
                .iter()
                .map(|(k, _)| (fred::types::Key::from(k.as_str()), None))
                .collect();
            let replies = super::pipelined_gets(node, i, client, names, "scan").await?;
            for ((_, key), reply) in batch.iter().zip(replies) {
                match reply {
                    Ok(None) => {}
                    Ok(Some(bytes)) => match decode_entry(&bytes, key.ns()) {
                        Ok(Entry::Live(record)) => sessions.push((key.clone(), record)),
                        Ok(Entry::Tombstone(_)) => {}
                        Err(_) => skipped += 1,
                    },
                    Err(e) if e.details().starts_with("WRONGTYPE") => skipped += 1,
                    // Moved to another cluster node since the SCAN: a migration, which the
                    // next check of the cluster's shape sees.
                    Err(e) if e.details().starts_with("MOVED") || e.details().starts_with("ASK") => {}
                    Err(e) => return node.read_result(i, "scan", None, Err(e)),
                }
            }
        }
        Ok((sessions, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_anything_else_is_refused() {
        let at = Position {
            prefix: 0x0123_4567_89ab_cdef,
            layout: 7,
            node: 2,
            server: Some(u64::MAX),
            redis: 18_446_744_073_709_551_615,
        };
        assert_eq!(Position::parse(at.cursor().as_str()), Some(at));
        let start = Position::start(1, 0);
        assert_eq!(Position::parse(start.cursor().as_str()), Some(start));
        let good = at.cursor().as_str().to_owned();
        for bad in [
            String::new(),
            "r1".to_owned(),
            good.replacen("r1.", "r2.", 1),
            format!("{good}.1"),
            good.replacen(".2.", ".-1.", 1),
            good.replacen(".2.", ".02.", 1),
            good.replacen("0123456789abcdef", "0123456789ABCDEF", 1),
            good.replacen("0123456789abcdef", "123456789abcdef", 1),
            good.replace("18446744073709551615", "18446744073709551616"),
            good.replace("18446744073709551615", "0"),
            good.replace("ffffffffffffffff", "-"),
            good.replace("18446744073709551615", "+5"),
            "m:3/32".to_owned(),
            "k:session:task:0123456789abcdef".to_owned(),
        ] {
            assert_eq!(Position::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn slot_ranges_are_merged() {
        assert_eq!(merged(vec![(10, 20), (0, 9), (30, 30)]), vec![(0, 20), (30, 30)]);
        assert_eq!(merged(vec![(0, 16383)]), vec![(0, 16383)]);
        assert!(merged(Vec::new()).is_empty());
    }

    #[test]
    fn shapes_refuse_what_moved() {
        let shape = |layout, moving, unsettled| Shape {
            layout,
            nodes: Vec::new(),
            moving,
            unsettled,
        };
        let at = Position::start(1, 5);
        assert!(shape(5, false, None).check(Some(&at)).is_ok());
        assert!(shape(5, false, None).check(None).is_ok());
        assert!(matches!(
            shape(6, false, None).check(Some(&at)),
            Err(Error::Backend { .. })
        ));
        assert!(matches!(
            shape(5, true, None).check(Some(&at)),
            Err(Error::Backend { .. })
        ));
        assert!(matches!(
            shape(5, true, None).check(None),
            Err(Error::Unavailable { .. })
        ));
        assert!(matches!(
            shape(5, false, Some("x")).check(Some(&at)),
            Err(Error::Unavailable { .. })
        ));
    }
}
