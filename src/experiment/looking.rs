//! Looking at experiments on the agent: when a look is due, what it decides (a `stop` when
//! a guardrail shows harm, the closing at `end`), closing when asked, counters read into
//! `source: metrics` experiments, and the announcements the sinks are owed.
//!
//! Rules of time (passed in, never read here): an experiment is not looked at before its
//! `start`; at or after its `end` the next look is the last and closes it with its result;
//! a closed experiment's state is frozen as it was at closing. Every look whose totals
//! differ from the previous stored one is stored with the lifecycle ([`super::persist`]).

use super::counters;
use super::judge::{State, Verdict};
use super::lifecycle::{CloseReason, Closed, Phase, Stopped};
use super::persist::{CHECKPOINT_EVERY, Checkpoint, Store};
use super::registry::{CheckpointMeta, Entry, Registry, Status, branch_status, snapshot};
use super::signal::Announcement;
use crate::model::{DecisionKind, Timestamp};
use crate::rules::selector::Selector;
use serde_json::Value;
use std::sync::Mutex;

/// How far back (ms) before the newest point already read a counter read starts, so points
/// that arrive late (remote_write, a slow scrape) are still counted once (cursors skip the
/// ones already read).
pub const COUNTER_LAG_MS: i64 = 300_000;

/// Why an experiment could not be closed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CloseError {
    /// No such experiment.
    #[error("no experiment named {0:?}")]
    Unknown(String),
    /// It is closed already (its state at closing is attached).
    #[error("experiment {0:?} is closed already")]
    Closed(String, Box<Value>),
}

impl Registry {
    /// Looks at every experiment whose last look is at least `every` seconds before `now`
    /// (all of them when `every` is 0), and closes those whose `end` has come.
    pub fn look(&self, now: f64, every: f64) {
        let mut entries = self.lock();
        for entry in entries.values_mut() {
            look_entry(entry, now, every, self.store.as_ref());
        }
    }

    /// The state of one experiment (after a look if the last one is at least `every`
    /// seconds old), as `GET /api/v1/experiments/{name}` answers it.
    pub fn status(&self, name: &str, now: f64, every: f64) -> Option<Value> {
        let mut entries = self.lock();
        let entry = entries.get_mut(name)?;
        look_entry(entry, now, every, self.store.as_ref());
        Some(status_of(entry, now))
    }

    /// Closes an experiment now with its result (a last look first, unless it has not
    /// started), as `by` asked; its state at closing is returned and kept.
    pub fn close(&self, name: &str, now: f64, by: Option<String>) -> Result<Value, CloseError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| CloseError::Unknown(name.to_string()))?;
        if entry.saved.lifecycle.closed.is_some() {
            return Err(CloseError::Closed(
                name.to_string(),
                Box::new(status_of(entry, now)),
            ));
        }
        close_entry(entry, now, by, CloseReason::Asked, self.store.as_ref());
        Ok(status_of(entry, now))
    }

    /// Every experiment's phase at `now`, in name order (for /metrics).
    pub fn phases(&self, now: f64) -> Vec<(String, Phase)> {
        let mut v: Vec<_> = self
            .lock()
            .values()
            .map(|e| (e.exp.name.clone(), e.saved.lifecycle.phase(&e.exp, now)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// What the agent must read for `source: metrics` experiments that are not closed:
    /// (experiment, selectors, only points after this time).
    pub fn counter_reads(&self) -> Vec<(String, Vec<Selector>, Timestamp)> {
        self.lock()
            .values()
            .filter(|e| e.saved.lifecycle.closed.is_none())
            .filter_map(|e| {
                let c = e.saved.counters.as_ref()?;
                let after = c
                    .newest
                    .map_or(Timestamp(i64::MIN), |n| Timestamp(n - COUNTER_LAG_MS));
                Some((e.exp.name.clone(), counters::selectors(&e.exp), after))
            })
            .collect()
    }

    /// Adds a counter read's answer (see [`counters::absorb`]) to an experiment.
    pub fn absorb_counters(&self, name: &str, answer: &Value) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        if entry.saved.lifecycle.closed.is_some() {
            return;
        }
        let start_ms = entry
            .exp
            .start_secs()
            .map_or(i64::MIN, |s| (s * 1000.0).floor() as i64);
        let exp = entry.exp.clone();
        let Some(c) = entry.saved.counters.as_mut() else {
            return;
        };
        let changed = counters::absorb(&exp, c, answer, start_ms);
        for (b, x) in c.exposures.iter().enumerate() {
            if let Some(p) = entry.per_branch.get_mut(b) {
                *p = x.round() as u64;
            }
        }
        // The engine keeps points in memory only: totals are stored as soon as they move,
        // or a restart would lose what was read since the last stored look.
        if changed {
            save(entry, self.store.as_ref(), None);
        }
    }

    /// The stop and close decisions not yet written to the outbox, with their bodies.
    pub fn announcements(&self, public_url: &str, now: f64) -> Vec<Announcement> {
        let entries = self.lock();
        let mut out = Vec::new();
        for e in entries.values() {
            let life = &e.saved.lifecycle;
            if let Some(s) = &life.stopped
                && !s.announced
            {
                out.push(Announcement::new(
                    DecisionKind::Stop,
                    &e.exp,
                    s.at,
                    &status_of(e, now),
                    public_url,
                ));
            }
            if let Some(c) = &life.closed
                && !c.announced
            {
                out.push(Announcement::new(
                    DecisionKind::Close,
                    &e.exp,
                    c.at,
                    &status_of(e, now),
                    public_url,
                ));
            }
        }
        out
    }

    /// The announcement of `kind` for `name` is in the outbox: do not make it again.
    pub fn announced(&self, name: &str, kind: DecisionKind) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        let life = &mut entry.saved.lifecycle;
        match kind {
            DecisionKind::Stop => {
                if let Some(s) = life.stopped.as_mut() {
                    s.announced = true;
                }
            }
            DecisionKind::Close => {
                if let Some(c) = life.closed.as_mut() {
                    c.announced = true;
                }
            }
            _ => return,
        }
        save(entry, self.store.as_ref(), None);
    }
}

fn look_entry(entry: &mut Entry, now: f64, every: f64, store: Option<&Mutex<Store>>) {
    match entry.saved.lifecycle.phase(&entry.exp, now) {
        Phase::Closed | Phase::Scheduled => return,
        Phase::Running | Phase::Stopped => {}
    }
    let ended = entry.exp.end_secs().is_some_and(|e| now >= e);
    if ended {
        close_entry(entry, now, None, CloseReason::End, store);
        return;
    }
    if entry.report.is_none() || entry.last_look.is_none_or(|t| now - t >= every) {
        take_look(entry, now, store);
    }
}

/// One look: the judge takes the totals; a first harm on a guardrail decides `stop`.
fn take_look(entry: &mut Entry, now: f64, store: Option<&Mutex<Store>>) {
    entry.last_look = Some(now);
    let snap = snapshot(entry);
    let report = entry.judge.observe(&snap);
    entry.saved.looks += 1;
    let mut changed = false;
    if report.state == State::Stop && entry.saved.lifecycle.stopped.is_none() {
        let harm = report
            .comparisons
            .iter()
            .filter(|c| c.verdict == Verdict::Harm)
            .map(|c| format!("{}/{}", c.branch, c.metric))
            .collect();
        tracing::warn!(experiment = %entry.exp.name, ?harm, "Experiment stopped: a guardrail shows harm.");
        entry.saved.lifecycle.stopped = Some(Stopped {
            at: now,
            harm,
            announced: false,
        });
        changed = true;
    }
    entry.report = Some(report);
    let new_totals = entry.stored_snapshot.as_ref() != Some(&snap);
    if new_totals || changed {
        save(entry, store, new_totals.then_some(snap));
    }
}

fn close_entry(
    entry: &mut Entry,
    now: f64,
    by: Option<String>,
    reason: CloseReason,
    store: Option<&Mutex<Store>>,
) {
    if entry.saved.lifecycle.closed.is_some() {
        return;
    }
    if entry.saved.lifecycle.phase(&entry.exp, now) != Phase::Scheduled {
        take_look(entry, now, store);
    }
    let status = status_of(entry, now);
    tracing::info!(experiment = %entry.exp.name, reason = ?reason, "Experiment closed.");
    entry.saved.lifecycle.closed = Some(Closed {
        at: now,
        by,
        reason,
        announced: false,
        status,
    });
    save(entry, store, None);
}

/// Writes the state (and a look's totals); a failure is logged and retried at the next
/// look with new totals or the next lifecycle change.
fn save(
    entry: &mut Entry,
    store: Option<&Mutex<Store>>,
    snap: Option<Vec<super::judge::BranchTotals>>,
) {
    let Some(store) = store else {
        if snap.is_some() {
            entry.stored_snapshot = snap;
        }
        return;
    };
    let seq = entry.saved.look_seq + i64::from(snap.is_some());
    let mut saved = entry.saved.clone();
    saved.look_seq = seq;
    let checkpoint = (snap.is_some() && seq % CHECKPOINT_EVERY == 0)
        .then(|| {
            let (state, last, looks) = entry.judge.checkpoint();
            let meta = serde_json::to_string(&CheckpointMeta { last, looks }).ok()?;
            Some(Checkpoint { seq, meta, state })
        })
        .flatten();
    let (Ok(state), Ok(snap_text)) = (
        serde_json::to_string(&saved),
        snap.as_ref().map(serde_json::to_string).transpose(),
    ) else {
        return;
    };
    let mut st = store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match st.save_look(
        &entry.exp.name,
        seq,
        snap_text.as_deref(),
        &entry.fingerprint,
        &state,
        checkpoint.as_ref(),
    ) {
        Ok(()) => {
            entry.saved.look_seq = seq;
            if snap.is_some() {
                entry.stored_snapshot = snap;
            }
        }
        Err(e) => {
            tracing::warn!(experiment = %entry.exp.name, error = %e, "Experiment state could not be stored; retried at the next change.");
        }
    }
}

/// The state as the API shows it: frozen at closing for a closed experiment (with its
/// lifecycle now), else the last look (or, before the first, a preview of the totals).
fn status_of(entry: &Entry, now: f64) -> Value {
    let lifecycle = entry.saved.lifecycle.view(&entry.exp, now);
    if let Some(c) = &entry.saved.lifecycle.closed {
        let mut v = c.status.clone();
        v["lifecycle"] = lifecycle;
        return v;
    }
    let mut report = entry
        .report
        .clone()
        .unwrap_or_else(|| entry.judge.preview(&snapshot(entry)));
    report.looks = entry.saved.looks;
    let closing = entry.judge.close(&report);
    let s = Status {
        experiment: entry.exp.name.clone(),
        branches: branch_status(entry),
        report,
        closing,
        looked_at: entry.last_look,
        source: entry.exp.source,
        counter_series: entry.saved.counters.as_ref().map(|c| c.cursors.len()),
        lifecycle,
    };
    serde_json::to_value(s).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::registry::{Event, EventKind, Events};

    fn exp() -> crate::experiment::Experiment {
        let text = "experiments:
  - name: e
    initial_rollout: 1
    branches: [{name: b, weight: 0.5}]
    metrics:
      - {name: signups, kind: count, direction: increase, min_effect: 0.1}
      - {name: revenue, kind: amount, direction: increase, min_effect: 0.1}
";
        crate::experiment::load_str("e.yaml", text)
            .unwrap()
            .remove(0)
    }

    /// More than [`CHECKPOINT_EVERY`] looks with new totals, then a reopen: the judge
    /// (checkpoint plus the looks after it) says exactly what it said before.
    #[test]
    fn a_reopened_registry_carries_on_from_its_checkpoint_exactly() {
        let dir = std::env::temp_dir().join(format!("immune-exp-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sqlite");
        let _ = std::fs::remove_file(&path);
        let e = exp();
        let r = Registry::open(std::slice::from_ref(&e), Store::open(&path).unwrap()).unwrap();
        let mut n = 0;
        for look in 0..(CHECKPOINT_EVERY + 30) {
            let mut events = Vec::new();
            for i in 0..40 {
                n += 1;
                let uid = format!("u{n}");
                events.push(Event {
                    id: format!("x{n}"),
                    uid: uid.clone(),
                    kind: EventKind::Exposure,
                    metric: None,
                    value: None,
                });
                if i % 3 == 0 {
                    events.push(Event {
                        id: format!("s{n}"),
                        uid: uid.clone(),
                        kind: EventKind::Outcome,
                        metric: Some(if i % 2 == 0 { "signups" } else { "revenue" }.into()),
                        value: Some(if i % 2 == 0 { 1.0 } else { (n % 17) as f64 }),
                    });
                }
            }
            r.apply("e", &Events { events }, look as f64).unwrap();
            r.look(look as f64, 0.0);
        }
        let before = r.status("e", 1e6, f64::INFINITY).unwrap();
        drop(r);
        let r = Registry::open(std::slice::from_ref(&e), Store::open(&path).unwrap()).unwrap();
        let after = r.status("e", 1e6, f64::INFINITY).unwrap();
        assert_eq!(before["comparisons"], after["comparisons"]);
        assert_eq!(before["srm"], after["srm"]);
        assert_eq!(before["branches"], after["branches"]);
        // The reopened registry looks once more (its first look after the restart).
        assert_eq!(
            before["looks"].as_u64().unwrap() + 1,
            after["looks"].as_u64().unwrap()
        );
        // Only the looks after the checkpoint are kept.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM experiment_looks", [], |r| r.get(0))
            .unwrap();
        assert!(kept < CHECKPOINT_EVERY, "{kept}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
