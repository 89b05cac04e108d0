//! The series store: every series interned once, each with a bounded window of recent
//! points and, where a seasonal rule needs it, a per-minute history reaching back far
//! enough for its offset.
//!
//! Memory is bounded by the windows and the series limit, never by how long immune has
//! run: points older than the retention are dropped as new ones arrive. Values are stored
//! raw; readers compute counter increments with [`increase`], which treats a drop as a
//! restart (the counter began again at 0), exactly as Prometheus's `rate()` does, so a
//! deploy that restarts processes is neither a negative rate nor a spike.

use crate::model::{DurationMs, Labels, Timestamp};
use crate::textformat;
use std::collections::{HashMap, VecDeque};

/// The hasher of the series-text maps: foldhash, seeded per process, hashes a ~70-byte
/// series text in a fraction of SipHash's time (SipHash was 13 % of replay's
/// instructions); the per-process seed and the series limit keep crafted collisions from
/// an outside sender cheap to survive.
type TextHasher = foldhash::fast::RandomState;

/// A series' index in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u32);

/// One interned series.
#[derive(Debug)]
pub struct Series {
    /// Metric name.
    pub name: Box<str>,
    /// Sorted labels.
    pub labels: Labels,
    /// Recent points, oldest first.
    pub points: VecDeque<(Timestamp, f64)>,
    /// Per-minute history (minute start, last value in that minute), only for series a
    /// seasonal rule reads.
    pub history: Option<VecDeque<(Timestamp, f64)>>,
    /// When the newest point arrived (sample time).
    pub last_seen: Timestamp,
}

impl Series {
    /// The value of label `name`, or "" when absent (PromQL's convention).
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Why a sample was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The series text did not parse.
    #[error("bad series {series:?}: {message}")]
    BadSeries {
        /// The text.
        series: String,
        /// What was wrong.
        message: String,
    },
    /// The series limit was reached; new series are refused (and counted by the caller).
    #[error("series limit of {limit} reached; new series refused")]
    SeriesLimit {
        /// The configured limit.
        limit: usize,
    },
}

/// What a new series needs from the rules: whether to keep long history.
pub trait SeriesObserver {
    /// Called once per new series; returns true if it needs per-minute history.
    fn on_new_series(&mut self, id: SeriesId, series: &Series) -> bool;
}

/// All series.
#[derive(Debug)]
pub struct Store {
    by_text: HashMap<Box<str>, SeriesId, TextHasher>,
    by_canonical: HashMap<String, SeriesId, TextHasher>,
    series: Vec<Series>,
    retention: DurationMs,
    history_retention: DurationMs,
    max_series: usize,
    scratch: String,
    /// Samples refused because of the series limit.
    pub refused_samples: u64,
    /// Samples at or before the series' newest point (dropped: windows are in time order),
    /// duplicates included.
    pub out_of_order_samples: u64,
    /// Of those, samples at exactly the series' newest time (a repeated hour, a re-sent
    /// batch), dropped like Prometheus drops them.
    pub duplicate_samples: u64,
    oldest: Option<Timestamp>,
    newest: Option<Timestamp>,
    /// Every text a series was looked up by (canonical and as written), to forget it.
    aliases: Vec<Vec<Box<str>>>,
    /// Slots of expired series, reused by new ones.
    free: Vec<u32>,
    dead: Vec<bool>,
    /// Where the expiry sweep continues.
    cursor: usize,
    /// Series dropped for silence.
    pub expired_series: u64,
}

impl Store {
    /// Changes how much is kept (a reload): longer windows keep what arrives from now on,
    /// shorter ones trim each series as its next point arrives.
    pub fn set_retention(&mut self, retention: DurationMs, history_retention: DurationMs) {
        self.retention = retention;
        self.history_retention = history_retention;
    }

    /// A store keeping `retention` of recent points per series, `history_retention` of
    /// per-minute history where asked, and at most `max_series` series.
    pub fn new(retention: DurationMs, history_retention: DurationMs, max_series: usize) -> Store {
        Store {
            by_text: HashMap::default(),
            by_canonical: HashMap::default(),
            series: Vec::new(),
            retention,
            history_retention,
            max_series,
            scratch: String::new(),
            refused_samples: 0,
            out_of_order_samples: 0,
            duplicate_samples: 0,
            oldest: None,
            newest: None,
            aliases: Vec::new(),
            free: Vec::new(),
            dead: Vec::new(),
            cursor: 0,
            expired_series: 0,
        }
    }

    /// The oldest sample time the store has seen since it started: how far back a
    /// baseline can reach at all.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.oldest
    }

    /// The newest sample time stored.
    pub fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len() - self.free.len()
    }

    /// True when no series is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops series silent since before `now - after` (or `now - history_after` for series
    /// keeping per-minute history), looking at no more than `budget` slots from where the
    /// last sweep stopped, so a sweep's cost is bounded per call and a full pass over the
    /// store takes `len / budget` calls. Their slots are reused by new series; returns the
    /// ids dropped, which the caller must forget.
    pub fn expire(
        &mut self,
        now: Timestamp,
        after: DurationMs,
        history_after: DurationMs,
        budget: usize,
    ) -> Vec<SeriesId> {
        let mut out = Vec::new();
        let n = self.series.len();
        if n == 0 {
            return out;
        }
        for _ in 0..budget.min(n) {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            if self.dead[i] {
                continue;
            }
            let s = &self.series[i];
            let keep = if s.history.is_some() {
                history_after
            } else {
                after
            };
            if s.last_seen == Timestamp(i64::MIN) || now.since(s.last_seen) <= keep {
                continue;
            }
            for text in std::mem::take(&mut self.aliases[i]) {
                self.by_text.remove(&text);
            }
            let mut canonical = String::new();
            textformat::format_series(&s.name, &s.labels, &mut canonical);
            self.by_canonical.remove(&canonical);
            let s = &mut self.series[i];
            s.points = VecDeque::new();
            s.history = None;
            s.labels = Vec::new();
            s.name = "".into();
            self.dead[i] = true;
            self.free.push(i as u32);
            self.expired_series += 1;
            out.push(SeriesId(i as u32));
        }
        out
    }

    /// A series by id.
    pub fn get(&self, id: SeriesId) -> &Series {
        &self.series[id.0 as usize]
    }

    /// All series with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (SeriesId, &Series)> {
        self.series
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.dead[*i])
            .map(|(i, s)| (SeriesId(i as u32), s))
    }

    /// Finds or creates the series written as `text` (`name{labels}` in any label order).
    pub fn intern(
        &mut self,
        text: &str,
        observer: &mut dyn SeriesObserver,
    ) -> Result<SeriesId, StoreError> {
        if let Some(id) = self.by_text.get(text) {
            return Ok(*id);
        }
        let (name, labels) = textformat::parse_series(text).map_err(|e| StoreError::BadSeries {
            series: text.to_string(),
            message: e.message,
        })?;
        self.intern_parsed(text, name, labels, observer)
    }

    /// Finds or creates the series `name{labels}` (labels need not be sorted).
    pub fn intern_labels(
        &mut self,
        name: &str,
        labels: &[(String, String)],
        observer: &mut dyn SeriesObserver,
    ) -> Result<SeriesId, StoreError> {
        // Hot path for sources, push and remote_write: labels usually arrive sorted, so
        // the canonical text is written into a reused buffer and looked up without
        // allocating; only a series seen for the first time pays for copies.
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        let sorted_input = labels.is_sorted();
        let sorted: std::borrow::Cow<'_, [(String, String)]> = if sorted_input {
            std::borrow::Cow::Borrowed(labels)
        } else {
            let mut v = labels.to_vec();
            v.sort();
            std::borrow::Cow::Owned(v)
        };
        textformat::format_series(name, &sorted, &mut text);
        let found = self.by_text.get(text.as_str()).copied();
        let result = match found {
            Some(id) => Ok(id),
            None => self.intern_parsed(&text, name.to_string(), sorted.into_owned(), observer),
        };
        self.scratch = text;
        result
    }

    fn intern_parsed(
        &mut self,
        text: &str,
        name: String,
        labels: Labels,
        observer: &mut dyn SeriesObserver,
    ) -> Result<SeriesId, StoreError> {
        let mut canonical = String::with_capacity(text.len());
        textformat::format_series(&name, &labels, &mut canonical);
        if let Some(id) = self.by_canonical.get(&canonical).copied() {
            self.by_text.insert(text.into(), id);
            self.aliases[id.0 as usize].push(text.into());
            return Ok(id);
        }
        if self.len() >= self.max_series {
            self.refused_samples += 1;
            return Err(StoreError::SeriesLimit {
                limit: self.max_series,
            });
        }
        let series = Series {
            name: name.into(),
            labels,
            points: VecDeque::new(),
            history: None,
            last_seen: Timestamp(i64::MIN),
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.series[i as usize] = series;
                self.dead[i as usize] = false;
                SeriesId(i)
            }
            None => {
                self.series.push(series);
                self.dead.push(false);
                self.aliases.push(Vec::new());
                SeriesId(self.series.len() as u32 - 1)
            }
        };
        if observer.on_new_series(id, &self.series[id.0 as usize]) {
            self.series[id.0 as usize].history = Some(VecDeque::new());
        }
        self.by_text.insert(text.into(), id);
        let aliases = &mut self.aliases[id.0 as usize];
        aliases.push(text.into());
        if canonical != text {
            aliases.push(canonical.as_str().into());
        }
        self.by_canonical.insert(canonical, id);
        Ok(id)
    }

    /// Appends a point. Points at or before the series' newest are dropped and counted.
    /// NaN values are stored: they mean "no value" (Prometheus staleness markers).
    pub fn push(&mut self, id: SeriesId, at: Timestamp, value: f64) {
        let retention = self.retention;
        let history_retention = self.history_retention;
        let s = &mut self.series[id.0 as usize];
        if let Some(&(last, _)) = s.points.back()
            && at <= last
        {
            self.out_of_order_samples += 1;
            if at == last {
                self.duplicate_samples += 1;
            }
            return;
        }
        if self.oldest.is_none_or(|o| at < o) {
            self.oldest = Some(at);
        }
        if self.newest.is_none_or(|n| at > n) {
            self.newest = Some(at);
        }
        s.points.push_back((at, value));
        s.last_seen = at;
        let horizon = at.sub(retention);
        while s.points.len() > 2 && s.points[1].0 < horizon {
            s.points.pop_front();
        }
        if let Some(h) = s.history.as_mut() {
            let minute = Timestamp(at.0 - at.0.rem_euclid(60_000));
            match h.back_mut() {
                Some((m, v)) if *m == minute => *v = value,
                _ => h.push_back((minute, value)),
            }
            let horizon = at.sub(history_retention);
            while h.len() > 2 && h[1].0 < horizon {
                h.pop_front();
            }
        }
    }

    /// Adds points older than series `id`'s oldest (a fill from a TSDB after a reload
    /// lengthened a window); `older` is in time order, points not older are skipped.
    /// Returns how many were added. Trimming to the retention happens at the next push.
    pub fn backfill(&mut self, id: SeriesId, older: &[(Timestamp, f64)]) -> usize {
        let s = &mut self.series[id.0 as usize];
        let Some(&(first, _)) = s.points.front() else {
            return 0;
        };
        let n = older.partition_point(|(t, _)| *t < first);
        for &p in older[..n].iter().rev() {
            s.points.push_front(p);
        }
        if let Some(&(t, _)) = older.first().filter(|_| n > 0)
            && self.oldest.is_none_or(|o| t < o)
        {
            self.oldest = Some(t);
        }
        n
    }

    /// Merges per-minute history read elsewhere (a TSDB), keyed by minute start and in
    /// time order, into series `id`'s history, which it starts if the series had none; a
    /// minute the series already holds keeps its value. A series that never reported
    /// (known only from that history) counts as last seen in its newest minute, so it
    /// expires as a series silent since then does.
    pub fn merge_history(&mut self, id: SeriesId, minutes: &[(Timestamp, f64)]) {
        let s = &mut self.series[id.0 as usize];
        let h = s.history.get_or_insert_with(VecDeque::new);
        let mut merged = Vec::with_capacity(h.len() + minutes.len());
        let (mut a, mut b) = (
            h.iter().copied().peekable(),
            minutes.iter().copied().peekable(),
        );
        while let (Some(x), Some(y)) = (a.peek().copied(), b.peek().copied()) {
            if y.0 < x.0 {
                merged.push(y);
                b.next();
            } else {
                if y.0 == x.0 {
                    b.next();
                }
                merged.push(x);
                a.next();
            }
        }
        merged.extend(a);
        merged.extend(b);
        merged.dedup_by_key(|p| p.0);
        *h = merged.into();
        if s.last_seen == Timestamp(i64::MIN)
            && let Some(&(m, _)) = minutes.last()
        {
            s.last_seen = m;
        }
    }

    /// Drops series `id`'s per-minute history (no deploy reads it any more).
    pub fn drop_history(&mut self, id: SeriesId) {
        self.series[id.0 as usize].history = None;
    }
}

/// The increase of a counter over the points in (from, to], with the point at or before
/// `from` as the starting value. A drop is a restart: the counter began again at 0 and the
/// new value is all increase. Returns `None` when there is no point in the range or no
/// starting value (the first sample of a series carries no increase).
pub fn increase(
    points: &VecDeque<(Timestamp, f64)>,
    from: Timestamp,
    to: Timestamp,
) -> Option<Increase> {
    let start = points.partition_point(|(t, _)| *t <= from);
    let end = points.partition_point(|(t, _)| *t <= to);
    if start == end || start == 0 {
        return None;
    }
    let mut prev = points[start - 1].1;
    let mut total = 0.0;
    let mut resets = 0;
    for &(_, v) in points.range(start..end) {
        if v.is_nan() {
            continue;
        }
        if prev.is_nan() || v < prev {
            if !prev.is_nan() {
                resets += 1;
            }
            total += v;
        } else {
            total += v - prev;
        }
        prev = v;
    }
    Some(Increase {
        value: total,
        span: points[end - 1].0.since(points[start - 1].0),
        resets,
    })
}

/// A counter's increase over a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Increase {
    /// How much it went up, restarts accounted for.
    pub value: f64,
    /// The time between the first and last point used: the exposure in series-time.
    pub span: DurationMs,
    /// Restarts seen.
    pub resets: u32,
}

/// The mean of the non-NaN values in (from, to], or `None`.
pub fn mean_in(points: &VecDeque<(Timestamp, f64)>, from: Timestamp, to: Timestamp) -> Option<f64> {
    let start = points.partition_point(|(t, _)| *t <= from);
    let end = points.partition_point(|(t, _)| *t <= to);
    let (mut sum, mut n) = (0.0, 0usize);
    for &(_, v) in points.range(start..end) {
        if v.is_finite() {
            sum += v;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoHistory;
    impl SeriesObserver for NoHistory {
        fn on_new_series(&mut self, _: SeriesId, _: &Series) -> bool {
            false
        }
    }

    fn pts(v: &[(i64, f64)]) -> VecDeque<(Timestamp, f64)> {
        v.iter().map(|&(t, x)| (Timestamp(t), x)).collect()
    }

    #[test]
    fn increase_handles_restarts_as_prometheus_does() {
        let p = pts(&[(0, 100.0), (10, 110.0), (20, 5.0), (30, 15.0)]);
        let inc = increase(&p, Timestamp(0), Timestamp(30)).unwrap();
        assert_eq!(inc.value, 10.0 + 5.0 + 10.0);
        assert_eq!(inc.resets, 1);
        assert_eq!(inc.span, DurationMs(30));
        assert!(increase(&p, Timestamp(-5), Timestamp(30)).is_none());
        assert!(increase(&p, Timestamp(30), Timestamp(40)).is_none());
    }

    #[test]
    fn interning_is_canonical_and_bounded() {
        let mut s = Store::new(DurationMs(1000), DurationMs(0), 2);
        let a = s.intern(r#"m{b="2",a="1"}"#, &mut NoHistory).unwrap();
        let b = s.intern(r#"m{a="1",b="2"}"#, &mut NoHistory).unwrap();
        assert_eq!(a, b);
        let c = s
            .intern_labels(
                "m",
                &[("b".into(), "2".into()), ("a".into(), "1".into())],
                &mut NoHistory,
            )
            .unwrap();
        assert_eq!(a, c);
        let sorted = s
            .intern_labels(
                "m",
                &[("a".into(), "1".into()), ("b".into(), "2".into())],
                &mut NoHistory,
            )
            .unwrap();
        assert_eq!(a, sorted);
        s.intern("n", &mut NoHistory).unwrap();
        assert_eq!(
            s.intern("o", &mut NoHistory),
            Err(StoreError::SeriesLimit { limit: 2 })
        );
        assert_eq!(s.refused_samples, 1);
        assert!(s.intern("m{", &mut NoHistory).is_err());
    }

    #[test]
    fn silent_series_expire_and_free_their_slot() {
        let mut s = Store::new(DurationMs(100), DurationMs(0), 2);
        let a = s.intern("a", &mut NoHistory).unwrap();
        let b = s.intern(r#"b{x="1",y="2"}"#, &mut NoHistory).unwrap();
        s.intern(r#"b{y="2",x="1"}"#, &mut NoHistory).unwrap();
        s.push(a, Timestamp(0), 1.0);
        s.push(b, Timestamp(1000), 1.0);
        assert!(s.intern("c", &mut NoHistory).is_err(), "full");
        assert!(
            s.expire(Timestamp(50), DurationMs(100), DurationMs(100), 10)
                .is_empty()
        );
        assert_eq!(
            s.expire(Timestamp(500), DurationMs(100), DurationMs(100), 10),
            vec![a]
        );
        assert_eq!(s.len(), 1);
        let c = s.intern("c", &mut NoHistory).unwrap();
        assert_eq!(c, a, "the slot is reused");
        assert_eq!(s.get(c).name.as_ref(), "c");
        assert_eq!(
            s.expire(Timestamp(5000), DurationMs(100), DurationMs(100), 1),
            Vec::<SeriesId>::new(),
            "c never reported; a budget of one looks at one slot"
        );
        assert_eq!(
            s.expire(Timestamp(5000), DurationMs(100), DurationMs(100), 1),
            vec![b]
        );
        let b2 = s.intern(r#"b{y="2",x="1"}"#, &mut NoHistory).unwrap();
        assert_eq!(b2, b);
        assert_eq!(s.get(b2).last_seen, Timestamp(i64::MIN), "a fresh series");
        assert_eq!(s.iter().count(), 2);
    }

    #[test]
    fn windows_stay_bounded_and_ordered() {
        let mut s = Store::new(DurationMs(100), DurationMs(0), 10);
        let id = s.intern("m", &mut NoHistory).unwrap();
        for t in 0..1000 {
            s.push(id, Timestamp(t * 10), t as f64);
        }
        assert!(s.get(id).points.len() <= 12);
        s.push(id, Timestamp(5), 1.0);
        assert_eq!(s.out_of_order_samples, 1);
        assert_eq!(s.get(id).last_seen, Timestamp(9990));
    }
}
