//! The evaluation loop: at every tick each active deploy's rule states bind their series
//! (a series that starts reporting later joins on the side its labels put it), read the
//! interval since the last tick, report silence (see `silence.rs`), and the failing rules
//! of a phase are chosen with weighted Holm, separately for stopping rules and warnings;
//! a healthy canary is promoted. `next_change` tells replay when a tick without new
//! samples could change anything.
//!
//! The alpha accounting this loop implements is written down in docs/ARCHITECTURE.md
//! ("The judge").

use super::decide::{action_kind, action_rank, annotate, decision, summary_of};
use super::deploy::phase_alpha;
use super::{
    Analysis, CanaryMembers, Engine, EngineConfig, RuleState, SUSPECT_WINDOW, Side, alive_since,
    is_canary, silence,
};
use crate::engine::judge::{Ctx, Method, RuleSeries, SideFilter, Verdict};
use crate::engine::store::{Series, SeriesId, Store};
use crate::model::{CanarySelector, Decision, DecisionKind, DurationMs, Phase, Timestamp};
use crate::rules::{Action, Baseline, MissingAction, TestKind};
use serde_json::{Value, json};

impl Engine {
    /// Drops series silent past every window that could read them, a bounded share of
    /// the store per tick (a full pass takes about a quarter of the expiry time), so a
    /// full store makes room for new hosts without a scan per sample.
    pub(super) fn expire(&mut self, now: Timestamp) {
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
            if self.season_tsdb {
                self.extend_seasons(&mut a, now);
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
        let members = CanaryMembers::new(&self.store);
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
                        let (treatment, control) =
                            Side::pair(&a.canary, fleet_wide || !in_canary, &members);
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
                !has_canary(rs, &self.store, &a.canary, &members)
            };
            let everything = fleet_wide || phase != Phase::Canary;
            let (treatment, control) = Side::pair(&a.canary, everything, &members);
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
                    .filter(|id| treatment.includes(*id, self.store.get(*id)))
                    .map(|id| self.store.get(id))
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
            // A seasonal rule whose season is still being fetched from the TSDB (or could
            // not be had) waits, counted with p = 1; it reads what it missed later.
            if let Some(o) = super::season::gate(&a.seasons, rule, now, phase_alpha(rule)) {
                if !rule.shadow {
                    family.push((si, 1.0, o.alpha));
                }
                st.last = Some(o);
                continue;
            }
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
            let weights: Vec<f64> = members
                .iter()
                .map(|f| self.rules[a.states[f.0].rule].weight)
                .collect();
            let thresholds = crate::stats::multiple::holm_weight_thresholds(&ps, &alphas, &weights);
            let m = members.len();
            for (f, t) in members.iter().zip(thresholds) {
                if let Some(t) = t {
                    failing.push((f.0, f.1 / f.2, t, m));
                }
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
}

/// How long a rule whose series exist only off the canary waits for the canary's own
/// series before it is judged fleet-wide: one block, and at least three evaluations (a
/// scrape or two after a restart or a deploy reported before its hosts' first scrape).
pub(super) fn bind_grace(cfg: &EngineConfig) -> DurationMs {
    DurationMs(cfg.block.0.max(cfg.eval_interval.0.saturating_mul(3)))
}

pub(super) fn has_canary(
    rs: &RuleSeries,
    store: &Store,
    canary: &CanarySelector,
    members: &CanaryMembers,
) -> bool {
    rs.liveness()
        .any(|id| members.is_canary(canary, id, store.get(id)))
}

/// Which side a rule's series are on, once they exist: `Some(true)` when none carries the
/// canary selector's labels (a fleet-wide series, e.g. a business metric), `Some(false)`
/// when a canary series exists (or, outside the canary, any series); `None` while there is
/// nothing to tell by yet.
pub(super) fn sides_of(
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
