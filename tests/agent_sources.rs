//! Sources against real services (MariaDB, memcached, Prometheus), and the fault tests:
//! a MariaDB or memcached frozen with SIGSTOP during a canary goes silent, and the
//! `on_missing` rule rolls the deploy back within `stale_after` plus an interval or two.
//!
//! Each test skips (passes, with a note) when its service's variable is unset; CI runs
//! scripts/test.sh, which starts the services and sets them.

#[path = "agent_common/mod.rs"]
mod common;

use common::{Child, Frozen, TempDir, env_or_skip, fixture, free_port, start};
use immune::api::client::Client;
use immune::api::deploys::StartDeploy;
use immune::config::{BusinessQuery, MemcachedConfig, MysqlConfig, QueryKind};
use immune::model::{DecisionKind, OneOrMany, Sample, Timestamp};
use immune::sources::Poller;
use immune::sources::memcached::MemcachedPoller;
use immune::sources::mysql::MysqlPoller;
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Tests that touch MariaDB or memcached take this, so a frozen server never meets another test.
static SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && label.is_none_or(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

fn metrics() -> immune::sources::SourceMetrics {
    immune::sources::SourceMetrics::new(&prometheus::Registry::new()).unwrap()
}

#[tokio::test]
async fn mysql_status_and_a_business_query_over_a_real_table() {
    let Some(url) = env_or_skip("IMMUNE_TEST_MYSQL_URL") else {
        return;
    };
    let _g = SERVICES.lock().await;
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    conn.query_drop("DROP TABLE IF EXISTS signups")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE signups (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100))")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO signups (email) VALUES ('a@x'), ('b@x')")
        .await
        .unwrap();
    let cfg = MysqlConfig {
        name: None,
        url: url.clone(),
        job: "mysql".into(),
        instance: Some("db-1".into()),
        interval: immune::config::Duration(immune::model::DurationMs::from_secs(1)),
        timeout: immune::config::Duration(immune::model::DurationMs::from_secs(5)),
        queries: vec![
            BusinessQuery {
                name: "shop_signups_total".into(),
                query: "SELECT COUNT(*) FROM signups".into(),
                labels: [("site".to_string(), "shop".to_string())]
                    .into_iter()
                    .collect(),
                kind: QueryKind::Counter,
            },
            BusinessQuery {
                name: "broken_query".into(),
                query: "SELECT COUNT(*) FROM no_such_table".into(),
                labels: Default::default(),
                kind: QueryKind::Gauge,
            },
        ],
    };
    let mut p = MysqlPoller::new("mysql", &cfg, metrics()).unwrap();
    let now = Timestamp(1_700_000_000_000);
    let first = p.poll(now).await.unwrap();
    for name in [
        "mysql_global_status_threads_running",
        "mysql_global_status_threads_connected",
        "mysql_global_status_slow_queries",
        "mysql_global_status_aborted_connects",
        "mysql_global_status_queries",
        "mysql_global_status_innodb_row_lock_waits",
        "mysql_global_status_innodb_row_lock_time",
        "mysql_up",
    ] {
        assert!(
            value(&first, name, None).is_some(),
            "{name} missing: {first:?}"
        );
    }
    assert!(value(&first, "mysql_global_status_threads_running", None).unwrap() >= 1.0);
    assert_eq!(value(&first, "mysql_up", None), Some(1.0));
    // Not a replica: no lag series.
    assert!(value(&first, "mysql_slave_status_seconds_behind_master", None).is_none());
    // The failing business query is skipped, the good one is there with its labels.
    assert!(value(&first, "broken_query", None).is_none());
    assert_eq!(
        value(&first, "shop_signups_total", Some(("site", "shop"))),
        Some(2.0)
    );
    let s = first
        .iter()
        .find(|s| s.name == "shop_signups_total")
        .unwrap();
    assert!(s.labels.contains(&("job".to_string(), "mysql".to_string())));
    assert!(
        s.labels
            .contains(&("instance".to_string(), "db-1".to_string()))
    );
    assert!(
        s.labels.windows(2).all(|w| w[0].0 < w[1].0),
        "labels sorted"
    );

    conn.query_drop("INSERT INTO signups (email) VALUES ('c@x'), ('d@x'), ('e@x')")
        .await
        .unwrap();
    let second = p.poll(now).await.unwrap();
    assert_eq!(value(&second, "shop_signups_total", None), Some(5.0));
    assert!(
        value(&second, "mysql_global_status_queries", None).unwrap()
            > value(&first, "mysql_global_status_queries", None).unwrap()
    );
    conn.disconnect().await.unwrap();
}

async fn memcached_cmd(addr: &str, cmd: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(cmd).await.unwrap();
    let mut buf = [0u8; 256];
    let _ = s.read(&mut buf).await.unwrap();
}

#[tokio::test]
async fn memcached_stats_count_hits_and_misses() {
    let Some(addr) = env_or_skip("IMMUNE_TEST_MEMCACHED_ADDR") else {
        return;
    };
    let _g = SERVICES.lock().await;
    let cfg = MemcachedConfig {
        name: None,
        addr: addr.clone(),
        job: "memcached".into(),
        instance: None,
        interval: immune::config::Duration(immune::model::DurationMs::from_secs(1)),
        timeout: immune::config::Duration(immune::model::DurationMs::from_secs(5)),
    };
    let mut p = MemcachedPoller::new(&cfg);
    let now = Timestamp(0);
    let before = p.poll(now).await.unwrap();
    let hit = |s: &[Sample], status: &str| {
        s.iter()
            .find(|x| {
                x.name == "memcached_commands_total"
                    && x.labels.contains(&("command".into(), "get".into()))
                    && x.labels
                        .contains(&("status".to_string(), status.to_string()))
            })
            .map(|x| x.value)
            .unwrap()
    };
    memcached_cmd(&addr, b"set immune_k 0 60 2\r\nhi\r\n").await;
    memcached_cmd(&addr, b"get immune_k\r\n").await;
    memcached_cmd(&addr, b"get immune_k\r\n").await;
    memcached_cmd(&addr, b"get immune_nope\r\n").await;
    let after = p.poll(now).await.unwrap();
    assert_eq!(hit(&after, "hit") - hit(&before, "hit"), 2.0);
    assert_eq!(hit(&after, "miss") - hit(&before, "miss"), 1.0);
    for name in [
        "memcached_items_evicted_total",
        "memcached_current_connections",
        "memcached_current_bytes",
        "memcached_up",
    ] {
        assert!(value(&after, name, None).is_some(), "{name} missing");
    }
    assert!(value(&after, "memcached_current_connections", None).unwrap() >= 1.0);
    let up = after.iter().find(|s| s.name == "memcached_up").unwrap();
    assert!(up.labels.contains(&("instance".to_string(), addr.clone())));
}

fn canary(id: &str) -> StartDeploy {
    StartDeploy {
        deploy: id.into(),
        service: "web".into(),
        version: None,
        commits: Vec::new(),
        canary: [("instance".to_string(), OneOrMany::One("web-01:80".into()))]
            .into_iter()
            .collect(),
        by: None,
        at: None,
    }
}

/// Freezes `pid` during a canary and waits for the `on_missing` rollback.
async fn freeze_during_canary(config: String, pid: &str, source: &str, rule: &str) {
    let mut agent = start(&config).await;
    // The source must be delivering before the deploy starts (the rule needs live series).
    agent
        .wait_metric(
            &format!("immune_source_samples_total{{source=\"{source}\"}}"),
            Duration::from_secs(60),
            |v| v > 0.0,
        )
        .await;
    let client = Client::new(&agent.url, None).unwrap();
    client.start(&canary("fault")).await.unwrap();
    let frozen = Frozen::new(pid);
    let t0 = Instant::now();
    let d = agent
        .wait_decision(Duration::from_secs(60), |d| d.deploy == "fault")
        .await;
    let waited = t0.elapsed();
    eprintln!(
        "{source}: rollback {waited:?} after SIGSTOP: {}",
        d.evidence["summary"]
    );
    drop(frozen);
    assert_eq!(d.decision, DecisionKind::Rollback, "{d:?}");
    assert_eq!(d.rule, rule);
    assert_eq!(d.evidence["test"], "missing_data", "{}", d.evidence);
    // stale_after (5 s) + one source interval (1 s) + one eval interval (1 s), plus slack
    // for a loaded CI machine.
    assert!(
        waited <= Duration::from_secs(5 + 1 + 1 + 8),
        "rollback took {waited:?}"
    );
    // The source's failures are counted while the service is frozen.
    let errors = agent
        .metric(&format!(
            "immune_source_errors_total{{source=\"{source}\"}}"
        ))
        .await
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "no source errors counted");
    // After SIGCONT the source recovers (reconnects) and reads again.
    let before = agent
        .metric(&format!(
            "immune_source_samples_total{{source=\"{source}\"}}"
        ))
        .await
        .unwrap();
    agent
        .wait_metric(
            &format!("immune_source_samples_total{{source=\"{source}\"}}"),
            Duration::from_secs(60),
            |v| v > before,
        )
        .await;
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn frozen_mariadb_during_a_canary_is_rolled_back() {
    let (Some(url), Some(pid)) = (
        env_or_skip("IMMUNE_TEST_MYSQL_URL"),
        env_or_skip("IMMUNE_TEST_MYSQL_PID"),
    ) else {
        return;
    };
    let _g = SERVICES.lock().await;
    let config = format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\nsources:\n  mysql:\n    - {{url: \"{url}\", interval: 1s, timeout: 1s}}\n",
        fixture("mysql_stale.yaml").display()
    );
    freeze_during_canary(config, &pid, "mysql", "mysql_threads_running_fault").await;
}

#[tokio::test]
async fn frozen_memcached_during_a_canary_is_rolled_back() {
    let (Some(addr), Some(pid)) = (
        env_or_skip("IMMUNE_TEST_MEMCACHED_ADDR"),
        env_or_skip("IMMUNE_TEST_MEMCACHED_PID"),
    ) else {
        return;
    };
    let _g = SERVICES.lock().await;
    let config = format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\nsources:\n  memcached:\n    - {{addr: \"{addr}\", interval: 1s, timeout: 1s}}\n",
        fixture("memcached_stale.yaml").display()
    );
    freeze_during_canary(config, &pid, "memcached", "memcached_connections_fault").await;
}

#[tokio::test]
async fn promql_source_reads_a_real_prometheus_scraping_the_agent() {
    let Some(bin) = env_or_skip("IMMUNE_TEST_PROMETHEUS_BIN") else {
        return;
    };
    let prom_port = free_port();
    let config = format!(
        "rules: [{}]\nsources:\n  promql:\n    - {{url: \"http://127.0.0.1:{prom_port}\", query: 'up{{job=\"immune\"}}', metric: immune_up, interval: 1s, timeout: 2s}}\n",
        fixture("web.yaml").display()
    );
    let agent = start(&config).await;
    let dir = TempDir::new("prometheus");
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: immune\n    static_configs: [{{targets: ['{}']}}]\n",
            agent.addr
        ),
    )
    .unwrap();
    let child = std::process::Command::new(&bin)
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let _child = Child(child);
    // Prometheus scrapes the agent; the agent's PromQL source then finds `up{job="immune"}`.
    agent
        .wait_metric(
            "immune_source_samples_total{source=\"promql\"}",
            Duration::from_secs(60),
            |v| v >= 1.0,
        )
        .await;
    // The samples reached the engine as a series of their own.
    agent
        .wait_metric("immune_series", Duration::from_secs(30), |v| v >= 1.0)
        .await;
    // Prometheus found nothing to complain about in /metrics either.
    let up: serde_json::Value = reqwest::get(format!(
        "http://127.0.0.1:{prom_port}/api/v1/query?query=up%7Bjob%3D%22immune%22%7D"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    agent.stop().await.unwrap();
}
