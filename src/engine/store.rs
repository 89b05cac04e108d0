//! The series store: every series interned once, each with a bounded window of recent
//! points and, where a seasonal rule needs it, a per-minute history reaching back far
//! enough for its offset.
//!
//! Memory is bounded by the windows and the series limit, never by how long immune has
//! run: points older than the retention are dropped as new ones arrive. Values are stored
//! raw; readers compute counter increments with [`increase`], which treats a drop as a
//! restart (the counter began again at 0), exactly as Prometheus's `rate()` does, so a
//! deploy that restarts processes is neither a negative rate nor a spike.

mod cache;
mod read;
mod texts;
mod window;

pub use cache::SeriesCache;
pub use read::{Increase, Seek, increase, mean_in};
pub use window::{Iter as WindowIter, Window};

use crate::model::{DurationMs, Labels, Timestamp};
use crate::textformat;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The hasher of the series-text maps: foldhash, seeded per process, hashes a ~70-byte
/// series text in a fraction of SipHash's time (SipHash was 13 % of replay's
/// instructions); the per-process seed and the series limit keep crafted collisions from
/// an outside sender cheap to survive.
type TextHasher = foldhash::fast::RandomState;

/// A [`Store`] slot's flag: the series expired and its slot waits for a new one.
const DEAD: u8 = 1;
/// A [`Store`] slot's flag: the series keeps the long retention (a count a rule judges
/// against the control, whose calibration reads an hour before the deploy).
const LONG: u8 = 2;

/// A series' index in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u32);

/// One interned series.
#[derive(Debug)]
pub struct Series {
    /// Metric name, shared with every series of that name.
    pub name: Arc<str>,
    /// Sorted labels; names and values shared across series (see [`Store`]).
    pub labels: SharedLabels,
    /// Recent points, oldest first, compressed (see [`Window`]).
    pub points: Window,
    /// Per-minute history (minute start, last value in that minute), only for series a
    /// seasonal rule reads.
    pub history: Option<History>,
    /// When the newest point arrived (sample time).
    pub last_seen: Timestamp,
}

impl Series {
    /// The value of label `name` as the store's shared text, or `None` when absent: a
    /// key that costs a reference count, not a copy.
    pub fn label_shared(&self, name: &str) -> Option<&Arc<str>> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v)
    }

    /// The value of label `name`, or "" when absent (PromQL's convention).
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| &**k == name)
            .map_or("", |(_, v)| v)
    }
}

/// A series' label pairs, sorted by name, their strings shared through the store's pool:
/// a fleet repeats the same names and values (instance, job, path) across many series,
/// so each series holds pointers, not copies.
pub type SharedLabels = Box<[(Arc<str>, Arc<str>)]>;

/// A series' per-minute history, boxed: most series keep none, so the record holds one
/// pointer instead of a deque's four words.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // on purpose: one word in every record, the deque's four only where kept
pub struct History(Box<VecDeque<(Timestamp, f64)>>);

impl std::ops::Deref for History {
    type Target = VecDeque<(Timestamp, f64)>;

    fn deref(&self) -> &VecDeque<(Timestamp, f64)> {
        &self.0
    }
}

impl std::ops::DerefMut for History {
    fn deref_mut(&mut self) -> &mut VecDeque<(Timestamp, f64)> {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a History {
    type Item = &'a (Timestamp, f64);
    type IntoIter = std::collections::vec_deque::Iter<'a, (Timestamp, f64)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
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

/// What a new series needs from the rules that read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesNeeds {
    /// Per-minute history (a seasonal rule reads it).
    pub history: bool,
    /// The long retention of recent points (see [`Store::set_long_retention`]).
    pub long: bool,
}

/// What a new series needs from the rules: how much of its past to keep.
pub trait SeriesObserver {
    /// Called once per new series.
    fn on_new_series(&mut self, id: SeriesId, series: &Series) -> SeriesNeeds;
}

/// All series.
#[derive(Debug)]
pub struct Store {
    /// Every text a live series is known by: its canonical text (`name{labels}`, labels
    /// sorted) and any other spelling it arrived as.
    by_text: texts::TextIndex,
    series: Vec<Series>,
    retention: DurationMs,
    /// Retention of the series marked `long` (at least `retention`).
    long_retention: DurationMs,
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
    /// The spellings of a series other than its canonical text (labels out of order), to
    /// forget them with it; most series have none and no entry.
    aliases: HashMap<u32, Vec<Box<str>>>,
    /// Metric names, label names and label values, one copy each (see [`SharedLabels`]).
    strings: HashSet<Arc<str>, TextHasher>,
    /// Bumped whenever a series expires (its id may then name another series), so a
    /// [`SeriesCache`] knows its ids are stale.
    generation: u64,
    /// Slots of expired series, reused by new ones.
    free: Vec<u32>,
    /// Per series slot, [`DEAD`] and [`LONG`]: kept beside the records rather than in
    /// them, where a flag would pad every record by 8 bytes (issue 13's 1 KiB a series).
    flags: Vec<u8>,
    /// Where the expiry sweep continues.
    cursor: usize,
    /// Series dropped for silence.
    pub expired_series: u64,
    /// Per-minute history points held, all series together: kept wherever a history
    /// gains or loses points, so a scrape of /metrics reads it without walking the store.
    history_points: usize,
}

impl Store {
    /// Changes how much is kept (a reload): longer windows keep what arrives from now on,
    /// shorter ones trim each series as its next point arrives.
    pub fn set_retention(&mut self, retention: DurationMs, history_retention: DurationMs) {
        self.retention = retention;
        self.long_retention = self.long_retention.max(retention);
        self.history_retention = history_retention;
    }

    /// How much the series marked `long` keep (never less than the short retention).
    /// Every series pays for the points it keeps, so only the series a rule reads that far
    /// back keep that much: a fleet's other series stay at the short retention.
    pub fn set_long_retention(&mut self, long_retention: DurationMs) {
        self.long_retention = long_retention.max(self.retention);
    }

    /// Marks series `id` as keeping the long retention or not (a reload re-marks every
    /// series); a series that becomes long keeps what arrives from now on.
    pub fn set_long(&mut self, id: SeriesId, long: bool) {
        if let Some(f) = self.flags.get_mut(id.0 as usize) {
            *f = if long { *f | LONG } else { *f & !LONG };
        }
    }

    /// Whether series `id` keeps the long retention (see [`Store::set_long`]).
    pub fn is_long(&self, id: SeriesId) -> bool {
        self.flags.get(id.0 as usize).is_some_and(|f| f & LONG != 0)
    }

    /// A store keeping `retention` of recent points per series, `history_retention` of
    /// per-minute history where asked, and at most `max_series` series.
    pub fn new(retention: DurationMs, history_retention: DurationMs, max_series: usize) -> Store {
        Store {
            by_text: texts::TextIndex::default(),
            series: Vec::new(),
            retention,
            long_retention: retention,
            history_retention,
            max_series,
            scratch: String::new(),
            refused_samples: 0,
            out_of_order_samples: 0,
            duplicate_samples: 0,
            oldest: None,
            newest: None,
            aliases: HashMap::new(),
            strings: HashSet::default(),
            free: Vec::new(),
            flags: Vec::new(),
            cursor: 0,
            expired_series: 0,
            generation: 0,
            history_points: 0,
        }
    }

    /// The oldest sample time the store has seen since it started: how far back a
    /// baseline can reach at all.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.oldest
    }

    /// How much of recent points a series keeps (the short retention).
    pub fn retention(&self) -> DurationMs {
        self.retention
    }

    /// How much of recent points the series marked `long` keep.
    pub fn long_retention(&self) -> DurationMs {
        self.long_retention
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
            if self.flags[i] & DEAD != 0 {
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
            for text in self.aliases.remove(&(i as u32)).unwrap_or_default() {
                self.by_text.remove_alias(&text);
            }
            self.by_text.remove(SeriesId(i as u32));
            self.generation += 1;
            let s = &mut self.series[i];
            s.points = Window::new();
            if let Some(h) = s.history.take() {
                self.history_points -= h.len();
            }
            let labels = std::mem::take(&mut s.labels);
            let name = std::mem::replace(&mut s.name, Arc::from(""));
            for text in labels.iter().flat_map(|(k, v)| [k, v]).chain([&name]) {
                // Only the pool and this series hold it: nobody else uses the string.
                if Arc::strong_count(text) == 2 {
                    self.strings.remove(text);
                }
            }
            self.flags[i] = DEAD;
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
            .filter(|(i, _)| self.flags[*i] & DEAD == 0)
            .map(|(i, s)| (SeriesId(i as u32), s))
    }

    /// Finds or creates the series written as `text` (`name{labels}` in any label order).
    pub fn intern(
        &mut self,
        text: &str,
        observer: &mut dyn SeriesObserver,
    ) -> Result<SeriesId, StoreError> {
        if let Some(id) = self.by_text.get(text) {
            return Ok(id);
        }
        let (name, labels) = textformat::parse_series(text).map_err(|e| StoreError::BadSeries {
            series: text.to_string(),
            message: e.message,
        })?;
        self.intern_parsed(text, name, labels, observer)
    }

    /// Where this store's memory goes (see [`StoreMemory`]); walks every series.
    pub fn memory(&self) -> StoreMemory {
        use std::mem::size_of;
        let mut m = StoreMemory {
            records: self.series.capacity() * size_of::<Series>(),
            blocks: 1,
            ..StoreMemory::default()
        };
        for s in &self.series {
            let blocks = |n: usize| usize::from(n > 0);
            m.points += s.points.heap_bytes();
            m.blocks += blocks(s.points.heap_bytes());
            if let Some(h) = &s.history {
                m.history += h.capacity() * size_of::<(Timestamp, f64)>();
                m.blocks += blocks(h.capacity());
            }
            m.labels += size_of_val::<[(Arc<str>, Arc<str>)]>(&s.labels);
            m.blocks += blocks(s.labels.len());
        }
        // The shared strings, once each: two counts and the text, and the pool's table.
        for text in &self.strings {
            m.labels += 2 * size_of::<usize>() + text.len();
            m.blocks += 1;
        }
        m.labels +=
            (self.strings.capacity() * 8 / 7).next_power_of_two() * (size_of::<Arc<str>>() + 1);
        let t = self.by_text.memory();
        m.texts += t.texts;
        m.blocks += t.blocks;
        m.index = t.index
            + self.aliases.capacity() * (size_of::<(u32, Vec<Box<str>>)>() + 1)
            + self.flags.capacity()
            + self.free.capacity() * size_of::<u32>();
        m.blocks += 4;
        for a in self.aliases.values() {
            m.index += a.capacity() * size_of::<Box<str>>();
            m.blocks += usize::from(a.capacity() > 0);
        }
        m
    }

    /// [`Store::intern`] through a reader's [`SeriesCache`]: a text that is the one the
    /// cache predicts (the series that followed the previous one last time) is resolved
    /// by one comparison; anything else takes the map and teaches the cache. The result
    /// is always the one `intern` gives.
    pub fn intern_cached(
        &mut self,
        cache: &mut SeriesCache,
        text: &str,
        observer: &mut dyn SeriesObserver,
    ) -> Result<SeriesId, StoreError> {
        if let Some(id) = cache.hit(self.generation, text) {
            return Ok(id);
        }
        let id = self.intern(text, observer)?;
        cache.learn(text, id);
        Ok(id)
    }

    /// The pool's copy of `text`, added if new.
    fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(t) = self.strings.get(text) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(text);
        self.strings.insert(t.clone());
        t
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
        let found = self.by_text.get(text.as_str());
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
        if let Some(id) = self.by_text.get(canonical.as_str()) {
            // Another spelling of a known series (the text itself missed the map).
            self.by_text.insert_alias(text.into(), id);
            self.aliases.entry(id.0).or_default().push(text.into());
            return Ok(id);
        }
        if self.len() >= self.max_series {
            self.refused_samples += 1;
            return Err(StoreError::SeriesLimit {
                limit: self.max_series,
            });
        }
        let series = Series {
            name: self.share(&name),
            labels: labels
                .iter()
                .map(|(k, v)| (self.share(k), self.share(v)))
                .collect(),
            points: Window::new(),
            history: None,
            last_seen: Timestamp(i64::MIN),
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.series[i as usize] = series;
                self.flags[i as usize] = 0;
                SeriesId(i)
            }
            None => {
                self.series.push(series);
                self.flags.push(0);
                SeriesId(self.series.len() as u32 - 1)
            }
        };
        let needs = observer.on_new_series(id, &self.series[id.0 as usize]);
        if needs.history {
            self.series[id.0 as usize].history = Some(History::default());
        }
        self.set_long(id, needs.long);
        if canonical != text {
            self.by_text.insert_alias(text.into(), id);
            self.aliases.entry(id.0).or_default().push(text.into());
        }
        self.by_text.insert(id, canonical.into_boxed_str());
        Ok(id)
    }

    /// Appends a point; returns whether it was stored. Points at or before the series'
    /// newest are dropped and counted ([`Store::out_of_order_samples`]), so a caller
    /// counting what it stored counts only `true`.
    /// NaN values are stored: they mean "no value" (Prometheus staleness markers).
    pub fn push(&mut self, id: SeriesId, at: Timestamp, value: f64) -> bool {
        let history_retention = self.history_retention;
        let retention = if self.is_long(id) {
            self.long_retention
        } else {
            self.retention
        };
        let s = &mut self.series[id.0 as usize];
        // The newest point's time is `last_seen` (kept beside the window's header), so the
        // order check does not read the window's back: that read was a cache miss per
        // sample on a large store.
        let last = s.last_seen;
        if !s.points.is_empty() && at <= last {
            self.out_of_order_samples += 1;
            if at == last {
                self.duplicate_samples += 1;
            }
            return false;
        }
        if self.oldest.is_none_or(|o| at < o) {
            self.oldest = Some(at);
        }
        if self.newest.is_none_or(|n| at > n) {
            self.newest = Some(at);
        }
        s.points.push(at, value);
        s.last_seen = at;
        // The old window was trimmed after each push, its front dropped while its second
        // point was before `at - retention`; the window keeps that horizon instead (capped
        // at `at`, where the old loop stopped, two points left) and starts where the old
        // window would (see [`Window::trim`]).
        s.points.trim(at.sub(retention).min(at));
        if let Some(h) = s.history.as_mut() {
            let minute = Timestamp(at.0 - at.0.rem_euclid(60_000));
            match h.back_mut() {
                Some((m, v)) if *m == minute => *v = value,
                _ => {
                    h.push_back((minute, value));
                    self.history_points += 1;
                }
            }
            let horizon = at.sub(history_retention);
            while h.len() > 2 && h[1].0 < horizon {
                h.pop_front();
                self.history_points -= 1;
            }
        }
        true
    }

    /// Adds points older than series `id`'s oldest (a fill from a TSDB after a reload
    /// lengthened a window); `older` is in time order, points not older are skipped.
    /// Returns how many were added. Trimming to the retention happens at the next push.
    pub fn backfill(&mut self, id: SeriesId, older: &[(Timestamp, f64)]) -> usize {
        let s = &mut self.series[id.0 as usize];
        let Some((first, _)) = s.points.front() else {
            return 0;
        };
        let n = older.partition_point(|(t, _)| *t < first);
        if n == 0 {
            return 0;
        }
        // Rare (a reload lengthened a window): the window is rebuilt, older points first.
        s.points = Window::from_points(older[..n].iter().copied().chain(s.points.iter()));
        if let Some(&(t, _)) = older.first()
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
        let h = s.history.get_or_insert_with(History::default);
        let held = h.len();
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
        self.history_points = self.history_points - held + merged.len();
        **h = merged.into();
        if s.last_seen == Timestamp(i64::MIN)
            && let Some(&(m, _)) = minutes.last()
        {
            s.last_seen = m;
        }
    }

    /// Drops series `id`'s per-minute history (no deploy reads it any more).
    pub fn drop_history(&mut self, id: SeriesId) {
        if let Some(h) = self.series[id.0 as usize].history.take() {
            self.history_points -= h.len();
        }
    }

    /// Per-minute history points held, all series together (`immune_store_history_points`):
    /// a running count, read on every scrape without walking the store.
    pub fn history_points(&self) -> usize {
        self.history_points
    }

    /// The same count by walking every series: what [`Store::history_points`] must equal
    /// (the tests compare them after mixes of pushes, merges, drops and expiry).
    pub fn history_points_walked(&self) -> usize {
        self.iter()
            .filter_map(|(_, s)| s.history.as_ref().map(|h| h.len()))
            .sum()
    }
}

/// Where a store's memory goes, in bytes asked of the allocator (capacities, not
/// lengths; the allocator's own headers and rounding come on top, about 8 to 16 bytes
/// per block, so `blocks` is given too). An estimate for `immune bench perf`, computed by
/// walking every series: not for a hot path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// The `Series` records themselves (the store's vector of them).
    pub records: usize,
    /// Recent points: the compressed windows' capacity.
    pub points: usize,
    /// Per-minute history, where kept.
    pub history: usize,
    /// Label pairs (per series) and the shared names and values (once each).
    pub labels: usize,
    /// Series texts kept as keys of the text map, canonical and other spellings.
    pub texts: usize,
    /// The text map's table and the per-series bookkeeping (aliases, free slots).
    pub index: usize,
    /// Heap blocks counted above.
    pub blocks: usize,
}

#[cfg(test)]
mod tests;
