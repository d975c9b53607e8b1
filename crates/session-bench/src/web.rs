//! The web layer: one request through this workspace's `SessionLayer` against one through
//! tower-sessions' `SessionManagerLayer`, both over one `MemoryStore` and the same session value,
//! driven in-process through an axum `Router` (no socket, no HTTP parsing: what is measured is
//! what the layer, its extractor and the store do per request).
//!
//! * Ours: `Sessions<WebSession>` (namespace `web`, the default codec, JSON) under
//!   `SessionLayer::new`, its defaults (cookie `__Host-id`, compare-and-set writes).
//! * tower-sessions: `SessionManagerLayer::new(TowerSessionsStore::new(store, web_tower))`, its
//!   defaults (cookie `id`, last-writer-wins saves), the value under one key of its data map.
//!
//! Each side has [`Keys`](crate::cases::Keys)-many sessions created at set-up; every request
//! carries one of their cookies. The `request` handler reads the session and writes it back with
//! its counter moved (one load and one write); the `read request` handler only reads it. An
//! answer other than 200 is a failed operation, and a cell with one reports no rate.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use http::header::{HeaderValue, COOKIE};
use http::{Method, Request, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use session_axum::{CookieConfig, Session, SessionError, SessionLayer, TowerSessionsStore};
use session_core::{SessionId, SessionStore, Sessions};
use session_memory::{MemoryConfig, MemoryStore};
use tower::{Service, ServiceExt};
use tower_sessions::SessionManagerLayer;
use tower_sessions_core::session::{Id as TowerId, Record as TowerRecord};
use tower_sessions_core::SessionStore as _;

use crate::cases::{case, check, ns, Case, Group};
use crate::harness::Op;
use crate::payload::{self, TaskSession};

/// The subject of our layer's cases (`--only mem:web` selects both sides).
pub(crate) const OURS: &str = "web: SessionLayer, MemoryStore";
/// The subject of tower-sessions' layer's cases, over the same store.
pub(crate) const TOWER: &str = "web: tower-sessions SessionManagerLayer, MemoryStore";
/// The operation that loads the session and writes it back changed.
pub(crate) const UPDATE: &str = "request";
/// The operation that only reads the session.
pub(crate) const READ: &str = "read request";

/// The key of the value in a tower-sessions session's data map.
const TOWER_KEY: &str = "web";
const UPDATE_PATH: &str = "/update";
const READ_PATH: &str = "/read";

/// The session value of both sides: a visit counter beside the benchmark's chat-task session
/// (about 1.3 KiB of JSON either way).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct WebSession {
    visits: u64,
    task: TaskSession,
}

/// Ours: reads the session and writes it back with the counter moved.
async fn ours_update(session: Session<WebSession>) -> Result<StatusCode, SessionError> {
    let Some(mut value) = session.get().await? else {
        return Ok(StatusCode::NOT_FOUND);
    };
    value.visits += 1;
    session.insert(value).await?;
    Ok(StatusCode::OK)
}

/// Ours: reads the session.
async fn ours_read(session: Session<WebSession>) -> Result<StatusCode, SessionError> {
    Ok(match session.get().await? {
        Some(value) => {
            std::hint::black_box(value.visits);
            StatusCode::OK
        }
        None => StatusCode::NOT_FOUND,
    })
}

/// tower-sessions: reads the session's value and writes it back with the counter moved.
async fn tower_update(session: tower_sessions::Session) -> StatusCode {
    match session.get::<WebSession>(TOWER_KEY).await {
        Ok(Some(mut value)) => {
            value.visits += 1;
            match session.insert(TOWER_KEY, value).await {
                Ok(()) => StatusCode::OK,
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        Ok(None) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// tower-sessions: reads the session's value.
async fn tower_read(session: tower_sessions::Session) -> StatusCode {
    match session.get::<WebSession>(TOWER_KEY).await {
        Ok(Some(value)) => {
            std::hint::black_box(value.visits);
            StatusCode::OK
        }
        Ok(None) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One request of one task: `method uri` with the `Cookie` header of a session of the task's
/// share, through the task's clone of the router; `true` for a 200.
struct WebRequest {
    router: Router,
    method: Method,
    uri: Uri,
    /// One `Cookie` header value per pre-created session.
    cookies: Arc<[HeaderValue]>,
    task: usize,
    tasks: usize,
}

impl Op for WebRequest {
    fn call(&mut self, idx: usize) -> impl Future<Output = bool> + Send + '_ {
        let cookie = self.cookies[own_share(idx, self.task, self.tasks, self.cookies.len())].clone();
        let mut request = Request::new(Body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().insert(COOKIE, cookie);
        async move {
            let Ok(router) = ServiceExt::<Request<Body>>::ready(&mut self.router).await;
            // Outside Tokio's cooperative budget (128 units per poll of a task): both layers lock
            // a `tokio::sync::Mutex` a few times per request and a harness task runs 64 requests
            // per poll, so the budget ran out mid-batch and parked one request behind the other
            // 63 tasks (~40 ms), which only one side's timed requests happened to include. A
            // server's connection task waits on I/O between requests and never gets there.
            let Ok(response) = tokio::task::unconstrained(router.call(request)).await;
            response.status() == StatusCode::OK
        }
    }
}

/// Key number `idx` moved into task `task`'s share of `len` sessions (those whose number is
/// `task` modulo `tasks`): uniform over the share, and no two tasks send one session's cookie at
/// the same time — one browser's requests, as a browser sends them, one after the other. (Two
/// concurrent writes of one session would be a compare-and-set conflict, a 409, on our side.)
/// Needs `len >= tasks`.
fn own_share(idx: usize, task: usize, tasks: usize, len: usize) -> usize {
    let tasks = tasks.max(1);
    let idx = idx % len;
    let pick = idx - idx % tasks + task;
    if pick < len {
        pick
    } else {
        pick - tasks
    }
}

/// The `Cookie` header value `name=value`.
fn cookie(name: &str, value: &str) -> HeaderValue {
    check(
        "a cookie header",
        HeaderValue::from_str(&format!("{name}={value}")),
    )
}

/// Sends one request through `router` and returns its status (set-up checks).
async fn send(router: &Router, method: Method, path: &'static str, cookie: &HeaderValue) -> StatusCode {
    let mut request = Request::new(Body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = Uri::from_static(path);
    request.headers_mut().insert(COOKIE, cookie.clone());
    let Ok(response) = router.clone().oneshot(request).await;
    response.status()
}

/// The web layer's cases: `request` and `read request` of both sides at every task count, over
/// one fresh `MemoryStore` holding `sessions` sessions per side (created here, through each
/// side's own path: `Sessions::create`, `TowerSessionsStore::create`). Checks, before any cell,
/// that a request of each side finds its session and that an update is written.
pub(crate) async fn web_cases(sessions: usize, task_counts: &[usize]) -> Vec<Case> {
    let max_tasks = task_counts.iter().copied().max().unwrap_or(1);
    assert!(
        sessions >= max_tasks,
        "the web cases need at least one session per task ({sessions} < {max_tasks})"
    );
    let store: Arc<dyn SessionStore> =
        Arc::new(check("MemoryStore", MemoryStore::new(MemoryConfig::default())));
    let value = WebSession {
        visits: 0,
        task: payload::session(),
    };

    // Ours: typed sessions (the default codec, JSON) under the layer's defaults.
    let typed = Sessions::<WebSession>::new(Arc::clone(&store), ns("web"));
    let ours_config = CookieConfig::new();
    let ours_name = ours_config.cookie_name();
    let mut ours_ids: Vec<SessionId> = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let created = check("creating a web session", typed.create(value.clone()).await);
        ours_ids.push(created.id);
    }
    let ours_cookies: Arc<[HeaderValue]> = ours_ids.iter().map(|id| cookie(ours_name, id.as_str())).collect();
    let ours = Router::new()
        .route(UPDATE_PATH, post(ours_update))
        .route(READ_PATH, get(ours_read))
        .layer(SessionLayer::new(typed.clone()));

    // tower-sessions: the same store through the adapter, under its layer's defaults.
    let tower_store = TowerSessionsStore::new(Arc::clone(&store), ns("web_tower"));
    let data = check("the web session as JSON", serde_json::to_value(&value));
    let mut record = TowerRecord {
        id: TowerId::default(),
        data: std::iter::once((TOWER_KEY.to_owned(), data)).collect(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(3),
    };
    let mut tower_ids: Vec<TowerId> = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        record.id = TowerId::default();
        check(
            "creating a tower-sessions session",
            tower_store.create(&mut record).await,
        );
        tower_ids.push(record.id);
    }
    let tower_cookies: Arc<[HeaderValue]> =
        tower_ids.iter().map(|id| cookie("id", &id.to_string())).collect();
    let tower = Router::new()
        .route(UPDATE_PATH, post(tower_update))
        .route(READ_PATH, get(tower_read))
        .layer(SessionManagerLayer::new(tower_store.clone()));

    // Each side finds its session from the cookie, and its update is stored.
    for (router, cookie) in [(&ours, &ours_cookies[0]), (&tower, &tower_cookies[0])] {
        for (method, path) in [(Method::POST, UPDATE_PATH), (Method::GET, READ_PATH)] {
            let status = send(router, method, path, cookie).await;
            assert!(
                status == StatusCode::OK,
                "web set-up: {path} answered {status} with a pre-created session's cookie"
            );
        }
    }
    let ours_visits = check("loading a web session", typed.load(&ours_ids[0]).await).map(|s| s.value.visits);
    let tower_visits = check(
        "loading a tower-sessions session",
        tower_store.load(&tower_ids[0]).await,
    )
    .and_then(|r| r.data.get(TOWER_KEY)?.get("visits")?.as_u64());
    assert!(
        ours_visits == Some(1) && tower_visits == Some(1),
        "web set-up: an update request was not stored (visits: ours {ours_visits:?}, tower-sessions {tower_visits:?})"
    );

    let mut cases = Vec::new();
    for &tasks in task_counts {
        for (subject, router, cookies) in [(OURS, &ours, &ours_cookies), (TOWER, &tower, &tower_cookies)] {
            for (op, method, path) in [
                (UPDATE, Method::POST, UPDATE_PATH),
                (READ, Method::GET, READ_PATH),
            ] {
                let (router, cookies) = (router.clone(), Arc::clone(cookies));
                let c = case(subject, op, tasks, Group::Memory, move |task| WebRequest {
                    router: router.clone(),
                    method: method.clone(),
                    uri: Uri::from_static(path),
                    cookies: Arc::clone(&cookies),
                    task,
                    tasks,
                });
                cases.push(c.without_rate_on_failure());
            }
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{own_share, web_cases};
    use crate::harness::Plan;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_of_both_sides_answers_200() {
        let cases = web_cases(64, &[1, 8]).await;
        assert_eq!(cases.len(), 8);
        for case in &cases {
            let plan = Plan {
                tasks: case.tasks,
                duration: Duration::from_millis(30),
                keyspace: 64,
                sample_every: 1,
            };
            let cell = case.run(plan).await;
            assert!(
                cell.errors == 0 && cell.ops_per_sec > 0.0,
                "{}: {cell:?}",
                case.id()
            );
        }
    }

    #[test]
    fn each_task_keeps_to_its_own_share() {
        for (tasks, len) in [(1, 10), (64, 1000), (64, 64), (3, 10)] {
            for task in 0..tasks {
                for idx in 0..len * 2 {
                    let pick = own_share(idx, task, tasks, len);
                    assert!(pick < len, "{pick} out of {len}");
                    assert_eq!(pick % tasks, task);
                }
            }
        }
    }
}
