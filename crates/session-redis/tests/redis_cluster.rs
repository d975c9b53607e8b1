//! Redis Cluster beyond the conformance suite.
//!
//! Routing on a steady cluster: every command the store sends, scripts included, reaches its
//! key's slot owner on the first try. Redis counts the redirections it answered (`INFO
//! errorstats`: `errorstat_MOVED`, `errorstat_ASK`); after a mix of every operation on a few
//! hundred keys the count must be zero on every node.
//!
//! Runs in the cluster cell (`SESSION_TEST_TOPOLOGY=cluster`); skips elsewhere. Prints a
//! `FIGURES cluster routing …` line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

mod common;

use common::config_for;
use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Namespace, SessionId, SessionKey, SessionStore};
use session_redis::RedisStore;
use testkit_redis::resp::{self, info_field};
use testkit_redis::{topology_url, Topology};

const KEYS: usize = 600;

/// The ports named by a `redis-cluster://` URL.
fn ports(url: &str) -> Vec<u16> {
    url.trim_start_matches("redis-cluster://")
        .split(['?', '&'])
        .map(|part| part.trim_start_matches("node="))
        .filter_map(|hostport| hostport.rsplit(':').next()?.parse().ok())
        .collect()
}

/// `errorstat_<name>` summed over `ports` (`count=N` in `INFO errorstats`).
fn redirections(ports: &[u16], name: &str) -> u64 {
    ports
        .iter()
        .map(|&port| {
            let info = resp::command(port, &["INFO", "errorstats"])
                .expect("INFO errorstats")
                .text()
                .unwrap_or_default();
            info_field(&info, &format!("errorstat_{name}"))
                .and_then(|v| v.strip_prefix("count=")?.split(',').next()?.parse().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn rec(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + 3_600_000)
}

mod cluster {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_command_reaches_its_slot_owner_first() {
        let Some(target) = topology_url(Topology::Cluster) else {
            return;
        };
        let nodes = ports(&target.url);
        assert_eq!(nodes.len(), 6, "six cluster nodes in {}", target.url);
        let store = RedisStore::builder(config_for(&target))
            .options(session_core::StoreOptions::new(
                session_core::testing::random_prefix(),
            ))
            .connect()
            .await
            .expect("store connects");
        let ns = Namespace::new("route").unwrap();
        let keys: Vec<SessionKey> = (0..KEYS)
            .map(|_| SessionKey::new(ns.clone(), SessionId::generate().unwrap()))
            .collect();
        // Warm: the client's slot map and the scripts on every master, before the count starts.
        for key in keys.iter().take(50) {
            store.save(key, &rec(b"warm")).await.expect("warm save");
            store.delete(key).await.expect("warm delete");
        }
        for &port in &nodes {
            resp::command(port, &["CONFIG", "RESETSTAT"]).expect("CONFIG RESETSTAT");
        }

        let mut calls = 0u64;
        for (n, key) in keys.iter().enumerate() {
            let created = store.create(key, &rec(b"one")).await.expect("create");
            let saved = store.save(key, &rec(b"two")).await.expect("save");
            assert_ne!(created.version, saved.version);
            let updated = store.update(key, &rec(b"three")).await.expect("update");
            let checked = store
                .save_if(key, updated.version, &rec(b"four"))
                .await
                .expect("save_if");
            assert!(store.touch(key, now_ms() + 7_200_000).await.expect("touch"));
            let loaded = store.load(key).await.expect("load").expect("found");
            assert_eq!(loaded.meta.version, checked.version);
            assert_eq!(&loaded.payload[..], b"four");
            calls += 6;
            if n % 3 == 0 {
                let new_id = SessionId::generate().unwrap();
                store.rotate(key, &new_id).await.expect("rotate");
                let moved = SessionKey::new(ns.clone(), new_id);
                assert!(store.delete(&moved).await.expect("delete rotated"));
                calls += 2;
            } else {
                assert!(store.delete(key).await.expect("delete"));
                calls += 1;
            }
        }
        let batch: Vec<(SessionKey, Record)> = keys.iter().map(|k| (k.clone(), rec(b"many"))).collect();
        store.save_many(&batch).await.expect("save_many");
        let found = store.load_many(&keys).await.expect("load_many");
        assert!(found.iter().all(|r| matches!(r, Ok(Some(_)))));
        assert_eq!(store.count(&ns).await.expect("count"), KEYS as u64);
        store.stats().await.expect("stats");
        calls += 2 * KEYS as u64 + 2;

        let moved = redirections(&nodes, "MOVED");
        let ask = redirections(&nodes, "ASK");
        println!("FIGURES cluster routing: {calls} calls on {KEYS} keys, MOVED {moved}, ASK {ask}");
        assert_eq!(
            (moved, ask),
            (0, 0),
            "every command goes to its slot's owner first"
        );
    }
}
