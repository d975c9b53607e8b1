//! Plain connections to each node of a cluster, for what the store does not report: a node's
//! role, `DBSIZE`, `used_memory`, `maxmemory` and the redirections it answered (`INFO
//! errorstats`).

use session_redis::fred::clients::Client;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::config::Config as FredConfig;
use session_redis::fred::types::CustomCommand;

/// One node, on a connection of its own (not a cluster client: `INFO` and `DBSIZE` are the
/// node's own).
pub(crate) struct NodeConn {
    /// `host:port`.
    pub(crate) addr: String,
    client: Client,
}

/// The `host:port` of every node a `redis-cluster://H:P?node=H:P&node=…` URL lists (the first
/// one, then each `node=`); a `redis://H:P` URL gives its one node.
pub(crate) fn addresses(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (first, query) = rest.split_once('?').unwrap_or((rest, ""));
    let first = first.rsplit_once('@').map_or(first, |(_, h)| h);
    let first = first.split('/').next().unwrap_or(first);
    let mut out = vec![first.to_owned()];
    out.extend(
        query
            .split('&')
            .filter_map(|p| p.strip_prefix("node="))
            .map(str::to_owned),
    );
    out.retain(|a| !a.is_empty());
    out
}

impl NodeConn {
    /// Connects to the node at `addr`.
    pub(crate) async fn connect(addr: &str) -> Result<Self, String> {
        let config = FredConfig::from_url(&format!("redis://{addr}")).map_err(|e| format!("{addr}: {e}"))?;
        let client = Client::new(config, None, None, None);
        client
            .init()
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        Ok(NodeConn {
            addr: addr.to_owned(),
            client,
        })
    }

    /// Connects to every node `url` lists.
    pub(crate) async fn connect_all(url: &str) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for addr in addresses(url) {
            out.push(NodeConn::connect(&addr).await?);
        }
        Ok(out)
    }

    async fn text(&self, command: &'static str, args: Vec<&str>) -> Result<String, String> {
        let reply: Result<String, _> = self
            .client
            .custom(CustomCommand::new_static(command, None, false), args)
            .await;
        reply.map_err(|e| format!("{command} on {}: {e}", self.addr))
    }

    /// `INFO section`.
    pub(crate) async fn info(&self, section: &str) -> Result<String, String> {
        self.text("INFO", vec![section]).await
    }

    /// Whether the node is a master now (`INFO replication`, `role:master`).
    pub(crate) async fn is_master(&self) -> Result<bool, String> {
        Ok(info_field(&self.info("replication").await?, "role") == Some("master"))
    }

    /// `DBSIZE`.
    pub(crate) async fn dbsize(&self) -> Result<u64, String> {
        let reply: Result<i64, _> = self
            .client
            .custom(
                CustomCommand::new_static("DBSIZE", None, false),
                Vec::<String>::new(),
            )
            .await;
        reply
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| format!("DBSIZE on {}: {e}", self.addr))
    }

    /// `used_memory` (`INFO memory`), bytes.
    pub(crate) async fn used_memory(&self) -> Result<u64, String> {
        let info = self.info("memory").await?;
        info_field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no used_memory in INFO memory of {}", self.addr))
    }

    /// `maxmemory` (`INFO memory`), bytes; 0 = no limit.
    pub(crate) async fn maxmemory(&self) -> Result<u64, String> {
        let info = self.info("memory").await?;
        Ok(info_field(&info, "maxmemory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// `MOVED` and `ASK` errors the node has answered since it started (`INFO errorstats`).
    pub(crate) async fn redirections(&self) -> Result<(u64, u64), String> {
        let info = self.info("errorstats").await?;
        let count = |name: &str| {
            info_field(&info, &format!("errorstat_{name}"))
                .and_then(|v| v.strip_prefix("count=")?.split(',').next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok((count("MOVED"), count("ASK")))
    }
}

/// `field:value` of `INFO` text.
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        let (name, value) = l.trim().split_once(':')?;
        (name == field).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::{addresses, info_field};

    #[test]
    fn lists_the_nodes_of_a_url() {
        assert_eq!(
            addresses("redis-cluster://127.0.0.1:1?node=127.0.0.1:2&node=127.0.0.1:3"),
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        );
        assert_eq!(addresses("redis://127.0.0.1:7"), ["127.0.0.1:7"]);
        assert_eq!(addresses("redis://u:p@127.0.0.1:7/1"), ["127.0.0.1:7"]);
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Errorstats\r\nerrorstat_MOVED:count=3\r\nused_memory:100\r\n";
        assert_eq!(info_field(info, "errorstat_MOVED"), Some("count=3"));
        assert_eq!(info_field(info, "used_memory"), Some("100"));
        assert_eq!(info_field(info, "used"), None);
    }
}
