//! Pull gates: deploy tools that ask rather than listen read immune's verdict here.
//!
//! - `GET /api/v1/verdict/{service}[?deploy=<id>]`: the verdict on a deploy (the newest of
//!   the service when no id is given), for an Argo Rollouts `web` metric
//!   (`jsonPath: "{$.healthy}"`, `successCondition: result == true`). Once rolled back or
//!   blocked, `message` says why in words (both sides' numbers, the evidence against its
//!   threshold), for the event the deploy tool writes.
//! - `POST /api/v1/flagger/{check}`: a Flagger webhook (`pre-rollout`, `rollout`, ...):
//!   200 while the canary is healthy, 403 once immune decided rollback/block for it or its
//!   line is blocked. The service is `metadata.service`, else the canary's `name`; the
//!   deploy is `metadata.deploy`, else the newest of the service. With a driver and
//!   `metadata.canary`, Flagger's webhooks also start and end the deploy, and
//!   `confirm-promotion` / `rollback` read the verdict their way ([`super::drive`]).
//! - `POST /api/v1/argo/analysis`: Argo Rollouts' web metric that starts-or-reads a deploy
//!   ([`super::drive`]; only with a driver).
//! - `GET /api/v1/gate/{service}`: 200 `{"open": true}` or 423 `{"open": false,
//!   "blocked_by": {...}}`, for `immune gate` and scripts.
//!
//! A deploy named explicitly but unknown to immune is a 404 (fail closed: immune cannot
//! vouch for what it never saw). A service immune knows nothing of (no deploy in the
//! engine or in the outbox's history, no line state: a typo in a service name) is
//! **not healthy / blocked** with the reason `unknown service` (verdict `healthy: false`,
//! Flagger 403, gate 423 `{"open": false, "reason": "unknown service"}`), unless
//! `api.unknown_service: open` says otherwise; a known service with no deploy in flight is
//! `pending`, healthy while its line is open. An engine that does not answer is a 503.
//!
//! Fail closed on the outbox: while a decision of the service could not be written to the
//! outbox (a full disk) and waits in memory, every gate answers blocked for that service,
//! whatever the decision: immune cannot promise to remember it across a restart.

use super::Signals;
use crate::engine::handle::{EngineHandle, Query as EngineQuery};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// How the gates answer beyond the engine's state.
#[derive(Clone, Default)]
pub struct GateOptions {
    /// The outbox: the gates fail closed on decisions it could not write yet, and a
    /// service with stored history is known.
    pub signals: Option<Signals>,
    /// Answer a service immune does not know as open / healthy (default: blocked).
    pub unknown_service_open: bool,
    /// The deploy API: with it Flagger's webhooks and Argo's analysis start and end
    /// deploys ([`super::drive`]); without it they only read.
    pub driver: Option<super::drive::Driver>,
}

/// What the gate handlers read.
#[derive(Clone)]
pub(crate) struct GateState {
    pub(crate) engine: EngineHandle,
    pub(crate) opts: GateOptions,
}

/// The pull gates (Argo Rollouts verdict, Flagger webhook, gate endpoint), mounted by the API.
pub fn gates_router(engine: EngineHandle) -> Router {
    gates_router_with(engine, GateOptions::default())
}

/// [`gates_router`] with the outbox and the unknown-service policy.
pub fn gates_router_with(engine: EngineHandle, opts: GateOptions) -> Router {
    Router::new()
        .route("/api/v1/verdict/{service}", get(verdict_handler))
        .route("/api/v1/flagger/{check}", post(super::drive::flagger_route))
        .route("/api/v1/argo/analysis", post(super::drive::argo))
        .route("/api/v1/gate/{service}", get(gate_handler))
        .with_state(GateState { engine, opts })
}

/// The reason the gates give for a service immune does not know.
pub const UNKNOWN_SERVICE: &str = "unknown service";

/// Whether immune knows `service`: a deploy of it (engine or stored history) or a line state.
async fn known(st: &GateState, service: &str, line: &Value) -> Result<bool, Response> {
    if line.get("blocked").is_some_and(|b| !b.is_null())
        || line
            .get("history")
            .and_then(Value::as_array)
            .is_some_and(|h| !h.is_empty())
    {
        return Ok(true);
    }
    let all = ask(&st.engine, EngineQuery::Deploys).await?;
    if all
        .as_array()
        .is_some_and(|a| a.iter().any(|v| str_of(v, "service") == service))
    {
        return Ok(true);
    }
    let Some(signals) = st.opts.signals.clone() else {
        return Ok(false);
    };
    let s = service.to_string();
    match tokio::task::spawn_blocking(move || signals.knows_service(&s)).await {
        Ok(Ok(k)) => Ok(k),
        Ok(Err(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The verdict for a service immune does not know, failing closed.
fn unknown_verdict(mut v: Value, service: &str) -> Value {
    v["healthy"] = json!(false);
    v["decision"] = json!("unknown");
    v["line"] = json!("unknown");
    v["reason"] = json!(UNKNOWN_SERVICE);
    v["summary"] = json!(format!(
        "{UNKNOWN_SERVICE}: immune has seen no deploy of {service:?} (a typo?); not vouching for it"
    ));
    v
}

/// Why the gates fail closed on `service`, if they must: a decision of it not yet written.
pub(crate) fn unrecorded_block(signals: Option<&Signals>, service: &str) -> Option<Value> {
    let d = signals?.unrecorded_for(service)?;
    Some(json!({
        "deploy": d.deploy,
        "rule": d.rule,
        "decision": d.decision.as_str(),
        "at": d.at,
        "summary": format!(
            "decision {} of deploy {} could not be written to the outbox yet (disk full?); failing closed until it is",
            d.decision.as_str(),
            d.deploy
        ),
        "unrecorded": true,
    }))
}

/// Overrides a verdict with the fail-closed block.
pub(crate) fn fail_closed(mut v: Value, block: Value) -> Value {
    v["summary"] = block["summary"].clone();
    v["healthy"] = json!(false);
    v["line"] = json!("blocked");
    v["blocked_by"] = block;
    v
}

/// The decision of a deploy view (`Query::Deploy`) as the gates report it, and the
/// decision that made it (for rollback/block). Warnings and shadow decisions do not count.
pub fn decision_of(view: &Value) -> (&'static str, Option<&Value>) {
    let ds: Vec<&Value> = view
        .get("decisions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|d| d.get("shadow").and_then(Value::as_bool) != Some(true))
                .collect()
        })
        .unwrap_or_default();
    fn kind(d: &Value) -> &str {
        d.get("decision")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    if let Some(d) = ds.iter().find(|d| matches!(kind(d), "rollback" | "block")) {
        return (
            if kind(d) == "rollback" {
                "rollback"
            } else {
                "block"
            },
            Some(d),
        );
    }
    if ds
        .iter()
        .any(|d| kind(d) == "pass" && d.get("final").and_then(Value::as_bool) == Some(true))
    {
        return ("pass", None);
    }
    if ds.iter().any(|d| kind(d) == "promote") {
        return ("promote", None);
    }
    ("pending", None)
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The verdict JSON for `service` from its line (`Query::Line`) and a deploy view (or
/// none): `{service, line, deploy, decision, healthy, blocked_by, summary}`.
pub fn verdict(service: &str, line: &Value, view: Option<&Value>) -> Value {
    let blocked_by = line.get("blocked").cloned().unwrap_or(Value::Null);
    let open = blocked_by.is_null();
    let (decision, by) = view.map_or(("pending", None), decision_of);
    let healthy = open && !matches!(decision, "rollback" | "block");
    let deploy = view.map(|v| str_of(v, "deploy").to_string());
    let summary = match (by, view) {
        (Some(d), Some(v)) => format!(
            "{decision}: deploy {} of {service}, rule {}: {}",
            str_of(v, "deploy"),
            str_of(d, "rule"),
            d.pointer("/evidence/summary")
                .and_then(Value::as_str)
                .unwrap_or("no summary")
        ),
        _ if !open => format!(
            "line of {service} is blocked by deploy {} (rule {}, {}): {}",
            str_of(&blocked_by, "deploy"),
            str_of(&blocked_by, "rule"),
            str_of(&blocked_by, "decision"),
            str_of(&blocked_by, "summary")
        ),
        (_, Some(v)) => format!(
            "deploy {} of {service}: {decision} (phase {})",
            str_of(v, "deploy"),
            str_of(v, "phase")
        ),
        (_, None) => format!("no deploy of {service} known to immune; line open"),
    };
    // The stopping decision in words, for the event a deploy tool logs ("Halt
    // advancement: ...").
    let message = by.map(|d| {
        let ev = d.get("evidence").unwrap_or(&Value::Null);
        let rule = str_of(d, "rule");
        let kind = ev
            .get("baseline_kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let why = if ev.get("treatment").is_some() {
            crate::report::words::account(ev, kind)
        } else {
            str_of(ev, "summary").to_string()
        };
        format!("immune decided {decision} (rule {rule}): {why}")
    });
    json!({
        "service": service,
        "line": if open { "open" } else { "blocked" },
        "deploy": deploy,
        "decision": decision,
        "healthy": healthy,
        "blocked_by": blocked_by,
        "summary": summary,
        "message": message,
    })
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

async fn ask(engine: &EngineHandle, q: EngineQuery) -> Result<Value, Response> {
    engine.query(q).await.map_err(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("engine unavailable: {e}"),
        )
    })
}

/// Reads the line and the deploy (named, or the service's newest) and builds the verdict;
/// a service immune does not know fails closed unless configured open.
pub(crate) async fn compute(
    st: &GateState,
    service: &str,
    deploy: Option<&str>,
) -> Result<Value, Response> {
    let engine = &st.engine;
    let line = ask(engine, EngineQuery::Line(service.to_string())).await?;
    let view = match deploy {
        Some(id) => {
            let v = ask(engine, EngineQuery::Deploy(id.to_string())).await?;
            if v.is_null() || str_of(&v, "service") != service {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("immune knows no deploy {id:?} of service {service:?}"),
                ));
            }
            Some(v)
        }
        None => {
            let all = ask(engine, EngineQuery::Deploys).await?;
            all.as_array()
                .and_then(|a| a.iter().find(|v| str_of(v, "service") == service))
                .cloned()
        }
    };
    let v = verdict(service, &line, view.as_ref());
    if view.is_none() && !st.opts.unknown_service_open && !known(st, service, &line).await? {
        return Ok(unknown_verdict(v, service));
    }
    Ok(v)
}

#[derive(Deserialize)]
struct VerdictParams {
    deploy: Option<String>,
}

async fn verdict_handler(
    State(st): State<GateState>,
    Path(service): Path<String>,
    Query(p): Query<VerdictParams>,
) -> Response {
    match compute(&st, &service, p.deploy.as_deref()).await {
        Ok(v) => match unrecorded_block(st.opts.signals.as_ref(), &service) {
            Some(b) => Json(fail_closed(v, b)).into_response(),
            None => Json(v).into_response(),
        },
        Err(r) => r,
    }
}

/// Flagger's webhook request body.
#[derive(Debug, Deserialize)]
pub struct FlaggerRequest {
    /// The Canary's name.
    pub name: String,
    /// The Canary's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The canary's phase (`Progressing`, ...).
    #[serde(default)]
    pub phase: Option<String>,
    /// The canary revision's checksum.
    #[serde(default)]
    pub checksum: Option<String>,
    /// The webhook's `metadata` from the Canary spec (`service`, `deploy`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The answer to a Flagger webhook of type `check` about `service` (and `deploy`, else the
/// service's newest): the verdict with the request echoed, 200 or 403 as the type reads it
/// (see [`super::drive`]). `started` says whether this call started the deploy.
pub(crate) async fn flagger_answer(
    st: &GateState,
    check: &str,
    req: &FlaggerRequest,
    service: &str,
    deploy: Option<&str>,
    started: Option<bool>,
) -> Response {
    match compute(st, service, deploy).await {
        Ok(v) => {
            let mut v = match unrecorded_block(st.opts.signals.as_ref(), service) {
                Some(b) => fail_closed(v, b),
                None => v,
            };
            v["check"] = json!(check);
            v["canary"] = json!({"name": req.name, "namespace": req.namespace, "phase": req.phase});
            if let Some(s) = started {
                v["started"] = json!(s);
            }
            let healthy = v["healthy"] == json!(true);
            let ok = match check {
                // Promotion waits until immune promoted (or passed) the canary.
                "confirm-promotion" => {
                    healthy && matches!(v["decision"].as_str(), Some("promote" | "pass"))
                }
                // Flagger rolls back when this hook answers 200.
                "rollback" => !healthy,
                // Flagger only logs a failed post-rollout hook; the deploy has ended.
                "post-rollout" => true,
                _ => healthy,
            };
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            (status, Json(v)).into_response()
        }
        Err(r) => r,
    }
}

async fn gate_handler(State(st): State<GateState>, Path(service): Path<String>) -> Response {
    let line = match ask(&st.engine, EngineQuery::Line(service.clone())).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let blocked = unrecorded_block(st.opts.signals.as_ref(), &service)
        .unwrap_or_else(|| line.get("blocked").cloned().unwrap_or(Value::Null));
    if blocked.is_null() && !st.opts.unknown_service_open {
        match known(&st, &service, &line).await {
            Ok(true) => {}
            Ok(false) => {
                return (
                    StatusCode::LOCKED,
                    Json(json!({
                        "service": service,
                        "open": false,
                        "reason": UNKNOWN_SERVICE,
                        "blocked_by": {
                            "summary": format!("{UNKNOWN_SERVICE}: immune has seen no deploy of {service:?} (a typo?)"),
                        },
                    })),
                )
                    .into_response();
            }
            Err(r) => return r,
        }
    }
    if blocked.is_null() {
        Json(json!({"service": service, "open": true})).into_response()
    } else {
        (
            StatusCode::LOCKED,
            Json(json!({"service": service, "open": false, "blocked_by": blocked})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(decisions: Value) -> Value {
        json!({"deploy": "d1", "service": "web", "phase": "canary", "decisions": decisions})
    }

    #[test]
    fn verdicts_follow_the_decisions_and_the_line() {
        let open = json!({"blocked": null, "history": []});
        let v = verdict("web", &open, Some(&view(json!([]))));
        assert_eq!(
            (v["decision"].as_str(), v["healthy"].as_bool()),
            (Some("pending"), Some(true))
        );
        let v = verdict(
            "web",
            &open,
            Some(&view(
                json!([{"decision": "warn", "final": false}, {"decision": "promote", "final": false}]),
            )),
        );
        assert_eq!(v["decision"], "promote");
        assert_eq!(v["healthy"], true);
        let rb = json!([{"decision": "rollback", "final": true, "rule": "r",
                         "evidence": {"summary": "r: worse"}}]);
        let blocked = json!({"blocked": {"deploy": "d1", "rule": "r", "decision": "rollback",
                                         "at": 1.0, "summary": "r: worse"}});
        let v = verdict("web", &blocked, Some(&view(rb)));
        assert_eq!(v["decision"], "rollback");
        assert_eq!(v["healthy"], false);
        assert_eq!(v["line"], "blocked");
        assert!(v["summary"].as_str().unwrap().contains("r: worse"));
        assert_eq!(v["message"], "immune decided rollback (rule r): r: worse");
        // A shadow rollback is reported elsewhere but does not fail the gate.
        let sh = json!([{"decision": "rollback", "final": false, "shadow": true}]);
        assert_eq!(verdict("web", &open, Some(&view(sh)))["healthy"], true);
        // No deploy known: pending, healthy only while the line is open.
        assert_eq!(verdict("web", &open, None)["healthy"], true);
        assert_eq!(verdict("web", &blocked, None)["healthy"], false);
    }
}
