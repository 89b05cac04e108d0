//! Experiment endpoints: the loaded experiments and deterministic assignment (so a service
//! that cannot run the hash itself can ask immune which branch a user is in), exposure and
//! outcome events into the [`crate::experiment::registry`], each experiment's judged state,
//! and the experiments' own metrics for `/metrics`.

use super::ApiState;
use super::error::ApiError;
use crate::experiment::assign::branch_for;
use crate::experiment::judge::{State as ExpState, Verdict};
use crate::experiment::lifecycle::Phase;
use crate::experiment::looking::CloseError;
use crate::experiment::registry::{EventError, Events, LOOK_EVERY, MAX_PARTICIPANTS};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
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

/// `POST /api/v1/experiments/{name}/events`: exposures and outcomes,
/// `{"events": [{"id", "uid", "type": "exposure"|"outcome", "metric", "value"}]}`.
/// Idempotent by event id; the whole batch is refused (400 naming the field) when one
/// event is bad; 429 when new participants were refused at the participant limit; 409 for
/// an experiment with `source: metrics`; 503 when the batch could not be stored (nothing
/// counted: send it again). Events before the start or after the closing are counted as
/// `not_started` / `closed` and ignored.
pub async fn events(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let batch: Events =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(e.to_string()))?;
    let now = state.clock.now().as_secs_f64();
    let registry = state.registry.clone();
    let applied = tokio::task::spawn_blocking(move || registry.apply(&name, &batch, now))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| match e {
            EventError::Unknown(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            EventError::WrongSource(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string()).field("source")
            }
            EventError::Store(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            EventError::Field { ref field, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).field(field.clone())
            }
        })?;
    let status = if applied.refused > 0 {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    let mut body = serde_json::to_value(applied).unwrap_or_default();
    if applied.refused > 0 {
        body["error"] = json!(format!(
            "participant limit ({MAX_PARTICIPANTS}) reached: {} event(s) of new participants refused",
            applied.refused
        ));
        body["field"] = json!("limits.experiment_participants");
    }
    Ok((status, Json(body)).into_response())
}

/// The state of one experiment, looked at on a blocking thread (a look may write).
async fn status_of(state: &ApiState, name: String) -> Option<serde_json::Value> {
    let now = state.clock.now().as_secs_f64();
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || registry.status(&name, now, LOOK_EVERY))
        .await
        .ok()
        .flatten()
}

/// `GET /api/v1/experiments/{name}`: branches, participants, every comparison's state,
/// the sample ratio check, what closing now would say (after a look, at most one per
/// [`LOOK_EVERY`] seconds) and the `lifecycle` (phase scheduled / running / stopped /
/// closed, start, end, stop and close); a closed experiment answers its state at closing.
pub async fn get_one(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    match status_of(&state, name.clone()).await {
        Some(s) => Json(s).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no experiment named {name:?}"),
        )
        .into_response(),
    }
}

/// The body of the close endpoint (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// Who closes it.
    #[serde(default)]
    by: Option<String>,
}

/// `POST /api/v1/experiments/{name}/close` (`{"by": "alice"}`, optional): closes the
/// experiment now with its result, which is kept and sent to the sinks that take `close`.
/// 409 with the state at closing when it is closed already.
pub async fn close(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CloseBody = if body.iter().all(u8::is_ascii_whitespace) {
        CloseBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(e.to_string()))?
    };
    if req.by.as_ref().is_some_and(|b| b.len() > 256) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "by: at most 256 bytes").field("by"));
    }
    let now = state.clock.now().as_secs_f64();
    let registry = state.registry.clone();
    let closed = tokio::task::spawn_blocking(move || registry.close(&name, now, req.by))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match closed {
        Ok(s) => Ok(Json(s).into_response()),
        Err(CloseError::Unknown(n)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no experiment named {n:?}"),
        )),
        Err(CloseError::Closed(n, s)) => {
            let mut v = *s;
            v["error"] = json!(format!("experiment {n:?} is closed already"));
            Ok((StatusCode::CONFLICT, Json(v)).into_response())
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The experiments' own metrics, in the Prometheus text format, as of the last look (the
/// agent's experiment task looks every [`LOOK_EVERY`] seconds): participants per branch, the phase, the SRM p-value, the state, and
/// each comparison's anytime-valid p-value and verdict (state sets, so a change of state
/// does not start a new series).
pub fn render_metrics(state: &ApiState) -> String {
    use std::fmt::Write;
    let now = state.clock.now().as_secs_f64();
    let reports = state.registry.reports();
    if reports.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let head = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    head(
        &mut out,
        "immune_experiment_participants",
        "Participants per experiment branch.",
    );
    for (exp, branches, _) in &reports {
        for b in branches {
            let _ = writeln!(
                out,
                "immune_experiment_participants{{experiment=\"{}\",branch=\"{}\"}} {}",
                escape(exp),
                escape(&b.name),
                b.participants
            );
        }
    }
    head(
        &mut out,
        "immune_experiment_srm_p_value",
        "Anytime-valid p-value of the sample ratio check (flagged at 0.001).",
    );
    for (exp, _, r) in &reports {
        if let Some(r) = r {
            let _ = writeln!(
                out,
                "immune_experiment_srm_p_value{{experiment=\"{}\"}} {}",
                escape(exp),
                r.srm.p_value
            );
        }
    }
    head(
        &mut out,
        "immune_experiment_state",
        "1 for the experiment's state: running, stop (guardrail harm) or mismatch (SRM).",
    );
    for (exp, _, r) in &reports {
        if let Some(r) = r {
            for (s, name) in [
                (ExpState::Running, "running"),
                (ExpState::Stop, "stop"),
                (ExpState::Mismatch, "mismatch"),
            ] {
                let _ = writeln!(
                    out,
                    "immune_experiment_state{{experiment=\"{}\",state=\"{name}\"}} {}",
                    escape(exp),
                    u8::from(r.state == s)
                );
            }
        }
    }
    head(
        &mut out,
        "immune_experiment_phase",
        "1 for the experiment's phase: scheduled, running, stopped (stop decided) or closed.",
    );
    for (exp, phase) in state.registry.phases(now) {
        for (p, name) in [
            (Phase::Scheduled, "scheduled"),
            (Phase::Running, "running"),
            (Phase::Stopped, "stopped"),
            (Phase::Closed, "closed"),
        ] {
            let _ = writeln!(
                out,
                "immune_experiment_phase{{experiment=\"{}\",phase=\"{name}\"}} {}",
                escape(&exp),
                u8::from(phase == p)
            );
        }
    }
    head(
        &mut out,
        "immune_experiment_p_value",
        "Anytime-valid p-value of a branch against control on a metric.",
    );
    for (exp, _, r) in &reports {
        for c in r.iter().flat_map(|r| &r.comparisons) {
            let _ = writeln!(
                out,
                "immune_experiment_p_value{{experiment=\"{}\",branch=\"{}\",metric=\"{}\"}} {}",
                escape(exp),
                escape(&c.branch),
                escape(&c.metric),
                c.p_value
            );
        }
    }
    head(
        &mut out,
        "immune_experiment_verdict",
        "1 for the current verdict of a branch against control on a metric.",
    );
    for (exp, _, r) in &reports {
        for c in r.iter().flat_map(|r| &r.comparisons) {
            for (v, name) in [
                (Verdict::Pending, "pending"),
                (Verdict::Desired, "desired"),
                (Verdict::Undesired, "undesired"),
                (Verdict::Harm, "harm"),
                (Verdict::Withheld, "withheld"),
            ] {
                let _ = writeln!(
                    out,
                    "immune_experiment_verdict{{experiment=\"{}\",branch=\"{}\",metric=\"{}\",verdict=\"{name}\"}} {}",
                    escape(exp),
                    escape(&c.branch),
                    escape(&c.metric),
                    u8::from(c.verdict == v)
                );
            }
        }
    }
    out
}

/// `GET /experiments/{name}`: the experiment page for people, from the same state as
/// [`get_one`].
pub async fn page(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    match status_of(&state, name.clone()).await {
        Some(v) => Html(crate::experiment::show::page(&v)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unknown experiment</title></head><body><h1>Unknown experiment</h1><p>{}</p></body></html>",
                crate::report::words::esc(&name)
            )),
        )
            .into_response(),
    }
}
