//! `immune experiment assign` and `immune check` on experiment files, through the binary.

use std::process::Command;

fn immune(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn assign_prints_one_tab_separated_line_per_uid() {
    let (code, out, err) = immune(&[
        "experiment",
        "assign",
        "experiments/signup_button.yaml",
        "GDCEurope2011",
        "u5",
        "u8",
        "u1",
    ]);
    assert_eq!(code, 0, "{err}");
    // u1 and u5 agree with tests/fixtures/experiment/assign_vectors.tsv (rollout 0.2).
    assert_eq!(out, "u5\tEnhanced\nu8\tcontrol\nu1\tnone\n");
}

#[test]
fn assign_names_an_unknown_experiment() {
    let (code, _, err) = immune(&[
        "experiment",
        "assign",
        "experiments/signup_button.yaml",
        "Nope",
        "u1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no experiment named \"Nope\""), "{err}");
}

#[test]
fn check_accepts_experiment_files_and_reports_positions() {
    let (code, out, err) = immune(&["check", "experiments/signup_button.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok, 1 experiment(s)"), "{out}");
    let dir = std::env::temp_dir().join(format!("immune-exp-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "experiments:\n  - name: x\n    branches:\n      - {name: on, wieght: 0.5}\n",
    )
    .unwrap();
    let (code, _, err) = immune(&["check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.yaml:4:20: unknown field \"wieght\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
