//! Experiment assignment: the shipped test vectors (made by an independent Python
//! implementation, scripts/experiment_fixtures.py), branch shares within sampling error,
//! rollout changes never moving a user, and the experiment file checks.

use immune::experiment::assign::{branch_for, branch_ignoring_rollout};
use immune::experiment::{Branch, Experiment, load_str};

fn exp(name: &str, rollout: f64, branches: &[(&str, f64)]) -> Experiment {
    Experiment {
        name: name.to_string(),
        initial_rollout: rollout,
        control: None,
        branches: branches
            .iter()
            .map(|(n, w)| Branch {
                name: n.to_string(),
                weight: *w,
            })
            .collect(),
        metrics: Vec::new(),
        start: None,
        end: None,
        source: Default::default(),
    }
}

#[test]
fn matches_the_python_reference_vectors() {
    let text = include_str!("fixtures/experiment/assign_vectors.tsv");
    let mut n = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "{line}");
        let branches: Vec<(&str, f64)> = f[2]
            .split(',')
            .map(|bw| {
                let (b, w) = bw.split_once('=').unwrap();
                (b, w.parse().unwrap())
            })
            .collect();
        let e = exp(f[0], f[1].parse().unwrap(), &branches);
        let got = branch_for(&e, f[3]).unwrap_or("none");
        assert_eq!(got, f[4], "{line}");
        n += 1;
    }
    assert!(n >= 600, "only {n} vectors");
}

#[test]
fn branch_shares_match_weights_within_sampling_error() {
    let e = exp("shares", 1.0, &[("a", 0.5), ("b", 0.2)]);
    let n = 100_000usize;
    let mut counts = [0usize; 3];
    for i in 0..n {
        match branch_for(&e, &format!("user-{i}")) {
            Some("control") => counts[0] += 1,
            Some("a") => counts[1] += 1,
            Some("b") => counts[2] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    for (c, w) in counts.iter().zip([0.3, 0.5, 0.2]) {
        let sd = (n as f64 * w * (1.0 - w)).sqrt();
        let z = (*c as f64 - n as f64 * w) / sd;
        // 4.5 sd: a false failure about once in 150,000 runs of a fixed seed-free hash.
        assert!(z.abs() < 4.5, "count {c} for weight {w}: z = {z:.2}");
    }
}

#[test]
fn rollout_share_is_the_initial_rollout() {
    let e = exp("rollout-share", 0.1, &[("on", 0.5)]);
    let n = 100_000usize;
    let inside = (0..n)
        .filter(|i| branch_for(&e, &i.to_string()).is_some())
        .count();
    let sd = (n as f64 * 0.1 * 0.9).sqrt();
    let z = (inside as f64 - n as f64 * 0.1) / sd;
    assert!(z.abs() < 4.5, "{inside} inside: z = {z:.2}");
}

#[test]
fn raising_the_rollout_never_moves_an_assigned_user() {
    let mut e = exp("raise", 0.05, &[("x", 0.3), ("y", 0.3)]);
    let uids: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
    let mut before: Vec<Option<String>> = uids
        .iter()
        .map(|u| branch_for(&e, u).map(str::to_string))
        .collect();
    for rollout in [0.1, 0.3, 0.5, 0.9, 1.0] {
        e.initial_rollout = rollout;
        let mut added = 0;
        for (u, old) in uids.iter().zip(before.iter_mut()) {
            let now = branch_for(&e, u).map(str::to_string);
            match (&*old, &now) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{u} moved at rollout {rollout}"),
                (Some(a), None) => panic!("{u} left {a} when rollout rose to {rollout}"),
                (None, Some(b)) => {
                    added += 1;
                    assert_eq!(b, branch_ignoring_rollout(&e, u));
                }
                (None, None) => {}
            }
            *old = now;
        }
        assert!(added > 0, "raising to {rollout} added nobody");
    }
}

#[test]
fn lowering_the_rollout_only_takes_users_out() {
    let mut e = exp("lower", 0.8, &[("x", 0.5)]);
    let uids: Vec<String> = (0..10_000).map(|i| format!("d{i}")).collect();
    let before: Vec<Option<&str>> = uids.iter().map(|u| branch_for(&e, u)).collect();
    let before: Vec<Option<String>> = before.into_iter().map(|b| b.map(str::to_string)).collect();
    e.initial_rollout = 0.2;
    for (u, old) in uids.iter().zip(&before) {
        if let Some(now) = branch_for(&e, u) {
            assert_eq!(
                old.as_deref(),
                Some(now),
                "{u} joined or moved when rollout fell"
            );
        }
    }
}

#[test]
fn shipped_example_loads() {
    let text = include_str!("../experiments/signup_button.yaml");
    let exps = load_str("signup_button.yaml", text).unwrap();
    assert_eq!(exps.len(), 1);
    assert_eq!(exps[0].name, "GDCEurope2011");
    assert_eq!(exps[0].weights(), vec![("control", 0.5), ("Enhanced", 0.5)]);
}

#[test]
fn errors_name_file_line_column() {
    let text = "experiments:\n  - name: x\n    initial_rollot: 0.1\n    branches:\n      - {name: on, weight: 0.5}\n";
    let err = load_str("bad.yaml", text).unwrap_err().to_string();
    assert!(err.starts_with("bad.yaml:3:5: unknown field"), "{err}");
    assert!(err.contains("did you mean \"initial_rollout\""), "{err}");
}

#[test]
fn range_and_duplicate_problems_are_reported() {
    let text = "experiments:\n  - name: x\n    initial_rollout: 1.5\n    branches:\n      - {name: a, weight: 0.7}\n      - {name: a, weight: 0.6}\n  - name: x\n    branches:\n      - {name: control, weight: 0.1}\n";
    let err = load_str("bad.yaml", text).unwrap_err().to_string();
    for want in [
        "initial_rollout 1.5 is outside [0, 1]",
        "branch \"a\" appears twice",
        "weights sum to 1.3",
        "experiment \"x\" defined twice",
        "branch \"control\" appears twice (or is the control)",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}
