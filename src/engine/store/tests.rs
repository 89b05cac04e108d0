//! Unit tests of `crate::engine::store`.

use super::read::first_after;
use super::*;

struct NoHistory;
impl SeriesObserver for NoHistory {
    fn on_new_series(&mut self, _: SeriesId, _: &Series) -> SeriesNeeds {
        SeriesNeeds::default()
    }
}

#[test]
fn a_series_record_is_two_cache_lines() {
    // Every active series pays for its record (issue 13's 1 KiB a series): a flag
    // added to `Series` pads it by 8 bytes; per-slot flags live in `Store::flags`.
    assert!(
        size_of::<Series>() <= 128,
        "a series record is {} bytes",
        size_of::<Series>()
    );
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
fn first_after_is_partition_point() {
    // Even, jittered, gapped and bunched windows; every query time around them.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |m: i64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % m as u64) as i64
    };
    for case in 0..400 {
        let n = (case % 90) as usize;
        let mut t = rnd(1000) - 500;
        let mut p = VecDeque::new();
        for i in 0..n {
            p.push_back((Timestamp(t), i as f64));
            t += match case % 4 {
                0 => 10,
                1 => 8 + rnd(5),
                2 => 1 + rnd(3) * rnd(3) * 40,
                _ => 1 + rnd(1000),
            };
        }
        // Rotate so the ring wraps, as a trimmed window's does.
        for _ in 0..case % 7 {
            if let Some(q) = p.pop_front() {
                p.push_back((Timestamp(t), q.1));
                t += 10;
            }
        }
        let lo = p.front().map_or(0, |q| q.0.0) - 30;
        let hi = p.back().map_or(0, |q| q.0.0) + 30;
        for q in lo..=hi {
            let at = Timestamp(q);
            assert_eq!(
                first_after(p.len(), |i| p[i].0, at),
                p.partition_point(|(t, _)| *t <= at),
                "case {case} at {q}"
            );
        }
    }
}

#[test]
fn cached_interning_agrees_with_interning() {
    let texts = [
        r#"m{a="1",b="2"}"#,
        r#"m{b="2",a="1"}"#,
        "n",
        r#"m{a="3"}"#,
        "o",
    ];
    let mut s = Store::new(DurationMs(100), DurationMs(0), 4);
    let mut plain = Store::new(DurationMs(100), DurationMs(0), 4);
    let mut cache = SeriesCache::new();
    // Rounds in order, out of order, with a series going silent and expiring.
    let rounds: [&[usize]; 6] = [
        &[0, 2, 3],
        &[0, 2, 3],
        &[1, 3, 2],
        &[2, 0, 4, 3],
        &[3, 4, 2],
        &[0, 2, 3, 4],
    ];
    for (r, round) in rounds.iter().enumerate() {
        for &i in *round {
            let got = s.intern_cached(&mut cache, texts[i], &mut NoHistory);
            let want = plain.intern(texts[i], &mut NoHistory);
            assert_eq!(got, want, "round {r} text {}", texts[i]);
            if let Ok(id) = got {
                s.push(id, Timestamp(r as i64 * 100), 1.0);
                plain.push(id, Timestamp(r as i64 * 100), 1.0);
            }
        }
        let now = Timestamp(r as i64 * 100 + 50);
        assert_eq!(
            s.expire(now, DurationMs(120), DurationMs(120), 10),
            plain.expire(now, DurationMs(120), DurationMs(120), 10)
        );
    }
    assert!(s.expired_series > 0, "the case covers expiry");
    assert_eq!(s.len(), plain.len());
}

#[test]
fn windows_keep_their_retention_compressed() {
    let mut s = Store::new(DurationMs(740_000), DurationMs(0), 10);
    let id = s.intern("m", &mut NoHistory).unwrap();
    for t in 0..300 {
        s.push(id, Timestamp(t * 10_000), t as f64);
    }
    let p = &s.get(id).points;
    assert_eq!(p.len(), 76);
    assert_eq!(p.front().map(|q| q.0), Some(Timestamp(224 * 10_000)));
    // 76 points and at most one chunk more, about 11 bits a point.
    assert!(p.heap_bytes() <= 400, "{} bytes", p.heap_bytes());
}

#[test]
fn reads_agree_across_window_deque_and_slice() {
    let v: Vec<(Timestamp, f64)> = (0..120)
        .map(|i| {
            let x = match i % 17 {
                5 => f64::NAN,
                11 => 3.0, // a restart
                _ => (i * i) as f64 / 3.0,
            };
            (Timestamp(i * 10_000 + (i % 3)), x)
        })
        .collect();
    let w = Window::from_points(v.iter().copied());
    let d: VecDeque<_> = v.iter().copied().collect();
    for from in (-20_000..1_250_000).step_by(3_331) {
        for len in [1, 9_999, 10_000, 60_000, 400_000] {
            let (a, b) = (Timestamp(from), Timestamp(from + len));
            let s = increase(v.as_slice(), a, b);
            assert_eq!(
                increase(&w, a, b).map(|i| (i.value.to_bits(), i.span, i.resets)),
                s.map(|i| (i.value.to_bits(), i.span, i.resets))
            );
            assert_eq!(increase(&d, a, b), s);
            let m = mean_in(v.as_slice(), a, b).map(f64::to_bits);
            assert_eq!(mean_in(&w, a, b).map(f64::to_bits), m);
            assert_eq!(mean_in(&d, a, b).map(f64::to_bits), m);
        }
    }
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

/// Every series keeps per-minute history.
struct WithHistory;
impl SeriesObserver for WithHistory {
    fn on_new_series(&mut self, _: SeriesId, _: &Series) -> SeriesNeeds {
        SeriesNeeds {
            history: true,
            long: false,
        }
    }
}

/// The running count of history points (what a scrape reads) equals a walk over every
/// series after each of a long mix of pushes (new minutes, the same minute again, out of
/// order, history trimmed at its retention), merges, drops, expiry and reused slots.
#[test]
fn the_running_history_count_is_the_walked_count_after_any_mix() {
    let mut s = Store::new(DurationMs(600_000), DurationMs(20 * 60_000), 6);
    let mut seed = 7u64;
    let mut rand = |n: u64| {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    };
    let mut now = 0i64;
    let (mut most, mut expired, mut trimmed) = (0, 0, false);
    for step in 0..5_000 {
        now += 10_000 + rand(50_000) as i64;
        let name = format!("m{{i=\"{}\"}}", rand(8));
        let before = s.history_points();
        match rand(10) {
            0..=5 => {
                let with: &mut dyn SeriesObserver = if rand(4) == 0 {
                    &mut NoHistory
                } else {
                    &mut WithHistory
                };
                if let Ok(id) = s.intern(&name, with) {
                    let at = if rand(8) == 0 { now - 120_000 } else { now };
                    s.push(id, Timestamp(at), step as f64);
                    trimmed |= s.history_points() < before;
                }
            }
            6 => {
                if let Ok(id) = s.intern(&name, &mut WithHistory) {
                    let from = now - rand(40) as i64 * 60_000;
                    let from = from - from.rem_euclid(60_000);
                    let minutes: Vec<(Timestamp, f64)> = (0..rand(30) as i64)
                        .map(|k| (Timestamp(from + k * 60_000), k as f64))
                        .collect();
                    s.merge_history(id, &minutes);
                }
            }
            7 => {
                let n = rand(6) as usize;
                let id = s.iter().nth(n).map(|(id, _)| id);
                if let Some(id) = id {
                    s.drop_history(id);
                }
            }
            _ => {
                expired += s
                    .expire(Timestamp(now), DurationMs(90_000), DurationMs(90_000), 3)
                    .len()
            }
        }
        assert_eq!(s.history_points(), s.history_points_walked(), "step {step}");
        most = most.max(s.history_points());
    }
    assert!(
        most > 20 && expired > 0 && trimmed,
        "{most} {expired} {trimmed}"
    );
}
