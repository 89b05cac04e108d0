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

/// Integer-valued floats at the edges of the integer codec: near 2^53, past it, the
/// ends of `i64`, and past them.
const BIG: [f64; 10] = [
    9_007_199_254_740_991.0,    // 2^53 - 1
    9_007_199_254_740_992.0,    // 2^53
    -9_007_199_254_740_992.0,   // -2^53
    9_007_199_254_740_994.0,    // 2^53 + 2
    4.611_686_018_427_388e18,   // 2^62
    9.223_372_036_854_776e18,   // 2^63: saturates to i64::MAX, which converts back to it
    -9.223_372_036_854_776e18,  // -2^63
    1.844_674_407_370_955_2e19, // 2^64: not an i64
    -1e300,
    1.0,
];

/// Values for the integer codec: mostly integers (steady, random steps, big jumps, near
/// and past 2^53), with the floats that must keep the XOR path (-0.0, NaNs with payloads,
/// the staleness marker, infinities, fractions) mixed in at a rate set by `kind`.
fn mixed(rng: &mut Rng, kind: u64, prev: f64) -> f64 {
    let odd = match kind % 4 {
        0 => 0,  // integers only
        1 => 40, // now and then
        2 => 4,  // often
        _ => 1,  // runs of fractions
    };
    if odd > 0 && rng.below(odd) == 0 {
        return match rng.below(4) {
            0 => f64::from_bits(SPECIAL[rng.below(9) as usize]),
            1 => prev + 0.5,
            2 => f64::from_bits(rng.next()),
            _ => -0.0,
        };
    }
    let p = if prev.is_finite() && prev.abs() < 1e18 {
        prev.trunc()
    } else {
        0.0
    };
    match rng.below(8) {
        0 => BIG[rng.below(10) as usize],
        1 => BIG[rng.below(7) as usize] - rng.below(4) as f64,
        2 => p + rng.below(1 << 40) as f64 - (1u64 << 39) as f64,
        3 => p - rng.below(5) as f64,
        4 => -(rng.below(100) as f64),
        _ => p + rng.below(3) as f64,
    }
}

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

/// Pushes `(t, v)` into the window and the reference, then trims both to `retention`
/// before `t` (the window never past its newest point).
fn push_both(w: &mut Window, r: &mut VecDeque<(Timestamp, f64)>, t: i64, v: f64, retention: i64) {
    w.push(Timestamp(t), v);
    r.push_back((Timestamp(t), v));
    let horizon = Timestamp(t).sub(crate::model::DurationMs(retention));
    w.trim(horizon.min(Timestamp(t)));
    trim_reference(r, horizon);
}

/// [`check`] of the window, then of a window rebuilt from its points.
fn check_and_rebuilt(w: &Window, r: &VecDeque<(Timestamp, f64)>, rng: &mut Rng, case: u64) {
    check(w, r, rng, case);
    let rebuilt = Window::from_points(w.iter());
    check(&rebuilt, r, rng, case);
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
            push_both(&mut w, &mut r, t, v, retention);
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
        check_and_rebuilt(&w, &r, &mut rng, case);
    }
}

#[test]
fn integer_values_read_back_bit_for_bit() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..400u64 {
        let mut w = Window::new();
        let mut r = VecDeque::new();
        let n = rng.below(300);
        let mut t = rng.next() as i64 / 4;
        let retention = match case % 3 {
            0 => 1_940_000,
            1 => 300_000,
            _ => i64::MAX / 4,
        };
        let mut v = 0.0;
        for k in 0..n {
            // Some chunks turn fractional midway and stay so for a while.
            v = if case % 5 == 4 && (k / 20) % 2 == 1 {
                mixed(&mut rng, 3, v)
            } else {
                mixed(&mut rng, case, v)
            };
            push_both(&mut w, &mut r, t, v, retention);
            if rng.below(37) == 0 {
                check(&w, &r, &mut rng, case);
            }
            match t.checked_add(step(&mut rng, case / 4)) {
                Some(next) => t = next,
                None => break,
            }
        }
        check_and_rebuilt(&w, &r, &mut rng, case);
    }
}

#[test]
fn a_chunk_leaves_integer_coding_where_a_fraction_arrives() {
    // Every position of the first non-integer in a chunk, with regular and huge time
    // steps (the escape beside a 64-bit time code), and each kind of non-integer.
    let odd = [
        0.5,
        -0.0,
        f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0002),
        f64::INFINITY,
        1e300,
    ];
    for at in 0..CHUNK as i64 + 2 {
        for (j, &x) in odd.iter().enumerate() {
            for big_step in [false, true] {
                let mut w = Window::new();
                let mut r = VecDeque::new();
                let mut t = -(1i64 << 62);
                for k in 0..3 * CHUNK as i64 {
                    let v = if k == at { x } else { (k * k) as f64 };
                    w.push(Timestamp(t), v);
                    r.push_back((Timestamp(t), v));
                    t += if big_step && k % 2 == 0 {
                        1 << 40
                    } else {
                        10_000 + k
                    };
                }
                check(&w, &r, &mut Rng(at as u64 + 1), (at as u64) << 8 | j as u64);
            }
        }
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
    // Two bits a point (a time and a value delta-of-delta of zero) and a chunk's header
    // of 24 bytes per 32 points: 32 bytes a chunk, seven or eight chunks, and the room
    // the vector grew into (360 bytes when written; 600 held the XORs' 2 to 3 bytes a
    // point).
    assert!(w.heap_bytes() <= 400, "{} bytes", w.heap_bytes());
}

#[test]
fn irregular_counters_cost_less_than_their_xors() {
    // A request counter (about 220 a scrape, give or take 30) and an error counter (0 to
    // 2 a scrape): the same points with the integer codec and with XORs only (the values
    // shifted by a half, so the codec cannot take them).
    let mut rng = Rng(11);
    for (rate, spread) in [(220, 60), (1, 3)] {
        let (mut ints, mut halves) = (Window::new(), Window::new());
        let mut v = 1_736_713i64;
        for k in 0..380 {
            let t = Timestamp(1_700_000_000_000 + k * 10_000);
            v += rate - spread / 2 + rng.below(spread as u64 + 1) as i64;
            ints.push(t, v as f64);
            halves.push(t, v as f64 + 0.5);
        }
        eprintln!(
            "rate {rate}: {} bytes against {} with XORs",
            ints.heap_bytes(),
            halves.heap_bytes()
        );
        assert!(ints.heap_bytes() < halves.heap_bytes());
    }
}

#[test]
fn the_record_stays_small() {
    // Ten words in every series' record: the vector, six points' worth of state, and the
    // open chunk's length, count, codec and XOR window.
    assert!(std::mem::size_of::<Window>() <= 80);
}
