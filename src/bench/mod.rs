//! `immune bench`: the detection benchmark (does immune catch bad deploys sooner, with
//! fewer false rollbacks, than the methods in use today?) and the performance benchmark
//! (replay and ingestion throughput, memory per series, decision latency).
//!
//! Both are commands rather than tests: they take minutes, print their tables, and write
//! a JSON report; `BENCHMARKS.md` records a run. Nothing here asserts on timings.

mod agent;
pub mod baselines;
pub mod detect;
pub mod experiments;
pub mod field;
pub mod fleet;
mod latency;
pub mod nab;
pub mod perf;

use crate::sim::Scenario;
use std::io::Write;
use std::path::PathBuf;

/// Why a benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The engine refused an input (a bug in the benchmark or the engine).
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// The rules did not load.
    #[error("rules: {0}")]
    Rules(String),
    /// Reading, writing or running a program failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Replay failed.
    #[error("replay: {0}")]
    Replay(#[from] crate::replay::ReplayError),
    /// Something in the simulation went wrong.
    #[error("simulation: {0}")]
    Sim(&'static str),
    /// A flag was wrong.
    #[error("{0}")]
    Usage(String),
    /// The live agent did not behave.
    #[error("agent: {0}")]
    Agent(String),
}

/// `immune bench ...`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Detection: seeded deploys judged by immune, threshold checks (Argo Rollouts,
    /// Flagger), a Kayenta-style judge and an SPRT oracle, on the same samples.
    /// Without --hosts/--canary/--scenarios, runs the whole suite.
    Detect {
        /// Seeds per bad scenario.
        #[arg(long, default_value_t = 50)]
        seeds: u64,
        /// Seeds per healthy scenario (healthy, surge).
        #[arg(long, default_value_t = 300)]
        healthy_seeds: u64,
        /// Web hosts (only this fleet shape).
        #[arg(long)]
        hosts: Option<usize>,
        /// Canary hosts (only this fleet shape).
        #[arg(long)]
        canary: Option<usize>,
        /// Scenarios, comma-separated (e.g. healthy,error-rate:2).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Write the per-run results and the summary here as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Real fleets' conditions instead of the fixed suite: each deploy draws its fleet
        /// (10-200 hosts, 2-4 canaries, 10-30 s scrapes, 5-10 min canary), host spread,
        /// surge, missing scrapes, degrading control host and fault.
        #[arg(long)]
        confounded: bool,
        /// With --confounded: how many deploys (60 % healthy).
        #[arg(long, default_value_t = 1700)]
        deploys: usize,
        /// With --confounded: a run of about a minute (200 deploys), for a quick look.
        #[arg(long)]
        quick: bool,
        /// With --confounded: only these fault classes (healthy, errors-x2, errors-x1.5,
        /// latency, latency-25-6m, signups, mysql-lockup, memcached-lockup), drawn from the
        /// same seeds as in the full mix, for a quicker look at one target.
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
    },
    /// Real data: NAB's labelled anomalies as bad deploys (and healthy deploys away from
    /// them), one pre_deploy gauge rule through the engine against mean ± K·sigma.
    Nab(nab::NabArgs),
    /// Performance: replay throughput against promtool, live ingestion over HTTP,
    /// memory per series, decision latency.
    Perf(perf::PerfArgs),
    /// Experiments: A/A false results looked at every minute, participants needed for
    /// known effects against a fixed-horizon test (and that test peeked daily), SRM.
    Experiments(experiments::ExperimentsArgs),
}

/// `immune bench detect --confounded`: draws `n` deploys, judges them, prints the report.
fn run_field(
    n: usize,
    classes: &[String],
    threads: usize,
    path: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), BenchError> {
    let only: Vec<field::Class> = classes
        .iter()
        .map(|c| {
            field::Class::from_slug(c).ok_or_else(|| {
                BenchError::Usage(format!(
                    "unknown class {c:?}; expected one of {}",
                    field::Class::slugs()
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let cases: Vec<field::FieldCase> = field::cases(n)
        .into_iter()
        .filter(|c| only.is_empty() || only.contains(&c.class))
        .collect();
    let rules = crate::defaults::load_rules(&[]).map_err(|e| BenchError::Rules(e.to_string()))?;
    let started = std::time::Instant::now();
    let step = (cases.len() / 20).max(1);
    let progress = |done: usize, total: usize| {
        if done.is_multiple_of(step) || done == total {
            eprintln!(
                "bench detect --confounded: {done}/{total} deploys, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let results = field::run_all(&cases, &rules, threads, &progress)?;
    let (md, targets) = field::report(&results);
    writeln!(
        out,
        "{} deploys with every confounder drawn, judged in {:.0} s on {threads} threads\n",
        results.len(),
        started.elapsed().as_secs_f64()
    )?;
    out.write_all(md.as_bytes())?;
    if let Some(path) = path {
        let report = serde_json::json!({"targets": targets, "runs": results});
        let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        serde_json::to_writer(f, &report).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Runs a benchmark, printing tables to `out` and progress to standard error.
pub fn run(cmd: BenchCommand, out: &mut dyn Write) -> Result<(), BenchError> {
    match cmd {
        BenchCommand::Detect {
            seeds,
            healthy_seeds,
            hosts,
            canary,
            scenarios,
            threads,
            out: path,
            confounded,
            deploys,
            quick,
            classes,
        } => {
            if confounded {
                let n = if quick { 200 } else { deploys };
                return run_field(n, &classes, threads, path, out);
            }
            let names: Vec<Scenario> = scenarios
                .iter()
                .map(|s| s.parse().map_err(|e| BenchError::Usage(format!("{e}"))))
                .collect::<Result<_, _>>()?;
            let single = hosts.is_some() || canary.is_some() || !names.is_empty();
            let scenarios = if names.is_empty() {
                detect::default_scenarios()
            } else {
                names
            };
            let cases: Vec<detect::Case> = if single {
                let (hosts, canary) = (hosts.unwrap_or(40), canary.unwrap_or(2));
                scenarios
                    .iter()
                    .flat_map(|s| {
                        let n = if s.is_bad() { seeds } else { healthy_seeds };
                        (0..n).map(move |i| detect::Case {
                            hosts,
                            canary,
                            scenario: *s,
                            seed: 10_000 + i,
                        })
                    })
                    .collect()
            } else {
                detect::suite(seeds, healthy_seeds, &scenarios)
            };
            let rules =
                crate::defaults::load_rules(&[]).map_err(|e| BenchError::Rules(e.to_string()))?;
            let started = std::time::Instant::now();
            let step = (cases.len() / 20).max(1);
            let progress = |done: usize, total: usize| {
                if done.is_multiple_of(step) || done == total {
                    eprintln!(
                        "bench detect: {done}/{total} deploys, {:.0} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            };
            let results = detect::run_all(&cases, &rules, threads, &progress)?;
            let rows = detect::summarize(&results);
            writeln!(
                out,
                "{} deploys judged in {:.0} s on {threads} threads",
                results.len(),
                started.elapsed().as_secs_f64()
            )?;
            out.write_all(detect::markdown(&rows).as_bytes())?;
            if let Some(path) = path {
                let report = serde_json::json!({"summary": rows, "runs": results});
                let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
                serde_json::to_writer(f, &report).map_err(std::io::Error::other)?;
            }
            Ok(())
        }
        BenchCommand::Perf(args) => perf::run(args, out),
        BenchCommand::Nab(args) => nab::run(args, out),
        BenchCommand::Experiments(args) => experiments::run(args, out),
    }
}
