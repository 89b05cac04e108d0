//! The vocabulary every other module speaks: time, labels, samples, deploy events and
//! decisions.
//!
//! These types cross module boundaries (sources → engine → signals, replay → stdout), so
//! their JSON shapes are public promises: `DeployEvent` is the `--deploys` line format of
//! `immune replay` and the body of the deploy API, `Decision` is the line `immune replay`
//! prints and the payload signals carry. Extend them with optional fields; never rename.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds since the Unix epoch.
///
/// Integer milliseconds keep window arithmetic exact and ordering total; the wire formats
/// (OpenMetrics seconds, Prometheus text milliseconds, JSON `at` seconds) convert at the edge.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From fractional seconds, as OpenMetrics and the deploy JSON carry time.
    /// Returns `None` for NaN, infinities and values outside the representable range.
    pub fn from_secs_f64(secs: f64) -> Option<Timestamp> {
        let ms = (secs * 1000.0).round();
        if ms.is_finite() && ms.abs() < 9.0e15 {
            Some(Timestamp(ms as i64))
        } else {
            None
        }
    }

    /// Fractional seconds, for JSON output.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// This instant moved by `d` (saturating).
    #[allow(clippy::should_implement_trait)] // saturating, unlike the operator would suggest
    pub fn add(self, d: DurationMs) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    /// This instant moved back by `d` (saturating).
    #[allow(clippy::should_implement_trait)] // saturating, unlike the operator would suggest
    pub fn sub(self, d: DurationMs) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }

    /// Time elapsed since `earlier`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> DurationMs {
        DurationMs(self.0.saturating_sub(earlier.0).max(0))
    }
}

/// A span of time in milliseconds, written in rule files as Prometheus durations (`30s`, `5m`, `7d`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationMs(pub i64);

impl DurationMs {
    /// From whole seconds.
    pub const fn from_secs(s: i64) -> DurationMs {
        DurationMs(s * 1000)
    }

    /// Fractional seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Parses a Prometheus-style duration: one or more `<int><unit>` terms, units
    /// `ms`, `s`, `m`, `h`, `d`, `w`, `y` (e.g. `1h30m`). Returns `None` when malformed.
    pub fn parse(text: &str) -> Option<DurationMs> {
        let mut rest = text.trim();
        if rest.is_empty() {
            return None;
        }
        let mut total: i64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let n: i64 = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit_ms: i64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 604_800_000,
                "y" => 31_536_000_000,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total = total.checked_add(n.checked_mul(unit_ms)?)?;
        }
        Some(DurationMs(total))
    }
}

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms % 86_400_000 == 0 && ms != 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms % 3_600_000 == 0 && ms != 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms != 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// How far an event's `at` may lie from the agent's clock: events are about what just
/// happened, and a time far off (negative, or milliseconds read as seconds) would make the
/// judge walk an absurd span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWindow {
    /// The oldest accepted `at`, this long before now.
    pub past: DurationMs,
    /// The newest accepted `at`, this long after now (clock skew between hosts).
    pub future: DurationMs,
}

impl Default for EventWindow {
    fn default() -> Self {
        EventWindow {
            past: DurationMs::from_secs(3600),
            future: DurationMs::from_secs(300),
        }
    }
}

impl EventWindow {
    /// Checks `at` (seconds) against `now`; the error says what is accepted.
    pub fn check(&self, at: f64, now: Timestamp) -> Result<Timestamp, String> {
        let Some(t) = Timestamp::from_secs_f64(at) else {
            return Err(format!(
                "at must be a finite time in seconds since the epoch, got {at}"
            ));
        };
        if t < now.sub(self.past) {
            return Err(format!(
                "at {at} is more than {} before the agent's clock ({}): events are accepted from {} in the past to {} ahead",
                self.past,
                now.as_secs_f64(),
                self.past,
                self.future
            ));
        }
        if t > now.add(self.future) {
            return Err(format!(
                "at {at} is more than {} after the agent's clock ({}); is it in milliseconds? `at` is seconds since the epoch",
                self.future,
                now.as_secs_f64()
            ));
        }
        Ok(t)
    }
}

/// A series' label set, sorted by name, without the metric name.
pub type Labels = Vec<(String, String)>;

/// One observed value of one series, owned. Parsers on hot paths use borrowed forms and
/// intern through the engine's store instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, e.g. `php_errors_total`.
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: Labels,
    /// The value.
    pub value: f64,
    /// When it was observed.
    pub at: Timestamp,
}

/// A deploy's phase. The order is the order a deploy moves through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A few hosts run the new version; the rest of the fleet is the control.
    Canary,
    /// Every host runs the new version; compared with the past.
    Full,
    /// Rolled out for a while; watched for slow failures.
    Watch,
}

impl Phase {
    /// The name used in rule files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Canary => "canary",
            Phase::Full => "full",
            Phase::Watch => "watch",
        }
    }
}

/// What the deploy tool tells immune about a deploy (or a service's line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployEventKind {
    /// The new version is live on the canary hosts.
    Canary,
    /// The new version is live everywhere.
    Full,
    /// The rollout is finished; immune gives its final decision.
    End,
    /// The deploy tool rolled back on its own.
    Abort,
    /// A person acknowledged the blocked line of `service` and opened it again.
    Unblock,
}

/// Label values that mark canary series: a series is canary when, for some label named
/// here, its value is one of the listed values. A single string is accepted for one value.
pub type CanarySelector = BTreeMap<String, OneOrMany>;

/// A JSON value that may be one string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a slice-like iterator.
    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(v) => vec![v.as_str()],
            OneOrMany::Many(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}

/// One line of the `--deploys` JSON Lines file, and the body of the deploy API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployEvent {
    /// When it happened, in seconds since the epoch.
    pub at: f64,
    /// The deploy's id; absent only for `unblock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    /// What happened.
    pub event: DeployEventKind,
    /// The service being deployed (required on `canary` and `unblock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The version being deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Commits in this deploy, for the people reading a decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    /// Which series are canary (required on `canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySelector>,
    /// Who acted (on `unblock`, `abort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why (on `unblock`, `abort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A deploy's decision kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The canary looks healthy: go to full rollout.
    Promote,
    /// The deploy ended healthy.
    Pass,
    /// Something is worse but not worth stopping for.
    Warn,
    /// Stop the line: no further deploys of this service until a person acknowledges.
    Block,
    /// Roll this deploy back, and block the line.
    Rollback,
    /// An experiment's guardrail shows harm: turn the experiment off. Never made by a
    /// deploy rule and blocks no line; only sinks that list it get it.
    Stop,
    /// An experiment was closed (asked for, or at its end) with its result. Only sinks
    /// that list it get it.
    Close,
}

impl DecisionKind {
    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Promote => "promote",
            DecisionKind::Pass => "pass",
            DecisionKind::Warn => "warn",
            DecisionKind::Block => "block",
            DecisionKind::Rollback => "rollback",
            DecisionKind::Stop => "stop",
            DecisionKind::Close => "close",
        }
    }

    /// Whether this decision blocks the service's line.
    pub fn blocks_line(self) -> bool {
        matches!(self, DecisionKind::Block | DecisionKind::Rollback)
    }
}

/// A decision about a deploy, with the numbers behind it. This is the JSON line
/// `immune replay` prints and the payload every signal carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When it was reached (seconds since the epoch, the input's clock).
    pub at: f64,
    /// The deploy's id.
    pub deploy: String,
    /// The deployed service.
    pub service: String,
    /// The deployed version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What immune decided.
    pub decision: DecisionKind,
    /// The deploy's phase when it was decided.
    pub phase: Phase,
    /// The rule that decided, or a reserved name for decisions no single rule made
    /// (`all_rules` for promote and pass, `line_blocked` for a deploy on a blocked line).
    pub rule: String,
    /// True on the one decision that ends the deploy.
    #[serde(default)]
    pub r#final: bool,
    /// True when the rule is in shadow mode: reported, never acted on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The numbers behind the decision.
    pub evidence: serde_json::Value,
}

#[cfg(test)]
mod event_window_tests {
    use super::*;

    #[test]
    fn event_times_far_from_now_are_refused() {
        let w = EventWindow::default();
        let now = Timestamp(1_764_201_600_000);
        assert!(w.check(1_764_201_600.0, now).is_ok());
        assert!(w.check(1_764_201_600.0 - 3000.0, now).is_ok());
        assert!(w.check(1_764_201_600.0 + 200.0, now).is_ok());
        assert!(w.check(-8.9e12, now).is_err());
        assert!(
            w.check(1_764_201_600_000.0, now)
                .unwrap_err()
                .contains("milliseconds")
        );
        assert!(w.check(1_764_201_600.0 - 3700.0, now).is_err());
        assert!(w.check(f64::NAN, now).is_err());
    }
}
