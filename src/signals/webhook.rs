//! The webhook sink: each decision as a signed JSON POST. The body and headers are a
//! public promise (receivers are written against them); extend with new fields, never
//! rename.
//!
//! Body (`format: immune`, the default), one JSON object per signal:
//!
//! ```json
//! {"signal_id": "5c1f…(32 hex)", "decision": "rollback", "deploy": "d42", "service": "web",
//!  "version": "v1.2.3", "commits": ["abc123"], "phase": "canary", "rule": "php_error_ratio",
//!  "final": true, "shadow": false, "at": 1700000000.0, "summary": "php_error_ratio: …",
//!  "evidence": {…}, "link": "https://immune.example/api/v1/deploys/d42",
//!  "by": "alice", "description": "PHP errors per request, canary vs the fleet",
//!  "runbook_url": "https://wiki.example/runbooks/php-errors",
//!  "effect": "0.51% on the deploy's hosts vs 0.20% on the other hosts (+151%); evidence 1,113 against a threshold of 700",
//!  "time": "2023-11-14T22:13:20Z", "report_url": "https://immune.example/deploys/d42",
//!  "message": "Rolled back: deploy d42 of web (v1.2.3, by alice), rule php_error_ratio in canary: 0.51% …"}
//! ```
//!
//! The fields up to `link` are for machines; the rest (added later, never renamed) are
//! for people: who deployed, the rule's `description` and `runbook_url`, the effect in
//! words, the decision's time in RFC 3339, the report page, and one sentence saying it
//! all. `version`, `by`, `description`, `runbook_url` are `null` when unknown, `commits`
//! `[]`. A `resolve` signal (only to sinks with
//! `format: alertmanager_webhook`) is the original body plus
//! `"resolved": {"at", "by", "reason", "signal_id"}`.
//!
//! Headers: `X-Immune-Signal-Id` (the same on every retry: deduplicate on it),
//! `X-Immune-Timestamp` (unix seconds of this attempt), and, when a secret is configured,
//! `X-Immune-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`. Verify
//! the signature over the raw body bytes and reject stale timestamps to stop replays.
//! Any 2xx answer means delivered; anything else (or no answer within `timeout`) is retried.
//!
//! An experiment's `stop` and `close` (only to sinks whose `decisions` list them) carry this
//! body with every field above plus `experiment`, `harm`, `result` and `close_reason`
//! (see [`crate::experiment::signal`]).
//!
//! `format: alertmanager_webhook` sends instead a body shaped like Alertmanager's own
//! webhook (version "4"), for tools that already accept that (see [`super::alertmanager`]).

use super::{ConfigDuration, Secret, SignalsError, Sink, SinkKind};
use crate::model::{Decision, DecisionKind};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use std::fmt;
use std::path::PathBuf;

/// The body a webhook sink sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// immune's own body (see the module doc).
    #[default]
    Immune,
    /// Alertmanager's webhook payload, version "4".
    AlertmanagerWebhook,
}

/// One webhook sink in `signals.webhooks`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique sink name; part of every signal id and the `sink` metric label.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Body shape: `immune` (default) or `alertmanager_webhook`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// File holding the HMAC secret (never put the secret in the config itself).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the HMAC secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Decision kinds sent (default: all).
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

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &super::redact_url(&self.url))
            .field("format", &self.format)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("decisions", &self.decisions)
            .field("services", &self.services)
            .field("include_shadow", &self.include_shadow)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    pub(crate) fn build(&self) -> Result<Sink, SignalsError> {
        reqwest::Url::parse(&self.url)
            .map_err(|e| SignalsError::Config(format!("webhook {:?}: bad url: {e}", self.name)))?;
        let secret = Secret::load(
            &self.name,
            super::opt_path(&self.secret_file),
            self.secret_env.as_deref(),
        )?;
        if secret.is_none() {
            tracing::warn!(sink = %self.name, "Webhook has no secret; its requests are unsigned.");
        }
        Ok(self.sink(
            &super::ALL_DECISIONS,
            SinkKind::Webhook(Webhook {
                url: self.url.clone(),
                format: self.format,
                secret,
            }),
        ))
    }
}

/// A webhook sink, ready to deliver.
pub(crate) struct Webhook {
    pub url: String,
    pub format: WebhookFormat,
    pub secret: Option<Secret>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &super::redact_url(&self.url))
            .field("format", &self.format)
            .field("secret", &self.secret)
            .finish()
    }
}

/// What a signal says beyond the decision itself, for the people reading it: from the
/// deploy's canary event (commits, who deployed) and its view (the rule's description and
/// runbook, its baseline). Everything is optional; a missing part leaves its field `null`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// Commits in the deploy.
    pub commits: &'a [String],
    /// Who deployed (the canary event's `by`).
    pub by: Option<&'a str>,
    /// The deploy's view (`Engine::deploy_view`) as of the decision.
    pub view: Option<&'a Value>,
}

/// The signal body for decision `d` (see the module doc): what every sink renders from.
pub fn body(signal_id: &str, d: &Decision, cx: Context<'_>, public_url: &str) -> Value {
    let rule = cx.view.and_then(|v| {
        v.get("rules")?
            .as_array()?
            .iter()
            .find(|r| r.get("rule").and_then(Value::as_str) == Some(d.rule.as_str()))
    });
    let rule_str = |k: &str| {
        rule.and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let by = cx
        .by
        .or_else(|| cx.view.and_then(|v| v.get("by")).and_then(Value::as_str));
    let effect = effect_words(d, rule_str("baseline"));
    let mut body = json!({
        "signal_id": signal_id,
        "decision": d.decision,
        "deploy": d.deploy,
        "service": d.service,
        "version": d.version,
        "commits": cx.commits,
        "phase": d.phase,
        "rule": d.rule,
        "final": d.r#final,
        "shadow": d.shadow,
        "at": d.at,
        "summary": summary(d),
        "evidence": d.evidence,
        "link": deploy_link(public_url, &d.deploy),
        "by": by,
        "description": rule_str("description"),
        "runbook_url": rule_str("runbook_url"),
        "effect": effect,
        "time": crate::report::words::time(d.at),
        "report_url": report_link(public_url, &d.deploy),
    });
    body["message"] = json!(format!("{}: {effect}", headline(&body)));
    body
}

/// The effect in words, as the report page says it ("0.51% on the deploy's hosts vs 0.20%
/// on the other hosts (+151%); evidence 1,113 against a threshold of 700"); the evidence's
/// own summary when it has no two sides (a missing series, a blocked line).
pub fn effect_words(d: &Decision, baseline_kind: Option<&str>) -> String {
    let ev = &d.evidence;
    if ev.get("treatment").is_some() {
        let kind = ev
            .get("baseline_kind")
            .and_then(Value::as_str)
            .or(baseline_kind)
            .unwrap_or("");
        crate::report::words::account(ev, kind)
    } else {
        summary(d)
    }
}

/// The decision for people, without the numbers: "Rolled back: deploy d42 of web
/// (v1.2.3, by alice), rule php_error_ratio in canary". Reads the body's own fields, so
/// Alertmanager's `summary` and the body's `message` say the same.
pub fn headline(body: &Value) -> String {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let verb = match s("decision") {
        "rollback" => "Rolled back",
        "block" => "Blocked",
        "warn" => "Warned",
        "pass" => "Passed",
        "promote" => "Promoted",
        other => other,
    };
    let who: Vec<String> = [
        Some(s("version"))
            .filter(|v| !v.is_empty())
            .map(String::from),
        Some(s("by"))
            .filter(|v| !v.is_empty())
            .map(|b| format!("by {b}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    format!(
        "{verb}{}: deploy {} of {}{}, rule {} in {}",
        if body.get("shadow") == Some(&Value::Bool(true)) {
            " (shadow)"
        } else {
            ""
        },
        s("deploy"),
        s("service"),
        if who.is_empty() {
            String::new()
        } else {
            format!(" ({})", who.join(", "))
        },
        s("rule"),
        s("phase")
    )
}

/// One line for people: the evidence's own summary, or a plain sentence.
pub fn summary(d: &Decision) -> String {
    match d.evidence.get("summary").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None => format!(
            "{} deploy {} of {} (rule {})",
            d.decision.as_str(),
            d.deploy,
            d.service,
            d.rule
        ),
    }
}

/// `<public_url>/api/v1/deploys/<id>`, the id percent-encoded as a path segment.
pub fn deploy_link(public_url: &str, deploy: &str) -> String {
    let mut enc = String::new();
    for b in deploy.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}/api/v1/deploys/{enc}", public_url.trim_end_matches('/'))
}

/// `<public_url>/deploys/<id>`: the deploy's report page, for people.
pub fn report_link(public_url: &str, deploy: &str) -> String {
    format!(
        "{}/deploys/{}",
        public_url.trim_end_matches('/'),
        crate::report::path_segment(deploy)
    )
}

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; fall back to an empty tag anyway.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is a valid signature of `body` at `timestamp` (constant time), for
/// receivers written in Rust and for tests.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hexsig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hexsig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// POSTs `body` with the signal headers; `Err` carries a reason for the log (no secrets).
pub(crate) async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&Secret>,
    signal_id: &str,
    body: Vec<u8>,
    now_secs: i64,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header("Content-Type", "application/json")
        .header("X-Immune-Signal-Id", signal_id)
        .header("X-Immune-Timestamp", now_secs.to_string());
    if let Some(s) = secret {
        req = req.header("X-Immune-Signature", signature(s.expose(), now_secs, &body));
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", without_url(&e)))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// A reqwest error's text without the URL (which may carry credentials).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "error"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Delivers one row to a webhook sink.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    w: &Webhook,
    sink: &str,
    row: &super::outbox::DueRow,
    public_url: &str,
    now_secs: i64,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let payload = match w.format {
        WebhookFormat::Immune => row.body.clone(),
        WebhookFormat::AlertmanagerWebhook => {
            super::alertmanager::webhook_payload(&row.body, sink, public_url, now_secs)
        }
    };
    let bytes = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    post_signed(
        client,
        &w.url,
        w.secret.as_ref(),
        &row.id,
        bytes,
        now_secs,
        timeout,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let sig = signature(b"k", 1700000000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(b"k", 1700000000, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1700000001, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1700000000, b"{\"a\":2}", &sig));
        assert!(!verify(b"other", 1700000000, b"{\"a\":1}", &sig));
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"secret", 1700000000, b"{}"),
            "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn links_encode_the_deploy_id() {
        assert_eq!(
            deploy_link("http://i:9977/", "d 42/x"),
            "http://i:9977/api/v1/deploys/d%2042%2Fx"
        );
    }
}
