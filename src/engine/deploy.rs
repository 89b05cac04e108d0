//! Deploy events and lines: a canary event starts an analysis (one rule state per rule and
//! phase group, each binding its series as they arrive), `full` moves it on, `end` and
//! `abort` give the final decision (`no_evidence` when the stopping rules never saw
//! data), and a blocking decision blocks the service's line until an `unblock`.
//!
//! Kept apart from the evaluation loop (`evaluate.rs`): this is what happens at an event,
//! that is what happens at every tick.

use super::decide::{decision, summary_of};
use super::{Analysis, Blocked, Engine, EngineError, NoEvidence, RuleState, Trace, alive_since};
use crate::model::{Decision, DecisionKind, DeployEvent, DeployEventKind, Phase, Timestamp};
use crate::rules::{Baseline, Rule, TestKind};
use serde_json::{Value, json};

impl Engine {
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
            seasons: std::collections::BTreeMap::new(),
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
        self.ask_seasons(&mut a);
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
    pub(super) fn block_line(&mut self, a: &Analysis, d: &Decision) {
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

    pub(super) fn finish(&mut self, mut a: Analysis) {
        a.done = true;
        a.states.iter_mut().for_each(|s| s.method = None);
        let seasonal = !a.seasons.is_empty();
        self.finished.push_back(a);
        while self.finished.len() > self.cfg.recent_deploys {
            self.finished.pop_front();
        }
        if seasonal {
            self.release_seasons();
        }
    }

    pub(super) fn count(&mut self, d: &Decision) {
        *self
            .counters
            .decisions
            .entry(d.decision.as_str())
            .or_default() += 1;
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
pub(super) fn phase_groups(rule: &Rule) -> Vec<Vec<Phase>> {
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
pub(super) fn phase_alpha(rule: &Rule) -> f64 {
    rule.alpha / phase_groups(rule).len().max(1) as f64
}
