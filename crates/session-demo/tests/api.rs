//! The HTTP contract of the demo, route by route and status by status,
//! in-process against a memory store.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use session_core::testing::{FaultMode, FaultyStore};
use session_core::{CodecKind, CoreConfig, SessionStore};
use session_demo::{router, AppState, MetricsRender};
use session_memory::MemoryStore;
use tower::ServiceExt;

const MAX_BODY: usize = 4096;

fn core() -> CoreConfig {
    let mut c = CoreConfig::default();
    c.codec = CodecKind::Json;
    c.max_session_bytes = 2048;
    c
}

fn app_with(store: Arc<dyn SessionStore>) -> Router {
    let render: MetricsRender = Arc::new(|| "# metrics\n".to_string());
    let state = AppState::new(store, "memory", &core(), Some(render)).unwrap();
    router(state, MAX_BODY)
}

fn app() -> Router {
    app_with(Arc::new(MemoryStore::new_default()))
}

struct Resp {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
    text: String,
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Vec<u8>>,
    if_match: Option<&str>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(v) = if_match {
        req = req.header(header::IF_MATCH, v);
    }
    let req = req
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let etag = resp
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        status,
        etag,
        body,
        text,
    }
}

fn task() -> Value {
    json!({
        "taskId": "t-1",
        "state": "new",
        "messages": [{"role": "user", "content": "hello"}],
        "variables": {"lang": "en"}
    })
}

fn orchestrator() -> Value {
    json!({"taskSessionIds": ["a", "b"], "currentStep": 2, "context": {"k": "v"}})
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).unwrap())
}

async fn create(app: &Router, kind: &str, v: &Value) -> String {
    let r = call(
        app,
        Method::POST,
        &format!("/api/sessions/{kind}"),
        bytes(v),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    r.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_then_get_both_kinds() {
    let app = app();
    for (kind, v) in [("task", task()), ("orchestrator", orchestrator())] {
        let id = create(&app, kind, &v).await;
        assert_eq!(id.len(), 22);
        let r = call(
            &app,
            Method::GET,
            &format!("/api/sessions/{kind}/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, v);
        assert_eq!(r.etag.as_deref(), Some("\"1\""));
    }
}

#[tokio::test]
async fn kinds_are_separate_namespaces() {
    let app = app();
    let id = create(&app, "task", &task()).await;
    let r = call(
        &app,
        Method::GET,
        &format!("/api/sessions/orchestrator/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_missing_is_404_json() {
    let r = call(
        &app(),
        Method::GET,
        "/api/sessions/task/0123456789abcdef0123",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "not_found");
}

#[tokio::test]
async fn unknown_kind_and_route_are_404() {
    let app = app();
    let r = call(&app, Method::POST, "/api/sessions/user", bytes(&task()), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "unknown_kind");
    let r = call(&app, Method::GET, "/nope", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_bad_id_class_is_400() {
    let app = app();
    let long = "a".repeat(129);
    for id in [
        "short",
        long.as_str(),
        "aaaaaaaaaaaaaaa*",
        "aaaaaaaaaaaaaaa%3F",
        "aaaaaaaaaaaaaaa%5B",
        "aaaaaaaaaaaaaaa:",
        "aaaaaaa%20aaaaaaaa",
        "aaaaaaaa%0Aaaaaaaa",
        "aaaaaaaa%00aaaaaaa",
        "aaaaaa%7Btag%7Daaaa",
        "aaaaaaaaaaaaaaa%C3%A9",
        "%2A",
    ] {
        for method in [Method::GET, Method::DELETE] {
            let r = call(
                &app,
                method.clone(),
                &format!("/api/sessions/task/{id}"),
                None,
                None,
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {id}: {}", r.text);
            assert_eq!(r.body["error"], "invalid_id", "{id}");
        }
        let r = call(
            &app,
            Method::PUT,
            &format!("/api/sessions/task/{id}"),
            bytes(&task()),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "PUT {id}");
    }
}

#[tokio::test]
async fn every_bad_body_class_is_400() {
    let app = app();
    let id = create(&app, "task", &task()).await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        br#"{"state": "x"}"#.to_vec(),
        br#"{"taskId": 5, "state": "x"}"#.to_vec(),
        br#"{"taskId": "t", "state": "x", "messages": [{"role": "user"}]}"#.to_vec(),
        br#"{"taskId": "t", "state": "x", "variables": {"a": 1}}"#.to_vec(),
        br#"{"taskId": "t", "state": "x", "surprise": true}"#.to_vec(),
        vec![0xff, 0xfe, 0x00],
    ];
    for b in bodies {
        let r = call(&app, Method::POST, "/api/sessions/task", Some(b.clone()), None).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "POST {:?}",
            String::from_utf8_lossy(&b)
        );
        assert_eq!(r.body["error"], "bad_body");
        let r = call(
            &app,
            Method::PUT,
            &format!("/api/sessions/task/{id}"),
            Some(b.clone()),
            None,
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "PUT {:?}",
            String::from_utf8_lossy(&b)
        );
    }
    let r = call(
        &app,
        Method::POST,
        "/api/sessions/orchestrator",
        Some(br#"{"currentStep": "two"}"#.to_vec()),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = app();
    // Over the HTTP body limit.
    let mut huge = task();
    huge["state"] = Value::String("x".repeat(MAX_BODY * 2));
    let r = call(&app, Method::POST, "/api/sessions/task", bytes(&huge), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["error"], "too_large");
    // Under the body limit, over the encoded session limit (2048).
    let mut big = task();
    big["state"] = Value::String("x".repeat(3000));
    let r = call(&app, Method::POST, "/api/sessions/task", bytes(&big), None).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let id = create(&app, "task", &task()).await;
    let r = call(
        &app,
        Method::PUT,
        &format!("/api/sessions/task/{id}"),
        bytes(&big),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn put_replaces_and_bumps_the_etag() {
    let app = app();
    let id = create(&app, "task", &task()).await;
    let mut v = task();
    v["state"] = json!("running");
    let r = call(
        &app,
        Method::PUT,
        &format!("/api/sessions/task/{id}"),
        bytes(&v),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.etag.as_deref(), Some("\"2\""));
    let r = call(&app, Method::GET, &format!("/api/sessions/task/{id}"), None, None).await;
    assert_eq!(r.body["state"], "running");
}

#[tokio::test]
async fn put_of_missing_is_404() {
    let r = call(
        &app(),
        Method::PUT,
        "/api/sessions/task/0123456789abcdef0123",
        bytes(&task()),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(
        &app(),
        Method::PUT,
        "/api/sessions/task/0123456789abcdef0123",
        bytes(&task()),
        Some("1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn if_match_is_compare_and_set() {
    let app = app();
    let id = create(&app, "orchestrator", &orchestrator()).await;
    let uri = format!("/api/sessions/orchestrator/{id}");
    // Matching version, in every accepted spelling.
    for (i, spelling) in ["1", "\"2\"", "W/\"3\""].iter().enumerate() {
        let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some(spelling)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{spelling}");
        assert_eq!(r.etag, Some(format!("\"{}\"", i + 2)));
    }
    // Stale.
    let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some("2")).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.body["error"], "version_conflict");
    // Garbage.
    let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some("abc")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "bad_if_match");
    // `*` means any version.
    let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some("*")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn delete_then_everything_is_404_and_nothing_comes_back() {
    let app = app();
    let id = create(&app, "task", &task()).await;
    let uri = format!("/api/sessions/task/{id}");
    let r = call(&app, Method::DELETE, &uri, None, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, Method::DELETE, &uri, None, None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::GET, &uri, None, None).await.status,
        StatusCode::NOT_FOUND
    );
    // A late PUT (a request that finishes after the logout) does not resurrect it.
    assert_eq!(
        call(&app, Method::PUT, &uri, bytes(&task()), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::PUT, &uri, bytes(&task()), Some("1"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::GET, &uri, None, None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let app = app();
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["backend"], "memory");
    assert_eq!(r.body["primary"], "up");
    assert_eq!(r.body["fallback_active"], false);
    assert_eq!(r.body["journal"], 0);
    let r = call(&app, Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.starts_with("# metrics"));
}

#[tokio::test]
async fn unavailable_store_is_503_json() {
    let faulty = FaultyStore::new(MemoryStore::new_default());
    let app = app_with(faulty.clone());
    let id = create(&app, "task", &task()).await;
    faulty.set_mode(FaultMode::Fail);
    let r = call(&app, Method::GET, &format!("/api/sessions/task/{id}"), None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["error"], "store_unavailable");
    let r = call(&app, Method::POST, "/api/sessions/task", bytes(&task()), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["primary"], "down");
}

/// Odd paths and bodies never produce a 5xx.
#[tokio::test]
async fn no_bad_input_is_a_server_error() {
    let app = app();
    let id = create(&app, "task", &task()).await;
    let paths = [
        "/api/sessions/".to_string(),
        "/api/sessions/task/".to_string(),
        format!("/api/sessions/task/{id}/extra"),
        "/api/sessions/%ZZ/x".to_string(),
        "/api/sessions/task/%FF%FE%FD%FC%FB%FA%F9%F8%F7%F6%F5%F4%F3%F2%F1%F0".to_string(),
        format!("/api/sessions/TASK/{id}"),
    ];
    let bodies: [&[u8]; 4] = [
        b"",
        b"{}",
        b"\x00\x01",
        br#"{"taskId":"x","state":"y","messages":null}"#,
    ];
    for p in &paths {
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            for b in bodies {
                let r = call(&app, m.clone(), p, Some(b.to_vec()), Some("x")).await;
                assert!(!r.status.is_server_error(), "{m} {p}: {}", r.status);
            }
        }
    }
}
