//! Unit tests of `crate::replay`: the replay read on the reader thread (small blocks)
//! decides what it decides read on the caller's thread (one block), byte for byte, and
//! names the same lines in its errors.

use super::*;
use crate::engine::EngineConfig;

/// The decisions (JSON Lines), summary, or error message of one replay.
fn replay(
    metrics: &[u8],
    deploys: &[u8],
    block_size: usize,
) -> Result<(Vec<u8>, ReplaySummary), String> {
    let rules = crate::defaults::load_rules(&[]).map_err(|e| e.to_string())?;
    let mut engine = Engine::new(rules, EngineConfig::default());
    let mut out = Vec::new();
    let summary = run_in_blocks(
        &mut engine,
        Input::new("m.om", metrics),
        Input::new("d.jsonl", deploys),
        Options {
            unit: TimestampUnit::Seconds,
            eval_interval_ms: 10_000,
        },
        &mut out,
        block_size,
    )
    .map_err(|e| e.to_string())?;
    Ok((out, summary))
}

#[test]
fn the_reader_thread_changes_no_decision() {
    let cfg = crate::sim::FleetConfig::default();
    let plans = crate::defaults::example_plans(&cfg);
    let until = cfg.start.add(crate::model::DurationMs::from_secs(80 * 60));
    let (mut metrics, mut deploys) = (Vec::new(), Vec::new());
    crate::sim::write_replay_files(&cfg, &plans, until, &mut metrics, &mut deploys).unwrap();
    // One block: read on this thread. Then the reader thread, with lines straddling
    // blocks of every size, and lines longer than a block.
    let (want, want_summary) = replay(&metrics, &deploys, metrics.len() + 1).unwrap();
    assert!(want_summary.decisions >= 2, "{want_summary:?}");
    for block_size in [100, 4096, 65_536] {
        let (got, summary) = replay(&metrics, &deploys, block_size).unwrap();
        assert_eq!(summary, want_summary, "blocks of {block_size}");
        assert!(got == want, "decisions differ in blocks of {block_size}");
    }
}

#[test]
fn errors_name_the_same_line_on_either_thread() {
    let good = "m{a=\"1\"} 1 1700000000\n".repeat(300);
    let cases = [
        (
            format!("{good}m{{a=\"1\"}} x 1700000001\n{good}"),
            "m.om:301: ",
        ),
        (format!("{good}m{{a=\"1\"}} 1\n"), "m.om:301: "),
        (format!("{good}# EOF\n{good}"), "m.om:302: "),
    ];
    for (metrics, place) in &cases {
        let want = replay(metrics.as_bytes(), b"", metrics.len() + 1).unwrap_err();
        assert!(want.starts_with(place), "{want}");
        for block_size in [64, 1000] {
            assert_eq!(
                replay(metrics.as_bytes(), b"", block_size).unwrap_err(),
                want
            );
        }
    }
}
