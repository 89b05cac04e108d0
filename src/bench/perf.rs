//! The performance benchmark: how fast immune reads, how much memory a series costs, and
//! how long a decision takes once its sample is in.
//!
//! - `replay`: a simulated fleet written as OpenMetrics to a file (not the repository),
//!   replayed by `immune replay` and backfilled by `promtool tsdb create-blocks-from
//!   openmetrics` in the same run, each under `/usr/bin/time -v` (wall, CPU, peak RSS).
//! - `live`: a running agent (`immune serve`, a child process on a free loopback port)
//!   fed by a load generator over `POST /api/v1/write` and `/api/v1/push`; what was
//!   acknowledged is compared with the agent's `immune_samples_ingested_total`.
//! - `memory`: resident bytes per active series with the default windows, each size in a
//!   fresh child process (`--parts memory-one`) so allocator state does not carry over.
//! - `latency`: the time from the deciding sample being in the engine to the decision
//!   being durable and ready to deliver, beside one fsync of the same disk (`latency.rs`).

use super::BenchError;
use super::agent::{Agent, cpu_seconds, ingested, rss_kib_of};
use super::detect::{Case, plan_of};
use crate::engine::{Engine, EngineConfig};
use crate::model::{DurationMs, Sample, Timestamp};
use crate::sim::{FleetConfig, Scenario};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of `immune bench perf`.
#[derive(Debug, clap::Args)]
pub struct PerfArgs {
    /// Parts to run, comma-separated: replay, live, memory, latency, fleet (fleet is not
    /// in the default set: it runs its data time in real time, 10 minutes and more).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "replay,live,memory,latency"
    )]
    pub parts: Vec<String>,
    /// Directory for the generated files and the agent's state.
    #[arg(long, default_value = "/tmp/immune-bench")]
    pub dir: PathBuf,
    /// Web hosts of the replay file (19 series each; 14 more for MySQL, memcached, business).
    #[arg(long, default_value_t = 2700)]
    pub hosts: usize,
    /// Scrape rounds (10 s apart) in the replay file.
    #[arg(long, default_value_t = 200)]
    pub rounds: usize,
    /// promtool, for the comparison (skipped when missing).
    #[arg(long, default_value = "/usr/bin/promtool")]
    pub promtool: PathBuf,
    /// Samples to send to the live agent per protocol (at most).
    #[arg(long, default_value_t = 5_000_000)]
    pub live_samples: u64,
    /// Seconds to send for, per protocol (at most).
    #[arg(long, default_value_t = 60)]
    pub live_seconds: u64,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    pub senders: usize,
    /// Series counts for the memory part.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub series: Vec<usize>,
    /// The agent binary the live and fleet parts start (default: this one), to measure
    /// another build with the same load generator.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Web hosts of the fleet part (20 series each).
    #[arg(long, default_value_t = 10_000)]
    pub fleet_hosts: usize,
    /// Minutes of data time the fleet part sends in real time, with its deploys.
    #[arg(long, default_value_t = 10)]
    pub fleet_minutes: u64,
    /// Minutes of data time sent before, as fast as the agent takes them, so the deploys
    /// have their pre-deploy baselines and the control calibration.
    #[arg(long, default_value_t = 35)]
    pub fleet_prefill_minutes: u64,
    /// Canary hosts of each fleet deploy.
    #[arg(long, default_value_t = 100)]
    pub fleet_canary: usize,
    /// Samples per remote_write request in the fleet part (Prometheus's
    /// `max_samples_per_send` default).
    #[arg(long, default_value_t = 2000)]
    pub fleet_batch: usize,
    /// Deploys per scenario for the latency part (each runs twice: fresh and steady).
    #[arg(long, default_value_t = 120)]
    pub latency_deploys: u64,
    /// In the latency part, let a deciding tick's writes meet a WAL checkpoint still running
    /// from earlier decisions (the ticks run back to back, milliseconds apart). By default
    /// each deciding tick first waits until the outbox's checkpointer is idle, as it is when
    /// decisions are an evaluation interval apart.
    #[arg(long)]
    pub latency_back_to_back: bool,
}

/// Runs the parts asked for.
pub fn run(args: PerfArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    std::fs::create_dir_all(&args.dir)?;
    for part in args.parts.clone() {
        match part.as_str() {
            "replay" => replay(&args, out)?,
            "live" => live(&args, out)?,
            "memory" => memory(&args, out)?,
            "memory-one" | "memory-one-count" => {
                for n in &args.series {
                    memory_one(*n, part == "memory-one-count", out)?;
                }
            }
            "latency" => super::latency::run(&args, out)?,
            "fleet" => super::fleet::fleet(&args, out)?,
            other => return Err(BenchError::Usage(format!("unknown part {other:?}"))),
        }
    }
    Ok(())
}

/// A writer that counts lines.
struct Lines<W> {
    inner: W,
    lines: u64,
}

impl<W: Write> Write for Lines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What `/usr/bin/time -v` reported about a command.
#[derive(Debug, Default)]
struct Timed {
    ok: bool,
    wall_s: f64,
    cpu_s: f64,
    max_rss_kib: u64,
    stderr_tail: String,
}

fn time_command(program: &Path, args: &[&str], cwd: Option<&Path>) -> Result<Timed, BenchError> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(program).args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let started = Instant::now();
    let output = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    let mut t = Timed {
        ok: output.status.success(),
        wall_s: wall,
        ..Timed::default()
    };
    let mut tool_lines = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        let val = |p: &str| {
            l.strip_prefix(p)
                .map(str::trim)
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let Some(v) = val("User time (seconds):") {
            t.cpu_s += v;
        } else if let Some(v) = val("System time (seconds):") {
            t.cpu_s += v;
        } else if let Some(v) = val("Maximum resident set size (kbytes):") {
            t.max_rss_kib = v as u64;
        } else if !line.starts_with('\t') {
            tool_lines.push(line.to_string());
        }
    }
    let n = tool_lines.len();
    t.stderr_tail = tool_lines[n.saturating_sub(4)..].join("\n");
    Ok(t)
}

fn replay(args: &PerfArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let metrics_path = args.dir.join("fleet.om");
    let deploys_path = args.dir.join("fleet.jsonl");
    let cfg = FleetConfig {
        hosts: args.hosts,
        seed: 7,
        ..FleetConfig::default()
    };
    let case = Case {
        hosts: args.hosts,
        canary: 2,
        scenario: Scenario::ErrorRate(2.0),
        seed: 7,
    };
    let (_, plan) = plan_of(&case);
    let plan = crate::sim::DeployPlan::new(
        "perf",
        cfg.start.add(DurationMs::from_secs(600)),
        plan.scenario,
    );
    let until = cfg
        .start
        .add(DurationMs(cfg.scrape_interval.0 * (args.rounds as i64 - 1)));
    let started = Instant::now();
    let mut metrics = Lines {
        inner: std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&metrics_path)?),
        lines: 0,
    };
    let mut deploys = std::fs::File::create(&deploys_path)?;
    crate::sim::write_replay_files(&cfg, &[plan], until, &mut metrics, &mut deploys)?;
    // One `# TYPE` line per family (21) and `# EOF`.
    let samples = metrics.lines.saturating_sub(22);
    let series = args.hosts * 19 + 14;
    let bytes = std::fs::metadata(&metrics_path)?.len();
    writeln!(
        out,
        "\n### Replay throughput\n\nfile: {} ({:.0} MB), {samples} samples, {series} series, {} rounds (generated in {:.0} s)\n",
        metrics_path.display(),
        bytes as f64 / 1e6,
        args.rounds,
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        out,
        "| tool | ok | wall s | CPU s | samples/s (wall) | samples/s per CPU-second | peak RSS MiB |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
    let exe = std::env::current_exe()?;
    let m = metrics_path.to_string_lossy().to_string();
    let d = deploys_path.to_string_lossy().to_string();
    let row = |name: &str, t: &Timed, out: &mut dyn Write| -> Result<(), BenchError> {
        writeln!(
            out,
            "| {name} | {} | {:.1} | {:.1} | {:.2}M | {:.2}M | {:.0} |",
            if t.ok { "yes" } else { "no" },
            t.wall_s,
            t.cpu_s,
            samples as f64 / t.wall_s / 1e6,
            samples as f64 / t.cpu_s.max(1e-9) / 1e6,
            t.max_rss_kib as f64 / 1024.0
        )?;
        Ok(())
    };
    let t = time_command(
        &exe,
        &[
            "replay",
            "--metrics",
            &m,
            "--deploys",
            &d,
            "--timestamps",
            "seconds",
        ],
        None,
    )?;
    row("immune replay", &t, out)?;
    if !t.ok {
        writeln!(out, "\nimmune replay failed: {}", t.stderr_tail)?;
    }
    if args.promtool.exists() {
        let blocks = args.dir.join("promtool-blocks");
        let _ = std::fs::remove_dir_all(&blocks);
        let b = blocks.to_string_lossy().to_string();
        let t = time_command(
            &args.promtool,
            &["tsdb", "create-blocks-from", "openmetrics", &m, &b],
            None,
        )?;
        row("promtool tsdb create-blocks-from openmetrics", &t, out)?;
        if !t.ok {
            writeln!(
                out,
                "\npromtool rejected the file: {}",
                t.stderr_tail.replace('\n', " / ")
            )?;
        }
        let _ = std::fs::remove_dir_all(&blocks);
    } else {
        writeln!(
            out,
            "\n{} not found: promtool skipped",
            args.promtool.display()
        )?;
    }
    Ok(())
}

/// Peak and current resident memory of this process, from /proc/self/status (KiB).
fn rss_kib() -> (u64, u64) {
    rss_kib_of("self")
}

fn live(args: &PerfArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let agent = Agent::start(args, &args.dir.join("agent"))?;
    let (pid, base) = (agent.pid, agent.base.clone());
    let result = (|| -> Result<Vec<LiveResult>, BenchError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = reqwest::Client::new();
            agent.healthy(&client).await?;
            let mut results = Vec::new();
            for proto in [Proto::RemoteWrite, Proto::Push] {
                let cpu = cpu_seconds(pid);
                let mut r = load(&client, &base, proto, args).await?;
                r.agent_cpu_s = cpu_seconds(pid) - cpu;
                results.push(r);
            }
            Ok(results)
        })
    })();
    drop(agent);
    let results = result?;
    writeln!(
        out,
        "\n### Live ingestion over loopback (agent and load generator on the same machine)\n\n\
         | protocol | requests | samples acknowledged | seconds | samples/s | ingested (agent) | lost | failed requests | agent CPU s | agent CPU s per M samples |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in results {
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.2}M | {} | {} | {} | {:.2} | {:.3} |",
            r.proto,
            r.requests,
            r.acked,
            r.seconds,
            r.acked as f64 / r.seconds / 1e6,
            r.ingested,
            r.acked as i64 - r.ingested as i64,
            r.failed,
            r.agent_cpu_s,
            r.agent_cpu_s / (r.ingested.max(1) as f64 / 1e6),
        )?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    RemoteWrite,
    Push,
}

struct LiveResult {
    proto: &'static str,
    requests: u64,
    acked: u64,
    failed: u64,
    seconds: f64,
    ingested: u64,
    /// CPU seconds (user + system) the agent spent while this protocol was measured.
    agent_cpu_s: f64,
}

/// Series per request and requests per sender: each sender owns its series, so every
/// series gets its points in time order whatever the interleaving of senders.
const BATCH: usize = 10_000;

async fn load(
    client: &reqwest::Client,
    base: &str,
    proto: Proto,
    args: &PerfArgs,
) -> Result<LiveResult, BenchError> {
    let senders = args.senders.max(1);
    let per_sender = (args.live_samples / (senders * BATCH) as u64).max(1) as usize;
    let (name, path, ctype) = match proto {
        Proto::RemoteWrite => ("remote_write", "/api/v1/write", "application/x-protobuf"),
        Proto::Push => ("push", "/api/v1/push", "text/plain"),
    };
    // Bodies are built before the clock starts: the generator should not be the bottleneck.
    let t0 = 1_700_000_000_000i64;
    let mut bodies: Vec<Vec<Vec<u8>>> = Vec::new();
    for s in 0..senders {
        let mut mine = Vec::with_capacity(per_sender);
        for k in 0..per_sender {
            let at = Timestamp(t0 + k as i64 * 10_000);
            let samples: Vec<Sample> = (0..BATCH)
                .map(|i| Sample {
                    name: format!("bench_{name}_total"),
                    labels: vec![
                        ("instance".to_string(), format!("h-{s}-{i}")),
                        ("job".to_string(), "bench".to_string()),
                    ],
                    value: k as f64,
                    at,
                })
                .collect();
            mine.push(match proto {
                Proto::RemoteWrite => crate::sources::push::encode_write(&samples),
                Proto::Push => {
                    let mut text = String::with_capacity(BATCH * 64);
                    for smp in &samples {
                        crate::textformat::format_series(&smp.name, &smp.labels, &mut text);
                        text.push_str(&format!(" {} {}\n", smp.value, smp.at.0));
                    }
                    text.into_bytes()
                }
            });
        }
        bodies.push(mine);
    }
    let before = ingested(client, base).await?;
    let deadline = Duration::from_secs(args.live_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mine in bodies {
        let client = client.clone();
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut failed, mut requests) = (0u64, 0u64, 0u64);
            for body in mine {
                if started.elapsed() > deadline {
                    break;
                }
                requests += 1;
                let mut req = client.post(&url).header("content-type", ctype).body(body);
                if proto == Proto::RemoteWrite {
                    req = req
                        .header("content-encoding", "snappy")
                        .header("x-prometheus-remote-write-version", "0.1.0");
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => acked += BATCH as u64,
                    _ => failed += 1,
                }
            }
            (acked, failed, requests)
        }));
    }
    let (mut acked, mut failed, mut requests) = (0, 0, 0);
    for t in tasks {
        let (a, f, r) = t.await.map_err(|e| BenchError::Agent(e.to_string()))?;
        acked += a;
        failed += f;
        requests += r;
    }
    let seconds = started.elapsed().as_secs_f64();
    // The engine drains its channel after the acknowledgements: wait until the count settles.
    let mut last = ingested(client, base).await?;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = ingested(client, base).await?;
        if now == last && now.saturating_sub(before) >= acked {
            break;
        }
        last = now;
    }
    let ingested_total = ingested(client, base).await?.saturating_sub(before);
    Ok(LiveResult {
        proto: name,
        requests,
        acked,
        failed,
        seconds,
        ingested: ingested_total,
        agent_cpu_s: 0.0,
    })
}

fn memory(args: &PerfArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    writeln!(
        out,
        "\n### Memory per active series (default windows filled: points at 10 s for the \
         engine's retention and six more, so every window trims)\n\n\
         | series | read by | points each | RSS before MiB | RSS after MiB | bytes per series | ingest s \
         | of which, per series: points | names and labels | series texts | text map \
         | records | heap blocks |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    let exe = std::env::current_exe()?;
    // Series no count-against-control rule reads keep the short retention; the counts
    // such a rule reads keep the hour its calibration needs (see `Store::set_long`).
    for (n, part) in args
        .series
        .iter()
        .flat_map(|n| [(n, "memory-one"), (n, "memory-one-count")])
    {
        let output = Command::new(&exe)
            .args(["bench", "perf", "--parts", part, "--series", &n.to_string()])
            .arg("--dir")
            .arg(&args.dir)
            .output()?;
        out.write_all(&output.stdout)?;
        if !output.status.success() {
            writeln!(
                out,
                "| {n} | failed: {} |",
                String::from_utf8_lossy(&output.stderr).trim()
            )?;
        }
    }
    Ok(())
}

/// The interval of the memory part's points.
const MEMORY_INTERVAL_MS: i64 = 10_000;

fn memory_one(n: usize, count: bool, out: &mut dyn Write) -> Result<(), BenchError> {
    let rules = crate::defaults::load_rules(&[]).map_err(|e| BenchError::Rules(e.to_string()))?;
    // Series texts are built first so they do not count. `php_errors_total{job="web"}` is
    // what the shipped `php_error_ratio` judges against the control.
    let (metric, job, read_by) = if count {
        ("php_errors_total", "web", "a count against the control")
    } else {
        ("bench_requests_total", "bench", "no such rule")
    };
    let names: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{metric}{{instance=\"h-{}\",job=\"{job}\",path=\"/p{}\"}}",
                i / 100,
                i % 100
            )
        })
        .collect();
    let (_, before) = rss_kib();
    let started = Instant::now();
    let mut engine = Engine::new(
        rules,
        EngineConfig {
            max_series: n.max(1),
            ..EngineConfig::default()
        },
    );
    // Enough points to fill the default windows (the longest pre-deploy baseline and the
    // continuous calibration, plus blocks and ticks: 32 min; an hour and two minutes for
    // counts against the control) and trim them.
    let retention = if count {
        engine.store().long_retention()
    } else {
        engine.store().retention()
    };
    let points = retention.0 / MEMORY_INTERVAL_MS + 6;
    for k in 0..points {
        let at = Timestamp(1_700_000_000_000 + k * MEMORY_INTERVAL_MS);
        for name in &names {
            engine.ingest_text(name, k as f64, at)?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (_, after) = rss_kib();
    let per = (after.saturating_sub(before) * 1024) as f64 / n.max(1) as f64;
    // Where it goes, by the store's own count of what it asked the allocator for.
    let m = engine.store().memory();
    let each = |b: usize| b as f64 / n.max(1) as f64;
    writeln!(
        out,
        "| {n} | {read_by} | {points} | {:.0} | {:.0} | {per:.0} | {secs:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        each(m.points + m.history),
        each(m.labels),
        each(m.texts),
        each(m.index),
        each(m.records),
        each(m.blocks),
    )?;
    // Keep the engine alive until measured.
    drop(engine);
    Ok(())
}

pub(super) fn pctl(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_proc() {
        let (hwm, rss) = rss_kib();
        assert!(hwm >= rss && rss > 0);
    }
}
