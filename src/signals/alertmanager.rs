//! The Alertmanager sink: decisions as alerts, so they reach people (and anything wired to
//! Alertmanager) through the routing, grouping and silencing ops already have.
//!
//! Each signal is a POST to `<url>/api/v2/alerts` of a JSON array with one alert:
//!
//! - labels: `alertname="ImmuneDeployRegression"`, `service`, `deploy`, `decision`, `rule`,
//!   `severity` (`critical` for rollback, `warning` for block and warn, `info` otherwise);
//! - annotations, for the person paged: `summary` (one sentence: decision, deploy,
//!   service, version, who deployed, rule), `description` (the rule's description, the
//!   effect in words with both sides' numbers, commits, the decision's RFC 3339 time, the
//!   report page), `runbook_url` (when the rule has one), `report` (the report page) and
//!   `link` (the JSON document);
//! - `startsAt` = the decision's time, `generatorURL` = the deploy's report page.
//!
//! An experiment's `stop` or `close` (only to sinks that list the kind) is an alert
//! `alertname="ImmuneExperiment"` with labels `experiment`, `decision`, `rule`, `severity`
//! (see [`labels`]).
//!
//! A line-blocking alert (a final rollback/block) stays firing until the line is unblocked:
//! its `endsAt` is set `hold_for` ahead (default 7 days), and the unblock sends the same
//! labels with `endsAt` = the unblock time, which resolves it. Other alerts carry no
//! `endsAt`, so Alertmanager ends them after its `resolve_timeout`.
//!
//! [`webhook_payload`] renders the same alert in the shape of Alertmanager's own webhook
//! (version "4"), for a webhook sink with `format: alertmanager_webhook`.

use super::outbox::{DueRow, RowKind};
use super::{ConfigDuration, SignalsError, Sink, SinkKind};
use crate::model::{DecisionKind, DurationMs};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// The alert name every immune alert carries.
pub const ALERT_NAME: &str = "ImmuneDeployRegression";

/// One Alertmanager sink in `signals.alertmanagers`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Unique sink name; part of every signal id and the `sink` metric label.
    pub name: String,
    /// Alertmanager's base URL (e.g. `http://alertmanager:9093`); `/api/v2/alerts` is appended.
    pub url: String,
    /// How long a line-blocking alert stays firing if no unblock resolves it (default `7d`).
    #[serde(default)]
    pub hold_for: Option<ConfigDuration>,
    /// Decision kinds sent (default: rollback, block, warn).
    #[serde(default)]
    pub decisions: Option<Vec<DecisionKind>>,
    /// Services sent (default: all).
    #[serde(default)]
    pub services: Vec<String>,
    /// Send decisions of shadow rules too (default false).
    #[serde(default)]
    pub include_shadow: bool,
    /// Time limit of one attempt (default `10s`).
    #[serde(default)]
    pub timeout: Option<ConfigDuration>,
    /// Give up (expire, log at error, count) after this long undelivered (default `24h`).
    #[serde(default)]
    pub max_age: Option<ConfigDuration>,
    /// First retry delay ceiling, doubled per failure, full jitter (default `1s`).
    #[serde(default)]
    pub backoff_base: Option<ConfigDuration>,
    /// Largest retry delay ceiling (default `5m`).
    #[serde(default)]
    pub backoff_cap: Option<ConfigDuration>,
}

impl fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertmanagerConfig")
            .field("name", &self.name)
            .field("url", &super::redact_url(&self.url))
            .field("decisions", &self.decisions)
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl AlertmanagerConfig {
    pub(crate) fn build(&self) -> Result<Sink, SignalsError> {
        reqwest::Url::parse(&self.url).map_err(|e| {
            SignalsError::Config(format!("alertmanager {:?}: bad url: {e}", self.name))
        })?;
        Ok(self.sink(
            &[
                DecisionKind::Rollback,
                DecisionKind::Block,
                DecisionKind::Warn,
            ],
            SinkKind::Alertmanager(Alertmanager {
                url: self.url.clone(),
                hold_for: self
                    .hold_for
                    .map_or(DurationMs::from_secs(7 * 86_400), |d| d.0),
            }),
        ))
    }
}

/// An Alertmanager sink, ready to deliver.
pub(crate) struct Alertmanager {
    pub url: String,
    pub hold_for: DurationMs,
}

impl fmt::Debug for Alertmanager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alertmanager")
            .field("url", &super::redact_url(&self.url))
            .field("hold_for", &self.hold_for)
            .finish()
    }
}

/// RFC 3339 UTC time (millisecond precision) of fractional unix seconds.
pub fn rfc3339(secs: f64) -> String {
    let total_ms = (secs * 1000.0).round() as i64;
    let days = total_ms.div_euclid(86_400_000);
    let rem = total_ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

fn s<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn severity(decision: &str) -> &'static str {
    match decision {
        "rollback" => "critical",
        "block" | "warn" => "warning",
        _ => "info",
    }
}

/// Whether the body's decision blocks the line (final, rollback/block, not shadow).
fn blocking(body: &Value) -> bool {
    body.get("final").and_then(Value::as_bool) == Some(true)
        && body.get("shadow").and_then(Value::as_bool) != Some(true)
        && matches!(s(body, "decision"), "rollback" | "block")
}

/// The alert name of an experiment's `stop` and `close`.
pub const EXPERIMENT_ALERT_NAME: &str = "ImmuneExperiment";

/// The alert's labels: identical for the firing and the resolving post. An experiment's
/// decision has `alertname="ImmuneExperiment"`, `experiment`, `decision`, `rule` and
/// `severity` (`warning` for stop, `info` for close) instead of service and deploy.
pub fn labels(body: &Value) -> Value {
    if let Some(e) = body.get("experiment").and_then(Value::as_str) {
        return json!({
            "alertname": EXPERIMENT_ALERT_NAME,
            "experiment": e,
            "decision": s(body, "decision"),
            "rule": s(body, "rule"),
            "severity": if s(body, "decision") == "stop" { "warning" } else { "info" },
        });
    }
    json!({
        "alertname": ALERT_NAME,
        "service": s(body, "service"),
        "deploy": s(body, "deploy"),
        "decision": s(body, "decision"),
        "rule": s(body, "rule"),
        "severity": severity(s(body, "decision")),
    })
}

/// The alert's annotations, written for the person paged: `summary` (one sentence:
/// decision, deploy, service, version, who, rule), `description` (the rule's own
/// description, the effect in words with both sides' numbers, when and what was deployed,
/// the report page), `runbook_url` (the rule's, when it has one), `report` and `link`
/// (the report page and the JSON document). Bodies recorded before these fields existed
/// fall back to the old one-liners.
fn annotations(body: &Value) -> Value {
    if body.get("experiment").is_some() {
        return json!({
            "summary": s(body, "message"),
            "description": format!("{}. Report: {}", s(body, "effect"), s(body, "report_url")),
            "report": s(body, "report_url"),
            "link": s(body, "link"),
        });
    }
    let summary = if body.get("effect").is_some() {
        super::webhook::headline(body)
    } else {
        format!(
            "immune: {} deploy {} of {} (rule {})",
            s(body, "decision"),
            s(body, "deploy"),
            s(body, "service"),
            s(body, "rule")
        )
    };
    let mut description = Vec::new();
    if !s(body, "description").is_empty() {
        description.push(format!("{}.", s(body, "description")));
    }
    match s(body, "effect") {
        "" => description.push(s(body, "summary").to_string()),
        e => description.push(format!("{e}.")),
    }
    let mut what = format!("Deploy {} of {}", s(body, "deploy"), s(body, "service"));
    if !s(body, "version").is_empty() {
        what.push_str(&format!(" version {}", s(body, "version")));
    }
    let commits: Vec<&str> = body
        .get("commits")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !commits.is_empty() {
        what.push_str(&format!(" (commits {})", commits.join(", ")));
    }
    if !s(body, "by").is_empty() {
        what.push_str(&format!(" by {}", s(body, "by")));
    }
    if !s(body, "time").is_empty() {
        what.push_str(&format!(
            "; decided {} at {}",
            s(body, "decision"),
            s(body, "time")
        ));
    }
    description.push(format!("{what}."));
    if !s(body, "report_url").is_empty() {
        description.push(format!("Report: {}", s(body, "report_url")));
    }
    let mut a = json!({
        "summary": summary,
        "description": description.join(" "),
        "link": s(body, "link"),
    });
    for (key, field) in [("runbook_url", "runbook_url"), ("report", "report_url")] {
        if !s(body, field).is_empty() {
            a[key] = json!(s(body, field));
        }
    }
    a
}

/// The page a person opens from the alert: the report page, else the JSON document.
fn generator_url(body: &Value) -> &str {
    match s(body, "report_url") {
        "" => s(body, "link"),
        r => r,
    }
}

/// The postable alert for a row (API v2 shape). `hold_for` sets the `endsAt` of a firing
/// line-blocking alert; a resolve sets `endsAt` to the unblock time.
pub fn alert(body: &Value, kind: RowKind, hold_for: DurationMs) -> Value {
    let at = body.get("at").and_then(Value::as_f64).unwrap_or_default();
    let mut a = json!({
        "labels": labels(body),
        "annotations": annotations(body),
        "startsAt": rfc3339(at),
        "generatorURL": generator_url(body),
    });
    let ends = match kind {
        RowKind::Resolve => body
            .pointer("/resolved/at")
            .and_then(Value::as_f64)
            .map(rfc3339),
        RowKind::Decision if blocking(body) => Some(rfc3339(at + hold_for.as_secs_f64())),
        RowKind::Decision => None,
    };
    if let Some(e) = ends {
        a["endsAt"] = json!(e);
    }
    a
}

/// Alertmanager's webhook payload (version "4") carrying one immune alert; `receiver` is
/// the sink's name, `external_url` immune's public URL.
pub fn webhook_payload(body: &Value, receiver: &str, external_url: &str, _now: i64) -> Value {
    let resolved = body.get("resolved").is_some();
    let status = if resolved { "resolved" } else { "firing" };
    let labels = labels(body);
    let at = body.get("at").and_then(Value::as_f64).unwrap_or_default();
    let ends = body
        .pointer("/resolved/at")
        .and_then(Value::as_f64)
        .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339);
    let fingerprint = {
        let key = labels.to_string();
        hex::encode(&Sha256::digest(key.as_bytes())[..8])
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{ALERT_NAME}\", service=\"{}\"}}", s(body, "service")),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": ALERT_NAME, "service": s(body, "service")},
        "commonLabels": labels,
        "commonAnnotations": annotations(body),
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations(body),
            "startsAt": rfc3339(at),
            "endsAt": ends,
            "generatorURL": generator_url(body),
            "fingerprint": fingerprint,
        }],
    })
}

/// Delivers one row to Alertmanager.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    am: &Alertmanager,
    row: &DueRow,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let url = format!("{}/api/v2/alerts", am.url.trim_end_matches('/'));
    let payload = json!([alert(&row.body, row.kind, am.hold_for)]);
    let resp = client
        .post(url)
        .timeout(timeout)
        .header("X-Immune-Signal-Id", &row.id)
        .json(&payload)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", super::webhook::without_url(&e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = resp.text().await.unwrap_or_default();
        Err(format!(
            "answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000.5), "2023-11-14T22:13:20.500Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000Z");
    }

    fn body(decision: &str, fin: bool) -> Value {
        json!({"signal_id": "x", "decision": decision, "deploy": "d1", "service": "web",
               "rule": "r", "final": fin, "shadow": false, "at": 1_700_000_000.0,
               "summary": "r: worse", "link": "http://i/api/v1/deploys/d1"})
    }

    #[test]
    fn blocking_alerts_hold_and_resolve_with_the_same_labels() {
        let b = body("rollback", true);
        let fire = alert(&b, RowKind::Decision, DurationMs::from_secs(3600));
        assert_eq!(fire["labels"]["severity"], "critical");
        assert_eq!(fire["endsAt"], "2023-11-14T23:13:20.000Z");
        let mut r = b.clone();
        r["resolved"] = json!({"at": 1_700_000_100.0});
        let res = alert(&r, RowKind::Resolve, DurationMs::from_secs(3600));
        assert_eq!(res["labels"], fire["labels"]);
        assert_eq!(res["endsAt"], "2023-11-14T22:15:00.000Z");
        let warn = alert(&body("warn", false), RowKind::Decision, DurationMs(1));
        assert!(warn.get("endsAt").is_none());
        assert_eq!(warn["labels"]["severity"], "warning");
    }

    #[test]
    fn webhook_payload_has_alertmanagers_shape() {
        let p = webhook_payload(&body("block", true), "bot", "http://i", 0);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["alerts"][0]["labels"]["alertname"], ALERT_NAME);
        assert_eq!(p["commonLabels"]["deploy"], "d1");
    }
}
