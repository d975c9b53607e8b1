//! Metrics of the instrumented store: exact counter values for a
//! known sequence of operations (trace redaction: tests/trace_redaction.rs).

// Every test here builds or configures the memory backend (the default one).
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use session_store::{Error, Namespace, SessionId, Sessions, Settings};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cart {
    items: Vec<String>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Labels = Vec<(String, String)>;

/// Snapshot as name → [(labels, value)].
fn snapshot(recorder: &DebuggingRecorder) -> HashMap<String, Vec<(Labels, DebugValue)>> {
    let mut out: HashMap<String, Vec<(Labels, DebugValue)>> = HashMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let k = key.key();
        let mut labels: Labels = k
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        out.entry(k.name().to_owned()).or_default().push((labels, value));
    }
    out
}

fn counter(snap: &HashMap<String, Vec<(Labels, DebugValue)>>, name: &str, want: &[(&str, &str)]) -> u64 {
    snap.get(name)
        .into_iter()
        .flatten()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, v)| match v {
            DebugValue::Counter(c) => *c,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn histogram_samples(snap: &HashMap<String, Vec<(Labels, DebugValue)>>, name: &str, op: &str) -> usize {
    snap.get(name)
        .into_iter()
        .flatten()
        .filter(|(labels, _)| labels.iter().any(|(k, v)| k == "op" && v == op))
        .map(|(_, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[test]
fn counters_for_a_known_sequence() {
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            let settings =
                Settings::from_toml("backend = \"memory\"\n[metrics]\nrefresh_secs = 0\n").unwrap();
            let built = session_store::build(&settings).await.unwrap();
            let carts: Sessions<Cart> = built.sessions("cart").unwrap();
            let mut sessions = Vec::new();
            for i in 0..3 {
                let session = carts
                    .create(Cart {
                        items: vec![format!("item{i}")],
                    })
                    .await
                    .unwrap();
                sessions.push(session);
            }
            let ids: Vec<SessionId> = sessions.iter().map(|s| s.id.clone()).collect();
            assert!(carts.load(&ids[0]).await.unwrap().is_some());
            assert!(carts.load(&ids[1]).await.unwrap().is_some());
            assert!(carts
                .load(&SessionId::generate().unwrap())
                .await
                .unwrap()
                .is_none());
            assert!(carts.delete(&ids[2]).await.unwrap());
            sessions[2].value.items.clear();
            let e = carts.update(&mut sessions[2]).await.unwrap_err();
            assert!(matches!(e, Error::NotFound { .. }));
            let got = carts.load_many(&[ids[0].clone(), ids[2].clone()]).await.unwrap();
            assert_eq!(got.len(), 2);
            session_store::instrument::report_stats_once(&*built.store, &[Namespace::new("cart").unwrap()])
                .await
                .unwrap();
        });
    });
    let snap = snapshot(&recorder);
    let ops = "session_store_operations_total";
    let m = [("backend", "memory")];
    assert_eq!(
        counter(&snap, ops, &[m[0], ("op", "create"), ("outcome", "ok")]),
        3
    );
    assert_eq!(
        counter(&snap, ops, &[m[0], ("op", "load"), ("outcome", "hit")]),
        2
    );
    assert_eq!(
        counter(&snap, ops, &[m[0], ("op", "load"), ("outcome", "miss")]),
        1
    );
    assert_eq!(
        counter(&snap, ops, &[m[0], ("op", "delete"), ("outcome", "ok")]),
        1
    );
    assert_eq!(
        counter(&snap, ops, &[m[0], ("op", "update"), ("outcome", "not_found")]),
        1
    );
    assert_eq!(
        counter(&snap, ops, &[m[0], ("op", "load_many"), ("outcome", "ok")]),
        1
    );
    // Every series names its store: the backend's name unless given one.
    assert_eq!(
        counter(&snap, ops, &[m[0], ("store", "memory"), ("op", "load")]),
        3
    );
    // One counter family: hits, misses and errors are its outcomes, not families of their own.
    for gone in [
        "session_store_hits_total",
        "session_store_misses_total",
        "session_store_errors_total",
    ] {
        assert!(!snap.contains_key(gone), "{gone} is still published");
    }
    assert_eq!(
        counter(
            &snap,
            "session_store_sessions_created_total",
            &[m[0], ("store", "memory"), ("namespace", "cart")]
        ),
        3
    );
    assert_eq!(
        histogram_samples(&snap, "session_store_operation_duration_seconds", "load"),
        3
    );
    assert_eq!(
        histogram_samples(&snap, "session_store_operation_duration_seconds", "create"),
        3
    );
    let gauge = |name: &str| match &snap.get(name).unwrap()[0].1 {
        DebugValue::Gauge(g) => g.into_inner(),
        other => panic!("{other:?}"),
    };
    let labels_of = |name: &str| snap.get(name).unwrap()[0].0.clone();
    assert!(
        labels_of("session_store_entries").contains(&("store".to_owned(), "memory".to_owned())),
        "{:?}",
        labels_of("session_store_entries")
    );
    assert_eq!(gauge("session_store_entries"), 2.0);
    assert_eq!(gauge("session_store_sessions"), 2.0);
    assert_eq!(gauge("session_store_up"), 1.0);
    assert!(gauge("session_store_bytes") > 0.0);
}

#[cfg(feature = "fallback")]
#[test]
fn fallback_counters_for_a_failover() {
    use std::sync::Arc;

    use session_store::fallback::{FallbackConfig, FallbackStore};
    use session_store::instrument::Instrumented;
    use session_store::memory::{AtCapacity, MemoryConfig, MemoryStore};
    use session_store::testing::{FaultMode, FaultyStore};
    use session_store::SessionStore;

    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        runtime().block_on(async {
            // A fallback's primary keeps tombstones.
            let primary = FaultyStore::new(
                MemoryStore::new(
                    MemoryConfig::default().with_tombstones(std::time::Duration::from_secs(3600)),
                )
                .unwrap(),
            );
            let config = FallbackConfig::default().with_probe_backoff(
                std::time::Duration::from_secs(3600),
                std::time::Duration::from_secs(3600),
            );
            let secondary =
                MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap();
            let fallback = FallbackStore::new(Arc::clone(&primary), secondary, config)
                .await
                .unwrap();
            let store: Arc<dyn SessionStore> = Arc::new(Instrumented::new(fallback));
            let carts: Sessions<Cart> = Sessions::new(store, Namespace::new("cart").unwrap());
            let healthy = carts.create(Cart { items: vec![] }).await.unwrap().id;
            assert!(carts.load(&healthy).await.unwrap().is_some());
            primary.set_mode(FaultMode::Fail);
            // The failing call itself is served by the secondary: one failover.
            let a = carts
                .create(Cart {
                    items: vec!["a".into()],
                })
                .await
                .unwrap()
                .id;
            // The circuit is open: three calls straight to the secondary.
            assert!(carts.load(&a).await.unwrap().is_some());
            let b = carts
                .create(Cart {
                    items: vec!["b".into()],
                })
                .await
                .unwrap()
                .id;
            assert!(carts.delete(&b).await.unwrap());
        });
    });
    let snap = snapshot(&recorder);
    let gauge = |name: &str| match &snap.get(name).unwrap()[0].1 {
        DebugValue::Gauge(g) => g.into_inner(),
        other => panic!("{other:?}"),
    };
    // The fallback's series are labelled with its name ("fallback" unless given one).
    let st = ("store", "fallback");
    assert_eq!(counter(&snap, "session_fallback_failovers_total", &[st]), 1);
    assert_eq!(counter(&snap, "session_fallback_secondary_calls_total", &[st]), 3);
    assert_eq!(
        counter(&snap, "session_fallback_transitions_total", &[st, ("to", "open")]),
        1
    );
    for name in [
        "session_fallback_active",
        "session_fallback_state",
        "session_fallback_journal_length",
        "session_fallback_open_partitions",
    ] {
        let labels = &snap.get(name).unwrap()[0].0;
        assert_eq!(labels, &[("store".to_owned(), "fallback".to_owned())], "{name}");
    }
    assert_eq!(gauge("session_fallback_active"), 1.0);
    assert_eq!(gauge("session_fallback_state"), 1.0);
    // a (written) and b (tombstone) wait for replay.
    assert_eq!(gauge("session_fallback_journal_length"), 2.0);
    let ops = "session_store_operations_total";
    let fb = ("backend", "fallback");
    assert_eq!(counter(&snap, ops, &[fb, ("op", "create"), ("outcome", "ok")]), 3);
    assert_eq!(counter(&snap, ops, &[fb, ("op", "load"), ("outcome", "hit")]), 2);
    // No call failed: every call's outcome is ok, hit or miss.
    assert_eq!(
        counter(&snap, ops, &[fb, st]),
        counter(&snap, ops, &[fb, st, ("outcome", "ok")])
            + counter(&snap, ops, &[fb, st, ("outcome", "hit")])
            + counter(&snap, ops, &[fb, st, ("outcome", "miss")])
    );
}
