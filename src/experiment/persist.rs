//! Experiment state that survives a restart, in the agent's SQLite store (the outbox file,
//! `signals.sqlite`, through its own connection and its own `experiment_*` tables), so
//! a deploy's and an experiment's durable state are one file to back up and inspect.
//!
//! What is kept, and why it is enough to carry on exactly:
//! - `experiment_participants`: each participant (hash of the uid), its branch and its
//!   per-metric totals, written in the transaction that acknowledges an events batch;
//! - `experiment_ids`: the remembered event ids (idempotency survives a restart);
//! - `experiment_looks`: every look's cumulative totals that differ from the previous one.
//!   The judge is a deterministic function of the sequence of looks, so replaying them
//!   (after the last checkpoint) rebuilds its e-processes exactly (looks with unchanged
//!   totals change no e-process);
//! - `experiment_checkpoints`: every [`CHECKPOINT_EVERY`] stored looks, the judge's own
//!   numbers ([`crate::experiment::judge::Judge::checkpoint`]); the looks it covers are
//!   deleted, so a restart replays at most that many looks (a look costs about 0.35 ms);
//! - `experiment_state`: the lifecycle (stopped, closed with its result, what was announced
//!   to the sinks), the counter cursors of `source: metrics` and the look count, as JSON,
//!   beside a fingerprint of the definition (branches, weights, metrics): a restart with a
//!   changed definition starts the experiment's evidence afresh (logged), since old looks
//!   do not fit the new judge.
//!
//! Inspect with `sqlite3 data/signals.sqlite 'select * from experiment_state'`.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS experiment_participants (
    experiment TEXT NOT NULL,
    uid        INTEGER NOT NULL,          -- 64-bit hash of the uid
    branch     INTEGER NOT NULL,          -- index in the experiment's branches, control 0
    vals       BLOB NOT NULL,             -- per-metric totals, little-endian f64
    PRIMARY KEY (experiment, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_ids (
    experiment TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    id         INTEGER NOT NULL,          -- 64-bit hash of the event id
    PRIMARY KEY (experiment, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_looks (
    experiment TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    snapshot   TEXT NOT NULL,             -- the judge's input at that look (JSON)
    PRIMARY KEY (experiment, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_checkpoints (
    experiment TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,          -- the last look it covers
    meta       TEXT NOT NULL,             -- the last look's totals and the look count (JSON)
    state      BLOB NOT NULL              -- the judge's numbers, little-endian f64
);
CREATE TABLE IF NOT EXISTS experiment_state (
    experiment  TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL             -- lifecycle, counter cursors, looks (JSON)
);
"#;

/// Stored looks between two checkpoints of the judge.
pub const CHECKPOINT_EVERY: i64 = 100;

/// A stored checkpoint of the judge.
#[derive(Debug, Default, PartialEq)]
pub struct Checkpoint {
    /// The last look it covers.
    pub seq: i64,
    /// The last look's totals and the look count (JSON).
    pub meta: String,
    /// The judge's numbers.
    pub state: Vec<f64>,
}

/// Why the experiment store failed.
#[derive(Debug, thiserror::Error)]
#[error("experiment store: {0}")]
pub struct PersistError(pub String);

impl From<rusqlite::Error> for PersistError {
    fn from(e: rusqlite::Error) -> Self {
        PersistError(e.to_string())
    }
}

/// What was stored for one experiment.
#[derive(Debug, Default)]
pub struct Loaded {
    /// (uid hash, branch, per-metric totals).
    pub participants: Vec<(u64, u16, Vec<f64>)>,
    /// (seq, event id hash), oldest first.
    pub ids: Vec<(i64, u64)>,
    /// The judge's last checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// The snapshots (JSON) of the looks after the checkpoint, oldest first.
    pub looks: Vec<String>,
    /// The state JSON.
    pub state: Option<String>,
    /// True when a stored state of another definition was dropped.
    pub dropped_other_definition: bool,
}

/// One participant's row to write.
pub struct Row<'a> {
    /// Hash of the uid.
    pub uid: u64,
    /// Branch index.
    pub branch: u16,
    /// Per-metric totals.
    pub values: &'a [f64],
}

/// The connection to the store.
pub struct Store {
    conn: Connection,
}

fn blob(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn unblob(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a)
        })
        .collect()
}

impl Store {
    /// Opens (or creates) the tables in the SQLite file at `path` (WAL, `synchronous=FULL`,
    /// as the outbox).
    pub fn open(path: &Path) -> Result<Store, PersistError> {
        let conn =
            Connection::open(path).map_err(|e| PersistError(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Everything stored for `name` if its fingerprint is `fingerprint`; otherwise drops
    /// the old rows and returns nothing.
    pub fn load(&mut self, name: &str, fingerprint: &str) -> Result<Loaded, PersistError> {
        let stored: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT fingerprint, state FROM experiment_state WHERE experiment = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let mut out = Loaded::default();
        let has_rows: bool = self.conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM experiment_participants WHERE experiment = ?1)
                 OR EXISTS(SELECT 1 FROM experiment_looks WHERE experiment = ?1)",
            [name],
            |r| r.get(0),
        )?;
        match stored {
            Some((f, _)) if f != fingerprint => {
                self.forget(name)?;
                out.dropped_other_definition = true;
                return Ok(out);
            }
            None if has_rows => {
                // Rows without a state row: written before the state was; keep them.
            }
            None => return Ok(out),
            Some((_, state)) => out.state = Some(state),
        }
        let mut st = self.conn.prepare(
            "SELECT uid, branch, vals FROM experiment_participants WHERE experiment = ?1",
        )?;
        out.participants = st
            .query_map([name], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u16,
                    unblob(&r.get::<_, Vec<u8>>(2)?),
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut st = self
            .conn
            .prepare("SELECT seq, id FROM experiment_ids WHERE experiment = ?1 ORDER BY seq")?;
        out.ids = st
            .query_map([name], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        out.checkpoint = self
            .conn
            .query_row(
                "SELECT seq, meta, state FROM experiment_checkpoints WHERE experiment = ?1",
                [name],
                |r| {
                    Ok(Checkpoint {
                        seq: r.get(0)?,
                        meta: r.get(1)?,
                        state: unblob(&r.get::<_, Vec<u8>>(2)?),
                    })
                },
            )
            .optional()?;
        let after = out.checkpoint.as_ref().map_or(i64::MIN, |c| c.seq);
        let mut st = self.conn.prepare(
            "SELECT snapshot FROM experiment_looks WHERE experiment = ?1 AND seq > ?2
             ORDER BY seq",
        )?;
        out.looks = st
            .query_map(params![name, after], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(out)
    }

    /// Deletes everything stored for `name`.
    pub fn forget(&mut self, name: &str) -> Result<(), PersistError> {
        let tx = self.conn.transaction()?;
        for table in [
            "experiment_participants",
            "experiment_ids",
            "experiment_looks",
            "experiment_checkpoints",
            "experiment_state",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE experiment = ?1"),
                [name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes an events batch in one transaction: the touched participants, the new event
    /// ids, and forgets ids with `seq <= forget_upto`.
    pub fn save_batch(
        &mut self,
        name: &str,
        rows: &[Row<'_>],
        ids: &[(i64, u64)],
        forget_upto: Option<i64>,
    ) -> Result<(), PersistError> {
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO experiment_participants (experiment, uid, branch, vals)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(experiment, uid) DO UPDATE SET vals = excluded.vals",
            )?;
            for r in rows {
                up.execute(params![
                    name,
                    r.uid as i64,
                    i64::from(r.branch),
                    blob(r.values)
                ])?;
            }
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO experiment_ids (experiment, seq, id) VALUES (?1, ?2, ?3)",
            )?;
            for (seq, id) in ids {
                ins.execute(params![name, seq, *id as i64])?;
            }
        }
        if let Some(upto) = forget_upto {
            tx.execute(
                "DELETE FROM experiment_ids WHERE experiment = ?1 AND seq <= ?2",
                params![name, upto],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends a look's snapshot (JSON), writes the state and, when given, a checkpoint
    /// of the judge (deleting the looks it covers, the checkpoint's own included), in one
    /// transaction.
    pub fn save_look(
        &mut self,
        name: &str,
        seq: i64,
        snapshot: Option<&str>,
        fingerprint: &str,
        state: &str,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), PersistError> {
        let tx = self.conn.transaction()?;
        if let Some(s) = snapshot {
            tx.execute(
                "INSERT OR REPLACE INTO experiment_looks (experiment, seq, snapshot)
                 VALUES (?1, ?2, ?3)",
                params![name, seq, s],
            )?;
        }
        if let Some(c) = checkpoint {
            tx.execute(
                "INSERT INTO experiment_checkpoints (experiment, seq, meta, state)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(experiment) DO UPDATE SET seq = excluded.seq,
                    meta = excluded.meta, state = excluded.state",
                params![name, c.seq, c.meta, blob(&c.state)],
            )?;
            tx.execute(
                "DELETE FROM experiment_looks WHERE experiment = ?1 AND seq <= ?2",
                params![name, c.seq],
            )?;
        }
        tx.execute(
            "INSERT INTO experiment_state (experiment, fingerprint, state) VALUES (?1, ?2, ?3)
             ON CONFLICT(experiment) DO UPDATE SET fingerprint = excluded.fingerprint,
                state = excluded.state",
            params![name, fingerprint, state],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_reopen_and_another_definition_starts_afresh() {
        let dir = std::env::temp_dir().join(format!("immune-exp-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sqlite");
        let _ = std::fs::remove_file(&path);
        {
            let mut s = Store::open(&path).unwrap();
            let v = [1.0, 2.5];
            s.save_batch(
                "e",
                &[Row {
                    uid: u64::MAX,
                    branch: 1,
                    values: &v,
                }],
                &[(1, 7), (2, 8)],
                Some(1),
            )
            .unwrap();
            s.save_look("e", 1, Some("[1]"), "f1", "{}", None).unwrap();
            let c = Checkpoint {
                seq: 1,
                meta: "m".into(),
                state: vec![f64::NEG_INFINITY, 0.5],
            };
            s.save_look("e", 2, Some("[2]"), "f1", "{}", Some(&c))
                .unwrap();
            s.save_look("e", 3, Some("[3]"), "f1", "{}", None).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let l = s.load("e", "f1").unwrap();
        assert_eq!(l.participants, vec![(u64::MAX, 1, vec![1.0, 2.5])]);
        assert_eq!(l.ids, vec![(2, 8)]);
        // The checkpoint covers look 1 (deleted); looks 2 and 3 are replayed after it.
        let c = l.checkpoint.as_ref().unwrap();
        assert_eq!((c.seq, c.state[0], c.state[1]), (1, f64::NEG_INFINITY, 0.5));
        assert_eq!(l.looks, vec!["[2]".to_string(), "[3]".to_string()]);
        assert_eq!(l.state.as_deref(), Some("{}"));
        let l = s.load("e", "f2").unwrap();
        assert!(l.dropped_other_definition && l.participants.is_empty());
        assert!(s.load("e", "f2").unwrap().participants.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
