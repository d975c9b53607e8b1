//! Redis Cluster beyond the conformance suite.
//!
//! Routing on a steady cluster: every command the store sends, scripts included, reaches its
//! key's slot owner on the first try. Redis counts the redirections it answered (`INFO
//! errorstats`: `errorstat_MOVED`, `errorstat_ASK`); after a mix of every operation on a few
//! hundred keys the count must be zero on every node.
//!
//! `scan` on a cluster: a page refuses to go on while a slot carries a migration marker.
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
use session_core::{Error, Namespace, ScanCursor, SessionId, SessionKey, SessionStore};
use session_redis::RedisStore;
use testkit_redis::resp::{self, info_field};
use testkit_redis::{topology_url, Topology};

const KEYS: usize = 600;

/// The tests that set migration markers (which make Redis answer `ASK`) run alone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
        let _serial = SERIAL.lock().await;
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

/// The masters among `ports`: (port, node id, lowest slot served).
fn masters(ports: &[u16]) -> Vec<(u16, String, u16)> {
    ports
        .iter()
        .filter_map(|&port| {
            let role = resp::command(port, &["ROLE"]).ok()?;
            if role.items().first()?.text()? != "master" {
                return None;
            }
            let id = resp::command(port, &["CLUSTER", "MYID"]).ok()?.text()?;
            let slots = resp::command(port, &["CLUSTER", "SLOTS"]).ok()?;
            let lowest = slots
                .items()
                .iter()
                .filter(|range| {
                    range.items().get(2).and_then(|p| p.items().get(1)?.integer()) == Some(i64::from(port))
                })
                .filter_map(|range| u16::try_from(range.items().first()?.integer()?).ok())
                .min()?;
            Some((port, id, lowest))
        })
        .collect()
}

/// Clears a slot's migration markers on both nodes, also when the test fails.
struct Markers {
    slot: String,
    ports: [u16; 2],
}

impl Drop for Markers {
    fn drop(&mut self) {
        for port in self.ports {
            let _ = resp::command(port, &["CLUSTER", "SETSLOT", &self.slot, "STABLE"]);
        }
    }
}

mod scan {
    use super::*;

    /// A slot marked as migrating (`IMPORTING` on one master, `MIGRATING` on its owner, as a
    /// reshard begins): a scan under way is refused with `Error::Backend` (start again), a new
    /// one with `Error::Unavailable` (try again later); once the markers are gone a scan lists
    /// every session once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_stops_while_slots_migrate() {
        let Some(target) = topology_url(Topology::Cluster) else {
            return;
        };
        let _serial = SERIAL.lock().await;
        let store = RedisStore::builder(config_for(&target))
            .options(session_core::StoreOptions::new(
                session_core::testing::random_prefix(),
            ))
            .connect()
            .await
            .expect("store connects");
        let ns = Namespace::new("scan").unwrap();
        for i in 0..30u8 {
            let key = SessionKey::new(ns.clone(), SessionId::generate().unwrap());
            store.save(&key, &rec(&[i])).await.expect("save");
        }
        let first = store.scan(None, 1).await.expect("first page");
        let cursor: ScanCursor = first
            .next
            .expect("30 sessions on three masters take several pages");

        let masters = masters(&ports(&target.url));
        assert!(masters.len() >= 2, "two masters: {masters:?}");
        let (owner, owner_id, slot) = masters[0].clone();
        let (other, other_id, _) = masters[1].clone();
        let slot = slot.to_string();
        let markers = Markers {
            slot: slot.clone(),
            ports: [owner, other],
        };
        for (port, args) in [
            (other, ["CLUSTER", "SETSLOT", &slot, "IMPORTING", &owner_id]),
            (owner, ["CLUSTER", "SETSLOT", &slot, "MIGRATING", &other_id]),
        ] {
            resp::command(port, &args).unwrap().into_result().unwrap();
        }
        match store.scan(Some(&cursor), 10).await {
            Err(e @ Error::Backend { .. }) => assert!(e.to_string().contains("start the scan again"), "{e}"),
            other => panic!("a scan under way while a slot migrates: {other:?}"),
        }
        match store.scan(None, 10).await {
            Err(Error::Unavailable { .. }) => {}
            other => panic!("a new scan while a slot migrates: {other:?}"),
        }
        drop(markers);

        let mut listed = std::collections::HashSet::new();
        let mut cursor = None;
        for _ in 0..1000 {
            let page = store.scan(cursor.as_ref(), 4).await.expect("page");
            for (key, _) in page.sessions {
                assert!(listed.insert(key), "listed twice");
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "the scan ends");
        assert_eq!(listed.len(), 30);
    }
}
