//! The outbox: decisions written durably before any delivery is tried, and the state that
//! must survive a restart (deploys in flight, blocked lines).
//!
//! Why SQLite (via rusqlite, bundled) rather than redb or a log file of our own:
//! - **transactional**: one decision batch (the decision log, a row per matching sink, the
//!   line state, the deploy's end) commits atomically or not at all;
//! - **inspectable**: an operator can answer "was the rollback for d42 delivered?" with
//!   `sqlite3 data/signals.sqlite 'select sink,state,attempts,last_error from signals where deploy="d42"'`
//!   during an incident, with no immune-specific tool;
//! - **mature crash safety**: SQLite's recovery after power loss or `kill -9` is among the
//!   most tested code there is. redb is a fine store too, but younger and opaque to ops.
//!
//! A decision batch is made durable by one append to the decision journal beside the
//! database (`signals.journal`, see `signals::journal`), then applied to the tables in one
//! transaction without a sync of its own (`outbox::record`); every other write (deploy
//! events, delivery state, unblocks) is a commit with `synchronous=FULL`, and syncing
//! SQLite's WAL also syncs every commit before it. On open, the journal's batches the
//! tables do not have are applied.
//!
//! The WAL is checkpointed by a thread of the outbox's own, every `CHECKPOINT_EVERY`
//! commits, never by a commit: a decision's write is one synced append to the WAL, and
//! once checkpointed the WAL is rewritten from its start rather than grown (see
//! `signals::checkpoint`).
//!
//! Tables: `signals` (one row per decision and sink, the delivery state), `decisions` (the
//! log of every decision, matched by a sink or not), `deploys` (each deploy's canary/full
//! events until it ends), `lines` (each blocked line's blocking decision), `history` (each
//! deploy's view — events, phases, rules, decisions with evidence — as of its latest
//! decision, so `GET /api/v1/deploys/{id}` answers after a restart; kept per
//! [`HistoryRetention`], never for fewer than the deploys blocking a line), `probe` (one row
//! rewritten to tell whether the store can still write).
//!
//! Signal ids are derived, not random: the first 128 bits (hex) of
//! SHA-256(`deploy, decision, rule, at_ms, shadow, sink`), so recording the same decision
//! twice (a retried batch) yields the same rows, and ids are safe in HTTP headers whatever
//! characters the deploy id has. A resolve signal's id is derived from the id it resolves.

use super::checkpoint::{CHECKPOINT_EVERY, Checkpointer};
use super::journal::Journal;
use super::{SignalsError, Sink};
use crate::model::{Decision, DeployEvent, DeployEventKind};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

mod record;
pub(crate) use record::Journaled;

/// How long finished deploys and settled signal rows are kept for inspection.
pub const KEEP_MS: i64 = 30 * 86_400_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS signals (
    id           TEXT PRIMARY KEY,
    sink         TEXT NOT NULL,
    kind         TEXT NOT NULL,           -- 'decision' | 'resolve'
    service      TEXT NOT NULL,
    deploy       TEXT NOT NULL,
    decision     TEXT NOT NULL,
    rule         TEXT NOT NULL,
    blocking     INTEGER NOT NULL,        -- final, line-blocking, not shadow
    after_id     TEXT,                    -- deliver only once this row is settled
    body         TEXT NOT NULL,           -- the webhook body (JSON)
    created_ms   INTEGER NOT NULL,        -- the decision's time
    state        TEXT NOT NULL,           -- 'pending' | 'delivered' | 'expired'
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_ms      INTEGER NOT NULL,
    last_error   TEXT,
    settled_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS signals_due ON signals (sink, state, next_ms);
CREATE INDEX IF NOT EXISTS signals_after ON signals (after_id);
CREATE TABLE IF NOT EXISTS decisions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    deploy   TEXT NOT NULL,
    service  TEXT NOT NULL,
    decision TEXT NOT NULL,
    rule     TEXT NOT NULL,
    final    INTEGER NOT NULL,
    shadow   INTEGER NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_deploy ON decisions (deploy);
CREATE TABLE IF NOT EXISTS deploys (
    deploy   TEXT PRIMARY KEY,
    service  TEXT,
    canary   TEXT,                        -- the canary event (JSON)
    full     TEXT,                        -- the full event (JSON)
    started  REAL NOT NULL,
    done     INTEGER NOT NULL,
    done_at  REAL
);
CREATE TABLE IF NOT EXISTS history (
    deploy   TEXT PRIMARY KEY,
    service  TEXT NOT NULL,
    at       REAL NOT NULL,               -- the latest decision's time
    view     TEXT NOT NULL                -- the engine's deploy view (JSON)
);
CREATE INDEX IF NOT EXISTS history_at ON history (at);
CREATE TABLE IF NOT EXISTS probe (
    id       INTEGER PRIMARY KEY,
    at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    applied  INTEGER NOT NULL,            -- the last decision journal frame applied here
    synced   INTEGER NOT NULL             -- the last one known synced (the journal rewound)
);
INSERT OR IGNORE INTO journal (id, applied, synced) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS lines (
    service  TEXT PRIMARY KEY,
    decision TEXT NOT NULL,               -- the blocking decision (JSON)
    at       REAL NOT NULL
);
"#;

/// How much deploy history the outbox keeps: at most `keep` deploys, none older than
/// `max_age` (the deploys blocking a line are always kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRetention {
    /// Most deploys kept.
    pub keep: usize,
    /// Oldest kept, by latest decision.
    pub max_age_ms: i64,
}

impl Default for HistoryRetention {
    fn default() -> Self {
        HistoryRetention {
            keep: 1000,
            max_age_ms: KEEP_MS,
        }
    }
}

/// One signal row, for the API and for inspection.
#[derive(Clone, Debug, Serialize)]
pub struct SignalRow {
    /// The signal id (also `X-Immune-Signal-Id`).
    pub id: String,
    /// The sink's name.
    pub sink: String,
    /// `decision` or `resolve`.
    pub kind: String,
    /// The service.
    pub service: String,
    /// The deploy.
    pub deploy: String,
    /// The decision kind.
    pub decision: String,
    /// The rule.
    pub rule: String,
    /// `pending`, `delivered` or `expired`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The decision's time (ms).
    pub created_ms: i64,
    /// When the next attempt is due (ms).
    pub next_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered or expired (ms).
    pub settled_ms: Option<i64>,
    /// The body.
    pub body: Value,
}

/// Whether a row carries a decision or resolves an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A decision.
    Decision,
    /// The line was unblocked: resolve the alert the decision raised.
    Resolve,
}

/// A row due for an attempt.
#[derive(Clone, Debug)]
pub struct DueRow {
    /// The signal id.
    pub id: String,
    /// What it carries.
    pub kind: RowKind,
    /// The body.
    pub body: Value,
    /// The decision's time (ms).
    pub created_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
}

/// The signal id of decision `d` for `sink` (see the module doc).
pub fn signal_id(d: &Decision, sink: &str) -> String {
    let ms = (d.at * 1000.0).round() as i64;
    let key = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        d.deploy,
        d.decision.as_str(),
        d.rule,
        ms,
        d.shadow,
        sink
    );
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

fn resolve_id(of: &str) -> String {
    hex::encode(&Sha256::digest(format!("resolve\n{of}").as_bytes())[..16])
}

fn ms(at: f64) -> i64 {
    (at * 1000.0).round() as i64
}

/// The decision journal beside the outbox at `path`: `signals.sqlite` has
/// `signals.journal` (SQLite's own files are `signals.sqlite-wal`, `-shm`, `-journal`).
pub fn journal_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("journal")
}

/// The SQLite outbox. Not shared across threads by itself: [`super::Signals`] holds it
/// behind a mutex.
pub struct Outbox {
    conn: Connection,
    /// Checkpoints the WAL off the writer's path; `None` when its connection could not be
    /// opened, and then the writer checkpoints itself (SQLite's default).
    checkpointer: Option<Checkpointer>,
    /// The decision journal (`signals::journal`): where a decision batch is first made
    /// durable.
    journal: Journal,
    /// The last journal frame applied to the tables.
    applied: u64,
}

impl Outbox {
    /// Opens or creates the outbox at `path` (WAL, `synchronous=FULL`) and its decision
    /// journal, and applies what the journal holds that the tables do not.
    pub fn open(path: &Path) -> Result<Outbox, SignalsError> {
        Outbox::open_checkpointing(path, CHECKPOINT_EVERY)
    }

    /// [`Outbox::open`], the WAL checkpointed every `every` commits.
    fn open_checkpointing(path: &Path, every: u64) -> Result<Outbox, SignalsError> {
        let conn = Connection::open(path)
            .map_err(|e| SignalsError::Store(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SignalsError::Store(format!(
                "{}: cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        // One transaction for the whole schema: one sync on a fresh file, not one per table.
        conn.execute_batch(&format!("BEGIN; {SCHEMA} COMMIT;"))?;
        let checkpointer = match Checkpointer::start(path, every) {
            Ok(c) => {
                conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
                Some(c)
            }
            Err(e) => {
                tracing::warn!(error = %e, "The outbox checkpoints its WAL on the writing connection instead.");
                None
            }
        };
        let applied: i64 =
            conn.query_row("SELECT applied FROM journal WHERE id = 1", [], |r| r.get(0))?;
        let applied = u64::try_from(applied).unwrap_or(0);
        let (journal, entries) = Journal::open(&journal_path(path), applied)
            .map_err(|e| SignalsError::Store(e.to_string()))?;
        let mut outbox = Outbox {
            conn,
            checkpointer,
            journal,
            applied,
        };
        outbox.recover(entries)?;
        Ok(outbox)
    }

    /// Wakes the checkpointer after a write (every write appends to the WAL).
    fn wrote(&self) {
        if let Some(c) = &self.checkpointer {
            c.committed();
        }
    }

    /// See [`Checkpointer::quiet`]; true at once without a checkpointer (the writer then
    /// checkpoints inside its own commits).
    pub(crate) fn checkpoint_quiet(&self, within: std::time::Duration) -> bool {
        self.checkpointer.as_ref().is_none_or(|c| c.quiet(within))
    }

    /// See [`Checkpointer::settle`]; `None` without a checkpointer.
    #[cfg(test)]
    fn settle(&self, within: std::time::Duration) -> Option<u64> {
        self.checkpointer.as_ref()?.settle(within)
    }

    /// Remembers a canary/full/end/abort event (unblock goes through [`Outbox::record_unblock`]).
    pub fn record_deploy_event(&mut self, ev: &DeployEvent) -> Result<(), SignalsError> {
        let Some(deploy) = ev.deploy.as_deref() else {
            return Ok(());
        };
        let json = serde_json::to_string(ev).map_err(|e| SignalsError::Store(e.to_string()))?;
        match ev.event {
            DeployEventKind::Canary => {
                // A deploy already decided at or after this event (a canary refused on a
                // blocked line is decided at once, possibly before this is called) stays done.
                self.conn.execute(
                    "INSERT INTO deploys (deploy, service, canary, full, started, done, done_at)
                     VALUES (?1, ?2, ?3, NULL, ?4, 0, NULL)
                     ON CONFLICT(deploy) DO UPDATE SET service = excluded.service,
                        canary = excluded.canary, full = NULL, started = excluded.started,
                        done = 0, done_at = NULL
                     WHERE NOT (deploys.done = 1 AND deploys.done_at >= excluded.started)",
                    params![deploy, ev.service, json, ev.at],
                )?;
            }
            DeployEventKind::Full => {
                self.conn.execute(
                    "UPDATE deploys SET full = ?2 WHERE deploy = ?1 AND done = 0",
                    params![deploy, json],
                )?;
            }
            DeployEventKind::End | DeployEventKind::Abort => {
                self.conn.execute(
                    "UPDATE deploys SET done = 1, done_at = ?2 WHERE deploy = ?1",
                    params![deploy, ev.at],
                )?;
            }
            DeployEventKind::Unblock => {}
        }
        self.wrote();
        Ok(())
    }

    /// Forgets the block of `service` and enqueues one resolve row per firing, unresolved,
    /// line-blocking signal of that service on an alert-shaped sink. Returns the sinks touched.
    pub(crate) fn record_unblock(
        &mut self,
        service: &str,
        by: &str,
        reason: &str,
        at: f64,
        sinks: &[std::sync::Arc<Sink>],
    ) -> Result<Vec<String>, SignalsError> {
        let resolvers: Vec<&str> = sinks
            .iter()
            .filter(|s| s.takes_resolves())
            .map(|s| s.name.as_str())
            .collect();
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM lines WHERE service = ?1", [service])?;
        let firing: Vec<(String, String, String, String, String, String)> = {
            let mut st = tx.prepare(
                "SELECT s.id, s.sink, s.deploy, s.decision, s.rule, s.body FROM signals s
                 WHERE s.service = ?1 AND s.kind = 'decision' AND s.blocking = 1
                   AND s.state != 'expired'
                   AND NOT EXISTS (SELECT 1 FROM signals r WHERE r.after_id = s.id)
                 ORDER BY s.created_ms",
            )?;
            st.query_map([service], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut touched = Vec::new();
        for (id, sink, deploy, decision, rule, body) in firing {
            if !resolvers.contains(&sink.as_str()) {
                continue;
            }
            let rid = resolve_id(&id);
            let mut body: Value =
                serde_json::from_str(&body).map_err(|e| SignalsError::Store(e.to_string()))?;
            body["resolved"] = json!({"at": at, "by": by, "reason": reason, "signal_id": rid});
            tx.execute(
                "INSERT OR IGNORE INTO signals
                   (id, sink, kind, service, deploy, decision, rule, blocking, after_id, body,
                    created_ms, state, attempts, next_ms)
                 VALUES (?1, ?2, 'resolve', ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, 'pending', 0, 0)",
                params![
                    rid,
                    sink,
                    service,
                    deploy,
                    decision,
                    rule,
                    id,
                    body.to_string(),
                    ms(at)
                ],
            )?;
            if !touched.contains(&sink) {
                touched.push(sink);
            }
        }
        tx.commit()?;
        self.wrote();
        Ok(touched)
    }

    /// The stored view of `deploy` (as of its latest decision), if kept.
    pub fn history(&self, deploy: &str) -> Result<Option<Value>, SignalsError> {
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT view FROM history WHERE deploy = ?1",
                [deploy],
                |r| r.get(0),
            )
            .optional()?;
        v.map(|v| {
            serde_json::from_str(&v)
                .map_err(|e| SignalsError::Store(format!("history of {deploy}: {e}")))
        })
        .transpose()
    }

    /// Rewrites the probe row: fails when the store cannot write (a full disk, a read-only
    /// file system), without touching anything else.
    pub fn probe(&self, now_ms: i64) -> Result<(), SignalsError> {
        self.conn.execute(
            "INSERT INTO probe (id, at_ms) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms",
            [now_ms],
        )?;
        self.wrote();
        Ok(())
    }

    /// Whether any deploy of `service` is stored (in flight, done, or in history).
    pub fn knows_service(&self, service: &str) -> Result<bool, SignalsError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM history WHERE service = ?1)
                     OR EXISTS (SELECT 1 FROM deploys WHERE service = ?1)
                     OR EXISTS (SELECT 1 FROM decisions WHERE service = ?1)",
            [service],
            |r| r.get::<_, bool>(0),
        )?)
    }

    /// Marks a deploy done without a decision (its stored events cannot be resumed).
    pub fn forget_deploy(&self, deploy: &str, at: f64) -> Result<(), SignalsError> {
        self.conn.execute(
            "UPDATE deploys SET done = 1, done_at = ?2 WHERE deploy = ?1",
            params![deploy, at],
        )?;
        self.wrote();
        Ok(())
    }

    /// Canary (and full) events of deploys still in flight, oldest first.
    pub fn resume_events(&self) -> Result<Vec<DeployEvent>, SignalsError> {
        let mut st = self.conn.prepare(
            "SELECT canary, full FROM deploys WHERE done = 0 AND canary IS NOT NULL ORDER BY started",
        )?;
        let rows: Vec<(String, Option<String>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (canary, full) in rows {
            for j in std::iter::once(canary).chain(full) {
                match serde_json::from_str::<DeployEvent>(&j) {
                    Ok(ev) => out.push(ev),
                    Err(e) => {
                        tracing::error!(error = %e, "Stored deploy event is unreadable; skipped.")
                    }
                }
            }
        }
        out.sort_by(|a, b| a.at.total_cmp(&b.at));
        Ok(out)
    }

    /// The decisions recorded for `deploy`, oldest first: a resumed deploy is told what it
    /// already decided, so a restart never sends a second `promote` or `warn` for it.
    pub fn decisions_of(&self, deploy: &str) -> Result<Vec<Decision>, SignalsError> {
        let mut st = self
            .conn
            .prepare("SELECT body FROM decisions WHERE deploy = ?1 ORDER BY seq")?;
        let rows: Vec<String> = st
            .query_map([deploy], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|b| {
                serde_json::from_str(&b)
                    .map_err(|e| SignalsError::Store(format!("stored decision of {deploy}: {e}")))
            })
            .collect()
    }

    /// Each blocked line and its blocking decision.
    pub fn blocked_lines(&self) -> Result<Vec<(String, Decision)>, SignalsError> {
        let mut st = self
            .conn
            .prepare("SELECT service, decision FROM lines ORDER BY at")?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(s, d)| {
                serde_json::from_str(&d)
                    .map(|d| (s, d))
                    .map_err(|e| SignalsError::Store(format!("stored line decision: {e}")))
            })
            .collect()
    }

    /// Pending rows per sink.
    pub fn pending_by_sink(&self) -> Result<Vec<(String, i64)>, SignalsError> {
        let mut st = self
            .conn
            .prepare("SELECT sink, COUNT(*) FROM signals WHERE state = 'pending' GROUP BY sink")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The oldest pending row's decision time (ms).
    pub fn oldest_pending_ms(&self) -> Result<Option<i64>, SignalsError> {
        Ok(self.conn.query_row(
            "SELECT MIN(created_ms) FROM signals WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Rows of `sink` due at `now_ms`, oldest first; a resolve waits for the row it resolves.
    pub fn due(&self, sink: &str, now_ms: i64, limit: usize) -> Result<Vec<DueRow>, SignalsError> {
        let mut st = self.conn.prepare_cached(
            "SELECT s.id, s.kind, s.body, s.created_ms, s.attempts FROM signals s
             WHERE s.sink = ?1 AND s.state = 'pending' AND s.next_ms <= ?2
               AND (s.after_id IS NULL OR NOT EXISTS
                    (SELECT 1 FROM signals p WHERE p.id = s.after_id AND p.state = 'pending'))
             ORDER BY s.created_ms, s.rowid LIMIT ?3",
        )?;
        let rows: Vec<(String, String, String, i64, u32)> = st
            .query_map(params![sink, now_ms, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, kind, body, created_ms, attempts)| {
                let body = serde_json::from_str(&body)
                    .map_err(|e| SignalsError::Store(format!("signal {id}: {e}")))?;
                Ok(DueRow {
                    id,
                    kind: if kind == "resolve" {
                        RowKind::Resolve
                    } else {
                        RowKind::Decision
                    },
                    body,
                    created_ms,
                    attempts,
                })
            })
            .collect()
    }

    /// The row was delivered.
    pub fn mark_delivered(&self, id: &str, now_ms: i64) -> Result<(), SignalsError> {
        self.conn.execute(
            "UPDATE signals SET state = 'delivered', attempts = attempts + 1, settled_ms = ?2,
               last_error = NULL WHERE id = ?1",
            params![id, now_ms],
        )?;
        self.wrote();
        Ok(())
    }

    /// The attempt failed; try again at `next_ms`.
    pub fn mark_failed(&self, id: &str, next_ms: i64, error: &str) -> Result<(), SignalsError> {
        self.conn.execute(
            "UPDATE signals SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 WHERE id = ?1",
            params![id, next_ms, error],
        )?;
        self.wrote();
        Ok(())
    }

    /// The row outlived its sink's `max_age` undelivered.
    pub fn mark_expired(&self, id: &str, now_ms: i64) -> Result<(), SignalsError> {
        self.conn.execute(
            "UPDATE signals SET state = 'expired', settled_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?;
        self.wrote();
        Ok(())
    }

    /// Deletes settled rows older than [`KEEP_MS`] (the decision log is kept).
    pub fn prune(&self, now_ms: i64) -> Result<usize, SignalsError> {
        let n = self.conn.execute(
            "DELETE FROM signals WHERE state != 'pending' AND settled_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM signals r WHERE r.after_id = signals.id AND r.state = 'pending')",
            [now_ms - KEEP_MS],
        )?;
        if n > 0 {
            self.wrote();
        }
        Ok(n)
    }

    /// Signal rows, newest first.
    pub fn rows(&self, limit: usize) -> Result<Vec<SignalRow>, SignalsError> {
        let mut st = self.conn.prepare(
            "SELECT id, sink, kind, service, deploy, decision, rule, state, attempts, created_ms,
                    next_ms, last_error, settled_ms, body
             FROM signals ORDER BY created_ms DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit as i64], |r| {
                let body: String = r.get(13)?;
                Ok(SignalRow {
                    id: r.get(0)?,
                    sink: r.get(1)?,
                    kind: r.get(2)?,
                    service: r.get(3)?,
                    deploy: r.get(4)?,
                    decision: r.get(5)?,
                    rule: r.get(6)?,
                    state: r.get(7)?,
                    attempts: r.get(8)?,
                    created_ms: r.get(9)?,
                    next_ms: r.get(10)?,
                    last_error: r.get(11)?,
                    settled_ms: r.get(12)?,
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests;
