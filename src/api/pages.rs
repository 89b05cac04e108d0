//! The pages people open: `/` (deploys in flight and recent, every line, an unblock form)
//! and `/deploys/{id}` (why this deploy was decided, in words first, with charts).
//!
//! The HTML is drawn by [`crate::report`] from the same JSON the API serves, so a page and
//! `GET /api/v1/deploys/{id}` never disagree, and a deploy the engine no longer holds is
//! read back from the stored history like the API does. The unblock form posts to
//! `/lines/{service}/unblock` with the token as a form field (a browser form cannot set an
//! `Authorization` header); it is checked against the same tokens as the API.

use super::ApiState;
use super::deploys;
use super::error::ApiError;
use crate::engine::handle::Query;
use crate::model::{DeployEvent, DeployEventKind};
use crate::report::{self, Mode};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::Value;
use std::sync::Arc;

/// `GET /`.
pub async fn index(State(state): State<ApiState>) -> Result<Html<String>, ApiError> {
    let deploys = state.engine.query(Query::Deploys).await?;
    let lines = state.engine.query(Query::Lines).await?;
    let list: Vec<Value> = match deploys {
        Value::Array(v) => v,
        other => vec![other],
    };
    Ok(Html(report::index_page(&list, &lines, Mode::Served)))
}

/// `GET /deploys/{id}`.
pub async fn deploy(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = state.clock.now().as_secs_f64();
    match deploys::get_one(State(state), Path(id)).await {
        Ok(axum::Json(view)) => Ok(Html(report::deploy_page(&view, Mode::Served, Some(now))).into_response()),
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok((
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unknown deploy</title></head><body><h1>Unknown deploy</h1><p>{}</p><p><a href=\"/\">All deploys</a></p></body></html>",
                report::words::esc(&e.error)
            )),
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

/// The unblock form's fields.
#[derive(serde::Deserialize)]
pub struct UnblockForm {
    /// A bearer token, when the agent has tokens.
    #[serde(default)]
    token: String,
    /// Who unblocks.
    #[serde(default)]
    by: String,
    /// Why.
    #[serde(default)]
    reason: String,
}

/// `POST /lines/{service}/unblock` from the index page's form.
pub async fn unblock(
    State((state, tokens)): State<(ApiState, Arc<Vec<String>>)>,
    Path(service): Path<String>,
    Form(form): Form<UnblockForm>,
) -> Result<Response, ApiError> {
    if !tokens.is_empty()
        && !tokens
            .iter()
            .any(|t| super::same(t.as_bytes(), form.token.trim().as_bytes()))
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is needed to unblock",
        )
        .field("token"));
    }
    for (field, v) in [("by", &form.by), ("reason", &form.reason)] {
        if v.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{field} must not be empty"),
            )
            .field(field));
        }
    }
    let ev = DeployEvent {
        at: state.clock.now().as_secs_f64(),
        deploy: None,
        event: DeployEventKind::Unblock,
        service: Some(service),
        version: None,
        commits: Vec::new(),
        canary: None,
        by: Some(form.by.trim().to_string()),
        reason: Some(form.reason.trim().to_string()),
    };
    deploys::apply(&state, ev).await?;
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}
