//! Deploys as JSON for the API and the report page: phase, each rule's state and latest
//! evidence, the trace the charts plot, and the decisions so far.

use super::{Analysis, Engine};
use crate::rules::Action;
use serde_json::{Value, json};

impl Engine {
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
                    "runbook_url": r.runbook_url,
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
