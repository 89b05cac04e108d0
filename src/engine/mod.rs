//! The engine: a synchronous, deterministic state machine fed timestamped inputs (samples,
//! deploy events, ticks) that emits decisions.
//!
//! It never reads the clock: a tick carries `now`, so `immune replay`, `immune serve` and
//! every test run the same code and tests are deterministic. Samples go to the [`store`];
//! a deploy's canary event starts an analysis that holds, for each rule and phase, a
//! [`judge::Method`] built from the pre-deploy data at that instant; each tick evaluates
//! every active analysis over the interval since the last tick, controls the family error
//! across the deploy's rules with weighted Holm, and turns verdicts into decisions. A
//! `rollback` or `block` ends the deploy and blocks its service's line until an `unblock`.

mod evidence;
pub mod handle;
pub mod judge;
pub mod silence;
pub mod store;

use crate::model::{
    CanarySelector, Decision, DecisionKind, DeployEvent, DeployEventKind, DurationMs, Phase,
    Timestamp,
};
use crate::rules::{Action, Baseline, MissingAction, Rule, RuleSet, TestKind};
use judge::{Ctx, Method, Outcome, RuleSeries, SideFilter, Verdict};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use store::{Series, SeriesId, SeriesObserver, Store, StoreError};

/// Engine settings; the defaults suit 10-second scrapes.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How often rules are evaluated (ticks are expected at this spacing).
    pub eval_interval: DurationMs,
    /// The block over which continuous metrics are averaged into one observation.
    pub block: DurationMs,
    /// How long the `full` phase lasts before `watch` begins.
    pub full_for: DurationMs,
    /// At most this many series; new ones beyond it are refused and counted.
    pub max_series: usize,
    /// How many finished deploys to keep for the API.
    pub recent_deploys: usize,
    /// After this long in canary, rules still gathering evidence may let a healthy canary
    /// be promoted if they lean healthy.
    pub promote_after: DurationMs,
    /// What a deploy ends with when none of its stopping rules had data to judge.
    pub no_evidence: NoEvidence,
    /// Per-service overrides of `no_evidence`.
    pub no_evidence_services: BTreeMap<String, NoEvidence>,
}

/// The final decision of a deploy whose stopping rules (rollback, block) never saw data:
/// silence is not health, so by default such a deploy blocks its line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoEvidence {
    /// End with `block`, rule `no_evidence`.
    #[default]
    Block,
    /// End with `pass`, its evidence saying "unjudged".
    Pass,
}

impl EngineConfig {
    /// The `no_evidence` setting in force for `service`.
    pub fn no_evidence_for(&self, service: &str) -> NoEvidence {
        self.no_evidence_services
            .get(service)
            .copied()
            .unwrap_or(self.no_evidence)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            eval_interval: DurationMs::from_secs(10),
            block: DurationMs::from_secs(60),
            full_for: DurationMs::from_secs(300),
            max_series: 1_000_000,
            recent_deploys: 200,
            promote_after: DurationMs::from_secs(300),
            no_evidence: NoEvidence::Block,
            no_evidence_services: BTreeMap::new(),
        }
    }
}

/// Why the engine refused an input. Callers (replay, the API) report these to the sender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// An event names a deploy immune has not seen start.
    #[error("unknown deploy {0:?}")]
    UnknownDeploy(String),
    /// A canary event reuses the id of a deploy already in progress.
    #[error("deploy {0:?} is already in progress")]
    DuplicateDeploy(String),
    /// A required field is missing.
    #[error("{event} event needs the field {field:?}")]
    MissingField {
        /// The event kind.
        event: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The event does not fit the deploy's phase (e.g. `full` twice).
    #[error("deploy {deploy:?} is in phase {phase}, cannot take {event}")]
    WrongPhase {
        /// The deploy.
        deploy: String,
        /// Its phase.
        phase: &'static str,
        /// The event.
        event: &'static str,
    },
    /// The time is not a finite number of seconds.
    #[error("invalid time {0}")]
    BadTime(String),
    /// The series could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters for immune's own metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EngineCounters {
    /// Samples stored.
    pub samples: u64,
    /// Rule evaluations.
    pub evaluations: u64,
    /// Decisions by kind name.
    pub decisions: BTreeMap<&'static str, u64>,
}

/// A service's line: open, or blocked by a deploy's decision.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LineState {
    /// Why it is blocked; `None` when open.
    pub blocked: Option<Blocked>,
    /// Past blocks and unblocks, newest last (bounded).
    pub history: Vec<Value>,
}

/// What blocked a line.
#[derive(Clone, Debug, Serialize)]
pub struct Blocked {
    /// The deploy that was judged.
    pub deploy: String,
    /// The rule that failed.
    pub rule: String,
    /// `rollback` or `block`.
    pub decision: DecisionKind,
    /// When (seconds).
    pub at: f64,
    /// One line for people.
    pub summary: String,
}

struct RuleState {
    rule: usize,
    phases: Vec<Phase>,
    method: Option<Method>,
    /// Whether the rule's series have told which side they are on (and the method, if the
    /// rule can form a test there, is started). Until then the state re-checks at every
    /// evaluation, so series that appear after the canary event (a restart, a deploy
    /// reported before its hosts' first scrape) still join.
    bound: bool,
    /// Bound on this evaluation: its first interval reads from the start of its phase group.
    fresh: bool,
    /// When series first existed with none on the canary: after [`BIND_GRACE`] of that the
    /// rule is taken as fleet-wide (a shared server, e.g. MySQL, never runs the canary).
    waiting_since: Option<Timestamp>,
    fleet_wide: bool,
    last: Option<Outcome>,
    reported: bool,
    /// A source counts as alive (so its silence is a finding) once it has reported since
    /// shortly before the deploy began.
    alive: bool,
    /// What the report page plots: `[at, deploy side, baseline, e-value]` per evaluation.
    trace: Trace,
}

/// A rule's evaluations for the report's charts, bounded: when full, every other point is
/// dropped and only every second evaluation is kept from then on, so a long watch phase
/// costs at most [`TRACE_POINTS`] points with an even spread.
#[derive(Default)]
struct Trace {
    points: Vec<[f64; 4]>,
    every: u32,
    skipped: u32,
}

/// At most this many points per rule and deploy.
const TRACE_POINTS: usize = 240;

impl Trace {
    fn push(&mut self, at: Timestamp, o: &Outcome) {
        self.skipped += 1;
        if self.skipped < self.every.max(1) {
            return;
        }
        self.skipped = 0;
        let num = |path: [&str; 2]| {
            o.evidence
                .get(path[0])
                .and_then(|v| v.get(path[1]))
                .and_then(Value::as_f64)
        };
        let t = num(["treatment", "rate"])
            .or(num(["treatment", "value"]))
            .or(num(["treatment", "last_value"]));
        let b = num(["baseline", "rate"])
            .or(num(["baseline", "value"]))
            .or(num(["baseline", "level"]));
        let f = |v: Option<f64>| v.filter(|x| x.is_finite()).unwrap_or(f64::NAN);
        self.points
            .push([at.as_secs_f64(), f(t), f(b), o.harm_e_value]);
        if self.points.len() >= TRACE_POINTS {
            let kept: Vec<[f64; 4]> = self.points.iter().step_by(2).copied().collect();
            self.points = kept;
            self.every = self.every.max(1) * 2;
        }
    }

    fn json(&self) -> Value {
        Value::Array(
            self.points
                .iter()
                .map(|p| {
                    Value::Array(
                        p.iter()
                            .map(|x| {
                                if x.is_finite() {
                                    json!(judge::round(*x))
                                } else {
                                    Value::Null
                                }
                            })
                            .collect(),
                    )
                })
                .collect(),
        )
    }
}

struct Analysis {
    id: String,
    service: String,
    version: Option<String>,
    commits: Vec<String>,
    by: Option<String>,
    canary: CanarySelector,
    started: Timestamp,
    phase: Phase,
    phase_start: Timestamp,
    full_at: Option<Timestamp>,
    last_eval: Timestamp,
    states: Vec<RuleState>,
    promoted: bool,
    decisions: Vec<Decision>,
    done: bool,
}

/// Series on one side of a comparison for one deploy.
struct Side<'a> {
    canary: &'a CanarySelector,
    want_canary: bool,
    everything: bool,
}

fn is_canary(sel: &CanarySelector, s: &Series) -> bool {
    sel.iter()
        .any(|(label, values)| values.values().contains(&s.label(label)))
}

impl<'a> Side<'a> {
    /// The deploy's side (canary series, or every series when `everything`) and the
    /// control (the non-canary series).
    fn pair(canary: &'a CanarySelector, everything: bool) -> (Side<'a>, Side<'a>) {
        (
            Side {
                canary,
                want_canary: true,
                everything,
            },
            Side {
                canary,
                want_canary: false,
                everything: false,
            },
        )
    }
}

impl SideFilter for Side<'_> {
    fn includes(&self, s: &Series) -> bool {
        self.everything || is_canary(self.canary, s) == self.want_canary
    }
}

struct Index<'a> {
    rules: &'a [Rule],
    series: &'a mut [RuleSeries],
}

impl SeriesObserver for Index<'_> {
    fn on_new_series(&mut self, id: SeriesId, series: &Series) -> bool {
        let mut history = false;
        for (rule, rs) in self.rules.iter().zip(self.series.iter_mut()) {
            let before = rs.main.len() + rs.denom.len() + rs.buckets.len();
            rs.offer(rule, id, series);
            let matched = rs.main.len() + rs.denom.len() + rs.buckets.len() > before;
            history |= matched && matches!(rule.baseline, Baseline::Seasonal { .. });
        }
        history
    }
}

/// The engine.
pub struct Engine {
    cfg: EngineConfig,
    rules: Vec<Rule>,
    rule_series: Vec<RuleSeries>,
    store: Store,
    analyses: BTreeMap<String, Analysis>,
    finished: VecDeque<Analysis>,
    lines: BTreeMap<String, LineState>,
    counters: EngineCounters,
    /// A series silent this long is dropped (see [`expiry`]).
    expire_after: DurationMs,
    /// The same for series keeping per-minute history.
    history_expire_after: DurationMs,
}

/// How long a series may be silent before it is dropped: longer than every window that
/// could read it (the recent retention, which covers every baseline window and the control
/// calibration; every rule's `stale_after`, so a deploy's silence detection fires first),
/// plus slack; series with per-minute history are kept as long as that history.
fn expiry(
    rules: &[Rule],
    cfg: &EngineConfig,
    retention: DurationMs,
    history: DurationMs,
) -> (DurationMs, DurationMs) {
    let stale = rules
        .iter()
        .filter_map(|r| r.on_missing.map(|m| m.stale_after))
        .max()
        .unwrap_or_default();
    let slack = MISSING_LIVENESS_SLACK
        .0
        .saturating_add(cfg.eval_interval.0.saturating_mul(2))
        .saturating_add(cfg.block.0);
    let after = DurationMs(retention.0.max(stale.0).saturating_add(slack));
    (after, DurationMs(after.0.max(history.0)))
}

const MISSING_LIVENESS_SLACK: DurationMs = DurationMs::from_secs(60);

/// Whether any of `rs`'s series has reported since shortly before `since`: within its own
/// stale threshold (see [`silence`]) plus [`MISSING_LIVENESS_SLACK`].
fn alive_since(rs: &RuleSeries, store: &Store, stale_after: DurationMs, since: Timestamp) -> bool {
    rs.liveness().any(|id| {
        let s = store.get(id);
        let horizon = since
            .sub(silence::stale_threshold(s, stale_after))
            .sub(MISSING_LIVENESS_SLACK);
        s.last_seen >= horizon
    })
}

/// How far back a drift failure looks for deploys that could have caused it.
pub const SUSPECT_WINDOW: DurationMs = DurationMs::from_secs(24 * 3600);

impl Engine {
    /// An engine judging with `rules`.
    pub fn new(mut rules: RuleSet, cfg: EngineConfig) -> Engine {
        clamp_windows(&mut rules);
        let longest_pre = rules
            .rules
            .iter()
            .filter_map(|r| match r.baseline {
                Baseline::PreDeploy { window } => Some(window),
                _ => None,
            })
            .max()
            .unwrap_or_default()
            .max(judge::CONTROL_CALIBRATION);
        let longest_season = rules
            .rules
            .iter()
            .filter_map(|r| match r.baseline {
                Baseline::Seasonal { offset } => Some(offset),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        let retention = DurationMs(
            longest_pre
                .0
                .saturating_add(cfg.block.0.saturating_mul(2))
                .saturating_add(cfg.eval_interval.0.saturating_mul(2)),
        );
        let history = DurationMs(longest_season.0.saturating_add(6 * 3_600_000));
        let n = rules.rules.len();
        let (expire_after, history_expire_after) = expiry(&rules.rules, &cfg, retention, history);
        Engine {
            expire_after,
            history_expire_after,
            store: Store::new(retention, history, cfg.max_series),
            rule_series: vec![RuleSeries::default(); n],
            rules: rules.rules,
            cfg,
            analyses: BTreeMap::new(),
            finished: VecDeque::new(),
            lines: BTreeMap::new(),
            counters: EngineCounters::default(),
        }
    }

    /// Replaces the rules (a reload). Analyses in flight keep judging with the rules they
    /// started with where a rule of the same name still exists; series are re-indexed.
    pub fn set_rules(&mut self, mut rules: RuleSet) {
        clamp_windows(&mut rules);
        let old_names: Vec<String> = self.rules.iter().map(|r| r.name.clone()).collect();
        self.rules = rules.rules;
        self.rule_series = vec![RuleSeries::default(); self.rules.len()];
        let ids: Vec<SeriesId> = self.store.iter().map(|(id, _)| id).collect();
        for id in ids {
            let s = self.store.get(id);
            for (rule, rs) in self.rules.iter().zip(self.rule_series.iter_mut()) {
                rs.offer(rule, id, s);
            }
        }
        let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        for a in self.analyses.values_mut() {
            a.states.retain_mut(
                |st| match names.iter().position(|n| *n == old_names[st.rule]) {
                    Some(i) => {
                        st.rule = i;
                        true
                    }
                    None => false,
                },
            );
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Stores a sample given as series text (`name{labels}`).
    pub fn ingest_text(
        &mut self,
        series: &str,
        value: f64,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let mut index = Index {
            rules: &self.rules,
            series: &mut self.rule_series,
        };
        let id = self.store.intern(series, &mut index)?;
        self.store.push(id, at, value);
        self.counters.samples += 1;
        Ok(())
    }

    /// Stores a sample given as name and labels.
    pub fn ingest(
        &mut self,
        name: &str,
        labels: &[(String, String)],
        value: f64,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let mut index = Index {
            rules: &self.rules,
            series: &mut self.rule_series,
        };
        let id = self.store.intern_labels(name, labels, &mut index)?;
        self.store.push(id, at, value);
        self.counters.samples += 1;
        Ok(())
    }

    /// The store, for metrics and inspection.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counters for immune's own metrics.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Applies a deploy event; returns any decision it causes at once (a canary on a
    /// blocked line, the final decision of `end` and `abort`).
    pub fn deploy_event(&mut self, ev: &DeployEvent) -> Result<Vec<Decision>, EngineError> {
        let at = Timestamp::from_secs_f64(ev.at)
            .ok_or_else(|| EngineError::BadTime(ev.at.to_string()))?;
        let name = event_name(ev.event);
        if ev.event == DeployEventKind::Unblock {
            let service = ev.service.clone().ok_or(EngineError::MissingField {
                event: name,
                field: "service",
            })?;
            let line = self.lines.entry(service).or_default();
            if let Some(b) = line.blocked.take() {
                push_bounded(
                    &mut line.history,
                    json!({
                        "at": ev.at, "event": "unblock", "by": ev.by, "reason": ev.reason,
                        "was_blocked_by": {"deploy": b.deploy, "rule": b.rule},
                    }),
                );
            }
            return Ok(Vec::new());
        }
        let id = ev.deploy.clone().ok_or(EngineError::MissingField {
            event: name,
            field: "deploy",
        })?;
        // A deploy immune already decided (a rollback ends it) still gets the deploy
        // tool's later events; they change nothing.
        if ev.event != DeployEventKind::Canary
            && !self.analyses.contains_key(&id)
            && self.finished.iter().any(|a| a.id == id)
        {
            return Ok(Vec::new());
        }
        match ev.event {
            DeployEventKind::Canary => self.start(ev, id, at),
            DeployEventKind::Full => {
                let a = self
                    .analyses
                    .get_mut(&id)
                    .ok_or_else(|| EngineError::UnknownDeploy(id.clone()))?;
                if a.phase != Phase::Canary {
                    return Err(EngineError::WrongPhase {
                        deploy: id,
                        phase: a.phase.as_str(),
                        event: name,
                    });
                }
                a.phase = Phase::Full;
                a.phase_start = at;
                a.full_at = Some(at);
                a.last_eval = at;
                Ok(Vec::new())
            }
            DeployEventKind::End | DeployEventKind::Abort => {
                let Some(mut a) = self.analyses.remove(&id) else {
                    return Err(EngineError::UnknownDeploy(id));
                };
                let mut evidence = summary_of(&a, &self.rules);
                let check = self.evidence_check(&a);
                check.annotate(&mut evidence);
                let mut kind = DecisionKind::Pass;
                let mut rule = "all_rules";
                if ev.event == DeployEventKind::Abort {
                    evidence["aborted"] = json!({"by": ev.by, "reason": ev.reason});
                } else if check.unjudged() {
                    let policy = self.cfg.no_evidence_for(&a.service);
                    check.explain(&mut evidence, policy);
                    if policy == NoEvidence::Block {
                        kind = DecisionKind::Block;
                        rule = "no_evidence";
                    }
                }
                let d = decision(&a, at, kind, rule, true, false, evidence);
                if kind.blocks_line() {
                    self.block_line(&a, &d);
                }
                a.decisions.push(d.clone());
                self.finish(a);
                self.count(&d);
                Ok(vec![d])
            }
            DeployEventKind::Unblock => Ok(Vec::new()),
        }
    }

    fn start(
        &mut self,
        ev: &DeployEvent,
        id: String,
        at: Timestamp,
    ) -> Result<Vec<Decision>, EngineError> {
        if self.analyses.contains_key(&id) {
            return Err(EngineError::DuplicateDeploy(id));
        }
        let service = ev.service.clone().ok_or(EngineError::MissingField {
            event: "canary",
            field: "service",
        })?;
        let canary = ev.canary.clone().ok_or(EngineError::MissingField {
            event: "canary",
            field: "canary",
        })?;
        let mut a = Analysis {
            id,
            service: service.clone(),
            version: ev.version.clone(),
            commits: ev.commits.clone(),
            by: ev.by.clone(),
            canary,
            started: at,
            phase: Phase::Canary,
            phase_start: at,
            full_at: None,
            last_eval: at,
            states: Vec::new(),
            promoted: false,
            decisions: Vec::new(),
            done: false,
        };
        if let Some(b) = self.lines.get(&service).and_then(|l| l.blocked.clone()) {
            let evidence = json!({
                "summary": format!("line of {service} is blocked by deploy {} (rule {}) since {}", b.deploy, b.rule, b.at),
                "blocked_by": {"deploy": b.deploy, "rule": b.rule, "decision": b.decision, "at": b.at},
            });
            let d = decision(
                &a,
                at,
                DecisionKind::Block,
                "line_blocked",
                true,
                false,
                evidence,
            );
            a.decisions.push(d.clone());
            self.finish(a);
            self.count(&d);
            return Ok(vec![d]);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.services.is_empty() && !rule.services.contains(&service) {
                continue;
            }
            let alive = self.alive(i, at);
            for phases in phase_groups(rule) {
                // A control comparison needs canary and control hosts: outside the canary
                // (every host runs the new version) it can never form, so it is settled now.
                let never = rule.baseline == Baseline::Control && phases != [Phase::Canary];
                a.states.push(RuleState {
                    rule: i,
                    phases,
                    method: None,
                    bound: never,
                    fresh: false,
                    waiting_since: None,
                    fleet_wide: false,
                    last: None,
                    reported: false,
                    alive,
                    trace: Trace::default(),
                });
            }
        }
        self.analyses.insert(a.id.clone(), a);
        Ok(Vec::new())
    }

    /// Whether rule `i`'s source has reported since shortly before `since` (its silence
    /// from then on is a finding).
    fn alive(&self, i: usize, since: Timestamp) -> bool {
        let rule = &self.rules[i];
        rule.on_missing
            .is_some_and(|m| alive_since(&self.rule_series[i], &self.store, m.stale_after, since))
    }

    /// Blocks `a`'s service's line with its final decision `d`.
    fn block_line(&mut self, a: &Analysis, d: &Decision) {
        let line = self.lines.entry(a.service.clone()).or_default();
        let summary = d
            .evidence
            .get("summary")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        line.blocked = Some(Blocked {
            deploy: a.id.clone(),
            rule: d.rule.clone(),
            decision: d.decision,
            at: d.at,
            summary,
        });
        push_bounded(
            &mut line.history,
            json!({"at": d.at, "event": "blocked", "deploy": a.id, "rule": d.rule}),
        );
    }

    fn finish(&mut self, mut a: Analysis) {
        a.done = true;
        a.states.iter_mut().for_each(|s| s.method = None);
        self.finished.push_back(a);
        while self.finished.len() > self.cfg.recent_deploys {
            self.finished.pop_front();
        }
    }

    fn count(&mut self, d: &Decision) {
        *self
            .counters
            .decisions
            .entry(d.decision.as_str())
            .or_default() += 1;
    }

    /// Drops series silent past every window that could read them, a bounded share of
    /// the store per tick (a full pass takes about a quarter of the expiry time), so a
    /// full store makes room for new hosts without a scan per sample.
    fn expire(&mut self, now: Timestamp) {
        let len = self.store.len() as i64;
        let share =
            len.saturating_mul(self.cfg.eval_interval.0.max(1)) / self.expire_after.0.max(1);
        let budget =
            usize::try_from(share.saturating_mul(4).saturating_add(64)).unwrap_or(usize::MAX);
        let gone = self
            .store
            .expire(now, self.expire_after, self.history_expire_after, budget);
        if gone.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<SeriesId> = gone.into_iter().collect();
        for rs in &mut self.rule_series {
            rs.main.retain(|id| !gone.contains(id));
            rs.denom.retain(|id| !gone.contains(id));
            rs.buckets.retain(|(id, _)| !gone.contains(id));
        }
    }

    /// Evaluates every active deploy over the interval since its last evaluation.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Decision> {
        self.expire(now);
        let mut out = Vec::new();
        let ids: Vec<String> = self.analyses.keys().cloned().collect();
        for id in ids {
            let Some(mut a) = self.analyses.remove(&id) else {
                continue;
            };
            if now <= a.last_eval {
                self.analyses.insert(id, a);
                continue;
            }
            if a.phase == Phase::Full
                && let Some(f) = a.full_at
                && now.since(f) >= self.cfg.full_for
            {
                a.phase = Phase::Watch;
                a.phase_start = now;
            }
            let decisions = self.evaluate(&mut a, now);
            a.last_eval = now;
            for d in &decisions {
                self.count(d);
            }
            let ended = decisions.iter().any(|d| d.r#final);
            if let Some(d) = decisions
                .iter()
                .find(|d| d.r#final && d.decision.blocks_line())
            {
                self.block_line(&a, d);
            }
            a.decisions.extend(decisions.iter().cloned());
            out.extend(decisions);
            if ended {
                self.finish(a);
            } else {
                self.analyses.insert(id, a);
            }
        }
        out
    }

    fn evaluate(&mut self, a: &mut Analysis, now: Timestamp) -> Vec<Decision> {
        let mut out = Vec::new();
        let phase = a.phase;
        let mut family: Vec<(usize, f64, f64)> = Vec::new(); // (state index, p, alpha)
        let mut missing: Vec<(usize, MissingAction, Value)> = Vec::new();
        for (si, st) in a.states.iter_mut().enumerate() {
            let rule = &self.rules[st.rule];
            let rs = &self.rule_series[st.rule];
            // A test runs from the start of the first phase of its group.
            let phase_start = match st.phases.first() {
                Some(Phase::Canary) => a.started,
                Some(Phase::Full) => a.full_at.unwrap_or(a.phase_start),
                _ => a.phase_start,
            };
            if !st.bound {
                let in_canary = st.phases == [Phase::Canary];
                let mut sides = sides_of(rs, &self.store, &a.canary, in_canary);
                if sides.is_none() && rs.liveness().next().is_some() {
                    // Series on other hosts only: wait a little for the canary's first
                    // scrape, then judge the rule fleet-wide, as a shared server is.
                    let since = *st.waiting_since.get_or_insert(now);
                    if now.since(since) >= bind_grace(&self.cfg) {
                        sides = Some(true);
                    }
                }
                if let Some(fleet_wide) = sides {
                    st.bound = true;
                    st.fresh = true;
                    st.fleet_wide = fleet_wide;
                    let usable =
                        !(rule.baseline == Baseline::Control && (fleet_wide || !in_canary));
                    if usable {
                        let (treatment, control) = Side::pair(&a.canary, fleet_wide || !in_canary);
                        st.method = Method::start(&Ctx {
                            store: &self.store,
                            rule,
                            rs,
                            treatment: &treatment,
                            control: &control,
                            from: phase_start,
                            to: phase_start,
                            phase_start,
                            deploy_start: a.started,
                            alpha: phase_alpha(rule),
                            block: self.cfg.block,
                        });
                    }
                }
            }
            // Every group binds as early as it can, also before its phase: a later
            // group's method reads the pre-deploy window now, while the store holds it.
            if !st.phases.contains(&phase) {
                continue;
            }
            if !st.alive
                && let Some(m) = rule.on_missing
            {
                st.alive = alive_since(rs, &self.store, m.stale_after, a.started);
            }
            // Until bound, silence is watched where the series are: fleet-wide unless a
            // canary series exists.
            let fleet_wide = if st.bound {
                st.fleet_wide
            } else {
                !has_canary(rs, &self.store, &a.canary)
            };
            let everything = fleet_wide || phase != Phase::Canary;
            let (treatment, control) = Side::pair(&a.canary, everything);
            let from = if std::mem::take(&mut st.fresh) {
                phase_start.min(a.last_eval)
            } else {
                a.last_eval
            };
            let ctx = Ctx {
                store: &self.store,
                rule,
                rs,
                treatment: &treatment,
                control: &control,
                from,
                to: now,
                phase_start,
                deploy_start: a.started,
                alpha: phase_alpha(rule),
                block: self.cfg.block,
            };
            if let Some(m) = rule.on_missing
                && st.alive
                && !st.reported
                && m.action != MissingAction::Ignore
            {
                let live: Vec<&Series> = rs
                    .liveness()
                    .map(|id| self.store.get(id))
                    .filter(|s| treatment.includes(s))
                    .collect();
                let newest = live.iter().map(|s| s.last_seen).max();
                let silence = silence::group_stale_at(live.iter().copied(), m.stale_after);
                if let Some(newest) = newest
                    && let Some(g) = silence
                    && now >= g.at
                {
                    let interval = live
                        .iter()
                        .filter(|s| s.last_seen == g.last_seen)
                        .find_map(|s| silence::scrape_interval(s));
                    missing.push((si, m.action, json!({
                        "test": "missing_data",
                        "summary": format!("{}: no samples from {} series of {} for {} (stale after {}: the longer of stale_after {} and {} scrape intervals)",
                            rule.name, live.len(), rule.selector, now.since(newest), g.threshold, m.stale_after, silence::STALE_SCRAPES),
                        "last_sample_at": newest.as_secs_f64(),
                        "silent_for_seconds": now.since(newest).as_secs_f64(),
                        "stale_after_seconds": m.stale_after.as_secs_f64(),
                        "effective_stale_after_seconds": g.threshold.as_secs_f64(),
                        "scrape_interval_seconds": interval.map(DurationMs::as_secs_f64),
                        "stale_scrapes": silence::STALE_SCRAPES,
                        "series": live.len(),
                    })));
                }
            }
            let Some(method) = st.method.as_mut() else {
                // A rule whose series exist but have not yet told their side counts in the
                // family with p = 1, as a bound rule without enough data does, so the
                // family does not grow when it binds. A rule with no series at all is left
                // out (as at the canary event before): it may never bind, and counting it
                // would cost every other rule power.
                if !st.bound && !rule.shadow && rs.liveness().next().is_some() {
                    family.push((si, 1.0, phase_alpha(rule)));
                }
                continue;
            };
            let outcome = method.evaluate(&ctx);
            self.counters.evaluations += 1;
            // Every rule that can judge counts in the family from the start (its p-value is
            // 1 until it has enough data): a family that grew as rules became eligible
            // would let early rejections pay a smaller share of alpha.
            if !rule.shadow {
                family.push((si, outcome.p_value, outcome.alpha));
            }
            st.trace.push(now, &outcome);
            st.last = Some(outcome);
        }
        // Silence first: a source that locked up is the loudest signal there is.
        for (si, action, evidence) in missing {
            let st = &mut a.states[si];
            st.reported = true;
            let rule = &self.rules[st.rule];
            let kind = match action {
                MissingAction::Rollback => DecisionKind::Rollback,
                MissingAction::Block => DecisionKind::Block,
                _ => DecisionKind::Warn,
            };
            let fin = kind.blocks_line() && !rule.shadow;
            out.push(decision(
                a,
                now,
                kind,
                &rule.name,
                fin,
                rule.shadow,
                evidence,
            ));
            if fin {
                return out;
            }
        }
        // Shadow rules: judged alone at their own alpha, reported once, never acted on.
        for si in 0..a.states.len() {
            let st = &a.states[si];
            let rule = &self.rules[st.rule];
            if rule.shadow
                && !st.reported
                && let Some(o) = &st.last
                && o.verdict == Verdict::Fail
            {
                let mut ev = o.evidence.clone();
                annotate(&mut ev, rule, o.alpha, o.alpha, 1);
                let kind = action_kind(rule.action);
                out.push(decision(a, now, kind, &rule.name, false, true, ev));
                a.states[si].reported = true;
            }
        }
        // Holm within each action class: rules that stop the line (rollback, block) form
        // one family, warnings another, so adding warn rules costs the stopping rules no
        // power and a false warning is never a false rollback.
        let mut failing: Vec<(usize, f64, f64, usize)> = Vec::new(); // (state, p/α, threshold, family size)
        for stops in [true, false] {
            let members: Vec<&(usize, f64, f64)> = family
                .iter()
                .filter(|f| (self.rules[a.states[f.0].rule].action != Action::Warn) == stops)
                .collect();
            let ps: Vec<f64> = members.iter().map(|f| f.1).collect();
            let alphas: Vec<f64> = members.iter().map(|f| f.2).collect();
            let rejected = crate::stats::multiple::holm_weighted(&ps, &alphas);
            let mut order: Vec<&&(usize, f64, f64)> = members
                .iter()
                .zip(&rejected)
                .filter(|(_, r)| **r)
                .map(|(f, _)| f)
                .collect();
            order.sort_by(|x, y| (x.1 / x.2).total_cmp(&(y.1 / y.2)));
            let m = members.len();
            for (step, f) in order.into_iter().enumerate() {
                failing.push((f.0, f.1 / f.2, f.2 / (m - step) as f64, m));
            }
        }
        failing.sort_by(|x, y| {
            let rx = action_rank(self.rules[a.states[x.0].rule].action);
            let ry = action_rank(self.rules[a.states[y.0].rule].action);
            ry.cmp(&rx).then(x.1.total_cmp(&y.1))
        });
        let also: Vec<String> = failing
            .iter()
            .skip(1)
            .map(|f| self.rules[a.states[f.0].rule].name.clone())
            .collect();
        for (n, &(si, _, threshold, m)) in failing.iter().enumerate() {
            let si = &si;
            let st = &a.states[*si];
            let rule = &self.rules[st.rule];
            if st.reported {
                continue;
            }
            let Some(o) = &st.last else { continue };
            let kind = action_kind(rule.action);
            let fin = kind.blocks_line();
            let mut ev = o.evidence.clone();
            annotate(&mut ev, rule, o.alpha, threshold, m);
            if n == 0 && !also.is_empty() {
                ev["also_failing"] = json!(also);
            }
            if rule.test == TestKind::Drift {
                // A slow failure may have been set off by an earlier deploy as well.
                ev["suspects"] = json!(self.suspects(a, now));
            }
            out.push(decision(a, now, kind, &rule.name, fin, false, ev));
            a.states[*si].reported = true;
            if fin {
                return out;
            }
        }
        // Promote when every rule that can judge the canary says it is healthy.
        if phase == Phase::Canary && !a.promoted {
            let judging: Vec<&RuleState> = a
                .states
                .iter()
                .filter(|s| {
                    s.phases.contains(&Phase::Canary)
                        && s.method.is_some()
                        && !self.rules[s.rule].shadow
                })
                .filter(|s| {
                    let rs = &self.rule_series[s.rule];
                    !(rs.main.is_empty() && rs.buckets.is_empty())
                })
                .collect();
            // Healthy: every rule has evidence the canary is no worse than its smallest
            // effect; or, once the canary has run `promote_after`, every rule without that
            // evidence (rare events take long to show it, or never reach min_data) leans
            // healthy: its e-value against "no regression" is below 1.
            let waited = now.since(a.phase_start) >= self.cfg.promote_after;
            let healthy = !judging.is_empty()
                && judging.iter().all(|s| {
                    s.last.as_ref().is_some_and(|o| {
                        o.verdict == Verdict::Pass
                            || (waited
                                && o.verdict == Verdict::Inconclusive
                                && o.harm_e_value < 1.0)
                    })
                });
            if healthy {
                a.promoted = true;
                let evidence = summary_of(a, &self.rules);
                out.push(decision(
                    a,
                    now,
                    DecisionKind::Promote,
                    "all_rules",
                    false,
                    false,
                    evidence,
                ));
            }
        }
        out
    }

    /// The deploys that could have set off a slow failure seen at `now` while judging
    /// `current`: it, and every other deploy of its service that started before it within
    /// [`SUSPECT_WINDOW`], newest first.
    fn suspects(&self, current: &Analysis, now: Timestamp) -> Vec<Value> {
        let mut v: Vec<&Analysis> = std::iter::once(current)
            .chain(self.analyses.values())
            .chain(self.finished.iter())
            .filter(|a| a.service == current.service && a.started <= current.started)
            .filter(|a| now.since(a.started) <= SUSPECT_WINDOW)
            .collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.started));
        v.iter()
            .map(|a| json!({"deploy": a.id, "version": a.version, "started_at": a.started.as_secs_f64()}))
            .collect()
    }

    /// The earliest instant after `after` at which a tick with no new sample could change
    /// anything: a phase ending (`full_for`), `promote_after` running out, a source's
    /// silence reaching `stale_after`, `min_data.duration` being reached, the block holding
    /// the newest sample closing, or a rule's wait for the canary's series running out.
    /// `None` when nothing is pending: replay then jumps straight to the next input, so
    /// the cost of a gap in the data follows the data, not the gap's length.
    pub fn next_change(&self, after: Timestamp) -> Option<Timestamp> {
        let mut best: Option<Timestamp> = None;
        let mut offer = |t: Timestamp| {
            if t > after && best.is_none_or(|b| t < b) {
                best = Some(t);
            }
        };
        let newest = self.store.newest();
        for a in self.analyses.values() {
            if a.phase == Phase::Full
                && let Some(f) = a.full_at
            {
                offer(f.add(self.cfg.full_for));
            }
            if a.phase == Phase::Canary && !a.promoted {
                offer(a.phase_start.add(self.cfg.promote_after));
            }
            if let Some(n) = newest {
                for start in [Some(a.started), a.full_at].into_iter().flatten() {
                    let block = self.cfg.block.0.max(1);
                    let k = n.0.saturating_sub(start.0).max(0) / block + 1;
                    offer(start.add(DurationMs(k.saturating_mul(block))));
                }
            }
            for st in &a.states {
                let rule = &self.rules[st.rule];
                offer(a.phase_start.add(rule.min_data.duration));
                if let Some(w) = st.waiting_since {
                    offer(w.add(bind_grace(&self.cfg)));
                }
                if let Some(m) = rule.on_missing
                    && st.alive
                    && !st.reported
                {
                    // Every series' own stale instant: the deploy's side goes silent at
                    // the latest of its series', which is one of these.
                    for id in self.rule_series[st.rule].liveness() {
                        let s = self.store.get(id);
                        offer(s.last_seen.add(silence::stale_threshold(s, m.stale_after)));
                    }
                }
            }
        }
        best
    }

    /// Ends every deploy still open (end of replay input) with its final decision.
    pub fn finish_all(&mut self, now: Timestamp) -> Vec<Decision> {
        let ids: Vec<String> = self.analyses.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            let ev = DeployEvent {
                at: now.as_secs_f64(),
                deploy: Some(id),
                event: DeployEventKind::End,
                service: None,
                version: None,
                commits: Vec::new(),
                canary: None,
                by: None,
                reason: Some("end of input".into()),
            };
            if let Ok(mut ds) = self.deploy_event(&ev) {
                for d in &mut ds {
                    d.evidence["end_of_input"] = json!(true);
                }
                out.extend(ds);
            }
        }
        out
    }

    /// Blocks `service`'s line again with a decision recorded before a restart, so a
    /// restart never opens a line a person has not acknowledged.
    pub fn restore_block(&mut self, service: &str, d: &Decision) {
        let line = self.lines.entry(service.to_string()).or_default();
        if line.blocked.is_none() {
            line.blocked = Some(Blocked {
                deploy: d.deploy.clone(),
                rule: d.rule.clone(),
                decision: d.decision,
                at: d.at,
                summary: d
                    .evidence
                    .get("summary")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }

    /// A service's line.
    pub fn line(&self, service: &str) -> LineState {
        self.lines.get(service).cloned().unwrap_or_default()
    }

    /// Every service's line that has ever been blocked.
    pub fn lines(&self) -> &BTreeMap<String, LineState> {
        &self.lines
    }

    /// One deploy, active or recent, as JSON: phase, each rule's state, decisions.
    pub fn deploy_view(&self, id: &str) -> Option<Value> {
        let a = self
            .analyses
            .get(id)
            .or_else(|| self.finished.iter().rev().find(|a| a.id == id))?;
        Some(self.view(a))
    }

    /// Every active and recent deploy, newest first.
    pub fn deploys(&self) -> Vec<Value> {
        let mut v: Vec<&Analysis> = self.analyses.values().chain(self.finished.iter()).collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.started));
        v.into_iter().map(|a| self.view(a)).collect()
    }

    /// Number of deploys being judged.
    pub fn active_deploys(&self) -> usize {
        self.analyses.len()
    }

    fn view(&self, a: &Analysis) -> Value {
        let rules: Vec<Value> = a
            .states
            .iter()
            .map(|s| {
                let r = &self.rules[s.rule];
                json!({
                    "rule": r.name,
                    "description": r.description,
                    "action": match r.action { Action::Rollback => "rollback", Action::Block => "block", Action::Warn => "warn" },
                    "phases": s.phases,
                    "baseline": r.baseline.as_str(),
                    "shadow": r.shadow,
                    "state": s.last.as_ref().map(|o| o.verdict),
                    "evidence": s.last.as_ref().map(|o| o.evidence.clone()),
                    "trace": s.trace.json(),
                })
            })
            .collect();
        json!({
            "deploy": a.id,
            "service": a.service,
            "version": a.version,
            "commits": a.commits,
            "canary": a.canary,
            "by": a.by,
            "started_at": a.started.as_secs_f64(),
            "full_at": a.full_at.map(|t| t.as_secs_f64()),
            "phase": if a.done { "done" } else { a.phase.as_str() },
            "promoted": a.promoted,
            "rules": rules,
            "decisions": a.decisions,
        })
    }
}

/// How long a rule whose series exist only off the canary waits for the canary's own
/// series before it is judged fleet-wide: one block, and at least three evaluations (a
/// scrape or two after a restart or a deploy reported before its hosts' first scrape).
fn bind_grace(cfg: &EngineConfig) -> DurationMs {
    DurationMs(cfg.block.0.max(cfg.eval_interval.0.saturating_mul(3)))
}

fn has_canary(rs: &RuleSeries, store: &Store, canary: &CanarySelector) -> bool {
    rs.liveness().any(|id| is_canary(canary, store.get(id)))
}

/// Which side a rule's series are on, once they exist: `Some(true)` when none carries the
/// canary selector's labels (a fleet-wide series, e.g. a business metric), `Some(false)`
/// when a canary series exists (or, outside the canary, any series); `None` while there is
/// nothing to tell by yet.
fn sides_of(
    rs: &RuleSeries,
    store: &Store,
    canary: &CanarySelector,
    in_canary: bool,
) -> Option<bool> {
    let mut any = false;
    let mut labelled = false;
    for id in rs.liveness() {
        let s = store.get(id);
        if is_canary(canary, s) {
            return Some(false);
        }
        any = true;
        labelled |= canary.keys().any(|l| !s.label(l).is_empty());
    }
    match (any, labelled) {
        (false, _) => None,
        (true, false) => Some(true),
        (true, true) => (!in_canary).then_some(false),
    }
}

/// The longest `pre_deploy` baseline window the engine reads. A longer one (a typo such as
/// `106751991167d`) would make every deploy's start walk billions of empty blocks and keep
/// points beyond any use; it is cut to this, with a warning.
pub const MAX_BASELINE_WINDOW: DurationMs = DurationMs::from_secs(31 * 86_400);

fn clamp_windows(rules: &mut RuleSet) {
    for r in &mut rules.rules {
        if let Baseline::PreDeploy { window } = &mut r.baseline
            && *window > MAX_BASELINE_WINDOW
        {
            tracing::warn!(
                rule = %r.name,
                window = %window,
                max = %MAX_BASELINE_WINDOW,
                "Baseline window is longer than the engine reads; it is cut to the maximum."
            );
            *window = MAX_BASELINE_WINDOW;
        }
    }
}

fn push_bounded(v: &mut Vec<Value>, item: Value) {
    v.push(item);
    if v.len() > 50 {
        v.remove(0);
    }
}

fn event_name(k: DeployEventKind) -> &'static str {
    match k {
        DeployEventKind::Canary => "canary",
        DeployEventKind::Full => "full",
        DeployEventKind::End => "end",
        DeployEventKind::Abort => "abort",
        DeployEventKind::Unblock => "unblock",
    }
}

/// The phases a rule judges, grouped into one test per group: the canary (canary hosts
/// against a baseline) apart from full and watch (every host), which see the same series
/// and so form one test over both; a drift test spans all its phases.
fn phase_groups(rule: &Rule) -> Vec<Vec<Phase>> {
    if rule.test == TestKind::Drift {
        return vec![rule.phases.clone()];
    }
    let (canary, rest): (Vec<Phase>, Vec<Phase>) =
        rule.phases.iter().partition(|p| **p == Phase::Canary);
    [canary, rest]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect()
}

/// A rule's alpha is shared equally by its phase groups.
fn phase_alpha(rule: &Rule) -> f64 {
    rule.alpha / phase_groups(rule).len().max(1) as f64
}

fn action_kind(a: Action) -> DecisionKind {
    match a {
        Action::Rollback => DecisionKind::Rollback,
        Action::Block => DecisionKind::Block,
        Action::Warn => DecisionKind::Warn,
    }
}

fn action_rank(a: Action) -> u8 {
    match a {
        Action::Rollback => 2,
        Action::Block => 1,
        Action::Warn => 0,
    }
}

/// Adds the rule's settings and a one-line summary to a failing outcome's evidence.
fn annotate(ev: &mut Value, rule: &Rule, alpha: f64, threshold: f64, family: usize) {
    let num = |path: &[&str]| {
        let mut v = &*ev;
        for p in path {
            v = v.get(p)?;
        }
        v.as_f64()
    };
    let effect = num(&["effect", "ratio"])
        .map(|r| format!("{:+.0}%", (r - 1.0) * 100.0))
        .or_else(|| num(&["effect", "relative"]).map(|r| format!("{:+.1}%", r * 100.0)))
        .unwrap_or_else(|| "n/a".into());
    let (t, b) = match (num(&["treatment", "rate"]), num(&["baseline", "rate"])) {
        (Some(t), Some(b)) => (t, b),
        _ => (
            num(&["treatment", "value"])
                .or(num(&["treatment", "last_value"]))
                .unwrap_or(f64::NAN),
            num(&["baseline", "value"])
                .or(num(&["baseline", "level"]))
                .unwrap_or(f64::NAN),
        ),
    };
    let p = num(&["p_value"]).unwrap_or(f64::NAN);
    let summary = format!(
        "{}: {} {:.4} vs {} {:.4} ({}), p={:.2e} <= {:.2e} ({} rules, Holm)",
        rule.name,
        "deploy",
        t,
        rule.baseline.as_str(),
        b,
        effect,
        p,
        threshold,
        family
    );
    if let Value::Object(m) = ev {
        m.insert("summary".into(), json!(summary));
        m.insert("baseline_kind".into(), json!(rule.baseline.as_str()));
        m.insert("alpha".into(), json!(alpha));
        m.insert("threshold".into(), json!(judge::round(threshold)));
        m.insert("family_size".into(), json!(family));
        m.insert("selector".into(), json!(rule.selector.to_string()));
        m.insert(
            "origin".into(),
            json!(format!("{}:{}", rule.origin.file, rule.origin.line)),
        );
    }
}

fn summary_of(a: &Analysis, rules: &[Rule]) -> Value {
    let mut states = serde_json::Map::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in &a.states {
        let verdict = s.last.as_ref().map(|o| o.verdict);
        let name = match verdict {
            Some(Verdict::Pass) => "healthy",
            Some(Verdict::Fail) => "failing",
            Some(Verdict::Inconclusive) => "inconclusive",
            Some(Verdict::NoData) | None => "not evaluated",
        };
        *counts.entry(name).or_default() += 1;
        let key = if s.phases.len() == 1 {
            format!("{}@{}", rules[s.rule].name, s.phases[0].as_str())
        } else {
            rules[s.rule].name.clone()
        };
        states.insert(key, verdict.map_or(json!("not_evaluated"), |v| json!(v)));
    }
    let warnings: Vec<&str> = a
        .decisions
        .iter()
        .filter(|d| d.decision == DecisionKind::Warn)
        .map(|d| d.rule.as_str())
        .collect();
    let tally: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    json!({
        "summary": format!(
            "{} rule checks: {}; {} warnings{}",
            a.states.len(),
            tally.join(", "),
            warnings.len(),
            if warnings.is_empty() { String::new() } else { format!(" ({})", warnings.join(", ")) }
        ),
        "rules": states,
        "warnings": warnings,
    })
}

fn decision(
    a: &Analysis,
    at: Timestamp,
    kind: DecisionKind,
    rule: &str,
    fin: bool,
    shadow: bool,
    evidence: Value,
) -> Decision {
    Decision {
        at: at.as_secs_f64(),
        deploy: a.id.clone(),
        service: a.service.clone(),
        version: a.version.clone(),
        decision: kind,
        phase: a.phase,
        rule: rule.to_string(),
        r#final: fin,
        shadow,
        evidence,
    }
}
