//! Unit tests of `crate::signals::outbox`.

use super::*;
use crate::model::{DecisionKind, Phase};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn decision(i: u64) -> Decision {
    Decision {
        at: 1_764_201_600.0 + i as f64,
        deploy: format!("d{i:06}"),
        service: "web".into(),
        version: None,
        decision: DecisionKind::Promote,
        phase: Phase::Full,
        rule: "all_clear".into(),
        r#final: true,
        shadow: false,
        evidence: json!({"summary": "nothing got worse"}),
    }
}

impl Outbox {
    /// Waits (up to `within`) until the checkpointer has run on its own after `commits`.
    fn checkpointed(&self, commits: u64, within: Duration) -> bool {
        self.checkpointer
            .as_ref()
            .is_some_and(|c| c.checkpointed(commits, within))
    }
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("immune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(db.with_extension("sqlite-wal")).map_or(0, |m| m.len())
}

#[test]
fn commits_leave_checkpoints_to_the_thread_and_the_wal_stays_bounded() {
    let d = dir("outbox-ckpt");
    let db = d.join("o.sqlite");
    let k = 16;
    let mut o = Outbox::open_checkpointing(&db, k).unwrap();
    // The writer never checkpoints inside a commit.
    let auto: i64 = o
        .conn
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto, 0);
    let mut lens = Vec::new();
    for round in 0..4 {
        for i in 0..k {
            o.record(&[decision(round * k + i)], &[], "http://i")
                .unwrap();
        }
        // Woken by the commits alone (nothing forces it here).
        assert!(o.checkpointed((round + 1) * k, WAIT), "round {round}");
        lens.push(wal_len(&db));
    }
    // Each round after the first rewrites the WAL from its start instead of growing it.
    assert!(lens[0] > 0, "{lens:?}");
    assert!(lens[3] <= lens[0] + 4 * 4096, "{lens:?}");
    // The thread backfilled everything: a forced checkpoint now has nothing left to do,
    // and every checkpoint so far was whole.
    assert_eq!(o.settle(WAIT), Some(4));
    drop(o);

    let o = Outbox::open(&db).unwrap();
    for i in [0, k, 4 * k - 1] {
        let ds = o.decisions_of(&format!("d{i:06}")).unwrap();
        assert_eq!(ds.len(), 1, "d{i:06}");
        assert_eq!(ds[0].at, decision(i).at);
    }
    let n: i64 = o
        .conn
        .query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4 * k as i64);
    drop(o);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_write_survives_a_reopen_before_any_checkpoint() {
    let d = dir("outbox-nockpt");
    let db = d.join("o.sqlite");
    let mut o = Outbox::open(&db).unwrap();
    o.record(&[decision(7)], &[], "http://i").unwrap();
    // Fewer commits than a checkpoint waits for: the decision is only in the WAL.
    assert!(wal_len(&db) > 0);
    let other = Outbox::open(&db).unwrap();
    assert_eq!(other.decisions_of("d000007").unwrap().len(), 1);
    drop(other);
    drop(o);
    let o = Outbox::open(&db).unwrap();
    assert_eq!(o.decisions_of("d000007").unwrap().len(), 1);
    drop(o);
    std::fs::remove_dir_all(&d).unwrap();
}
