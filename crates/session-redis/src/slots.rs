//! The cluster's slot map as this store knows it, and the redirections Redis answers with.
//!
//! Pure data: read from `CLUSTER SLOTS`, changed by `MOVED`, asked which node serves a slot.
//! The connections to the nodes are in `cluster.rs`.

use fred::types::config::Server;
use fred::types::Value;

/// Hash slots of a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// Which primary serves each slot, as indexes into a node list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// Per slot: the index of its primary in `servers`, or [`NONE`] when no node serves it.
    owner: Box<[u16]>,
    /// The primaries, each once.
    servers: Vec<Server>,
}

/// No node serves the slot.
const NONE: u16 = u16::MAX;

impl SlotMap {
    /// An empty map: no slot is served.
    pub(crate) fn empty() -> Self {
        SlotMap {
            owner: vec![NONE; SLOTS].into_boxed_slice(),
            servers: Vec::new(),
        }
    }

    /// The map a `CLUSTER SLOTS` reply describes. `asked` is the node that answered: a primary
    /// announced with an empty host (or `?`) is on that node's host.
    ///
    /// # Errors
    /// A description of what is wrong when the reply is not a `CLUSTER SLOTS` answer.
    pub(crate) fn from_cluster_slots(reply: Value, asked: &Server) -> Result<Self, String> {
        let Value::Array(ranges) = reply else {
            return Err("CLUSTER SLOTS did not answer an array".into());
        };
        let mut map = SlotMap::empty();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err("a CLUSTER SLOTS range is not an array".into());
            };
            let (Some(start), Some(end), Some(primary)) = (
                fields.first().and_then(as_slot),
                fields.get(1).and_then(as_slot),
                fields.get(2),
            ) else {
                return Err("a CLUSTER SLOTS range lacks its bounds or its primary".into());
            };
            if start > end {
                return Err(format!("a CLUSTER SLOTS range runs backwards ({start}-{end})"));
            }
            let server = node_of(primary, asked)?;
            map.assign(start, end, server);
        }
        Ok(map)
    }

    /// Slots `start..=end` are served by `server`.
    pub(crate) fn assign(&mut self, start: u16, end: u16, server: Server) {
        let index = match self.servers.iter().position(|s| s == &server) {
            Some(i) => i,
            None => {
                self.servers.push(server);
                self.servers.len() - 1
            }
        };
        let index = u16::try_from(index).unwrap_or(NONE);
        let end = usize::from(end).min(SLOTS - 1);
        for slot in usize::from(start)..=end {
            self.owner[slot] = index;
        }
        self.forget_unused();
    }

    /// The primary serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<&Server> {
        let index = *self.owner.get(usize::from(slot))?;
        self.servers.get(usize::from(index))
    }

    /// Every primary that serves at least one slot.
    pub(crate) fn primaries(&self) -> &[Server] {
        &self.servers
    }

    /// Slots no node serves.
    pub(crate) fn uncovered(&self) -> usize {
        self.owner.iter().filter(|&&o| o == NONE).count()
    }

    /// Drops servers that no longer serve a slot (after a `MOVED` took their last one).
    fn forget_unused(&mut self) {
        let mut used = vec![false; self.servers.len()];
        for &o in self.owner.iter() {
            if let Some(u) = used.get_mut(usize::from(o)) {
                *u = true;
            }
        }
        if used.iter().all(|&u| u) {
            return;
        }
        let mut renumber = vec![NONE; self.servers.len()];
        let mut kept = Vec::with_capacity(self.servers.len());
        for (i, server) in std::mem::take(&mut self.servers).into_iter().enumerate() {
            if used[i] {
                renumber[i] = u16::try_from(kept.len()).unwrap_or(NONE);
                kept.push(server);
            }
        }
        for o in self.owner.iter_mut() {
            *o = renumber.get(usize::from(*o)).copied().unwrap_or(NONE);
        }
        self.servers = kept;
    }
}

fn as_slot(v: &Value) -> Option<u16> {
    match v {
        Value::Integer(n) => u16::try_from(*n).ok().filter(|&s| usize::from(s) < SLOTS),
        _ => None,
    }
}

/// `[host, port, id, …]` of a `CLUSTER SLOTS` node entry.
fn node_of(entry: &Value, asked: &Server) -> Result<Server, String> {
    let Value::Array(parts) = entry else {
        return Err("a CLUSTER SLOTS node is not an array".into());
    };
    let host = match parts.first() {
        Some(Value::String(s)) => s.to_string(),
        Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => return Err("a CLUSTER SLOTS node has no host".into()),
    };
    let port = match parts.get(1) {
        Some(Value::Integer(p)) => u16::try_from(*p).map_err(|_| format!("port {p} out of range"))?,
        _ => return Err("a CLUSTER SLOTS node has no port".into()),
    };
    let host = if host.is_empty() || host == "?" {
        asked.host.to_string()
    } else {
        host
    };
    Ok(Server::new(host, port))
}

/// A redirection Redis answered instead of running a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// `MOVED slot host:port`: the slot is served by that node from now on.
    Moved { slot: u16, server: Server },
    /// `ASK slot host:port`: the key is being migrated; send this one command to that node,
    /// preceded by `ASKING`.
    Ask { server: Server },
}

impl Redirect {
    /// The redirection in an error reply (`MOVED 3999 127.0.0.1:6381`), if it is one. `asked`
    /// is the node that answered (an empty host means its host).
    pub(crate) fn parse(details: &str, asked: &Server) -> Option<Redirect> {
        let mut words = details.split_ascii_whitespace();
        let kind = words.next()?;
        let slot: u16 = words.next()?.parse().ok().filter(|&s| usize::from(s) < SLOTS)?;
        let endpoint = words.next()?;
        let (host, port) = endpoint.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = if host.is_empty() || host == "?" {
            asked.host.to_string()
        } else {
            host.trim_start_matches('[').trim_end_matches(']').to_owned()
        };
        let server = Server::new(host, port);
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, server }),
            "ASK" => Some(Redirect::Ask { server }),
            _ => None,
        }
    }
}

/// One line of `CLUSTER NODES`: a node as the node that answered sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeLine {
    /// The node's id (40 hex characters).
    pub(crate) id: String,
    /// Where it listens (`None`: no address known, `noaddr`, or port 0).
    pub(crate) server: Option<Server>,
    /// A master (flag `master`), not a replica.
    pub(crate) master: bool,
    /// Reachable as far as the answering node knows: none of `fail`, `handshake`, `noaddr`.
    pub(crate) usable: bool,
    /// The slots it serves, as ranges.
    pub(crate) slots: Vec<(u16, u16)>,
    /// `[slot->-id]`: slots it is migrating, each to the node named (only on the `myself` line).
    pub(crate) migrating: Vec<(u16, String)>,
    /// `[slot-<-id]`: slots it is importing, each from the node named (only on the `myself` line).
    pub(crate) importing: Vec<(u16, String)>,
}

impl NodeLine {
    /// Serves no slot and migrates or imports none: nothing of the keyspace is on it.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.slots.is_empty() && self.migrating.is_empty() && self.importing.is_empty()
    }
}

/// A `CLUSTER NODES` reply: the answering node's own line (`myself`) and the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodesReply {
    pub(crate) me: NodeLine,
    pub(crate) others: Vec<NodeLine>,
}

impl NodesReply {
    /// Parses a `CLUSTER NODES` reply. `asked` is the node that answered: an address with an
    /// empty host is on its host.
    ///
    /// # Errors
    /// A description of what is wrong when the reply is not a `CLUSTER NODES` answer (no
    /// `myself` line, a line without its eight fixed fields, a bad slot).
    pub(crate) fn parse(text: &str, asked: &Server) -> Result<Self, String> {
        let mut me = None;
        let mut others = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (myself, node) = parse_node_line(line, asked)?;
            if myself {
                if me.is_some() {
                    return Err("CLUSTER NODES has two myself lines".into());
                }
                me = Some(node);
            } else {
                others.push(node);
            }
        }
        let me = me.ok_or_else(|| "CLUSTER NODES has no myself line".to_owned())?;
        Ok(NodesReply { me, others })
    }
}

/// One `CLUSTER NODES` line: `id addr flags master ping pong epoch link slot…`.
fn parse_node_line(line: &str, asked: &Server) -> Result<(bool, NodeLine), String> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let [id, addr, flags, _, _, _, _, _, slots @ ..] = fields.as_slice() else {
        return Err("a CLUSTER NODES line lacks its fixed fields".into());
    };
    let flags: Vec<&str> = flags.split(',').collect();
    let has = |f: &str| flags.contains(&f);
    let mut node = NodeLine {
        id: (*id).to_owned(),
        server: node_address(addr, asked),
        master: has("master"),
        usable: !has("fail") && !has("handshake") && !has("noaddr"),
        ..NodeLine::default()
    };
    for slot in slots {
        if let Some(marker) = slot.strip_prefix('[').and_then(|m| m.strip_suffix(']')) {
            if let Some((s, peer)) = marker.split_once("->-") {
                node.migrating.push((slot_number(s)?, peer.to_owned()));
            } else if let Some((s, peer)) = marker.split_once("-<-") {
                node.importing.push((slot_number(s)?, peer.to_owned()));
            } else {
                return Err(format!("a CLUSTER NODES slot marker is not understood: {slot}"));
            }
        } else {
            let (a, b) = slot.split_once('-').unwrap_or((slot, slot));
            let (a, b) = (slot_number(a)?, slot_number(b)?);
            if a > b {
                return Err(format!("a CLUSTER NODES slot range runs backwards ({slot})"));
            }
            node.slots.push((a, b));
        }
    }
    Ok((has("myself"), node))
}

fn slot_number(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|&n| usize::from(n) < SLOTS)
        .ok_or_else(|| format!("not a hash slot: {s:?}"))
}

/// `ip:port@cport[,hostname]`; `None` for port 0 (no address known).
fn node_address(addr: &str, asked: &Server) -> Option<Server> {
    let addr = addr.split(',').next()?;
    let addr = addr.split('@').next()?;
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let host = if host.is_empty() || host == "?" {
        asked.host.to_string()
    } else {
        host.trim_start_matches('[').trim_end_matches(']').to_owned()
    };
    Some(Server::new(host, port))
}

/// Node ids met during one whole-keyspace call, numbered from 0 (so a [`Layout`] holds numbers,
/// not strings).
#[derive(Debug, Default)]
pub(crate) struct Ids {
    numbers: std::collections::HashMap<String, u32>,
}

impl Ids {
    /// The number of `id`, given one if it is new.
    pub(crate) fn number(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.numbers.get(id) {
            return n;
        }
        let n = u32::try_from(self.numbers.len()).unwrap_or(u32::MAX);
        self.numbers.insert(id.to_owned(), n);
        n
    }
}

/// A migration marker of one slot on one node's own line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Marker {
    /// The node whose line carries it.
    pub(crate) holder: u32,
    /// `[slot-<-peer]` (the holder imports the slot from the peer), else `[slot->-peer]` (the
    /// holder migrates it to the peer).
    pub(crate) importing: bool,
    /// The other node.
    pub(crate) peer: u32,
}

/// Per slot: which nodes claim it and which migration markers name it, as the nodes said of
/// themselves (their `myself` lines of `CLUSTER NODES`) at one reading. Whole-keyspace calls
/// compare two readings slot by slot: a slot whose entry is the same before and after did not
/// change hands in between (see `count` in `ops.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Per slot: the node claiming it, [`NONE`] or [`MANY`] (then listed in `many`).
    owner: Box<[u32]>,
    many: std::collections::BTreeMap<u16, Vec<u32>>,
    /// The slots with markers, each slot's sorted.
    markers: std::collections::BTreeMap<u16, Vec<Marker>>,
}

/// No node claims the slot.
const NOBODY: u32 = u32::MAX;
/// Several nodes claim it (between the new owner's `SETSLOT NODE` and the old owner's).
const MANY: u32 = u32::MAX - 1;

impl Default for Layout {
    fn default() -> Self {
        Layout {
            owner: vec![NOBODY; SLOTS].into_boxed_slice(),
            many: std::collections::BTreeMap::new(),
            markers: std::collections::BTreeMap::new(),
        }
    }
}

impl Layout {
    /// Adds what node `number` says of itself (its `myself` line); the ids its markers name are
    /// numbered in `ids`. A replica's line claims nothing.
    pub(crate) fn add(&mut self, number: u32, me: &NodeLine, ids: &mut Ids) {
        if me.master {
            for &(a, b) in &me.slots {
                for slot in a..=b {
                    self.claim(slot, number);
                }
            }
        }
        let marks = me
            .migrating
            .iter()
            .map(|(s, peer)| (*s, false, peer))
            .chain(me.importing.iter().map(|(s, peer)| (*s, true, peer)));
        for (slot, importing, peer) in marks {
            let marker = Marker {
                holder: number,
                importing,
                peer: ids.number(peer),
            };
            let list = self.markers.entry(slot).or_default();
            if let Err(at) = list.binary_search(&marker) {
                list.insert(at, marker);
            }
        }
    }

    fn claim(&mut self, slot: u16, number: u32) {
        let Some(owner) = self.owner.get_mut(usize::from(slot)) else {
            return;
        };
        match *owner {
            NOBODY => *owner = number,
            MANY => {
                let list = self.many.entry(slot).or_default();
                if let Err(at) = list.binary_search(&number) {
                    list.insert(at, number);
                }
            }
            one if one == number => {}
            one => {
                *owner = MANY;
                let mut list = vec![one, number];
                list.sort_unstable();
                self.many.insert(slot, list);
            }
        }
    }

    /// Whether some node shows `slot` migrating or importing.
    pub(crate) fn migrating(&self, slot: u16) -> bool {
        self.markers.contains_key(&slot)
    }

    /// The slots some node shows migrating or importing.
    pub(crate) fn migrating_slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.markers.keys().copied()
    }

    /// Whether `slot` has the same claimants and markers in both readings.
    pub(crate) fn same(&self, other: &Layout, slot: u16) -> bool {
        let i = usize::from(slot);
        self.owner.get(i) == other.owner.get(i)
            && self.many.get(&slot) == other.many.get(&slot)
            && self.markers.get(&slot) == other.markers.get(&slot)
    }

    /// The slots whose claimants or markers differ between the two readings.
    pub(crate) fn changed(&self, other: &Layout) -> std::collections::BTreeSet<u16> {
        (0..SLOTS)
            .filter_map(|s| u16::try_from(s).ok())
            .filter(|&s| !self.same(other, s))
            .collect()
    }

    /// The nodes claiming `slot`.
    fn claimants(&self, slot: u16) -> Vec<u32> {
        match self.owner.get(usize::from(slot)).copied() {
            None | Some(NOBODY) => Vec::new(),
            Some(MANY) => self.many.get(&slot).cloned().unwrap_or_default(),
            Some(one) => vec![one],
        }
    }

    /// Where to read `slot`'s keys, in two waves: `(sources, targets)`. A slot without markers
    /// is read on its claimants alone (no targets). A migrating one: the sources are the nodes
    /// migrating it and the nodes others import it from; the targets, read after every source,
    /// are the nodes importing it, the nodes it is migrated to and any other claimant (a
    /// target that has taken the slot with `SETSLOT NODE` before the source gave it up).
    pub(crate) fn waves(&self, slot: u16) -> (Vec<u32>, Vec<u32>) {
        let Some(markers) = self.markers.get(&slot) else {
            return (self.claimants(slot), Vec::new());
        };
        let mut sources: Vec<u32> = markers
            .iter()
            .map(|m| if m.importing { m.peer } else { m.holder })
            .collect();
        sources.sort_unstable();
        sources.dedup();
        let mut targets: Vec<u32> = markers
            .iter()
            .map(|m| if m.importing { m.holder } else { m.peer })
            .chain(self.claimants(slot))
            .filter(|n| !sources.contains(n))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        (sources, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::from(host),
            Value::Integer(port),
            Value::from("0123456789abcdef"),
        ])
    }

    fn range(start: i64, end: i64, primary: Value) -> Value {
        Value::Array(vec![
            Value::Integer(start),
            Value::Integer(end),
            primary,
            node("127.0.0.1", 9999),
        ])
    }

    fn asked() -> Server {
        Server::new("10.0.0.9", 7000)
    }

    #[test]
    fn cluster_slots_name_each_slot_s_primary() {
        let reply = Value::Array(vec![
            range(0, 5460, node("127.0.0.1", 7000)),
            range(5461, 10922, node("127.0.0.1", 7001)),
            range(10923, 16383, node("", 7002)),
        ]);
        let map = SlotMap::from_cluster_slots(reply, &asked()).unwrap();
        assert_eq!(map.owner(0), Some(&Server::new("127.0.0.1", 7000)));
        assert_eq!(map.owner(5461), Some(&Server::new("127.0.0.1", 7001)));
        // An empty host is the host of the node that answered.
        assert_eq!(map.owner(16383), Some(&Server::new("10.0.0.9", 7002)));
        assert_eq!(map.primaries().len(), 3);
        assert_eq!(map.uncovered(), 0);
    }

    #[test]
    fn a_partial_reply_leaves_slots_uncovered() {
        let reply = Value::Array(vec![range(0, 99, node("127.0.0.1", 7000))]);
        let map = SlotMap::from_cluster_slots(reply, &asked()).unwrap();
        assert_eq!(map.owner(100), None);
        assert_eq!(map.uncovered(), SLOTS - 100);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            Value::from("OK"),
            Value::Array(vec![Value::from("x")]),
            Value::Array(vec![Value::Array(vec![Value::Integer(0)])]),
            Value::Array(vec![range(5, 1, node("h", 1))]),
            Value::Array(vec![range(0, 20_000, node("h", 1))]),
            Value::Array(vec![range(0, 1, node("h", 70_000))]),
            Value::Array(vec![range(0, 1, Value::Array(vec![]))]),
            Value::Array(vec![range(-1, 1, node("h", 1))]),
        ] {
            assert!(SlotMap::from_cluster_slots(bad, &asked()).is_err());
        }
    }

    #[test]
    fn moved_slots_change_owner_and_an_emptied_primary_is_forgotten() {
        let mut map = SlotMap::empty();
        map.assign(0, 9, Server::new("a", 1));
        map.assign(10, 19, Server::new("b", 2));
        map.assign(10, 19, Server::new("a", 1));
        assert_eq!(map.owner(15), Some(&Server::new("a", 1)));
        assert_eq!(map.primaries(), &[Server::new("a", 1)]);
        map.assign(0, 19, Server::new("c", 3));
        assert_eq!(map.primaries(), &[Server::new("c", 3)]);
        assert_eq!(map.owner(0), Some(&Server::new("c", 3)));
    }

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-99 200 [100->-b2] [300-<-c3]
b2 127.0.0.1:7001@17001,host-b master - 0 1700000000000 2 connected 101-199
c3 :7002@17002 master,fail - 0 0 3 disconnected 300-399
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 :0@0 master,noaddr - 0 0 0 disconnected
";

    #[test]
    fn cluster_nodes_lines_give_claims_markers_and_addresses() {
        let reply = NodesReply::parse(NODES, &asked()).unwrap();
        let me = &reply.me;
        assert_eq!(me.id, "a1");
        assert_eq!(me.server, Some(Server::new("127.0.0.1", 7000)));
        assert!(me.master && me.usable);
        assert_eq!(me.slots, vec![(0, 99), (200, 200)]);
        assert_eq!(me.migrating, vec![(100, "b2".to_owned())]);
        assert_eq!(me.importing, vec![(300, "c3".to_owned())]);
        assert!(!me.holds_nothing());
        let [b, c, d, e] = reply.others.as_slice() else {
            panic!("four other lines: {:?}", reply.others)
        };
        assert_eq!(b.server, Some(Server::new("127.0.0.1", 7001)));
        // An empty host is the answering node's.
        assert_eq!(c.server, Some(Server::new("10.0.0.9", 7002)));
        assert!(c.master && !c.usable);
        assert!(!d.master && d.holds_nothing());
        assert_eq!(e.server, None);
        assert!(!e.usable);
    }

    #[test]
    fn malformed_cluster_nodes_replies_are_errors() {
        for bad in [
            "",
            "a1 127.0.0.1:7000@17000 master - 0 0 1 connected 0-99",
            "a1 127.0.0.1:7000@17000 myself,master - 0 0 1",
            "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 99-0",
            "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 16384",
            "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected [5-x-b]",
            "a1 h:1@2 myself,master - 0 0 1 connected\nb2 h:2@3 myself,master - 0 0 1 connected",
        ] {
            assert!(NodesReply::parse(bad, &asked()).is_err(), "{bad:?}");
        }
    }

    fn line(
        id: &str,
        slots: &[(u16, u16)],
        migrating: &[(u16, &str)],
        importing: &[(u16, &str)],
    ) -> NodeLine {
        NodeLine {
            id: id.to_owned(),
            server: None,
            master: true,
            usable: true,
            slots: slots.to_vec(),
            migrating: migrating.iter().map(|(s, p)| (*s, (*p).to_owned())).collect(),
            importing: importing.iter().map(|(s, p)| (*s, (*p).to_owned())).collect(),
        }
    }

    fn layout(ids: &mut Ids, lines: &[NodeLine]) -> Layout {
        let mut layout = Layout::default();
        for l in lines {
            let n = ids.number(&l.id);
            layout.add(n, l, ids);
        }
        layout
    }

    #[test]
    fn a_migration_is_read_from_its_sources_then_its_targets() {
        let mut ids = Ids::default();
        let (s, t) = (ids.number("s"), ids.number("t"));
        // Steady: slot 5 is read on its owner alone.
        let steady = layout(
            &mut ids,
            &[line("s", &[(0, 9)], &[], &[]), line("t", &[(10, 19)], &[], &[])],
        );
        assert_eq!(steady.waves(5), (vec![s], vec![]));
        assert!(!steady.migrating(5));
        assert_eq!(steady.waves(500), (vec![], vec![]));
        // Importing set on the target only, then the source migrating too: source, then target.
        let half = layout(
            &mut ids,
            &[
                line("s", &[(0, 9)], &[], &[]),
                line("t", &[(10, 19)], &[], &[(5, "s")]),
            ],
        );
        assert_eq!(half.waves(5), (vec![s], vec![t]));
        let both = layout(
            &mut ids,
            &[
                line("s", &[(0, 9)], &[(5, "t")], &[]),
                line("t", &[(10, 19)], &[], &[(5, "s")]),
            ],
        );
        assert_eq!(both.waves(5), (vec![s], vec![t]));
        assert_eq!(both.migrating_slots().collect::<Vec<_>>(), vec![5]);
        // The target took the slot (SETSLOT NODE) before the source gave it up.
        let taken = layout(
            &mut ids,
            &[
                line("s", &[(0, 9)], &[(5, "t")], &[]),
                line("t", &[(5, 5), (10, 19)], &[], &[]),
            ],
        );
        assert_eq!(taken.waves(5), (vec![s], vec![t]));
        // Done.
        let done = layout(
            &mut ids,
            &[
                line("s", &[(0, 4), (6, 9)], &[], &[]),
                line("t", &[(5, 5), (10, 19)], &[], &[]),
            ],
        );
        assert_eq!(done.waves(5), (vec![t], vec![]));
        // Each step changes slot 5's entry, and only slot 5's.
        let steps = [&steady, &half, &both, &taken, &done];
        for pair in steps.windows(2) {
            assert_eq!(pair[0].changed(pair[1]).into_iter().collect::<Vec<_>>(), vec![5]);
        }
        assert!(both.same(&both.clone(), 5));
        assert!(steady.changed(&steady.clone()).is_empty());
    }

    #[test]
    fn a_replica_claims_nothing() {
        let mut ids = Ids::default();
        let mut replica = line("r", &[(0, 9)], &[], &[]);
        replica.master = false;
        let l = layout(&mut ids, &[replica]);
        assert_eq!(l.waves(3), (vec![], vec![]));
    }

    #[test]
    fn redirections_are_parsed_and_anything_else_is_not_one() {
        assert_eq!(
            Redirect::parse("MOVED 3999 127.0.0.1:6381", &asked()),
            Some(Redirect::Moved {
                slot: 3999,
                server: Server::new("127.0.0.1", 6381)
            })
        );
        assert_eq!(
            Redirect::parse("ASK 3999 :6381", &asked()),
            Some(Redirect::Ask {
                server: Server::new("10.0.0.9", 6381)
            })
        );
        for other in [
            "",
            "MOVED",
            "MOVED 3999",
            "MOVED 99999 h:1",
            "MOVED 1 h",
            "MOVED 1 h:x",
            "ERR unknown command",
            "WRONGTYPE Operation against a key",
            "ASK x h:1",
        ] {
            assert_eq!(Redirect::parse(other, &asked()), None, "{other}");
        }
    }
}
