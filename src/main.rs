//! The `immune` command: parses flags and calls the library.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use immune::engine::{Engine, EngineConfig};
use immune::model::DurationMs;
use immune::textformat::TimestampUnit;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "immune", version, about = "A cluster immune system for continuous deployment")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge deploys recorded in files: metrics (OpenMetrics or Prometheus text with
    /// timestamps) and deploy events (JSON Lines). Prints one JSON line per decision.
    /// Without --metrics, replays a bundled example fleet with a healthy and a bad deploy.
    Replay {
        /// Rule files or directories (default: the bundled rules).
        #[arg(long)]
        rules: Vec<PathBuf>,
        /// Metrics file, `-` for standard input.
        #[arg(long, requires = "deploys")]
        metrics: Option<String>,
        /// Deploy events file (JSON Lines).
        #[arg(long)]
        deploys: Option<PathBuf>,
        /// Timestamp unit of the metrics: auto, seconds (OpenMetrics) or milliseconds.
        #[arg(long, default_value = "auto")]
        timestamps: String,
        /// How often rules are evaluated, in the data's time (e.g. 10s).
        #[arg(long, default_value = "10s")]
        eval_interval: String,
    },
    /// Check rule files; prints one line per file, or every error as file:line:column.
    Check {
        /// Rule files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("immune: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMMUNE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { paths } => {
            let ok = immune::rules::check::check(&paths, &mut std::io::stdout(), &mut std::io::stderr());
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Replay {
            rules,
            metrics,
            deploys,
            timestamps,
            eval_interval,
        } => {
            let unit = match timestamps.as_str() {
                "auto" => TimestampUnit::Auto,
                "seconds" | "s" => TimestampUnit::Seconds,
                "milliseconds" | "ms" => TimestampUnit::Milliseconds,
                other => anyhow::bail!("--timestamps: expected auto, seconds or milliseconds, got {other:?}"),
            };
            let eval = DurationMs::parse(&eval_interval)
                .filter(|d| d.0 > 0)
                .with_context(|| format!("--eval-interval: invalid duration {eval_interval:?}"))?;
            let rule_set = immune::defaults::load_rules(&rules)?;
            let cfg = EngineConfig {
                eval_interval: eval,
                ..EngineConfig::default()
            };
            let mut engine = Engine::new(rule_set, cfg);
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let summary = match (metrics, deploys) {
                (Some(m), Some(d)) => {
                    let metrics_reader: Box<dyn Read> = if m == "-" {
                        Box::new(std::io::stdin())
                    } else {
                        Box::new(File::open(&m).with_context(|| format!("{m}: cannot open"))?)
                    };
                    let deploys_reader =
                        File::open(&d).with_context(|| format!("{}: cannot open", d.display()))?;
                    immune::replay::run(
                        &mut engine,
                        &m,
                        BufReader::with_capacity(1 << 16, metrics_reader),
                        &d.display().to_string(),
                        BufReader::new(deploys_reader),
                        unit,
                        eval.0,
                        &mut out,
                    )?
                }
                _ => immune::defaults::replay_example(&mut engine, eval.0, &mut out)?,
            };
            tracing::info!(
                samples = summary.samples,
                deploy_events = summary.deploy_events,
                decisions = summary.decisions,
                refused = summary.refused,
                "Replay finished."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
