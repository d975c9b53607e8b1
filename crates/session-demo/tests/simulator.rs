//! The chat simulator against in-process demo servers on loopback: every
//! compare-and-set round-trips the server's ETag, and the run verifies clean.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;

use session_core::{CoreConfig, SessionStore};
use session_demo::simulator::{run, SimConfig};
use session_demo::{router, AppState};
use session_memory::MemoryStore;

/// Serves the demo API over `store` on an ephemeral loopback port; its base URL.
async fn serve(store: Arc<dyn SessionStore>) -> String {
    let state = AppState::new(store, "memory", &CoreConfig::default(), None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state, 64 * 1024)).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_over_one_store_lose_nothing() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new_default());
    let targets = vec![serve(Arc::clone(&store)).await, serve(store).await];
    let config = SimConfig {
        targets,
        users: 24,
        turns: 4,
        concurrency: 8,
        delete_every: 3,
        ..SimConfig::default()
    };
    let report = run(config.clone()).await.unwrap();
    let lines = report.lines(&config).join("\n");
    assert!(report.is_clean(&config), "{lines}");
    assert_eq!(report.created, 48, "{lines}");
    // Each turn writes the task and the orchestrator session once, by compare-and-set.
    assert_eq!(report.updated, 24 * 4 * 2, "{lines}");
    assert_eq!(report.deleted, 8 * 2, "{lines}");
    assert_eq!(report.verified, 48, "{lines}");
}
