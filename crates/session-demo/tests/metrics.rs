//! The Prometheus recorder of `session_demo::metrics`, served at `/metrics`: the series the
//! queries in docs/operations.md read exist (latency as `_bucket` series), one counter family
//! counts operations, and every series names its store, so several stores of one process stay
//! apart.
//!
//! One test: it installs the process's global recorder.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use session_core::testing::{FaultMode, FaultyStore};
use session_core::{CodecKind, CoreConfig, SessionStore};
use session_demo::{router, AppState, MetricsRender};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_store::fallback::{FallbackConfig, FallbackStore};
use session_store::instrument::Instrumented;
use tower::ServiceExt;

/// The sum of `name`'s samples whose labels include every one of `labels` (`key="value"`).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !rest.starts_with(['{', ' ']) || !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

async fn request(app: &axum::Router, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A fallback store over a memory primary that can be failed, its metrics named `name`.
async fn fallback(
    name: &str,
) -> (
    Arc<FaultyStore<MemoryStore>>,
    FallbackStore<Arc<FaultyStore<MemoryStore>>, MemoryStore>,
) {
    let primary = FaultyStore::new(
        MemoryStore::new(MemoryConfig::default().with_tombstones(Duration::from_secs(3600))).unwrap(),
    );
    let secondary = MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap();
    let config = FallbackConfig::default()
        .with_probe_backoff(Duration::from_secs(3600), Duration::from_secs(3600))
        .with_name(name);
    let store = FallbackStore::new(Arc::clone(&primary), secondary, config)
        .await
        .unwrap();
    (primary, store)
}

#[tokio::test]
async fn prometheus_exports_what_the_docs_query_per_store() {
    let prometheus = session_demo::metrics::install_prometheus().unwrap();
    let render: MetricsRender = Arc::new(move || prometheus.render());

    // The demo's store, named "sessions"; a second memory store left unnamed ("memory").
    let named: Arc<dyn SessionStore> =
        Arc::new(Instrumented::new(MemoryStore::new_default()).with_name("sessions"));
    let mut core = CoreConfig::default();
    core.codec = CodecKind::Json;
    let app = router(
        AppState::new(named, "memory", &core, Some(Arc::clone(&render))).unwrap(),
        64 * 1024,
    );
    let other: Arc<dyn SessionStore> = Arc::new(Instrumented::new(MemoryStore::new_default()));
    let other_app = router(AppState::new(other, "memory", &core, None).unwrap(), 64 * 1024);

    let (status, body) = request(
        &app,
        Method::POST,
        "/api/sessions/task",
        Some(r#"{"taskId":"t","state":"new"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = request(&app, Method::GET, &format!("/api/sessions/task/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let missing = "/api/sessions/task/AAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(
        request(&app, Method::GET, missing, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        request(&other_app, Method::GET, missing, None).await.0,
        StatusCode::NOT_FOUND
    );

    // Two fallback stores in one process: one fails over, the other stays closed.
    let (eu_primary, eu) = fallback("eu").await;
    let (_us_primary, us) = fallback("us").await;
    let eu = Instrumented::new(eu).with_name("eu");
    let key = session_core::SessionKey::new(
        session_core::Namespace::new("task").unwrap(),
        session_core::SessionId::generate().unwrap(),
    );
    eu_primary.set_mode(FaultMode::Fail);
    let record =
        session_core::backend::Record::new(session_core::backend::CodecId::RAW, b"x".to_vec(), u64::MAX / 2);
    eu.save(&key, &record).await.unwrap();
    drop(us);

    let (status, text) = request(&app, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);

    // Latency as buckets, per store and op: what histogram_quantile reads.
    let buckets = "session_store_operation_duration_seconds_bucket";
    for le in ["le=\"0.000025\"", "le=\"0.001\"", "le=\"2.5\"", "le=\"+Inf\""] {
        assert!(
            sample(&text, buckets, &["store=\"sessions\"", "op=\"load\"", le]).is_some(),
            "no {buckets} {le} in:\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            buckets,
            &["store=\"sessions\"", "op=\"load\"", "le=\"+Inf\""]
        ),
        Some(2.0)
    );
    // One counter family: hits and misses are outcomes, and the old families are gone.
    let ops = "session_store_operations_total";
    let sessions = "store=\"sessions\"";
    assert_eq!(
        sample(&text, ops, &[sessions, "op=\"load\"", "outcome=\"hit\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, ops, &[sessions, "op=\"load\"", "outcome=\"miss\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, ops, &[sessions, "op=\"create\"", "outcome=\"ok\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &["store=\"memory\"", "op=\"load\"", "outcome=\"miss\""]
        ),
        Some(1.0),
        "the unnamed store is labelled with its backend name"
    );
    for gone in [
        "session_store_hits_total",
        "session_store_misses_total",
        "session_store_errors_total",
    ] {
        assert!(sample(&text, gone, &[]).is_none(), "{gone} is still exported");
    }
    assert_eq!(
        sample(
            &text,
            "session_store_sessions_created_total",
            &[sessions, "namespace=\"task\""]
        ),
        Some(1.0)
    );

    // The fallbacks' series are apart.
    assert_eq!(
        sample(&text, "session_fallback_failovers_total", &["store=\"eu\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "session_fallback_failovers_total", &["store=\"us\""]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "session_fallback_state", &["store=\"eu\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "session_fallback_state", &["store=\"us\""]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "session_fallback_active", &["store=\"eu\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "session_fallback_journal_length", &["store=\"eu\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "session_fallback_transitions_total",
            &["store=\"eu\"", "to=\"open\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &[
                "backend=\"fallback\"",
                "store=\"eu\"",
                "op=\"save\"",
                "outcome=\"ok\""
            ]
        ),
        Some(1.0)
    );
}
