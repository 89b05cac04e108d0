//! Reads of a series' points: a counter's increase and a gauge's mean over a span, the
//! same code over every holder of points ([`Seek`]: the compressed window, the per-minute
//! history, decoded slices), so every holder gives the same sums in the same order.
//! Split from `store.rs`.

use super::{Window, WindowIter};
use crate::model::{DurationMs, Timestamp};
use std::collections::VecDeque;

/// Points in strictly increasing time that a read can start at any time: the compressed
/// [`Window`], the per-minute history (a `VecDeque`) and decoded slices. [`increase`] and
/// [`mean_in`] read all of them with the same code, so they sum the same points in the
/// same order whatever holds them.
pub trait Seek {
    /// The points after a time, oldest first.
    type After<'a>: Iterator<Item = (Timestamp, f64)>
    where
        Self: 'a;

    /// The newest point at or before `t` (`None` when the first point is after `t`), and
    /// the points after `t`.
    fn seek(&self, t: Timestamp) -> (Option<(Timestamp, f64)>, Self::After<'_>);
}

impl Seek for Window {
    type After<'a> = WindowIter<'a>;

    fn seek(&self, t: Timestamp) -> (Option<(Timestamp, f64)>, WindowIter<'_>) {
        Window::seek(self, t)
    }
}

impl Seek for VecDeque<(Timestamp, f64)> {
    type After<'a> = std::iter::Copied<std::collections::vec_deque::Iter<'a, (Timestamp, f64)>>;

    fn seek(&self, t: Timestamp) -> (Option<(Timestamp, f64)>, Self::After<'_>) {
        let i = first_after(self.len(), |i| self[i].0, t);
        let prev = i.checked_sub(1).and_then(|j| self.get(j)).copied();
        (prev, self.range(i..).copied())
    }
}

impl Seek for [(Timestamp, f64)] {
    type After<'a> = std::iter::Copied<std::slice::Iter<'a, (Timestamp, f64)>>;

    fn seek(&self, t: Timestamp) -> (Option<(Timestamp, f64)>, Self::After<'_>) {
        let i = first_after(self.len(), |i| self[i].0, t);
        let prev = i.checked_sub(1).and_then(|j| self.get(j)).copied();
        (prev, self[i..].iter().copied())
    }
}

/// The index of the first of `n` points (times `at(i)`, strictly increasing) after `t`, as
/// `partition_point(|p| p.0 <= t)` but starting at the index the first and last times
/// predict: points are nearly evenly spaced, so the guess is right or one off and the
/// answer costs two or three probes, not a binary search's seven. Exact in any case: from
/// the guess it gallops, then bisects.
pub(super) fn first_after(n: usize, at: impl Fn(usize) -> Timestamp, t: Timestamp) -> usize {
    if n == 0 {
        return 0;
    }
    let (t0, t1) = (at(0), at(n - 1));
    if t < t0 {
        return 0;
    }
    if t >= t1 {
        return n;
    }
    // t0 <= t < t1, so n >= 2 and t1 > t0; the guess lies in [0, n - 1).
    let guess = (i128::from(t.0) - i128::from(t0.0)) * (n as i128 - 1)
        / (i128::from(t1.0) - i128::from(t0.0));
    let guess = (guess.max(0) as usize).min(n - 2);
    let bisect = |mut lo: usize, mut hi: usize| {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at(mid) <= t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    if at(guess) <= t {
        let (mut lo, mut step) = (guess + 1, 1);
        loop {
            let probe = lo + step - 1;
            if probe >= n {
                return bisect(lo, n);
            }
            if at(probe) > t {
                return bisect(lo, probe);
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        let (mut hi, mut step) = (guess, 1);
        loop {
            if hi < step {
                return bisect(0, hi);
            }
            let probe = hi - step;
            if at(probe) <= t {
                return bisect(probe + 1, hi);
            }
            hi = probe;
            step *= 2;
        }
    }
}

/// The increase of a counter over the points in (from, to], with the point at or before
/// `from` as the starting value. A drop is a restart: the counter began again at 0 and the
/// new value is all increase. Returns `None` when there is no point in the range or no
/// starting value (the first sample of a series carries no increase).
pub fn increase<P: Seek + ?Sized>(points: &P, from: Timestamp, to: Timestamp) -> Option<Increase> {
    let (start, after) = points.seek(from);
    let (first, mut prev) = start?;
    let mut total = 0.0;
    let mut resets = 0;
    let mut last = None;
    for (t, v) in after {
        if t > to {
            break;
        }
        last = Some(t);
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
        span: last?.since(first),
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
pub fn mean_in<P: Seek + ?Sized>(points: &P, from: Timestamp, to: Timestamp) -> Option<f64> {
    let (_, after) = points.seek(from);
    let (mut sum, mut n) = (0.0, 0usize);
    for (t, v) in after {
        if t > to {
            break;
        }
        if v.is_finite() {
            sum += v;
            n += 1;
        }
    }
    (n > 0).then(|| sum / n as f64)
}
