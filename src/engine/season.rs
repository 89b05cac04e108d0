//! Seasonal baselines read from a TSDB at each deploy's start, instead of a week of
//! per-minute history kept in memory for every series a `seasonal` rule reads.
//!
//! The engine does no I/O. When it is told its seasons come from a TSDB
//! ([`Engine::read_seasons_from_tsdb`], `serve` does so when a `history` section is
//! configured), new series get no per-minute history, and each deploy that starts (a live
//! canary event, one resumed after a restart) queues a [`SeasonRequest`]: for each of its
//! seasonal rules, the rule's selectors and the season-ago span it will read, from
//! [`SEASON_BEFORE`] before `start − offset` to [`SEASON_CHUNK`] after. `serve` drains the
//! queue ([`Engine::take_season_requests`]), fetches the spans on a blocking thread and
//! hands the answer back as data ([`Engine::season_fill`]): the per-minute values go into
//! the store's history of those series exactly as the store would have kept them (the last
//! value of each minute, keyed by the minute's start), so the judge reads them unchanged.
//!
//! While a rule's span is being fetched the rule waits: it is not evaluated (it counts in
//! its family with p = 1, as a rule still gathering data does) and reads the minutes it
//! missed once the span arrives. When the deploy's reading comes within [`SEASON_LEAD`] of
//! the end of what was fetched, the next chunk is asked for, so a deploy may run as long
//! as it likes. A fetch that fails, or a first span where the TSDB holds no sample, makes
//! the rule inconclusive with that reason for the rest of the deploy: never a pass, never
//! a silent 0/0. A reload that changes a seasonal rule's selectors or offset asks again.
//!
//! When a deploy ends, the history of series no deploy in flight reads any more is
//! dropped: memory follows the deploys being judged, not a week of uptime.

use super::judge::Outcome;
use super::{Analysis, Engine, Index};
use crate::engine::judge::Verdict;
use crate::engine::store::SeriesId;
use crate::model::{DurationMs, Sample, Timestamp};
use crate::rules::{Baseline, Rule};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How long before `start − offset` a deploy's first span begins: a counter's increase
/// over the first minute read needs the value before it.
pub const SEASON_BEFORE: DurationMs = DurationMs::from_secs(600);

/// How much season-ago time one request covers.
pub const SEASON_CHUNK: DurationMs = DurationMs::from_secs(2 * 3600);

/// How long before the deploy's reading reaches the end of what was fetched the next
/// chunk is asked for.
pub const SEASON_LEAD: DurationMs = DurationMs::from_secs(1800);

const MINUTE: i64 = 60_000;

/// The season-ago spans one deploy's seasonal rules read, to be fetched from the TSDB.
#[derive(Clone, Debug, PartialEq)]
pub struct SeasonRequest {
    /// The deploy.
    pub deploy: String,
    /// One span per seasonal rule.
    pub spans: Vec<SeasonSpan>,
}

/// One rule's span.
#[derive(Clone, Debug, PartialEq)]
pub struct SeasonSpan {
    /// The rule's name.
    pub rule: String,
    /// The selectors it reads, as PromQL text.
    pub selectors: Vec<String>,
    /// The rule's `seasonal_offset` when asked (an answer for another one is dropped).
    pub offset: DurationMs,
    /// Minutes starting in `[from, to)` are wanted.
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
    /// The deploy's first span for this rule: an empty answer means the TSDB lacks it.
    pub first: bool,
}

/// The TSDB's answer to a [`SeasonRequest`]: per span, the last value of each minute
/// (`at` is the minute's start), or why it could not be read.
#[derive(Clone, Debug)]
pub struct SeasonFill {
    /// The deploy.
    pub deploy: String,
    /// Each span asked for with its answer.
    pub spans: Vec<(SeasonSpan, Result<Vec<Sample>, String>)>,
}

/// One seasonal rule of a deploy whose season comes from the TSDB.
#[derive(Clone, Debug)]
pub(super) struct Season {
    offset: DurationMs,
    selectors: Vec<String>,
    /// Season-ago time up to which the history is in the store (`None`: nothing yet).
    covered: Option<Timestamp>,
    /// Season-ago time asked for up to.
    asked: Timestamp,
    /// Why the season cannot be read; the rule is inconclusive from then on.
    pub(super) failed: Option<String>,
    /// Minutes loaded, for the evidence.
    minutes: u64,
}

fn floor_minute(t: Timestamp) -> Timestamp {
    Timestamp(t.0 - t.0.rem_euclid(MINUTE))
}

/// The offset and selectors of a rule that reads a season (a drift test reads none).
fn seasonal(rule: &Rule) -> Option<(DurationMs, Vec<String>)> {
    match rule.baseline {
        Baseline::Seasonal { offset } if rule.test != crate::rules::TestKind::Drift => {
            Some((offset, crate::history::rule_selectors(rule)))
        }
        _ => None,
    }
}

impl Season {
    /// A new season for a deploy started at `start`, and its first span.
    fn first(rule: &Rule, start: Timestamp) -> Option<(Season, SeasonSpan)> {
        let (offset, selectors) = seasonal(rule)?;
        let from = floor_minute(start.sub(offset)).sub(SEASON_BEFORE);
        let to = start.sub(offset).add(SEASON_CHUNK);
        let span = SeasonSpan {
            rule: rule.name.clone(),
            selectors: selectors.clone(),
            offset,
            from,
            to,
            first: true,
        };
        let season = Season {
            offset,
            selectors,
            covered: None,
            asked: to,
            failed: None,
            minutes: 0,
        };
        Some((season, span))
    }

    /// Whether the history for reading up to `now` is in the store.
    fn ready(&self, now: Timestamp) -> bool {
        // Minutes starting before `covered` are loaded; the judge reads up to `now − offset`.
        self.covered.is_some_and(|c| now.sub(self.offset) < c)
    }
}

impl Engine {
    /// Seasonal baselines come from a TSDB from now on: series keep no per-minute history
    /// of their own, and every deploy asks for its season (see the module header).
    pub fn read_seasons_from_tsdb(&mut self) {
        self.season_tsdb = true;
    }

    /// The spans asked for since the last call, for the caller to fetch and hand back
    /// with [`Engine::season_fill`].
    pub fn take_season_requests(&mut self) -> Vec<SeasonRequest> {
        std::mem::take(&mut self.season_requests)
    }

    /// Per-minute history points held in the store, all series together: the store's
    /// running count, so a scrape costs the same whatever the store holds.
    pub fn history_points(&self) -> usize {
        debug_assert_eq!(
            self.store.history_points(),
            self.store.history_points_walked()
        );
        self.store.history_points()
    }

    /// At a deploy's start: asks for each of its seasonal rules' first span.
    pub(super) fn ask_seasons(&mut self, a: &mut Analysis) {
        if !self.season_tsdb {
            return;
        }
        let mut spans = Vec::new();
        for st in &a.states {
            let rule = &self.rules[st.rule];
            if a.seasons.contains_key(&rule.name) {
                continue;
            }
            if let Some((season, span)) = Season::first(rule, a.started) {
                a.seasons.insert(rule.name.clone(), season);
                spans.push(span);
            }
        }
        if !spans.is_empty() {
            self.season_requests.push(SeasonRequest {
                deploy: a.id.clone(),
                spans,
            });
        }
    }

    /// At each tick: asks for the next chunk of every season whose reading at `now`
    /// comes within [`SEASON_LEAD`] of the end of what was asked for.
    pub(super) fn extend_seasons(&mut self, a: &mut Analysis, now: Timestamp) {
        let mut spans = Vec::new();
        for (name, s) in &mut a.seasons {
            let settled = s.covered.is_some_and(|c| c >= s.asked);
            if s.failed.is_some() || !settled || now.sub(s.offset).add(SEASON_LEAD) < s.asked {
                continue;
            }
            let from = floor_minute(s.asked).sub(DurationMs(MINUTE));
            let to = s.asked.add(SEASON_CHUNK);
            s.asked = to;
            spans.push(SeasonSpan {
                rule: name.clone(),
                selectors: s.selectors.clone(),
                offset: s.offset,
                from,
                to,
                first: false,
            });
        }
        if !spans.is_empty() {
            self.season_requests.push(SeasonRequest {
                deploy: a.id.clone(),
                spans,
            });
        }
    }

    /// Loads a fetched season into the store's per-minute history, or records why it
    /// could not be had. An answer for a deploy no longer in flight, or for a rule whose
    /// selectors or offset changed since it was asked, is dropped.
    pub fn season_fill(&mut self, fill: SeasonFill) {
        let Some(mut a) = self.analyses.remove(&fill.deploy) else {
            return;
        };
        for (span, result) in fill.spans {
            let Some(season) = a.seasons.get_mut(&span.rule) else {
                continue;
            };
            if season.selectors != span.selectors
                || season.offset != span.offset
                || season.failed.is_some()
            {
                continue;
            }
            let samples = match result {
                Err(reason) => {
                    season.failed = Some(format!(
                        "the seasonal baseline could not be read from the TSDB: {reason}"
                    ));
                    continue;
                }
                Ok(s) if s.is_empty() && span.first => {
                    season.failed = Some(format!(
                        "the TSDB holds no sample of {} between {} and {} (its retention may be shorter than seasonal_offset, or the series are new)",
                        span.selectors.join(", "),
                        span.from.as_secs_f64(),
                        span.to.as_secs_f64()
                    ));
                    continue;
                }
                Ok(s) => s,
            };
            season.minutes += samples.len() as u64;
            season.covered = Some(season.covered.map_or(span.to, |c| c.max(span.to)));
            let mut by_series: HashMap<SeriesId, Vec<(Timestamp, f64)>> = HashMap::new();
            for s in samples {
                let mut index = Index {
                    rules: &self.rules,
                    series: &mut self.rule_series,
                    history: false,
                };
                if let Ok(id) = self.store.intern_labels(&s.name, &s.labels, &mut index) {
                    by_series.entry(id).or_default().push((s.at, s.value));
                }
            }
            for (id, mut minutes) in by_series {
                minutes.sort_by_key(|m| m.0);
                self.store.merge_history(id, &minutes);
            }
        }
        // The series read now keep their live minutes from here on: a season shorter than
        // the deploy reads them.
        for name in a.seasons.keys() {
            if let Some(i) = self.rules.iter().position(|r| &r.name == name) {
                for id in rule_ids(&self.rule_series[i]) {
                    self.store.merge_history(id, &[]);
                }
            }
        }
        self.analyses.insert(a.id.clone(), a);
    }

    /// After a deploy ended: drops the history of series no deploy in flight reads.
    pub(super) fn release_seasons(&mut self) {
        if !self.season_tsdb {
            return;
        }
        let mut keep: HashSet<SeriesId> = HashSet::new();
        for a in self.analyses.values() {
            for name in a.seasons.keys() {
                if let Some(i) = self.rules.iter().position(|r| &r.name == name) {
                    keep.extend(rule_ids(&self.rule_series[i]));
                }
            }
        }
        let drop: Vec<SeriesId> = self
            .store
            .iter()
            .filter(|(id, s)| s.history.is_some() && !keep.contains(id))
            .map(|(id, _)| id)
            .collect();
        for id in drop {
            self.store.drop_history(id);
        }
    }

    /// After a reload: seasons of rules gone or no longer seasonal are dropped, those whose
    /// selectors or offset changed are asked for again.
    pub(super) fn reload_seasons(&mut self) {
        if !self.season_tsdb {
            return;
        }
        let by_name: BTreeMap<&str, &Rule> =
            self.rules.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut requests = Vec::new();
        for a in self.analyses.values_mut() {
            let mut spans = Vec::new();
            a.seasons.retain(|name, s| {
                let Some(rule) = by_name.get(name.as_str()) else {
                    return false;
                };
                let Some((offset, selectors)) = seasonal(rule) else {
                    return false;
                };
                if (offset != s.offset || selectors != s.selectors)
                    && let Some((fresh, span)) = Season::first(rule, a.started)
                {
                    *s = fresh;
                    spans.push(span);
                }
                true
            });
            if !spans.is_empty() {
                requests.push(SeasonRequest {
                    deploy: a.id.clone(),
                    spans,
                });
            }
        }
        self.season_requests.extend(requests);
        self.release_seasons();
    }
}

/// Every series a rule reads.
fn rule_ids(rs: &crate::engine::judge::RuleSeries) -> Vec<SeriesId> {
    rs.main
        .iter()
        .chain(&rs.denom)
        .copied()
        .chain(rs.buckets.iter().map(|(id, _)| *id))
        .collect()
}

/// The outcome of a seasonal rule that cannot be evaluated at `now`: its span is still
/// being fetched, or could not be had. `None` when it can be evaluated.
pub(super) fn gate(
    seasons: &BTreeMap<String, Season>,
    rule: &Rule,
    now: Timestamp,
    alpha: f64,
) -> Option<Outcome> {
    let s = seasons.get(&rule.name)?;
    let (status, why) = match &s.failed {
        Some(reason) => ("unavailable", reason.clone()),
        None if s.ready(now) => return None,
        None => (
            "fetching",
            "the seasonal baseline from the TSDB (being fetched)".to_string(),
        ),
    };
    Some(Outcome {
        verdict: Verdict::Inconclusive,
        p_value: 1.0,
        alpha,
        enough_data: false,
        harm_e_value: 1.0,
        evidence: json!({
            "test": "seasonal",
            "baseline": {"source": "tsdb", "status": status, "minutes_loaded": s.minutes,
                         "offset_seconds": s.offset.as_secs_f64()},
            "waiting_for": why,
        }),
    })
}

#[cfg(test)]
mod tests {
    use crate::engine::Index;
    use crate::engine::store::Store;
    use crate::model::{DurationMs, Timestamp};

    /// Interns no rule's series: no history of its own.
    fn none() -> Index<'static> {
        Index {
            rules: &[],
            series: &mut [],
            history: false,
        }
    }

    fn t(m: i64) -> Timestamp {
        Timestamp(m * 60_000)
    }

    #[test]
    fn fetched_minutes_merge_in_order_and_live_minutes_win() {
        let mut s = Store::new(DurationMs(600_000), DurationMs(86_400_000), 10);
        let live = s.intern("m", &mut none()).unwrap();
        s.merge_history(live, &[]);
        s.push(live, Timestamp(100 * 60_000 + 5_000), 7.0);
        s.merge_history(live, &[(t(10), 1.0), (t(11), 2.0), (t(100), 9.0)]);
        let h: Vec<(Timestamp, f64)> = s.get(live).history.iter().flatten().copied().collect();
        assert_eq!(h, vec![(t(10), 1.0), (t(11), 2.0), (t(100), 7.0)]);
        s.merge_history(live, &[(t(9), 0.5), (t(12), 3.0)]);
        let keys: Vec<i64> = s
            .get(live)
            .history
            .iter()
            .flatten()
            .map(|p| p.0.0 / 60_000)
            .collect();
        assert_eq!(keys, vec![9, 10, 11, 12, 100]);
        assert_eq!(s.get(live).last_seen, Timestamp(100 * 60_000 + 5_000));
        // A series known only from the TSDB counts as last seen in its newest minute.
        let ghost = s.intern("g", &mut none()).unwrap();
        s.merge_history(ghost, &[(t(10), 1.0), (t(11), 2.0)]);
        assert_eq!(s.get(ghost).last_seen, t(11));
        s.drop_history(ghost);
        assert!(s.get(ghost).history.is_none());
    }

    #[test]
    fn backfill_adds_only_what_is_older_than_the_oldest_point() {
        let mut s = Store::new(DurationMs(600_000), DurationMs(0), 10);
        let id = s.intern("m", &mut none()).unwrap();
        s.push(id, Timestamp(50_000), 5.0);
        s.push(id, Timestamp(60_000), 6.0);
        let n = s.backfill(
            id,
            &[
                (Timestamp(30_000), 3.0),
                (Timestamp(40_000), 4.0),
                (Timestamp(50_000), 9.0),
                (Timestamp(70_000), 9.0),
            ],
        );
        assert_eq!(n, 2);
        let p: Vec<i64> = s.get(id).points.iter().map(|p| p.0.0).collect();
        assert_eq!(p, vec![30_000, 40_000, 50_000, 60_000]);
        assert_eq!(s.oldest(), Some(Timestamp(30_000)));
    }

    fn rules(offset: &str) -> crate::rules::RuleSet {
        let text = format!(
            "rules:\n  - name: week\n    metric: {{kind: counter_rate, selector: 'e_total'}}\n    baseline: seasonal\n    seasonal_offset: {offset}\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n"
        );
        crate::rules::load::load_str("r.yaml", &text).expect("rules load")
    }

    #[test]
    fn a_deploy_asks_for_its_season_and_a_reload_that_moves_it_asks_again() {
        use crate::engine::{Engine, EngineConfig};
        use crate::model::{DeployEvent, DeployEventKind, OneOrMany};
        let mut e = Engine::new(rules("7d"), EngineConfig::default());
        e.read_seasons_from_tsdb();
        let at = 1_764_201_600_000i64;
        let ev = DeployEvent {
            at: at as f64 / 1000.0,
            deploy: Some("d".into()),
            event: DeployEventKind::Canary,
            service: Some("web".into()),
            version: None,
            commits: Vec::new(),
            canary: Some([("instance".to_string(), OneOrMany::One("a".into()))].into()),
            by: None,
            reason: None,
        };
        e.deploy_event(&ev).expect("canary");
        let asked = e.take_season_requests();
        assert_eq!(asked.len(), 1);
        let span = &asked[0].spans[0];
        assert_eq!((span.rule.as_str(), span.first), ("week", true));
        assert_eq!(span.selectors, vec!["e_total".to_string()]);
        assert_eq!(span.from, Timestamp(at - 7 * 86_400_000 - 600_000));
        e.set_rules(rules("7d"));
        assert!(e.take_season_requests().is_empty(), "nothing changed");
        e.set_rules(rules("1d"));
        let again = e.take_season_requests();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].spans[0].offset, DurationMs::from_secs(86_400));
        // The answer to the first request (7 days) no longer fits and is dropped.
        let stale = super::SeasonFill {
            deploy: "d".into(),
            spans: vec![(asked[0].spans[0].clone(), Err("late".into()))],
        };
        e.season_fill(stale);
        let end = DeployEvent {
            event: DeployEventKind::End,
            at: ev.at + 600.0,
            ..ev.clone()
        };
        let d = e.deploy_event(&end).expect("end");
        assert_eq!(
            d[0].evidence["no_evidence"][0]["reason"], "no series matched",
            "the stale failure was not recorded: {:#}",
            d[0].evidence
        );
    }
}
