//! The exec sink: runs a command per signal, for deploy tools driven by scripts.
//!
//! The command is an argv list run without a shell (no quoting surprises, no injection
//! through deploy ids). It gets the decision in the environment — `IMMUNE_SIGNAL_ID`,
//! `IMMUNE_DECISION`, `IMMUNE_DEPLOY`, `IMMUNE_SERVICE`, `IMMUNE_VERSION` (empty when
//! unknown), `IMMUNE_RULE`, `IMMUNE_PHASE`, `IMMUNE_SUMMARY`, and for people
//! `IMMUNE_BY`, `IMMUNE_COMMITS` (space-separated), `IMMUNE_DESCRIPTION`,
//! `IMMUNE_RUNBOOK_URL`, `IMMUNE_EFFECT` (in words), `IMMUNE_TIME` (RFC 3339),
//! `IMMUNE_REPORT_URL`, `IMMUNE_MESSAGE` (one sentence; empty when unknown), and
//! `IMMUNE_EXPERIMENT` (an experiment's `stop`/`close`; empty otherwise) — and the
//! webhook JSON body (see
//! [`super::webhook`]) on stdin. Exit status 0 means delivered; a non-zero exit, a failure to
//! start, or running past `timeout` (the child is killed) is retried with the same
//! `IMMUNE_SIGNAL_ID`, so the command must be idempotent for a given id.

use super::outbox::DueRow;
use super::{ConfigDuration, SignalsError, Sink, SinkKind};
use crate::model::DecisionKind;
use serde::Deserialize;
use serde_json::Value;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// One exec sink in `signals.exec`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// Unique sink name; part of every signal id and the `sink` metric label.
    pub name: String,
    /// The program and its arguments (no shell). Put secrets in files the program reads,
    /// not here: the command line is visible to every local user.
    pub command: Vec<String>,
    /// Decision kinds sent (default: all).
    #[serde(default)]
    pub decisions: Option<Vec<DecisionKind>>,
    /// Services sent (default: all).
    #[serde(default)]
    pub services: Vec<String>,
    /// Send decisions of shadow rules too (default false).
    #[serde(default)]
    pub include_shadow: bool,
    /// Time limit of one run; the child is killed past it (default `10s`).
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

impl ExecConfig {
    pub(crate) fn build(&self) -> Result<Sink, SignalsError> {
        if self.command.first().is_none_or(|p| p.is_empty()) {
            return Err(SignalsError::Config(format!(
                "exec {:?}: command must name a program",
                self.name
            )));
        }
        Ok(self.sink(
            &super::ALL_DECISIONS,
            SinkKind::Exec(Exec {
                command: self.command.clone(),
            }),
        ))
    }
}

/// An exec sink, ready to deliver.
#[derive(Debug)]
pub(crate) struct Exec {
    pub command: Vec<String>,
}

/// The environment a run gets.
pub fn env(body: &Value) -> Vec<(&'static str, String)> {
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    vec![
        ("IMMUNE_SIGNAL_ID", s("signal_id")),
        ("IMMUNE_DECISION", s("decision")),
        ("IMMUNE_DEPLOY", s("deploy")),
        ("IMMUNE_SERVICE", s("service")),
        ("IMMUNE_VERSION", s("version")),
        ("IMMUNE_RULE", s("rule")),
        ("IMMUNE_PHASE", s("phase")),
        ("IMMUNE_SUMMARY", s("summary")),
        ("IMMUNE_BY", s("by")),
        (
            "IMMUNE_COMMITS",
            body.get("commits")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        ),
        ("IMMUNE_DESCRIPTION", s("description")),
        ("IMMUNE_RUNBOOK_URL", s("runbook_url")),
        ("IMMUNE_EFFECT", s("effect")),
        ("IMMUNE_TIME", s("time")),
        ("IMMUNE_REPORT_URL", s("report_url")),
        ("IMMUNE_MESSAGE", s("message")),
        ("IMMUNE_EXPERIMENT", s("experiment")),
    ]
}

/// Runs the command for one row.
pub(crate) async fn deliver(
    ex: &Exec,
    row: &DueRow,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let Some((prog, args)) = ex.command.split_first() else {
        return Err("empty command".into());
    };
    let input = serde_json::to_vec(&row.body).map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(env(&row.body))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    let stdin = child.stdin.take();
    let run = async move {
        if let Some(mut stdin) = stdin {
            // A command that ignores stdin closes the pipe early; that is not a failure.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Err(format!(
            "timed out after {:.1}s; killed",
            timeout.as_secs_f64()
        )),
        Ok(Err(e)) => Err(format!("wait failed: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!("{}: {}", out.status, tail.trim()))
        }
    }
}
