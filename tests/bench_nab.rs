//! The real-data gauge benchmark runs on a few NAB series: every labelled anomaly with
//! history becomes a bad deploy, healthy deploys stay clear of the labelled windows, and
//! clear level shifts are stopped by immune's pre_deploy gauge rule and by K·sigma alike.
//!
//! The data sits in `shared/` beside the checkout (`../shared/data/nab-dev`); set
//! `NAB_DIR` to point elsewhere.

use immune::bench::nab::{self, Setup};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("NAB_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nab-dev")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("combined_labels.json").is_file())
        .expect("NAB data: set NAB_DIR or put shared/ beside the checkout")
}

#[test]
fn artificial_series_become_deploys_and_level_shifts_are_stopped() {
    let mut series = nab::load(&data_dir()).unwrap();
    assert_eq!(series.len(), 34);
    series.retain(|s| s.key.starts_with("artificial"));
    let setup = Setup::default();
    let effects = vec!["10%".to_string(), "30%".to_string()];
    let ds = nab::run_series(&series, 4, &effects, setup).unwrap();
    let again = nab::run_series(&series, 4, &effects, setup).unwrap();
    assert_eq!(
        serde_json::to_string(&ds).unwrap(),
        serde_json::to_string(&again).unwrap()
    );

    // One bad deploy per label (each artificial anomaly has history), canary LEAD samples
    // before it; four healthy deploys per series, none inside a labelled window.
    let labels: usize = series.iter().map(|s| s.labels.len()).sum();
    assert_eq!(ds.iter().filter(|d| d.bad).count(), labels);
    assert_eq!(ds.iter().filter(|d| !d.bad).count(), 4 * series.len());
    for d in &ds {
        let s = series.iter().find(|s| s.key == d.series).unwrap();
        let (from, to) = (s.samples[d.at].0, s.samples[d.at + 2 * setup.phase].0);
        if d.bad {
            assert!(s.labels.contains(&s.samples[d.at + nab::LEAD].0));
        } else {
            assert!(s.windows.iter().all(|(a, b)| to < *a || from > *b), "{d:?}");
        }
        assert_eq!(d.immune.len(), 2);
    }

    // The jumps are shifts of many sigmas: both detectors stop them.
    for name in ["art_daily_jumpsup", "art_daily_jumpsdown"] {
        let d = ds
            .iter()
            .find(|d| d.bad && d.series.contains(name))
            .unwrap();
        assert!(d.max_z > 10.0, "{name}: z {}", d.max_z);
        assert_eq!(d.immune, vec![true, true], "{name}");
    }

    // The comparison sees the same deploys: fewer K·sigma alarms as K grows.
    let cmp = nab::compare(&ds, &effects);
    assert_eq!(cmp.len(), 2);
    for c in &cmp {
        if let Some((_, fa, _)) = c.best_k {
            assert!(fa <= c.immune.0);
        }
    }
    let report = nab::markdown(&ds, &effects, &series);
    assert!(report.contains("| artificialWithAnomaly |"));
}
