//! Experiment endpoints: the loaded experiments and deterministic assignment, so a service
//! that cannot run the hash itself can ask immune which branch a user is in.

use super::ApiState;
use crate::experiment::assign::branch_for;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// `GET /api/v1/experiments`: names, rollout and branch weights.
pub async fn list(State(state): State<ApiState>) -> Response {
    let list: Vec<_> = state
        .experiments
        .iter()
        .map(|e| {
            let branches: Vec<_> = e
                .weights()
                .into_iter()
                .map(|(name, weight)| json!({"name": name, "weight": weight}))
                .collect();
            json!({
                "name": e.name,
                "initial_rollout": e.initial_rollout,
                "control": e.control_name(),
                "branches": branches,
            })
        })
        .collect();
    Json(json!({ "experiments": list })).into_response()
}

/// The query of the assign endpoint.
#[derive(Deserialize)]
pub struct AssignQuery {
    /// The user id.
    uid: Option<String>,
}

/// `GET /api/v1/experiments/{name}/assign?uid=U`: `{"experiment", "uid", "branch"}`,
/// `branch` being `"none"` outside `initial_rollout`.
pub async fn assign(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<AssignQuery>,
) -> Response {
    let Some(exp) = state.experiments.iter().find(|e| e.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no experiment named {name:?}")})),
        )
            .into_response();
    };
    let Some(uid) = q.uid.filter(|u| !u.is_empty() && u.len() <= 1024) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "uid: required, 1 to 1024 bytes"})),
        )
            .into_response();
    };
    let branch = branch_for(exp, &uid).unwrap_or("none");
    Json(json!({"experiment": exp.name, "uid": uid, "branch": branch})).into_response()
}
