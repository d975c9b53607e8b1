//! Start-up of `backend = "fallback"` against a real redis-server: a healthy Redis serves
//! from the first request (no false outage), a permanent error fails start-up with the
//! message `backend = "redis"` gives, and only an unreachable Redis starts it open.

#![cfg(feature = "fallback")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use session_store::{build, Error, HealthStatus, Settings};
use testkit_redis::{can_start_servers, RedisServer};

fn settings(url: &str, password: Option<&str>, backend: &str) -> Settings {
    let password = password.map_or(String::new(), |p| format!("password = \"{p}\"\n"));
    Settings::from_toml(&format!(
        "backend = \"{backend}\"\n[metrics]\nenabled = false\n[redis]\nurl = \"{url}\"\n{password}"
    ))
    .unwrap()
}

#[tokio::test]
async fn a_healthy_redis_serves_the_first_request() {
    if !can_start_servers() {
        return;
    }
    let server = RedisServer::start().expect("redis-server starts");
    let built = build(&settings(&server.url(), None, "fallback")).await.unwrap();
    let health = built.store.health().await;
    assert_eq!(health.status, HealthStatus::Up, "{health:?}");
    let carts = built.sessions::<Vec<String>>("cart").unwrap();
    let session = carts.create(vec!["a".into()]).await.unwrap();
    // Written to Redis, not to an outage journal.
    let key = format!("session:cart:{}", session.id.as_str());
    let exists = server.cli(&["EXISTS", &key]).unwrap();
    assert_eq!(exists.trim(), "1", "the first write went to Redis");
    let stats = built.store.stats().await.unwrap();
    let extra = |name: &str| stats.extra.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    assert_eq!(
        extra("state"),
        Some(0),
        "closed from the start: {:?}",
        stats.extra
    );
    assert_eq!(
        extra("failovers"),
        Some(0),
        "no outage at start-up: {:?}",
        stats.extra
    );
}

#[tokio::test]
async fn a_wrong_password_fails_start_up_as_with_backend_redis() {
    if !can_start_servers() {
        return;
    }
    let server = RedisServer::start().expect("redis-server starts");
    server
        .cli(&["CONFIG", "SET", "requirepass", "right-secret"])
        .unwrap();
    let url = server.url();
    let with_redis = build(&settings(&url, Some("wrong-secret"), "redis"))
        .await
        .unwrap_err();
    let with_fallback = build(&settings(&url, Some("wrong-secret"), "fallback"))
        .await
        .unwrap_err();
    for e in [&with_redis, &with_fallback] {
        match e {
            Error::Config { key, .. } => assert_eq!(key, "redis.password", "{e}"),
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(!e.to_string().contains("wrong-secret"), "{e}");
    }
    assert_eq!(with_redis.to_string(), with_fallback.to_string());
    // The right password starts it.
    build(&settings(&url, Some("right-secret"), "fallback"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_redis_starts_it_serving_from_memory() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let built = build(&settings(&format!("redis://127.0.0.1:{port}"), None, "fallback"))
        .await
        .unwrap();
    let carts = built.sessions::<Vec<String>>("cart").unwrap();
    let session = carts.create(vec!["a".into()]).await.unwrap();
    assert!(carts.load(&session.id).await.unwrap().is_some());
}
