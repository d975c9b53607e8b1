//! Unit tests of the configuration: URL forms, bad values, redaction.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use fred::types::config::ServerConfig;
use session_core::StoreOptions;

use super::*;

fn url(u: &str) -> RedisConfig {
    RedisConfig::new(u)
}

fn key_of(e: Error) -> String {
    match e {
        Error::Config { key, .. } => key,
        other => panic!("expected Config, got {other}"),
    }
}

#[test]
fn defaults_validate_and_build() {
    let c = RedisConfig::default();
    c.validate().unwrap();
    let b = c.build(&StoreOptions::default(), true).unwrap();
    assert_eq!(b.topology, Topology::Standalone);
    assert_eq!(b.timeout, Duration::from_millis(250));
    assert_eq!(b.connection.max_command_attempts, COMMAND_ATTEMPTS);
    assert_eq!(b.connection.max_command_buffer_len, DEFAULT_MAX_PENDING_COMMANDS);
    assert_eq!(
        b.connection.unresponsive.max_timeout,
        Some(Duration::from_secs(2))
    );
    assert_eq!(b.perf.default_command_timeout, Duration::from_millis(250));
    assert!(b.fred.fail_fast);
    assert!(!c.build(&StoreOptions::default(), false).unwrap().fred.fail_fast);
    assert_eq!(b.tombstone_ttl_ms, 0, "tombstones are off by default");
    assert_eq!(b.connection.tcp.nodelay, None, "the socket keeps the OS default");
    let nodelay = RedisConfig {
        tcp_nodelay: true,
        ..RedisConfig::default()
    };
    assert_eq!(
        nodelay
            .build(&StoreOptions::default(), true)
            .unwrap()
            .connection
            .tcp
            .nodelay,
        Some(true)
    );
}

#[test]
fn accepts_every_url_form() {
    for (u, topo) in [
        ("localhost:6379", Topology::Standalone),
        ("localhost", Topology::Standalone),
        ("10.0.0.5:7000", Topology::Standalone),
        (
            "localhost:6379,password=p@ss,ssl=false,abortConnect=false",
            Topology::Standalone,
        ),
        ("redis://127.0.0.1:6379", Topology::Standalone),
        ("redis://app:secret@127.0.0.1:6379/2", Topology::Standalone),
        ("rediss://app:secret@127.0.0.1:6380", Topology::Standalone),
        (
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
            Topology::Cluster,
        ),
        (
            "redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster&node=127.0.0.1:26380",
            Topology::Sentinel,
        ),
    ] {
        let c = url(u);
        assert_eq!(c.topology().unwrap(), topo, "{u}");
        if u.starts_with("rediss") && !cfg!(feature = "tls") {
            continue;
        }
        let b = c.build(&StoreOptions::default(), true).unwrap();
        assert_eq!(b.topology, topo);
    }
    let b = url("redis://app:secret@127.0.0.1:6379/2")
        .build(&StoreOptions::default(), true)
        .unwrap();
    assert_eq!(b.fred.username.as_deref(), Some("app"));
    assert_eq!(b.fred.password.as_deref(), Some("secret"));
    assert_eq!(b.fred.database, Some(2));
    let b = url("localhost:6379,password=p@ss,defaultDatabase=3")
        .build(&StoreOptions::default(), true)
        .unwrap();
    assert_eq!(b.fred.password.as_deref(), Some("p@ss"));
    assert_eq!(b.fred.database, Some(3));
    #[cfg(feature = "tls")]
    {
        let b = url("rediss://127.0.0.1:6380")
            .build(&StoreOptions::default(), true)
            .unwrap();
        assert!(b.tls && b.fred.tls.is_some());
    }
    #[cfg(not(feature = "tls"))]
    {
        let e = url("rediss://127.0.0.1:6380")
            .build(&StoreOptions::default(), true)
            .err()
            .unwrap();
        assert_eq!(key_of(e), "redis.url");
    }
    let b = url("redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster")
        .build(&StoreOptions::default(), true)
        .unwrap();
    match b.fred.server {
        ServerConfig::Sentinel { service_name, .. } => assert_eq!(service_name, "mymaster"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_values_name_their_key() {
    let cases: Vec<(RedisConfig, &str)> = vec![
        (url(""), "redis.url"),
        (url("http://x:1"), "redis.url"),
        (url("redis://:notaport"), "redis.url"),
        (url("redis://host:99999"), "redis.url"),
        (url("localhost:6379,bogus=1"), "redis.url"),
        (url("a:1,b:2"), "redis.url"),
        (url("redis-sentinel://127.0.0.1:26379"), "redis.url"),
        (url("redis://127.0.0.1:6379?node=127.0.0.1:7000"), "redis.url"),
        (
            RedisConfig {
                timeout_ms: 0,
                ..RedisConfig::default()
            },
            "redis.timeout_ms",
        ),
        (
            RedisConfig {
                pool_size: 0,
                ..RedisConfig::default()
            },
            "redis.pool_size",
        ),
        (
            RedisConfig {
                connect_timeout_ms: 0,
                ..RedisConfig::default()
            },
            "redis.connect_timeout_ms",
        ),
        (
            RedisConfig {
                unresponsive_timeout_ms: 100,
                ..RedisConfig::default()
            },
            "redis.unresponsive_timeout_ms",
        ),
        (
            RedisConfig {
                max_pending_commands: 0,
                ..RedisConfig::default()
            },
            "redis.max_pending_commands",
        ),
        (
            RedisConfig {
                tombstone_ttl_ms: MAX_TOMBSTONE_TTL_MS + 1,
                ..RedisConfig::default()
            },
            "redis.tombstone_ttl_ms",
        ),
        (
            RedisConfig {
                reconnect: ReconnectConfig {
                    min_delay_ms: 500,
                    max_delay_ms: 100,
                },
                ..RedisConfig::default()
            },
            "redis.reconnect.max_delay_ms",
        ),
    ];
    for (c, key) in cases {
        let e = c
            .build(&StoreOptions::default(), true)
            .err()
            .unwrap_or_else(|| panic!("{c:?} accepted"));
        assert_eq!(key_of(e), key, "{c:?}");
    }
    let mut c = url("redis-cluster://127.0.0.1:7000");
    c.database = Some(1);
    assert_eq!(
        key_of(c.build(&StoreOptions::default(), true).err().unwrap()),
        "redis.database"
    );
    let c = RedisConfig {
        tls: RedisTlsConfig {
            ca_file: Some("/nonexistent".into()),
            ..RedisTlsConfig::default()
        },
        ..RedisConfig::default()
    };
    assert_eq!(
        key_of(c.build(&StoreOptions::default(), true).err().unwrap()),
        "redis.tls"
    );
    let mut c = url("rediss://127.0.0.1:6380");
    c.tls.ca_file = Some("/nonexistent/ca.pem".into());
    assert_eq!(
        key_of(c.build(&StoreOptions::default(), true).err().unwrap()),
        if cfg!(feature = "tls") {
            "redis.tls.ca_file"
        } else {
            "redis.url"
        }
    );
    let mut c = url("rediss://127.0.0.1:6380");
    c.tls.cert_file = Some("/x.pem".into());
    assert_eq!(
        key_of(c.build(&StoreOptions::default(), true).err().unwrap()),
        "redis.tls.key_file"
    );
    let c = RedisConfig {
        username: Some("app".into()),
        ..RedisConfig::default()
    };
    assert_eq!(
        key_of(c.build(&StoreOptions::default(), true).err().unwrap()),
        "redis.password"
    );
}

#[test]
fn config_overrides_url_credentials() {
    let mut c = url("redis://u:frompath@127.0.0.1:6379");
    c.password = Some("fromconfig".into());
    let b = c.build(&StoreOptions::default(), true).unwrap();
    assert_eq!(b.fred.password.as_deref(), Some("fromconfig"));
    assert_eq!(b.fred.username.as_deref(), Some("u"));
}

#[test]
fn debug_redacts_passwords() {
    let mut c =
        url("redis-sentinel://app:hunter2@127.0.0.1:26379?sentinelServiceName=m&sentinelPassword=s3cr3t");
    c.password = Some("topsecret".into());
    c.sentinel.password = Some("sentinelpw".into());
    let d = format!("{c:?}");
    for secret in ["hunter2", "s3cr3t", "topsecret", "sentinelpw"] {
        assert!(!d.contains(secret), "{secret} in {d}");
    }
    assert!(d.contains("app:<redacted>@"), "{d}");
    assert_eq!(
        redact_url("localhost:6379,password=abc,ssl=true"),
        "localhost:6379,password=<redacted>,ssl=true"
    );
    assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:<redacted>@h:1/0");
}

#[test]
fn error_messages_hold_no_password() {
    let e = url("redis://app:hunter2@host:notaport")
        .build(&StoreOptions::default(), true)
        .err()
        .unwrap();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = url("ftp://app:hunter2@host:1")
        .build(&StoreOptions::default(), true)
        .err()
        .unwrap();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn deserializes_with_defaults_and_rejects_unknown_keys() {
    #[derive(Deserialize)]
    struct Wrapper {
        redis: RedisConfig,
    }
    let w: Wrapper = serde_json_like(
        r#"{"redis": {"url": "localhost:6379", "timeout_ms": 100, "tls": {"ca_file": "/ca.pem"}}}"#,
    );
    assert_eq!(w.redis.timeout_ms, 100);
    assert_eq!(w.redis.pool_size, DEFAULT_POOL_SIZE);
    assert_eq!(w.redis.tombstone_ttl_ms, 0);
    let on: RedisConfig = serde_json_like(r#"{"tombstone_ttl_ms": 86400000}"#);
    assert_eq!(on.tombstone_ttl_ms, 86_400_000);
    on.validate().unwrap();
    assert_eq!(
        on.build(&StoreOptions::default(), true).unwrap().tombstone_ttl_ms,
        86_400_000
    );
    assert_eq!(
        w.redis.tls.ca_file.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    assert!(serde_json::from_str::<RedisConfig>(r#"{"tiemout_ms": 1}"#).is_err());
    assert!(serde_json::from_str::<RedisConfig>(r#"{"tls": {"insecure": true}}"#).is_err());
}

fn serde_json_like<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(s).unwrap()
}
