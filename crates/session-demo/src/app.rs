//! The HTTP API: routes, handlers and the mapping of store errors to statuses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use session_core::{CoreConfig, Error, HealthStatus, SessionId, SessionStore, Sessions, Version};

use crate::model::{Kind, OrchestratorSession, TaskSession};

mod principals;

/// Renders the metrics exposition for `/metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn SessionStore>,
    backend: &'static str,
    tasks: Sessions<TaskSession>,
    orchestrators: Sessions<OrchestratorSession>,
    metrics: Option<MetricsRender>,
    /// The request body limit the router was built with (for the 413 message).
    max_body: usize,
}

impl AppState {
    /// Builds the state from a store and the core configuration (codec, TTLs, limits).
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`] never in practice: the namespaces are fixed.
    pub fn new(
        store: Arc<dyn SessionStore>,
        backend: &'static str,
        core: &CoreConfig,
        metrics: Option<MetricsRender>,
    ) -> session_core::Result<Self> {
        Ok(AppState {
            tasks: core.sessions(Arc::clone(&store), Kind::Task.namespace())?,
            orchestrators: core.sessions(Arc::clone(&store), Kind::Orchestrator.namespace())?,
            store,
            backend,
            metrics,
            max_body: 0,
        })
    }
}

/// The router of the demo API. `max_body` bounds request bodies (413 above it).
pub fn router(mut state: AppState, max_body: usize) -> Router {
    state.max_body = max_body;
    Router::new()
        .route("/api/sessions/{kind}", post(create))
        .route("/api/sessions/{kind}/{id}", get(load).put(replace).delete(remove))
        .route("/api/sessions/{kind}/{id}/principal", put(principals::bind))
        .route(
            "/api/principals/{principal}/sessions/{kind}",
            get(principals::list).delete(principals::revoke),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see the Allow header",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// One DEBUG event per request: method, route template (never the session id), status and
/// duration.
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "(no route)".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    tracing::debug!(
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// A JSON error response: `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::InvalidId { .. } => (StatusCode::BAD_REQUEST, "invalid_id"),
            Error::InvalidPrincipal { .. } => (StatusCode::BAD_REQUEST, "invalid_principal"),
            Error::InvalidNamespace { .. } => (StatusCode::NOT_FOUND, "unknown_kind"),
            Error::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            // Worded as every other 404 of a session, whichever call found it missing.
            Error::NotFound { .. } => return no_such_session(),
            Error::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            Error::Conflict { .. } => (StatusCode::PRECONDITION_FAILED, "version_conflict"),
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Full { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            // The store answers but refuses writes (OOM, MISCONF, READONLY, NOPERM):
            // the service cannot serve this now, the request itself is fine.
            Error::Refused { .. } => (StatusCode::SERVICE_UNAVAILABLE, "store_refused"),
            Error::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_session"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        if status.is_server_error() {
            tracing::warn!(error.kind = e.kind().as_str(), "request failed: {e}");
        }
        ApiError::new(status, code, e.to_string())
    }
}

fn parse_kind(kind: &str) -> Result<Kind, ApiError> {
    Kind::parse(kind).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_kind",
            "unknown session kind; use `task` or `orchestrator`",
        )
    })
}

fn parse_id(id: &str) -> Result<SessionId, ApiError> {
    Ok(SessionId::parse(id)?)
}

fn body_bytes(body: Result<Bytes, BytesRejection>, max_body: usize) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request body is over the limit of {max_body} bytes (max_session_bytes); store less in \
                     the session or raise max_session_bytes"
                ),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", r.body_text())
        }
    })
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("invalid session JSON: {e}"),
        )
    })
}

/// `If-Match` as the versions it accepts: a comma-separated list of ETags
/// (RFC 9110), each as sent (`"00ab…"`), weak (`W/"00ab…"`) or bare (`00ab…`),
/// 1 to 16 hex digits; `*` (any version) and no header are `None`.
fn if_match(headers: &HeaderMap) -> Result<Option<Vec<Version>>, ApiError> {
    let mut values = headers.get_all(IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_if_match",
            "If-Match must be `*` or a comma-separated list of ETags of this API: 1 to 16 hex digits, \
             optionally quoted",
        )
    };
    let mut versions = Vec::new();
    let mut any = false;
    for value in values {
        for item in value.to_str().map_err(|_| bad())?.split(',') {
            let item = item.trim();
            if item == "*" {
                any = true;
                continue;
            }
            let tag = item.strip_prefix("W/").unwrap_or(item);
            let hex = match tag.strip_prefix('"') {
                Some(quoted) => quoted.strip_suffix('"').ok_or_else(bad)?,
                None => tag,
            };
            versions.push(hex.parse::<Version>().map_err(|_| bad())?);
        }
    }
    match (any, versions.is_empty()) {
        (true, true) => Ok(None),
        // `*` mixed with tags is not a list RFC 9110 allows.
        (true, false) => Err(bad()),
        (false, _) => Ok(Some(versions)),
    }
}

fn etag(version: Version) -> [(axum::http::HeaderName, HeaderValue); 1] {
    // 16 hex digits in quotes are always a valid header value; the fallback is never taken.
    let value = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0000000000000000\""));
    [(ETAG, value)]
}

fn no_such_session() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such session")
}

async fn create(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let bytes = body_bytes(body, state.max_body)?;
    match kind {
        Kind::Task => create_typed(&state.tasks, &bytes).await,
        Kind::Orchestrator => create_typed(&state.orchestrators, &bytes).await,
    }
}

async fn create_typed<T>(sessions: &Sessions<T>, bytes: &[u8]) -> Result<Response, ApiError>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    let value: T = parse_body(bytes)?;
    let session = sessions.create(value).await?;
    Ok((
        StatusCode::CREATED,
        etag(session.meta.version),
        Json(json!({"id": session.id.as_str()})),
    )
        .into_response())
}

async fn load(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let id = parse_id(&id)?;
    match kind {
        Kind::Task => load_typed(&state.tasks, &id).await,
        Kind::Orchestrator => load_typed(&state.orchestrators, &id).await,
    }
}

async fn load_typed<T>(sessions: &Sessions<T>, id: &SessionId) -> Result<Response, ApiError>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    match sessions.load(id).await? {
        Some(s) => Ok((etag(s.meta.version), Json(s.value)).into_response()),
        None => Err(no_such_session()),
    }
}

async fn replace(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let id = parse_id(&id)?;
    let expected = if_match(&headers)?;
    let bytes = body_bytes(body, state.max_body)?;
    match kind {
        Kind::Task => replace_typed(&state.tasks, &id, expected, &bytes).await,
        Kind::Orchestrator => replace_typed(&state.orchestrators, &id, expected, &bytes).await,
    }
}

/// Replaces a session's value, continuing its lifetime (`created_at` and the
/// lifetime cap come from the loaded session). Without `expected`, an update
/// if it still exists; with it, a compare-and-set on that version.
async fn replace_typed<T>(
    sessions: &Sessions<T>,
    id: &SessionId,
    expected: Option<Vec<Version>>,
    bytes: &[u8],
) -> Result<Response, ApiError>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    let value: T = parse_body(bytes)?;
    let Some(mut session) = sessions.load(id).await? else {
        return Err(no_such_session());
    };
    match expected {
        Some(expected) if !expected.contains(&session.meta.version) => {
            // Stale already at load: no write needed to know the compare-and-set would lose.
            return Err(Error::Conflict {
                namespace: sessions.namespace().as_str().to_owned(),
                expected: expected.first().copied().unwrap_or(Version::NONE),
                actual: session.meta.version,
            }
            .into());
        }
        Some(_) => {
            session.value = value;
            sessions.save_if(&mut session).await?;
        }
        None => {
            session.value = value;
            sessions.update(&mut session).await?;
        }
    }
    Ok((StatusCode::NO_CONTENT, etag(session.meta.version)).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let id = parse_id(&id)?;
    let existed = match kind {
        Kind::Task => state.tasks.delete(&id).await?,
        Kind::Orchestrator => state.orchestrators.delete(&id).await?,
    };
    if existed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_such_session())
    }
}

/// `GET /health`: the store's health as JSON; 200 while it serves sessions (up or
/// degraded), 503 when it is down.
async fn health(State(state): State<AppState>) -> Response {
    let h = state.store.health().await;
    let extra = |name: &str| h.extra.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let primary = h
        .components
        .iter()
        .find(|(name, _)| *name == "primary")
        .map(|(_, p)| p.status)
        .unwrap_or(h.status);
    let fallback_active = state.backend == "fallback" && h.status != HealthStatus::Up;
    // Ready while the store serves sessions: `degraded` does (a fallback serving from its
    // secondary, a cluster with a node down), `down` serves none.
    let status = if h.status == HealthStatus::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "backend": state.backend,
        "status": h.status.as_str(),
        "primary": if primary == HealthStatus::Down { "down" } else { "up" },
        "fallback_active": fallback_active,
        "journal": extra("journal").unwrap_or(0),
        "latency_ms": h.latency.map(|d| d.as_secs_f64() * 1000.0),
        "detail": h.detail,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(render) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            render(),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "no_metrics", "metrics are not enabled").into_response(),
    }
}
