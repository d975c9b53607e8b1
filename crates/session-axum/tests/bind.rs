//! `Session::bind` at login and `Sessions::revoke_all` ending every browser of a user.
#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use session_axum::{Session, SessionError, SessionLayer};
use session_core::{Namespace, Principal, SessionStore, Sessions};
use session_memory::MemoryStore;
use tower::ServiceExt;

/// A login: the value is inserted in this request and bound before the layer writes it.
async fn login(session: Session<String>) -> Result<&'static str, SessionError> {
    session.insert("signed in".to_owned()).await?;
    session.bind(&Principal::new("ada").unwrap()).await?;
    Ok("ok")
}

async fn whoami(session: Session<String>) -> Result<String, SessionError> {
    Ok(match session.principal().await? {
        Some(p) => p.as_str().to_owned(),
        None => "nobody".to_owned(),
    })
}

/// Binding with no session at all.
async fn bind_nothing(session: Session<String>) -> Result<&'static str, SessionError> {
    session.bind(&Principal::new("ada").unwrap()).await?;
    Ok("bound")
}

async fn send(
    router: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        request = request.header(COOKIE, format!("__Host-id={c}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| {
            v.to_str()
                .ok()?
                .split(';')
                .next()?
                .split_once('=')
                .map(|(_, v)| v.to_owned())
        })
        .filter(|v| !v.is_empty());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), cookie)
}

#[tokio::test]
async fn a_login_binds_and_revoke_all_ends_every_browser() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new_default());
    let sessions: Sessions<String> = Sessions::new(store, Namespace::new("web").unwrap());
    let router = Router::new()
        .route("/login", post(login))
        .route("/whoami", get(whoami))
        .route("/bind-nothing", post(bind_nothing))
        .layer(SessionLayer::new(sessions.clone()));

    let mut browsers = Vec::new();
    for _ in 0..2 {
        let (status, body, cookie) = send(&router, "POST", "/login", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        let cookie = cookie.expect("a login sets the cookie");
        assert_eq!(send(&router, "GET", "/whoami", Some(&cookie)).await.1, "ada");
        browsers.push(cookie);
    }
    let ada = Principal::new("ada").unwrap();
    assert_eq!(sessions.list(&ada).await.unwrap().len(), 2);
    let revoked = sessions.revoke_all(&ada).await.unwrap();
    assert_eq!((revoked.ended, revoked.pending), (2, false));
    for cookie in &browsers {
        assert_eq!(send(&router, "GET", "/whoami", Some(cookie)).await.1, "nobody");
    }
    let (status, body, _) = send(&router, "POST", "/bind-nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
