//! The outbox's WAL checkpoints, on a thread of their own: a decision's write is one
//! synced append to SQLite's WAL and never also copies the WAL into the database file and
//! syncs that (which SQLite's default auto-checkpoint does inside whichever commit takes
//! the WAL past 1000 pages: a p99-sized share of decisions). Once a checkpoint has
//! backfilled the whole WAL, the next commit rewrites the WAL from its start instead of
//! growing the file. Measured in BENCHMARKS.md, "The outbox write against one fsync".

use super::SignalsError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Commits between two checkpoints of the WAL. A commit right after a checkpoint restarts
/// the WAL and pays a second sync (SQLite syncs the new WAL header before the frames), so
/// checkpoints are kept under 1 % of commits; the WAL then holds at most this many
/// commits (about 11 MiB at the 11 pages of a decision with its deploy's history).
pub(super) const CHECKPOINT_EVERY: u64 = 256;

/// What the writer and the checkpointing thread share.
#[derive(Default)]
struct CkptShared {
    state: Mutex<CkptState>,
    /// Signalled on a commit and on stop (to the thread), and after each checkpoint (to
    /// whoever waits in `Checkpointer::settle`, in tests).
    wake: Condvar,
}

#[derive(Default)]
struct CkptState {
    /// Commits made by the writer so far.
    commits: u64,
    /// Commits the thread's last finished checkpoint saw (it may have backfilled less, if a
    /// reader held an older snapshot).
    checkpointed: u64,
    /// Checkpoints that backfilled the whole WAL.
    complete: u64,
    /// Checkpoint now, whatever the count (`Checkpointer::settle`).
    now: bool,
    stop: bool,
}

/// A thread with its own connection that runs a PASSIVE checkpoint every `every` commits
/// (counted by the writer, not a clock). The writer's connection has auto-checkpoint off,
/// so no commit pays for copying pages into the database file and syncing it; and once a
/// checkpoint has backfilled the whole WAL, the next commit restarts the WAL at its start
/// and overwrites blocks the file already has, instead of growing the file (a sync of a
/// growing file also journals its size and new blocks).
pub(super) struct Checkpointer {
    every: u64,
    shared: Arc<CkptShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(m: &Mutex<CkptState>) -> MutexGuard<'_, CkptState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Checkpointer {
    /// Opens the thread's own connection to the outbox at `path` and starts it.
    pub(super) fn start(path: &Path, every: u64) -> Result<Checkpointer, SignalsError> {
        let every = every.max(1);
        let conn = Connection::open(path)
            .map_err(|e| SignalsError::Store(format!("{}: {e}", path.display())))?;
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        let shared = Arc::new(CkptShared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("outbox-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &theirs, every))
            .map_err(|e| SignalsError::Store(format!("checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            every,
            shared,
            thread: Some(thread),
        })
    }

    /// Counts a commit; wakes the thread when a checkpoint is due.
    pub(super) fn committed(&self) {
        let mut st = lock(&self.shared.state);
        st.commits += 1;
        let due = st.commits - st.checkpointed >= self.every;
        drop(st);
        if due {
            self.shared.wake.notify_all();
        }
    }
}

impl Checkpointer {
    /// Waits (up to `within`) until no checkpoint is due or running; returns whether none
    /// is. The agent's decisions are an evaluation interval apart, and a checkpoint is long
    /// over by the next one; a benchmark that runs ticks back to back waits here so its
    /// decisions meet the disk as the agent's do.
    pub(super) fn quiet(&self, within: std::time::Duration) -> bool {
        let every = self.every;
        let busy = |st: &mut CkptState| {
            st.commits - st.checkpointed >= every || (st.now && st.commits > st.checkpointed)
        };
        let st = lock(&self.shared.state);
        let (mut st, _) = self
            .shared
            .wake
            .wait_timeout_while(st, within, busy)
            .unwrap_or_else(|e| e.into_inner());
        !busy(&mut st)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("The outbox's checkpoint thread panicked.");
        }
    }
}

fn checkpoint_loop(conn: &Connection, shared: &CkptShared, every: u64) {
    let mut failing = false;
    loop {
        let upto = {
            let mut st = lock(&shared.state);
            while !st.stop
                && st.commits - st.checkpointed < every
                && !(st.now && st.commits > st.checkpointed)
            {
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stop {
                return;
            }
            st.now = false;
            st.commits
        };
        // (busy, frames in the WAL, frames backfilled); PASSIVE never waits for a lock.
        let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        let whole = match r {
            Ok((busy, log, done)) => {
                if failing {
                    tracing::info!("The outbox's WAL is checkpointed again.");
                    failing = false;
                }
                busy == 0 && log == done
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "The outbox's WAL checkpoint failed; retried after the next commit.");
                    failing = true;
                }
                false
            }
        };
        let mut st = lock(&shared.state);
        st.checkpointed = upto;
        if whole {
            st.complete += 1;
        }
        tracing::trace!(
            commits = upto,
            whole_checkpoints = st.complete,
            "Outbox WAL checkpointed."
        );
        drop(st);
        shared.wake.notify_all();
    }
}

#[cfg(test)]
impl Checkpointer {
    /// Makes the thread checkpoint now and waits (up to `within`) until it has run after
    /// every commit so far; returns the number of checkpoints that backfilled the whole
    /// WAL, or `None` on time-out.
    pub(super) fn settle(&self, within: std::time::Duration) -> Option<u64> {
        let mut st = lock(&self.shared.state);
        st.now = true;
        self.shared.wake.notify_all();
        let (st, _) = self
            .shared
            .wake
            .wait_timeout_while(st, within, |st| st.checkpointed < st.commits)
            .unwrap_or_else(|e| e.into_inner());
        (st.checkpointed == st.commits).then_some(st.complete)
    }

    /// Waits (up to `within`) until the thread has run on its own after `commits`.
    pub(super) fn checkpointed(&self, commits: u64, within: std::time::Duration) -> bool {
        let st = lock(&self.shared.state);
        let (st, _) = self
            .shared
            .wake
            .wait_timeout_while(st, within, |st| st.checkpointed < commits)
            .unwrap_or_else(|e| e.into_inner());
        st.checkpointed >= commits
    }
}
