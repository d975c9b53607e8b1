//! The HTTP contract of the demo, route by route and status by status,
//! in-process against a memory store.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use session_core::backend::Record;
use session_core::testing::{FaultMode, FaultyStore};
use session_core::{
    async_trait, CodecKind, CoreConfig, Error, Health, Meta, Namespace, SessionId, SessionKey, SessionStore,
    Sessions, StoreStats, Version,
};
use session_demo::{router, AppState, MetricsRender};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_store::fallback::{FallbackConfig, FallbackStore};
use tower::ServiceExt;

const MAX_BODY: usize = 4096;

fn core() -> CoreConfig {
    let mut c = CoreConfig::default();
    c.codec = CodecKind::Json;
    c.max_session_bytes = 2048;
    c
}

fn app_with(store: Arc<dyn SessionStore>) -> Router {
    app_for(store, "memory")
}

fn app_for(store: Arc<dyn SessionStore>, backend: &'static str) -> Router {
    let render: MetricsRender = Arc::new(|| "# metrics\n".to_string());
    let state = AppState::new(store, backend, &core(), Some(render)).unwrap();
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

/// Asserts an ETag is a quoted version token (16 lowercase hex digits) and returns it.
fn token(etag: Option<&str>) -> String {
    let etag = etag.unwrap_or_else(|| panic!("no ETag"));
    let hex = etag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("unquoted ETag {etag}"));
    assert_eq!(hex.len(), 16, "{etag}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{etag}"
    );
    assert_ne!(hex, "0000000000000000", "a stored version is never NONE");
    etag.to_owned()
}

/// Creates a session; its id and ETag.
async fn create_tagged(app: &Router, kind: &str, v: &Value) -> (String, String) {
    let r = call(
        app,
        Method::POST,
        &format!("/api/sessions/{kind}"),
        bytes(v),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let etag = token(r.etag.as_deref());
    (r.body["id"].as_str().unwrap().to_owned(), etag)
}

async fn create(app: &Router, kind: &str, v: &Value) -> String {
    create_tagged(app, kind, v).await.0
}

#[tokio::test]
async fn create_then_get_both_kinds() {
    let app = app();
    for (kind, v) in [("task", task()), ("orchestrator", orchestrator())] {
        let (id, etag) = create_tagged(&app, kind, &v).await;
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
        assert_eq!(r.etag, Some(etag), "a read returns the ETag of the last write");
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

/// After a deploy that changes a session type, a stored session that no longer decodes is
/// answered as absent (404), never a 500: its user starts again, nothing else breaks.
#[tokio::test]
async fn a_session_that_no_longer_decodes_is_a_404_not_a_500() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new_default());
    let app = app_with(Arc::clone(&store));
    // Written by an older build whose task sessions had no `task_id` or `state`.
    let old: Sessions<Value> = core().sessions(Arc::clone(&store), "task").unwrap();
    let id = old
        .create(json!({"title": "from the old schema"}))
        .await
        .unwrap()
        .id;
    let uri = format!("/api/sessions/task/{}", id.as_str());
    let r = call(&app, Method::GET, &uri, None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.body["error"], "not_found");
    let r = call(&app, Method::PUT, &uri, bytes(&task()), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // A new session for the same user works as usual.
    let fresh = create(&app, "task", &task()).await;
    let r = call(
        &app,
        Method::GET,
        &format!("/api/sessions/task/{fresh}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
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
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&MAX_BODY.to_string()) && message.contains("max_session_bytes"),
        "names the limit and the setting: {message}"
    );
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
async fn put_replaces_and_changes_the_etag() {
    let app = app();
    let (id, created) = create_tagged(&app, "task", &task()).await;
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
    let put = token(r.etag.as_deref());
    assert_ne!(put, created);
    let r = call(&app, Method::GET, &format!("/api/sessions/task/{id}"), None, None).await;
    assert_eq!(r.body["state"], "running");
    assert_eq!(r.etag, Some(put));
}

/// A PUT continues the session's lifetime: `created_at` is the first write's.
#[tokio::test]
async fn put_keeps_created_at() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new_default());
    let app = app_with(Arc::clone(&store));
    let tasks: Sessions<Value> = core().sessions(store, "task").unwrap();
    let (id, _) = create_tagged(&app, "task", &task()).await;
    let sid = SessionId::parse(&id).unwrap();
    let before = tasks.load(&sid).await.unwrap().unwrap().meta;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let uri = format!("/api/sessions/task/{id}");
    let r = call(&app, Method::PUT, &uri, bytes(&task()), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let etag = r.etag.unwrap();
    let r = call(&app, Method::PUT, &uri, bytes(&task()), Some(&etag)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let after = tasks.load(&sid).await.unwrap().unwrap().meta;
    assert_eq!(after.created_at, before.created_at);
    assert!(after.updated_at > before.updated_at, "{before:?} then {after:?}");
    assert_eq!(r.etag, Some(format!("\"{}\"", after.version)));
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
    let (id, first) = create_tagged(&app, "orchestrator", &orchestrator()).await;
    let uri = format!("/api/sessions/orchestrator/{id}");
    // Matching version, in every accepted spelling: quoted, weak, bare.
    let mut etag = first.clone();
    let mut seen = vec![first.clone()];
    for spell in [
        |t: &str| t.to_owned(),
        |t: &str| format!("W/{t}"),
        |t: &str| t.trim_matches('"').to_owned(),
    ] {
        let spelling = spell(&etag);
        let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some(&spelling)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{spelling}: {}", r.text);
        etag = token(r.etag.as_deref());
        assert!(!seen.contains(&etag), "every write has a new token");
        seen.push(etag.clone());
    }
    // Stale: every earlier token, and a token never issued.
    for stale in seen[..seen.len() - 1]
        .iter()
        .map(String::as_str)
        .chain(["\"1\"", "0"])
    {
        let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some(stale)).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{stale}");
        assert_eq!(r.body["error"], "version_conflict");
        assert!(r.etag.is_none());
    }
    // The losers wrote nothing.
    let r = call(&app, Method::GET, &uri, None, None).await;
    assert_eq!(r.etag.as_deref(), Some(etag.as_str()));
    // Garbage.
    for garbage in [
        "xyz",
        "\"xyz\"",
        "W/xyz",
        "12345678901234567",
        "\"\"",
        "",
        "\"00ab",
        "00ab\"",
        "0x1f",
        "-1",
        "**",
        "*, \"1\"",
        "\"1\", xyz",
        ",",
    ] {
        let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some(garbage)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{garbage:?}");
        assert_eq!(r.body["error"], "bad_if_match", "{garbage:?}");
    }
    // `*` means any version.
    let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some("*")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let current = token(r.etag.as_deref());
    assert_ne!(current, etag);
    // A list (RFC 9110) matches when any of its tags is the current version.
    let list = format!("\"1\", {current}, W/\"2\"");
    let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some(&list)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{list}: {}", r.text);
    let stale_list = format!("\"1\", {current}");
    let r = call(&app, Method::PUT, &uri, bytes(&orchestrator()), Some(&stale_list)).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{stale_list}");
}

/// Every error is the same JSON shape, 405 and unknown routes included, and a missing
/// session reads the same from GET, PUT and DELETE.
#[tokio::test]
async fn every_error_is_json_and_404s_agree() {
    let app = app();
    let r = call(
        &app,
        Method::PATCH,
        "/api/sessions/task/0123456789abcdef0123",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["error"], "method_not_allowed", "{}", r.text);
    assert!(r.body["message"].is_string());
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/api/sessions/task/0123456789abcdef0123")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let allow = resp
        .headers()
        .get(header::ALLOW)
        .map(|v| v.to_str().unwrap().to_owned());
    let allow = allow.unwrap_or_default();
    assert!(
        allow.contains("GET") && allow.contains("PUT") && allow.contains("DELETE"),
        "{allow:?}"
    );
    let r = call(&app, Method::GET, "/no/such/route", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "not_found");
    let uri = "/api/sessions/task/0123456789abcdef0123";
    let mut seen = Vec::new();
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, bytes(&task())),
        (Method::DELETE, None),
    ] {
        let r = call(&app, method.clone(), uri, body, None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}");
        seen.push((r.body["error"].clone(), r.body["message"].clone()));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

/// A garbage If-Match is a 400 even for a session that does not exist.
#[tokio::test]
async fn bad_if_match_is_400_before_any_lookup() {
    let r = call(
        &app(),
        Method::PUT,
        "/api/sessions/task/0123456789abcdef0123",
        bytes(&task()),
        Some("not-a-version"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "bad_if_match");
}

#[tokio::test]
async fn delete_then_everything_is_404_and_nothing_comes_back() {
    let app = app();
    let (id, etag) = create_tagged(&app, "task", &task()).await;
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
        call(&app, Method::PUT, &uri, bytes(&task()), Some(&etag))
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
    assert_eq!(r.body["status"], "up");
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
    // A store that serves no session is not ready: 503, with the same body.
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["status"], "down");
    assert_eq!(r.body["primary"], "down");
    assert_eq!(r.body["backend"], "memory");
    faulty.set_mode(FaultMode::Pass);
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "up");
}

/// A fallback store whose primary is down still serves sessions (from its secondary): ready,
/// 200, `degraded`. Only with the secondary down too is it 503.
#[tokio::test]
async fn fallback_health_is_503_only_when_neither_store_answers() {
    let primary = FaultyStore::new(
        MemoryStore::new(MemoryConfig::default().with_tombstones(Duration::from_secs(3600))).unwrap(),
    );
    let secondary = FaultyStore::new(
        MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap(),
    );
    let config =
        FallbackConfig::default().with_probe_backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    let fallback = FallbackStore::new(Arc::clone(&primary), Arc::clone(&secondary), config)
        .await
        .unwrap();
    let app = app_for(Arc::new(fallback), "fallback");
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "up");
    assert_eq!(r.body["fallback_active"], false);

    primary.set_mode(FaultMode::Fail);
    // Served by the secondary (and journaled): the circuit opens.
    let id = create(&app, "task", &task()).await;
    let r = call(&app, Method::GET, &format!("/api/sessions/task/{id}"), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "degraded");
    assert_eq!(r.body["primary"], "down");
    assert_eq!(r.body["fallback_active"], true);
    assert_eq!(r.body["journal"], 1);

    secondary.set_mode(FaultMode::Fail);
    let r = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["status"], "down");
    assert_eq!(r.body["backend"], "fallback");
    assert_eq!(r.body["fallback_active"], true);
    assert_eq!(r.body["journal"], 1);
}

/// A store that answers reads but refuses every write, the way Redis does when
/// out of memory (`OOM`) or read-only.
struct RefusingStore(Arc<MemoryStore>);

fn refused(op: &'static str) -> Error {
    Error::Refused {
        backend: "memory",
        op,
        code: "OOM",
        message: "command not allowed when used memory > 'maxmemory'".into(),
        source: None,
    }
}

#[async_trait]
impl SessionStore for RefusingStore {
    fn backend(&self) -> &'static str {
        "refusing"
    }
    async fn load(&self, key: &SessionKey) -> session_core::Result<Option<Record>> {
        self.0.load(key).await
    }
    async fn save(&self, _: &SessionKey, _: &Record) -> session_core::Result<Meta> {
        Err(refused("save"))
    }
    async fn create(&self, _: &SessionKey, _: &Record) -> session_core::Result<Meta> {
        Err(refused("create"))
    }
    async fn update(&self, _: &SessionKey, _: &Record) -> session_core::Result<Meta> {
        Err(refused("update"))
    }
    async fn save_if(&self, _: &SessionKey, _: Version, _: &Record) -> session_core::Result<Meta> {
        Err(refused("save_if"))
    }
    async fn delete(&self, _: &SessionKey) -> session_core::Result<bool> {
        Err(refused("delete"))
    }
    async fn touch(&self, _: &SessionKey, _: u64) -> session_core::Result<bool> {
        Err(refused("touch"))
    }
    async fn reconcile(
        &self,
        _: &SessionKey,
        _: Version,
        _: session_core::backend::Change<'_>,
    ) -> session_core::Result<session_core::backend::Reconciled> {
        Err(refused("reconcile"))
    }
    async fn rotate(&self, _: &SessionKey, _: &SessionId) -> session_core::Result<Meta> {
        Err(refused("rotate"))
    }
    async fn load_many(
        &self,
        keys: &[SessionKey],
    ) -> session_core::Result<Vec<session_core::Result<Option<Record>>>> {
        self.0.load_many(keys).await
    }
    async fn save_many(&self, _: &[(SessionKey, Record)]) -> session_core::Result<Vec<Meta>> {
        Err(refused("save_many"))
    }
    async fn count(&self, namespace: &Namespace) -> session_core::Result<u64> {
        self.0.count(namespace).await
    }
    async fn stats(&self) -> session_core::Result<StoreStats> {
        self.0.stats().await
    }
    async fn health(&self) -> Health {
        self.0.health().await
    }
}

#[tokio::test]
async fn refused_writes_are_503_json() {
    let memory = Arc::new(MemoryStore::new_default());
    // A session written before the store started refusing.
    let tasks: Sessions<Value> = core().sessions(memory.clone(), "task").unwrap();
    let session = tasks.create(task()).await.unwrap();
    let app = app_with(Arc::new(RefusingStore(memory)));
    let uri = format!("/api/sessions/task/{}", session.id.as_str());
    let etag = format!("\"{}\"", session.meta.version);
    let requests = [
        (Method::POST, "/api/sessions/task".to_owned(), None),
        (Method::PUT, uri.clone(), None),
        (Method::PUT, uri.clone(), Some(etag.as_str())),
        (Method::PUT, uri.clone(), Some("*")),
        (Method::DELETE, uri.clone(), None),
    ];
    for (method, path, if_match) in requests {
        let body = (method != Method::DELETE).then(|| serde_json::to_vec(&task()).unwrap());
        let r = call(&app, method.clone(), &path, body, if_match).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}: {}",
            r.text
        );
        assert_eq!(r.body["error"], "store_refused", "{method} {path}");
        assert!(r.body["message"].as_str().unwrap().contains("OOM"), "{}", r.text);
    }
    // Reads still work.
    let r = call(&app, Method::GET, &uri, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.etag, Some(etag));
}

/// Of many PUTs carrying the same ETag at once, exactly one wins; the rest are 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_with_one_etag_have_one_winner() {
    let app = app();
    for _ in 0..20 {
        let (id, etag) = create_tagged(&app, "task", &task()).await;
        let uri = format!("/api/sessions/task/{id}");
        let mut handles = Vec::new();
        for n in 0..8 {
            let (app, uri, etag) = (app.clone(), uri.clone(), etag.clone());
            handles.push(tokio::spawn(async move {
                let mut v = task();
                v["state"] = json!(format!("writer-{n}"));
                let r = call(&app, Method::PUT, &uri, bytes(&v), Some(&etag)).await;
                (n, r.status, r.etag)
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            let (n, status, etag) = h.await.unwrap();
            match status {
                StatusCode::NO_CONTENT => winners.push((n, etag)),
                StatusCode::PRECONDITION_FAILED => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let (n, etag) = winners.pop().unwrap();
        let r = call(&app, Method::GET, &uri, None, None).await;
        assert_eq!(r.body["state"], format!("writer-{n}"));
        assert_eq!(r.etag, etag);
    }
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
