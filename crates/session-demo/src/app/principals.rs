//! Log out everywhere: binding a session to a principal, the principal's sessions (a "your
//! devices" page, without their ids), and ending them all.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use session_core::{Principal, SessionId, Sessions};

use super::{body_bytes, etag, no_such_session, parse_id, parse_kind, ApiError, AppState};
use crate::model::Kind;

/// The body of a bind.
#[derive(Deserialize)]
struct BindBody {
    principal: String,
}

fn parse_principal(text: &str) -> Result<Principal, ApiError> {
    Ok(Principal::new(text)?)
}

/// `PUT /api/sessions/{kind}/{id}/principal`, body `{"principal": "..."}`: binds the session
/// (a login). 204 with the new ETag; 404; 400 for a bad principal.
pub(super) async fn bind(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let id = parse_id(&id)?;
    let bytes = body_bytes(body, state.max_body)?;
    let body: BindBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("expected {{\"principal\": \"...\"}}: {e}"),
        )
    })?;
    let principal = parse_principal(&body.principal)?;
    match kind {
        Kind::Task => bind_typed(&state.tasks, &id, &principal).await,
        Kind::Orchestrator => bind_typed(&state.orchestrators, &id, &principal).await,
    }
}

async fn bind_typed<T>(
    sessions: &Sessions<T>,
    id: &SessionId,
    principal: &Principal,
) -> Result<Response, ApiError>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    let Some(mut session) = sessions.load(id).await? else {
        return Err(no_such_session());
    };
    sessions.bind(&mut session, principal).await?;
    Ok((StatusCode::NO_CONTENT, etag(session.meta.version)).into_response())
}

/// `GET /api/principals/{principal}/sessions/{kind}`: the principal's live sessions of that
/// kind, each as a short hash of its id (never the id: it is a credential) and its times.
pub(super) async fn list(
    State(state): State<AppState>,
    Path((principal, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let principal = parse_principal(&principal)?;
    let sessions = match kind {
        Kind::Task => listed(&state.tasks, &principal).await?,
        Kind::Orchestrator => listed(&state.orchestrators, &principal).await?,
    };
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

async fn listed<T>(sessions: &Sessions<T>, principal: &Principal) -> Result<Vec<serde_json::Value>, ApiError>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    Ok(sessions
        .list(principal)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id_hash": s.id.short_hash(),
                "created_at": s.meta.created_at,
                "updated_at": s.meta.updated_at,
                "expires_at": s.meta.expires_at,
            })
        })
        .collect())
}

/// `DELETE /api/principals/{principal}/sessions/{kind}`: ends every session of the
/// principal of that kind, on every instance. 200 `{"ended": n, "pending": false}`; 202 with
/// `"pending": true` when the store kept the revocation to apply it once Redis answers (a
/// fallback during an outage: the sessions this instance held ended already).
pub(super) async fn revoke(
    State(state): State<AppState>,
    Path((principal, kind)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let principal = parse_principal(&principal)?;
    let revoked = match kind {
        Kind::Task => state.tasks.revoke_all(&principal).await?,
        Kind::Orchestrator => state.orchestrators.revoke_all(&principal).await?,
    };
    let status = if revoked.pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"ended": revoked.ended, "pending": revoked.pending})),
    )
        .into_response())
}
