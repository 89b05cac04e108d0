//! The compressed window against a plain `VecDeque` trimmed the way the store trimmed its
//! windows before: same points, bit for bit, for every read, on random, regular,
//! jittered and gapped sequences and special floats.

use super::*;
use std::collections::VecDeque;

/// xorshift64: seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, m: u64) -> u64 {
        self.next() % m.max(1)
    }
}

const SPECIAL: [u64; 9] = [
    0x7ff8_0000_0000_0000, // NaN
    0x7ff0_0000_0000_0002, // Prometheus staleness marker
    0xfff8_0000_0000_0001, // negative NaN with payload
    0x7ff0_0000_0000_0000, // +inf
    0xfff0_0000_0000_0000, // -inf
    0x8000_0000_0000_0000, // -0.0
    0x0000_0000_0000_0001, // smallest subnormal
    0x7fef_ffff_ffff_ffff, // f64::MAX
    0,                     // 0.0
];

fn value(rng: &mut Rng, kind: u64, k: u64, prev: f64) -> f64 {
    match kind % 6 {
        0 => k as f64,                    // a counter, +1 a scrape
        1 => prev + rng.below(50) as f64, // a counter, random steps
        2 => f64::from_bits(rng.next()),  // any bits at all
        3 => f64::from_bits(SPECIAL[rng.below(9) as usize]),
        4 => (rng.below(1000) as f64) / 7.0, // a gauge
        _ => {
            if rng.below(10) == 0 {
                f64::from_bits(SPECIAL[rng.below(9) as usize])
            } else {
                prev * 1.01 + 0.5
            }
        }
    }
}

fn step(rng: &mut Rng, kind: u64) -> i64 {
    match kind % 7 {
        5 => 10_000 + 1000 * (rng.below(5) as i64 - 2), // whole seconds, a scrape late or early
        6 => 5_000 + rng.below(600) as i64,             // every delta-of-delta size up to 12 bits
        0 => 10_000,                                    // regular
        1 => 10_000 + rng.below(41) as i64 - 20,        // jittered
        2 => 10_000 * (1 + (rng.below(8) == 0) as i64 * rng.below(30) as i64), // gapped
        3 => 1 + rng.below(3_000_000_000) as i64,       // random, large
        _ => 1 + rng.below(3) as i64,                   // bunched
    }
}

/// The store's old window: a `VecDeque` trimmed after each push.
fn trim_reference(r: &mut VecDeque<(Timestamp, f64)>, horizon: Timestamp) {
    while r.len() > 2 && r[1].0 < horizon {
        r.pop_front();
    }
}

fn same(a: &[(Timestamp, f64)], b: &[(Timestamp, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
}

fn bits(p: Option<(Timestamp, f64)>) -> Option<(Timestamp, u64)> {
    p.map(|(t, v)| (t, v.to_bits()))
}

fn check(w: &Window, r: &VecDeque<(Timestamp, f64)>, rng: &mut Rng, case: u64) {
    let want: Vec<_> = r.iter().copied().collect();
    let got: Vec<_> = w.iter().collect();
    assert!(same(&got, &want), "case {case}: iter");
    assert_eq!(w.len(), want.len(), "case {case}: len");
    assert_eq!(bits(w.front()), bits(want.first().copied()), "case {case}");
    assert_eq!(bits(w.back()), bits(want.last().copied()), "case {case}");
    for n in [0, 1, 2, 15, 16, 17, 33, 70, 1000] {
        let tail: Vec<_> = w.tail(n).collect();
        assert!(tail.len() >= n.min(want.len()), "case {case}: tail {n}");
        assert!(
            same(&tail, &want[want.len() - tail.len()..]),
            "case {case}: tail {n}"
        );
    }
    // Seeks at, between and around the points.
    let (lo, hi) = match (want.first(), want.last()) {
        (Some(a), Some(b)) => (a.0.0, b.0.0),
        _ => (0, 0),
    };
    let mut probes: Vec<i64> = want
        .iter()
        .flat_map(|p| [p.0.0 - 1, p.0.0, p.0.0 + 1])
        .collect();
    for _ in 0..20 {
        let span = (hi - lo).unsigned_abs().max(1);
        probes.push(
            lo.saturating_sub(50)
                .saturating_add(rng.below(span + 100) as i64),
        );
    }
    probes.extend([i64::MIN, i64::MAX]);
    for t in probes {
        let i = want.partition_point(|p| p.0.0 <= t);
        let (prev, after) = w.seek(Timestamp(t));
        assert_eq!(
            bits(prev),
            bits(i.checked_sub(1).map(|j| want[j])),
            "case {case}: seek {t} prev"
        );
        let rest: Vec<_> = after.collect();
        assert!(same(&rest, &want[i..]), "case {case}: seek {t} after");
    }
}

#[test]
fn windows_read_as_the_trimmed_deque_did() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for case in 0..840u64 {
        let kind = case;
        let mut w = Window::new();
        let mut r = VecDeque::new();
        let n = rng.below(260);
        let mut t = rng.next() as i64 / 4;
        let mut retention = match case % 4 {
            0 => 1_940_000,
            1 => 100_000,
            2 => rng.below(4_000_000_000) as i64,
            _ => -(rng.below(100) as i64), // a horizon after the newest point
        };
        let mut v = 0.0;
        for k in 0..n {
            v = value(&mut rng, kind / 7, k, v);
            w.push(Timestamp(t), v);
            r.push_back((Timestamp(t), v));
            let horizon = Timestamp(t).sub(crate::model::DurationMs(retention));
            w.trim(horizon.min(Timestamp(t)));
            trim_reference(&mut r, horizon);
            if rng.below(97) == 0 {
                // A reload: another retention from the next push on.
                retention = rng.below(3_000_000) as i64;
            }
            if rng.below(41) == 0 {
                check(&w, &r, &mut rng, case);
            }
            match t.checked_add(step(&mut rng, kind)) {
                Some(next) => t = next,
                None => break,
            }
        }
        check(&w, &r, &mut rng, case);
        let rebuilt = Window::from_points(w.iter());
        check(&rebuilt, &r, &mut rng, case);
    }
}

#[test]
fn extreme_times_and_deltas_round_trip() {
    let times = [
        i64::MIN,
        i64::MIN + 1,
        -5,
        0,
        1,
        1 << 40,
        (1 << 62) + 3,
        i64::MAX - 1,
        i64::MAX,
    ];
    let mut w = Window::new();
    let mut r = VecDeque::new();
    for (k, &t) in times.iter().enumerate() {
        let v = f64::from_bits(SPECIAL[k % SPECIAL.len()]);
        w.push(Timestamp(t), v);
        r.push_back((Timestamp(t), v));
    }
    check(&w, &r, &mut Rng(7), 0);
}

#[test]
fn regular_counters_take_little_room() {
    let mut w = Window::new();
    for k in 0..200 {
        w.push(Timestamp(1_700_000_000_000 + k * 10_000), k as f64);
        w.trim(Timestamp(1_700_000_000_000 + k * 10_000 - 1_940_000));
    }
    // 1 940 s at 10 s: the points since the horizon and the one before it.
    assert_eq!(w.len(), 196);
    eprintln!("196 points in {} bytes", w.heap_bytes());
    assert!(w.heap_bytes() <= 600, "{} bytes", w.heap_bytes());
}

#[test]
fn the_record_stays_small() {
    // Ten words in every series' record: the vector, six points' worth of state, and the
    // open chunk's length, count and XOR window.
    assert!(std::mem::size_of::<Window>() <= 80);
}
