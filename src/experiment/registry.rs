//! The agent's experiment state: participants and their outcomes per experiment, fed by
//! `POST /api/v1/experiments/{name}/events`, and the running [`Judge`] of each experiment.
//!
//! Why here and not in the engine: experiments are judged on participants, not on series,
//! and must not block or be blocked by deploy judging; the registry is held by the API
//! state. Memory is bounded: at most [`MAX_PARTICIPANTS`] participants per experiment (a
//! hash of the uid, its branch and one number per metric: about 80 bytes with two metrics)
//! and the last [`MAX_EVENT_IDS`] event ids for idempotency. Time is passed in.
//!
//! A participant's branch is always immune's own assignment ([`super::assign`]); an event
//! for a uid outside `initial_rollout` is counted as `outside` and ignored. An outcome for
//! a uid never exposed makes it a participant (exposure events can be lost; outcomes rarely
//! are, and dropping them would bias every rate).
//!
//! With a [`Store`] ([`Registry::open`]) every acknowledged batch is written before it is
//! counted, and the state carries on after a restart ([`super::persist`]). Looks, stop and
//! close are in [`super::looking`].

use super::counters::CounterState;
use super::judge::{BranchTotals, Closing, Judge, Report, Totals, cap_at_quantile, winsorized};
use super::lifecycle::{Phase, Saved, fingerprint};
use super::persist::{Loaded, PersistError, Row, Store};
use super::{Experiment, MetricKind, Source, assign};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

/// Participants kept per experiment; new uids beyond it are refused (`refused`).
pub const MAX_PARTICIPANTS: usize = 1_000_000;
/// Event ids remembered per experiment for idempotency (the most recent).
pub const MAX_EVENT_IDS: usize = 500_000;
/// Events in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Seconds between looks when the API asks (a look costs O(participants) for amounts).
pub const LOOK_EVERY: f64 = 10.0;
/// Amounts are winsorized at this pooled quantile of per-participant totals.
pub const WINSOR_QUANTILE: f64 = 0.999;

/// What an event says.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The user saw the experiment (became a participant).
    Exposure,
    /// The user did something a metric counts.
    Outcome,
}

/// One posted event.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Unique id: a retried event with the same id counts once.
    pub id: String,
    /// The user.
    pub uid: String,
    /// `exposure` or `outcome`.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// For outcomes: the metric's name.
    #[serde(default)]
    pub metric: Option<String>,
    /// For outcomes: how much (default 1; counts are whole and non-negative).
    #[serde(default)]
    pub value: Option<f64>,
}

/// A request body.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// The events.
    pub events: Vec<Event>,
}

/// What became of a batch.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Applied {
    /// Events counted.
    pub accepted: u64,
    /// Events whose id was seen before.
    pub duplicate: u64,
    /// Events for uids outside `initial_rollout`.
    pub outside: u64,
    /// Events refused because the experiment has [`MAX_PARTICIPANTS`] participants.
    pub refused: u64,
    /// Events that arrived before the experiment's `start` (ignored).
    pub not_started: u64,
    /// Events that arrived after the experiment was closed (ignored).
    pub closed: u64,
}

/// Why a batch was refused as a whole; `field` names the bad part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// No such experiment.
    #[error("no experiment named {0:?}")]
    Unknown(String),
    /// The experiment reads its participants from counters (`source: metrics`).
    #[error(
        "experiment {0:?} takes its participants from metrics (source: metrics), not from events"
    )]
    WrongSource(String),
    /// The batch could not be written durably; nothing was counted.
    #[error("{0}")]
    Store(String),
    /// A field is missing or wrong.
    #[error("{field}: {message}")]
    Field {
        /// The field (`events[2].metric`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What a checkpoint keeps besides the judge's numbers.
#[derive(Serialize, Deserialize)]
pub(super) struct CheckpointMeta {
    /// The last look's totals.
    pub(super) last: Vec<BranchTotals>,
    /// Looks the judge had taken.
    pub(super) looks: u64,
}

/// A participant touched by a batch: branch, totals before (none for a new one), after.
type Staged = (u16, Option<Box<[f64]>>, Vec<f64>);

pub(super) struct Participant {
    pub(super) branch: u16,
    pub(super) values: Box<[f64]>,
}

pub(super) struct Entry {
    pub(super) exp: Experiment,
    pub(super) participants: HashMap<u64, Participant>,
    pub(super) per_branch: Vec<u64>,
    /// [branch][metric] running sum and sum of squares of per-participant totals.
    pub(super) sums: Vec<Vec<(f64, f64)>>,
    ids: HashSet<u64>,
    /// (seq, id hash), oldest first.
    id_order: VecDeque<(i64, u64)>,
    next_seq: i64,
    pub(super) judge: Judge,
    pub(super) report: Option<Report>,
    pub(super) last_look: Option<f64>,
    /// What survives a restart besides participants and looks.
    pub(super) saved: Saved,
    /// The last stored look's totals (a look with the same totals is not stored again).
    pub(super) stored_snapshot: Option<Vec<BranchTotals>>,
    pub(super) fingerprint: String,
}

/// Every experiment's state.
pub struct Registry {
    pub(super) entries: Mutex<HashMap<String, Entry>>,
    pub(super) store: Option<Mutex<Store>>,
    max_participants: usize,
    max_ids: usize,
}

fn hash64(s: &str) -> u64 {
    // FNV-1a: stable across builds and processes (stored hashes must match after restart).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Entry {
    fn new(e: &Experiment) -> Entry {
        let branches = e.weights().len();
        Entry {
            exp: e.clone(),
            participants: HashMap::new(),
            per_branch: vec![0; branches],
            sums: vec![vec![(0.0, 0.0); e.metrics.len()]; branches],
            ids: HashSet::new(),
            id_order: VecDeque::new(),
            next_seq: 1,
            judge: Judge::new(e),
            report: None,
            last_look: None,
            saved: Saved {
                counters: (e.source == Source::Metrics).then(|| CounterState::new(e)),
                ..Saved::default()
            },
            stored_snapshot: None,
            fingerprint: fingerprint(e),
        }
    }

    /// Carries on from what was stored: participants, ids, the judge (replaying every
    /// stored look), the lifecycle and counters.
    fn restore(&mut self, l: Loaded) {
        let metrics = self.exp.metrics.len();
        let branches = self.per_branch.len();
        for (uid, branch, values) in l.participants {
            let b = usize::from(branch);
            if b >= branches || values.len() != metrics {
                continue;
            }
            for (mi, v) in values.iter().enumerate() {
                self.sums[b][mi].0 += v;
                self.sums[b][mi].1 += v * v;
            }
            self.per_branch[b] += 1;
            self.participants.insert(
                uid,
                Participant {
                    branch,
                    values: values.into_boxed_slice(),
                },
            );
        }
        for (seq, id) in l.ids {
            if self.ids.insert(id) {
                self.id_order.push_back((seq, id));
            }
            self.next_seq = self.next_seq.max(seq + 1);
        }
        let mut last = None;
        if let Some(c) = l.checkpoint {
            let meta: Option<CheckpointMeta> = serde_json::from_str(&c.meta).ok();
            match meta {
                Some(m) if self.judge.resume(&c.state, m.last.clone(), m.looks) => {
                    last = Some(m.last);
                }
                _ => {
                    tracing::warn!(experiment = %self.exp.name, "The judge's stored checkpoint does not fit; its evidence restarts from the looks after it.");
                }
            }
        }
        for text in &l.looks {
            match serde_json::from_str::<Vec<BranchTotals>>(text) {
                Ok(snap) => {
                    self.report = Some(self.judge.observe(&snap));
                    last = Some(snap);
                }
                Err(e) => {
                    tracing::warn!(experiment = %self.exp.name, error = %e, "A stored look is unreadable and is skipped.");
                }
            }
        }
        self.stored_snapshot = last;
        if let Some(text) = l.state {
            match serde_json::from_str::<Saved>(&text) {
                Ok(mut saved) => {
                    if self.exp.source == Source::Metrics {
                        if !saved.counters.as_ref().is_some_and(|c| c.fits(&self.exp)) {
                            saved.counters = Some(CounterState::new(&self.exp));
                        }
                    } else {
                        saved.counters = None;
                    }
                    if let Some(c) = &saved.counters {
                        for (p, x) in self.per_branch.iter_mut().zip(&c.exposures) {
                            *p = x.round() as u64;
                        }
                    }
                    self.saved = saved;
                }
                Err(e) => {
                    tracing::warn!(experiment = %self.exp.name, error = %e, "The stored experiment state is unreadable; its lifecycle starts afresh.");
                }
            }
        }
    }
}

impl Registry {
    /// A registry for these experiments, with no participants and nothing stored.
    pub fn new(exps: &[Experiment]) -> Registry {
        Registry::with_limits(exps, MAX_PARTICIPANTS, MAX_EVENT_IDS)
    }

    /// A registry with other bounds than [`MAX_PARTICIPANTS`] and [`MAX_EVENT_IDS`].
    pub fn with_limits(exps: &[Experiment], max_participants: usize, max_ids: usize) -> Registry {
        Registry {
            entries: Mutex::new(
                exps.iter()
                    .map(|e| (e.name.clone(), Entry::new(e)))
                    .collect(),
            ),
            store: None,
            max_participants,
            max_ids: max_ids.max(1),
        }
    }

    /// A registry that keeps its state in `store` and carries on from what it holds.
    pub fn open(exps: &[Experiment], mut store: Store) -> Result<Registry, PersistError> {
        let mut entries = HashMap::new();
        for e in exps {
            let mut entry = Entry::new(e);
            let loaded = store.load(&e.name, &entry.fingerprint)?;
            if loaded.dropped_other_definition {
                tracing::warn!(experiment = %e.name, "The experiment's branches or metrics changed since its state was stored; its evidence starts afresh.");
            }
            let (p, looks) = (loaded.participants.len(), loaded.looks.len());
            entry.restore(loaded);
            if p > 0 || looks > 0 {
                tracing::info!(experiment = %e.name, participants = p, looks, "Experiment state restored.");
            }
            entries.insert(e.name.clone(), entry);
        }
        Ok(Registry {
            entries: Mutex::new(entries),
            store: Some(Mutex::new(store)),
            max_participants: MAX_PARTICIPANTS,
            max_ids: MAX_EVENT_IDS,
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a whole batch, then counts it, at `now` (the agent's clock, seconds).
    /// All-or-nothing on a bad field; idempotent by event id; with a store, the batch is
    /// written before it is counted (an answer means it survives a restart). Events before
    /// the experiment's start or after its closing are counted as such and ignored.
    pub fn apply(&self, name: &str, batch: &Events, now: f64) -> Result<Applied, EventError> {
        let (max_participants, max_ids) = (self.max_participants, self.max_ids);
        let mut entries = self.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| EventError::Unknown(name.to_string()))?;
        if entry.exp.source == Source::Metrics {
            return Err(EventError::WrongSource(name.to_string()));
        }
        let metric_of = check(entry, batch)?;
        let mut applied = Applied::default();
        match entry.saved.lifecycle.phase(&entry.exp, now) {
            Phase::Scheduled => {
                applied.not_started = batch.events.len() as u64;
                return Ok(applied);
            }
            Phase::Closed => {
                applied.closed = batch.events.len() as u64;
                return Ok(applied);
            }
            Phase::Running | Phase::Stopped => {}
        }
        let names: Vec<String> = entry
            .exp
            .weights()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        // Stage the batch: (uid hash) -> (branch, old totals, new totals), new ids.
        let mut staged: HashMap<u64, Staged> = HashMap::new();
        let mut new_ids: Vec<u64> = Vec::new();
        let mut batch_ids: HashSet<u64> = HashSet::new();
        let mut new_participants = 0usize;
        for (e, m) in batch.events.iter().zip(metric_of) {
            let id = hash64(&e.id);
            if entry.ids.contains(&id) || batch_ids.contains(&id) {
                applied.duplicate += 1;
                continue;
            }
            let Some(branch) = assign::branch_for(&entry.exp, &e.uid) else {
                applied.outside += 1;
                batch_ids.insert(id);
                new_ids.push(id);
                continue;
            };
            let bi = names.iter().position(|n| n == branch).unwrap_or(0) as u16;
            let key = hash64(&e.uid);
            if let std::collections::hash_map::Entry::Vacant(slot) = staged.entry(key) {
                match entry.participants.get(&key) {
                    Some(p) => {
                        slot.insert((p.branch, Some(p.values.clone()), p.values.to_vec()));
                    }
                    None => {
                        if entry.participants.len() + new_participants >= max_participants {
                            applied.refused += 1;
                            continue;
                        }
                        new_participants += 1;
                        slot.insert((bi, None, vec![0.0; entry.exp.metrics.len()]));
                    }
                }
            }
            if let (Some((mi, v)), Some(s)) = (m, staged.get_mut(&key)) {
                s.2[mi] += v;
            }
            batch_ids.insert(id);
            new_ids.push(id);
            applied.accepted += 1;
        }
        let first_seq = entry.next_seq;
        let seqs: Vec<(i64, u64)> = new_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (first_seq + i as i64, *id))
            .collect();
        let kept_from = (first_seq + new_ids.len() as i64) - max_ids as i64;
        if let Some(store) = &self.store {
            let rows: Vec<Row<'_>> = staged
                .iter()
                .map(|(uid, (b, _, v))| Row {
                    uid: *uid,
                    branch: *b,
                    values: v,
                })
                .collect();
            let mut store = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            store
                .save_batch(name, &rows, &seqs, (kept_from > 1).then_some(kept_from - 1))
                .map_err(|e| EventError::Store(e.to_string()))?;
        }
        for (uid, (b, old, new)) in staged {
            let bi = usize::from(b);
            if old.is_none() {
                entry.per_branch[bi] += 1;
            }
            for (mi, v) in new.iter().enumerate() {
                let o = old.as_ref().map_or(0.0, |o| o[mi]);
                let s = &mut entry.sums[bi][mi];
                s.0 += v - o;
                s.1 += v * v - o * o;
            }
            entry.participants.insert(
                uid,
                Participant {
                    branch: b,
                    values: new.into_boxed_slice(),
                },
            );
        }
        for (seq, id) in seqs {
            entry.ids.insert(id);
            entry.id_order.push_back((seq, id));
        }
        entry.next_seq = first_seq + new_ids.len() as i64;
        while entry.id_order.len() > max_ids {
            if let Some((_, old)) = entry.id_order.pop_front() {
                entry.ids.remove(&old);
            }
        }
        Ok(applied)
    }

    /// Every experiment's name, in name order.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Every experiment's last report and participants, in name order (for /metrics).
    pub fn reports(&self) -> Vec<(String, Vec<BranchStatus>, Option<Report>)> {
        let entries = self.lock();
        let mut v: Vec<_> = entries
            .values()
            .map(|e| (e.exp.name.clone(), branch_status(e), e.report.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Checks every event of a batch; the metric index and value of each outcome.
fn check(entry: &Entry, batch: &Events) -> Result<Vec<Option<(usize, f64)>>, EventError> {
    let bad = |i: usize, f: &str, m: &str| EventError::Field {
        field: format!("events[{i}].{f}"),
        message: m.to_string(),
    };
    if batch.events.is_empty() || batch.events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(EventError::Field {
            field: "events".into(),
            message: format!("1 to {MAX_EVENTS_PER_REQUEST} events per request"),
        });
    }
    let mut metric_of = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        if e.id.is_empty() || e.id.len() > 256 {
            return Err(bad(i, "id", "required, 1 to 256 bytes"));
        }
        if e.uid.is_empty() || e.uid.len() > 1024 {
            return Err(bad(i, "uid", "required, 1 to 1024 bytes"));
        }
        match e.kind {
            EventKind::Exposure => {
                if e.metric.is_some() || e.value.is_some() {
                    return Err(bad(i, "metric", "an exposure has no metric or value"));
                }
                metric_of.push(None);
            }
            EventKind::Outcome => {
                let Some(m) = &e.metric else {
                    return Err(bad(i, "metric", "required for an outcome"));
                };
                let Some(mi) = entry.exp.metrics.iter().position(|x| &x.name == m) else {
                    let known: Vec<&str> =
                        entry.exp.metrics.iter().map(|x| x.name.as_str()).collect();
                    return Err(bad(
                        i,
                        "metric",
                        &format!("{m:?} is not a metric of this experiment ({known:?})"),
                    ));
                };
                let v = e.value.unwrap_or(1.0);
                if !v.is_finite() || v.abs() > 1e12 {
                    return Err(bad(i, "value", "must be a finite number"));
                }
                if entry.exp.metrics[mi].kind == MetricKind::Count && (v < 0.0 || v.fract() != 0.0)
                {
                    return Err(bad(i, "value", "a count is a whole number, 0 or more"));
                }
                metric_of.push(Some((mi, v)));
            }
        }
    }
    Ok(metric_of)
}

pub(super) fn branch_status(e: &Entry) -> Vec<BranchStatus> {
    e.exp
        .weights()
        .iter()
        .zip(&e.per_branch)
        .map(|((n, w), p)| BranchStatus {
            name: n.to_string(),
            weight: *w,
            participants: *p,
        })
        .collect()
}

/// The totals the judge sees: counts as running sums; amounts winsorized at the pooled
/// [`WINSOR_QUANTILE`] of per-participant totals (one cap for every branch). For
/// `source: metrics`, the counters' increases (no per-participant spread is known).
pub(super) fn snapshot(entry: &Entry) -> Vec<BranchTotals> {
    let metrics = &entry.exp.metrics;
    if let Some(c) = &entry.saved.counters {
        return (0..entry.per_branch.len())
            .map(|b| BranchTotals {
                participants: c.exposures.get(b).map_or(0, |x| x.round() as u64),
                metrics: (0..metrics.len())
                    .map(|mi| Totals {
                        sum: c
                            .sums
                            .get(b)
                            .and_then(|m| m.get(mi))
                            .copied()
                            .unwrap_or(0.0),
                        sum_sq: None,
                    })
                    .collect(),
            })
            .collect();
    }
    let caps: Vec<Option<f64>> = metrics
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            if m.kind != MetricKind::Amount {
                return None;
            }
            let mut v: Vec<f64> = entry.participants.values().map(|p| p.values[mi]).collect();
            cap_at_quantile(&mut v, WINSOR_QUANTILE)
        })
        .collect();
    (0..entry.per_branch.len())
        .map(|b| BranchTotals {
            participants: entry.per_branch[b],
            metrics: metrics
                .iter()
                .enumerate()
                .map(|(mi, _)| match caps[mi] {
                    None => Totals {
                        sum: entry.sums[b][mi].0,
                        sum_sq: Some(entry.sums[b][mi].1),
                    },
                    Some(cap) => winsorized(
                        entry
                            .participants
                            .values()
                            .filter(|p| usize::from(p.branch) == b)
                            .map(|p| p.values[mi]),
                        cap,
                    ),
                })
                .collect(),
        })
        .collect()
}

/// A branch's weight and participants.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BranchStatus {
    /// Name.
    pub name: String,
    /// Weight.
    pub weight: f64,
    /// Participants so far.
    pub participants: u64,
}

/// `GET /api/v1/experiments/{name}` and `immune experiment status`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Status {
    /// The experiment's name.
    pub experiment: String,
    /// Branches, control first.
    pub branches: Vec<BranchStatus>,
    /// The last look's verdicts and SRM.
    #[serde(flatten)]
    pub report: Report,
    /// What closing now would say, per goal metric and branch.
    pub closing: Vec<Closing>,
    /// When the last look was (seconds since the epoch, the agent's clock).
    pub looked_at: Option<f64>,
    /// Where participants come from: `events` or `metrics`.
    pub source: Source,
    /// For `source: metrics`: how many counter series are followed.
    pub counter_series: Option<usize>,
    /// Scheduled, running, stopped or closed, with start, end, stop and close
    /// ([`super::lifecycle::Lifecycle::view`]).
    pub lifecycle: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{Branch, Direction, Metric};

    fn exp() -> Experiment {
        Experiment {
            name: "e".into(),
            initial_rollout: 1.0,
            control: None,
            branches: vec![Branch {
                name: "b".into(),
                weight: 0.5,
            }],
            metrics: vec![Metric {
                name: "signups".into(),
                kind: MetricKind::Count,
                direction: Direction::Increase,
                min_effect: 0.1,
                alpha: None,
                guardrail: false,
            }],
            start: None,
            end: None,
            source: Default::default(),
        }
    }

    fn exposure(id: &str, uid: &str) -> Event {
        Event {
            id: id.into(),
            uid: uid.into(),
            kind: EventKind::Exposure,
            metric: None,
            value: None,
        }
    }

    #[test]
    fn participants_and_remembered_ids_are_bounded() {
        let r = Registry::with_limits(&[exp()], 2, 2);
        let batch = Events {
            events: vec![
                exposure("1", "u1"),
                exposure("2", "u2"),
                exposure("3", "u3"),
                exposure("4", "u1"),
            ],
        };
        let a = r.apply("e", &batch, 0.0).unwrap();
        assert_eq!((a.accepted, a.refused), (3, 1), "{a:?}");
        let s = r.status("e", 0.0, 0.0).unwrap();
        let total: u64 = s["branches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["participants"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 2);
        // Only the last two ids are remembered: "1" counts again (as a known uid).
        let again = r
            .apply(
                "e",
                &Events {
                    events: vec![exposure("1", "u1"), exposure("4", "u1")],
                },
                0.0,
            )
            .unwrap();
        assert_eq!((again.accepted, again.duplicate), (1, 1), "{again:?}");
    }

    #[test]
    fn an_outcome_makes_a_participant_and_counts_go_to_the_users_branch() {
        let r = Registry::new(&[exp()]);
        let e = exp();
        let uid = "someone";
        let branch = assign::branch_for(&e, uid).unwrap();
        let batch = Events {
            events: vec![Event {
                id: "o".into(),
                uid: uid.into(),
                kind: EventKind::Outcome,
                metric: Some("signups".into()),
                value: Some(2.0),
            }],
        };
        assert_eq!(r.apply("e", &batch, 0.0).unwrap().accepted, 1);
        let s = r.status("e", 0.0, 0.0).unwrap();
        let b = s["branches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == branch)
            .unwrap();
        assert_eq!(b["participants"], 1);
        let c = &s["comparisons"][0];
        let means = if branch == "control" {
            &c["means"][1]
        } else {
            &c["means"][0]
        };
        assert_eq!(means.as_f64(), Some(2.0));
    }
}
