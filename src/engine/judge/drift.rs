//! Drift: a slow regression that a level comparison misses (a query that gets slower as a
//! table grows). Mann-Kendall trend test with the Theil-Sen slope on per-block values of
//! the deploy's side, with alpha spent over looks as α·6/(π²k²), so infinitely many looks
//! cost at most α. The walk over blocks skips stretches without data.

use super::evidence::{mean, more, relative_effect, round, waiting};
use super::read::{
    block_at, block_values, complete_blocks, continuous_value, first_block_with_data,
};
use super::{Ctx, Outcome, Span, Verdict};
use crate::rules::{Baseline, Direction};
use serde_json::json;

/// Blocks a trend needs at least.
const MIN_TREND_BLOCKS: usize = 4;

/// Trend detection state.
#[derive(Clone, Debug)]
pub struct Drift {
    level: Option<f64>,
    values: Vec<f64>,
    /// Each value's block index (the x of the slope).
    xs: Vec<f64>,
    next_block: i64,
    pub(super) blocks_read: u64,
    looks: u32,
    last_p: f64,
    last_alpha: f64,
    slope: f64,
}

impl Drift {
    /// The level before the deploy (pre-deploy baseline), for the relative size of a trend.
    pub(super) fn start(ctx: &Ctx<'_>) -> Drift {
        let (level, blocks_read) = match ctx.rule.baseline {
            Baseline::PreDeploy { window } => {
                let (v, n) = block_values(
                    ctx,
                    ctx.treatment,
                    ctx.deploy_start.sub(window),
                    ctx.deploy_start,
                );
                (mean(&v), n)
            }
            _ => (None, 0),
        };
        Drift {
            level,
            values: Vec::new(),
            xs: Vec::new(),
            next_block: 0,
            blocks_read,
            looks: 0,
            last_p: 1.0,
            last_alpha: ctx.alpha,
            slope: 0.0,
        }
    }

    pub(super) fn evaluate(&mut self, ctx: &Ctx<'_>) -> Outcome {
        let done = complete_blocks(ctx.phase_start, ctx.to, ctx.block);
        let mut looked = false;
        while let Some(k) = first_block_with_data(ctx, ctx.phase_start, ctx.block, self.next_block)
            && k < done
        {
            let (start, end) = block_at(ctx.phase_start, ctx.block, k);
            self.next_block = k + 1;
            self.blocks_read += 1;
            if let Some(v) = continuous_value(
                ctx.store,
                ctx.rule,
                ctx.rs,
                ctx.treatment,
                Span::recent(start, end),
            ) {
                self.values.push(v);
                self.xs.push(k as f64);
                looked = true;
            }
        }
        let n = self.values.len();
        let need = ctx.rule.min_data.samples.max(MIN_TREND_BLOCKS);
        let enough = n >= need && ctx.to.since(ctx.phase_start) >= ctx.rule.min_data.duration;
        let mut relative = 0.0;
        if looked && enough {
            self.looks += 1;
            let k = self.looks as f64;
            self.last_alpha = ctx.alpha * 6.0 / (std::f64::consts::PI.powi(2) * k * k);
            if let (Ok(mk), Ok(ts)) = (
                crate::stats::drift::mann_kendall(&self.values),
                crate::stats::drift::theil_sen(&self.xs, &self.values),
            ) {
                self.slope = ts.slope;
                self.last_p = match ctx.rule.direction {
                    Direction::Decrease => mk.p_decreasing,
                    Direction::Increase => mk.p_increasing,
                    Direction::Either => mk.p_two_sided,
                };
            }
        }
        let level = self
            .level
            .or_else(|| self.values.first().copied())
            .unwrap_or(0.0);
        if level != 0.0 {
            let width = match (self.xs.first(), self.xs.last()) {
                (Some(a), Some(b)) => b - a + 1.0,
                _ => 0.0,
            };
            relative = self.slope * width / level;
        }
        let big_enough = match ctx.rule.direction {
            Direction::Decrease => relative <= -relative_effect(ctx.rule).abs(),
            _ => relative >= relative_effect(ctx.rule).abs(),
        };
        let fail = enough && self.last_p <= self.last_alpha && big_enough;
        let mut evidence = json!({
            "test": "mann_kendall_theil_sen",
            "treatment": {"blocks": n, "last_value": self.values.last().copied().map(round)},
            "baseline": {"level": round(level)},
            "effect": {"relative": round(relative), "slope_per_block": round(self.slope)},
            "p_value": round(self.last_p),
            "look_alpha": round(self.last_alpha),
        });
        let v = if fail {
            Verdict::Fail
        } else {
            Verdict::Inconclusive
        };
        let wait = if n < need {
            format!("{} of data", more((need - n) as f64, "block"))
        } else {
            format!(
                "a trend: p {} against this look's alpha {}",
                round(self.last_p),
                round(self.last_alpha)
            )
        };
        waiting(&mut evidence, v, wait);
        Outcome {
            verdict: v,
            // Expressed against the rule's alpha so Holm can compare it with the others.
            p_value: if enough && big_enough {
                (self.last_p * ctx.alpha / self.last_alpha).min(1.0)
            } else {
                1.0
            },
            alpha: ctx.alpha,
            enough_data: enough,
            harm_e_value: 1.0,
            evidence,
        }
    }
}
