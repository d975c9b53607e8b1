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
