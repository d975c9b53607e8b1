//! The layer and extractor over real stores (memory, and the fallback over a primary that
//! fails on demand), driven request by request through an axum router.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use session_axum::{Concurrency, CookieConfig, Session, SessionError, SessionLayer};
use session_core::testing::{FaultMode, FaultyStore};
use session_core::{Clock, ExpiryPolicy, Namespace, SessionId, SessionStore, Sessions};
use session_fallback::{FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use tokio::sync::Notify;
use tower::ServiceExt;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Counter {
    user: Option<String>,
    n: u64,
    blob: String,
}

/// Lets a test hold a request between its load and its write.
#[derive(Clone, Default)]
struct Gate {
    loaded: Arc<Notify>,
    release: Arc<Notify>,
}

async fn count(session: Session<Counter>) -> Result<String, SessionError> {
    let mut c = session.get().await?.unwrap_or_default();
    c.n += 1;
    session.insert(c.clone()).await?;
    Ok(c.n.to_string())
}

async fn peek(session: Session<Counter>) -> Result<String, SessionError> {
    Ok(match session.get().await? {
        Some(c) => format!("{}:{}", c.user.unwrap_or_default(), c.n),
        None => "none".to_owned(),
    })
}

async fn login(session: Session<Counter>) -> Result<&'static str, SessionError> {
    session.rotate().await?;
    let mut c = session.get().await?.unwrap_or_default();
    c.user = Some("ada".into());
    session.insert(c).await?;
    Ok("in")
}

async fn logout(session: Session<Counter>) -> Result<&'static str, SessionError> {
    session.delete().await?;
    Ok("out")
}

async fn untouched() -> &'static str {
    "hello"
}

async fn huge(session: Session<Counter>) -> Result<&'static str, SessionError> {
    session
        .insert(Counter {
            blob: "x".repeat(200_000),
            ..Counter::default()
        })
        .await?;
    Ok("stored?")
}

async fn slow(State(gate): State<Gate>, session: Session<Counter>) -> Result<String, SessionError> {
    let mut c = session.get().await?.unwrap_or_default();
    gate.loaded.notify_one();
    gate.release.notified().await;
    c.n += 100;
    session.insert(c.clone()).await?;
    Ok(c.n.to_string())
}

fn app(
    sessions: Sessions<Counter>,
    layer: impl FnOnce(SessionLayer<Counter>) -> SessionLayer<Counter>,
) -> (Router, Gate) {
    let gate = Gate::default();
    let router = Router::new()
        .route("/count", post(count))
        .route("/peek", get(peek))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/hello", get(untouched))
        .route("/huge", post(huge))
        .route("/slow", post(slow))
        .with_state(gate.clone())
        .layer(layer(SessionLayer::new(sessions)));
    (router, gate)
}

fn memory() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(MemoryConfig::default()).unwrap())
}

fn sessions(store: Arc<dyn SessionStore>) -> Sessions<Counter> {
    Sessions::new(store, Namespace::new("counter").unwrap())
}

/// What a response said: status, body, and its `Set-Cookie` (if any).
struct Answer {
    status: StatusCode,
    body: String,
    set_cookie: Option<String>,
}

impl Answer {
    /// The cookie's value the response set (`None` when removed or not set).
    fn cookie_value(&self) -> Option<String> {
        let set = self.set_cookie.as_ref()?;
        let value = set.split(';').next()?.split_once('=')?.1;
        (!value.is_empty()).then(|| value.to_owned())
    }

    fn removes_cookie(&self) -> bool {
        self.set_cookie
            .as_deref()
            .is_some_and(|c| c.starts_with("__Host-id=;") && c.contains("Max-Age=0"))
    }
}

async fn send(router: &Router, method: &str, path: &str, cookie: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        request = request.header(COOKIE, format!("__Host-id={c}"));
    }
    let response: Response<Body> = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let set: Vec<_> = response.headers().get_all(SET_COOKIE).iter().collect();
    assert!(set.len() <= 1, "one Set-Cookie at most: {set:?}");
    let set_cookie = set.first().map(|v| v.to_str().unwrap().to_owned());
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Answer {
        status,
        body,
        set_cookie,
    }
}

/// Sends `slow_path` (a handler that loads, then waits for the gate) with the cookie `id`,
/// runs `meanwhile` once it has loaded, then lets it finish: its answer.
async fn race<F: std::future::Future>(
    router: &Router,
    gate: &Gate,
    slow_path: &'static str,
    id: &str,
    meanwhile: F,
) -> Answer {
    let slow = {
        let (router, id) = (router.clone(), id.to_owned());
        tokio::spawn(async move { send(&router, "POST", slow_path, Some(&id)).await })
    };
    gate.loaded.notified().await;
    meanwhile.await;
    gate.release.notify_one();
    slow.await.unwrap()
}

#[tokio::test]
async fn a_new_browser_gets_a_secure_cookie_and_keeps_counting() {
    let (router, _) = app(sessions(memory()), |l| l);
    let first = send(&router, "POST", "/count", None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let set = first.set_cookie.clone().expect("a cookie for the new session");
    for flag in [
        "__Host-id=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    let id = first.cookie_value().unwrap();
    for n in 2..=4 {
        let again = send(&router, "POST", "/count", Some(&id)).await;
        assert_eq!(again.body, n.to_string());
        assert_eq!(
            again.cookie_value().as_deref(),
            Some(id.as_str()),
            "same id, Max-Age refreshed"
        );
    }
    assert_eq!(send(&router, "GET", "/peek", Some(&id)).await.body, ":4");
}

#[tokio::test]
async fn a_request_that_never_looks_costs_nothing_and_sets_nothing() {
    let store = FaultyStore::new(MemoryStore::new(MemoryConfig::default()).unwrap());
    let (router, _) = app(sessions(store.clone()), |l| l);
    let id = SessionId::generate().unwrap();
    let calls_before = store.passed();
    let a = send(&router, "GET", "/hello", Some(id.as_str())).await;
    assert_eq!((a.status, a.set_cookie), (StatusCode::OK, None));
    assert_eq!(store.passed(), calls_before, "no store call");
}

#[tokio::test]
async fn malformed_and_unknown_cookies_are_a_fresh_session_with_a_new_id() {
    let (router, _) = app(sessions(memory()), |l| l);
    for bad in [
        "",
        "short",
        "a%20b",
        "x".repeat(500).as_str(),
        "ü-not-ascii-at-all-1234",
    ] {
        let a = send(&router, "GET", "/peek", Some(bad)).await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "none"), "{bad:?}");
    }
    // Well-formed but unknown (an attacker's planted id): no session, the cookie is removed,
    // and a write gets a new random id, never the planted one.
    let planted = SessionId::generate().unwrap();
    let peek = send(&router, "GET", "/peek", Some(planted.as_str())).await;
    assert_eq!(peek.body, "none");
    assert_eq!(peek.set_cookie, None, "a gone session's cookie is left alone");
    let count = send(&router, "POST", "/count", Some(planted.as_str())).await;
    let new = count.cookie_value().unwrap();
    assert_ne!(new, planted.as_str());
}

#[tokio::test]
async fn login_rotates_the_id_and_the_old_one_is_dead() {
    let (router, _) = app(sessions(memory()), |l| l);
    let before = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    let login = send(&router, "POST", "/login", Some(&before)).await;
    assert_eq!(login.status, StatusCode::OK);
    let after = login.cookie_value().unwrap();
    assert_ne!(after, before, "the cookie changes on login");
    assert_eq!(send(&router, "GET", "/peek", Some(&after)).await.body, "ada:1");
    let old = send(&router, "GET", "/peek", Some(&before)).await;
    assert_eq!(old.body, "none", "the pre-login id is dead");
    assert_eq!(
        old.set_cookie, None,
        "not removed: that could clobber the new cookie"
    );
}

#[tokio::test]
async fn logout_removes_the_cookie_and_the_session() {
    let store = memory();
    let (router, _) = app(sessions(store.clone()), |l| l);
    let id = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    let out = send(&router, "POST", "/logout", Some(&id)).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.removes_cookie(), "{:?}", out.set_cookie);
    let sid = SessionId::parse(&id).unwrap();
    assert!(sessions(store).load(&sid).await.unwrap().is_none());
    assert_eq!(send(&router, "GET", "/peek", Some(&id)).await.body, "none");
}

#[tokio::test]
async fn a_session_over_the_size_limit_is_413_and_not_stored() {
    let store = memory();
    let small = sessions(store.clone()).with_max_bytes(10_000);
    let (router, _) = app(small, |l| l);
    let a = send(&router, "POST", "/huge", None).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert!(a.body.contains("session_too_large"), "{}", a.body);
    assert_eq!(a.set_cookie, None);
    assert_eq!(store.count(&Namespace::new("counter").unwrap()).await.unwrap(), 0);
}

/// Two requests of one browser load the same version; the first to finish is written, the
/// other gets 409 and its change is not stored. With last-writer-wins the later one is kept.
#[tokio::test]
async fn a_conflicting_concurrent_request_is_409_by_default() {
    for (concurrency, status, kept) in [
        (Concurrency::CompareAndSet, StatusCode::CONFLICT, "2"),
        (Concurrency::LastWriterWins, StatusCode::OK, "101"),
    ] {
        let store = memory();
        let (router, gate) = app(sessions(store.clone()), |l| l.with_concurrency(concurrency));
        let id = send(&router, "POST", "/count", None)
            .await
            .cookie_value()
            .unwrap();
        let slow = race(&router, &gate, "/slow", &id, async {
            assert_eq!(send(&router, "POST", "/count", Some(&id)).await.body, "2");
        })
        .await;
        assert_eq!(slow.status, status, "{concurrency:?}: {}", slow.body);
        if status == StatusCode::CONFLICT {
            assert!(slow.body.contains("session_conflict"), "{}", slow.body);
        }
        let now = send(&router, "GET", "/peek", Some(&id)).await.body;
        assert_eq!(now, format!(":{kept}"), "{concurrency:?}");
    }
}

/// A logout that happens while another request of the browser runs is not undone by it.
#[tokio::test]
async fn a_request_finishing_after_a_logout_does_not_bring_the_session_back() {
    let (router, gate) = app(sessions(memory()), |l| {
        l.with_concurrency(Concurrency::LastWriterWins)
    });
    let id = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    let slow = race(&router, &gate, "/slow", &id, async {
        send(&router, "POST", "/logout", Some(&id)).await;
    })
    .await;
    assert_eq!(slow.status, StatusCode::NOT_FOUND, "{}", slow.body);
    assert_eq!(slow.set_cookie, None);
    assert_eq!(send(&router, "GET", "/peek", Some(&id)).await.body, "none");
}

/// The `Max-Age` a response's cookie carries.
fn max_age(answer: &Answer) -> u64 {
    let set = answer.set_cookie.as_deref().expect("a Set-Cookie");
    let value = set
        .split("; ")
        .find_map(|part| part.strip_prefix("Max-Age="))
        .expect("a Max-Age");
    value.parse().unwrap()
}

/// The cookie's `Max-Age` is the session's remaining lifetime. With a sliding policy a read
/// past a tenth of the idle timeout moves the deadline, and the cookie follows; with an
/// absolute one a read sets no cookie, and a write starts the TTL again.
#[tokio::test]
async fn max_age_follows_the_deadline_and_slides_with_it() {
    let (clock, time) = Clock::manual(session_core::backend::now_ms());
    let sliding = sessions(memory())
        .with_clock(clock.clone())
        .with_policy(ExpiryPolicy::sliding(
            Duration::from_secs(600),
            Duration::from_secs(3600),
        ));
    let (router, _) = app(sliding, |l| l);
    let created = send(&router, "POST", "/count", None).await;
    assert!(
        (599..=600).contains(&max_age(&created)),
        "{:?}",
        created.set_cookie
    );
    let id = created.cookie_value().unwrap();
    time.advance(Duration::from_secs(120));
    let read = send(&router, "GET", "/peek", Some(&id)).await;
    assert_eq!(read.cookie_value().as_deref(), Some(id.as_str()));
    assert!(
        (599..=600).contains(&max_age(&read)),
        "slid: {:?}",
        read.set_cookie
    );

    let absolute = sessions(memory())
        .with_clock(clock)
        .with_policy(ExpiryPolicy::absolute(Duration::from_secs(600)));
    let (router, _) = app(absolute, |l| l);
    let id = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    time.advance(Duration::from_secs(120));
    assert_eq!(send(&router, "GET", "/peek", Some(&id)).await.set_cookie, None);
    // A write starts the TTL again (absolute expiry counts from the last write).
    let again = send(&router, "POST", "/count", Some(&id)).await;
    assert!(
        (599..=600).contains(&max_age(&again)),
        "absolute: {:?}",
        again.set_cookie
    );
}

/// With the fallback, a Redis-like outage is invisible to a browser whose session this
/// instance served before (its warm copy), and a session it can't tell about is a 503 that
/// keeps the cookie — never a logout.
#[tokio::test]
async fn an_outage_behind_the_fallback_is_not_a_logout() {
    let primary = FaultyStore::new(
        MemoryStore::new(MemoryConfig::default().with_tombstones(Duration::from_secs(3600))).unwrap(),
    );
    let secondary = MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap();
    let config = FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(100))
        .with_startup_wait(Duration::from_millis(100));
    let fallback = Arc::new(
        FallbackStore::new(primary.clone(), secondary, config)
            .await
            .unwrap(),
    );
    let (router, _) = app(sessions(fallback), |l| l);
    let id = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    // Written by another instance: this one holds no copy.
    let other = SessionId::generate().unwrap();
    sessions(primary.clone())
        .create_with_id(&other, Counter::default())
        .await
        .unwrap();
    primary.set_mode(FaultMode::Fail);
    for n in 2..=4 {
        let a = send(&router, "POST", "/count", Some(&id)).await;
        assert_eq!((a.status, a.body.clone()), (StatusCode::OK, n.to_string()));
    }
    let unknown = send(&router, "GET", "/peek", Some(other.as_str())).await;
    assert_eq!(
        unknown.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        unknown.body
    );
    assert_eq!(unknown.set_cookie, None, "the cookie is kept");
    primary.set_mode(FaultMode::Pass);
    let mut body = String::new();
    for _ in 0..200 {
        body = send(&router, "GET", "/peek", Some(other.as_str())).await.body;
        if body == ":0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(body, ":0", "readable again once the primary is back");
    assert_eq!(send(&router, "GET", "/peek", Some(&id)).await.body, ":4");
}

#[tokio::test]
async fn a_handler_without_the_layer_is_told_what_is_missing() {
    let router: Router = Router::new().route("/peek", get(peek));
    let a = send(&router, "GET", "/peek", None).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.body.contains(r#""error":"session_error""#), "{}", a.body);
}

#[tokio::test]
async fn the_development_cookie_is_plain() {
    let (router, _) = app(sessions(memory()), |l| {
        l.with_cookie(CookieConfig::new().insecure_for_local_development())
    });
    let a = send(&router, "POST", "/count", None).await;
    let set = a.set_cookie.unwrap();
    assert!(set.starts_with("id=") && !set.contains("Secure"), "{set}");
}

/// Lets a test keep a request's session handle past its response.
#[derive(Clone, Default)]
struct Kept(Arc<std::sync::Mutex<Option<Session<Counter>>>>);

async fn keep(State(kept): State<Kept>, session: Session<Counter>) -> Result<&'static str, SessionError> {
    session.insert(Counter::default()).await?;
    *kept.0.lock().unwrap() = Some(session);
    Ok("kept")
}

async fn save_now(State(gate): State<Gate>, session: Session<Counter>) -> Result<String, SessionError> {
    let mut c = session.get().await?.unwrap_or_default();
    gate.loaded.notify_one();
    gate.release.notified().await;
    c.n += 100;
    session.insert(c).await?;
    match session.save().await {
        Ok(()) => Ok("saved".to_owned()),
        Err(e) if e.status() == StatusCode::CONFLICT => {
            session.reload().await;
            let now = session.get().await?.unwrap_or_default();
            Ok(format!("conflict; now {}", now.n))
        }
        Err(e) => Err(e),
    }
}

async fn rotate_then_reload(session: Session<Counter>) -> Result<String, SessionError> {
    session.rotate().await?;
    session.reload().await;
    Ok(session
        .get()
        .await?
        .map_or("none".to_owned(), |c| c.n.to_string()))
}

async fn cacheable(
    session: Session<Counter>,
) -> Result<([(http::HeaderName, &'static str); 1], &'static str), SessionError> {
    session.insert(Counter::default()).await?;
    Ok(([(http::header::CACHE_CONTROL, "public, max-age=600")], "cached?"))
}

/// A handler that writes with `save()` sees the conflict itself and answers its own way; the
/// layer writes nothing more and keeps the handler's answer.
#[tokio::test]
async fn a_handler_that_saves_itself_handles_the_conflict() {
    let gate = Gate::default();
    let router = Router::new()
        .route("/count", post(count))
        .route("/save-now", post(save_now))
        .with_state(gate.clone())
        .layer(SessionLayer::new(sessions(memory())));
    let id = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    let slow = race(&router, &gate, "/save-now", &id, async {
        assert_eq!(send(&router, "POST", "/count", Some(&id)).await.body, "2");
    })
    .await;
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (StatusCode::OK, "conflict; now 2")
    );
}

/// `reload` after `rotate` reads the session under its new id (not the request's old cookie).
#[tokio::test]
async fn reload_after_rotate_reads_the_new_id() {
    let router = Router::new()
        .route("/count", post(count))
        .route("/rotate-reload", post(rotate_then_reload))
        .layer(SessionLayer::new(sessions(memory())));
    let id = send(&router, "POST", "/count", None)
        .await
        .cookie_value()
        .unwrap();
    let a = send(&router, "POST", "/rotate-reload", Some(&id)).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "1"));
    let new = a.cookie_value().unwrap();
    assert_ne!(new, id);
}

/// A response that sets the session cookie is never cacheable, whatever the handler said.
#[tokio::test]
async fn a_response_setting_the_cookie_is_not_cacheable() {
    let router = Router::new()
        .route("/cacheable", get(cacheable))
        .layer(SessionLayer::new(sessions(memory())));
    let response = router
        .oneshot(Request::builder().uri("/cacheable").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.headers().contains_key(SET_COOKIE));
    let cache: Vec<_> = response
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .collect();
    assert_eq!(cache, ["no-store"]);
}

/// Two layers of different namespaces on one cookie name are refused (500), not served with
/// each other's ids; with their own names both work.
#[tokio::test]
async fn two_layers_on_one_cookie_name_are_refused() {
    let other: Sessions<Counter> = Sessions::new(memory(), Namespace::new("other").unwrap());
    let clash = Router::new()
        .route("/count", post(count))
        .layer(SessionLayer::new(sessions(memory())))
        .layer(SessionLayer::new(other.clone()));
    let a = send(&clash, "POST", "/count", None).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.body);
    let named = Router::new()
        .route("/count", post(count))
        .layer(SessionLayer::new(sessions(memory())))
        .layer(SessionLayer::new(other).with_cookie(CookieConfig::new().with_name("other").unwrap()));
    assert_eq!(send(&named, "POST", "/count", None).await.body, "1");
}

/// A change made after the response was sent (a spawned task keeping the handle) is an
/// error, not silently lost.
#[tokio::test]
async fn changes_after_the_response_are_refused() {
    let kept = Kept::default();
    let router = Router::new()
        .route("/keep", post(keep))
        .with_state(kept.clone())
        .layer(SessionLayer::new(sessions(memory())));
    assert_eq!(send(&router, "POST", "/keep", None).await.status, StatusCode::OK);
    let session = kept.0.lock().unwrap().take().unwrap();
    assert!(session.insert(Counter::default()).await.is_err());
    assert!(session.delete().await.is_err());
    assert!(session.get().await.unwrap().is_some(), "reading is still fine");
}
