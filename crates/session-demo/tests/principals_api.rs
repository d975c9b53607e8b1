//! The demo's log-out-everywhere routes, in-process: bind, list (no ids), revoke, their
//! errors, and a revoke during a fallback outage (202, kept, applied on recovery).
#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use session_core::testing::{FaultMode, FaultyStore};
use session_core::{CodecKind, CoreConfig, SessionStore};
use session_demo::{router, AppState};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_store::fallback::{CircuitState, FallbackConfig, FallbackStore};
use tower::ServiceExt;

fn app(store: Arc<dyn SessionStore>) -> Router {
    let mut core = CoreConfig::default();
    core.codec = CodecKind::Json;
    router(AppState::new(store, "test", &core, None).unwrap(), 4096)
}

async fn call(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Body::empty, |v| Body::from(serde_json::to_vec(&v).unwrap()));
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    )
}

fn task() -> Value {
    json!({"taskId": "t-1", "state": "new", "messages": [], "variables": {}})
}

async fn login(app: &Router, principal: &str) -> String {
    let (status, body, text) = call(app, Method::POST, "/api/sessions/task", Some(task())).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, _, text) = call(
        app,
        Method::PUT,
        &format!("/api/sessions/task/{id}/principal"),
        Some(json!({ "principal": principal })),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
    id
}

async fn status_of(app: &Router, id: &str) -> StatusCode {
    call(app, Method::GET, &format!("/api/sessions/task/{id}"), None)
        .await
        .0
}

#[tokio::test]
async fn bind_list_and_revoke_over_http() {
    let app = app(Arc::new(MemoryStore::new_default()));
    let alices = [login(&app, "alice").await, login(&app, "alice").await];
    let bob = login(&app, "bob").await;

    let (status, body, text) = call(&app, Method::GET, "/api/principals/alice/sessions/task", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let listed = body["sessions"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for id in &alices {
        assert!(
            !text.contains(id.as_str()),
            "a listed session shows its id: {text}"
        );
    }
    assert!(listed
        .iter()
        .all(|s| s["id_hash"].as_str().is_some_and(|h| h.len() == 8)));

    let (status, body, text) = call(&app, Method::DELETE, "/api/principals/alice/sessions/task", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(body, json!({"ended": 2, "pending": false}));
    for id in &alices {
        assert_eq!(status_of(&app, id).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(status_of(&app, &bob).await, StatusCode::OK);
    let (_, body, _) = call(&app, Method::GET, "/api/principals/alice/sessions/task", None).await;
    assert_eq!(body["sessions"], json!([]));
}

#[tokio::test]
async fn bad_principals_bodies_and_ids_are_4xx_json() {
    let app = app(Arc::new(MemoryStore::new_default()));
    let (_, body, _) = call(&app, Method::POST, "/api/sessions/task", Some(task())).await;
    let id = body["id"].as_str().unwrap().to_owned();
    let bind = format!("/api/sessions/task/{id}/principal");
    let long = "x".repeat(200);
    for (body, code) in [
        (json!({"principal": ""}), "invalid_principal"),
        (json!({"principal": long}), "invalid_principal"),
        (json!({"who": "alice"}), "bad_body"),
    ] {
        let (status, answer, text) = call(&app, Method::PUT, &bind, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(answer["error"], code, "{text}");
    }
    let missing = "/api/sessions/task/aaaaaaaaaaaaaaaaaaaaaa/principal";
    let (status, _, text) = call(&app, Method::PUT, missing, Some(json!({"principal": "alice"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let (status, answer, text) = call(
        &app,
        Method::DELETE,
        &format!("/api/principals/{long}/sessions/task"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(answer["error"], "invalid_principal");
    let (status, _, _) = call(&app, Method::GET, "/api/principals/alice/sessions/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// With the fallback's primary down, a revoke answers 202 (kept), the sessions this instance
/// held read as gone at once, and once the primary answers they are gone from it too.
#[tokio::test]
async fn a_revoke_during_an_outage_is_202_and_applied_on_recovery() {
    let shared = Arc::new(
        MemoryStore::new(MemoryConfig::default().with_tombstones(Duration::from_secs(3600))).unwrap(),
    );
    let primary = FaultyStore::new(Arc::clone(&shared));
    let secondary = MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap();
    let config = FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(150))
        .with_probe_backoff(Duration::from_millis(10), Duration::from_millis(40));
    let fallback = Arc::new(
        FallbackStore::new(Arc::clone(&primary), secondary, config)
            .await
            .unwrap(),
    );
    let app = app(Arc::clone(&fallback) as Arc<dyn SessionStore>);
    let alices = [login(&app, "alice").await, login(&app, "alice").await];

    primary.set_mode(FaultMode::Fail);
    let limit = Instant::now() + Duration::from_secs(10);
    while fallback.state() != CircuitState::Open {
        assert!(Instant::now() < limit);
        let _ = status_of(&app, &alices[0]).await;
    }
    let (status, body, text) = call(&app, Method::DELETE, "/api/principals/alice/sessions/task", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(body, json!({"ended": 2, "pending": true}));
    for id in &alices {
        assert_eq!(status_of(&app, id).await, StatusCode::NOT_FOUND);
    }
    let (status, _, _) = call(&app, Method::GET, "/api/principals/alice/sessions/task", None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "listing waits for the primary"
    );

    primary.set_mode(FaultMode::Pass);
    while fallback.state() != CircuitState::Closed || fallback.journal_len() != 0 {
        assert!(
            Instant::now() < limit + Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body, _) = call(&app, Method::GET, "/api/principals/alice/sessions/task", None).await;
    assert_eq!((status, body["sessions"].clone()), (StatusCode::OK, json!([])));
    for id in &alices {
        assert_eq!(status_of(&app, id).await, StatusCode::NOT_FOUND);
    }
}
