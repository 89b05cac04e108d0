//! The real `immune serve` killed with SIGKILL mid-canary: after a restart the deploy is
//! re-applied before any sample has arrived, and it must still be judged. Its series
//! appear only after the restart, bind as they arrive, and a bad deploy (twice the
//! canary's error rate) is rolled back.

mod process_common;

use process_common::{free_port, http, start_agent};
use std::time::{Duration, Instant};

const RULES: &str = r#"
rules:
  - name: php_error_ratio
    services: [web]
    metric:
      kind: ratio
      selector: 'php_errors_total{job="web"}'
      denominator: 'http_requests_total{job="web"}'
    baseline: control
    direction: increase
    min_effect: "+50%"
    action: rollback
    min_data: {duration: 2s}
"#;

/// One scrape of ten hosts: 5000 more requests each, 1% errors, `canary_rate` on web-01.
fn push(port: u16, counts: &mut [f64; 20], canary_rate: f64) {
    let mut body = String::new();
    for h in 1..=10 {
        let rate = if h == 1 { canary_rate } else { 0.01 };
        counts[2 * (h - 1)] += 5000.0;
        counts[2 * (h - 1) + 1] += 5000.0 * rate;
        body.push_str(&format!(
            "http_requests_total{{job=\"web\",instance=\"web-{h:02}:80\"}} {}\n\
             php_errors_total{{job=\"web\",instance=\"web-{h:02}:80\"}} {}\n",
            counts[2 * (h - 1)],
            counts[2 * (h - 1) + 1]
        ));
    }
    let (status, text) = http("POST", port, "/api/v1/push", &body).unwrap();
    assert!(status < 300, "{status} {text}");
}

#[test]
fn a_bad_deploy_killed_mid_canary_is_still_rolled_back_after_restart() {
    let dir = std::env::temp_dir().join(format!("immune-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let config = dir.join("immune.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {data}\nrules: [{rules}]\nengine: {{eval_interval: 1s, block: 5s}}\n",
            data = dir.join("data").display(),
            rules = rules.display(),
        ),
    )
    .unwrap();

    // 1. A healthy fleet reports, the bad deploy starts, and the agent dies with SIGKILL
    //    before any sample of the new version has arrived.
    let mut agent = start_agent(&config, port);
    let mut counts = [0.0; 20];
    for _ in 0..3 {
        push(port, &mut counts, 0.01);
        std::thread::sleep(Duration::from_millis(300));
    }
    let start = r#"{"deploy": "d1", "service": "web", "version": "r2", "canary": {"instance": ["web-01:80"]}}"#;
    let (status, body) = http("POST", port, "/api/v1/deploys", start).unwrap();
    assert!(status < 300, "{status} {body}");
    agent.kill9();

    // 2. Restarted on the same data, the deploy is resumed with an empty store; the
    //    fleet keeps reporting and the canary has twice the errors: rolled back.
    let _agent = start_agent(&config, port);
    let (_, view) = http("GET", port, "/api/v1/deploys/d1", "").unwrap();
    assert!(view.contains("canary"), "the deploy is resumed: {view}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        push(port, &mut counts, 0.02);
        let (_, line) = http("GET", port, "/api/v1/lines/web", "").unwrap();
        if line.contains("php_error_ratio") {
            assert!(line.contains("rollback"), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not rolled back after restart: {line}\n{}",
            http("GET", port, "/api/v1/deploys/d1", "").unwrap().1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
