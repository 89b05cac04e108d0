//! Numbers and times in words for people: RFC 3339 times, durations, rates as
//! percentages, and the one-sentence account of why a rule decided.
//!
//! Everything here reads the evidence JSON the judge writes (see `engine::judge`), so the
//! report page, the terminal view and alerts can all say the same sentence.

use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

/// A unix time in seconds as RFC 3339 (UTC, seconds precision); `-` when not a valid time.
pub fn time(secs: f64) -> String {
    if !(0.0..=253_402_300_799.0).contains(&secs) {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64)).to_string()
}

/// A duration in seconds as "4m 30s", "2h 5m", "12s".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// A plain number with about 3 significant digits and thousands separators for big ones.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() { "-".into() } else { "∞".into() };
    }
    let a = x.abs();
    if a >= 1000.0 {
        let whole = x.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.01 || a == 0.0 {
        trim(format!("{x:.3}"))
    } else {
        format!("{x:.2e}")
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A rate (events per exposure) as a percentage with 2 significant decimals ("0.51%").
pub fn percent(rate: f64) -> String {
    if !rate.is_finite() {
        return "-".into();
    }
    let p = rate * 100.0;
    if p.abs() >= 10.0 {
        format!("{p:.1}%")
    } else if p.abs() >= 0.1 {
        format!("{p:.2}%")
    } else {
        format!("{p:.3}%")
    }
}

/// A signed relative change ("+151%", "-4.2%").
pub fn change(rel: f64) -> String {
    if !rel.is_finite() {
        return "-".into();
    }
    let p = rel * 100.0;
    if p.abs() >= 10.0 {
        format!("{p:+.0}%")
    } else {
        format!("{p:+.1}%")
    }
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

/// The two sides of a rule's comparison, its relative effect, and how its values read
/// (as percentages for ratios of events, plain numbers otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Sides {
    /// The deploy's side.
    pub treatment: Option<f64>,
    /// The baseline.
    pub baseline: Option<f64>,
    /// Relative change (`treatment/baseline - 1`, or the judge's own effect).
    pub effect: Option<f64>,
    /// True when the values are event rates per unit of exposure.
    pub rate: bool,
}

/// Reads both sides and the effect from a rule's evidence.
pub fn sides(ev: &Value) -> Sides {
    let t_rate = num(ev, &["treatment", "rate"]);
    let b_rate = num(ev, &["baseline", "rate"]);
    if t_rate.is_some() && b_rate.is_some() {
        let effect =
            num(ev, &["effect", "ratio"])
                .map(|r| r - 1.0)
                .or_else(|| match (t_rate, b_rate) {
                    (Some(t), Some(b)) if b > 0.0 => Some(t / b - 1.0),
                    _ => None,
                });
        return Sides {
            treatment: t_rate,
            baseline: b_rate,
            effect,
            rate: true,
        };
    }
    let treatment = num(ev, &["treatment", "value"]).or(num(ev, &["treatment", "last_value"]));
    let baseline = num(ev, &["baseline", "value"]).or(num(ev, &["baseline", "level"]));
    Sides {
        treatment,
        baseline,
        effect: num(ev, &["effect", "relative"]),
        rate: false,
    }
}

/// A value of one side, as a percentage for rates.
pub fn side_value(v: Option<f64>, rate: bool) -> String {
    match v {
        Some(x) if rate => percent(x),
        Some(x) => number(x),
        None => "-".into(),
    }
}

/// What the baseline is, in words, for "… vs X {baseline}".
pub fn baseline_words(kind: &str) -> &'static str {
    match kind {
        "control" => "on the other hosts",
        "pre_deploy" => "on the same hosts before the deploy",
        "seasonal" => "at the same time last week",
        _ => "on the baseline",
    }
}

/// The e-value a rule's harm e-process must reach: 1/threshold, where the threshold is the
/// p-value level Holm gave it (or its own alpha).
pub fn e_threshold(ev: &Value) -> Option<f64> {
    num(ev, &["threshold"])
        .or(num(ev, &["alpha"]))
        .filter(|t| *t > 0.0)
        .map(|t| 1.0 / t)
}

/// One sentence: both sides, the effect, and the evidence against its threshold, e.g.
/// "0.51% on the canary vs 0.20% on the other hosts (+151%); evidence 1,113 against a
/// threshold of 700".
pub fn account(ev: &Value, baseline_kind: &str) -> String {
    let s = sides(ev);
    let mut out = format!(
        "{} on the deploy's hosts vs {} {}",
        side_value(s.treatment, s.rate),
        side_value(s.baseline, s.rate),
        baseline_words(baseline_kind)
    );
    if let Some(e) = s.effect {
        out.push_str(&format!(" ({})", change(e)));
    }
    if let Some(e) = num(ev, &["e_value"]) {
        match e_threshold(ev) {
            Some(t) => out.push_str(&format!(
                "; evidence {} against a threshold of {}",
                number(e),
                number(t)
            )),
            None => out.push_str(&format!("; evidence {}", number(e))),
        }
    } else if let (Some(p), Some(a)) = (num(ev, &["p_value"]), num(ev, &["look_alpha"])) {
        out.push_str(&format!("; trend p = {p:.2e} against {a:.2e}"));
    }
    out
}

/// Where a rule stands relative to deciding: log(e)/log(threshold), 1 at the threshold,
/// 0 with no evidence either way, negative when the data lean healthy.
pub fn closeness(ev: &Value) -> f64 {
    match (num(ev, &["e_value"]), e_threshold(ev)) {
        (Some(e), Some(t)) if e > 0.0 && t > 1.0 => e.ln() / t.ln(),
        _ => match (num(ev, &["p_value"]), num(ev, &["look_alpha"])) {
            (Some(p), Some(a)) if p > 0.0 && a > 0.0 && a < 1.0 => p.ln() / a.ln(),
            _ => f64::NEG_INFINITY,
        },
    }
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_and_durations_read_as_people_write_them() {
        assert_eq!(time(1699923130.0), "2023-11-14T00:52:10Z");
        assert_eq!(time(-1.0), "-");
        assert_eq!(time(f64::NAN), "-");
        assert_eq!(duration(270.0), "4m 30s");
        assert_eq!(duration(7500.0), "2h 5m");
        assert_eq!(duration(12.0), "12s");
        assert_eq!(duration(3600.0), "1h");
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(number(1112.54), "1,113");
        assert_eq!(number(-1234567.0), "-1,234,567");
        assert_eq!(number(700.0), "700");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(0.00012), "1.20e-4");
        assert_eq!(percent(0.00510877), "0.51%");
        assert_eq!(change(1.51152), "+151%");
        assert_eq!(change(-0.042), "-4.2%");
    }

    #[test]
    fn the_account_names_both_sides_the_effect_and_the_threshold() {
        let ev = json!({
            "treatment": {"rate": 0.00510877}, "baseline": {"rate": 0.00203414},
            "effect": {"ratio": 2.51152}, "e_value": 1112.54, "threshold": 0.00142857,
        });
        assert_eq!(
            account(&ev, "control"),
            "0.51% on the deploy's hosts vs 0.20% on the other hosts (+151%); evidence 1,113 against a threshold of 700"
        );
        assert!(closeness(&ev) > 1.0);
        let quiet = json!({"e_value": 1.0, "alpha": 0.01});
        assert_eq!(closeness(&quiet), 0.0);
    }

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
