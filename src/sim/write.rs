//! Writes a simulated run as the files `immune replay` reads, plus the ground truth.
//!
//! The benchmark writes tens of millions of samples, so lines are rendered into one
//! reusable byte buffer with hand-written integer and fixed-point formatting (no
//! `fmt` machinery per value) and handed to the writer in large chunks.

use super::{DeployPlan, Fleet, FleetConfig, Scenario};
use crate::model::Timestamp;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// What each simulated deploy really was, for scoring a judge's decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// `(deploy id, scenario, whether a good judge should stop it)`, in plan order.
    pub deploys: Vec<(String, Scenario, bool)>,
}

impl Truth {
    /// The truth of a set of plans.
    pub fn of(plans: &[DeployPlan]) -> Truth {
        Truth {
            deploys: plans
                .iter()
                .map(|p| (p.id.clone(), p.scenario, p.scenario.is_bad()))
                .collect(),
        }
    }
}

/// The metric families in exposition order: `# TYPE` name and type.
const FAMILIES: &[(&str, &str)] = &[
    ("http_requests", "counter"),
    ("php_errors", "counter"),
    ("php_fatal_errors", "counter"),
    ("process_cpu_seconds", "counter"),
    ("app_signups", "counter"),
    ("app_revenue_cents", "counter"),
    ("db_query_duration_seconds", "summary"),
    ("http_request_duration_seconds", "histogram"),
    ("node_load1", "gauge"),
    ("mysql_global_status_threads_running", "gauge"),
    ("mysql_global_status_slow_queries", "counter"),
    ("mysql_global_status_aborted_connects", "counter"),
    ("mysql_global_status_queries", "counter"),
    ("mysql_slave_status_seconds_behind_master", "gauge"),
    ("mysql_up", "gauge"),
    ("memcached_commands", "counter"),
    ("memcached_items_evicted", "counter"),
    ("memcached_current_connections", "gauge"),
    ("memcached_up", "gauge"),
    ("business_signups", "counter"),
    ("business_revenue_cents", "counter"),
];

const FLUSH_AT: usize = 1 << 18;

/// Simulates `cfg`'s fleet with `plans` from `cfg.start` through `until` (inclusive), one
/// scrape round every `cfg.scrape_interval`, and writes:
/// - `metrics`: OpenMetrics text, one `# TYPE` line per family at the top, then every
///   sample in time order as `name{labels} value seconds`, then `# EOF`;
/// - `deploys`: the deploy events as JSON Lines (the `--deploys` format).
///
/// Returns the ground truth of the plans. The output depends only on the arguments.
pub fn write_replay_files(
    cfg: &FleetConfig,
    plans: &[DeployPlan],
    until: Timestamp,
    metrics: &mut dyn Write,
    deploys: &mut dyn Write,
) -> io::Result<Truth> {
    let mut fleet = Fleet::new(cfg.clone(), plans.to_vec());
    for event in fleet.deploy_events() {
        serde_json::to_writer(&mut *deploys, &event)?;
        deploys.write_all(b"\n")?;
    }
    deploys.flush()?;

    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + 4096);
    for (name, kind) in FAMILIES {
        buf.extend_from_slice(b"# TYPE ");
        buf.extend_from_slice(name.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(kind.as_bytes());
        buf.push(b'\n');
    }
    let step = cfg.scrape_interval.0.max(1);
    let mut now = cfg.start;
    let mut stamp: Vec<u8> = Vec::with_capacity(32);
    while now <= until {
        fleet.step(now);
        stamp.clear();
        stamp.push(b' ');
        push_millis_as_secs(&mut stamp, now.0);
        stamp.push(b'\n');
        for (i, def) in fleet.series.iter().enumerate() {
            if !fleet.present[i] {
                continue;
            }
            buf.extend_from_slice(def.prefix.as_bytes());
            push_value(&mut buf, fleet.values[i]);
            buf.extend_from_slice(&stamp);
        }
        if buf.len() >= FLUSH_AT {
            metrics.write_all(&buf)?;
            buf.clear();
        }
        now = now.add(crate::model::DurationMs(step));
    }
    buf.extend_from_slice(b"# EOF\n");
    metrics.write_all(&buf)?;
    metrics.flush()?;
    Ok(Truth::of(plans))
}

/// Appends the decimal digits of `n`.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Appends `digits` decimal digits of `frac` (zero-padded), without trailing zeros.
fn push_fraction(buf: &mut Vec<u8>, frac: u64, digits: u32) {
    if frac == 0 {
        return;
    }
    let mut tmp = [0u8; 20];
    let mut f = frac;
    for i in (0..digits as usize).rev() {
        tmp[i] = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let mut end = digits as usize;
    while end > 0 && tmp[end - 1] == b'0' {
        end -= 1;
    }
    buf.push(b'.');
    buf.extend_from_slice(&tmp[..end]);
}

/// Appends milliseconds since the epoch as seconds (`1699920000` or `1699920000.5`).
fn push_millis_as_secs(buf: &mut Vec<u8>, ms: i64) {
    if ms < 0 {
        buf.push(b'-');
    }
    let ms = ms.unsigned_abs();
    push_u64(buf, ms / 1000);
    push_fraction(buf, ms % 1000, 3);
}

/// Appends a sample value: integers exactly, other values rounded to 6 decimals (far
/// below any effect the judge looks for), huge or non-finite ones through `Display`.
fn push_value(buf: &mut Vec<u8>, v: f64) {
    const SCALE: f64 = 1e6;
    if v.is_finite() && v.abs() < 9.0e12 {
        let scaled = (v * SCALE).round();
        if scaled == 0.0 {
            buf.push(b'0');
            return;
        }
        if scaled < 0.0 {
            buf.push(b'-');
        }
        let s = scaled.abs() as u64;
        push_u64(buf, s / 1_000_000);
        push_fraction(buf, s % 1_000_000, 6);
    } else if v.is_nan() {
        buf.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        buf.extend_from_slice(b"+Inf");
    } else if v == f64::NEG_INFINITY {
        buf.extend_from_slice(b"-Inf");
    } else {
        buf.extend_from_slice(format!("{v}").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: f64) -> String {
        let mut b = Vec::new();
        push_value(&mut b, v);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn values_format_compactly_and_exactly() {
        assert_eq!(value(0.0), "0");
        assert_eq!(value(12345.0), "12345");
        assert_eq!(value(0.05), "0.05");
        assert_eq!(value(1.25), "1.25");
        assert_eq!(value(-3.5), "-3.5");
        assert_eq!(value(0.0000004), "0");
        assert_eq!(value(123.4567891), "123.456789");
        assert_eq!(value(1e14), "100000000000000");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        for x in [0.1, 7.123, 98765.4321, 3.999_999_9] {
            let parsed: f64 = value(x).parse().unwrap();
            assert!((parsed - x).abs() < 1e-6);
        }
    }

    #[test]
    fn timestamps_are_seconds() {
        let mut b = Vec::new();
        push_millis_as_secs(&mut b, 1_699_920_000_000);
        b.push(b' ');
        push_millis_as_secs(&mut b, 1_699_920_000_250);
        assert_eq!(String::from_utf8(b).unwrap(), "1699920000 1699920000.25");
    }
}
