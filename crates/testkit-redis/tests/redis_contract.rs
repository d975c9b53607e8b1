//! The harness contract, checked from the test side: under each topology cell
//! of `cargo xtask test`, the variables `testkit_redis::env` promises are set
//! and lead to a live server. Outside the matrix every test here skips.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is the failure report")]

use std::process::Command;

use testkit_redis::resp::{self, info_field, Reply};
use testkit_redis::{topology_url, Topology, SENTINEL_SERVICE_NAME};

/// The `host:port` pairs of a URL: its authority, then every `node=` parameter.
fn nodes(url: &str) -> Vec<u16> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap();
    let mut addrs = vec![host.to_owned()];
    addrs.extend(
        query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("node="))
            .map(str::to_owned),
    );
    addrs
        .iter()
        .map(|addr| {
            let (ip, port) = addr.rsplit_once(':').unwrap();
            assert_eq!(ip, "127.0.0.1", "{url}");
            port.parse().unwrap()
        })
        .collect()
}

#[test]
fn redis_url_reaches_a_standalone_server() {
    let Some(target) = topology_url(Topology::Standalone) else {
        return;
    };
    assert!(target.url.starts_with("redis://"), "{target:?}");
    let ports = nodes(&target.url);
    assert_eq!(ports.len(), 1);
    assert_eq!(
        resp::command(ports[0], &["PING"]).unwrap(),
        Reply::Status("PONG".into())
    );
}

#[test]
fn cluster_url_lists_six_healthy_nodes() {
    let Some(target) = topology_url(Topology::Cluster) else {
        return;
    };
    assert!(target.url.starts_with("redis-cluster://"), "{target:?}");
    let ports = nodes(&target.url);
    assert_eq!(ports.len(), 6);
    for port in ports {
        let info = resp::command(port, &["CLUSTER", "INFO"]).unwrap().text().unwrap();
        assert_eq!(info_field(&info, "cluster_state").as_deref(), Some("ok"));
    }
}

#[test]
fn sentinel_url_names_three_sentinels_that_agree() {
    let Some(target) = topology_url(Topology::Sentinel) else {
        return;
    };
    assert!(target.url.starts_with("redis-sentinel://"), "{target:?}");
    assert!(target
        .url
        .ends_with(&format!("sentinelServiceName={SENTINEL_SERVICE_NAME}")));
    let ports = nodes(&target.url);
    assert_eq!(ports.len(), 3);
    let masters: Vec<Reply> = ports
        .iter()
        .map(|&port| {
            resp::command(
                port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE_NAME],
            )
            .unwrap()
        })
        .collect();
    assert!(masters.windows(2).all(|w| w[0] == w[1]), "{masters:?}");
    let master = masters[0].items()[1].integer().unwrap();
    let master = u16::try_from(master).unwrap();
    assert_eq!(
        resp::command(master, &["PING"]).unwrap(),
        Reply::Status("PONG".into())
    );
}

#[test]
fn tls_url_authenticates_the_acl_user() {
    let Some(target) = topology_url(Topology::Tls) else {
        return;
    };
    let rest = target.url.strip_prefix("rediss://").unwrap();
    let (credentials, _) = rest.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let port = nodes(&target.url)[0];
    let ca = target.tls_ca.as_ref().unwrap();
    assert!(ca.is_file(), "{ca:?}");
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls", "--cacert"])
        .arg(ca)
        .args(["--user", user, "-e"]);
    if let (Some(cert), Some(key)) = (&target.tls_client_cert, &target.tls_client_key) {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let output = command
        .env("REDISCLI_AUTH", password)
        .args(["SET", "session:contract", "1", "PX", "10000"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "OK");
}
