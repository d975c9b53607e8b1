//! The in-process subjects: `MemoryStore` (bare, instrumented, under `Sessions<T>`) beside a
//! `DashMap` and tower-sessions' `MemoryStore`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use session_core::backend::Record;
use session_core::instrument::{Instrumented, LATENCY_BUCKETS};
use session_core::{CodecKind, SessionStore, Sessions};
use session_memory::{MemoryConfig, MemoryStore};
use tower_sessions_core::session::Id as TowerId;

use super::anchor_ops::{DashGet, DashSet, DashSetShared, TowerLoad, TowerSave};
use super::setup::{check, ns, own_record, prefill, tower_prefill, tower_record, Keys};
use super::store_ops::{StoreLoad, StoreSave, TypedLoad, TypedSave};
use super::{case, Case, Group, NAMESPACE};
use crate::payload::TaskSession;

/// The in-process subjects, pre-filled. Installs the Prometheus recorder and a tracing
/// subscriber (after registering the "no recorder" store's metric handles).
pub(crate) async fn memory_cases(keys: &Keys, record: &Record, task_counts: &[usize]) -> Vec<Case> {
    let memory: Arc<dyn SessionStore> =
        Arc::new(check("MemoryStore", MemoryStore::new(MemoryConfig::default())));
    prefill(memory.as_ref(), keys, record, true).await;

    // Registered (on its first call, here) before any recorder exists: its metric handles are
    // no-ops for the whole run. Spans are off either way (they are `debug`).
    let instrumented_noop: Arc<dyn SessionStore> = Arc::new(Instrumented::new(check(
        "MemoryStore",
        MemoryStore::new(MemoryConfig::default()),
    )));
    prefill(instrumented_noop.as_ref(), keys, record, true).await;
    install_observability();
    let instrumented_prom: Arc<dyn SessionStore> = Arc::new(Instrumented::new(check(
        "MemoryStore",
        MemoryStore::new(MemoryConfig::default()),
    )));
    prefill(instrumented_prom.as_ref(), keys, record, true).await;

    let dash: Arc<DashMap<String, Bytes>> = Arc::new(DashMap::new());
    for s in keys.strings.iter() {
        dash.insert(s.clone(), Bytes::copy_from_slice(&record.payload));
    }

    let tower_mem = tower_sessions_memory_store::MemoryStore::default();
    let tower_ids: Arc<[TowerId]> = tower_prefill(&tower_mem, keys.len()).await.into();

    let typed =
        Sessions::<TaskSession>::new(Arc::clone(&memory), ns(NAMESPACE)).with_codec(CodecKind::Bincode);

    let mut cases = Vec::new();
    for &tasks in task_counts {
        let g = Group::Memory;
        // load
        let (m, k) = (Arc::clone(&dash), Arc::clone(&keys.strings));
        cases.push(case("DashMap<String, Bytes>", "load", tasks, g, move |_| {
            DashGet {
                map: Arc::clone(&m),
                keys: Arc::clone(&k),
            }
        }));
        for (subject, store) in [
            ("MemoryStore", &memory),
            ("Instrumented<MemoryStore>, no recorder", &instrumented_noop),
            ("Instrumented<MemoryStore>, Prometheus", &instrumented_prom),
        ] {
            let (s, k) = (Arc::clone(store), Arc::clone(&keys.keys));
            cases.push(case(subject, "load", tasks, g, move |_| StoreLoad {
                store: Arc::clone(&s),
                keys: Arc::clone(&k),
            }));
        }
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case("Sessions<T> on MemoryStore", "load", tasks, g, move |_| {
            TypedLoad {
                sessions: s.clone(),
                ids: Arc::clone(&i),
            }
        }));
        let (s, i) = (tower_mem.clone(), Arc::clone(&tower_ids));
        cases.push(case("tower-sessions MemoryStore", "load", tasks, g, move |_| {
            TowerLoad {
                store: s.clone(),
                ids: Arc::clone(&i),
            }
        }));
        // save
        let (m, k, p) = (
            Arc::clone(&dash),
            Arc::clone(&keys.strings),
            record.payload.clone(),
        );
        cases.push(case(
            "DashMap<String, Bytes>, fresh buffer",
            "save",
            tasks,
            g,
            move |_| DashSet {
                map: Arc::clone(&m),
                keys: Arc::clone(&k),
                value: p.clone(),
            },
        ));
        let (m, k, p) = (
            Arc::clone(&dash),
            Arc::clone(&keys.strings),
            record.payload.clone(),
        );
        cases.push(case(
            "DashMap<String, Bytes>, shared buffer",
            "save",
            tasks,
            g,
            move |_| DashSetShared {
                map: Arc::clone(&m),
                keys: Arc::clone(&k),
                value: Bytes::copy_from_slice(&p),
            },
        ));
        let (s, k, r) = (Arc::clone(&memory), Arc::clone(&keys.keys), record.clone());
        cases.push(case("MemoryStore", "save", tasks, g, move |_| StoreSave {
            store: Arc::clone(&s),
            keys: Arc::clone(&k),
            record: own_record(&r),
            fresh: Some(r.payload.clone()),
        }));
        let (s, i) = (typed.clone(), Arc::clone(&keys.ids));
        cases.push(case("Sessions<T> on MemoryStore", "save", tasks, g, move |_| {
            TypedSave::new(s.clone(), Arc::clone(&i))
        }));
        let (s, i) = (tower_mem.clone(), Arc::clone(&tower_ids));
        cases.push(case("tower-sessions MemoryStore", "save", tasks, g, move |_| {
            TowerSave {
                store: s.clone(),
                ids: Arc::clone(&i),
                record: tower_record(3 * 3600),
            }
        }));
    }
    cases
}

/// Installs what a production service has: the Prometheus recorder as the demo configures it
/// (latency buckets, upkeep every 5 s) and a `fmt` subscriber at `info`.
fn install_observability() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| b.install_recorder());
    let handle = check("installing the Prometheus recorder", handle);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    let filter = tracing_subscriber::EnvFilter::new("info");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
