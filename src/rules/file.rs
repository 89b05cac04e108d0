//! The rule-file schema: what ops write, as serde structs.
//!
//! These structs are the schema's documentation: every field says what it means, its
//! allowed values and its default. They stay close to the text: values whose checking
//! needs a position in the file (selectors, durations, effects, the names of baselines,
//! directions, actions...) are kept as strings here and checked in [`super::load`], which
//! reports every problem at once with `file:line:column`. Unknown keys are errors
//! (`deny_unknown_fields`), as in Prometheus rule files.
//!
//! A file:
//!
//! ```yaml
//! rules:
//!   - name: php_error_ratio
//!     services: [web]
//!     metric:
//!       kind: ratio
//!       selector: 'php_errors_total{job="web"}'
//!       denominator: 'http_requests_total{job="web"}'
//!     baseline: control
//!     direction: increase
//!     min_effect: "+50%"
//!     action: rollback
//! ```

use serde::Deserialize;

/// A rule file: a list of rules.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules; at least one. Names are unique across every file loaded together.
    pub rules: Vec<RuleSpec>,
}

/// One rule as written: one metric judged against one baseline.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name across all loaded files; letters, digits, `_`, `.`, `-`, starting with
    /// a letter or `_`. It names the rule in decisions, logs and metrics.
    pub name: String,
    /// Free text for the people reading a decision.
    #[serde(default)]
    pub description: Option<String>,
    /// What to do when this rule fires: an absolute `http://` or `https://` URL, carried
    /// in every alert, webhook body and exec environment and linked from the report page.
    #[serde(default)]
    pub runbook_url: Option<String>,
    /// Services whose deploys this rule judges. Default (absent or empty): every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// The series the rule reads and how it turns them into numbers.
    pub metric: MetricSpec,
    /// What the deploy is compared with: `control` (the non-canary hosts over the same
    /// window; canary phase only), `pre_deploy` (the same series just before the deploy)
    /// or `seasonal` (the same series `seasonal_offset` ago).
    pub baseline: String,
    /// For `pre_deploy`: how far back before the deploy the baseline reaches, as a
    /// Prometheus duration. Default `10m`. Not allowed with other baselines.
    #[serde(default)]
    pub baseline_window: Option<String>,
    /// For `seasonal`: how far back the comparison window is shifted, as a Prometheus
    /// duration. Default `7d`. Not allowed with other baselines.
    #[serde(default)]
    pub seasonal_offset: Option<String>,
    /// Which way is bad: `increase` (errors, latency), `decrease` (signups, hit ratio) or
    /// `either`.
    pub direction: String,
    /// The smallest change that matters. Relative: `"+50%"`, `"-20%"`, or `"50%"` (the
    /// sign then comes from `direction`). Absolute, in the metric's own units: `"0.05"`,
    /// `"+30"`, or a YAML number. The sign must agree with `direction`; with `either`
    /// write it unsigned.
    pub min_effect: String,
    /// The false-alarm probability this rule may spend over a whole deploy, in (0, 1).
    /// Default 0.01.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// This rule's share of the deploy's alpha against the other stopping rules (or the
    /// other warnings) judged in the same phase, by weighted Holm: a rule of weight 3
    /// among five of weight 1 is tested at 3/8 of alpha, they at 1/8 each, and the family
    /// never spends more than alpha in all. Give the weight to the signal a bad deploy
    /// shows first. Default 1; must be positive.
    #[serde(default)]
    pub weight: Option<f64>,
    /// What a failing rule asks for: `rollback` (and block the line), `block` (stop the
    /// service's line until a person acknowledges) or `warn` (report only).
    pub action: String,
    /// When true the rule is evaluated and reported but never acted on: the way to try a
    /// new rule on live traffic. Default false.
    #[serde(default)]
    pub shadow: bool,
    /// The phases the rule judges, from `canary`, `full`, `watch`. Default: `[canary]`
    /// for a `control` baseline (which only exists while some hosts are not deployed),
    /// `[canary, full, watch]` otherwise.
    #[serde(default)]
    pub phases: Option<Vec<String>>,
    /// The least data the rule needs before it may judge; below it the rule is
    /// inconclusive. Each field has its own default.
    #[serde(default)]
    pub min_data: Option<MinDataSpec>,
    /// What silence means. Absent: silence is just no data (the rule stays
    /// inconclusive). A MySQL that locks up hard goes silent, so for such sources say what
    /// silence should do.
    #[serde(default)]
    pub on_missing: Option<OnMissingSpec>,
    /// The statistical test: `auto` (chosen from the metric kind: counts get the sequential
    /// binomial/Poisson test, continuous metrics the location/spread comparison) or `drift`
    /// (trend detection for slow failures). Default `auto`.
    #[serde(default)]
    pub test: Option<String>,
}

/// The series a rule reads.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// How samples become numbers: `counter_rate` (a counter's increments per
    /// series-second), `ratio` (a counter's increments over `denominator`'s), `gauge`
    /// (values as they are), `mean` (increments of `<selector>_sum` over `<selector>_count`)
    /// or `histogram_quantile` (`quantile` of the `<selector>_bucket` series).
    pub kind: String,
    /// A Prometheus series selector, e.g. `php_errors_total{job="web"}`. For `mean` and
    /// `histogram_quantile` it names the base name, without `_sum`/`_count`/`_bucket`.
    pub selector: String,
    /// For `ratio` only (and required there): the selector of the denominator counter,
    /// e.g. `http_requests_total{job="web"}`.
    #[serde(default)]
    pub denominator: Option<String>,
    /// For `histogram_quantile` only (and required there): the quantile, in (0, 1).
    #[serde(default)]
    pub quantile: Option<f64>,
    /// The label that names a host, used to tell canary series from the rest. Default
    /// `instance`.
    #[serde(default)]
    pub host_label: Option<String>,
    /// For `counter_rate` and `ratio`: what the counter counts. `events` (default): each
    /// increment is one event (errors, signups), judged with count statistics. `amount`:
    /// the counter sums values (cents of revenue, CPU seconds, bytes), whose increments are
    /// far noisier than event counts; they are judged block by block as a continuous value.
    #[serde(default)]
    pub unit: Option<String>,
}

/// The least data a rule needs before it may judge. Absent fields take the defaults of
/// [`crate::rules::MinData`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinDataSpec {
    /// For `counter_rate` and `ratio`: events on both sides together. Default 20.
    #[serde(default)]
    pub events: Option<u64>,
    /// For continuous kinds: evaluation intervals with data on each side, at least 2.
    /// Default 6.
    #[serde(default)]
    pub samples: Option<usize>,
    /// Time since the phase began, as a Prometheus duration. Default `1m`.
    #[serde(default)]
    pub duration: Option<String>,
}

/// What silence means for a rule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnMissingSpec {
    /// Series not updated for this long are missing, as a Prometheus duration (e.g. `30s`;
    /// a few scrape intervals).
    pub stale_after: String,
    /// What to do when every deploy-side series of the rule is missing: `rollback`,
    /// `block`, `warn` or `ignore` (stay inconclusive).
    pub action: String,
}
