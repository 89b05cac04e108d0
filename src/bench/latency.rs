//! `immune bench perf --parts latency`: how long a decision takes from its tick to being
//! durable (`Engine::tick`, then the decision journal's append and sync, as
//! `Signals::record_then_views` does it) and to being ready to deliver (the deciding
//! deploys' views and the SQLite rows), beside one `fdatasync` of the same disk.
//!
//! Why the probe takes turns with the journal: on this VM (virtio disk) an `fdatasync` that
//! follows another one closely is about half the price of one after a few idle
//! milliseconds (the idle-gap rows at the end measure it). The journal's sync is the first
//! I/O after a tick that did none, so a probe synced right after it is cheaper than the
//! journal's sync for a reason that has nothing to do with the journal. At each deciding
//! tick the journal and the probe take turns at going first; each is reported both ways,
//! and the ratio compares the two when first, with the stricter ratio (against the
//! probe right after the journal) printed beside it.
//!
//! Why it waits for the WAL checkpointer: the ticks run back to back, so deciding ticks
//! come milliseconds apart where the agent's come an evaluation interval apart, and the
//! outbox's thread checkpoints the WAL every 256 commits. In the agent a checkpoint is
//! over long before the next tick, so by default the bench waits for it and reports the
//! waits (`--latency-back-to-back` does not wait). Measured: 0 or 1 deciding tick in 571
//! per pass found a checkpoint running, so the wait changes little; it keeps the
//! comparison from depending on where checkpoints fall.

use super::BenchError;
use super::detect::Case;
use super::perf::{PerfArgs, pctl};
use crate::engine::Engine;
use crate::model::Decision;
use crate::sim::Scenario;
use std::io::Write;
use std::time::{Duration, Instant};

/// Samples of one pass, in milliseconds.
#[derive(Default)]
struct Pass {
    all_ticks: Vec<f64>,
    deciding: Vec<f64>,
    /// Tick plus the journal's append when the journal went first.
    durable: Vec<f64>,
    deliverable: Vec<f64>,
    journal_first: Vec<f64>,
    journal_second: Vec<f64>,
    probe_first: Vec<f64>,
    probe_second: Vec<f64>,
    views: Vec<f64>,
    apply: Vec<f64>,
    /// Waits for a running WAL checkpoint before a deciding tick's writes (over 0.1 ms).
    waited: Vec<f64>,
}

/// Runs the latency part and writes its table to `out`.
pub(super) fn run(args: &PerfArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    use crate::signals::outbox::{HistoryRetention, Outbox, journal_path};
    let rules = crate::defaults::load_rules(&[]).map_err(|e| BenchError::Rules(e.to_string()))?;
    let db = args.dir.join("latency-outbox.sqlite");
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(args.dir.join(format!("latency-outbox.sqlite{f}")));
    }
    let _ = std::fs::remove_file(journal_path(&db));
    let mut outbox = Outbox::open(&db).map_err(|e| BenchError::Agent(e.to_string()))?;
    let mut probe = std::fs::File::create(args.dir.join("latency-fsync.probe"))?;
    let block = [0x5au8; 4096];
    let url = "http://127.0.0.1:9977";
    let retention = HistoryRetention::default();
    let mut failures: Vec<String> = Vec::new();
    writeln!(
        out,
        "\n### Decision latency (40 hosts, shipped rules; {} deploys, twice)\n\n\
         The same deploys run twice on one outbox: first on a new file (fresh: the WAL grows \
         to its size), then again on the outbox the first pass left (steady state, as in an \
         agent that has been running). As in the agent (`Signals::record_then_views`): the \
         durable write is the decisions appended to the decision journal and synced; then \
         the deciding deploys' views are taken and go with the rows into one SQLite \
         transaction without a sync. The probe is 4 KiB written over the start of a file in \
         the same directory and synced; at each deciding tick the journal and the probe take \
         turns at being the first I/O after the tick. {}\n\n\
         | outbox | what | n | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|",
        2 * args.latency_deploys,
        if args.latency_back_to_back {
            "The ticks run back to back, so a deciding tick's writes may meet a WAL checkpoint \
             the outbox's thread started after earlier decisions (`--latency-back-to-back`)."
        } else {
            "Before a deciding tick's writes the bench waits until the outbox's WAL \
             checkpointer is idle, as it is when decisions are an evaluation interval apart \
             (the ticks here run back to back; `--latency-back-to-back` skips the wait)."
        }
    )?;
    let mut ratios = Vec::new();
    for pass_name in ["fresh", "steady"] {
        let mut p = Pass::default();
        for scenario in [Scenario::ErrorRate(2.0), Scenario::Healthy] {
            for seed in 0..args.latency_deploys {
                let case = Case {
                    hosts: 40,
                    canary: 2,
                    scenario,
                    seed: 20_000 + seed,
                };
                let mut on_tick = |took: Duration, active: bool, ds: &[Decision], e: &Engine| {
                    let tick = ms(took);
                    if ds.is_empty() {
                        if active {
                            p.all_ticks.push(tick);
                        }
                        return;
                    }
                    p.all_ticks.push(tick);
                    if !args.latency_back_to_back {
                        let started = Instant::now();
                        if !outbox.checkpoint_quiet(Duration::from_secs(10)) {
                            failures.push("the WAL checkpoint took over 10 s".into());
                        }
                        let waited = started.elapsed();
                        if waited > Duration::from_micros(100) {
                            p.waited.push(ms(waited));
                        }
                    }
                    let journal_goes_first = p.deciding.len() % 2 == 0;
                    p.deciding.push(tick);
                    let mut synced_probe = |into: &mut Vec<f64>| {
                        let started = Instant::now();
                        match fsync_probe(&mut probe, &block) {
                            Ok(()) => into.push(ms(started.elapsed())),
                            Err(e) => failures.push(format!("fsync probe: {e}")),
                        }
                    };
                    if !journal_goes_first {
                        synced_probe(&mut p.probe_first);
                    }
                    // As `Signals::record_then_views`: the decisions are made durable, then
                    // the views are taken and go into SQLite with the rows.
                    let started = Instant::now();
                    let journaled = outbox.journal(ds, &[], &[], url, retention);
                    let j = ms(started.elapsed());
                    if journal_goes_first {
                        p.journal_first.push(j);
                        p.durable.push(tick + j);
                        synced_probe(&mut p.probe_second);
                    } else {
                        p.journal_second.push(j);
                    }
                    let started = Instant::now();
                    let views = crate::engine::handle::views_of(e, ds);
                    let v = ms(started.elapsed());
                    let started = Instant::now();
                    let applied =
                        journaled.and_then(|jd| outbox.apply(&jd, ds, &views, url, retention));
                    let a = ms(started.elapsed());
                    if let Err(e) = applied {
                        failures.push(e.to_string());
                    }
                    p.views.push(v);
                    p.apply.push(a);
                    p.deliverable.push(tick + j + v + a);
                };
                super::detect::simulate_with(&case, &rules, &mut on_tick)?;
            }
        }
        let rows = [
            ("tick while a deploy is active", &mut p.all_ticks),
            ("deciding tick", &mut p.deciding),
            (
                "deciding tick + durable write (journal append + fdatasync, journal first)",
                &mut p.durable,
            ),
            (
                "deciding tick + durable write + views + SQLite rows (ready to deliver)",
                &mut p.deliverable,
            ),
            (
                "journal append + fdatasync, first I/O after the tick",
                &mut p.journal_first,
            ),
            (
                "journal append + fdatasync, right after the probe",
                &mut p.journal_second,
            ),
            (
                "4 KiB write + fdatasync probe, first I/O after the tick",
                &mut p.probe_first,
            ),
            (
                "4 KiB write + fdatasync probe, right after the journal",
                &mut p.probe_second,
            ),
            (
                "the deploys' views alone (`Engine::deploy_view`)",
                &mut p.views,
            ),
            (
                "SQLite transaction alone (synchronous=NORMAL)",
                &mut p.apply,
            ),
        ];
        for (name, v) in rows {
            v.sort_by(f64::total_cmp);
            writeln!(
                out,
                "| {pass_name} | {name} | {} | {:.2} | {:.2} | {:.2} |",
                v.len(),
                pctl(v, 0.5),
                pctl(v, 0.99),
                v.last().copied().unwrap_or(f64::NAN)
            )?;
        }
        if !args.latency_back_to_back {
            writeln!(
                out,
                "| {pass_name} | wait for a running WAL checkpoint before the writes (when over 0.1 ms) | {} | {:.2} | {:.2} | {:.2} |",
                p.waited.len(),
                pctl(&p.waited, 0.5),
                pctl(&p.waited, 0.99),
                p.waited.iter().copied().fold(f64::NAN, f64::max)
            )?;
        }
        let durable = pctl(&p.durable, 0.99);
        ratios.push(format!(
            "{pass_name} {:.2}x (against the probe right after the journal: {:.2}x)",
            durable / pctl(&p.probe_first, 0.99),
            durable / pctl(&p.probe_second, 0.99),
        ));
    }
    writeln!(
        out,
        "\np99 of the deciding tick with its durable write / p99 of one fsync, each the first \
         I/O after its tick: {}",
        ratios.join("; ")
    )?;
    idle_gaps(&mut probe, &block, out)?;
    if !failures.is_empty() {
        writeln!(out, "\noutbox errors: {}", failures.join("; "))?;
    }
    Ok(())
}

/// The probe alone after idle gaps of several lengths: what one fsync of this disk costs
/// depends on how long the disk has been idle, which is why the probe and the journal take
/// turns above.
fn idle_gaps(
    probe: &mut std::fs::File,
    block: &[u8],
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    const ROUNDS: usize = 200;
    writeln!(
        out,
        "\n4 KiB write + fdatasync after an idle gap ({ROUNDS} each, gaps interleaved):\n\n\
         | idle gap before it | p50 ms | p99 ms |\n|---|---:|---:|"
    )?;
    let gaps = [0u64, 300, 1_000, 5_000];
    let mut took: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); gaps.len()];
    for _ in 0..ROUNDS {
        for (i, gap) in gaps.iter().enumerate() {
            std::thread::sleep(Duration::from_micros(*gap));
            let started = Instant::now();
            fsync_probe(probe, block)?;
            took[i].push(ms(started.elapsed()));
        }
    }
    for (gap, v) in gaps.iter().zip(&mut took) {
        v.sort_by(f64::total_cmp);
        writeln!(
            out,
            "| {} | {:.2} | {:.2} |",
            if *gap == 0 {
                "none (back to back)".to_string()
            } else {
                format!("{:.1} ms", *gap as f64 / 1e3)
            },
            pctl(v, 0.5),
            pctl(v, 0.99)
        )?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes `block` over the start of `file` and waits for it to be on the disk
/// (`fdatasync`): the cost of one durable write, to set the outbox's beside.
fn fsync_probe(file: &mut std::fs::File, block: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    file.write_all(block)?;
    file.sync_data()
}
