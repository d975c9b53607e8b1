//! [`Session<T>`]: one request's view of its session, loaded lazily, written at the end.

use std::sync::Arc;

use axum_core::extract::FromRequestParts;
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use session_core::{Error, ExpiryMode, Session as Stored, SessionId, Sessions};
use tokio::sync::Mutex;

use crate::error::SessionError;
use crate::layer::Config;

/// A handler's session of type `T`: the extractor the [`SessionLayer`](crate::SessionLayer)
/// for `T` provides.
///
/// The session is loaded on the first call that needs it (once per request; a request that
/// never looks at its session costs no store call) and written once when the handler has
/// answered, only if [`insert`](Self::insert) or [`update`](Self::update) changed it:
/// created under a new random id if there was none, else written by compare-and-set against
/// the version this request loaded (see [`Concurrency`](crate::Concurrency)). Cookies follow:
/// set on a new session, a rotation and a write, removed on [`delete`](Self::delete) and when
/// the cookie's session is known to be gone.
///
/// Every method answers a [`SessionError`], which is also an axum response (503 when the store
/// can't tell whether the session exists: the browser keeps its cookie), so handlers use `?`.
///
/// Cloning gives another handle on the same request's session.
pub struct Session<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Session<T> {
    fn clone(&self) -> Self {
        Session {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> std::fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sessions", &self.shared.config.sessions)
            .finish_non_exhaustive()
    }
}

/// What the layer and the extractor share for one request.
pub(crate) struct Shared<T> {
    pub(crate) config: Arc<Config<T>>,
    /// The id the request's cookie carried, if well-formed.
    pub(crate) cookie_id: Option<SessionId>,
    pub(crate) state: Mutex<State<T>>,
}

/// One request's session state.
pub(crate) struct State<T> {
    /// Whether the cookie's session was looked up.
    pub(crate) loaded: bool,
    /// The session as stored (loaded, or as this request last wrote it).
    pub(crate) stored: Option<Stored<T>>,
    /// The handler's value, when it set one not written yet.
    pub(crate) pending: Option<T>,
    /// What the cookie must say at the end.
    pub(crate) cookie: CookieAction,
}

/// What the response's `Set-Cookie` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieAction {
    /// Nothing.
    Keep,
    /// The current session's id and remaining lifetime (new id, or a moved deadline).
    Set,
    /// Remove the cookie (logout, or its session is known to be gone).
    Remove,
}

impl<T> Shared<T> {
    pub(crate) fn new(config: Arc<Config<T>>, cookie_id: Option<SessionId>) -> Self {
        Shared {
            config,
            cookie_id,
            state: Mutex::new(State {
                loaded: false,
                stored: None,
                pending: None,
                cookie: CookieAction::Keep,
            }),
        }
    }
}

impl<T> Session<T> {
    pub(crate) fn from_shared(shared: Arc<Shared<T>>) -> Self {
        Session { shared }
    }
}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Session<T> {
    /// The session's value, or `None` if this browser has no session (yet).
    ///
    /// # Errors
    /// A store error: 503 when it can't tell now (the cookie is kept).
    pub async fn get(&self) -> Result<Option<T>, SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.ensure_loaded(&mut state).await?;
        Ok(state
            .pending
            .clone()
            .or_else(|| state.stored.as_ref().map(|s| s.value.clone())))
    }

    /// Whether this browser has a session (one stored, or one this request set).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn exists(&self) -> Result<bool, SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.ensure_loaded(&mut state).await?;
        Ok(state.pending.is_some() || state.stored.is_some())
    }

    /// Sets the session's value: written when the handler has answered (a new session if
    /// there was none).
    ///
    /// # Errors
    /// As [`get`](Self::get) (the session is looked up first, to write against its version).
    pub async fn insert(&self, value: T) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.ensure_loaded(&mut state).await?;
        state.pending = Some(value);
        Ok(())
    }

    /// Changes the session's value in place if there is one; `None` (and nothing written)
    /// if there is none.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> Result<Option<R>, SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.ensure_loaded(&mut state).await?;
        let current = match state.pending.take() {
            Some(value) => Some(value),
            None => state.stored.as_ref().map(|s| s.value.clone()),
        };
        Ok(current.map(|mut value| {
            let answer = change(&mut value);
            state.pending = Some(value);
            answer
        }))
    }

    /// Gives the session a new id now — call it on login (and on any privilege change): an
    /// id an attacker planted or saw before is dead afterwards, and the response carries
    /// the new cookie. A browser without a session gets a fresh id anyway when one is
    /// first written, so there is nothing to do then.
    ///
    /// # Errors
    /// Store errors (the old id may then still be valid: retry).
    pub async fn rotate(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.ensure_loaded(&mut state).await?;
        let Some(stored) = state.stored.as_mut() else {
            return Ok(());
        };
        let new_id = SessionId::generate()?;
        let meta = self.shared.config.sessions.rotate_to(&stored.id, &new_id).await?;
        stored.id = new_id;
        stored.meta = meta;
        state.cookie = CookieAction::Set;
        Ok(())
    }

    /// Ends the session now (logout): deleted from the store — with the fallback, in every
    /// instance — and the response removes the cookie. A later [`insert`](Self::insert) in
    /// the same request starts a new session under a new id.
    ///
    /// # Errors
    /// Store errors (the session may then still exist: retry).
    pub async fn delete(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        let id = match state.stored.as_ref() {
            Some(stored) => Some(stored.id.clone()),
            None if !state.loaded => self.shared.cookie_id.clone(),
            None => None,
        };
        if let Some(id) = id {
            self.shared.config.sessions.delete(&id).await?;
        }
        state.loaded = true;
        state.stored = None;
        state.pending = None;
        state.cookie = CookieAction::Remove;
        Ok(())
    }

    /// Writes a changed value now instead of at the end, so that the handler sees a conflict
    /// itself (and may reload and retry) rather than the layer answering 409.
    ///
    /// # Errors
    /// [`Error::Conflict`] (409) when another request wrote the session since this one
    /// loaded it; [`Error::NotFound`] (404, and the cookie is removed) when it ended
    /// meanwhile — a logout is never undone by a request that started before it; store
    /// errors.
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.write(&mut state).await.map_err(SessionError::from)
    }

    /// Forgets what this request loaded and changed, so that the next call reads the store
    /// again (after a conflict, to retry on the current value).
    pub async fn reload(&self) {
        let mut state = self.shared.state.lock().await;
        state.loaded = state.cookie == CookieAction::Remove;
        state.pending = None;
        if !state.loaded {
            state.stored = None;
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Shared<T> {
    /// Looks the cookie's session up, once.
    async fn ensure_loaded(&self, state: &mut State<T>) -> Result<(), SessionError> {
        if state.loaded {
            return Ok(());
        }
        if let Some(id) = &self.cookie_id {
            let sessions: &Sessions<T> = &self.config.sessions;
            let found = sessions.load(id).await?;
            state.cookie = match &found {
                // The cookie's session is known to be gone: the cookie goes too.
                None => CookieAction::Remove,
                // A sliding policy moved the deadline: the cookie's Max-Age follows.
                Some(_) if sessions.policy().mode == ExpiryMode::Sliding => CookieAction::Set,
                Some(_) => state.cookie,
            };
            state.stored = found;
        }
        state.loaded = true;
        Ok(())
    }

    /// Writes the pending value, if any: a new session, or compare-and-set (last writer wins
    /// with [`Concurrency::LastWriterWins`](crate::Concurrency::LastWriterWins)) on the
    /// stored one. A session that ended meanwhile is not brought back.
    pub(crate) async fn write(&self, state: &mut State<T>) -> Result<(), Error> {
        let Some(value) = state.pending.take() else {
            return Ok(());
        };
        let sessions = &self.config.sessions;
        match state.stored.as_mut() {
            None => {
                let created = sessions.create(value).await?;
                state.stored = Some(created);
            }
            Some(stored) => {
                let previous = std::mem::replace(&mut stored.value, value);
                let written = match self.config.concurrency {
                    crate::Concurrency::CompareAndSet => sessions.save_if(stored).await,
                    crate::Concurrency::LastWriterWins => sessions.update(stored).await,
                };
                if let Err(e) = written {
                    // Nothing was written: the handle keeps what the store holds.
                    let mine = std::mem::replace(&mut stored.value, previous);
                    if matches!(e, Error::NotFound { .. }) {
                        // Ended meanwhile (a logout elsewhere): not brought back.
                        state.stored = None;
                        state.cookie = CookieAction::Remove;
                    } else {
                        state.pending = Some(mine);
                    }
                    return Err(e);
                }
            }
        }
        state.cookie = CookieAction::Set;
        Ok(())
    }
}

impl<S: Send + Sync, T: Send + Sync + 'static> FromRequestParts<S> for Session<T> {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Shared<T>>>()
            .map(|shared| Session::from_shared(Arc::clone(shared)))
            .ok_or((
                StatusCode::INTERNAL_SERVER_ERROR,
                "no SessionLayer for this session type: add `.layer(SessionLayer::new(sessions))` to the router",
            ))
    }
}
