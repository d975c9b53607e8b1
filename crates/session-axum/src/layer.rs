//! [`SessionLayer`]: the tower layer that gives each request its [`Session<T>`](crate::Session)
//! and, once the handler has answered, writes it and sets the cookie.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::response::{IntoResponse, Response};
use http::header::{HeaderValue, CACHE_CONTROL, SET_COOKIE};
use http::Request;
use serde::de::DeserializeOwned;
use serde::Serialize;
use session_core::{Namespace, Sessions};
use tower_layer::Layer;
use tower_service::Service;

use crate::cookie::CookieConfig;
use crate::error::SessionError;
use crate::session::{CookieAction, Shared, State};

/// How a changed session is written when the handler has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Concurrency {
    /// Compare-and-set against the version the request loaded (the default). Of two
    /// concurrent requests of one browser that both change the session, the first to finish
    /// is written; the other is answered **409 Conflict** (`"session_conflict"`) and its
    /// change is not stored, whatever its handler answered. A handler that wants to retry
    /// calls [`Session::save`](crate::Session::save) itself and reloads on a conflict.
    #[default]
    CompareAndSet,
    /// The last request to finish wins (its value replaces any written meanwhile), but a
    /// session deleted meanwhile stays deleted.
    LastWriterWins,
}

/// What every request of a layer shares.
pub(crate) struct Config<T> {
    pub(crate) sessions: Sessions<T>,
    pub(crate) cookie: CookieConfig,
    pub(crate) concurrency: Concurrency,
}

impl<T> Clone for Config<T> {
    fn clone(&self) -> Self {
        Config {
            sessions: self.sessions.clone(),
            cookie: self.cookie.clone(),
            concurrency: self.concurrency,
        }
    }
}

/// A tower [`Layer`] giving handlers a [`Session<T>`](crate::Session) of one namespace, kept
/// in a cookie.
///
/// ```
/// # use std::sync::Arc;
/// # use axum::{routing::post, Router};
/// # use session_axum::{Session, SessionError, SessionLayer};
/// # use session_core::{Namespace, Sessions};
/// # use session_memory::{MemoryConfig, MemoryStore};
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Visits {
///     n: u64,
/// }
///
/// async fn count(session: Session<Visits>) -> Result<String, SessionError> {
///     let mut visits = session.get().await?.unwrap_or_default();
///     visits.n += 1;
///     session.insert(visits.clone()).await?;
///     Ok(format!("visit {}", visits.n))
/// }
///
/// # fn main() -> session_core::Result<()> {
/// let store = Arc::new(MemoryStore::new(MemoryConfig::default())?);
/// let sessions = Sessions::<Visits>::new(store, Namespace::new("visits")?);
/// let app: Router = Router::new()
///     .route("/count", post(count))
///     .layer(SessionLayer::new(sessions));
/// # Ok(())
/// # }
/// ```
pub struct SessionLayer<T> {
    config: Arc<Config<T>>,
}

impl<T> Clone for SessionLayer<T> {
    fn clone(&self) -> Self {
        SessionLayer {
            config: Arc::clone(&self.config),
        }
    }
}

impl<T> std::fmt::Debug for SessionLayer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("sessions", &self.config.sessions)
            .field("cookie", &self.config.cookie)
            .field("concurrency", &self.config.concurrency)
            .finish()
    }
}

impl<T> SessionLayer<T> {
    /// A layer over `sessions` (its store, namespace, codec and expiry policy), with the
    /// secure cookie defaults of [`CookieConfig::new`] and compare-and-set writes.
    pub fn new(sessions: Sessions<T>) -> Self {
        SessionLayer {
            config: Arc::new(Config {
                sessions,
                cookie: CookieConfig::new(),
                concurrency: Concurrency::default(),
            }),
        }
    }

    /// Sets the cookie's name and flags. A cookie that is not `Secure` is logged at WARN,
    /// once, here.
    #[must_use]
    pub fn with_cookie(self, cookie: CookieConfig) -> Self {
        if !cookie.is_secure() {
            tracing::warn!(
                cookie = %cookie.cookie_name(),
                "the session cookie is not Secure (insecure_for_local_development): it travels \
                 in the clear over http; for plain-http development on localhost only"
            );
        }
        self.map_config(|c| c.cookie = cookie)
    }

    /// Sets how a changed session is written ([`Concurrency`]).
    #[must_use]
    pub fn with_concurrency(self, concurrency: Concurrency) -> Self {
        self.map_config(|c| c.concurrency = concurrency)
    }

    fn map_config(self, change: impl FnOnce(&mut Config<T>)) -> Self {
        let mut config = Arc::unwrap_or_clone(self.config);
        change(&mut config);
        SessionLayer {
            config: Arc::new(config),
        }
    }
}

impl<S, T> Layer<S> for SessionLayer<T> {
    type Service = SessionService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`SessionLayer`] wraps around a handler (or router).
pub struct SessionService<S, T> {
    inner: S,
    config: Arc<Config<T>>,
}

impl<S: Clone, T> Clone for SessionService<S, T> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S, T> std::fmt::Debug for SessionService<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("sessions", &self.config.sessions)
            .finish_non_exhaustive()
    }
}

impl<S, T, B> Service<Request<B>> for SessionService<S, T>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(clash) = self.claim_cookie(&mut request) {
            return Box::pin(async move { Ok(clash) });
        }
        let cookie_id = self.config.cookie.read(request.headers());
        let had_cookie = cookie_id.is_some();
        let shared = Arc::new(Shared::new(Arc::clone(&self.config), cookie_id));
        request.extensions_mut().insert(Arc::clone(&shared));
        // The clone that was ready is the one called (tower's rule for `call` after
        // `poll_ready`); a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(finish(&shared, response, had_cookie).await)
        })
    }
}

/// The cookie names the session layers around one request use, with their namespaces.
#[derive(Clone, Default)]
struct CookieClaims(Vec<(Arc<str>, Namespace)>);

impl<S, T> SessionService<S, T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Records this layer's cookie name on the request; two layers of different namespaces
    /// sharing one name would read each other's ids: that request is answered 500 with what
    /// to change, never served.
    fn claim_cookie<B>(&self, request: &mut Request<B>) -> Option<Response> {
        let name = self.config.cookie.shared_name();
        let namespace = self.config.sessions.namespace();
        let claims = request.extensions_mut().get_or_insert_default::<CookieClaims>();
        if let Some((_, other)) = claims.0.iter().find(|(n, ns)| *n == name && ns != namespace) {
            tracing::error!(
                cookie = %name,
                namespaces = %format!("{}, {}", other.as_str(), namespace.as_str()),
                "two session layers use one cookie name: give each its own with CookieConfig::with_name"
            );
            return Some(crate::error::json_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "session_error",
                "the session could not be read or written; the server log has the cause",
            ));
        }
        claims.0.push((name, namespace.clone()));
        None
    }
}

/// After the handler: writes a changed session and sets, refreshes or removes the cookie. A
/// failed write replaces the handler's answer with the error's. Changes made afterwards are
/// refused.
async fn finish<T>(shared: &Shared<T>, response: Response, had_cookie: bool) -> Response
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let mut state = shared.state.lock().await;
    let written = shared.write(&mut state).await;
    state.finished = true;
    let mut response = match written {
        Ok(()) => response,
        Err(e) => SessionError::from(e).into_response(),
    };
    if let Some(value) = set_cookie(shared, &state, had_cookie) {
        let headers = response.headers_mut();
        headers.append(SET_COOKIE, value);
        // A response that sets a session cookie is this browser's alone: no cache may keep
        // it, whatever the handler said.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The `Set-Cookie` a response carries, if any.
fn set_cookie<T>(shared: &Shared<T>, state: &State<T>, had_cookie: bool) -> Option<HeaderValue>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let cookie = &shared.config.cookie;
    match (state.cookie, state.stored.as_ref()) {
        (CookieAction::Set, Some(stored)) => {
            let now = shared.config.sessions.clock().now_ms();
            let left_ms = stored.meta.deadline().saturating_sub(now);
            cookie.set(&stored.id, left_ms / 1000)
        }
        (CookieAction::Remove, _) if had_cookie => cookie.remove(),
        _ => None,
    }
}
