//! Whether a deploy's stopping rules had anything to judge.
//!
//! Silence is not health: a deploy whose rollback and block rules saw no data (a selector
//! that matches nothing, hosts that stopped reporting, an agent started too recently for a
//! pre-deploy baseline) must not end `pass` as if it had been judged healthy. This module
//! tells, at a deploy's end, which rules had data and why the others had none.

use super::{Analysis, CanaryMembers, Engine, NoEvidence, Side, sides_of};
use crate::model::Phase;
use crate::rules::{Action, Baseline};
use serde_json::{Value, json};

/// What a deploy's rules had to judge, found at its end.
pub(super) struct EvidenceCheck {
    /// Stopping rules (rollback, block, not shadow) that applied in a phase the deploy
    /// reached.
    stopping: usize,
    /// Stopping rules with data to judge.
    judged: usize,
    /// Stopping rules without, with the reason.
    without: Vec<(String, &'static str)>,
    /// Rules of any action whose selector matched no series at all.
    unmatched: Vec<String>,
}

/// A selector that matches nothing.
pub const NO_SERIES: &str = "no series matched";
/// Series exist, but none on the deploy's side (e.g. only control hosts report it).
pub const NO_SERIES_ON_SIDE: &str = "no series matched on the deploy's side";
/// Series exist on the deploy's side but sent nothing since the deploy began.
pub const STALE: &str = "series stale";
/// A `pre_deploy` rule whose baseline window reaches before the store's oldest sample.
pub const SHORT_HISTORY: &str = "history shorter than the baseline window";
/// A `seasonal` rule whose season could not be read from the TSDB.
pub const NO_SEASON: &str = "seasonal baseline not available from the TSDB";

fn rank(p: Phase) -> u8 {
    match p {
        Phase::Canary => 0,
        Phase::Full => 1,
        Phase::Watch => 2,
    }
}

impl EvidenceCheck {
    /// True when the deploy had stopping rules and none of them had data.
    pub(super) fn unjudged(&self) -> bool {
        self.stopping > 0 && self.judged == 0
    }

    /// Adds the warnings every final decision carries: rules that matched no series.
    pub(super) fn annotate(&self, evidence: &mut Value) {
        if self.unmatched.is_empty() {
            return;
        }
        if let Some(w) = evidence.get_mut("warnings").and_then(Value::as_array_mut) {
            for r in &self.unmatched {
                if !w.iter().any(|x| x == r) {
                    w.push(json!(r));
                }
            }
        }
        evidence["no_series_matched"] = json!(self.unmatched);
        if let Some(s) = evidence.get("summary").and_then(Value::as_str) {
            let s = format!(
                "{s}; {} rules matched no series ({})",
                self.unmatched.len(),
                self.unmatched.join(", ")
            );
            evidence["summary"] = json!(s);
        }
    }

    /// Says in the final decision's evidence that no stopping rule had data, and why.
    pub(super) fn explain(&self, evidence: &mut Value, policy: NoEvidence) {
        let list: Vec<Value> = self
            .without
            .iter()
            .map(|(r, why)| json!({"rule": r, "reason": why}))
            .collect();
        let reasons: Vec<String> = self
            .without
            .iter()
            .map(|(r, why)| format!("{r}: {why}"))
            .collect();
        let head = match policy {
            NoEvidence::Block => "no_evidence: blocked, no stopping rule had data to judge",
            NoEvidence::Pass => "unjudged: passed by setting, no stopping rule had data to judge",
        };
        evidence["no_evidence"] = json!(list);
        evidence["unjudged"] = json!(true);
        evidence["no_evidence_policy"] = json!(policy);
        evidence["summary"] = json!(format!("{head} ({})", reasons.join("; ")));
    }
}

impl Engine {
    /// Which of `a`'s stopping rules had data to judge: at least one series on the deploy's
    /// side with a sample after the deploy began (and, for `pre_deploy` rules, a store
    /// history reaching back over the baseline window).
    pub(super) fn evidence_check(&self, a: &Analysis) -> EvidenceCheck {
        let mut check = EvidenceCheck {
            stopping: 0,
            judged: 0,
            without: Vec::new(),
            unmatched: Vec::new(),
        };
        let mut seen: Vec<usize> = Vec::new();
        let members = CanaryMembers::new(&self.store);
        for st in &a.states {
            if seen.contains(&st.rule) {
                continue;
            }
            let rule = &self.rules[st.rule];
            let rs = &self.rule_series[st.rule];
            if rs.liveness().next().is_none() {
                seen.push(st.rule);
                check.unmatched.push(rule.name.clone());
            }
            if rule.shadow || rule.action == Action::Warn {
                continue;
            }
            let states: Vec<_> = a
                .states
                .iter()
                .filter(|s| s.rule == st.rule)
                .filter(|s| s.phases.iter().any(|p| rank(*p) <= rank(a.phase)))
                .collect();
            if states.is_empty() {
                continue;
            }
            if !seen.contains(&st.rule) {
                seen.push(st.rule);
            }
            check.stopping += 1;
            if a.seasons
                .get(&rule.name)
                .is_some_and(|s| s.failed.is_some())
            {
                check.without.push((rule.name.clone(), NO_SEASON));
                continue;
            }
            let mut reason = NO_SERIES;
            let mut judged = false;
            for s in states {
                let in_canary = s.phases == [Phase::Canary];
                let fleet_wide = if s.bound {
                    s.fleet_wide
                } else {
                    sides_of(rs, &self.store, &a.canary, false).unwrap_or(false)
                };
                let (side, _) = Side::pair(&a.canary, fleet_wide || !in_canary, &members);
                let r = self.why_no_data(st.rule, &side, a.started);
                match r {
                    None => {
                        judged = true;
                        break;
                    }
                    Some(why) if rank_reason(why) > rank_reason(reason) => reason = why,
                    Some(_) => {}
                }
            }
            if judged {
                check.judged += 1;
            } else {
                check.without.push((rule.name.clone(), reason));
            }
        }
        check
    }

    /// `None` when rule `i` has data on `side` since `started`, else why not.
    fn why_no_data(
        &self,
        i: usize,
        side: &Side<'_>,
        started: crate::model::Timestamp,
    ) -> Option<&'static str> {
        use super::judge::SideFilter;
        let rs = &self.rule_series[i];
        let mut on_side = false;
        let mut fresh = false;
        for id in rs.liveness() {
            let s = self.store.get(id);
            if side.includes(id, s) {
                on_side = true;
                if s.last_seen > started {
                    fresh = true;
                    break;
                }
            }
        }
        if rs.liveness().next().is_none() {
            return Some(NO_SERIES);
        }
        if !on_side {
            return Some(NO_SERIES_ON_SIDE);
        }
        if !fresh {
            return Some(STALE);
        }
        if let Baseline::PreDeploy { window } = self.rules[i].baseline
            && self.store.oldest().is_none_or(|o| o > started.sub(window))
        {
            return Some(SHORT_HISTORY);
        }
        None
    }
}

/// The more specific reason wins when a rule's phase groups differ.
fn rank_reason(r: &str) -> u8 {
    match r {
        NO_SERIES => 0,
        NO_SERIES_ON_SIDE => 1,
        STALE => 2,
        _ => 3,
    }
}
