//! `redis.url` in its three dialects: `redis://` URLs, the cluster and sentinel schemes, and
//! `host:port[,option=value…]` connection strings (the StackExchange.Redis form).

use fred::types::config::Config as FredConfig;
use session_core::Result;

use super::redact::redact_url;
use super::{config_err, config_err_src, RedisConfig, Topology, DEFAULT_URL};

impl RedisConfig {
    /// Parses the URL into fred's configuration (server, credentials, database).
    pub(super) fn parse_url(&self) -> Result<ParsedUrl> {
        let raw = self.url.trim();
        if raw.is_empty() {
            return Err(config_err(
                "redis.url",
                format!("is empty; use host:port or a URL such as {DEFAULT_URL}"),
            ));
        }
        if raw.contains("://") {
            self.parse_scheme_url(raw)
        } else {
            self.parse_bare(raw)
        }
    }

    fn parse_scheme_url(&self, raw: &str) -> Result<ParsedUrl> {
        let (scheme, rest) = raw.split_once("://").unwrap_or(("redis", raw));
        let (tls, topology) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, Topology::Standalone),
            "rediss" => (true, Topology::Standalone),
            "redis-cluster" => (false, Topology::Cluster),
            "rediss-cluster" => (true, Topology::Cluster),
            "redis-sentinel" => (false, Topology::Sentinel),
            "rediss-sentinel" => (true, Topology::Sentinel),
            other => {
                return Err(config_err(
                    "redis.url",
                    format!(
                        "unsupported scheme {:?}; use redis://, rediss://, redis-cluster://, \
                         rediss-cluster://, redis-sentinel:// or rediss-sentinel:// (or plain host:port)",
                        session_core::backend::clip_to(other, 60)
                    ),
                ))
            }
        };
        // fred would build its own TLS connector from the `s` in the scheme; this crate builds
        // it from redis.tls.*, so fred gets the plain scheme.
        let plain = match topology {
            Topology::Standalone => "redis",
            Topology::Cluster => "redis-cluster",
            Topology::Sentinel => "redis-sentinel",
        };
        let mut url = format!("{plain}://{rest}");
        if topology == Topology::Sentinel && !rest.contains("sentinelServiceName=") {
            match &self.sentinel.service_name {
                Some(name) => {
                    url.push(if rest.contains('?') { '&' } else { '?' });
                    url.push_str("sentinelServiceName=");
                    url.push_str(name);
                }
                None => {
                    return Err(config_err(
                        "redis.url",
                        "a redis-sentinel:// URL needs ?sentinelServiceName=NAME (or set redis.sentinel.service_name)",
                    ))
                }
            }
        }
        if topology == Topology::Standalone && rest.contains("node=") {
            return Err(config_err(
                "redis.url",
                "node= parameters are only read from redis-cluster:// and redis-sentinel:// URLs; \
                 use one of those schemes for a cluster or sentinels",
            ));
        }
        let fred = FredConfig::from_url(&url).map_err(|e| {
            let msg = format!(
                "cannot parse {}: {}; accepted: host:port, redis://[user:password@]host[:port][/db], \
                 rediss://..., redis-cluster://host:port?node=host:port, \
                 redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port",
                redact_url(raw),
                e.details()
            );
            config_err_src("redis.url", msg, e)
        })?;
        Ok(ParsedUrl { fred, topology, tls })
    }

    /// `host[:port][,option=value...]`, the StackExchange.Redis connection-string form.
    fn parse_bare(&self, raw: &str) -> Result<ParsedUrl> {
        let mut parts = raw.split(',').map(str::trim);
        let endpoint = parts.next().unwrap_or_default();
        let mut tls = false;
        let mut username = None;
        let mut password = None;
        let mut database = None;
        for opt in parts.filter(|p| !p.is_empty()) {
            let Some((k, v)) = opt.split_once('=') else {
                return Err(config_err(
                    "redis.url",
                    format!(
                        "{:?} is a second endpoint or an option without a value; for several nodes \
                         use redis-cluster://host:port?node=host:port or a redis-sentinel:// URL",
                        session_core::backend::clip_to(opt, 60)
                    ),
                ));
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "password" => password = Some(v.to_owned()),
                "user" | "username" => username = Some(v.to_owned()),
                "ssl" | "tls" => {
                    tls = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => return Err(config_err("redis.url", "ssl= must be true or false")),
                    }
                }
                "defaultdatabase" => {
                    database = Some(v.trim().parse::<u8>().map_err(|_| {
                        config_err("redis.url", "defaultDatabase= must be a database index 0 to 255")
                    })?)
                }
                // Client-side knobs of StackExchange.Redis that have their own keys here.
                "abortconnect" | "connecttimeout" | "synctimeout" | "asynctimeout" | "connectretry" => {}
                other => {
                    return Err(config_err(
                        "redis.url",
                        format!(
                            "unknown option {:?}; known: password, user, ssl, defaultDatabase",
                            session_core::backend::clip_to(other, 60)
                        ),
                    ))
                }
            }
        }
        if endpoint.is_empty() || endpoint.contains(['/', '@', '?']) {
            return Err(config_err(
                "redis.url",
                format!(
                    "{} is neither host:port nor a redis:// URL",
                    session_core::backend::clip_to(&redact_url(endpoint), 60)
                ),
            ));
        }
        let mut fred = FredConfig::from_url_centralized(&format!("redis://{endpoint}")).map_err(|e| {
            let msg = format!(
                "cannot parse {:?} as host:port: {}",
                session_core::backend::clip_to(endpoint, 60),
                e.details()
            );
            config_err_src("redis.url", msg, e)
        })?;
        fred.username = username;
        fred.password = password;
        fred.database = database;
        Ok(ParsedUrl {
            fred,
            topology: Topology::Standalone,
            tls,
        })
    }
}

/// What `redis.url` says: the servers and credentials, the topology, and whether it is TLS.
pub(super) struct ParsedUrl {
    pub(super) fred: FredConfig,
    pub(super) topology: Topology,
    pub(super) tls: bool,
}
