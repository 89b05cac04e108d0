//! `immune demo`: the live agent on a simulated fleet, in about twenty seconds.
//!
//! The agent runs exactly as `immune serve` does (engine thread, signals, HTTP API,
//! /metrics), with the fleet simulator as its only source and a [`ScaledClock`] running
//! `speed` times faster than real time for both the simulator and the engine's ticks. Two
//! deploys of `web` are reported through the deploy API over HTTP, as a deploy tool would:
//! a healthy one, then one that triples the PHP error rate on its canary hosts. Each
//! decision is printed with its evidence. Everything it needs is embedded (rules, fleet);
//! state goes to a temporary directory that is removed at the end.

use crate::api::client::{Client, ClientError, Step};
use crate::api::deploys::{DeployStep, StartDeploy};
use crate::config::Config;
use crate::model::{Decision, DeployEvent, DeployEventKind, DurationMs, Timestamp};
use crate::serve::{self, Clock, RunOptions, ScaledClock, ServeError};
use crate::sim::{DeployPlan, Fleet, FleetConfig, Scenario};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Address for the API and /metrics (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// Stay up after the deploys, serving /metrics and the API, until shutdown.
    pub keep: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            listen: "127.0.0.1:0".into(),
            speed: 60.0,
            keep: false,
        }
    }
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The agent failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Reporting a deploy event failed.
    #[error("deploy API: {0}")]
    Client(#[from] ClientError),
    /// Output or sockets failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The agent stopped before the deploys were judged.
    #[error("the agent stopped before both deploys were decided")]
    Stopped,
}

/// The two deploys: healthy, then error rate ×3. Short phases keep the demo short: the
/// healthy one gets 15 minutes of history, an 8-minute canary (long enough for the rules
/// that see rare events to let it be promoted) and 3 minutes at full rollout.
pub fn plans(cfg: &FleetConfig) -> Vec<DeployPlan> {
    let min = |m: i64| cfg.start.add(DurationMs::from_secs(60 * m));
    vec![
        DeployPlan {
            full_at: min(23),
            end_at: min(26),
            ..DeployPlan::new("d1", min(15), Scenario::Healthy)
        },
        DeployPlan {
            full_at: min(35),
            end_at: min(38),
            ..DeployPlan::new("d2", min(30), Scenario::ErrorRate(3.0))
        },
    ]
}

fn clock_str(start: Timestamp, at: f64) -> String {
    let s = (at - start.as_secs_f64()).max(0.0) as i64;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Prints a decision in a few lines: what, which rule, and the evidence summary.
pub fn print_decision(out: &mut dyn Write, start: Timestamp, d: &Decision) -> std::io::Result<()> {
    writeln!(
        out,
        "[{}] {} {}: {} (rule {}, phase {}{})",
        clock_str(start, d.at),
        d.deploy,
        d.version.as_deref().unwrap_or(""),
        d.decision.as_str().to_uppercase(),
        d.rule,
        d.phase.as_str(),
        if d.r#final { ", final" } else { "" }
    )?;
    if let Some(s) = d.evidence.get("summary").and_then(|s| s.as_str()) {
        writeln!(out, "           {s}")?;
    }
    for key in ["also_failing", "warnings"] {
        let shown =
            |v: &&serde_json::Value| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty());
        if let Some(v) = d.evidence.get(key).filter(shown) {
            writeln!(out, "           {key}: {v}")?;
        }
    }
    Ok(())
}

/// Runs the demo, writing its story to `out`; returns every decision. With `keep`, stays
/// up until `shutdown` after the deploys are decided.
pub async fn run(
    opts: DemoOptions,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Vec<Decision>, DemoError> {
    let cfg = FleetConfig::default();
    let fleet = Fleet::new(cfg.clone(), plans(&cfg));
    let events = fleet.deploy_events();
    let scenarios: Vec<(String, Scenario)> = fleet
        .plans()
        .iter()
        .map(|p| (p.id.clone(), p.scenario))
        .collect();
    let clock: Arc<dyn Clock> = Arc::new(ScaledClock::new(cfg.start, opts.speed));

    let data = std::env::temp_dir().join(format!("immune-demo-{}", std::process::id()));
    let mut config = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    config.listen = opts.listen.clone();
    let rules = crate::defaults::load_rules(&[]).map_err(|e| ServeError::Rules(e.0))?;
    let listener = tokio::net::TcpListener::bind(&opts.listen).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (dtx, mut drx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run_opts = RunOptions {
        clock: clock.clone(),
        rules: Some(rules),
        decisions: Some(dtx),
        sources: vec![Box::new(move |ctx: crate::sources::SourceContext| {
            tokio::spawn(crate::sources::sim::run(ctx.named("sim"), fleet))
        })],
    };
    let agent = tokio::spawn(serve::run(listener, config, run_opts, async move {
        let _ = stop_rx.await;
    }));
    writeln!(
        out,
        "immune demo: {} web hosts ({} canary), simulated {}x faster than real time; API and /metrics at {url}",
        cfg.hosts, cfg.canary_hosts, opts.speed
    )?;
    for (id, s) in &scenarios {
        writeln!(out, "  deploy {id}: {s}")?;
    }

    let client = Client::new(&url, None)?;
    let result = drive(&client, &clock, cfg.start, events, &mut drx, out).await;
    if result.is_ok() && opts.keep {
        writeln!(out, "Deploys decided; serving {url} until interrupted.")?;
        out.flush()?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                d = drx.recv() => match d {
                    Some(d) => print_decision(out, cfg.start, &d)?,
                    None => break,
                },
            }
        }
    }
    let _ = stop_tx.send(());
    let served = agent.await.map_err(std::io::Error::other)?;
    let _ = std::fs::remove_dir_all(&data);
    served?;
    result
}

/// Sends each deploy event when the clock reaches it and prints decisions as they come,
/// until every deploy has its final decision.
async fn drive(
    client: &Client,
    clock: &Arc<dyn Clock>,
    start: Timestamp,
    events: Vec<DeployEvent>,
    decisions: &mut mpsc::UnboundedReceiver<Decision>,
    out: &mut (dyn Write + Send),
) -> Result<Vec<Decision>, DemoError> {
    let deploys: BTreeSet<String> = events.iter().filter_map(|e| e.deploy.clone()).collect();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut seen = Vec::new();
    let mut pending = events.into_iter().peekable();
    while finished.len() < deploys.len() {
        let wait = match pending.peek() {
            Some(ev) => {
                let at = Timestamp::from_secs_f64(ev.at).unwrap_or(start);
                clock.real(at.since(clock.now()))
            }
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            d = decisions.recv() => {
                let d = d.ok_or(DemoError::Stopped)?;
                print_decision(out, start, &d)?;
                out.flush()?;
                if d.r#final {
                    finished.insert(d.deploy.clone());
                }
                seen.push(d);
            }
            _ = tokio::time::sleep(wait) => {
                let Some(ev) = pending.next() else { continue };
                let Some(id) = ev.deploy.clone() else { continue };
                if finished.contains(&id) {
                    continue;
                }
                send(client, &ev, &id).await?;
                let what = match ev.event {
                    DeployEventKind::Canary => format!(
                        "canary on {}",
                        ev.canary.as_ref().map(|c| c.values().flat_map(|v| v.values()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
                    ),
                    DeployEventKind::Full => "live on every host".into(),
                    DeployEventKind::End => "rollout finished".into(),
                    DeployEventKind::Abort => "aborted".into(),
                    DeployEventKind::Unblock => "unblocked".into(),
                };
                writeln!(out, "[{}] {id}: {what}", clock_str(start, ev.at))?;
                out.flush()?;
            }
        }
    }
    Ok(seen)
}

async fn send(client: &Client, ev: &DeployEvent, id: &str) -> Result<(), ClientError> {
    let step = DeployStep {
        at: Some(ev.at),
        by: None,
        reason: None,
    };
    match ev.event {
        DeployEventKind::Canary => {
            client
                .start(&StartDeploy {
                    deploy: id.to_string(),
                    service: ev.service.clone().unwrap_or_else(|| "web".into()),
                    version: ev.version.clone(),
                    commits: ev.commits.clone(),
                    canary: ev.canary.clone().unwrap_or_default(),
                    by: ev.by.clone(),
                    at: Some(ev.at),
                })
                .await?;
        }
        DeployEventKind::Full => {
            client.step(id, Step::Full, &step).await?;
        }
        DeployEventKind::End => {
            client.step(id, Step::End, &step).await?;
        }
        DeployEventKind::Abort => {
            client.step(id, Step::Abort, &step).await?;
        }
        DeployEventKind::Unblock => {}
    }
    Ok(())
}
