//! An experiment's life: scheduled (before its `start`), running, stopped (a guardrail
//! showed harm), closed (asked for, or at its `end`) with its result; and what of it was
//! announced to the signal sinks. Kept with the experiment ([`super::persist`]) so a
//! restart neither forgets a stop nor announces it twice. Time is passed in.

use super::Experiment;
use super::counters::CounterState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where an experiment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before its `start`: not judged, events not counted.
    Scheduled,
    /// Judged at every look.
    Running,
    /// A guardrail showed harm (`stop` was decided); still judged until closed.
    Stopped,
    /// Closed with its result; nothing more is counted or judged.
    Closed,
}

/// Why an experiment was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Its `end` time came.
    End,
    /// Someone asked (`POST /api/v1/experiments/{name}/close`).
    Asked,
}

/// The `stop` decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    /// When it was decided (the agent's clock, seconds).
    pub at: f64,
    /// The harmed guardrails, as `branch/metric`.
    pub harm: Vec<String>,
    /// Whether the signal rows are written to the outbox.
    pub announced: bool,
}

/// The closing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    /// When (the agent's clock, seconds).
    pub at: f64,
    /// Who asked, when asked.
    pub by: Option<String>,
    /// End time or asked.
    pub reason: CloseReason,
    /// Whether the signal rows are written to the outbox.
    pub announced: bool,
    /// The experiment's state at closing, as `GET /api/v1/experiments/{name}` answered it.
    pub status: Value,
}

/// Stop and close, as they happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The `stop` decision, once made.
    pub stopped: Option<Stopped>,
    /// The closing, once done.
    pub closed: Option<Closed>,
}

impl Lifecycle {
    /// The phase at `now`.
    pub fn phase(&self, exp: &Experiment, now: f64) -> Phase {
        if self.closed.is_some() {
            Phase::Closed
        } else if exp.start_secs().is_some_and(|s| now < s) {
            Phase::Scheduled
        } else if self.stopped.is_some() {
            Phase::Stopped
        } else {
            Phase::Running
        }
    }

    /// The `lifecycle` object of the experiment's state.
    pub fn view(&self, exp: &Experiment, now: f64) -> Value {
        json!({
            "phase": self.phase(exp, now),
            "start": exp.start,
            "end": exp.end,
            "stopped_at": self.stopped.as_ref().map(|s| s.at),
            "harm": self.stopped.as_ref().map(|s| s.harm.clone()),
            "closed_at": self.closed.as_ref().map(|c| c.at),
            "closed_by": self.closed.as_ref().and_then(|c| c.by.clone()),
            "close_reason": self.closed.as_ref().map(|c| c.reason),
        })
    }
}

/// What is kept per experiment besides participants and looks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// Stop and close.
    pub lifecycle: Lifecycle,
    /// Counter cursors and totals (`source: metrics`).
    pub counters: Option<CounterState>,
    /// Looks taken (those with unchanged totals included).
    pub looks: u64,
    /// The last stored look's sequence number.
    pub look_seq: i64,
}

/// What a stored state must match to be carried on: the branches with their weights and
/// the metrics with their kinds and directions (not `initial_rollout`, which may change
/// without moving anyone, nor alphas or `min_effect`, which the judge reads as it goes).
pub fn fingerprint(exp: &Experiment) -> String {
    let branches: Vec<String> = exp
        .weights()
        .iter()
        .map(|(n, w)| format!("{n}={w}"))
        .collect();
    let metrics: Vec<String> = exp
        .metrics
        .iter()
        .map(|m| format!("{}:{:?}:{:?}:{}", m.name, m.kind, m.direction, m.guardrail))
        .collect();
    format!(
        "{:?};{};{}",
        exp.source,
        branches.join(","),
        metrics.join(",")
    )
}
