//! The `immune` binary's client commands (`deploy`, `gate`, `lines`): their flags and how
//! they call the agent through the library's client and terminal view. Split from
//! main.rs by meaning; part of the binary, not the library.

use anyhow::{Context, Result};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum DeployAction {
    /// The new version is live on the canary hosts.
    Start {
        /// The deploy's id.
        deploy: String,
        /// The service deployed.
        #[arg(long)]
        service: String,
        /// The version deployed.
        #[arg(long)]
        version: Option<String>,
        /// A commit in the deploy (repeatable).
        #[arg(long = "commit")]
        commits: Vec<String>,
        /// Canary series as label=value (repeatable; e.g. --canary instance=web-03:80).
        #[arg(long, required = true)]
        canary: Vec<String>,
        /// Who deployed (shown in alerts, webhooks and the report page).
        #[arg(long)]
        by: Option<String>,
    },
    /// The new version is live everywhere.
    Full {
        /// The deploy's id.
        deploy: String,
    },
    /// The rollout is finished; prints the final decision.
    End {
        /// The deploy's id.
        deploy: String,
    },
    /// The deploy tool rolled back on its own.
    Abort {
        /// The deploy's id.
        deploy: String,
        /// Who aborted.
        #[arg(long)]
        by: Option<String>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// A deploy's state as a compact table: the decision, then each rule's state, effect,
    /// evidence against its threshold and what it waits for. Exits 3 once stopped.
    Status {
        /// The deploy's id.
        deploy: String,
        /// Print the full JSON document, as `GET /api/v1/deploys/{id}` answers it.
        #[arg(long)]
        json: bool,
    },
    /// Redraw the status table until the deploy ends; exit with its final decision's
    /// code (0 passed or promoted, 3 rolled back or blocked, 2 unreachable or refused).
    Watch {
        /// The deploy's id.
        deploy: String,
        /// Time between redraws.
        #[arg(long, default_value = "2s")]
        interval: String,
    },
    /// Reopen a service's blocked line.
    Unblock {
        /// The service.
        service: String,
        /// Who acknowledges.
        #[arg(long)]
        by: String,
        /// Why the line may open again.
        #[arg(long)]
        reason: String,
    },
}

pub(crate) fn run_gate(url: &str, service: &str, token: Option<String>) -> Result<ExitCode> {
    let open = crate::runtime()?.block_on(immune::signals::gate::gate(
        url,
        service,
        token.as_deref(),
        &mut std::io::stdout(),
    ))?;
    Ok(if open {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Whether standard output wants colour (a terminal, NO_COLOR unset).
fn stdout_colour() -> bool {
    use std::io::IsTerminal;
    immune::logging::colour_wanted(std::io::stdout().is_terminal())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(crate) fn run_lines(url: &str, token: Option<String>, json: bool) -> Result<ExitCode> {
    let client = immune::api::client::Client::new(url, token)?;
    crate::runtime()?.block_on(async move {
        let lines = client.lines().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&lines)?);
        } else {
            let deploys = client.deploys().await?;
            print!(
                "{}",
                immune::report::terminal::lines_table(&lines, &deploys, stdout_colour())
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn run_watch(client: immune::api::client::Client, id: &str, interval: &str) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let interval = crate::duration("interval", interval)?;
    let clear = std::io::stdout().is_terminal();
    let code = crate::runtime()?.block_on(immune::report::terminal::watch(
        &client,
        id,
        immune::report::terminal::WatchOptions {
            interval: std::time::Duration::from_millis(interval.0 as u64),
            colour: stdout_colour(),
            clear,
        },
        &unix_now,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ))?;
    Ok(ExitCode::from(code))
}

pub(crate) fn run_deploy(
    url: &str,
    token: Option<String>,
    action: DeployAction,
) -> Result<ExitCode> {
    use immune::api::client::{Client, Step};
    use immune::api::deploys::{DeployStep, StartDeploy, Unblock};
    use immune::model::OneOrMany;
    let client = Client::new(url, token)?;
    if let DeployAction::Watch { deploy, interval } = &action {
        return run_watch(client, deploy, interval);
    }
    let table = matches!(action, DeployAction::Status { json: false, .. });
    let deploy_id = match &action {
        DeployAction::Start { deploy, .. }
        | DeployAction::Full { deploy }
        | DeployAction::End { deploy }
        | DeployAction::Abort { deploy, .. }
        | DeployAction::Status { deploy, .. }
        | DeployAction::Watch { deploy, .. } => Some(deploy.clone()),
        DeployAction::Unblock { .. } => None,
    };
    crate::runtime()?.block_on(async move {
        let answered: Result<serde_json::Value> = async {
            Ok(match action {
                DeployAction::Start {
                    deploy,
                    service,
                    version,
                    commits,
                    canary,
                    by,
                } => {
                    let mut selector = immune::model::CanarySelector::new();
                    for c in canary {
                        let (k, v) = c
                            .split_once('=')
                            .with_context(|| format!("--canary {c:?}: expected label=value"))?;
                        match selector
                            .entry(k.to_string())
                            .or_insert_with(|| OneOrMany::Many(Vec::new()))
                        {
                            OneOrMany::Many(vs) => vs.push(v.to_string()),
                            OneOrMany::One(_) => {}
                        }
                    }
                    let body = StartDeploy {
                        deploy,
                        service,
                        version,
                        commits,
                        canary: selector,
                        by,
                        at: None,
                    };
                    serde_json::to_value(client.start(&body).await?)?
                }
                DeployAction::Full { deploy } => serde_json::to_value(
                    client
                        .step(&deploy, Step::Full, &DeployStep::default())
                        .await?,
                )?,
                DeployAction::End { deploy } => serde_json::to_value(
                    client
                        .step(&deploy, Step::End, &DeployStep::default())
                        .await?,
                )?,
                DeployAction::Abort { deploy, by, reason } => {
                    let body = DeployStep {
                        at: None,
                        by,
                        reason,
                    };
                    serde_json::to_value(client.step(&deploy, Step::Abort, &body).await?)?
                }
                DeployAction::Status { deploy, .. } | DeployAction::Watch { deploy, .. } => {
                    client.status(&deploy).await?
                }
                DeployAction::Unblock {
                    service,
                    by,
                    reason,
                } => {
                    let body = Unblock {
                        by,
                        reason,
                        at: None,
                    };
                    serde_json::to_value(client.unblock(&service, &body).await?)?
                }
            })
        }
        .await;
        // Whether the deploy has been stopped, whenever that happened: its decisions as
        // the agent reports them now (live, or from its stored history).
        let stopped_by = match &deploy_id {
            Some(id) => client.status(id).await.ok().and_then(|view| {
                let (decision, by) = immune::signals::gates::decision_of(&view);
                matches!(decision, "rollback" | "block").then(|| {
                    format!(
                        "deploy {id} was decided {decision}{}",
                        by.and_then(|d| d.get("rule"))
                            .and_then(serde_json::Value::as_str)
                            .map(|r| format!(" by rule {r}"))
                            .unwrap_or_default()
                    )
                })
            }),
            None => None,
        };
        let answer = match answered {
            Ok(a) => a,
            Err(e) => match &stopped_by {
                // The step was refused because the deploy is over: it was stopped.
                Some(why) => {
                    eprintln!("immune: {e:#}");
                    eprintln!("immune: {why}; exit 3");
                    return Ok(ExitCode::from(3));
                }
                None => return Err(e),
            },
        };
        if table {
            print!(
                "{}",
                immune::report::terminal::deploy_status(&answer, Some(unix_now()), stdout_colour())
            );
        } else {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        // A deploy script can branch on the exit code: 3 when a decision says stop.
        let stop = answer["decisions"].as_array().is_some_and(|ds| {
            ds.iter().any(|d| {
                matches!(d["decision"].as_str(), Some("rollback" | "block"))
                    && d["shadow"].as_bool() != Some(true)
            })
        });
        if stop || stopped_by.is_some() {
            if let Some(why) = &stopped_by {
                eprintln!("immune: {why}; exit 3");
            }
            return Ok(ExitCode::from(3));
        }
        Ok(ExitCode::SUCCESS)
    })
}
