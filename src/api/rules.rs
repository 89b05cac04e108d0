//! Rules against what is really there: `GET /api/v1/rules` shows each rule with the series
//! it matches now, how old their newest sample is, the deploys it is judging and its last
//! verdict, so "this rule judges nothing" is seen before a deploy needs it. The agent also
//! answers the two Prometheus-API reads `immune check --against` makes
//! (`/api/v1/series?match[]=` and `/api/v1/label/__name__/values`), so the same check runs
//! against a live agent as against a TSDB.
//!
//! Everything is read on the engine thread through one query ([`Catalog`], in
//! `engine::catalog`); the engine has no clock, so the API passes in its own "now" for the ages.

use super::ApiState;
use super::error::ApiError;
use crate::engine::catalog::Catalog;
use crate::engine::handle::Query;
use crate::rules::selector::Selector;
use axum::Json;
use axum::extract::{Query as Params, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

async fn ask(state: &ApiState, q: Catalog) -> Result<Value, ApiError> {
    state
        .engine
        .query(Query::Catalog(q))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `GET /api/v1/rules`.
pub async fn rules(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let data = ask(&state, Catalog::Rules { now }).await?;
    Ok(Json(json!({"status": "success", "data": data})))
}

/// `GET /api/v1/series?match[]=<selector>` (repeatable; `start` and `end` are accepted
/// and ignored: the agent holds only its recent windows).
pub async fn series(
    State(state): State<ApiState>,
    Params(params): Params<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let mut selectors = Vec::new();
    for (k, v) in &params {
        if k != "match[]" {
            continue;
        }
        let s = Selector::parse(v).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("match[] {v:?}: {e}")).field("match[]")
        })?;
        selectors.push(s);
    }
    if selectors.is_empty() {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "at least one match[] is required")
                .field("match[]"),
        );
    }
    let data = ask(&state, Catalog::Series(selectors)).await?;
    Ok(Json(json!({"status": "success", "data": data})))
}

/// `GET /api/v1/label/__name__/values`.
pub async fn names(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let data = ask(&state, Catalog::Names).await?;
    Ok(Json(json!({"status": "success", "data": data})))
}
