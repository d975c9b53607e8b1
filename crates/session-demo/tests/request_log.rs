//! The demo's request log: one DEBUG event per request, without session ids. Its own test
//! binary, so that no other test registers the log's callsite before the subscriber exists.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use session_core::CoreConfig;
use session_demo::{router, AppState};
use session_memory::MemoryStore;
use tower::ServiceExt;

/// A writer the test reads back: what the subscriber printed.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With debug logging each request is one event: method, route template, status and
/// duration — never the session id.
#[tokio::test(flavor = "current_thread")]
async fn each_request_is_one_debug_event_without_ids() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let store = Arc::new(MemoryStore::new_default());
    let app = router(
        AppState::new(store, "memory", &CoreConfig::default(), None).unwrap(),
        4096,
    );
    let request = |method: Method, uri: &str, body: Option<&str>| {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        req.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty))
            .unwrap()
    };
    let created = app
        .clone()
        .oneshot(request(
            Method::POST,
            "/api/sessions/task",
            Some(r#"{"taskId":"t-1","state":"new"}"#),
        ))
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body = created.into_body().collect().await.unwrap().to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let loaded = app
        .clone()
        .oneshot(request(Method::GET, &format!("/api/sessions/task/{id}"), None))
        .await
        .unwrap();
    assert_eq!(loaded.status(), StatusCode::OK);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" request ") || l.ends_with(" request"))
        .collect();
    assert!(
        events.iter().any(|l| l.contains("method=POST")
            && l.contains("route=/api/sessions/{kind}")
            && l.contains("status=201")),
        "{text}"
    );
    assert!(
        events.iter().any(|l| l.contains("method=GET")
            && l.contains("route=/api/sessions/{kind}/{id}")
            && l.contains("status=200")
            && l.contains("duration_ms=")),
        "{text}"
    );
    assert!(!text.contains(&id), "no session id in the log: {text}");
}
