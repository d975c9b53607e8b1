//! A small axum app on sessions: count visits, log in (a new session id), log out.
//!
//! ```text
//! cargo run -p session-axum --example axum_app                 # memory, http://127.0.0.1:3000
//! SESSION_BACKEND=fallback SESSION_REDIS__URL=redis://127.0.0.1:6379 \
//!   cargo run -p session-axum --example axum_app -- 127.0.0.1:3000
//! ```
//!
//! The backend comes from `SESSION_*` variables (or `sessions.toml`), as for every store of
//! the family: memory by default, `redis` or `fallback` (Redis, and memory through an outage).
//! One instance alone on `fallback` may add `SESSION_FALLBACK__RECOVERY_GRACE_MS=0`: the
//! grace after an outage (a cookie Redis holds no trace of is a 503 for 10 s) is for several
//! instances, one of which may still be replaying the session.
//! The cookie is the secure default (`__Host-id`, `Secure`); browsers accept that from
//! `http://localhost` and `http://127.0.0.1`. Set `APP_INSECURE_COOKIE=1` to test from
//! another plain-http host.

#![allow(clippy::print_stdout, reason = "the example prints where it listens")]

use std::error::Error;

use axum::extract::Form;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use session_axum::{CookieConfig, Session, SessionError, SessionLayer};
use session_store::{build, Settings};

/// What the app keeps per browser.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct Visit {
    pub(crate) user: Option<String>,
    pub(crate) count: u64,
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// The app's routes; `layer` gives them their sessions. (`pub(crate)`, like `Visit`: the
/// browser test, `tests/browser.rs`, serves this app.)
pub(crate) fn app(layer: SessionLayer<Visit>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/count", post(count))
        .route("/logout", post(logout))
        .layer(layer)
}

#[allow(dead_code, reason = "tests/browser.rs serves `app` itself")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    // The whole adoption: a store from configuration, a typed namespace, the layer.
    let store = build(&Settings::load(None)?).await?;
    let mut cookie = CookieConfig::new();
    if std::env::var_os("APP_INSECURE_COOKIE").is_some() {
        cookie = cookie.insecure_for_local_development();
    }
    let layer = SessionLayer::new(store.sessions::<Visit>("web")?).with_cookie(cookie);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(layer)).await?;
    Ok(())
}

async fn page(session: Session<Visit>) -> Result<Html<String>, SessionError> {
    let visit = session.get().await?.unwrap_or_default();
    let who = match &visit.user {
        None => r#"<p id="who">not logged in</p>
<form method="post" action="/login"><input id="user" name="user" value="ada">
<button id="login">log in</button></form>"#
            .to_owned(),
        Some(user) => format!(
            r#"<p id="who">logged in as {}</p>
<form method="post" action="/logout"><button id="logout">log out</button></form>"#,
            escape(user)
        ),
    };
    Ok(Html(format!(
        r#"<!doctype html><title>sessions</title>{who}
<p>count: <span id="count">{}</span></p>
<form method="post" action="/count"><button id="more">count</button></form>"#,
        visit.count
    )))
}

async fn login(session: Session<Visit>, Form(form): Form<Login>) -> Result<Redirect, SessionError> {
    // A new id on login: an id seen or planted before is dead.
    session.rotate().await?;
    let mut visit = session.get().await?.unwrap_or_default();
    visit.user = Some(form.user);
    session.insert(visit).await?;
    Ok(Redirect::to("/"))
}

async fn count(session: Session<Visit>) -> Result<Redirect, SessionError> {
    let mut visit = session.get().await?.unwrap_or_default();
    visit.count += 1;
    session.insert(visit).await?;
    Ok(Redirect::to("/"))
}

async fn logout(session: Session<Visit>) -> Result<Redirect, SessionError> {
    session.delete().await?;
    Ok(Redirect::to("/"))
}

/// HTML-escapes a user name.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
