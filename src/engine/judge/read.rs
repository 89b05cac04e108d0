//! The series readers: which series a rule reads, and what one side of a comparison
//! adds up to over a span of time (counts and exposure, or a continuous value), and the
//! per-block walks over the pre-deploy window, which skip stretches without data.

use super::Ctx;
use super::evidence::change;
use crate::engine::store::{self, Series, SeriesId, Store};
use crate::model::{DurationMs, Timestamp};
use crate::rules::{MetricKind, Rule};
use std::collections::HashMap;
use std::sync::Arc;

/// Which series a rule reads, found once per new series.
#[derive(Clone, Debug, Default)]
pub struct RuleSeries {
    /// The selector's series (counter, gauge, or numerator).
    pub main: Vec<SeriesId>,
    /// Ratio denominators, or `_count` series of a mean.
    pub denom: Vec<SeriesId>,
    /// Histogram buckets with their upper bound.
    pub buckets: Vec<(SeriesId, f64)>,
}

impl RuleSeries {
    /// Records `series` if `rule` reads it.
    pub fn offer(&mut self, rule: &Rule, id: SeriesId, series: &Series) {
        let name = &*series.name;
        let labels = &series.labels;
        match &rule.kind {
            MetricKind::CounterRate | MetricKind::Gauge => {
                if rule.selector.matches_any(name, labels) {
                    self.main.push(id);
                }
            }
            MetricKind::Ratio { denominator } => {
                if rule.selector.matches_any(name, labels) {
                    self.main.push(id);
                }
                if denominator.matches_any(name, labels) {
                    self.denom.push(id);
                }
            }
            MetricKind::Mean => {
                let base = &rule.selector.name;
                if let Some(suffix) = name.strip_prefix(base.as_str())
                    && rule.selector.matches_any(base, labels)
                {
                    match suffix {
                        "_sum" => self.main.push(id),
                        "_count" => self.denom.push(id),
                        _ => {}
                    }
                }
            }
            MetricKind::HistogramQuantile { .. } => {
                let base = &rule.selector.name;
                if name.strip_prefix(base.as_str()) == Some("_bucket") {
                    let without_le: Vec<(&str, &str)> = labels
                        .iter()
                        .filter(|(k, _)| &**k != "le")
                        .map(|(k, v)| (&**k, &**v))
                        .collect();
                    if rule.selector.matches_any(base, &without_le)
                        && let Some(le) = labels
                            .iter()
                            .find(|(k, _)| &**k == "le")
                            .and_then(|(_, v)| parse_le(v))
                    {
                        self.buckets.push((id, le));
                    }
                }
            }
        }
    }

    /// Every series that shows whether the rule's data still arrives.
    pub fn liveness(&self) -> impl Iterator<Item = SeriesId> + '_ {
        self.main
            .iter()
            .copied()
            .chain(self.buckets.iter().map(|(id, _)| *id))
    }
}

pub(super) fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => v.parse().ok(),
    }
}

/// Which series are on a side of the comparison.
pub trait SideFilter {
    /// True when the series (`id` in the store) is on this side.
    fn includes(&self, id: SeriesId, series: &Series) -> bool;
}

/// A span of time to read: (from, to] of the recent points, or of the per-minute history
/// (for seasonal baselines, already shifted back by the offset).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Start (exclusive).
    pub from: Timestamp,
    /// End (inclusive).
    pub to: Timestamp,
    /// Read the per-minute history instead of the recent points.
    pub history: bool,
}

impl Span {
    /// Recent points over (from, to].
    pub fn recent(from: Timestamp, to: Timestamp) -> Span {
        Span {
            from,
            to,
            history: false,
        }
    }

    fn points<'s, S: Source + ?Sized>(&self, src: &'s S, id: SeriesId) -> Option<Points<'s>> {
        let s = src.get(id);
        if self.history {
            s.history.as_deref().map(Points::History)
        } else {
            Some(src.recent(id))
        }
    }
}

/// Where the readers find a series and its recent points: the store, or a walk's
/// [`Decoded`] windows.
pub trait Source {
    /// The series `id`.
    fn get(&self, id: SeriesId) -> &Series;
    /// Its recent points.
    fn recent(&self, id: SeriesId) -> Points<'_>;
}

impl Source for Store {
    fn get(&self, id: SeriesId) -> &Series {
        Store::get(self, id)
    }

    fn recent(&self, id: SeriesId) -> Points<'_> {
        Points::Recent(&Store::get(self, id).points)
    }
}

/// A block walk's windows, each decoded once over the walk's span: the walk reads every
/// series at every block, and a compressed window would be decoded from a chunk's start
/// at each read. Each slice holds the points the window's reads over the span can see
/// (from the newest point at or before its start to the first point after its end), so
/// a read of a block gives what the window gives.
struct Decoded<'s> {
    store: &'s Store,
    at: HashMap<SeriesId, (usize, usize)>,
    points: Vec<(Timestamp, f64)>,
}

impl<'s> Decoded<'s> {
    fn new(ctx: &Ctx<'s>, from: Timestamp, to: Timestamp) -> Decoded<'s> {
        let rs = ctx.rs;
        let mut d = Decoded {
            store: ctx.store,
            at: HashMap::new(),
            points: Vec::new(),
        };
        let ids = rs.main.iter().chain(&rs.denom).copied();
        for id in ids.chain(rs.buckets.iter().map(|(id, _)| *id)) {
            if d.at.contains_key(&id) {
                continue;
            }
            let start = d.points.len();
            let (prev, after) = ctx.store.get(id).points.seek(from);
            d.points.extend(prev);
            for p in after {
                d.points.push(p);
                if p.0 > to {
                    break;
                }
            }
            d.at.insert(id, (start, d.points.len()));
        }
        d
    }
}

impl Source for Decoded<'_> {
    fn get(&self, id: SeriesId) -> &Series {
        self.store.get(id)
    }

    fn recent(&self, id: SeriesId) -> Points<'_> {
        match self.at.get(&id) {
            Some(&(a, b)) => Points::Slice(&self.points[a..b]),
            None => Points::Recent(&self.store.get(id).points),
        }
    }
}

/// The points a span reads: a series' recent window or its per-minute history.
#[derive(Clone, Copy)]
pub enum Points<'s> {
    /// A series' window.
    Recent(&'s store::Window),
    /// A series' per-minute history.
    History(&'s std::collections::VecDeque<(Timestamp, f64)>),
    /// Points decoded from a window for a walk.
    Slice(&'s [(Timestamp, f64)]),
}

impl Points<'_> {
    fn increase(self, from: Timestamp, to: Timestamp) -> Option<store::Increase> {
        match self {
            Points::Recent(w) => store::increase(w, from, to),
            Points::History(h) => store::increase(h, from, to),
            Points::Slice(p) => store::increase(p, from, to),
        }
    }

    /// The time of the first point after `t`.
    fn next_after(self, t: Timestamp) -> Option<Timestamp> {
        let first = |p: Option<(Timestamp, f64)>| p.map(|(at, _)| at);
        match self {
            Points::Recent(w) => first(w.seek(t).1.next()),
            Points::History(h) => first(store::Seek::seek(h, t).1.next()),
            Points::Slice(p) => first(store::Seek::seek(p, t).1.next()),
        }
    }

    fn mean_in(self, from: Timestamp, to: Timestamp) -> Option<f64> {
        match self {
            Points::Recent(w) => store::mean_in(w, from, to),
            Points::History(h) => store::mean_in(h, from, to),
            Points::Slice(p) => store::mean_in(p, from, to),
        }
    }
}

/// Events and exposure per host, keyed by the store's shared text of the host label's
/// value: a tick reads every series of a large fleet, and hashing a `String` key per
/// series with SipHash was 4 % of a large replay's instructions, allocating and freeing
/// it about as much again.
pub type PerHost = HashMap<Arc<str>, (f64, f64), foldhash::fast::RandomState>;

/// The key of series without the host label (PromQL's "" for an absent label).
static NO_HOST: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));

/// `s`'s host, as a [`PerHost`] key.
fn host_of(s: &Series, label: &str) -> Arc<str> {
    s.label_shared(label).unwrap_or(&NO_HOST).clone()
}

/// What a rule reads from one side over one span of time.
#[derive(Clone, Debug, Default)]
pub struct CountAgg {
    /// Events (numerator increase).
    pub events: f64,
    /// Exposure (denominator increase, or series-seconds).
    pub exposure: f64,
    /// The same per host, for the dispersion.
    pub hosts: PerHost,
    /// Whether every event increase was a whole number (true counts).
    pub integral: bool,
}

/// Sums counter increases of `rs` on one side over (from, to].
pub fn count_agg<S: Source + ?Sized>(
    store: &S,
    rule: &Rule,
    rs: &RuleSeries,
    side: &dyn SideFilter,
    span: Span,
) -> CountAgg {
    let Span { from, to, .. } = span;
    let mut agg = CountAgg {
        integral: true,
        ..CountAgg::default()
    };
    let ratio = matches!(rule.kind, MetricKind::Ratio { .. });
    for &id in &rs.main {
        let s = store.get(id);
        if !side.includes(id, s) {
            continue;
        }
        if let Some(inc) = span.points(store, id).and_then(|p| p.increase(from, to)) {
            agg.events += inc.value;
            agg.integral &= inc.value.fract() == 0.0;
            let h = agg.hosts.entry(host_of(s, &rule.host_label)).or_default();
            h.0 += inc.value;
            if !ratio {
                let secs = inc.span.as_secs_f64();
                agg.exposure += secs;
                h.1 += secs;
            }
        }
    }
    if ratio {
        for &id in &rs.denom {
            let s = store.get(id);
            if !side.includes(id, s) {
                continue;
            }
            if let Some(inc) = span.points(store, id).and_then(|p| p.increase(from, to)) {
                agg.exposure += inc.value;
                agg.hosts.entry(host_of(s, &rule.host_label)).or_default().1 += inc.value;
            }
        }
    }
    agg
}

/// Pearson χ² of per-host (or per-block) counts and exposures around their pooled rate,
/// and its degrees of freedom. Their ratio estimates the dispersion φ (1 for Poisson
/// counts).
pub fn pearson<'a>(cells: impl Iterator<Item = &'a (f64, f64)> + Clone) -> (f64, f64) {
    let (x, e): (f64, f64) = cells
        .clone()
        .filter(|(_, e)| *e > 0.0)
        .fold((0.0, 0.0), |a, (x, e)| (a.0 + x, a.1 + e));
    if x <= 0.0 || e <= 0.0 {
        return (0.0, 0.0);
    }
    let rate = x / e;
    let mut chi2 = 0.0;
    let mut n: f64 = 0.0;
    for (xh, eh) in cells {
        if *eh > 0.0 {
            let expected = rate * eh;
            chi2 += (xh - expected).powi(2) / expected;
            n += 1.0;
        }
    }
    (chi2, (n - 1.0).max(0.0))
}

/// Extra-binomial variation of paired intervals (now, a season ago) around their common
/// rate ratio: Pearson χ² of each interval's split against the split the pooled ratio
/// predicts, and its degrees of freedom (intervals − 1). Measured around the fitted ratio,
/// so a real change does not pass for noise.
pub fn pearson_pairs(pairs: &[[f64; 4]]) -> (f64, f64) {
    let (x1, x0, e1, e0) = pairs.iter().fold((0.0, 0.0, 0.0, 0.0), |a, p| {
        (a.0 + p[0], a.1 + p[1], a.2 + p[2], a.3 + p[3])
    });
    if x1 <= 0.0 || x0 <= 0.0 || e1 <= 0.0 || e0 <= 0.0 {
        return (0.0, 0.0);
    }
    let theta = (x1 / e1) / (x0 / e0);
    let mut chi2 = 0.0;
    let mut n: f64 = 0.0;
    for &[a, b, ea, eb] in pairs {
        let total = a + b;
        if total <= 0.0 || ea <= 0.0 || eb <= 0.0 {
            continue;
        }
        let p = theta * ea / (theta * ea + eb);
        chi2 += (a - total * p).powi(2) / (total * p * (1.0 - p));
        n += 1.0;
    }
    (chi2, (n - 1.0).max(0.0))
}

/// A continuous value of one side over (from, to]: mean of gauges across hosts, pooled
/// mean of `_sum`/`_count`, or the quantile of pooled histogram buckets.
pub fn continuous_value<S: Source + ?Sized>(
    store: &S,
    rule: &Rule,
    rs: &RuleSeries,
    side: &dyn SideFilter,
    span: Span,
) -> Option<f64> {
    let Span { from, to, .. } = span;
    match &rule.kind {
        MetricKind::Gauge => {
            let (mut sum, mut n) = (0.0, 0usize);
            for &id in &rs.main {
                let s = store.get(id);
                if side.includes(id, s)
                    && let Some(m) = span.points(store, id).and_then(|p| p.mean_in(from, to))
                {
                    sum += m;
                    n += 1;
                }
            }
            (n > 0).then(|| sum / n as f64)
        }
        MetricKind::Mean => {
            let total = |ids: &[SeriesId]| {
                ids.iter()
                    .filter(|id| side.includes(**id, store.get(**id)))
                    .filter_map(|id| span.points(store, *id).and_then(|p| p.increase(from, to)))
                    .map(|inc| inc.value)
                    .sum::<f64>()
            };
            let (sum, count) = (total(&rs.main), total(&rs.denom));
            (count > 0.0).then(|| sum / count)
        }
        MetricKind::HistogramQuantile { quantile } => {
            let mut by_le: Vec<(f64, f64)> = Vec::new();
            for &(id, le) in &rs.buckets {
                let s = store.get(id);
                if !side.includes(id, s) {
                    continue;
                }
                if let Some(inc) = span.points(store, id).and_then(|p| p.increase(from, to)) {
                    match by_le.iter_mut().find(|(l, _)| *l == le) {
                        Some(b) => b.1 += inc.value,
                        None => by_le.push((le, inc.value)),
                    }
                }
            }
            by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
            crate::stats::shape::histogram_quantile(*quantile, &by_le)
        }
        MetricKind::CounterRate | MetricKind::Ratio { .. } => {
            let agg = count_agg(store, rule, rs, side, span);
            (agg.exposure > 0.0).then(|| agg.events / agg.exposure)
        }
    }
}

/// The first point of any series the rule reads (either side) after `t`.
fn next_point_after<S: Source + ?Sized>(
    src: &S,
    rs: &RuleSeries,
    t: Timestamp,
) -> Option<Timestamp> {
    rs.main
        .iter()
        .chain(&rs.denom)
        .copied()
        .chain(rs.buckets.iter().map(|(id, _)| *id))
        .filter_map(|id| src.recent(id).next_after(t))
        .min()
}

/// The first block index `>= k` of the blocks `(from + k·block, from + (k+1)·block]` that
/// holds a point of the rule's series, or `None` when no point lies beyond block `k`'s
/// start. A block without a point reads nothing (a counter's increase and a gauge's mean
/// both need a point inside it), so jumping to this block skips empty stretches: the cost
/// of a walk follows the data, whatever the size of a gap (issue 9).
pub(super) fn first_block_with_data(
    ctx: &Ctx<'_>,
    from: Timestamp,
    block: DurationMs,
    k: i64,
) -> Option<i64> {
    first_block_in(ctx.store, ctx.rs, from, block, k)
}

/// [`first_block_with_data`] reading from `src`.
fn first_block_in<S: Source + ?Sized>(
    src: &S,
    rs: &RuleSeries,
    from: Timestamp,
    block: DurationMs,
    k: i64,
) -> Option<i64> {
    let (start, end) = block_at(from, block, k);
    // A point inside block k settles it (the earliest point after its start lies in it
    // too): stop at the first series that has one instead of seeking every window.
    let mut ids = rs
        .main
        .iter()
        .chain(&rs.denom)
        .copied()
        .chain(rs.buckets.iter().map(|(id, _)| *id));
    if ids.any(|id| src.recent(id).next_after(start).is_some_and(|p| p <= end)) {
        return Some(k);
    }
    let p = next_point_after(src, rs, start)?;
    let b = i128::from(block.0.max(1));
    // p lies in block idx when from + idx·b < p <= from + (idx+1)·b.
    let idx = (i128::from(p.0) - i128::from(from.0) - 1).div_euclid(b);
    Some(idx.clamp(i128::from(k), i128::from(i64::MAX)) as i64)
}

/// How many complete blocks of `block` fit in `(from, to]`.
pub(super) fn complete_blocks(from: Timestamp, to: Timestamp, block: DurationMs) -> i64 {
    let n = (i128::from(to.0) - i128::from(from.0)).max(0) / i128::from(block.0.max(1));
    n.min(i128::from(i64::MAX)) as i64
}

/// Calls `f` with every complete block over `(from, to]` that holds data, in order, and
/// returns how many it visited. The rule's windows are decoded once for the walk, and `f`
/// reads them from the [`Decoded`] it is given.
fn walk(
    ctx: &Ctx<'_>,
    from: Timestamp,
    to: Timestamp,
    mut f: impl FnMut(&Decoded<'_>, Span),
) -> u64 {
    let end = complete_blocks(from, to, ctx.block);
    let decoded = Decoded::new(ctx, from, to);
    let mut k = 0;
    let mut read = 0;
    while let Some(next) = first_block_in(&decoded, ctx.rs, from, ctx.block, k)
        && next < end
    {
        let (s, e) = block_at(from, ctx.block, next);
        read += 1;
        f(&decoded, Span::recent(s, e));
        k = next + 1;
    }
    read
}

/// The start and end of block `k` counted from `from`.
pub(super) fn block_at(from: Timestamp, block: DurationMs, k: i64) -> (Timestamp, Timestamp) {
    let start = from.add(DurationMs(k.saturating_mul(block.0)));
    (start, start.add(block))
}

/// Values of one side in consecutive blocks over [from, to), skipping stretches without
/// data. Returns the values and how many blocks were read.
pub(super) fn block_values(
    ctx: &Ctx<'_>,
    side: &dyn SideFilter,
    from: Timestamp,
    to: Timestamp,
) -> (Vec<f64>, u64) {
    let mut out = Vec::new();
    let read = walk(ctx, from, to, |d, span| {
        if let Some(v) = continuous_value(d, ctx.rule, ctx.rs, side, span) {
            out.push(v);
        }
    });
    (out, read)
}

/// Relative differences treatment/control − 1 in consecutive blocks over [from, to),
/// skipping stretches without data. Returns the differences and how many blocks were read.
pub(super) fn block_diffs(ctx: &Ctx<'_>, from: Timestamp, to: Timestamp) -> (Vec<f64>, u64) {
    let mut out = Vec::new();
    let read = walk(ctx, from, to, |d, span| {
        let a = continuous_value(d, ctx.rule, ctx.rs, ctx.treatment, span);
        let b = continuous_value(d, ctx.rule, ctx.rs, ctx.control, span);
        if let Some(d) = a
            .zip(b)
            .and_then(|(a, b)| change(ctx.rule, a, b))
            .filter(|d| d.is_finite())
        {
            out.push(d);
        }
    });
    (out, read)
}

/// Per-block counts of both sides over [from, to), skipping stretches without data:
/// `[x treatment, x control, exposure treatment, exposure control]` for every block where
/// both sides had exposure. Returns the blocks and how many were read.
pub(super) fn block_counts(ctx: &Ctx<'_>, from: Timestamp, to: Timestamp) -> (Vec<[f64; 4]>, u64) {
    let mut out = Vec::new();
    let read = walk(ctx, from, to, |d, span| {
        let t = count_agg(d, ctx.rule, ctx.rs, ctx.treatment, span);
        let c = count_agg(d, ctx.rule, ctx.rs, ctx.control, span);
        if t.exposure > 0.0 && c.exposure > 0.0 {
            out.push([t.events, c.events, t.exposure, c.exposure]);
        }
    });
    (out, read)
}

/// Per-block counts of one side over [from, to), skipping stretches without data, as
/// (events, exposure) per block with exposure. Returns the blocks and how many were read.
pub(super) fn block_side_counts(
    ctx: &Ctx<'_>,
    side: &dyn SideFilter,
    from: Timestamp,
    to: Timestamp,
) -> (Vec<(f64, f64)>, u64) {
    let mut out = Vec::new();
    let read = walk(ctx, from, to, |d, span| {
        let a = count_agg(d, ctx.rule, ctx.rs, side, span);
        if a.exposure > 0.0 {
            out.push((a.events, a.exposure));
        }
    });
    (out, read)
}

/// How much of the pre-deploy window `(deploy_start − window, deploy_start]` the store
/// holds for the rule's series on `side`: from the oldest point to the deploy, capped at
/// the window. Zero when no series on the side has a point before the deploy.
pub(super) fn coverage(ctx: &Ctx<'_>, side: &dyn SideFilter, window: DurationMs) -> DurationMs {
    let rs = ctx.rs;
    let oldest = rs
        .main
        .iter()
        .chain(&rs.denom)
        .copied()
        .chain(rs.buckets.iter().map(|(id, _)| *id))
        .filter(|id| side.includes(*id, ctx.store.get(*id)))
        .filter_map(|id| ctx.store.get(id).points.front().map(|p| p.0))
        .filter(|t| *t < ctx.deploy_start)
        .min();
    match oldest {
        Some(o) => DurationMs(
            ctx.deploy_start
                .0
                .saturating_sub(o.0)
                .clamp(0, window.0.max(0)),
        ),
        None => DurationMs(0),
    }
}
