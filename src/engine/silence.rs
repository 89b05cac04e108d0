//! When a source's silence is a finding: a series goes stale after the longer of the rule's
//! `on_missing.stale_after` and [`STALE_SCRAPES`] times its own observed scrape interval.
//!
//! Why: a fixed `stale_after` cannot suit every scrape interval. With `stale_after: 30s`
//! and 30-second scrapes, a single missed scrape (a slow exporter, a dropped connection;
//! 1 to 5 % of scrapes in real fleets) looks like a lockup and rolls the deploy back.
//! Letting the threshold follow the data keeps lockups loud and missed scrapes quiet.
//!
//! The arithmetic for `k` = [`STALE_SCRAPES`] = 5.5: a series last seen at `t` is stale at
//! `t + 5.5 I` (I its scrape interval) only when the 5 scrapes due at `t + I .. t + 5I`
//! all went missing (half an interval of slack absorbs scrape jitter, so 4 misses, a gap
//! of `5 I`, never trip it). With independent misses at rate `p = 5 %` that happens with
//! probability `p^5 = 3.1e-7` per scrape; a deploy of an hour at 10-second scrapes offers
//! 360 starting points, so at most `360 p^5 = 1.1e-4` per series and deploy, and a few
//! such rules stay far below the 0.5 % false-stop budget of a deploy. (`k = 4.5` would give
//! `360 p^4 = 2.3e-3` per rule: too close.) A real lockup is still reported `5.5 I` after
//! the last sample: 55 s at 10-second scrapes, under 3 minutes at 30-second ones.
//!
//! The interval is the median gap between the series' last [`INTERVAL_GAPS`] points, so
//! missed scrapes (longer gaps) and bursts (shorter ones) do not move it.

use super::store::Series;
use crate::model::{DurationMs, Timestamp};

/// How many scrape intervals of silence make a series stale (see the module docs).
pub const STALE_SCRAPES: f64 = 5.5;

/// How many of the newest gaps the scrape interval is the median of.
const INTERVAL_GAPS: usize = 15;

/// The series' observed scrape interval: the median of its newest gaps between points.
/// `None` with fewer than two points.
pub fn scrape_interval(s: &Series) -> Option<DurationMs> {
    let times: Vec<i64> = s.points.tail(INTERVAL_GAPS + 1).map(|p| p.0.0).collect();
    let newest = &times[times.len().saturating_sub(INTERVAL_GAPS + 1)..];
    let mut gaps: Vec<i64> = newest
        .windows(2)
        .rev()
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    Some(DurationMs(gaps[(gaps.len() - 1) / 2]))
}

/// How long `s` may be silent before it is stale: the longer of `stale_after` and
/// [`STALE_SCRAPES`] times its observed scrape interval.
pub fn stale_threshold(s: &Series, stale_after: DurationMs) -> DurationMs {
    let by_interval = scrape_interval(s)
        .map(|i| DurationMs((i.0 as f64 * STALE_SCRAPES).round() as i64))
        .unwrap_or_default();
    stale_after.max(by_interval)
}

/// When a group of series (a rule's series on one side) goes silent: the latest of their
/// stale instants, with the threshold of the series that sets it and that series' last
/// sample. `None` without series.
pub fn group_stale_at<'a>(
    series: impl Iterator<Item = &'a Series>,
    stale_after: DurationMs,
) -> Option<Silence> {
    series
        .map(|s| {
            let threshold = stale_threshold(s, stale_after);
            Silence {
                at: s.last_seen.add(threshold),
                last_seen: s.last_seen,
                threshold,
            }
        })
        .max_by_key(|g| (g.at, g.last_seen))
}

/// When a group of series goes stale, and why then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Silence {
    /// The instant the group counts as silent.
    pub at: Timestamp,
    /// The newest sample of the series that sets `at`.
    pub last_seen: Timestamp,
    /// That series' effective threshold (`at - last_seen`).
    pub threshold: DurationMs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::Window;

    fn series(times: &[i64]) -> Series {
        Series {
            name: "m".into(),
            labels: Default::default(),
            points: Window::from_points(times.iter().map(|t| (Timestamp(*t), 1.0))),
            history: None,
            last_seen: times.last().map_or(Timestamp(i64::MIN), |t| Timestamp(*t)),
        }
    }

    #[test]
    fn interval_is_the_median_gap_and_ignores_missed_scrapes() {
        // 30-second scrapes with two missed ones (60-s gaps) and a jittered one.
        let s = series(&[
            0, 30_000, 90_000, 120_000, 151_000, 180_000, 240_000, 270_000,
        ]);
        assert_eq!(scrape_interval(&s), Some(DurationMs(30_000)));
        assert_eq!(
            stale_threshold(&s, DurationMs::from_secs(30)),
            DurationMs(165_000)
        );
        // A floor longer than 5.5 intervals wins.
        assert_eq!(
            stale_threshold(&s, DurationMs::from_secs(600)),
            DurationMs::from_secs(600)
        );
    }

    #[test]
    fn too_few_points_fall_back_to_stale_after() {
        assert_eq!(scrape_interval(&series(&[5_000])), None);
        assert_eq!(
            stale_threshold(&series(&[5_000]), DurationMs::from_secs(30)),
            DurationMs::from_secs(30)
        );
    }

    #[test]
    fn a_group_is_silent_when_its_last_series_is() {
        let a = series(&[0, 10_000, 20_000]); // stale at 20 s + 55 s
        let b = series(&[0, 30_000, 60_000]); // stale at 60 s + 165 s
        let g = group_stale_at([&a, &b].into_iter(), DurationMs::from_secs(30)).unwrap();
        assert_eq!(g.at, Timestamp(225_000));
        assert_eq!(g.threshold, DurationMs(165_000));
        assert_eq!(g.last_seen, Timestamp(60_000));
    }
}
