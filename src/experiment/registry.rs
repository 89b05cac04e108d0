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

use super::judge::{BranchTotals, Closing, Judge, Report, Totals, cap_at_quantile, winsorized};
use super::{Experiment, MetricKind, assign};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
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
}

/// Why a batch was refused as a whole; `field` names the bad part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// No such experiment.
    #[error("no experiment named {0:?}")]
    Unknown(String),
    /// A field is missing or wrong.
    #[error("{field}: {message}")]
    Field {
        /// The field (`events[2].metric`).
        field: String,
        /// What is wrong.
        message: String,
    },
}

struct Participant {
    branch: u16,
    values: Box<[f64]>,
}

struct Entry {
    exp: Experiment,
    participants: HashMap<u64, Participant>,
    per_branch: Vec<u64>,
    /// [branch][metric] running sum and sum of squares of per-participant totals.
    sums: Vec<Vec<(f64, f64)>>,
    ids: HashSet<u64>,
    id_order: VecDeque<u64>,
    judge: Judge,
    report: Option<Report>,
    last_look: Option<f64>,
}

/// Every experiment's state.
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    max_participants: usize,
    max_ids: usize,
}

fn hash64(s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl Registry {
    /// A registry for these experiments, with no participants.
    pub fn new(exps: &[Experiment]) -> Registry {
        Registry::with_limits(exps, MAX_PARTICIPANTS, MAX_EVENT_IDS)
    }

    /// A registry with other bounds than [`MAX_PARTICIPANTS`] and [`MAX_EVENT_IDS`].
    pub fn with_limits(exps: &[Experiment], max_participants: usize, max_ids: usize) -> Registry {
        let entries = exps
            .iter()
            .map(|e| {
                let branches = e.weights().len();
                let entry = Entry {
                    exp: e.clone(),
                    participants: HashMap::new(),
                    per_branch: vec![0; branches],
                    sums: vec![vec![(0.0, 0.0); e.metrics.len()]; branches],
                    ids: HashSet::new(),
                    id_order: VecDeque::new(),
                    judge: Judge::new(e),
                    report: None,
                    last_look: None,
                };
                (e.name.clone(), entry)
            })
            .collect();
        Registry {
            entries: Mutex::new(entries),
            max_participants,
            max_ids: max_ids.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a whole batch, then counts it. All-or-nothing on a bad field; idempotent by
    /// event id.
    pub fn apply(&self, name: &str, batch: &Events) -> Result<Applied, EventError> {
        let (max_participants, max_ids) = (self.max_participants, self.max_ids);
        let mut entries = self.lock();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| EventError::Unknown(name.to_string()))?;
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
                    if entry.exp.metrics[mi].kind == MetricKind::Count
                        && (v < 0.0 || v.fract() != 0.0)
                    {
                        return Err(bad(i, "value", "a count is a whole number, 0 or more"));
                    }
                    metric_of.push(Some((mi, v)));
                }
            }
        }
        let mut applied = Applied::default();
        let names: Vec<String> = entry
            .exp
            .weights()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        for (e, m) in batch.events.iter().zip(metric_of) {
            let id = hash64(&e.id);
            if entry.ids.contains(&id) {
                applied.duplicate += 1;
                continue;
            }
            let Some(branch) = assign::branch_for(&entry.exp, &e.uid) else {
                applied.outside += 1;
                remember(entry, id, max_ids);
                continue;
            };
            let bi = names.iter().position(|n| n == branch).unwrap_or(0);
            let key = hash64(&e.uid);
            if !entry.participants.contains_key(&key) {
                if entry.participants.len() >= max_participants {
                    applied.refused += 1;
                    continue;
                }
                entry.participants.insert(
                    key,
                    Participant {
                        branch: bi as u16,
                        values: vec![0.0; entry.exp.metrics.len()].into_boxed_slice(),
                    },
                );
                entry.per_branch[bi] += 1;
            }
            if let (Some((mi, v)), Some(p)) = (m, entry.participants.get_mut(&key)) {
                let b = usize::from(p.branch);
                let old = p.values[mi];
                let new = old + v;
                p.values[mi] = new;
                let s = &mut entry.sums[b][mi];
                s.0 += v;
                s.1 += new * new - old * old;
            }
            remember(entry, id, max_ids);
            applied.accepted += 1;
        }
        Ok(applied)
    }

    /// Looks at every experiment whose last look is at least `every` seconds before `now`
    /// (all of them when `every` is 0): the judge takes the totals and gives a report.
    pub fn look(&self, now: f64, every: f64) {
        let mut entries = self.lock();
        for entry in entries.values_mut() {
            look_entry(entry, now, every);
        }
    }

    /// The state of one experiment after a look if the last one is at least `every`
    /// seconds old: the report, the closing lines and the participants per branch.
    pub fn status(&self, name: &str, now: f64, every: f64) -> Option<Status> {
        let mut entries = self.lock();
        let entry = entries.get_mut(name)?;
        look_entry(entry, now, every);
        let report = entry.report.clone()?;
        let closing = entry.judge.close(&report);
        let branches = entry
            .exp
            .weights()
            .iter()
            .zip(&entry.per_branch)
            .map(|((n, w), p)| BranchStatus {
                name: n.to_string(),
                weight: *w,
                participants: *p,
            })
            .collect();
        Some(Status {
            experiment: entry.exp.name.clone(),
            branches,
            report,
            closing,
            looked_at: entry.last_look,
        })
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
            .map(|e| {
                let branches = e
                    .exp
                    .weights()
                    .iter()
                    .zip(&e.per_branch)
                    .map(|((n, w), p)| BranchStatus {
                        name: n.to_string(),
                        weight: *w,
                        participants: *p,
                    })
                    .collect();
                (e.exp.name.clone(), branches, e.report.clone())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn look_entry(entry: &mut Entry, now: f64, every: f64) {
    if entry.report.is_some() && entry.last_look.is_some_and(|t| now - t < every) {
        return;
    }
    entry.last_look = Some(now);
    let snap = snapshot(entry);
    entry.report = Some(entry.judge.observe(&snap));
}

fn remember(entry: &mut Entry, id: u64, max_ids: usize) {
    if entry.ids.insert(id) {
        entry.id_order.push_back(id);
        while entry.id_order.len() > max_ids {
            if let Some(old) = entry.id_order.pop_front() {
                entry.ids.remove(&old);
            }
        }
    }
}

/// The totals the judge sees: counts as running sums; amounts winsorized at the pooled
/// [`WINSOR_QUANTILE`] of per-participant totals (one cap for every branch).
fn snapshot(entry: &Entry) -> Vec<BranchTotals> {
    let metrics = &entry.exp.metrics;
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
        let a = r.apply("e", &batch).unwrap();
        assert_eq!((a.accepted, a.refused), (3, 1), "{a:?}");
        let s = r.status("e", 0.0, 0.0).unwrap();
        let total: u64 = s.branches.iter().map(|b| b.participants).sum();
        assert_eq!(total, 2);
        // Only the last two ids are remembered: "1" counts again (as a known uid).
        let again = r
            .apply(
                "e",
                &Events {
                    events: vec![exposure("1", "u1"), exposure("4", "u1")],
                },
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
        assert_eq!(r.apply("e", &batch).unwrap().accepted, 1);
        let s = r.status("e", 0.0, 0.0).unwrap();
        let b = s.branches.iter().find(|b| b.name == branch).unwrap();
        assert_eq!(b.participants, 1);
        let c = &s.report.comparisons[0];
        let means = if branch == "control" {
            c.means.1
        } else {
            c.means.0
        };
        assert_eq!(means, 2.0);
    }
}
