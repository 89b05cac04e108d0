//! `immune bench perf --parts fleet`: a large fleet through remote_write into one agent,
//! with deploys running (issue 13 item 4).
//!
//! The simulated fleet (`crate::sim`, 19 series per web host) plus an `up` series per
//! host: 10 000 hosts make 200 000 series. Each 10-second round is sent as remote_write
//! requests of `--fleet-batch` samples by `--senders` concurrent senders (each owning a
//! slice of the hosts, as Prometheus's shards do), to an `immune serve` child.
//!
//! Time: first `--fleet-prefill-minutes` of data time before the deploys are sent as fast
//! as the agent takes them (so the deploys have their baselines); then
//! `--fleet-minutes` are sent **in real time**: round k is stamped and sent at the wall
//! time it names, so the agent's ticker, its CPU share and the decision latency are those
//! of a real fleet. Two deploys start one minute into the real-time part, through
//! `POST /api/v1/deploys`: `bad` (service `web`, the first `--fleet-canary` hosts, whose
//! errors the simulator doubles) and `healthy` (service `web-b`, the next hosts, not
//! changed). Decisions are read back with `GET /api/v1/deploys/{id}` every 250 ms.
//! Decision latency is measured as: when the decision was first read back minus when the
//! newest round acknowledged before the deciding tick (the decision's `at`, the agent's
//! wall clock) was acknowledged; so it includes the wait for the agent's next evaluation
//! tick (up to one `eval_interval`) and the 250 ms polling.

use super::BenchError;
use super::agent::{Agent, cpu_seconds, ingested, metric_value, metrics_text, rss_kib_of};
use super::perf::PerfArgs;
use crate::model::{DurationMs, Sample, Timestamp};
use crate::sim::{DeployPlan, Fleet, FleetConfig, Scenario};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What sending some rounds came to.
#[derive(Debug, Default)]
struct Sent {
    rounds: usize,
    samples: u64,
    acked: u64,
    failed: u64,
    requests: u64,
    /// Per round: its data time and the wall time (ms) its last request was acknowledged.
    acks: Vec<(Timestamp, i64)>,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One round of the fleet at `at`, plus `up` per web host, split by sender (hosts in
/// contiguous slices, so each sender always carries the same series in the same order).
fn round(fleet: &mut Fleet, hosts: usize, senders: usize, at: Timestamp) -> Vec<Vec<Sample>> {
    let mut samples = Vec::with_capacity(hosts * 20 + 16);
    fleet.scrape(at, &mut samples);
    let mut out: Vec<Vec<Sample>> = (0..senders).map(|_| Vec::new()).collect();
    let per = hosts.div_ceil(senders).max(1);
    let sender_of = |s: &Sample| -> usize {
        // `web-NN:80` hosts go by number; the shared series (MySQL, memcached, business)
        // to the first sender.
        s.labels
            .iter()
            .find(|(k, _)| k == "instance")
            .and_then(|(_, v)| v.strip_prefix("web-"))
            .and_then(|v| v.strip_suffix(":80"))
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(0, |n| (n.saturating_sub(1) / per).min(senders - 1))
    };
    for s in samples {
        let i = sender_of(&s);
        let up = s.name == "node_load1";
        if up {
            out[i].push(Sample {
                name: "up".into(),
                labels: s.labels.clone(),
                value: 1.0,
                at,
            });
        }
        out[i].push(s);
    }
    out
}

/// Sends one round (already split by sender) and waits for every answer.
async fn send_round(
    client: &reqwest::Client,
    url: &str,
    parts: Vec<Vec<Sample>>,
    batch: usize,
    sent: &mut Sent,
) {
    let mut tasks = Vec::new();
    for part in parts {
        let bodies: Vec<(usize, Vec<u8>)> = part
            .chunks(batch.max(1))
            .map(|c| (c.len(), crate::sources::push::encode_write(c)))
            .collect();
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut acked, mut failed, mut requests) = (0u64, 0u64, 0u64);
            for (n, body) in bodies {
                requests += 1;
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => acked += n as u64,
                    _ => failed += 1,
                }
            }
            (acked, failed, requests)
        }));
    }
    for t in tasks {
        if let Ok((a, f, r)) = t.await {
            sent.acked += a;
            sent.failed += f;
            sent.requests += r;
        }
    }
}

/// Decisions read back, by (deploy, decision, rule, time): their time and when first read.
type Seen = BTreeMap<(String, String, String, String), (f64, i64)>;

/// Notes the decisions in `found` (deploy id, decision JSON) not seen before, read at `now`.
fn record(seen: &mut Seen, found: Vec<(&str, Value)>, now: i64) {
    for (d, dec) in found {
        let text = |k: &str| dec.get(k).map(Value::to_string).unwrap_or_default();
        let key = (d.to_string(), text("decision"), text("rule"), text("at"));
        let at = dec.get("at").and_then(Value::as_f64).unwrap_or(0.0);
        seen.entry(key).or_insert((at, now));
    }
}

/// The agent's evaluation-tick histogram, as far as the report uses it.
#[derive(Debug, Default)]
struct Evaluations {
    count: f64,
    sum: f64,
    le_1: f64,
    le_2_5: f64,
}

impl Evaluations {
    fn read(metrics: &str) -> Evaluations {
        const NAME: &str = "immune_evaluation_duration_seconds";
        let bucket = |le: &str| {
            let prefix = format!("{NAME}_bucket{{le=\"{le}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(f64::NAN)
        };
        Evaluations {
            count: metric_value(metrics, &format!("{NAME}_count")).unwrap_or(f64::NAN),
            sum: metric_value(metrics, &format!("{NAME}_sum")).unwrap_or(f64::NAN),
            le_1: bucket("1"),
            le_2_5: bucket("2.5"),
        }
    }
}

/// A deploy of the run: its id, service and canary instances.
struct Deploy {
    id: &'static str,
    service: &'static str,
    effect: &'static str,
    canary: Vec<String>,
}

/// Runs the fleet part and prints its section.
pub fn fleet(args: &PerfArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let hosts = args.fleet_hosts.max(2);
    let canary = args.fleet_canary.clamp(1, hosts / 2);
    let senders = args.senders.max(1);
    let agent = Agent::start(args, &args.dir.join("fleet-agent"))?;
    let pid = agent.pid;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Data time: the real-time part starts at the next 10-s boundary after the prefill.
    let interval = DurationMs::from_secs(10);
    let prefill_rounds = (args.fleet_prefill_minutes * 6) as usize;
    let rounds = (args.fleet_minutes * 6).max(1) as usize;
    // Generating the fleet and sending the prefill take a while: the real-time part
    // starts after an estimate of both (1 s per prefill round of 10 000 hosts), so its first
    // round is not already late.
    let lead = 30_000 + prefill_rounds as i64 * hosts.div_ceil(10) as i64;
    let t0 = Timestamp((wall_ms() + lead) / 10_000 * 10_000);
    let start = Timestamp(t0.0 - prefill_rounds as i64 * interval.0);
    let deploy_at = t0.add(DurationMs::from_secs(60));
    let cfg = FleetConfig {
        hosts,
        canary_hosts: canary,
        seed: 13,
        start,
        ..FleetConfig::default()
    };
    let plan = DeployPlan::new("bad", deploy_at, Scenario::ErrorRate(2.0));
    let generated = Instant::now();
    let mut fleet = Fleet::new(cfg, vec![plan]);
    let instance = |i: usize| format!("web-{:02}:80", i + 1);
    let deploys = [
        Deploy {
            id: "bad",
            service: "web",
            effect: "errors x2 on its canary hosts (simulated)",
            canary: fleet.canary_instances(),
        },
        Deploy {
            id: "healthy",
            service: "web-b",
            effect: "none",
            canary: (canary..2 * canary).map(instance).collect(),
        },
    ];
    let fleet_built = generated.elapsed().as_secs_f64();
    let url = format!("{}/api/v1/write", agent.base);
    let result = rt.block_on(async {
        let client = reqwest::Client::new();
        agent.healthy(&client).await?;
        // Prefill, as fast as the agent takes it.
        let mut pre = Sent::default();
        let cpu0 = cpu_seconds(pid);
        let began = Instant::now();
        for k in 0..prefill_rounds {
            let at = start.add(DurationMs(interval.0 * k as i64));
            let parts = round(&mut fleet, hosts, senders, at);
            pre.samples += parts.iter().map(|p| p.len() as u64).sum::<u64>();
            send_round(&client, &url, parts, args.fleet_batch, &mut pre).await;
            pre.rounds += 1;
        }
        let pre_secs = began.elapsed().as_secs_f64();
        let pre_cpu = cpu_seconds(pid) - cpu0;
        // Real time.
        let mut live = Sent::default();
        let mut seen = Seen::new();
        let mut started_deploys = false;
        let mut late = 0usize;
        let mut cpu1 = cpu_seconds(pid);
        let mut live_began = wall_ms();
        let poll = |client: reqwest::Client, base: String| async move {
            let mut found = Vec::new();
            for d in ["bad", "healthy"] {
                let Ok(r) = client
                    .get(format!("{base}/api/v1/deploys/{d}"))
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(v) = r.json::<Value>().await else {
                    continue;
                };
                for dec in v
                    .get("decisions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    found.push((d, dec));
                }
            }
            found
        };
        for k in 0..rounds {
            let at = t0.add(DurationMs(interval.0 * k as i64));
            // Wait for the round's time, polling decisions meanwhile.
            loop {
                let now = wall_ms();
                record(
                    &mut seen,
                    poll(client.clone(), agent.base.clone()).await,
                    now,
                );
                if now >= at.0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis((at.0 - now).clamp(1, 250) as u64)).await;
            }
            if k == 0 {
                // The real-time part's CPU and wall clock start with its first round.
                cpu1 = cpu_seconds(pid);
                live_began = wall_ms();
            }
            if wall_ms() > at.0 + 5_000 {
                late += 1;
            }
            if !started_deploys && at >= deploy_at {
                started_deploys = true;
                for d in &deploys {
                    let body = json!({
                        "deploy": d.id,
                        "service": d.service,
                        "canary": {"instance": d.canary},
                        "at": deploy_at.as_secs_f64(),
                    });
                    let r = client
                        .post(format!("{}/api/v1/deploys", agent.base))
                        .json(&body)
                        .send()
                        .await
                        .map_err(|e| BenchError::Agent(e.to_string()))?;
                    if !r.status().is_success() {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        return Err(BenchError::Agent(format!(
                            "deploy {} refused: {status} {text}",
                            d.id
                        )));
                    }
                }
            }
            let parts = round(&mut fleet, hosts, senders, at);
            live.samples += parts.iter().map(|p| p.len() as u64).sum::<u64>();
            send_round(&client, &url, parts, args.fleet_batch, &mut live).await;
            live.acks.push((at, wall_ms()));
            live.rounds += 1;
        }
        // The last round's evaluation: one more interval, polling.
        let end = wall_ms() + interval.0;
        while wall_ms() < end {
            let now = wall_ms();
            record(
                &mut seen,
                poll(client.clone(), agent.base.clone()).await,
                now,
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let live_wall = (wall_ms() - live_began) as f64 / 1000.0;
        let live_cpu = cpu_seconds(pid) - cpu1;
        let (peak, rss) = rss_kib_of(&pid.to_string());
        let metrics = metrics_text(&client, &agent.base).await?;
        let dropped = metric_value(&metrics, "immune_engine_dropped_batches_total").unwrap_or(-1.0);
        let evals = Evaluations::read(&metrics);
        let series = metric_value(&metrics, "immune_series").unwrap_or(-1.0);
        let total = ingested(&client, &agent.base).await?;
        Ok::<_, BenchError>((
            pre, pre_secs, pre_cpu, live, live_wall, live_cpu, late, seen, peak, rss, dropped,
            series, total, evals,
        ))
    })?;
    drop(agent);
    let (
        pre,
        pre_secs,
        pre_cpu,
        live,
        live_wall,
        live_cpu,
        late,
        seen,
        peak,
        rss,
        dropped,
        series,
        total,
        evals,
    ) = result;
    let sent = pre.samples + live.samples;
    writeln!(
        out,
        "\n### Large fleet through remote_write ({hosts} hosts x 20 series, {senders} senders, {} samples per request)\n",
        args.fleet_batch
    )?;
    writeln!(
        out,
        "| part | rounds | data time | samples sent | acknowledged | failed requests | wall s | agent CPU s | CPU share |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    writeln!(
        out,
        "| prefill, as fast as accepted | {} | {} min | {} | {} | {} | {pre_secs:.1} | {pre_cpu:.1} | {:.0} % ({:.2}M samples/s) |",
        pre.rounds,
        args.fleet_prefill_minutes,
        pre.samples,
        pre.acked,
        pre.failed,
        100.0 * pre_cpu / pre_secs.max(1e-9),
        pre.acked as f64 / pre_secs.max(1e-9) / 1e6,
    )?;
    writeln!(
        out,
        "| real time, with deploys | {} | {} min | {} | {} | {} | {live_wall:.1} | {live_cpu:.1} | {:.1} % of one core |",
        live.rounds,
        args.fleet_minutes,
        live.samples,
        live.acked,
        live.failed,
        100.0 * live_cpu / live_wall.max(1e-9),
    )?;
    writeln!(
        out,
        "\nseries held: {series}; samples ingested (agent) {total} of {sent} sent, lost {}; dropped batches {dropped}; \
         agent RSS at the end {:.0} MiB (peak {:.0} MiB); real-time rounds sent over 5 s late: {late}; \
         fleet built in {fleet_built:.1} s.\n",
        sent as i64 - total as i64,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
    )?;
    let mut lag: Vec<f64> = live
        .acks
        .iter()
        .map(|(at, w)| (w - at.0) as f64 / 1000.0)
        .collect();
    lag.sort_by(f64::total_cmp);
    let q = |p: f64| super::perf::pctl(&lag, p);
    writeln!(
        out,
        "Real-time rounds, from the round's data time to its last request acknowledged (generating and encoding it included): p50 {:.2} s, p90 {:.2} s, max {:.2} s. Agent evaluation ticks (`immune_evaluation_duration_seconds`, whole run): {} ticks, mean {:.3} s, {} over 1 s, {} over 2.5 s.\n",
        q(0.5),
        q(0.9),
        lag.last().copied().unwrap_or(f64::NAN),
        evals.count,
        evals.sum / evals.count.max(1.0),
        evals.count - evals.le_1,
        evals.count - evals.le_2_5,
    )?;
    writeln!(
        out,
        "| deploy | service | canary hosts | simulated effect | decision | rule | deciding round acknowledged | decision's time | read back | latency s (read back - deciding round acknowledged) |\n|---|---|---:|---|---|---|---:|---:|---:|---:|"
    )?;
    for d in &deploys {
        let mine: Vec<_> = seen.iter().filter(|(k, _)| k.0 == d.id).collect();
        if mine.is_empty() {
            writeln!(
                out,
                "| {} | {} | {} | {} | none in {} min | | | | | |",
                d.id,
                d.service,
                d.canary.len(),
                d.effect,
                args.fleet_minutes
            )?;
        }
        for ((_, kind, rule, _), (at, seen_ms)) in mine {
            let at_ms = (at * 1000.0).round() as i64;
            // The agent's clock is the wall clock: the deciding tick saw the rounds
            // acknowledged before its time.
            let acked = live.acks.iter().map(|(_, w)| *w).rfind(|w| *w <= at_ms);
            let latency = acked.map_or(f64::NAN, |w| (seen_ms - w) as f64 / 1000.0);
            // Times as seconds after the deploys started (the canary events' `at`).
            let after = |ms: i64| format!("+{:.2} s", (ms - deploy_at.0) as f64 / 1000.0);
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                d.id,
                d.service,
                d.canary.len(),
                d.effect,
                kind.trim_matches('"'),
                rule.trim_matches('"'),
                acked.map_or("none".to_string(), after),
                after(at_ms),
                after(*seen_ms),
                latency,
            )?;
        }
    }
    Ok(())
}
