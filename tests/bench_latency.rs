//! `immune bench perf --parts latency` as a user runs it, on a few deploys: it goes
//! through the agent's durable path (decision journal, then SQLite) without an error, and
//! the journal and the fsync probe really take turns at being the first I/O after a
//! deciding tick, so the ratio it prints compares writes made in the same position.
//! Timings are not asserted (they live in BENCHMARKS.md).

use std::process::Command;

/// The `n` column of the row `what` of pass `pass`.
fn n_of(table: &str, pass: &str, what: &str) -> usize {
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("| {pass} | {what} |")))
        .unwrap_or_else(|| panic!("no row {pass} / {what} in:\n{table}"));
    row.split('|')
        .nth(3)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {row}"))
}

#[test]
fn the_journal_and_the_probe_take_turns_after_each_deciding_tick() {
    let dir = std::env::temp_dir().join(format!("immune-bench-latency-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_immune"))
        .args([
            "bench",
            "perf",
            "--parts",
            "latency",
            "--latency-deploys",
            "3",
        ])
        .arg("--dir")
        .arg(&dir)
        .env("IMMUNE_LOG", "warn")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("outbox errors"), "{text}");
    for pass in ["fresh", "steady"] {
        let deciding = n_of(&text, pass, "deciding tick");
        let journal_first = n_of(
            &text,
            pass,
            "journal append + fdatasync, first I/O after the tick",
        );
        let probe_first = n_of(
            &text,
            pass,
            "4 KiB write + fdatasync probe, first I/O after the tick",
        );
        let journal_second = n_of(
            &text,
            pass,
            "journal append + fdatasync, right after the probe",
        );
        let probe_second = n_of(
            &text,
            pass,
            "4 KiB write + fdatasync probe, right after the journal",
        );
        // 3 failing and 3 healthy deploys decide at least once each.
        assert!(deciding >= 6, "{text}");
        assert_eq!(journal_first + journal_second, deciding, "{text}");
        assert_eq!(probe_first, journal_second, "{text}");
        assert_eq!(probe_second, journal_first, "{text}");
        assert!(journal_first.abs_diff(probe_first) <= 1, "{text}");
        assert_eq!(
            n_of(
                &text,
                pass,
                "deciding tick + durable write (journal append + fdatasync, journal first)"
            ),
            journal_first,
            "{text}"
        );
    }
    assert!(text.contains("| none (back to back) |"), "{text}");
}
