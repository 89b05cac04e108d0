//! The `immune` command: parses flags and calls the library.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use immune::engine::{Engine, EngineConfig};
use immune::model::DurationMs;
use immune::replay;
use immune::textformat::TimestampUnit;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli_client;
use cli_client::{DeployAction, run_deploy, run_gate, run_lines};

#[derive(Parser)]
#[command(
    name = "immune",
    version,
    about = "A cluster immune system for continuous deployment"
)]
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
        /// A deploy none of whose stopping rules saw data ends `block` or `pass`.
        #[arg(long, default_value = "block")]
        no_evidence: String,
        /// Also write an HTML report (index.html and one page per deploy) into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The metrics file's format: `text` (OpenMetrics or Prometheus text in time order)
        /// or `promtool-dump` (the output of `promtool tsdb dump`, ordered here by time).
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Run the live agent: sources, the engine, signals, the deploy API and /metrics.
    /// Without --config: rules from ./rules (else the embedded ones), state in ./data,
    /// listening on 127.0.0.1:9977.
    Serve {
        /// The configuration file (immune.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the agent on a simulated fleet, faster than real time: a healthy deploy and a
    /// bad one (error rate x3), judged and explained. Needs no files.
    Demo {
        /// Stay up after the deploys, serving /metrics and the API, until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Address for the API and /metrics (default: a free port; 127.0.0.1:9977 with --keep).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Report a deploy to a running agent (for deploy scripts; no curl needed).
    ///
    /// Exit status: 0 the step was applied and the deploy has not been stopped; 3 the
    /// deploy has been rolled back or blocked, by this step or at any time before it (a
    /// script that runs `start`, `full`, `end` without `immune gate` still stops); 2 the
    /// agent refused the step (the answer says why; 503 means it could not be made
    /// durable and was not applied) or could not be reached.
    Deploy {
        /// The agent's base URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:9977")]
        url: String,
        #[command(flatten)]
        auth: Auth,
        #[command(subcommand)]
        action: DeployAction,
    },
    /// Ask a running agent whether a service's line is open: exit 0 when open, 1 with the
    /// reason (deploy, rule, evidence) when blocked (or when immune has never seen the
    /// service: "unknown service"), 2 when the agent cannot be asked.
    Gate {
        /// The service whose line to check.
        #[arg(long)]
        service: String,
        /// The agent's base URL.
        #[arg(long, default_value = "http://127.0.0.1:9977")]
        url: String,
        #[command(flatten)]
        auth: Auth,
    },
    /// Every service's line: open or blocked, by which deploy and rule, since when.
    Lines {
        /// The agent's base URL.
        #[arg(long, default_value = "http://127.0.0.1:9977")]
        url: String,
        #[command(flatten)]
        auth: Auth,
        /// Print the JSON document of `GET /api/v1/lines` instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks: detection against other methods (`detect`) and performance (`perf`).
    Bench {
        #[command(subcommand)]
        what: immune::bench::BenchCommand,
    },
    /// Check rule files; prints one line per file, or every error as file:line:column.
    /// With --against, also warns for every selector that matches no series there.
    Check {
        /// Rule files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A Prometheus-compatible API (a TSDB, or a live immune agent) to look the rules'
        /// selectors up in.
        #[arg(long)]
        against: Option<String>,
        #[command(flatten)]
        tsdb: TsdbArgs,
    },
    /// Experiments (the hypothesis builder): deterministic assignment of users to branches,
    /// and an experiment's judged state on a running agent.
    Experiment {
        #[command(subcommand)]
        action: ExperimentAction,
    },
    /// Unit tests, as `promtool test`: `immune test rules FILE...` runs rule test files
    /// (input series, deploys, expected decisions) through the real engine.
    Test {
        #[command(subcommand)]
        what: TestWhat,
    },
    /// Judge recorded deploys on history from a Prometheus-compatible TSDB (Prometheus,
    /// Thanos, Mimir, VictoriaMetrics): fetches what the rules read around each deploy in
    /// bounded chunks and prints the same JSON Lines as `immune replay`.
    Backtest(BacktestArgs),
}

#[derive(Subcommand)]
enum ExperimentAction {
    /// Print `uid<TAB>branch` per uid (`none` outside initial_rollout).
    Assign {
        /// The experiment file.
        file: PathBuf,
        /// The experiment's name.
        name: String,
        /// User ids.
        #[arg(required = true)]
        uids: Vec<String>,
    },
    /// Show an experiment's state on a running agent: branches, participants, sample ratio
    /// check, each comparison's effect, confidence interval and verdict, and what closing
    /// now would say.
    Status {
        /// The experiment's name.
        name: String,
        /// The agent's base URL.
        #[arg(long, default_value = "http://127.0.0.1:9977")]
        url: String,
        /// Print the agent's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TestWhat {
    /// Run rule test files; exits 1 with a diff when a decision differs.
    Rules {
        /// Test files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct BacktestArgs {
    /// Base URL of the query API, e.g. http://prometheus:9090.
    #[arg(long)]
    prometheus: String,
    /// Deploy events file (JSON Lines, as for replay).
    #[arg(long)]
    deploys: PathBuf,
    /// Rule files or directories (default: the bundled rules).
    #[arg(long)]
    rules: Vec<PathBuf>,
    /// How often rules are evaluated, in the data's time.
    #[arg(long, default_value = "10s")]
    eval_interval: String,
    /// Longest span fetched per request and selector; bounds memory.
    #[arg(long, default_value = "1h")]
    chunk: String,
    /// Also write an HTML report (index.html and one page per deploy) into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    tsdb: TsdbArgs,
}

/// How to reach a Prometheus-compatible API.
#[derive(clap::Args)]
struct TsdbArgs {
    /// An extra request header, `Name: value` (repeatable), e.g. `X-Scope-OrgID: team-a`.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A file holding a bearer token for the TSDB.
    #[arg(long)]
    bearer_token_file: Option<PathBuf>,
    /// A file holding `user:password` for basic auth.
    #[arg(long)]
    basic_auth_file: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// Retries per request after a failure (5xx, connection), with a doubling pause.
    #[arg(long, default_value_t = 3)]
    retries: u32,
}

/// The API's bearer token, the same flags on every client command.
#[derive(clap::Args)]
struct Auth {
    /// Bearer token for the API (prefer --token-file or $IMMUNE_TOKEN: a flag shows in `ps`).
    #[arg(long, global = true, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the bearer token (default: $IMMUNE_TOKEN).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

impl Auth {
    /// --token, else the file's first line, else $IMMUNE_TOKEN.
    fn resolve(self) -> Result<Option<String>> {
        if let Some(t) = self.token {
            return Ok(Some(t));
        }
        if let Some(f) = self.token_file {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("{}: cannot read token", f.display()))?;
            return Ok(Some(text.trim().to_string()));
        }
        Ok(std::env::var("IMMUNE_TOKEN").ok().filter(|t| !t.is_empty()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    immune::logging::init(cli.log_json);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("immune: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve { config } => run_serve(config),
        Command::Demo {
            keep,
            speed,
            listen,
        } => run_demo(keep, speed, listen),
        Command::Deploy { url, auth, action } => run_deploy(&url, auth.resolve()?, action),
        Command::Gate { service, url, auth } => run_gate(&url, &service, auth.resolve()?),
        Command::Lines { url, auth, json } => run_lines(&url, auth.resolve()?, json),
        Command::Bench { what } => run_bench(what),
        Command::Check {
            paths,
            against,
            tsdb,
        } => run_check(&paths, against.as_deref(), &tsdb),
        Command::Backtest(args) => run_backtest(args),
        Command::Experiment {
            action: ExperimentAction::Assign { file, name, uids },
        } => run_experiment_assign(&file, &name, &uids),
        Command::Experiment {
            action: ExperimentAction::Status { name, url, json },
        } => {
            let s = runtime()?.block_on(immune::experiment::show::fetch(&url, &name))?;
            if json {
                println!("{s}");
            } else {
                print!("{}", immune::experiment::show::table(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            what: TestWhat::Rules { files },
        } => {
            let ok = immune::rules::unittest::test_rules(
                &files,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Replay {
            rules,
            metrics,
            deploys,
            timestamps,
            eval_interval,
            no_evidence,
            report,
            format,
        } => {
            let dump = match format.as_str() {
                "text" => false,
                "promtool-dump" => true,
                other => anyhow::bail!("--format: expected text or promtool-dump, got {other:?}"),
            };
            let no_evidence = match no_evidence.as_str() {
                "block" => immune::engine::NoEvidence::Block,
                "pass" => immune::engine::NoEvidence::Pass,
                other => anyhow::bail!("--no-evidence: expected block or pass, got {other:?}"),
            };
            let unit = match timestamps.as_str() {
                "auto" => TimestampUnit::Auto,
                "seconds" | "s" => TimestampUnit::Seconds,
                "milliseconds" | "ms" => TimestampUnit::Milliseconds,
                other => anyhow::bail!(
                    "--timestamps: expected auto, seconds or milliseconds, got {other:?}"
                ),
            };
            let eval = DurationMs::parse(&eval_interval)
                .filter(|d| d.0 > 0)
                .with_context(|| format!("--eval-interval: invalid duration {eval_interval:?}"))?;
            let rule_set = immune::defaults::load_rules(&rules)?;
            let cfg = EngineConfig {
                eval_interval: eval,
                no_evidence,
                ..EngineConfig::default()
            };
            let mut engine = Engine::new(rule_set, cfg);
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let summary = match (metrics, deploys) {
                (Some(m), Some(d)) => {
                    let mut metrics_reader: Box<dyn Read + Send> = if m == "-" {
                        Box::new(std::io::stdin())
                    } else {
                        Box::new(File::open(&m).with_context(|| format!("{m}: cannot open"))?)
                    };
                    if dump {
                        let mut ordered = Vec::new();
                        immune::history::dump::to_time_order(
                            &m,
                            BufReader::new(metrics_reader),
                            &mut ordered,
                        )?;
                        metrics_reader = Box::new(std::io::Cursor::new(ordered));
                    }
                    let deploys_reader =
                        File::open(&d).with_context(|| format!("{}: cannot open", d.display()))?;
                    immune::replay::run(
                        &mut engine,
                        replay::Input::new(&m, metrics_reader),
                        replay::Input::new(d.display().to_string(), BufReader::new(deploys_reader)),
                        replay::Options {
                            unit,
                            eval_interval_ms: eval.0,
                        },
                        &mut out,
                    )?
                }
                _ => immune::defaults::replay_example(&mut engine, eval.0, &mut out)?,
            };
            for w in &summary.warnings {
                eprintln!("immune: warning: {w}");
            }
            if let Some(dir) = &report {
                write_report(&engine, dir)?;
            }
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

/// Writes the report pages of every deploy `engine` judged.
fn write_report(engine: &Engine, dir: &std::path::Path) -> Result<()> {
    let lines = serde_json::to_value(engine.lines()).context("lines as JSON")?;
    immune::report::write_dir(dir, &engine.deploys(), &lines)?;
    tracing::info!(dir = %dir.display(), "Report written.");
    Ok(())
}

fn duration(flag: &str, text: &str) -> Result<DurationMs> {
    DurationMs::parse(text)
        .filter(|d| d.0 > 0)
        .with_context(|| format!("--{flag}: invalid duration {text:?}"))
}

impl TsdbArgs {
    fn tsdb(&self, url: &str) -> Result<immune::history::Tsdb> {
        let secret = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("{}: cannot read", path.display()))
        };
        let mut headers = Vec::new();
        for h in &self.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("--header: expected `Name: value`, got {h:?}"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let basic_auth = match &self.basic_auth_file {
            Some(p) => {
                let text = secret(p)?;
                let (u, pw) = text
                    .split_once(':')
                    .with_context(|| format!("{}: expected `user:password`", p.display()))?;
                Some((u.to_string(), pw.to_string()))
            }
            None => None,
        };
        let timeout = duration("timeout", &self.timeout)?;
        Ok(immune::history::Tsdb {
            url: url.to_string(),
            headers,
            bearer_token: self.bearer_token_file.as_ref().map(secret).transpose()?,
            basic_auth,
            timeout: std::time::Duration::from_millis(timeout.0 as u64),
            retries: self.retries,
        })
    }
}

fn run_experiment_assign(file: &std::path::Path, name: &str, uids: &[String]) -> Result<ExitCode> {
    let exps = immune::experiment::load_file(file).map_err(|d| anyhow::anyhow!("{d}"))?;
    let Some(exp) = exps.iter().find(|e| e.name == name) else {
        anyhow::bail!("{}: no experiment named {name:?}", file.display());
    };
    for uid in uids {
        let branch = immune::experiment::assign::branch_for(exp, uid).unwrap_or("none");
        println!("{uid}\t{branch}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Splits off experiment files (a top-level `experiments:` key) and checks them with the
/// experiment loader; the rest go to the rule checker.
fn check_experiment_files(paths: &[PathBuf]) -> (Vec<PathBuf>, bool) {
    let mut rest = Vec::new();
    let mut ok = true;
    for p in paths {
        // Read once: the same text decides the kind and is loaded.
        let text = p
            .is_file()
            .then(|| std::fs::read_to_string(p).ok())
            .flatten();
        let Some(text) = text.filter(|t| immune::experiment::looks_like_experiments(t)) else {
            rest.push(p.clone());
            continue;
        };
        match immune::experiment::load_str(&p.display().to_string(), &text) {
            Ok(e) => println!("{}: ok, {} experiment(s)", p.display(), e.len()),
            Err(d) => {
                eprintln!("{d}");
                ok = false;
            }
        }
    }
    (rest, ok)
}

fn run_check(paths: &[PathBuf], against: Option<&str>, tsdb: &TsdbArgs) -> Result<ExitCode> {
    let (rule_paths, exp_ok) = check_experiment_files(paths);
    if rule_paths.is_empty() && !paths.is_empty() {
        return Ok(if exp_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let paths = &rule_paths[..];
    let ok = immune::rules::check::check(paths, &mut std::io::stdout(), &mut std::io::stderr())
        && exp_ok;
    if !ok {
        return Ok(ExitCode::from(1));
    }
    if let Some(url) = against {
        let rules = immune::defaults::load_rules(paths)?;
        let client = immune::history::Client::new(&tsdb.tsdb(url)?)?;
        let unmatched = immune::history::against::unmatched(&client, &rules.rules)?;
        for u in &unmatched {
            println!("{u}");
        }
        let n = unmatched.len();
        println!(
            "{url}: {n} selector{} matching no series",
            if n == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_backtest(args: BacktestArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let eval = duration("eval-interval", &args.eval_interval)?;
    let chunk = duration("chunk", &args.chunk)?;
    let tsdb = args.tsdb.tsdb(&args.prometheus)?;
    let deploys_name = args.deploys.display().to_string();
    let deploys_text = std::fs::read_to_string(&args.deploys)
        .with_context(|| format!("{deploys_name}: cannot read"))?;
    let rule_set = immune::defaults::load_rules(&args.rules)?;
    let cfg = EngineConfig {
        eval_interval: eval,
        ..EngineConfig::default()
    };
    let block = cfg.block;
    let mut engine = Engine::new(rule_set, cfg);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let summary = immune::history::backtest::run(
        &mut engine,
        &tsdb,
        &deploys_name,
        &deploys_text,
        immune::history::backtest::Options {
            eval_interval: eval,
            block,
            chunk,
            progress: std::io::stderr().is_terminal(),
        },
        &mut out,
    )?;
    if let Some(dir) = &args.report {
        write_report(&engine, dir)?;
    }
    tracing::info!(
        samples = summary.samples,
        deploy_events = summary.deploy_events,
        decisions = summary.decisions,
        "Backtest finished."
    );
    Ok(ExitCode::SUCCESS)
}

fn run_bench(what: immune::bench::BenchCommand) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    immune::bench::run(what, &mut stdout.lock())?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_serve(config: Option<PathBuf>) -> Result<ExitCode> {
    let config = match &config {
        Some(path) => immune::config::Config::from_file(path)?,
        None => {
            tracing::info!(
                listen = immune::config::DEFAULT_LISTEN,
                "No --config: embedded defaults (rules from ./rules if present, else built in; state in ./data)."
            );
            immune::config::Config::default()
        }
    };
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        immune::serve::run(
            listener,
            config,
            immune::serve::RunOptions::default(),
            immune::serve::shutdown_signal(),
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

fn run_demo(keep: bool, speed: f64, listen: Option<String>) -> Result<ExitCode> {
    anyhow::ensure!(
        speed.is_finite() && speed > 0.0,
        "--speed must be a positive number"
    );
    let opts = immune::demo::DemoOptions {
        listen: listen.unwrap_or_else(|| {
            if keep {
                immune::config::DEFAULT_LISTEN
            } else {
                "127.0.0.1:0"
            }
            .to_string()
        }),
        speed,
        keep,
    };
    runtime()?.block_on(async move {
        let mut out = std::io::stdout();
        immune::demo::run(opts, &mut out, immune::serve::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
