//! Limits the agent enforces and answers: event times (400 naming `at`), label and request
//! limits on push (400 / 413, counted by reason), the series limit (429 with Retry-After),
//! liveness and readiness, slow HTTP clients cut off while others are served, and the real
//! `immune serve` process staying under a stated RSS through a label explosion.

#[path = "agent_common/mod.rs"]
mod common;

use common::{Child, TempDir, fixture, free_port, start};
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

async fn post(url: &str, body: String) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn rules() -> String {
    format!(
        "rules: [{}]\nengine: {{eval_interval: 1s}}\n",
        fixture("web.yaml").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_far_from_the_clock_are_refused_naming_at() {
    let agent = start(&rules()).await;
    let u = &agent.url;
    let body = |id: &str, at: String| {
        format!(r#"{{"deploy":"{id}","service":"web","canary":{{"instance":["web-01:80"]}}{at}}}"#)
    };
    for at in [
        "-8.9e12".to_string(),
        format!("{}", (now() * 1000.0).round()),
        format!("{}", now() - 7200.0),
        format!("{}", now() + 3600.0),
    ] {
        let (s, v, _) = post(
            &format!("{u}/api/v1/deploys"),
            body("x1", format!(",\"at\":{at}")),
        )
        .await;
        assert_eq!(s, 400, "at {at}: {v}");
        assert_eq!(v["field"], "at", "{v}");
    }
    let (s, v, _) = post(&format!("{u}/api/v1/deploys"), body("x1", String::new())).await;
    assert_eq!(s, 201, "{v}");
    let (s, v, _) = post(
        &format!("{u}/api/v1/deploys/x1/end"),
        r#"{"at": 1e300}"#.to_string(),
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("at")), "{v}");
    let (s, v, _) = post(
        &format!("{u}/api/v1/deploys/x1/full"),
        format!(r#"{{"at": {}}}"#, now() - 30.0),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The engine still answers at once.
    assert_eq!(
        reqwest::get(format!("{u}/-/healthy"))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = reqwest::get(format!("{u}/-/ready")).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true, "{v}");
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_a_limit_are_refused_with_the_limit_named_and_counted() {
    let agent = start(&format!(
        "rules: [{}]\nengine: {{eval_interval: 1s, max_series: 3}}\nlimits: {{max_labels_per_series: 4, max_label_value_length: 16, max_samples_per_request: 5}}\n",
        fixture("web.yaml").display()
    ))
    .await;
    let u = &agent.url;
    let url = format!("{u}/api/v1/push");
    let push = |body: &str| post(&url, body.to_string());
    // Within every limit: 204.
    let (s, v, _) = push("a{x=\"1\"} 1\n").await;
    assert_eq!(s, 204, "{v}");
    // A value too long: 400 naming the limit; the good series of the same request is kept.
    let (s, v, _) = push("a{x=\"2\"} 1\nb{x=\"this value is far too long\"} 1\n").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "limits.max_label_value_length", "{v}");
    // Too many labels: 400.
    let (s, v, _) = push("c{a=\"1\",b=\"2\",c=\"3\",d=\"4\"} 1\n").await;
    assert_eq!(
        (s, v["field"].as_str()),
        (400, Some("limits.max_labels_per_series")),
        "{v}"
    );
    // Too many samples in one request: 413, nothing stored.
    let (s, v, _) = push(
        "a{x=\"1\"} 1\na{x=\"1\"} 2\na{x=\"1\"} 3\na{x=\"1\"} 4\na{x=\"1\"} 5\na{x=\"1\"} 6\n",
    )
    .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (413, Some("limits.max_samples_per_request")),
        "{v}"
    );
    // Beyond engine.max_series (3: a{x=1}, a{x=2}, one more): 429 with Retry-After.
    let (s, v, h) = push("d{x=\"1\"} 1\nd{x=\"2\"} 1\nd{x=\"3\"} 1\n").await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["field"], "engine.max_series", "{v}");
    assert!(h.get("retry-after").is_some());
    let m = agent.metrics().await;
    for reason in [
        "max_label_value_length\"} 1",
        "max_labels_per_series\"} 1",
        "max_samples_per_request\"} 6",
    ] {
        assert!(
            m.contains(&format!("immune_samples_refused_total{{reason=\"{reason}")),
            "{reason} missing:\n{m}"
        );
    }
    agent
        .wait_metric(
            "immune_samples_refused_total{reason=\"series_limit\"}",
            Duration::from_secs(5),
            |v| v >= 2.0,
        )
        .await;
    agent.stop().await.unwrap();
}

/// Sends `head` a byte a second; returns how the server ended it (after `Some(bytes)`
/// read, or `None` if the whole head went through without the server closing).
fn slow_client(addr: std::net::SocketAddr, head: &'static [u8]) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        for b in head {
            if s.write_all(&[*b]).is_err() {
                return true;
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(1) {
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return true,
                }
            }
        }
        false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_others_are_still_served() {
    let agent = start(&format!(
        "{}http: {{header_read_timeout: 2s, idle_timeout: 5s, max_connections: 3}}\n",
        rules()
    ))
    .await;
    const HEAD: &[u8] = b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // As many slow clients as the cap allows: a normal client waits for them to be cut.
    let slow: Vec<_> = (0..3).map(|_| slow_client(agent.addr, HEAD)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/-/healthy", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for s in slow {
        assert!(
            tokio::task::spawn_blocking(move || s.join().unwrap())
                .await
                .unwrap(),
            "a slow client sent its whole head ({} s) without being cut off",
            HEAD.len()
        );
    }
    // And a normal client still gets answers afterwards.
    let r = client
        .get(format!("{}/api/v1/deploys", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    agent.stop().await.unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The stated bound: a 200-series agent stays under 150 MiB whatever labels are pushed.
const RSS_BOUND_KIB: u64 = 150 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_explosion_with_long_values_leaves_rss_bounded() {
    let dir = TempDir::new("rss");
    let port = free_port();
    let config = dir.path().join("immune.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {}\nrules: [{}]\nengine: {{max_series: 200}}\n",
            dir.path().join("data").display(),
            fixture("web.yaml").display()
        ),
    )
    .unwrap();
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_immune"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("IMMUNE_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("{base}/-/healthy"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "agent did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rss_kib(pid);
    let long = "v".repeat(2000);
    let too_long = "w".repeat(100_000);
    let (mut ok, mut limited, mut refused) = (0, 0, 0);
    for round in 0..120 {
        let mut body = String::new();
        for i in 0..100 {
            let labels: Vec<String> = (0..10)
                .map(|k| format!("l{k}=\"{long}{round}-{i}\""))
                .collect();
            body.push_str(&format!("explode{{{}}} 1\n", labels.join(",")));
        }
        if round % 10 == 0 {
            body.push_str(&format!("huge{{v=\"{too_long}{round}\"}} 1\n"));
        }
        let r = client
            .post(format!("{base}/api/v1/push"))
            .body(body)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            204 => ok += 1,
            429 => limited += 1,
            400 => refused += 1,
            s => panic!("unexpected {s}: {}", r.text().await.unwrap_or_default()),
        }
    }
    let after = rss_kib(pid);
    eprintln!(
        "RSS before {before} KiB, after 12,000 pushed series of ~20 KB: {after} KiB (bound {RSS_BOUND_KIB} KiB); 204: {ok}, 429: {limited}, 400: {refused}"
    );
    assert!(limited > 100, "the series limit never answered 429");
    assert_eq!(
        refused, 12,
        "every request with a 100 KB value is refused with 400"
    );
    assert!(
        after < RSS_BOUND_KIB,
        "RSS {after} KiB over the bound {RSS_BOUND_KIB} KiB"
    );
    drop(child);
}
