//! Sessions for axum and tower: a cookie layer with safe defaults and a typed extractor over
//! any session store of this family (memory, Redis on every topology, the fallback), and a
//! tower-sessions store adapter.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use axum::{routing::post, Router};
//! use session_axum::{Session, SessionError, SessionLayer};
//! use session_core::{Namespace, Sessions};
//! use session_memory::{MemoryConfig, MemoryStore};
//!
//! #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
//! struct Visits {
//!     n: u64,
//! }
//!
//! async fn count(session: Session<Visits>) -> Result<String, SessionError> {
//!     let n = session.update(|v| { v.n += 1; v.n }).await?;
//!     match n {
//!         Some(n) => Ok(format!("visit {n}")),
//!         None => {
//!             session.insert(Visits { n: 1 }).await?;
//!             Ok("first visit".to_owned())
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(MemoryStore::new(MemoryConfig::default())?);
//! let visits = Sessions::<Visits>::new(store, Namespace::new("visits")?);
//! let app = Router::new().route("/count", post(count)).layer(SessionLayer::new(visits));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What the layer does per request:
//! * reads the session id from the cookie (`__Host-id` by default; a missing, malformed or
//!   unknown id is simply no session, never an error page — though while the store can't
//!   tell whether a session exists, 503 — and such a cookie is left in place: removing it
//!   could clobber the new cookie a concurrent login of the same browser has just set);
//! * loads the session lazily, at most once, when the handler first asks
//!   ([`Session::get`], [`Session::update`], ...); a sliding expiry policy moves its deadline
//!   and the cookie's `Max-Age` with it;
//! * after the handler has answered, writes the session if it changed — a new one under a
//!   fresh random id, or compare-and-set against the version loaded ([`Concurrency`]) — and
//!   sets the cookie (`HttpOnly; Secure; SameSite=Lax; Path=/`, `Max-Age` = the session's
//!   remaining lifetime, see [`CookieConfig`]);
//! * on login call [`Session::rotate`] (the old id is dead, the cookie changes) and
//!   [`Session::bind`] to the user (then `Sessions::list` shows the user's browsers and
//!   `Sessions::revoke_all` logs them all out), on logout [`Session::delete`] (the session is
//!   gone everywhere, the cookie is removed);
//! * maps every library error to one HTTP status and JSON body ([`SessionError`],
//!   [`status_of`]): 409 for a conflicting concurrent write, 413 for a session over the size
//!   limit, 503 when the store can't tell whether a session exists — then the browser keeps
//!   its cookie, and with the fallback backend a Redis outage is not a logout.
//!
//! Several layers (one per session type and namespace) may wrap one router, each with its
//! own cookie name ([`CookieConfig::with_name`]); two layers of different namespaces sharing
//! a name are a configuration error, answered 500 and logged.
//!
//! A response that sets or removes the session cookie gets `Cache-Control: no-store`, whatever
//! the handler said. Error bodies say only what a client may know (`{"error": "<code>",
//! "message": "<text>"}`); the store's own message goes to the log (WARN for 5xx, DEBUG
//! otherwise). Handlers that change state should be POST (or other non-GET) routes:
//! `SameSite=Lax` sends the cookie with cross-site top-level GETs.

mod cookie;
mod error;
mod layer;
mod session;
#[cfg(feature = "tower-sessions")]
mod tower_sessions;

pub use crate::cookie::{CookieConfig, SameSite};
pub use crate::error::{status_of, SessionError};
pub use crate::layer::{Concurrency, SessionLayer, SessionService};
pub use crate::session::{MissingSessionLayer, Session};
#[cfg(feature = "tower-sessions")]
pub use crate::tower_sessions::TowerSessionsStore;
