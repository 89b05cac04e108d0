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
    // Another connection (an operator's sqlite3) sees it; a second outbox is refused.
    let other = Connection::open(&db).unwrap();
    let n: i64 = other
        .query_row(
            "SELECT count(*) FROM decisions WHERE deploy = 'd000007'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(other);
    drop(o);
    let o = Outbox::open(&db).unwrap();
    assert_eq!(o.decisions_of("d000007").unwrap().len(), 1);
    drop(o);
    std::fs::remove_dir_all(&d).unwrap();
}

fn logged(o: &Outbox) -> i64 {
    o.conn
        .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_batch_journaled_but_not_applied_is_applied_on_open_once() {
    let d = dir("outbox-journal-recover");
    let db = d.join("o.sqlite");
    let retention = HistoryRetention::default();
    {
        let mut o = Outbox::open(&db).unwrap();
        o.record(&[decision(1)], &[], "http://i").unwrap();
        // The crash comes after the durable append and before the tables have the rows.
        o.journal(&[decision(2)], &[], &[], "http://i", retention)
            .unwrap();
        assert_eq!(logged(&o), 1);
    }
    let o = Outbox::open(&db).unwrap();
    assert_eq!(logged(&o), 2);
    assert_eq!(o.decisions_of("d000002").unwrap().len(), 1);
    drop(o);
    // Opening again applies nothing twice.
    let o = Outbox::open(&db).unwrap();
    assert_eq!(logged(&o), 2);
}

#[test]
fn applying_a_journaled_batch_twice_logs_it_once() {
    let d = dir("outbox-journal-twice");
    let mut o = Outbox::open(&d.join("o.sqlite")).unwrap();
    let retention = HistoryRetention::default();
    let ds = [decision(3)];
    let j = o.journal(&ds, &[], &[], "http://i", retention).unwrap();
    o.apply(&j, &ds, &[], "http://i", retention).unwrap();
    // A retry after an apply that reported a failure but committed.
    o.apply(&j, &ds, &[], "http://i", retention).unwrap();
    assert_eq!(logged(&o), 1);
}

#[test]
fn the_journal_rewinds_once_its_frames_are_in_sqlite_and_keeps_its_size() {
    let d = dir("outbox-journal-rewind");
    let db = d.join("o.sqlite");
    let mut o = Outbox::open(&db).unwrap();
    // A batch of about 40 KiB that does not compress (hex of a hash chain): the journal
    // passes three quarters of its size after about 20.
    let big = |i: u64| {
        let mut x = decision(i);
        let mut h = Sha256::digest(i.to_le_bytes());
        let mut noise = String::new();
        while noise.len() < 40 << 10 {
            noise.push_str(&hex::encode(h));
            h = Sha256::digest(h);
        }
        x.evidence = json!({ "summary": noise });
        x
    };
    let synced = |o: &Outbox| -> i64 {
        o.conn
            .query_row("SELECT synced FROM journal", [], |r| r.get(0))
            .unwrap()
    };
    let at_open = synced(&o);
    for i in 0..200 {
        o.record(&[big(i)], &[], "http://i").unwrap();
    }
    assert!(synced(&o) > at_open, "never rewound");
    assert_eq!(
        std::fs::metadata(journal_path(&db)).unwrap().len(),
        crate::signals::journal::CAPACITY
    );
    drop(o);
    let o = Outbox::open(&db).unwrap();
    assert_eq!(logged(&o), 200);
}

#[test]
fn a_second_outbox_on_the_same_file_is_refused() {
    let d = dir("outbox-journal-lock");
    let db = d.join("o.sqlite");
    let _o = Outbox::open(&db).unwrap();
    let err = Outbox::open(&db).err().expect("a second writer");
    assert!(err.to_string().contains("in use"), "{err}");
}

/// The deploys whose views the history table holds, by name.
fn history_deploys(o: &Outbox) -> Vec<String> {
    let mut st = o
        .conn
        .prepare("SELECT deploy FROM history ORDER BY deploy")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn history_keeps_the_newest_deploys_within_the_age_and_every_line_blocker() {
    let d = dir("outbox-history-retention");
    let mut o = Outbox::open(&d.join("o.sqlite")).unwrap();
    let retention = HistoryRetention {
        keep: 3,
        max_age_ms: 1_000_000,
    };
    let apply = |o: &mut Outbox, dec: Decision| {
        let view = json!({"deploy": dec.deploy, "service": dec.service});
        let ds = [dec];
        let j = o.journal(&ds, &[], &[], "http://i", retention).unwrap();
        o.apply(&j, &ds, &[view], "http://i", retention).unwrap();
    };
    for i in 1..=6 {
        apply(&mut o, decision(i));
    }
    assert_eq!(history_deploys(&o), ["d000004", "d000005", "d000006"]);
    // A rollback blocks the web line: its deploy stays while it blocks, past `keep`.
    let mut rollback = decision(7);
    rollback.decision = DecisionKind::Rollback;
    apply(&mut o, rollback);
    for i in 8..=10 {
        apply(&mut o, decision(i));
    }
    assert_eq!(
        history_deploys(&o),
        ["d000007", "d000008", "d000009", "d000010"]
    );
    // A decision 5000 s later: everything older than 1000 s before it goes, but the blocker.
    apply(&mut o, decision(5_000));
    assert_eq!(history_deploys(&o), ["d000007", "d005000"]);
}
