//! [`Session<T>`]: one request's view of its session, loaded lazily, written at the end.

use std::sync::Arc;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use session_core::{Error, ExpiryMode, Principal, Session as Stored, SessionId, Sessions};
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
    pub(crate) state: Mutex<State<T>>,
}

/// One request's session state.
pub(crate) struct State<T> {
    /// The id this request works on: the cookie's, then the one a rotation or a new session
    /// gave; `None` without a cookie and after a delete.
    pub(crate) current: Option<SessionId>,
    /// Whether `current`'s session was looked up.
    pub(crate) loaded: bool,
    /// The session as stored (loaded, or as this request last wrote it).
    pub(crate) stored: Option<Stored<T>>,
    /// The handler's value, when it set one not written yet.
    pub(crate) pending: Option<T>,
    /// What the cookie must say at the end.
    pub(crate) cookie: CookieAction,
    /// The id a rotation whose outcome is unknown (a temporary error) was moving to: a retry
    /// finishes that move instead of starting another.
    pub(crate) rotating_to: Option<SessionId>,
    /// The layer has written the session and answered: later changes would be lost.
    pub(crate) finished: bool,
}

/// What the response's `Set-Cookie` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieAction {
    /// Nothing.
    Keep,
    /// The current session's id and remaining lifetime (new id, or a moved deadline).
    Set,
    /// Remove the cookie: only after an explicit [`Session::delete`]. A cookie whose session
    /// is gone is left alone: removing it could clobber the new cookie a concurrent login of
    /// the same browser has just set.
    Remove,
}

impl<T> Shared<T> {
    pub(crate) fn new(config: Arc<Config<T>>, cookie_id: Option<SessionId>) -> Self {
        Shared {
            config,
            state: Mutex::new(State {
                loaded: cookie_id.is_none(),
                current: cookie_id,
                stored: None,
                pending: None,
                cookie: CookieAction::Keep,
                rotating_to: None,
                finished: false,
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

    /// Changes the session's value in place if there is one; `None` (and nothing written)
    /// if there is none.
    ///
    /// # Errors
    /// As [`get`](Self::get); after the response was sent, an error (the change would be
    /// lost).
    pub async fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> Result<Option<R>, SessionError> {
        let mut state = self.shared.state.lock().await;
        not_finished(&state)?;
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
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Session<T> {
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
    /// As [`get`](Self::get) (the session is looked up first, to write against its version);
    /// after the response was sent, an error (the change would be lost).
    pub async fn insert(&self, value: T) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        not_finished(&state)?;
        self.shared.ensure_loaded(&mut state).await?;
        state.pending = Some(value);
        Ok(())
    }

    /// Gives the session a new id now — call it on login (and on any privilege change): an
    /// id an attacker planted or saw before is dead afterwards, and the response carries
    /// the new cookie. A browser without a session gets a fresh id anyway when one is
    /// first written, so there is nothing to do then.
    ///
    /// # Errors
    /// Store errors. After a temporary one the session is under the old id or the new one:
    /// calling `rotate` again finishes the same move.
    pub async fn rotate(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        not_finished(&state)?;
        self.shared.ensure_loaded(&mut state).await?;
        let Some(old) = state.stored.as_ref().map(|s| s.id.clone()) else {
            return Ok(());
        };
        let new_id = match state.rotating_to.take() {
            Some(id) => id,
            None => SessionId::generate()?,
        };
        match self.shared.config.sessions.rotate_to(&old, &new_id).await {
            Ok(meta) => {
                if let Some(stored) = state.stored.as_mut() {
                    stored.id = new_id.clone();
                    stored.meta = meta;
                }
                state.current = Some(new_id);
                state.cookie = CookieAction::Set;
                Ok(())
            }
            Err(e) => {
                if e.is_temporary() {
                    state.rotating_to = Some(new_id);
                }
                Err(e.into())
            }
        }
    }

    /// Binds this browser's session to `principal` — at login, after [`rotate`](Self::rotate)
    /// — so that [`Sessions::list`] shows it and [`Sessions::revoke_all`] ends it, on every
    /// instance (see [`Sessions::bind`]). A value [`insert`](Self::insert)ed and not written
    /// yet is written first: the session must exist to be bound. The binding gives the session
    /// a lifetime cap if it had none, so the response sets the cookie again.
    ///
    /// # Errors
    /// [`Error::NotFound`] (404) when there is no session to bind (nothing inserted, or it
    /// ended meanwhile); [`Error::Conflict`] (409) when another request wrote it since this
    /// one loaded it; store errors (temporary while a fallback's primary is down: the login
    /// may go on unbound, or answer 503); after the response was sent, an error.
    pub async fn bind(&self, principal: &Principal) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        not_finished(&state)?;
        self.shared.ensure_loaded(&mut state).await?;
        self.shared.write(&mut state).await?;
        let sessions = &self.shared.config.sessions;
        let Some(stored) = state.stored.as_mut() else {
            return Err(Error::not_found(sessions.namespace().as_str()).into());
        };
        sessions.bind(stored, principal).await?;
        state.cookie = CookieAction::Set;
        Ok(())
    }

    /// The principal this browser's session is bound to ([`bind`](Self::bind)), if any.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub async fn principal(&self) -> Result<Option<Principal>, SessionError> {
        let mut state = self.shared.state.lock().await;
        self.shared.ensure_loaded(&mut state).await?;
        Ok(state.stored.as_ref().and_then(|s| s.principal().cloned()))
    }

    /// Ends the session now (logout): deleted from the store — with the fallback, in every
    /// instance — and the response removes the cookie. A later [`insert`](Self::insert) in
    /// the same request starts a new session under a new id.
    ///
    /// # Errors
    /// Store errors (the session may then still exist: retry); after the response was
    /// sent, an error.
    pub async fn delete(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        not_finished(&state)?;
        if let Some(id) = state.current.clone() {
            self.shared.config.sessions.delete(&id).await?;
            if let Some(moving) = state.rotating_to.take() {
                // An interrupted rotation may have moved it already.
                self.shared.config.sessions.delete(&moving).await?;
            }
        }
        state.current = None;
        state.loaded = true;
        state.stored = None;
        state.pending = None;
        state.cookie = CookieAction::Remove;
        Ok(())
    }

    /// Writes a changed value now instead of at the end, so that the handler sees a conflict
    /// itself (and may [`reload`](Self::reload) and retry) rather than the layer answering
    /// 409. A value whose write failed is dropped: the handler has seen the error, and the
    /// layer does not write it again.
    ///
    /// # Errors
    /// [`Error::Conflict`] (409) when another request wrote the session since this one
    /// loaded it; [`Error::NotFound`] (404) when it ended meanwhile — a logout is never undone
    /// by a request that started before it; store errors; after the response was sent, an
    /// error.
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut state = self.shared.state.lock().await;
        not_finished(&state)?;
        self.shared.write(&mut state).await.map_err(SessionError::from)
    }

    /// Forgets what this request loaded and changed, so that the next call reads the
    /// session (under its current id) again: after a conflict, to retry on the current
    /// value.
    pub async fn reload(&self) {
        let mut state = self.shared.state.lock().await;
        state.pending = None;
        state.stored = None;
        state.loaded = state.current.is_none();
    }
}

/// Refuses a change once the layer has written the session and answered.
fn not_finished<T>(state: &State<T>) -> Result<(), SessionError> {
    if state.finished {
        return Err(SessionError::from(Error::Backend {
            backend: "session-axum",
            message: "the response was already sent and the session written; a change made after \
                      that (from a spawned task or a streaming body) would be lost"
                .to_owned(),
            source: None,
        }));
    }
    Ok(())
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Shared<T> {
    /// Looks the current id's session up, once.
    async fn ensure_loaded(&self, state: &mut State<T>) -> Result<(), SessionError> {
        if state.loaded {
            return Ok(());
        }
        if let Some(id) = state.current.clone() {
            let sessions: &Sessions<T> = &self.config.sessions;
            let found = sessions.load(&id).await?;
            // A sliding policy moved the deadline: the cookie's Max-Age follows.
            if found.is_some() && sessions.policy().mode == ExpiryMode::Sliding {
                state.cookie = CookieAction::Set;
            }
            state.stored = found;
        }
        state.loaded = true;
        Ok(())
    }

    /// Writes the pending value, if any: a new session, or compare-and-set (last writer wins
    /// with [`Concurrency::LastWriterWins`](crate::Concurrency::LastWriterWins)) on the
    /// stored one. A session that ended meanwhile is not brought back. A value that could not
    /// be written is dropped (the caller reports the error).
    pub(crate) async fn write(&self, state: &mut State<T>) -> Result<(), Error> {
        let Some(value) = state.pending.take() else {
            return Ok(());
        };
        let sessions = &self.config.sessions;
        match state.stored.as_mut() {
            None => {
                let created = sessions.create(value).await?;
                state.current = Some(created.id.clone());
                state.stored = Some(created);
            }
            Some(stored) => {
                let previous = std::mem::replace(&mut stored.value, value);
                let written = match self.config.concurrency {
                    crate::Concurrency::CompareAndSet => sessions.save_if(stored).await,
                    crate::Concurrency::LastWriterWins => sessions.update(stored).await,
                };
                if let Err(e) = written {
                    // Nothing was written: the handle keeps what the store held.
                    stored.value = previous;
                    if matches!(e, Error::NotFound { .. }) {
                        // Ended meanwhile (a logout elsewhere): not brought back.
                        state.stored = None;
                    }
                    return Err(e);
                }
            }
        }
        state.cookie = CookieAction::Set;
        Ok(())
    }
}

/// The extractor's rejection: the handler's router has no [`SessionLayer`](crate::SessionLayer)
/// for this session type. A 500 with the JSON body every session error has.
#[derive(Debug)]
pub struct MissingSessionLayer {
    type_name: &'static str,
}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!(
            session_type = self.type_name,
            "a handler takes Session<{}> but no SessionLayer for that type wraps its route: add \
             `.layer(SessionLayer::new(sessions))` to the router",
            self.type_name
        );
        crate::error::json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session_error",
            "the session could not be read or written; the server log has the cause",
        )
    }
}

impl<S: Send + Sync, T: Send + Sync + 'static> FromRequestParts<S> for Session<T> {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Shared<T>>>()
            .map(|shared| Session::from_shared(Arc::clone(shared)))
            .ok_or(MissingSessionLayer {
                type_name: std::any::type_name::<T>(),
            })
    }
}
