//! Resuming a deploy after a restart without repeating what it already said.
//!
//! A restart loses the engine's memory, not the outbox: `serve` re-applies each deploy's
//! stored events, and then hands back the decisions the deploy had already reached. Without
//! them a resumed canary that had been promoted would be promoted again (and a rule that had
//! warned would warn again), each time with a new time and so a new signal id: the deploy
//! tool would be told the same thing twice under two names.

use super::Engine;
use crate::model::{Decision, DecisionKind};

impl Engine {
    /// Tells a resumed deploy which decisions it already reached (oldest first): they join
    /// its record, a `promote` marks it promoted, and each rule that decided is not reported
    /// again. Final decisions are ignored: a deploy that reached one is not resumed. Returns
    /// how many decisions were restored (0 when the deploy is not in flight).
    pub fn restore_decisions(&mut self, deploy: &str, decisions: &[Decision]) -> usize {
        let Some(a) = self.analyses.get_mut(deploy) else {
            return 0;
        };
        let mut restored = 0;
        for d in decisions
            .iter()
            .filter(|d| d.deploy == deploy && !d.r#final)
        {
            if a.decisions.iter().any(|e| same(e, d)) {
                continue;
            }
            if d.decision == DecisionKind::Promote {
                a.promoted = true;
            }
            for st in &mut a.states {
                if self.rules[st.rule].name == d.rule {
                    st.reported = true;
                }
            }
            a.decisions.push(d.clone());
            restored += 1;
        }
        a.decisions.sort_by(|x, y| x.at.total_cmp(&y.at));
        restored
    }
}

/// The same decision: one signal id (deploy, kind, rule, time to the millisecond, shadow).
fn same(x: &Decision, y: &Decision) -> bool {
    x.decision == y.decision
        && x.rule == y.rule
        && x.shadow == y.shadow
        && (x.at * 1000.0).round() == (y.at * 1000.0).round()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::model::{DeployEvent, DeployEventKind, OneOrMany, Phase};
    use crate::rules::RuleSet;

    fn engine() -> Engine {
        let rules = crate::rules::load::load_str(
            "rules.yaml",
            "rules:\n  - name: errors\n    metric: {kind: ratio, selector: 'e_total', denominator: 'r_total'}\n    baseline: control\n    direction: increase\n    min_effect: \"+50%\"\n    action: rollback\n",
        );
        let rules: RuleSet = rules.expect("test rules load");
        Engine::new(rules, EngineConfig::default())
    }

    fn decision(kind: DecisionKind, rule: &str, at: f64, fin: bool) -> Decision {
        Decision {
            at,
            deploy: "d1".into(),
            service: "web".into(),
            version: None,
            decision: kind,
            phase: Phase::Canary,
            rule: rule.into(),
            r#final: fin,
            shadow: false,
            evidence: serde_json::json!({}),
        }
    }

    #[test]
    fn a_resumed_deploy_remembers_its_promote_and_warnings_once() {
        let mut e = engine();
        let canary = DeployEvent {
            at: 1_764_201_600.0,
            deploy: Some("d1".into()),
            event: DeployEventKind::Canary,
            service: Some("web".into()),
            version: None,
            commits: Vec::new(),
            canary: Some([("instance".to_string(), OneOrMany::One("web-01".into()))].into()),
            by: None,
            reason: None,
        };
        e.deploy_event(&canary).expect("canary applies");
        let before = vec![
            decision(DecisionKind::Promote, "all_rules", 1_764_201_660.0, false),
            decision(DecisionKind::Warn, "errors", 1_764_201_670.0, false),
            decision(DecisionKind::Rollback, "errors", 1_764_201_680.0, true),
        ];
        assert_eq!(
            e.restore_decisions("d1", &before),
            2,
            "final decisions are skipped"
        );
        assert_eq!(
            e.restore_decisions("d1", &before),
            0,
            "restoring twice adds nothing"
        );
        assert_eq!(e.restore_decisions("d9", &before), 0, "unknown deploy");
        let a = &e.analyses["d1"];
        assert!(a.promoted);
        assert!(a.states.iter().all(|s| s.reported));
        assert_eq!(a.decisions.len(), 2);
        let view = e.deploy_view("d1").expect("view");
        assert_eq!(view["promoted"], true);
        assert_eq!(view["decisions"].as_array().map(Vec::len), Some(2));
    }
}
