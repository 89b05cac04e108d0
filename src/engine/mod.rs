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
//!
//! Where things are: this file holds the engine's state and inputs; `deploy.rs` what a
//! deploy event does, `evaluate.rs` what a tick does, `silence.rs` when silence is a
//! finding, `decide.rs` how an outcome becomes a decision, `view.rs` the JSON views,
//! `evidence.rs` whether a deploy had anything to judge.

pub mod batch;
pub mod catalog;
mod decide;
mod deploy;
mod evaluate;
mod evidence;
pub mod handle;
pub mod judge;
mod resume;
pub mod season;
mod side;
pub mod silence;
pub mod store;
mod view;

use crate::model::{CanarySelector, Decision, DecisionKind, DurationMs, Phase, Timestamp};
use crate::rules::{Baseline, Rule, RuleSet};
use evaluate::sides_of;
use judge::{Method, Outcome, RuleSeries};
use serde::Serialize;
use serde_json::{Value, json};
use side::{CanaryMembers, Side, is_canary};
use std::collections::{BTreeMap, VecDeque};
use store::{Series, SeriesId, SeriesNeeds, SeriesObserver, Store, StoreError};

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
    /// Samples stored (`immune_samples_ingested_total`); those dropped as out of order
    /// are counted by the store instead.
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
    /// Seasonal rules whose season comes from the TSDB, by rule name (see `season.rs`).
    seasons: BTreeMap<String, season::Season>,
}

struct Index<'a> {
    rules: &'a [Rule],
    series: &'a mut [RuleSeries],
    /// Whether series seasonal rules read keep per-minute history (not when seasons
    /// come from a TSDB).
    history: bool,
}

impl SeriesObserver for Index<'_> {
    fn on_new_series(&mut self, id: SeriesId, series: &Series) -> SeriesNeeds {
        let mut needs = offer_all(self.rules, self.series, id, series);
        needs.history &= self.history;
        needs
    }
}

/// Offers a series to every rule's index and says what the rules that took it need kept:
/// per-minute history for a seasonal rule, the long retention for a count judged against
/// the control (its calibration reads [`judge::COUNT_CALIBRATION`] before the deploy).
fn offer_all(
    rules: &[Rule],
    index: &mut [RuleSeries],
    id: SeriesId,
    series: &Series,
) -> SeriesNeeds {
    let mut needs = SeriesNeeds::default();
    for (rule, rs) in rules.iter().zip(index.iter_mut()) {
        let before = rs.main.len() + rs.denom.len() + rs.buckets.len();
        rs.offer(rule, id, series);
        if rs.main.len() + rs.denom.len() + rs.buckets.len() > before {
            needs.history |= matches!(rule.baseline, Baseline::Seasonal { .. });
            needs.long |= rule.counts_events() && rule.baseline == Baseline::Control;
        }
    }
    needs
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
    /// Seasonal baselines are read from a TSDB at each deploy's start (`season.rs`).
    season_tsdb: bool,
    /// Season spans asked for, not yet taken by the caller.
    season_requests: Vec<season::SeasonRequest>,
}

/// How much the store keeps and when silent series expire: both follow the rules in
/// force, so they are computed at start and again at every reload (a reload that adds a
/// longer `baseline_window` or `seasonal_offset` must not find its window already cut).
struct Horizons {
    /// Recent points per series: the longest pre-deploy window or the continuous
    /// calibration.
    retention: DurationMs,
    /// Recent points per series a count-against-control rule reads: also its calibration.
    long_retention: DurationMs,
    /// Per-minute history for seasonal rules: the longest season plus 6 h.
    history: DurationMs,
    expire_after: DurationMs,
    history_expire_after: DurationMs,
}

impl Horizons {
    fn of(rules: &[Rule], cfg: &EngineConfig) -> Horizons {
        let longest_pre = rules
            .iter()
            .filter_map(|r| match r.baseline {
                Baseline::PreDeploy { window } => Some(window),
                _ => None,
            })
            .max()
            .unwrap_or_default()
            .max(judge::CONTINUOUS_CALIBRATION);
        let longest_season = rules
            .iter()
            .filter_map(|r| match r.baseline {
                Baseline::Seasonal { offset } => Some(offset),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        let slack = cfg
            .block
            .0
            .saturating_mul(2)
            .saturating_add(cfg.eval_interval.0.saturating_mul(2));
        let retention = DurationMs(longest_pre.0.saturating_add(slack));
        let long_retention = DurationMs(
            longest_pre
                .max(judge::COUNT_CALIBRATION)
                .0
                .saturating_add(slack),
        );
        let history = DurationMs(longest_season.0.saturating_add(6 * 3_600_000));
        // Expiry follows the longest anything reads, whichever retention a series keeps.
        let (expire_after, history_expire_after) = expiry(rules, cfg, long_retention, history);
        Horizons {
            retention,
            long_retention,
            history,
            expire_after,
            history_expire_after,
        }
    }
}

/// How long a series may be silent before it is dropped: longer than every window that
/// could read it (the recent retention, which covers every baseline window and the control
/// calibration; every rule's `stale_after`, so a deploy's silence detection fires first),
/// plus slack; series with per-minute history are kept as long as that history. A series
/// scraped so rarely that 5.5 of its intervals exceed this (see [`silence`]) is dropped
/// before its silence is reported: intervals of minutes, which no shipped source has.
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
        let h = Horizons::of(&rules.rules, &cfg);
        Engine {
            expire_after: h.expire_after,
            history_expire_after: h.history_expire_after,
            store: {
                let mut store = Store::new(h.retention, h.history, cfg.max_series);
                store.set_long_retention(h.long_retention);
                store
            },
            rule_series: vec![RuleSeries::default(); rules.rules.len()],
            rules: rules.rules,
            cfg,
            analyses: BTreeMap::new(),
            finished: VecDeque::new(),
            lines: BTreeMap::new(),
            counters: EngineCounters::default(),
            season_tsdb: false,
            season_requests: Vec::new(),
        }
    }

    /// Replaces the rules (a reload). Analyses in flight keep judging with the rules they
    /// started with where a rule of the same name still exists; series are re-indexed.
    pub fn set_rules(&mut self, mut rules: RuleSet) {
        clamp_windows(&mut rules);
        let old_names: Vec<String> = self.rules.iter().map(|r| r.name.clone()).collect();
        self.rules = rules.rules;
        let h = Horizons::of(&self.rules, &self.cfg);
        self.store.set_retention(h.retention, h.history);
        self.store.set_long_retention(h.long_retention);
        self.expire_after = h.expire_after;
        self.history_expire_after = h.history_expire_after;
        self.rule_series = vec![RuleSeries::default(); self.rules.len()];
        let ids: Vec<SeriesId> = self.store.iter().map(|(id, _)| id).collect();
        for id in ids {
            let needs = offer_all(&self.rules, &mut self.rule_series, id, self.store.get(id));
            self.store.set_long(id, needs.long);
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
        self.reload_seasons();
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
        self.store_sample(value, at, |s, o| s.intern(series, o))
    }

    /// [`Engine::ingest_text`] through a reader's [`store::SeriesCache`]: the same result,
    /// without a hash lookup when the series is the one that followed the previous one
    /// last time (the common case in a file or a scrape, which repeat their order).
    pub fn ingest_text_cached(
        &mut self,
        cache: &mut store::SeriesCache,
        series: &str,
        value: f64,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        self.store_sample(value, at, |s, o| s.intern_cached(cache, series, o))
    }

    /// Stores a sample of the series `cache` predicts (see
    /// [`store::SeriesCache::predicted`]), the reader having matched its text. Returns
    /// false, storing nothing, when the prediction is no longer valid (a series expired
    /// in between): the reader then ingests by text.
    pub fn ingest_predicted(
        &mut self,
        cache: &mut store::SeriesCache,
        value: f64,
        at: Timestamp,
    ) -> bool {
        let Some(id) = cache.take_predicted(&self.store) else {
            return false;
        };
        if self.store.push(id, at, value) {
            self.counters.samples += 1;
        }
        true
    }

    /// Finds the sample's series with `find` (which may create it, telling the rules),
    /// appends the point and counts it.
    fn store_sample(
        &mut self,
        value: f64,
        at: Timestamp,
        find: impl FnOnce(
            &mut store::Store,
            &mut dyn store::SeriesObserver,
        ) -> Result<store::SeriesId, store::StoreError>,
    ) -> Result<(), EngineError> {
        let mut index = Index {
            rules: &self.rules,
            series: &mut self.rule_series,
            history: !self.season_tsdb,
        };
        let id = find(&mut self.store, &mut index)?;
        // Only what is stored counts: a point at or before its series' newest is counted
        // as out of order by the store instead.
        if self.store.push(id, at, value) {
            self.counters.samples += 1;
        }
        Ok(())
    }

    /// Stores a sample given as name and labels. A sample at or before its series' newest
    /// point is taken (`Ok`) but not stored: the store counts it as out of order, and it
    /// is not in [`EngineCounters::samples`].
    pub fn ingest(
        &mut self,
        name: &str,
        labels: &[(String, String)],
        value: f64,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        self.store_sample(value, at, |s, o| s.intern_labels(name, labels, o))
    }

    /// Stores samples read from a TSDB that may be older than what the store holds (a
    /// reload lengthened a window): a series the store does not hold yet takes them as
    /// live samples, one it holds takes those older than its oldest point; the rest (the
    /// span it already holds) are skipped. Returns how many were stored.
    pub fn backfill(&mut self, mut samples: Vec<crate::model::Sample>) -> u64 {
        samples.sort_by_key(|s| s.at);
        let mut by_series: BTreeMap<SeriesId, Vec<(Timestamp, f64)>> = BTreeMap::new();
        for s in samples {
            let mut index = Index {
                rules: &self.rules,
                series: &mut self.rule_series,
                history: !self.season_tsdb,
            };
            if let Ok(id) = self.store.intern_labels(&s.name, &s.labels, &mut index) {
                by_series.entry(id).or_default().push((s.at, s.value));
            }
        }
        let mut stored = 0;
        for (id, points) in by_series {
            if self.store.get(id).points.is_empty() {
                for &(at, v) in &points {
                    stored += u64::from(self.store.push(id, at, v));
                }
            } else {
                stored += self.store.backfill(id, &points) as u64;
            }
        }
        self.counters.samples += stored;
        stored
    }

    /// The store, for metrics and inspection.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counters for immune's own metrics.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(window: &str) -> RuleSet {
        let text = format!(
            "rules:\n  - name: errors\n    metric: {{kind: counter_rate, selector: 'e_total'}}\n    baseline: pre_deploy\n    baseline_window: {window}\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n"
        );
        crate::rules::load::load_str("r.yaml", &text).expect("rules load")
    }

    /// How far back the store reaches for the one series after 2 h more of 10-s samples,
    /// the first at `t0`.
    fn kept_after_two_hours(e: &mut Engine, t0: Timestamp) -> DurationMs {
        let mut t = t0;
        while t.0 <= t0.0 + 7_200_000 {
            e.ingest_text("e_total{instance=\"a\"}", 1.0, t)
                .expect("ingest");
            t = t.add(DurationMs::from_secs(10));
        }
        let (_, s) = e.store().iter().next().expect("one series");
        let first = s.points.front().expect("points").0;
        t.sub(DurationMs::from_secs(10)).since(first)
    }

    /// A count a rule judges against the control keeps the hour its calibration reads;
    /// a gauge no such rule reads keeps the short retention; a reload that drops the
    /// control rule takes the counter back to the short one as its next points arrive.
    #[test]
    fn only_counts_against_the_control_keep_the_calibration_hour() {
        let text = "rules:\n  - name: errors\n    metric: {kind: ratio, selector: 'e_total', denominator: 'r_total'}\n    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n  - name: lat\n    metric: {kind: gauge, selector: 'lat'}\n    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n";
        let rules = crate::rules::load::load_str("r.yaml", text).expect("rules load");
        let mut e = Engine::new(rules, EngineConfig::default());
        let t0 = Timestamp(1_764_201_600_000);
        let mut t = t0;
        while t.0 <= t0.0 + 7_200_000 {
            for name in ["e_total", "r_total", "lat", "other"] {
                e.ingest_text(&format!("{name}{{instance=\"a\"}}"), 1.0, t)
                    .expect("ingest");
            }
            t = t.add(DurationMs::from_secs(10));
        }
        let newest = t.sub(DurationMs::from_secs(10));
        let kept = |e: &Engine, name: &str| {
            let (_, s) = e
                .store()
                .iter()
                .find(|(_, s)| &*s.name == name)
                .expect("series");
            newest.since(s.points.front().expect("points").0)
        };
        for name in ["e_total", "r_total"] {
            assert!(kept(&e, name) >= judge::COUNT_CALIBRATION, "{name}");
        }
        for name in ["lat", "other"] {
            let k = kept(&e, name);
            assert!(k >= judge::CONTINUOUS_CALIBRATION, "{name} {k:?}");
            assert!(k < judge::COUNT_CALIBRATION, "{name} {k:?}");
        }
        let only_gauge = "rules:\n  - name: lat\n    metric: {kind: gauge, selector: 'lat'}\n    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n";
        e.set_rules(crate::rules::load::load_str("r.yaml", only_gauge).expect("rules load"));
        e.ingest_text("e_total{instance=\"a\"}", 1.0, t)
            .expect("ingest");
        assert!(kept(&e, "e_total") < judge::COUNT_CALIBRATION);
    }

    #[test]
    fn a_reload_with_a_longer_window_keeps_that_much() {
        let t0 = Timestamp(1_764_201_600_000);
        let mut e = Engine::new(rules("10m"), EngineConfig::default());
        // A 10-minute window keeps what the continuous calibration reads, and not much
        // more (no rule judges this counter against the control).
        let short = kept_after_two_hours(&mut e, t0);
        assert!(short >= judge::CONTINUOUS_CALIBRATION, "{short:?}");
        assert!(short < judge::COUNT_CALIBRATION, "{short:?}");
        e.set_rules(rules("100m"));
        let long = kept_after_two_hours(&mut e, t0.add(DurationMs::from_secs(7210)));
        assert!(long >= DurationMs::from_secs(100 * 60), "{long:?}");
        assert!(e.expire_after >= DurationMs::from_secs(100 * 60));
    }
}
