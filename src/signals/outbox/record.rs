//! Writing decisions: the durable append to the journal, then the rows in SQLite.
//!
//! A batch is first framed into the decision journal ([`crate::signals::journal`]): one
//! `pwrite` and one `fdatasync`, after which the decisions survive a crash. Then it is
//! applied to SQLite in one transaction (the decision log, a row per matching sink, the
//! line state, the deploy's end and history) without a sync of its own, together with the
//! journal number it came from; a batch whose number SQLite already holds is not applied
//! twice. A batch that was journaled but could not be applied (a full disk) is applied
//! again by the caller or, after a restart, from the journal.
//!
//! What is journaled is everything applying needs: the decisions, the sinks each decision
//! matched when it was decided, the public URL and the history retention, and the deploys'
//! views when the batch has them (`Signals::record_then_views` journals the decisions
//! before it takes the views; a batch that had to wait is journaled with them). A restart with another configuration still applies a batch as it was decided.

use super::{HistoryRetention, KEEP_MS, Outbox, ms, signal_id};
use crate::model::Decision;
use crate::signals::{SignalsError, Sink};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The journal's payload format; a frame of another version is refused on open, never
/// skipped.
const VERSION: u32 = 1;

/// A batch as journaled (borrowed for writing).
#[derive(Serialize)]
struct BatchRef<'a> {
    v: u32,
    decisions: &'a [Decision],
    views: &'a [Value],
    sinks: &'a [Vec<String>],
    public_url: &'a str,
    keep: usize,
    max_age_ms: i64,
}

/// A batch as read back from the journal.
#[derive(Deserialize)]
pub(super) struct Batch {
    v: u32,
    decisions: Vec<Decision>,
    views: Vec<Value>,
    sinks: Vec<Vec<String>>,
    public_url: String,
    keep: usize,
    max_age_ms: i64,
}

/// A batch on disk in the journal, not yet (or not surely) in SQLite: apply it with
/// [`Outbox::apply`].
#[derive(Clone, Debug)]
pub(crate) struct Journaled {
    /// Its journal number.
    pub seq: u64,
    /// For each decision, the sinks that matched it.
    sinks: Vec<Vec<String>>,
}

impl Outbox {
    /// Records a batch of decisions (journal, then SQLite); returns the sinks that got rows.
    #[cfg(test)]
    pub(crate) fn record(
        &mut self,
        decisions: &[Decision],
        sinks: &[Arc<Sink>],
        public_url: &str,
    ) -> Result<Vec<String>, SignalsError> {
        let retention = HistoryRetention::default();
        let j = self.journal(decisions, &[], sinks, public_url, retention)?;
        self.apply(&j, decisions, &[], public_url, retention)
    }

    /// The durable write: appends the batch to the journal and returns once it is on disk.
    pub(crate) fn journal(
        &mut self,
        decisions: &[Decision],
        views: &[Value],
        sinks: &[Arc<Sink>],
        public_url: &str,
        retention: HistoryRetention,
    ) -> Result<Journaled, SignalsError> {
        let matched: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                sinks
                    .iter()
                    .filter(|s| s.filter.matches(d))
                    .map(|s| s.name.clone())
                    .collect()
            })
            .collect();
        let payload = serde_json::to_vec(&BatchRef {
            v: VERSION,
            decisions,
            views,
            sinks: &matched,
            public_url,
            keep: retention.keep,
            max_age_ms: retention.max_age_ms,
        })
        .map_err(|e| SignalsError::Store(format!("cannot encode a decision batch: {e}")))?;
        let seq = self
            .journal
            .append(&payload)
            .map_err(|e| SignalsError::Store(e.to_string()))?;
        Ok(Journaled {
            seq,
            sinks: matched,
        })
    }

    /// Applies a journaled batch to SQLite (once: a number already applied is skipped);
    /// returns the sinks that got new rows. Rewinds the journal when it is three quarters
    /// full and everything in it is applied.
    pub(crate) fn apply(
        &mut self,
        j: &Journaled,
        decisions: &[Decision],
        views: &[Value],
        public_url: &str,
        retention: HistoryRetention,
    ) -> Result<Vec<String>, SignalsError> {
        if j.seq <= self.applied {
            return Ok(Vec::new());
        }
        // The journal holds the batch durably: SQLite's commit need not sync. The next
        // synced commit (any other write, or the rewind below) or checkpoint covers it.
        // (Not a cached statement: SQLite applies this pragma when it compiles it.)
        self.conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        let applied = self.apply_tx(j, decisions, views, public_url, retention);
        self.conn.execute_batch("PRAGMA synchronous=FULL")?;
        let touched = applied?;
        self.applied = j.seq;
        self.wrote();
        if self.journal.wants_rewind()
            && self.applied >= self.journal.last_seq()
            && let Err(e) = self.settle_journal()
        {
            tracing::warn!(error = %e, "The decision journal cannot be rewound yet; it grows until it can.");
        }
        Ok(touched)
    }

    /// Syncs SQLite (a commit with `synchronous=FULL` syncs the WAL, and with it every
    /// commit before it), then starts the journal over: its frames are all safe in SQLite.
    fn settle_journal(&mut self) -> Result<(), SignalsError> {
        self.conn
            .prepare_cached("UPDATE journal SET synced = applied WHERE id = 1")?
            .execute([])?;
        self.wrote();
        self.journal.rewind();
        Ok(())
    }

    /// Applies the frames found in the journal on open whose number SQLite does not have,
    /// oldest first. The journal goes on after them; it is rewound as usual, once it is
    /// three quarters full and SQLite has synced.
    pub(super) fn recover(
        &mut self,
        entries: Vec<crate::signals::journal::Entry>,
    ) -> Result<(), SignalsError> {
        let mut replayed = 0;
        let applied = self.applied;
        for e in entries.into_iter().filter(|e| e.seq > applied) {
            let b: Batch = serde_json::from_slice(&e.payload).map_err(|err| {
                SignalsError::Store(format!(
                    "decision journal frame {}: cannot read it ({err}); move the journal aside to start without it",
                    e.seq
                ))
            })?;
            if b.v != VERSION {
                return Err(SignalsError::Store(format!(
                    "decision journal frame {}: written by another version (format {}, this is {VERSION})",
                    e.seq, b.v
                )));
            }
            let retention = HistoryRetention {
                keep: b.keep,
                max_age_ms: b.max_age_ms,
            };
            let j = Journaled {
                seq: e.seq,
                sinks: b.sinks,
            };
            self.apply(&j, &b.decisions, &b.views, &b.public_url, retention)?;
            replayed += b.decisions.len();
        }
        if replayed > 0 {
            tracing::info!(
                decisions = replayed,
                "Decisions in the journal but not in the outbox's tables were applied."
            );
        }
        Ok(())
    }

    /// One SQLite transaction: every row of the batch, and its journal number.
    fn apply_tx(
        &mut self,
        j: &Journaled,
        decisions: &[Decision],
        views: &[Value],
        public_url: &str,
        retention: HistoryRetention,
    ) -> Result<Vec<String>, SignalsError> {
        let mut touched = Vec::new();
        let tx = self.conn.transaction()?;
        for v in views {
            let (Some(deploy), Some(service)) = (
                v.get("deploy").and_then(Value::as_str),
                v.get("service").and_then(Value::as_str),
            ) else {
                continue;
            };
            let at = decisions
                .iter()
                .filter(|d| d.deploy == deploy)
                .map(|d| d.at)
                .fold(f64::NEG_INFINITY, f64::max);
            let at = if at.is_finite() { at } else { 0.0 };
            tx.prepare_cached(
                "INSERT INTO history (deploy, service, at, view) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(deploy) DO UPDATE SET service = excluded.service,
                    at = MAX(history.at, excluded.at), view = excluded.view",
            )?
            .execute(params![deploy, service, at, v.to_string()])?;
        }
        if !views.is_empty() {
            let newest = decisions.iter().map(|d| d.at).fold(0.0, f64::max);
            // Older than the age limit, or than the newest `keep`: a cut found by one walk
            // down the `at` index, then a range delete on it. (Testing every row against
            // the list of the newest `keep` took the transaction from 0.4-0.5 ms to 2-3 ms
            // at p50 once the table held a thousand deploys: BENCHMARKS.md.) Deploys tied
            // with the `keep`-th newest are kept.
            let age_cut = newest - retention.max_age_ms as f64 / 1000.0;
            let keep_cut = match retention.keep.checked_sub(1) {
                None => Some(f64::MAX),
                Some(offset) => tx
                    .prepare_cached("SELECT at FROM history ORDER BY at DESC LIMIT 1 OFFSET ?1")?
                    .query_row([i64::try_from(offset).unwrap_or(i64::MAX)], |r| {
                        r.get::<_, f64>(0)
                    })
                    .optional()?,
            };
            tx.prepare_cached(
                "DELETE FROM history
                 WHERE at < ?1
                   AND deploy NOT IN
                          (SELECT json_extract(decision, '$.deploy') FROM lines)",
            )?
            .execute([keep_cut.map_or(age_cut, |k| k.max(age_cut))])?;
        }
        for (i, d) in decisions.iter().enumerate() {
            let body_json =
                serde_json::to_string(d).map_err(|e| SignalsError::Store(e.to_string()))?;
            tx.prepare_cached(
                "INSERT INTO decisions (at, deploy, service, decision, rule, final, shadow, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                d.at,
                d.deploy,
                d.service,
                d.decision.as_str(),
                d.rule,
                d.r#final,
                d.shadow,
                body_json
            ])?;
            let canary: Option<crate::model::DeployEvent> = tx
                .prepare_cached("SELECT canary FROM deploys WHERE deploy = ?1")?
                .query_row([&d.deploy], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten()
                .and_then(|c| serde_json::from_str(&c).ok());
            let commits: Vec<String> = canary
                .as_ref()
                .map(|ev: &crate::model::DeployEvent| ev.commits.clone())
                .unwrap_or_default();
            let cx = crate::signals::webhook::Context {
                commits: &commits,
                by: canary.as_ref().and_then(|ev| ev.by.as_deref()),
                view: views
                    .iter()
                    .find(|v| v.get("deploy").and_then(Value::as_str) == Some(d.deploy.as_str())),
            };
            let blocking = d.r#final && d.decision.blocks_line() && !d.shadow;
            for sink in j.sinks.get(i).map_or(&[][..], Vec::as_slice) {
                let id = signal_id(d, sink);
                let body = crate::signals::webhook::body(&id, d, cx, public_url);
                let n = tx.prepare_cached("INSERT OR IGNORE INTO signals
                       (id, sink, kind, service, deploy, decision, rule, blocking, after_id, body,
                        created_ms, state, attempts, next_ms)
                     VALUES (?1, ?2, 'decision', ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, 'pending', 0, 0)")?.execute(params![
                        id,
                        sink,
                        d.service,
                        d.deploy,
                        d.decision.as_str(),
                        d.rule,
                        blocking,
                        body.to_string(),
                        ms(d.at)
                    ],
                )?;
                if n > 0 && !touched.contains(sink) {
                    touched.push(sink.clone());
                }
            }
            // The engine blocks a line on a rule's final rollback/block; a deploy refused
            // because the line was already blocked does not replace the original blocker.
            if blocking && d.rule != "line_blocked" {
                tx.prepare_cached("INSERT INTO lines (service, decision, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(service) DO UPDATE SET decision = excluded.decision, at = excluded.at")?.execute(params![d.service, body_json, d.at],
                )?;
            }
            if d.r#final {
                tx.prepare_cached(
                    "INSERT INTO deploys (deploy, service, canary, full, started, done, done_at)
                     VALUES (?1, ?2, NULL, NULL, ?3, 1, ?3)
                     ON CONFLICT(deploy) DO UPDATE SET done = 1, done_at = excluded.done_at",
                )?
                .execute(params![d.deploy, d.service, d.at])?;
                tx.prepare_cached("DELETE FROM deploys WHERE done = 1 AND done_at < ?1")?
                    .execute([d.at - KEEP_MS as f64 / 1000.0])?;
            }
        }
        tx.prepare_cached("UPDATE journal SET applied = MAX(applied, ?1) WHERE id = 1")?
            .execute([j.seq as i64])?;
        tx.commit()?;
        Ok(touched)
    }

    /// Records an experiment's `stop` or `close` ([`crate::experiment::signal`]): one
    /// signal row per sink whose `decisions` list `kind` (the `services` filter does not
    /// apply: an experiment has no service), never line-blocking. The id is derived from
    /// `key` (experiment and start), the kind and the sink, so recording it again (after a
    /// restart) adds nothing. Returns the sinks that got a new row. A synced SQLite commit,
    /// not journaled: the registry records it again if it was lost.
    pub(crate) fn record_experiment(
        &mut self,
        kind: crate::model::DecisionKind,
        key: &str,
        at: f64,
        body: &Value,
        sinks: &[Arc<Sink>],
    ) -> Result<Vec<String>, SignalsError> {
        let experiment = body
            .get("experiment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let rule = body.get("rule").and_then(Value::as_str).unwrap_or_default();
        let mut touched = Vec::new();
        let tx = self.conn.transaction()?;
        for sink in sinks.iter().filter(|s| s.filter.decisions.contains(&kind)) {
            let id = hex::encode(
                &Sha256::digest(
                    format!("experiment\n{key}\n{}\n{}", kind.as_str(), sink.name).as_bytes(),
                )[..16],
            );
            let mut b = body.clone();
            b["signal_id"] = json!(id);
            let n = tx.execute(
                "INSERT OR IGNORE INTO signals
                   (id, sink, kind, service, deploy, decision, rule, blocking, after_id, body,
                    created_ms, state, attempts, next_ms)
                 VALUES (?1, ?2, 'decision', '', ?3, ?4, ?5, 0, NULL, ?6, ?7, 'pending', 0, 0)",
                params![
                    id,
                    sink.name,
                    format!("experiment:{experiment}"),
                    kind.as_str(),
                    rule,
                    b.to_string(),
                    ms(at)
                ],
            )?;
            if n > 0 && !touched.contains(&sink.name) {
                touched.push(sink.name.clone());
            }
        }
        tx.commit()?;
        self.wrote();
        Ok(touched)
    }
}
