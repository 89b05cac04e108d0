//! What a simulated deploy does to the fleet, and its names on the command line.
//!
//! The names double as the JSON form of [`Scenario`] in the benchmark's ground truth, so a
//! truth file reads like the command that produced it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a simulated deploy does. Unless said otherwise an effect applies to the canary
/// hosts from the canary event and to every web host from the full event, until the
/// deploy's end (the end stands for "fixed or rolled back").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Scenario {
    /// No change at all: the false-alarm baseline.
    Healthy,
    /// A healthy deploy with a confounder: the whole fleet's traffic rises ×1.5–2 (drawn
    /// per deploy) from the canary event to the end, with the mild fleet-wide latency and
    /// load rise that goes with it. Canary and control move together; the past does not.
    Surge,
    /// PHP error rate (`php_errors_total` per request) times this factor.
    ErrorRate(f64),
    /// A new class of failure: PHP fatal errors (`php_fatal_errors_total`, base ≈0.02 % of
    /// requests) ×50, from a base so small that the pre-deploy window barely saw any.
    NewErrors,
    /// Request latency median times this factor (same log-scale spread); CPU per request
    /// rises with its square root.
    Latency(f64),
    /// Request latency log-scale sigma times this factor, same median: the tail fattens.
    LatencyVariance(f64),
    /// MySQL locks up: the `mysql` series stop being emitted from 60 s after the canary
    /// event until the end, and the whole web fleet sees slow queries, more errors and
    /// higher latency meanwhile.
    MysqlLockup,
    /// Memcached locks up: the `memcached` series stop from 60 s after the canary event
    /// until the end; the web fleet gets slower and MySQL busier meanwhile.
    MemcachedLockup,
    /// The memcached hit ratio of gets from affected hosts falls by this fraction
    /// (0.2: a 94 % hit ratio becomes 75 %); misses turn into sets and MySQL queries.
    HitRatioDrop(f64),
    /// Signups per request on affected hosts times this factor (e.g. 0.8).
    Signups(f64),
    /// Orders per request on affected hosts times this factor, hence revenue (e.g. 0.9).
    Revenue(f64),
    /// From the full event on, the app's important query (`db_query_duration_seconds`)
    /// gets slower by this fraction of its base time per minute, on every web host, and
    /// keeps growing after the end (capped at ×50): the slow failure a watch phase exists for.
    SlowBurn(f64),
}

impl Scenario {
    /// Whether a good judge should stop this deploy (the benchmark's ground truth).
    /// A factor of exactly 1 (or a drop of 0) is healthy; signups or revenue going up is good.
    pub fn is_bad(&self) -> bool {
        match *self {
            Scenario::Healthy | Scenario::Surge => false,
            Scenario::ErrorRate(m) | Scenario::Latency(m) | Scenario::LatencyVariance(m) => m > 1.0,
            Scenario::NewErrors | Scenario::MysqlLockup | Scenario::MemcachedLockup => true,
            Scenario::HitRatioDrop(f) | Scenario::SlowBurn(f) => f > 0.0,
            Scenario::Signups(m) | Scenario::Revenue(m) => m < 1.0,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Scenario::Healthy => f.write_str("healthy"),
            Scenario::Surge => f.write_str("surge"),
            Scenario::ErrorRate(m) => write!(f, "error-rate:{m}"),
            Scenario::NewErrors => f.write_str("new-errors"),
            Scenario::Latency(m) => write!(f, "latency:{m}"),
            Scenario::LatencyVariance(m) => write!(f, "latency-variance:{m}"),
            Scenario::MysqlLockup => f.write_str("mysql-lockup"),
            Scenario::MemcachedLockup => f.write_str("memcached-lockup"),
            Scenario::HitRatioDrop(x) => write!(f, "hit-ratio:{x}"),
            Scenario::Signups(m) => write!(f, "signups:{m}"),
            Scenario::Revenue(m) => write!(f, "revenue:{m}"),
            Scenario::SlowBurn(x) => write!(f, "slow-burn:{x}"),
        }
    }
}

/// Why a scenario name did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    /// The name is not one of the known scenarios.
    #[error(
        "unknown scenario {0:?}; expected healthy, surge, new-errors, mysql-lockup, \
         memcached-lockup, error-rate:F, latency:F, latency-variance:F, hit-ratio:F, \
         signups:F, revenue:F or slow-burn:F"
    )]
    Unknown(String),
    /// The scenario needs a number after `:` and got something else.
    #[error("scenario {name:?} needs a finite non-negative number after ':', got {value:?}")]
    BadNumber {
        /// The scenario's name.
        name: String,
        /// What followed the colon.
        value: String,
    },
}

impl FromStr for Scenario {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Scenario, ScenarioError> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let number = || -> Result<f64, ScenarioError> {
            let bad = || ScenarioError::BadNumber {
                name: name.to_string(),
                value: arg.unwrap_or("").to_string(),
            };
            let v: f64 = arg.ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(bad())
            }
        };
        let plain = |sc: Scenario| {
            if arg.is_some() {
                Err(ScenarioError::Unknown(s.to_string()))
            } else {
                Ok(sc)
            }
        };
        match name {
            "healthy" => plain(Scenario::Healthy),
            "surge" => plain(Scenario::Surge),
            "new-errors" => plain(Scenario::NewErrors),
            "mysql-lockup" => plain(Scenario::MysqlLockup),
            "memcached-lockup" => plain(Scenario::MemcachedLockup),
            "error-rate" => Ok(Scenario::ErrorRate(number()?)),
            "latency" => Ok(Scenario::Latency(number()?)),
            "latency-variance" => Ok(Scenario::LatencyVariance(number()?)),
            "hit-ratio" => {
                let f = number()?;
                if f > 1.0 {
                    return Err(ScenarioError::BadNumber {
                        name: name.to_string(),
                        value: f.to_string(),
                    });
                }
                Ok(Scenario::HitRatioDrop(f))
            }
            "signups" => Ok(Scenario::Signups(number()?)),
            "revenue" => Ok(Scenario::Revenue(number()?)),
            "slow-burn" => Ok(Scenario::SlowBurn(number()?)),
            _ => Err(ScenarioError::Unknown(s.to_string())),
        }
    }
}

impl From<Scenario> for String {
    fn from(s: Scenario) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Scenario {
    type Error = ScenarioError;

    fn try_from(s: String) -> Result<Scenario, ScenarioError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cli_name_round_trips() {
        for name in [
            "healthy",
            "surge",
            "error-rate:2",
            "latency:1.3",
            "latency-variance:2",
            "mysql-lockup",
            "memcached-lockup",
            "hit-ratio:0.2",
            "signups:0.8",
            "revenue:0.9",
            "slow-burn:0.01",
            "new-errors",
        ] {
            let s: Scenario = name.parse().unwrap();
            assert_eq!(s.to_string(), name);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
        }
    }

    #[test]
    fn bad_names_are_errors() {
        assert!(matches!(
            "latency".parse::<Scenario>(),
            Err(ScenarioError::BadNumber { .. })
        ));
        assert!(matches!(
            "latency:x".parse::<Scenario>(),
            Err(ScenarioError::BadNumber { .. })
        ));
        assert!(matches!(
            "hit-ratio:2".parse::<Scenario>(),
            Err(ScenarioError::BadNumber { .. })
        ));
        assert!(matches!(
            "healthy:1".parse::<Scenario>(),
            Err(ScenarioError::Unknown(_))
        ));
        assert!(matches!(
            "nope".parse::<Scenario>(),
            Err(ScenarioError::Unknown(_))
        ));
    }

    #[test]
    fn badness_follows_direction() {
        assert!(!Scenario::ErrorRate(1.0).is_bad());
        assert!(Scenario::ErrorRate(1.5).is_bad());
        assert!(!Scenario::Signups(1.2).is_bad());
        assert!(Scenario::Signups(0.8).is_bad());
        assert!(!Scenario::Surge.is_bad());
    }
}
